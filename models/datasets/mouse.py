"""Mouse EEG/EMG with Wake/NREM/REM scoring: SlumberNet's data set and MiSleep's files.

SlumberNet (Jha et al. 2023, Zenodo 10.5281/zenodo.7899654), as its preprocessing reads it: pairs of
``<stem>-256Hz.txt`` (two whitespace-separated columns, EEG then EMG, one row per 1/256 s, no header) and
``<stem>...sco.txt`` (a header block, then one comma- or tab-separated row per 4-s epoch:
``date time, epoch number, stage, ...`` with stage ``W``, ``N`` (NREM), ``R`` (REM); anything else is an
artefact epoch, unscored here). Epoch ``k`` is rows ``k * 1024 .. (k + 1) * 1024`` of the signal file.

MiSleep (the ``mouse-eeg-emg`` files here): a MATLAB ``.mat`` holding a struct ``data`` with one field per
channel (``EEG_P``, ``EMG_DIFF``), ``sf`` (Hz per channel), ``channels`` and ``time``; and a state file
written by MiSleep's scorer: a header (``Sampling rate: 305``, ``Acquisition time: ...``) and under
``==========Sleep state==========`` one line per bout ``start clock, start s, 1, end clock, end s, 0, code,
name`` with code 1 NREM, 2 REM, 3 Wake (4 INIT = not scored), seconds inclusive. A 4-s epoch is labelled with
the state that covers all of its seconds; an epoch that spans a bout boundary is unscored.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from edged.errors import RecordingError
from models.datasets import Night, classes_of, stage_labels

EPOCH_SECONDS = 4.0
SLUMBERNET_FS = 256.0
SLUMBERNET_STAGES: dict[str, str | None] = {"W": "W", "N": "NREM", "R": "REM"}
MISLEEP_STATES: dict[int, str | None] = {1: "NREM", 2: "REM", 3: "W", 4: None}
SCHEME = "mouse"


# ------------------------------------------------------------------------------------------ SlumberNet


def read_slumbernet_scores(path: str | Path) -> list[str | None]:
    """Stages per 4-s epoch of a SlumberNet ``*sco.txt`` file (None for artefact / unscored epochs)."""
    path = Path(path)
    try:
        lines = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        raise RecordingError(f"{path}: score file not found") from None
    stages: list[str | None] = []
    started = False
    for lineno, line in enumerate(lines, 1):
        fields = [f.strip() for f in re.split(r"[,\t]", line)]
        is_row = len(fields) >= 3 and fields[1].isdigit()
        if not is_row:
            if started and line.strip():
                raise RecordingError(f"{path}:{lineno}: expected 'date time, epoch, stage, ...', got {line.strip()!r}")
            continue  # the header block
        epoch = int(fields[1])
        if not started:
            base = epoch  # numbered from 1 (or 0)
            started = True
        if epoch != base + len(stages):
            raise RecordingError(f"{path}:{lineno}: epoch {epoch} out of sequence (expected {base + len(stages)})")
        stages.append(SLUMBERNET_STAGES.get(fields[2].upper()))
    if not stages:
        raise RecordingError(f"{path}: no scored epochs ('date time, epoch, stage' rows)")
    return stages


def read_slumbernet_signals(path: str | Path) -> np.ndarray:
    """(n, 2) EEG, EMG of a SlumberNet ``*-256Hz.txt`` file."""
    path = Path(path)
    try:
        data = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except FileNotFoundError:
        raise RecordingError(f"{path}: signal file not found") from None
    except ValueError as exc:
        raise RecordingError(f"{path}: expected two numeric columns (EEG EMG) per row: {exc}") from None
    if data.shape[1] != 2:
        raise RecordingError(f"{path}: {data.shape[1]} columns per row; expected 2 (EEG EMG)")
    return data


def scores_for(signal_file: Path) -> Path:
    stem = signal_file.name.removesuffix("-256Hz.txt")
    found = sorted(p for p in signal_file.parent.glob(f"{stem}*sco.txt"))
    if len(found) != 1:
        raise RecordingError(f"{signal_file}: {len(found)} score files {stem}*sco.txt beside it; expected 1")
    return found[0]


def load_slumbernet(signal_file: str | Path, scores: str | Path | None = None, *, mouse: str | None = None) -> Night:
    """One SlumberNet recording. ``mouse`` (the subject) defaults to the file stem: the public set does not
    name animals consistently, so pass it when grouping recordings by animal."""
    signal_file = Path(signal_file)
    if not signal_file.name.endswith("-256Hz.txt"):
        raise RecordingError(f"{signal_file}: not a SlumberNet signal file (<stem>-256Hz.txt)")
    scores = Path(scores) if scores is not None else scores_for(signal_file)
    stages = read_slumbernet_scores(scores)
    data = read_slumbernet_signals(signal_file)
    per_epoch = round(EPOCH_SECONDS * SLUMBERNET_FS)
    n = min(len(stages), len(data) // per_epoch)
    if n == 0:
        raise RecordingError(f"{signal_file}: shorter than one {EPOCH_SECONDS:g}-s epoch")
    stem = signal_file.name.removesuffix("-256Hz.txt")
    return Night(
        dataset="slumbernet", subject=mouse or stem, record=stem, labels=stage_labels(stages[:n], SCHEME),
        classes=classes_of(SCHEME), scheme=SCHEME, epoch_seconds=EPOCH_SECONDS,
        signals={"eeg": (SLUMBERNET_FS, data[: n * per_epoch, 0]), "emg": (SLUMBERNET_FS, data[: n * per_epoch, 1])},
    )


# --------------------------------------------------------------------------------------------- MiSleep


def read_misleep_mat(path: str | Path) -> dict[str, tuple[float, np.ndarray]]:
    """Channels of a MiSleep ``.mat`` file: name -> (fs, samples)."""
    import scipy.io

    path = Path(path)
    try:
        mat = scipy.io.loadmat(path)
    except FileNotFoundError:
        raise RecordingError(f"{path}: recording not found") from None
    except (ValueError, TypeError, OSError) as exc:
        raise RecordingError(f"{path}: not a MATLAB .mat file: {exc}") from None
    if "data" not in mat or mat["data"].dtype.names is None:
        raise RecordingError(f"{path}: no struct 'data' (MiSleep layout: data.<channel>, data.sf, data.channels)")
    struct = mat["data"][0, 0]
    names = struct.dtype.names
    if "channels" not in names or "sf" not in names:
        raise RecordingError(f"{path}: struct 'data' has no 'channels' / 'sf' fields (it has {', '.join(names)})")
    channels = [str(c).strip() for c in np.ravel(struct["channels"])]
    rates = np.ravel(struct["sf"]).astype(np.float64)
    if len(rates) == 1:
        rates = np.repeat(rates, len(channels))
    if len(rates) != len(channels):
        raise RecordingError(f"{path}: {len(channels)} channels but {len(rates)} sampling rates")
    out = {}
    for name, fs in zip(channels, rates):
        if name not in names:
            raise RecordingError(f"{path}: channel {name!r} is listed but data.{name} is missing")
        out[name] = (float(fs), np.ravel(struct[name]).astype(np.float64))
    return out


def read_misleep_states(path: str | Path) -> tuple[list[str | None], float | None]:
    """Per-second states of a MiSleep state file (None where unscored) and its sampling rate."""
    path = Path(path)
    try:
        lines = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        raise RecordingError(f"{path}: state file not found") from None
    fs = None
    section = None
    seconds: list[str | None] = []
    for lineno, line in enumerate(lines, 1):
        text = line.strip()
        if text.startswith("=====") and text.endswith("====="):
            section = text.strip("=")
            continue
        if section is None and text.lower().startswith("sampling rate:"):
            try:
                fs = float(text.split(":", 1)[1])
            except ValueError:
                raise RecordingError(f"{path}:{lineno}: bad sampling rate {text!r}") from None
        if section != "Sleep state" or not text:
            continue
        fields = [f.strip() for f in text.split(",")]
        try:
            if len(fields) != 8:
                raise ValueError
            start, end, code = int(fields[1]), int(fields[4]), int(fields[6])
        except ValueError:
            raise RecordingError(
                f"{path}:{lineno}: expected 'start clock, start s, 1, end clock, end s, 0, code, name', got {text!r}"
            ) from None
        if code not in MISLEEP_STATES:
            raise RecordingError(f"{path}:{lineno}: state code {code} is not 1 NREM, 2 REM, 3 Wake or 4 INIT")
        if start != len(seconds) or end < start:
            raise RecordingError(f"{path}:{lineno}: bout {start}-{end} s does not follow the previous one "
                                 f"(which ended at {len(seconds) - 1} s)")
        seconds.extend([MISLEEP_STATES[code]] * (end - start + 1))
    if not seconds:
        raise RecordingError(f"{path}: no '==========Sleep state==========' bouts")
    return seconds, fs


def epochs_from_seconds(seconds: list[str | None], epoch_seconds: float = EPOCH_SECONDS) -> list[str | None]:
    """Whole epochs of per-second states: the state that covers every second of the epoch, else None."""
    per = int(epoch_seconds)
    out = []
    for k in range(len(seconds) // per):
        chunk = set(seconds[k * per : (k + 1) * per])
        out.append(chunk.pop() if len(chunk) == 1 else None)
    return out


def load_misleep(mat: str | Path, states: str | Path | None = None, *, mouse: str | None = None) -> Night:
    """A MiSleep recording, labelled from ``states`` when given (every epoch unscored otherwise)."""
    mat = Path(mat)
    signals = read_misleep_mat(mat)
    duration = min(len(x) / fs for fs, x in signals.values())
    n = int(duration // EPOCH_SECONDS)
    stages: list[str | None] = [None] * n
    if states is not None:
        seconds, fs = read_misleep_states(states)
        rates = {f for f, _ in signals.values()}
        if fs is not None and fs not in rates:
            raise RecordingError(f"{states}: scored at {fs:g} Hz but {mat.name} is sampled at {sorted(rates)} Hz: "
                                 "not the same recording")
        if len(seconds) > duration + 1.0:
            raise RecordingError(f"{states}: scores {len(seconds)} s but {mat.name} lasts {duration:.0f} s: "
                                 "not the same recording")
        stages = (epochs_from_seconds(seconds) + stages)[:n]
    return Night(
        dataset="misleep", subject=mouse or mat.stem, record=mat.stem, labels=stage_labels(stages, SCHEME),
        classes=classes_of(SCHEME), scheme=SCHEME, epoch_seconds=EPOCH_SECONDS,
        signals={name: (fs, x[: round(n * EPOCH_SECONDS * fs)]) for name, (fs, x) in signals.items()},
    )
