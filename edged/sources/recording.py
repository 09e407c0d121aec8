"""A recording held in memory: what every file reader returns and what the replay source streams.

Readers live in :mod:`edged.sources.readers`; this module only defines the shape they agree on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Canonical stage names used everywhere in edged (labels, model classes, MQTT payloads).
# Fine-grained reference labels are kept as they are; a model's manifest maps them to its own classes.
STAGES_5 = ("W", "N1", "N2", "N3", "REM")


@dataclass(frozen=True, slots=True)
class SignalTrack:
    """A regularly sampled channel: ``data`` (float64) at ``fs`` Hz in ``units``."""

    data: np.ndarray
    fs: float
    units: str


@dataclass(frozen=True, slots=True)
class RRTrack:
    """Inter-beat intervals in seconds, oldest first. ``first_beat`` is the time (s, from recording start)
    of the beat that opens the first interval, so beat ``k + 1`` is at ``first_beat + cumsum(rr)[k]``."""

    rr: np.ndarray
    first_beat: float = 0.0

    def beat_times(self) -> np.ndarray:
        """Times of every beat from the recording start, including the first one."""
        return self.first_beat + np.concatenate(([0.0], np.cumsum(self.rr)))


@dataclass(frozen=True, slots=True)
class HRTrack:
    """Heart-rate readings at irregular times (a watch, or a strap's bpm without RR): ``bpm`` taken at
    ``times`` (s from the recording start, non-decreasing)."""

    times: np.ndarray
    bpm: np.ndarray


@dataclass(frozen=True, slots=True)
class Hypnogram:
    """Reference stages, one per epoch from the recording start. Stage names: W, N1, N2, N3, REM,
    or None for unscored / movement epochs (R&K stage 4 is merged into N3 by readers)."""

    epoch_seconds: float
    stages: tuple[str | None, ...]


@dataclass(slots=True)
class Recording:
    """Channels by name, plus optional reference stages and the wall-clock start if the file knows it."""

    path: str
    signals: dict[str, SignalTrack] = field(default_factory=dict)
    rr: dict[str, RRTrack] = field(default_factory=dict)
    hr: dict[str, HRTrack] = field(default_factory=dict)
    hypnogram: Hypnogram | None = None
    start_time: float | None = None  # POSIX seconds, when the file states it
    # (start s, duration s) spans with no data, e.g. between the records of an EDF+D file or where a strap's
    # beat stream dropped out; times from the recording start. How each reader fills them is in its docstring.
    gaps: list[tuple[float, float]] = field(default_factory=list)

    @property
    def channel_names(self) -> list[str]:
        return [*self.signals, *self.rr, *self.hr]

    @property
    def duration(self) -> float:
        """Seconds covered by the longest channel."""
        spans = [len(t.data) / t.fs for t in self.signals.values()]
        spans += [float(t.first_beat + t.rr.sum()) for t in self.rr.values()]
        spans += [float(t.times[-1]) for t in self.hr.values() if len(t.times)]
        return max(spans, default=0.0)
