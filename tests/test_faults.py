"""Fault injection: the night goes on and nothing scored is lost. Real `edged run` processes, a REAL
mosquitto (stopped and started), real pseudo-terminals unplugged and plugged in, a real state directory
made full or read-only, a real AF_UNIX datagram socket standing in for systemd. Replays are accelerated
so that ten minutes of a night pass in seconds.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import resource
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from onnx_factory import write_model
from conftest import DEMO, expected_epochs, start_daemon

from edged.app import RESTART_LIMIT, Daemon
from edged.config import parse_config
from edged.errors import EdgedError
from edged.notify import Notifier
from edged.scoring import catalog
from edged.scoring.session import OnnxModel
from edged.sinks.base import CollectingSink
from edged.sinks.journal import JOURNAL_FILE
from edged.sources.base import ChannelSpec, Chunk, Source, SourceEvent
from edged.sources.replay import ReplaySource
from firmware_bridge.emulate import DeviceEmulator

REPO = Path(__file__).resolve().parents[1]
ECG = REPO.parent / "shared" / "data" / "ecg-mitbih" / "100.npz"


def excerpt(tmp_path: Path, minutes: float) -> Path:
    """The first ``minutes`` of the demo night (slp61, real beat-to-beat RR) as a PhysioNet .rr file."""
    lines, t = [], 0.0
    for line in DEMO.read_text().splitlines():
        t += float(line.split("\t")[2])
        if t > minutes * 60:
            break
        lines.append(line)
    path = tmp_path / f"slp61_{minutes:g}min.rr"
    path.write_text("\n".join(lines) + "\n")
    return path


def config(tmp_path: Path, broker, base: str, state: Path, devices: str) -> Path:
    cfg = tmp_path / "edged.toml"
    cfg.write_text(f'[node]\nid = "e2e"\nstate_dir = "{state}"\n\n[mqtt]\nhost = "{broker.host}"\n'
                   f'port = {broker.port}\nbase_topic = "{base}"\nembedded = "never"\nkeepalive = 5\n\n{devices}')
    return cfg


def replay_device(path: Path, speed: float) -> str:
    return f'[[devices]]\nname = "bed1"\ntype = "replay"\npath = "{path}"\nspeed = {speed}\n'


def start(cfg: Path, *args: str, env: dict | None = None, preexec=None) -> subprocess.Popen:
    return start_daemon(cfg, *args, env=env, cwd=REPO, preexec_fn=preexec)


def finish(daemon: subprocess.Popen) -> str:
    if daemon.poll() is None:
        daemon.kill()
    return daemon.communicate()[1]


def first_seen(messages, topic: str) -> list[dict]:
    """What a consumer keeps: each stage message once (by id), in the order it first arrived."""
    unique: dict[str, dict] = {}
    for m in messages:
        if m.topic == topic:
            unique.setdefault(m.json()["id"], m.json())
    return list(unique.values())


def journal_rows(state: Path) -> list[tuple[dict, bool]]:
    with sqlite3.connect(f"file:{state / JOURNAL_FILE}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT payload, acked IS NOT NULL FROM outbox ORDER BY seq").fetchall()
    return [(json.loads(p), bool(a)) for p, a in rows]


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if " ERROR " in line or line.startswith("edged: error")]


# ------------------------------------------------------------------------------------ broker outage


def test_ten_minutes_without_broker_every_epoch_arrives_once_in_order(tmp_path, broker, subscribe, topic_base):
    night = excerpt(tmp_path, 30)
    n = expected_epochs(night)
    stage = f"{topic_base}/e2e/bed1/stage"
    sub = subscribe(f"{topic_base}/#", persistent=True)
    state = tmp_path / "state"
    speed = 300.0  # 10 minutes of the night take 2 s
    daemon = start(config(tmp_path, broker, topic_base, state, replay_device(night, speed)), "--exit-when-done")
    try:
        sub.wait_for(lambda ms: len(first_seen(ms, stage)) >= 8, timeout=30)
        broker.stop()
        time.sleep(600 / speed)
        during = len(first_seen(sub.messages, stage))
        broker.start()
        sub.wait_for(lambda ms: len(first_seen(ms, stage)) >= n, timeout=60)
        assert daemon.wait(30) == 0
    finally:
        stderr = finish(daemon)
    got = first_seen(sub.messages, stage)
    assert [s["epoch"] for s in got] == list(range(n))  # every epoch, once, in order
    assert during < n - 20  # the outage really covered epochs scored meanwhile
    assert len({s["session"] for s in got}) == 1
    assert "Traceback" not in stderr
    assert all(acked for _, acked in journal_rows(state))  # everything acknowledged in the end


# ------------------------------------------------------------------------------------ SIGKILL


def test_sigkill_mid_night_loses_no_scored_epoch(tmp_path, broker, subscribe, topic_base):
    night = excerpt(tmp_path, 30)
    stage = f"{topic_base}/e2e/bed1/stage"
    sub = subscribe(f"{topic_base}/#", persistent=True)
    state = tmp_path / "state"
    cfg = config(tmp_path, broker, topic_base, state, replay_device(night, 300.0))
    daemon = start(cfg)
    try:
        sub.wait_for(lambda ms: len(first_seen(ms, stage)) >= 8, timeout=30)
        broker.stop()  # so that scored epochs pile up unacknowledged, as in a Wi-Fi outage
        deadline = time.monotonic() + 30
        while sum(not acked for _, acked in journal_rows(state)) < 5:
            assert time.monotonic() < deadline and daemon.poll() is None
            time.sleep(0.1)
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(10)
    finally:
        finish(daemon)
    rows = journal_rows(state)
    scored = [payload for payload, _ in rows]
    session = scored[0]["session"]
    assert [p["epoch"] for p in scored] == list(range(len(scored)))  # the journal holds every scored epoch
    assert sum(not acked for _, acked in rows) >= 5

    broker.start()
    again = start(cfg)  # as systemd would restart it
    try:
        sub.wait_for(lambda ms: {p["id"] for p in scored} <= {s["id"] for s in first_seen(ms, stage)}, timeout=30)
        assert again.poll() is None
        again.send_signal(signal.SIGTERM)
        assert again.wait(20) == 0
    finally:
        stderr = finish(again)
    first_run = [s for s in first_seen(sub.messages, stage) if s["session"] == session]
    assert [s["epoch"] for s in first_run] == list(range(len(scored)))
    assert [s["start_ts"] for s in first_run] == [p["start_ts"] for p in scored]  # original timestamps
    assert "re-sending them first" in stderr and "Traceback" not in stderr


# ------------------------------------------------------------------------------------ serial port


def test_a_serial_port_closed_and_reopened_50_times_keeps_the_daemon_up(tmp_path, broker, subscribe, topic_base):
    models = tmp_path / "models"
    models.mkdir()
    write_model(models, model_id="ecg-test", inputs=[{"name": "ecg", "signal": "ecg", "fs": 100.0, "units": "mV"}],
                epoch_seconds=4.0, context_epochs=2)
    emulator = DeviceEmulator.from_recording("framed", ECG, speed=8.0, link=tmp_path / "board")
    emulator.open_port()
    emulator.start()
    cfg = config(tmp_path, broker, topic_base, tmp_path / "state", f"""
[models]
dirs = ["{models}"]

[[devices]]
name = "ecg1"
type = "serial"
protocol = "framed"
port = "{tmp_path / 'board'}"
model = "ecg-test"
channels = {{ ecg = "ecg_mV" }}
silence_seconds = 2
reconnect_min = 0.02
reconnect_max = 0.1
""")
    prefix = f"{topic_base}/e2e/ecg1"
    sub = subscribe(f"{topic_base}/#", persistent=True)
    daemon = start(cfg)
    try:
        sub.wait_for(lambda ms: len(first_seen(ms, f"{prefix}/stage")) >= 2, timeout=40)
        for _ in range(50):
            attached = emulator.counters.host_attaches
            emulator.close_port()
            time.sleep(0.02)
            emulator.open_port()
            deadline = time.monotonic() + 10
            while emulator.counters.host_attaches == attached:  # the daemon has the new port open
                assert time.monotonic() < deadline and daemon.poll() is None
                time.sleep(0.01)
            time.sleep(0.15)  # and reads from it
        n_after = len(first_seen(sub.messages, f"{prefix}/stage"))
        sub.wait_for(lambda ms: len(first_seen(ms, f"{prefix}/stage")) >= n_after + 3, timeout=20)
        assert daemon.poll() is None, "the daemon exited"
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(20) == 0
        messages = sub.wait_for(lambda ms: any(m.topic == f"{prefix}/counters" for m in ms), timeout=10)
    finally:
        stderr = finish(daemon)
        emulator.stop()
        emulator.close_port()
    assert "Traceback" not in stderr and not error_lines(stderr), stderr[-3000:]
    epochs = [s["epoch"] for s in first_seen(messages, f"{prefix}/stage")]
    assert epochs == list(range(len(epochs)))  # one stream all along: no epoch missing or repeated
    counters = [m.json()["counters"] for m in messages if m.topic == f"{prefix}/counters"][-1]
    # A reconnection counts once data flows again; on a loaded machine a few of the 50 short plug-ins may
    # end before the daemon read anything from them.
    assert counters["disconnects"] >= counters["reconnects"] >= 25
    assert counters["gaps"] >= counters["reconnects"] and counters["outage_lost_samples"] > 0  # marked gaps
    assert counters["restarts"] == 0  # reconnections are the source's business, not crashes


# ------------------------------------------------------------------------------------ state directory


_prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here: no dynamic loading between fork and exec


def _drop_dac_override() -> None:
    """As root, permission bits do not stop writes; drop CAP_DAC_OVERRIDE from the bounding set before
    exec, so that the daemon, still root, meets the read-only directory as any service user would."""
    if os.geteuid() == 0:
        PR_CAPBSET_DROP, CAP_DAC_OVERRIDE = 24, 1
        if _prctl(PR_CAPBSET_DROP, CAP_DAC_OVERRIDE, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def _has_capability(bit: int) -> bool:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> bit & 1)
    return False


def _small_files() -> None:
    limit = 200 << 10  # every write past 200 kB fails with EFBIG, as on a full disk
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))


@pytest.mark.parametrize("how", ["full", "read-only"])
def test_an_unwritable_state_dir_is_one_clear_error_and_publishing_goes_on(tmp_path, broker, subscribe,
                                                                          topic_base, how):
    night = excerpt(tmp_path, 20)
    n = expected_epochs(night)
    stage = f"{topic_base}/e2e/bed1/stage"
    state = tmp_path / "state"
    state.mkdir()
    if how == "read-only":
        state.chmod(0o555)
        if os.geteuid() == 0 and not _has_capability(8):  # CAP_SETPCAP, to drop CAP_DAC_OVERRIDE
            pytest.skip("root without CAP_SETPCAP: permission bits cannot be made to apply to the daemon")
    sub = subscribe(f"{topic_base}/#")
    daemon = start(config(tmp_path, broker, topic_base, state, replay_device(night, 0.0)), "--exit-when-done",
                   preexec=_small_files if how == "full" else _drop_dac_override)
    try:
        assert daemon.wait(60) == 0
        sub.wait_for(lambda ms: len(first_seen(ms, stage)) >= n)
    finally:
        stderr = finish(daemon)
        state.chmod(0o755)
    assert [s["epoch"] for s in first_seen(sub.messages, stage)] == list(range(n))
    errors = error_lines(stderr)
    assert len(errors) == 1, stderr[-3000:]
    assert str(state) in errors[0] and "memory" in errors[0] and "live publishing goes on" in errors[0]
    assert ("Permission denied" in errors[0]) if how == "read-only" else ("full" in errors[0] or "I/O" in errors[0])
    assert "Traceback" not in stderr


# ------------------------------------------------------------------------------------ systemd


class NotifySocket:
    """What systemd does for a Type=notify unit: an AF_UNIX datagram socket, every message kept."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, str]] = []
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            self.messages.append((time.monotonic(), data.decode()))

    def lines(self) -> list[str]:
        return [line for _, m in list(self.messages) for line in m.splitlines()]

    def wait_for(self, line: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while line not in self.lines():
            assert time.monotonic() < deadline, f"no {line!r}; got {self.lines()[-10:]}"
            time.sleep(0.02)

    def close(self) -> None:
        self._stop = True
        self._thread.join()
        self.sock.close()


def test_sd_notify_ready_watchdog_and_stopping_with_one_offline(tmp_path, broker, subscribe, topic_base):
    notify = NotifySocket(tmp_path / "notify.sock")
    avail = f"{topic_base}/e2e/bed1/availability"
    sub = subscribe(f"{topic_base}/#")
    cfg = config(tmp_path, broker, topic_base, tmp_path / "state", replay_device(excerpt(tmp_path, 30), 20.0))
    daemon = start(cfg, env={"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "1000000"})
    try:
        notify.wait_for("READY=1")
        sub.wait_for_payload(avail, "online", timeout=20)
        t0 = time.monotonic()
        time.sleep(2.0)
        feeds = [t for t, m in list(notify.messages) if m == "WATCHDOG=1" and t > t0]
        assert 2 <= len(feeds) <= 5  # every 0.5 s (half of WATCHDOG_USEC) while the pipeline moves
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(20) == 0
        notify.wait_for("STOPPING=1")
        sub.wait_for_payload(f"{topic_base}/e2e/status", "offline")
    finally:
        stderr = finish(daemon)
        notify.close()
    lines = notify.lines()
    assert lines.index("READY=1") < lines.index("STOPPING=1")
    assert any(line.startswith("STATUS=1 device(s): 1 running") for line in lines)
    assert [m.payload for m in sub.on(avail)] == [b"online", b"offline"]  # offline exactly once
    assert "Traceback" not in stderr


# ------------------------------------------------------------------------------------ supervision


class CrashingSource(Source):
    """A device backend with a bug: it delivers a few intervals, then raises."""

    def channels(self) -> list[ChannelSpec]:
        return [ChannelSpec("rr", "rr", 0.0, "s")]

    async def _events(self) -> AsyncIterator[SourceEvent]:
        import numpy as np

        self.anchor_time = time.time()
        yield Chunk("rr", 0, np.full(20, 0.8))
        await asyncio.sleep(0.01)
        raise RuntimeError("bug in the backend")


class HealthSink(CollectingSink):
    """A sink at the Sink protocol boundary whose publisher can be declared dead."""

    problem: str | None = None

    def health(self) -> str | None:
        return self.problem

    def restart_sender(self) -> bool:
        return False


def _devices_config(tmp_path: Path, speed: float) -> tuple:
    night = excerpt(tmp_path, 30)
    cfg = parse_config(f'{replay_device(night, 0.0)}\n[[devices]]\nname = "bad"\ntype = "replay"\npath = "{night}"\n')
    model = OnnxModel.load(catalog.resolve("ibi-slpdb-causal-v1"))
    good, bad = cfg.devices
    return cfg, night, [(good, ReplaySource("bed1", path=night, speed=speed), model),
                        (bad, CrashingSource("bad"), model)]


def test_a_crashing_device_is_restarted_then_given_up_while_the_others_go_on(tmp_path, caplog):
    cfg, night, prepared = _devices_config(tmp_path, 0.0)
    sink = CollectingSink()
    daemon = Daemon(cfg, [sink], notifier=Notifier({}), source_factory=lambda device: CrashingSource(device.name))
    daemon.restart_delay = 0.01  # 1 s, doubled per restart, in the daemon; the test need not wait 31 s

    async def scenario() -> None:
        await daemon.run(prepared, stop=asyncio.Event(), exit_when_done=True)

    with pytest.raises(EdgedError, match="device 'bad' failed: reader crashed: RuntimeError: bug in the backend"):
        asyncio.run(scenario())
    good, bad = daemon.runners
    assert bad.restarts == RESTART_LIMIT and bad.failed and not sink.availability["bad"]
    assert good.finished and good.restarts == 0
    assert [e.index for e in sink.epochs["bed1"]] == list(range(expected_epochs(night)))
    assert sum("giving up on it" in r.getMessage() for r in caplog.records) == 1
    delays = [float(r.getMessage().split("restarting in ")[1].split()[0]) for r in caplog.records
              if "restarting in" in r.getMessage()]
    assert delays == [0.01 * 2**k for k in range(RESTART_LIMIT)]  # backing off between restarts


def test_the_watchdog_is_fed_only_while_the_publisher_is_alive(tmp_path):
    notify = NotifySocket(tmp_path / "notify.sock")
    cfg, _, prepared = _devices_config(tmp_path, 50.0)
    sink = HealthSink()
    daemon = Daemon(cfg, [sink], notifier=Notifier({"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "200000"}))

    def feeds(since: float, until: float) -> int:
        return sum(m == "WATCHDOG=1" and since < t <= until for t, m in list(notify.messages))

    async def scenario() -> tuple[int, int, int]:
        stop = asyncio.Event()
        run = asyncio.create_task(daemon.run(prepared[:1], stop=stop))
        await asyncio.sleep(1.0)
        t1 = time.monotonic()
        sink.problem = "the MQTT sender thread has died"
        await asyncio.sleep(1.0)
        t2 = time.monotonic()
        sink.problem = None
        await asyncio.sleep(1.0)
        t3 = time.monotonic()
        stop.set()
        await run
        return feeds(0, t1), feeds(t1 + 0.25, t2), feeds(t2, t3)

    try:
        healthy, dead, again = asyncio.run(scenario())
    finally:
        notify.close()
    assert healthy >= 3 and dead == 0 and again >= 3  # fed every 0.1-0.2 s, except while the sender is dead
