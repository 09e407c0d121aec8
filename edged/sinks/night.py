"""The night summary: the numbers a sleep lab reads off a hypnogram, from any model's stages.

Definitions (AASM-style, as in the sleep literature and YASA's ``sleep_statistics``; durations in minutes):

* **TIB**, time in bed: from the start of the first to the end of the last epoch of the night, scored or not.
* **SOL**, sleep-onset latency: from the start of the night to the first epoch of any sleep stage.
* **SPT**, sleep period time: from the first to the last sleep epoch, inclusive.
* **TST**, total sleep time: sleep epochs within the SPT.
* **WASO**, wake after sleep onset: wake epochs within the SPT.
* **SE**, sleep efficiency: TST / TIB, in %; **SME**, sleep-maintenance efficiency: TST / SPT, in %.
* **Awakenings**: wake bouts within the SPT of at least ``min_awakening_epochs`` consecutive wake epochs
  (default 1: every return to wake counts; AASM leaves the minimum to the lab, so it is a parameter).
* Per stage: minutes; percentage of TST for sleep stages and of TIB for wake.

Any class but wake (``W``) is sleep, so the same code serves W/NREM/REM (IBI models, mouse), W/Light/Deep/REM
(SleepVST) and W/N1/N2/N3/REM (EEG models). Epochs without a stage (a gap in the stream, nothing scored)
count in TIB but in no stage, and are reported as ``unscored_minutes``. Low-quality epochs keep their stage
(they are flagged, not hidden, as on the stage topic) and are reported as ``low_quality_minutes``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from edged.scoring.epoch import ScoredEpoch

WAKE = "W"

# Top-to-bottom order of a hypnogram's rows, covering every class vocabulary edged's models use.
DISPLAY_ORDER = ("W", "REM", "N1", "Light", "NREM", "S", "N2", "N3", "Deep")


def display_order(classes: Sequence[str]) -> list[str]:
    """Classes in hypnogram row order (unknown classes last, in their given order)."""
    known = [c for c in DISPLAY_ORDER if c in classes]
    return known + [c for c in classes if c not in known]


def _runs(flags: Sequence[bool]) -> list[tuple[int, int]]:
    """(start, length) of each run of True."""
    runs, start = [], None
    for i, flag in enumerate(flags):
        if flag and start is None:
            start = i
        elif not flag and start is not None:
            runs.append((start, i - start))
            start = None
    if start is not None:
        runs.append((start, len(flags) - start))
    return runs


def summarize(
    stages: Sequence[str | None],
    epoch_seconds: float,
    classes: Sequence[str],
    *,
    low_quality: Sequence[bool] | None = None,
    min_awakening_epochs: int = 1,
) -> dict[str, Any]:
    """Sleep statistics of one night. ``stages[i]`` is epoch ``i``'s class, or None when unscored."""
    if epoch_seconds <= 0:
        raise ValueError("epoch_seconds must be positive")
    if min_awakening_epochs < 1:
        raise ValueError("min_awakening_epochs must be >= 1")
    unknown = {s for s in stages if s is not None and s not in classes}
    if unknown:
        raise ValueError(f"stages {sorted(unknown)} are not among the classes {list(classes)}")
    minutes = epoch_seconds / 60.0
    n = len(stages)
    sleep_idx = [i for i, s in enumerate(stages) if s is not None and s != WAKE]
    has_sleep = bool(sleep_idx)
    spt = stages[sleep_idx[0]: sleep_idx[-1] + 1] if has_sleep else []
    tst_epochs = sum(1 for s in spt if s is not None and s != WAKE)
    waso_epochs = sum(1 for s in spt if s == WAKE)
    tib = n * minutes
    tst = tst_epochs * minutes
    wake_bouts = [length for _, length in _runs([s == WAKE for s in spt]) if length >= min_awakening_epochs]

    per_stage = {}
    for c in classes:
        count = sum(1 for s in stages if s == c)
        entry: dict[str, float | None] = {"minutes": round(count * minutes, 2)}
        if c == WAKE:
            entry["percent_of_tib"] = round(100.0 * count * minutes / tib, 2) if tib else None
        else:
            entry["percent_of_tst"] = round(100.0 * count * minutes / tst, 2) if tst else None
        per_stage[c] = entry

    def latency(stage: str) -> float | None:
        first = next((i for i, s in enumerate(stages) if s == stage), None)
        return None if first is None else round(first * minutes, 2)

    low = sum(1 for flag in (low_quality or []) if flag)
    return {
        "epochs": n,
        "epoch_seconds": epoch_seconds,
        "classes": list(classes),
        "tib_minutes": round(tib, 2),
        "spt_minutes": round(len(spt) * minutes, 2),
        "tst_minutes": round(tst, 2),
        "sol_minutes": round(sleep_idx[0] * minutes, 2) if has_sleep else None,
        "waso_minutes": round(waso_epochs * minutes, 2) if has_sleep else None,
        "sleep_efficiency_percent": round(100.0 * tst / tib, 2) if tib else None,
        "sleep_maintenance_efficiency_percent": round(100.0 * tst / (len(spt) * minutes), 2) if has_sleep else None,
        "awakenings": len(wake_bouts) if has_sleep else None,
        "min_awakening_epochs": min_awakening_epochs,
        "stages": per_stage,
        "latency_minutes": {c: latency(c) for c in classes if c != WAKE},
        "unscored_minutes": round(sum(1 for s in stages if s is None) * minutes, 2),
        "low_quality_minutes": round(low * minutes, 2),
    }


def epochs_to_night(epochs: Sequence[ScoredEpoch]) -> tuple[list[str | None], list[bool]]:
    """Place scored epochs on one epoch grid by their start time, from the first to the last one scored:
    slots never scored in between (a gap) become None. Epochs of several sessions (the stream restarted
    after a disconnect) share the grid; a slot scored twice keeps the later epoch. Returns (stages, low-quality
    flags)."""
    if not epochs:
        return [], []
    epoch_seconds = epochs[0].end - epochs[0].start
    t0 = min(e.start for e in epochs)
    slots: dict[int, ScoredEpoch] = {}
    for e in epochs:
        slots[int(round((e.start - t0) / epoch_seconds))] = e
    n = max(slots) + 1
    stages = [slots[i].stage if i in slots else None for i in range(n)]
    low = [i in slots and not slots[i].quality_ok for i in range(n)]
    return stages, low


def summarize_epochs(epochs: Sequence[ScoredEpoch], *, min_awakening_epochs: int = 1) -> dict[str, Any]:
    """The night summary of one device's scored epochs (one session), with what identifies it."""
    if not epochs:
        raise ValueError("no scored epochs to summarise")
    first, last = min(epochs, key=lambda e: e.start), max(epochs, key=lambda e: e.end)
    stages, low = epochs_to_night(epochs)
    summary = summarize(stages, first.end - first.start, list(first.probabilities), low_quality=low,
                        min_awakening_epochs=min_awakening_epochs)
    summary.update(device=first.device, session=first.session, model=first.model_id, synthetic=first.synthetic,
                   start=first.start, end=last.end)
    return summary


def summary_text(summary: dict[str, Any]) -> str:
    """The summary as a few readable lines (for the terminal and the report)."""
    def m(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.1f} min"

    lines = [
        f"time in bed {m(summary['tib_minutes'])}, total sleep {m(summary['tst_minutes'])}, "
        f"sleep efficiency {summary['sleep_efficiency_percent'] if summary['sleep_efficiency_percent'] is not None else 'n/a'} %",
        f"sleep-onset latency {m(summary['sol_minutes'])}, WASO {m(summary['waso_minutes'])}, "
        f"awakenings {summary['awakenings'] if summary['awakenings'] is not None else 'n/a'}",
        "per stage: " + ", ".join(
            f"{c} {v['minutes']:.1f} min"
            + (f" ({v['percent_of_tst']:.1f} % of TST)" if v.get("percent_of_tst") is not None else "")
            + (f" ({v['percent_of_tib']:.1f} % of TIB)" if v.get("percent_of_tib") is not None else "")
            for c, v in summary["stages"].items()),
    ]
    if summary["unscored_minutes"]:
        lines.append(f"unscored (no data): {m(summary['unscored_minutes'])}")
    if summary["low_quality_minutes"]:
        lines.append(f"low signal quality (staged, flagged): {m(summary['low_quality_minutes'])}")
    return "\n".join(lines)
