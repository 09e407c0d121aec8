"""The ``replay`` backend: a recording file streamed as if a device were sending it.

Chunks of ``chunk_seconds`` of signal are released on the recording's own timeline, paced to ``speed``
times real time with a monotonic clock (so pacing never drifts, whatever the pipeline costs), or as fast
as the consumer takes them when ``speed`` is 0. An ``rr`` channel is released the way a heart-rate strap
sends it: each chunk carries the intervals whose closing beat fell inside that chunk's time span; an ``hr``
channel likewise carries the readings taken inside it, with their times.

Spans the recording marks as missing (``Recording.gaps``: EDF+D holes, dropouts bridged in an RR file)
are sent as explicit :class:`Gap` events, never as NaN samples or invented intervals.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np

from edged.sources.base import ChannelSpec, Chunk, Gap, Source, SourceEvent
from edged.sources.readers import read_recording
from edged.sources.recording import Recording


class ReplaySource(Source):
    def __init__(
        self,
        device: str,
        *,
        path: str | Path,
        speed: float = 1.0,
        chunk_seconds: float = 1.0,
        fs: float = 0.0,
        recording: Recording | None = None,
    ):
        super().__init__(device)
        self.recording = recording if recording is not None else read_recording(path, fs=fs or None)
        self.speed = speed
        self.chunk_seconds = chunk_seconds
        self.position = 0.0  # recording seconds released so far (for progress)
        # Beat times of each rr channel (from the recording start), computed once.
        self._beats = {name: track.beat_times() for name, track in self.recording.rr.items()}
        # Missing spans as index ranges per channel: samples for signals, intervals for rr channels.
        self._missing: dict[str, list[tuple[int, int]]] = {}
        for name, track in self.recording.signals.items():
            self._missing[name] = [(math.ceil(t * track.fs), math.ceil((t + d) * track.fs))
                                   for t, d in self.recording.gaps]
        for name, beats in self._beats.items():
            spans = []
            for t, d in self.recording.gaps:
                i = int(np.searchsorted(beats, t - 1e-6))  # the interval that starts where the gap starts
                if i < len(beats) - 1 and abs(beats[i] - t) < 1e-3 and abs(beats[i + 1] - (t + d)) < 1e-3:
                    spans.append((i, i + 1))
            self._missing[name] = spans

    @property
    def duration(self) -> float:
        return self.recording.duration

    def channels(self) -> list[ChannelSpec]:
        specs = [ChannelSpec(name, "signal", t.fs, t.units) for name, t in self.recording.signals.items()]
        specs += [ChannelSpec(name, "rr", 0.0, "s", offset=float(t.first_beat)) for name, t in self.recording.rr.items()]
        specs += [ChannelSpec(name, "hr", 0.0, "bpm") for name in self.recording.hr]
        return specs

    async def _events(self) -> AsyncIterator[SourceEvent]:
        self.anchor_time = time.time()
        started = time.monotonic()
        duration = self.duration
        n_steps = max(1, math.ceil(duration / self.chunk_seconds))
        for step in range(n_steps):
            t_end = min(duration, (step + 1) * self.chunk_seconds)
            t_start = step * self.chunk_seconds
            if self.speed > 0:
                delay = started + t_end / self.speed - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            elif step % 64 == 0:
                await asyncio.sleep(0)  # let the rest of the daemon run during a fast replay
            received = time.monotonic()
            for name, track in self.recording.signals.items():
                a, b = math.ceil(t_start * track.fs), math.ceil(t_end * track.fs)
                b = min(b, len(track.data)) if step < n_steps - 1 else len(track.data)
                for event in self._split(name, a, b, track.data, received, lambda a, b: (b - a, (b - a) / track.fs)):
                    yield event
            for name, beats in self._beats.items():
                # Interval i closes at beats[i + 1]; release those closing inside [t_start, t_end).
                a = int(np.searchsorted(beats[1:], t_start, side="left"))
                b = int(np.searchsorted(beats[1:], t_end, side="left")) if step < n_steps - 1 else len(beats) - 1
                rr = self.recording.rr[name].rr
                for event in self._split(name, a, b, rr, received, lambda a, b: (0, float(rr[a:b].sum()))):
                    yield event
            for name, hr in self.recording.hr.items():
                a = int(np.searchsorted(hr.times, t_start, side="left"))
                b = int(np.searchsorted(hr.times, t_end, side="left")) if step < n_steps - 1 else len(hr.times)
                if b > a:
                    yield Chunk(name, a, hr.bpm[a:b], received, times=hr.times[a:b])
            self.position = t_end

    def _split(self, channel, a, b, data, received, gap_size):
        """Events for indices [a, b) of a channel: chunks of data, and gaps where the recording has none."""
        for lo, hi in self._missing.get(channel, ()):
            if hi <= a or lo >= b:
                continue
            if lo > a:
                yield Chunk(channel, a, data[a:lo], received)
            gap_end = min(hi, b)
            n_missing, seconds = gap_size(max(lo, a), gap_end)
            yield Gap(channel, max(lo, a), n_missing, seconds, received)
            a = gap_end
        if b > a:
            yield Chunk(channel, a, data[a:b], received)
