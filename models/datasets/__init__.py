"""Loaders for the public sleep data sets in their native formats, all returning one :class:`Night`.

==============  ==========================================================  ===============================
module          format                                                      reference stages
==============  ==========================================================  ===============================
``sleepedf``    Sleep-EDF Expanded: PSG EDF + hypnogram EDF+ (``SC4ssN``)   R&K "Sleep stage W/1/2/3/4/R/?"
``nsrr``        SHHS / MESA: EDF + NSRR XML ``ScoredEvent`` annotations     "Wake|0" ... "REM sleep|5"
``dreamt``      DREAMT: Empatica E4 CSV at 64 Hz with a ``Sleep_Stage``     P/W/N1/N2/N3/R/Missing
``mouse``       SlumberNet (Zenodo 7899654) and MiSleep mouse EEG/EMG       Wake/NREM/REM per 4 s (or 1 s)
``slpdb``       MIT-BIH Polysomnographic DB beat-by-beat RR (``.rr``/``.an``)  R&K per 30 s
``walch``       Walch 2019 sleep-accel (Apple Watch HR + PSG labels)         0-5 per 30 s
==============  ==========================================================  ===============================

File parsing is edged's own (:mod:`edged.sources.readers`): a model is trained on what the daemon reads.
Every loader reports bad input as :class:`edged.errors.RecordingError` naming the file and what is wrong.

Stages are first read into edged's canonical names (W, N1, N2, N3, REM; None = unscored, movement,
artefact) and only then mapped to a model's classes by one of the :data:`SCHEMES`, so that how R&K stage 4,
movement time or "lights on" epochs are treated is decided once, here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

UNSCORED = -1

# Class scheme name -> (class names, canonical stage -> class name).
SCHEMES: dict[str, tuple[tuple[str, ...], dict[str, str]]] = {
    "5-stage": (("W", "N1", "N2", "N3", "REM"), {"W": "W", "N1": "N1", "N2": "N2", "N3": "N3", "REM": "REM"}),
    "4-stage": (("W", "Light", "Deep", "REM"), {"W": "W", "N1": "Light", "N2": "Light", "N3": "Deep", "REM": "REM"}),
    "3-stage": (("W", "NREM", "REM"), {"W": "W", "N1": "NREM", "N2": "NREM", "N3": "NREM", "REM": "REM"}),
    # Mouse scoring has no NREM sub-stages: the loaders read it as "NREM" directly.
    "mouse": (("W", "NREM", "REM"), {"W": "W", "NREM": "NREM", "REM": "REM"}),
}


def classes_of(scheme: str) -> tuple[str, ...]:
    try:
        return SCHEMES[scheme][0]
    except KeyError:
        raise ValueError(f"unknown class scheme {scheme!r}; known: {', '.join(SCHEMES)}") from None


def stage_labels(stages: Sequence[str | None], scheme: str) -> np.ndarray:
    """Canonical stage names (None = unscored) -> class indices of ``scheme`` (-1 = unscored). A stage the
    scheme does not know (N1 under the mouse scheme) is an error, not a silent -1."""
    classes = classes_of(scheme)
    mapping = SCHEMES[scheme][1]
    index = {name: i for i, name in enumerate(classes)}
    out = np.full(len(stages), UNSCORED, dtype=np.int64)
    for k, stage in enumerate(stages):
        if stage is None:
            continue
        if stage not in mapping:
            raise ValueError(f"stage {stage!r} (epoch {k}) has no class in the {scheme!r} scheme")
        out[k] = index[mapping[stage]]
    return out


@dataclass(frozen=True)
class Night:
    """One labelled recording, whatever its source.

    ``signals``: channel name -> (fs Hz, samples), from the recording's first sample. ``beats``: beat times
    (s from the same origin) for beat-interval data sets, else None. ``labels``: class index per epoch of
    ``epoch_seconds`` from that origin (-1 unscored), classes ``classes`` (scheme ``scheme``).
    ``start_seconds``: where that origin lies in the original file (non-zero when a loader cropped it).
    """

    dataset: str
    subject: str
    record: str
    labels: np.ndarray
    classes: tuple[str, ...]
    scheme: str
    epoch_seconds: float = 30.0
    signals: dict[str, tuple[float, np.ndarray]] = field(default_factory=dict)
    beats: np.ndarray | None = None
    start_seconds: float = 0.0

    @property
    def n_epochs(self) -> int:
        return len(self.labels)

    def epoch_samples(self, channel: str) -> np.ndarray:
        """``channel`` cut into whole epochs aligned with ``labels``: (n_epochs, epoch samples); epochs the
        signal does not cover completely are NaN."""
        fs, data = self.signals[channel]
        per = round(self.epoch_seconds * fs)
        out = np.full((self.n_epochs, per), np.nan)
        n = min(self.n_epochs, len(data) // per)
        out[:n] = np.asarray(data[: n * per], dtype=np.float64).reshape(n, per)
        return out


def data_root() -> Path:
    """The shared data directory: ``../shared/data`` beside the repository (where every test and command
    looks), or ``/work/shared/data`` when the checkout lives elsewhere on these machines."""
    beside = Path(__file__).resolve().parents[2].parent / "shared" / "data"
    return beside if beside.exists() else Path("/work/shared/data")
