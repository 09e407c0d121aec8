"""Inter-beat intervals as a model-ready signal: the WatchSleepNet sample-and-hold form.

Every sample from beat ``i`` up to (not including) beat ``i + 1`` carries ``IBI_i = t[i+1] - t[i]`` in
seconds; an interval of ``max_ibi`` seconds or more is missing data and carries 0, as does every sample
before the first beat. At 25 Hz a 30-s epoch is 750 samples.

:func:`sample_and_hold` is the batch form used to build training inputs; :class:`StreamingIbi` is its
online twin used by the daemon. They give identical samples (tested), which is what makes a model see live
exactly what it saw in training.
"""

from __future__ import annotations

import math

import numpy as np

IBI_FS = 25.0
MAX_IBI = 2.0
# Beat times are rounded to this before use. Beats on a 4-ms grid (250-Hz ECG) and samples on a 40-ms grid
# coincide often; without rounding, a beat time summed interval by interval differs from the same time
# summed in one cumsum by ~1e-13 s, which moves such a sample to the other interval. A microsecond is far
# below any device's timing resolution (BLE RR: 1/1024 s).
BEAT_RESOLUTION = 1e-6


def _quantize(beats: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(beats, dtype=np.float64) / BEAT_RESOLUTION) * BEAT_RESOLUTION


def sample_and_hold(
    beat_times: np.ndarray, n_samples: int, *, fs: float = IBI_FS, max_ibi: float = MAX_IBI
) -> np.ndarray:
    """IBI samples at ``fs`` for sample times ``k / fs``, ``k < n_samples``; beat times in seconds on the
    same time axis, strictly increasing. Samples from the last beat on are 0 (no interval is known there)."""
    beats = _quantize(beat_times)
    out = np.zeros(n_samples, dtype=np.float32)
    if len(beats) < 2 or n_samples == 0:
        return out
    ibi = np.diff(beats)
    ibi = np.where(ibi < max_ibi, ibi, 0.0)
    t = np.arange(n_samples, dtype=np.float64) / fs
    # Index of the last beat at or before each sample time; -1 before the first beat.
    idx = np.searchsorted(beats, t, side="right") - 1
    inside = (idx >= 0) & (idx < len(ibi))
    out[inside] = ibi[idx[inside]]
    return out


def _samples_before(t: float, fs: float) -> int:
    """How many sample times ``k / fs`` lie strictly before ``t``, computed with the same arithmetic as the
    batch path (a sample exactly on a beat belongs to the interval that beat opens)."""
    k = max(0, math.ceil(t * fs))
    while k > 0 and (k - 1) / fs >= t:
        k -= 1
    while k / fs < t:
        k += 1
    return k


class StreamingIbi:
    """Online :func:`sample_and_hold`: feed beat times as they are known, get the samples that became
    determined, in order from sample 0.

    A sample at time ``t`` is determined once a beat at or after ``t`` is known (it then lies inside a
    complete interval), or once ``t`` is at least ``max_ibi`` after the last known beat (whatever comes
    next, the interval is too long and the sample is 0): see :meth:`advance_to`, which is how silence
    from a disconnected device still closes epochs. Delay: at most one interval, under ``max_ibi``.
    """

    def __init__(self, *, fs: float = IBI_FS, max_ibi: float = MAX_IBI):
        self.fs = fs
        self.max_ibi = max_ibi
        self.next_sample = 0  # index of the first sample not yet emitted
        self.last_beat: float | None = None

    def _emit_until(self, stop: int, beats: np.ndarray) -> np.ndarray:
        """Samples ``next_sample .. stop-1``, all lying before ``beats[-1]`` or in a known-missing span."""
        n = stop - self.next_sample
        if n <= 0:
            return np.zeros(0, dtype=np.float32)
        t = (self.next_sample + np.arange(n, dtype=np.float64)) / self.fs
        out = np.zeros(n, dtype=np.float32)
        if len(beats) >= 2:
            ibi = np.diff(beats)
            ibi = np.where(ibi < self.max_ibi, ibi, 0.0)
            idx = np.searchsorted(beats, t, side="right") - 1
            inside = (idx >= 0) & (idx < len(ibi))
            out[inside] = ibi[idx[inside]]
        self.next_sample = stop
        return out

    def push_beats(self, beat_times: np.ndarray) -> np.ndarray:
        """Add beats (seconds, increasing, after any earlier ones); return newly determined samples."""
        beats = _quantize(beat_times)
        if len(beats) == 0:
            return np.zeros(0, dtype=np.float32)
        if self.last_beat is not None:
            beats = np.concatenate(([self.last_beat], beats))
        # Samples strictly before the newest beat are determined.
        stop = max(self.next_sample, _samples_before(beats[-1], self.fs))
        out = self._emit_until(stop, beats)
        self.last_beat = float(beats[-1])
        return out

    def advance_to(self, t: float) -> np.ndarray:
        """Declare that no beat arrived before time ``t``: emit the samples that this determines (zeros)."""
        if self.last_beat is None:
            horizon = t  # no beat yet: everything before t is missing
        elif t - self.last_beat >= self.max_ibi - BEAT_RESOLUTION:  # last_beat is rounded; t need not be
            horizon = t
        else:
            return np.zeros(0, dtype=np.float32)
        stop = max(self.next_sample, _samples_before(horizon, self.fs))
        n = stop - self.next_sample
        self.next_sample = stop
        return np.zeros(max(n, 0), dtype=np.float32)
