"""``ibi-walch``: the Walch loader on the real files, the slpdb-to-watch conversion, parity of PyTorch, ONNX
float and ONNX int8, window form == night form, and edged scoring with the shipped model through its
manifest (a replayed Walch heart-rate file, and heart rate from the BLE heart-rate path)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
import torch  # the [train] extra, which CI installs: its absence is a broken set-up, not a skip

from edged.dsp.hr import hold_hr
from edged.pipeline import DevicePipeline
from edged.scoring.session import OnnxModel
from edged.sources.ble_replay import ReplayBackend
from edged.sources.ble_source import BleHeartRateSource, replay_transport
from edged.sources.readers import read_recording
from edged.sources.replay import ReplaySource
from models.datasets import walch as walch_dataset
from models.walch import entry
from models.walch.arch import ArchConfig, HrStager
from models.walch.data import slpdb_nights, walch_nights, watch_readings, windows
from models.walch.train import TrainConfig, fit, predict_night

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
WALCH = DATA / "hr-sleep-walch"
SLPDB = DATA / "ibi-sleep-slpdb"
SHIPPED = REPO / "models" / "shipped" / "ibi_walch_causal.json"
SUBJECT = "46343"


# ------------------------------------------------------------------------------------------- loader


def test_loader_reads_the_25_psg_nights_with_their_labels():
    subjects = walch_dataset.subjects(WALCH)
    assert len(subjects) == 25 and len(set(subjects)) == 25
    night = walch_dataset.load_night(WALCH, SUBJECT)
    raw = np.loadtxt(WALCH / "labels" / f"{SUBJECT}_labeled_sleep.txt", delimiter=",")
    expected = np.select([raw[:, 1] == 0, (raw[:, 1] >= 1) & (raw[:, 1] <= 4), raw[:, 1] == 5], [0, 1, 2], -1)
    np.testing.assert_array_equal(night.labels, expected)
    assert (night.labels == -1).any()  # this subject has unscored epochs: kept as -1, never trained on
    fs, held = night.signals["hr"]
    assert fs == 1.0 and len(held) == night.n_epochs * 30
    # Only the night: the readings from t = 0 to the end of the last labelled epoch, through hold_hr.
    hr = np.loadtxt(WALCH / "heart_rate" / f"{SUBJECT}_heartrate.txt", delimiter=",")
    inside = (hr[:, 0] >= 0) & (hr[:, 0] < night.n_epochs * 30)
    assert (hr[:, 0] < 0).sum() > 1000  # the days before are in the file ...
    np.testing.assert_array_equal(held, hold_hr(hr[inside, 0], hr[inside, 1], len(held)))  # ... and not here
    folds = walch_dataset.loso_folds(WALCH)
    assert [f[0] for f in folds] == subjects
    assert all(test not in train and len(train) == 24 for test, train in folds)


def test_watch_readings_of_slpdb_beats():
    beats = np.arange(0.0, 600.0, 0.8)  # 75 bpm
    times, bpm = watch_readings(beats, np.random.default_rng(0))
    gaps = np.diff(times)
    assert np.all(bpm == 75) and gaps.min() >= 2.0 and gaps.max() <= 8.0 and 4.0 < np.median(gaps) < 6.0
    nights = slpdb_nights(SLPDB, variants=2, seed=0, records=["slp61"])
    assert [n.name for n in nights] == ["slp61~0", "slp61~1"] and nights[0].subject == "slp61"
    assert not np.array_equal(nights[0].hr, nights[1].hr)  # two samplings of one night
    rec = read_recording(SLPDB / "slp61.rr")
    rr = rec.rr["rr"].rr
    ok = nights[0].hr > 0
    assert ok.mean() > 0.9
    # The held watch signal follows the beat intervals: the night's mean agrees within 2 %.
    assert abs(nights[0].hr[ok].mean() / rr[(rr > 0.3) & (rr < 2.0)].mean() - 1) < 0.02


# ------------------------------------------------------------------------------------------- parity


@pytest.fixture(scope="module")
def small_model() -> tuple[HrStager, list]:
    """A model briefly trained on three real nights (weights that separate classes, unlike random ones)."""
    torch.set_num_threads(1)
    nights = walch_nights(WALCH, ["46343", "3509524", "5132496"])
    model = fit(nights, entry.ARCH, TrainConfig(steps=150, crops_per_step=4, crop_epochs=96, warmup_steps=5), seed=0)
    return model, nights


def test_pytorch_onnx_float_and_int8_agree(small_model, tmp_path):
    model, nights = small_model
    night = nights[0]
    feeds = windows(night, model.cfg.context)
    with torch.no_grad():
        torch_window = model(torch.from_numpy(feeds["hr"]), torch.from_numpy(feeds["elapsed"])).numpy()
    torch_night = predict_night(model, night)
    np.testing.assert_allclose(torch_window, torch_night, atol=1e-5)  # window form == night form
    float_path = entry.export_float(model, tmp_path / "m.float.onnx")
    onnx_float = entry.run_onnx(float_path, feeds)
    np.testing.assert_allclose(onnx_float, torch_night, atol=1e-4)
    calib = entry.sample_windows(nights[1:], model.cfg.context, 128, 0)
    int8_path = entry.quantize_onnx(float_path, tmp_path / "m.int8.onnx", calib, [])
    onnx_int8 = entry.run_onnx(int8_path, feeds)
    agreement = (onnx_int8.argmax(1) == onnx_float.argmax(1)).mean()
    assert agreement >= 0.97 and np.abs(onnx_int8 - onnx_float).max() < 0.15, agreement
    assert len(set(onnx_float.argmax(1))) >= 2  # the model says more than one thing


def test_context_shorter_than_the_heads_reach_is_refused():
    with pytest.raises(ValueError, match="reach"):
        HrStager(ArchConfig(context=30))


# ------------------------------------------------------------------------------- the shipped model


@pytest.fixture(scope="module")
def shipped() -> OnnxModel:
    return OnnxModel.load(SHIPPED)


def _score(model: OnnxModel, source, channels) -> list:
    pipe = DevicePipeline("watch", channels, model, anchor_time=0.0)
    scored = []

    async def run():
        async for event in source.events():
            scored.extend(pipe.push(event))

    asyncio.run(run())
    return scored, pipe


def test_edged_scores_a_replayed_walch_night_epoch_by_epoch_as_the_whole_sequence(shipped):
    m = shipped.manifest
    assert m.id == "ibi-walch-causal-v1" and not m.synthetic
    assert [(i.name, i.signal) for i in m.inputs] == [("hr", "hr"), ("elapsed", "elapsed")]
    source = ReplaySource("watch", path=WALCH / "heart_rate" / f"{SUBJECT}_heartrate.txt", speed=0, chunk_seconds=7)
    scored, _ = _score(shipped, source, source.channels())
    night = walch_nights(WALCH, [SUBJECT])[0]
    n = min(len(scored), night.n_epochs)
    assert n >= night.n_epochs - 1 and [e.index for e in scored[:n]] == list(range(n))
    # The daemon, fed chunk by chunk, gives each epoch what the whole night's batch windows give.
    batch = entry.run_onnx(m.onnx, windows(night, m.context_epochs, np.arange(n)))
    live = np.array([[e.probabilities[c] for c in m.classes] for e in scored[:n]])
    # int8 kernels differ in the last bits between a batch of one and a batch of many: ~1e-4 at most.
    np.testing.assert_allclose(live, batch, atol=5e-4)
    np.testing.assert_array_equal(live.argmax(1), batch.argmax(1))
    assert all(e.hr_bpm is not None for e in scored[1:n])
    pred = np.array([m.classes.index(e.stage) for e in scored[:n]])
    scoredmask = night.labels[:n] >= 0
    assert (pred[scoredmask] == night.labels[:n][scoredmask]).mean() > 0.6  # a subject it was trained on


def test_heart_rate_from_the_ble_heart_rate_path_is_scored(shipped):
    """A BLE heart-rate device (a replayed slpdb night) feeds the model from its ``hr`` channel alone."""
    air = ReplayBackend.open(f"replay:{SLPDB / 'slp61.rr'}?speed=400&seed=2")
    source = BleHeartRateSource("watch", address=air.sensor.address, transport=replay_transport(air))
    pipe = DevicePipeline("watch", source.channels(), shipped, anchor_time=0.0)
    assert {b.channel.name for bs in pipe.by_channel.values() for b in bs} == {"hr"}
    scored = []

    async def run():
        gen = source.events()
        try:
            async with asyncio.timeout(30):
                async for event in gen:
                    if not hasattr(event, "channel"):
                        continue
                    scored.extend(pipe.push(event))
                    if len(scored) >= 6:
                        return
        finally:
            await gen.aclose()
            await source.close()

    asyncio.run(run())
    assert [e.index for e in scored] == list(range(len(scored))) and len(scored) >= 6
    assert all(e.quality_ok and 40 < e.hr_bpm < 120 for e in scored[:5])
    assert pipe.counters.ignored_events > 0  # the rr chunks: this model does not use them
