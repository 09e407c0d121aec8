"""Epoch-by-epoch agreement between reference and predicted stages, as the JSON-ready reports and text the
training commands write. The arithmetic (confusion, kappa, F1) lives in ``edged.scoring.metrics``.

Numpy only, so evaluation needs nothing the daemon does not already install. Labels are class indices;
negative reference labels (unscored epochs) are dropped before anything is counted.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

# One implementation for training and the daemon's replay agreement (models may import edged, not the reverse).
from edged.scoring.metrics import confusion, f1_from_confusion, kappa_from_confusion  # noqa: F401


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
