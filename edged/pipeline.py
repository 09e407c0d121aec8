"""One device's pipeline: source events in, scored epochs out. Pure: no I/O and no asyncio; the only clock
it reads stamps when scoring finished, for the latency figure.

For each signal input of the model (manifest ``inputs``) an input builder turns the device's channel into
epochs at the model's rate:

* ``ibi`` from an ``rr`` channel: beat times rebuilt from the cumulative intervals (or placed by a live
  source's clock model), then the WatchSleepNet sample-and-hold form (:mod:`edged.dsp.ibi`), as in training;
* ``ibi`` from a raw ECG or PPG channel: streaming beat detection (:mod:`edged.dsp.beats`), causal
  artefact and ectopic correction (:mod:`edged.dsp.artefacts`), then the same sample-and-hold form;
* ``hr`` from an ``hr`` channel (heart rate in bpm at irregular times: a watch, a strap without RR): the
  interval each reading implies, 60 / bpm, held until the next reading at the model's rate and missing
  after a silence (:mod:`edged.dsp.hr`), as in training;
* ``elapsed``: hours from the session start (the stream's anchor) to each epoch's start, one value per
  epoch, needing no channel;
* any other signal from a raw channel: causal band-pass (if the manifest asks for one), streaming
  resampling to the model's rate, epoching;
* a feature input (the manifest names a ``features`` set) from a raw channel: resampling to the set's rate,
  conversion to volts, then one feature row per epoch (:mod:`edged.dsp.eeg_features`), as in training.

A context window per input (a ring buffer preloaded with the input's missing value, as training pads the
start of a night) gives the model the last ``context_epochs`` epochs. Epoch ``k`` is scored once every
input has closed epoch ``k + lookahead_epochs``.
"""

from __future__ import annotations

import abc
import collections
import logging
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np

from edged.dsp.artefacts import StreamingBeatCorrector
from edged.dsp.beats import StreamingEcgDetector, StreamingPpgDetector
from edged.dsp.eeg_features import feature_set
from edged.dsp.epocher import Epoch, Epocher
from edged.dsp.filters import CausalFilter, design_bandpass
from edged.dsp.hr import StreamingHrHold
from edged.dsp.ibi import StreamingIbi
from edged.dsp.resample import StreamingResampler
from edged.dsp.quality import ecg_quality, ppg_quality
from edged.dsp.ring import RingBuffer
from edged.errors import ConfigError
from edged.scoring.epoch import ScoredEpoch
from edged.scoring.manifest import InputSpec, Manifest
from edged.scoring.session import OnnxModel
from edged.sources.base import ChannelSpec, Chunk, Gap, SourceEvent

log = logging.getLogger(__name__)


class InputBuilder(abc.ABC):
    """Turns one channel's events into epochs of one model input. ``quality`` of an epoch is the share
    of its samples backed by valid data."""

    def __init__(self, spec: InputSpec, channel: ChannelSpec, samples_per_epoch: int):
        self.spec = spec
        self.channel = channel
        self.epocher = Epocher(samples_per_epoch, fill_value=spec.missing_value)

    @abc.abstractmethod
    def push(self, event: SourceEvent) -> list[Epoch]: ...

    def advance_to(self, t: float) -> list[Epoch]:
        """No data arrived before stream time ``t`` (seconds from the anchor). Default: nothing follows
        from silence alone; sources declare lost samples with explicit gaps."""
        return []

    def quality(self, epoch: Epoch) -> float:
        return 1.0 - epoch.n_missing / len(epoch.data)

    def preload(self, window: RingBuffer) -> None:
        """Fill the context window as training pads the start of a night."""
        window.fill(self.spec.missing_value)


class IbiFromRR(InputBuilder):
    """RR intervals (seconds, oldest first) -> IBI sample-and-hold at the model's rate."""

    def __init__(self, spec: InputSpec, channel: ChannelSpec, samples_per_epoch: int):
        super().__init__(spec, channel, samples_per_epoch)
        self.ibi = StreamingIbi(fs=spec.fs)
        self.last_beat = channel.offset  # stream time of beat 0, the beat that opens the first interval
        self.started = False

    def _feed(self, samples: np.ndarray) -> list[Epoch]:
        if len(samples) == 0:
            return []
        return self.epocher.push(self.ibi.next_sample - len(samples), samples)

    def push(self, event: SourceEvent) -> list[Epoch]:
        if isinstance(event, Gap):
            # Lost notifications: the beats in between are unknown. Move the beat clock on by the silence;
            # the interval that spans it is >= max_ibi in any real gap and so becomes 'missing' (0).
            self.last_beat += event.seconds
            self.started = False  # the beat that resumes the stream opens the next interval
            return self._feed(self.ibi.advance_to(self.last_beat))
        rr = np.asarray(event.data, dtype=np.float64)
        if event.times is not None:  # placed by a live source's clock model
            beats = np.asarray(event.times, dtype=np.float64)
            opening = beats[0] - rr[0] if len(rr) else self.last_beat
        else:
            beats = self.last_beat + np.cumsum(rr)
            opening = self.last_beat
        if not self.started:
            beats = np.concatenate(([opening], beats))
            self.started = True
        if len(beats):
            self.last_beat = float(beats[-1])
        return self._feed(self.ibi.push_beats(beats))

    def advance_to(self, t: float) -> list[Epoch]:
        return self._feed(self.ibi.advance_to(t))

    def quality(self, epoch: Epoch) -> float:
        # An IBI sample of 0 means no valid interval covers it (missing beats or an implausible interval).
        return float(np.count_nonzero(epoch.data)) / len(epoch.data)


class IbiFromHR(InputBuilder):
    """Heart-rate readings (bpm, each chunk with its reading times) -> the held interval 60 / bpm at the
    model's rate; 0 where no fresh, plausible reading covers a sample. A Gap needs no handling: readings
    that never arrived leave the last one held until it is too old, exactly as in the batch form."""

    def __init__(self, spec: InputSpec, channel: ChannelSpec, samples_per_epoch: int):
        super().__init__(spec, channel, samples_per_epoch)
        self.hold = StreamingHrHold(fs=spec.fs)

    def _feed(self, samples: np.ndarray) -> list[Epoch]:
        if len(samples) == 0:
            return []
        return self.epocher.push(self.hold.next_sample - len(samples), samples)

    def push(self, event: SourceEvent) -> list[Epoch]:
        if isinstance(event, Gap):
            return []
        if event.times is None:
            raise ValueError(f"hr channel {self.channel.name!r}: a chunk without reading times")
        times = self.channel.offset + np.asarray(event.times, dtype=np.float64)
        return self._feed(self.hold.push(times, np.asarray(event.data, dtype=np.float64)))

    def advance_to(self, t: float) -> list[Epoch]:
        return self._feed(self.hold.advance_to(t))

    def quality(self, epoch: Epoch) -> float:
        return float(np.count_nonzero(epoch.data)) / len(epoch.data)


class ElapsedTime:
    """The ``elapsed`` input: hours from the session start to the start of epoch ``k``. It depends on the
    epoch index alone, so it closes an epoch whenever the channel inputs do."""

    def __init__(self, spec: InputSpec, samples_per_epoch: int, epoch_seconds: float):
        self.spec = spec
        self.samples_per_epoch = samples_per_epoch
        self.epoch_seconds = epoch_seconds

    def at(self, index: int) -> Epoch:
        return Epoch(index, np.full(self.samples_per_epoch, index * self.epoch_seconds / 3600.0, np.float32), 0)

    def quality(self, epoch: Epoch) -> float:
        return 1.0


ELAPSED = "elapsed"


class FilteredSignal(InputBuilder):
    """A raw channel -> optional causal band-pass -> resampled to the model's rate -> epochs."""

    def __init__(self, spec: InputSpec, channel: ChannelSpec, samples_per_epoch: int):
        super().__init__(spec, channel, samples_per_epoch)
        self.filter = CausalFilter(design_bandpass(*spec.band, channel.fs)) if spec.band else None
        self.resampler = StreamingResampler(channel.fs, spec.fs)
        self.segment_start_out = 0  # output index of that segment's first resampled sample
        self.produced = 0  # resampled samples produced in this segment

    def _first_output_at_or_after(self, input_index: int) -> int:
        # Output j sits at input position j * down / up; integer arithmetic so the grid never slips.
        up, down = self.resampler.up, self.resampler.down
        return -(-input_index * up // down)

    def push(self, event: SourceEvent) -> list[Epoch]:
        if isinstance(event, Gap):
            # Never splice across a gap: restart filter and resampler on the far side, and mark the span in
            # between as missing at the model's rate. The restarted stages' start-up transient (their
            # delay_samples) is a known, bounded effect; the resampler's fixed delay is the pipeline's
            # stated latency for raw signals.
            resume_in = event.start_index + event.n_missing
            resume_out = max(self._first_output_at_or_after(resume_in), self.segment_start_out + self.produced)
            here = self.segment_start_out + self.produced
            epochs = self.epocher.push_gap(here, resume_out - here) if resume_out > here else []
            if self.filter is not None:
                self.filter.reset()
            self.resampler = StreamingResampler(self.channel.fs, self.spec.fs)
            self.segment_start_out, self.produced = resume_out, 0
            return epochs
        x = np.asarray(event.data, dtype=np.float64)
        if self.filter is not None:
            x = self.filter.process(x)
        y = self.resampler.process(x)
        start = self.segment_start_out + self.produced
        self.produced += len(y)
        return self.epocher.push(start, y.astype(np.float32, copy=False)) if len(y) else []


class IbiFromWaveform(InputBuilder):
    """A raw ECG or PPG channel -> beats -> causal correction -> IBI sample-and-hold -> epochs.

    Delay before an epoch can close: the detector's (0.45 s ECG, 0.8 s PPG), the corrector's three beats
    and the one interval the sample-and-hold form always waits for. Quality is the lower of the IBI
    coverage and the waveform's template-correlation index over the epoch (:mod:`edged.dsp.quality`).
    """

    def __init__(self, spec: InputSpec, channel: ChannelSpec, samples_per_epoch: int, detector: str):
        super().__init__(spec, channel, samples_per_epoch)
        self.detector_kind = detector
        self.fs = channel.fs
        self.epoch_seconds = samples_per_epoch / spec.fs
        self.ibi = StreamingIbi(fs=spec.fs)
        self.corrector = StreamingBeatCorrector()
        self._start_segment(0)
        # The last two epochs and a margin of raw signal and beats, for the per-epoch waveform quality.
        self.raw = RingBuffer(int((2 * self.epoch_seconds + 10) * self.fs), dtype=np.float64)
        self.raw_end = 0  # absolute index one past the newest raw sample held
        self.beat_indices: collections.deque[int] = collections.deque(maxlen=1024)

    def _start_segment(self, first_index: int) -> None:
        # After a gap the detector starts afresh: its thresholds must not bridge unknown signal.
        cls = StreamingEcgDetector if self.detector_kind == "ecg" else StreamingPpgDetector
        self.detector = cls(self.fs)
        self.segment_start = first_index

    def _time(self, index) -> np.ndarray | float:
        return self.channel.offset + np.asarray(index, dtype=np.float64) / self.fs

    def _settle(self, beats: np.ndarray, horizon: float | None) -> list[Epoch]:
        parts = [self.ibi.push_beats(self.corrector.push(beats))] if len(beats) else []
        if horizon is not None:
            parts.append(self.ibi.push_beats(self.corrector.advance_to(horizon)))
            parts.append(self.ibi.advance_to(min(horizon, self.corrector.final_until)))
        samples = np.concatenate(parts) if parts else np.zeros(0, np.float32)
        if len(samples) == 0:
            return []
        return self.epocher.push(self.ibi.next_sample - len(samples), samples)

    def push(self, event: SourceEvent) -> list[Epoch]:
        if isinstance(event, Gap):
            resume = event.start_index + event.n_missing
            self._start_segment(resume)
            self.raw.clear()
            self.raw_end = resume
            return self._settle(np.zeros(0), float(self._time(resume)))
        x = np.asarray(event.data, dtype=np.float64)
        found = self.detector.push(x) + self.segment_start
        self.raw.append(x)
        self.raw_end = event.end_index
        self.beat_indices.extend(found.tolist())
        horizon = None
        examined = self.detector.n_samples - self.detector.delay_samples
        if self.detector.n_samples >= self.detector.learning_samples + self.detector.delay_samples:
            # Every beat before this point has been reported: silence up to here is real.
            horizon = float(self._time(self.segment_start + examined))
        return self._settle(self._time(found), horizon)

    def quality(self, epoch: Epoch) -> float:
        coverage = float(np.count_nonzero(epoch.data)) / len(epoch.data)
        first = int(np.ceil((epoch.index * self.epoch_seconds - self.channel.offset) * self.fs))
        n = int(round(self.epoch_seconds * self.fs))
        held_from = self.raw_end - len(self.raw)
        if first < held_from or first + n > self.raw_end:
            return coverage  # the raw epoch is no longer (or not entirely) held: IBI coverage alone
        raw = self.raw.latest(self.raw_end - first)[:n]
        beats = np.array([b - first for b in self.beat_indices if first <= b < first + n], dtype=np.int64)
        waveform = (ecg_quality if self.detector_kind == "ecg" else ppg_quality)(raw, beats, self.fs)
        return min(coverage, float(waveform))


VOLTS_PER_UNIT = {"V": 1.0, "mV": 1e-3, "uV": 1e-6, "\u00b5V": 1e-6, "\u03bcV": 1e-6, "nV": 1e-9}


class EpochFeatures(InputBuilder):
    """A raw channel -> resampled to the feature set's rate, converted to its units -> one feature row per
    epoch (:mod:`edged.dsp.eeg_features`, the code that built the model's training inputs). Each Epoch's
    ``data`` is that row; ``n_missing`` still counts the raw samples that were fill. Samples lost in a gap
    enter the features as a flat signal (0 V), the epoch's quality says how much of it was fill, and the
    feature stream's context (differences, running reference) carries on across the gap."""

    def __init__(self, spec: InputSpec, channel: ChannelSpec, samples_per_epoch: int):
        super().__init__(spec, channel, samples_per_epoch)
        self.features = feature_set(spec.features)
        if spec.units != "V" or channel.units not in VOLTS_PER_UNIT:
            raise ConfigError([(f"model input {spec.name!r} needs {spec.units}; channel {channel.name!r} is in "
                                f"{channel.units!r}, which edged cannot convert (known: {', '.join(VOLTS_PER_UNIT)})")])
        self.scale = VOLTS_PER_UNIT[channel.units]
        self.samples_per_epoch = samples_per_epoch
        self.raw = FilteredSignal(spec, channel, samples_per_epoch)  # no band: features use the raw signal
        self.stream = self.features.stream()

    def push(self, event: SourceEvent) -> list[Epoch]:
        closed = self.raw.push(event)
        if not closed:
            return []
        rows = self.stream.push(np.stack([e.data for e in closed]).astype(np.float64) * self.scale)
        return [Epoch(e.index, row.astype(np.float32), e.n_missing) for e, row in zip(closed, rows)]

    def quality(self, epoch: Epoch) -> float:
        return 1.0 - epoch.n_missing / self.samples_per_epoch

    def preload(self, window: RingBuffer) -> None:
        while len(window) < window.capacity:
            window.append(self.features.missing_row().astype(np.float32))


_PPG_NAME = re.compile(r"ppg|pleth|bvp|pulse", re.IGNORECASE)


def _build_input(spec: InputSpec, channel: ChannelSpec, samples_per_epoch: int,
                 beat_detector: str = "auto") -> InputBuilder:
    if spec.signal == "hr" or channel.kind == "hr":
        if spec.signal != "hr" or channel.kind != "hr":
            raise ConfigError([f"model input {spec.name!r} ({spec.signal}) cannot be built from channel "
                               f"{channel.name!r} ({channel.kind}): heart-rate readings feed only an 'hr' input"])
        return IbiFromHR(spec, channel, samples_per_epoch)
    if spec.signal == "ibi":
        if channel.kind == "rr":
            return IbiFromRR(spec, channel, samples_per_epoch)
        detector = beat_detector if beat_detector != "auto" else ("ppg" if _PPG_NAME.search(channel.name) else "ecg")
        return IbiFromWaveform(spec, channel, samples_per_epoch, detector)
    if channel.kind != "signal":
        raise ConfigError([f"model input {spec.name!r} needs a raw {spec.signal} signal; {channel.name!r} is RR"])
    if spec.features is not None:
        return EpochFeatures(spec, channel, samples_per_epoch)
    return FilteredSignal(spec, channel, samples_per_epoch)


def match_channels(
    manifest: Manifest, channels: list[ChannelSpec], channel_map: dict[str, str] | None = None
) -> dict[str, ChannelSpec]:
    """Which device channel feeds each model input: explicit ``channel_map`` (signal -> channel) first,
    then an ``rr`` channel for ``ibi``, then a channel named like the signal (case-insensitive)."""
    channel_map = channel_map or {}
    by_name = {c.name: c for c in channels}
    by_lower = {c.name.lower(): c for c in channels}
    chosen: dict[str, ChannelSpec] = {}
    problems = []
    for spec in manifest.inputs:
        if spec.signal == ELAPSED:
            continue  # a clock, not a channel
        name = channel_map.get(spec.signal)
        if name is not None:
            if name not in by_name:
                problems.append(f"channel {name!r} mapped to {spec.signal!r} does not exist (have: {sorted(by_name)})")
                continue
            chosen[spec.name] = by_name[name]
        elif spec.signal == "ibi" and any(c.kind == "rr" for c in channels):
            chosen[spec.name] = next(c for c in channels if c.kind == "rr")
        elif spec.signal == "hr" and any(c.kind == "hr" for c in channels):
            chosen[spec.name] = next(c for c in channels if c.kind == "hr")
        elif spec.signal.lower() in by_lower:
            chosen[spec.name] = by_lower[spec.signal.lower()]
        else:
            problems.append(
                f"model {manifest.id} needs a {spec.signal!r} channel and the device has none "
                f"(have: {', '.join(sorted(by_name)) or 'nothing'}); map one with channels = {{{spec.signal} = \"...\"}}"
                + (" (an RR, ECG or PPG channel)" if spec.signal == "ibi" else "")
                + (" (heart-rate readings: a watch, or a BLE heart-rate device)" if spec.signal == "hr" else "")
            )
    if not chosen and not problems:
        problems.append(f"model {manifest.id} has no input that a device channel feeds")
    if problems:
        raise ConfigError(problems)
    return chosen


@dataclass
class PipelineCounters:
    epochs_scored: int = 0
    epochs_low_quality: int = 0
    ignored_events: int = 0
    extra: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, int]:
        return {"epochs_scored": self.epochs_scored, "epochs_low_quality": self.epochs_low_quality,
                "ignored_events": self.ignored_events, **self.extra}


class DevicePipeline:
    """Everything between a device's source and its scored epochs."""

    def __init__(
        self,
        device: str,
        channels: list[ChannelSpec],
        model: OnnxModel,
        *,
        anchor_time: float,
        quality_threshold: float = 0.5,
        channel_map: dict[str, str] | None = None,
        beat_detector: str = "auto",
    ):
        self.device = device
        self.model = model
        m = self.manifest = model.manifest
        self.anchor_time = anchor_time
        self.session = datetime.fromtimestamp(anchor_time, timezone.utc).isoformat(timespec="milliseconds")
        self.quality_threshold = quality_threshold
        self.counters = PipelineCounters()
        matched = match_channels(m, channels, channel_map)
        self.inputs: dict[str, InputBuilder] = {}
        self.by_channel: dict[str, list[InputBuilder]] = {}
        self.windows: dict[str, RingBuffer] = {}
        self.clocks: dict[str, ElapsedTime] = {}
        for spec in m.inputs:
            if spec.signal == ELAPSED:
                self.clocks[spec.name] = ElapsedTime(spec, m.samples_per_epoch(spec), m.epoch_seconds)
                window = self.windows[spec.name] = RingBuffer(m.window_samples(spec))
                window.fill(spec.missing_value)
                continue
            builder = _build_input(spec, matched[spec.name], m.samples_per_epoch(spec), beat_detector)
            self.inputs[spec.name] = builder
            self.by_channel.setdefault(matched[spec.name].name, []).append(builder)
            window = RingBuffer(m.window_samples(spec))
            builder.preload(window)
            self.windows[spec.name] = window
        self.state = model.initial_state()
        # Epochs closed by some inputs but not yet by all: index -> {input name: Epoch}.
        self._pending: dict[int, dict[str, Epoch]] = {}
        self._next_index = 0  # next epoch index to score, so windows advance strictly in order

    def push(self, event: SourceEvent) -> list[ScoredEpoch]:
        builders = self.by_channel.get(event.channel)
        if not builders:
            self.counters.ignored_events += 1
            return []
        scored: list[ScoredEpoch] = []
        for builder in builders:
            scored += self._collect(builder, builder.push(event), event.received)
        return scored

    def advance_to(self, stream_time: float, received: float) -> list[ScoredEpoch]:
        """Silence up to ``stream_time`` (s from the anchor): let inputs that can close epochs on it."""
        scored: list[ScoredEpoch] = []
        for builder in self.inputs.values():
            scored += self._collect(builder, builder.advance_to(stream_time), received)
        return scored

    def _collect(self, builder: InputBuilder, epochs: list[Epoch], received: float) -> list[ScoredEpoch]:
        scored = []
        for epoch in epochs:
            slot = self._pending.setdefault(epoch.index, {})
            slot[builder.spec.name] = epoch
            for name, clock in self.clocks.items():
                slot.setdefault(name, clock.at(epoch.index))
            while len(self._pending.get(self._next_index, ())) == len(self.inputs) + len(self.clocks):
                result = self._score(self._pending.pop(self._next_index), received)
                self._next_index += 1
                if result is not None:
                    scored.append(result)
        return scored

    def _score(self, epochs: dict[str, Epoch], received: float) -> ScoredEpoch | None:
        m = self.manifest
        windows = {}
        quality = 1.0
        for name, epoch in epochs.items():
            ring = self.windows[name]
            ring.append(epoch.data)
            windows[name] = ring.latest(len(ring)).reshape(1, *m.input_shape(next(s for s in m.inputs if s.name == name)))
            quality = min(quality, (self.inputs.get(name) or self.clocks[name]).quality(epoch))
        index = next(iter(epochs.values())).index - m.lookahead_epochs
        if index < 0:
            return None  # the first look-ahead epochs only fill the window
        probs, self.state = self.model.run(windows, self.state)
        p = probs[0].astype(float)
        start = self.anchor_time + index * m.epoch_seconds
        ok = quality >= self.quality_threshold
        hr_bpm = None
        for name, epoch in epochs.items():
            if name in self.inputs and self.inputs[name].spec.signal in ("ibi", "hr"):
                valid = epoch.data[epoch.data > 0]  # sample-and-hold: a time-weighted mean interval
                hr_bpm = 60.0 / float(valid.mean()) if len(valid) else None
        self.counters.epochs_scored += 1
        self.counters.epochs_low_quality += 0 if ok else 1
        return ScoredEpoch(
            device=self.device,
            session=self.session,
            index=index,
            start=start,
            end=start + m.epoch_seconds,
            stage=m.classes[int(np.argmax(p))],
            probabilities={c: float(v) for c, v in zip(m.classes, p)},
            model_id=m.id,
            synthetic=m.synthetic,
            quality=round(quality, 4),
            quality_ok=ok,
            received=received,
            scored=time.monotonic(),
            hr_bpm=hr_bpm,
        )
