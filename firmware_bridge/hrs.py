"""Bluetooth Heart Rate Measurement (characteristic 0x2A37 of the Heart Rate Service 0x180D).

Layout (Bluetooth SIG, Heart Rate Service 1.0, section 3.1; GATT Specification Supplement, "Heart Rate
Measurement"), all multi-byte fields little-endian::

    flags            uint8    bit0  HR value format: 0 = uint8, 1 = uint16
                              bit1  sensor contact detected (meaningful only when bit2 is set)
                              bit2  sensor contact feature supported
                              bit3  energy expended field present
                              bit4  RR-interval field present
                              bit5-7 reserved for future use
    heart rate       uint8 or uint16 (bpm)
    energy expended  uint16 (kJ, cumulative since the last reset), if bit3
    RR intervals     uint16 each, in 1/1024 s, oldest first, as many as fit, if bit4

Decoding is strict: a notification with reserved flag bits set, a field cut short, an RR field of odd
length or bytes left over raises :class:`~firmware_bridge.errors.DecodeError`. A lenient decoder would have
to guess what the extra bytes mean, and a wrong guess invents beats; counting the notification as bad
loses at most one second of heart rate. An RR flag with no RR values is accepted (``rr == ()``): nothing
is ambiguous about it.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from firmware_bridge.errors import DecodeError

HEART_RATE_SERVICE_UUID = "0000180d-0000-1000-8000-00805f9b34fb"
HEART_RATE_MEASUREMENT_UUID = "00002a37-0000-1000-8000-00805f9b34fb"

FLAG_HR_UINT16 = 0x01
FLAG_CONTACT_DETECTED = 0x02
FLAG_CONTACT_SUPPORTED = 0x04
FLAG_ENERGY = 0x08
FLAG_RR = 0x10
_RESERVED = 0xE0

RR_UNITS_PER_SECOND = 1024


@dataclass(frozen=True, slots=True)
class HeartRateMeasurement:
    """One Heart Rate Measurement notification.

    ``contact`` is None when the sensor does not report contact, else whether it detects skin contact.
    ``rr`` holds the RR intervals in seconds, oldest first; they carry no timestamp of their own (a Polar
    strap sends them up to a few seconds after the beat), so their times follow from their cumulative sum.
    """

    bpm: int
    contact: bool | None = None
    energy_kj: int | None = None
    rr: tuple[float, ...] = ()


def decode_hrs(data: bytes) -> HeartRateMeasurement:
    """Decode one 0x2A37 notification. Raises :class:`DecodeError` (and nothing else) on malformed input."""
    data = bytes(data)
    if len(data) < 2:
        raise DecodeError(f"heart rate measurement: {len(data)} byte(s), need at least 2", kind="length")
    flags = data[0]
    if flags & _RESERVED:
        raise DecodeError(f"heart rate measurement: reserved flag bits set (flags 0x{flags:02x})", kind="reserved")
    offset = 1
    if flags & FLAG_HR_UINT16:
        if len(data) < 3:
            raise DecodeError("heart rate measurement: uint16 heart rate cut short", kind="length")
        bpm = data[1] | data[2] << 8
        offset = 3
    else:
        bpm = data[1]
        offset = 2
    contact = bool(flags & FLAG_CONTACT_DETECTED) if flags & FLAG_CONTACT_SUPPORTED else None
    energy = None
    if flags & FLAG_ENERGY:
        if len(data) < offset + 2:
            raise DecodeError("heart rate measurement: energy expended field cut short", kind="length")
        energy = data[offset] | data[offset + 1] << 8
        offset += 2
    rr: tuple[float, ...] = ()
    rest = len(data) - offset
    if flags & FLAG_RR:
        if rest % 2:
            raise DecodeError(f"heart rate measurement: RR field of odd length ({rest} bytes)", kind="length")
        # x / 1024 is exact in binary floating point, so encode_hrs(decode_hrs(b)) gives back b.
        rr = tuple(v / RR_UNITS_PER_SECOND for v in struct.unpack_from(f"<{rest // 2}H", data, offset))
    elif rest:
        raise DecodeError(f"heart rate measurement: {rest} unexpected trailing byte(s)", kind="length")
    return HeartRateMeasurement(bpm=bpm, contact=contact, energy_kj=energy, rr=rr)


def encode_hrs(
    bpm: int,
    *,
    contact: bool | None = None,
    energy_kj: int | None = None,
    rr: Sequence[float] = (),
    hr_uint16: bool = False,
    rr_present: bool | None = None,
) -> bytes:
    """Build a 0x2A37 notification (for emulators and round trips).

    The heart rate is sent as uint16 when ``hr_uint16`` is set or it does not fit a byte. RR intervals are
    given in seconds and rounded to the nearest 1/1024 s. ``rr_present`` forces the RR flag (default: set
    when ``rr`` is not empty). Raises :class:`ValueError` for values the format cannot carry.
    """
    if not 0 <= bpm <= 0xFFFF:
        raise ValueError(f"heart rate {bpm} bpm does not fit a uint16")
    if energy_kj is not None and not 0 <= energy_kj <= 0xFFFF:
        raise ValueError(f"energy expended {energy_kj} kJ does not fit a uint16")
    units = [round(s * RR_UNITS_PER_SECOND) for s in rr]
    if any(not 0 <= u <= 0xFFFF for u in units):
        raise ValueError("an RR interval is outside 0..65535/1024 s")
    flags = 0
    out = bytearray()
    if hr_uint16 or bpm > 0xFF:
        flags |= FLAG_HR_UINT16
        out += struct.pack("<H", bpm)
    else:
        out.append(bpm)
    if contact is not None:
        flags |= FLAG_CONTACT_SUPPORTED | (FLAG_CONTACT_DETECTED if contact else 0)
    if energy_kj is not None:
        flags |= FLAG_ENERGY
        out += struct.pack("<H", energy_kj)
    if rr_present is False and units:
        raise ValueError("RR intervals given with rr_present=False")
    if rr_present or units:
        flags |= FLAG_RR
        out += struct.pack(f"<{len(units)}H", *units)
    return bytes([flags]) + bytes(out)
