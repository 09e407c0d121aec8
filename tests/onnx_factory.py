"""Small, real ONNX models and manifests for pipeline tests: a linear read-out of each input window's mean
and standard deviation, so the output depends on every sample of the window (a wrong window shows)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from edged.scoring.manifest import file_sha256


def write_model(
    directory: Path,
    *,
    model_id: str = "test-model",
    inputs: list[dict] | None = None,
    classes: tuple[str, ...] = ("W", "NREM", "REM"),
    epoch_seconds: float = 30.0,
    context_epochs: int = 3,
    lookahead_epochs: int = 0,
    synthetic: bool = False,
    window_override: int | None = None,
    seed: int = 0,
) -> Path:
    """Write ``<model_id>.onnx`` and ``<model_id>.json``; return the manifest path."""
    inputs = inputs or [{"name": "ibi", "signal": "ibi", "fs": 25.0, "units": "s", "missing_value": 0.0}]
    rng = np.random.default_rng(seed)
    nodes, graph_inputs, initializers, features = [], [], [], []
    for spec in inputs:
        window = window_override or round(context_epochs * epoch_seconds * spec["fs"])
        name = spec["name"]
        graph_inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", 1, window]))
        nodes.append(helper.make_node("Flatten", [name], [f"{name}_flat"], axis=1))
        nodes.append(helper.make_node("ReduceMean", [f"{name}_flat"], [f"{name}_mean"], axes=[1], keepdims=1))
        nodes.append(helper.make_node("Sub", [f"{name}_flat", f"{name}_mean"], [f"{name}_centred"]))
        nodes.append(helper.make_node("Mul", [f"{name}_centred", f"{name}_centred"], [f"{name}_sq"]))
        nodes.append(helper.make_node("ReduceMean", [f"{name}_sq"], [f"{name}_var"], axes=[1], keepdims=1))
        # A positional weighting makes the read-out sensitive to WHERE samples sit in the window.
        ramp = np.linspace(-1.0, 1.0, window, dtype=np.float32)[:, None]
        initializers.append(helper.make_tensor(f"{name}_ramp", TensorProto.FLOAT, [window, 1], ramp.ravel()))
        nodes.append(helper.make_node("MatMul", [f"{name}_flat", f"{name}_ramp"], [f"{name}_pos"]))
        features += [f"{name}_mean", f"{name}_var", f"{name}_pos"]
    nodes.append(helper.make_node("Concat", features, ["features"], axis=1))
    weights = rng.normal(size=(len(features), len(classes))).astype(np.float32) * 3
    initializers.append(helper.make_tensor("W", TensorProto.FLOAT, list(weights.shape), weights.ravel()))
    initializers.append(helper.make_tensor("B", TensorProto.FLOAT, [len(classes)], np.zeros(len(classes), np.float32)))
    nodes.append(helper.make_node("MatMul", ["features", "W"], ["logits_raw"]))
    nodes.append(helper.make_node("Add", ["logits_raw", "B"], ["logits"]))
    nodes.append(helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1))
    out = helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", len(classes)])
    graph = helper.make_graph(nodes, model_id, graph_inputs, [out], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx_path = directory / f"{model_id}.onnx"
    onnx.save(model, onnx_path)
    manifest = {
        "schema": 1, "id": model_id, "onnx": onnx_path.name, "sha256": file_sha256(onnx_path),
        "description": "test read-out", "classes": list(classes), "epoch_seconds": epoch_seconds,
        "context_epochs": context_epochs, "lookahead_epochs": lookahead_epochs, "inputs": inputs,
        "state": [], "output": "probabilities", "quantization": "float32", "synthetic": synthetic,
        "training": {"data": "none: a fixed random read-out for tests"}, "metrics": {},
    }
    manifest_path = directory / f"{model_id}.json"
    manifest_path.write_text(json.dumps(manifest, indent=1))
    return manifest_path
