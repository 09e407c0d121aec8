"""Causal IIR filtering of a stream, chunk by chunk, with the same output as one pass over the whole signal.

Filters are Butterworth designs in second-order sections (SOS): cascaded biquads stay numerically sound at
the low normalised cut-offs used here (0.3 Hz at 256-360 Hz), where a single transfer-function polynomial
would not.
"""

from __future__ import annotations

import numpy as np
from scipy import signal


def _check_freq(name: str, f: float, fs: float) -> None:
    if not fs > 0:
        raise ValueError(f"sample rate must be positive, got fs={fs!r}")
    if not 0 < f < fs / 2:
        raise ValueError(
            f"{name} = {f!r} Hz is outside (0, fs/2) = (0, {fs / 2:g}) Hz for fs = {fs:g} Hz: "
            "a digital filter edge must lie strictly between 0 and the Nyquist frequency"
        )


def _check_order(order: int) -> None:
    if int(order) != order or order < 1:
        raise ValueError(f"filter order must be a positive integer, got {order!r}")


def design_bandpass(low: float, high: float, fs: float, order: int = 4) -> np.ndarray:
    """Butterworth band-pass ``low``-``high`` Hz as SOS. ``order`` is per edge (SciPy's convention), so the
    filter has ``2 * order`` poles and ``order`` sections."""
    _check_order(order)
    _check_freq("low", low, fs)
    _check_freq("high", high, fs)
    if not low < high:
        raise ValueError(f"band-pass needs low < high, got low={low!r} Hz, high={high!r} Hz")
    return signal.butter(order, [low, high], btype="bandpass", fs=fs, output="sos")


def design_highpass(cutoff: float, fs: float, order: int = 4) -> np.ndarray:
    """Butterworth high-pass at ``cutoff`` Hz (-3 dB) as SOS."""
    _check_order(order)
    _check_freq("cutoff", cutoff, fs)
    return signal.butter(order, cutoff, btype="highpass", fs=fs, output="sos")


def design_lowpass(cutoff: float, fs: float, order: int = 4) -> np.ndarray:
    """Butterworth low-pass at ``cutoff`` Hz (-3 dB) as SOS."""
    _check_order(order)
    _check_freq("cutoff", cutoff, fs)
    return signal.butter(order, cutoff, btype="lowpass", fs=fs, output="sos")


class CausalFilter:
    """A stateful :func:`scipy.signal.sosfilt`: ``process`` chunk after chunk gives exactly
    ``sosfilt(sos, whole_signal, axis=0)`` (bit for bit: the state carried in ``zi`` is the recursion's own
    state, and sosfilt runs the same per-sample arithmetic whatever the chunk boundaries).

    Input is 1-D or ``(n_samples, n_channels)``, filtered along axis 0; output is float64 of the same shape.
    The channel count is fixed by the first chunk (until :meth:`reset`).

    The initial state is zero, i.e. the signal is taken to be 0 before its first sample. We chose this over
    the step steady state (``sosfilt_zi(sos) * x[0]``), which is equally chunk-invariant, because:

    * the batch twin is then plain ``sosfilt(sos, x)``, the call that builds training inputs, so live and
      training pipelines cannot drift apart through a forgotten ``zi`` argument;
    * the output does not hinge on a single sample: the first sample after a device connects is often an
      electrode-settling artefact, and scaling the whole initial state by it makes the start-up transient
      worse, not better;
    * the cost is a start-up transient when the signal has a DC offset (a high-pass rings for a few
      seconds: a 0.5 Hz 4th-order Butterworth at 360 Hz takes about 6 s to fall below 1e-3 of the step),
      which falls in the first epoch and is paid once per stream, not per chunk.
    """

    def __init__(self, sos: np.ndarray):
        sos = np.array(sos, dtype=np.float64)  # own copy: the caller's array must not alter our filter
        if sos.ndim != 2 or sos.shape[1] != 6 or sos.shape[0] < 1:
            raise ValueError(f"sos must have shape (n_sections, 6), got {sos.shape}")
        if not np.all(sos[:, 3] == 1.0):
            raise ValueError("each SOS section must be normalised so that a0 == 1 (column 3)")
        self.sos = sos
        self._zi: np.ndarray | None = None  # shape (n_sections, 2[, n_channels]); created by the first chunk

    def reset(self) -> None:
        """Return to the zero initial state, e.g. after a gap, so the next chunk starts a fresh stream."""
        self._zi = None

    def process(self, x: np.ndarray) -> np.ndarray:
        """Filter the next chunk; returns float64 samples of the same shape."""
        x = np.asarray(x)
        if x.ndim not in (1, 2):
            raise ValueError(f"expected a 1-D or (n_samples, n_channels) chunk, got shape {x.shape}")
        zi_shape = (self.sos.shape[0], 2) + x.shape[1:]
        if self._zi is None:
            self._zi = np.zeros(zi_shape, dtype=np.float64)
        elif self._zi.shape != zi_shape:
            raise ValueError(
                f"chunk shape {x.shape} does not match the channel layout this filter started with "
                f"(state shape {self._zi.shape}); call reset() to change it"
            )
        if x.shape[0] == 0:  # sosfilt rejects empty input when given zi; nothing to do anyway
            return np.zeros(x.shape, dtype=np.float64)
        y, self._zi = signal.sosfilt(self.sos, x, axis=0, zi=self._zi)
        return y
