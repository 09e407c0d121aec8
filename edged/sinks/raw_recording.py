"""Raw recording: every event a device's pipeline receives, written to disk as EDF+ while it arrives, so
that a night can be re-scored later (``edged replay FILE``) with the same pipeline and the same stages.

What is written, per device and session (one source stream), in ``<dir>/<device>/<device>_<start>Z.edf``:

* **Sampled channels** (ECG, PPG, EEG, ...) as EDF signals, 16 bits. EDF fixes a channel's physical range
  in the header, before the data: the recorder holds the first ``calibration_seconds`` in memory, opens the
  file with a range of eight times what they span, and when a later sample falls outside it, starts the
  next file of the session with a wider range. Nothing is clipped; a session may have several files.
* **Beat intervals** (``rr`` channels: what a strap sends) and **heart-rate readings** (``hr``) as EDF+
  annotations in the same file, one per beat (``RR <channel>``: onset = the beat that opens the interval,
  duration = the interval exactly as received) or reading (``HR <channel> <bpm>``). Why annotations and not
  a PhysioNet ``.rr`` file beside the EDF: one self-describing file per session that EDF+ tools (EDFbrowser,
  MNE, pyedflib) open, with beats, gaps, connection events and signals on one time axis; EDF+ onsets and
  durations are decimal text of any precision, so the intervals are kept exactly (a BLE strap's 1/1024 s
  units) where ``rrlist`` text rounds to milliseconds; and ``.rr`` text has no standard way to mark a gap
  or a lost connection, and two files per session could disagree after a crash. Cost: ~35 bytes per beat.
* **Gaps**: a data record in which no channel has data is left out (the file is EDF+D, the standard way);
  every gap is also a ``Gap <channel>`` annotation with its exact span, because a gap that starts inside a
  record cannot be a hole (the record's missing samples hold the last value and are marked by it).
* **Connection events** (``Connected: ...``, ``Connection lost: ...``), the device, its type, its channels
  and the edged version (annotations at the start, and the header's equipment field), and ``End of data``
  where the samples end inside the last record.

:func:`edged.sources.readers.edf.load_edf` reads all of it back: RR and HR tracks, gaps as gaps.

Crash safety: the header is written first with the record count ``-1`` ("unknown", which EDF allows while
recording) and every data record goes to the kernel as it is completed, so a killed daemon loses at most the
record in progress; the data is synced to the device every ``fsync_seconds`` (power loss) and on close,
when the true count is written. A file left with ``-1`` is still readable (readers use the whole records
present) and is repaired (partial record cut, count written) when the recorder next starts, or with
``python -m edged.sinks.raw_recording repair FILE``.

Files: one per session and day; a session goes on in a new file when the local clock passes
``daily_at_hour`` (noon by default, so that a night stays in one file), when a file reaches ``max_file_mb``
or ``max_file_hours``, or when a sample leaves the calibrated range (above). Bounds: the oldest recordings
under ``dir`` are deleted (and counted, and logged) when all of them exceed ``max_total_mb`` (checked when a
file opens or closes and every 64 data records; a file being written is never deleted). A disk error stops
the recording of that device with one error line; scoring and publishing go on.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from edged import __version__
from edged.sources.base import ChannelSpec, Chunk, Gap, Source, SourceEvent, Status
from edged.sources.readers.edf import (
    END_OF_DATA_TEXT,
    GAP_TEXT,
    HR_TEXT,
    RR_TEXT,
    Annotation,
    EdfStreamWriter,
    StreamSignal,
    record_duration_for,
    repair_edf,
)

log = logging.getLogger(__name__)

# Data records of up to 10 s: few time-keeping annotations and little annotation slack per second of signal
# (a crash loses at most the record in progress), within the spec's recommended 61440 bytes per record.
_RECORD_SECONDS = (10.0, 5.0, 4.0, 2.0, 1.0, 0.5, 0.25, 0.2, 0.1)
_MAX_RECORD_BYTES = 61440
_BEAT_BYTES_PER_SECOND = 200  # annotation room for beats: 5 per second (300 bpm) at ~40 bytes each
_MAX_TEXT = 120  # characters of one annotation text (a long status reason is cut)
_OPEN: set[Path] = set()  # files being written by any recorder of this process: never deleted by retention


@dataclass(frozen=True, slots=True)
class RecordingSettings:
    dir: Path
    max_file_mb: float = 512.0
    max_file_hours: float = 24.0
    max_total_mb: float = 0.0  # 0: no limit
    daily_at_hour: int = -1  # local hour at which a new file begins (-1: none)
    fsync_seconds: float = 10.0
    calibration_seconds: float = 10.0


class _SignalBuffer:
    """Samples of one sampled channel from the first index not yet written, with a validity mask."""

    def __init__(self, spec: ChannelSpec, per_record: int):
        self.spec = spec
        self.per_record = per_record
        self.start = 0  # channel index of values[0]
        self.values = np.zeros(0)
        self.valid = np.zeros(0, dtype=bool)
        self.last = 0.0  # the last real value, to fill a gap inside a record

    @property
    def end(self) -> int:
        return self.start + len(self.values)

    def put(self, start_index: int, data: np.ndarray, valid: bool) -> None:
        if start_index > self.end:  # samples skipped without a Gap event: still missing
            self.put(self.end, np.full(start_index - self.end, self.last), False)
        data = np.asarray(data, dtype=np.float64)[max(0, self.end - start_index):]  # never rewrite the past
        if valid and len(data):
            self.last = float(data[-1])
        self.values = np.concatenate((self.values, data))
        self.valid = np.concatenate((self.valid, np.full(len(data), valid)))

    def take(self) -> tuple[np.ndarray, np.ndarray]:
        n = self.per_record
        values, valid = self.values[:n], self.valid[:n]
        if len(values) < n:  # only at the end of a session: complete the record with the last value
            values = np.concatenate((values, np.full(n - len(values), self.last)))
            valid = np.concatenate((valid, np.zeros(n - len(valid), dtype=bool)))
        self.values, self.valid = self.values[n:], self.valid[n:]
        self.start += n
        return values, valid


@dataclass(slots=True)
class _Record:
    index: int  # k: covers stream time [k * D, (k + 1) * D)
    values: list[np.ndarray]
    valid: list[np.ndarray]


class RawRecorder:
    """Writes one device's events to EDF+ files. ``push`` every event the pipeline receives with the source
    it came from (a new source object, e.g. after a restart, begins a new session and file), ``close`` once.

    Not thread-safe: one caller (the device's processor task); only the periodic fsync runs on its own
    thread, under ``_lock``.
    """

    def __init__(self, settings: RecordingSettings, device: str, device_type: str):
        self.settings = settings
        self.device = device
        self.device_type = device_type
        self.source: Source | None = None
        self.directory = settings.dir / device
        self.counters = {"records": 0, "files": 0, "files_deleted": 0, "events_not_recorded": 0,
                         "annotations_dropped": 0}
        self.paths: list[Path] = []
        self.failed: str | None = None
        self._started = False
        self._closed = False
        self._early: list[Status] = []  # status events before the first data (the anchor is not set yet)
        self._writer: EdfStreamWriter | None = None
        self._lock = threading.Lock()
        self._stop_sync = threading.Event()
        self._sync_thread: threading.Thread | None = None

    # ------------------------------------------------------------------------------------ public

    def push(self, event: SourceEvent, source: Source) -> None:
        if self.failed is not None or self._closed:
            self.counters["events_not_recorded"] += 1
            return
        try:
            if source is not self.source:
                self._end_session()
                self.source = source
            if not self._started:
                if isinstance(event, Status):
                    self._early = [*self._early[-15:], event]  # a device that flaps but never sends data
                    return
                self._start(source)
                for status in self._early:
                    self._status(status)
            if isinstance(event, Status):
                self._status(event)
            elif isinstance(event, Gap):
                self._gap(event)
            elif isinstance(event, Chunk):
                self._chunk(event)
            self._emit_ready()
        except Exception as exc:  # noqa: BLE001  (whatever stops the recording must not stop the scoring)
            self._fail(exc)

    def close(self) -> None:
        """Write what is buffered (the last record completed with its last values and marked), finish the
        file's header and stop. Idempotent."""
        if self._closed:
            return
        try:
            self._end_session()
        finally:
            self._closed = True
            self._stop_sync.set()
            if self._sync_thread is not None:
                self._sync_thread.join(timeout=5)

    def _end_session(self) -> None:
        try:
            if self._started and self.failed is None:
                self._finish()
        except Exception as exc:  # noqa: BLE001
            self._fail(exc)
        finally:
            self._close_writer()
            self._started = False
            self._early = []

    # ----------------------------------------------------------------------------------- events

    def _start(self, source: Source) -> None:
        self._started = True
        self.anchor = source.anchor_time if source.anchor_time is not None else time.time()
        channels = source.channels()
        self.signal_specs = [c for c in channels if c.kind == "signal"]
        self.beat_specs = {c.name: c for c in channels if c.kind != "signal"}
        rates = [c.fs for c in self.signal_specs]
        self.D = _record_seconds(rates)
        self.buffers = {c.name: _SignalBuffer(c, round(c.fs * self.D)) for c in self.signal_specs}
        self.next_record = 0  # next record index k to emit
        self.pending_records: list[_Record] = []  # emitted, waiting for the file (calibration)
        self.annotations: list[Annotation] = []  # onsets in stream time, waiting for a record
        self.beat_clock = {name: spec.offset for name, spec in self.beat_specs.items()}
        self.beat_started = dict.fromkeys(self.beat_specs, False)
        self.beat_time = 0.0  # stream time up to which beat/reading channels are known
        self.beat_gaps: list[tuple[float, float]] = []  # silences of the beat/reading channels
        self.open_gaps: dict[str, list[float]] = {}  # channel -> [start, end] of a gap still growing
        self.file_origin = 0.0  # stream time of the open file's time zero
        self.file_first_record = 0
        self.ranges: list[tuple[float, float]] | None = None
        self.next_day: float | None = None  # when the open file gives way to the next day's
        self.directory.mkdir(parents=True, exist_ok=True)
        for path in sorted(self.directory.glob("*.edf")):
            if path in _OPEN:
                continue
            try:
                repaired = repair_edf(path)
            except Exception as exc:  # noqa: BLE001  (a broken old file must not stop a new recording)
                log.warning("raw recording: cannot repair %s: %s", path, exc)
                continue
            if repaired is not None:
                log.warning("raw recording: %s was left unfinished (crash?): repaired, %d whole data records",
                            path, repaired)
        described = ", ".join(
            f"{c.name} ({c.fs:g} Hz, {c.units})" if c.kind == "signal" else f"{c.name} ({c.kind}, {c.units})"
            for c in channels)
        self._annotate(0.0, 0.0, f"edged {__version__} raw recording: device {self.device} ({self.device_type})")
        self._annotate(0.0, 0.0, f"Channels: {described}")
        if self._sync_thread is None:
            self._sync_thread = threading.Thread(target=self._sync_loop, name=f"edged-record-{self.device}",
                                                 daemon=True)
            self._sync_thread.start()

    def _annotate(self, onset: float, duration: float, text: str) -> None:
        self.annotations.append(Annotation(onset, duration, text[:_MAX_TEXT]))

    def _now(self) -> float:
        """Stream time up to which the device has delivered (for events that carry no time of their own)."""
        ends = [b.end / b.spec.fs for b in self.buffers.values()]
        return max([*ends, self.beat_time])

    def _status(self, event: Status) -> None:
        text = f"Connected: {event.reason}" if event.connected else f"Connection lost: {event.reason}"
        self._annotate(self._now(), 0.0, text.rstrip(": "))

    def _note_gap(self, channel: str, start: float, length: float, per_second: float) -> None:
        """One annotation per gap, however many events it arrived in; written once data resumes. Spans are
        kept in the channel's own units (samples, or seconds for beats) so that joining them is exact."""
        span = self.open_gaps.get(channel)
        if span is not None and span[2] == per_second and abs(span[1] - start) <= 1e-9 * max(1.0, start):
            span[1] = start + length
            return
        self._close_gap(channel)
        self.open_gaps[channel] = [start, start + length, per_second]

    def _close_gap(self, channel: str) -> None:
        span = self.open_gaps.pop(channel, None)
        if span is None:
            return
        start, end, per_second = span
        if per_second == 0.0:  # beats (spans in seconds): the silence as the beat clock saw it
            self._annotate(start, end - start, f"{GAP_TEXT} {channel}")
        else:  # samples: from half a sample before the first lost one (see edged.sources.readers.edf)
            self._annotate((start - 0.5) / per_second, (end - start) / per_second, f"{GAP_TEXT} {channel}")

    def _gap(self, event: Gap) -> None:
        buffer = self.buffers.get(event.channel)
        if buffer is not None:
            if event.n_missing > 0:
                self._note_gap(event.channel, event.start_index, event.n_missing, buffer.spec.fs)
                buffer.put(event.start_index, np.full(event.n_missing, buffer.last), False)
            return
        if event.channel not in self.beat_specs or event.seconds <= 0:
            return
        start = self.beat_clock[event.channel]
        self._note_gap(event.channel, start, event.seconds, 0.0)
        self.beat_gaps.append((start, start + event.seconds))
        # The pipeline's beat clock (IbiFromRR) moves on by the silence; the next beat opens an interval.
        self.beat_clock[event.channel] = start + event.seconds
        self.beat_started[event.channel] = False
        self.beat_time = max(self.beat_time, start + event.seconds)

    def _chunk(self, event: Chunk) -> None:
        if len(event.data):
            self._close_gap(event.channel)
        buffer = self.buffers.get(event.channel)
        if buffer is not None:
            buffer.put(event.start_index, event.data, True)
            return
        spec = self.beat_specs.get(event.channel)
        if spec is None or len(event.data) == 0:
            return
        values = np.asarray(event.data, dtype=np.float64)
        if spec.kind == "hr":
            times = np.asarray(event.times, dtype=np.float64)
            for t, bpm in zip(times.tolist(), values.tolist()):
                self._annotate(t, 0.0, f"{HR_TEXT} {event.channel} {bpm!r}")
            self.beat_time = max(self.beat_time, float(times[-1]))
            return
        # rr: the same beat clock as the pipeline (IbiFromRR.push), so onsets are where it put the beats.
        if event.times is not None:
            closing = np.asarray(event.times, dtype=np.float64)
            opening = closing[0] - values[0] if not self.beat_started[event.channel] else self.beat_clock[event.channel]
        else:
            closing = self.beat_clock[event.channel] + np.cumsum(values)
            opening = self.beat_clock[event.channel]
        starts = np.concatenate(([opening], closing[:-1]))
        for t, rr in zip(starts.tolist(), values.tolist()):
            self._annotate(t, rr, f"{RR_TEXT} {event.channel}")
        self.beat_clock[event.channel] = float(closing[-1])
        self.beat_started[event.channel] = True
        self.beat_time = max(self.beat_time, float(closing[-1]))

    # ---------------------------------------------------------------------------------- records

    def _emit_ready(self, final: bool = False) -> None:
        while True:
            k = self.next_record
            if self.buffers:
                complete = all(b.end >= b.start + b.per_record for b in self.buffers.values())
                if not complete and not (final and any(len(b.values) for b in self.buffers.values())):
                    return
                record = _Record(k, [], [])
                for buffer in self.buffers.values():
                    values, valid = buffer.take()
                    record.values.append(values)
                    record.valid.append(valid)
                hole = not any(v.any() for v in record.valid)
            else:
                if (k + 1) * self.D > self.beat_time and not (final and k * self.D < self.beat_time):
                    return
                record = _Record(k, [], [])
                a, b = k * self.D, (k + 1) * self.D
                hole = any(lo <= a and b <= hi for lo, hi in self.beat_gaps)
                self.beat_gaps = [(lo, hi) for lo, hi in self.beat_gaps if hi > b]
            self.next_record += 1
            if not hole:
                self._record(record)

    def _record(self, record: _Record) -> None:
        if self._writer is None and self.ranges is None:
            self.pending_records.append(record)
            covered = (record.index + 1 - self.pending_records[0].index) * self.D
            if self.buffers and covered < self.settings.calibration_seconds:
                return
            self.ranges = self._calibrate(self.pending_records)
            records, self.pending_records = self.pending_records, []
            for r in records:
                self._write(r)
            return
        self._write(record)

    def _calibrate(self, records: list[_Record]) -> list[tuple[float, float]]:
        ranges = []
        for i in range(len(self.buffers)):
            values = np.concatenate([r.values[i][r.valid[i]] for r in records] or [np.zeros(0)])
            lo, hi = (float(values.min()), float(values.max())) if len(values) else (0.0, 0.0)
            ranges.append(_widen(lo, hi, 8.0))
        return ranges

    def _write(self, record: _Record) -> None:
        writer = self._writer
        if writer is not None:
            reason = self._rotation_reason(writer, record)
            if reason:
                # Annotations still waiting go into the next file (EDF+ onsets may precede a file's start).
                log.info("raw recording of %s: next file (%s)", self.device, reason)
                self._close_writer()
                writer = None
        if writer is None:
            writer = self._open(record.index)
        self._write_record(writer, record.index, record.values)

    def _write_record(self, writer: EdfStreamWriter, index: int, values: list[np.ndarray]) -> int:
        """One data record with as many waiting annotations as fit (oldest first); returns how many."""
        taken = writer.write_record(index * self.D - self.file_origin, values,
                                    [self._relative(a) for a in self.annotations[:64]])
        del self.annotations[:taken]
        self.counters["records"] += 1
        if self.counters["records"] % 64 == 0:
            self._enforce_total_size()
        return taken

    def _rotation_reason(self, writer: EdfStreamWriter, record: _Record) -> str:
        s = self.settings
        real = [values[valid] for values, valid in zip(record.values, record.valid)]
        outside = [i for i, ((lo, hi), v) in enumerate(zip(writer.ranges, real))
                   if len(v) and (v.min() < lo or v.max() > hi)]
        if outside:
            # The next file's range holds this file's and the new extremes, with room to spare.
            self.ranges = [_widen(min(lo, v.min(initial=lo)), max(hi, v.max(initial=hi)), 2.0)
                           for (lo, hi), v in zip(writer.ranges, real)]
            lo, hi = writer.ranges[outside[0]]
            return f"channel {self.signal_specs[outside[0]].name} left its range {lo:g}..{hi:g}"
        if s.max_file_mb > 0 and writer.size + writer.record_bytes > s.max_file_mb * 1e6:
            return f"file reached max_file_mb = {s.max_file_mb:g}"
        if s.max_file_hours > 0 and (record.index - self.file_first_record) * self.D >= s.max_file_hours * 3600:
            return f"file reached max_file_hours = {s.max_file_hours:g}"
        if self.next_day is not None and self.anchor + record.index * self.D >= self.next_day:
            return f"a new day begins at {s.daily_at_hour:02d}:00"
        return ""

    def _relative(self, a: Annotation) -> Annotation:
        return Annotation(a.onset - self.file_origin, a.duration, a.text) if self.file_origin else a

    def _open(self, first_record: int) -> EdfStreamWriter:
        origin = first_record * self.D
        start = self.anchor + origin
        stamp = datetime.fromtimestamp(start, UTC).strftime("%Y%m%dT%H%M%S")
        path = self.directory / f"{self.device}_{stamp}Z.edf"
        n = 2
        while path.exists():
            path = self.directory / f"{self.device}_{stamp}Z-{n}.edf"
            n += 1
        signals = [StreamSignal(spec.name[:16], spec.units[:8], lo, hi, self.buffers[spec.name].per_record)
                   for spec, (lo, hi) in zip(self.signal_specs, self.ranges or [])]
        # Room for the time-keeping TAL, two of the longest annotations, and the beats of a record; more
        # than fits waits for the next record.
        beats = _BEAT_BYTES_PER_SECOND * self.D if self.beat_specs else 0
        annotation_bytes = int(32 + 2 * (_MAX_TEXT + 50) + beats)
        writer = EdfStreamWriter(
            path, signals, record_duration=self.D, start=start, annotation_bytes=annotation_bytes,
            patient=f"{self.device} X X X", equipment=f"edged-{__version__}_{self.device_type}",
        )
        with self._lock:
            self._writer = writer
        _OPEN.add(path)
        self.paths.append(path)
        self.file_origin, self.file_first_record = origin, first_record
        self.next_day = _next_local_hour(start, self.settings.daily_at_hour)
        self.counters["files"] += 1
        log.info("raw recording of %s: writing %s", self.device, path)
        self._enforce_total_size()
        return writer

    def _finish(self) -> None:
        for channel in list(self.open_gaps):
            self._close_gap(channel)
        end = self._now()
        if self.buffers and any(len(b.values) for b in self.buffers.values()):
            # The last record is completed with the last values: say where the real samples end.
            self._annotate(end, 0.0, END_OF_DATA_TEXT)
        self._emit_ready(final=True)
        if self._writer is None and self.pending_records:  # a session shorter than the calibration
            self.ranges = self._calibrate(self.pending_records)
            records, self.pending_records = self.pending_records, []
            for r in records:
                self._write(r)
        if self._writer is None and self.annotations and not self.buffers:
            self._open(self.next_record)
        writer = self._writer
        if writer is None:
            return
        # A file of beats only can take more records for what still waits; one with signals cannot (a record
        # would add samples), and what its last record could not hold is counted.
        while self.annotations and not self.buffers:
            if self._write_record(writer, self.next_record, []) == 0:
                break
            self.next_record += 1
        if self.annotations:
            self.counters["annotations_dropped"] += len(self.annotations)
            log.warning("raw recording of %s: %d annotation(s) did not fit the last data record",
                        self.device, len(self.annotations))
            self.annotations.clear()

    def _close_writer(self) -> None:
        with self._lock:
            writer, self._writer = self._writer, None
        if writer is not None:
            _OPEN.discard(writer.path)
            writer.close()
            self._enforce_total_size()

    def _enforce_total_size(self) -> None:
        limit = self.settings.max_total_mb * 1e6
        if limit <= 0:
            return
        files = sorted((p for p in self.settings.dir.glob("*/*.edf") if p not in _OPEN),
                       key=lambda p: p.stat().st_mtime)
        total = sum(p.stat().st_size for p in self.settings.dir.glob("*/*.edf"))
        for path in files:
            if total <= limit:
                break
            size = path.stat().st_size
            path.unlink()
            total -= size
            self.counters["files_deleted"] += 1
            log.warning("raw recording: deleted the oldest recording %s (%.1f MB) to stay under max_total_mb = %g",
                        path, size / 1e6, self.settings.max_total_mb)

    def _sync_loop(self) -> None:
        while not self._stop_sync.wait(self.settings.fsync_seconds):
            try:
                with self._lock:
                    if self._writer is not None:
                        self._writer.fsync()
            except OSError as exc:  # reported by the next write, which fails the same way
                log.debug("raw recording: fsync failed: %s", exc)

    def _fail(self, exc: Exception) -> None:
        if isinstance(exc, OSError):
            where = exc.filename or (self._writer.path if self._writer is not None else self.directory)
            self.failed = f"{where}: {exc.strerror or exc}"
        else:  # a bug or an unrecordable value: say what, with the traceback for a report
            self.failed = f"{type(exc).__name__}: {exc}"
        log.error("raw recording of device %s stopped: %s; scoring and publishing go on", self.device, self.failed,
                  exc_info=None if isinstance(exc, OSError) else exc)
        try:
            self._close_writer()
        except Exception as close_error:  # noqa: BLE001  (the file stays readable: its header says -1, see repair)
            log.debug("raw recording: closing %s after the failure failed too: %s", self.device, close_error)


def _record_seconds(rates: list[float]) -> float:
    """The longest data record that holds whole samples of every rate within the recommended size."""
    for d in _RECORD_SECONDS:
        counts = [fs * d for fs in rates]
        if all(n >= 1 and abs(n - round(n)) < 1e-6 * n for n in counts) and 2 * sum(map(round, counts)) <= _MAX_RECORD_BYTES:
            return d
    return record_duration_for(rates)


def _next_local_hour(after: float, hour: int) -> float | None:
    """POSIX time of the first ``hour``:00 local time strictly after ``after``; None for hour -1."""
    if hour < 0:
        return None
    start = datetime.fromtimestamp(after)  # local time: a lab's day follows its clock
    boundary = start.replace(hour=hour, minute=0, second=0, microsecond=0)
    if boundary <= start:
        boundary += timedelta(days=1)
    return boundary.timestamp()


def _widen(lo: float, hi: float, factor: float) -> tuple[float, float]:
    """A range ``factor`` times as wide as lo..hi around its centre, never empty."""
    centre, half = (lo + hi) / 2, (hi - lo) / 2
    half = max(half * factor, abs(centre) * 1e-3, 1e-3)
    return centre - half, centre + half


def recorder_for(config, device) -> RawRecorder | None:
    """The recorder of a configured device, or None when its ``record`` option is off."""
    if not getattr(device, "record", False):
        return None
    r = config.recording
    settings = RecordingSettings(
        dir=config.relative(r["dir"]) if r["dir"] else config.state_dir / "recordings",
        max_file_mb=r["max_file_mb"], max_file_hours=r["max_file_hours"],
        max_total_mb=r["max_total_mb"], fsync_seconds=r["fsync_seconds"], daily_at_hour=r["daily_at_hour"],
    )
    return RawRecorder(settings, device.name, device.type)


def main(argv: list[str] | None = None) -> int:
    """``python -m edged.sinks.raw_recording repair FILE...``: finish files a crash left unfinished."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 2 or args[0] != "repair":
        print("usage: python -m edged.sinks.raw_recording repair FILE...", file=sys.stderr)
        return 2
    status = 0
    for name in args[1:]:
        try:
            count = repair_edf(name)
        except (OSError, ValueError) as exc:
            print(f"{name}: cannot repair: {exc}", file=sys.stderr)
            status = 1
            continue
        print(f"{name}: " + ("nothing to repair" if count is None else f"repaired: {count} whole data records"))
    return status


if __name__ == "__main__":
    sys.exit(main())
