"""Cost of every shipped model: parameters, MACs per scored epoch, file size, int8 inference time per epoch
on one core, beside the published figures of the design it comes from.

    python benchmarks/models.py [--seconds S]

For each model in :mod:`models.registry` with a shipped manifest, measured in this run:

* parameters and MACs per scored epoch counted from the shipped ONNX graph itself (weights: every
  initialiser that is not a quantisation scale / zero point or a shape; MACs: Conv, ConvTranspose, Gemm,
  MatMul, LSTM and GRU nodes, with the tensor shapes of one batch-1 call). One call scores one epoch.
* the architecture's own count (``complexity()`` of its ``models/seed/<name>.py`` module, each form it
  defines: published, streaming, edge/lite; the IBI models' figures from their manifests) as a cross-check.
* file size, and the median wall time of one call with batch 1 (one epoch, recurrent state fed back) in
  onnxruntime with one intra-op and one inter-op thread, after a warm-up, repeated for ``--seconds``.

Published figures are those of the papers (../shared/research/models.md); FLOPs are 2 x MACs.
"""

from __future__ import annotations

import argparse
import importlib
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from models.registry import MODELS  # noqa: E402

# Design -> published (parameters, MACs per epoch, source); None where the paper gives none.
PUBLISHED = {
    "ulw-sleepnet": (13_337, 7.89e6 / 2, "ULW-SleepNet paper: 13.3 K parameters, 7.89 M FLOPs"),
    "masleepnet": (None, None, "MASleepNet paper: no parameter or FLOP count"),
    "watchsleepnet": (8.46e6, None, "WatchSleepNet: 8.46 M parameters (encoder ~4.2 M MAC/epoch + night-long head)"),
    "sleepvst": (1.44e6, None, "SleepVST: ~1.44 M parameters as instantiated (6 layers)"),
    "slumbernet": (5.34e6, 0.9e9, "SlumberNet: ~5.34 M parameters, ~0.9 G MAC per 4-s epoch"),
    "slumbernet-lite": (5.34e6, 0.9e9, "edge variant of SlumberNet (published: ~5.34 M parameters, ~0.9 GMAC)"),
    "ibi-slpdb": (8.46e6, None, "WatchSleepNet-inspired; WatchSleepNet itself: 8.46 M parameters"),
    "ibi-walch": (8.46e6, None, "WatchSleepNet-inspired; WatchSleepNet itself: 8.46 M parameters"),
    "eeg-sleepedf": (13_337, 7.89e6 / 2, "feature classifier; the raw-EEG design it competes with, ULW-SleepNet"),
}


# --------------------------------------------------------------------------------------- ONNX counting


def onnx_counts(path: Path, feeds: dict[str, np.ndarray]) -> tuple[int, int]:
    """(parameters, MACs of one call on ``feeds``) read from the graph. Tensor shapes come from running it
    once with every MAC node's tensors exposed as outputs, so recurrent caches and data-dependent reshapes
    need no static shape inference."""
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    not_weights = set()
    for node in graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"):
            not_weights.update(node.input[1:])  # scale, zero point
        if node.op_type in ("Reshape", "Expand", "Tile", "Slice", "Pad", "Resize", "ConstantOfShape", "Gather"):
            not_weights.update(node.input[1:])
    params = 0
    for init in graph.initializer:
        if init.name in not_weights:
            continue
        arr = numpy_helper.to_array(init)
        if arr.dtype.kind in "fiu" and arr.dtype != np.int64 and arr.size > 1:
            params += int(arr.size)

    mac_nodes = [n for n in graph.node if n.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul", "LSTM", "GRU")]
    initial = {i.name: list(i.dims) for i in graph.initializer}
    present = {o.name for o in graph.output}
    wanted = sorted({t for n in mac_nodes for t in [*n.input[:3], n.output[0]] if t and t not in initial} - present)
    graph.output.extend(onnx.ValueInfoProto(name=t) for t in wanted)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    shapes = {**initial, **{n: list(v.shape) for n, v in zip(names, sess.run(names, feeds))}}

    macs = 0
    for node in mac_nodes:
        op, shape = node.op_type, shapes.get
        if op in ("Conv", "ConvTranspose"):
            # Conv: each output element takes prod(w[1:]) = (C_in / groups) * kernel MACs; ConvTranspose: each
            # input element spreads into prod(w[1:]) = (C_out / groups) * kernel outputs.
            src = shape(node.input[0]) if op == "ConvTranspose" else shape(node.output[0])
            macs += int(np.prod(src)) * int(np.prod(shape(node.input[1])[1:]))
        elif op in ("Gemm", "MatMul"):
            a = shape(node.input[0])
            transposed = op == "Gemm" and any(at.name == "transA" and at.i for at in node.attribute)
            macs += int(np.prod(shape(node.output[0]))) * int(a[0] if transposed else a[-1])
        else:  # LSTM / GRU: gates x hidden x (input + hidden) per step, batch row and direction
            x = shape(node.input[0])
            macs += x[0] * x[1] * (int(np.prod(shape(node.input[1]))) + int(np.prod(shape(node.input[2]))))
    return params, macs


def call_feeds(model) -> dict[str, np.ndarray]:
    """Batch-1 inputs for one call: random signal windows, the manifest's initial recurrent state."""
    rng = np.random.default_rng(0)
    state_inputs = {s.input for s in model.manifest.state}
    feeds = {}
    for inp in model.session.get_inputs():
        if inp.name not in state_inputs:
            feeds[inp.name] = rng.normal(size=[1 if not isinstance(d, int) else d for d in inp.shape]).astype(np.float32)
    feeds.update(model.initial_state(1))
    return feeds


def time_per_call(model, seconds: float) -> float:
    """Median ms of one batch-1 call on one thread, recurrent state fed back as the daemon does."""
    feeds = {k: v for k, v in call_feeds(model).items() if k not in {s.input for s in model.manifest.state}}
    state = None
    for _ in range(5):
        _, state = model.run(feeds, state)
    times = []
    stop = time.perf_counter() + seconds
    while time.perf_counter() < stop or len(times) < 20:
        t0 = time.perf_counter()
        _, state = model.run(feeds, state)
        times.append(time.perf_counter() - t0)
    return 1000.0 * float(np.median(times))


def architecture_counts(name: str, manifest) -> dict[str, dict]:
    """The design's own counts: ``complexity()`` of its seed module (every form), or the manifest's."""
    for module in (MODELS[name], f"models.seed.{name.replace('-', '_')}", f"models.seed.{name.split('-')[0]}"):
        try:
            mod = importlib.import_module(module)
        except ImportError:
            continue
        if hasattr(mod, "complexity"):
            try:
                return mod.complexity()
            except Exception as exc:  # noqa: BLE001 - report, do not stop the table
                return {"error": {"note": f"{module}.complexity() failed: {exc}"}}
    training = manifest.training
    if "parameters" in training and "macs_per_scored_epoch" in training:
        return {"manifest": {"parameters": training["parameters"], "macs_per_epoch": training["macs_per_scored_epoch"]}}
    return {}


def _si(v: float | None) -> str:
    if v is None:
        return "-"
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(v) >= div:
            return f"{v / div:.3g} {unit}"
    return f"{v:.0f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=2.0, help="timing duration per model")
    args = ap.parse_args()
    from edged.errors import ModelError
    from edged.scoring.manifest import load_manifest
    from edged.scoring.session import OnnxModel
    from models.__main__ import shipped_manifest

    print(f"edged model costs: {platform.node()} {platform.machine()} {platform.processor() or ''}, "
          f"Python {platform.python_version()}, onnxruntime {__import__('onnxruntime').__version__}, 1 thread")
    print(f"\n{'model':16s} {'weights':9s} {'quantization':18s} {'params':>8s} {'MAC/epoch':>10s} "
          f"{'size':>9s} {'ms/epoch':>9s}   architecture's own count (form: params, MAC/epoch)")
    notes = []
    for name in sorted(MODELS):
        path, why = shipped_manifest(name)
        if path is None:
            print(f"{name:16s} not shipped: {why}")
            continue
        try:
            m = load_manifest(path)
        except ModelError as exc:
            print(f"{name:16s} manifest rejected: {exc}")
            continue
        model = OnnxModel(m, threads=1)
        params, macs = onnx_counts(m.onnx, call_feeds(model))
        ms = time_per_call(model, args.seconds)
        own = architecture_counts(name, m)
        own_text = "; ".join(f"{form}: {_si(c.get('parameters'))}, {_si(c.get('macs_per_epoch'))}" if "note" not in c
                             else c["note"] for form, c in own.items()) or "-"
        weights = "SYNTHETIC" if m.synthetic else "real"
        print(f"{name:16s} {weights:9s} {m.quantization:18s} {_si(params):>8s} {_si(macs):>10s} "
              f"{m.onnx.stat().st_size / 1024:7.1f} K {ms:9.3f}   {own_text}")
        pub = PUBLISHED.get(name)
        if pub is not None:
            notes.append(f"{name:16s} published: {_si(pub[0])} parameters, {_si(pub[1])} MAC/epoch -- {pub[2]}")
    print("\nPublished figures (MACs = FLOPs / 2 where the paper gives FLOPs):")
    for line in notes:
        print("  " + line)


if __name__ == "__main__":
    main()
