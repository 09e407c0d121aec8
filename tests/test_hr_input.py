"""Heart-rate-only input (a watch, a BLE heart-rate device without RR): the held-interval DSP stage, its
pipeline builder, the Walch reader and replay, and the BLE heart-rate source's ``hr`` channel.

Expectations come from the batch form :func:`edged.dsp.hr.hold_hr` or are written out by hand; inputs are
real Apple Watch readings (Walch et al. 2019) and a real slpdb night replayed as BLE notifications.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from onnx_factory import write_model

from edged.dsp.hr import MAX_HR_SILENCE, StreamingHrHold, hold_hr
from edged.errors import ConfigError, RecordingError
from edged.pipeline import IbiFromHR, _build_input, match_channels
from edged.scoring.manifest import InputSpec, load_manifest
from edged.sources.base import ChannelSpec, Chunk, Gap
from edged.sources.ble_replay import ReplayBackend
from edged.sources.ble_source import BleHeartRateSource, _Note, replay_transport
from edged.sources.readers import read_recording
from edged.sources.replay import ReplaySource
from firmware_bridge.hrs import HEART_RATE_MEASUREMENT_UUID, encode_hrs

REPO = Path(__file__).resolve().parents[1]
WALCH = REPO.parent / "shared" / "data" / "hr-sleep-walch"
HR_FILE = WALCH / "heart_rate" / "46343_heartrate.txt"
REPEATED = WALCH / "heart_rate" / "1066528_heartrate.txt"  # holds its export three times over
SLP61 = REPO.parent / "shared" / "data" / "ibi-sleep-slpdb" / "slp61.rr"


@pytest.fixture(scope="module")
def readings() -> tuple[np.ndarray, np.ndarray]:
    track = read_recording(HR_FILE).hr["hr"]
    return track.times, track.bpm


# ------------------------------------------------------------------------------------- the DSP stage


def test_hold_by_hand():
    times = np.array([1.5, 4.0, 4.0, 10.0, 50.0])
    bpm = np.array([60.0, 120.0, 100.0, 0.0, 75.0])
    out = hold_hr(times, bpm, 60, fs=1.0, max_silence=30.0)
    assert np.all(out[:2] == 0)  # before the first reading
    assert np.all(out[2:4] == 1.0)  # 60 bpm held from 1.5 s
    assert np.allclose(out[4:10], 0.6)  # the last of two readings at 4.0 s (100 bpm)
    assert np.all(out[10:50] == 0)  # 0 bpm (no contact) is no heart rate, held as missing
    assert np.allclose(out[50:], 0.8)
    stale = hold_hr(np.array([0.0]), np.array([60.0]), 40, fs=1.0, max_silence=30.0)
    assert np.all(stale[:30] == 1.0) and np.all(stale[30:] == 0)  # missing once the reading is 30 s old
    assert np.all(hold_hr(np.array([0.0]), np.array([300.0]), 5) == 0)  # implausible
    with pytest.raises(ValueError, match="must not decrease"):
        hold_hr(np.array([2.0, 1.0]), np.array([60.0, 60.0]), 5)


@pytest.mark.parametrize("per_push", [1, 3, 17, 400])
def test_streaming_hold_equals_batch_on_real_watch_readings(readings, per_push):
    times, bpm = readings
    n = int(times[-1] * 1.0) + 45
    batch = hold_hr(times, bpm, n)
    hold = StreamingHrHold()
    parts = []
    for i in range(0, len(times), per_push):
        parts.append(hold.push(times[i:i + per_push], bpm[i:i + per_push]))
        if i % (5 * per_push) == 0:  # silence reports in between change nothing
            parts.append(hold.advance_to(float(times[min(i + per_push, len(times) - 1)]) - 0.5))
    parts.append(hold.advance_to(n / 1.0))
    stream = np.concatenate(parts)
    assert len(stream) == n
    np.testing.assert_array_equal(stream, batch)
    assert np.count_nonzero(batch) > 0.9 * n - 60


def test_streaming_hold_drops_and_counts_readings_out_of_order():
    hold = StreamingHrHold()
    hold.push(np.array([5.0, 10.0]), np.array([60.0, 60.0]))
    assert len(hold.push(np.array([7.0]), np.array([120.0]))) == 0
    assert hold.out_of_order == 1
    out = np.concatenate([hold.push(np.array([12.0]), np.array([120.0])), hold.advance_to(14.0)])
    np.testing.assert_allclose(out, [1.0, 1.0, 0.5, 0.5])  # samples 10..13


# ---------------------------------------------------------------------------------- pipeline builder


def _spec() -> InputSpec:
    return InputSpec(name="hr", signal="hr", fs=1.0, units="s")


@pytest.mark.parametrize("chunk_seconds", [1.0, 7.0, 60.0])
def test_hr_builder_through_replay_is_chunk_invariant_and_equals_batch(readings, chunk_seconds):
    source = ReplaySource("watch", path=HR_FILE, speed=0, chunk_seconds=chunk_seconds)
    (channel,) = source.channels()
    assert channel.kind == "hr" and channel.units == "bpm"
    builder = _build_input(_spec(), channel, 30)
    assert isinstance(builder, IbiFromHR)
    epochs = []

    async def run():
        async for event in source.events():
            epochs.extend(builder.push(event))

    asyncio.run(run())
    epochs += builder.advance_to(source.duration + MAX_HR_SILENCE + 30)
    assert [e.index for e in epochs] == list(range(len(epochs)))
    times, bpm = readings
    got = np.concatenate([e.data for e in epochs])
    np.testing.assert_array_equal(got, hold_hr(times, bpm, len(got)))
    assert len(got) >= times[-1]
    assert builder.quality(epochs[100]) == 1.0


def test_gaps_in_an_hr_stream_leave_the_hold_to_expire():
    channel = ChannelSpec("hr", "hr", 0.0, "bpm")
    builder = _build_input(_spec(), channel, 30)
    out = builder.push(Chunk("hr", 0, np.array([60.0, 60.0]), times=np.array([0.0, 5.0])))
    out += builder.push(Gap("hr", 2, 0, 120.0))
    out += builder.push(Chunk("hr", 2, np.array([75.0]), times=np.array([125.0])))
    data = np.concatenate([e.data for e in out])
    assert len(out) == 4
    assert np.all(data[:35] == 1.0) and np.all(data[35:120] == 0)
    assert builder.quality(out[0]) == 1.0 and builder.quality(out[2]) == 0.0
    with pytest.raises(ValueError, match="without reading times"):
        builder.push(Chunk("hr", 3, np.array([60.0])))


def test_hr_inputs_match_hr_channels_only(tmp_path):
    manifest = load_manifest(write_model(tmp_path, inputs=[{"name": "hr", "signal": "hr", "fs": 1.0, "units": "s"}]))
    channels = [ChannelSpec("rr", "rr", 0.0, "s"), ChannelSpec("hr", "hr", 0.0, "bpm")]
    assert match_channels(manifest, channels)["hr"].kind == "hr"
    with pytest.raises(ConfigError, match="heart-rate readings"):
        match_channels(manifest, [ChannelSpec("rr", "rr", 0.0, "s")])
    with pytest.raises(ConfigError, match="heart-rate readings feed only an 'hr' input"):
        _build_input(InputSpec("ibi", "ibi", 25.0, "s"), channels[1], 750)


# -------------------------------------------------------------------------------------------- reader


def test_walch_reader_keeps_the_psg_night_sorted_without_repeats():
    rec = read_recording(REPEATED)
    track = rec.hr["hr"]
    raw = np.loadtxt(REPEATED, delimiter=",")
    night = np.unique(raw[raw[:, 0] >= 0], axis=0)
    assert np.all(np.diff(track.times) >= 0) and track.times[0] >= 0
    np.testing.assert_array_equal(np.column_stack([track.times, track.bpm]), night)
    assert len(raw[raw[:, 0] >= 0]) > 2.5 * len(track.times)  # the file holds the night three times
    stages = rec.hypnogram.stages
    labels = np.loadtxt(WALCH / "labels" / "1066528_labeled_sleep.txt", delimiter=",")
    assert len(stages) == len(labels) and rec.hypnogram.epoch_seconds == 30.0
    code = {None: -1, "W": 0, "N1": 1, "N2": 2, "N3": 3, "REM": 5}
    assert [code[s] for s in stages] == [3 if c == 4 else int(c) for c in labels[:, 1]]


def test_walch_reader_errors_name_the_file_and_line(tmp_path):
    folder = tmp_path / "heart_rate"
    folder.mkdir()
    bad = folder / "7_heartrate.txt"
    bad.write_text("1.0,60\n2.0,sixty\n")
    with pytest.raises(RecordingError, match=r"7_heartrate.txt:2: not a number"):
        read_recording(bad)
    bad.write_text("-5.0,60\n")
    with pytest.raises(RecordingError, match="no heart-rate reading at or after the PSG start"):
        read_recording(bad)
    other = tmp_path / "notes.txt"
    other.write_text("1,2\n")
    with pytest.raises(RecordingError, match="unsupported file type '.txt'.*<id>_heartrate.txt"):
        read_recording(other)


# ------------------------------------------------------------------------------------ BLE heart rate


def test_ble_hrs_offers_heart_rate_and_sends_it_without_rr():
    air = ReplayBackend.open(f"replay:{SLP61}?speed=100")
    source = BleHeartRateSource("watch", address=air.sensor.address, transport=replay_transport(air))
    assert [(c.name, c.kind) for c in source.channels()] == [("rr", "rr"), ("hr", "hr")]

    def note(payload: bytes, t: float) -> _Note:
        return _Note(HEART_RATE_MEASUREMENT_UUID, payload, t, 0.0)

    events = source._decode(note(encode_hrs(64), 100.0))  # a watch: heart rate only, no RR field
    events += source._decode(note(encode_hrs(66, contact=True), 101.0))
    events += source._decode(note(encode_hrs(0, contact=False), 102.0))
    assert [e.channel for e in events] == ["hr", "hr", "hr"]
    assert [float(e.data[0]) for e in events] == [64.0, 66.0, 0.0]
    assert [float(e.times[0]) for e in events] == [0.0, 1.0, 2.0]  # stream time from the first notification
    assert [e.start_index for e in events] == [0, 1, 2]
    assert source.counters["hr_only"] == 3 and source.counters["contact_lost"] == 1
