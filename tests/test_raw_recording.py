"""Raw recording to EDF+ (edged.sinks.raw_recording): a night recorded while it is scored is re-scored from
the file with the same stages; gaps stay gaps; files survive a kill and are bounded."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edged.cli import main as edged
from edged.config import ConfigError, parse_config
from edged.sinks.raw_recording import RawRecorder, RecordingSettings
from edged.sources.base import ChannelSpec, Chunk, Gap, Source, Status
from edged.sources.readers import read_recording
from edged.sources.readers.edf import load_edf, repair_edf, write_edf
from edged.sources.recording import Recording, SignalTrack

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "edged" / "data" / "demo" / "slp61.rr"
SHARED = REPO.parent / "shared" / "data"
ECG_100 = SHARED / "ecg-mitbih" / "100.npz"
MMASH_1 = SHARED / "rr-24h-mmash" / "user_1" / "RR.csv"


def replay(path: Path, out: Path, *args: str) -> list[dict]:
    """`edged replay` in this process (the real CLI and daemon code; no interpreter start-up per run)."""
    assert edged(["replay", str(path), "--json", str(out), *args]) == 0
    return json.loads(out.read_text())


def recorded_file(directory: Path) -> Path:
    files = sorted((directory / "replay").glob("*.edf"))
    assert len(files) == 1, files
    return files[0]


def assert_same_night(live: list[dict], again: list[dict]) -> None:
    assert len(live) > 20
    assert [e["stage"] for e in again] == [e["stage"] for e in live]
    for a, b in zip(live, again):
        assert a["probabilities"] == pytest.approx(b["probabilities"], abs=1e-6)
        assert a["quality"] == pytest.approx(b["quality"], abs=1e-3)


def test_rr_night_is_rescored_from_its_recording_with_the_same_stages(tmp_path):
    live = replay(DEMO, tmp_path / "live.json", "--record", str(tmp_path / "rec"))
    path = recorded_file(tmp_path / "rec")
    again = replay(path, tmp_path / "again.json")
    assert_same_night(live, again)

    contents = load_edf(path)
    assert contents.header.reserved == "EDF+C"  # no gaps in slp61
    assert path.stat().st_size == contents.header.header_bytes + contents.header.n_records * 2 * contents.header.record_samples
    assert path.read_bytes()[236:244].strip() == str(contents.header.n_records).encode()  # count written on close
    source = read_recording(DEMO).rr["rr"]
    track = contents.recording.rr["rr"]
    np.testing.assert_array_equal(track.rr, source.rr)  # every interval exactly as received
    assert track.first_beat == source.first_beat
    texts = [a.text for a in contents.annotations]
    assert any(t.startswith("edged ") and "device replay (replay)" in t for t in texts)
    assert "Channels: rr (rr, s)" in texts


def test_raw_ecg_with_gaps_is_rescored_the_same_and_gaps_stay_gaps(tmp_path):
    ecg = np.load(ECG_100)["ecg_mV"][: 360 * 900].astype(np.float64)
    ecg[360 * 120: 360 * 150] = np.nan  # a 30-s dropout and a 1-s one: EDF+D holes in the source
    ecg[360 * 400: 360 * 401] = np.nan
    source = tmp_path / "ecg_gaps.edf"
    write_edf(source, Recording(str(source), signals={"ECG": SignalTrack(ecg, 360.0, "mV")}, start_time=1.7e9))

    live = replay(source, tmp_path / "live.json", "--channel", "ibi=ECG", "--record", str(tmp_path / "rec"))
    path = recorded_file(tmp_path / "rec")
    again = replay(path, tmp_path / "again.json", "--channel", "ibi=ECG")
    assert_same_night(live, again)

    contents = load_edf(path)
    assert contents.header.reserved == "EDF+D"
    half = 0.5 / 360  # a gap annotation starts between the last sample received and the first lost
    assert contents.recording.gaps == [(120.0 - half, 30.0), (400.0 - half, 1.0)]
    gaps = [(a.onset, a.duration) for a in contents.annotations if a.text == "Gap ECG"]
    assert gaps == contents.recording.gaps  # one annotation per gap, however many events it came in
    data = contents.recording.signals["ECG"].data
    kept = ~np.isnan(ecg)
    assert len(data) == len(ecg)
    assert np.abs(data[kept] - ecg[kept]).max() < 1e-3  # 16-bit quantisation of a +-3 mV range
    assert np.isnan(data[360 * 125])  # inside the hole: nothing invented


def test_strap_dropouts_are_recorded_as_gaps_and_rescored_the_same(tmp_path):
    # The first 6,000 beats (about 1.5 h) of a real 24-h Polar H7 recording, with its real dropouts.
    excerpt = tmp_path / "RR.csv"
    with open(MMASH_1) as fh:
        excerpt.write_text("".join(line for _, line in zip(range(6001), fh)))
    live = replay(excerpt, tmp_path / "live.json", "--record", str(tmp_path / "rec"))
    path = recorded_file(tmp_path / "rec")
    again = replay(path, tmp_path / "again.json")
    assert_same_night(live, again)

    original = read_recording(excerpt)
    recorded = load_edf(path)
    assert recorded.header.reserved == "EDF+D"  # records inside the long silences are left out
    assert len(original.gaps) > 50
    np.testing.assert_allclose(np.array(recorded.recording.gaps), np.array(original.gaps), rtol=0, atol=1e-9)
    got, want = recorded.recording.rr["rr"].rr, original.rr["rr"].rr
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)  # a gap's length went through the beat clock
    measured = want < 5.0  # the bridged dropouts are all longer than any real interval
    np.testing.assert_array_equal(got[measured], want[measured])  # every measured interval exactly


# --------------------------------------------------------------------------- the recorder on its own


class ScriptedSource(Source):
    """Events given in advance (a device at its protocol boundary); only channels and the anchor matter."""

    def __init__(self, channels: list[ChannelSpec], anchor: float = 1_700_000_000.25):
        super().__init__("dev")
        self._channels = channels
        self.anchor_time = anchor

    def channels(self) -> list[ChannelSpec]:
        return self._channels

    async def _events(self):  # pragma: no cover - the recorder is fed directly
        yield


def record(events, channels, tmp_path: Path, **settings) -> RawRecorder:
    source = ScriptedSource(channels)
    recorder = RawRecorder(RecordingSettings(dir=tmp_path, **settings), "dev", "serial")
    for event in events:
        recorder.push(event, source)
    recorder.close()
    return recorder


def ecg_events(chunk: int, x: np.ndarray, gap: tuple[int, int]):
    """``x`` in chunks of ``chunk`` samples, losing samples [gap) as a queue overflow would (one Gap per
    lost chunk), with the connection dropping and coming back around it."""
    yield Status(True, "connected")
    for start in range(0, len(x), chunk):
        stop = min(start + chunk, len(x))
        if gap[0] <= start < gap[1] or gap[0] < stop <= gap[1] or (start < gap[0] and stop > gap[1]):
            lo, hi = max(start, gap[0]), min(stop, gap[1])
            if start < lo:
                yield Chunk("ecg", start, x[start:lo])
            if lo == gap[0]:
                yield Status(False, "port closed")
            yield Gap("ecg", lo, hi - lo, (hi - lo) / 360)
            if hi == gap[1]:
                yield Status(True, "connected")
            if hi < stop:
                yield Chunk("ecg", hi, x[hi:stop])
        else:
            yield Chunk("ecg", start, x[start:stop])


@pytest.mark.parametrize("chunk", [1, 37, 1800])
def test_recording_is_the_same_whatever_the_chunk_size_and_marks_a_gap_inside_a_record(tmp_path, chunk):
    x = np.load(ECG_100)["ecg_mV"][: 360 * 40].astype(np.float64)
    gap = (360 * 12 + 100, 360 * 13 + 7)  # starts and ends inside 10-s data records: no hole possible
    n = 360 * 40 if chunk > 1 else 360 * 22  # one-sample chunks: a shorter stream keeps the test quick
    rec = record(ecg_events(chunk, x[:n], gap), [ChannelSpec("ecg", "signal", 360.0, "mV")], tmp_path)
    assert rec.failed is None and len(rec.paths) == 1
    contents = load_edf(rec.paths[0])
    got = contents.recording
    assert got.start_time == pytest.approx(1_700_000_000.25)
    assert got.gaps == [((gap[0] - 0.5) / 360, (gap[1] - gap[0]) / 360)]
    assert len(got.signals["ecg"].data) == n  # padding of the last record is cut at "End of data"
    kept = np.ones(n, bool)
    kept[gap[0]:gap[1]] = False
    assert np.abs(got.signals["ecg"].data[kept] - x[:n][kept]).max() < 1e-3
    texts = [(round(a.onset, 6), a.text) for a in contents.annotations]
    assert (0.0, "Connected: connected") in texts
    assert (round(gap[0] / 360, 6), "Connection lost: port closed") in texts
    assert (round(gap[1] / 360, 6), "Connected: connected") in texts


def test_a_sample_beyond_the_calibrated_range_starts_a_new_file_and_nothing_is_clipped(tmp_path):
    x = np.load(ECG_100)["ecg_mV"][: 360 * 60].astype(np.float64)
    x[360 * 35: 360 * 36] += 40.0  # an electrode pop, far outside four times the first 10 s
    events = [Chunk("ecg", i, x[i:i + 360]) for i in range(0, len(x), 360)]
    rec = record(events, [ChannelSpec("ecg", "signal", 360.0, "mV")], tmp_path)
    assert len(rec.paths) == 2
    first, second = (load_edf(p) for p in rec.paths)
    joined = np.concatenate([first.recording.signals["ecg"].data, second.recording.signals["ecg"].data])
    step = max(p.header.signals[0].physical_max - p.header.signals[0].physical_min for p in (first, second)) / 65535
    assert np.abs(joined - x).max() <= step
    assert second.recording.start_time == pytest.approx(first.recording.start_time + 30.0)


def test_a_new_file_begins_at_the_daily_hour(tmp_path):
    x = np.load(ECG_100)["ecg_mV"][: 360 * 180].astype(np.float64)
    noon = time.mktime((2026, 11, 21, 12, 0, 0, 0, 0, -1))  # local time, as the option is
    source = ScriptedSource([ChannelSpec("ecg", "signal", 360.0, "mV")], anchor=noon - 65.0)
    rec = RawRecorder(RecordingSettings(dir=tmp_path, daily_at_hour=12), "dev", "serial")
    for i in range(0, len(x), 360):
        rec.push(Chunk("ecg", i, x[i:i + 360]), source)
    rec.close()
    first, second = (load_edf(p).recording for p in rec.paths)
    assert second.start_time == pytest.approx(noon + 5.0)  # the first 10-s data record after noon
    joined = np.concatenate([first.signals["ecg"].data, second.signals["ecg"].data])
    assert len(joined) == len(x) and np.abs(joined - x).max() < 1e-3


def test_a_killed_recording_is_readable_and_repaired(tmp_path):
    """SIGKILL the real daemon mid-replay: the file has every whole record, and repair writes the count."""
    proc = subprocess.Popen([sys.executable, "-m", "edged.cli", "replay", str(DEMO), "--speed", "3000",
                             "--record", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            files = list((tmp_path / "replay").glob("*.edf"))
            if files and files[0].stat().st_size > 40_000:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the recording did not grow: " + proc.stderr.read().decode() if proc.poll() is not None else "")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    path = files[0]
    assert path.read_bytes()[236:244].strip() == b"-1"  # the count a running writer leaves
    before = load_edf(path)
    assert before.header.n_records >= 2
    assert repair_edf(path) == before.header.n_records
    after = load_edf(path)
    assert path.read_bytes()[236:244].strip() == str(after.header.n_records).encode()
    np.testing.assert_array_equal(after.recording.rr["rr"].rr, before.recording.rr["rr"].rr)
    assert len(after.recording.rr["rr"].rr) > 50
    assert repair_edf(path) is None  # nothing left to do


def test_old_recordings_are_deleted_to_stay_under_the_cap(tmp_path):
    x = np.load(ECG_100)["ecg_mV"][: 360 * 600].astype(np.float64)
    channels = [ChannelSpec("ecg", "signal", 360.0, "mV")]
    paths = []
    for k in range(3):
        source = ScriptedSource(channels, anchor=1_700_000_000.0 + 3600 * k)
        rec = RawRecorder(RecordingSettings(dir=tmp_path, max_total_mb=0.9), "dev", "serial")
        rec.push(Chunk("ecg", 0, x), source)
        rec.close()
        paths += rec.paths
    sizes = [p.stat().st_size for p in paths if p.exists()]
    assert not paths[0].exists() and paths[-1].exists()
    assert sum(sizes) <= 0.9e6
    assert rec.counters["files_deleted"] >= 1


def test_a_disk_error_stops_the_recording_with_one_error_and_nothing_raises(tmp_path, caplog):
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("")  # the recording folder cannot be created under a file
    source = ScriptedSource([ChannelSpec("rr", "rr", 0.0, "s")])
    rec = RawRecorder(RecordingSettings(dir=blocked), "dev", "ble-hrs")
    with caplog.at_level(logging.ERROR):
        for i in range(5):
            rec.push(Chunk("rr", i, np.array([0.8, 0.9])), source)
        rec.close()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "raw recording of device dev stopped" in errors[0].getMessage()
    assert "not-a-dir" in errors[0].getMessage()
    assert rec.counters["events_not_recorded"] == 4


def test_heart_rate_readings_and_beat_gaps_round_trip(tmp_path):
    channels = [ChannelSpec("rr", "rr", 0.0, "s", offset=0.25), ChannelSpec("hr", "hr", 0.0, "bpm")]
    rr = np.array([0.8125, 0.810546875, 0.83203125])  # a BLE strap's 1/1024-s units, kept exactly
    events = [Status(True, "connected to AA:BB"),
              Chunk("rr", 0, rr[:2]), Chunk("hr", 0, np.array([61.0, 62.5]), times=np.array([1.0, 2.0])),
              Status(False, "no data for 10 s"), Gap("rr", 2, 0, 32.5),
              Chunk("rr", 2, rr[2:]), Chunk("hr", 2, np.array([70.0]), times=np.array([40.0]))]
    rec = record(events, channels, tmp_path)
    contents = load_edf(rec.paths[0])
    got = contents.recording
    beat_clock_after_gap = 0.25 + 0.8125 + 0.810546875 + 32.5
    assert got.rr["rr"].first_beat == 0.25
    np.testing.assert_array_equal(got.rr["rr"].rr, [0.8125, 0.810546875, 32.5, 0.83203125])
    assert got.gaps == [(0.25 + 0.8125 + 0.810546875, 32.5)]  # the silence, where the replay finds it
    np.testing.assert_array_equal(got.hr["hr"].times, [1.0, 2.0, 40.0])
    np.testing.assert_array_equal(got.hr["hr"].bpm, [61.0, 62.5, 70.0])
    texts = [a.text for a in contents.annotations]
    assert "Connected: connected to AA:BB" in texts and "Connection lost: no data for 10 s" in texts
    assert contents.header.reserved == "EDF+D"  # the 10-s record inside the 32.5-s silence is left out
    assert got.rr["rr"].beat_times()[-1] == pytest.approx(beat_clock_after_gap + 0.83203125)
    assert got.duration == 40.0  # the last heart-rate reading


def test_config_enables_recording_per_device_strictly():
    config = parse_config('[recording]\ndir = "/tmp/x"\nmax_total_mb = 100\n\n[[devices]]\nname = "a"\n'
                          'type = "replay"\npath = "x.rr"\nrecord = true\n')
    assert config.devices[0].record is True and config.recording["max_total_mb"] == 100.0
    with pytest.raises(ConfigError) as err:
        parse_config('[recording]\nmax_file_gb = 1\n', "edged.toml")
    assert "edged.toml:2: recording.max_file_gb: unknown key (did you mean 'max_file_mb'?)" in str(err.value)
