"""Clock models: turning what a device sends into times on the host's clock. Pure: no I/O.

:class:`RRBeatClock` is for RR intervals as BLE heart-rate straps send them (Heart Rate Measurement
0x2A37): a few intervals per notification, no timestamps, no sequence number, measured by the strap's own
crystal (tens of ppm off the host), delivered 0-1 s after the beat (more when a Polar strap buffers).

The beat that closes the last interval of a notification happened before the notification arrived, so
``arrival - cumulative_rr`` is an upper bound on the offset between the strap's interval sum and host time,
reached when a notification follows its last beat closely. The clock tracks the lower envelope of that
bound over a sliding window (which also follows crystal drift: 100 ppm moves it 12 ms in a 2-min window)
and moves its applied offset towards it at a bounded slew rate, so that correcting the clock changes no
interval by more than ``slew`` (0.5 %). When a notification shows the offset is too high (its last beat
would fall after the notification arrived), the clock corrects faster (``causal_slew``, 2 %) but still
gradually: interval fidelity matters more to a sleep model than tens of milliseconds of absolute time.

Lost notifications (BLE drops, contact loss) are detected from the times alone: the interval sum then
falls behind host time by the lost span. A long silence (a notification more than ``resync_after``
seconds later than the sum predicts) re-anchors the clock at once. Straps notify at a steady rate (about
1 Hz, with heart rate only when no interval closed), so a single missing notification shows as a pause
between arrivals: the beats after such a pause are held for ``suspect_check`` notifications, whose
lowest bound says how much interval time was lost. A step in the bound WITHOUT a pause is not taken as
loss: near 60 bpm beats phase-lock with a 1-Hz notification timer and the latency alone can stay high
for minutes; intervals dropped without a pause (rare) are absorbed by the slew instead.
Either way the silence is reported so the source can emit an explicit gap: the beats in between are
unknown and never invented.

What no clock can see: a latency that never drops (a strap that always buffers 3 s) is indistinguishable
from the offset, so beat times come out late by that constant; the intervals themselves are unaffected.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class BeatTimes:
    """Intervals released by the clock, the host times of the beats closing them, and the unexplained
    silence (seconds) before the first of them when beats were lost, else 0."""

    rr: np.ndarray
    times: np.ndarray
    lost_seconds: float


_EMPTY = np.zeros(0)


class RRBeatClock:
    """See the module docstring. After a (re)sync the first ``settle`` notifications are held back until
    the envelope has seen enough of them: anchoring on one notification alone could be up to a second
    late, and correcting that later would distort an interval by as much."""

    def __init__(self, *, window: float = 120.0, slew: float = 0.005, resync_after: float = 2.5,
                 settle: int = 8, suspect_check: int = 4, suspect_step: float = 0.2, causal_slew: float = 0.02):
        if settle < 2 or suspect_check < 1:
            raise ValueError("settle must be >= 2 and suspect_check >= 1")
        self.window = window
        self.slew = slew
        self.causal_slew = causal_slew
        self.resync_after = resync_after
        self.settle = settle
        self.suspect_check = suspect_check
        self.suspect_step = suspect_step
        self._last_arrival: float | None = None
        self._spacing: collections.deque[float] = collections.deque(maxlen=32)  # recent inter-arrival times
        self._since_pause: list[float] | None = None  # bounds since a suspicious pause, while checking
        self._suspect_held: list[tuple[np.ndarray, np.ndarray]] = []  # (rr, interval sums) held meanwhile
        self.offset: float | None = None  # applied: host time = interval sum + offset
        self.cum = 0.0  # interval sum (strap seconds) at the last released beat
        self._bounds: collections.deque[tuple[float, float]] = collections.deque()  # (arrival, upper bound)
        self._held: list[tuple[np.ndarray, float]] = []  # notifications waiting for the clock to settle
        self._held_cum = 0.0
        self._lost = 0.0
        self.counters = {"notifications": 0, "beats": 0, "resyncs": 0, "causality_corrections": 0}

    def push(self, rr: np.ndarray, arrival: float) -> BeatTimes:
        """Intervals (s, oldest first) from one notification that arrived at host time ``arrival``."""
        rr = np.asarray(rr, dtype=np.float64)
        self.counters["notifications"] += 1
        if self._last_arrival is not None:
            spacing = arrival - self._last_arrival
            if len(self._spacing) >= 8 and spacing > 1.6 * float(np.median(self._spacing)):
                if self._since_pause is None:
                    self._since_pause = []  # a notification is probably missing: check the next few closely
            else:
                self._spacing.append(spacing)
        self._last_arrival = arrival
        if len(rr) == 0:  # HR only, no interval closed: nothing to place
            return BeatTimes(_EMPTY, _EMPTY, 0.0)
        if self.offset is None or self._held:
            return self._settle(rr, arrival)
        cums = self.cum + np.cumsum(rr)
        bound = arrival - cums[-1]
        if bound - self.offset > self.resync_after:
            # Host time ran ahead of the interval sum: intervals never reached us. Start again from here.
            self.counters["resyncs"] += 1
            flushed = self._flush_suspect_held()  # beats from before the silence, on the offset of then
            self._lost = bound - self.offset
            self.offset = None
            self.cum = 0.0
            self._bounds.clear()
            self._since_pause = None
            settled = self._settle(rr, arrival)
            return flushed if len(flushed.times) else settled
        return self._release(rr, cums, bound, arrival)

    def _settle(self, rr: np.ndarray, arrival: float) -> BeatTimes:
        bound = arrival - (self._held_cum + float(rr.sum()))
        flushed = BeatTimes(_EMPTY, _EMPTY, 0.0)
        if self._held and bound - min(b for _, b in self._bounds) > self.resync_after:
            # A silence while settling: release what came before it, then settle again from here.
            flushed = self._finish_settle()
            self.counters["resyncs"] += 1
            self._lost = bound - self.offset
            self.offset, self.cum = None, 0.0
            self._bounds.clear()
            bound = arrival - float(rr.sum())
        self._held_cum += float(rr.sum())
        self._held.append((rr, arrival))
        self._bounds.append((arrival, bound))
        if len(self._held) >= self.settle:
            return self._finish_settle()
        return flushed

    def _finish_settle(self) -> BeatTimes:
        self.offset = min(b for _, b in self._bounds)
        all_rr = np.concatenate([r for r, _ in self._held])
        times = self.offset + np.cumsum(all_rr)
        self.cum = self._held_cum
        self._held.clear()
        self._held_cum = 0.0
        lost, self._lost = self._lost, 0.0
        self.counters["beats"] += len(all_rr)
        return BeatTimes(all_rr, times, lost)

    def _release(self, rr: np.ndarray, cums: np.ndarray, bound: float, arrival: float) -> BeatTimes:
        self._bounds.append((arrival, bound))
        while self._bounds[0][0] < arrival - self.window:
            self._bounds.popleft()
        if self._since_pause is not None:
            # After a suspicious pause, hold beats until a few notifications show whether intervals were
            # lost, so that none is released on a stale offset (costs at most suspect_check seconds).
            self._since_pause.append(bound)
            self._suspect_held.append((rr, cums))
            self.cum = float(cums[-1])
            if len(self._since_pause) < self.suspect_check:
                return BeatTimes(_EMPTY, _EMPTY, 0.0)
            floor = min(self._since_pause)
            self._since_pause = None
            lost = 0.0
            if floor - self.offset > self.suspect_step:
                lost = floor - self.offset
                self._shift(lost, arrival)
            released = self._flush_suspect_held()
            return BeatTimes(released.rr, released.times, lost)

        lost = 0.0
        target = min(b for _, b in self._bounds)
        span = cums[-1] - self.cum
        step = float(np.clip(target - self.offset, -self.slew * span, self.slew * span))
        if self.offset + step > bound:
            # The last beat would land after its own notification arrived: pull back faster.
            step = max(bound - self.offset, -self.causal_slew * span)
            self.counters["causality_corrections"] += 1
        # Spread the correction over this notification's intervals, in proportion to their length.
        times = cums + self.offset + step * (cums - self.cum) / span
        self.offset += step
        self.cum = float(cums[-1])
        self.counters["beats"] += len(rr)
        return BeatTimes(rr, times, lost)

    def _flush_suspect_held(self) -> BeatTimes:
        if not self._suspect_held:
            return BeatTimes(_EMPTY, _EMPTY, 0.0)
        held, self._suspect_held = self._suspect_held, []
        all_rr = np.concatenate([r for r, _ in held])
        self.counters["beats"] += len(all_rr)
        return BeatTimes(all_rr, np.concatenate([c for _, c in held]) + self.offset, 0.0)

    def _shift(self, lost: float, arrival: float) -> None:
        """Intervals were lost: move the offset up by their length and forget the bounds from before."""
        self.offset += lost
        self._bounds = collections.deque([(arrival, self.offset)])
        self.counters["resyncs"] += 1
