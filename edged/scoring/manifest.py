"""Model manifests: the JSON file beside every ``.onnx`` that says what the model needs and what it is.

A manifest is the only thing the daemon knows about a model besides the ONNX graph, and the two are
checked against each other at load (:mod:`edged.scoring.session`). Format (schema 1)::

    {
      "schema": 1,
      "id": "ibi-slpdb-causal-v1",              # stable id, published with every stage
      "onnx": "ibi_slpdb_causal.int8.onnx",     # file name, relative to the manifest
      "sha256": "...",                          # of the .onnx file
      "description": "...",
      "classes": ["W", "NREM", "REM"],          # output order
      "epoch_seconds": 30.0,
      "context_epochs": 20,                     # past epochs the model sees, INCLUDING the scored one
      "lookahead_epochs": 0,                    # future epochs needed before an epoch is scored
      "inputs": [                               # one per ONNX input that carries signal
        {"name": "ibi", "signal": "ibi", "fs": 25.0, "units": "s", "missing_value": 0.0}
      ],
      "state": [],                              # recurrent state carried between epochs:
                                                # [{"input": "h_in", "output": "h_out", "shape": [1, 64]}]
      "output": "probabilities",                # ONNX output holding class probabilities (batch, classes)
      "quantization": "int8-static",            # or "float32", "int8-dynamic"; parts left float are named
      "synthetic": false,                       # true when the weights were trained on generated signals
      "training": {"data": "...", "subjects": 13, "command": "python -m models train ..."},
      "metrics": {"protocol": "leave-one-subject-out ...", "kappa": 0.0, ...}
    }

Each signal input has the ONNX shape ``(batch, 1, context_epochs * epoch_seconds * fs)``: the last
``context_epochs`` epochs of that signal, oldest first, the scored epoch last.

``signal`` names what the input carries, which tells the pipeline how to build it:
``ibi`` (sample-and-hold inter-beat intervals, from an ``rr`` channel or from detected beats) or the name
of a raw channel (``eeg``, ``emg``, ``ecg``, ``resp`` ...) to be filtered and resampled to ``fs``.

Feature inputs. An input that also names a feature set, ``"features": "sleepedf-eeg-v1"`` (one of
:data:`edged.dsp.eeg_features.FEATURE_SETS`), carries per-epoch feature vectors computed by edged from the
raw channel (resampled to ``fs``, converted to ``units``) instead of the samples themselves. Its ONNX shape
is ``(batch, context_epochs, n_features)``: one row per epoch, oldest first, the scored epoch last, rows
before the stream began being the feature set's missing row. ``fs``, ``units`` and ``epoch_seconds`` must
be the feature set's own, and ``band`` must be absent (the features are defined on the unfiltered signal)::

    {"name": "fpz_cz", "signal": "fpz-cz", "fs": 100.0, "units": "V", "features": "sleepedf-eeg-v1"}
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from edged.errors import ModelError

SCHEMA_VERSION = 1
QUANTIZATIONS = ("float32", "int8-static", "int8-dynamic", "int8-static+float")


@dataclass(frozen=True, slots=True)
class InputSpec:
    name: str
    signal: str
    fs: float
    units: str
    missing_value: float = 0.0
    # Optional causal band-pass applied before resampling, in Hz: (low, high); None for no filter.
    band: tuple[float, float] | None = None
    # Feature inputs: the feature set's name and its values per epoch (None for a signal input).
    features: str | None = None
    n_features: int | None = None


@dataclass(frozen=True, slots=True)
class StateSpec:
    input: str
    output: str
    shape: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Manifest:
    path: Path
    id: str
    onnx: Path
    sha256: str
    description: str
    classes: tuple[str, ...]
    epoch_seconds: float
    context_epochs: int
    lookahead_epochs: int
    inputs: tuple[InputSpec, ...]
    state: tuple[StateSpec, ...]
    output: str
    quantization: str
    synthetic: bool
    training: dict
    metrics: dict

    def samples_per_epoch(self, spec: InputSpec) -> int:
        return round(self.epoch_seconds * spec.fs)

    def window_samples(self, spec: InputSpec) -> int:
        """Values in one input window (the ONNX input's size per batch item)."""
        if spec.n_features is not None:
            return self.context_epochs * spec.n_features
        return self.context_epochs * self.samples_per_epoch(spec)

    def input_shape(self, spec: InputSpec) -> tuple[int, ...]:
        """ONNX shape of one input window, without the batch axis."""
        if spec.n_features is not None:
            return (self.context_epochs, spec.n_features)
        return (1, self.window_samples(spec))


def _require(raw: dict, key: str, kind: type | tuple[type, ...], where: str):
    if key not in raw:
        raise ModelError(f"{where}: missing key {key!r}")
    value = raw[key]
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise ModelError(f"{where}: {key!r} must be {getattr(kind, '__name__', kind)}, got {value!r}")
    return value


def load_manifest(path: str | Path, *, verify_hash: bool = True) -> Manifest:
    """Read and validate a manifest. Raises :class:`ModelError` naming the file and the field."""
    path = Path(path)
    where = str(path)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelError(f"{where}: model manifest not found") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"{where}: cannot read model manifest: {exc}") from None
    if not isinstance(raw, dict):
        raise ModelError(f"{where}: a manifest is a JSON object")
    schema = _require(raw, "schema", int, where)
    if schema != SCHEMA_VERSION:
        raise ModelError(f"{where}: manifest schema {schema} is not supported (this edged reads {SCHEMA_VERSION})")

    inputs = []
    for i, item in enumerate(_require(raw, "inputs", list, where)):
        w = f"{where}: inputs[{i}]"
        if not isinstance(item, dict):
            raise ModelError(f"{w}: must be an object")
        band = item.get("band")
        if band is not None and not (isinstance(band, list) and len(band) == 2):
            raise ModelError(f"{w}: 'band' must be [low_hz, high_hz] or absent")
        inputs.append(
            InputSpec(
                name=_require(item, "name", str, w),
                signal=_require(item, "signal", str, w),
                fs=float(_require(item, "fs", (int, float), w)),
                units=_require(item, "units", str, w),
                missing_value=float(item.get("missing_value", 0.0)),
                band=tuple(float(b) for b in band) if band else None,
                **_feature_fields(item, raw, w),
            )
        )
    if not inputs:
        raise ModelError(f"{where}: 'inputs' is empty")
    state = []
    for i, item in enumerate(raw.get("state", [])):
        w = f"{where}: state[{i}]"
        state.append(
            StateSpec(
                input=_require(item, "input", str, w),
                output=_require(item, "output", str, w),
                shape=tuple(int(d) for d in _require(item, "shape", list, w)),
            )
        )
    quantization = _require(raw, "quantization", str, where)
    if quantization not in QUANTIZATIONS:
        raise ModelError(f"{where}: 'quantization' must be one of {QUANTIZATIONS}, got {quantization!r}")
    classes = tuple(_require(raw, "classes", list, where))
    if len(classes) < 2 or not all(isinstance(c, str) for c in classes):
        raise ModelError(f"{where}: 'classes' must list at least two class names")

    onnx_path = path.parent / _require(raw, "onnx", str, where)
    sha256 = _require(raw, "sha256", str, where)
    if verify_hash:
        try:
            digest = hashlib.sha256(onnx_path.read_bytes()).hexdigest()
        except FileNotFoundError:
            raise ModelError(f"{where}: the ONNX file it names, {onnx_path}, does not exist") from None
        if digest != sha256:
            raise ModelError(
                f"{where}: {onnx_path.name} does not match its manifest (sha256 {digest[:12]}..., "
                f"manifest says {sha256[:12]}...): the model file was replaced without re-exporting"
            )

    manifest = Manifest(
        path=path,
        id=_require(raw, "id", str, where),
        onnx=onnx_path,
        sha256=sha256,
        description=raw.get("description", ""),
        classes=classes,
        epoch_seconds=float(_require(raw, "epoch_seconds", (int, float), where)),
        context_epochs=_require(raw, "context_epochs", int, where),
        lookahead_epochs=_require(raw, "lookahead_epochs", int, where),
        inputs=tuple(inputs),
        state=tuple(state),
        output=_require(raw, "output", str, where),
        quantization=quantization,
        synthetic=_require(raw, "synthetic", bool, where),
        training=raw.get("training", {}),
        metrics=raw.get("metrics", {}),
    )
    if manifest.context_epochs < 1 or manifest.lookahead_epochs < 0:
        raise ModelError(f"{where}: context_epochs must be >= 1 and lookahead_epochs >= 0")
    return manifest


def _feature_fields(item: dict, raw: dict, where: str) -> dict:
    """``features`` / ``n_features`` of an input, checked against the named feature set."""
    name = item.get("features")
    if name is None:
        return {}
    if not isinstance(name, str):
        raise ModelError(f"{where}: 'features' must be a feature set name, got {name!r}")
    # Imported here: scipy only loads for models that need it.
    from edged.dsp.eeg_features import feature_set

    try:
        fset = feature_set(name)
    except KeyError as exc:
        raise ModelError(f"{where}: {exc.args[0]}") from None
    problems = []
    if float(item.get("fs", 0)) != fset.fs:
        problems.append(f"'fs' must be {fset.fs:g} (the rate {name} is defined at)")
    if item.get("units") != fset.units:
        problems.append(f"'units' must be {fset.units!r}")
    if float(_require(raw, "epoch_seconds", (int, float), where.split(": inputs")[0])) != fset.epoch_seconds:
        problems.append(f"epoch_seconds must be {fset.epoch_seconds:g} for {name}")
    if item.get("band") is not None:
        problems.append(f"'band' must be absent: {name} is defined on the unfiltered signal")
    if problems:
        raise ModelError(f"{where}: " + "; ".join(problems))
    return {"features": name, "n_features": fset.n_features}


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
