"""Training nights for the wrist heart-rate model: Walch's Apple Watch nights, and slpdb's ECG beats turned
into what a watch sends.

Both go through the one conversion the daemon runs live, :func:`edged.dsp.hr.hold_hr` (the batch twin of
the pipeline's ``hr`` input): heart-rate readings (bpm at irregular times) -> ``60 / bpm`` held at 1 Hz, 0
when missing. For slpdb, :func:`watch_readings` first makes readings the way a watch reports them: at
irregular times ``spacing`` seconds apart, each the mean heart rate of the beats of the last ``average``
seconds, rounded to a whole bpm, nothing where no plausible beat is in that span. Every call with a new
seed is a new, equally valid sampling of the same night (used as augmentation in pretraining).

The model input for epoch ``k`` is the held signal of epochs ``k - C + 1 .. k`` and the elapsed time of
each of those epochs (hours from the recording start to the epoch start), zeros before the start.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edged.dsp.hr import HR_FS, hold_hr
from edged.sources.readers.physionet_rr import read_physionet_rr
from models.datasets import stage_labels
from models.datasets import walch as walch_dataset
from models.ibi.data import subject_of

EPOCH_SECONDS = 30.0
SAMPLES_PER_EPOCH = round(EPOCH_SECONDS * HR_FS)  # 30
CLASSES = ("W", "NREM", "REM")
WATCH_SPACING = (2.0, 8.0)  # s between readings: uniform, median 5 s like Walch's Apple Watch data
WATCH_AVERAGE = 5.0  # s of beats averaged into one reading
PLAUSIBLE_RR = (0.3, 2.0)  # s: intervals outside are artefacts or pauses, not heart rate


@dataclass(frozen=True)
class Night:
    """``hr``: held interval (float32 s, 0 missing), ``n_epochs * 30`` samples at 1 Hz from the recording
    start; ``labels``: class per epoch (-1 unscored)."""

    name: str
    subject: str
    source: str
    hr: np.ndarray
    labels: np.ndarray

    @property
    def n_epochs(self) -> int:
        return len(self.labels)


def watch_readings(beats: np.ndarray, rng: np.random.Generator, *, spacing: tuple[float, float] = WATCH_SPACING,
                   average: float = WATCH_AVERAGE) -> tuple[np.ndarray, np.ndarray]:
    """(times, bpm) a watch would have reported for beats at ``beats`` (s)."""
    beats = np.asarray(beats, dtype=np.float64)
    if len(beats) < 2:
        return np.zeros(0), np.zeros(0)
    rr = np.diff(beats)
    close = beats[1:]
    ok = (rr >= PLAUSIBLE_RR[0]) & (rr < PLAUSIBLE_RR[1])
    c_sum = np.concatenate(([0.0], np.cumsum(np.where(ok, rr, 0.0))))
    c_n = np.concatenate(([0], np.cumsum(ok)))
    n_max = int((beats[-1] - beats[0]) / spacing[0]) + 2
    times = beats[0] + np.cumsum(rng.uniform(*spacing, size=n_max))
    times = times[times <= beats[-1]]
    hi = np.searchsorted(close, times, side="right")
    lo = np.searchsorted(close, times - average, side="right")
    n = c_n[hi] - c_n[lo]
    keep = n > 0
    bpm = np.round(60.0 * n[keep] / (c_sum[hi] - c_sum[lo])[keep])
    return times[keep], bpm


def slpdb_nights(data_dir: str | Path, *, variants: int, seed: int, records: list[str] | None = None) -> list[Night]:
    """Each slpdb record as ``variants`` watch-like nights (different reading times and so values)."""
    data_dir = Path(data_dir)
    names = records or sorted(p.stem for p in data_dir.glob("*.rr"))
    out = []
    for r, name in enumerate(names):
        rec = read_physionet_rr(data_dir / f"{name}.rr")
        assert rec.hypnogram is not None, f"{name}: no .an stages"
        labels = stage_labels(rec.hypnogram.stages, "3-stage")
        beats = rec.rr["rr"].beat_times()
        n = len(labels) * SAMPLES_PER_EPOCH
        for v in range(variants):
            times, bpm = watch_readings(beats, np.random.default_rng([seed, r, v]))
            out.append(Night(f"{name}~{v}", subject_of(name), "slpdb", hold_hr(times, bpm, n, fs=HR_FS), labels))
    return out


def walch_nights(data_dir: str | Path, only: list[str] | None = None) -> list[Night]:
    out = []
    for night in walch_dataset.load_nights(data_dir, only):
        fs, held = night.signals["hr"]
        assert fs == HR_FS
        out.append(Night(night.subject, night.subject, "walch", held.astype(np.float32), night.labels))
    return out


def padded(night: Night, context: int) -> tuple[np.ndarray, np.ndarray]:
    """(context - 1 + n, 30) held signal and (context - 1 + n,) elapsed hours; zeros before the start."""
    n = night.n_epochs
    hr = np.zeros((context - 1 + n, SAMPLES_PER_EPOCH), dtype=np.float32)
    hr[context - 1:] = night.hr[: n * SAMPLES_PER_EPOCH].reshape(n, SAMPLES_PER_EPOCH)
    elapsed = np.zeros(context - 1 + n, dtype=np.float32)
    elapsed[context - 1:] = np.arange(n) * EPOCH_SECONDS / 3600.0
    return hr, elapsed


def windows(night: Night, context: int, epochs: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The deployed model's inputs for each epoch in ``epochs`` (default all), exactly what the daemon
    feeds: ``hr`` (len, 1, C * 30) and ``elapsed`` (len, 1, C)."""
    hr, elapsed = padded(night, context)
    if epochs is None:
        epochs = np.arange(night.n_epochs)
    idx = np.asarray(epochs)[:, None] + np.arange(context)[None, :]
    return {"hr": hr[idx].reshape(len(idx), 1, -1), "elapsed": elapsed[idx][:, None, :]}
