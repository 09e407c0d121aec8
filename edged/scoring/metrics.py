"""Agreement between predicted and reference stages: Cohen's kappa, accuracy, F1. Plain numpy, shared by
``edged replay`` and the training code in ``models/`` (which may import edged, never the reverse)."""

from __future__ import annotations

import numpy as np

# How reference stages (W, N1, N2, N3, REM) collapse onto a model's classes.
STAGE_GROUPS = {
    ("W", "NREM", "REM"): {"W": "W", "N1": "NREM", "N2": "NREM", "N3": "NREM", "REM": "REM"},
    ("W", "Light", "Deep", "REM"): {"W": "W", "N1": "Light", "N2": "Light", "N3": "Deep", "REM": "REM"},
    ("W", "N1", "N2", "N3", "REM"): {s: s for s in ("W", "N1", "N2", "N3", "REM")},
    ("W", "S"): {"W": "W", "N1": "S", "N2": "S", "N3": "S", "REM": "S"},
}


def reference_to_classes(stage: str | None, classes: tuple[str, ...]) -> str | None:
    """A reference stage in a model's class vocabulary, or None when unscored or not mappable."""
    if stage is None:
        return None
    mapping = STAGE_GROUPS.get(tuple(classes))
    if mapping is None:
        return stage if stage in classes else None
    return mapping.get(stage)


def confusion(truth: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Rows: reference class, columns: predicted class."""
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (truth, pred), 1)
    return matrix


def scores(matrix: np.ndarray) -> dict[str, float | list[float]]:
    """Accuracy, Cohen's kappa, per-class F1 and macro F1 from a confusion matrix."""
    total = matrix.sum()
    if total == 0:
        return {"n": 0, "accuracy": float("nan"), "kappa": float("nan"), "f1": [], "macro_f1": float("nan")}
    observed = np.trace(matrix) / total
    expected = float((matrix.sum(0) * matrix.sum(1)).sum()) / total**2
    kappa = (observed - expected) / (1 - expected) if expected < 1 else 0.0
    tp = np.diag(matrix).astype(float)
    denom = matrix.sum(0) + matrix.sum(1)
    f1 = np.where(denom > 0, 2 * tp / np.maximum(denom, 1), np.nan)
    present = matrix.sum(1) > 0
    return {"n": int(total), "accuracy": float(observed), "kappa": float(kappa),
            "f1": [float(v) for v in f1], "macro_f1": float(np.nanmean(f1[present])) if present.any() else float("nan")}
