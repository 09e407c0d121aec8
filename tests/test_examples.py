"""The examples run against the real thing: the Node-RED flow in a real Node-RED reading a real edged
through a real mosquitto."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edged.sinks.broker import free_port
from tests.conftest import expected_epochs, start_daemon

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
        daemon = start_daemon(config)
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


# --- Grafana + Telegraf: no Telegraf, InfluxDB 2 or Grafana package exists in the registries this project
# installs from, so these files are checked for consistency with what edged really publishes (payloads
# made by the same contract code the daemon uses), not run.

GRAFANA = REPO / "examples" / "grafana"


def _telegraf() -> dict:
    import tomllib

    return tomllib.loads((GRAFANA / "telegraf.conf").read_text())


def _resolve(payload: dict, path: str):
    value = payload
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _real_payloads() -> dict[str, dict]:
    from dataclasses import replace

    from edged.sinks import contract
    from edged.sinks.night import summarize_epochs
    from tests.conftest import make_epoch

    epochs = [replace(make_epoch(i), hr_bpm=61.5) for i in range(10)]
    return {"stage": contract.stage_payload(epochs[-1], "bedroom"),
            "summary": contract.summary_payload("bedroom", summarize_epochs(epochs))}


def test_telegraf_config_reads_the_contracts_topics_and_fields():
    from paho.mqtt.client import topic_matches_sub

    from edged.sinks import contract

    payloads = _real_payloads()
    consumers = _telegraf()["inputs"]["mqtt_consumer"]
    kinds = set()
    for consumer in consumers:
        (topic_filter,) = consumer["topics"]
        kind = topic_filter.rsplit("/", 1)[1]
        kinds.add(kind)
        real_topic = getattr(contract, f"{kind}_topic")(contract.DEFAULT_BASE_TOPIC, "bedroom", "bed1")
        assert topic_matches_sub(topic_filter, real_topic), topic_filter
        (parsing,) = consumer["topic_parsing"]
        tags = dict(zip(parsing["tags"].split("/"), real_topic.split("/")))
        assert tags["node"] == "bedroom" and tags["device"] == "bed1"
        if consumer["data_format"] != "json_v2":
            continue
        (spec,) = consumer["json_v2"]
        payload = payloads[kind]
        assert isinstance(_resolve(payload, spec["timestamp_path"]), float)
        for item in spec.get("tag", []) + spec.get("field", []):
            value = _resolve(payload, item["path"])
            assert value is not None or item.get("optional"), f"{kind}: {item['path']} is not in the payload"
    assert kinds == {"stage", "summary", "availability"}
    # Every class of the example payload's model gets its probability field.
    stage_fields = {f["path"] for f in consumers[0]["json_v2"][0]["field"]}
    assert {f"probabilities.{c}" for c in payloads["stage"]["probabilities"]} <= stage_fields


def test_grafana_dashboard_asks_only_for_what_telegraf_writes_and_covers_every_shipped_models_classes():
    import re

    config = _telegraf()
    measurements = {}
    for consumer in config["inputs"]["mqtt_consumer"]:
        if consumer["data_format"] == "json_v2":
            (spec,) = consumer["json_v2"]
            fields = {f.get("rename", f["path"].rsplit(".", 1)[-1]) for f in spec["field"]}
            measurements[spec["measurement_name"]] = fields
        else:
            measurements[consumer["name_override"]] = {"value"}
    (enum,) = config["processors"]["enum"]
    (mapping,) = enum["mapping"]
    measurements["edged_stage"].add(mapping["dest"])

    dashboard = json.loads((GRAFANA / "edged-dashboard.json").read_text())
    queries = [t["query"] for p in dashboard["panels"] for t in p["targets"]]
    queries += [v["query"] for v in dashboard["templating"]["list"]]
    for query in queries:
        (measurement,) = re.findall(r'FROM "([^"]+)"', query)
        assert measurement in measurements, query
        for field in re.findall(r'(?:last|mean)\("([^"]+)"\)', query):
            assert field in measurements[measurement], f"{field} is not written to {measurement}"
        for tag in re.findall(r'"(node|device|[a-z_]+)" =~', query):
            assert tag in ("node", "device")

    shipped = [json.loads(p.read_text()) for p in (REPO / "models" / "shipped").glob("*.json")]
    classes = {c for m in shipped for c in m["classes"]}
    assert classes, "no shipped model manifest found"
    assert classes <= set(mapping["value_mappings"]), "a stage without a hypnogram level in telegraf.conf"
    timeline = next(p for p in dashboard["panels"] if p["type"] == "state-timeline")
    assert classes <= set(timeline["fieldConfig"]["defaults"]["mappings"][0]["options"])
    probability_fields = {f for f in measurements["edged_stage"] if f.startswith("p_")}
    assert {f"p_{c}" for c in classes} <= probability_fields
