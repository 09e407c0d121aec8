"""What scoring produces for one epoch: everything a published stage message says, before serialisation."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ScoredEpoch:
    device: str
    session: str  # id of this stream (its anchor time, ISO 8601): with index, a stable message id
    index: int  # epoch number since the stream's anchor; epoch k covers [anchor + k*len, anchor + (k+1)*len)
    start: float  # POSIX seconds
    end: float
    stage: str  # one of the model's classes
    probabilities: dict[str, float]  # class -> probability, in the model's class order
    model_id: str
    synthetic: bool  # the model's weights were trained on generated signals
    quality: float  # 0..1, the share of the epoch backed by valid data
    quality_ok: bool  # quality at or above the device's threshold; a low-quality epoch is flagged, not hidden
    received: float  # time.monotonic() when the epoch's last sample reached edged (latency is measured from it)
    scored: float  # time.monotonic() when scoring finished
    hr_bpm: float | None = None  # mean heart rate over the epoch's valid intervals, for models fed intervals
