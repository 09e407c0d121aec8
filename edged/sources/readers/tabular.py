"""Tabular recordings: CSV with a header row, NumPy ``.npz`` archives, and MMASH ``RR.csv`` beat streams.

CSV: every column whose header is non-empty and whose cells are numbers (empty cells become NaN; columns
more than half empty, like BIDMC's one-cell "Sampling Freq", are not channels) becomes a channel. The rate
comes from a time column (``t``, ``time``, ``Time [s]``, ``timestamp``, ``time_ms``...: seconds unless the
name says ms): roughly 1 / its median step, exactly the mean step within runs of rows without holes (see
:func:`_time_runs`; rounded stamps bias a plain median). Where the time column jumps by clearly more than a
step, each run is placed at its time and the hole is NaN and listed in ``Recording.gaps``, as for EDF+D.
Without a time column, a column named ``fs``/``Sampling Freq``/... holding one value gives the rate;
otherwise ``fs`` must be passed. A file whose first row is all numbers has no
header: its columns are named ``col1``, ``col2``...

NPZ: 1-D numeric arrays of the longest length are channels; shorter 1-D arrays (beat indices like
``r_peaks``, event lists) and other 2-D arrays are skipped. A 2-D array is used only when a string array
``chan``/``ch_names`` names its rows (the MNE/YASA layout). The rate is the scalar ``fs`` (or ``sf``,
``sfreq``, ``sampling_rate``) key, or the ``fs`` argument.

Units come from a label suffix when there is one: ``[mV]``/``(mV)``, or ``_mV``-style for common units.

Passing ``fs`` for a file that states its own rate is allowed only if they agree (within 1 %): a silently
ignored or overridden rate would shift every epoch.
"""

from __future__ import annotations

import csv
import io
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edged.errors import RecordingError
from edged.sources.recording import Recording, RRTrack, SignalTrack

_TIME_RE = re.compile(
    r"^(?:t|time|times|timestamp|elapsed(?:[ _]time)?)(?:[ _](s|ms|sec))?(?:\s*[\[(]\s*(s|sec|seconds|ms)\s*[\])])?$",
    re.IGNORECASE,
)
_FS_RE = re.compile(
    r"^(?:fs|sf|sfreq|sampling[ _]?(?:freq|frequency|rate)|sample[ _]?rate)(?:\s*[\[(]\s*hz\s*[\])])?$",
    re.IGNORECASE,
)
_NPZ_FS_KEYS = ("fs", "sf", "sfreq", "fs_hz", "sampling_rate", "srate")
_NPZ_NAME_KEYS = ("chan", "ch_names", "channels", "channel_names")
_BRACKET_UNITS = re.compile(r"[\[(]\s*([^\])]+?)\s*[\])]$")
_SUFFIX_UNITS = re.compile(r"_(mV|uV|µV|nV|V|mmHg|bpm|Hz|ms|uS|mS|degC|g|mg|NU)$")
# MMASH RR.csv: pandas' unnamed index column, then these.
_MMASH_HEADER = ["", "ibi_s", "day", "time"]
_RATE_TOLERANCE = 0.01
_MMASH_DROPOUT = 2.0  # s the clock must run ahead of the intervals to call a dropout
_MMASH_MIN_BRIDGE = 1.0  # s a dropout so flagged certainly hides


def units_from_label(label: str) -> str:
    """'ecg_mV' -> 'mV', 'Time [s]' -> 's', 'RESP' -> ''."""
    match = _BRACKET_UNITS.search(label) or _SUFFIX_UNITS.search(label)
    return match.group(1) if match else ""


# ------------------------------------------------------------------------------------------------ CSV


def read_csv(path: str | os.PathLike[str], *, fs: float | None = None) -> Recording:
    """A CSV with a header row (or an MMASH ``RR.csv``) as a :class:`Recording`."""
    path = Path(path)
    header, rows = _csv_rows(path)
    if [h.strip() for h in header] == _MMASH_HEADER:
        return read_mmash_rr(path)
    if all(_is_number(h) for h in header):  # no header row: the first row is data
        rows = [header, *rows]
        header = [f"col{j + 1}" for j in range(len(header))]
    header = [h.strip() for h in header]
    if not rows:
        raise RecordingError(f"{path}: no data rows under the header")
    widths = {len(r) for r in rows}
    if max(widths) > len(header):
        line = 2 + next(i for i, r in enumerate(rows) if len(r) > len(header))
        raise RecordingError(f"{path}:{line}: more fields than the {len(header)} header columns")

    # Transpose once; short rows (a truncated last line) read as empty cells.
    padded = [r + [""] * (len(header) - len(r)) if len(r) < len(header) else r for r in rows]
    columns = list(zip(*padded))
    time: np.ndarray | None = None
    time_scale = 1.0
    file_fs: float | None = None
    channels: dict[str, np.ndarray] = {}
    for name, cells in zip(header, columns):
        values = _numeric(cells)
        if values is None or not name:
            continue  # text column, or an unnamed index column (pandas' to_csv default)
        time_match = _TIME_RE.match(name)
        if time_match and time is None:
            time = values
            time_scale = 1e-3 if "ms" in {g.lower() for g in time_match.groups() if g} else 1.0
            continue
        if _FS_RE.match(name):
            stated = np.unique(values[np.isfinite(values)])
            if len(stated) == 1:
                file_fs = float(stated[0])
            continue
        if np.count_nonzero(np.isfinite(values)) * 2 < len(values):
            continue  # mostly empty: metadata in a column, not a signal
        channels[name] = values
    if not channels:
        raise RecordingError(f"{path}: no numeric columns to use as channels (columns: {header})")

    gaps: list[tuple[float, float]] = []
    if time is not None:
        time = time * time_scale
        time_fs, starts, ends = _time_runs(path, time)
        rate = _resolve_rate(path, fs, time_fs, "its time column")
        if file_fs is not None and abs(file_fs - time_fs) > _RATE_TOLERANCE * time_fs:
            raise RecordingError(
                f"{path}: the rate column says {file_fs:g} Hz but the time column gives {time_fs:g} Hz"
            )
        channels, gaps = _place_runs(channels, time, starts, ends, rate)
    elif file_fs is not None:
        rate = _resolve_rate(path, fs, file_fs, "its rate column")
    elif fs is not None:
        rate = _positive_rate(path, fs)
    else:
        raise RecordingError(
            f"{path}: no time column (named t, time, Time [s], timestamp...) or rate column; pass fs=<Hz>"
        )
    units = {name: units_from_label(name) for name in channels}
    return Recording(
        path=str(path),
        signals={n: SignalTrack(data=d, fs=rate, units=units[n]) for n, d in channels.items()},
        gaps=gaps,
    )


def _csv_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise RecordingError(f"{path}: recording not found") from None
    except UnicodeDecodeError as exc:
        raise RecordingError(f"{path}: not a text CSV (byte {exc.start} is not UTF-8)") from None
    except (IsADirectoryError, PermissionError) as exc:
        raise RecordingError(f"{path}: cannot read: {exc.strerror}") from None
    first_line = text.split("\n", 1)[0]
    # The header line's most frequent separator; comma when none appears (a single column).
    delimiter = max((",", ";", "\t"), key=first_line.count) if first_line.strip() else ","
    try:
        rows = [r for r in csv.reader(io.StringIO(text), delimiter=delimiter) if any(c.strip() for c in r)]
    except csv.Error as exc:
        raise RecordingError(f"{path}: malformed CSV: {exc}") from None
    if not rows:
        raise RecordingError(f"{path}: empty file")
    return rows[0], rows[1:]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _numeric(cells: tuple[str, ...]) -> np.ndarray | None:
    """The column as float64 with NaN for empty cells, or None if any non-empty cell is not a number."""
    strings = np.char.strip(np.asarray(cells, dtype=str))
    empty = strings == ""
    out = np.full(len(strings), np.nan)
    try:
        out[~empty] = strings[~empty].astype(np.float64)
    except ValueError:
        return None
    return out


def _time_runs(path: Path, t: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Rate and runs of rows (starts, ends) between holes in the time column.

    Stamps are often rounded: BIDMC prints 5 significant digits, so past 100 s its 8-ms steps read 0.01 or
    0.00 and the plain median step would say 100 Hz instead of 125. So the rough rate is the median step
    over 64 rows; a hole is a step longer than one sample plus the larger of half a sample and the stamps'
    resolution (their smallest positive step); the exact rate is the mean step within runs, which rounding
    and jitter of individual stamps do not bias."""
    if len(t) < 2:
        raise RecordingError(f"{path}: one row is not enough to get a rate from the time column")
    if not np.isfinite(t).all():
        raise RecordingError(f"{path}: the time column has empty cells")
    steps = np.diff(t)
    if (steps < 0).any():
        line = 3 + int(np.flatnonzero(steps < 0)[0])  # 1-based, after the header row
        raise RecordingError(f"{path}:{line}: the time column goes backwards")
    lag = min(64, len(t) - 1)
    typical = float(np.median(t[lag:] - t[:-lag])) / lag
    if typical <= 0:
        raise RecordingError(f"{path}: the time column's resolution is too coarse to give a sampling rate")
    positive = steps[steps > 0]
    resolution = float(positive.min()) if positive.size else 0.0
    holes = np.flatnonzero(steps > typical + max(0.5 * typical, resolution)) + 1
    starts = np.concatenate(([0], holes))
    ends = np.concatenate((holes, [len(t)]))
    intervals = int(np.sum(ends - starts - 1))
    span = float(np.sum(t[ends - 1] - t[starts]))
    rate = intervals / span if intervals > 0 and span > 0 else 1.0 / typical
    # Decimal stamps leave ~1e-5 of noise on an exact integer rate; a real 117.3 Hz stays as it is.
    if abs(rate - round(rate)) < 1e-4 * rate:
        rate = float(round(rate))
    return rate, starts, ends


def _resolve_rate(path: Path, given: float | None, stated: float, source: str) -> float:
    if given is None:
        return stated
    given = _positive_rate(path, given)
    if abs(given - stated) > _RATE_TOLERANCE * stated:
        raise RecordingError(f"{path}: fs={given:g} Hz was passed but {source} gives {stated:g} Hz")
    return stated


def _positive_rate(path: Path, fs: float) -> float:
    if not (np.isfinite(fs) and fs > 0):
        raise RecordingError(f"{path}: fs must be a positive number of Hz, got {fs!r}")
    return float(fs)


def _place_runs(
    channels: dict[str, np.ndarray], t: np.ndarray, starts: np.ndarray, ends: np.ndarray, rate: float
) -> tuple[dict[str, np.ndarray], list[tuple[float, float]]]:
    """Put each run of rows at its time, NaN in the holes between runs (one run: nothing to do)."""
    if len(starts) == 1:
        return channels, []
    lengths = ends - starts
    first = np.rint((t[starts] - t[0]) * rate).astype(np.int64)
    # Stamp jitter must not make a run begin before the previous one ends. Vectorised form of
    # first[j] = max(first[j], first[j-1] + lengths[j-1]), as a running maximum on first - cumulative length.
    before = np.concatenate(([0], np.cumsum(lengths[:-1])))
    first = np.maximum.accumulate(first - before) + before
    position = np.repeat(first - starts, lengths) + np.arange(len(t))
    placed = {}
    for name, values in channels.items():
        out = np.full(int(first[-1] + lengths[-1]), np.nan)
        out[position] = values
        placed[name] = out
    hole_start = first[:-1] + lengths[:-1]
    hole = first[1:] - hole_start
    gaps = [(float(hole_start[j] / rate), float(hole[j] / rate)) for j in np.flatnonzero(hole > 0)]
    return placed, gaps


# ------------------------------------------------------------------------------------------------ NPZ


def read_npz(path: str | os.PathLike[str], *, fs: float | None = None) -> Recording:
    """A ``.npz`` archive of 1-D arrays (and a scalar rate) as a :class:`Recording`."""
    path = Path(path)
    if not path.exists():
        raise RecordingError(f"{path}: recording not found")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise RecordingError(f"{path}: corrupt: not a readable .npz archive ({exc})") from None
    arrays: dict[str, np.ndarray] = {}
    with archive:
        for key in archive.files:
            try:
                arrays[key] = archive[key]
            except ValueError:
                continue  # object arrays need pickle, which is never enabled for data files
            except Exception as exc:  # zipfile/zlib errors on a damaged member
                raise RecordingError(f"{path}: corrupt: array {key!r} is unreadable ({exc})") from None

    file_fs: float | None = None
    for key in _NPZ_FS_KEYS:
        if key in arrays and arrays[key].size == 1 and np.issubdtype(arrays[key].dtype, np.number):
            file_fs = float(arrays[key].reshape(()))
            break

    numeric = {
        k: a
        for k, a in arrays.items()
        if np.issubdtype(a.dtype, np.number) and not np.issubdtype(a.dtype, np.complexfloating)
    }
    channels: dict[str, np.ndarray] = {}
    candidates = {k: a for k, a in numeric.items() if a.ndim == 1 and k not in _NPZ_FS_KEYS}
    if candidates:
        length = max(len(a) for a in candidates.values())
        # Shorter 1-D arrays are index or event lists (r_peaks, pvc), not signals at the same rate.
        channels = {k: a.astype(np.float64) for k, a in candidates.items() if len(a) == length}
    else:
        channels = _named_rows(arrays, numeric)
    if not channels:
        raise RecordingError(f"{path}: no 1-D numeric arrays to use as channels (keys: {sorted(arrays)})")
    if file_fs is not None:
        rate = _resolve_rate(path, fs, _positive_rate(path, file_fs), "its fs key")
    elif fs is not None:
        rate = _positive_rate(path, fs)
    else:
        raise RecordingError(f"{path}: no sampling rate key ({', '.join(_NPZ_FS_KEYS)}); pass fs=<Hz>")
    return Recording(
        path=str(path),
        signals={k: SignalTrack(data=a, fs=rate, units=units_from_label(k)) for k, a in channels.items()},
    )


def _named_rows(arrays: dict[str, np.ndarray], numeric: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The MNE/YASA layout: a 2-D (channels, samples) array whose rows a string array names."""
    for name_key in _NPZ_NAME_KEYS:
        names = arrays.get(name_key)
        if names is None or names.ndim != 1 or names.dtype.kind not in "US":
            continue
        for array in numeric.values():
            if array.ndim == 2 and array.shape[0] == len(names):
                return {str(n).strip(): row.astype(np.float64) for n, row in zip(names, array)}
    return {}


# ---------------------------------------------------------------------------------------- MMASH RR.csv


@dataclass(slots=True)
class MmashBeats:
    """An MMASH ``RR.csv`` on one time axis. ``origin_clock`` is the time 0 of the recording in seconds
    after midnight at the start of ``day`` 1 (MMASH gives no calendar date, so no POSIX start time)."""

    rr: np.ndarray  # measured intervals, with one bridging interval per dropout (see parse_mmash_rr)
    first_beat: float
    origin_clock: float
    gaps: list[tuple[float, float]] = field(default_factory=list)
    n_measured: int = 0


def parse_mmash_rr(path: str | os.PathLike[str]) -> MmashBeats:
    """Place MMASH beats on one time axis.

    ``RR.csv`` rows are ``index, ibi_s, day, time``: ``ibi_s`` is the interval the Polar H7 strap measured,
    ``time`` the wall-clock second (truncated, not rounded) of the beat that ENDS it, ``day`` 1 or 2.
    Checked on the real files: within a stretch of consecutive beats, time - cumsum(ibi_s) stays within one
    second, so the clock and the intervals agree; but the clock runs AHEAD of the interval sum at ~2500
    dropouts a day (typically 8 s each; user_1: 84909 s of clock, 65433 s of intervals), where beats
    were lost in transmission. So the interval sum alone drifts hours off the clock.

    Here a dropout is where consecutive stamps advance at least 2 s more than the interval between them
    (under truncation alone consecutive beats stay within 1 s; the stamps jitter up to a second more).
    Within each stretch the beat times are the interval sum plus one offset, chosen in the middle of the
    range the truncated stamps allow (error < 0.5 s).
    Between stretches a bridging interval spans the dropout, from the last beat before it to the beat that
    opens the first interval after it, so ``RRTrack.beat_times()`` stays on the clock; each bridge is listed
    in ``gaps`` as (start, length) and is at least 1 s long, so it is not a measured interval and consumers
    should treat it as missing data. Time 0 is the whole clock second in which the first beat falls.
    """
    path = Path(path)
    header, rows = _csv_rows(path)
    if [h.strip() for h in header] != _MMASH_HEADER:
        raise RecordingError(f"{path}: not an MMASH RR.csv: header is {header}, expected {_MMASH_HEADER}")
    if not rows:
        raise RecordingError(f"{path}: no beat intervals in the file")
    try:
        ibi = np.array([float(r[1]) for r in rows])
        day = np.array([int(r[2]) for r in rows])
        hms = np.array([r[3].split(":") for r in rows], dtype=np.float64)
    except (ValueError, IndexError):
        line = 2 + next(i for i, r in enumerate(rows) if not _mmash_row_ok(r))
        raise RecordingError(f"{path}:{line}: expected 'index,ibi_s,day,hh:mm:ss'") from None
    if hms.ndim != 2 or hms.shape[1] != 3:
        raise RecordingError(f"{path}: the time column is not hh:mm:ss throughout")
    if not (ibi > 0).all():
        line = 2 + int(np.flatnonzero(~(ibi > 0))[0])
        raise RecordingError(f"{path}:{line}: interval is not a positive number of seconds")
    clock = (day - 1) * 86400.0 + hms @ np.array([3600.0, 60.0, 1.0])
    if (np.diff(clock) < 0).any():
        line = 3 + int(np.flatnonzero(np.diff(clock) < 0)[0])
        raise RecordingError(f"{path}:{line}: the day/time stamps go backwards")

    # Stretch boundaries: the clock advanced >= 2 s more than the interval closing the next beat. Under pure
    # truncation 1 s would do, but the stamps jitter by up to a second more (logging latency; on user_1,
    # 126 steps run 1-2 s ahead and none 2-5 s, while real dropouts are 5-9 s and more).
    starts = np.concatenate(([0], np.flatnonzero(np.diff(clock) - ibi[1:] >= _MMASH_DROPOUT) + 1))
    ends = np.concatenate((starts[1:], [len(ibi)]))
    cumulative = np.cumsum(ibi)
    before = np.concatenate(([0.0], cumulative))[starts]  # interval sum before each stretch
    # For beat k in stretch j: floor(offset_j + cumulative[k] - before[j]) == clock[k].
    slack = clock - cumulative
    low = np.maximum.reduceat(slack, starts) + before  # offset_j >= every clock - partial sum
    high = np.minimum.reduceat(slack, starts) + before + 1.0  # offset_j < every clock - partial sum + 1
    offset = (low + high) / 2.0  # mid-range; when stamps disagree slightly, the least-worst offset
    span = cumulative[ends - 1] - before  # first to last beat of each stretch
    # A dropout flagged this way hides more than 1 s; where the offset estimates (+-0.5 s) say less, move
    # the later stretch forward. Vectorised form of offset[j] = max(offset[j], offset[j-1] + span[j-1] + 1):
    # with shift[j] = sum over i < j of (span[i] + 1), the running maximum of offset - shift.
    shift = np.concatenate(([0.0], np.cumsum(span[:-1] + _MMASH_MIN_BRIDGE)))
    offset = np.maximum.accumulate(offset - shift) + shift
    bridges = offset[1:] - (offset[:-1] + span[:-1])

    origin = float(np.floor(offset[0]))
    rr = np.empty(len(ibi) + len(bridges))
    positions = ends[:-1] + np.arange(len(bridges))  # where each bridge goes in the merged sequence
    mask = np.zeros(len(rr), dtype=bool)
    mask[positions] = True
    rr[mask] = bridges
    rr[~mask] = ibi
    first_beat = float(offset[0] - origin)
    beat_times = first_beat + np.concatenate(([0.0], np.cumsum(rr)))
    gaps = [(float(beat_times[p]), float(rr[p])) for p in positions]
    return MmashBeats(rr=rr, first_beat=first_beat, origin_clock=origin, gaps=gaps, n_measured=len(ibi))


def _mmash_row_ok(row: list[str]) -> bool:
    try:
        float(row[1]), int(row[2])
        return len(row[3].split(":")) == 3 and all(_is_number(p) for p in row[3].split(":"))
    except (ValueError, IndexError):
        return False


def read_mmash_rr(path: str | os.PathLike[str]) -> Recording:
    """An MMASH ``RR.csv`` as a recording with one ``rr`` channel named "rr"; dropouts in ``gaps``."""
    beats = parse_mmash_rr(path)
    return Recording(
        path=str(path),
        rr={"rr": RRTrack(rr=beats.rr, first_beat=beats.first_beat)},
        gaps=beats.gaps,
    )
