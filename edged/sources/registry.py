"""Source backends by name, with each backend's typed options.

Options are declared here, not in the backend modules, so that validating a config never imports a
backend's dependencies (bleak, pyserial): a missing optional dependency fails when that backend is
started, with a message naming it, never at start-up of an unrelated device.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from edged.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Option:
    """One config key: its type, default (``REQUIRED`` when it has none) and what it means."""

    name: str
    type: type
    default: Any
    doc: str
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None


REQUIRED = object()


@dataclass(frozen=True, slots=True)
class Backend:
    name: str
    target: str  # "module:Class"
    doc: str
    options: tuple[Option, ...]

    def load(self) -> type:
        module_name, _, cls_name = self.target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ConfigError([f"source type {self.name!r} needs a package that is not installed: {exc}"]) from None
        return getattr(module, cls_name)


BACKENDS: dict[str, Backend] = {
    backend.name: backend
    for backend in (
        Backend(
            name="replay",
            target="edged.sources.replay:ReplaySource",
            doc="Streams a recording file (EDF/EDF+, WFDB, CSV, NPZ, PhysioNet .rr) as if a device sent it.",
            options=(
                Option("path", str, REQUIRED, "Recording file. Relative paths are relative to the config file."),
                Option("speed", float, 1.0, "Playback speed: 1 = real time, 60 = a minute per second, "
                       "0 = as fast as the pipeline goes.", minimum=0.0),
                Option("chunk_seconds", float, 1.0, "Signal per chunk, like a device's notification interval.",
                       minimum=0.001),
                Option("fs", float, 0.0, "Sample rate for CSV files without a time column (0 = from the file).",
                       minimum=0.0),
            ),
        ),
    )
}
