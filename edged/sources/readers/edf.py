"""EDF and EDF+ (``EDF+C`` continuous, ``EDF+D`` discontinuous): reader and EDF+ writer, numpy only.

Layout (https://www.edfplus.info/specs/edf.html, .../edfplus.html): a 256-byte ASCII header, 256 more
ASCII bytes per signal (fields stored column-wise: all labels, then all transducers, ...), then data records
of little-endian int16 samples, each record holding ``samples_per_record[i]`` samples of signal ``i`` in
turn. Physical value = (digital - digital_min) * (physical_max - physical_min) / (digital_max - digital_min)
+ physical_min. A signal's rate is ``samples_per_record / record_duration``, so rates can differ.

EDF+ adds the ``EDF Annotations`` signal whose bytes are Time-stamped Annotation Lists (TALs):
``+onset[\\x15duration]\\x14text\\x14[text\\x14...]\\x00``. The first TAL of every data record is the
time-keeping one (``+onset\\x14\\x14``): when the record starts, in seconds after the header's start time.

Times returned by this module (annotation onsets, :attr:`Recording.gaps`) are seconds from the FIRST SAMPLE,
i.e. from the header start time plus the first record's time-keeping offset (EDF+ can start a file at a
sub-second offset). ``Recording.start_time`` is that same instant as POSIX seconds. EDF stores local clock
time without a zone; it is read as UTC so that start times are reproducible across machines.

EDF+D records need not be contiguous. The reader places each record at its own time-keeping onset and fills
the space between records with NaN, so that sample ``i`` of a channel is always at ``i / fs`` and annotations
and hypnogram epochs stay aligned with the data; each hole is listed in ``Recording.gaps``.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import BinaryIO, NamedTuple

import numpy as np

from edged.errors import RecordingError
from edged.sources.recording import HRTrack, Hypnogram, Recording, RRTrack, SignalTrack

ANNOTATIONS_LABEL = "EDF Annotations"
EPOCH_SECONDS = 30.0

_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
# Widths of the per-signal header fields, in the order they are stored.
_SIGNAL_FIELDS = (
    ("label", 16),
    ("transducer", 80),
    ("units", 8),
    ("physical_min", 8),
    ("physical_max", 8),
    ("digital_min", 8),
    ("digital_max", 8),
    ("prefilter", 80),
    ("samples_per_record", 8),
    ("reserved", 32),
)
# The spec recommends data records of at most 61440 bytes; the writer keeps to it when it can.
_MAX_RECORD_BYTES = 61440
_WRITER_DIGITAL_MIN = -32768
_WRITER_DIGITAL_MAX = 32767


class Annotation(NamedTuple):
    """One EDF+ annotation. ``onset`` in seconds from the first sample; ``duration`` in seconds, 0.0 when
    the file gives none."""

    onset: float
    duration: float
    text: str


@dataclass(frozen=True, slots=True)
class EdfSignalHeader:
    label: str
    transducer: str
    units: str
    physical_min: float
    physical_max: float
    digital_min: int
    digital_max: int
    prefilter: str
    samples_per_record: int

    @property
    def is_annotations(self) -> bool:
        return self.label == ANNOTATIONS_LABEL


@dataclass(frozen=True, slots=True)
class EdfHeader:
    version: str
    patient: str
    recording_id: str
    start: datetime | None  # None when an EDF+ file says its start date is unknown ("Startdate X")
    header_bytes: int
    reserved: str
    n_records: int  # after resolving -1 ("unknown", left by an interrupted writer) from the file size
    record_duration: float
    signals: tuple[EdfSignalHeader, ...]

    @property
    def is_edf_plus(self) -> bool:
        return self.reserved.startswith("EDF+")

    @property
    def is_discontinuous(self) -> bool:
        return self.reserved.startswith("EDF+D")

    @property
    def record_samples(self) -> int:
        """int16 samples in one data record, all signals together."""
        return sum(s.samples_per_record for s in self.signals)


@dataclass(slots=True)
class EdfContents:
    """Everything :func:`load_edf` reads: the header as stored, the recording, and every annotation."""

    header: EdfHeader
    recording: Recording
    annotations: list[Annotation]


# --------------------------------------------------------------------------------------------- reading


def read_edf(path: str | os.PathLike[str], *, epoch_seconds: float = EPOCH_SECONDS) -> Recording:
    """An EDF/EDF+ file as a :class:`Recording` (signals, sleep-stage hypnogram if annotated, gaps)."""
    return load_edf(path, epoch_seconds=epoch_seconds).recording


def read_edf_annotations(path: str | os.PathLike[str]) -> list[Annotation]:
    """Every annotation of an EDF+ file (empty for plain EDF), in file order."""
    return load_edf(path).annotations


def load_edf(path: str | os.PathLike[str], *, epoch_seconds: float = EPOCH_SECONDS) -> EdfContents:
    """Read header, signals and annotations. Every problem is a :class:`RecordingError` naming the file."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            header = _parse_header(path, fh, size)
        n_values = header.n_records * header.record_samples
        raw = np.fromfile(path, dtype="<i2", count=n_values, offset=header.header_bytes)
    except FileNotFoundError:
        raise RecordingError(f"{path}: recording not found") from None
    except IsADirectoryError:
        raise RecordingError(f"{path}: is a directory, not an EDF file") from None
    except OSError as exc:
        raise RecordingError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if raw.size != n_values:  # size was checked against the header; this only guards a file shrinking
        raise RecordingError(f"{path}: truncated: expected {n_values} samples, read {raw.size}")
    records = raw.reshape(header.n_records, header.record_samples)

    columns: list[slice] = []
    start = 0
    for sig in header.signals:
        columns.append(slice(start, start + sig.samples_per_record))
        start += sig.samples_per_record

    annotation_columns = [col for col, sig in zip(columns, header.signals) if sig.is_annotations]
    record_onsets, exact_t0, exact_annotations = _read_annotations(path, header, records, annotation_columns)

    # Seconds from the header start time to the first sample: the first time-keeping TAL (EDF+ only).
    t0 = float(record_onsets[0]) if record_onsets is not None and len(record_onsets) else 0.0
    # Onsets are decimal text: subtracting in decimal gives back exactly the float a writer put after t0
    # (a beat time, a gap start), which float subtraction would not.
    annotations = [Annotation(float(onset - exact_t0), duration, text) for onset, duration, text in exact_annotations]
    if header.is_discontinuous and record_onsets is not None:
        missing = np.flatnonzero(np.isnan(record_onsets))
        if missing.size:
            raise RecordingError(
                f"{path}: corrupt EDF+D: data record {missing[0]} has no time-keeping annotation"
            )
        starts = record_onsets - t0
    else:
        starts = np.arange(header.n_records) * header.record_duration

    signals: dict[str, SignalTrack] = {}
    for col, sig in zip(columns, header.signals):
        if sig.is_annotations:
            continue
        digital = records[:, col]
        # float64 throughout: int16 * float32 gain would lose precision on wide-range channels.
        gain = (sig.physical_max - sig.physical_min) / (sig.digital_max - sig.digital_min)
        physical = (digital.astype(np.float64) - sig.digital_min) * gain + sig.physical_min
        fs = sig.samples_per_record / header.record_duration
        if header.is_discontinuous:
            physical = _place_records(path, physical, starts, fs, header.record_duration)
        else:
            physical = physical.reshape(-1)
        signals[_unique_name(sig.label or f"signal {len(signals)}", signals)] = SignalTrack(
            data=physical, fs=fs, units=sig.units
        )

    ends = [a.onset for a in annotations if a.text == END_OF_DATA_TEXT]
    if ends:  # samples after it only pad the last data record
        signals = {name: SignalTrack(t.data[: max(0, math.ceil(round(min(ends) * t.fs, 6)))], t.fs, t.units)
                   for name, t in signals.items()}
    start_time = header.start.timestamp() + t0 if header.start is not None else None
    beats = beat_tracks(path, annotations, set(signals))
    record_gaps = _gaps(starts, header) if header.is_discontinuous else []
    recording = Recording(
        path=str(path),
        signals=signals,
        rr=beats.rr,
        hr=beats.hr,
        hypnogram=stage_hypnogram(annotations, epoch_seconds=epoch_seconds),
        start_time=start_time,
        # Holes that no "Gap" annotation already describes (a file from another writer has none).
        gaps=_merge_spans([h for h in record_gaps if not _covered(h, beats.signal_gaps, signals)]
                          + beats.signal_gaps + beats.rr_gaps),
    )
    return EdfContents(header=header, recording=recording, annotations=annotations)


def _parse_header(path: Path, fh: BinaryIO, size: int) -> EdfHeader:
    main = fh.read(256)
    if len(main) < 256:
        raise RecordingError(f"{path}: truncated: {len(main)} bytes, shorter than the 256-byte EDF header")
    if main[:1] == b"\xff":
        raise RecordingError(f"{path}: BDF (24-bit) files are not supported, only 16-bit EDF/EDF+")
    text = main.decode("latin-1")
    version = text[0:8].strip()
    if version != "0":
        raise RecordingError(f"{path}: not an EDF file: version field is {text[0:8]!r}, expected '0'")
    patient = text[8:88].strip()
    recording_id = text[88:168].strip()
    header_bytes = _int(path, text[184:192], "header size")
    reserved = text[192:236].strip()
    n_records = _int(path, text[236:244], "number of data records")
    record_duration = _float(path, text[244:252], "data record duration")
    ns = _int(path, text[252:256], "number of signals")
    if ns < 0 or header_bytes != 256 * (ns + 1):
        raise RecordingError(
            f"{path}: corrupt header: header size {header_bytes} does not match {ns} signals "
            f"(expected {256 * (ns + 1)})"
        )
    signal_block = fh.read(256 * ns)
    if len(signal_block) < 256 * ns:
        raise RecordingError(f"{path}: truncated: the header of {ns} signals is cut short")
    stext = signal_block.decode("latin-1")

    fields: dict[str, list[str]] = {}
    offset = 0
    for name, width in _SIGNAL_FIELDS:
        fields[name] = [stext[offset + i * width : offset + (i + 1) * width] for i in range(ns)]
        offset += width * ns
    signals = []
    for i in range(ns):
        label = fields["label"][i].strip()
        what = f"signal {i + 1} ({label!r})"
        sig = EdfSignalHeader(
            label=label,
            transducer=fields["transducer"][i].strip(),
            units=fields["units"][i].strip(),
            physical_min=_float(path, fields["physical_min"][i], f"{what} physical minimum"),
            physical_max=_float(path, fields["physical_max"][i], f"{what} physical maximum"),
            digital_min=_int(path, fields["digital_min"][i], f"{what} digital minimum"),
            digital_max=_int(path, fields["digital_max"][i], f"{what} digital maximum"),
            prefilter=fields["prefilter"][i].strip(),
            samples_per_record=_int(path, fields["samples_per_record"][i], f"{what} samples per record"),
        )
        if sig.digital_max <= sig.digital_min:
            raise RecordingError(f"{path}: corrupt header: {what} digital maximum <= digital minimum")
        if sig.physical_max == sig.physical_min:
            raise RecordingError(f"{path}: corrupt header: {what} physical maximum == physical minimum")
        if sig.samples_per_record < 1:
            raise RecordingError(f"{path}: corrupt header: {what} has {sig.samples_per_record} samples/record")
        signals.append(sig)

    has_ordinary = any(not s.is_annotations for s in signals)
    # Duration 0 is legal only for annotation-only files (e.g. a Sleep-EDF hypnogram).
    if record_duration < 0 or (record_duration == 0 and has_ordinary):
        raise RecordingError(f"{path}: corrupt header: data record duration is {record_duration} s")

    record_bytes = 2 * sum(s.samples_per_record for s in signals)
    data_bytes = size - header_bytes
    if n_records == -1:
        # An interrupted writer leaves -1: use the whole records present, drop a partial last one.
        n_records = data_bytes // record_bytes if record_bytes else 0
    elif n_records < 0:
        raise RecordingError(f"{path}: corrupt header: {n_records} data records")
    elif data_bytes != n_records * record_bytes:
        whole = data_bytes // record_bytes if record_bytes else 0
        problem = "truncated" if data_bytes < n_records * record_bytes else "corrupt: extra bytes after the data"
        raise RecordingError(
            f"{path}: {problem}: the header promises {n_records} data records of {record_bytes} bytes "
            f"({header_bytes + n_records * record_bytes} bytes in all) but the file has {size} bytes "
            f"({whole} whole records)"
        )

    return EdfHeader(
        version=version,
        patient=patient,
        recording_id=recording_id,
        start=_start_datetime(path, text[168:176], text[176:184], recording_id, reserved),
        header_bytes=header_bytes,
        reserved=reserved,
        n_records=n_records,
        record_duration=record_duration,
        signals=tuple(signals),
    )


def _start_datetime(path: Path, date: str, clock: str, recording_id: str, reserved: str) -> datetime | None:
    plus = reserved.startswith("EDF+")
    match = re.match(r"Startdate\s+(\S+)", recording_id) if plus else None
    if match and match.group(1) == "X":
        return None  # EDF+ way of saying "start date unknown"
    try:
        day, month, yy = (int(x) for x in date.strip().split("."))
        hour, minute, second = (int(x) for x in clock.strip().split("."))
    except ValueError:
        raise RecordingError(f"{path}: corrupt header: start date/time {date!r} {clock!r}") from None
    # EDF's two-digit year: 85-99 are 1985-1999, 00-84 are 2000-2084. EDF+ carries the 4-digit year in
    # the recording field ("Startdate 30-AUG-2021"); prefer it when it parses.
    year = 1900 + yy if yy >= 85 else 2000 + yy
    if match:
        try:
            year = datetime.strptime(match.group(1).title(), "%d-%b-%Y").year
        except ValueError:
            pass
    try:
        return datetime(year, month, day, hour, minute, second, tzinfo=timezone.utc)
    except ValueError:
        raise RecordingError(f"{path}: corrupt header: start date/time {date!r} {clock!r}") from None


def _read_annotations(
    path: Path, header: EdfHeader, records: np.ndarray, columns: list[slice]
) -> tuple[np.ndarray | None, Decimal, list[tuple[Decimal, float, str]]]:
    """Record onsets (from the first annotation signal's time-keeping TALs; None without one), the first
    of them as an exact decimal (0 without one), and every other annotation with its exact decimal onset.
    One Python step per data record, not per sample: TALs are variable-length text."""
    if not columns:
        if header.is_edf_plus:
            raise RecordingError(f"{path}: corrupt EDF+: no '{ANNOTATIONS_LABEL}' signal")
        return None, Decimal(0), []
    onsets = np.full(header.n_records, np.nan)
    first_onset: Decimal | None = None
    annotations: list[tuple[Decimal, float, str]] = []
    for index, col in enumerate(columns):
        # The int16 samples of this signal, record by record, are its bytes in file order.
        block = np.ascontiguousarray(records[:, col]).astype("<i2", copy=False).view(np.uint8)
        for k in range(header.n_records):
            first = True
            for tal in block[k].tobytes().split(b"\x00"):
                if not tal:
                    continue
                onset, duration, texts = _parse_tal(path, tal, k)
                if index == 0 and first:
                    if texts and texts[0] == "":
                        onsets[k] = float(onset)
                        if first_onset is None:
                            first_onset = onset
                        texts = texts[1:]
                    elif header.is_edf_plus:
                        raise RecordingError(
                            f"{path}: corrupt EDF+: data record {k} does not start with a time-keeping annotation"
                        )
                first = False
                annotations.extend((onset, duration, t) for t in texts if t)
    if header.is_edf_plus and header.n_records and np.isnan(onsets[0]):
        raise RecordingError(f"{path}: corrupt EDF+: the first data record has no time-keeping annotation")
    if not header.is_edf_plus:
        return None, Decimal(0), annotations
    return onsets, first_onset if first_onset is not None else Decimal(0), annotations


def _parse_tal(path: Path, tal: bytes, record: int) -> tuple[Decimal, float, list[str]]:
    head, *rest = tal.split(b"\x14")
    if rest and rest[-1] == b"":
        rest = rest[:-1]  # a TAL ends with \x14, which leaves an empty field after the split
    onset_text, _, duration_text = head.partition(b"\x15")
    try:
        if onset_text[:1] not in (b"+", b"-"):
            raise ValueError
        onset = Decimal(onset_text.decode("ascii"))
        duration = float(duration_text) if duration_text else 0.0
        if not onset.is_finite():
            raise ValueError
    except (ValueError, ArithmeticError, UnicodeDecodeError):
        raise RecordingError(
            f"{path}: corrupt annotation in data record {record}: bad onset/duration {head[:40]!r}"
        ) from None
    return onset, duration, [t.decode("utf-8", errors="replace").strip() for t in rest]


def _place_records(
    path: Path, physical: np.ndarray, starts: np.ndarray, fs: float, record_duration: float
) -> np.ndarray:
    """EDF+D: put each record (a row of ``physical``) at its onset, NaN between records."""
    n_records, per_record = physical.shape
    if n_records == 0:
        return physical.reshape(-1)
    first = np.rint(starts * fs).astype(np.int64)
    overlap = np.flatnonzero(first[1:] < first[:-1] + per_record)
    if overlap.size:
        k = int(overlap[0]) + 1
        raise RecordingError(
            f"{path}: corrupt EDF+D: data record {k} starts at {starts[k]:.6g} s, before data record "
            f"{k - 1} ends ({starts[k - 1] + record_duration:.6g} s)"
        )
    out = np.full(int(first[-1]) + per_record, np.nan)
    out[first[:, None] + np.arange(per_record)] = physical
    return out


def _gaps(starts: np.ndarray, header: EdfHeader) -> list[tuple[float, float]]:
    if len(starts) < 2:
        return []
    rates = [s.samples_per_record / header.record_duration for s in header.signals if not s.is_annotations]
    # Onsets are decimal text; a hole shorter than half a sample of the fastest channel is rounding.
    tolerance = 0.5 / max(rates) if rates else 1e-6
    ends = starts[:-1] + header.record_duration
    holes = starts[1:] - ends
    return [(float(ends[i]), float(holes[i])) for i in np.flatnonzero(holes > tolerance)]


# ------------------------------------------------------------------------------- beats, readings, gaps
#
# Beat-by-beat data (what a chest strap sends) and irregular heart-rate readings are not sampled signals,
# so EDF cannot hold them as signals. edged's raw recorder (edged.sinks.raw_recording) writes them as
# EDF+ annotations, one per beat or reading, and this reader turns them back into tracks:
#
#   "RR <channel>"        onset: the beat that opens the interval; duration: the interval (s), exactly
#   "HR <channel> <bpm>"  onset: when the reading was taken
#   "Gap <channel>"       onset, duration: samples (or, for RR, the silence) that never arrived. For a
#                         sampled channel the span starts half a sample before the first lost sample (between
#                         it and the last one received), so that rounding never moves it by a sample.
#   "End of data"         onset: one past the last real sample; later samples only complete a data record

RR_TEXT = "RR"
HR_TEXT = "HR"
GAP_TEXT = "Gap"
END_OF_DATA_TEXT = "End of data"


@dataclass(slots=True)
class BeatTracks:
    rr: dict[str, RRTrack] = field(default_factory=dict)
    hr: dict[str, HRTrack] = field(default_factory=dict)
    signal_gaps: list[tuple[float, float]] = field(default_factory=list)  # from "Gap <signal>" annotations
    rr_gaps: list[tuple[float, float]] = field(default_factory=list)  # the intervals that stand for a gap


def beat_tracks(path: Path, annotations: Iterable[Annotation], signal_names: set[str]) -> BeatTracks:
    """RR and HR tracks and gap spans from "RR"/"HR"/"Gap" annotations (see above)."""
    intervals: dict[str, list[tuple[float, int, float]]] = {}  # channel -> (onset, 0 interval / 1 gap, seconds)
    readings: dict[str, list[tuple[float, float]]] = {}
    out = BeatTracks()
    for onset, duration, text in annotations:
        kind, _, rest = text.partition(" ")
        if kind == RR_TEXT and rest and duration > 0:
            intervals.setdefault(rest, []).append((onset, 0, duration))
        elif kind == HR_TEXT and rest:
            channel, _, value = rest.rpartition(" ")
            try:
                bpm = float(value)
            except ValueError:
                continue  # another writer's "HR ..." note, not a reading
            readings.setdefault(channel, []).append((onset, bpm))
        elif kind == GAP_TEXT and rest and duration > 0:
            if rest in signal_names:
                out.signal_gaps.append((onset, duration))
            else:
                intervals.setdefault(rest, []).append((onset, 1, duration))
    for channel, items in intervals.items():
        if all(is_gap for _, is_gap, _ in items):
            continue  # gaps of a channel that carried no beats here (e.g. an HR channel)
        items.sort(key=lambda item: (item[0], item[1]))
        rr = np.array([seconds for _, _, seconds in items], dtype=np.float64)
        track = RRTrack(rr=rr, first_beat=items[0][0])
        beats = track.beat_times()
        out.rr[channel] = track
        # Where the replay looks for them: at the beat clock, not at the (possibly clock-corrected) onsets.
        out.rr_gaps += [(float(beats[k]), float(rr[k])) for k, item in enumerate(items) if item[1]]
    for channel, values in readings.items():
        values.sort()
        out.hr[channel] = HRTrack(times=np.array([t for t, _ in values]), bpm=np.array([v for _, v in values]))
    return out


def _merge_spans(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """(start, duration) spans sorted, overlapping ones joined; a span that overlaps none is kept as given."""
    merged: list[tuple[float, float]] = []
    for start, duration in sorted(spans):
        if merged and start <= merged[-1][0] + merged[-1][1]:
            first, length = merged[-1]
            merged[-1] = (first, max(length, start + duration - first))
        else:
            merged.append((start, duration))
    return merged


def _covered(span: tuple[float, float], by: list[tuple[float, float]], signals: dict[str, SignalTrack]) -> bool:
    start, duration = span
    slack = 0.5 / max((t.fs for t in signals.values()), default=1.0) + 1e-9  # "Gap" spans start half a sample early
    return any(s <= start + slack and start + duration <= s + d + slack for s, d in by)


# ------------------------------------------------------------------------------------------- hypnogram

_STAGE_RE = re.compile(r"^sleep[\s_-]*stage[\s_-]*(\S+)$", re.IGNORECASE)
_STAGE_CODES: dict[str, str | None] = {
    "W": "W",
    "1": "N1",
    "2": "N2",
    "3": "N3",
    "4": "N3",  # R&K stage 4 merges into N3
    "R": "REM",
    "REM": "REM",
    "N1": "N1",
    "N2": "N2",
    "N3": "N3",
    "N4": "N3",
    "?": None,
}


def stage_of(text: str) -> tuple[bool, str | None]:
    """Whether ``text`` is a sleep-stage annotation, and its stage (None for '?' and movement time)."""
    text = text.strip()
    if text.lower() in ("movement time", "sleep stage mt", "sleep stage m"):
        return True, None
    match = _STAGE_RE.match(text)
    if match is None:
        return False, None
    code = match.group(1).upper()
    if code not in _STAGE_CODES:
        return False, None
    return True, _STAGE_CODES[code]


def stage_hypnogram(
    annotations: Iterable[Annotation], *, epoch_seconds: float = EPOCH_SECONDS
) -> Hypnogram | None:
    """Epoch stages from "Sleep stage ..." / "Movement time" annotations; None if there are none.

    An annotation covers ``round(duration / epoch)`` epochs from ``round(onset / epoch)`` (one epoch when it
    gives no duration: some scorers annotate every epoch by onset only). Epochs no annotation covers are None.
    """
    spans: list[tuple[int, int, str | None]] = []
    for onset, duration, text in annotations:
        is_stage, stage = stage_of(text)
        if not is_stage:
            continue
        first = int(round(onset / epoch_seconds))
        count = max(1, int(round(duration / epoch_seconds))) if duration > 0 else 1
        if first + count <= 0:
            continue  # scored before the first sample
        spans.append((max(first, 0), first + count, stage))
    if not spans:
        return None
    stages: list[str | None] = [None] * max(end for _, end, _ in spans)
    for first, end, stage in spans:
        stages[first:end] = [stage] * (end - first)
    return Hypnogram(epoch_seconds=epoch_seconds, stages=tuple(stages))


def hypnogram_annotations(hypnogram: Hypnogram) -> list[Annotation]:
    """The hypnogram as EDF+ stage annotations, one per run of equal epochs (AASM names; None -> '?')."""
    names = {"W": "W", "N1": "N1", "N2": "N2", "N3": "N3", "REM": "R", None: "?"}
    out: list[Annotation] = []
    stages = hypnogram.stages
    i = 0
    while i < len(stages):
        j = i
        while j < len(stages) and stages[j] == stages[i]:
            j += 1
        name = names.get(stages[i])
        if name is None:
            raise ValueError(f"hypnogram stage {stages[i]!r} has no EDF+ name")
        out.append(
            Annotation(i * hypnogram.epoch_seconds, (j - i) * hypnogram.epoch_seconds, f"Sleep stage {name}")
        )
        i = j
    return out


# --------------------------------------------------------------------------------------------- writing


def write_edf(
    path: str | os.PathLike[str],
    recording: Recording,
    annotations: Iterable[Annotation | tuple[float, float, str]] = (),
    *,
    record_duration: float | None = None,
    patient: str = "X X X X",
    equipment: str = "edged",
) -> None:
    """Write ``recording`` as a 16-bit EDF+ file that :func:`load_edf` reads back within quantisation.

    * Each channel's physical min/max come from its data (rounded outward to fit the 8-character field),
      so the quantisation step is (max - min) / 65535.
    * ``annotations`` (onset s from the first sample, duration s (0 = none), text) and the recording's
      hypnogram (as "Sleep stage W/N1/N2/N3/R/?" runs) go into the ``EDF Annotations`` signal.
    * A data record in which every channel is NaN is left out: the file is then EDF+D and the hole reads
      back as a gap. NaN anywhere else cannot be stored (EDF has no missing-value code) and is an error.
    * The last record is completed by repeating each channel's last sample; channels must otherwise cover
      the same time span.
    * ``record_duration`` defaults to the first of 1, 2, 5, 10, ... s (or 0.5, 0.25, ... s) at which every
      rate gives a whole number of samples per record, preferring records of at most 61440 bytes.
    """
    path = Path(path)
    if recording.rr:
        raise RecordingError(f"{path}: EDF holds sampled signals only; cannot write rr tracks {list(recording.rr)}")
    names = list(recording.signals)
    tracks = [recording.signals[n] for n in names]
    all_annotations = [Annotation(float(a[0]), float(a[1]), str(a[2])) for a in annotations]
    if recording.hypnogram is not None:
        try:
            all_annotations += hypnogram_annotations(recording.hypnogram)
        except ValueError as exc:
            raise RecordingError(f"{path}: {exc}") from None
    all_annotations.sort(key=lambda a: a.onset)

    if tracks:
        duration = record_duration or _choose_record_duration(path, [t.fs for t in tracks])
        per_record = [_samples_per_record(path, t.fs, duration, n) for t, n in zip(tracks, names)]
        n_records = max(math.ceil(len(t.data) / p) for t, p in zip(tracks, per_record))
        if n_records == 0:
            raise RecordingError(f"{path}: every channel is empty; nothing to write")
    else:
        duration, per_record, n_records = 0.0, [], 1  # annotation-only file: one record, duration 0

    # Each channel as (n_records, per_record) physical values, NaN where absent.
    blocks: list[np.ndarray] = []
    for name, track, n in zip(names, tracks, per_record):
        data = np.asarray(track.data, dtype=np.float64)
        short = n_records * n - len(data)
        if short >= n:
            raise RecordingError(
                f"{path}: channel {name!r} covers {len(data) / track.fs:.6g} s, at least one data record "
                f"({duration:g} s) less than the longest channel; pad channels to the same span first"
            )
        if short > 0:
            data = np.concatenate((data, np.full(short, data[-1] if len(data) else 0.0)))
        blocks.append(data.reshape(n_records, n))

    # Whole-NaN records across every channel are left out (EDF+D); NaN anywhere else is unrepresentable.
    if blocks:
        empty = np.logical_and.reduce([np.isnan(b).all(axis=1) for b in blocks])
        for name, block in zip(names, blocks):
            bad = np.isnan(block[~empty]).any(axis=1)
            if bad.any():
                k = int(np.flatnonzero(~empty)[np.flatnonzero(bad)[0]])
                raise RecordingError(
                    f"{path}: channel {name!r} has NaN in data record {k} ({k * duration:g} s) where other "
                    f"samples exist; EDF can only leave out whole data records"
                )
        kept = np.flatnonzero(~empty)
        if kept.size == 0:
            raise RecordingError(f"{path}: every sample is NaN; nothing to write")
    else:
        kept = np.arange(1)
    discontinuous = kept.size != n_records

    # EDF's start time has 1-s resolution: the sub-second rest goes into the time-keeping onsets (EDF+).
    start = recording.start_time
    t0 = start - math.floor(start) if start is not None else 0.0
    onsets = t0 + kept * duration
    all_annotations = [Annotation(a.onset + t0, a.duration, a.text) for a in all_annotations]
    tal_records = _pack_tals(path, onsets, all_annotations)
    annotation_bytes = max(len(r) for r in tal_records)
    annotation_bytes += annotation_bytes % 2  # whole int16 samples

    headers = []
    digital_blocks = []
    for name, track, n, block in zip(names, tracks, per_record, blocks):
        kept_block = block[kept]
        lo, hi = float(kept_block.min()), float(kept_block.max())
        if lo == hi:  # a flat channel still needs physical_max != physical_min
            lo, hi = lo - 1.0, hi + 1.0
        pmin_text, pmax_text = _format_bound(path, name, lo, math.floor), _format_bound(path, name, hi, math.ceil)
        pmin, pmax = float(pmin_text), float(pmax_text)
        step = (pmax - pmin) / (_WRITER_DIGITAL_MAX - _WRITER_DIGITAL_MIN)
        digital = np.rint((kept_block - pmin) / step) + _WRITER_DIGITAL_MIN
        digital_blocks.append(np.clip(digital, _WRITER_DIGITAL_MIN, _WRITER_DIGITAL_MAX).astype("<i2"))
        headers.append((name, track.units, pmin_text, pmax_text, str(_WRITER_DIGITAL_MIN), str(_WRITER_DIGITAL_MAX), n))
    headers.append(
        (ANNOTATIONS_LABEL, "", "-1", "1", str(_WRITER_DIGITAL_MIN), str(_WRITER_DIGITAL_MAX), annotation_bytes // 2)
    )
    tal_block = np.frombuffer(
        b"".join(r.ljust(annotation_bytes, b"\x00") for r in tal_records), dtype="<i2"
    ).reshape(len(tal_records), annotation_bytes // 2)
    data = np.concatenate([*digital_blocks, tal_block], axis=1) if digital_blocks else tal_block

    header = _header_bytes(path, headers, start, len(tal_records), duration, discontinuous, patient, equipment)
    with open(path, "wb") as fh:
        fh.write(header)
        fh.write(np.ascontiguousarray(data, dtype="<i2").tobytes())


@dataclass(frozen=True, slots=True)
class StreamSignal:
    """One ordinary signal of an :class:`EdfStreamWriter`: its range is fixed before the first sample."""

    label: str
    units: str
    physical_min: float
    physical_max: float
    samples_per_record: int


class EdfStreamWriter:
    """An EDF+ file written one data record at a time, readable at every moment.

    * The header goes out first with the record count ``-1`` ("unknown", allowed by the spec while a file
      is being written); :meth:`close` writes the true count. After a crash, :func:`load_edf` reads every
      whole record anyway, and :func:`repair_edf` cuts a partial last record and writes the count.
    * Every record is handed to the kernel as it is written (no user-space buffer), so a killed process
      loses nothing written; :meth:`fsync` (for power loss) is safe to call from another thread.
    * Records carry their own time-keeping onset. The file starts as EDF+C and the header becomes EDF+D
      the moment a record does not follow its predecessor: the header is changed before that record is
      written, so the file on disk never claims to be continuous when it is not.
    * Onsets and durations are written as exact decimals of the given floats (``repr``), after a sub-second
      start offset ``t0``; :func:`load_edf` subtracts in decimal and gets the same floats back.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        signals: Sequence[StreamSignal],
        *,
        record_duration: float,
        start: float,
        annotation_bytes: int,
        patient: str = "X X X X",
        equipment: str = "edged",
    ) -> None:
        self.path = Path(path)
        self.signals = tuple(signals)
        self.record_duration = record_duration
        self.start = start
        self.annotation_bytes = annotation_bytes + annotation_bytes % 2
        self.n_records = 0
        self.discontinuous = False
        self._t0 = Decimal(f"{start - math.floor(start):.6f}")
        self._last_onset: float | None = None
        self._scale = []
        headers = []
        for sig in self.signals:
            pmin_text = _format_bound(self.path, sig.label, sig.physical_min, math.floor)
            pmax_text = _format_bound(self.path, sig.label, sig.physical_max, math.ceil)
            pmin, pmax = float(pmin_text), float(pmax_text)
            self._scale.append((pmin, (pmax - pmin) / (_WRITER_DIGITAL_MAX - _WRITER_DIGITAL_MIN)))
            headers.append((sig.label, sig.units, pmin_text, pmax_text, str(_WRITER_DIGITAL_MIN),
                            str(_WRITER_DIGITAL_MAX), sig.samples_per_record))
        headers.append((ANNOTATIONS_LABEL, "", "-1", "1", str(_WRITER_DIGITAL_MIN), str(_WRITER_DIGITAL_MAX),
                        self.annotation_bytes // 2))
        self._headers = headers
        self._patient, self._equipment = patient, equipment
        self.header = self._header(-1)
        self.record_bytes = 2 * sum(h[6] for h in headers)
        self._fh: BinaryIO | None = open(self.path, "xb", buffering=0)  # never overwrite a recording
        self._fh.write(self.header)

    @property
    def ranges(self) -> list[tuple[float, float]]:
        """Each signal's physical range as stored (rounded outward to the header's 8 characters)."""
        return [(pmin, pmin + step * (_WRITER_DIGITAL_MAX - _WRITER_DIGITAL_MIN)) for pmin, step in self._scale]

    @property
    def size(self) -> int:
        return len(self.header) + self.n_records * self.record_bytes

    def _header(self, n_records: int) -> bytes:
        return _header_bytes(self.path, self._headers, self.start, n_records, self.record_duration,
                             self.discontinuous, self._patient, self._equipment)

    def write_record(self, onset: float, physical: Sequence[np.ndarray], annotations: Sequence[Annotation]) -> int:
        """Write one data record starting ``onset`` s after the file start, holding ``physical`` (one array
        of ``samples_per_record`` values per signal, clipped to its range) and as many of ``annotations``
        (onsets in s after the file start) as fit. Returns how many annotations it took, in order."""
        if self._fh is None:
            raise RecordingError(f"{self.path}: the EDF writer is closed")
        tal = bytearray(f"{_exact_seconds(self._t0, onset)}\x14\x14\x00".encode())
        taken = 0
        for a in annotations:
            if any(c in a.text for c in "\x00\x14\x15"):
                raise RecordingError(f"{self.path}: annotation text {a.text!r} contains an EDF+ control character")
            duration = f"\x15{_exact_seconds(Decimal(0), a.duration, signed=False)}" if a.duration > 0 else ""
            item = f"{_exact_seconds(self._t0, a.onset)}{duration}\x14{a.text}\x14\x00".encode()
            if len(tal) + len(item) > self.annotation_bytes:
                break
            tal += item
            taken += 1
        parts = []
        for sig, (pmin, step), values in zip(self.signals, self._scale, physical):
            values = np.asarray(values, dtype=np.float64)
            if len(values) != sig.samples_per_record:
                raise ValueError(f"{sig.label}: {len(values)} samples for a record of {sig.samples_per_record}")
            digital = np.rint((values - pmin) / step) + _WRITER_DIGITAL_MIN
            parts.append(np.clip(digital, _WRITER_DIGITAL_MIN, _WRITER_DIGITAL_MAX).astype("<i2").tobytes())
        parts.append(bytes(tal.ljust(self.annotation_bytes, b"\x00")))
        if (not self.discontinuous and self._last_onset is not None
                and abs(onset - (self._last_onset + self.record_duration)) > 1e-9 * max(1.0, onset)):
            self.discontinuous = True
            self._rewrite_header(-1)
        self._fh.write(b"".join(parts))
        self._last_onset = onset
        self.n_records += 1
        return taken

    def _rewrite_header(self, n_records: int) -> None:
        assert self._fh is not None
        self.header = self._header(n_records)
        self._fh.seek(0)
        self._fh.write(self.header)
        self._fh.seek(0, os.SEEK_END)

    def fileno(self) -> int | None:
        return self._fh.fileno() if self._fh is not None else None

    def fsync(self) -> None:
        if self._fh is not None:
            os.fsync(self._fh.fileno())

    def close(self) -> None:
        """Write the record count into the header and sync. Idempotent."""
        if self._fh is None:
            return
        try:
            self._rewrite_header(self.n_records)
            os.fsync(self._fh.fileno())
        finally:
            self._fh.close()
            self._fh = None


def repair_edf(path: str | os.PathLike[str]) -> int | None:
    """Finish an EDF file an interrupted writer left with the record count ``-1``: cut a partial last
    record and write the count of whole ones. Returns that count, or None if the file needed nothing."""
    path = Path(path)
    with open(path, "r+b") as fh:
        head = fh.read(256)
        if len(head) < 256 or head[236:244].strip() != b"-1":
            return None
        size = os.fstat(fh.fileno()).st_size
        fh.seek(0)
        header = _parse_header(path, fh, size)  # resolves -1 to the whole records present
        fh.truncate(header.header_bytes + header.n_records * 2 * header.record_samples)
        fh.seek(236)
        fh.write(f"{header.n_records:<8d}".encode("ascii"))
        os.fsync(fh.fileno())
    return header.n_records


def _exact_seconds(t0: Decimal, seconds: float, signed: bool = True) -> str:
    value = t0 + Decimal(repr(float(seconds)))
    text = format(value.normalize(), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    if text in ("", "-0"):
        text = "0"
    return ("+" + text if signed and not text.startswith("-") else text)


def record_duration_for(rates: Sequence[float]) -> float:
    """The data record duration :func:`write_edf` would choose for these signal rates (Hz)."""
    return _choose_record_duration(Path("<stream>"), rates)


def _choose_record_duration(path: Path, rates: Sequence[float]) -> float:
    candidates = (1.0, 2.0, 5.0, 10.0, 0.5, 0.25, 0.2, 0.1, 4.0, 20.0, 30.0, 60.0)
    fitting = [d for d in candidates if all(_whole(fs * d) for fs in rates)]
    if not fitting:
        raise RecordingError(
            f"{path}: no EDF data record duration gives whole samples per record for rates {list(rates)}"
        )
    for d in fitting:
        if 2 * sum(round(fs * d) for fs in rates) <= _MAX_RECORD_BYTES:
            return d
    return min(fitting)


def _whole(x: float) -> bool:
    return x >= 1 and abs(x - round(x)) < 1e-6 * max(1.0, x)


def _samples_per_record(path: Path, fs: float, duration: float, name: str) -> int:
    n = fs * duration
    if not _whole(n):
        raise RecordingError(
            f"{path}: channel {name!r} at {fs} Hz has no whole number of samples per {duration} s record"
        )
    return int(round(n))


def _format_bound(path: Path, name: str, value: float, rounding: Callable[[float], int]) -> str:
    """``value`` as at most 8 characters of plain decimal, rounded outward (``rounding`` is floor for a
    minimum, ceil for a maximum) so the range still covers the data. No exponents: many readers reject them."""
    for decimals in range(7, -1, -1):
        scale = 10.0**decimals
        rounded = rounding(value * scale) / scale
        text = f"{rounded:.{decimals}f}"
        if "." in text:
            text = text.rstrip("0").rstrip(".")
        if text == "-0":
            text = "0"
        if len(text) <= 8:
            return text
    raise RecordingError(f"{path}: channel {name!r} value {value:g} does not fit EDF's 8-character field")


def _format_seconds(value: float, signed: bool) -> str:
    text = f"{value:.7f}".rstrip("0").rstrip(".")
    if text in ("", "-0"):
        text = "0"
    if signed and not text.startswith("-"):
        text = "+" + text
    return text


def _pack_tals(path: Path, onsets: np.ndarray, annotations: list[Annotation]) -> list[bytes]:
    """One byte string per data record: its time-keeping TAL, then annotations packed in order.

    Annotations may sit in any record (the spec ties them to onsets, not to records), so they are spread
    over the records in onset order with a per-record budget just big enough to hold them all: that keeps
    the annotation signal, which costs the same bytes in every record, small."""
    timekeeping = [f"{_format_seconds(o, True)}\x14\x14\x00".encode() for o in onsets]
    tals = []
    for a in annotations:
        if any(c in a.text for c in "\x00\x14\x15"):
            raise RecordingError(f"{path}: annotation text {a.text!r} contains an EDF+ control character")
        duration = f"\x15{_format_seconds(a.duration, False)}" if a.duration > 0 else ""
        tals.append(f"{_format_seconds(a.onset, True)}{duration}\x14{a.text}\x14\x00".encode())
    n = len(timekeeping)
    budget = max(len(t) for t in timekeeping) + max((len(t) for t in tals), default=0)
    budget = max(budget, math.ceil((sum(map(len, timekeeping)) + sum(map(len, tals))) / n))
    while True:
        packed = [bytearray(t) for t in timekeeping]
        k = 0
        for tal in tals:
            while k < n and len(packed[k]) + len(tal) > budget:
                k += 1
            if k == n:
                break
            packed[k] += tal
        else:
            return [bytes(p) for p in packed]
        budget = math.ceil(budget * 1.25)  # greedy packing left too much slack: grow and retry


def _header_bytes(
    path: Path,
    signals: list[tuple[str, str, str, str, str, str, int]],
    start: float | None,
    n_records: int,
    duration: float,
    discontinuous: bool,
    patient: str,
    equipment: str,
) -> bytes:
    if start is not None:
        when = datetime.fromtimestamp(math.floor(start), tz=timezone.utc)
        if not 1985 <= when.year <= 2084:
            raise RecordingError(f"{path}: start year {when.year} is outside EDF's 1985-2084")
        startdate = f"{when.day:02d}-{_MONTHS[when.month - 1]}-{when.year}"
    else:
        when = datetime(1985, 1, 1, tzinfo=timezone.utc)  # placeholder; "Startdate X" says it is unknown
        startdate = "X"
    duration_text = _format_seconds(duration, False)
    if len(duration_text) > 8:
        raise RecordingError(f"{path}: data record duration {duration} does not fit in 8 characters")

    def field(value: object, width: int) -> str:
        text = str(value)
        if len(text) > width:
            raise RecordingError(f"{path}: header value {text!r} is longer than its {width}-character field")
        return text.ljust(width)

    ns = len(signals)
    head = (
        field("0", 8)
        + field(patient, 80)
        + field(f"Startdate {startdate} X X {equipment}", 80)
        + when.strftime("%d.%m.%y")
        + when.strftime("%H.%M.%S")
        + field(256 * (ns + 1), 8)
        + field("EDF+D" if discontinuous else "EDF+C", 44)
        + field(n_records, 8)
        + field(duration_text, 8)
        + field(ns, 4)
    )
    columns = list(zip(*signals))  # label, units, pmin, pmax, dmin, dmax, samples per record
    label, units, pmin, pmax, dmin, dmax, nsamp = columns
    parts = [
        "".join(field(v, 16) for v in label),
        "".join(field("", 80) for _ in range(ns)),
        "".join(field(v, 8) for v in units),
        "".join(field(v, 8) for v in pmin),
        "".join(field(v, 8) for v in pmax),
        "".join(field(v, 8) for v in dmin),
        "".join(field(v, 8) for v in dmax),
        "".join(field("", 80) for _ in range(ns)),
        "".join(field(v, 8) for v in nsamp),
        "".join(field("", 32) for _ in range(ns)),
    ]
    text = head + "".join(parts)
    try:
        return text.encode("ascii")
    except UnicodeEncodeError:
        raise RecordingError(
            f"{path}: EDF header fields must be ASCII (a label, unit or patient field is not)"
        ) from None


# ------------------------------------------------------------------------------------------------ util


def _unique_name(name: str, taken: dict[str, SignalTrack]) -> str:
    """Files may repeat a label; later ones get '#2', '#3' so no channel is silently dropped."""
    if name not in taken:
        return name
    k = 2
    while f"{name}#{k}" in taken:
        k += 1
    return f"{name}#{k}"


def _int(path: Path, text: str, what: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise RecordingError(f"{path}: corrupt header: {what} is not an integer: {text.strip()!r}") from None


def _float(path: Path, text: str, what: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise RecordingError(f"{path}: corrupt header: {what} is not a number: {text.strip()!r}") from None
    if not math.isfinite(value):
        raise RecordingError(f"{path}: corrupt header: {what} is {text.strip()!r}")
    return value
