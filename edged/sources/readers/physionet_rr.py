"""PhysioNet beat-interval text (``rrlist`` output, e.g. the MIT-BIH Polysomnographic Database ``.rr``)
with its epoch annotations (``.an``) and WFDB header (``.hea``) beside it.

``.rr``: tab-separated ``start_time  start_beat_type  RR_seconds  end_beat_type  end_time``, times
``[h:]mm:ss.sss`` from the record start. The first line runs from the record start (type ``[0]``) to the
first beat and is not an interval between beats.
``.an``: a header line, then one line per 30-s epoch; the first token of the last tab-separated column is
the R&K stage (W, 1, 2, 3, 4, R, MT/M), further tokens are apnea/arousal events.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edged.errors import RecordingError
from edged.sources.recording import Hypnogram, Recording, RRTrack

RK_TO_STAGE = {"W": "W", "1": "N1", "2": "N2", "3": "N3", "4": "N3", "R": "REM"}


def _seconds(text: str) -> float:
    value = 0.0
    for part in text.strip().split(":"):
        value = value * 60.0 + float(part)
    return value


def read_rr_text(path: Path) -> RRTrack:
    rr: list[float] = []
    first_beat: float | None = None
    with open(path) as fh:
        for lineno, line in enumerate(fh, 1):
            fields = line.rstrip("\n").split("\t")
            if not line.strip():
                continue
            if len(fields) != 5:
                raise RecordingError(f"{path}:{lineno}: expected 5 tab-separated fields, got {len(fields)}")
            try:
                if fields[1].strip() == "[0]":
                    first_beat = _seconds(fields[4])
                    continue
                if first_beat is None:
                    first_beat = _seconds(fields[0])
                rr.append(float(fields[2]))
            except ValueError:
                raise RecordingError(f"{path}:{lineno}: not a number in {line.strip()!r}") from None
    if not rr:
        raise RecordingError(f"{path}: no beat intervals in the file")
    return RRTrack(rr=np.asarray(rr, dtype=np.float64), first_beat=float(first_beat or 0.0))


def _stamp(t: float) -> str:
    h, rem = divmod(t, 3600)
    m, s = divmod(rem, 60)
    return f"{int(h)}:{int(m):02d}:{s:06.3f}"


def write_rr_text(path: str | Path, rr: np.ndarray, first_beat: float = 0.0) -> Path:
    """Intervals (s) in the PhysioNet ``.rr`` text form :func:`read_rr_text` reads back (3 decimals, as
    PhysioNet's ``ann2rr`` writes them); ``first_beat`` is the time of the beat opening the first interval."""
    beats = first_beat + np.concatenate(([0.0], np.cumsum(rr)))
    lines = [f"{_stamp(0)}\t[0]\t{first_beat:.3f}\tN\t{_stamp(first_beat)}"]
    lines += [f"{_stamp(a)}\tN\t{r:.3f}\tN\t{_stamp(b)}" for a, r, b in zip(beats[:-1], rr, beats[1:])]
    Path(path).write_text("\n".join(lines) + "\n")
    return Path(path)


def read_epoch_annotations(path: Path, epoch_seconds: float = 30.0) -> Hypnogram:
    stages: list[str | None] = []
    lines = path.read_text().splitlines()
    for lineno, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        fields = line.split("\t")
        elapsed = _seconds(line.split()[0])
        index = int(round(elapsed / epoch_seconds))
        if index < len(stages):
            raise RecordingError(f"{path}:{lineno}: epoch at {elapsed:.0f} s is out of sequence")
        stages.extend([None] * (index - len(stages)))  # epochs before scoring began, or skipped: unscored
        tokens = fields[-1].split()
        stages.append(RK_TO_STAGE.get(tokens[0]) if tokens else None)
    return Hypnogram(epoch_seconds=epoch_seconds, stages=tuple(stages))


def read_physionet_rr(path: str | Path) -> Recording:
    """A ``.rr`` file as a recording with one ``rr`` channel, plus stages from a sibling ``.an``."""
    path = Path(path)
    if not path.exists():
        raise RecordingError(f"{path}: recording not found")
    recording = Recording(path=str(path), rr={"rr": read_rr_text(path)})
    annotations = path.with_suffix(".an")
    if annotations.exists():
        recording.hypnogram = read_epoch_annotations(annotations)
    return recording
