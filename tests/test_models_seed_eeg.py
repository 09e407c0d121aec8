"""ULW-SleepNet and MASleepNet (the four-channel PSG seed designs), their synthetic generator and their
shipped models.

Oracles: the published parameter count (ULW-SleepNet, 13.3 K); the streaming form scored epoch by epoch
against the same model over the whole sequence; PyTorch against the exported float graph against its int8
twin on generated nights; and the daemon's own path (an EDF written from the generator, replayed through
:class:`~edged.sources.replay.ReplaySource` into :class:`~edged.pipeline.DevicePipeline`) against the
training-side preprocessing + ONNX run over the same night.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edged.pipeline import DevicePipeline  # noqa: E402
from edged.scoring.manifest import load_manifest  # noqa: E402
from edged.scoring.session import OnnxModel  # noqa: E402
from edged.sinks.contract import stage_payload  # noqa: E402
from edged.sources.readers.edf import read_edf, write_edf  # noqa: E402
from edged.sources.replay import ReplaySource  # noqa: E402
from models.seed import recipe, synthetic_psg  # noqa: E402
from models.seed.masleepnet import MASleepNet, MASleepNetStreaming, PUBLISHED, STREAMING  # noqa: E402
from models.seed.ulw_entry import SLEEP_EDF_CHANNELS, preprocess, stack_nights, PsgNight  # noqa: E402
from models.seed.ulw_sleepnet import UlwSleepNet, UlwStreaming  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHIPPED = {"ulw-sleepnet": REPO / "models" / "shipped" / "ulw_sleepnet.json",
           "masleepnet": REPO / "models" / "shipped" / "masleepnet.json"}
STREAMING_MODELS = {"ulw-sleepnet": UlwStreaming, "masleepnet": MASleepNetStreaming}
torch.set_num_threads(1)  # CI shares two cores between test processes


@pytest.fixture(scope="module")
def night() -> PsgNight:
    """40 minutes of a generated night (80 epochs), preprocessed as for training."""
    n = synthetic_psg.generate(4242, n_epochs=80)
    return PsgNight("synthetic-4242", preprocess(n.signals), n.stages)


# ------------------------------------------------------------------------------------------- generator


def test_generator_is_deterministic_by_seed_and_seeds_differ() -> None:
    a, b, c = synthetic_psg.generate(7, 0.5), synthetic_psg.generate(7, 0.5), synthetic_psg.generate(8, 0.5)
    np.testing.assert_array_equal(a.signals, b.signals)
    np.testing.assert_array_equal(a.stages, b.stages)
    assert a.signals.shape == (4, 60 * 3000) and a.signals.dtype == np.float32
    assert not np.array_equal(a.signals, c.signals)


def test_generated_stages_carry_their_rhythms() -> None:
    """The generator's rules, measured: alpha on Pz-Oz in W, sigma (spindles) in N2, delta in N3, and EMG
    tone highest in W and lowest in REM."""
    from scipy.signal import welch

    n = synthetic_psg.generate(11, 5.0)
    epochs = n.epochs()
    assert set(np.unique(n.stages)) == set(range(5))
    shares = np.bincount(n.stages, minlength=5) / len(n.stages)
    assert shares[synthetic_psg.N2] == shares.max()  # N2 is the commonest stage of a night
    f, p = welch(epochs[:, :2], fs=100, nperseg=256, axis=-1)

    def band(stage: int, channel: int, lo: float, hi: float) -> float:
        return float(p[n.stages == stage, channel][:, (f >= lo) & (f < hi)].mean())

    W, N1, N2, N3, REM = range(5)
    assert band(W, 1, 8, 12) > 3 * max(band(s, 1, 8, 12) for s in (N2, N3))
    assert band(N2, 0, 11.5, 15) > 2 * band(REM, 0, 11.5, 15)
    assert band(N3, 0, 0.5, 2) > 4 * max(band(s, 0, 0.5, 2) for s in (W, N1, REM))
    emg = {s: float(epochs[n.stages == s, 3].std()) for s in range(5)}
    assert emg[W] == max(emg.values()) and emg[REM] == min(emg.values())
    # REM EOG has the rapid eye movements NREM lacks: larger fast deflections.
    eog_slope = {s: float(np.abs(np.diff(epochs[n.stages == s, 2], axis=-1)).mean()) for s in (N2, REM)}
    assert eog_slope[REM] > eog_slope[N2]


# --------------------------------------------------------------------------------------- architectures


def test_ulw_sleepnet_has_the_published_parameter_count() -> None:
    from models.seed.ulw_sleepnet import complexity

    assert sum(p.numel() for p in UlwSleepNet().parameters() if p.requires_grad) == 13_337
    c = complexity()
    assert c["published"]["parameters"] == c["streaming"]["parameters"] == 13_337
    # 7.89 M FLOPs published; multiply-accumulates of the convolutions and linear layers are about half.
    assert 0.8 * 7.89e6 < 2 * c["published"]["macs_per_epoch"] < 7.89e6
    x = torch.randn(3, 4, 3000)
    assert UlwSleepNet()(x).shape == (3, 5)


def test_ulw_streaming_form_computes_the_published_network() -> None:
    """One ONNX input per channel, a fixed gain per channel and the extractor called per channel: the same
    numbers as the published network on the four scaled channels stacked."""
    from models.seed.ulw_sleepnet import INPUT_GAIN

    torch.manual_seed(3)
    net = UlwSleepNet().eval()
    x = torch.randn(5, 4, 3000) * 40
    with torch.no_grad():
        published = net(x * torch.tensor(INPUT_GAIN).view(1, 4, 1))
        (streaming,) = UlwStreaming(net).eval()(*[x[:, None, i] for i in range(4)])
    np.testing.assert_allclose(streaming[:, 0].numpy(), published.numpy(), rtol=1e-5, atol=1e-5)


def test_masleepnet_published_form_is_bidirectional_and_cannot_stream() -> None:
    from models.seed.masleepnet import complexity

    assert PUBLISHED.bidirectional and not STREAMING.bidirectional
    with pytest.raises(ValueError, match="cannot stream"):
        MASleepNetStreaming(MASleepNet(PUBLISHED))
    c = complexity()
    assert c["published"]["macs_per_epoch"] > 5 * c["streaming"]["macs_per_epoch"] > 0
    # The published form really uses the future: changing the last epoch changes the first epoch's output.
    torch.manual_seed(0)
    net = MASleepNet(PUBLISHED).eval()
    x = torch.randn(1, 3, 4, 3000) * 30
    y = x.clone()
    y[0, 2] = torch.randn(4, 3000) * 30
    with torch.no_grad():
        assert not torch.allclose(net(x)[0, 0], net(y)[0, 0])


@pytest.mark.parametrize("name", sorted(STREAMING_MODELS))
def test_streaming_epoch_by_epoch_equals_the_whole_sequence_and_ignores_the_future(name, night) -> None:
    torch.manual_seed(1)
    model = STREAMING_MODELS[name]().eval()
    signals = [torch.from_numpy(c[:, :12]) for c in stack_nights([night])[0]]
    stepwise = recipe.stream_logits(model, signals)
    whole = recipe.sequence_logits(model, signals)
    np.testing.assert_allclose(stepwise.numpy(), whole.numpy(), rtol=1e-4, atol=1e-5)
    # Causal: replacing the last 3 epochs leaves every earlier output as it was.
    changed = [s.clone() for s in signals]
    for s in changed:
        s[:, 9:] = torch.randn_like(s[:, 9:]) * 50
    again = recipe.sequence_logits(model, changed)
    np.testing.assert_allclose(again[:, :9].numpy(), whole[:, :9].numpy(), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(again[:, 9:], whole[:, 9:])


@pytest.fixture(scope="module")
def unseen_night() -> PsgNight:
    """Two hours from a seed no training run uses (training: 100000 * seed + i, i < 1000 or 1000 + i)."""
    n = synthetic_psg.generate(777_777, 2.0)
    return PsgNight("synthetic-777777", preprocess(n.signals), n.stages)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(STREAMING_MODELS))
def test_pytorch_onnx_float_and_int8_agree_on_a_briefly_trained_model(name, unseen_night, tmp_path) -> None:
    """Small weights fitted for 15-30 steps on two generated nights (enough for class margins that mean
    something; random weights have none), exported, statically quantised as the training command's first
    variant does, then run on another generated night: PyTorch and ONNX float give the same probabilities
    epoch by epoch (state carried through the ONNX inputs and outputs), and int8 picks float's stage."""
    from models.seed.ulw_entry import QUANTIZATION_ATTEMPTS, class_weights, sampler

    train = []
    for seed in (10, 11):
        n = synthetic_psg.generate(seed, 1.5)
        train.append(PsgNight(str(seed), preprocess(n.signals), n.stages))
    torch.manual_seed(0)
    model = STREAMING_MODELS[name]()
    batch, crop, steps = (16, 1, 15) if name == "ulw-sleepnet" else (4, 10, 30)
    recipe.fit(model, sampler(train, batch, crop), recipe.Fit(steps=steps, lr=3e-3, warmup=2), seed=0,
               class_weight=class_weights(train))
    float_path = recipe.export_step(model, tmp_path / "f.onnx", [3000] * 4)
    calibration = [c[:, :32] for c in stack_nights(train)[0]]
    _, feeds = recipe.onnx_stream(float_path, model, calibration)
    flat = [{k: v[i:i + 1] for k, v in f.items()} for f in feeds for i in range(2)]
    batches = [{k: np.concatenate([x[k] for x in flat[i:i + 32]]) for k in flat[0]} for i in range(0, len(flat), 32)]
    method, op_types, _ = QUANTIZATION_ATTEMPTS[0]
    int8_path = recipe.quantize_static(float_path, tmp_path / "q.onnx", batches, op_types=op_types,
                                       calibrate_method=method)

    signals, _ = stack_nights([unseen_night])
    torch_probs = torch.softmax(recipe.sequence_logits(model, [torch.from_numpy(s) for s in signals]), -1).numpy()
    float_probs, _ = recipe.onnx_stream(float_path, model, signals)
    int8_probs, _ = recipe.onnx_stream(int8_path, model, signals)
    np.testing.assert_allclose(float_probs, torch_probs, atol=1e-5)
    pred = float_probs.argmax(-1)
    assert len(np.unique(pred)) >= 2, "a model answering one class everywhere would make agreement meaningless"
    same = pred == int8_probs.argmax(-1)
    # A briefly trained model has near-ties that any rounding flips; where float's stage leads by 0.1 or
    # more, int8 must pick it. (The shipped models' agreement over all epochs is measured by their training
    # run on 2160 held-out epochs and checked in the manifest test.)
    top2 = np.sort(float_probs, axis=-1)[..., -2:]
    clear = (top2[..., 1] - top2[..., 0]) >= 0.1
    print(f"{name}: int8 vs float argmax agreement {same.mean():.4f} on {same.size} unseen generated epochs, "
          f"{same[clear].mean():.4f} on the {clear.sum()} with a clear float stage")
    assert clear.mean() > 0.2
    assert same[clear].mean() >= 0.99
    assert same.mean() >= 0.9
    assert np.abs(int8_probs - float_probs).max() > 0  # really a different (quantised) graph


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_int8_model_recognises_an_unseen_generated_night(name, unseen_night) -> None:
    """Generator sanity (not accuracy): the shipped weights tell the synthetic stages apart far above
    chance (0.2) on a night none of the training runs generated."""
    m = load_manifest(SHIPPED[name])
    signals, labels = stack_nights([unseen_night])
    probs, _ = recipe.onnx_stream(m.onnx, STREAMING_MODELS[name](), signals)
    accuracy = float((probs.argmax(-1) == labels).mean())
    print(f"{name}: shipped int8 on {labels.size} unseen generated epochs: {accuracy:.3f} (generator sanity)")
    assert accuracy > 0.6


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_manifest_says_synthetic_and_matches_its_graph(name) -> None:
    m = load_manifest(SHIPPED[name])
    assert m.synthetic is True
    assert m.classes == synthetic_psg.CLASSES
    assert m.context_epochs == 1 and m.lookahead_epochs == 0
    assert [i.name for i in m.inputs] == ["fpz_cz", "pz_oz", "eog", "emg"]
    assert all(i.fs == 100.0 and i.units == "uV" and i.band is not None for i in m.inputs)
    assert m.quantization.startswith("int8-static")
    assert ("SYNTHETIC" in m.description) and "NOT AN ACCURACY" in m.metrics["protocol"]
    assert "kappa" not in m.metrics and "accuracy" not in m.metrics  # no synthetic figure posing as accuracy
    assert m.metrics["int8_vs_float"]["agreement"] >= 0.99
    if name == "masleepnet":
        assert [(s.input, s.output) for s in m.state] == [("lstm_h_in", "lstm_h_out"), ("lstm_c_in", "lstm_c_out")]
    else:
        assert m.state == ()
    OnnxModel(m)  # the daemon's loader checks the graph against the manifest
    card = (REPO / "models" / "cards" / f"{name}.md").read_text()
    assert "Synthetic weights" in card and "NOT accuracy" in card
    assert f"python -m models train {name} --data <Sleep-EDF dir>" in card


async def _replay_through_pipeline(path: Path, model: OnnxModel) -> list:
    source = ReplaySource("bed", path=path, speed=0.0, chunk_seconds=1.0)
    pipe = DevicePipeline("bed", source.channels(), model, anchor_time=1_700_000_000.0,
                          channel_map=SLEEP_EDF_CHANNELS)
    scored = []
    async for event in source.events():
        scored += pipe.push(event)
    return scored


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_edged_scores_a_replayed_synthetic_edf_like_training_does(name, night, tmp_path) -> None:
    """An EDF with the four Sleep-EDF channels, written from the generator and replayed in 1-s chunks: the
    daemon's pipeline (causal band-pass, epochs, state carried) gives what the training-side preprocessing
    and the ONNX graph give over the whole night, and every message says the model is synthetic."""
    gen_night = synthetic_psg.generate(4242, n_epochs=20)
    path = tmp_path / "synthetic.edf"
    write_edf(path, synthetic_psg.to_recording(gen_night))
    model = OnnxModel.load(SHIPPED[name])
    scored = asyncio.run(_replay_through_pipeline(path, model))
    assert [e.index for e in scored] == list(range(20))

    back = read_edf(path)  # the samples the replay sent (16-bit EDF quantisation included)
    raw = np.stack([back.signals[c].data for c in synthetic_psg.CHANNELS])
    batch = [x[None] for x in preprocess(raw)]
    twin, _ = recipe.onnx_stream(model.manifest.onnx, STREAMING_MODELS[name](), batch)
    live = np.array([[e.probabilities[c] for c in synthetic_psg.CLASSES] for e in scored])
    np.testing.assert_allclose(live, twin[0], atol=2e-5)

    for epoch in scored:
        payload = stage_payload(epoch, "node")
        assert payload["model"] == {"id": model.manifest.id, "synthetic": True}
        assert "synthetic" in payload["warning"].lower()


def test_training_reports_are_consistent_with_the_shipped_manifests() -> None:
    """The card and the manifest were written by the same run: wall time and agreement agree."""
    for name, path in SHIPPED.items():
        manifest = json.loads(path.read_text())
        card = (REPO / "models" / "cards" / f"{name}.md").read_text()
        assert f"Wall time {manifest['training']['wall_seconds']:.0f} s" in card
        agreement = 100 * manifest["metrics"]["int8_vs_float"]["agreement"]
        assert f"{agreement:.2f} %" in card


def _sleep_edf_directory(root: Path) -> Path:
    """A small directory in Sleep-EDF's layout and formats: per night a PSG EDF (EEG Fpz-Cz, EEG Pz-Oz, EOG
    horizontal at 100 Hz and a 1-Hz submental EMG envelope, as the cassette study has) and a hypnogram EDF+
    of R&K stage annotations, written from generated nights."""
    from edged.sources.recording import Hypnogram, Recording, SignalTrack

    root.mkdir()
    for k, subject in enumerate(("00", "01", "02")):
        n = synthetic_psg.generate(500 + k, 1.0)
        start = 1_700_000_000.0 + 86_400 * k
        emg_envelope = np.sqrt((n.signals[3].astype(np.float64).reshape(-1, 100) ** 2).mean(1))  # 1-Hz RMS
        signals = {name: SignalTrack(n.signals[i].astype(np.float64), 100.0, "uV")
                   for i, name in enumerate(synthetic_psg.CHANNELS[:3])}
        signals["EMG submental"] = SignalTrack(emg_envelope, 1.0, "uV")
        write_edf(root / f"SC4{subject}1E0-PSG.edf", Recording(path="", signals=signals, start_time=start))
        stages = tuple(synthetic_psg.CLASSES[s] for s in n.stages)
        write_edf(root / f"SC4{subject}1EC-Hypnogram.edf",
                  Recording(path="", hypnogram=Hypnogram(30.0, stages), start_time=start))
    return root


@pytest.mark.slow
def test_training_on_a_sleep_edf_directory_ships_a_real_data_manifest(tmp_path) -> None:
    """``train --data <Sleep-EDF dir>``: nights read by the Sleep-EDF loader, split by subject, and a manifest
    that is not synthetic, carries its held-out figures, and drops the EMG band the 1-Hz envelope cannot
    carry (edged then resamples that channel without filtering it, as training did)."""
    from models.seed import ulw_entry

    data = _sleep_edf_directory(tmp_path / "sleep-edf")
    out = tmp_path / "out"
    report = ulw_entry.train(data, out, quick=True, seed=0, work=tmp_path / "work", command="test")
    m = load_manifest(out / report["manifest"])
    assert m.synthetic is False and "Sleep-EDF" in m.training["data"]
    assert m.training["held_out_nights"] == ["SC4001E0"]  # quick: the first subject held out
    assert "SC4001E0" not in m.training["train_nights"]
    bands = {i.signal: i.band for i in m.inputs}
    assert bands["emg"] is None and bands["eeg_fpz_cz"] == (0.3, 35.0)
    assert isinstance(m.metrics["kappa"], (float, type(None))) and m.metrics["epochs"] > 0
    assert "held-out subjects" in m.metrics["protocol"]
    OnnxModel(m)
    card = (out / "ulw-sleepnet.md").read_text()
    assert "Synthetic weights" not in card and "Held-out subjects" in card
