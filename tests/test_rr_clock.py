"""RR intervals as heart-rate straps send them, back to beat times: real RR series replayed as Heart Rate
Measurement notifications (1/1024-s quantisation, a strap crystal 100 ppm off, notifications once a second
with BLE delay, real dropouts and randomly lost notifications), then rebuilt by the clock model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edged.sources.clock import RRBeatClock
from edged.sources.readers import read_recording
from firmware_bridge.hrs import decode_hrs, encode_hrs

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def strap_notifications(beats: np.ndarray, lost_intervals: set[int], *, ppm: float, loss: float, seed: int):
    """(rr tuple as decoded from the bytes, arrival host time, indices of the true closing beats) per
    notification. The strap notifies every second of ITS clock with the intervals closed since the last
    notification (heart rate only when none closed); BLE adds 20-80 ms. Intervals in ``lost_intervals``
    (real dropouts: no notification at all then) and randomly lost notifications never arrive."""
    rng = np.random.default_rng(seed)
    scale = 1.0 + ppm * 1e-6  # the strap measures intervals with its own crystal
    period = 1.0 * scale  # and its one-second notification timer runs on the same crystal
    ticks = np.arange(beats[0] + period, beats[-1] + period, period)
    closing = np.searchsorted(ticks, beats[1:], side="left")  # the tick that reports interval i
    bounds = np.searchsorted(closing, np.arange(len(ticks) + 1))
    out = []
    for n, tick in enumerate(ticks):
        span = range(bounds[n], bounds[n + 1])
        idx = [i for i in span if i not in lost_intervals]
        if len(idx) < len(span) or rng.random() < loss:
            continue  # contact lost (a real dropout) or the notification never made it
        rr = (beats[np.array(idx, dtype=int) + 1] - beats[np.array(idx, dtype=int)]) * scale
        payload = encode_hrs(int(60 / rr.mean()) if len(rr) else 60, rr=tuple(rr))
        decoded = decode_hrs(payload).rr
        out.append((np.array(decoded), tick + rng.uniform(0.02, 0.08), np.array(idx, dtype=int) + 1))
    return out


def rebuild(notifications):
    """Feed the clock; releases always cover the oldest beats not yet released, in order."""
    clock = RRBeatClock()
    est, truth_idx, after_loss = [], [], []
    pending = np.zeros(0, dtype=int)
    for rr, arrival, idx in notifications:
        pending = np.concatenate([pending, idx])
        released = clock.push(rr, arrival)
        n = len(released.times)
        if n:
            est.append(released.times)
            truth_idx.append(pending[:n])
            pending = pending[n:]
            flags = np.zeros(n, dtype=bool)
            flags[0] = released.lost_seconds > 0  # the source sends a gap before this beat
            after_loss.append(flags)
    rebuild.after_loss = np.concatenate(after_loss)
    return np.concatenate(est), np.concatenate(truth_idx), clock


def check(beats, lost_intervals, *, hours_expected: float, loss: float, max_error: float, p99_error: float,
          ibi_p99: float = 0.025, ppm: float = 100.0, seed: int = 3):
    notes = strap_notifications(beats, lost_intervals, ppm=ppm, loss=loss, seed=seed)
    est, idx, clock = rebuild(notes)
    assert len(idx) == sum(len(n[0]) for n in notes)  # every interval that arrived is placed: none dropped
    true = beats[idx]
    error = np.abs(est - true)
    assert true[-1] - true[0] > hours_expected * 3600
    assert error.max() < max_error and np.percentile(error, 99) < p99_error, (error.max(), np.percentile(error, 99))
    # Intervals between consecutively delivered beats equal the true intervals: quantisation (1/1024 s),
    # the crystal's 100 ppm and the clock's bounded slew (2 % at most) are all that separate them.
    # An interval that spans a reported loss becomes a gap downstream, so it is not compared.
    consecutive = (np.diff(idx) == 1) & ~rebuild.after_loss[1:]
    ibi_error = np.abs(np.diff(est)[consecutive] - np.diff(true)[consecutive])
    assert np.median(ibi_error) < 0.001 and np.percentile(ibi_error, 99) < ibi_p99
    assert np.all(np.diff(est) > 0)  # beat times never go backwards
    return clock


def mmash_user1():
    rec = read_recording(DATA / "rr-24h-mmash" / "user_1" / "RR.csv")
    beats = rec.rr["rr"].beat_times()
    # The reader bridges each real dropout with one interval and lists it in gaps: those never arrive.
    return beats, {int(np.searchsorted(beats, t - 1e-6)) for t, _ in rec.gaps}, len(rec.gaps)


def test_mmash_24h_strap_stream_stays_within_a_second_of_the_truth():
    """24 h of a real Polar H7 RR stream with its 2521 real dropouts: measured max 0.92 s, p99 0.64 s;
    intervals p99 19 ms."""
    beats, lost, n_gaps = mmash_user1()
    clock = check(beats, lost, hours_expected=23, loss=0.0, max_error=1.0, p99_error=0.7)
    assert clock.counters["resyncs"] == n_gaps  # every real dropout noticed, and nothing else


def test_mmash_24h_with_randomly_lost_notifications_recovers():
    """The same day with 1 % of notifications also lost: measured max 2.2 s (just after a loss), p99 0.73 s."""
    beats, lost, n_gaps = mmash_user1()
    clock = check(beats, lost, hours_expected=23, loss=0.01, max_error=2.5, p99_error=0.8)
    assert clock.counters["resyncs"] > n_gaps


@pytest.mark.parametrize("record", ["slp61", "slp04"])
def test_slpdb_night_as_strap_notifications_gives_back_the_ibi_series(record):
    """No loss: every beat within 0.3 s of the truth all night (slp61 measured: max 0.17 s, p99 0.09 s;
    intervals p99 6 ms, i.e. the 1/1024-s quantisation and 100 ppm)."""
    beats = read_recording(DATA / "ibi-sleep-slpdb" / f"{record}.rr").rr["rr"].beat_times()
    clock = check(beats, set(), hours_expected=5.5, loss=0.0, max_error=0.3, p99_error=0.15, ibi_p99=0.008)
    assert clock.counters["resyncs"] == 0


def test_lost_single_notification_is_reported_as_lost_time():
    beats = np.cumsum(np.full(2000, 0.8))
    notes = strap_notifications(beats, set(), ppm=0.0, loss=0.0, seed=0)
    del notes[600]  # one notification (about one beat) lost
    clock = RRBeatClock()
    lost = sum(clock.push(rr, arrival).lost_seconds for rr, arrival, _ in notes)
    assert 0.5 < lost < 1.7 and clock.counters["resyncs"] == 1


def test_a_notification_with_heart_rate_only_places_nothing():
    clock = RRBeatClock()
    released = clock.push(np.zeros(0), 10.0)
    assert len(released.times) == 0 and released.lost_seconds == 0.0
