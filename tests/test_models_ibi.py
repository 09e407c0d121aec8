"""The shipped IBI model (models/shipped/ibi_slpdb_causal.*) and the training command that makes it.

The oracle is real data: record slp61 of the MIT-BIH Polysomnographic Database (bundled with edged as the
demo night, and held out from the shipped model's training), its beat times turned into model inputs by
the same ``sample_and_hold`` the daemon's streaming twin matches, scored against the real R&K stages.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from edged.dsp.ibi import sample_and_hold
from edged.scoring.manifest import load_manifest
from edged.scoring.session import OnnxModel
from edged.sources.readers.physionet_rr import read_physionet_rr

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "models" / "shipped" / "ibi_slpdb_causal.json"
SLP61 = REPO / "edged" / "data" / "demo" / "slp61.rr"
DATA = REPO.parent / "shared" / "data" / "ibi-sleep-slpdb"
if not DATA.exists():  # the checkout may live elsewhere; the data is always here on these machines
    DATA = Path("/work/shared/data/ibi-sleep-slpdb")

CLASS_OF = {"W": 0, "N1": 1, "N2": 1, "N3": 1, "REM": 2}


def _kappa(y: np.ndarray, p: np.ndarray, k: int = 3) -> float:
    """Cohen's kappa written out here, independently of models.metrics."""
    c = np.zeros((k, k))
    for a, b in zip(y, p):
        c[a, b] += 1
    n = c.sum()
    po = np.trace(c) / n
    pe = (c.sum(0) * c.sum(1)).sum() / n**2
    return (po - pe) / (1 - pe)


def _slp61_windows(context: int, fs: float) -> tuple[np.ndarray, np.ndarray]:
    """Every epoch of slp61 as the daemon feeds it: the last ``context`` epochs of sample-and-hold IBI,
    zeros before the record start; plus the reference class per epoch (-1 unscored)."""
    rec = read_physionet_rr(SLP61)
    stages = rec.hypnogram.stages
    per_epoch = round(30.0 * fs)
    ibi = sample_and_hold(rec.rr["rr"].beat_times(), len(stages) * per_epoch, fs=fs)
    padded = np.concatenate([np.zeros((context - 1) * per_epoch, np.float32), ibi])
    win = np.stack([padded[k * per_epoch : (k + context) * per_epoch] for k in range(len(stages))])[:, None, :]
    labels = np.array([CLASS_OF[s] if s is not None else -1 for s in stages])
    return win.astype(np.float32), labels


@pytest.fixture(scope="module")
def manifest():
    return load_manifest(SHIPPED)


def test_shipped_manifest_loads_and_matches_the_graph(manifest) -> None:
    assert manifest.id == "ibi-slpdb-causal-v1"
    assert manifest.synthetic is False
    assert manifest.classes == ("W", "NREM", "REM")
    assert manifest.lookahead_epochs == 0 and manifest.state == ()
    assert manifest.quantization.startswith("int8-static")
    assert manifest.onnx.name == "ibi_slpdb_causal.int8.onnx"
    (spec,) = manifest.inputs
    assert (spec.name, spec.signal, spec.fs, spec.units, spec.missing_value) == ("ibi", "ibi", 25.0, "s", 0.0)
    assert manifest.training["held_out"] == "slp61"
    assert "slp61" not in manifest.training["records"]
    assert manifest.training["subjects"] == 12 and len(manifest.training["records"]) == 14

    sess = ort.InferenceSession(str(manifest.onnx), providers=["CPUExecutionProvider"])
    (inp,) = sess.get_inputs()
    (out,) = sess.get_outputs()
    assert inp.name == "ibi" and inp.type == "tensor(float)"
    assert inp.shape[1:] == [1, manifest.window_samples(spec)]
    assert not isinstance(inp.shape[0], int)  # dynamic batch
    assert out.name == manifest.output == "probabilities"
    assert out.shape[1:] == [3]
    # And the daemon's own loader, which checks the graph against the manifest, accepts it.
    OnnxModel.load(SHIPPED)


def test_int8_model_scores_the_held_out_night_well_above_chance(manifest) -> None:
    (spec,) = manifest.inputs
    win, labels = _slp61_windows(manifest.context_epochs, spec.fs)
    probs, _ = OnnxModel(manifest).run({"ibi": win})
    assert probs.shape == (len(labels), 3)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-3)
    assert np.all(probs >= 0)
    pred = probs.argmax(1)
    scored = labels >= 0
    kappa = _kappa(labels[scored], pred[scored])
    assert kappa > 0.1, f"int8 model on slp61: kappa {kappa:.3f}"
    # All three classes are predicted somewhere in a night that has them all.
    assert set(np.unique(pred)) == {0, 1, 2}
    # The figures the manifest publishes for slp61 are the ones this graph gives (tolerance: int8 kernels
    # may round differently on another CPU).
    held = manifest.metrics["held_out"]["int8"]
    assert abs(kappa - held["kappa"]) < 0.02
    accuracy = float((pred[scored] == labels[scored]).mean())
    assert abs(accuracy - held["accuracy"]) < 0.01
    assert manifest.metrics["int8_vs_float"]["agreement"] >= 0.99


def test_a_window_is_scored_the_same_alone_or_in_a_batch(manifest) -> None:
    (spec,) = manifest.inputs
    win, _ = _slp61_windows(manifest.context_epochs, spec.fs)
    model = OnnxModel(manifest)
    picks = [0, 5, 300, len(win) - 1]
    batch, _ = model.run({"ibi": win[picks]})
    for row, k in zip(batch, picks):
        alone, _ = model.run({"ibi": win[k : k + 1]})
        np.testing.assert_allclose(alone[0], row, atol=1e-5)


@pytest.mark.slow
@pytest.mark.skipif(not DATA.exists(), reason="slpdb recordings not available")
def test_quick_training_run_exports_a_loadable_model(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "models", "train", "ibi-slpdb", "--data", str(DATA), "--out", str(out), "--quick"],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = load_manifest(out / "ibi_slpdb_causal.json")
    assert m.id.startswith("ibi-slpdb-causal") and m.synthetic is False
    assert m.training["held_out"] == "slp61" and "slp61" not in m.training["records"]
    model = OnnxModel(m)  # graph and manifest agree
    (spec,) = m.inputs
    probs, _ = model.run({"ibi": np.zeros((2, 1, m.window_samples(spec)), np.float32)})
    assert probs.shape == (2, 3)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-3)
    report = json.loads((out / "work" / "ibi_slpdb_causal.report.json").read_text())
    assert report["loso"]["pooled"]["epochs"] > 0
    assert (out / "ibi-slpdb.md").read_text().startswith("# Model card")
