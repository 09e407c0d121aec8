"""Walch et al. 2019 (PhysioNet ``sleep-accel``): Apple Watch heart rate and PSG stages of 25 subjects.

Layout: ``heart_rate/<id>_heartrate.txt`` (``t_seconds,bpm``, every 2-10 s, ``t`` from the PSG start, the
days before the night included) and ``labels/<id>_labeled_sleep.txt`` (``t_seconds,stage`` every 30 s;
-1 unscored, 0 W, 1-4 N1-N4, 5 REM). Files are parsed by edged's own reader
(:mod:`edged.sources.readers.walch`), so training reads exactly what ``edged replay`` reads.

Only the PSG night is used: readings from ``t = 0`` (the PSG start) to the end of the last labelled
epoch. The heart rate becomes the model signal with :func:`edged.dsp.hr.hold_hr` (60 / bpm held at
``HR_FS``, missing after ``MAX_HR_SILENCE``), the batch twin of what the daemon computes live.

:func:`loso_folds` gives the leave-one-subject-out folds every Walch figure of the project is measured on
(the model's cross-validation and the peers in ``benchmarks/accuracy.py``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edged.dsp.hr import HR_FS, hold_hr
from edged.errors import RecordingError
from edged.sources.readers.walch import (
    SUFFIX,
    labels_path,
    read_stage_labels,
    read_walch_heart_rate,
)
from models.datasets import Night, classes_of, stage_labels

DATASET = "walch"
SCHEME = "3-stage"
EPOCH_SECONDS = 30.0


def subjects(data_dir: str | Path) -> list[str]:
    """Subject ids with both a heart-rate file and labels, sorted as strings."""
    data_dir = Path(data_dir)
    found = sorted(p.name[: -len(SUFFIX)] for p in (data_dir / "heart_rate").glob(f"*{SUFFIX}"))
    found = [s for s in found if labels_path(data_dir / "heart_rate" / f"{s}{SUFFIX}").exists()]
    if not found:
        raise RecordingError(f"{data_dir}: no heart_rate/<id>{SUFFIX} with labels/<id>_labeled_sleep.txt")
    return found


def night_readings(data_dir: str | Path, subject: str) -> tuple[np.ndarray, np.ndarray, tuple[str | None, ...]]:
    """(times, bpm) of the PSG night's readings and the reference stages (canonical names, None unscored)."""
    path = Path(data_dir) / "heart_rate" / f"{subject}{SUFFIX}"
    rec = read_walch_heart_rate(path)
    if rec.hypnogram is None:
        raise RecordingError(f"{path}: no labels at {labels_path(path)}")
    stages = rec.hypnogram.stages
    track = rec.hr["hr"]
    inside = track.times < len(stages) * EPOCH_SECONDS
    return track.times[inside], track.bpm[inside], stages


def load_night(data_dir: str | Path, subject: str, *, scheme: str = SCHEME, fs: float = HR_FS) -> Night:
    """One subject's PSG night: ``signals["hr"]`` = (fs, held interval in s, 0 = missing) from the PSG
    start, one label per 30-s epoch (-1 unscored)."""
    times, bpm, stages = night_readings(data_dir, subject)
    n = len(stages)
    held = hold_hr(times, bpm, round(n * EPOCH_SECONDS * fs), fs=fs)
    return Night(dataset=DATASET, subject=subject, record=subject, labels=stage_labels(stages, scheme),
                 classes=classes_of(scheme), scheme=scheme, epoch_seconds=EPOCH_SECONDS, signals={"hr": (fs, held)})


def load_nights(data_dir: str | Path, only: list[str] | None = None, *, scheme: str = SCHEME) -> list[Night]:
    return [load_night(data_dir, s, scheme=scheme) for s in (only or subjects(data_dir))]


def loso_folds(data_dir: str | Path) -> list[tuple[str, list[str]]]:
    """Leave-one-subject-out: ``(test subject, training subjects)`` per fold, in subject order."""
    all_subjects = subjects(data_dir)
    return [(s, [t for t in all_subjects if t != s]) for s in all_subjects]


__all__ = ["load_night", "load_nights", "loso_folds", "night_readings", "read_stage_labels", "subjects"]
