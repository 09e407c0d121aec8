"""Model files: float ONNX export, static int8 quantisation (QDQ, per-channel), running an ONNX file,
and writing the manifest the daemon validates (:mod:`edged.scoring.manifest`)."""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edged.scoring.manifest import file_sha256, load_manifest

log = logging.getLogger(__name__)

OPSET = 17


def export_onnx(model, path: str | Path, example: np.ndarray, *, input_name: str, output_name: str) -> Path:
    """Export ``model`` (a torch module in eval mode, one input, one output) with a dynamic batch axis."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model.eval()
    with torch.no_grad():
        torch.onnx.export(
            model,
            (torch.from_numpy(example),),
            str(path),
            input_names=[input_name],
            output_names=[output_name],
            dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}},
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,  # the TorchScript exporter: no onnxscript needed, plain opset-17 graph
        )
    import onnx

    onnx.checker.check_model(onnx.load(str(path)))
    return path


class _WindowReader:
    """onnxruntime calibration reader over real input windows, a batch at a time."""

    def __init__(self, input_name: str, windows: np.ndarray, batch: int = 32):
        self._batches = iter([{input_name: windows[i : i + batch]} for i in range(0, len(windows), batch)])

    def get_next(self):
        return next(self._batches, None)

    def rewind(self):  # pragma: no cover - only some calibrators call it
        raise NotImplementedError


def quantize_int8_static(
    float_path: str | Path,
    out_path: str | Path,
    calibration: np.ndarray,
    *,
    input_name: str,
    op_types: Sequence[str] | None = None,
    exclude_nodes: Sequence[str] = (),
    calibrate_method: str = "MinMax",
) -> Path:
    """Static int8 quantisation: QDQ format, per-channel int8 weights, uint8 activations with ranges from
    ``calibration`` (real input windows). ``op_types`` limits which ops are quantised (None: onnxruntime's
    default set) and ``exclude_nodes`` names nodes kept out of it; whatever is not quantised stays float32."""
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out_path = Path(out_path)
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(float_path), str(pre), skip_symbolic_shape=True)
        quantize_static(
            str(pre),
            str(out_path),
            _WindowReader(input_name, calibration.astype(np.float32)),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,  # U8S8: onnxruntime's most optimised int8 path on x86 and ARM
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=list(op_types) if op_types else None,
            nodes_to_exclude=list(exclude_nodes) or None,
            calibrate_method=getattr(CalibrationMethod, calibrate_method),
            extra_options={"WeightSymmetric": True},
        )
    return out_path


def run_onnx(path: str | Path, inputs: np.ndarray, *, input_name: str, output_name: str, batch: int = 64) -> np.ndarray:
    """Outputs of an ONNX file for ``inputs`` (first axis = batch), single-threaded."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    outs = [sess.run([output_name], {input_name: inputs[i : i + batch]})[0] for i in range(0, len(inputs), batch)]
    return np.concatenate(outs, axis=0)


def quantized_op_summary(path: str | Path) -> dict:
    """Op types of a QDQ model by where they compute: ``int8`` when the op sits in a QDQ sandwich (every
    non-constant input arrives through a DequantizeLinear and every output feeds only QuantizeLinear), which
    onnxruntime runs as an int8 kernel; ``float`` otherwise."""
    import onnx

    graph = onnx.load(str(path)).graph
    constants = {i.name for i in graph.initializer}
    produced_by = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    constants |= {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    quantized: dict[str, int] = {}
    floating: dict[str, int] = {}
    for n in graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear", "Constant"):
            continue
        feeds = [i for i in n.input if i and i not in constants]
        is_q = (
            bool(feeds)
            and all((f := produced_by.get(i)) is not None and f.op_type == "DequantizeLinear" for i in feeds)
            and all(
                consumers.get(o) and all(c.op_type == "QuantizeLinear" for c in consumers[o]) for o in n.output
            )
        )
        bucket = quantized if is_q else floating
        bucket[n.op_type] = bucket.get(n.op_type, 0) + 1
    return {"int8": dict(sorted(quantized.items())), "float": dict(sorted(floating.items()))}


def write_manifest(path: str | Path, manifest: dict) -> Path:
    """Write ``manifest`` beside its ONNX file (``manifest['onnx']``, relative), filling in its sha256, and
    check that the daemon's loader accepts the result."""
    path = Path(path)
    manifest = dict(manifest)
    manifest["sha256"] = file_sha256(path.parent / manifest["onnx"])
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    load_manifest(path)
    return path
