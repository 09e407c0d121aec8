"""Signal quality per epoch, 0 (unusable) .. 1 (clean), for each kind of input: beat intervals, ECG, PPG.

Meant for the ``quality`` / ``quality_ok`` of every published stage (wiring them in is the pipeline's
job), so each index answers one question a user can check by eye: *how much of this epoch do we have
clean beats for?* All three are pure functions of one epoch: nothing to stream.

* :func:`rr_quality` (any beat source, e.g. a BLE strap's RR): the share of the epoch covered by
  intervals that are physiologically plausible (``MIN_NN_S`` 0.3 s .. ``MAX_IBI`` 2.0 s, i.e. 30-200 bpm)
  **and** within ``MAX_RELATIVE_DRR`` (30 %) of the neighbouring interval, the usual artefact screen
  (Malik's 20 % flags ectopy; 30 % leaves normal sinus arrhythmia, even deep-breathing RSA, alone).
* :func:`ecg_quality` and :func:`ppg_quality` (raw waveform + detected beats): template matching after
  Orphanidou et al. (2015, IEEE JBHI 19:832): a window around every beat is correlated with the epoch's
  beat template; the index is the mean correlation (negative counted as 0) times the beat coverage, the
  share of the epoch covered by plausible intervals (0.3-2.0 s; no dRR screen here, because an ectopic
  beat is a real, clean beat of the waveform). A flat line has no beats and no correlation; noise gives
  beats (if any) whose windows do not resemble each other; both score low.

Threshold: ``QUALITY_OK`` = 0.5 for all three (below it, an epoch should not be scored as valid).
Orphanidou's acceptability threshold is a mean correlation of 0.86 (ECG) over 10-s windows; with a
coverage factor and 30-s epochs we measured (``tests/test_ibi_features.py``) clean MIT-BIH epochs at
0.79-0.98 (PPG: 0.83-0.98) and the same epochs at -6 dB white noise or with a 20-s flat line at 0.43 or
below (PPG: 0.45), so 0.5 sits in the gap between them. At 0 dB clean ECG beats still score ~0.65: the
QRS stands well above noise of the epoch's SD, and the index says so.

Template details: windows are detrended (mean and slope removed: baseline wander must not pass for a
match); the template is the sample-wise *median* of the windows (Orphanidou use the mean; the median keeps
a few artefactual beats from dragging the template towards themselves, so they keep their low scores).
Beats matching it worse than ``SECOND_TEMPLATE_BELOW`` (0.7) get a second median template of their own
(when there are at least 3): PVCs are clean beats of another shape, and with one template a PVC-rich
epoch of MIT-BIH 200 scored 0.44 where it now scores 0.86+; noise windows do not resemble each other, so
their own template does not rescue them (measured above). A window containing a non-finite sample counts
as a correlation of 0 and stays out of the templates.
ECG windows are centred on the R peak and one median RR long (P-QRS-T), clipped to 0.4-1.2 s; PPG windows
run from 0.4 to 0.6 median RR around the systolic peak (foot, upstroke, dicrotic notch).

Not used: Elgendi's (2016) skewness SQI for PPG. On the two PPGs tested it put clean epochs at 0.5-1.1
and -6 dB noise near 0.1, but one clean BIDMC epoch at -0.49: its scale depends on the device's
filtering and the pulse shape, whereas a template correlation is scale-free.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from edged.dsp.hrv import MIN_NN_S, valid_coverage
from edged.dsp.ibi import MAX_IBI

QUALITY_OK = 0.5
MAX_RELATIVE_DRR = 0.3
MIN_TEMPLATE_BEATS = 3  # fewer beats than this make no template: correlation counted as 0
ECG_WINDOW_S = (0.4, 1.2)  # bounds of the ECG window length (one median RR)
PPG_WINDOW_SPLIT = (0.4, 0.6)  # the PPG window, in median RRs before / after the systolic peak
SECOND_TEMPLATE_BELOW = 0.7  # beats matching the main template worse than this get a template of their own
DEFAULT_RR_S = 0.8  # window length when the epoch has too few intervals to take a median


def _plausible(rr: np.ndarray) -> np.ndarray:
    return (rr >= MIN_NN_S) & (rr < MAX_IBI)


def rr_quality(beat_times: np.ndarray, epoch_start: float, epoch_seconds: float = 30.0) -> float:
    """Share (0..1) of ``[epoch_start, epoch_start + epoch_seconds)`` covered by good intervals: plausible
    and within 30 % of the previous interval (of the next one for the first interval after a gap or an
    implausible interval; an interval with no plausible neighbour cannot be checked and is not good).
    Pass at least the beats around the epoch; more are ignored."""
    beats = np.asarray(beat_times, dtype=np.float64)
    if beats.ndim != 1:
        raise ValueError(f"beat times must be 1-D, got shape {beats.shape}")
    if not epoch_seconds > 0:
        raise ValueError(f"epoch_seconds must be positive, got {epoch_seconds!r}")
    stop = epoch_start + epoch_seconds
    # The intervals touching the epoch, plus one neighbour on each side for the dRR test.
    i0, i1 = np.searchsorted(beats, [epoch_start, stop])
    beats = beats[max(i0 - 2, 0) : i1 + 2]
    if len(beats) < 2:
        return 0.0
    rr = np.diff(beats)
    ok = _plausible(rr)
    prev = np.concatenate(([np.nan], rr[:-1]))
    nxt = np.concatenate((rr[1:], [np.nan]))
    prev_ok = np.concatenate(([False], ok[:-1]))
    next_ok = np.concatenate((ok[1:], [False]))
    with np.errstate(invalid="ignore"):
        ref = np.where(prev_ok, prev, np.where(next_ok, nxt, np.nan))
        good = ok & (np.abs(rr - ref) < MAX_RELATIVE_DRR * ref)
    return valid_coverage(beats, epoch_start, stop, good) / epoch_seconds


def _beat_windows(x: np.ndarray, beats: np.ndarray, before: int, after: int) -> np.ndarray:
    """``(n_beats, before + after + 1)`` windows of ``x`` around the beats whose window fits inside ``x``,
    each detrended (least-squares line removed). Vectorised: a strided view, one matrix product."""
    length = before + after + 1
    beats = beats[(beats - before >= 0) & (beats + after < len(x))]
    if len(beats) == 0 or length < 3:
        return np.zeros((0, max(length, 0)))
    w = sliding_window_view(x, length)[beats - before].astype(np.float64)
    ramp = np.arange(length) - (length - 1) / 2
    w = w - w.mean(axis=1, keepdims=True)
    slope = (w @ ramp) / (ramp @ ramp)
    return w - slope[:, None] * ramp


def _correlations(windows: np.ndarray, template: np.ndarray) -> np.ndarray:
    """Pearson correlation of each (zero-mean) window with the template; negative or undefined (a flat
    window) counts as 0."""
    template = template - template.mean()
    norms = np.linalg.norm(windows, axis=1) * np.linalg.norm(template)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (windows @ template) / norms
    return np.where(np.isfinite(r), np.clip(r, 0.0, 1.0), 0.0)


def _template_correlation(windows: np.ndarray) -> float:
    """Mean over beats of the correlation with the epoch's template (see the module docstring for the
    second template, which lets a run of ectopic beats of one shape count as the clean beats they are)."""
    finite = np.all(np.isfinite(windows), axis=1)
    if finite.sum() < MIN_TEMPLATE_BEATS:
        return 0.0
    # A window holding a non-finite sample (a dropped packet, a WFDB 'invalid' value) is not a clean
    # beat: it counts 0 and stays out of the templates.
    r = np.zeros(len(windows))
    windows = windows[finite]
    r_fin = _correlations(windows, np.median(windows, axis=0))
    odd = r_fin < SECOND_TEMPLATE_BELOW
    if odd.sum() >= MIN_TEMPLATE_BEATS:
        r2 = _correlations(windows[odd], np.median(windows[odd], axis=0))
        r_fin[odd] = np.maximum(r_fin[odd], r2)
    r[finite] = r_fin
    return float(r.mean())


def _median_rr(beats: np.ndarray, fs: float) -> float:
    rr = np.diff(beats) / fs
    rr = rr[_plausible(rr)]
    return float(np.median(rr)) if len(rr) else DEFAULT_RR_S


def _waveform_quality(x: np.ndarray, beat_indices: np.ndarray, fs: float, split: tuple[float, float],
                      bounds: tuple[float, float] | None) -> float:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"the epoch must be 1-D, got shape {x.shape}")
    if not (math.isfinite(fs) and fs > 0):
        raise ValueError(f"fs must be positive, got {fs!r}")
    beats = np.asarray(beat_indices)
    if beats.ndim != 1:
        raise ValueError(f"beat indices must be 1-D, got shape {beats.shape}")
    beats = np.unique(beats.astype(np.int64))
    beats = beats[(beats >= 0) & (beats < len(x))]
    if len(x) == 0 or len(beats) < 2:
        return 0.0
    duration = len(x) / fs
    coverage = valid_coverage(beats / fs, 0.0, duration) / duration
    length = _median_rr(beats, fs)
    if bounds is not None:
        length = min(max(length, bounds[0]), bounds[1])
    before = round(split[0] * length * fs)
    after = round(split[1] * length * fs)
    corr = _template_correlation(_beat_windows(x, beats, before, after))
    return corr * coverage


def ecg_quality(ecg_epoch: np.ndarray, beat_indices: np.ndarray, fs: float) -> float:
    """0..1 quality of one ECG epoch given its R-peak sample indices (relative to the epoch's first
    sample): mean template correlation x beat coverage, see the module docstring."""
    return _waveform_quality(ecg_epoch, beat_indices, fs, (0.5, 0.5), ECG_WINDOW_S)


def ppg_quality(ppg_epoch: np.ndarray, beat_indices: np.ndarray, fs: float) -> float:
    """0..1 quality of one PPG epoch given its systolic-peak sample indices (relative to the epoch's first
    sample): mean template correlation x beat coverage, see the module docstring."""
    return _waveform_quality(ppg_epoch, beat_indices, fs, PPG_WINDOW_SPLIT, None)
