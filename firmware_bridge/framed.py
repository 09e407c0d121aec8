"""edged's framed serial protocol for DIY boards (specification: ``firmware_bridge/PROTOCOL.md``), and a
plain ASCII line decoder for simple sketches.

Wire format, in brief: each frame is ``COBS(header + body + CRC-32) + 0x00``. The header is
``version (1), message type (1), sequence number (uint32), device time in us (uint64)``, little-endian.
A DATA body is ``first sample index (uint32), sample count (uint16), channel count (uint8), sample format
(uint8), sample rate (float32 Hz), one float32 scale per channel, samples interleaved``; an INFO body names
the device and its channels. The reference firmware builds the same bytes with
``firmware_bridge/firmware/framing_mpy.py``; the tests hold the two to byte equality.

:func:`decode_frame` decodes one frame and raises :class:`DecodeError` on anything wrong with it.
:class:`FramedDecoder` is fed raw serial chunks, never raises, and counts what it had to skip (by reason)
and what the sequence numbers and sample indices say was lost.
"""

from __future__ import annotations

import math
import re
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from firmware_bridge.errors import DecodeError

PROTOCOL_VERSION = 1
MSG_DATA = 0x01
MSG_INFO = 0x02
DELIMITER = 0x00

#: Largest frame (header + body + CRC) before COBS encoding; the receiver's buffer is bounded by it.
MAX_FRAME = 4096
# COBS adds one byte per 254 plus one: the longest run of non-delimiter bytes a valid frame can make.
MAX_ENCODED = MAX_FRAME + MAX_FRAME // 254 + 2

_HEADER = struct.Struct("<BBIQ")  # version, type, seq, timestamp_us
_DATA_HEAD = struct.Struct("<IHBBf")  # first_sample, n_samples, n_channels, format, sample_rate
_CRC = struct.Struct("<I")
HEADER_SIZE = _HEADER.size  # 14
DATA_HEAD_SIZE = _DATA_HEAD.size  # 12
CRC_SIZE = _CRC.size

# Sample format code -> (name, bytes per value).
SAMPLE_FORMATS: dict[int, tuple[str, int]] = {1: ("int16", 2), 2: ("int24", 3), 3: ("int32", 4), 4: ("float32", 4)}
FORMAT_CODES = {name: code for code, (name, _) in SAMPLE_FORMATS.items()}
_NUMPY_DTYPES = {"int16": "<i2", "int32": "<i4", "float32": "<f4"}
_U32 = 1 << 32
_HALF_U32 = 1 << 31
_F32_MAX = float(np.finfo(np.float32).max)


def crc32(data: bytes) -> int:
    """CRC-32 (IEEE 802.3 / zlib: reflected polynomial 0xEDB88320, init and final XOR 0xFFFFFFFF)."""
    return zlib.crc32(data) & 0xFFFFFFFF


def cobs_encode(data: bytes) -> bytes:
    """Consistent Overhead Byte Stuffing (Cheshire & Baker 1999): the result contains no 0x00.

    Blocks of 254 non-zero bytes get the code 0xFF (no zero implied); every other code ``k`` is followed by
    ``k - 1`` bytes and implies a zero, except at the very end. The output is the canonical (shortest)
    encoding; framing_mpy.cobs_encode is the same algorithm, byte for byte."""
    out = bytearray()
    parts = bytes(data).split(b"\x00")
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        while len(part) >= 254:
            out.append(0xFF)
            out += part[:254]
            part = part[254:]
            if last and not part:
                return bytes(out)  # data ends on a full block: no empty block (and no zero) after it
        out.append(len(part) + 1)
        out += part
    return bytes(out)


def cobs_decode(data: bytes) -> bytes:
    """Inverse of :func:`cobs_encode` (of any valid COBS encoding). Raises :class:`DecodeError`."""
    data = bytes(data)
    out = bytearray()
    i, n = 0, len(data)
    while i < n:
        code = data[i]
        if code == 0:
            raise DecodeError("COBS: a zero byte inside a frame", kind="cobs")
        end = i + code
        if end > n:
            raise DecodeError("COBS: a block runs past the end of the frame", kind="cobs")
        out += data[i + 1 : end]
        i = end
        if code < 0xFF and i < n:
            out.append(0)
    return bytes(out)


@dataclass(frozen=True, slots=True, eq=False)
class DataFrame:
    """Samples from a DATA frame.

    ``raw`` (n, channels) holds the values as sent (int16/int32/float32 arrays; int24 arrives as int32);
    ``values()`` multiplies them by ``scales`` into the channels' units (named by the INFO message).
    ``timestamp_us`` is the device clock at the first sample, ``first_sample`` that sample's index in the
    device's 32-bit (wrapping) sample count. ``lost_frames_before``/``lost_samples_before``: what the
    sequence number and sample index say went missing just before this frame (set by
    :class:`FramedDecoder`; 0 from :func:`decode_frame`). ``restarted``: the device started a new stream
    (its sequence number or clock went back): the position relative to earlier frames is unknown.
    Arrays are read-only.
    """

    seq: int
    timestamp_us: int
    first_sample: int
    sample_rate: float
    sample_format: str
    scales: np.ndarray
    raw: np.ndarray
    lost_frames_before: int = 0
    lost_samples_before: int = 0
    restarted: bool = False

    @property
    def n_samples(self) -> int:
        return len(self.raw)

    @property
    def n_channels(self) -> int:
        return int(self.raw.shape[1])

    def values(self) -> np.ndarray:
        out: np.ndarray = self.raw * self.scales
        return out

    def sample_times_us(self) -> np.ndarray:
        """Device time of each sample, from the frame's timestamp and the nominal rate."""
        return self.timestamp_us + np.arange(self.n_samples) * (1e6 / self.sample_rate)


@dataclass(frozen=True, slots=True)
class ChannelInfo:
    name: str
    unit: str


@dataclass(frozen=True, slots=True)
class InfoMessage:
    """What the device says about itself: sent at boot and periodically (PROTOCOL.md)."""

    seq: int
    timestamp_us: int
    device_name: str
    firmware: str
    channels: tuple[ChannelInfo, ...]
    lost_frames_before: int = 0
    restarted: bool = False


FramedMessage = DataFrame | InfoMessage


# ------------------------------------------------------------------------------------ encoding


def encode_frame(
    samples: np.ndarray | Sequence[Sequence[float]],
    *,
    seq: int,
    timestamp_us: int,
    first_sample: int,
    sample_rate: float,
    scales: Sequence[float] | np.ndarray,
    sample_format: str = "int16",
) -> bytes:
    """A DATA frame ready for the wire (COBS encoded, delimiter appended).

    ``samples`` (n, channels) are raw values of ``sample_format``; ``scales`` turns them into units.
    Raises :class:`ValueError` for what the format cannot carry."""
    if sample_format not in FORMAT_CODES:
        raise ValueError(f"sample_format must be one of {sorted(FORMAT_CODES)}")
    arr = np.asarray(samples)
    if arr.ndim != 2 or not 1 <= arr.shape[0] <= 0xFFFF or not 1 <= arr.shape[1] <= 0xFF:
        raise ValueError(f"samples must be (1..65535, 1..255), got shape {arr.shape}")
    n, n_ch = arr.shape
    scale_arr = np.asarray(scales, dtype=np.float64).reshape(-1)
    if len(scale_arr) != n_ch or not np.all(np.abs(scale_arr) <= _F32_MAX):
        raise ValueError(f"need {n_ch} scales, finite as float32")
    if not 0 < sample_rate <= _F32_MAX:
        raise ValueError("sample_rate must be positive and finite as float32")
    body = _DATA_HEAD.pack(_u32(first_sample), n, n_ch, FORMAT_CODES[sample_format], sample_rate)
    body += scale_arr.astype("<f4").tobytes() + _pack_samples(arr, sample_format)
    return _finish(MSG_DATA, seq, timestamp_us, body)


def encode_info(
    *,
    seq: int,
    timestamp_us: int,
    device_name: str,
    channels: Sequence[ChannelInfo | tuple[str, str]],
    firmware: str = "",
) -> bytes:
    """An INFO frame ready for the wire."""
    if not 1 <= len(channels) <= 0xFF:
        raise ValueError("an INFO message names 1..255 channels")
    body = _pack_str(device_name) + _pack_str(firmware) + bytes([len(channels)])
    for ch in channels:
        name, unit = (ch.name, ch.unit) if isinstance(ch, ChannelInfo) else ch
        body += _pack_str(name) + _pack_str(unit)
    return _finish(MSG_INFO, seq, timestamp_us, body)


def _finish(msg_type: int, seq: int, timestamp_us: int, body: bytes) -> bytes:
    if not 0 <= timestamp_us < 1 << 64:
        raise ValueError("timestamp_us must fit a uint64")
    frame = _HEADER.pack(PROTOCOL_VERSION, msg_type, _u32(seq), timestamp_us) + body
    frame += _CRC.pack(crc32(frame))
    if len(frame) > MAX_FRAME:
        raise ValueError(f"frame of {len(frame)} bytes exceeds {MAX_FRAME}: send fewer samples per frame")
    return cobs_encode(frame) + b"\x00"


def _pack_samples(arr: np.ndarray, fmt: str) -> bytes:
    if fmt == "float32":
        return arr.astype("<f4").tobytes()
    if not np.issubdtype(arr.dtype, np.integer) and not (np.all(np.isfinite(arr)) and np.all(arr == np.round(arr))):
        raise ValueError(f"{fmt} samples must be integers")
    ints = arr.astype(np.int64)
    bits = {"int16": 16, "int24": 24, "int32": 32}[fmt]
    if ints.size and (ints.min() < -(1 << (bits - 1)) or ints.max() >= 1 << (bits - 1)):
        raise ValueError(f"a sample does not fit {fmt}")
    if fmt == "int24":
        u = ints.reshape(-1) & 0xFFFFFF
        return np.stack([u & 0xFF, (u >> 8) & 0xFF, u >> 16], axis=1).astype(np.uint8).tobytes()
    return ints.astype(_NUMPY_DTYPES[fmt]).tobytes()


def _pack_str(s: str) -> bytes:
    b = s.encode("utf-8")
    if len(b) > 0xFF:
        raise ValueError(f"{s[:20]!r}...: a name is at most 255 UTF-8 bytes")
    return bytes([len(b)]) + b


def _u32(v: int) -> int:
    if not 0 <= v < _U32:
        raise ValueError(f"{v} does not fit a uint32")
    return v


# ------------------------------------------------------------------------------------ decoding


def decode_frame(wire: bytes) -> FramedMessage:
    """Decode one COBS-encoded frame (with or without its trailing 0x00). Raises :class:`DecodeError`."""
    wire = bytes(wire)
    if wire.endswith(b"\x00"):
        wire = wire[:-1]
    if len(wire) > MAX_ENCODED:
        raise DecodeError(f"frame of {len(wire)} encoded bytes exceeds the maximum", kind="length")
    return parse_frame(cobs_decode(wire))


def parse_frame(frame: bytes) -> FramedMessage:
    """Decode one frame after COBS decoding (header, body, CRC). Raises :class:`DecodeError`."""
    frame = bytes(frame)
    if len(frame) < HEADER_SIZE + CRC_SIZE:
        raise DecodeError(f"frame of {len(frame)} bytes is shorter than header and CRC", kind="length")
    if len(frame) > MAX_FRAME:
        raise DecodeError(f"frame of {len(frame)} bytes exceeds {MAX_FRAME}", kind="length")
    (expected,) = _CRC.unpack_from(frame, len(frame) - CRC_SIZE)
    if crc32(frame[:-CRC_SIZE]) != expected:
        raise DecodeError("frame CRC mismatch", kind="crc")
    version, msg_type, seq, timestamp_us = _HEADER.unpack_from(frame)
    if version != PROTOCOL_VERSION:
        raise DecodeError(f"protocol version {version}, this host speaks {PROTOCOL_VERSION}", kind="version")
    body = frame[HEADER_SIZE:-CRC_SIZE]
    if msg_type == MSG_DATA:
        return _parse_data(seq, timestamp_us, body)
    if msg_type == MSG_INFO:
        return _parse_info(seq, timestamp_us, body)
    raise DecodeError(f"unknown message type 0x{msg_type:02x}", kind="type")


def _parse_data(seq: int, timestamp_us: int, body: bytes) -> DataFrame:
    if len(body) < DATA_HEAD_SIZE:
        raise DecodeError("DATA frame: body shorter than its fixed fields", kind="length")
    first_sample, n, n_ch, fmt_code, rate = _DATA_HEAD.unpack_from(body)
    if fmt_code not in SAMPLE_FORMATS:
        raise DecodeError(f"DATA frame: unknown sample format {fmt_code}", kind="value")
    fmt, width = SAMPLE_FORMATS[fmt_code]
    if n == 0 or n_ch == 0:
        raise DecodeError("DATA frame: no samples or no channels", kind="length")
    expected = DATA_HEAD_SIZE + 4 * n_ch + n * n_ch * width
    if len(body) != expected:
        raise DecodeError(f"DATA frame: {len(body)} body bytes, its fields say {expected}", kind="length")
    if not (math.isfinite(rate) and rate > 0):
        raise DecodeError(f"DATA frame: sample rate {rate}", kind="value")
    scales = np.frombuffer(body, dtype="<f4", count=n_ch, offset=DATA_HEAD_SIZE).astype(np.float64)
    if not np.all(np.isfinite(scales)):
        raise DecodeError("DATA frame: a channel scale is not finite", kind="value")
    data = body[DATA_HEAD_SIZE + 4 * n_ch :]
    if fmt == "int24":
        b = np.frombuffer(data, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        raw = b[:, 0] | b[:, 1] << 8 | b[:, 2] << 16
        raw -= (raw & 0x800000) << 1
    else:
        raw = np.frombuffer(data, dtype=_NUMPY_DTYPES[fmt]).astype(_NUMPY_DTYPES[fmt][1:])
    raw = raw.reshape(n, n_ch)
    scales.setflags(write=False)
    raw.setflags(write=False)
    return DataFrame(seq, timestamp_us, first_sample, float(rate), fmt, scales, raw)


def _parse_info(seq: int, timestamp_us: int, body: bytes) -> InfoMessage:
    reader = _Reader(body)
    name = reader.string()
    firmware = reader.string()
    n_ch = reader.byte()
    channels = tuple(ChannelInfo(reader.string(), reader.string()) for _ in range(n_ch))
    if reader.pos != len(body):
        raise DecodeError(f"INFO frame: {len(body) - reader.pos} trailing bytes", kind="length")
    if not channels:
        raise DecodeError("INFO frame: no channels", kind="length")
    return InfoMessage(seq, timestamp_us, name, firmware, channels)


class _Reader:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise DecodeError("INFO frame: cut short", kind="length")
        self.pos += 1
        return self.data[self.pos - 1]

    def string(self) -> str:
        n = self.byte()
        raw = self.data[self.pos : self.pos + n]
        if len(raw) != n:
            raise DecodeError("INFO frame: a name is cut short", kind="length")
        self.pos += n
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise DecodeError("INFO frame: a name is not UTF-8", kind="value") from None


@dataclass(slots=True)
class FramedCounters:
    frames: int = 0  # good frames (DATA and INFO)
    samples: int = 0  # samples in good DATA frames (per channel)
    bad_crc: int = 0
    bad_length: int = 0  # too short, too long, or fields that disagree with the size
    bad_version: int = 0
    bad_cobs: int = 0
    bad_value: int = 0  # a field out of range (unknown sample format, non-finite scale or rate...)
    unknown_type: int = 0  # a message type this host does not know (a newer device): skipped
    skipped_bytes: int = 0  # bytes before the first delimiter that did not form a frame (joined mid-frame)
    lost_frames: int = 0  # from the sequence numbers
    lost_samples: int = 0  # from the sample indices (includes samples the device itself dropped)
    restarts: int = 0  # the device started over (sequence number or clock went back)

    @property
    def bad_frames(self) -> int:
        return self.bad_crc + self.bad_length + self.bad_version + self.bad_cobs + self.bad_value


@dataclass(slots=True)
class FramedDecoder:
    """Stateful decoder over raw serial chunks. :meth:`feed` never raises; see ``counters``."""

    counters: FramedCounters = field(default_factory=FramedCounters)
    _buf: bytearray = field(init=False, repr=False, default_factory=bytearray)
    _seen_delimiter: bool = field(init=False, repr=False, default=False)
    _discarding: bool = field(init=False, repr=False, default=False)  # inside an overlong run
    _last_seq: int | None = field(init=False, repr=False, default=None)
    _last_data_time: int | None = field(init=False, repr=False, default=None)
    _next_sample: int | None = field(init=False, repr=False, default=None)

    def reset(self) -> None:
        """Forget the stream position (e.g. after reopening the port); the counters keep counting."""
        self._buf.clear()
        self._seen_delimiter = False
        self._discarding = False
        self._last_seq = self._last_data_time = self._next_sample = None

    def feed(self, data: bytes) -> list[FramedMessage]:
        out: list[FramedMessage] = []
        self._buf += data
        start = 0
        while True:
            end = self._buf.find(b"\x00", start)
            if end < 0:
                break
            segment = bytes(self._buf[start:end])
            start = end + 1
            if self._discarding:
                self._discarding = False  # the overlong run ends here; it was counted when it began
            elif segment:
                message = self._segment(segment)
                if message is not None:
                    out.append(message)
            self._seen_delimiter = True
        del self._buf[:start]
        if len(self._buf) > MAX_ENCODED:
            # No delimiter in sight for longer than any valid frame: drop it now to bound memory.
            self._count_bad("length", len(self._buf))
            self._buf.clear()
            self._discarding = True
        return out

    def _segment(self, segment: bytes) -> FramedMessage | None:
        try:
            message = decode_frame(segment)
        except DecodeError as err:
            self._count_bad(err.kind, len(segment))
            return None
        self.counters.frames += 1
        return self._track(message)

    def _count_bad(self, kind: str, n_bytes: int) -> None:
        if not self._seen_delimiter:
            # Bytes before the first delimiter are usually the tail of a frame sent before we listened.
            self.counters.skipped_bytes += n_bytes
            return
        attr = {"crc": "bad_crc", "length": "bad_length", "version": "bad_version", "cobs": "bad_cobs"}
        if kind == "type":
            self.counters.unknown_type += 1
        else:
            name = attr.get(kind, "bad_value")
            setattr(self.counters, name, getattr(self.counters, name) + 1)

    def _track(self, message: FramedMessage) -> FramedMessage:
        """Sequence and sample-index bookkeeping: lost frames, lost samples, restarts."""
        restarted = False
        lost_frames = 0
        if self._last_seq is not None:
            step = (message.seq - self._last_seq) % _U32
            # DATA timestamps (first-sample times) only grow; an INFO is stamped when sent, which may be
            # later than the next DATA frame's first sample, so it is left out of the clock test.
            went_back = (
                isinstance(message, DataFrame)
                and self._last_data_time is not None
                and message.timestamp_us < self._last_data_time
            )
            if step == 0 or step >= _HALF_U32 or went_back:
                restarted = True
                self.counters.restarts += 1
                self._next_sample = self._last_data_time = None
            else:
                lost_frames = step - 1
        self._last_seq = message.seq
        self.counters.lost_frames += lost_frames
        if isinstance(message, InfoMessage):
            return InfoMessage(
                message.seq, message.timestamp_us, message.device_name, message.firmware, message.channels,
                lost_frames_before=lost_frames, restarted=restarted,
            )  # fmt: skip
        lost_samples = 0
        if self._next_sample is not None:
            gap = (message.first_sample - self._next_sample) % _U32
            if gap >= _HALF_U32:  # samples overlap earlier ones: the device's count started over
                restarted = True
                self.counters.restarts += 1
            else:
                lost_samples = gap
        self._next_sample = (message.first_sample + message.n_samples) % _U32
        self._last_data_time = message.timestamp_us
        self.counters.lost_samples += lost_samples
        self.counters.samples += message.n_samples
        return DataFrame(
            message.seq, message.timestamp_us, message.first_sample, message.sample_rate, message.sample_format,
            message.scales, message.raw, lost_frames_before=lost_frames, lost_samples_before=lost_samples,
            restarted=restarted,
        )  # fmt: skip


# ------------------------------------------------------------------------------------ ASCII lines

_NUMBER = re.compile(rb"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$")
_SEPARATORS = re.compile(rb"[,;\t ]+")
_TIME_NAME = re.compile(r"^(?:t|time|timestamp|millis|micros|ms|us|s)(?:[ _]?(ms|us|s))?$", re.IGNORECASE)
_TIME_UNIT_SECONDS = {"s": 1.0, "ms": 1e-3, "us": 1e-6}
MAX_LINE = 1024


@dataclass(frozen=True, slots=True, eq=False)
class AsciiBlock:
    """Rows decoded from one :meth:`AsciiLineDecoder.feed` call. ``values`` (n, channels) float64;
    ``times_s`` (n,) the device time column in seconds, or None when there is none."""

    values: np.ndarray
    times_s: np.ndarray | None

    def __len__(self) -> int:
        return len(self.values)


@dataclass(slots=True)
class AsciiCounters:
    lines: int = 0  # data lines accepted
    malformed: int = 0  # lines skipped: not numbers, wrong field count, too long, not ASCII
    headers: int = 0  # header lines seen (a repeat usually means the board rebooted)


@dataclass(slots=True)
class AsciiLineDecoder:
    """Lines of numbers separated by commas, semicolons, tabs or spaces, as Arduino sketches print them:
    ``512,498`` or ``1234,512,498`` with a time column.

    An optional header line (``t_ms,ch1,ch2``) names the columns: a first column called ``t``, ``time``,
    ``millis``, ``t_ms``, ``time_us``... is the device time (unit from the name: ``ms`` for ``millis``/
    ``*_ms``, ``us`` for ``micros``/``*_us``, else seconds) and the others are channels. The header is the
    last text line before the first data line, and is used only if it has as many fields as that data line:
    a boot banner (``Starting ECG v1.2``) is then just a malformed line, not a header that would reject
    every sample. Without a header, ``time_column=True`` says the first column is time in ``time_unit``.
    The number of fields is fixed by ``n_channels``, the header, or else the first data line; any other
    line is malformed, counted and skipped, as are non-finite numbers and lines over 1024 bytes.
    """

    n_channels: int | None = None
    time_column: bool | None = None  # None: decided by the header (no header: no time column)
    time_unit: str = "ms"
    counters: AsciiCounters = field(default_factory=AsciiCounters)
    channel_names: tuple[str, ...] | None = None
    _header: tuple[bytes, ...] | None = field(init=False, repr=False, default=None)
    _candidate: tuple[bytes, ...] | None = field(init=False, repr=False, default=None)  # before any data
    _buf: bytearray = field(init=False, repr=False, default_factory=bytearray)
    _overlong: bool = field(init=False, repr=False, default=False)

    def __post_init__(self) -> None:
        if self.time_unit not in _TIME_UNIT_SECONDS:
            raise ValueError(f"time_unit must be one of {sorted(_TIME_UNIT_SECONDS)}")

    def feed(self, data: bytes) -> AsciiBlock:
        """Decode the complete lines in ``data`` (with earlier leftovers). Values are (0, 0) until the
        first data line has fixed the number of channels."""
        self._buf += data
        rows: list[list[float]] = []
        start = 0
        while True:
            end = self._buf.find(b"\n", start)
            if end < 0:
                break
            line = bytes(self._buf[start:end])
            start = end + 1
            if self._overlong:
                self._overlong = False  # tail of a line already counted as malformed
                continue
            row = self._line(line)
            if row is not None:
                rows.append(row)
        del self._buf[:start]
        if len(self._buf) > MAX_LINE:
            self.counters.malformed += 1
            self._buf.clear()
            self._overlong = True
        values = np.array(rows, dtype=np.float64).reshape(len(rows), self._width())
        if self.time_column:
            return AsciiBlock(values[:, 1:], values[:, 0] * _TIME_UNIT_SECONDS[self.time_unit])
        return AsciiBlock(values, None)

    def _width(self) -> int:
        return (self.n_channels or 0) + (1 if self.time_column else 0)

    def _line(self, line: bytes) -> list[float] | None:
        line = line.strip(b" \t\r,;")  # trailing separators are common in hand-written sketches
        if not line:
            return None
        if len(line) > MAX_LINE:
            self.counters.malformed += 1
            return None
        fields = _SEPARATORS.split(line)
        if not all(_NUMBER.match(f) for f in fields):
            self._text_line(tuple(fields))
            return None
        if self.counters.lines == 0 and self._candidate is not None:
            self._adopt_header(self._candidate, len(fields))
            self._candidate = None
        if self.n_channels is None:
            n_ch = len(fields) - (1 if self.time_column else 0)
            if n_ch < 1:
                self.counters.malformed += 1
                return None
            self.n_channels = n_ch
        if len(fields) != self._width():
            self.counters.malformed += 1
            return None
        row = [float(f) for f in fields]
        if not all(math.isfinite(v) for v in row):
            self.counters.malformed += 1
            return None
        self.counters.lines += 1
        return row

    def _text_line(self, fields: tuple[bytes, ...]) -> None:
        """A line that is not all numbers: a header candidate (before any data), a repeat of the header, or
        malformed."""
        if self._header is not None and fields == self._header:
            self.counters.headers += 1  # the header again: the board rebooted and printed it again
            return
        if self.counters.lines:
            self.counters.malformed += 1
            return
        if self._candidate is not None:
            self.counters.malformed += 1  # the earlier text line was a banner, not the header
        self._candidate = fields

    def _adopt_header(self, fields: tuple[bytes, ...], n_data_fields: int) -> None:
        try:
            names = [f.decode("ascii") for f in fields]
        except UnicodeDecodeError:
            names = []
        match = _TIME_NAME.match(names[0]) if names else None
        time_col = self.time_column if self.time_column is not None else match is not None
        n_ch = len(names) - (1 if time_col else 0)
        if (
            len(names) != n_data_fields
            or n_ch < 1
            or any(not n or not n.isprintable() for n in names)
            or (self.n_channels is not None and n_ch != self.n_channels)
        ):
            self.counters.malformed += 1  # not a header for this data: a banner or noise
            return
        self._header = fields
        self.counters.headers += 1
        self.time_column = time_col
        self.n_channels = n_ch
        self.channel_names = tuple(names[1:] if time_col else names)
        if time_col and match is not None:
            unit = match.group(1) or {"millis": "ms", "ms": "ms", "micros": "us", "us": "us"}.get(names[0].lower())
            self.time_unit = (unit or "s").lower()
