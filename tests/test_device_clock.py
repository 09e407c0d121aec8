"""DeviceClock: a device's clock on the host's, over a simulated night. Pure and fast (no I/O, no sleeps).

The simulation: a 250-Hz board sends 10-sample frames (25 per second); its crystal runs ``ppm`` fast; each
frame reaches the host after a USB-like delay: a 1-ms polling grid, a small exponential scheduling delay,
0.5 % spikes of 5-200 ms, and a few 2-s host stalls during which frames pile up and arrive together.
The host pushes what it read once per second, and before each push the clock PREDICTS the host time of
the frames it is about to see (fully causal).
"""

from __future__ import annotations

import numpy as np
import pytest

from edged.sources.device_clock import DeviceClock

FS = 250.0
PER_FRAME = 10


def night(hours: float, ppm: float | np.ndarray, seed: int = 1, t0: float = 5000.0):
    """Device seconds of each frame's newest sample, its true host time, and its arrival."""
    rng = np.random.default_rng(seed)
    n = int(hours * 3600 * FS / PER_FRAME)
    x = ((np.arange(n) + 1) * PER_FRAME - 1) / FS
    ppm_arr = np.broadcast_to(np.asarray(ppm, dtype=np.float64), (n,))
    # Host time advances by device time / (1 + drift) per step, so a drift that changes is integrated.
    steps = np.diff(x, prepend=0.0) / (1.0 + ppm_arr * 1e-6)
    true = t0 + np.cumsum(steps)
    latency = 0.0002 + rng.exponential(0.0004, n)
    spikes = rng.random(n) < 0.005
    latency[spikes] += rng.uniform(0.005, 0.2, spikes.sum())
    arrival = np.ceil((true + latency) * 1000) / 1000  # USB full speed: the host polls every 1 ms
    for start in rng.uniform(0, hours * 3600, 4):  # host stalls: nothing is read for 2 s
        stalled = (x >= start) & (x < start + 2.0)
        if stalled.any():
            arrival[stalled] = np.maximum(arrival[stalled], arrival[stalled][-1] + 0.001)
    return x, true, np.maximum.accumulate(arrival)  # reads return in order


def replay(clock: DeviceClock, x: np.ndarray, true: np.ndarray, arrival: np.ndarray, per_read: int = 25):
    """Feed the clock read by read; return the worst prediction error of each read (seconds)."""
    errors = []
    for i in range(0, len(x), per_read):
        sl = slice(i, i + per_read)
        if clock.ready:
            errors.append(float(np.max(np.abs(clock.host_time(x[sl]) - true[sl]))))
        clock.observe(x[sl], arrival[sl])
    return np.array(errors)


def test_a_100ppm_fast_board_stays_within_one_sample_period_over_an_8_hour_night():
    x, true, arrival = night(8.0, 100.0)
    clock = DeviceClock()
    errors = replay(clock, x, true, arrival)
    period = 1.0 / FS
    assert len(errors) == 8 * 3600 - 1
    assert errors.max() < period, f"worst misalignment {errors.max() * 1e3:.2f} ms"
    assert np.percentile(errors, 99) < 0.25 * period
    assert clock.drift_ppm == pytest.approx(100.0, abs=2.0)
    # The same stream placed with the nominal rate from the first arrival (what a source without a clock
    # model does) is almost 3 s off by morning: 100 ppm of 8 h.
    naive = arrival[0] + (x - x[0])
    assert abs(naive[-1] - true[-1]) > 2.5
    # The offset (host minus device seconds) grew by the drift: 8 h x 100 ppm = 2.88 s.
    assert clock.offset - (true[0] - x[0]) == pytest.approx(-2.88, abs=0.01)


def test_a_drift_that_wanders_overnight_is_followed():
    """A crystal warming and cooling: drift from 60 to 140 ppm and back (a slow sine over the night)."""
    n = int(6.0 * 3600 * FS / PER_FRAME)
    ppm = 100.0 + 40.0 * np.sin(np.linspace(0, 2 * np.pi, n))
    x, true, arrival = night(6.0, ppm, seed=2)
    errors = replay(DeviceClock(), x, true, arrival)
    assert errors.max() < 1.0 / FS


@pytest.mark.parametrize("ppm", [-50.0, 0.0, 300.0])
def test_slow_exact_and_very_fast_crystals(ppm):
    x, true, arrival = night(1.0, ppm, seed=3)
    clock = DeviceClock()
    errors = replay(clock, x, true, arrival)
    assert errors.max() < 1.0 / FS
    assert clock.drift_ppm == pytest.approx(ppm, abs=2.0)


def test_no_sample_is_placed_after_it_arrived():
    """The fitted line is a lower envelope: every arrival is at or after the clock's time for its sample,
    exactly for the newest read, and to within microseconds over the window (as the slope is refitted)."""
    x, _, arrival = night(0.5, 100.0, seed=4)
    clock = DeviceClock()
    late, newest = [], []
    for i in range(0, len(x), 25):
        clock.observe(x[i:i + 25], arrival[i:i + 25])
        newest.append(float(np.max(clock.host_time(x[i:i + 25]) - arrival[i:i + 25])))
        if i % 2500 == 0:
            window = slice(max(0, i + 25 - int(clock.window * FS / PER_FRAME)), i + 25)
            late.append(float(np.max(clock.host_time(x[window]) - arrival[window])))
    assert max(newest) <= 1e-9
    assert max(late) < 20e-6


def test_the_estimate_does_not_depend_on_how_observations_are_batched():
    x, _, arrival = night(0.5, 100.0, seed=5)
    # End on the first observation of a bin: the clock refits when a bin opens, so only then have all
    # batchings fitted the same bins.
    bins = np.floor(x / DeviceClock().bin_seconds)
    end = int(np.flatnonzero(np.diff(bins))[-1]) + 2
    x, arrival = x[:end], arrival[:end]
    results = set()
    for per_read in (1, 7, 25, 1000, len(x)):
        clock = DeviceClock()
        for i in range(0, len(x), per_read):
            clock.observe(x[i:i + per_read], arrival[i:i + per_read])
        results.add((clock.drift_ppm, clock.offset))
    assert len(results) == 1


def test_reset_keeps_the_drift_and_forgets_the_position():
    x, true, arrival = night(0.5, 100.0, seed=6)
    clock = DeviceClock()
    clock.observe(x, arrival)
    drift = clock.drift_ppm
    clock.reset(keep_drift=True)
    assert not clock.ready and clock.drift_ppm == drift
    # The board restarted: its clock begins at 0 again, 10 minutes of host time later.
    x2, true2, arrival2 = x[:2500], true[:2500] + 1800.0, arrival[:2500] + 1800.0
    errors = replay(clock, x2, true2, arrival2)
    assert errors.max() < 1.0 / FS
    clock.reset(keep_drift=False)
    assert clock.drift_ppm == 0.0


def test_observations_out_of_order_are_ignored_and_counted():
    clock = DeviceClock(bin_seconds=1.0)
    clock.observe(np.array([10.0, 11.0, 12.5]), np.array([100.001, 101.001, 102.501]))
    clock.observe(5.0, 95.0)  # older than the newest bin
    assert clock.ignored == 1 and clock.observations == 3
    assert clock.host_time(12.5) == pytest.approx(102.5, abs=0.002)
    with pytest.raises(ValueError):
        DeviceClock().host_time(1.0)
    with pytest.raises(ValueError):
        clock.observe(np.array([1.0, 2.0]), np.array([1.0]))


def test_state_is_published_as_plain_numbers():
    clock = DeviceClock()
    x, _, arrival = night(0.2, 100.0, seed=7)
    clock.observe(x, arrival)
    state = clock.state()
    assert set(state) == {"clock_drift_ppm", "clock_offset_s"}
    assert all(isinstance(v, float) and np.isfinite(v) for v in state.values())
