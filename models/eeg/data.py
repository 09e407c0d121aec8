"""Sleep-EDF-20 per-epoch EEG features (``../shared/data/eeg-features-sleepedf``): recordings, the causal
model inputs built from them with edged's own feature code, the evaluation crop and the subject-wise folds.

Each ``SC4ssNE0.npz`` is one night: ``X`` (n_epochs, 72) and ``y`` (0 W, 1 N1, 2 N2, 3 N3, 4 REM). Only
columns 0-17 are used (9 per-epoch features of Fpz-Cz, then 9 of Pz-Oz, defined in the data README and
computed live by :mod:`edged.dsp.eeg_features`); the dataset's context columns 18-71 look one epoch ahead
and are recomputed causally instead. The subject is the first five characters of the file name
(``SC4ss``): 8 subjects, two nights each (SC4011 is a short one, 951 epochs).

Each night is cropped to 30 min (60 epochs) before its first and after its last sleep epoch, the common
Sleep-EDF-20 protocol, and treated as the stream edged would see if started at the crop's start: the causal
context (including the running reference level of :mod:`edged.dsp.eeg_features`) begins there, and the
context window before it holds the feature set's missing row. Every epoch of the cropped night is scored.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edged.dsp.eeg_features import feature_set

CLASSES = ("W", "N1", "N2", "N3", "REM")
CHANNELS = ("fpz_cz", "pz_oz")  # model input names, in the dataset's column order
FEATURES = feature_set("sleepedf-eeg-v1")
BASE_PER_CHANNEL = len(FEATURES.base_names)  # 9
CROP_EPOCHS = 60  # 30 min of 30-s epochs


@dataclass(frozen=True)
class Night:
    """One night, cropped: epoch 0 is the crop's first epoch, ``first_epoch`` of the file."""

    name: str  # SC4ssNE0
    subject: str  # SC4ss
    base: np.ndarray  # (n_epochs, 18) dataset columns 0-17
    labels: np.ndarray  # (n_epochs,) int class indices
    first_epoch: int  # index of epoch 0 in the file's epochs

    @property
    def n_epochs(self) -> int:
        return len(self.labels)

    @property
    def scored(self) -> np.ndarray:
        """Which epochs are scored: all of them, the night being cropped already."""
        return np.ones(self.n_epochs, dtype=bool)

    def features(self) -> np.ndarray:
        """``(n_epochs, channels, n_features)`` causal feature rows, exactly as edged computes them live from a
        stream that starts at the crop."""
        per = [FEATURES.context_batch(self.base[:, c * BASE_PER_CHANNEL : (c + 1) * BASE_PER_CHANNEL])
               for c in range(len(CHANNELS))]
        return np.stack(per, axis=1)


def evaluation_crop(labels: np.ndarray, margin: int = CROP_EPOCHS) -> np.ndarray:
    """Boolean mask: from ``margin`` epochs before the first sleep epoch to ``margin`` after the last."""
    sleep = np.flatnonzero(labels != 0)
    mask = np.zeros(len(labels), dtype=bool)
    if len(sleep):
        mask[max(0, sleep[0] - margin) : sleep[-1] + margin + 1] = True
    return mask


def load_nights(data: str | Path, names: tuple[str, ...] | None = None) -> list[Night]:
    data = Path(data)
    files = sorted(data.glob("SC4*.npz"))
    if not files:
        raise FileNotFoundError(f"{data}: no Sleep-EDF feature files (SC4*.npz)")
    nights = []
    for f in files:
        name = f.stem
        if names is not None and name not in names:
            continue
        with np.load(f) as z:
            x, y = np.asarray(z["X"], dtype=np.float64), np.asarray(z["y"], dtype=np.int64)
        if x.ndim != 2 or x.shape[1] < 18 or len(x) != len(y):
            raise ValueError(f"{f}: expected X (n, 72) and y (n,), got {x.shape} and {y.shape}")
        keep = np.flatnonzero(evaluation_crop(y))
        if len(keep) == 0:
            raise ValueError(f"{f}: no sleep epoch, nothing to evaluate")
        # The crop is contiguous (removed unknown/movement epochs aside, as in the file).
        nights.append(Night(name, name[:5], x[keep[0] : keep[-1] + 1, :18], y[keep[0] : keep[-1] + 1], int(keep[0])))
    return nights


@dataclass(frozen=True)
class Fold:
    subject: str  # held out
    train: list[Night]
    test: list[Night]


def loso_folds(data: str | Path | list[Night]) -> list[Fold]:
    """Leave-one-subject-out folds over the nights (a directory or loaded nights), in subject order.

    Score a fold on every epoch of its test nights (``night.labels``, already cropped); a peer that wants
    causal context features from columns 0-17 gets them from ``night.features()`` (or builds its own from
    ``night.base``)."""
    nights = load_nights(data) if not isinstance(data, list) else data
    subjects = sorted({n.subject for n in nights})
    return [Fold(s, [n for n in nights if n.subject != s], [n for n in nights if n.subject == s]) for s in subjects]


def windows(features: np.ndarray, context: int, indices: np.ndarray | None = None) -> np.ndarray:
    """Model inputs ``(len(indices), channels, context, n_features)``: for each epoch the last ``context``
    feature rows, oldest first, padded before the night's start with the feature set's missing row (what
    edged preloads its context window with)."""
    n, n_ch, n_f = features.shape
    pad = np.broadcast_to(FEATURES.missing_row(), (context - 1, n_ch, n_f))
    padded = np.concatenate([pad, features]).astype(np.float32)
    idx = np.arange(n) if indices is None else np.asarray(indices)
    take = idx[:, None] + np.arange(context)[None, :]
    return padded[take].transpose(0, 2, 1, 3)
