"""BLE sources through a real bleak backend that replays real recordings as GATT notifications.

No Bluetooth here: ``edged.sources.ble_replay`` is a bleak client + scanner backend plugged in through
bleak's ``backend=`` parameter, so ``BleakScanner``/``BleakClient`` and everything above them run for real.
Expectations are computed independently of the emulator: RR intervals from the recording quantised to
1/1024 s (HRS) or 1 ms (PPI), ECG samples by resampling the MIT-BIH record to 130 Hz in the test itself.
Replays run at 50-120x real time; the replay's clock is the transport's clock, so durations in seconds
below are recording seconds.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import start_daemon
from scipy.signal import resample_poly

from edged.ble_scan import list_ble_devices
from edged.config import parse_config
from edged.errors import ConfigError, SourceError
from edged.sources.base import Chunk, Gap, Source, SourceEvent, Status
from edged.sources.ble_replay import ReplayBackend, ReplaySpec, ppg_counts
from edged.sources.ble_source import (
    BleHeartRateSource,
    BlePolarPmdSource,
    BleTransport,
    open_transport,
    replay_transport,
)
from edged.sources.readers import read_recording
from firmware_bridge import polar_pmd as pmd

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
SLP61 = DATA / "ibi-sleep-slpdb" / "slp61.rr"
MITDB100 = DATA / "ecg-mitbih" / "100.npz"
BIDMC = DATA / "ecg-ppg-resp" / "bidmc_01_Signals.csv"


# ------------------------------------------------------------------------------------------ helpers


def replay(path: Path, query: str) -> tuple[ReplayBackend, BleTransport]:
    air = ReplayBackend.open(f"replay:{path}?{query}")
    return air, replay_transport(air)


def collect(source: Source, until: Callable[[list[SourceEvent]], bool], timeout: float = 30.0) -> list[SourceEvent]:
    """Run the source until ``until(events)`` holds; fail with what happened if it never does."""
    events: list[SourceEvent] = []

    async def run() -> None:
        gen = source.events()
        try:
            async with asyncio.timeout(timeout):
                async for event in gen:
                    events.append(event)
                    if until(events):
                        return
        finally:
            await gen.aclose()
            await source.close()

    try:
        asyncio.run(run())
    except TimeoutError:
        statuses = [e for e in events if isinstance(e, (Status, Gap))]
        raise AssertionError(f"condition not met in {timeout} s; {len(events)} events, last statuses/gaps: "
                             f"{statuses[-6:]}, counters {source.counters}") from None
    return events


def collect_for(source: Source, seconds: float) -> list[SourceEvent]:
    """Run the source for ``seconds`` of host time, whatever it yields."""
    events: list[SourceEvent] = []

    async def run() -> None:
        gen = source.events()
        try:
            async with asyncio.timeout(seconds):
                async for event in gen:
                    events.append(event)
        except TimeoutError:
            pass
        finally:
            await gen.aclose()
            await source.close()

    asyncio.run(run())
    return events


def chunks(events: list[SourceEvent], channel: str = "rr") -> list[Chunk]:
    return [e for e in events if isinstance(e, Chunk) and e.channel == channel]


def count(events: list[SourceEvent], channel: str = "rr") -> int:
    return sum(len(c.data) for c in chunks(events, channel))


def statuses(events: list[SourceEvent]) -> list[tuple[bool, str]]:
    return [(e.connected, e.reason) for e in events if isinstance(e, Status)]


def assert_one_stream(events: list[SourceEvent], channel: str) -> None:
    """Indices continue across everything: each chunk starts where the last chunk or gap ended."""
    index = 0
    for e in events:
        if isinstance(e, (Chunk, Gap)) and e.channel == channel:
            assert e.start_index == index, (e, index)
            index = e.end_index if isinstance(e, Chunk) else e.start_index + e.n_missing


def segments(events: list[SourceEvent]) -> list[tuple[np.ndarray, np.ndarray | None, float]]:
    """Runs of rr chunks between gaps: (intervals, beat times, seconds lost before the run)."""
    out: list[tuple[list, list, float]] = [([], [], 0.0)]
    for e in events:
        if isinstance(e, Gap) and e.channel == "rr":
            out.append(([], [], e.seconds))
        elif isinstance(e, Chunk) and e.channel == "rr":
            out[-1][0].append(e.data)
            out[-1][1].append(e.times)
    return [(np.concatenate(r), np.concatenate(t) if t and t[0] is not None else None, lost)
            for r, t, lost in out if r]


def locate(run: np.ndarray, truth: np.ndarray, after: int = 0) -> int:
    """Index in ``truth`` where ``run`` starts (searched from ``after``); the whole run must match there."""
    m = min(12, len(run))
    windows = np.lib.stride_tricks.sliding_window_view(truth[after:], m)
    hits = np.flatnonzero(np.all(windows == run[:m], axis=1))
    assert len(hits), "a delivered run of intervals is not in the recording"
    k = after + int(hits[0])
    np.testing.assert_array_equal(run, truth[k:k + len(run)])
    return k


def recording_beats(path: Path) -> tuple[np.ndarray, np.ndarray]:
    track = read_recording(path).rr["rr"]
    return track.rr, track.beat_times()


# -------------------------------------------------------------------------------------------- (a) HRS


def test_hrs_replay_gives_back_the_recorded_rr_series_and_beat_times():
    air, transport = replay(SLP61, "speed=120&seed=1")
    source = BleHeartRateSource("strap", address=air.sensor.address, transport=transport)
    events = collect(source, lambda evs: count(evs) >= 700)

    assert statuses(events) == [(True, f"connected to {air.sensor.address}")]
    assert not [e for e in events if isinstance(e, Gap)]
    assert_one_stream(events, "rr")
    rr, times, _ = segments(events)[0]
    truth_rr, beats = recording_beats(SLP61)
    # The strap sends each interval rounded to 1/1024 s; nothing else may change it.
    k = locate(rr, np.round(truth_rr * 1024) / 1024)
    assert k <= 2  # the stream starts with the intervals of the strap's first second
    # Beat times: the recording's beats on the stream's clock (stream time 0 = first notification).
    assert times is not None and source.anchor_clock is not None and air.sensor.started_at is not None
    truth_times = beats[k + 1:k + 1 + len(rr)] - (source.anchor_clock - air.sensor.started_at)
    error = times - truth_times
    # Measured: median 0.03 s late (BLE latency is 20-80 ms), 0.22 s at most while the clock settles, under
    # 0.05 s after the first 50 beats; intervals p99 7 ms (1/1024-s quantisation and the clock's slew).
    assert np.all(np.abs(error) < 0.3) and abs(np.median(error)) < 0.1, (np.median(error), np.abs(error).max())
    ibi_error = np.abs(np.diff(times) - np.diff(truth_times))
    assert np.percentile(ibi_error, 99) < 0.01
    assert source.counters["bad_packets"] == 0 and source.counters["reconnects"] == 0
    assert source.counters["notifications"] >= len(rr) * 0.6  # ~1 per second, not per beat


def test_malformed_notifications_are_counted_and_skipped_and_the_loss_is_a_gap():
    air, transport = replay(SLP61, "speed=100&corrupt_every=20")
    source = BleHeartRateSource("strap", ble_name="Polar H10", transport=transport)
    events = collect(source, lambda evs: count(evs) >= 300)

    assert source.counters["bad_packets"] == air.sensor.log.corrupted >= 10
    assert statuses(events) == [(True, f"connected to {air.sensor.address}")]  # no reconnect for bad packets
    assert_one_stream(events, "rr")
    truth = np.round(recording_beats(SLP61)[0] * 1024) / 1024
    runs = segments(events)
    assert 1 <= len(runs) - 1 <= air.sensor.log.corrupted  # intervals lost with a bad packet: a gap, not a splice
    k = 0
    for rr, _, _ in runs:
        k = locate(rr, truth, k)


# ---------------------------------------------------------------------------- (b) losing the strap


def test_disconnect_and_silent_stall_reconnect_with_rescan_and_one_stream():
    air = ReplayBackend.open(f"replay:{SLP61}?speed=100&disconnect_after=120&away=10&stall_after=300")
    scans: list[int] = []

    class CountingScanner(air.scanner):  # type: ignore[misc,valid-type]  # counts scans; otherwise the replay's
        async def start(self) -> None:
            scans.append(1)
            await super().start()

    source = BleHeartRateSource("strap", address=air.sensor.address, silence_seconds=15.0, reconnect_min=1.0,
                                transport=replay_transport(air, scanner=CountingScanner))
    events = collect(source, lambda evs: len(statuses(evs)) >= 5 and count(evs[evs.index(
        [e for e in evs if isinstance(e, Status)][4]):]) >= 100)

    connected = f"connected to {air.sensor.address}"
    assert statuses(events) == [(True, connected), (False, "the link dropped"), (True, connected),
                                (False, "no data for 15 s"), (True, connected)]
    assert len(scans) == 3 and air.sensor.log.connections == 3  # rescanned and reconnected each time
    assert air.sensor.log.stalled > 0  # the stall really swallowed notifications with the link up
    c = source.counters
    assert (c["connections"], c["reconnects"], c["link_losses"], c["silences"]) == (3, 2, 1, 1)
    assert_one_stream(events, "rr")

    truth_rr, beats = recording_beats(SLP61)
    truth = np.round(truth_rr * 1024) / 1024
    runs = segments(events)
    assert len(runs) == 3  # one gap per outage, nothing else lost
    k, previous_end = 0, None
    for rr, _, lost in runs:
        k = locate(rr, truth, k)  # notifications re-enabled: the series resumes, unchanged
        if previous_end is not None:
            true_lost = beats[k] - beats[previous_end]  # from the last beat delivered to the next one
            assert abs(lost - true_lost) < 1.0, (lost, true_lost)
        previous_end = k + len(rr)
        k = previous_end
    # The outages: ~10 s away plus the reconnect, and the 15-s stall plus its detection and reconnect.
    assert 10 < runs[1][2] < 20 and 15 < runs[2][2] < 30


# --------------------------------------------------------------------------------------- (c) PMD ECG


def test_pmd_ecg_frames_decode_to_the_recorded_microvolts_and_lost_frames_are_exact_gaps():
    air, transport = replay(MITDB100, "speed=50&lose_every=40&rate_error=0.004&disconnect_after=40&away=3")
    source = BlePolarPmdSource("h10", stream="ecg", ble_name="Polar H10", transport=transport)
    events = collect(source, lambda evs: sum(e.end_index for e in chunks(evs[-1:], "ecg")) >= 130 * 100)

    assert source.channels() == [source.channels()[0]] and source.channels()[0].fs == 130.0
    assert source.channels()[0].units == "uV"
    assert air.sensor.log.commands[0] == pmd.start_ecg_command(130, 14)  # what a Polar H10 expects
    # The expectation, independently of the emulator: MIT-BIH 100 (360 Hz, mV) resampled to 130 Hz, in uV.
    z = np.load(MITDB100)
    expected = np.round(resample_poly(z["ecg_mV"].astype(np.float64), 13, 36) * 1000)
    ecg = chunks(events, "ecg")
    first = ecg[0].data
    offset = int(np.flatnonzero(np.all(np.lib.stride_tricks.sliding_window_view(expected, len(first)) == first,
                                       axis=1))[0])
    for chunk in ecg:  # every sample at its true index: gaps were sized exactly, even across the reconnect
        np.testing.assert_array_equal(chunk.data, expected[offset + chunk.start_index:offset + chunk.end_index])
    assert_one_stream(events, "ecg")
    gaps = [e for e in events if isinstance(e, Gap)]
    lost_frames = [g for g in gaps if g.n_missing == pmd_frame_size()]
    assert len(lost_frames) in (air.sensor.log.lost - 1, air.sensor.log.lost)  # the last may not show yet
    assert len(lost_frames) >= 3
    assert len(gaps) == len(lost_frames) + 1  # plus the reconnect, whose size is not a whole frame
    reconnect_gap = next(g for g in gaps if g.n_missing != pmd_frame_size())
    assert 3 * 130 < reconnect_gap.n_missing < 10 * 130 and reconnect_gap.seconds == reconnect_gap.n_missing / 130
    assert statuses(events)[1] == (False, "the link dropped") and source.counters["reconnects"] == 1
    # The sensor runs 0.4 % fast; its true sample period is measured from the frame timestamps.
    assert source.indexer is not None
    assert source.indexer.period_ns == pytest.approx(1e9 / (130 * 1.004), rel=2e-5)
    assert source.counters["frames_lost"] == len(gaps) - 1 + round(reconnect_gap.n_missing / 73)


def pmd_frame_size() -> int:
    return 73  # an H10 ECG frame at a 232-byte MTU


def test_pmd_ppg_compressed_frames_at_55_hz():
    air, transport = replay(BIDMC, "speed=40&profile=sense&channel=PLETH&lose_every=25")
    source = BlePolarPmdSource("sense", stream="ppg", sample_rate=55, ble_name="Polar Sense", transport=transport)
    events = collect(source, lambda evs: count(evs, "ppg0") >= 55 * 60)

    assert [c.name for c in source.channels()] == ["ppg0", "ppg1", "ppg2", "ambient"]
    assert air.sensor.log.commands[0] == pmd.start_ppg_command(55)
    expected = ppg_counts(read_recording(BIDMC), "PLETH", 55)  # the emulator's waveform, as integers
    first = chunks(events, "ppg0")[0].data
    offset = int(np.flatnonzero(np.all(np.lib.stride_tricks.sliding_window_view(expected[:, 0], len(first))
                                       == first, axis=1))[0])
    for i, name in enumerate(["ppg0", "ppg1", "ppg2", "ambient"]):
        assert_one_stream(events, name)
        for chunk in chunks(events, name):
            np.testing.assert_array_equal(chunk.data, expected[offset + chunk.start_index:offset + chunk.end_index, i])
    assert all(g.n_missing == 24 for g in events if isinstance(g, Gap)) and source.counters["gaps"] >= 4


def test_pmd_ppi_intervals_and_beat_times_from_the_sensor():
    air, transport = replay(SLP61, "speed=100&profile=sense&lose_every=25&seed=2")
    source = BlePolarPmdSource("sense", stream="ppi", address=air.sensor.address, transport=transport)
    events = collect(source, lambda evs: count(evs) >= 400)

    truth_rr, beats = recording_beats(SLP61)
    truth = np.round(truth_rr * 1000) / 1000
    assert_one_stream(events, "rr")
    runs = segments(events)
    assert len(runs) >= 5
    shift = source.anchor_clock - air.sensor.started_at  # recording second of stream time 0
    k, previous_end = 0, None
    errors, ibi_errors = [], []
    for rr, times, lost in runs:
        k = locate(rr, truth, k)
        if previous_end is not None:  # lost span from sensor timestamps: exact up to the whole-ms intervals
            assert lost == pytest.approx(beats[k] - beats[previous_end], abs=0.005)
        assert times is not None
        true_times = beats[k + 1:k + 1 + len(rr)] - shift
        errors.append(times - true_times)
        ibi_errors.append(np.diff(times) - np.diff(true_times))
        previous_end = k = k + len(rr)
    error = np.concatenate(errors)
    # Never placed before the beat happened (arrival bounds the offset), and the offset follows the least
    # delayed frames down towards the BLE latency. Measured: 0.21 s late at first (beats near 60 bpm lock
    # in phase with the 1-Hz frames, so no early frame is fresh), 0.02-0.05 s after the first ~40 s.
    assert np.all(error > 0) and error.max() < 0.5 and error[-1] < 0.1, (error.max(), error[-1])
    # Intervals keep the sensor's own timing (whole-ms PPI) except while a correction is spread over them:
    # at most 2 % of an interval (measured: p95 4 ms, 8 of 386 intervals above 6 ms, max 16 ms).
    ibi_error = np.abs(np.concatenate(ibi_errors))  # delivered intervals only, never across a gap
    assert np.percentile(ibi_error, 95) < 0.006 and ibi_error.max() < 0.025


def test_pmd_start_refused_for_an_unsupported_setting_is_one_clear_error():
    _, transport = replay(MITDB100, "speed=50")
    source = BlePolarPmdSource("h10", stream="ecg", sample_rate=200, ble_name="Polar", transport=transport)
    with pytest.raises(SourceError, match=r"refused to start ecg \(invalid sample rate\); it offers sample_rate 130"):
        collect(source, lambda evs: False, timeout=10)
    _, transport = replay(MITDB100, "speed=50")
    source = BlePolarPmdSource("h10", stream="ppi", ble_name="Polar", transport=transport)
    with pytest.raises(SourceError, match=r"has no PMD ppi stream \(it offers ecg\)"):
        collect(source, lambda evs: False, timeout=10)


def test_a_device_that_is_never_found_is_reported_offline_once_and_retried():
    _, transport = replay(SLP61, "speed=100")
    source = BleHeartRateSource("strap", address="AA:BB:CC:DD:EE:FF", scan_timeout=2.0, reconnect_min=1.0,
                                reconnect_max=4.0, transport=transport)
    events = collect_for(source, 1.0)  # 100 s of replay time: scans of 2 s, backoff 1, 2, 4, 4... s
    assert statuses(events) == [(False, "AA:BB:CC:DD:EE:FF not found in a 2-s scan")]
    assert 10 <= source.counters["scan_misses"] <= 30 and source.counters["connections"] == 0


# ------------------------------------------------------------------------------- config, scan, errors


def test_config_for_ble_sources(tmp_path):
    text = f"""
[[devices]]
name = "strap"
type = "ble-hrs"
ble_name = "Polar H10"
backend = "replay:{SLP61}?speed=60"
silence_seconds = 20

[[devices]]
name = "ecg"
type = "polar-pmd"
address = "A0:9E:1A:12:34:56"
stream = "ecg"
"""
    config = parse_config(text, "edged.toml")
    strap, ecg = config.devices
    assert strap.name == "strap" and strap.options["ble_name"] == "Polar H10"
    assert strap.options["silence_seconds"] == 20.0 and strap.options["backend"].startswith("replay:")
    assert ecg.options["stream"] == "ecg" and ecg.options["backend"] == ""
    with pytest.raises(ConfigError, match=r"edged.toml:7: devices\[0\].stream: unknown key"):
        parse_config(text.replace("silence_seconds = 20", "stream = \"ecg\""), "edged.toml")
    with pytest.raises(ConfigError, match="set `address`.*or `ble_name`"):
        BleHeartRateSource("strap")
    with pytest.raises(ConfigError, match=r"unknown replay option 'sped' \(known: .*speed"):
        ReplaySpec.parse(f"replay:{SLP61}?sped=3")
    with pytest.raises(ConfigError, match="use \"\" .* or \"replay:<recording>"):
        open_transport("bluez")


def test_list_ble_devices_recognises_heart_rate_and_pmd_sensors():
    found = list_ble_devices(2.0, backend=f"replay:{SLP61}?speed=20&profile=sense")
    assert [(d.name, d.kinds, d.probed) for d in found] == [("Polar Sense EE000001", ("ble-hrs", "polar-pmd"), False)]
    probed = list_ble_devices(2.0, backend=f"replay:{MITDB100}?speed=20", probe=True)
    assert [(d.kinds, d.pmd_streams, d.probed) for d in probed] == [(("polar-pmd",), ("ecg",), True)]
    assert pmd.PMD_SERVICE_UUID in probed[0].services


# ------------------------------------------------------------------------------- (d) the whole daemon


def test_daemon_on_the_replay_backend_goes_offline_and_online_and_keeps_scoring(tmp_path, subscribe, topic_base,
                                                                                 daemon_toml):
    from onnx_factory import write_model

    write_model(tmp_path)  # an IBI-input model ("test-model")
    cfg = tmp_path / "edged.toml"
    cfg.write_text(daemon_toml(models_dir=tmp_path, devices=f"""
[[devices]]
name = "strap"
type = "ble-hrs"
model = "test-model"
ble_name = "Polar H10"
backend = "replay:{SLP61}?speed=100&disconnect_after=300&away=30"
silence_seconds = 60
reconnect_min = 1
"""))
    prefix = f"{topic_base}/e2e/strap"
    sub = subscribe(f"{prefix}/#")
    daemon = start_daemon(cfg, cwd=REPO)
    try:
        sub.wait_for(lambda ms: any(m.topic == f"{prefix}/stage" and m.json()["epoch"] >= 18 for m in ms), timeout=60)
        daemon.send_signal(signal.SIGTERM)
        try:
            code = daemon.wait(30)
        except subprocess.TimeoutExpired:
            daemon.kill()
            raise AssertionError(f"no exit 30 s after SIGTERM: {daemon.communicate()[1][-3000:]}") from None
        assert code == 0
        sub.wait_for(lambda ms: any(m.topic == f"{prefix}/counters" for m in ms))
    finally:
        if daemon.poll() is None:
            daemon.kill()
        _, err = daemon.communicate()
    availability = [m.payload.decode() for m in sub.on(f"{prefix}/availability")]
    changes = [a for i, a in enumerate(availability) if i == 0 or a != availability[i - 1]]  # shutdown says it twice
    assert changes == ["online", "offline", "online", "offline"], (availability, err[-2000:])
    stages = {m.json()["epoch"]: m.json() for m in sub.on(f"{prefix}/stage")}
    assert sorted(stages) == list(range(max(stages) + 1))  # every epoch scored, through the outage too
    # Epoch k covers stream seconds [30k, 30k + 30); the link was down from ~300 s to ~331 s.
    assert min(stages[k]["quality"]["score"] for k in (9, 10, 11)) < 0.9  # the outage shows as missing data
    assert all(stages[k]["quality"]["score"] > 0.9 for k in range(13, 18))  # and scoring goes on after it
    counters = json.loads(sub.on(f"{prefix}/counters")[-1].payload)["counters"]
    assert counters["reconnects"] == 1 and counters["link_losses"] == 1 and counters["gaps"] == 1
    assert counters["bad_packets"] == 0
