"""WFDB (PhysioNet) records: the ``.hea`` header and its ``.dat`` signal files, numpy only.

Header (https://www.physionet.org/physiotools/wag/header-5.htm): comment lines start with ``#``; the
record line is ``name nsig [fs[/counter_freq[(base_counter)]] [nsamp [base_time [base_date]]]]``; then
one line per signal: ``file format[xspf][:skew][+offset] [gain[(baseline)][/units] [adc_resolution
[adc_zero [initial_value [checksum [block_size [description]]]]]]]``.

Signals stored in one file are interleaved by frame: each frame holds ``spf`` consecutive samples of every
signal of that file in header order, so a signal with ``spf = 4`` runs at 4x the frame rate ``fs``.
Physical value = (digital - baseline) / gain; a gain of 0 (uncalibrated) or none means 200, units default
to mV, baseline defaults to adc_zero. The format's "invalid sample" code (e.g. -2048 in 212, -32768 in 16)
becomes NaN. Skew ``s`` means the signal's sample for frame ``t`` is stored in frame ``t + s``; samples
that would lie past the end of the file are NaN. When the header gives a checksum (16-bit sum of the
signal's samples) it is verified: a mismatch means the file is corrupt or not the one the header describes
(0 is taken as "not computed").

Base time/date (local clock, no zone) is read as UTC, like EDF. Multi-segment records and the compressed
or difference formats (8, 310, 311, 508...) are not supported and say so.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from edged.errors import RecordingError
from edged.sources.recording import Recording, SignalTrack

DEFAULT_FS = 250.0  # WFDB's default frame rate when the record line gives none
DEFAULT_GAIN = 200.0

# Bytes per sample for the byte-aligned formats, and how many samples a 212 triplet holds.
_ALIGNED = {"16": "<i2", "61": ">i2", "80": "u1", "160": "<u2", "32": "<i4"}
_SUPPORTED = ("212", "16", "61", "80", "160", "24", "32")
_INVALID = {
    "212": -(2**11),
    "16": -(2**15),
    "61": -(2**15),
    "80": -(2**7),
    "160": -(2**15),
    "24": -(2**23),
    "32": -(2**31),
}

_FORMAT_RE = re.compile(r"^(\d+)(?:x(\d+))?(?::(\d+))?(?:\+(\d+))?$")
_GAIN_RE = re.compile(r"^([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)(?:\(([-+]?\d+)\))?(?:/(\S*))?$")
_FS_RE = re.compile(r"^([-+]?[\d.eE+-]+)(?:/([\d.eE+-]+)(?:\(([-+]?[\d.]+)\))?)?$")


@dataclass(frozen=True, slots=True)
class WfdbSignal:
    file_name: str
    fmt: str
    samples_per_frame: int
    skew: int
    byte_offset: int
    gain: float
    baseline: int
    units: str
    adc_resolution: int
    adc_zero: int
    initial_value: int | None
    checksum: int | None
    description: str


@dataclass(frozen=True, slots=True)
class WfdbHeader:
    record_name: str
    fs: float  # frames per second
    counter_freq: float | None
    base_counter: float | None
    n_frames: int | None  # None when the header does not say (then the file size decides)
    start: datetime | None
    signals: tuple[WfdbSignal, ...]
    comments: tuple[str, ...]  # '#' lines, without the '#' (slpdb keeps age/sex/weight there)


def read_wfdb_header(path: str | os.PathLike[str]) -> WfdbHeader:
    """Parse a ``.hea`` file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="latin-1")
    except FileNotFoundError:
        raise RecordingError(f"{path}: recording not found") from None
    except (IsADirectoryError, PermissionError) as exc:
        raise RecordingError(f"{path}: cannot read header: {exc.strerror}") from None
    comments: list[str] = []
    lines: list[str] = []
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#"):
            comments.append(stripped[1:].strip())
        elif stripped:
            lines.append(stripped)
    if not lines:
        raise RecordingError(f"{path}: not a WFDB header: no record line")

    tokens = lines[0].split()
    name = tokens[0]
    if "/" in name:
        raise RecordingError(f"{path}: multi-segment WFDB records ({name}) are not supported")
    if len(tokens) < 2 or not tokens[1].isdigit():
        raise RecordingError(f"{path}: not a WFDB header: record line {lines[0]!r} lacks a signal count")
    n_signals = int(tokens[1])
    fs, counter_freq, base_counter = DEFAULT_FS, None, None
    if len(tokens) > 2:
        match = _FS_RE.match(tokens[2])
        try:
            if match is None:
                raise ValueError
            fs = float(match.group(1))
            counter_freq = float(match.group(2)) if match.group(2) else None
            base_counter = float(match.group(3)) if match.group(3) else None
        except ValueError:
            raise RecordingError(f"{path}: corrupt header: sampling frequency {tokens[2]!r}") from None
        if not fs > 0:
            raise RecordingError(f"{path}: corrupt header: sampling frequency {tokens[2]!r}")
    n_frames: int | None = None
    if len(tokens) > 3:
        if not tokens[3].isdigit():
            raise RecordingError(f"{path}: corrupt header: number of samples {tokens[3]!r}")
        n_frames = int(tokens[3]) or None  # 0 also means "not stated"
    start = _base_datetime(path, tokens[4] if len(tokens) > 4 else None, tokens[5] if len(tokens) > 5 else None)

    signal_lines = lines[1 : 1 + n_signals]
    if len(signal_lines) < n_signals:
        raise RecordingError(
            f"{path}: corrupt header: record line says {n_signals} signals, {len(signal_lines)} signal lines follow"
        )
    signals = tuple(_parse_signal_line(path, i, line) for i, line in enumerate(signal_lines))
    return WfdbHeader(
        record_name=name,
        fs=fs,
        counter_freq=counter_freq,
        base_counter=base_counter,
        n_frames=n_frames,
        start=start,
        signals=signals,
        comments=tuple(comments),
    )


def _base_datetime(path: Path, clock: str | None, date: str | None) -> datetime | None:
    # Without a date there is no absolute instant, so no POSIX start time.
    if clock is None or date is None:
        return None
    try:
        parts = [float(p) for p in clock.strip("[]").split(":")]
        while len(parts) < 3:
            parts.insert(0, 0.0)
        hour, minute, second = parts
        day, month, year = (int(p) for p in date.strip("[]").split("/"))
        whole = int(second)
        return datetime(
            year, month, day, int(hour), int(minute), whole, int(round((second - whole) * 1e6)), tzinfo=timezone.utc
        )
    except ValueError:
        raise RecordingError(f"{path}: corrupt header: base time/date {clock!r} {date!r}") from None


def _parse_signal_line(path: Path, index: int, line: str) -> WfdbSignal:
    # The description is everything after the 8th field and may contain spaces.
    fields = line.split(maxsplit=8)
    where = f"signal line {index + 1}"
    if len(fields) < 2:
        raise RecordingError(f"{path}: corrupt header: {where} {line!r} has no format")
    match = _FORMAT_RE.match(fields[1])
    if match is None:
        raise RecordingError(f"{path}: corrupt header: {where} has format {fields[1]!r}")
    fmt, spf, skew, offset = match.groups()
    if fmt not in _SUPPORTED:
        raise RecordingError(
            f"{path}: WFDB signal format {fmt} ({where}) is not supported; supported: {', '.join(_SUPPORTED)}"
        )
    gain, baseline, units = DEFAULT_GAIN, None, "mV"
    if len(fields) > 2:
        g = _GAIN_RE.match(fields[2])
        if g is None:
            raise RecordingError(f"{path}: corrupt header: {where} has gain {fields[2]!r}")
        gain = float(g.group(1)) or DEFAULT_GAIN  # 0 = uncalibrated; WFDB then uses the default
        baseline = int(g.group(2)) if g.group(2) else None
        units = g.group(3) or "mV"

    def integer(position: int, default: int | None) -> int | None:
        if len(fields) <= position:
            return default
        try:
            return int(fields[position])
        except ValueError:
            raise RecordingError(
                f"{path}: corrupt header: {where} field {position + 1} is {fields[position]!r}"
            ) from None

    adc_zero = integer(4, 0) or 0
    return WfdbSignal(
        file_name=fields[0],
        fmt=fmt,
        samples_per_frame=int(spf) if spf else 1,
        skew=int(skew) if skew else 0,
        byte_offset=int(offset) if offset else 0,
        gain=gain,
        baseline=adc_zero if baseline is None else baseline,
        units=units,
        adc_resolution=integer(3, 0) or 0,
        adc_zero=adc_zero,
        initial_value=integer(5, None),
        checksum=integer(6, None),
        description=fields[8].strip() if len(fields) > 8 else "",
    )


def header_path(path: str | os.PathLike[str]) -> Path:
    """The ``.hea`` of a record named by its ``.hea`` or any of its ``.dat`` files."""
    path = Path(path)
    return path if path.suffix.lower() == ".hea" else path.with_suffix(".hea")


def read_wfdb(path: str | os.PathLike[str]) -> Recording:
    """A WFDB record (named by its ``.hea`` or ``.dat``) as a :class:`Recording`; every channel at its own
    rate (frame rate x samples per frame)."""
    given = Path(path)
    hea = header_path(given)
    if not given.exists():
        raise RecordingError(f"{given}: recording not found")
    if not hea.exists():
        raise RecordingError(f"{given}: no WFDB header {hea.name} beside it")
    header = read_wfdb_header(hea)

    # Group signals by file, keeping header order (interleaving order within a file).
    groups: dict[str, list[int]] = {}
    for i, sig in enumerate(header.signals):
        groups.setdefault(sig.file_name, []).append(i)

    n_frames = header.n_frames
    digital: dict[int, np.ndarray] = {}
    for file_name, members in groups.items():
        sigs = [header.signals[i] for i in members]
        fmt, offset = sigs[0].fmt, sigs[0].byte_offset
        if any(s.fmt != fmt or s.byte_offset != offset for s in sigs):
            raise RecordingError(f"{hea}: signals in {file_name} mix formats or byte offsets")
        dat = hea.parent / file_name
        try:
            blob = dat.read_bytes()[offset:]
        except FileNotFoundError:
            raise RecordingError(f"{hea}: signal file {file_name} not found (looked for {dat})") from None
        except OSError as exc:
            raise RecordingError(f"{dat}: cannot read: {exc.strerror or exc}") from None
        spf = np.array([s.samples_per_frame for s in sigs])
        frame_len = int(spf.sum())
        samples = _decode(blob, fmt)
        available = len(samples) // frame_len
        if n_frames is None:
            n_frames = available
        if available < n_frames:
            raise RecordingError(
                f"{dat}: truncated: holds {available} whole frames, header {hea.name} says {n_frames}"
            )
        max_skew = max(s.skew for s in sigs)
        used = min(available, n_frames + max_skew)  # read-ahead frames for skewed signals, if stored
        frames = samples[: used * frame_len].reshape(used, frame_len)
        columns = np.concatenate(([0], np.cumsum(spf)))
        for k, (i, sig) in enumerate(zip(members, sigs)):
            stored = frames[:, columns[k] : columns[k + 1]]
            _verify_checksum(dat, hea, sig, stored[:n_frames].reshape(-1))
            values = stored[sig.skew : sig.skew + n_frames].reshape(-1).astype(np.float64)
            values[values == _INVALID[fmt]] = np.nan
            short = n_frames * sig.samples_per_frame - len(values)
            if short:  # skewed past the end of the file: those samples were never stored
                values = np.concatenate((values, np.full(short, np.nan)))
            digital[i] = values

    signals: dict[str, SignalTrack] = {}
    for i, sig in enumerate(header.signals):
        name = sig.description or f"signal {i}"
        if name in signals:  # repeated descriptions: keep every channel
            k = 2
            while f"{name}#{k}" in signals:
                k += 1
            name = f"{name}#{k}"
        signals[name] = SignalTrack(
            data=(digital[i] - sig.baseline) / sig.gain,
            fs=header.fs * sig.samples_per_frame,
            units=sig.units,
        )
    return Recording(
        path=str(hea),
        signals=signals,
        start_time=header.start.timestamp() if header.start is not None else None,
    )


def _verify_checksum(dat: Path, hea: Path, sig: WfdbSignal, stored: np.ndarray) -> None:
    """The header's checksum is the 16-bit two's-complement sum of the signal's samples as stored.
    0 is skipped: hand-written headers use it as a placeholder (a real sum of 0 then goes unchecked)."""
    if not sig.checksum:
        return
    total = int(stored.astype(np.int64).sum())
    got = (total + 2**15) % 2**16 - 2**15
    if got != sig.checksum:
        raise RecordingError(
            f"{dat}: corrupt: signal {sig.description or '?'} sums to {got}, header {hea.name} says {sig.checksum}"
        )


def _decode(blob: bytes, fmt: str) -> np.ndarray:
    """All whole samples in ``blob`` as a flat int array, in stored order. Vectorised: no per-sample loop."""
    raw = np.frombuffer(blob, dtype=np.uint8)
    if fmt == "212":
        # Two 12-bit samples in three bytes: s0 = b0 | (b1 & 0x0F) << 8, s1 = b2 | (b1 & 0xF0) << 4.
        n_pairs = len(raw) // 3
        triplets = raw[: 3 * n_pairs].reshape(n_pairs, 3).astype(np.int32)
        tail = raw[3 * n_pairs :]
        out = np.empty(2 * n_pairs + (1 if len(tail) >= 2 else 0), dtype=np.int32)
        out[0 : 2 * n_pairs : 2] = triplets[:, 0] | ((triplets[:, 1] & 0x0F) << 8)
        out[1 : 2 * n_pairs : 2] = triplets[:, 2] | ((triplets[:, 1] & 0xF0) << 4)
        if len(tail) >= 2:  # an odd sample count ends with one sample in two bytes
            out[-1] = int(tail[0]) | ((int(tail[1]) & 0x0F) << 8)
        return np.where(out >= 2**11, out - 2**12, out)  # 12-bit two's complement
    if fmt == "24":
        n = len(raw) // 3
        b = raw[: 3 * n].reshape(n, 3).astype(np.int32)
        out = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        return np.where(out >= 2**23, out - 2**24, out)
    dtype = np.dtype(_ALIGNED[fmt])
    values = np.frombuffer(blob, dtype=dtype, count=len(blob) // dtype.itemsize).astype(np.int64)
    if fmt == "80":  # offset binary
        return values - 2**7
    if fmt == "160":
        return values - 2**15
    return values
