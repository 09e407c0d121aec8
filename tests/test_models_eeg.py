"""The EEG scorer (models/eeg): a training smoke run, PyTorch vs ONNX float vs int8 parity, and the shipped
model loaded through its manifest and scoring a real EEG recording in edged, streamed and in one pass."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edged.dsp.eeg_features import feature_set
from edged.dsp.resample import resample
from edged.errors import ModelError
from edged.pipeline import DevicePipeline
from edged.scoring.manifest import load_manifest
from edged.scoring.session import OnnxModel
from edged.sources.base import ChannelSpec, Chunk
from edged.sources.readers.edf import read_edf

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
SLEEPEDF = DATA / "eeg-features-sleepedf"
EXCERPT = DATA / "eeg-sleep-excerpts" / "excerpt2.prep.edf"  # 30 min of real sleep EEG, C3-A2 at 200 Hz
SHIPPED = ROOT / "models" / "shipped" / "eeg_sleepedf.json"
FSET = feature_set("sleepedf-eeg-v1")


def test_loader_subjects_crop_and_folds():
    from models.eeg.data import evaluation_crop, load_nights, loso_folds

    nights = load_nights(SLEEPEDF)
    assert len(nights) == 16 and sorted({n.subject for n in nights}) == [f"SC40{i}" for i in range(8)]
    folds = loso_folds(nights)
    assert [f.subject for f in folds] == sorted({n.subject for n in nights})
    for f in folds:
        assert {n.subject for n in f.test} == {f.subject} and f.subject not in {n.subject for n in f.train}
        assert len(f.train) + len(f.test) == 16
    y = np.array([0] * 100 + [2, 0, 3] + [0] * 100)
    crop = evaluation_crop(y)
    assert np.flatnonzero(crop)[[0, -1]].tolist() == [40, 162]
    n = nights[0]
    with np.load(SLEEPEDF / "SC4001E0.npz") as z:
        x, labels = z["X"], z["y"]
    sleep = np.flatnonzero(labels > 0)
    assert n.first_epoch == sleep[0] - 60 and n.n_epochs == sleep[-1] + 61 - n.first_epoch
    np.testing.assert_array_equal(n.labels, labels[n.first_epoch : sleep[-1] + 61])
    np.testing.assert_array_equal(n.base, x[n.first_epoch : sleep[-1] + 61, :18])
    feats = n.features()
    assert feats.shape == (n.n_epochs, 2, FSET.n_features)
    np.testing.assert_array_equal(feats[:, 1, :9], n.base[:, 9:18])  # Pz-Oz is the second channel
    np.testing.assert_array_equal(feats[:, 0], FSET.context_batch(n.base[:, :9]))


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """The CI smoke run: `python -m models train eeg-sleepedf --quick`, as a subprocess like a user runs it."""
    out = tmp_path_factory.mktemp("eeg-quick")
    proc = subprocess.run(
        [sys.executable, "-m", "models", "train", "eeg-sleepedf", "--data", str(SLEEPEDF), "--quick", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_quick_run_writes_a_loadable_model_and_card(quick_run):
    manifest = load_manifest(quick_run / "eeg_sleepedf.json")
    assert manifest.id.endswith("-quick-smoke") and not manifest.synthetic
    assert [i.features for i in manifest.inputs] == ["sleepedf-eeg-v1"] * 2
    model = OnnxModel(manifest)
    x = np.tile(FSET.missing_row().astype(np.float32), (3, manifest.context_epochs, 1))
    probs, _ = model.run({"fpz_cz": x, "pz_oz": x})
    assert probs.shape == (3, 5) and np.allclose(probs.sum(1), 1, atol=1e-5)
    card = (quick_run / "eeg-sleepedf.md").read_text()
    assert "SMOKE RUN" in card and "leave-one-subject-out" in card
    report = json.loads((quick_run / "work" / "eeg_sleepedf.report.json").read_text())
    assert len(report["evaluation"]["folds"]) == 3


def test_torch_onnx_float_and_int8_agree_on_real_windows(quick_run):
    from models.eeg import entry
    from models.eeg.data import load_nights, windows
    from models.eeg.train import predict

    model, arch = entry._load_float(quick_run / "work")
    night = load_nights(SLEEPEDF, ("SC4031E0",))[0]  # a subject the smoke run never saw
    x = windows(night.features(), arch.context)
    torch_p = predict(model, x)
    float_path = entry.export_float(model, quick_run / "parity.float.onnx", x[:2])
    float_p = entry.run_onnx(float_path, x)
    int8_p = entry.run_onnx(quick_run / "eeg_sleepedf.int8.onnx", x)
    np.testing.assert_allclose(float_p, torch_p, atol=1e-5)
    assert np.abs(int8_p - float_p).max() < 0.25  # a barely trained model: int8 close, not identical
    assert (int8_p.argmax(1) == float_p.argmax(1)).mean() > 0.9


def test_manifest_refuses_a_feature_input_at_the_wrong_rate(tmp_path):
    raw = json.loads(SHIPPED.read_text())
    raw["inputs"][0]["fs"] = 128.0
    (tmp_path / "m.json").write_text(json.dumps(raw))
    with pytest.raises(ModelError, match=r"inputs\[0\].*'fs' must be 100"):
        load_manifest(tmp_path / "m.json", verify_hash=False)
    raw["inputs"][0].update(fs=100.0, features="no-such-set")
    (tmp_path / "m.json").write_text(json.dumps(raw))
    with pytest.raises(ModelError, match="unknown feature set 'no-such-set'"):
        load_manifest(tmp_path / "m.json", verify_hash=False)


@pytest.fixture(scope="module")
def shipped() -> OnnxModel:
    return OnnxModel.load(SHIPPED)


@pytest.fixture(scope="module")
def excerpt():
    return read_edf(EXCERPT).signals["EEG C3-A2"]


def _stream(model: OnnxModel, track, seconds: float | None):
    """The excerpt through the device pipeline, C3-A2 feeding both model inputs (stated: the model was
    trained on Fpz-Cz and Pz-Oz; this recording has only C3-A2)."""
    channel = ChannelSpec("EEG C3-A2", "signal", track.fs, track.units)
    pipe = DevicePipeline("bed", [channel], model, anchor_time=1_700_000_000.0,
                          channel_map={"fpz-cz": "EEG C3-A2", "pz-oz": "EEG C3-A2"})
    step = len(track.data) if seconds is None else int(seconds * track.fs)
    scored = []
    for start in range(0, len(track.data), step):
        scored += pipe.push(Chunk("EEG C3-A2", start, track.data[start : start + step], received=0.0))
    return scored


def test_shipped_model_streamed_equals_one_pass(shipped, excerpt):
    """Epoch by epoch through edged (1-s and 13-s chunks) == the whole recording in one pass: resampled to
    100 Hz, batch features, windows padded as in training, one ONNX call."""
    from models.eeg.data import windows

    m = shipped.manifest
    resampled = resample(excerpt.data, excerpt.fs, 100.0).astype(np.float32).astype(np.float64) * 1e-6
    n = len(resampled) // 3000
    feats = FSET.batch(resampled[: n * 3000].reshape(n, 3000))
    x = windows(np.stack([feats, feats], axis=1), m.context_epochs)
    batch_probs, _ = shipped.run({"fpz_cz": x[:, 0], "pz_oz": x[:, 1]})
    for seconds in (1.0, 13.0):
        scored = _stream(shipped, excerpt, seconds)
        assert [e.index for e in scored] == list(range(n))
        probs = np.array([[e.probabilities[c] for c in m.classes] for e in scored])
        np.testing.assert_allclose(probs, batch_probs, atol=1e-4)


def test_shipped_model_scores_a_real_recording_plausibly(shipped, excerpt):
    scored = _stream(shipped, excerpt, 30.0)
    assert len(scored) == int(len(excerpt.data) / excerpt.fs // 30)  # one per epoch of the 30 min
    probs = np.array([list(e.probabilities.values()) for e in scored])
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    stages = [e.stage for e in scored]
    assert len(set(stages)) >= 2, stages  # a real 30-min sleep excerpt is not one stage throughout
    assert all(e.quality == 1.0 and e.model_id == shipped.manifest.id and not e.synthetic for e in scored)
    # DREAMS excerpts are scored sleep; a model that called most of it wake would be reading it wrongly
    assert sum(s != "W" for s in stages) > len(stages) / 2, stages


def test_edged_replay_scores_the_recording_with_the_shipped_model(tmp_path):
    out = tmp_path / "epochs.json"
    proc = subprocess.run(
        [sys.executable, "-m", "edged.cli", "replay", str(EXCERPT), "--model", str(SHIPPED),
         "--channel", "fpz-cz=EEG C3-A2", "--channel", "pz-oz=EEG C3-A2", "--chunk-seconds", "5", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    epochs = json.loads(out.read_text())
    assert len(epochs) == 60
    assert {e["stage"] for e in epochs} <= {"W", "N1", "N2", "N3", "REM"}
