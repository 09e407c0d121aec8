"""Sleep-EDF Expanded (PhysioNet ``sleep-edfx``): a PSG EDF per night and its hypnogram EDF+.

Files: ``SC4ssNE0-PSG.edf`` with ``SC4ssNx-Hypnogram.edf`` (the cassette study: subject ``ss``, night ``N``,
``x`` the scorer's letter) and ``ST7ssNJ0-PSG.edf`` with ``ST7ssNxx-Hypnogram.edf`` (telemetry). The PSG has
EEG Fpz-Cz and Pz-Oz and horizontal EOG at 100 Hz, submental EMG (cassette: a 1-Hz envelope), respiration
and temperature. The hypnogram holds R&K annotations ("Sleep stage W/1/2/3/4/R/?", "Movement time") with
durations; edged's EDF reader turns them into epochs (stage 4 -> N3; ?/movement -> unscored).

The usual evaluation crop keeps 30 min before the first and after the last sleep epoch: the cassette nights
are ~20-h recordings that are mostly daytime wake otherwise.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edged.errors import RecordingError
from edged.sources.readers.edf import load_edf
from models.datasets import Night, classes_of, stage_labels

EPOCH_SECONDS = 30.0
CROP_MINUTES = 30.0
CHANNELS = ("EEG Fpz-Cz", "EEG Pz-Oz", "EOG horizontal", "EMG submental")
_NAME = re.compile(r"^(S[CT]\d)(\d\d)(\d)")


def subject_of(path: str | Path) -> tuple[str, int]:
    """``SC4ssN...`` -> (subject ``SC4ss``, night ``N``); the telemetry study ``ST7ssN`` likewise."""
    name = Path(path).name
    m = _NAME.match(name)
    if m is None:
        raise RecordingError(f"{path}: not a Sleep-EDF file name (expected SC4ssN... or ST7ssN...)")
    return m.group(1) + m.group(2), int(m.group(3))


def hypnogram_for(psg: str | Path) -> Path:
    """The hypnogram beside a PSG file: same first six characters (study, subject, night), any scorer."""
    psg = Path(psg)
    found = sorted(psg.parent.glob(f"{psg.name[:6]}*-Hypnogram.edf"))
    if len(found) != 1:
        what = "no" if not found else f"{len(found)} candidate"
        raise RecordingError(f"{psg}: {what} hypnogram files {psg.name[:6]}*-Hypnogram.edf beside it")
    return found[0]


def sleep_span(labels: np.ndarray, wake: int = 0) -> tuple[int, int] | None:
    """(first, last) index of scored non-wake epochs, None if there is no sleep."""
    asleep = np.flatnonzero((labels >= 0) & (labels != wake))
    return (int(asleep[0]), int(asleep[-1])) if asleep.size else None


def load_night(
    psg: str | Path,
    hypnogram: str | Path | None = None,
    *,
    channels: Sequence[str] | None = CHANNELS,
    scheme: str = "5-stage",
    crop_minutes: float | None = CROP_MINUTES,
) -> Night:
    """One night: ``channels`` of the PSG (all with None), epochs labelled by ``scheme``, cropped to
    ``crop_minutes`` before the first and after the last sleep epoch (None: the whole recording).

    Only epochs the PSG covers completely are kept. The hypnogram must start at the PSG's start, or a whole
    number of epochs after it (then the epochs before it are unscored)."""
    psg = Path(psg)
    subject, _ = subject_of(psg)
    hyp_path = Path(hypnogram) if hypnogram is not None else hypnogram_for(psg)
    recording = load_edf(psg).recording
    hyp = load_edf(hyp_path, epoch_seconds=EPOCH_SECONDS).recording
    if hyp.hypnogram is None:
        raise RecordingError(f"{hyp_path}: no 'Sleep stage ...' annotations: not a Sleep-EDF hypnogram")

    offset_epochs = 0
    if recording.start_time is not None and hyp.start_time is not None:
        offset = hyp.start_time - recording.start_time
        offset_epochs = round(offset / EPOCH_SECONDS)
        if abs(offset - offset_epochs * EPOCH_SECONDS) > 0.5 or offset_epochs < 0:
            raise RecordingError(
                f"{hyp_path}: starts {offset:+.1f} s from its PSG {psg.name}; expected 0 or a whole number of "
                f"{EPOCH_SECONDS:g}-s epochs after it"
            )
    stages = [None] * offset_epochs + list(hyp.hypnogram.stages)

    names = list(recording.signals) if channels is None else list(channels)
    missing = [c for c in names if c not in recording.signals]
    if missing:
        raise RecordingError(f"{psg}: no channel {missing[0]!r}; it has {', '.join(recording.signals)}")
    covered = int(min(len(recording.signals[c].data) / recording.signals[c].fs for c in names) // EPOCH_SECONDS)
    stages = (stages + [None] * covered)[:covered]  # the hypnogram often runs past the signals, or stops short
    labels = stage_labels(stages, scheme)

    first, last = 0, len(labels)
    if crop_minutes is not None:
        span = sleep_span(labels, wake=classes_of(scheme).index("W"))
        if span is None:
            raise RecordingError(f"{hyp_path}: no sleep epoch to crop around")
        margin = round(crop_minutes * 60.0 / EPOCH_SECONDS)
        first, last = max(0, span[0] - margin), min(len(labels), span[1] + 1 + margin)
    signals = {}
    for name in names:
        track = recording.signals[name]
        per = EPOCH_SECONDS * track.fs
        signals[name] = (track.fs, track.data[round(first * per) : round(last * per)])
    return Night(
        dataset="sleep-edf", subject=subject, record=psg.name.split("-")[0], labels=labels[first:last],
        classes=classes_of(scheme), scheme=scheme, epoch_seconds=EPOCH_SECONDS, signals=signals,
        start_seconds=first * EPOCH_SECONDS,
    )


def load_nights(directory: str | Path, **options) -> list[Night]:
    """Every ``*-PSG.edf`` in ``directory`` with its hypnogram, in file-name order."""
    directory = Path(directory)
    psgs = sorted(directory.glob("*-PSG.edf"))
    if not psgs:
        raise RecordingError(f"{directory}: no Sleep-EDF *-PSG.edf files")
    return [load_night(p, **options) for p in psgs]
