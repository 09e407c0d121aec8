"""The device pipeline against its batch twin, on a real night of RR intervals and a real ECG."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edged.dsp.filters import design_bandpass
from edged.dsp.ibi import sample_and_hold
from edged.dsp.resample import resample
from edged.errors import ConfigError, ModelError
from edged.pipeline import DevicePipeline
from edged.scoring.session import OnnxModel
from edged.sources.base import ChannelSpec, Chunk, Gap
from edged.sources.readers.physionet_rr import read_physionet_rr
from onnx_factory import write_model

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SLP61 = DATA / "ibi-sleep-slpdb" / "slp61.rr"


@pytest.fixture(scope="module")
def night():
    return read_physionet_rr(SLP61).rr["rr"]


@pytest.fixture(scope="module")
def ibi_model(tmp_path_factory):
    return OnnxModel.load(write_model(tmp_path_factory.mktemp("m"), context_epochs=4))


def run_rr(model, track, chunk: int, n_intervals: int | None = None):
    rr = track.rr[:n_intervals]
    spec = ChannelSpec("rr", "rr", 0.0, "s", offset=track.first_beat)
    pipe = DevicePipeline("bed", [spec], model, anchor_time=1_000_000.0)
    scored = []
    for start in range(0, len(rr), chunk):
        scored += pipe.push(Chunk("rr", start, rr[start:start + chunk], received=0.0))
    return scored, pipe


def batch_twin(model, track, n_intervals: int | None = None):
    """The same night scored in one pass: whole-night sample-and-hold, then every window at once."""
    m = model.manifest
    beats = track.beat_times()[: None if n_intervals is None else n_intervals + 1]
    n_epochs = int(beats[-1] // m.epoch_seconds)
    per = round(m.epoch_seconds * 25)
    ibi = sample_and_hold(beats, n_epochs * per)
    padded = np.concatenate([np.zeros((m.context_epochs - 1) * per, np.float32), ibi])
    windows = np.stack([padded[k * per:(k + m.context_epochs) * per] for k in range(n_epochs)])
    probs, _ = model.run({"ibi": windows[:, None, :]})
    return probs, ibi.reshape(n_epochs, per)


@pytest.mark.parametrize("chunk", [1, 7, 64, None])
def test_rr_pipeline_is_chunk_invariant_and_equals_batch(night, ibi_model, chunk):
    n = 3000 if chunk == 1 else None  # ~45 min for one-interval chunks keeps the test quick
    scored, pipe = run_rr(ibi_model, night, chunk or len(night.rr), n)
    probs, ibi = batch_twin(ibi_model, night, n)
    assert [e.index for e in scored] == list(range(len(probs)))
    got = np.array([[e.probabilities[c] for c in ibi_model.manifest.classes] for e in scored])
    # Same float32 inputs through the same graph; batched and single inference may differ in the last bits.
    np.testing.assert_allclose(got, probs, rtol=1e-5, atol=1e-6)
    assert [e.stage for e in scored] == [ibi_model.manifest.classes[i] for i in probs.argmax(1)]
    quality = (ibi != 0).mean(axis=1)
    np.testing.assert_allclose([e.quality for e in scored], quality, atol=1e-4)
    for e, row in zip(scored, ibi):  # heart rate: the time-weighted mean of the epoch's valid intervals
        valid = row[row > 0]
        assert e.hr_bpm == (pytest.approx(60.0 / valid.mean(), rel=1e-5) if len(valid) else None)
    assert pipe.counters.epochs_scored == len(probs)


def test_epoch_times_follow_the_anchor(night, ibi_model):
    scored, _ = run_rr(ibi_model, night, 64, 400)
    first, second = scored[0], scored[1]
    assert first.start == 1_000_000.0 and first.end == 1_000_030.0
    assert second.start == first.end
    assert first.session == "1970-01-12T13:46:40.000+00:00"


def test_gap_in_rr_stream_closes_epochs_as_missing_and_flags_them(night, ibi_model):
    spec = ChannelSpec("rr", "rr", 0.0, "s")
    pipe = DevicePipeline("bed", [spec], ibi_model, anchor_time=0.0, quality_threshold=0.5)
    rr = night.rr[:200]  # about 3 min of beats
    scored = pipe.push(Chunk("rr", 0, rr, received=0.0))
    before = len(scored)
    # Five minutes of silence (a strap that lost contact), then beats again.
    scored += pipe.push(Gap("rr", 200, 0, 300.0))
    scored += pipe.push(Chunk("rr", 200, night.rr[200:400], received=0.0))
    silent = [e for e in scored[before:] if e.quality == 0.0]
    assert len(silent) >= 9  # 300 s of silence holds at least 9 whole 30-s epochs
    assert all(not e.quality_ok for e in silent)
    assert all(e.quality_ok for e in scored[:before])
    assert [e.index for e in scored] == list(range(len(scored)))


def test_silence_without_gap_marker_closes_epochs_via_advance(night, ibi_model):
    spec = ChannelSpec("rr", "rr", 0.0, "s")
    pipe = DevicePipeline("bed", [spec], ibi_model, anchor_time=0.0)
    scored = pipe.push(Chunk("rr", 0, night.rr[:100], received=0.0))
    last_beat = float(night.rr[:100].sum())
    scored += pipe.advance_to(last_beat + 120.0, received=0.0)
    assert scored[-1].end <= last_beat + 120.0 and scored[-1].end > last_beat + 80.0
    assert scored[-1].quality == 0.0


def test_raw_signal_path_filters_resamples_and_is_chunk_invariant(tmp_path):
    record = np.load(DATA / "ecg-mitbih" / "100.npz")
    ecg, fs = record["ecg_mV"][: int(360 * 150)].astype(np.float64), float(record["fs"])
    spec_in = {"name": "ecg", "signal": "ecg", "fs": 100.0, "units": "mV", "band": [0.5, 40.0]}
    model = OnnxModel.load(write_model(tmp_path, inputs=[spec_in], context_epochs=2))
    channel = ChannelSpec("ecg", "signal", fs, "mV")
    results = []
    for chunk in (7, 360, len(ecg)):
        pipe = DevicePipeline("ecg-dev", [channel], model, anchor_time=0.0)
        scored = []
        for start in range(0, len(ecg), chunk):
            scored += pipe.push(Chunk("ecg", start, ecg[start:start + chunk], received=0.0))
        results.append(np.array([list(e.probabilities.values()) for e in scored]))
    # 150 s of signal: five epochs (output j is emitted once input j*down/up arrives; the filter's group
    # delay shifts content, not emission).
    assert len(results[0]) == 5
    for other in results[1:]:
        np.testing.assert_array_equal(results[0], other)
    # The batch twin: sosfilt over the whole signal, batch resample, 30-s windows with zero padding.
    from scipy.signal import sosfilt

    y = resample(sosfilt(design_bandpass(0.5, 40.0, fs), ecg), fs, 100.0).astype(np.float32)
    padded = np.concatenate([np.zeros(3000, np.float32), y])
    windows = np.stack([padded[k * 3000:(k + 2) * 3000] for k in range(5)])
    probs, _ = model.run({"ecg": windows[:, None, :]})
    np.testing.assert_allclose(results[0], probs, rtol=1e-5, atol=1e-6)


def test_missing_channel_is_one_clear_error(tmp_path):
    model = OnnxModel.load(write_model(tmp_path))
    with pytest.raises(ConfigError) as info:
        DevicePipeline("bed", [ChannelSpec("PLETH", "signal", 125.0, "NU")], model, anchor_time=0.0)
    (line,) = info.value.problems
    assert "needs a 'ibi' channel" in line and "PLETH" in line


def test_onnx_that_does_not_match_its_manifest_is_refused(tmp_path):
    path = write_model(tmp_path, window_override=1234)  # graph expects 1234 samples, manifest implies 2250
    with pytest.raises(ModelError, match="does not match its manifest.*1234"):
        OnnxModel.load(path)


def test_replaced_onnx_file_is_caught_by_its_hash(tmp_path):
    path = write_model(tmp_path)
    other = write_model(tmp_path, model_id="other", seed=5)
    (tmp_path / "test-model.onnx").write_bytes((tmp_path / "other.onnx").read_bytes())
    with pytest.raises(ModelError, match="does not match its manifest"):
        OnnxModel.load(path)
    assert other.exists()


def test_manifest_with_wrong_output_name_is_refused(tmp_path):
    path = write_model(tmp_path)
    raw = json.loads(path.read_text())
    raw["output"] = "probs"
    path.write_text(json.dumps(raw))
    with pytest.raises(ModelError, match="no output named 'probs'"):
        OnnxModel.load(path)


def test_rr_chunks_with_clock_placed_beat_times_match_the_cumulative_form(night, ibi_model):
    """A live strap's chunks carry beat times from its clock model; with exact times the epochs equal
    the replay form that sums the intervals."""
    rr = night.rr[:1500]
    beats = night.first_beat + np.cumsum(rr)
    spec = ChannelSpec("rr", "rr", 0.0, "s", offset=night.first_beat)
    pipe = DevicePipeline("bed", [spec], ibi_model, anchor_time=0.0)
    timed = []
    for start in range(0, len(rr), 3):
        timed += pipe.push(Chunk("rr", start, rr[start:start + 3], received=0.0, times=beats[start:start + 3]))
    summed, _ = run_rr(ibi_model, night, 3, 1500)
    assert len(timed) == len(summed) > 40
    for a, b in zip(timed, summed):
        assert a.index == b.index and a.quality == b.quality
        for c in a.probabilities:
            assert a.probabilities[c] == pytest.approx(b.probabilities[c], abs=1e-6)


@pytest.mark.parametrize("chunk_seconds", [1.0, 7.0])
def test_ecg_to_ibi_path_equals_its_batch_twin_on_a_real_record(tmp_path, chunk_seconds):
    """Raw ECG (MIT-BIH 119, many PVCs) -> streaming detector -> causal correction -> IBI -> model, against
    the batch twins of each stage run over the whole record."""
    from edged.dsp.artefacts import correct_beats
    from edged.dsp.beats import detect_ecg_beats

    record = np.load(DATA / "ecg-mitbih" / "119.npz")
    ecg, fs = record["ecg_mV"][: int(360 * 600)].astype(np.float64), float(record["fs"])
    model = OnnxModel.load(write_model(tmp_path, context_epochs=3))
    channel = ChannelSpec("MLII", "signal", fs, "mV")
    pipe = DevicePipeline("ecg", [channel], model, anchor_time=0.0, channel_map={"ibi": "MLII"})
    step = int(chunk_seconds * fs)
    scored = []
    for start in range(0, len(ecg), step):
        scored += pipe.push(Chunk("MLII", start, ecg[start:start + step], received=0.0))

    beats = correct_beats(detect_ecg_beats(ecg, fs) / fs)
    n_epochs = len(scored)
    assert n_epochs >= 18  # 600 s of signal; the last epoch waits for beats after it
    ibi = sample_and_hold(beats, n_epochs * 750)
    padded = np.concatenate([np.zeros(2 * 750, np.float32), ibi])
    windows = np.stack([padded[k * 750:(k + 3) * 750] for k in range(n_epochs)])
    probs, _ = model.run({"ibi": windows[:, None, :]})
    got = np.array([[e.probabilities[c] for c in model.manifest.classes] for e in scored])
    np.testing.assert_allclose(got, probs, rtol=1e-5, atol=1e-6)
    quality = [e.quality for e in scored]
    assert min(quality) > 0.5  # a clean recording: good waveform and full IBI coverage throughout


def test_ecg_path_flags_a_flat_lined_stretch(tmp_path):
    record = np.load(DATA / "ecg-mitbih" / "100.npz")
    ecg = record["ecg_mV"][: 360 * 300].astype(np.float64).copy()
    ecg[360 * 120: 360 * 185] = ecg[360 * 120]  # electrode off for 65 s
    model = OnnxModel.load(write_model(tmp_path, context_epochs=2))
    pipe = DevicePipeline("ecg", [ChannelSpec("MLII", "signal", 360.0, "mV")], model, anchor_time=0.0,
                          channel_map={"ibi": "MLII"})
    scored = []
    for start in range(0, len(ecg), 360):
        scored += pipe.push(Chunk("MLII", start, ecg[start:start + 360], received=0.0))
    by_index = {e.index: e for e in scored}
    assert not by_index[4].quality_ok and by_index[4].quality < 0.2  # 120-150 s: flat throughout
    assert by_index[1].quality_ok and by_index[8].quality_ok
