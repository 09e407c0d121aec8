# edged framed protocol, sender side, for MicroPython boards (RP2040, ESP32) -- and CPython.
#
# Builds exactly the bytes that firmware_bridge.framed.encode_frame / encode_info build (the tests in
# tests/test_codecs.py hold them equal), using only what MicroPython has: struct, bytearray, plain ints.
# No dataclasses, no typing, no numpy, no zlib (binascii.crc32 is missing from some ports' builds),
# so the CRC is table driven. Specification: firmware_bridge/PROTOCOL.md.
#
# Copy this file to the board next to edged_board.py.

import struct

PROTOCOL_VERSION = 1
MSG_DATA = 0x01
MSG_INFO = 0x02
FORMAT_INT16 = 1
FORMAT_INT24 = 2
FORMAT_INT32 = 3
FORMAT_FLOAT32 = 4
MAX_FRAME = 4096

_FORMAT_CHAR = {FORMAT_INT16: "h", FORMAT_INT32: "i", FORMAT_FLOAT32: "f"}


def _make_crc_tables():
    hi, lo = [], []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0xEDB88320 if c & 1 else c >> 1
        hi.append(c >> 16)
        lo.append(c & 0xFFFF)
    return hi, lo


# The table is split into 16-bit halves, and the CRC register too, because MicroPython's small ints hold
# 31 bits on 32-bit ports: a 32-bit register would be a heap-allocated long after every byte.
_CRC_HI, _CRC_LO = _make_crc_tables()


def crc32(data, crc=0):
    """CRC-32/IEEE (as zlib.crc32). Pass the previous result as ``crc`` to continue over more data."""
    t_hi, t_lo = _CRC_HI, _CRC_LO
    hi = (crc >> 16) ^ 0xFFFF
    lo = (crc & 0xFFFF) ^ 0xFFFF
    for b in data:
        i = (lo ^ b) & 0xFF
        # register >> 8, then XOR the table entry, done on the two halves
        lo = ((lo >> 8) | ((hi & 0xFF) << 8)) ^ t_lo[i]
        hi = (hi >> 8) ^ t_hi[i]
    return ((hi ^ 0xFFFF) << 16) | (lo ^ 0xFFFF)


def cobs_encode(data):
    """COBS: the same algorithm as firmware_bridge.framed.cobs_encode, byte for byte."""
    out = bytearray()
    n = len(data)
    start = 0
    while True:
        # Find the end of this zero-free run (or of the data).
        end = start
        while end < n and data[end] != 0:
            end += 1
        run = end - start
        pos = start
        while run >= 254:
            out.append(0xFF)
            out.extend(data[pos : pos + 254])
            pos += 254
            run -= 254
        if run == 0 and end >= n and end > start:
            break  # data ends on a full 254-byte block: the canonical encoding adds nothing after it
        out.append(run + 1)
        out.extend(data[pos:end])
        if end >= n:
            break
        start = end + 1
    return out


def _finish(msg_type, seq, timestamp_us, body):
    frame = bytearray(struct.pack("<BBIQ", PROTOCOL_VERSION, msg_type, seq & 0xFFFFFFFF, timestamp_us))
    frame.extend(body)
    frame.extend(struct.pack("<I", crc32(frame)))
    if len(frame) > MAX_FRAME:
        raise ValueError("frame too long: send fewer samples per frame")
    out = cobs_encode(frame)
    out.append(0)
    return out


def pack_samples(fmt, samples):
    """Interleaved samples (a flat sequence: s0c0, s0c1, ..., s1c0, ...) as bytes of the sample format."""
    if fmt == FORMAT_INT24:
        out = bytearray(3 * len(samples))
        i = 0
        for v in samples:
            v &= 0xFFFFFF
            out[i] = v & 0xFF
            out[i + 1] = (v >> 8) & 0xFF
            out[i + 2] = v >> 16
            i += 3
        return out
    return struct.pack("<%d%s" % (len(samples), _FORMAT_CHAR[fmt]), *samples)


def data_frame(seq, timestamp_us, first_sample, sample_rate, fmt, scales, samples, n_channels):
    """A DATA frame ready for the wire: COBS encoded, 0x00 appended.

    ``samples`` is flat and interleaved; its length must be a multiple of ``n_channels``.
    ``scales`` has one float per channel (raw value x scale = value in the channel's unit)."""
    n = len(samples) // n_channels
    if n * n_channels != len(samples) or len(scales) != n_channels or n < 1 or n > 0xFFFF:
        raise ValueError("samples must hold 1..65535 whole samples of n_channels values")
    body = bytearray(struct.pack("<IHBBf", first_sample & 0xFFFFFFFF, n, n_channels, fmt, sample_rate))
    body.extend(struct.pack("<%df" % n_channels, *scales))
    body.extend(pack_samples(fmt, samples))
    return _finish(MSG_DATA, seq, timestamp_us, body)


def _pack_str(s):
    b = s.encode("utf-8")
    if len(b) > 255:
        raise ValueError("a name is at most 255 bytes")
    return bytes([len(b)]) + b


def info_frame(seq, timestamp_us, device_name, firmware, channels):
    """An INFO frame: ``channels`` is a sequence of (name, unit) pairs."""
    body = bytearray(_pack_str(device_name))
    body.extend(_pack_str(firmware))
    body.append(len(channels))
    for name, unit in channels:
        body.extend(_pack_str(name))
        body.extend(_pack_str(unit))
    return _finish(MSG_INFO, seq, timestamp_us, body)
