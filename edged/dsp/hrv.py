"""Heart rate and heart-rate variability features per epoch, from (corrected) beat times.

Feed this the output of :mod:`edged.dsp.artefacts`: it does no artefact correction of its own, it only
refuses intervals that cannot be a normal-to-normal (NN) interval at all (outside ``MIN_NN_S`` ..
``MAX_IBI``, the IBI stream's missing-data limit), and reports how much of the epoch the valid intervals
cover, so a consumer can tell "low HRV" from "no data".

Conventions (those of the Task Force of the ESC/NASPE 1996 and of neurokit2's ``hrv_time``, against which
the tests hold these features to 1 %):

* the epoch's intervals are those between consecutive beats inside ``[epoch_start, epoch_start +
  epoch_seconds)``: an interval straddling an epoch edge belongs to neither epoch's time-domain features
  (only to the coverage figure), so a feature never depends on beats outside its epoch;
* successive differences are taken only between two valid intervals that share a beat;
* SDNN uses ``ddof=1``; pNN50 is the count of successive differences over 50 ms divided by the number of
  NN intervals (the Task Force definition, and neurokit2's), in percent;
* LF (0.04-0.15 Hz) and HF (0.15-0.4 Hz) power in ms^2 come from a Lomb-Scargle periodogram of the NN
  intervals over the causal window ``[epoch_end - history_seconds, epoch_end)`` (5 min by default, the
  Task Force's short-term length). Lomb-Scargle takes the intervals at their own, uneven times, so a gap
  or a removed beat leaves a hole instead of the made-up samples a resampling would need. Spectral
  features need ``MIN_SPECTRAL_S`` seconds of valid intervals in that window (LF's slowest cycle is 25 s).

Every feature that is undefined (too few intervals, no spectrum) is NaN; the dict always has every key.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from edged.dsp.ibi import MAX_IBI

MIN_NN_S = 0.3  # 200 bpm: shorter intervals are not heartbeats
LF_BAND = (0.04, 0.15)
HF_BAND = (0.15, 0.4)
DEFAULT_HISTORY_S = 300.0
MIN_SPECTRAL_S = 120.0
SPECTRUM_STEP_HZ = 0.002  # frequency grid of the periodogram (finer than the 1/300 Hz resolution of 5 min)

FEATURE_NAMES: tuple[str, ...] = (
    "hr_mean_bpm",
    "nn_mean_ms",
    "sdnn_ms",
    "rmssd_ms",
    "pnn50_pct",
    "lf_ms2",
    "hf_ms2",
    "lf_hf",
    "valid_share",
    "n_beats",
)

_FREQS = np.arange(LF_BAND[0], HF_BAND[1] + SPECTRUM_STEP_HZ / 2, SPECTRUM_STEP_HZ)
_LF = (_FREQS >= LF_BAND[0]) & (_FREQS < LF_BAND[1])
_HF = (_FREQS >= HF_BAND[0]) & (_FREQS <= HF_BAND[1])


def _as_beats(beat_times: np.ndarray) -> np.ndarray:
    beats = np.asarray(beat_times, dtype=np.float64)
    if beats.ndim != 1:
        raise ValueError(f"beat times must be 1-D, got shape {beats.shape}")
    if len(beats) and not np.all(np.isfinite(beats)):
        raise ValueError("beat times must be finite")
    if np.any(np.diff(beats) <= 0):
        raise ValueError("beat times must be strictly increasing")
    return beats


def _valid(rr: np.ndarray) -> np.ndarray:
    return (rr >= MIN_NN_S) & (rr < MAX_IBI)


def valid_coverage(beats: np.ndarray, start: float, stop: float, valid: np.ndarray | None = None) -> float:
    """Seconds of ``[start, stop)`` covered by intervals between consecutive ``beats`` for which ``valid``
    (one flag per interval; default: physiologically plausible) holds, intervals clipped to the span."""
    if len(beats) < 2 or stop <= start:
        return 0.0
    rr = np.diff(beats)
    ok = _valid(rr) if valid is None else valid
    lo = np.maximum(beats[:-1], start)
    hi = np.minimum(beats[1:], stop)
    return float(np.sum(np.where(ok, np.clip(hi - lo, 0.0, None), 0.0)))


def lomb_scargle_psd(t: np.ndarray, y: np.ndarray, freqs: np.ndarray) -> np.ndarray:
    """One-sided power spectral density (units of ``y`` squared per Hz) of samples ``y`` at uneven times
    ``t``, by the Lomb-Scargle periodogram (with its time offset tau, so it is invariant to shifting
    ``t``). Scaled so that a sinusoid of amplitude A contributes its variance A^2/2 when the density is
    summed over its peak: ``P_LS = |sum|^2 / N`` for a sinusoid, and a periodogram's peak spreads over
    ~1/T Hz, hence ``PSD = 2 T P_LS / N`` with T the span. Vectorised over (frequencies x samples)."""
    y = y - y.mean()
    n = len(y)
    span = float(t[-1] - t[0])
    w = 2 * np.pi * freqs[:, None]
    tau = np.arctan2(np.sin(2 * w * t).sum(axis=1), np.cos(2 * w * t).sum(axis=1))[:, None] / (2 * w)
    arg = w * (t - tau)
    c, s = np.cos(arg), np.sin(arg)
    p = 0.5 * ((c @ y) ** 2 / (c * c).sum(axis=1) + (s @ y) ** 2 / (s * s).sum(axis=1))
    return 2 * span * p / n


def _spectral(beats: np.ndarray, start: float, stop: float) -> tuple[float, float, float]:
    sel = beats[(beats >= start) & (beats < stop)]
    if len(sel) < 3:
        return math.nan, math.nan, math.nan
    rr = np.diff(sel)
    ok = _valid(rr)
    if float(rr[ok].sum()) < MIN_SPECTRAL_S:
        return math.nan, math.nan, math.nan
    # Each interval is placed at the beat that ends it (the time it becomes known), in ms.
    psd = lomb_scargle_psd(sel[1:][ok], rr[ok] * 1000.0, _FREQS)
    lf = float(psd[_LF].sum() * SPECTRUM_STEP_HZ)
    hf = float(psd[_HF].sum() * SPECTRUM_STEP_HZ)
    return lf, hf, (lf / hf if hf > 0 else math.nan)


def epoch_features(
    beat_times: np.ndarray,
    epoch_start: float,
    epoch_seconds: float = 30.0,
    history_seconds: float = DEFAULT_HISTORY_S,
) -> dict[str, float]:
    """HR/HRV features of the epoch ``[epoch_start, epoch_start + epoch_seconds)`` from beat times
    (seconds, strictly increasing, on the same axis; beats outside the windows are ignored, so passing a
    whole night or only the last few minutes gives the same result). Keys: :data:`FEATURE_NAMES`.

    ``hr_mean_bpm`` is 60 / mean NN; ``valid_share`` is the share of the epoch covered by valid
    intervals (including the parts of intervals straddling its edges); ``n_beats`` counts beats inside it.
    """
    if not (epoch_seconds > 0 and history_seconds >= epoch_seconds):
        raise ValueError(
            f"need epoch_seconds > 0 and history_seconds >= epoch_seconds, got {epoch_seconds!r}, "
            f"{history_seconds!r}"
        )
    beats = _as_beats(beat_times)
    stop = epoch_start + epoch_seconds
    out = dict.fromkeys(FEATURE_NAMES, math.nan)
    i0, i1 = np.searchsorted(beats, [epoch_start, stop])
    inside = beats[i0:i1]
    out["n_beats"] = float(len(inside))
    # Coverage sees the intervals into and out of the epoch too.
    out["valid_share"] = valid_coverage(beats[max(i0 - 1, 0) : i1 + 1], epoch_start, stop) / epoch_seconds

    rr = np.diff(inside)
    ok = _valid(rr)
    nn = rr[ok] * 1000.0
    if len(nn):
        out["nn_mean_ms"] = float(nn.mean())
        out["hr_mean_bpm"] = 60_000.0 / out["nn_mean_ms"]
    if len(nn) >= 2:
        out["sdnn_ms"] = float(np.std(nn, ddof=1))
    pair = ok[1:] & ok[:-1]  # successive differences only between two valid, adjacent intervals
    if pair.any():
        diffs = np.diff(rr * 1000.0)[pair]
        out["rmssd_ms"] = float(np.sqrt(np.mean(diffs**2)))
        # Rounded to 1 us first: at 360 Hz an 18-sample difference is exactly 50 ms, which float noise would
        # otherwise count or not at random ("more than 50 ms" excludes it).
        out["pnn50_pct"] = float(np.sum(np.abs(np.round(diffs, 3)) > 50.0) / len(nn) * 100.0)
    out["lf_ms2"], out["hf_ms2"], out["lf_hf"] = _spectral(beats, stop - history_seconds, stop)
    return out


def night_features(
    beat_times: np.ndarray,
    n_epochs: int,
    epoch_seconds: float = 30.0,
    history_seconds: float = DEFAULT_HISTORY_S,
) -> dict[str, np.ndarray]:
    """Batch twin of :class:`StreamingEpochFeatures`: features of epochs ``0 .. n_epochs - 1`` (epoch
    ``k`` starts at ``k * epoch_seconds``), as one float64 array per feature."""
    beats = _as_beats(beat_times)
    rows = [epoch_features(beats, k * epoch_seconds, epoch_seconds, history_seconds) for k in range(n_epochs)]
    return _stack(rows)


def _stack(rows: Iterable[dict[str, float]]) -> dict[str, np.ndarray]:
    rows = list(rows)
    return {name: np.array([r[name] for r in rows], dtype=np.float64) for name in FEATURE_NAMES}


class StreamingEpochFeatures:
    """Online :func:`night_features`: push final beat times (e.g. a
    :class:`~edged.dsp.artefacts.StreamingBeatCorrector`'s output) as they come; each call returns
    ``(epoch_index, features)`` for the epochs that closed. Epoch ``k`` closes once a beat at or after its
    end is known, or :meth:`advance_to` declares that time passed without one (then nothing before it can
    still arrive: behind a :class:`~edged.dsp.artefacts.StreamingBeatCorrector`, advance to its
    ``final_until``, not to the wall clock, since its waiting beats are not out yet). Only beats from ``history_seconds`` before the next epoch's end on are kept (plus one to
    measure the interval into the window), so memory is flat over a night."""

    def __init__(self, epoch_seconds: float = 30.0, history_seconds: float = DEFAULT_HISTORY_S) -> None:
        if not (epoch_seconds > 0 and history_seconds >= epoch_seconds):
            raise ValueError(
                f"need epoch_seconds > 0 and history_seconds >= epoch_seconds, got {epoch_seconds!r}, "
                f"{history_seconds!r}"
            )
        self.epoch_seconds = float(epoch_seconds)
        self.history_seconds = float(history_seconds)
        self.next_epoch = 0
        self._beats = np.zeros(0)

    def push(self, beat_times: np.ndarray) -> list[tuple[int, dict[str, float]]]:
        """Add final beat times (after any earlier ones); return the epochs this closes."""
        beats = _as_beats(beat_times)
        if len(beats) == 0:
            return []
        if len(self._beats) and beats[0] <= self._beats[-1]:
            raise ValueError(f"beat at {beats[0]!r} s is not after the previous beat ({self._beats[-1]!r} s)")
        if beats[0] < self.next_epoch * self.epoch_seconds:
            raise ValueError(f"beat at {beats[0]!r} s falls in an epoch already closed")
        self._beats = np.concatenate((self._beats, beats))
        return self._close(float(beats[-1]))

    def advance_to(self, t: float) -> list[tuple[int, dict[str, float]]]:
        """Declare that no beat arrived before ``t``: closes every epoch ending at or before ``t``."""
        return self._close(float(t))

    def _close(self, t: float) -> list[tuple[int, dict[str, float]]]:
        out = []
        # One Python step per epoch closed (at most a few per call in live use).
        while (self.next_epoch + 1) * self.epoch_seconds <= t:
            k = self.next_epoch
            start = k * self.epoch_seconds
            out.append((k, epoch_features(self._beats, start, self.epoch_seconds, self.history_seconds)))
            self.next_epoch += 1
        # Keep what the next epoch's windows need, plus one earlier beat (the interval into the window).
        keep_from = (self.next_epoch + 1) * self.epoch_seconds - self.history_seconds
        first = max(int(np.searchsorted(self._beats, keep_from)) - 1, 0)
        if first:
            self._beats = self._beats[first:]
        return out
