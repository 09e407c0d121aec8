"""Online beat detection (edged.dsp.beats) and its scoring (edged.dsp.beat_metrics), on real recordings.

* ECG accuracy on the eight MIT-BIH Arrhythmia records against their cardiologist-reviewed beats, scored
  as the field does: greedy one-to-one matching within 150 ms, pooled (gross) Se and PPV;
* the streaming contract: chunk-size invariance against the batch twin (1-s, 7-s, 64-sample, 1-sample and
  random chunks), the stated delay bound, absolute and strictly increasing indices, bounded state;
* PPG pulses against the ECG beats of the same recording (no pulse annotations exist): the fraction of ECG
  beats that find their pulse, and the beat-to-beat interval error.

The streamed detections are computed once per record and chunk size (module cache) and shared by the
accuracy and invariance tests, which keeps the file to a few seconds.
"""

from __future__ import annotations

import functools
import math
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from edged.dsp.beat_metrics import (
    BeatScore,
    compare_pulses_to_beats,
    match_beats,
    pair_beats,
    positive_predictivity,
    sensitivity,
)
from edged.dsp.beats import (
    LEARN_S,
    StreamingEcgDetector,
    StreamingPpgDetector,
    detect_ecg_beats,
    detect_ppg_beats,
)
from edged.sources.readers import read_recording

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
if not DATA.exists():  # the checkout may live elsewhere; the data is always here on these machines
    DATA = Path("/work/shared/data")
needs_data = pytest.mark.skipif(not DATA.exists(), reason="real recordings not available")

MITBIH = ("100", "102", "104", "106", "114", "119", "123", "200")
TOLERANCE_S = 0.150
TARGET = 0.995  # Se and PPV, pooled over the eight records
LIGHT = settings(max_examples=10, deadline=None)

# v102s stores PLETH in 12-bit WFDB format 212 with gain 1250 ADC units per NU (v102s.hea). The monitor's
# value overflows that range and wraps: 1017 jumps of exactly one full span (4096 units) between
# consecutive samples in 5 min, in a file whose checksums verify, so the reader decodes it correctly and
# the defect is in the recording. Undone here (see ``unwrap``) before the PPG is scored.
V102S_PLETH_SPAN = 4096 / 1250


# ------------------------------------------------------------------------------------------------ helpers


def chunked(x: np.ndarray, size: int | None) -> Iterator[np.ndarray]:
    size = size or max(len(x), 1)
    for i in range(0, len(x), size):
        yield x[i : i + size]


def stream(
    detector: StreamingEcgDetector | StreamingPpgDetector, x: np.ndarray, size: int | None
) -> np.ndarray:
    """Every beat the detector returns, pushing ``x`` in chunks of ``size`` samples (None: one push)."""
    out = [detector.push(c) for c in chunked(x, size)]
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def random_push(
    detector: StreamingEcgDetector | StreamingPpgDetector, x: np.ndarray, sizes: list[int]
) -> np.ndarray:
    """Push ``x`` cut at the given chunk sizes, cycled (zeros are empty pushes)."""
    assume(any(sizes))  # a list of only empty chunks would never get through the signal
    out, i, k = [], 0, 0
    while i < len(x):
        step = sizes[k % len(sizes)]
        out.append(detector.push(x[i : i + step]))
        i, k = i + step, k + 1
    return np.concatenate(out)


def assert_same_beats(streamed: np.ndarray, batch: np.ndarray, what: str) -> None:
    """The streaming contract: the same beats as the batch twin, each within +-1 sample."""
    assert streamed.dtype == np.int64
    assert len(streamed) == len(batch), f"{what}: {len(streamed)} beats streamed, {len(batch)} in batch"
    if len(batch):
        worst = int(np.max(np.abs(streamed - batch)))
        assert worst <= 1, f"{what}: a beat moved by {worst} samples"


def unwrap(x: np.ndarray, span: float) -> np.ndarray:
    """Undo wrap-around: a jump of about +-``span`` between consecutive finite samples is an overflow."""
    out = x.copy()
    idx = np.flatnonzero(np.isfinite(x))
    jumps = np.round(np.diff(x[idx]) / span)
    out[idx[1:]] -= np.cumsum(jumps) * span
    return out


@functools.cache
def mitbih(rec: str) -> tuple[np.ndarray, float, np.ndarray]:
    with np.load(DATA / "ecg-mitbih" / f"{rec}.npz") as d:
        return d["ecg_mV"].astype(np.float64), float(d["fs"]), d["r_peaks"].astype(np.int64)


@functools.cache
def ecg_beats(rec: str, size: int | None, *, seconds: bool = True) -> np.ndarray:
    """Streamed R peaks of a record; ``size`` in seconds when ``seconds``, else in samples; None = batch."""
    x, fs, _ = mitbih(rec)
    if size is None:
        return detect_ecg_beats(x, fs)
    return stream(StreamingEcgDetector(fs), x, int(size * fs) if seconds else size)


def score_table(scores: dict[str, BeatScore]) -> str:
    rows = [f"{'record':>8} {'beats':>6} {'TP':>6} {'FP':>4} {'FN':>4} {'Se %':>7} {'PPV %':>7}"]
    for rec, s in scores.items():
        rows.append(
            f"{rec:>8} {s.tp + s.fn:6d} {s.tp:6d} {s.fp:4d} {s.fn:4d} "
            f"{100 * s.sensitivity:7.2f} {100 * s.positive_predictivity:7.2f}"
        )
    return "\n".join(rows)


def state_size(obj: object) -> int:
    """Bytes held in numpy arrays plus items held in containers, in ``obj`` and its filter, if any."""
    total = 0
    for value in vars(obj).values():
        if isinstance(value, np.ndarray):
            total += value.nbytes
        elif isinstance(value, (list, deque, dict)):
            total += len(value)
        elif hasattr(value, "__dict__") and not isinstance(value, type):
            total += state_size(value)
    return total


# ------------------------------------------------------------------------------------------- ECG accuracy


@needs_data
@pytest.mark.parametrize("chunk_s", [1, 7])
def test_ecg_accuracy_on_mitbih(chunk_s: int) -> None:
    """Pooled Se and PPV >= 99.5 % at 150 ms over the eight records, streamed in 1-s and 7-s chunks."""
    scores = {}
    for rec in MITBIH:
        _, fs, ref = mitbih(rec)
        scores[rec] = match_beats(ref, ecg_beats(rec, chunk_s), round(TOLERANCE_S * fs))
    pooled = BeatScore.pooled(scores.values())
    table = score_table({**scores, "pooled": pooled})
    assert pooled.sensitivity >= TARGET and pooled.positive_predictivity >= TARGET, "\n" + table


# ------------------------------------------------------------------------------------ streaming contract


@needs_data
@pytest.mark.parametrize("rec", MITBIH)
def test_ecg_streaming_equals_batch(rec: str) -> None:
    """1-s, 7-s and 64-sample chunks and one whole push give the batch twin's beats, each within +-1."""
    batch = ecg_beats(rec, None)
    for size, seconds in ((1, True), (7, True), (64, False)):
        assert_same_beats(ecg_beats(rec, size, seconds=seconds), batch, f"record {rec}, chunks of {size}")
    x, fs, _ = mitbih(rec)
    assert_same_beats(stream(StreamingEcgDetector(fs), x, None), batch, f"record {rec}, one push")


@needs_data
def test_ecg_single_sample_chunks() -> None:
    """One sample per push (a serial reader at its most eager) on 40 s of record 200 (PVCs, noise)."""
    x, fs, _ = mitbih("200")
    x = x[: int(40 * fs)]
    assert_same_beats(stream(StreamingEcgDetector(fs), x, 1), detect_ecg_beats(x, fs), "1-sample chunks")


@needs_data
@LIGHT
@given(st.lists(st.integers(0, 900), min_size=1, max_size=60), st.sampled_from(["119", "106"]))
def test_ecg_random_chunking(sizes: list[int], rec: str) -> None:
    """Random cut points, empty chunks included, on 60 s of the PVC-rich records."""
    x, fs, _ = mitbih(rec)
    x = x[: int(60 * fs)]
    assert_same_beats(
        random_push(StreamingEcgDetector(fs), x, sizes), detect_ecg_beats(x, fs), f"{sizes[:8]}"
    )


def beat_latencies(det: StreamingEcgDetector | StreamingPpgDetector, x: np.ndarray) -> list[tuple[int, int]]:
    """(beat index, index of the newest sample when it was returned), feeding one sample at a time."""
    seen = []
    for i in range(len(x)):
        for b in det.push(x[i : i + 1]).tolist():
            seen.append((b, i))
    return seen


@needs_data
def test_ecg_delay_is_bounded_and_stated() -> None:
    """Every beat is returned by the push that delivers sample ``beat + delay_samples`` at the latest
    (learning-phase beats: when the learning phase ends); the stated delay is at most 0.5 s."""
    x, fs, _ = mitbih("119")
    det = StreamingEcgDetector(fs)
    assert det.delay_samples <= 0.5 * fs
    assert det.learning_samples == round(LEARN_S * fs)
    seen = beat_latencies(det, x[: int(30 * fs)])
    assert len(seen) > 20
    for beat, newest in seen:
        assert newest <= max(beat + det.delay_samples, det.learning_samples), (beat, newest)


@needs_data
def test_indices_absolute_increasing_and_robust_to_nan() -> None:
    """Leading NaNs are skipped but counted; a NaN gap costs only the beats near it; indices are int64
    and strictly increasing across pushes; units and offsets do not matter."""
    x, fs, _ = mitbih("100")
    x = x[: int(300 * fs)]
    clean = detect_ecg_beats(x, fs)
    assert clean.dtype == np.int64 and np.all(np.diff(clean) > 0)

    lead = 123
    shifted = detect_ecg_beats(np.concatenate((np.full(lead, np.nan), x)), fs)
    assert_same_beats(shifted - lead, clean, "after leading NaNs")

    gap = slice(int(100 * fs), int(101.5 * fs))
    holed = x.copy()
    holed[gap] = np.nan
    det = StreamingEcgDetector(fs)
    pushes = [det.push(c) for c in chunked(holed, int(fs))]
    got = np.concatenate(pushes)
    assert np.all(np.diff(got) > 0)
    far = (clean < gap.start - fs) | (clean > gap.stop + fs)
    kept = np.isin(clean[far], got)
    assert kept.all(), f"beats away from the NaN gap lost: {clean[far][~kept][:5]}"

    assert_same_beats(detect_ecg_beats(1000.0 * x + 2048.0, fs), clean, "x 1000 + 2048 (ADC counts)")


@needs_data
def test_ecg_recovers_from_artefacts_and_gain_change() -> None:
    """Electrode pops (0.5-s bursts of 20 mV noise every 2 min) and a 10x gain drop for 5 min: the
    thresholds must come back, so beats away from the bursts are still found."""
    x, fs, ref = mitbih("100")
    rng = np.random.default_rng(0)
    x = x.copy()
    bursts = [(s, s + int(0.5 * fs)) for s in range(int(60 * fs), len(x) - int(60 * fs), int(120 * fs))]
    for a, b in bursts:
        x[a:b] += rng.normal(0.0, 20.0, b - a)
    x[int(400 * fs) : int(700 * fs)] *= 0.1
    beats = detect_ecg_beats(x, fs)
    away = np.ones(len(ref), dtype=bool)
    for a, b in bursts:
        away &= (ref < a - 3 * fs) | (ref > b + 3 * fs)  # 3 s to recover
    score = match_beats(ref[away], beats, round(TOLERANCE_S * fs))
    assert score.sensitivity >= 0.995, score


@needs_data
def test_state_does_not_grow_with_the_recording() -> None:
    x, fs, _ = mitbih("106")
    ecg = StreamingEcgDetector(fs)
    stream(ecg, x[: int(120 * fs)], int(fs))
    early = state_size(ecg)
    stream(ecg, x[int(120 * fs) :], int(fs))
    assert state_size(ecg) == early

    ppg_x = read_recording(DATA / "ecg-ppg-resp" / "bidmc_01_Signals.csv").signals["PLETH"].data
    ppg = StreamingPpgDetector(125.0)
    stream(ppg, ppg_x[: 60 * 125], 125)
    early = state_size(ppg)
    stream(ppg, ppg_x[60 * 125 :], 125)
    assert state_size(ppg) == early


def test_bad_input_is_refused_clearly() -> None:
    with pytest.raises(ValueError, match="above 40 Hz"):
        StreamingEcgDetector(30.0)
    with pytest.raises(ValueError, match="above 16 Hz"):
        StreamingPpgDetector(float("nan"))
    det = StreamingEcgDetector(250)
    with pytest.raises(ValueError, match="1-D"):
        det.push(np.zeros((10, 2)))
    empty = det.push(np.zeros(0))
    assert empty.dtype == np.int64 and len(empty) == 0
    assert len(det.push(np.full(500, np.nan))) == 0 and det.n_samples == 500


# -------------------------------------------------------------------------------------------------- PPG


@functools.cache
def ppg_recording(name: str) -> tuple[np.ndarray, np.ndarray, float]:
    """(ECG lead II, PLETH, fs) of the two recordings that have both."""
    if name == "v102s":
        rec = read_recording(DATA / "ecg-ppg-resp" / "v102s.hea")
        pleth = unwrap(rec.signals["PLETH"].data, V102S_PLETH_SPAN)
    else:
        rec = read_recording(DATA / "ecg-ppg-resp" / "bidmc_01_Signals.csv")
        pleth = rec.signals["PLETH"].data
    return rec.signals["II"].data, pleth, rec.signals["PLETH"].fs


@needs_data
@pytest.mark.parametrize("name", ["v102s", "bidmc"])
def test_ppg_pulses_track_ecg_beats(name: str) -> None:
    """>= 95 % of ECG beats find their pulse within +-150 ms of the median pulse transit, and pulse
    intervals differ from beat intervals by a median of <= 20 ms. Both detectors streamed in 1-s chunks.
    (Measured: v102s 95.7 % and 12 ms, its misses in the noisy stretches around 100 s, 141-148 s and the
    last 50 s; bidmc_01 97.8 % and 8 ms; neurokit2's offline PPG peaks: 95.9 % and 98.1 %, same medians.)"""
    ecg, pleth, fs = ppg_recording(name)
    beats = stream(StreamingEcgDetector(fs), ecg, int(fs)) / fs
    pulses = stream(StreamingPpgDetector(fs), pleth, int(fs)) / fs
    agreement = compare_pulses_to_beats(beats, pulses)
    assert 0.0 < agreement.pulse_transit < 1.0
    assert agreement.matched >= 0.95, agreement
    assert agreement.median_abs_ibi_error <= 0.020, agreement


@needs_data
@pytest.mark.parametrize("name", ["v102s", "bidmc"])
def test_streaming_equals_batch_at_250_and_125_hz(name: str) -> None:
    """Both detectors on the recordings with ECG and PPG (250 Hz: the ECG FIR output is decimated by 2;
    125 Hz: not decimated), chunks of 1 s, 7 s, 64 samples, 1 sample (40 s) and one push."""
    ecg, pleth, fs = ppg_recording(name)
    for cls, x in ((StreamingEcgDetector, ecg), (StreamingPpgDetector, pleth)):
        batch = cls(fs).push(x)
        assert len(batch) > 400 and np.all(np.diff(batch) > 0)
        for size in (int(fs), 7 * int(fs), 64, None):
            assert_same_beats(stream(cls(fs), x, size), batch, f"{name} {cls.__name__}, chunks of {size}")
        short = x[: int(40 * fs)]
        assert_same_beats(stream(cls(fs), short, 1), cls(fs).push(short), f"{name} {cls.__name__}, 1-sample")


@needs_data
def test_ecg_at_1000_hz() -> None:
    """1000 Hz (the FIR output decimated by 10: ten phases of the decimation grid): chunking invariance.
    This recording has no reference beats; over its 25.6 min our 1936 beats and neurokit2's 1937 and
    sleepecg's 1936 coincide within 150 ms (checked while developing), so here only plausibility: every
    interval is one of a resting adult."""
    with np.load(DATA / "ecg-resp-awake" / "task1_ecg_resp_eda_stim_1000hz.npz") as d:
        fs = float(d["fs"])
        x = d["ecg"].astype(np.float64)[: int(120 * fs)]
    batch = detect_ecg_beats(x, fs)
    for size in (int(fs), 7 * int(fs), 64, 333):
        assert_same_beats(stream(StreamingEcgDetector(fs), x, size), batch, f"1000 Hz, chunks of {size}")
    rr = np.diff(batch) / fs
    assert len(batch) > 100 and rr.min() > 0.3 and rr.max() < 1.5, (len(batch), rr.min(), rr.max())


@needs_data
@LIGHT
@given(st.lists(st.integers(0, 400), min_size=1, max_size=60))
def test_ppg_random_chunking(sizes: list[int]) -> None:
    _, pleth, fs = ppg_recording("bidmc")
    x = pleth[: int(90 * fs)]
    assert_same_beats(
        random_push(StreamingPpgDetector(fs), x, sizes), detect_ppg_beats(x, fs), f"{sizes[:8]}"
    )


@needs_data
def test_ppg_delay_is_bounded() -> None:
    _, pleth, fs = ppg_recording("bidmc")
    det = StreamingPpgDetector(fs)
    seen = beat_latencies(det, pleth[: int(30 * fs)])
    assert len(seen) > 20
    assert all(newest <= beat + det.delay_samples for beat, newest in seen)
    assert det.delay_samples <= 0.85 * fs


# ---------------------------------------------------------------------------------------------- metrics


def test_matching_is_one_to_one_and_closest_first() -> None:
    # One detection between two reference beats goes to the nearer one, not the first scanned.
    assert pair_beats(np.array([10, 20]), np.array([16]), 5)[0].tolist() == [1]
    assert match_beats(np.array([10, 20]), np.array([16]), 5) == (1, 0, 1)
    # Two detections near one beat: one TP, one FP. Tolerance is inclusive.
    assert match_beats(np.array([100]), np.array([97, 104]), 3) == (1, 1, 0)
    assert match_beats(np.array([100]), np.array([103]), 3) == (1, 0, 0)
    assert match_beats(np.array([100]), np.array([104]), 3) == (0, 1, 1)
    # Unsorted input, indices returned in terms of the caller's arrays.
    r, d = pair_beats(np.array([300, 100, 200]), np.array([201, 299, 99]), 5)
    assert r.tolist() == [0, 1, 2] and d.tolist() == [1, 2, 0]


def test_rates_and_pooling() -> None:
    s = BeatScore.pooled([BeatScore(90, 5, 10), BeatScore(10, 5, 0)])
    assert s == (100, 10, 10)
    assert s.sensitivity == pytest.approx(100 / 110) == sensitivity(100, 10)
    assert s.positive_predictivity == pytest.approx(100 / 110) == positive_predictivity(100, 10)
    assert math.isnan(match_beats(np.array([]), np.array([1, 2]), 3).sensitivity)
    assert match_beats(np.array([1]), np.array([]), 3) == (0, 0, 1)


@given(
    st.lists(st.integers(0, 2000), max_size=40, unique=True),
    st.lists(st.integers(0, 2000), max_size=40, unique=True),
    st.integers(0, 60),
)
@settings(max_examples=200, deadline=None)
def test_matching_invariants(ref: list[int], det: list[int], tol: int) -> None:
    r_idx, d_idx = pair_beats(np.array(ref), np.array(det), tol)
    assert len(set(r_idx.tolist())) == len(r_idx) and len(set(d_idx.tolist())) == len(d_idx)
    assert all(abs(ref[i] - det[j]) <= tol for i, j in zip(r_idx.tolist(), d_idx.tolist()))
    tp, fp, fn = match_beats(np.array(ref), np.array(det), tol)
    assert tp == len(r_idx) and tp + fp == len(det) and tp + fn == len(ref)
    # Maximal: no unmatched reference beat has an unmatched detection within tolerance.
    free_d = np.setdiff1d(np.arange(len(det)), d_idx)
    for i in np.setdiff1d(np.arange(len(ref)), r_idx).tolist():
        assert all(abs(ref[i] - det[j]) > tol for j in free_d.tolist())
