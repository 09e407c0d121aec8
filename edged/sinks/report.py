"""Summaries of a scored night: the hypnogram in minutes per stage, the night summary (:mod:`edged.sinks.night`)
and, when the recording carries reference stages, the epoch-by-epoch agreement with them, as text for the
terminal or as a :class:`~edged.sinks.report_render.NightReport` for a file."""

from __future__ import annotations

import numpy as np

from edged.scoring.epoch import ScoredEpoch
from edged.scoring.metrics import confusion, reference_to_classes, scores
from edged.sinks.night import epochs_to_night, summarize_epochs
from edged.sinks.report_render import NightReport, Track
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


def _reference_index(epoch: ScoredEpoch, hypnogram: Hypnogram) -> int:
    # A replay anchors its stream on the recording start, so epoch k starts k epochs into the file.
    return int(round(epoch.index * (epoch.end - epoch.start) / hypnogram.epoch_seconds))


def agreement_scores(epochs: list[ScoredEpoch], hypnogram: Hypnogram) -> dict | None:
    """Accuracy, kappa, F1 and confusion against reference stages mapped to the model's classes; unscored
    reference epochs are left out. None when nothing can be compared."""
    if not epochs:
        return None
    classes = tuple(epochs[0].probabilities)
    index = {c: i for i, c in enumerate(classes)}
    truth, pred = [], []
    for e in epochs:
        ref_index = _reference_index(e, hypnogram)
        if ref_index >= len(hypnogram.stages):
            continue
        ref = reference_to_classes(hypnogram.stages[ref_index], classes)
        if ref is not None:
            truth.append(index[ref])
            pred.append(index[e.stage])
    if not truth:
        return None
    matrix = confusion(np.array(truth), np.array(pred), len(classes))
    return {**scores(matrix), "classes": list(classes), "confusion": matrix.tolist()}


def agreement(epochs: list[ScoredEpoch], hypnogram: Hypnogram) -> str:
    """Agreement with reference stages as text."""
    if not epochs:
        return "agreement: nothing to compare"
    s = agreement_scores(epochs, hypnogram)
    if s is None:
        return "agreement: the reference has no scored epoch in the model's classes"
    classes = s["classes"]
    lines = [f"agreement with reference stages over {s['n']} epochs: accuracy {s['accuracy']:.3f}, "
             f"Cohen's kappa {s['kappa']:.3f}, macro F1 {s['macro_f1']:.3f}",
             "  per-class F1: " + ", ".join(f"{c} {f:.3f}" for c, f in zip(classes, s["f1"])),
             "  confusion (rows reference, columns predicted): " + " ".join(classes)]
    for c, row in zip(classes, s["confusion"]):
        lines.append(f"    {c:>5} " + " ".join(f"{v:6d}" for v in row))
    return "\n".join(lines)


REFERENCE_CLASSES = ("W", "N1", "N2", "N3", "REM")


def night_report(epochs: list[ScoredEpoch], *, title: str, hypnogram: Hypnogram | None = None,
                 start: float | None = None) -> NightReport:
    """Everything a report file shows for one device's night, on the predicted epochs' grid."""
    summary = summarize_epochs(epochs)
    stages, _ = epochs_to_night(epochs)
    t0 = min(e.start for e in epochs)
    slots = {int(round((e.start - t0) / summary["epoch_seconds"])): e for e in epochs}
    grid = [slots.get(i) for i in range(len(stages))]
    first = min(e.index for e in epochs)
    classes = list(epochs[0].probabilities)
    tracks = [Track(f"predicted ({summary['model']})", stages, classes)]
    notes = []
    if summary["synthetic"]:
        notes.append("This model was trained on SYNTHETIC signals: these stages are not a sleep measurement.")
    agreement_dict = None
    if hypnogram is not None:
        ref = []
        for i, e in enumerate(grid):
            k = round((first + i) * summary["epoch_seconds"] / hypnogram.epoch_seconds)
            ref.append(hypnogram.stages[k] if 0 <= k < len(hypnogram.stages) else None)
        ref_classes = [c for c in REFERENCE_CLASSES if c in set(ref)] or list(REFERENCE_CLASSES)
        tracks.append(Track("reference (recording's annotation)", ref, ref_classes))
        agreement_dict = agreement_scores(epochs, hypnogram)
    return NightReport(
        title=title,
        epoch_seconds=summary["epoch_seconds"],
        start=start if start is not None else summary["start"],
        summary=summary,
        tracks=tracks,
        probabilities={c: [None if e is None else e.probabilities[c] for e in grid] for c in classes},
        quality=[None if e is None else e.quality for e in grid],
        agreement=agreement_dict,
        notes=notes,
    )
