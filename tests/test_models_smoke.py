"""A training smoke run of EVERY registered model, through the real command line.

``python -m models train <name> --quick`` must run the model's whole recipe on a tiny data set (its real
data set when it has one, else its synthetic generator) and leave an int8 ONNX file plus a manifest that
edged's own loader accepts and can score with. New models are picked up from :mod:`models.registry`
without touching this file.
"""

from __future__ import annotations

import importlib
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edged.scoring.manifest import load_manifest
from edged.scoring.session import OnnxModel
from models.registry import MODELS

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MODELS))
def test_quick_training_run_ships_an_int8_model_edged_loads(name: str, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    out = tmp_path / "out"
    t0, cpu0 = time.monotonic(), resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(
        [sys.executable, "-m", "models", "train", name, "--quick", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )
    seconds, cpu1 = time.monotonic() - t0, resource.getrusage(resource.RUSAGE_CHILDREN)
    assert proc.returncode == 0, f"{name}: exit {proc.returncode}\n{proc.stderr[-3000:]}"
    cpu = cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime
    print(f"{name}: quick training run {seconds:.1f} s wall, {cpu:.1f} s CPU")

    manifests = sorted(out.glob("*.json"))
    assert manifests, f"{name}: no manifest in {out} ({sorted(p.name for p in out.iterdir())})"
    for path in manifests:
        manifest = load_manifest(path)  # schema, fields and the ONNX file's sha256
        assert manifest.quantization.startswith("int8"), f"{path.name}: {manifest.quantization}"
        assert manifest.onnx.exists() and manifest.onnx.parent == out
        # A model with no data set behind it is trained on its generator and must say so.
        if getattr(importlib.import_module(MODELS[name]), "DATA", None) is None:
            assert manifest.synthetic is True, f"{name}: trained without data but not marked synthetic"

        model = OnnxModel(manifest)  # edged's loader: graph and manifest agree
        feeds = {}
        for inp in model.session.get_inputs():
            if inp.name in {s.input for s in manifest.state}:
                continue
            shape = [2 if not isinstance(d, int) else d for d in inp.shape]
            feeds[inp.name] = np.random.default_rng(0).normal(size=shape).astype(np.float32)
        probs, state = model.run(feeds)
        assert probs.shape == (2, len(manifest.classes))
        assert np.all(np.isfinite(probs))
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-3)
        assert set(state) == {s.input for s in manifest.state}


def test_list_names_every_registered_model_and_whether_its_weights_are_real() -> None:
    proc = subprocess.run([sys.executable, "-m", "models", "list"], cwd=REPO, capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {line.split()[0]: line for line in proc.stdout.splitlines()[1:] if line.strip()}
    assert set(rows) == set(MODELS)
    shipped = load_manifest(REPO / "models" / "shipped" / "ibi_slpdb_causal.json")
    assert "models/shipped/ibi_slpdb_causal.json" in rows["ibi-slpdb"] and " real " in rows["ibi-slpdb"]
    assert shipped.id in rows["ibi-slpdb"]
    for name, line in rows.items():  # a shipped synthetic model is never listed as real
        if "SYNTHETIC" not in line and " real " in line:
            path = line.split()[1]
            assert load_manifest(REPO / path).synthetic is False, name
