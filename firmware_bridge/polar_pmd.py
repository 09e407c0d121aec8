"""Polar Measurement Data (PMD): control-point commands and responses, and data-frame decoding.

The PMD service (``FB005C80-...``) of the Polar H10, OH1 and Verity Sense has two characteristics: a
control point (write commands, read features, notified responses) and a data characteristic (notified
frames). What is implemented here, and where each fact comes from (Polar BLE SDK, github.com/polarofficial/
polar-ble-sdk: ``technical_documentation/Polar_Measurement_Data_Specification.pdf``,
``technical_documentation/TimeSystemExplained.md`` and the Android client, ``sources/Android/
android-communications/.../gatt/client/pmd/``: ``BlePMDClient.kt``, ``PmdSetting.kt``,
``PmdControlPointResponse.kt``, ``PmdDataFrame.kt``, ``model/EcgData.kt``, ``PpgData.kt``, ``AccData.kt``,
``PpiData.kt``, ``PmdTimeStampUtils.kt``):

Control point (client -> sensor): ``[op code, measurement type, parameters...]``; op codes 1 get settings,
2 start, 3 stop. Start parameters are settings: ``[setting type, count=1, value (LE)]`` with field sizes
sample rate 2, resolution 2, range 2, range in milli-units 4, channels 1 (``PmdSetting.kt``). Examples
(well known from the SDK and from captures): H10 ECG 130 Hz, 14 bit: ``02 00 00 01 82 00 01 01 0E 00``;
Verity Sense PPG 135 Hz, 22 bit, 4 channels: ``02 01 00 01 87 00 01 01 16 00 04 01 04``; PPI: ``02 03``.

Control point (sensor -> client): a response ``F0, op code, measurement type, status, more, parameters``
(status 0 is success; ``more`` != 0 announces continuation notifications whose parameters the caller
appends); for get-settings the parameters are ``[type, count, count values]`` groups, and a start response
may carry the FACTOR setting (type 5, a float32) that scales compressed frames. The sensor may also notify
``01, types...`` on its own when it stops a stream. Reading the control point gives the feature bitmap:
``0F, b1, b2``, where bit ``i`` of the little-endian ``b1 b2`` means measurement type ``i`` is supported.

Data frame: ``measurement type (1 byte), timestamp (uint64 LE, ns since 2000-01-01T00:00:00Z in SENSOR
time), frame type (1 byte: bit 7 set = delta compressed, bits 0-6 the type), payload``. The timestamp is
that of the LAST sample of the frame; earlier samples are ``1/fs`` apart before it (the SDK refines the
step from the previous frame's timestamp; edged leaves that to its clock model, which sees every frame).

Payloads decoded here:

* ECG type 0 (H10): 3-byte signed LE samples, in uV.
* PPG type 0 (OH1/Verity Sense): 4 channels (3 PPG + ambient) of 3-byte signed LE; compressed type 0:
  the same 4 channels, delta compressed, multiplied by the stream's factor.
* ACC types 0/1/2: x, y, z as 1/2/3-byte signed LE, in mG; compressed type 1 (H10): 16-bit deltas times
  the factor (mG); compressed type 0: 16-bit deltas times factor x 1000 (the SDK: "arrives in G").
* PPI type 0: 6-byte records ``hr (uint8 bpm), ppi (uint16 ms), error estimate (uint16 ms), flags``
  (bit 0 movement blocker, bit 1 skin contact, bit 2 skin contact supported). Its timestamp, when not 0,
  is that of the last interval's closing beat; earlier beats are found by subtracting the intervals.

Delta compression (``BlePMDClient.parseDeltaFramesAll``): first one reference sample per channel at full
resolution (``ceil(resolution / 8)`` bytes each, signed LE), then blocks until the payload ends:
``bit width (1 byte), sample count (1 byte), ceil(width * count * channels / 8) bytes`` of deltas packed
LSB first (bit ``k`` of the stream is bit ``k % 8`` of byte ``k // 8``), sample by sample and channel by
channel within a sample; each delta is a two's-complement number of ``width`` bits and every sample is the
previous one plus its delta. Two choices where the SDK is silent: a width of 0 means ``count`` samples
equal to the previous one (the SDK would emit no samples and so shift every later timestamp), and a width
above 32 bits or a block cut short is a :class:`DecodeError` (the SDK would fail on an index error).

Everything here is pure: bytes in, values out. Malformed input raises :class:`DecodeError` only.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from firmware_bridge.errors import DecodeError

PMD_SERVICE_UUID = "fb005c80-02e7-f387-1cad-8acd2d8df0c8"
PMD_CONTROL_POINT_UUID = "fb005c81-02e7-f387-1cad-8acd2d8df0c8"
PMD_DATA_UUID = "fb005c82-02e7-f387-1cad-8acd2d8df0c8"

#: Unix time of the PMD epoch, 2000-01-01T00:00:00Z.
PMD_EPOCH_UNIX = 946_684_800
_NS = 1_000_000_000

CONTROL_POINT_RESPONSE = 0xF0
FEATURE_READ = 0x0F
COMPRESSED_BIT = 0x80
_HEADER = struct.Struct("<BQB")  # measurement type, timestamp (ns), frame type
HEADER_SIZE = _HEADER.size  # 10
_MAX_DELTA_WIDTH = 32


class PmdMeasurementType(IntEnum):
    ECG = 0
    PPG = 1
    ACC = 2
    PPI = 3
    GYRO = 5
    MAGNETOMETER = 6
    SKIN_TEMP = 7
    SDK_MODE = 9
    LOCATION = 10
    PRESSURE = 11
    TEMPERATURE = 12
    OFFLINE_RECORDING = 13
    OFFLINE_HR = 14


class PmdOpCode(IntEnum):
    GET_MEASUREMENT_SETTINGS = 1
    REQUEST_MEASUREMENT_START = 2
    STOP_MEASUREMENT = 3
    GET_SDK_MODE_SETTINGS = 4
    GET_MEASUREMENT_STATUS = 5


class PmdStatus(IntEnum):
    SUCCESS = 0
    INVALID_OP_CODE = 1
    INVALID_MEASUREMENT_TYPE = 2
    NOT_SUPPORTED = 3
    INVALID_LENGTH = 4
    INVALID_PARAMETER = 5
    ALREADY_IN_STATE = 6
    INVALID_RESOLUTION = 7
    INVALID_SAMPLE_RATE = 8
    INVALID_RANGE = 9
    INVALID_MTU = 10
    INVALID_NUMBER_OF_CHANNELS = 11
    INVALID_STATE = 12
    DEVICE_IN_CHARGER = 13
    DISK_FULL = 14


class PmdSettingType(IntEnum):
    SAMPLE_RATE = 0
    RESOLUTION = 1
    RANGE = 2
    RANGE_MILLIUNIT = 3
    CHANNELS = 4
    FACTOR = 5


# Bytes per value of each setting; FACTOR is a float32, the others unsigned integers.
SETTING_FIELD_SIZE: dict[PmdSettingType, int] = {
    PmdSettingType.SAMPLE_RATE: 2,
    PmdSettingType.RESOLUTION: 2,
    PmdSettingType.RANGE: 2,
    PmdSettingType.RANGE_MILLIUNIT: 4,
    PmdSettingType.CHANNELS: 1,
    PmdSettingType.FACTOR: 4,
}


def pmd_time_to_unix(ns: int) -> float:
    """Sensor time (ns since 2000-01-01T00:00:00Z) as Unix seconds.

    Only as right as the sensor's clock: an H10 restarts at its default time (2019-01-01) after each
    shutdown unless a client sets it, and a client may have set it to local time (TimeSystemExplained.md).
    Use sensor time for the spacing of samples, and the host clock for where the stream sits in the day.
    """
    return PMD_EPOCH_UNIX + ns // _NS + (ns % _NS) / _NS


def unix_to_pmd_time(t: float) -> int:
    """Unix seconds as sensor time in ns (for emulators)."""
    return round((t - PMD_EPOCH_UNIX) * _NS)


# ------------------------------------------------------------------------------------ control point


def get_settings_command(measurement: int) -> bytes:
    """Ask which settings (rates, resolutions, ranges, channels) a measurement type supports."""
    return bytes([PmdOpCode.GET_MEASUREMENT_SETTINGS, _u8(measurement, "measurement type")])


def stop_command(measurement: int) -> bytes:
    return bytes([PmdOpCode.STOP_MEASUREMENT, _u8(measurement, "measurement type")])


def start_command(measurement: int, settings: Mapping[PmdSettingType, int] | None = None) -> bytes:
    """Start an online stream with one chosen value per setting (settings in type order; FACTOR is the
    sensor's to announce, never the client's to choose)."""
    out = bytearray([PmdOpCode.REQUEST_MEASUREMENT_START, _u8(measurement, "measurement type")])
    for kind in sorted(settings or {}):
        kind = PmdSettingType(kind)
        if kind is PmdSettingType.FACTOR:
            raise ValueError("FACTOR is reported by the sensor, it cannot be requested")
        size = SETTING_FIELD_SIZE[kind]
        value = int((settings or {})[kind])
        if not 0 <= value < 1 << (8 * size):
            raise ValueError(f"{kind.name} = {value} does not fit {size} byte(s)")
        out += bytes([kind, 1]) + value.to_bytes(size, "little")
    return bytes(out)


def start_ecg_command(sample_rate: int = 130, resolution: int = 14) -> bytes:
    """H10 ECG: 130 Hz, 14 bit (its only setting)."""
    return start_command(
        PmdMeasurementType.ECG, {PmdSettingType.SAMPLE_RATE: sample_rate, PmdSettingType.RESOLUTION: resolution}
    )


def start_ppg_command(sample_rate: int = 135, resolution: int = 22, channels: int = 4) -> bytes:
    """Verity Sense / OH1 PPG: 3 PPG channels and ambient light, 22 bit."""
    return start_command(
        PmdMeasurementType.PPG,
        {
            PmdSettingType.SAMPLE_RATE: sample_rate,
            PmdSettingType.RESOLUTION: resolution,
            PmdSettingType.CHANNELS: channels,
        },
    )


def start_acc_command(sample_rate: int = 200, resolution: int = 16, range_g: int = 8) -> bytes:
    return start_command(
        PmdMeasurementType.ACC,
        {
            PmdSettingType.SAMPLE_RATE: sample_rate,
            PmdSettingType.RESOLUTION: resolution,
            PmdSettingType.RANGE: range_g,
        },
    )


def start_ppi_command() -> bytes:
    """PPI (pulse-to-pulse intervals) takes no settings."""
    return start_command(PmdMeasurementType.PPI)


@dataclass(frozen=True, slots=True)
class PmdControlPointResponse:
    """The sensor's answer to a control-point command. ``parameters`` is empty unless the status is success;
    when ``more`` is set, continuation responses follow and their ``parameters`` belong after these."""

    op_code: int
    measurement_type: int
    status: int
    more: bool
    parameters: bytes

    @property
    def ok(self) -> bool:
        return self.status == PmdStatus.SUCCESS

    @property
    def status_text(self) -> str:
        try:
            return PmdStatus(self.status).name.lower().replace("_", " ")
        except ValueError:
            return f"unknown status {self.status}"


@dataclass(frozen=True, slots=True)
class PmdMeasurementStopped:
    """The sensor stopped these streams on its own (e.g. the strap came off its connector)."""

    measurement_types: tuple[int, ...]


def parse_control_point(data: bytes) -> PmdControlPointResponse | PmdMeasurementStopped:
    """Decode a control-point notification. Raises :class:`DecodeError` on anything else."""
    data = bytes(data)
    if not data:
        raise DecodeError("PMD control point: empty notification", kind="length")
    if data[0] == CONTROL_POINT_RESPONSE:
        if len(data) < 4:
            raise DecodeError(f"PMD control point response: {len(data)} bytes, need at least 4", kind="length")
        status = data[3]
        ok = status == PmdStatus.SUCCESS
        # As the SDK: an error response carries no parameters and no continuation.
        return PmdControlPointResponse(
            op_code=data[1],
            measurement_type=data[2],
            status=status,
            more=ok and len(data) > 4 and data[4] != 0,
            parameters=data[5:] if ok else b"",
        )
    if data[0] == 0x01:
        return PmdMeasurementStopped(tuple(b & 0x3F for b in data[1:]))
    raise DecodeError(f"PMD control point: unknown notification 0x{data[0]:02x}", kind="type")


def encode_control_point_response(
    op_code: int, measurement_type: int, status: int = 0, parameters: bytes = b"", more: bool = False
) -> bytes:
    """A sensor's control-point response (for emulators)."""
    head = [CONTROL_POINT_RESPONSE, _u8(op_code, "op code"), _u8(measurement_type, "measurement type")]
    head.append(_u8(status, "status"))
    return bytes(head) + bytes([1 if more else 0]) + bytes(parameters)


def parse_settings(parameters: bytes) -> dict[PmdSettingType, tuple[float, ...]]:
    """Settings groups ``[type, count, values...]`` (a get-settings answer or a start response).

    Values are ints, except FACTOR, a float. Raises :class:`DecodeError` on an unknown setting type (its
    field size, hence where the next group starts, is unknown) or a group cut short."""
    parameters = bytes(parameters)
    out: dict[PmdSettingType, tuple[float, ...]] = {}
    offset = 0
    while offset < len(parameters):
        if offset + 2 > len(parameters):
            raise DecodeError("PMD settings: group header cut short", kind="length")
        try:
            kind = PmdSettingType(parameters[offset])
        except ValueError:
            raise DecodeError(f"PMD settings: unknown setting type {parameters[offset]}", kind="type") from None
        count = parameters[offset + 1]
        size = SETTING_FIELD_SIZE[kind]
        offset += 2
        end = offset + count * size
        if end > len(parameters):
            raise DecodeError(f"PMD settings: {kind.name} values cut short", kind="length")
        raw = parameters[offset:end]
        if kind is PmdSettingType.FACTOR:
            values: tuple[float, ...] = struct.unpack(f"<{count}f", raw)
        else:
            values = tuple(int.from_bytes(raw[i : i + size], "little") for i in range(0, len(raw), size))
        out[kind] = values
        offset = end
    return out


def encode_settings(settings: Mapping[PmdSettingType, Sequence[float]]) -> bytes:
    """Settings groups as a sensor lists them (for emulators): every allowed value of every setting."""
    out = bytearray()
    for kind in sorted(settings):
        kind = PmdSettingType(kind)
        values = list(settings[kind])
        out += bytes([kind, _u8(len(values), "setting count")])
        if kind is PmdSettingType.FACTOR:
            out += struct.pack(f"<{len(values)}f", *values)
        else:
            out += b"".join(int(v).to_bytes(SETTING_FIELD_SIZE[kind], "little") for v in values)
    return bytes(out)


def parse_features(data: bytes) -> frozenset[int]:
    """The control point's read value: which measurement types the sensor offers."""
    data = bytes(data)
    if len(data) < 2 or data[0] != FEATURE_READ:
        raise DecodeError("PMD features: expected 0x0f followed by the feature bitmap", kind="type")
    bits = int.from_bytes(data[1:3], "little")
    return frozenset(_type_or_int(i) for i in range(16) if bits >> i & 1)


def encode_features(types: Iterable[int]) -> bytes:
    bits = 0
    for t in types:
        if not 0 <= t < 16:
            raise ValueError(f"measurement type {t} has no feature bit")
        bits |= 1 << t
    return bytes([FEATURE_READ]) + bits.to_bytes(2, "little")


# ------------------------------------------------------------------------------------ data frames


@dataclass(frozen=True, slots=True)
class _FrameSpec:
    channels: tuple[str, ...]
    unit: str
    sample_bytes: int  # raw frames: bytes per channel value; compressed: bytes of a reference value
    resolution: int  # bits of a reference value (compressed frames)
    factor_scale: float = 1.0  # compressed frames: multiply the stream factor by this


_ECG = ("ecg",)
_PPG = ("ppg0", "ppg1", "ppg2", "ambient")
_XYZ = ("x", "y", "z")
_SPECS: dict[tuple[int, int, bool], _FrameSpec] = {
    (PmdMeasurementType.ECG, 0, False): _FrameSpec(_ECG, "uV", 3, 24),
    (PmdMeasurementType.PPG, 0, False): _FrameSpec(_PPG, "", 3, 24),
    (PmdMeasurementType.PPG, 0, True): _FrameSpec(_PPG, "", 3, 24),
    (PmdMeasurementType.ACC, 0, False): _FrameSpec(_XYZ, "mG", 1, 8),
    (PmdMeasurementType.ACC, 1, False): _FrameSpec(_XYZ, "mG", 2, 16),
    (PmdMeasurementType.ACC, 2, False): _FrameSpec(_XYZ, "mG", 3, 24),
    (PmdMeasurementType.ACC, 0, True): _FrameSpec(_XYZ, "mG", 2, 16, factor_scale=1000.0),
    (PmdMeasurementType.ACC, 1, True): _FrameSpec(_XYZ, "mG", 2, 16),
}
_PPI_RECORD = 6


@dataclass(frozen=True, slots=True)
class PmdFrameHeader:
    measurement_type: int
    timestamp_ns: int
    frame_type: int
    compressed: bool


@dataclass(frozen=True, slots=True, eq=False)
class PmdSignalFrame:
    """A decoded ECG/PPG/ACC frame.

    ``samples`` (n, channels) are the integers on the wire (after delta decompression); ``values()`` are
    those times ``factor`` in ``unit`` (``factor`` is 1 for uncompressed frames, whose integers are already
    in the unit). ``timestamp_ns`` is the sensor time of the last sample. The array is read-only.
    """

    measurement_type: int
    frame_type: int
    compressed: bool
    timestamp_ns: int
    samples: np.ndarray
    factor: float
    channels: tuple[str, ...]
    unit: str

    def values(self) -> np.ndarray:
        return self.samples * self.factor

    def sample_times_ns(self, sample_rate_hz: float) -> np.ndarray:
        """Sensor time of every sample: the last at ``timestamp_ns``, the others ``1/fs`` apart before it."""
        return _times_back_from(self.timestamp_ns, len(self.samples), sample_rate_hz)


@dataclass(frozen=True, slots=True)
class PpiSample:
    """One pulse-to-pulse interval from the optical sensor. ``skin_contact`` is None when unsupported."""

    hr_bpm: int
    ppi_ms: int
    error_ms: int
    blocker: bool
    skin_contact: bool | None


@dataclass(frozen=True, slots=True)
class PmdPpiFrame:
    timestamp_ns: int  # closing beat of the last interval; 0 when the sensor gives no time (older firmware)
    samples: tuple[PpiSample, ...]
    measurement_type: int = PmdMeasurementType.PPI
    frame_type: int = 0
    compressed: bool = False

    def beat_times_ns(self) -> np.ndarray | None:
        """Sensor time of each interval's closing beat (the intervals end to end, the last at the frame's
        timestamp), or None when the frame has no timestamp."""
        if self.timestamp_ns == 0:
            return None
        ppi = np.array([s.ppi_ms for s in self.samples], dtype=np.int64) * 1_000_000
        after = np.concatenate([np.cumsum(ppi[::-1])[::-1][1:], [0]]) if len(ppi) else ppi
        return self.timestamp_ns - after


PmdFrame = PmdSignalFrame | PmdPpiFrame


def decode_pmd_header(data: bytes) -> tuple[PmdFrameHeader, bytes]:
    """Split a data notification into its header and payload."""
    data = bytes(data)
    if len(data) < HEADER_SIZE:
        raise DecodeError(f"PMD frame: {len(data)} bytes, shorter than the 10-byte header", kind="length")
    mtype, ts, ftype = _HEADER.unpack_from(data)
    # Bits 6-7 of the type byte select online/offline recording in commands (PmdRecordingType): not a type.
    header = PmdFrameHeader(mtype & 0x3F, ts, ftype & 0x7F, bool(ftype & COMPRESSED_BIT))
    return header, data[HEADER_SIZE:]


def decode_pmd_frame(data: bytes, *, factor: float = 1.0) -> PmdFrame:
    """Decode one PMD data notification.

    ``factor`` is the stream's FACTOR from its start response (``parse_settings``); it applies to
    compressed frames only. Raises :class:`DecodeError` (and nothing else) on malformed or unsupported
    frames."""
    header, payload = decode_pmd_header(data)
    if not payload:
        raise DecodeError("PMD frame: no samples", kind="length")
    key = (header.measurement_type, header.frame_type, header.compressed)
    if key == (PmdMeasurementType.PPI, 0, False):
        return PmdPpiFrame(header.timestamp_ns, _decode_ppi(payload))
    spec = _SPECS.get(key)
    if spec is None:
        raise DecodeError(
            f"PMD frame: unsupported measurement type {header.measurement_type}, frame type "
            f"{header.frame_type}{' (compressed)' if header.compressed else ''}",
            kind="type",
        )
    n_ch = len(spec.channels)
    if header.compressed:
        samples = decode_delta_frame(payload, n_ch, spec.resolution)
        scale = float(factor) * spec.factor_scale
    else:
        samples = _unpack_signed_le(payload, n_ch, spec.sample_bytes)
        scale = 1.0
    samples.setflags(write=False)
    return PmdSignalFrame(
        measurement_type=header.measurement_type,
        frame_type=header.frame_type,
        compressed=header.compressed,
        timestamp_ns=header.timestamp_ns,
        samples=samples,
        factor=scale,
        channels=spec.channels,
        unit=spec.unit,
    )


def encode_pmd_frame(
    measurement_type: int,
    frame_type: int,
    timestamp_ns: int,
    samples: np.ndarray | Sequence[Sequence[int]] | Sequence[int],
    *,
    compressed: bool = False,
    max_block: int = 255,
) -> bytes:
    """Build a data notification of a frame type :func:`decode_pmd_frame` knows (for emulators).

    ``samples`` are the wire integers, shape (n,) or (n, channels); compressed frames are delta encoded
    with blocks of at most ``max_block`` samples, each with the smallest width that holds its deltas."""
    spec = _SPECS.get((measurement_type, frame_type, compressed))
    if spec is None:
        raise ValueError(f"no PMD frame format for type {measurement_type}/{frame_type} compressed={compressed}")
    arr = np.asarray(samples, dtype=np.int64)
    arr = arr.reshape(len(arr), -1)
    if arr.shape[1] != len(spec.channels) or len(arr) == 0:
        raise ValueError(f"expected (n >= 1, {len(spec.channels)}) samples, got shape {arr.shape}")
    if compressed:
        payload = encode_delta_frame(arr, spec.resolution, max_block=max_block)
    else:
        payload = _pack_signed_le(arr, spec.sample_bytes)
    return _pack_header(measurement_type, frame_type, compressed, timestamp_ns) + payload


def encode_ppi_frame(timestamp_ns: int, samples: Sequence[PpiSample]) -> bytes:
    out = bytearray(_pack_header(PmdMeasurementType.PPI, 0, False, timestamp_ns))
    for s in samples:
        flags = (1 if s.blocker else 0) | (2 if s.skin_contact else 0) | (4 if s.skin_contact is not None else 0)
        out += struct.pack("<BHHB", s.hr_bpm, s.ppi_ms, s.error_ms, flags)
    return bytes(out)


# ---------------------------------------------------------------------------------- delta frames


def decode_delta_frame(payload: bytes, channels: int, resolution: int) -> np.ndarray:
    """Decompress a delta-compressed payload into (n, channels) int64 samples (see the module docstring)."""
    payload = bytes(payload)
    ref_bytes = math.ceil(resolution / 8)
    offset = channels * ref_bytes
    if len(payload) < offset:
        raise DecodeError("PMD delta frame: reference sample cut short", kind="length")
    ref = _unpack_signed_le(payload[:offset], channels, ref_bytes, bits=resolution)
    parts = [ref]
    buf = np.frombuffer(payload, dtype=np.uint8)
    while offset < len(payload):
        if offset + 2 > len(payload):
            raise DecodeError("PMD delta frame: block header cut short", kind="length")
        width, count = payload[offset], payload[offset + 1]
        offset += 2
        if width > _MAX_DELTA_WIDTH:
            raise DecodeError(f"PMD delta frame: delta width {width} bits (at most 32)", kind="value")
        n_values = count * channels
        n_bytes = (n_values * width + 7) // 8
        if offset + n_bytes > len(payload):
            raise DecodeError("PMD delta frame: delta block cut short", kind="length")
        if width == 0:
            parts.append(np.zeros((count, channels), dtype=np.int64))
        elif count:
            bits = np.unpackbits(buf[offset : offset + n_bytes], bitorder="little")[: n_values * width]
            weights = np.left_shift(np.int64(1), np.arange(width, dtype=np.int64))
            values = bits.reshape(n_values, width).astype(np.int64) @ weights
            values -= (values >> (width - 1)) << width  # two's complement of `width` bits
            parts.append(values.reshape(count, channels))
        offset += n_bytes
    return np.cumsum(np.concatenate(parts, axis=0), axis=0)


def encode_delta_frame(samples: np.ndarray, resolution: int, *, max_block: int = 255) -> bytes:
    """Delta-compress (n, channels) integer samples: the first at ``resolution`` bits, then blocks."""
    arr = np.asarray(samples, dtype=np.int64)
    if arr.ndim != 2 or len(arr) == 0:
        raise ValueError("samples must be (n >= 1, channels)")
    if not 1 <= max_block <= 255:
        raise ValueError("max_block must be 1..255")
    ref_bytes = math.ceil(resolution / 8)
    lo, hi = -(1 << (resolution - 1)), (1 << (resolution - 1)) - 1
    if arr[0].min() < lo or arr[0].max() > hi:
        raise ValueError(f"the reference sample does not fit {resolution} bits")
    out = bytearray(_pack_signed_le(arr[:1], ref_bytes))
    deltas = np.diff(arr, axis=0)
    for start in range(0, len(deltas), max_block):
        block = deltas[start : start + max_block]
        width = max(1, max(_signed_width(int(block.min())), _signed_width(int(block.max()))))
        if width > _MAX_DELTA_WIDTH:
            raise ValueError("a delta needs more than 32 bits")
        flat = block.reshape(-1) & ((1 << width) - 1)
        bits = ((flat[:, None] >> np.arange(width, dtype=np.int64)) & 1).astype(np.uint8)
        out += bytes([width, len(block)]) + np.packbits(bits.reshape(-1), bitorder="little").tobytes()
    return bytes(out)


# ------------------------------------------------------------------------------------------ helpers


def _decode_ppi(payload: bytes) -> tuple[PpiSample, ...]:
    if len(payload) % _PPI_RECORD:
        raise DecodeError(f"PMD PPI frame: {len(payload)} payload bytes, not whole 6-byte records", kind="length")
    samples = []
    for hr, ppi, err, flags in struct.iter_unpack("<BHHB", payload):
        contact = bool(flags & 2) if flags & 4 else None
        samples.append(PpiSample(hr_bpm=hr, ppi_ms=ppi, error_ms=err, blocker=bool(flags & 1), skin_contact=contact))
    return tuple(samples)


def _unpack_signed_le(payload: bytes, channels: int, nbytes: int, bits: int | None = None) -> np.ndarray:
    """(n, channels) int64 from little-endian two's-complement values of ``nbytes`` bytes each."""
    step = channels * nbytes
    if len(payload) % step:
        raise DecodeError(
            f"PMD frame: {len(payload)} payload bytes, not a whole number of {step}-byte samples", kind="length"
        )
    raw = np.frombuffer(payload, dtype=np.uint8).reshape(-1, nbytes).astype(np.int64)
    value = np.zeros(len(raw), dtype=np.int64)
    for i in range(nbytes):
        value |= raw[:, i] << (8 * i)
    bits = bits or 8 * nbytes
    value &= (1 << bits) - 1
    value -= (value >> (bits - 1)) << bits
    return value.reshape(-1, channels)


def _pack_signed_le(samples: np.ndarray, nbytes: int) -> bytes:
    lo, hi = -(1 << (8 * nbytes - 1)), (1 << (8 * nbytes - 1)) - 1
    if samples.size and (samples.min() < lo or samples.max() > hi):
        raise ValueError(f"a sample does not fit {nbytes} byte(s)")
    flat = samples.reshape(-1) & ((1 << (8 * nbytes)) - 1)
    parts = [(flat >> (8 * i)) & 0xFF for i in range(nbytes)]
    return np.stack(parts, axis=1).astype(np.uint8).tobytes()


def _pack_header(measurement_type: int, frame_type: int, compressed: bool, timestamp_ns: int) -> bytes:
    if not 0 <= timestamp_ns < 1 << 64:
        raise ValueError("timestamp must fit a uint64")
    return _HEADER.pack(measurement_type, timestamp_ns, frame_type | (COMPRESSED_BIT if compressed else 0))


def _signed_width(v: int) -> int:
    """Bits of the smallest two's-complement field holding v."""
    return (v if v >= 0 else ~v).bit_length() + 1


def _times_back_from(last_ns: int, n: int, fs: float) -> np.ndarray:
    if not fs > 0:
        raise ValueError("sample rate must be positive")
    steps_back = np.arange(n - 1, -1, -1, dtype=np.float64)
    return last_ns - np.round(steps_back * (_NS / fs)).astype(np.int64)


def _type_or_int(i: int) -> int:
    try:
        return PmdMeasurementType(i)
    except ValueError:
        return i


def _u8(v: int, what: str) -> int:
    if not 0 <= int(v) <= 0xFF:
        raise ValueError(f"{what} {v} does not fit a byte")
    return int(v)
