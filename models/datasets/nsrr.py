"""NSRR polysomnography (SHHS, MESA, and the other NSRR cohorts): EDF signals + NSRR XML annotations.

Files: ``shhs1-200001.edf`` with ``shhs1-200001-nsrr.xml`` (``polysomnography/edfs/`` and
``polysomnography/annotations-events-nsrr/``), ``mesa-sleep-0001.edf`` with ``mesa-sleep-0001-nsrr.xml``.
The XML is ``PSGAnnotation/ScoredEvents/ScoredEvent`` elements, each with ``EventType``, ``EventConcept``,
``Start`` and ``Duration`` (seconds from the EDF start). Stages are the events of type ``Stages|Stages``
whose concept is ``<name>|<code>``: 0 wake, 1-4 R&K stages 1-4 (4 -> N3), 5 REM, anything else (6 movement,
9 unscored) unscored. One event covers ``Duration / 30`` epochs.

Subjects: the cohort plus the NSRR id (``shhs-200001``), so a participant's SHHS1 and SHHS2 visits are one
subject in subject-wise folds.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

from edged.errors import RecordingError
from edged.sources.readers.edf import load_edf
from models.datasets import Night, classes_of, stage_labels

EPOCH_SECONDS = 30.0
STAGE_EVENT_TYPE = "Stages|Stages"
STAGE_CODES: dict[str, str | None] = {"0": "W", "1": "N1", "2": "N2", "3": "N3", "4": "N3", "5": "REM"}
# <cohort>[visit digit]-[words-]<nsrr id>: shhs1-200001, mesa-sleep-0001, cfs-visit5-800002
_NAME = re.compile(r"^([a-z]+)\d*-(?:[a-z0-9]+-)*?(\d+)$", re.IGNORECASE)


def subject_of(path: str | Path) -> str:
    """``shhs1-200001`` / ``shhs2-200001`` -> ``shhs-200001``; ``mesa-sleep-0001`` -> ``mesa-0001``."""
    stem = Path(path).name.removesuffix(".edf").removesuffix(".xml").removesuffix("-nsrr").removesuffix("-profusion")
    m = _NAME.match(stem)
    if m is None:
        raise RecordingError(f"{path}: not an NSRR file name (expected e.g. shhs1-200001 or mesa-sleep-0001)")
    return f"{m.group(1).lower()}-{m.group(2)}"


def read_stage_events(path: str | Path) -> list[tuple[float, float, str | None]]:
    """Every ``Stages|Stages`` event as (start s, duration s, canonical stage or None)."""
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except FileNotFoundError:
        raise RecordingError(f"{path}: annotation file not found") from None
    except ET.ParseError as exc:
        line, column = exc.position
        raise RecordingError(f"{path}:{line}:{column}: not well-formed XML: {exc.msg}") from None
    events = root.findall(".//ScoredEvent")
    if root.tag != "PSGAnnotation" and not events:
        raise RecordingError(f"{path}: not an NSRR annotation file (root <{root.tag}>, no ScoredEvent)")
    out = []
    for k, event in enumerate(events, 1):
        if (event.findtext("EventType") or "").strip() != STAGE_EVENT_TYPE:
            continue
        concept = (event.findtext("EventConcept") or "").strip()
        _, sep, code = concept.rpartition("|")
        if not sep:
            raise RecordingError(f"{path}: ScoredEvent {k}: stage concept {concept!r} is not '<name>|<code>'")
        try:
            start = float(event.findtext("Start") or "")
            duration = float(event.findtext("Duration") or "")
        except ValueError:
            raise RecordingError(
                f"{path}: ScoredEvent {k} ({concept}): Start {event.findtext('Start')!r} / Duration "
                f"{event.findtext('Duration')!r} are not numbers"
            ) from None
        if start < 0 or duration <= 0:
            raise RecordingError(f"{path}: ScoredEvent {k} ({concept}): start {start} s, duration {duration} s")
        out.append((start, duration, STAGE_CODES.get(code.strip())))
    if not out:
        raise RecordingError(f"{path}: no ScoredEvent of type {STAGE_EVENT_TYPE!r}: no sleep stages")
    return out


def stages_from_events(path: Path, events: list[tuple[float, float, str | None]]) -> list[str | None]:
    """One stage per 30-s epoch from the EDF start; epochs no event covers are unscored."""
    end = max(round((s + d) / EPOCH_SECONDS) for s, d, _ in events)
    stages: list[str | None] = [None] * end
    for start, duration, stage in events:
        first = start / EPOCH_SECONDS
        if abs(first - round(first)) > 1e-3 or abs(duration / EPOCH_SECONDS - round(duration / EPOCH_SECONDS)) > 1e-3:
            raise RecordingError(f"{path}: stage event at {start} s for {duration} s is not on the 30-s epoch grid")
        stages[round(first) : round((start + duration) / EPOCH_SECONDS)] = [stage] * round(duration / EPOCH_SECONDS)
    return stages


def annotations_for(edf: str | Path) -> Path:
    edf = Path(edf)
    stem = edf.name.removesuffix(".edf")
    for candidate in (edf.with_name(f"{stem}-nsrr.xml"),
                      edf.parent.parent / "annotations-events-nsrr" / f"{stem}-nsrr.xml"):
        if candidate.exists():
            return candidate
    raise RecordingError(f"{edf}: no {stem}-nsrr.xml beside it or in ../annotations-events-nsrr/")


def load_night(
    edf: str | Path,
    annotations: str | Path | None = None,
    *,
    channels: Sequence[str] | None = None,
    scheme: str = "5-stage",
) -> Night:
    """One NSRR night: ``channels`` of the EDF (all when None; SHHS calls the ECG ``ECG``, MESA ``EKG``),
    one label per 30-s epoch the signals cover completely."""
    edf = Path(edf)
    xml = Path(annotations) if annotations is not None else annotations_for(edf)
    stages = stages_from_events(xml, read_stage_events(xml))
    recording = load_edf(edf).recording
    names = list(recording.signals) if channels is None else list(channels)
    missing = [c for c in names if c not in recording.signals]
    if missing:
        raise RecordingError(f"{edf}: no channel {missing[0]!r}; it has {', '.join(recording.signals)}")
    if not names:
        raise RecordingError(f"{edf}: no signals")
    covered = int(min(len(recording.signals[c].data) / recording.signals[c].fs for c in names) // EPOCH_SECONDS)
    stages = (stages + [None] * covered)[:covered]
    return Night(
        dataset=subject_of(edf).split("-")[0], subject=subject_of(edf), record=edf.name.removesuffix(".edf"),
        labels=stage_labels(stages, scheme), classes=classes_of(scheme), scheme=scheme,
        epoch_seconds=EPOCH_SECONDS,
        signals={c: (recording.signals[c].fs, recording.signals[c].data) for c in names},
    )
