"""Per-epoch EEG features and their causal context: the inputs of edged's feature-based EEG scorers.

One definition serves training and the daemon. Training builds its inputs from the per-epoch columns of
``eeg-features-sleepedf`` (Sleep-EDF-20, see the data README) with :meth:`FeatureSet.context_batch`; the
daemon computes the same per-epoch features from the raw channel, epoch by epoch, with
:meth:`FeatureSet.stream`. Pure: numpy and scipy, no I/O.

Per-epoch features of one EEG channel (``epoch_features``), exactly as the data README defines columns
0-8 (Fpz-Cz) and 9-17 (Pz-Oz), from the epoch in VOLTS at 100 Hz with no filtering:

* ``log_delta`` ``log_theta`` ``log_alpha`` ``log_beta`` ``log_gamma``: ``log(mean(P) + 1e-10)`` of the
  Welch PSD ``P`` (``scipy.signal.welch`` defaults: Hann window, 256-sample segments, 50 % overlap,
  constant detrend, density scaling) over the inclusive bands 0.5-4, 4-8, 8-13, 13-30 and 30-50 Hz;
* ``theta_alpha`` = log_theta / (log_alpha + 1e-10), ``alpha_delta`` = log_alpha / (log_delta + 1e-10)
  (ratios of the logs, as the README says);
* ``log_var`` = log(var + 1e-10) (population variance);
* ``mobility`` = sqrt(var(diff(x)) / var(x)), Hjorth mobility (0 for a flat epoch, where it is undefined).

The 1e-10 floor is not small beside EEG band powers in V^2/Hz (about 1e-12 to 1e-9), so the features
depend on the absolute scale: the signal must really be in volts.

Causal context (``CausalContext``, batch twin ``causal_context``): for every per-epoch feature, its first
difference from the previous epoch (0 for the first epoch), the mean and population standard deviation
over the trailing ``window`` epochs (fewer at the start), and its departure from the stream's running
reference level: ``x - r`` with ``r_0 = x_0`` and ``r_t = r_(t-1) + max(1 / (t + 1), 1 / horizon) *
(x_t - r_(t-1))`` (the mean since the stream began for its first ``horizon`` epochs, then an exponential
average over about ``horizon`` epochs). The reference is what makes one person's EEG comparable with
another's: amplitude differs between people and montages, and the departure from the night's own level
carries the stage. It depends on when the stream began, so training starts each night's stream where edged
would start (30 min before sleep, see ``models/eeg/data.py``). The dataset's own columns 18-71 are centred
and look one epoch ahead; these never look ahead, so an epoch's features are final the moment it closes.

Feature sets are chosen by name (:func:`feature_set`), the name a model manifest gives in an input's
``features`` field. A feature set's row for one channel and one epoch is ``[base, diff, mean, std, rel]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import signal

FLOOR = 1e-10
BANDS = (("delta", 0.5, 4.0), ("theta", 4.0, 8.0), ("alpha", 8.0, 13.0), ("beta", 13.0, 30.0), ("gamma", 30.0, 50.0))
BASE_NAMES = tuple(f"log_{b}" for b, _, _ in BANDS) + ("theta_alpha", "alpha_delta", "log_var", "mobility")
WELCH_NPERSEG = 256  # scipy.signal.welch's default, stated so a scipy change cannot move it


def epoch_features(epochs: np.ndarray, fs: float = 100.0) -> np.ndarray:
    """The 9 per-epoch features of one channel: ``epochs`` is ``(n_epochs, samples)`` in volts (or one
    epoch, 1-D); returns ``(n_epochs, 9)`` float64 in :data:`BASE_NAMES` order."""
    x = np.atleast_2d(np.asarray(epochs, dtype=np.float64))
    freqs, psd = signal.welch(x, fs=fs, window="hann", nperseg=WELCH_NPERSEG, noverlap=WELCH_NPERSEG // 2,
                              detrend="constant", scaling="density", axis=-1)
    bands = [np.log(psd[:, (freqs >= lo) & (freqs <= hi)].mean(axis=-1) + FLOOR) for _, lo, hi in BANDS]
    delta, theta, alpha = bands[0], bands[1], bands[2]
    var = x.var(axis=-1)
    diff_var = np.diff(x, axis=-1).var(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        mobility = np.where(var > 0, np.sqrt(diff_var / var), 0.0)
    return np.stack([*bands, theta / (alpha + FLOOR), alpha / (delta + FLOOR), np.log(var + FLOOR), mobility], axis=1)


CONTEXT_BLOCKS = 5  # base, diff, mean, std, rel


def causal_context(base: np.ndarray, window: int = 3, horizon: int = 120) -> np.ndarray:
    """Batch twin of :class:`CausalContext`: ``base`` ``(n_epochs, k)`` in time order, from the stream's
    start -> ``(n_epochs, 5k)`` rows ``[base, first difference, trailing mean, trailing std, base - running
    reference]``, computed over the whole sequence at once."""
    base = np.atleast_2d(np.asarray(base, dtype=np.float64))
    n = len(base)
    diff = np.zeros_like(base)
    diff[1:] = np.diff(base, axis=0)
    lagged = np.full((window, *base.shape), np.nan)  # lagged[j, t] = base[t - j], NaN before the start
    for j in range(window):
        lagged[j, j:] = base[: n - j]
    reference = np.empty_like(base)
    first = min(n, horizon)
    reference[:first] = np.cumsum(base[:first], axis=0) / np.arange(1, first + 1)[:, None]
    if n > horizon:  # then r_t = r_(t-1) + (x_t - r_(t-1)) / horizon, a one-pole filter
        a = 1.0 / horizon
        reference[horizon:], _ = signal.lfilter([a], [1.0, a - 1.0], base[horizon:], axis=0,
                                                zi=(1.0 - a) * reference[horizon - 1][None, :])
    return np.concatenate([base, diff, np.nanmean(lagged, axis=0), np.nanstd(lagged, axis=0), base - reference],
                          axis=1)


class CausalContext:
    """The causal context of a stream of per-epoch feature rows; rows pushed in any grouping give the same
    output as one pass (:func:`causal_context`)."""

    def __init__(self, n_base: int, window: int = 3, horizon: int = 120):
        self.window = window
        self.horizon = horizon
        self._recent = np.zeros((0, n_base))  # the last max(window - 1, 1) base rows (never more)
        self._reference = np.zeros(n_base)
        self._count = 0  # rows seen since the stream began

    def push(self, base: np.ndarray) -> np.ndarray:
        base = np.atleast_2d(np.asarray(base, dtype=np.float64))
        n, k = base.shape
        out = np.empty((n, CONTEXT_BLOCKS * k))
        for i, row in enumerate(base):
            recent = np.concatenate([self._recent[max(0, len(self._recent) - self.window + 1):], row[None]])
            # The stream's first epoch has no previous one: its difference is 0.
            diff = row - self._recent[-1] if len(self._recent) else np.zeros(k)
            self._count += 1
            self._reference = self._reference + max(1.0 / self._count, 1.0 / self.horizon) * (row - self._reference)
            out[i] = np.concatenate([row, diff, recent.mean(axis=0), recent.std(axis=0), row - self._reference])
            self._recent = np.concatenate([self._recent, row[None]])[-max(self.window - 1, 1):]
        return out


@dataclass(frozen=True, slots=True)
class FeatureSet:
    """What a manifest's ``features`` name stands for: per-epoch features of one raw channel at ``fs`` Hz in
    ``units``, with their causal context, ``n_features`` values per epoch."""

    name: str
    fs: float
    epoch_seconds: float
    units: str
    context_window: int
    reference_horizon: int  # epochs
    description: str

    @property
    def base_names(self) -> tuple[str, ...]:
        return BASE_NAMES

    @property
    def names(self) -> tuple[str, ...]:
        b = self.base_names
        w = self.context_window
        return (*b, *(f"{n}_diff" for n in b), *(f"{n}_mean{w}" for n in b), *(f"{n}_std{w}" for n in b),
                *(f"{n}_rel" for n in b))

    @property
    def n_features(self) -> int:
        return len(self.names)

    @property
    def samples_per_epoch(self) -> int:
        return round(self.fs * self.epoch_seconds)

    def base(self, epochs: np.ndarray) -> np.ndarray:
        """Per-epoch features of ``(n_epochs, samples_per_epoch)`` raw epochs."""
        return epoch_features(epochs, self.fs)

    def context_batch(self, base: np.ndarray) -> np.ndarray:
        """Full feature rows from a whole sequence of per-epoch features (training's path)."""
        return causal_context(base, self.context_window, self.reference_horizon)

    def batch(self, epochs: np.ndarray) -> np.ndarray:
        """Full feature rows from a whole sequence of raw epochs."""
        return self.context_batch(self.base(epochs))

    def stream(self) -> FeatureStream:
        return FeatureStream(self)

    def missing_row(self) -> np.ndarray:
        """The row of an epoch before the stream began (what a context window is preloaded with, in training
        and live): the features of a flat signal after a run of flat signal."""
        return self.batch(np.zeros((self.context_window, self.samples_per_epoch)))[-1]


class FeatureStream:
    """Raw epochs in, feature rows out, one channel: the live twin of :meth:`FeatureSet.batch`."""

    def __init__(self, features: FeatureSet):
        self.features = features
        self.context = CausalContext(len(features.base_names), features.context_window, features.reference_horizon)

    def push(self, epochs: np.ndarray) -> np.ndarray:
        epochs = np.atleast_2d(epochs)
        return self.context.push(self.features.base(epochs))


FEATURE_SETS: dict[str, FeatureSet] = {
    s.name: s
    for s in (
        FeatureSet(
            name="sleepedf-eeg-v1", fs=100.0, epoch_seconds=30.0, units="V", context_window=3,
            reference_horizon=120,
            description="Sleep-EDF-20 per-epoch EEG features (data README columns 0-8 / 9-17 for one channel) "
            "+ first difference, trailing 3-epoch mean and std, departure from the running reference (1 h)",
        ),
    )
}


def feature_set(name: str) -> FeatureSet:
    """The feature set called ``name``; KeyError listing the known ones otherwise."""
    try:
        return FEATURE_SETS[name]
    except KeyError:
        raise KeyError(f"unknown feature set {name!r} (known: {', '.join(sorted(FEATURE_SETS))})") from None
