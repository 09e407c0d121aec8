"""Epoch-by-epoch agreement between reference and predicted stages: confusion, Cohen's kappa, accuracy, F1.

Numpy only, so evaluation needs nothing the daemon does not already install. Labels are class indices;
negative reference labels (unscored epochs) are dropped before anything is counted.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """``c[i, j]`` = epochs of reference class ``i`` predicted as ``j``; reference labels < 0 are skipped."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} differ in shape")
    keep = y_true >= 0
    y_true, y_pred = y_true[keep], y_pred[keep]
    if len(y_true) and (y_true.max() >= n_classes or y_pred.min() < 0 or y_pred.max() >= n_classes):
        raise ValueError(f"labels outside 0..{n_classes - 1}")
    return np.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


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
    support = c.sum(1)
    predicted = c.sum(0)
    denom = support + predicted
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, 2.0 * tp / denom, np.nan)


def scores(y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[str]) -> dict:
    """Everything reported for one set of epochs, JSON-ready (NaN becomes None).

    Macro F1 averages the classes present in the reference: a class a subject never shows (no REM in a
    record) is not counted as a zero, it is absent (and its F1 is None)."""
    k = len(classes)
    c = confusion(y_true, y_pred, k)
    n = int(c.sum())
    f1 = f1_from_confusion(c)
    present = c.sum(1) > 0
    f1_present = np.where(present, f1, np.nan)
    macro = float(np.nanmean(f1_present)) if present.any() else math.nan
    return {
        "epochs": n,
        "kappa": _clean(kappa_from_confusion(c)),
        "accuracy": _clean(float(np.trace(c)) / n if n else math.nan),
        "macro_f1": _clean(macro),
        "f1": {name: _clean(float(v)) for name, v in zip(classes, f1_present)},
        "confusion": c.tolist(),  # rows: reference, columns: predicted, in class order
        "support": {name: int(s) for name, s in zip(classes, c.sum(1))},
    }


def _clean(x: float) -> float | None:
    return None if x is None or math.isnan(x) else round(float(x), 4)


def format_scores(s: dict, classes: Sequence[str]) -> str:
    """One readable line per scores dict, for logs and the model card."""

    def f(v):
        return "  -  " if v is None else f"{v:.3f}"

    per = " ".join(f"{c}={f(s['f1'][c])}" for c in classes)
    return f"n={s['epochs']:5d} kappa={f(s['kappa'])} acc={f(s['accuracy'])} macroF1={f(s['macro_f1'])} F1: {per}"
