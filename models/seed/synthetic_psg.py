"""A documented synthetic polysomnography generator: four channels at 100 Hz with five-stage labels.

Why it exists: the repository has no raw EEG/EOG/EMG nights with stages (only per-epoch EEG features of
Sleep-EDF-20), yet ULW-SleepNet and MASleepNet read raw Fpz-Cz, Pz-Oz, EOG and EMG. The models shipped
for them are therefore trained on this generator, and say so (``"synthetic": true`` in the manifest, the
card, and every stage message). A model trained here has learnt the generator's rules below, not sleep:
figures measured on generated nights are a sanity check of the generator and of the training path, never
an accuracy.

Channels (Sleep-EDF names, microvolts, 100 Hz): ``EEG Fpz-Cz``, ``EEG Pz-Oz``, ``EOG horizontal``,
``EMG submental``. Unlike Sleep-EDF's cassette recordings, whose EMG is a 1-Hz RMS envelope, the EMG here
is a raw broadband signal, as a live board (OpenBCI, a DIY amplifier) delivers it.

The night (:func:`hypnogram`): 5-30 min of wake, then sleep cycles of ~90 min (N1 -> N2 -> N3 -> N2 ->
REM), N3 long in the first cycles and absent in the last, REM short in the first and long in the last,
brief awakenings and N1 after them, a final awakening. Stages are drawn with a seeded generator.

What each stage puts into each channel (:func:`generate`), on top of a 1/f-like background:

======  ======================================================  ===========================  ============
stage   EEG (Fpz-Cz frontal-central, Pz-Oz parieto-occipital)    EOG                          EMG
======  ======================================================  ===========================  ============
W       alpha 8.5-11 Hz (strong on Pz-Oz), beta 15-30 Hz         blinks, saccades             high tone,
                                                                                             movement bursts
N1      theta 4-7 Hz, vertex sharp waves (Fpz-Cz), alpha fading  slow rolling movements       lower
N2      theta, sleep spindles 11.5-14.5 Hz 0.5-2 s (~5/min),     quiet (frontal EEG leaks)    low
        K-complexes (biphasic, 75-150 uV, ~1.5/min)
N3      slow waves 0.5-2 Hz, 75-200 uV (stronger on Fpz-Cz)      slow-wave leakage only       low
REM     low-voltage theta, sawtooth bursts 2-4 Hz (Fpz-Cz)       rapid eye movements in       atonia (lowest),
                                                                 bursts                       rare twitches
======  ======================================================  ===========================  ============

Per-night "subject" parameters (:class:`Subject`: amplitude gains, alpha and spindle frequency, noise,
EMG tone, channel gains) vary between seeds so that nights differ like people do, within the rules above.
Three things keep the stages from being trivially separable: every rhythm's amplitude varies from epoch to
epoch (log-normal, sigma 0.3), events are Poisson (an N2 epoch may hold no spindle and no K-complex), and
each stage change is moved by up to 10 s either way from the epoch boundary, so an epoch beside a change
holds some of the neighbouring stage while keeping its majority label (as a human scorer labels it).
Rhythm amplitudes ramp over ~2 s at a change.

Everything is deterministic by ``seed``: ``generate(seed, hours)`` returns the same arrays every time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import butter, sosfilt, sosfiltfilt

CLASSES = ("W", "N1", "N2", "N3", "REM")
W, N1, N2, N3, REM = range(5)
FS = 100.0
EPOCH_SECONDS = 30.0
SAMPLES_PER_EPOCH = 3000
CHANNELS = ("EEG Fpz-Cz", "EEG Pz-Oz", "EOG horizontal", "EMG submental")
UNITS = "uV"


@dataclass(frozen=True)
class Subject:
    """What makes one synthetic night differ from another (drawn from the seed)."""

    eeg_gain: float
    alpha_hz: float
    spindle_hz: float
    background_uv: float
    emg_tone_uv: float
    eog_gain: float
    pz_gain: float

    @classmethod
    def draw(cls, rng: np.random.Generator) -> "Subject":
        return cls(
            eeg_gain=float(rng.lognormal(0.0, 0.2)),
            alpha_hz=float(rng.uniform(8.5, 11.0)),
            spindle_hz=float(rng.uniform(11.5, 14.5)),
            background_uv=float(rng.uniform(6.0, 12.0)),
            emg_tone_uv=float(rng.uniform(8.0, 20.0)),
            eog_gain=float(rng.lognormal(0.0, 0.25)),
            pz_gain=float(rng.lognormal(-0.2, 0.15)),
        )


@dataclass(frozen=True)
class Night:
    """One generated night: ``signals`` (4, n_epochs * 3000) float32 in uV (channel order
    :data:`CHANNELS`), ``stages`` (n_epochs,) class indices into :data:`CLASSES`."""

    seed: int
    subject: Subject
    signals: np.ndarray
    stages: np.ndarray

    @property
    def n_epochs(self) -> int:
        return len(self.stages)

    def epochs(self) -> np.ndarray:
        """(n_epochs, 4, 3000): each epoch's four channels."""
        return self.signals.reshape(4, self.n_epochs, SAMPLES_PER_EPOCH).transpose(1, 0, 2)


def hypnogram(n_epochs: int, rng: np.random.Generator) -> np.ndarray:
    """A plausible stage sequence of ``n_epochs`` 30-s epochs (class indices)."""
    out: list[int] = []

    def add(stage: int, minutes: float) -> None:
        out.extend([stage] * max(1, int(round(minutes * 2))))

    add(W, rng.uniform(5, 30))
    cycle = 0
    while len(out) < n_epochs:
        early = max(0.0, 1.0 - cycle / 3.0)  # 1 in the first cycle, 0 from the fourth
        add(N1, rng.uniform(1, 7))
        add(N2, rng.uniform(15, 35))
        if early > 0 and rng.random() < 0.3 + 0.7 * early:
            add(N3, rng.uniform(5, 10) + 30 * early * rng.uniform(0.5, 1.0))
            add(N2, rng.uniform(5, 15))
        if rng.random() < 0.5:  # a brief awakening and N1 before REM
            add(W, rng.uniform(0.5, 3))
            add(N1, rng.uniform(0.5, 2))
            add(N2, rng.uniform(2, 6))
        add(REM, rng.uniform(4, 10) + 15 * (1.0 - early) * rng.uniform(0.5, 1.0))
        if rng.random() < 0.4:
            add(W, rng.uniform(0.5, 4))
        cycle += 1
    stages = np.array(out[:n_epochs], dtype=np.int64)
    wake_tail = int(round(rng.uniform(2, 15) * 2))
    stages[max(0, n_epochs - wake_tail):] = W
    return stages


def _band_noise(rng: np.random.Generator, n: int, low: float, high: float) -> np.ndarray:
    """Unit-RMS zero-phase band-limited noise (the generator may look ahead; the models may not)."""
    sos = butter(4, [low, high], btype="bandpass", fs=FS, output="sos")
    x = sosfiltfilt(sos, rng.standard_normal(n))
    return x / (np.std(x) + 1e-12)


def _pink_noise(rng: np.random.Generator, n: int) -> np.ndarray:
    """Unit-RMS 1/f-like background: integrated white noise, high-passed at 0.3 Hz, plus white noise."""
    brown = np.cumsum(rng.standard_normal(n))
    sos = butter(2, 0.3, btype="highpass", fs=FS, output="sos")
    x = sosfilt(sos, brown)
    x = x / (np.std(x) + 1e-12) + 0.3 * rng.standard_normal(n)
    return x / np.std(x)


def _signal_stages(stages: np.ndarray, rng: np.random.Generator, shift_seconds: float = 10.0) -> np.ndarray:
    """The stage the signal shows at each sample: the epoch's label, but with every stage change moved by
    up to ``shift_seconds`` either way, as real transitions fall anywhere inside an epoch and the scorer
    labels the epoch by its majority (so epochs beside a change hold some of the neighbouring stage)."""
    per_sample = np.repeat(stages, SAMPLES_PER_EPOCH)
    for k in np.flatnonzero(np.diff(stages)) + 1:
        edge = k * SAMPLES_PER_EPOCH
        shift = int(rng.uniform(-shift_seconds, shift_seconds) * FS)
        if shift > 0:
            per_sample[edge:edge + shift] = stages[k - 1]
        elif shift < 0:
            per_sample[edge + shift:edge] = stages[k]
    return per_sample


def _envelope(sample_stage: np.ndarray, per_stage: dict[int, float], rng: np.random.Generator, *,
              jitter: float = 0.3, ramp_seconds: float = 2.0) -> np.ndarray:
    """Per-sample amplitude following the signal's stage, varied epoch to epoch (log-normal ``jitter``) so
    no single amplitude gives a stage away, and ramped over ``ramp_seconds`` at changes."""
    table = np.array([per_stage.get(s, 0.0) for s in range(len(CLASSES))], dtype=np.float64)
    n_epochs = len(sample_stage) // SAMPLES_PER_EPOCH
    x = table[sample_stage] * np.repeat(rng.lognormal(0.0, jitter, n_epochs), SAMPLES_PER_EPOCH)
    k = max(1, int(ramp_seconds * FS))
    kernel = np.ones(k) / k
    return np.convolve(np.pad(x, (k // 2, k - 1 - k // 2), mode="edge"), kernel, mode="valid")


def _event_times(rng: np.random.Generator, sample_stage: np.ndarray, stage: int, per_minute: float) -> np.ndarray:
    """Sample indices of Poisson events (``per_minute`` on average) where the signal shows ``stage``."""
    idx = np.flatnonzero(sample_stage == stage)
    if len(idx) == 0 or per_minute <= 0:
        return np.zeros(0, dtype=np.int64)
    count = rng.poisson(per_minute * len(idx) / FS / 60.0)
    return np.sort(rng.choice(idx, size=count)).astype(np.int64)


def _add_at(x: np.ndarray, at: int, wave: np.ndarray) -> None:
    end = min(len(x), at + len(wave))
    if end > at >= 0:
        x[at:end] += wave[: end - at]


def _spindle(rng: np.random.Generator, hz: float) -> np.ndarray:
    seconds = rng.uniform(0.5, 2.0)
    t = np.arange(int(seconds * FS)) / FS
    return rng.uniform(15, 35) * np.hanning(len(t)) * np.sin(2 * np.pi * (hz + rng.normal(0, 0.3)) * t)


def _k_complex(rng: np.random.Generator) -> np.ndarray:
    # A sharp negative wave (~0.15 s) followed by a slower positive one (~0.5 s): biphasic, 75-150 uV.
    amp = rng.uniform(75, 150)
    t = np.arange(int(1.2 * FS)) / FS
    neg = -np.exp(-0.5 * ((t - 0.25) / 0.07) ** 2)
    pos = 0.6 * np.exp(-0.5 * ((t - 0.65) / 0.18) ** 2)
    return amp * (neg + pos)


def _vertex_wave(rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(0.4 * FS)) / FS
    return -rng.uniform(40, 80) * np.exp(-0.5 * ((t - 0.2) / 0.05) ** 2)


def _sawtooth_burst(rng: np.random.Generator) -> np.ndarray:
    hz = rng.uniform(2.0, 4.0)
    t = np.arange(int(rng.uniform(1.0, 3.0) * FS)) / FS
    phase = (t * hz) % 1.0
    # Slow rise, fast fall: the notched sawtooth shape of REM.
    wave = np.where(phase < 0.8, phase / 0.8, (1.0 - phase) / 0.2) - 0.5
    return rng.uniform(25, 50) * np.hanning(len(t)) * wave


def _eye_movement(rng: np.random.Generator, rise_seconds: float, amp: float) -> np.ndarray:
    # A conjugate movement seen by the horizontal EOG: a smooth step there, a slower return.
    rise = max(2, int(rise_seconds * FS))
    hold = int(rng.uniform(0.2, 0.8) * FS)
    back = int(rng.uniform(0.4, 1.2) * FS)
    up = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, rise))
    return rng.choice([-1.0, 1.0]) * amp * np.concatenate([up, np.ones(hold), np.linspace(1, 0, back)])


def _blink(rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(0.5 * FS)) / FS
    return rng.uniform(80, 200) * np.exp(-0.5 * ((t - 0.2) / 0.06) ** 2)


def generate(seed: int, hours: float = 8.0, *, n_epochs: int | None = None) -> Night:
    """One synthetic night, deterministic by ``seed``."""
    rng = np.random.default_rng(seed)
    subject = Subject.draw(rng)
    n_ep = n_epochs if n_epochs is not None else int(round(hours * 3600 / EPOCH_SECONDS))
    stages = hypnogram(n_ep, rng)
    n = n_ep * SAMPLES_PER_EPOCH
    st = _signal_stages(stages, rng)

    def env(per_stage: dict[int, float], **kw) -> np.ndarray:
        return _envelope(st, per_stage, rng, **kw)

    g = subject.eeg_gain

    fpz = subject.background_uv * _pink_noise(rng, n) * env({W: 1.0, N1: 1.1, N2: 1.2, N3: 1.2, REM: 0.9})
    pz = subject.background_uv * _pink_noise(rng, n) * env({W: 0.9, N1: 1.0, N2: 1.1, N3: 1.1, REM: 0.8})
    alpha = _band_noise(rng, n, subject.alpha_hz - 1.0, subject.alpha_hz + 1.0)
    beta = _band_noise(rng, n, 15.0, 30.0)
    theta = _band_noise(rng, n, 4.0, 7.0)
    delta = _band_noise(rng, n, 0.5, 2.0)
    fpz += alpha * env({W: 10.0, N1: 4.0, REM: 3.0}) + beta * env({W: 6.0, REM: 3.0, N1: 2.0})
    pz += alpha * env({W: 25.0, N1: 8.0, REM: 6.0}) + beta * env({W: 4.0, REM: 2.0, N1: 1.5})
    fpz += theta * env({N1: 14.0, N2: 12.0, N3: 8.0, REM: 12.0, W: 3.0})
    pz += theta * env({N1: 10.0, N2: 9.0, N3: 6.0, REM: 10.0, W: 2.0})
    slow = delta * env({N3: rng.uniform(45, 65), N2: 12.0, N1: 5.0, W: 3.0, REM: 4.0})
    fpz += slow
    pz += 0.6 * slow
    for at in _event_times(rng, st, N2, 5.0):
        wave = _spindle(rng, subject.spindle_hz)
        _add_at(fpz, at, wave)
        _add_at(pz, at, 0.8 * wave)
    for at in _event_times(rng, st, N3, 1.5):
        wave = _spindle(rng, subject.spindle_hz)
        _add_at(fpz, at, 0.7 * wave)
    for at in _event_times(rng, st, N2, 1.5):
        wave = _k_complex(rng)
        _add_at(fpz, at, wave)
        _add_at(pz, at, 0.5 * wave)
    for at in _event_times(rng, st, N1, 2.0):
        wave = _vertex_wave(rng)
        _add_at(fpz, at, wave)
        _add_at(pz, at, 0.4 * wave)
    for at in _event_times(rng, st, REM, 3.0):
        wave = _sawtooth_burst(rng)
        _add_at(fpz, at, wave)
        _add_at(pz, at, 0.5 * wave)

    eog = 0.4 * fpz + 5.0 * _pink_noise(rng, n)  # frontal EEG leaks into the EOG derivation
    eog += 40.0 * _band_noise(rng, n, 0.2, 0.5) * env({N1: 1.5, W: 0.3})  # slow rolling (N1)
    for at in _event_times(rng, st, W, 10.0):
        _add_at(eog, at, _blink(rng))
    for at in _event_times(rng, st, W, 8.0):
        _add_at(eog, at, _eye_movement(rng, 0.05, rng.uniform(40, 120)))
    for at in _event_times(rng, st, REM, 10.0):  # in bursts: a few movements in quick succession
        for k in range(int(rng.integers(1, 5))):
            _add_at(eog, at + int(k * rng.uniform(0.4, 1.0) * FS), _eye_movement(rng, 0.08, rng.uniform(60, 180)))
    eog *= subject.eog_gain

    emg_carrier = _band_noise(rng, n, 15.0, 45.0)
    atonia = {W: 1.0, N1: rng.uniform(0.45, 0.75), N2: 0.45, N3: 0.4, REM: rng.uniform(0.1, 0.3)}
    tone = subject.emg_tone_uv * env(atonia, jitter=0.4, ramp_seconds=5.0)
    bursts = np.zeros(n)
    for at in _event_times(rng, st, W, 1.5):  # movements in wake
        _add_at(bursts, at, subject.emg_tone_uv * rng.uniform(1.0, 3.0) * np.hanning(int(rng.uniform(1, 4) * FS)))
    for at in _event_times(rng, st, REM, 2.0):  # phasic twitches through the atonia
        _add_at(bursts, at, subject.emg_tone_uv * rng.uniform(0.3, 0.8) * np.hanning(int(rng.uniform(0.1, 0.4) * FS)))
    emg = emg_carrier * (tone + bursts) + 1.0 * rng.standard_normal(n)

    signals = np.stack([g * fpz, g * subject.pz_gain * pz, eog, emg]).astype(np.float32)
    return Night(seed=seed, subject=subject, signals=signals, stages=stages)


def nights(seeds, hours: float = 8.0) -> list[Night]:
    return [generate(int(s), hours) for s in seeds]


def to_recording(night: Night, *, start_time: float = 1_700_000_000.0):
    """The night as an edged :class:`~edged.sources.recording.Recording` (Sleep-EDF channel names, the
    hypnogram attached), ready for ``write_edf`` or a replay source."""
    from edged.sources.recording import Hypnogram, Recording, SignalTrack

    return Recording(
        path="",
        signals={name: SignalTrack(night.signals[i].astype(np.float64), FS, UNITS) for i, name in enumerate(CHANNELS)},
        hypnogram=Hypnogram(EPOCH_SECONDS, tuple(CLASSES[s] for s in night.stages)),
        start_time=start_time,
    )
