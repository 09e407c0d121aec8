"""The one exception every codec in :mod:`firmware_bridge` raises on bad input.

A single class (rather than one per protocol) because every caller does the same thing with it: count the
message as bad, log the reason, and carry on with the next one. ``kind`` says which rule the input broke,
so that a stream decoder can keep separate counters (CRC failures point at a noisy cable, version errors
at a firmware mismatch) without parsing messages.

It subclasses :class:`ValueError` rather than ``edged.errors.EdgedError`` on purpose: ``firmware_bridge``
is usable without the daemon (emulators, firmware tests, other tools), so it imports nothing from ``edged``.
"""

from __future__ import annotations


class DecodeError(ValueError):
    """Bytes that do not form a valid message of the protocol being decoded.

    ``kind`` is a short machine-readable reason: ``"length"`` (too short, too long, or a length field that
    disagrees with the data), ``"crc"``, ``"version"``, ``"type"`` (a message or frame type this codec does
    not know), ``"cobs"`` (a broken COBS encoding), ``"reserved"`` (reserved bits set), ``"value"`` (a field
    out of its allowed range) or ``"text"`` (an unparseable text line).
    """

    def __init__(self, message: str, *, kind: str = "value"):
        super().__init__(message)
        self.kind = kind
