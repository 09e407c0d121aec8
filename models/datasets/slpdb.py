"""MIT-BIH Polysomnographic Database (PhysioNet ``slpdb``) as beat-by-beat RR with R&K stages.

Files (``ibi-sleep-slpdb/``): ``<rec>.rr`` beat intervals, ``<rec>.an`` one stage per 30 s, ``<rec>.hea``.
Parsing and the record -> subject rule (``slp01a``/``slp01b`` are halves of one night) are those of the
shipped IBI model (:mod:`models.ibi.data`), so every slpdb figure in the project uses the same subjects.
"""

from __future__ import annotations

from pathlib import Path

from edged.errors import RecordingError
from edged.sources.readers.physionet_rr import read_physionet_rr
from models.datasets import Night, classes_of, stage_labels
from models.ibi.data import subject_of

EPOCH_SECONDS = 30.0
HELD_OUT = "slp61"  # the demo night, never trained on by the shipped IBI model


def load_night(path: str | Path, *, scheme: str = "3-stage") -> Night:
    path = Path(path)
    rec = read_physionet_rr(path)
    if rec.hypnogram is None:
        raise RecordingError(f"{path}: no stage annotations ({path.with_suffix('.an').name}) beside it")
    return Night(
        dataset="slpdb", subject=subject_of(path.stem), record=path.stem,
        labels=stage_labels(rec.hypnogram.stages, scheme), classes=classes_of(scheme), scheme=scheme,
        epoch_seconds=rec.hypnogram.epoch_seconds, beats=rec.rr["rr"].beat_times(),
    )


def load_nights(directory: str | Path, *, exclude: tuple[str, ...] = (), scheme: str = "3-stage") -> list[Night]:
    """Every ``.rr`` record in ``directory`` except ``exclude``, in name order."""
    directory = Path(directory)
    paths = [p for p in sorted(directory.glob("*.rr")) if p.stem not in exclude]
    if not paths:
        raise RecordingError(f"{directory}: no .rr records")
    return [load_night(p, scheme=scheme) for p in paths]
