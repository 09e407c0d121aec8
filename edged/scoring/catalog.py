"""Finding a model by id: the configured directories first, then the models shipped with edged.

The shipped models live in the ``models/shipped`` folder of the source tree (and of the installed
package). It is located without importing the ``models`` package, which holds training code the daemon
never loads.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from edged.errors import ModelError


def shipped_dir() -> Path | None:
    spec = importlib.util.find_spec("models")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "shipped"
        if candidate.is_dir():
            return candidate
    return None


def search_dirs(extra: list[Path] | None = None) -> list[Path]:
    dirs = list(extra or [])
    shipped = shipped_dir()
    if shipped is not None:
        dirs.append(shipped)
    return dirs


def available(extra: list[Path] | None = None) -> dict[str, Path]:
    """Model id -> manifest path, for every manifest in the search directories (first one wins)."""
    found: dict[str, Path] = {}
    for directory in search_dirs(extra):
        for manifest in sorted(Path(directory).glob("*.json")):
            try:
                model_id = json.loads(manifest.read_text()).get("id")
            except (OSError, json.JSONDecodeError, AttributeError):
                continue  # not a manifest; load_manifest reports real problems when one is chosen
            if isinstance(model_id, str):
                found.setdefault(model_id, manifest)
    return found


def resolve(ref: str, extra: list[Path] | None = None) -> Path:
    """A model reference from the config or command line: a manifest path, or a model id."""
    if ref.endswith(".json") or "/" in ref:
        path = Path(ref).expanduser()
        if not path.exists():
            raise ModelError(f"{path}: model manifest not found")
        return path
    models = available(extra)
    if ref not in models:
        known = ", ".join(sorted(models)) or "none found"
        raise ModelError(f"unknown model {ref!r} (available: {known})")
    return models[ref]
