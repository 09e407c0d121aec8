"""Text summaries of a scored night: the hypnogram in minutes per stage and, when the recording carries
reference stages, the epoch-by-epoch agreement with them."""

from __future__ import annotations

import numpy as np

from edged.scoring.epoch import ScoredEpoch
from edged.scoring.metrics import confusion, reference_to_classes, scores
from edged.sources.recording import Hypnogram


def hypnogram_summary(epochs: list[ScoredEpoch]) -> str:
    if not epochs:
        return "no epoch was scored (the recording is shorter than one epoch, or carries no usable signal)"
    epoch_s = epochs[0].end - epochs[0].start
    classes = list(epochs[0].probabilities)
    counts = {c: sum(e.stage == c for e in epochs) for c in classes}
    low = sum(not e.quality_ok for e in epochs)
    lines = [f"scored {len(epochs)} epochs ({len(epochs) * epoch_s / 3600:.2f} h) with model {epochs[0].model_id}"
             + ("  [SYNTHETIC weights: not a sleep measurement]" if epochs[0].synthetic else "")]
    for c in classes:
        share = counts[c] / len(epochs)
        lines.append(f"  {c:>5}: {counts[c] * epoch_s / 60:7.1f} min  {share:6.1%}  {'#' * round(share * 40)}")
    lines.append(f"  low-quality epochs (flagged): {low}")
    lines.append("  hypnogram (one character per epoch): " + "".join(e.stage[0] for e in epochs))
    return "\n".join(lines)


def agreement(epochs: list[ScoredEpoch], hypnogram: Hypnogram) -> str:
    """Agreement with reference stages, mapped to the model's classes; unscored epochs are left out."""
    if not epochs:
        return "agreement: nothing to compare"
    classes = tuple(epochs[0].probabilities)
    index = {c: i for i, c in enumerate(classes)}
    truth, pred = [], []
    for e in epochs:
        # A replay anchors its stream on the recording start, so epoch k starts k epochs into the file.
        ref_index = int(round(e.index * (e.end - e.start) / hypnogram.epoch_seconds))
        if ref_index >= len(hypnogram.stages):
            continue
        ref = reference_to_classes(hypnogram.stages[ref_index], classes)
        if ref is not None:
            truth.append(index[ref])
            pred.append(index[e.stage])
    if not truth:
        return "agreement: the reference has no scored epoch in the model's classes"
    matrix = confusion(np.array(truth), np.array(pred), len(classes))
    s = scores(matrix)
    lines = [f"agreement with reference stages over {s['n']} epochs: accuracy {s['accuracy']:.3f}, "
             f"Cohen's kappa {s['kappa']:.3f}, macro F1 {s['macro_f1']:.3f}",
             "  per-class F1: " + ", ".join(f"{c} {f:.3f}" for c, f in zip(classes, s["f1"])),
             "  confusion (rows reference, columns predicted): " + " ".join(classes)]
    for c, row in zip(classes, matrix):
        lines.append(f"    {c:>5} " + " ".join(f"{v:6d}" for v in row))
    return "\n".join(lines)
