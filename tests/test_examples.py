"""The examples run against the real thing: the Node-RED flow in a real Node-RED reading a real edged
through a real mosquitto."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edged.sinks.broker import free_port
from tests.test_daemon_e2e import expected_epochs

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "edged" / "data" / "demo" / "slp61.rr"
FLOW = REPO / "examples" / "node-red" / "edged-flow.json"
NODE_RED = REPO / ".cache" / "node-red" / "node_modules" / ".bin" / "node-red"


def _wait_listening(port: int, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"node-red exited: {proc.stdout.read()}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise AssertionError("node-red did not start")


def test_node_red_flow_logs_every_epoch_once_in_order_and_alerts_on_offline(tmp_path, broker, subscribe):
    assert NODE_RED.exists(), "Node-RED is installed by the project's set-up: run `make test-deps`"
    csv_path = tmp_path / "stages.csv"
    user_dir = tmp_path / "node-red"
    user_dir.mkdir()
    port = free_port()
    env = {**os.environ, "EDGED_MQTT_HOST": broker.host, "EDGED_MQTT_PORT": str(broker.port),
           "EDGED_CSV": str(csv_path)}
    node_red = subprocess.Popen([str(NODE_RED), "--userDir", str(user_dir), "--port", str(port), str(FLOW)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    # The flow uses the default base topic "edged"; this test's broker is its own, so nothing else is there.
    stages = subscribe("edged/#")
    try:
        _wait_listening(port, node_red, 60)
        # Node-RED has subscribed once the broker reports its subscription; give its MQTT client a moment.
        time.sleep(2.0)
        config = tmp_path / "edged.toml"
        config.write_text(f'[node]\nid = "bedroom"\n[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\n'
                          f'embedded = "never"\n[[devices]]\nname = "strap"\ntype = "replay"\n'
                          f'model = "ibi-slpdb-causal-v1"\npath = "{DEMO}"\nspeed = 3000.0\n')
        daemon = subprocess.Popen([sys.executable, "-m", "edged.cli", "run", "--config", str(config)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        n = expected_epochs(DEMO)
        try:
            received = stages.wait_for(
                lambda ms: sum(m.topic.endswith("/stage") for m in ms) >= n
                and any(m.topic.endswith("/availability") and m.payload == b"offline" for m in ms), timeout=120)
        finally:
            daemon.terminate()
            assert daemon.wait(timeout=30) == 0, daemon.stderr.read()
        published = [m.json() for m in received if m.topic == "edged/bedroom/strap/stage"]
        # A duplicate, as a re-send after an outage would deliver it: the flow must drop it.
        again = mqtt.Client(CallbackAPIVersion.VERSION2)
        again.connect(broker.host, broker.port)
        again.loop_start()
        again.publish("edged/bedroom/strap/stage", json.dumps(published[100]), qos=1).wait_for_publish(5)
        again.disconnect()
        again.loop_stop()

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            lines = csv_path.read_text().splitlines() if csv_path.exists() else []
            if len(lines) >= n:
                break
            time.sleep(0.2)
        time.sleep(1.0)  # the duplicate, if it got through, lands now
        rows = [line.split(",") for line in csv_path.read_text().splitlines()]
    finally:
        node_red.terminate()
        output = node_red.communicate(timeout=20)[0]
    assert len(rows) == n == len(published)
    assert [int(r[3]) for r in rows] == list(range(n))
    assert [(r[0], r[1], r[2], r[4]) for r in rows] == \
        [(p["start"], p["node"], p["device"], p["stage"]) for p in published]
    assert all(float(r[5]) == p["probabilities"][p["stage"]] for r, p in zip(rows, published))
    assert all(r[8] == "false" for r in rows)  # the shipped IBI model is real-trained
    # The replay ended, so edged said the device went offline: the flow's alert fired (debug to console).
    assert "device bedroom/strap went offline" in output
