"""Respiration for SleepVST: a belt (or impedance) signal, or ECG-derived respiration where there is none.

Both paths end in the same 5-Hz band-passed signal, which :class:`StreamingPatches` turns into SleepVST's
model input (median filter k5, each 30-s patch z-scored: 150 samples per epoch).

(a) Belt / impedance pneumography, :class:`StreamingBelt` (batch twin :func:`belt_respiration`): resampled
    to ``RESP_FS`` (5 Hz) by :class:`~edged.dsp.resample.StreamingResampler` (anti-aliased, flat to
    2 Hz), then the causal Butterworth band-pass ``RESP_BAND`` (0.1-1.0 Hz: 6-60 breaths/min; below is
    posture and drift, above is cardiac and motion). Resampling comes first: filtering at 5 Hz costs 200x
    less than at 1 kHz, and a 0.1-Hz edge is better conditioned at 5 Hz than at 1 kHz.
(b) ECG-derived respiration (EDR), :class:`StreamingEdr` (batch twin :func:`ecg_derived_respiration`):
    breathing modulates the QRS amplitude (the heart's electrical axis and the chest impedance move with
    the lungs). The ECG is band-passed (``EDR_ECG_BAND`` 0.5-40 Hz, causal), each beat's amplitude is the
    peak-to-peak value within +-``EDR_HALF_WINDOW_S`` (50 ms) of the given R peak (so the R-peak
    polarity and a few ms of detector jitter do not matter), the amplitude series is interpolated linearly
    between beats onto the 5-Hz grid and band-passed like the belt. Linear interpolation needs the next
    beat: **one beat of delay** (plus the 50-ms window), on top of the beat detector's own delay.
    Intervals of ``max_gap`` (2 s) or more are gaps, held at the last amplitude (flat, never invented);
    :meth:`StreamingEdr.advance_to` lets silence close them.

Measured (``tests/test_respiration.py``; breathing rate = :func:`breathing_rate`, the spectral peak of
each 60-s window, windows every 30 s; R peaks from neurokit2's ``ecg_peaks``; agreement = EDR rate within
2 breaths/min of the belt's): ``bidmc_01`` (ECG II + impedance RESP, 8 min) 14/14 windows (100 %);
``task1`` (ECG + belt, 25.6 min, awake with stimuli) 37/50 (74 %; 85 % after its first five minutes, in
which sighs and movement dominate the belt); ``v102s`` (ECG II + RESP, 5 min, an ICU ventricular-
tachycardia false alarm) 5/8 (62 %). The test's docstring says why the last two fall short of 80 %.

Delays (signal time to output time): belt path = the resampler's group delay, 19 output samples = 3.8 s
at any input rate (:attr:`StreamingBelt.delay_seconds`: its anti-alias FIR is flat to 2 Hz and stops at
2.5 Hz, a sharp edge that needs a long filter), plus the band-pass's group delay (frequency-dependent:
1.6 s at 0.15 Hz, 0.5 s at 0.3 Hz, 0.36 s at 0.5 Hz); patches add 0.4 s (the causal median of 5
samples). Every stage emits a sample as soon as it is determined, so patch ``k`` of the 5-Hz stream is
complete by the time the input reaches ``30 (k + 1)`` seconds: respiration epochs close with the signal
clock, describing it ~4-5 s late (identically in
training, which uses the batch twins). The resampler could be ~2.5x shorter for this path, whose band
ends at 1 Hz, if it took a pass-band edge argument (``edged/dsp/resample.py`` fixes it at 0.8 x Nyquist).
The EDR path has no resampler: its delay is one beat plus 50 ms, plus the band-pass phase.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy import signal
from scipy.ndimage import maximum_filter1d

from edged.dsp.filters import CausalFilter, design_bandpass
from edged.dsp.ibi import MAX_IBI
from edged.dsp.resample import StreamingResampler, resample
from edged.dsp.ring import RingBuffer

RESP_FS = 5.0
RESP_BAND = (0.1, 1.0)
RESP_FILTER_ORDER = 2  # per edge: 4 poles, -24 dB/octave outside the band, a short start-up transient
MEDIAN_KERNEL = 5  # SleepVST
PATCH_SECONDS = 30.0
PATCH_SAMPLES = int(PATCH_SECONDS * RESP_FS)  # 150
EDR_ECG_BAND = (0.5, 40.0)
EDR_HALF_WINDOW_S = 0.05
EDR_HISTORY_S = 10.0  # filtered ECG kept for beats that arrive late (the ECG detector's delay is 0.45 s)
RATE_WINDOW_S = 60.0
RATE_STEP_S = 30.0
RATE_GATE_SIGMAS = 3.0  # breathing_rate: samples beyond this many robust SDs are transients, zeroed
RATE_GATE_DILATE_S = 1.0  # ... together with this much on either side
_EMPTY = np.zeros(0)
_BLOCK = 1 << 16  # ECG samples filtered and measured per step of a long push


def respiration_bandpass() -> np.ndarray:
    """The respiration band-pass at ``RESP_FS``, as SOS."""
    return design_bandpass(RESP_BAND[0], RESP_BAND[1], RESP_FS, order=RESP_FILTER_ORDER)


class _HoldNonFinite:
    """Replace non-finite samples by the last finite one (one NaN inside an IIR filter would poison
    every later output); leading non-finite samples become 0. Counts what it replaced."""

    def __init__(self) -> None:
        self.last = 0.0
        self.replaced = 0

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if len(x) == 0 or math.isfinite(float(x.sum())):
            if len(x):
                self.last = float(x[-1])
            return x
        finite = np.isfinite(x)
        self.replaced += int((~finite).sum())
        idx = np.where(finite, np.arange(len(x)), -1)
        np.maximum.accumulate(idx, out=idx)
        out = np.where(idx >= 0, x[np.maximum(idx, 0)], self.last)
        self.last = float(out[-1])
        return out


# ------------------------------------------------------------------------------------------- (a) belt


class StreamingBelt:
    """Belt or impedance respiration at any rate -> band-passed 5-Hz samples, chunk by chunk; the output
    equals :func:`belt_respiration` of the whole signal exactly, whatever the chunking. Non-finite samples
    are held at the last finite value (``counters["held"]``)."""

    def __init__(self, fs: float) -> None:
        self._resampler = StreamingResampler(fs, RESP_FS)
        self.fs_out = self._resampler.fs_out
        if not math.isclose(self.fs_out, RESP_FS):
            raise ValueError(f"cannot resample {fs!r} Hz to exactly {RESP_FS} Hz (got {self.fs_out} Hz)")
        self._filter = CausalFilter(respiration_bandpass())
        self._hold = _HoldNonFinite()
        self.delay_seconds = self._resampler.delay_seconds

    @property
    def counters(self) -> dict[str, int]:
        return {"held": self._hold.replaced}

    def process(self, x: np.ndarray) -> np.ndarray:
        """Add belt samples; return the newly determined band-passed 5-Hz samples."""
        x = np.asarray(x)
        if x.ndim != 1:
            raise ValueError(f"respiration takes 1-D chunks, got shape {x.shape}")
        return self._filter.process(self._resampler.process(self._hold(x)))


def belt_respiration(x: np.ndarray, fs: float) -> np.ndarray:
    """Batch twin of :class:`StreamingBelt`."""
    x = _HoldNonFinite()(np.asarray(x, dtype=np.float64))
    y = resample(x, fs, RESP_FS)
    return signal.sosfilt(respiration_bandpass(), y) if len(y) else y


# ------------------------------------------------------------------------ SleepVST per-patch form


class StreamingPatches:
    """SleepVST's respiration input from a 5-Hz stream: a median filter of ``MEDIAN_KERNEL`` samples
    (causal: the median of the newest 5, i.e. SleepVST's centred filter 2 samples = 0.4 s later; the
    stream is taken to start with 4 copies of its first sample), then every complete 150-sample (30-s)
    patch z-scored on its own (a flat patch becomes zeros). :meth:`process` returns the patches completed
    by the chunk, shape ``(n, 150)``; equal to :func:`sleepvst_patches` of the whole stream."""

    def __init__(self) -> None:
        self._tail: np.ndarray | None = None  # the last MEDIAN_KERNEL - 1 input samples
        self._pending = np.zeros(0)  # median-filtered samples of the patch being filled

    def process(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 1:
            raise ValueError(f"patches take a 1-D 5-Hz stream, got shape {x.shape}")
        if len(x) == 0:
            return np.zeros((0, PATCH_SAMPLES))
        if self._tail is None:
            self._tail = np.full(MEDIAN_KERNEL - 1, x[0])
        ext = np.concatenate((self._tail, x))
        self._tail = ext[-(MEDIAN_KERNEL - 1) :]
        med = np.median(sliding_window_view(ext, MEDIAN_KERNEL), axis=1)
        buf = np.concatenate((self._pending, med))
        n = len(buf) // PATCH_SAMPLES
        self._pending = buf[n * PATCH_SAMPLES :]
        return _zscore(buf[: n * PATCH_SAMPLES].reshape(n, PATCH_SAMPLES))


def _zscore(patches: np.ndarray) -> np.ndarray:
    mean = patches.mean(axis=1, keepdims=True)
    sd = patches.std(axis=1, keepdims=True)
    centred = patches - mean
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sd > 0, centred / np.where(sd > 0, sd, 1.0), 0.0)


def sleepvst_patches(x: np.ndarray) -> np.ndarray:
    """Batch twin of :class:`StreamingPatches`: the complete patches of a whole 5-Hz stream."""
    return StreamingPatches().process(x)


# ------------------------------------------------------------------------------------------- (b) EDR


class StreamingEdr:
    """ECG + its R peaks -> band-passed 5-Hz ECG-derived respiration, online (see the module docstring).

    :meth:`push` ``(ecg_chunk, beat_indices)``: the next ECG samples and any newly detected R peaks
    (absolute sample indices from the stream's first sample, increasing across calls; a beat may come in
    the same push as its samples or later, up to ``EDR_HISTORY_S`` later). Returns the 5-Hz samples (times
    ``j / 5`` s on the ECG clock) that became determined. :meth:`advance_to` declares silence. The
    concatenated output equals :func:`ecg_derived_respiration` whatever the chunking.

    ``counters``: ``beats`` (used), ``late_beats`` (dropped: older than the history), ``held`` (non-finite
    ECG samples held), ``gap_samples`` (5-Hz samples inside gaps, held flat).
    """

    def __init__(self, fs: float, *, max_gap: float = MAX_IBI) -> None:
        if not (math.isfinite(fs) and fs > 2 * EDR_ECG_BAND[0]):
            raise ValueError(f"ECG sample rate must be a positive number of Hz, got {fs!r}")
        self.fs = float(fs)
        self.max_gap = float(max_gap)
        high = min(EDR_ECG_BAND[1], 0.45 * self.fs)  # a low-rate ECG (e.g. 100 Hz) keeps a valid band
        self._ecg_filter = CausalFilter(design_bandpass(EDR_ECG_BAND[0], high, self.fs, order=2))
        self._hold = _HoldNonFinite()
        self._half = max(1, round(EDR_HALF_WINDOW_S * self.fs))
        self._ring = RingBuffer(max(int(EDR_HISTORY_S * self.fs), 4 * self._half + 1), dtype=np.float64)
        self._resp_filter = CausalFilter(respiration_bandpass())
        self._waiting = np.zeros(0, dtype=np.int64)  # beats whose amplitude window is not complete yet
        self._last_beat = -1  # newest beat index accepted (validation)
        self._prev: tuple[float, float] | None = None  # (time s, amplitude) of the newest measured beat
        self._offset = 0.0  # the first beat's amplitude, subtracted from all (see _interpolate)
        self._next = 0  # index of the next 5-Hz sample to emit
        self._counts: dict[str, int] = {"beats": 0, "late_beats": 0, "gap_samples": 0}
        self.delay_beats = 1  # linear interpolation waits for the next beat

    @property
    def n_samples(self) -> int:
        """ECG samples pushed so far."""
        return self._ring.total

    def push(self, ecg_chunk: np.ndarray, beat_indices: np.ndarray = _EMPTY) -> np.ndarray:
        """Add ECG samples and R peaks (absolute sample indices); return the newly determined 5-Hz
        band-passed EDR samples. Invalid beats raise ValueError before anything changes."""
        x = np.asarray(ecg_chunk)
        if x.ndim != 1:
            raise ValueError(f"ECG chunks must be 1-D, got shape {x.shape}")
        beats = np.asarray(beat_indices)
        if beats.ndim != 1:
            raise ValueError(f"beat indices must be 1-D, got shape {beats.shape}")
        beats = beats.astype(np.int64)
        if len(beats) and (np.any(np.diff(beats) <= 0) or beats[0] <= self._last_beat):
            raise ValueError("beat indices must be strictly increasing across calls")
        if len(beats) and beats[-1] >= self._ring.total + len(x):
            # A beat can only be reported for a sample already received: this also bounds _waiting.
            raise ValueError(
                f"beat at sample {int(beats[-1])} is beyond the {self._ring.total + len(x)} ECG samples received"
            )
        if len(beats):
            self._last_beat = int(beats[-1])
            self._waiting = np.concatenate((self._waiting, beats))
        # Long chunks (a whole recording, for the batch twin) go block by block, so the ring (and the
        # temporaries) stay small however much arrives at once.
        out = [self._measure_ready(np.zeros(0))] if len(x) == 0 else []
        for i in range(0, len(x), _BLOCK):
            filtered = self._ecg_filter.process(self._hold(x[i : i + _BLOCK]))
            out.append(self._measure_ready(filtered))
            self._ring.append(filtered)
        return np.concatenate(out) if out else _EMPTY

    def advance_to(self, t: float) -> np.ndarray:
        """Declare that no R peak lies before ``t`` seconds beyond those pushed: once ``max_gap`` has
        passed since the last beat, the samples up to ``t`` are a gap (held flat) and become determined."""
        out = self._measure_ready(np.zeros(0))
        if self._prev is None or len(self._waiting) or t - self._prev[0] < self.max_gap:
            return out
        stop = _grid_before(t)
        n = stop - self._next
        if n <= 0:
            return out
        self._counts["gap_samples"] += n
        held = np.full(n, self._prev[1] - self._offset)
        self._next = stop
        return np.concatenate((out, self._resp_filter.process(held)))

    @property
    def counters(self) -> dict[str, int]:
        return {**self._counts, "held": self._hold.replaced}

    def _measure_ready(self, new: np.ndarray) -> np.ndarray:
        """Amplitudes of the waiting beats whose window is complete given the held history plus ``new``
        (filtered samples about to join the ring); the 5-Hz samples they determine."""
        base = self._ring.total  # absolute index of new[0]
        total = base + len(new)
        ready = self._waiting[self._waiting + self._half < total]
        if len(ready) == 0:
            return _EMPTY
        self._waiting = self._waiting[len(ready) :]
        oldest = base - len(self._ring)
        late = ready - self._half < oldest
        if late.any():
            self._counts["late_beats"] += int(late.sum())
            ready = ready[~late]
            if len(ready) == 0:
                return _EMPTY
        start = int(ready[0]) - self._half  # absolute index of the first sample any window needs
        from_ring = max(base - start, 0)
        held = np.concatenate((self._ring.latest(from_ring), new)) if from_ring else new[start - base :]
        windows = sliding_window_view(held, 2 * self._half + 1)[ready - self._half - start]
        amp = windows.max(axis=1) - windows.min(axis=1)
        self._counts["beats"] += len(ready)
        return self._interpolate(ready / self.fs, amp)

    def _interpolate(self, times: np.ndarray, amp: np.ndarray) -> np.ndarray:
        """The 5-Hz samples up to the newest of these (newly measured) beats, band-passed."""
        pieces = []
        if self._prev is None:
            # The first beat: its amplitude is the offset taken off every sample (so the band-pass starts
            # near its steady state instead of ringing from a step), and it is held backwards to t = 0.
            self._offset = float(amp[0])
            stop = _grid_until(float(times[0]))
            pieces.append(np.zeros(stop - self._next))
            self._next = stop
            prev_t, prev_a = float(times[0]), float(amp[0])
            times, amp = times[1:], amp[1:]
        else:
            prev_t, prev_a = self._prev
        if len(times):
            t = np.concatenate(([prev_t], times))
            a = np.concatenate(([prev_a], amp))
            stop = _grid_until(float(t[-1]))
            s = np.arange(self._next, stop) / RESP_FS
            k = np.clip(np.searchsorted(t, s, side="right") - 1, 0, len(t) - 2)
            gap = (t[k + 1] - t[k]) >= self.max_gap  # a gap is held at the amplitude before it
            frac = np.where(gap, 0.0, (s - t[k]) / (t[k + 1] - t[k]))
            pieces.append(a[k] + (a[k + 1] - a[k]) * frac - self._offset)
            self._counts["gap_samples"] += int(gap.sum())
            self._next = stop
            prev_t, prev_a = float(t[-1]), float(a[-1])
        self._prev = (prev_t, prev_a)
        y = np.concatenate(pieces) if pieces else _EMPTY
        return self._resp_filter.process(y) if len(y) else _EMPTY


def _grid_until(t: float) -> int:
    """Number of 5-Hz grid times ``j / RESP_FS`` at or before ``t`` (those a beat at ``t`` determines)."""
    j = math.floor(t * RESP_FS) + 1
    while j > 0 and (j - 1) / RESP_FS > t:
        j -= 1
    while j / RESP_FS <= t:
        j += 1
    return max(j, 0)


def _grid_before(t: float) -> int:
    """Number of 5-Hz grid times strictly before ``t``."""
    j = max(math.ceil(t * RESP_FS), 0)
    while j > 0 and (j - 1) / RESP_FS >= t:
        j -= 1
    while j / RESP_FS < t:
        j += 1
    return j


def ecg_derived_respiration(ecg: np.ndarray, beat_indices: np.ndarray, fs: float) -> np.ndarray:
    """Batch twin of :class:`StreamingEdr`: the 5-Hz EDR samples determined by the whole ECG and all its
    beats (up to the last beat)."""
    return StreamingEdr(fs).push(ecg, beat_indices)


# ---------------------------------------------------------------------------------- breathing rate


def breathing_rate(
    x: np.ndarray,
    fs: float = RESP_FS,
    *,
    window_seconds: float = RATE_WINDOW_S,
    step_seconds: float = RATE_STEP_S,
) -> np.ndarray:
    """Breaths per minute in each complete window (``window_seconds`` long, every ``step_seconds``) of a
    band-passed respiration signal: the highest periodogram peak within ``RESP_BAND``.

    Transients are gated first: samples more than ``RATE_GATE_SIGMAS`` robust SDs (1.4826 x MAD) from the
    window's median, and ``RATE_GATE_DILATE_S`` around them, are set to the median. A sigh, a swallow or a
    posture change on a belt is several times the breathing amplitude, and its slow energy otherwise
    outweighs the breathing peak (on the task1 belt this gate lifted EDR-belt agreement from 56 % to
    74 % of windows). Then a Hann window and an FFT zero-padded to 0.01 breaths/min bins."""
    x = np.asarray(x, dtype=np.float64)
    n = round(window_seconds * fs)
    step = round(step_seconds * fs)
    if len(x) < n or n < 4:
        return np.zeros(0)
    w = sliding_window_view(x, n)[::step].copy()
    med = np.median(w, axis=1, keepdims=True)
    w -= med
    sigma = 1.4826 * np.median(np.abs(w), axis=1, keepdims=True)
    dilate = 2 * round(RATE_GATE_DILATE_S * fs) + 1
    gate = maximum_filter1d((np.abs(w) > RATE_GATE_SIGMAS * sigma).astype(np.uint8), dilate, axis=1) > 0
    w[gate] = 0.0
    w = (w - w.mean(axis=1, keepdims=True)) * np.hanning(n)
    nfft = 1 << math.ceil(math.log2(fs * 60 / 0.01))
    power = np.abs(np.fft.rfft(w, nfft, axis=1)) ** 2
    f = np.fft.rfftfreq(nfft, 1 / fs)
    band = (f >= RESP_BAND[0]) & (f <= RESP_BAND[1])
    return 60.0 * f[band][np.argmax(power[:, band], axis=1)]
