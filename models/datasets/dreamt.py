"""DREAMT (PhysioNet ``dreamt``): Empatica E4 wristband signals with PSG sleep stages, one CSV per subject.

File: ``S002_whole_df.csv`` (the 64-Hz folder): a header row naming ``TIMESTAMP`` (s), ``BVP``, ``ACC_X``,
``ACC_Y``, ``ACC_Z``, ``TEMP``, ``EDA``, ``HR``, ``IBI``, ``Sleep_Stage`` and apnea event columns, then one row
per 1/64 s. ``Sleep_Stage`` is the technologist's stage of the 30-s epoch the row lies in: ``P`` (preparation,
before lights off), ``W``, ``N1``, ``N2``, ``N3``, ``R``, ``Missing``; P and Missing are unscored here.

Beats are not taken from the E4's own sparse ``IBI`` column: WatchSleepNet detects them in the BVP, and so
does edged live (its PPG beat detector), so the wrist pulse wave is what a model trains on.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edged.errors import RecordingError
from models.datasets import Night, classes_of, stage_labels

FS = 64.0
EPOCH_SECONDS = 30.0
SIGNALS = ("BVP", "ACC_X", "ACC_Y", "ACC_Z", "TEMP", "EDA", "HR")
STAGES: dict[str, str | None] = {"W": "W", "N1": "N1", "N2": "N2", "N3": "N3", "R": "REM", "P": None, "Missing": None}
_SUBJECT = re.compile(r"^(S\d+)")


def subject_of(path: str | Path) -> str:
    m = _SUBJECT.match(Path(path).name)
    if m is None:
        raise RecordingError(f"{path}: not a DREAMT file name (expected S<number>_..., e.g. S002_whole_df.csv)")
    return m.group(1)


def load_night(path: str | Path, *, channels: Sequence[str] = SIGNALS, scheme: str = "5-stage") -> Night:
    """One subject's night: ``channels`` at 64 Hz from the first row, one label per whole 30-s epoch (the
    stage most of its rows carry)."""
    import pandas as pd  # neurokit2's dependency; fast CSV parsing of ~2 M rows per night

    path = Path(path)
    subject = subject_of(path)
    wanted = ["TIMESTAMP", *channels, "Sleep_Stage"]
    try:
        header = pd.read_csv(path, nrows=0).columns
    except FileNotFoundError:
        raise RecordingError(f"{path}: recording not found") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise RecordingError(f"{path}: not a CSV file: {exc}") from None
    missing = [c for c in wanted if c not in header]
    if missing:
        raise RecordingError(f"{path}: no column {missing[0]!r} (columns: {', '.join(map(str, header))})")
    try:
        frame = pd.read_csv(path, usecols=wanted, dtype={"Sleep_Stage": str}, keep_default_na=False,
                            na_values={c: ["", "nan", "NaN"] for c in wanted if c != "Sleep_Stage"})
    except (pd.errors.ParserError, ValueError) as exc:
        raise RecordingError(f"{path}: unreadable CSV: {exc}") from None
    numeric = {}
    for c in ["TIMESTAMP", *channels]:
        values = pd.to_numeric(frame[c], errors="coerce").to_numpy(np.float64)
        bad = np.flatnonzero(np.isnan(values) & frame[c].notna().to_numpy())  # text, not an empty cell
        if bad.size:
            raise RecordingError(f"{path}:{bad[0] + 2}: column {c!r} is not a number: {frame[c].iloc[bad[0]]!r}")
        numeric[c] = values
    if len(frame) < 2:
        raise RecordingError(f"{path}: fewer than two rows")

    t = numeric["TIMESTAMP"]
    steps = np.diff(t)
    off_grid = np.flatnonzero(np.abs(steps - 1.0 / FS) > 0.25 / FS)
    if off_grid.size:
        k = int(off_grid[0])
        raise RecordingError(
            f"{path}:{k + 3}: TIMESTAMP steps from {t[k]:.6g} to {t[k + 1]:.6g} s; expected one row every "
            f"1/{FS:g} s (a regular 64-Hz grid)"
        )

    per_epoch = round(EPOCH_SECONDS * FS)
    n_epochs = len(frame) // per_epoch
    raw_stages = frame["Sleep_Stage"].str.strip().to_numpy()
    unknown = sorted(set(raw_stages) - set(STAGES))
    if unknown:
        row = int(np.flatnonzero(raw_stages == unknown[0])[0])
        raise RecordingError(
            f"{path}:{row + 2}: Sleep_Stage {unknown[0]!r} is not one of {', '.join(STAGES)}"
        )
    stages = [STAGES[Counter(raw_stages[k * per_epoch : (k + 1) * per_epoch]).most_common(1)[0][0]]
              for k in range(n_epochs)]
    return Night(
        dataset="dreamt", subject=subject, record=path.stem, labels=stage_labels(stages, scheme),
        classes=classes_of(scheme), scheme=scheme, epoch_seconds=EPOCH_SECONDS,
        signals={c: (FS, numeric[c]) for c in channels},
    )


def load_nights(directory: str | Path, **options) -> list[Night]:
    directory = Path(directory)
    files = sorted(directory.glob("S*_whole_df.csv"))
    if not files:
        raise RecordingError(f"{directory}: no DREAMT S<id>_whole_df.csv files")
    return [load_night(p, **options) for p in files]
