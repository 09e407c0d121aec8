"""Agreement between predicted and reference stages: Cohen's kappa, accuracy, F1. Plain numpy, shared by
``edged replay`` and the training code in ``models/`` (which may import edged, never the reverse)."""

from __future__ import annotations

import math

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
    """``c[i, j]`` = epochs of reference class ``i`` predicted as ``j``; reference labels < 0 (unscored
    epochs) are skipped."""
    truth = np.asarray(truth, dtype=np.int64)
    pred = np.asarray(pred, dtype=np.int64)
    if truth.shape != pred.shape:
        raise ValueError(f"reference {truth.shape} and predictions {pred.shape} differ in shape")
    keep = truth >= 0
    truth, pred = truth[keep], pred[keep]
    if len(truth) and (truth.max() >= n_classes or pred.min() < 0 or pred.max() >= n_classes):
        raise ValueError(f"labels outside 0..{n_classes - 1}")
    return np.bincount(truth * n_classes + pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def kappa_from_confusion(c: np.ndarray) -> float:
    n = c.sum()
    if n == 0:
        return math.nan
    observed = np.trace(c) / n
    expected = float((c.sum(0) * c.sum(1)).sum()) / (n * n)
    if expected == 1.0:
        return 1.0 if observed == 1.0 else 0.0  # one class only, on both sides: agreement is trivial
    return float((observed - expected) / (1.0 - expected))


def f1_from_confusion(c: np.ndarray) -> np.ndarray:
    """Per-class F1; NaN for a class absent from both the reference and the predictions."""
    tp = np.diag(c).astype(np.float64)
    denom = c.sum(1) + c.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, 2.0 * tp / denom, np.nan)


def scores(matrix: np.ndarray) -> dict[str, float | list[float]]:
    """Accuracy, Cohen's kappa, per-class F1 and macro F1 (over classes present in the reference)."""
    total = int(matrix.sum())
    f1 = f1_from_confusion(matrix)
    present = matrix.sum(1) > 0
    return {"n": total, "accuracy": float(np.trace(matrix)) / total if total else math.nan,
            "kappa": kappa_from_confusion(matrix), "f1": [float(v) for v in f1],
            "macro_f1": float(np.nanmean(f1[present])) if present.any() else math.nan}
