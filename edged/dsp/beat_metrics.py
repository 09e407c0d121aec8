"""Scoring detected beats against reference beats: one-to-one matching within a tolerance, Se and PPV.

The usual beat-detector scoring (as in the MIT-BIH literature and sleepecg's ``compare_heartbeats``): a
detection within ``tolerance`` samples of a reference beat is a true positive, each reference beat and
each detection is used at most once, unmatched detections are false positives and unmatched reference
beats false negatives. Sensitivity Se = TP / (TP + FN), positive predictivity PPV = TP / (TP + FP).
Always state the tolerance with the figures (150 ms is common; sleepecg reports 100 ms on MITDB).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import NamedTuple

import numpy as np


class BeatScore(NamedTuple):
    """Counts of a matching; a plain ``(tp, fp, fn)`` tuple with the usual rates attached."""

    tp: int
    fp: int
    fn: int

    @property
    def sensitivity(self) -> float:
        """Se = TP / (TP + FN); NaN when there is no reference beat."""
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else math.nan

    @property
    def positive_predictivity(self) -> float:
        """PPV (+P) = TP / (TP + FP); NaN when nothing was detected."""
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else math.nan

    @property
    def f1(self) -> float:
        """Harmonic mean of Se and PPV: 2 TP / (2 TP + FP + FN); NaN when both sets are empty."""
        return 2 * self.tp / (2 * self.tp + self.fp + self.fn) if self.tp + self.fp + self.fn else math.nan

    @staticmethod
    def pooled(scores: Iterable[BeatScore]) -> BeatScore:
        """Gross (beat-weighted) statistics over several records: counts added, not rates averaged."""
        tp = fp = fn = 0
        for s in scores:
            tp, fp, fn = tp + s.tp, fp + s.fp, fn + s.fn
        return BeatScore(tp, fp, fn)


def _as_indices(name: str, x: np.ndarray) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of beat positions, got shape {a.shape}")
    if len(a) and not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains non-finite beat positions")
    return a


def pair_beats(ref: np.ndarray, det: np.ndarray, tolerance: float) -> tuple[np.ndarray, np.ndarray]:
    """Greedy one-to-one matching: among all (reference, detection) pairs at most ``tolerance`` apart,
    repeatedly take the closest pair whose two beats are both still free (ties: earlier reference beat,
    then earlier detection). Returns the matched positions as two index arrays into ``ref`` and ``det``,
    ordered by reference beat.

    Works on any unit (samples or seconds) as long as all three arguments share it; the inputs need not be
    sorted. Closest-first rather than first-come: a detection between two reference beats goes to the one
    it is nearer, whichever is scanned first.
    """
    ref = _as_indices("ref", ref)
    det = _as_indices("det", det)
    if not tolerance >= 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance!r}")
    empty = np.zeros(0, dtype=np.int64)
    if len(ref) == 0 or len(det) == 0:
        return empty, empty
    r_order = np.argsort(ref, kind="stable")
    d_order = np.argsort(det, kind="stable")
    r_sorted, d_sorted = ref[r_order], det[d_order]
    # Every candidate pair, vectorised: detections in [r - tol, r + tol] for each reference beat.
    lo = np.searchsorted(d_sorted, r_sorted - tolerance, side="left")
    hi = np.searchsorted(d_sorted, r_sorted + tolerance, side="right")
    counts = hi - lo
    if counts.sum() == 0:
        return empty, empty
    ri = np.repeat(np.arange(len(r_sorted)), counts)
    di = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts) + np.repeat(lo, counts)
    dist = np.abs(d_sorted[di].astype(np.float64) - r_sorted[ri].astype(np.float64))
    order = np.lexsort((di, ri, dist))  # closest first; ties by reference, then detection
    r_used = np.zeros(len(r_sorted), dtype=bool)
    d_used = np.zeros(len(d_sorted), dtype=bool)
    out_r: list[int] = []
    out_d: list[int] = []
    # Candidate pairs number about one per beat (beats are further apart than any sane tolerance), so a
    # Python pass over them is cheap next to the detection it scores.
    for k in order.tolist():
        i, j = int(ri[k]), int(di[k])
        if not r_used[i] and not d_used[j]:
            r_used[i] = d_used[j] = True
            out_r.append(i)
            out_d.append(j)
    r_idx = r_order[np.array(out_r, dtype=np.int64)]
    d_idx = d_order[np.array(out_d, dtype=np.int64)]
    by_ref = np.argsort(r_idx, kind="stable")
    return r_idx[by_ref].astype(np.int64), d_idx[by_ref].astype(np.int64)


def match_beats(ref: np.ndarray, det: np.ndarray, tolerance_samples: float) -> BeatScore:
    """``(tp, fp, fn)`` of ``det`` against ``ref`` under :func:`pair_beats`' greedy one-to-one matching."""
    r_idx, _ = pair_beats(ref, det, tolerance_samples)
    tp = len(r_idx)
    return BeatScore(tp, len(np.asarray(det)) - tp, len(np.asarray(ref)) - tp)


def sensitivity(tp: int, fn: int) -> float:
    """Se = TP / (TP + FN); NaN without reference beats."""
    return BeatScore(tp, 0, fn).sensitivity


def positive_predictivity(tp: int, fp: int) -> float:
    """PPV = TP / (TP + FP); NaN without detections."""
    return BeatScore(tp, fp, 0).positive_predictivity


class PulseAgreement(NamedTuple):
    """How well PPG pulses track ECG beats (see :func:`compare_pulses_to_beats`); times in seconds."""

    pulse_transit: float  # median delay from an ECG beat to its pulse
    matched: float  # fraction of ECG beats that found a pulse
    median_abs_ibi_error: float  # median |pulse interval - beat interval| over consecutive matched beats
    n_intervals: int  # how many interval pairs that median is over


def compare_pulses_to_beats(
    beat_times: np.ndarray,
    pulse_times: np.ndarray,
    *,
    max_transit: float = 1.0,
    window: float = 0.15,
) -> PulseAgreement:
    """Score PPG pulses against the ECG beats of the same heart, where no pulse annotation exists.

    A pulse follows its beat by the pulse transit time (PTT): ~0.2-0.45 s to a finger peak, more when a
    monitor delays its PLETH output (0.6 s on BIDMC). First the PTT: the lag in ``[0, max_transit)`` (5-ms
    grid) that gives the most beats a pulse within +-50 ms, refined to the median of those beats' delays.
    Then each beat is paired one-to-one (:func:`pair_beats`) with the pulse nearest ``beat + PTT``, within
    ``+-window``: by default the 150 ms that R peaks are scored with, though a pulse's timing is the less
    certain of the two (the transit varies with breathing and blood pressure, and a systolic peak is
    broad). Interval error compares each interval between two consecutive matched beats with the interval
    between their pulses, so a constant transit cancels and only beat-to-beat error remains.
    """
    beats = np.sort(_as_indices("beat_times", beat_times).astype(np.float64))
    pulses = np.sort(_as_indices("pulse_times", pulse_times).astype(np.float64))
    if len(beats) < 2 or len(pulses) < 2:
        raise ValueError("need at least two beats and two pulses to compare intervals")
    coarse = 0.05
    lags = np.arange(0.0, max_transit, 0.005)
    targets = beats[None, :] + lags[:, None]
    lo = np.searchsorted(pulses, targets - coarse, side="left")
    hi = np.searchsorted(pulses, targets + coarse, side="right")
    best = lags[int(np.argmax((hi > lo).sum(axis=1)))]
    b_idx, p_idx = pair_beats(beats + best, pulses, coarse)
    transit = float(np.median(pulses[p_idx] - beats[b_idx])) if len(b_idx) else best
    b_idx, p_idx = pair_beats(beats + transit, pulses, window)
    consecutive = np.flatnonzero(np.diff(b_idx) == 1)
    errors = np.abs(np.diff(pulses[p_idx])[consecutive] - np.diff(beats[b_idx])[consecutive])
    return PulseAgreement(
        pulse_transit=transit,
        matched=len(b_idx) / len(beats),
        median_abs_ibi_error=float(np.median(errors)) if len(errors) else math.nan,
        n_intervals=len(errors),
    )
