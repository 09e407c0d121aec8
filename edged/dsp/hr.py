"""Heart rate (bpm readings at irregular times) as a model-ready signal: the interval it implies, held.

What a BLE heart-rate watch without RR intervals, or a watch export, gives is a heart rate in bpm every
few seconds (the Apple Watch of Walch et al. 2019: every 2-10 s). A model needs a regularly sampled
signal, so every sample time ``k / fs`` carries the interval the most recent reading implies,
``60 / bpm`` seconds (the form of edged's inter-beat-interval signal, :mod:`edged.dsp.ibi`), held until
the next reading. It is 0 (missing):

* before the first reading,
* once the last reading is ``max_silence`` seconds old or older (a watch that stopped sending),
* while the last reading is implausible (``bpm`` outside ``MIN_BPM .. MAX_BPM``; a strap off the skin
  sends 0).

The hold is causal with no delay: a sample depends only on readings at or before its time.
:func:`hold_hr` is the batch form that builds training inputs; :class:`StreamingHrHold` is its online
twin in the daemon. They give identical samples (tested).
"""

from __future__ import annotations

import numpy as np

from edged.dsp.ibi import _quantize, _samples_before

HR_FS = 1.0  # a reading every 2-10 s carries nothing a faster rate would keep
MAX_HR_SILENCE = 30.0  # s: a reading older than this no longer says what the heart does now
MIN_BPM, MAX_BPM = 25.0, 240.0


def bpm_to_interval(bpm: np.ndarray) -> np.ndarray:
    """``60 / bpm`` in seconds, 0 where the reading is implausible."""
    bpm = np.asarray(bpm, dtype=np.float64)
    ok = (bpm >= MIN_BPM) & (bpm <= MAX_BPM)
    return np.where(ok, 60.0 / np.where(ok, bpm, 1.0), 0.0)


def _held(sample_times: np.ndarray, times: np.ndarray, values: np.ndarray, max_silence: float) -> np.ndarray:
    out = np.zeros(len(sample_times), dtype=np.float32)
    if len(times) == 0:
        return out
    idx = np.searchsorted(times, sample_times, side="right") - 1  # the latest reading at or before
    inside = idx >= 0
    fresh = np.zeros(len(sample_times), dtype=bool)
    fresh[inside] = sample_times[inside] - times[idx[inside]] < max_silence
    out[fresh] = values[idx[fresh]]
    return out


def hold_hr(
    times: np.ndarray, bpm: np.ndarray, n_samples: int, *, fs: float = HR_FS, max_silence: float = MAX_HR_SILENCE
) -> np.ndarray:
    """Held intervals (float32 seconds, 0 = missing) at sample times ``k / fs``, ``k < n_samples``, from
    readings ``bpm`` taken at ``times`` (seconds on the same axis, non-decreasing; of equal times the
    last reading counts)."""
    times = _quantize(times)
    if len(times) != len(bpm):
        raise ValueError(f"{len(times)} times for {len(bpm)} heart-rate readings")
    if np.any(np.diff(times) < 0):
        raise ValueError("heart-rate reading times must not decrease")
    t = np.arange(n_samples, dtype=np.float64) / fs
    return _held(t, times, bpm_to_interval(bpm), max_silence)


class StreamingHrHold:
    """Online :func:`hold_hr`: feed readings as they arrive, get the samples that became determined, in
    order from sample 0. A sample at time ``t`` is determined once a reading after ``t`` arrives or the
    stream says nothing arrived before a later time (:meth:`advance_to`), so silence still closes epochs.
    Readings older than the newest one already taken are dropped and counted (``out_of_order``)."""

    def __init__(self, *, fs: float = HR_FS, max_silence: float = MAX_HR_SILENCE):
        self.fs = fs
        self.max_silence = max_silence
        self.next_sample = 0
        self.out_of_order = 0
        self._last_time: float | None = None
        self._last_value = 0.0

    def _emit_until(self, stop: int, times: np.ndarray, values: np.ndarray) -> np.ndarray:
        n = stop - self.next_sample
        if n <= 0:
            return np.zeros(0, dtype=np.float32)
        t = (self.next_sample + np.arange(n, dtype=np.float64)) / self.fs
        self.next_sample = stop
        return _held(t, times, values, self.max_silence)

    def _with_last(self, times: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self._last_time is None:
            return times, values
        return np.concatenate(([self._last_time], times)), np.concatenate(([self._last_value], values))

    def push(self, times: np.ndarray, bpm: np.ndarray) -> np.ndarray:
        """Add readings (times in seconds, non-decreasing); return the samples now determined."""
        times = _quantize(times)
        values = bpm_to_interval(bpm)
        if self._last_time is not None or len(times):
            floor = self._last_time if self._last_time is not None else -np.inf
            keep = times >= np.maximum.accumulate(np.concatenate(([floor], times)))[:-1]
            self.out_of_order += int((~keep).sum())
            times, values = times[keep], values[keep]
        if len(times) == 0:
            return np.zeros(0, dtype=np.float32)
        all_times, all_values = self._with_last(times, values)
        stop = max(self.next_sample, _samples_before(float(times[-1]), self.fs))
        out = self._emit_until(stop, all_times, all_values)
        self._last_time, self._last_value = float(times[-1]), float(values[-1])
        return out

    def advance_to(self, t: float) -> np.ndarray:
        """No reading arrived before time ``t``: emit the samples before ``t``."""
        stop = max(self.next_sample, _samples_before(t, self.fs))
        times, values = self._with_last(np.zeros(0), np.zeros(0))
        return self._emit_until(stop, times, values)
