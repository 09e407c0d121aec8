"""Training data for IBI models: whole nights as sample-and-hold IBI plus one label per 30-s epoch.

The IBI signal is built with :func:`edged.dsp.ibi.sample_and_hold`, the batch twin of what the daemon
computes live, so the model is trained on exactly the samples it will be fed. The window for epoch ``k``
is the IBI of epochs ``k - C + 1 .. k`` (oldest first), zeros for epochs before the record start.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edged.dsp.ibi import IBI_FS, sample_and_hold
from edged.errors import RecordingError
from edged.sources.readers.physionet_rr import read_physionet_rr

EPOCH_SECONDS = 30.0
SAMPLES_PER_EPOCH = round(EPOCH_SECONDS * IBI_FS)  # 750
CLASSES = ("W", "NREM", "REM")
STAGE_TO_CLASS = {"W": 0, "N1": 1, "N2": 1, "N3": 1, "REM": 2}
UNSCORED = -1


@dataclass(frozen=True)
class Night:
    """One record: ``ibi`` (float32, ``n_epochs * 750`` samples from the record start) and ``labels``
    (int64 class index per epoch, -1 for unscored / movement)."""

    name: str
    subject: str
    ibi: np.ndarray
    labels: np.ndarray

    @property
    def n_epochs(self) -> int:
        return len(self.labels)


def subject_of(record: str) -> str:
    """slpdb record name -> subject: ``slp01a`` and ``slp01b`` are halves of one night of one subject."""
    m = re.fullmatch(r"(slp\d+)[a-z]?", record)
    if not m:
        raise RecordingError(f"{record}: not an slpdb record name")
    return m.group(1)


def load_night(path: str | Path) -> Night:
    path = Path(path)
    rec = read_physionet_rr(path)
    if rec.hypnogram is None:
        raise RecordingError(f"{path}: no stage annotations (.an) beside it")
    stages = rec.hypnogram.stages
    labels = np.array([STAGE_TO_CLASS[s] if s is not None else UNSCORED for s in stages], dtype=np.int64)
    beats = rec.rr["rr"].beat_times()
    ibi = sample_and_hold(beats, len(stages) * SAMPLES_PER_EPOCH, fs=IBI_FS)
    return Night(name=path.stem, subject=subject_of(path.stem), ibi=ibi, labels=labels)


def load_nights(data_dir: str | Path, records: list[str] | None = None, exclude: tuple[str, ...] = ()) -> list[Night]:
    data_dir = Path(data_dir)
    if records is None:
        records = sorted(p.stem for p in data_dir.glob("*.rr"))
    nights = [load_night(data_dir / f"{r}.rr") for r in records if r not in exclude]
    if not nights:
        raise RecordingError(f"{data_dir}: no .rr records found")
    return nights


def padded_epochs(ibi: np.ndarray, context: int) -> np.ndarray:
    """The night as (context - 1 + n_epochs, 750): ``context - 1`` all-zero epochs before the record start."""
    n = len(ibi) // SAMPLES_PER_EPOCH
    out = np.zeros((context - 1 + n, SAMPLES_PER_EPOCH), dtype=np.float32)
    out[context - 1 :] = ibi[: n * SAMPLES_PER_EPOCH].reshape(n, SAMPLES_PER_EPOCH)
    return out


def windows(night: Night, context: int, epochs: np.ndarray | None = None) -> np.ndarray:
    """The model input for each epoch in ``epochs`` (default all): (len, 1, context * 750) float32, exactly
    what the daemon feeds for that epoch."""
    padded = padded_epochs(night.ibi, context)
    if epochs is None:
        epochs = np.arange(night.n_epochs)
    out = np.empty((len(epochs), 1, context * SAMPLES_PER_EPOCH), dtype=np.float32)
    for i, k in enumerate(epochs):
        out[i, 0] = padded[k : k + context].reshape(-1)
    return out
