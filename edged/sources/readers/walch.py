"""Apple Watch heart rate of Walch et al. 2019 (PhysioNet ``sleep-accel``): ``<id>_heartrate.txt``.

``heart_rate/<id>_heartrate.txt``: ``t_seconds,bpm`` per line, ``t`` relative to the start of the PSG
night, readings every 2-10 s, including the days before the night (negative ``t``). Some files hold the
same export twice, concatenated (times jump back); readings are therefore sorted by time and exact
repeats dropped.

The recording starts at the PSG start (``t = 0``): readings before it are not part of the night and are
left out, so that epoch ``k`` of a replay is epoch ``k`` of the reference and elapsed time since the
recording start means what it means live (time since the session started).

Reference stages come from ``../labels/<id>_labeled_sleep.txt`` beside the ``heart_rate`` folder when it
exists: ``t_seconds,stage`` every 30 s from ``t = 0``; -1 unscored, 0 W, 1 N1, 2 N2, 3 N3, 4 N4 (-> N3),
5 REM.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edged.errors import RecordingError
from edged.sources.recording import HRTrack, Hypnogram, Recording

SUFFIX = "_heartrate.txt"
EPOCH_SECONDS = 30.0
STAGE_CODES = {-1: None, 0: "W", 1: "N1", 2: "N2", 3: "N3", 4: "N3", 5: "REM"}


def _read_pairs(path: Path, what: str) -> np.ndarray:
    rows = []
    with open(path) as fh:
        for lineno, line in enumerate(fh, 1):
            text = line.strip()
            if not text:
                continue
            fields = text.replace(" ", ",").split(",")
            fields = [f for f in fields if f]
            if len(fields) != 2:
                raise RecordingError(f"{path}:{lineno}: expected '{what}', got {text!r}")
            try:
                rows.append((float(fields[0]), float(fields[1])))
            except ValueError:
                raise RecordingError(f"{path}:{lineno}: not a number in {text!r}") from None
    if not rows:
        raise RecordingError(f"{path}: no {what} rows in the file")
    out = np.asarray(rows, dtype=np.float64)
    if not np.all(np.isfinite(out)):
        raise RecordingError(f"{path}: a {what} row is not finite")
    return out


def read_heart_rate(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """All readings of a ``<id>_heartrate.txt`` as (times, bpm), sorted, exact repeats dropped, days
    before the night included."""
    path = Path(path)
    rows = _read_pairs(path, "t_seconds,bpm")
    rows = rows[np.argsort(rows[:, 0], kind="stable")]
    repeat = np.zeros(len(rows), dtype=bool)
    repeat[1:] = np.all(rows[1:] == rows[:-1], axis=1)
    rows = rows[~repeat]
    return rows[:, 0], rows[:, 1]


def read_stage_labels(path: str | Path) -> Hypnogram:
    """``<id>_labeled_sleep.txt`` as stages per 30-s epoch from ``t = 0``."""
    path = Path(path)
    rows = _read_pairs(path, "t_seconds,stage")
    index = np.round(rows[:, 0] / EPOCH_SECONDS).astype(np.int64)
    if index[0] < 0 or np.any(np.diff(index) <= 0):
        raise RecordingError(f"{path}: epoch times must start at or after 0 and increase")
    stages: list[str | None] = [None] * int(index[-1] + 1)
    for (t, code), k in zip(rows, index):
        if code not in STAGE_CODES:
            raise RecordingError(f"{path}: unknown stage code {code:g} at t = {t:g} s "
                                 f"(known: {', '.join(str(c) for c in STAGE_CODES)})")
        stages[k] = STAGE_CODES[int(code)]
    return Hypnogram(epoch_seconds=EPOCH_SECONDS, stages=tuple(stages))


def labels_path(heart_rate_path: str | Path) -> Path:
    """Where the reference stages of a heart-rate file live in the sleep-accel layout."""
    path = Path(heart_rate_path)
    subject = path.name[: -len(SUFFIX)]
    return path.parent.parent / "labels" / f"{subject}_labeled_sleep.txt"


def read_walch_heart_rate(path: str | Path) -> Recording:
    """A ``<id>_heartrate.txt`` as a recording of the PSG night with one ``hr`` channel (bpm at
    irregular times), plus reference stages when the labels file is beside it."""
    path = Path(path)
    if not path.name.endswith(SUFFIX):
        raise RecordingError(f"{path}: a Walch heart-rate file is named <id>{SUFFIX}")
    if not path.exists():
        raise RecordingError(f"{path}: recording not found")
    times, bpm = read_heart_rate(path)
    night = times >= 0.0
    if not night.any():
        raise RecordingError(f"{path}: no heart-rate reading at or after the PSG start (t = 0)")
    recording = Recording(path=str(path), hr={"hr": HRTrack(times=times[night], bpm=bpm[night])})
    labels = labels_path(path)
    if labels.exists():
        recording.hypnogram = read_stage_labels(labels)
    return recording
