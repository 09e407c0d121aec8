"""`edged run` end to end: a real recording in, stages out through a real mosquitto, as a real process."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import pytest

from edged.sinks.contract import STAGE_SCHEMA
from tests.conftest import DEMO, REPO, daemon_config, expected_epochs, replay_device, start_daemon

SHARED = REPO.parent / "shared" / "data"


def write_config(tmp_path: Path, broker, base: str, *, path: Path = DEMO, speed: float = 0.0,
                 extra: str = "", model: str = "ibi-slpdb-causal-v1") -> Path:
    """One replayed device, ``bed1``; ``extra`` lines go into its [[devices]] table."""
    cfg = tmp_path / "edged.toml"
    cfg.write_text(daemon_config(broker, base, replay_device(path, speed=speed, model=model) + extra + "\n"))
    return cfg


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edged.cli", *args], capture_output=True, text=True, timeout=timeout)


def test_run_publishes_one_stage_per_epoch_in_order_then_goes_offline_when_killed(tmp_path, broker, subscribe, topic_base):
    n_epochs = expected_epochs(DEMO)
    prefix = f"{topic_base}/e2e"
    sub = subscribe(f"{topic_base}/#")
    daemon = start_daemon(write_config(tmp_path, broker, topic_base))
    try:
        messages = sub.wait_for(lambda ms: sum(m.topic == f"{prefix}/bed1/stage" for m in ms) >= n_epochs
                                and any(m.topic == f"{prefix}/bed1/availability" and m.payload == b"offline" for m in ms),
                                timeout=120)
        time.sleep(0.5)  # anything extra (a duplicate, a stray epoch) would arrive now
        stages = [m.json() for m in sub.on(f"{prefix}/bed1/stage")]
        assert len(stages) == n_epochs
        assert [s["epoch"] for s in stages] == list(range(n_epochs))
        assert len({s["id"] for s in stages}) == n_epochs
        for s in stages:
            jsonschema.validate(s, STAGE_SCHEMA)
            assert s["model"] == {"id": "ibi-slpdb-causal-v1", "synthetic": False}
            assert s["device"] == "bed1" and s["node"] == "e2e"
            assert abs(sum(s["probabilities"].values()) - 1.0) < 1e-3
            assert s["end_ts"] - s["start_ts"] == pytest.approx(30.0)
            assert s["latency_ms"] >= 0
        assert all(m.qos == 1 for m in sub.on(f"{prefix}/bed1/stage"))
        assert sub.on(f"{prefix}/status")[-1].payload == b"online"

        # A subscriber that arrives after the night still finds the latest state, retained.
        late = subscribe(f"{prefix}/#")
        late.wait_for(lambda ms: any(m.topic == f"{prefix}/bed1/state" for m in ms))
        state = [m for m in late.on(f"{prefix}/bed1/state")][-1]
        assert state.retain and state.json()["epoch"] == n_epochs - 1
        assert [m.payload for m in late.on(f"{prefix}/status")] == [b"online"]

        daemon.send_signal(signal.SIGKILL)
        daemon.wait(10)
        sub.wait_for_payload(f"{prefix}/status", "offline", timeout=15)
    finally:
        if daemon.poll() is None:
            daemon.kill()
        daemon.communicate()


def test_sigterm_stops_cleanly_and_says_offline(tmp_path, broker, subscribe, topic_base):
    sub = subscribe(f"{topic_base}/#")
    daemon = start_daemon(write_config(tmp_path, broker, topic_base, speed=1.0))
    try:
        sub.wait_for_payload(f"{topic_base}/e2e/status", "online", timeout=20)
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(20) == 0
        sub.wait_for_payload(f"{topic_base}/e2e/bed1/availability", "offline")
        sub.wait_for_payload(f"{topic_base}/e2e/status", "offline")
    finally:
        if daemon.poll() is None:
            daemon.kill()
        daemon.communicate()


def test_broker_outage_mid_night_loses_no_stage(tmp_path, broker, subscribe, topic_base):
    """The broker goes away for a few seconds while a replay runs: scoring goes on, and every stage is
    delivered after it returns, in order, once duplicates are dropped by message id."""
    n_epochs = expected_epochs(DEMO)
    prefix = f"{topic_base}/e2e/bed1"
    sub = subscribe(f"{topic_base}/#", persistent=True)
    daemon = start_daemon(write_config(tmp_path, broker, topic_base, speed=2000.0))  # ~11 s for the night
    try:
        sub.wait_for(lambda ms: sum(m.topic == f"{prefix}/stage" for m in ms) >= 50, timeout=30)
        broker.stop()
        time.sleep(4.0)
        broker.start()
        sub.wait_for(lambda ms: len({m.json()["id"] for m in ms if m.topic == f"{prefix}/stage"}) >= n_epochs,
                     timeout=90)
        unique = {}
        for m in sub.on(f"{prefix}/stage"):
            unique.setdefault(m.json()["id"], m.json())
        assert sorted(s["epoch"] for s in unique.values()) == list(range(n_epochs))
        first_seen = list(dict.fromkeys(m.json()["epoch"] for m in sub.on(f"{prefix}/stage")))
        assert first_seen == list(range(n_epochs))  # in order, even across the outage
    finally:
        daemon.kill()
        daemon.communicate()


def one_error_line(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in lines if line.startswith("edged: error: ")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def test_missing_recording_is_one_clear_error(tmp_path, broker, topic_base):
    result = run_cli("run", "--config", str(write_config(tmp_path, broker, topic_base, path=tmp_path / "nope.rr")))
    assert result.returncode == 1
    line = one_error_line(result)
    assert "bed1" in line and "nope.rr" in line and "not found" in line


def test_recording_without_the_channel_the_model_needs(tmp_path, broker, topic_base):
    v102s = SHARED / "ecg-ppg-resp" / "v102s.hea"
    result = run_cli("run", "--config", str(write_config(tmp_path, broker, topic_base, path=v102s)))
    assert result.returncode == 1
    line = one_error_line(result)
    assert "needs a 'ibi' channel" in line and "PLETH" in line


def test_misspelt_config_key(tmp_path, broker, topic_base):
    cfg = write_config(tmp_path, broker, topic_base, extra="sped = 3")
    result = run_cli("run", "--config", str(cfg))
    assert result.returncode == 2
    line = one_error_line(result)
    assert "devices[0].sped: unknown key (did you mean 'speed'?)" in line
    assert f"{cfg}:" in line
    check = run_cli("check-config", str(cfg))
    assert check.returncode == 2 and one_error_line(check) == line


def test_onnx_that_does_not_match_its_manifest(tmp_path, broker, topic_base):
    from edged.scoring import catalog
    from onnx_factory import write_model

    shipped = catalog.resolve("ibi-slpdb-causal-v1")
    manifest = json.loads(shipped.read_text())
    other = write_model(tmp_path, model_id="impostor", window_override=100)
    bad = tmp_path / "bad.json"
    manifest["onnx"] = "impostor.onnx"  # a different graph, with its true hash: only the shapes disagree
    manifest["sha256"] = json.loads(other.read_text())["sha256"]
    bad.write_text(json.dumps(manifest))
    result = run_cli("run", "--config", str(write_config(tmp_path, broker, topic_base, model=str(bad))))
    assert result.returncode == 1
    line = one_error_line(result)
    assert "does not match its manifest" in line
