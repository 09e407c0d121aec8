"""A documented synthetic generator of overnight heartbeat and breathing, with four-stage labels.

Why it exists: the repository has beat-by-beat RR with stages (slpdb) but no overnight ECG and respiration
WAVEFORMS with stages (SHHS, MESA and DREAMT cannot be downloaded here). SleepVST reads the waveforms, so
its shipped weights are trained on this generator, and say so (``"synthetic": true`` in the manifest, the
card and every stage message). A model trained here has learnt this generator's rules, not sleep: figures
measured on generated nights check the generator and the training path, they are never an accuracy.

The night (:func:`hypnogram`, 30-s epochs, classes ``W``, ``Light`` (N1+N2), ``Deep`` (N3), ``REM``):
5-25 min of wake, then ~90-min cycles Light -> Deep -> Light -> REM, Deep long in the first cycles and
gone in the last, REM short first and long last, a few brief awakenings, a final awakening.

What each stage does to the heart and the breath (:data:`STAGE_RULES`; values relative to a per-night
:class:`Subject`, smoothed over ~40 s at stage changes so that boundaries are not step functions):

=====  ===================  =========================================  ================================
stage  heart rate           heart rate variability                      breathing
=====  ===================  =========================================  ================================
W      base + 8 bpm         strong 0.1-Hz (LF) waves, movement surges   16/min, irregular (rate CV 0.25),
                                                                        variable depth, sighs, movement
Light  base                 moderate respiratory sinus arrhythmia       14.5/min, rate CV 0.10
Deep   base - 4 bpm         strong RSA, almost no LF: very regular      13.5/min, rate CV 0.03, deep
REM    base + 4 bpm         irregular: LF waves and HR bursts           17/min, rate CV 0.22, shallow
=====  ===================  =========================================  ================================

Signals (:func:`generate`): beat times from an integrate-and-fire heart whose rate follows the rules
(plus respiratory sinus arrhythmia locked to the breathing phase); an ECG at ``ecg_fs`` made of Gaussian
P, Q, R, S and T waves per beat, its QRS amplitude modulated by breathing (what ECG-derived respiration
reads), with baseline wander and noise; a thoracic belt at ``resp_fs`` (breathing wave, posture drift,
noise); the IBI form of :mod:`edged.dsp.ibi` follows from the beat times. Units: ECG mV, belt arbitrary.

Everything is deterministic by ``seed``: ``generate(seed, hours)`` returns the same arrays every time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import fftconvolve

CLASSES = ("W", "Light", "Deep", "REM")
W, LIGHT, DEEP, REM = range(4)
TO_THREE = np.array([0, 1, 1, 2])  # W/Light/Deep/REM -> W/NREM/REM
EPOCH_SECONDS = 30.0
GRID_FS = 25.0  # the heart and lung rhythms are integrated on this grid


@dataclass(frozen=True)
class StageRule:
    hr_offset: float  # bpm above the subject's base
    lf: float  # amplitude of the 0.1-Hz heart-rate wave, bpm
    rsa: float  # respiratory sinus arrhythmia, bpm peak
    surge: float  # rate of heart-rate surges (movement, arousal), per minute
    breath_rate: float  # breaths per minute
    breath_cv: float  # breath-to-breath rate variability
    depth: float  # breathing depth, relative
    depth_cv: float  # breath-to-breath depth variability


STAGE_RULES = {
    W: StageRule(hr_offset=8.0, lf=3.0, rsa=1.5, surge=1.5, breath_rate=16.0, breath_cv=0.25, depth=1.0, depth_cv=0.35),
    LIGHT: StageRule(hr_offset=0.0, lf=1.5, rsa=2.5, surge=0.2, breath_rate=14.5, breath_cv=0.10, depth=1.0, depth_cv=0.12),
    DEEP: StageRule(hr_offset=-4.0, lf=0.4, rsa=3.5, surge=0.05, breath_rate=13.5, breath_cv=0.03, depth=1.25, depth_cv=0.05),
    REM: StageRule(hr_offset=4.0, lf=3.0, rsa=1.2, surge=0.8, breath_rate=17.0, breath_cv=0.22, depth=0.7, depth_cv=0.30),
}


@dataclass(frozen=True)
class Subject:
    """Per-night constants, drawn from the seed: people differ within the rules."""

    base_hr: float
    rsa_gain: float
    breath_base: float  # added to every stage's breathing rate
    ecg_gain: float
    ecg_noise: float
    belt_gain: float
    belt_noise: float

    @staticmethod
    def draw(rng: np.random.Generator) -> "Subject":
        return Subject(base_hr=rng.uniform(52, 72), rsa_gain=rng.uniform(0.6, 1.4), breath_base=rng.uniform(-2, 2),
                       ecg_gain=rng.uniform(0.6, 1.6), ecg_noise=rng.uniform(0.01, 0.05),
                       belt_gain=rng.uniform(0.5, 2.0), belt_noise=rng.uniform(0.02, 0.1))


@dataclass(frozen=True)
class Night:
    """A generated night. ``stages`` one class per 30-s epoch; ``beats`` R-peak times (s); ``ecg`` at
    ``ecg_fs``; ``belt`` at ``resp_fs``; all starting at t = 0."""

    seed: int
    stages: np.ndarray
    beats: np.ndarray
    ecg: np.ndarray
    ecg_fs: float
    belt: np.ndarray
    resp_fs: float
    subject: Subject

    @property
    def n_epochs(self) -> int:
        return len(self.stages)


def hypnogram(rng: np.random.Generator, n_epochs: int) -> np.ndarray:
    """Stage per 30-s epoch, following the cycle rules in the module docstring."""
    out: list[int] = [W] * int(rng.integers(10, 50))
    cycle = 0
    while len(out) < n_epochs - 10:
        late = min(1.0, cycle / 4)
        out += [LIGHT] * int(rng.integers(10, 30))
        out += [DEEP] * int(max(0, rng.normal(50 * (1 - late), 10)))
        out += [LIGHT] * int(rng.integers(10, 30))
        if rng.random() < 0.4:
            out += [W] * int(rng.integers(1, 6))
            out += [LIGHT] * int(rng.integers(4, 12))
        out += [REM] * int(max(4, rng.normal(12 + 30 * late, 6)))
        if rng.random() < 0.5:
            out += [W] * int(rng.integers(1, 5))
        cycle += 1
    out = out[: n_epochs - 10] + [W] * 10
    return np.array(out[:n_epochs], dtype=np.int64)


def _smooth(x: np.ndarray, seconds: float) -> np.ndarray:
    n = max(1, int(seconds * GRID_FS))
    kernel = np.hanning(n + 2)[1:-1]
    kernel /= kernel.sum()
    pad = np.concatenate([np.full(n, x[0]), x, np.full(n, x[-1])])
    return fftconvolve(pad, kernel, mode="same")[n:-n]


def _per_sample(stages: np.ndarray, values: dict[int, float]) -> np.ndarray:
    per_epoch = np.array([values[int(s)] for s in stages])
    return np.repeat(per_epoch, int(EPOCH_SECONDS * GRID_FS))


def _ecg_wave(beats: np.ndarray, amp: np.ndarray, fs: float, n: int) -> np.ndarray:
    """Sum of Gaussian P-Q-R-S-T waves per beat (McSharry-like shapes, fixed offsets in seconds); ``amp``
    scales each beat's Q, R and S waves (breathing modulates the QRS complex)."""
    waves = ((-0.20, 0.15, 0.025, False), (-0.03, -0.12, 0.010, True), (0.0, 1.0, 0.010, True),
             (0.03, -0.25, 0.010, True), (0.25, 0.30, 0.050, False))
    half = int(0.5 * fs)
    centre = np.round(beats * fs).astype(np.int64)
    idx = centre[:, None] + np.arange(-half, half)[None, :]
    dt = idx / fs - beats[:, None]
    seg = np.zeros(idx.shape)
    for offset, height, width, qrs in waves:
        scale = amp[:, None] if qrs else 1.0
        seg += scale * height * np.exp(-0.5 * ((dt - offset) / width) ** 2)
    keep = (idx >= 0) & (idx < n)
    ecg = np.zeros(n)
    np.add.at(ecg, idx[keep], seg[keep])
    return ecg


def generate(seed: int, hours: float = 4.0, *, ecg_fs: float = 128.0, resp_fs: float = 32.0) -> Night:
    """One night, deterministic by ``seed``."""
    rng = np.random.default_rng(seed)
    subject = Subject.draw(rng)
    n_epochs = int(hours * 3600 / EPOCH_SECONDS)
    stages = hypnogram(rng, n_epochs)
    n = n_epochs * int(EPOCH_SECONDS * GRID_FS)
    t = np.arange(n) / GRID_FS
    rule = {k: STAGE_RULES[k] for k in STAGE_RULES}

    # Breathing: a phase integrated from a jittered rate; depth varies breath to breath.
    rate = _smooth(_per_sample(stages, {k: r.breath_rate + subject.breath_base for k, r in rule.items()}), 40)
    cv = _smooth(_per_sample(stages, {k: r.breath_cv for k, r in rule.items()}), 40)
    jitter = _smooth(rng.standard_normal(n), 4.0) * np.sqrt(4.0 * GRID_FS) * 0.6
    breath_hz = np.clip(rate * (1 + cv * jitter), 6, 40) / 60
    phase = 2 * np.pi * np.cumsum(breath_hz) / GRID_FS
    depth = _smooth(_per_sample(stages, {k: r.depth for k, r in rule.items()}), 40)
    depth_cv = _smooth(_per_sample(stages, {k: r.depth_cv for k, r in rule.items()}), 40)
    depth = depth * np.clip(1 + depth_cv * _smooth(rng.standard_normal(n), 3.0) * np.sqrt(3.0 * GRID_FS) * 0.6, 0.2, 3)
    sighs = (rng.random(n) < (stages.repeat(int(EPOCH_SECONDS * GRID_FS)) == W) * 0.2 / (60 * GRID_FS))
    depth = depth + _smooth(sighs.astype(float), 4.0) * GRID_FS * 4.0 * 1.5
    breath = depth * np.sin(phase)

    # Heart: base + stage offset + LF wave + RSA + surges, integrate-and-fire.
    hr = _smooth(_per_sample(stages, {k: subject.base_hr + r.hr_offset for k, r in rule.items()}), 40)
    lf_amp = _smooth(_per_sample(stages, {k: r.lf for k, r in rule.items()}), 40)
    lf = lf_amp * np.sin(2 * np.pi * np.cumsum(0.1 * (1 + 0.2 * _smooth(rng.standard_normal(n), 20) * 10)) / GRID_FS)
    rsa = _smooth(_per_sample(stages, {k: r.rsa for k, r in rule.items()}), 40) * subject.rsa_gain * np.sin(phase)
    surge_rate = _per_sample(stages, {k: r.surge for k, r in rule.items()}) / (60 * GRID_FS)
    surges = _smooth((rng.random(n) < surge_rate).astype(float), 10.0) * GRID_FS * 10.0 * 8.0
    drift = _smooth(rng.standard_normal(n), 120) * np.sqrt(120 * GRID_FS) * 0.8
    bpm = np.clip(hr + lf + rsa + surges + drift, 35, 150)
    cycles = np.cumsum(bpm / 60) / GRID_FS
    beats = np.interp(np.arange(1, int(cycles[-1])), cycles, t)

    # Waveforms.
    n_ecg = int(n_epochs * EPOCH_SECONDS * ecg_fs)
    qrs_amp = 1 + 0.15 * np.interp(beats, t, breath)
    ecg = _ecg_wave(beats, qrs_amp, ecg_fs, n_ecg) * subject.ecg_gain
    te = np.arange(n_ecg) / ecg_fs
    ecg += 0.15 * np.sin(2 * np.pi * 0.05 * te + rng.uniform(0, 6.3)) + subject.ecg_noise * rng.standard_normal(n_ecg)
    n_resp = int(n_epochs * EPOCH_SECONDS * resp_fs)
    tr = np.arange(n_resp) / resp_fs
    belt = np.interp(tr, t, breath) * subject.belt_gain
    belt += 0.5 * subject.belt_gain * np.interp(tr, t, _smooth(rng.standard_normal(n), 60) * 10)
    belt += subject.belt_noise * rng.standard_normal(n_resp)
    return Night(seed=seed, stages=stages, beats=beats, ecg=ecg.astype(np.float32), ecg_fs=ecg_fs,
                 belt=belt.astype(np.float32), resp_fs=resp_fs, subject=subject)
