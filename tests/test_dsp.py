"""The DSP core: every stateful stage gives the same output whatever the chunking, equal to its batch twin.

Chunkings used throughout: sizes 1, 7, 64, the whole signal at once, and random cut points. Tolerances are
stated per test; almost everything is *exact* (``np.array_equal``), because each streaming stage performs
the very same floating-point operations, in the same order, as its batch twin:

* ``CausalFilter`` carries sosfilt's own recursion state, and sosfilt's C loop runs sample by sample;
* ``StreamingResampler`` calls ``upfirdn`` on a history that covers each kept output's whole support, and
  upfirdn sums each output's taps oldest-first, independently of where its input buffer starts;
* the ring buffer, epocher and IBI stages only move values.
"""

from __future__ import annotations

import math
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import signal

from edged.dsp.epocher import Epoch, Epocher
from edged.dsp.filters import CausalFilter, design_bandpass, design_highpass, design_lowpass
from edged.dsp.ibi import MAX_IBI, StreamingIbi, sample_and_hold
from edged.dsp.resample import StreamingResampler, rational_ratio, resample
from edged.dsp.ring import RingBuffer

ECG_100 = Path("/work/shared/data/ecg-mitbih/100.npz")
SIZES = [1, 7, 64, None]  # None: the whole signal in one chunk
RATIOS = [(360, 100), (250, 25), (128, 64), (130, 64), (100, 100), (25, 250)]
LIGHT = settings(max_examples=25, deadline=None)


def chunks(n: int, size: int | None) -> Iterator[slice]:
    size = size or max(n, 1)
    for i in range(0, n, size):
        yield slice(i, min(i + size, n))


def random_chunks(n: int, rng: np.random.Generator, max_size: int = 200) -> Iterator[slice]:
    """Random cut points, including empty chunks (a reader may deliver nothing)."""
    i = 0
    while i < n:
        k = int(rng.integers(0, max_size + 1))
        yield slice(i, min(i + k, n))
        i += k


def cutting(n: int, size: int | str | None, rng: np.random.Generator, max_size: int = 200) -> Iterator[slice]:
    """``size`` as in the parametrisations: an int, None (whole signal) or "random"."""
    if size == "random":
        return random_chunks(n, rng, max_size)
    assert not isinstance(size, str)
    return chunks(n, size)


def streamed(step: Callable[[np.ndarray], np.ndarray], x: np.ndarray, cuts: Iterator[slice]) -> np.ndarray:
    return np.concatenate([step(x[s]) for s in cuts])


@pytest.fixture(scope="module")
def ecg() -> tuple[np.ndarray, float]:
    with np.load(ECG_100) as d:
        return d["ecg_mV"].astype(np.float64), float(d["fs"])


# ---------------------------------------------------------------------------------------------- ring buffer


@pytest.mark.parametrize("size", SIZES + ["random"])
def test_ring_chunk_invariance(size: int | str | None) -> None:
    """After every append the window is exactly the tail of everything appended (exact: values moved)."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal(700).astype(np.float32)
    rb = RingBuffer(50)
    cuts = cutting(len(x), size, rng, 120)
    for s in cuts:
        rb.append(x[s])
        seen = x[: s.stop]
        assert rb.total == len(seen)
        assert len(rb) == min(50, len(seen))
        np.testing.assert_array_equal(rb.latest(len(rb)), seen[len(seen) - len(rb) :])
    np.testing.assert_array_equal(rb.latest(7), x[-7:])


def test_ring_latest_refuses_more_than_held_and_fill_clear() -> None:
    rb = RingBuffer(8, dtype=np.float64)
    rb.append(np.arange(3.0))
    with pytest.raises(ValueError, match="holds 3"):
        rb.latest(4)
    assert rb.latest(0).shape == (0,)
    rb.fill(-1.0)  # a context window preloaded as 'missing'
    assert len(rb) == 8 and rb.total == 3
    rb.append(np.array([5.0, 6.0]))
    np.testing.assert_array_equal(rb.latest(8), [-1, -1, -1, -1, -1, -1, 5, 6])
    rb.clear()
    assert len(rb) == 0 and rb.total == 5
    with pytest.raises(ValueError):
        rb.latest(1)
    with pytest.raises(ValueError):
        RingBuffer(0)
    with pytest.raises(ValueError):
        rb.append(np.zeros((2, 2)))


def test_ring_append_never_copies_the_whole_buffer() -> None:
    """A small append into a big buffer allocates nothing of the buffer's size (traced by tracemalloc)."""
    rb = RingBuffer(1_000_000, dtype=np.float64)  # 8 MB
    rb.fill(0.0)
    chunk = np.ones(360)
    tracemalloc.start()
    try:
        for _ in range(3000):  # wraps around the end of the array
            rb.append(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 100_000
    assert rb.total == 3000 * 360


# ---------------------------------------------------------------------------------------------- filters


@pytest.mark.parametrize("size", SIZES + ["random"])
def test_filter_chunked_equals_sosfilt_one_pass(size: int | str | None) -> None:
    """Exact equality with one-pass sosfilt, 1-D and (n, channels): no tolerance is needed because the
    carried zi is sosfilt's own state and its loop is per sample."""
    rng = np.random.default_rng(2)
    sos = design_bandpass(0.5, 40.0, 360.0)
    x = rng.standard_normal((2000, 3)).cumsum(axis=0)  # a wandering baseline, like a real electrode
    expected = signal.sosfilt(sos, x, axis=0)
    for data, ref in ((x[:, 0], expected[:, 0]), (x, expected)):
        f = CausalFilter(sos)
        cuts = cutting(len(data), size, rng)
        np.testing.assert_array_equal(streamed(f.process, data, cuts), ref)


@given(cuts=st.lists(st.integers(0, 300), max_size=30), order=st.integers(1, 6))
@LIGHT
def test_filter_any_chunking_property(cuts: list[int], order: int) -> None:
    x = np.sin(np.arange(1500) * 0.07) + np.linspace(0.0, 3.0, 1500)
    sos = design_highpass(0.3, 100.0, order=order)
    f = CausalFilter(sos)
    bounds = np.unique(np.clip(np.cumsum(cuts), 0, len(x)))
    pieces = np.split(x, bounds)
    np.testing.assert_array_equal(np.concatenate([f.process(p) for p in pieces]), signal.sosfilt(sos, x))


def test_filter_reset_empty_chunk_and_layout() -> None:
    sos = design_lowpass(10.0, 100.0)
    x = np.random.default_rng(3).standard_normal(300)
    f = CausalFilter(sos)
    f.process(x)
    assert f.process(x[:0]).shape == (0,)
    f.reset()
    np.testing.assert_array_equal(f.process(x), signal.sosfilt(sos, x))
    with pytest.raises(ValueError, match="reset"):
        f.process(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="n_sections, 6"):
        CausalFilter(np.zeros(6))


def test_design_helpers_response_and_errors() -> None:
    fs = 256.0
    sos = design_bandpass(0.5, 40.0, fs)
    w, h = signal.sosfreqz(sos, worN=[0.5, 5.0, 40.0, 100.0], fs=fs)
    gain_db = 20 * np.log10(np.abs(h))
    np.testing.assert_allclose(gain_db[[0, 2]], -3.01, atol=0.05)  # Butterworth: -3 dB at the edges
    assert abs(gain_db[1]) < 0.01 and gain_db[3] < -40
    for bad in [(0.0, 40.0), (-1.0, 40.0), (0.5, 128.0), (0.5, 300.0), (40.0, 0.5)]:
        with pytest.raises(ValueError):
            design_bandpass(*bad, fs)
    with pytest.raises(ValueError, match=r"outside \(0, fs/2\)"):
        design_highpass(128.0, fs)
    with pytest.raises(ValueError):
        design_lowpass(10.0, fs, order=0)
    with pytest.raises(ValueError):
        design_lowpass(10.0, 0.0)


# ---------------------------------------------------------------------------------------------- resampler


@pytest.mark.parametrize(("fs_in", "fs_out"), RATIOS)
def test_resampler_chunk_invariance(fs_in: float, fs_out: float) -> None:
    """Exact equality with the batch twin for every chunking; also checks each output is emitted as soon
    as it is determined (n_out == ceil(n_in * up / down) after every call), which with chunk size 1 proves
    the batch output j depends on no input after j * down / up."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal(1500).astype(np.float32)
    ref = resample(x, fs_in, fs_out)
    for size in SIZES + ["random"]:
        r = StreamingResampler(fs_in, fs_out)
        cuts = cutting(len(x), size, rng)
        out = []
        for s in cuts:
            out.append(r.process(x[s]))
            assert r.n_out == -(-r.n_in * r.up // r.down)
        np.testing.assert_array_equal(np.concatenate(out), ref, err_msg=f"chunk size {size}")


@given(
    ratio=st.sampled_from(RATIOS), cuts=st.lists(st.integers(0, 250), max_size=25), channels=st.integers(1, 2)
)
@LIGHT
def test_resampler_any_chunking_property(ratio: tuple[int, int], cuts: list[int], channels: int) -> None:
    x = np.random.default_rng(sum(cuts)).standard_normal((1200, channels))
    r = StreamingResampler(*ratio)
    pieces = np.split(x, np.unique(np.clip(np.cumsum(cuts), 0, len(x))))
    np.testing.assert_array_equal(np.concatenate([r.process(p) for p in pieces]), resample(x, *ratio))


def test_resampler_channels_are_independent() -> None:
    x = np.random.default_rng(5).standard_normal((900, 3))
    y = resample(x, 360, 100)
    for c in range(3):
        np.testing.assert_array_equal(y[:, c], resample(x[:, c], 360, 100))


@pytest.mark.parametrize(("fs_in", "fs_out"), RATIOS)
def test_resampler_passband_sine_amplitude_and_phase(fs_in: float, fs_out: float) -> None:
    """A sine at 0.4 x the lower Nyquist comes out as sin(2 pi f (j - delay_samples) / fs_out): amplitude
    within 1 % and phase within 0.01 rad (the design gives ~1e-3 ripple; an off-by-one delay would be a
    phase error of 2 pi f / fs_out >= 0.6 rad here)."""
    f = 0.2 * min(fs_in, fs_out)
    n = int(20 * fs_in)
    x = np.sin(2 * np.pi * f * np.arange(n) / fs_in)
    r = StreamingResampler(fs_in, fs_out)
    y = r.process(x)
    j = np.arange(len(y))
    settled = j >= (len(r.taps) + r.up - 1) // r.down + 1  # outputs whose whole support lies in the signal
    phase = 2 * np.pi * f * (j[settled] - r.delay_samples) / r.fs_out
    (a, b), *_ = np.linalg.lstsq(np.column_stack([np.sin(phase), np.cos(phase)]), y[settled], rcond=None)
    assert abs(math.hypot(a, b) - 1.0) < 0.01
    assert abs(math.atan2(b, a)) < 0.01
    assert r.delay_seconds == pytest.approx(r.delay_samples / fs_out)


@pytest.mark.parametrize(
    ("fs_in", "fs_out", "tone"),
    [(360, 100, 50.5), (360, 100, 120.0), (250, 25, 13.0), (250, 25, 90.0), (128, 64, 40.0), (130, 64, 33.0)],
)
def test_resampler_attenuates_above_nyquist(fs_in: float, fs_out: float, tone: float) -> None:
    """A tone above the output Nyquist (even just above it) is attenuated by more than 40 dB; the design
    target is 60 dB from Nyquist up."""
    x = np.sin(2 * np.pi * tone * np.arange(int(20 * fs_in)) / fs_in)
    r = StreamingResampler(fs_in, fs_out)
    y = r.process(x)[len(r.taps) // r.down + 1 :]
    gain_db = 20 * np.log10(np.sqrt(np.mean(y**2)) / np.sqrt(0.5))
    assert gain_db < -40.0, gain_db


def test_upsampling_images_are_suppressed() -> None:
    """25 -> 250 Hz: a 5 Hz tone's images (20, 30, 45 Hz, ...) are below -40 dB of the tone."""
    x = np.sin(2 * np.pi * 5.0 * np.arange(500) / 25.0)
    r = StreamingResampler(25, 250)
    y = r.process(x)
    j = np.arange(len(y))[len(r.taps) :]
    clean = np.sin(2 * np.pi * 5.0 * (j - r.delay_samples) / 250.0)
    residual_db = 20 * np.log10(np.sqrt(np.mean((y[len(r.taps) :] - clean) ** 2)) / np.sqrt(0.5))
    assert residual_db < -40.0, residual_db


def test_resampler_passthrough_ratio_and_errors() -> None:
    x = np.random.default_rng(6).standard_normal(100).astype(np.float32)
    r = StreamingResampler(100, 100)
    assert (r.up, r.down, r.delay_samples) == (1, 1, 0)
    np.testing.assert_array_equal(r.process(x), x)
    assert rational_ratio(360, 100) == (5, 18) and rational_ratio(130, 64) == (32, 65)
    approx = StreamingResampler(360.0001, 100)  # not exactly expressible: the nearest small fraction
    assert (approx.up, approx.down) == (5, 18) and approx.fs_out == pytest.approx(100.0, rel=1e-6)
    for bad in [(0, 100), (100, -1), (math.inf, 100), (math.nan, 100)]:
        with pytest.raises(ValueError):
            StreamingResampler(*bad)
    with pytest.raises(ValueError, match="layout"):
        s = StreamingResampler(360, 100)
        s.process(np.zeros(10))
        s.process(np.zeros((10, 2)))


# ---------------------------------------------------------------------------------------------- epocher


def test_epochs_emitted_exactly_when_last_sample_arrives() -> None:
    n = 10
    e = Epocher(n)
    x = np.arange(95, dtype=np.float32)
    emitted: list[int] = []
    for i in range(0, 95, 3):
        got = e.push(i, x[i : i + 3])
        complete = e.next_index // n
        # Everything complete now and nothing before: each epoch exactly once, at its last sample.
        assert [ep.index for ep in got] == list(range(len(emitted), complete))
        emitted += [ep.index for ep in got]
        for ep in got:
            np.testing.assert_array_equal(ep.data, x[ep.index * n : (ep.index + 1) * n])
            assert ep.n_missing == 0
    assert emitted == list(range(9)) and e.pending == 5


def test_epocher_gaps_are_filled_and_counted() -> None:
    e = Epocher(10, fill_value=-1.0)
    assert e.push(0, np.ones(4)) == []
    [ep0] = e.push_gap(4, 8)  # explicit gap 4..11 closes epoch 0
    assert ep0.index == 0 and ep0.n_missing == 6
    np.testing.assert_array_equal(ep0.data, [1, 1, 1, 1, -1, -1, -1, -1, -1, -1])
    got = e.push(25, np.full(4, 2.0))  # implicit gap 12..24 closes epoch 1
    assert [(ep.index, ep.n_missing) for ep in got] == [(1, 10)]
    [ep2] = e.push(29, np.full(1, 3.0))  # the sample that completes epoch 2 (20..29: 5 missing, 5 data)
    assert ep2.index == 2 and ep2.n_missing == 5
    np.testing.assert_array_equal(ep2.data, [-1] * 5 + [2] * 4 + [3])
    assert e.push(30, np.zeros(0)) == []
    assert e.counters == {"samples": 9, "missing": 21, "implicit_missing": 13, "overlap": 0, "epochs": 3}


def test_epocher_overlaps_are_dropped_and_counted() -> None:
    e = Epocher(10)
    e.push(0, np.arange(8.0))
    [ep] = e.push(5, np.arange(100.0, 110.0))  # 5..7 already consumed: dropped, 8.. appended
    np.testing.assert_array_equal(ep.data, [0, 1, 2, 3, 4, 5, 6, 7, 103, 104])
    assert e.push(0, np.ones(12)) == []  # entirely old: nothing, and nothing emitted twice
    assert e.push_gap(2, 5) == []  # a late gap report over consumed samples keeps the data
    assert e.counters["overlap"] == 3 + 12 + 5
    assert e.next_index == 15 and e.counters["samples"] == 15


def test_epoch_data_is_fresh_and_epocher_memory_flat() -> None:
    e = Epocher(100)
    epochs = e.push(0, np.ones(300))
    epochs[0].data[:] = 7.0  # the consumer owns its copy
    assert not np.shares_memory(epochs[0].data, epochs[1].data)
    assert np.all(epochs[1].data == 1.0) and np.all(e.push(300, np.ones(100))[0].data == 1.0)
    assert epochs[0].data.dtype == np.float32
    with pytest.raises(AttributeError):
        epochs[0].index = 5  # type: ignore[misc]
    tracemalloc.start()
    try:
        for k in range(4, 200):  # emitted epochs dropped by the consumer: nothing accumulates
            e.push(k * 100, np.ones(100))
        current, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert current < 2_000


class TimelineModel:
    """Batch twin of the epocher, deliberately naive (one Python step per sample, fine at test sizes): an
    absolute timeline that only ever grows at its end; a sample behind the end is an overlap."""

    def __init__(self, fill: float):
        self.fill = fill
        self.values: list[float] = []
        self.missing: list[bool] = []
        self.counters = {"samples": 0, "missing": 0, "implicit_missing": 0, "overlap": 0}

    def event(self, start: int, data: np.ndarray | None, length: int) -> None:
        while len(self.values) < start:
            self.values.append(self.fill)
            self.missing.append(True)
            self.counters["implicit_missing"] += 1
            self.counters["missing"] += 1
        for i in range(length):
            if start + i < len(self.values):
                self.counters["overlap"] += 1
                continue
            self.values.append(self.fill if data is None else float(data[i]))
            self.missing.append(data is None)
            self.counters["missing" if data is None else "samples"] += 1

    def epochs(self, n: int) -> list[tuple[np.ndarray, int]]:
        return [
            (
                np.array(self.values[k * n : (k + 1) * n], dtype=np.float32),
                sum(self.missing[k * n : (k + 1) * n]),
            )
            for k in range(len(self.values) // n)
        ]


@given(
    ops=st.lists(
        st.tuples(st.booleans(), st.integers(-30, 30), st.integers(0, 40)), min_size=1, max_size=40
    ),
    n=st.integers(1, 25),
)
@LIGHT
def test_epocher_matches_batch_model_for_any_sequence(ops: list[tuple[bool, int, int]], n: int) -> None:
    """Random data/gap events, each starting up to 30 samples behind or ahead of the expected index: every
    call emits exactly the epochs its samples completed (indices 0, 1, 2, ..., none twice), and the epochs
    and counters equal the model's (exact: values are only moved)."""
    e = Epocher(n, fill_value=-9.0)
    model = TimelineModel(-9.0)
    got: list[Epoch] = []
    for is_data, offset, length in ops:
        start = max(0, e.next_index + offset)
        before = e.next_index // n
        if is_data:
            payload = np.arange(start, start + length, dtype=np.float32) + 0.5
            new = e.push(start, payload)
            model.event(start, payload, length)
        else:
            new = e.push_gap(start, length)
            model.event(start, None, length)
        assert [ep.index for ep in new] == list(range(before, e.next_index // n))
        got += new
    assert e.next_index == len(model.values)
    want = model.epochs(n)
    assert len(got) == len(want)
    for ep, (data, n_missing) in zip(got, want, strict=True):
        np.testing.assert_array_equal(ep.data, data)
        assert ep.n_missing == n_missing
    assert e.counters == {**model.counters, "epochs": len(want)}


# ---------------------------------------------------------------------------------------------- IBI


def beats_with_dropouts() -> np.ndarray:
    """Record 100's R peaks (seconds), with a few stretches removed so that intervals >= MAX_IBI occur."""
    with np.load(ECG_100) as d:
        t = d["r_peaks"].astype(np.float64) / float(d["fs"])
    keep = np.ones(len(t), dtype=bool)
    for a in (100, 700, 1500):
        keep[a : a + 4] = False
    return t[keep]


def stream_ibi(
    beats: np.ndarray, cuts: Iterator[slice], rng: np.random.Generator | None = None
) -> np.ndarray:
    s = StreamingIbi()
    out = []
    for sl in cuts:
        out.append(s.push_beats(beats[sl]))
        if rng is not None and sl.stop < len(beats):
            # Silence declared up to some time before the next beat: must not change anything.
            out.append(s.advance_to(rng.uniform(beats[sl.stop - 1] if sl.stop else 0.0, beats[sl.stop])))
    out.append(s.advance_to(beats[-1] + MAX_IBI))
    return np.concatenate(out)


@pytest.mark.parametrize("size", SIZES + ["random"])
def test_streaming_ibi_equals_sample_and_hold(size: int | str | None) -> None:
    """Exact: both compute the same float64 differences and searchsorted on the same sample times."""
    beats = beats_with_dropouts()
    rng = np.random.default_rng(7)
    # Random chunkings also interleave advance_to() calls.
    got = stream_ibi(beats, cutting(len(beats), size, rng, 40), rng if size == "random" else None)
    want = sample_and_hold(beats, len(got))
    assert len(got) >= math.floor((beats[-1] + MAX_IBI) * 25) - 1
    np.testing.assert_array_equal(got, want)
    assert np.count_nonzero(want == 0) > 4 * 25  # the dropouts really produced missing spans


# ---------------------------------------------------------------------------------------------- real signal


def ecg_pipeline(x: np.ndarray, cuts: Iterator[slice], fs: float) -> list[Epoch]:
    """Band-pass 0.5-40 Hz -> 100 Hz -> 30-s epochs, streamed."""
    f = CausalFilter(design_bandpass(0.5, 40.0, fs))
    r = StreamingResampler(fs, 100.0)
    e = Epocher(3000)
    epochs: list[Epoch] = []
    for s in cuts:
        y = r.process(f.process(x[s]))
        epochs += e.push(r.n_out - len(y), y)
    return epochs


@pytest.fixture(scope="module")
def ecg_batch_epochs(ecg: tuple[np.ndarray, float]) -> np.ndarray:
    """The batch twins end to end: one-pass sosfilt, batch resample, reshape."""
    x, fs = ecg
    y = resample(signal.sosfilt(design_bandpass(0.5, 40.0, fs), x), fs, 100.0).astype(np.float32)
    return y[: len(y) // 3000 * 3000].reshape(-1, 3000)


@pytest.mark.parametrize(
    ("size", "seconds"),
    # Chunk size 1 costs ~3 Python calls per sample: a 70-s excerpt (2 epochs, 25k chunks) keeps the test
    # fast; size 7 runs on 10 minutes; the rest on the whole 30-min record.
    [(1, 70), (7, 600), (64, None), (None, None), ("random", None)],
)
def test_mitbih_ecg_pipeline_identical_epochs(
    ecg: tuple[np.ndarray, float], ecg_batch_epochs: np.ndarray, size: int | str | None, seconds: int | None
) -> None:
    """Record 100 through band-pass + 360->100 Hz + epocher: exactly the batch epochs, whatever the
    chunking (the batch of an excerpt is a prefix of the batch of the record, all stages being causal)."""
    x, fs = ecg
    if seconds is not None:
        x = x[: int(seconds * fs)]
    rng = np.random.default_rng(8)
    cuts = cutting(len(x), size, rng, 2000)
    epochs = ecg_pipeline(x, cuts, fs)
    assert [ep.index for ep in epochs] == list(range(len(epochs)))
    assert len(epochs) == (seconds or 1805) // 30
    for ep in epochs:
        assert ep.n_missing == 0
        np.testing.assert_array_equal(ep.data, ecg_batch_epochs[ep.index])
