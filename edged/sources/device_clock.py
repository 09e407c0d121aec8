"""A device's clock on the host's clock: offset and drift, estimated online. Pure: no I/O.

A serial board stamps nothing with host time. What it gives is a position on its own clock: the sample
index divided by the nominal rate (Cyton, ASCII lines), or a device timestamp (edged's framed protocol).
That clock is a crystal tens of ppm off the host's (100 ppm is 2.9 s over an 8-hour night) and the bytes
reach the host after a transport delay that is never negative and usually small (USB polls every 1 ms),
with occasional long stalls (a busy host, a USB hub, a dongle that buffers).

So every arrival is an upper bound on the true host time of the newest sample it carried, and the lowest
arrivals lie close to the truth. :class:`DeviceClock` keeps the lowest ``arrival - device_time`` per short
bin of device time over a sliding window (10 min by default) and fits a line through those minima:

    host_time = a + device_seconds / (1 + drift)

The slope is a least-squares fit on the bin minima, refitted on the lower half of its own residuals so
that bins whose every arrival was late (stalls) do not tilt it; the line is then lowered until it passes
under every bin minimum: a robust lower-envelope fit that never places a sample after it arrived. Over 10 min
of bins the slope is known to well under 1 ppm, so extrapolating the line to the newest sample keeps a
night-long stream aligned to a fraction of a sample period (tests/test_device_clock.py: 100 ppm, 8 h,
USB-like jitter and stalls).

What no host-side clock can see: the transport's minimum delay (about 1 ms over USB) is indistinguishable
from the offset, so times come out late by it.

The caller says when the device's clock started over (a reboot, or a reconnection whose position was
only estimated): :meth:`reset` forgets the observations and keeps the drift as a prior, because the
crystal did not change.
"""

from __future__ import annotations

import math

import numpy as np

_PPM = 1e-6


class DeviceClock:
    """Maps device seconds (sample index / nominal rate, or a device timestamp) to host monotonic seconds.

    ``window``: seconds of device time the fit looks back. ``bin_seconds``: device time per bin (one
    minimum each). ``min_span``: device seconds the bins must span before the drift is estimated; before
    that the prior drift (0, or the one kept by :meth:`reset`) is used with the lowest offset seen.
    """

    def __init__(self, *, window: float = 600.0, bin_seconds: float = 2.0, min_span: float = 4.0) -> None:
        if not 0 < bin_seconds < window or not 0 < min_span <= window:
            raise ValueError("need 0 < bin_seconds < window and 0 < min_span <= window")
        self.window = window
        self.bin_seconds = bin_seconds
        self.min_span = min_span
        # The lowest residual (host - device seconds) of each bin and the device time it was seen at, in
        # fixed arrays indexed by bin id modulo their size: no allocation per observation, and a fit reads
        # them in place (a least-squares fit does not care about order). NaN marks an empty slot.
        size = math.ceil(window / bin_seconds) + 2
        self._ids = np.full(size, np.nan)
        self._x = np.zeros(size)
        self._r = np.zeros(size)
        self._newest_id = -math.inf
        self._newest_x = -math.inf
        # host = a + (1 + m) * device: m is the residual's slope (-drift, to first order), a the host time at
        # device time 0.
        self._m = 0.0
        self._a: float | None = None
        self.observations = 0
        self.ignored = 0  # observations older than the newest bin (out of order): not used
        self.fits = 0

    # -- estimates -----------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """At least one observation since the last reset: :meth:`host_time` has an answer."""
        return self._a is not None

    @property
    def drift_ppm(self) -> float:
        """How much faster the device's clock runs than the host's, in ppm (negative: slower)."""
        return (1.0 / (1.0 + self._m) - 1.0) / _PPM

    @property
    def offset(self) -> float:
        """Host minus device seconds at the newest observation (NaN before the first): how far apart the
        two clocks are now. It moves at the drift rate (100 ppm: 0.36 s per hour)."""
        return math.nan if self._a is None else self._a + self._m * self._newest_x

    @property
    def host_seconds_per_device_second(self) -> float:
        return 1.0 + self._m

    def host_time(self, device_seconds: float | np.ndarray) -> float | np.ndarray:
        """Host monotonic time of a device time (scalar or array)."""
        if self._a is None:
            raise ValueError("the clock has no observation yet")
        return self._a + (1.0 + self._m) * device_seconds

    def state(self) -> dict[str, float]:
        """Drift and offset, for the device's counters (published over MQTT)."""
        return {"clock_drift_ppm": round(self.drift_ppm, 3), "clock_offset_s": round(self.offset, 6)}

    # -- updates -------------------------------------------------------------------------------------

    def observe(self, device_seconds: float | np.ndarray, arrival: float | np.ndarray) -> None:
        """Data whose newest sample is at ``device_seconds`` reached the host at ``arrival`` (host monotonic
        seconds). Scalars, or arrays of observations in device-time order."""
        x = np.atleast_1d(np.asarray(device_seconds, dtype=np.float64))
        y = np.atleast_1d(np.asarray(arrival, dtype=np.float64))
        if x.shape != y.shape or x.ndim != 1:
            raise ValueError("device_seconds and arrival must have the same length")
        if len(x) == 0:
            return
        ids = np.floor(x / self.bin_seconds)
        keep = ids >= self._newest_id
        if not keep.all():
            self.ignored += int(len(x) - np.count_nonzero(keep))
            x, y, ids = x[keep], y[keep], ids[keep]
            if len(x) == 0:
                return
        self.observations += len(x)
        r = y - x
        # Lowest residual per bin, all at once: observations come in device-time order, so each bin is a
        # contiguous run of ``ids`` and np.minimum.reduceat takes each run's minimum.
        starts = np.flatnonzero(np.concatenate(([True], ids[1:] != ids[:-1])))
        run = np.repeat(np.arange(len(starts)), np.diff(np.append(starts, len(r))))
        mins = np.minimum.reduceat(r, starts)
        hits = np.flatnonzero(r == mins[run])  # positions at a run's minimum; take each run's first
        at = x[hits[np.searchsorted(hits, starts)]]
        bin_ids = ids[starts]
        opened = bool(bin_ids[-1] != self._newest_id)
        slots = (bin_ids % len(self._ids)).astype(np.int64)
        # A bin that continues from the previous call keeps the lower of its two minima.
        update = ~((self._ids[slots] == bin_ids) & (self._r[slots] <= mins))
        self._ids[slots[update]] = bin_ids[update]
        self._x[slots[update]] = at[update]
        self._r[slots[update]] = mins[update]
        self._newest_id = float(bin_ids[-1])
        self._newest_x = max(self._newest_x, float(x[-1]))
        if opened or self._a is None:
            self._fit()
        # Never place the newest samples after they were received: the fit passes under the bins' minima,
        # and a point beside a minimum can sit microseconds lower on a tilted line.
        assert self._a is not None
        newest = ids == bin_ids[-1]
        self._a = min(self._a, float(np.min(r[newest] - self._m * x[newest])))

    def reset(self, *, keep_drift: bool = True) -> None:
        """The device's clock started over: forget observations; keep the drift (the same crystal)."""
        self._ids.fill(np.nan)
        self._newest_id = self._newest_x = -math.inf
        self._a = None
        if not keep_drift:
            self._m = 0.0

    # -- fitting -------------------------------------------------------------------------------------

    def _fit(self) -> None:
        valid = ~np.isnan(self._ids) & (self._x >= self._newest_x - self.window)
        xs, rs = self._x[valid], self._r[valid]
        if len(xs) >= 3 and np.ptp(xs) >= self.min_span:
            centre = float(xs.mean())
            m, a = _line(xs - centre, rs)
            resid = rs - (a + m * (xs - centre))
            lower = resid <= np.median(resid)
            if np.count_nonzero(lower) >= 3 and np.ptp(xs[lower]) > 0:
                m, a = _line(xs[lower] - centre, rs[lower])
            # The slope from the fit, the height from the envelope: the line passes under every bin's
            # lowest arrival, so no sample is placed after it was received.
            a += float(np.min(rs - (a + m * (xs - centre))))
            self._m = m
            self._a = a - m * centre
            self.fits += 1
        else:
            # Too short a span for a slope: keep the prior slope and take the lowest offset it allows.
            self._a = float(np.min(rs - self._m * xs))


def _line(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares slope and intercept of y on x."""
    dx = x - x.mean()
    sxx = float(np.dot(dx, dx))
    slope = float(np.dot(dx, y - y.mean()) / sxx) if sxx > 0 else 0.0
    return slope, float(y.mean() - slope * x.mean())
