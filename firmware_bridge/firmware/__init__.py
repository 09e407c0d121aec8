"""Reference firmware for edged's framed serial protocol (``firmware_bridge/PROTOCOL.md``).

``framing_mpy.py`` and ``edged_board.py`` are MicroPython programs: copy both to the board (the second as
``main.py``). They are also importable from CPython, where the tests check that the board's frames are
byte-identical to the host's encoder and decode cleanly.
"""
