"""Online beat detection: R peaks from ECG, systolic peaks from PPG, chunk by chunk, with a stated delay.

Both detectors share one contract. ``push(x)`` takes the next chunk of a 1-D stream (any length, even 0)
and returns the absolute sample indices (int64, counted from the stream's first sample, strictly increasing
across calls) of the beats that became certain with this chunk. A beat at sample ``r`` is returned by the
push that delivers sample ``r + delay_samples`` at the latest, so the live pipeline knows how far behind
the signal its beat stream is. Every decision depends only on the samples up to a fixed distance after the
candidate, never on where the chunks were cut, so a beat cannot be lost or counted twice at a chunk edge;
the batch twins :func:`detect_ecg_beats` and :func:`detect_ppg_beats` are literally the streaming detector
fed the whole signal in one push, and the tests hold streaming and batch to the same beats. Nothing grows
with the recording: the state is a few fixed-length histories and scalars, and a long push is processed
in 8192-sample blocks, so even the batch twin's temporaries are bounded.

Non-finite samples (WFDB 'invalid' values, a dropped BLE packet marked NaN) are held at the last finite
value: a short drop-out costs at most the beats inside it, while one NaN inside a recursive filter or an
adaptive threshold would poison every later output. Samples before the first finite one are skipped (but
counted, so indices stay absolute).

ECG: which detector, and why
----------------------------
A causal Pan-Tompkins detector of our own (:class:`StreamingEcgDetector`), chosen over running neurokit2's
``ecg_peaks`` on overlapping windows after measuring both on the eight MIT-BIH records in one run
(``python benchmarks/ibi.py``; figures and machine in ``docs/beats.md``): pooled Se/PPV at 150 ms 99.90 /
99.80 % against 99.69 / 99.87 %, a 0.45-s delay against 2-3 s, and about 50 times the throughput (the
windowed neurokit2 path re-cleans and re-searches 10 s for every 1-s chunk). Fed 1-s chunks it also keeps
up with one offline ``ecg_peaks`` call over the whole signal. The stages:

1. one FIR: an 8-20 Hz band-pass (Hamming-windowed, 0.15 s long) convolved with Pan & Tompkins' 5-point
   derivative. FIR rather than IIR because its memory is finite (a NaN or a saturation spike is forgotten
   after 0.15 s), its delay is an exact integer, and its start-up transient vanishes by padding with the
   first sample. 8-20 Hz rather than Pan-Tompkins' 5-15 Hz: the band Elgendi et al. (2010, "Frequency bands
   effects on QRS detection") found best; on our data 5-20 Hz was as good on MIT-BIH but took the steep P
   and T waves of the v102s record for beats. Its gain above 45 Hz is 46 dB down, so it is evaluated only
   on a grid of at least 100 Hz (every ``fs // 100``-th sample) and everything after runs at that rate;
2. squaring and a 150-ms moving-window integral (MWI);
3. candidates: MWI samples that are the largest within +-200 ms (the refractory period), found vectorised
   with a running-maximum filter;
4. per candidate (1-3 per second, the only Python loop): Pan-Tompkins' adaptive thresholds on signal and
   noise peak levels (``THR1 = NPK + (SPK - NPK) / 4``, halved while the last 8 RR intervals are
   irregular), the T-wave test within 360 ms (maximal slope under half that of the previous beat), and a
   search-back recast for a bounded delay: a candidate between ``THR1 / 2`` and ``THR1`` is a beat when it
   comes more than 0.7 average RR after the previous beat (Pan-Tompkins wait until 1.66 RR have passed and
   then look back, which would make the delay depend on the heart rate). Two additions keep it alive
   overnight: a peak enters the level updates clipped at 3 x SPK (one electrode pop cannot lift the
   thresholds above every real beat), and at every candidate in a gap longer than 1.66 average RR both
   levels halve (after a gain drop or a lead re-attached, the thresholds come down to the new amplitude
   within a few seconds instead of never);
5. the beat is placed at the largest deviation from the local median of the raw signal within +-0.1 s of
   where the MWI peak says the QRS is: the MIT-BIH reference marks the major deflection, which is what this
   picks, and the raw signal has no filter delay to correct. (In paced records the pacemaker spike, ~60 ms
   before the QRS, is sometimes the larger deflection: the detection is then that much early.)

Delay: ``delay_samples`` = 200 ms (to confirm the local maximum) + the FIR and MWI delays + 0.1 s (the
refinement window): 161 samples, 0.45 s, at 360 Hz (0.45 s at 125-1000 Hz too). One exception: the first
2 s of a stream are the learning phase that sets the initial levels (maximum and mean of the MWI, as
sleepecg does); beats in it are released together when it ends (``learning_samples``). The last
``delay_samples`` of a stream are never examined: a beat there is not certain yet, and a batch twin that
looked ahead would no longer be a twin.

Cost: a 1-s chunk is a couple of dozen numpy calls whatever its length, so the implementation keeps that
number small: workspaces allocated once (history followed by the chunk, no concatenation), the FIR and the
MWI as one dot product per output over strided views of those workspaces (no copy), and scalar look-ups
for the few candidates. About 22 us per 1-s chunk at 360 Hz on the benchmark machine.

PPG
---
Elgendi et al. (2013), the method behind neurokit2's ``ppg_findpeaks``, made causal
(:class:`StreamingPpgDetector`): a 0.5-8 Hz Butterworth band-pass (order 2, through
:class:`~edged.dsp.filters.CausalFilter`), negative half clipped and squared, then two centred moving
averages (111 ms, 'peak', and 667 ms, 'beat') computed with a fixed lag of half the longer window; a block
where the peak average exceeds the beat average plus ``0.02 x`` the mean squared signal (a 30-s running
mean here, where the paper uses the whole record) and lasts at least 111 ms holds one systolic peak, the
maximum of the filtered signal in the block; a peak within 300 ms of the previous one is dropped. A block
still open after 0.5 s (a normal one lasts about 0.2 s) is closed there, which is what bounds the delay:
``delay_samples`` = 0.5 s + 0.333 s. Peaks are those of the filtered signal, so they lag the raw systolic
peak by the filter's delay (median 4 ms on v102s, 16 ms on bidmc_01; about constant from beat to beat, so
intervals are unaffected; refining on the raw signal made the interval error no better).

Both detectors assume a human heart: refractory periods and windows are in seconds for 30-220 bpm; a mouse
ECG at 600 bpm needs other constants.
"""

from __future__ import annotations

import math
from collections import deque
from itertools import pairwise

import numpy as np
from scipy import signal
from scipy.ndimage import maximum_filter1d

from edged.dsp.filters import CausalFilter, design_bandpass

_NO_BEATS = np.zeros(0, dtype=np.int64)
_BLOCK = 1 << 13  # longest piece (samples) processed in one go; longer chunks are cut into such pieces

# --- ECG constants (seconds unless stated) -------------------------------------------------------------
QRS_BAND_HZ = (8.0, 20.0)  # Elgendi et al. 2010; see the module docstring for the comparison with 5-20 Hz
QRS_FIR_S = 0.15  # band-pass FIR length
PT_DERIVATIVE = np.array([1.0, 2.0, 0.0, -2.0, -1.0])  # Pan & Tompkins' 5-point derivative (scale is moot)
MWI_S = 0.15  # moving-window integration, about one QRS
REFRACTORY_S = 0.2  # candidates are maxima over +-this; no two beats closer than this
T_WAVE_S = 0.36  # a candidate this soon after a beat must have half its slope, or it is a T wave
LEARN_S = 2.0  # initial levels from the first 2 s
SEARCHBACK_RR = 0.7  # a sub-threshold candidate this many average RRs after the last beat is a beat
MISSED_RR = 1.66  # a gap longer than this many average RRs means beats are being missed: levels halve
LEVEL_CLIP = 3.0  # a peak enters the level updates as at most this many times the signal level
DEFAULT_RR_S = 1.0  # the RR average before two beats have been seen
DETECTION_RATE_HZ = 100.0  # the FIR output is decimated by floor(fs / this) before the later stages

# --- PPG constants (Elgendi et al. 2013) ---------------------------------------------------------------
PPG_BAND_HZ = (0.5, 8.0)
PPG_FILTER_ORDER = 2
PEAK_WINDOW_S = 0.111  # W1: about the systolic upstroke + peak; also the shortest block kept
BEAT_WINDOW_S = 0.667  # W2: about one beat
BEAT_OFFSET = 0.02  # beta: offset as a fraction of the mean squared signal
OFFSET_MEAN_S = 30.0  # time constant of the running mean standing in for the paper's whole-record mean
MIN_PULSE_INTERVAL_S = 0.3  # a peak this soon after the previous one is dropped (220 bpm)
MAX_BLOCK_S = 0.5  # a block still open after this is closed: bounds the delay


def _check_fs(fs: float, minimum: float, what: str) -> float:
    try:
        value = float(fs)
    except (TypeError, ValueError):
        value = math.nan
    if not (math.isfinite(value) and value > minimum):
        raise ValueError(f"{what} needs a sample rate above {minimum:g} Hz, got fs={fs!r}")
    return value


class _BeatStream:
    """What both detectors share: chunk validation, the absolute sample count, holding non-finite
    samples, and skipping the samples before the first finite one. Subclasses implement :meth:`_process`,
    which sees only finite samples and returns internal indices (from the first finite sample)."""

    delay_samples: int  # a beat at sample r is returned once sample r + delay_samples has been pushed
    learning_samples: int = 0  # except beats before this, which are returned once it has been reached

    def __init__(self, fs: float) -> None:
        self.fs = fs
        self._n_pushed = 0  # every sample ever pushed, including the skipped leading ones
        self._skipped = 0  # non-finite samples before the first finite one
        self._hold: float | None = None  # last finite sample; None until one has arrived

    @property
    def n_samples(self) -> int:
        """Samples pushed so far (the absolute index of the next sample)."""
        return self._n_pushed

    def push(self, x: np.ndarray) -> np.ndarray:
        """Feed the next chunk; returns the absolute indices (int64) of the beats that became certain."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 1:
            raise ValueError(f"beat detectors take 1-D chunks, got shape {x.shape}")
        n = len(x)
        if n == 0:
            return _NO_BEATS
        self._n_pushed += n
        if not math.isfinite(x.sum()):  # any NaN or inf makes the sum non-finite: one cheap test
            x = self._hold_non_finite(x)
            if len(x) == 0:
                return _NO_BEATS
        self._hold = x[-1]  # the value to hold if the next chunk starts non-finite
        beats = self._process(x)
        return beats + self._skipped if self._skipped and len(beats) else beats

    def _hold_non_finite(self, x: np.ndarray) -> np.ndarray:
        finite = np.isfinite(x)
        if self._hold is None:  # nothing to hold yet: skip up to the first finite sample
            first = int(np.argmax(finite)) if finite.any() else len(x)
            self._skipped += first
            x, finite = x[first:], finite[first:]
            if len(x) == 0:
                return x
        # Forward fill, vectorised: index of the last finite sample at or before each position (-1: none
        # in this chunk, so take the held value).
        last = np.where(finite, np.arange(len(x)), -1)
        np.maximum.accumulate(last, out=last)
        hold = float(self._hold) if self._hold is not None else float(x[0])
        return np.where(last >= 0, x[np.maximum(last, 0)], hold)

    def _process(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class StreamingEcgDetector(_BeatStream):
    """R peaks from one ECG lead, online. See the module docstring for the method and its measured
    accuracy; ``delay_samples`` is the bound on how late a beat is reported (0.45 s at 360 Hz)."""

    def __init__(self, fs: float) -> None:
        # The band-pass edge at 20 Hz must be below Nyquist.
        super().__init__(_check_fs(fs, 2 * QRS_BAND_HZ[1], "ECG beat detection"))
        fs = self.fs
        taps = round(QRS_FIR_S * fs) | 1  # odd: a whole-sample delay
        bandpass = signal.firwin(taps, QRS_BAND_HZ, pass_zero=False, fs=fs)
        self._h = np.convolve(bandpass, PT_DERIVATIVE)
        self._h_rev = np.ascontiguousarray(self._h[::-1])  # convolution as a dot product with each window
        self._fir_back = len(self._h) - 1  # samples before an output that its window reaches back
        # The FIR's gain is at least 46 dB below its peak above 45 Hz (checked at 250-1000 Hz), so keeping
        # every D-th output folds nothing back that matters; all later stages run at fs / D >= 100 Hz.
        self._dec = max(1, int(fs // DETECTION_RATE_HZ))
        rate = fs / self._dec
        # Detection-grid sizes, in decimated samples.
        self._n_mwi = max(1, round(MWI_S * rate))
        self._r = max(1, round(REFRACTORY_S * rate))
        self._t_wave = round(T_WAVE_S * rate)
        self._learn = max(1, round(LEARN_S * rate))
        # An MWI peak sits about the FIR's and the window's half-lengths after the QRS that caused it
        # (full-rate samples from here on).
        self._shift = (len(self._h) - 1) // 2 + ((self._n_mwi - 1) * self._dec) // 2
        # Refinement half-window: under half the refractory period, so two beats' windows never overlap
        # and refined indices stay strictly increasing.
        self._w = max(0, (self._r * self._dec) // 2 - 1)
        self.delay_samples = self._r * self._dec + self._shift + self._w
        self.learning_samples = self._learn * self._dec  # beats before this are released when it is reached
        # Raw history: the FIR's window, and the refinement window of the oldest unconfirmed candidate.
        self._nx = max(len(self._h) - 1, self._r * self._dec + self._shift + self._w)
        # Workspaces, allocated once: each holds its stage's history followed by the chunk in progress,
        # and strided views over them turn the FIR and the MWI into one dot product per output.
        #  - raw samples (full rate): nx of history, for the FIR windows and the refinement;
        self._buf = np.zeros(self._nx + _BLOCK)
        nh = len(self._h_rev)
        self._windows = [  # one view per phase of the decimation grid
            np.ndarray(
                shape=((len(self._buf) - phase - nh) // self._dec + 1, nh),
                dtype=np.float64,
                buffer=self._buf,
                offset=8 * phase,
                strides=(8 * self._dec, 8),
            )
            for phase in range(self._dec)
        ]
        #  - y^2 (decimated): the MWI window behind the oldest unconfirmed candidate, and far enough back
        #    that the previous beat's slope can still be found when a candidate within T_WAVE_S asks;
        self._ne = self._r + self._t_wave + self._n_mwi
        max_nd = _BLOCK // self._dec + 1
        self._ebuf = np.zeros(self._ne + max_nd)
        self._mwi_rows = np.ndarray(
            shape=(len(self._ebuf) - self._n_mwi + 1, self._n_mwi),
            dtype=np.float64,
            buffer=self._ebuf,
            strides=(8, 8),
        )
        self._ones = np.ones(self._n_mwi)
        #  - MWI (decimated): 2r of history for the +-r running maximum, and that maximum's output.
        self._mbuf = np.zeros(2 * self._r + max_nd)
        self._max_out = np.empty_like(self._mbuf)
        self._n = 0  # finite samples processed (internal index of the next one)
        self._nd = 0  # decimated samples produced: decimated sample j is sample j * dec
        # Learning phase: the first `_learn` MWI samples, and the candidates seen meanwhile, with their
        # slope and refined index computed while their samples were still in the histories.
        self._learn_m: np.ndarray | None = np.zeros(self._learn)
        self._pending: list[tuple[int, float, float, int]] = []
        # Pan-Tompkins state; positions and intervals in decimated samples.
        self._spk = 0.0
        self._npk = 0.0
        self._last: int | None = None  # MWI peak of the last beat (RR intervals are measured here)
        self._last_slope: float | None = 0.0  # None: not computed yet (lazily, from the y history)
        self._rr: deque[int] = deque(maxlen=8)
        self._rr_mean = DEFAULT_RR_S * rate
        self._irregular = False

    def _process(self, x: np.ndarray) -> np.ndarray:
        if len(x) <= _BLOCK:
            return self._block(x)
        # A long input (the batch twin) goes through in blocks: the same arithmetic as any other chunking,
        # with temporaries bounded by the block instead of the recording.
        found = [self._block(x[i : i + _BLOCK]) for i in range(0, len(x), _BLOCK)]
        return np.concatenate(found)

    def _block(self, x: np.ndarray) -> np.ndarray:
        n0, n = self._n, len(x)
        nx, ne, r, nm, dec = self._nx, self._ne, self._r, self._n_mwi, self._dec
        buf = self._buf
        if n0 == 0:
            # Pad with the first sample: the band-pass has zero DC gain, so the FIR starts at rest whatever
            # the offset (ADC counts, mV), with no start-up transient to mistake for a beat.
            buf[:nx] = x[0]
        buf[nx : nx + n] = x
        self._n = n0 + n
        j0 = self._nd
        nd = (n0 + n - 1) // dec - j0 + 1  # decimated samples j * dec that fall in this chunk
        if nd <= 0:
            buf[:nx] = buf[n : n + nx]
            return _NO_BEATS
        self._nd = j0 + nd
        # The FIR, evaluated only at the decimated samples (the absolute grid of multiples of dec, whatever
        # the chunking): one dot product per output over a strided view whose rows are the overlapping
        # input windows (no copy). Each row's dot product runs over the same samples in the same order
        # wherever the chunk starts, so streaming equals batch bit for bit; the MWI below likewise.
        first = j0 * dec - self._fir_back - (n0 - nx)  # buf index of the first window's start
        y = self._windows[first % dec][first // dec : first // dec + nd].dot(self._h_rev)
        ebuf, mbuf = self._ebuf, self._mbuf
        np.multiply(y, y, out=ebuf[ne : ne + nd])  # ebuf[0] is decimated sample j0 - ne
        # MWI: the sum of y^2 over the nm decimated samples up to each sample; mbuf[0] is j0 - 2r.
        self._mwi_rows[ne - nm + 1 : ne - nm + 1 + nd].dot(self._ones, out=mbuf[2 * r : 2 * r + nd])
        mb = mbuf[: 2 * r + nd]
        # Positions whose whole +-r window is known: j0 - r .. j0 + nd - r - 1, i.e. mb[r : r + nd]. A
        # candidate is the maximum of its window; inside a plateau (a flat signal) only the first sample.
        top = self._max_out[: 2 * r + nd]
        maximum_filter1d(mb, 2 * r + 1, output=top)  # a given output array halves SciPy's call overhead
        cand = np.flatnonzero(mb[r : r + nd] == top[r : r + nd]).tolist()
        beats: list[int] = []
        learning = self._learn_m is not None
        if learning:
            done = self._collect_learning(j0, mb[2 * r :])
        for k in cand:
            # A few candidates per second: scalar look-ups beat building arrays for them.
            v = float(mb[r + k])
            if v <= mb[r + k - 1]:
                continue  # a plateau's later samples
            j = j0 - r + k
            if learning:
                if j >= 0:
                    self._pending.append((j, v, self._slope(j, j0), self._refine(j, n0)))
            elif self._decide(j, v, None, j0):
                beats.append(self._refine(j, n0))
        if learning and done:
            self._release_pending(beats)
        # Keep the newest histories at the front of the workspaces for the next chunk.
        buf[:nx] = buf[n : n + nx]  # numpy handles the overlap
        ebuf[:ne] = ebuf[nd : nd + ne]
        mbuf[: 2 * r] = mbuf[nd : nd + 2 * r]
        return np.array(beats, dtype=np.int64) if beats else _NO_BEATS

    def _release_pending(self, beats: list[int]) -> None:
        """Learning is complete: decide the candidates held back during it, in order."""
        for j, v, slope, refined in self._pending:
            if self._decide(j, v, slope):
                beats.append(refined)
        self._pending = []

    def _collect_learning(self, j0: int, m: np.ndarray) -> bool:
        """Store the MWI of the learning phase (``m`` starts at decimated sample ``j0``); when it is
        complete, set the initial levels (once, from the whole stored array, so that chunking cannot
        change the floating-point sum)."""
        assert self._learn_m is not None
        take = min(len(m), self._learn - j0)
        if take > 0:
            self._learn_m[j0 : j0 + take] = m[:take]
        if j0 + len(m) < self._learn:
            return False
        self._spk = float(self._learn_m.max())
        self._npk = float(self._learn_m.mean())
        self._learn_m = None
        return True

    def _slope(self, j: int, j0: int) -> float:
        """Largest squared slope (band-passed derivative, squared) within the MWI window that ends at
        candidate ``j``, from the y^2 workspace of the chunk that starts at decimated sample ``j0``.
        Squares compare like the slopes themselves: half the slope is a quarter of its square."""
        stop = j + 1 - (j0 - self._ne)
        return float(self._ebuf[stop - self._n_mwi : stop].max())

    def _refine(self, j: int, n0: int) -> int:
        """Sample of the largest deviation from the local median of the raw signal around the QRS that
        produced the MWI peak at decimated sample ``j`` (raw workspace of the chunk starting at ``n0``)."""
        start = j * self._dec - self._shift - self._w  # first sample of the window
        w = self._buf[start - (n0 - self._nx) : start - (n0 - self._nx) + 2 * self._w + 1]
        median = float(np.partition(w, self._w)[self._w])  # odd length: the exact median, cheaply
        # The largest |w - median| is at the maximum or the minimum: two scans instead of building |w - m|.
        hi, lo = int(w.argmax()), int(w.argmin())
        up, down = float(w[hi]) - median, median - float(w[lo])
        k = hi if up > down or (up == down and hi < lo) else lo
        # Clamped at 0: at the very start the window reaches into the padding before the first sample.
        return max(0, start + k)

    def _decide(self, p: int, v: float, slope: float | None, j0: int = 0) -> bool:
        """Pan-Tompkins for one candidate (MWI peak at decimated sample ``p``, height ``v``); updates the
        levels and returns whether it is a beat."""
        gap = None if self._last is None else p - self._last
        if gap is not None and gap > MISSED_RR * self._rr_mean:
            self._spk *= 0.5
            self._npk *= 0.5
        thr1 = self._npk + 0.25 * (self._spk - self._npk)
        if self._irregular:
            thr1 *= 0.5
        beat = strong = False
        if gap is not None and gap < self._r:
            pass  # refractory
        elif v > thr1:
            if gap is not None and gap < self._t_wave:
                assert self._last is not None
                if slope is None:
                    slope = self._slope(p, j0)
                if self._last_slope is None:
                    self._last_slope = self._slope(self._last, j0)
                strong = slope >= 0.25 * self._last_slope  # squared slopes: else a T wave
            else:
                strong = True
            beat = strong
        elif v > 0.5 * thr1 and gap is not None and gap > SEARCHBACK_RR * self._rr_mean:
            beat = True
        level = min(v, LEVEL_CLIP * self._spk)
        if not beat:
            self._npk = 0.125 * level + 0.875 * self._npk
            return False
        # Pan & Tompkins weigh a searched-back beat more: its level was evidently too high.
        self._spk = (0.125 * level + 0.875 * self._spk) if strong else (0.25 * level + 0.75 * self._spk)
        # Its slope is computed only if a candidate within T_WAVE_S asks for it (most beats are never
        # followed that closely); learning-phase beats bring theirs along, their y being long gone.
        self._last_slope = slope
        if gap is not None:
            self._rr.append(gap)
            mean = sum(self._rr) / len(self._rr)
            self._rr_mean = mean
            # Irregular rhythm: any of the last 8 intervals outside 92-116 % of their mean.
            self._irregular = len(self._rr) >= 2 and not (
                min(self._rr) > 0.92 * mean and max(self._rr) < 1.16 * mean
            )
        self._last = p
        return True


class StreamingPpgDetector(_BeatStream):
    """Systolic peaks from a PPG, online (Elgendi 2013 made causal; see the module docstring).
    Pulses are assumed to point up (more blood, larger value), as PLETH channels of monitors and
    most wearables' green-light PPG after their own inversion do."""

    def __init__(self, fs: float) -> None:
        super().__init__(_check_fs(fs, 2 * PPG_BAND_HZ[1], "PPG beat detection"))
        fs = self.fs
        self._filter = CausalFilter(design_bandpass(*PPG_BAND_HZ, fs, order=PPG_FILTER_ORDER))
        # The filter starts from rest (zero state); subtracting the first sample makes the stream start
        # at 0 too, so a PPG's large DC level does not ring through the band-pass as a burst of false
        # pulses. A constant does not change the band-passed signal otherwise (zero DC gain).
        self._offset: float | None = None
        self._n1 = max(1, round(PEAK_WINDOW_S * fs)) | 1  # odd: centred windows on whole samples
        self._n2 = max(3, round(BEAT_WINDOW_S * fs)) | 1
        self._h1, self._h2 = self._n1 // 2, self._n2 // 2
        self._k1 = np.full(self._n1, 1.0 / self._n1)
        self._k2 = np.full(self._n2, 1.0 / self._n2)
        alpha = 1.0 / (OFFSET_MEAN_S * fs)
        self._mean_b, self._mean_a = np.array([alpha]), np.array([1.0, alpha - 1.0])
        self._mean_zi = np.zeros(1)
        self._min_interval = round(MIN_PULSE_INTERVAL_S * fs)
        self._max_block = max(self._n1, round(MAX_BLOCK_S * fs))
        self.delay_samples = self._max_block + self._h2
        self._z_hist = np.zeros(self._n2 - 1)
        self._y_hist = np.zeros(self._h2)
        self._n = 0
        # Block state: whether the last centre was inside a block (or in the rest of a force-closed one).
        self._in_block = False
        self._suppress = False
        self._start = 0
        self._best_v = -math.inf
        self._best_i = 0
        self._last_peak: int | None = None

    def _process(self, x: np.ndarray) -> np.ndarray:
        if len(x) <= _BLOCK:
            return self._block(x)
        found = [self._block(x[i : i + _BLOCK]) for i in range(0, len(x), _BLOCK)]  # bounded temporaries
        return np.concatenate(found)

    def _block(self, x: np.ndarray) -> np.ndarray:
        n0, n = self._n, len(x)
        if self._offset is None:
            self._offset = float(x[0])
        y = self._filter.process(x - self._offset)
        z = np.maximum(y, 0.0)
        z *= z
        zb = np.concatenate((self._z_hist, z))  # zb[0] is sample n0 - (n2 - 1)
        # Both averages centred on samples n0 - h2 .. n0 + n - h2 - 1 (the newest the beat window allows).
        d = self._h2 - self._h1
        ma_beat = np.convolve(zb, self._k2, "valid")
        ma_peak = np.convolve(zb[d : len(zb) - d], self._k1, "valid")
        mean, self._mean_zi = signal.lfilter(self._mean_b, self._mean_a, z, zi=self._mean_zi)
        inside = ma_peak > ma_beat + BEAT_OFFSET * mean
        yb = np.concatenate((self._y_hist, y))  # yb[k] is sample n0 - h2 + k: the same centres
        self._z_hist = zb[len(zb) - (self._n2 - 1) :]  # views of block-sized arrays: cheap, bounded
        self._y_hist = yb[len(yb) - self._h2 :]
        self._n = n0 + n
        c0 = n0 - self._h2
        # Runs of equal `inside`: the only Python loop, over block edges (a few per second). The first run
        # continues whatever state the previous chunk ended in.
        edges = np.flatnonzero(inside[1:] != inside[:-1]) + 1
        bounds = [0, *edges.tolist(), n]
        peaks: list[int] = []
        for a, b in pairwise(bounds):
            if not inside[a]:
                if self._in_block:
                    self._close(c0 + a, peaks)
                self._suppress = False
                continue
            if self._suppress:
                continue
            if not self._in_block:
                self._in_block = True
                self._start = c0 + a
                self._best_v = -math.inf
            # A block reaching MAX_BLOCK is closed at that length, and the rest of it ignored.
            limit = self._start + self._max_block - c0
            stop = min(b, limit)
            if stop > a:
                i = a + int(np.argmax(yb[a:stop]))
                if yb[i] > self._best_v:
                    self._best_v, self._best_i = float(yb[i]), c0 + i
            if limit <= b:
                self._close(self._start + self._max_block, peaks)
                self._suppress = True  # until `inside` next turns false
        return np.array(peaks, dtype=np.int64) if peaks else _NO_BEATS

    def _close(self, end: int, peaks: list[int]) -> None:
        """End the open block at sample ``end`` (exclusive): keep its peak if it is long enough and not
        within the minimum pulse interval of the previous peak."""
        self._in_block = False
        if end - self._start < self._n1:
            return
        p = self._best_i
        if self._last_peak is not None and p - self._last_peak <= self._min_interval:
            return
        self._last_peak = p
        peaks.append(p)


def detect_ecg_beats(x: np.ndarray, fs: float) -> np.ndarray:
    """Batch twin of :class:`StreamingEcgDetector`: the streaming detector fed the whole signal at once."""
    return StreamingEcgDetector(fs).push(x)


def detect_ppg_beats(x: np.ndarray, fs: float) -> np.ndarray:
    """Batch twin of :class:`StreamingPpgDetector`: the streaming detector fed the whole signal at once."""
    return StreamingPpgDetector(fs).push(x)
