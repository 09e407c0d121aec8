"""WatchSleepNet, SleepVST, SlumberNet and SlumberNet-lite: published sizes, streaming == whole sequence,
PyTorch vs ONNX float vs ONNX int8 after a real (smoke) training run, and the daemon scoring real
recordings with the shipped models through their manifests:

* WatchSleepNet (real slpdb weights) on the demo night slp61 replayed as a strap would send its RR;
* SleepVST (synthetic weights) on a real ECG + respiration recording (BIDMC 01, 125 Hz CSV);
* SlumberNet and SlumberNet-lite (synthetic weights) on 10 min of real mouse EEG/EMG (MiSleep's .mat,
  written to an NPZ here and replayed).

In each replay the live pipeline (edged's causal filters, resampler, IBI, state carried by the session)
must give what the training-side preprocessing and the ONNX graph give over the whole recording.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)  # the machine is shared; one thread is what training and edged use

from edged.dsp.ibi import sample_and_hold  # noqa: E402
from edged.pipeline import DevicePipeline  # noqa: E402
from edged.scoring.manifest import load_manifest  # noqa: E402
from edged.scoring.session import OnnxModel  # noqa: E402
from edged.sinks.contract import stage_payload  # noqa: E402
from edged.sources.readers import read_recording  # noqa: E402
from edged.sources.replay import ReplaySource  # noqa: E402
from models.seed import recipe  # noqa: E402
from models.seed import sleepvst, slumbernet, watchsleepnet  # noqa: E402
from models.seed import synthetic_cardiorespiratory as cardio  # noqa: E402
from models.seed import synthetic_mouse as mouse  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
SHIPPED = REPO / "models" / "shipped"
MANIFESTS = {
    "watchsleepnet": SHIPPED / "watchsleepnet_causal.json",
    "sleepvst": SHIPPED / "sleepvst_causal.json",
    "slumbernet": SHIPPED / "slumbernet.json",
    "slumbernet-lite": SHIPPED / "slumbernet_lite.json",
}
ANCHOR = 1_700_000_000.0


# ------------------------------------------------------------------------------------ architectures


def test_published_sizes_match_the_papers() -> None:
    wsn = watchsleepnet.complexity(nights_epochs=8)
    assert round(wsn["published"]["parameters"] / 1e6, 2) == 8.46  # WatchSleepNet: 8.46 M
    vst = sleepvst.complexity()
    assert 1.2e6 < vst["published"]["parameters"] < 1.5e6  # brief: ~1.44 M as instantiated
    slum = slumbernet.complexity()
    assert 0.85e9 < slum["published"]["macs_per_epoch"] < 0.95e9  # brief: ~0.9 GMAC per epoch
    assert slum["lite"]["macs_per_epoch"] * 100 < slum["published"]["macs_per_epoch"]
    for table in (wsn, vst, slum):
        for entry in table.values():
            assert entry["parameters"] > 0 and entry["macs_per_epoch"] > 0


def test_slumbernet_pair_conv_is_keras_same_conv2d() -> None:
    """The 1-D form of SlumberNet's (2, 8) convolution on a (time, 2) image equals Keras' padding='same'
    Conv2D (pad 0/1 in time, 3/4 across the two signals) computed the plain way."""
    torch.manual_seed(0)
    conv = slumbernet.PairConv(3, 4, 2, 8)
    x = torch.randn(2, 3, 20, 2)  # (batch, features, time, signal)
    reference = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (3, 4, 0, 1)), conv.weight, conv.bias)
    ours = conv(x.permute(0, 1, 3, 2).reshape(2, 6, 20)).reshape(2, 4, 2, 20).permute(0, 1, 3, 2)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["watchsleepnet", "sleepvst"])
def test_streaming_epoch_by_epoch_equals_the_whole_sequence(name) -> None:
    """Small attention windows (4 and 5 epochs) and 14 epochs, so the window slides and the caches roll."""
    from dataclasses import replace

    torch.manual_seed(1)
    if name == "watchsleepnet":
        model = watchsleepnet.WatchSleepNet(replace(watchsleepnet.EDGE, attention_window=4))
        signals = [torch.rand(2, 14, watchsleepnet.SAMPLES)]
    else:
        model = sleepvst.SleepVST(replace(sleepvst.EDGE, context=5))
        signals = [torch.randn(2, 14, sleepvst.ECG_SAMPLES), torch.randn(2, 14, sleepvst.RESP_SAMPLES)]
    whole = recipe.sequence_logits(model, signals)
    stream = recipe.stream_logits(model, signals)
    torch.testing.assert_close(stream, whole, atol=2e-5, rtol=1e-4)
    if name == "sleepvst":
        # The window is real: two causal layers of 5 epochs see 9 epochs back, so epoch 0 changes the first
        # output but not the last (epoch 13); with the band mask off it would.
        changed = [s.clone() for s in signals]
        changed[0][:, 0] = torch.randn_like(changed[0][:, 0])  # (an offset would vanish in the z-score)
        later = recipe.sequence_logits(model, changed)
        assert not torch.allclose(later[:, 0], whole[:, 0])
        torch.testing.assert_close(later[:, 13], whole[:, 13], atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------- smoke training + parity


@pytest.mark.parametrize("name", ["watchsleepnet", "sleepvst", "slumbernet-lite"])
def test_quick_training_exports_float_and_int8_that_agree(name, tmp_path) -> None:
    """`python -m models train <name> --quick` (generator data): PyTorch, ONNX float and ONNX int8 streamed
    epoch by epoch on generated recordings agree on >= 99 % of epochs; the manifest loads in edged."""
    import importlib

    from models.registry import MODELS

    entry = importlib.import_module(MODELS[name])
    report = entry.train(None, tmp_path, quick=True, seed=0, work=tmp_path / "work", command="test")
    parity = report["parity"]
    assert parity["torch_vs_float"] >= 0.99, parity
    assert parity["float_vs_int8"] >= 0.99, parity
    assert parity["quantized_ops"]["int8"].get("Conv", 0) > 0
    manifest = load_manifest(tmp_path / report["manifest"])
    assert manifest.synthetic is True  # no --data: trained on the generator
    OnnxModel(manifest)
    print(f"{name}: {parity['epochs']} epochs, torch/float {parity['torch_vs_float']}, float/int8 {parity['float_vs_int8']}")


def test_generators_are_deterministic_and_follow_their_rules() -> None:
    a, b = cardio.generate(7, hours=0.5), cardio.generate(7, hours=0.5)
    np.testing.assert_array_equal(a.ecg, b.ecg)
    np.testing.assert_array_equal(a.beats, b.beats)
    assert not np.array_equal(a.beats[:100], cardio.generate(8, hours=0.5).beats[:100])
    night = cardio.generate(3, hours=2.0)
    rr = np.diff(night.beats)
    stage = night.stages[(night.beats[1:] // 30).astype(int).clip(0, night.n_epochs - 1)]
    hr = {s: 60 / rr[stage == s].mean() for s in range(4)}
    assert hr[cardio.W] > hr[cardio.LIGHT] > hr[cardio.DEEP] and hr[cardio.REM] > hr[cardio.LIGHT]

    m1, m2 = mouse.generate(5, minutes=5), mouse.generate(5, minutes=5)
    np.testing.assert_array_equal(m1.eeg, m2.eeg)
    rec = mouse.generate(6, minutes=40)
    per = int(mouse.EPOCH_SECONDS * rec.fs)
    emg = rec.emg.reshape(-1, per).std(1)
    assert emg[rec.states == mouse.WAKE].mean() > emg[rec.states == mouse.NREM].mean() > emg[rec.states == mouse.REM].mean()
    spectrum = np.abs(np.fft.rfft(rec.eeg.reshape(-1, per), axis=1)) ** 2
    f = np.fft.rfftfreq(per, 1 / rec.fs)
    theta_delta = spectrum[:, (f >= 6) & (f < 9)].sum(1) / spectrum[:, (f >= 0.5) & (f < 4)].sum(1)
    assert theta_delta[rec.states == mouse.REM].mean() > 3 * theta_delta[rec.states == mouse.NREM].mean()


# ---------------------------------------------------------------- shipped models on real recordings


def _replay(path: Path, model: OnnxModel, channel_map: dict[str, str] | None = None, fs: float = 0.0) -> list:
    async def run():
        source = ReplaySource("dev", path=path, speed=0.0, chunk_seconds=1.0, fs=fs)
        pipe = DevicePipeline("dev", source.channels(), model, anchor_time=ANCHOR, channel_map=channel_map)
        scored = []
        async for event in source.events():
            scored += pipe.push(event)
        return scored

    return asyncio.run(run())


def _onnx_stream(model: OnnxModel, inputs: dict[str, np.ndarray]) -> np.ndarray:
    """The batch twin: whole-recording inputs (epochs, samples) through the graph, state carried."""
    state, out = model.initial_state(), []
    n = len(next(iter(inputs.values())))
    for k in range(n):
        p, state = model.run({name: x[k][None, None] for name, x in inputs.items()}, state)
        out.append(p[0])
    return np.array(out)


def _check_messages(scored, model: OnnxModel) -> None:
    for epoch in scored:
        payload = stage_payload(epoch, "node")
        assert payload["model"] == {"id": model.manifest.id, "synthetic": model.manifest.synthetic}
        if model.manifest.synthetic:
            assert "synthetic" in payload["warning"].lower()
        assert abs(sum(epoch.probabilities.values()) - 1.0) < 1e-4


def test_shipped_manifests_declare_state_quantisation_and_training() -> None:
    for name, path in MANIFESTS.items():
        m = load_manifest(path)
        OnnxModel(m)
        raw = json.loads(path.read_text())
        assert m.context_epochs == 1 and m.lookahead_epochs == 0
        assert m.quantization.startswith("int8-static") and "float32 ops" in raw["quantization_detail"]
        parity = raw["training"]["int8_parity"]
        assert parity["float_vs_int8"] >= 0.99 and parity["torch_vs_float"] >= 0.99, (name, parity)
        assert raw["training"]["wall_seconds"] > 0
        card = (REPO / "models" / "cards" / f"{name}.md").read_text()
        assert raw["id"] in card and f"{raw['training']['wall_seconds']:.0f} s" in card
        if name == "watchsleepnet":
            assert m.synthetic is False and [s.input for s in m.state][:5] == ["tcn0_in", "tcn1_in", "tcn2_in", "h_in", "c_in"]
            assert "leave-one-subject-out" in raw["metrics"]["protocol"]
        else:
            assert m.synthetic is True and "SYNTHETIC" in card and "NOT an accuracy" in card
        if name == "sleepvst":
            assert len(m.state) == 3 * raw["training"]["arch"]["layers"]


def test_watchsleepnet_scores_the_replayed_demo_night_like_training() -> None:
    """slp61 (never trained on) replayed as RR: the pipeline's IBI + the session's carried state equal the
    whole-night sample-and-hold streamed through the graph; agreement with the reference is reported."""
    path = REPO / "edged" / "data" / "demo" / "slp61.rr"
    model = OnnxModel.load(MANIFESTS["watchsleepnet"])
    scored = _replay(path, model)
    rec = read_recording(path)
    beats = rec.rr["rr"].beat_times()
    n = len(scored)
    ibi = sample_and_hold(beats, n * 750).reshape(n, 750)
    twin = _onnx_stream(model, {"ibi": ibi})
    live = np.array([[e.probabilities[c] for c in model.manifest.classes] for e in scored])
    np.testing.assert_allclose(live, twin, atol=2e-5)
    _check_messages(scored, model)
    stages = rec.hypnogram.stages[:n]
    ref = np.array([{"W": 0, "N1": 1, "N2": 1, "N3": 1, "REM": 2}.get(s, -1) if s else -1 for s in stages])
    pred = live.argmax(1)
    ok = ref >= 0
    print(f"watchsleepnet on slp61: {n} epochs, accuracy {np.mean(pred[ok] == ref[ok]):.3f}")
    assert n >= 700


def test_sleepvst_scores_a_real_ecg_and_respiration_recording() -> None:
    """BIDMC 01 (8 min, 125 Hz: ECG lead II and impedance respiration) replayed in 1-s chunks: the ECG
    channel becomes SleepVST's 10-Hz pulse wave and the RESP channel its 5-Hz breathing wave live, exactly
    as recipe.filtered_signal builds them for training."""
    path = DATA / "ecg-ppg-resp" / "bidmc_01_Signals.csv"
    model = OnnxModel.load(MANIFESTS["sleepvst"])
    scored = _replay(path, model, channel_map={"ecg": "II", "resp": "RESP"})
    assert [e.index for e in scored] == list(range(16))
    rec = read_recording(path)
    ecg, resp = rec.signals["II"], rec.signals["RESP"]
    inputs = {
        "ecg": recipe.epochs_of(recipe.filtered_signal(ecg.data, ecg.fs, sleepvst.ECG_FS, sleepvst.ECG_BAND), 300, 16),
        "resp": recipe.epochs_of(recipe.filtered_signal(resp.data, resp.fs, sleepvst.RESP_FS, (0.1, 1.0)), 150, 16),
    }
    twin = _onnx_stream(model, inputs)
    live = np.array([[e.probabilities[c] for c in model.manifest.classes] for e in scored])
    np.testing.assert_allclose(live, twin, atol=2e-5)
    _check_messages(scored, model)


@pytest.fixture(scope="module")
def mouse_npz(tmp_path_factory) -> Path:
    """The real 10-min MiSleep recording (EEG_P, EMG_DIFF at 305 Hz, mV) as an NPZ edged can replay."""
    from models.seed.slumbernet_entry import mouse_npz as write_npz

    return write_npz(tmp_path_factory.mktemp("mouse") / "mouse.npz")


@pytest.mark.parametrize("name", ["slumbernet-lite", "slumbernet"])
def test_slumbernet_scores_real_mouse_eeg_emg(name, mouse_npz) -> None:
    model = OnnxModel.load(MANIFESTS[name])
    rec = read_recording(mouse_npz)
    if name == "slumbernet":  # 0.9 GMAC per epoch: two minutes keep the test fast
        short = mouse_npz.with_name("mouse_2min.npz")
        fs = rec.signals["eeg"].fs
        np.savez(short, eeg=rec.signals["eeg"].data[: int(120 * fs)], emg=rec.signals["emg"].data[: int(120 * fs)], fs=fs)
        path, rec = short, read_recording(short)
    else:
        path = mouse_npz
    scored = _replay(path, model)
    n = int(rec.duration // 4)
    assert [e.index for e in scored] == list(range(n))
    inputs = {
        "eeg": recipe.epochs_of(recipe.filtered_signal(rec.signals["eeg"].data, rec.signals["eeg"].fs, 64.0, None), 256, n),
        "emg": recipe.epochs_of(recipe.filtered_signal(rec.signals["emg"].data, rec.signals["emg"].fs, 64.0,
                                                      slumbernet.EMG_BAND), 256, n),
    }
    twin = _onnx_stream(model, inputs)
    live = np.array([[e.probabilities[c] for c in model.manifest.classes] for e in scored])
    np.testing.assert_allclose(live, twin, atol=2e-5)
    _check_messages(scored, model)
    counts = {c: int(np.sum(live.argmax(1) == i)) for i, c in enumerate(model.manifest.classes)}
    print(f"{name} on the real 10-min mouse recording (synthetic weights): {counts}")
