"""EEG per-epoch features (edged.dsp.eeg_features) against the data README's definitions, on real EEG, and
their causal context and streaming forms against their batch twins."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.signal

from edged.dsp.eeg_features import (
    BASE_NAMES,
    CausalContext,
    causal_context,
    epoch_features,
    feature_set,
)
from edged.dsp.resample import resample
from edged.pipeline import EpochFeatures
from edged.scoring.manifest import InputSpec
from edged.sources.base import ChannelSpec, Chunk, Gap
from edged.sources.readers.edf import read_edf

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
EXCERPTS = DATA / "eeg-sleep-excerpts"
SLEEPEDF = DATA / "eeg-features-sleepedf"
FSET = feature_set("sleepedf-eeg-v1")


def readme_features(epoch_volts: np.ndarray) -> list[float]:
    """The data README's sentence, written out the plain way, one epoch at a time (scipy defaults)."""
    f, p = scipy.signal.welch(epoch_volts, fs=100)
    band = {name: np.log(np.mean(p[(f >= lo) & (f <= hi)]) + 1e-10)
            for name, lo, hi in [("d", 0.5, 4), ("t", 4, 8), ("a", 8, 13), ("b", 13, 30), ("g", 30, 50)]}
    var = np.var(epoch_volts)
    return [band["d"], band["t"], band["a"], band["b"], band["g"],
            band["t"] / (band["a"] + 1e-10), band["a"] / (band["d"] + 1e-10),
            np.log(var + 1e-10), np.sqrt(np.var(np.diff(epoch_volts)) / var)]


@pytest.fixture(scope="module")
def excerpt1_volts() -> np.ndarray:
    """DREAMS excerpt 1: 30 min of real sleep EEG (C3-A2), recorded at 100 Hz, in volts."""
    track = read_edf(EXCERPTS / "excerpt1.prep.edf").signals["EEG C3-A2"]
    assert track.fs == 100.0 and track.units == "uV"
    return track.data * 1e-6


def test_features_follow_the_readme_on_real_eeg(excerpt1_volts):
    epochs = excerpt1_volts[: 60 * 3000].reshape(60, 3000)
    ours = epoch_features(epochs)
    assert ours.shape == (60, 9) and len(BASE_NAMES) == 9
    expected = np.array([readme_features(e) for e in epochs])
    np.testing.assert_allclose(ours, expected, rtol=1e-12, atol=0)


def test_features_of_a_real_n3_epoch_show_slow_waves():
    # YASA's 30-s N3 snippet at 100 Hz (microvolts): delta dominates, as deep sleep should.
    x = np.loadtxt(EXCERPTS / "data_N3_no-spindles_30sec_100Hz.txt") * 1e-6
    row = epoch_features(x)[0]
    np.testing.assert_allclose(row, readme_features(x), rtol=1e-12)
    named = dict(zip(BASE_NAMES, row))
    assert named["log_delta"] > named["log_theta"] > named["log_alpha"] > named["log_beta"]


def test_real_eeg_features_lie_on_the_datasets_scale(excerpt1_volts):
    """The same definitions on another real night (C3-A2, not Fpz-Cz) land inside the range the dataset's
    columns 0-8 take over all its sleep epochs; a unit slip (microvolts for volts) would be far outside."""
    ours = epoch_features(excerpt1_volts[: 60 * 3000].reshape(60, 3000))
    cols = []
    for f in sorted(SLEEPEDF.glob("SC4*.npz")):
        with np.load(f) as z:
            cols.append(z["X"][z["y"] > 0, :9])
    ref = np.concatenate(cols)
    median = np.median(ours, axis=0)
    lo, hi = ref.min(axis=0), ref.max(axis=0)
    assert np.all((median >= lo) & (median <= hi)), list(zip(BASE_NAMES, median, lo, hi))
    # and in the bulk of it, not at an edge, for the power features that carry most information
    p5, p95 = np.percentile(ref, [5, 95], axis=0)
    for i in (0, 1, 7):
        assert p5[i] <= median[i] <= p95[i], (BASE_NAMES[i], median[i], p5[i], p95[i])
    wrong_units = epoch_features(excerpt1_volts[:3000] * 1e6)[0]
    assert wrong_units[0] > hi[0] + 10


def test_flat_epoch_has_defined_features():
    row = epoch_features(np.zeros(3000))[0]
    assert np.all(np.isfinite(row))
    assert row[8] == 0.0  # Hjorth mobility of a flat line: undefined, stated as 0
    np.testing.assert_allclose(row[:5], np.log(1e-10))


def test_causal_context_by_hand():
    base = np.array([[1.0, 10.0], [3.0, 10.0], [2.0, 13.0], [6.0, 13.0]])
    out = causal_context(base, window=3)
    assert out.shape == (4, 10)
    np.testing.assert_allclose(out[:, :2], base)
    np.testing.assert_allclose(out[:, 2:4], [[0, 0], [2, 0], [-1, 3], [4, 0]])
    np.testing.assert_allclose(out[:, 4:6], [[1, 10], [2, 10], [2, 11], [11 / 3, 12]])
    np.testing.assert_allclose(out[:, 6:8], [[0, 0], [1, 0], [np.std([1, 3, 2]), np.std([10, 10, 13])],
                                             [np.std([3, 2, 6]), np.std([10, 13, 13])]])
    # departure from the running reference: the running mean while it is younger than the horizon ...
    np.testing.assert_allclose(out[:, 8:10], [[0, 0], [1, 0], [0, 2], [3, 1.5]])
    # ... then an exponential average with weight 1 / horizon
    np.testing.assert_allclose(causal_context(base, window=3, horizon=2)[:, 8], [0, 1, 0, 2])


def test_causal_context_never_looks_ahead():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(50, 9))
    changed = base.copy()
    changed[30:] += 5.0
    np.testing.assert_array_equal(causal_context(base)[:30], causal_context(changed)[:30])


@pytest.mark.parametrize("window,horizon", [(1, 120), (3, 120), (5, 7)])
@pytest.mark.parametrize("chunk", [1, 2, 5, 50])
def test_streaming_context_equals_batch(window, horizon, chunk):
    base = np.random.default_rng(1).normal(size=(50, 9)) - 22.0  # the scale of log band powers
    stream = CausalContext(9, window, horizon)
    out = np.concatenate([stream.push(base[i : i + chunk]) for i in range(0, len(base), chunk)])
    np.testing.assert_allclose(out, causal_context(base, window, horizon), rtol=0, atol=1e-10)


@pytest.mark.parametrize("chunk", [1, 3, 60])
def test_feature_stream_equals_batch_on_real_eeg(excerpt1_volts, chunk):
    epochs = excerpt1_volts[: 60 * 3000].reshape(60, 3000)
    stream = FSET.stream()
    out = np.concatenate([stream.push(epochs[i : i + chunk]) for i in range(0, 60, chunk)])
    batch = FSET.batch(epochs)
    assert batch.shape == (60, FSET.n_features) and len(FSET.names) == FSET.n_features == 45
    np.testing.assert_allclose(out, batch, rtol=0, atol=1e-9)
    np.testing.assert_allclose(batch[:, :9], epoch_features(epochs), rtol=1e-12)


def test_training_and_live_context_are_one_code_path():
    """The dataset's per-epoch columns go through the same context code as live features."""
    with np.load(SLEEPEDF / "SC4001E0.npz") as z:
        base = z["X"][:200, :9]
    rows = FSET.context_batch(base)
    stream = FSET.stream().context
    np.testing.assert_allclose(np.concatenate([stream.push(base[i : i + 7]) for i in range(0, 200, 7)]), rows,
                               atol=1e-9)


def _feature_input(channel: ChannelSpec) -> EpochFeatures:
    spec = InputSpec("fpz_cz", "fpz-cz", 100.0, "V", features=FSET.name, n_features=FSET.n_features)
    return EpochFeatures(spec, channel, 3000)


@pytest.mark.parametrize("seconds", [0.37, 7.0, None])
def test_live_feature_input_is_chunk_invariant_and_equals_batch(seconds):
    """A 200 Hz real recording in microvolts through the pipeline's feature input, in chunks: the same rows as
    resampling the whole signal to 100 Hz, converting to volts and computing the batch features."""
    track = read_edf(EXCERPTS / "excerpt2.prep.edf").signals["EEG C3-A2"]
    assert track.fs == 200.0
    x = track.data[: 20 * 6000]
    builder = _feature_input(ChannelSpec("C3-A2", "signal", track.fs, track.units))
    step = len(x) if seconds is None else int(seconds * track.fs)
    epochs = []
    for start in range(0, len(x), step):
        epochs += builder.push(Chunk("C3-A2", start, x[start : start + step], received=0.0))
    assert [e.index for e in epochs] == list(range(len(epochs)))
    resampled = resample(x, 200.0, 100.0).astype(np.float32).astype(np.float64) * 1e-6
    n = len(resampled) // 3000
    assert len(epochs) == n == 20
    expected = FSET.batch(resampled[: n * 3000].reshape(n, 3000)).astype(np.float32)
    np.testing.assert_allclose(np.stack([e.data for e in epochs]), expected, rtol=1e-6, atol=1e-6)
    assert all(builder.quality(e) == 1.0 for e in epochs)


def test_live_feature_input_marks_a_gap():
    track = read_edf(EXCERPTS / "excerpt1.prep.edf").signals["EEG C3-A2"]
    builder = _feature_input(ChannelSpec("C3-A2", "signal", track.fs, track.units))
    x = track.data
    epochs = builder.push(Chunk("C3-A2", 0, x[:4500], received=0.0))
    epochs += builder.push(Gap("C3-A2", 4500, 3000, 30.0, received=0.0))
    epochs += builder.push(Chunk("C3-A2", 7500, x[7500:12000], received=0.0))
    assert [e.index for e in epochs] == [0, 1, 2, 3]
    assert [builder.quality(e) for e in epochs] == [1.0, 0.5, 0.5, 1.0]
    assert all(np.all(np.isfinite(e.data)) for e in epochs)


def test_unknown_units_are_refused_by_name():
    from edged.errors import ConfigError

    with pytest.raises(ConfigError, match="'EEG'.*'counts'"):
        _feature_input(ChannelSpec("EEG", "signal", 250.0, "counts"))
