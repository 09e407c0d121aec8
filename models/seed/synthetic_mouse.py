"""A documented synthetic generator of mouse EEG + EMG with wake / NREM / REM labels per 4-s epoch.

Why it exists: the repository has 10 minutes of real mouse EEG/EMG but no labels for it, and SlumberNet's
labelled set (Zenodo 10.5281/zenodo.7899654) cannot be downloaded here. The shipped SlumberNet weights
are therefore trained on this generator and say so (``"synthetic": true`` in the manifest, the card and
every stage message). Figures measured on generated recordings check the generator and the training
path; they are never an accuracy.

States (:func:`hypnogram`, 4-s epochs): mouse-like bouts. Wake 20 s - 10 min, NREM 40 s - 5 min,
REM 40 s - 2 min and only after NREM (a mouse does not enter REM from wake), brief NREM->wake
micro-arousals. Over a recording about 45 % wake, 47 % NREM, 8 % REM.

What each state puts into each channel (:func:`generate`), in mV (the real recording in
``../shared/data/mouse-eeg-emg`` has EEG SD ~0.05 mV and EMG SD ~0.02 mV), on top of 1/f background:

=====  ===================================================  =====================================
state  EEG (parietal)                                       EMG (neck)
=====  ===================================================  =====================================
Wake   low-voltage mixed: 1/f, weak theta, beta/gamma        high tone (broadband 10-100 Hz) with
       (20-40 Hz), movement artefacts                       movement bursts
NREM   high-voltage delta 0.5-4 Hz, spindles 10-14 Hz       low tone
       (~6/min, 0.5-1.5 s)
REM    regular theta 6-9 Hz (peak per animal), low delta    atonia (lowest), rare twitches
=====  ===================================================  =====================================

Per-animal constants (:class:`Animal`: EEG and EMG gains, theta frequency, noise) vary with the seed.
Rhythm amplitudes ramp over ~1 s at state changes. Deterministic by ``seed``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import butter, fftconvolve, sosfilt

CLASSES = ("W", "NREM", "REM")
WAKE, NREM, REM = range(3)
EPOCH_SECONDS = 4.0


@dataclass(frozen=True)
class Animal:
    eeg_gain: float
    emg_gain: float
    theta_hz: float
    delta_gain: float
    noise: float

    @staticmethod
    def draw(rng: np.random.Generator) -> "Animal":
        return Animal(eeg_gain=rng.uniform(0.6, 1.6), emg_gain=rng.uniform(0.5, 2.0), theta_hz=rng.uniform(6.5, 8.5),
                      delta_gain=rng.uniform(0.7, 1.3), noise=rng.uniform(0.003, 0.01))


@dataclass(frozen=True)
class Recording:
    """``states`` one class per 4-s epoch; ``eeg``/``emg`` in mV at ``fs`` from t = 0."""

    seed: int
    states: np.ndarray
    eeg: np.ndarray
    emg: np.ndarray
    fs: float
    animal: Animal


def hypnogram(rng: np.random.Generator, n_epochs: int) -> np.ndarray:
    out: list[int] = []
    state = WAKE if rng.random() < 0.5 else NREM
    while len(out) < n_epochs:
        if state == WAKE:
            out += [WAKE] * int(rng.integers(5, 90))
            state = NREM
        elif state == NREM:
            out += [NREM] * int(rng.integers(10, 75))
            state = REM if rng.random() < 0.35 else WAKE
        else:
            out += [REM] * int(rng.integers(10, 30))
            state = WAKE
    return np.array(out[:n_epochs], dtype=np.int64)


def _band_noise(rng, n, fs, lo, hi):
    sos = butter(2, [lo, hi], btype="bandpass", fs=fs, output="sos")
    x = sosfilt(sos, rng.standard_normal(n))
    return x / (x.std() + 1e-12)


def _envelope(states: np.ndarray, values: dict[int, float], fs: float) -> np.ndarray:
    per = np.array([values[int(s)] for s in states], dtype=np.float64)
    x = np.repeat(per, int(EPOCH_SECONDS * fs))
    k = np.hanning(int(fs) + 2)[1:-1]
    k /= k.sum()
    return fftconvolve(np.concatenate([np.full(len(k), x[0]), x, np.full(len(k), x[-1])]), k, mode="same")[len(k):-len(k)]


def _events(rng, n, fs, per_minute, gate, lo_s, hi_s):
    """A 0/1 train of events (spindles, twitches, bursts) at ``per_minute`` where ``gate`` is 1."""
    out = np.zeros(n)
    starts = np.flatnonzero(rng.random(n) < per_minute / (60 * fs) * gate)
    for s in starts:
        out[s : s + int(rng.uniform(lo_s, hi_s) * fs)] = 1.0
    return _envelope_smooth(out, fs)


def _envelope_smooth(x, fs):
    k = np.hanning(int(0.2 * fs) + 2)[1:-1]
    return fftconvolve(x, k / k.max(), mode="same") / (len(k) / 2)


def generate(seed: int, minutes: float = 60.0, *, fs: float = 256.0) -> Recording:
    """One recording, deterministic by ``seed``."""
    rng = np.random.default_rng(seed)
    animal = Animal.draw(rng)
    n_epochs = int(minutes * 60 / EPOCH_SECONDS)
    states = hypnogram(rng, n_epochs)
    n = n_epochs * int(EPOCH_SECONDS * fs)
    per_state = np.repeat(states, int(EPOCH_SECONDS * fs))

    pink = fftconvolve(rng.standard_normal(n), np.exp(-np.arange(int(fs)) / (0.05 * fs)), mode="same")
    pink /= pink.std()
    delta = _band_noise(rng, n, fs, 0.5, 4.0)
    theta = _band_noise(rng, n, fs, animal.theta_hz - 0.6, animal.theta_hz + 0.6)
    fast = _band_noise(rng, n, fs, 20.0, 40.0)
    spindle = _band_noise(rng, n, fs, 10.0, 14.0)
    eeg = (
        _envelope(states, {WAKE: 0.015, NREM: 0.02, REM: 0.012}, fs) * pink
        + _envelope(states, {WAKE: 0.012, NREM: 0.07, REM: 0.012}, fs) * animal.delta_gain * delta
        + _envelope(states, {WAKE: 0.012, NREM: 0.008, REM: 0.045}, fs) * theta
        + _envelope(states, {WAKE: 0.010, NREM: 0.003, REM: 0.005}, fs) * fast
        + 0.03 * _events(rng, n, fs, 6.0, per_state == NREM, 0.5, 1.5) * spindle
    ) * animal.eeg_gain
    movement = _events(rng, n, fs, 3.0, per_state == WAKE, 0.5, 3.0)
    eeg += 0.05 * movement * _band_noise(rng, n, fs, 0.5, 3.0) * animal.eeg_gain
    emg_carrier = _band_noise(rng, n, fs, 10.0, min(100.0, fs / 2 - 1))
    twitches = _events(rng, n, fs, 4.0, per_state == REM, 0.05, 0.2)
    emg = (
        _envelope(states, {WAKE: 0.02, NREM: 0.006, REM: 0.002}, fs) * (1 + 2.5 * movement)
        + 0.015 * twitches
    ) * emg_carrier * animal.emg_gain
    eeg += animal.noise * rng.standard_normal(n) + 0.02 * np.sin(2 * np.pi * 0.05 * np.arange(n) / fs)
    emg += animal.noise * 0.5 * rng.standard_normal(n)
    return Recording(seed=seed, states=states, eeg=eeg.astype(np.float32), emg=emg.astype(np.float32), fs=fs,
                     animal=animal)
