"""Home Assistant MQTT discovery against a real mosquitto and real `edged run` processes.

Home Assistant itself is not run here; its discovery rules are checked on the payloads (retained configs,
device-based schema, unique ids, device block, availability), and its value templates are rendered with
Jinja2 (the template language Home Assistant uses) on the stage messages the daemon really published.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import jinja2
import paho.mqtt.client as mqtt
import pytest
from conftest import daemon_config, replay_device, start_daemon
from paho.mqtt.enums import CallbackAPIVersion

from edged import __version__
from edged.config import parse_config
from edged.errors import ConfigError
from edged.sinks import homeassistant as ha
from edged.sinks.mqtt import MqttSettings

REPO = Path(__file__).resolve().parents[1]
NIGHT = REPO.parent / "shared" / "data" / "ibi-sleep-slpdb" / "slp67x.rr"  # 77 min, 153 epochs: quick
MODEL = "ibi-slpdb-causal-v1"
NODE = "e2e"

# What Home Assistant's discovery accepts (device-based schema, HA 2024.11+).
TOPIC_RE = re.compile(r"^(?P<prefix>.+)/device/(?:(?P<node>[a-zA-Z0-9_-]+)/)?(?P<object>[a-zA-Z0-9_-]+)/config$")
PLATFORMS = {"sensor", "binary_sensor"}
KEY_RE = re.compile(r"^[a-zA-Z0-9_-]+$")


def write_config(tmp_path: Path, broker, base: str, devices: dict[str, Path], prefix: str = "homeassistant") -> Path:
    cfg = tmp_path / f"edged-{len(devices)}.toml"
    tables = "".join(replay_device(path, name=name, model=MODEL) for name, path in devices.items())
    cfg.write_text(daemon_config(broker, base, tables, node=NODE, sections=(
        f'[homeassistant]\nenabled = true\ndiscovery_prefix = "{prefix}"\nstatus_topic = "{prefix}/status"\n')))
    return cfg


def start_daemon_info(cfg: Path):
    return start_daemon(cfg, "--log-level", "info")


def stop(daemon: subprocess.Popen) -> str:
    if daemon.poll() is None:
        daemon.send_signal(signal.SIGTERM)
    try:
        _, err = daemon.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        daemon.kill()
        _, err = daemon.communicate()
    return err


def publish(broker, topic: str, payload: bytes, *, retain: bool = False) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"test-pub-{os.getpid()}")
    client.connect(broker.host, broker.port)
    client.loop_start()
    client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)
    client.disconnect()
    client.loop_stop()


def retained_configs(subscribe, prefix: str) -> dict[str, dict]:
    """What a Home Assistant starting now would find: the retained configs under the prefix."""
    late = subscribe(f"{prefix}/device/#")
    late.wait_for(lambda ms: len(ms) > 0)
    time.sleep(0.5)  # retained messages come right after the subscription; let the last ones arrive
    out = {}
    for m in late.messages:
        assert m.retain, f"{m.topic} was delivered to a new subscriber without the retain flag"
        if m.payload:
            out[m.topic] = m.json()
    return out


def night_delivered(messages, prefix: str) -> bool:
    """The device's replay ended (its final counters are out) and every epoch it scored has arrived."""
    counters = [m.json()["counters"] for m in messages if m.topic == f"{prefix}/counters"]
    stages = sum(m.topic == f"{prefix}/stage" for m in messages)
    offline = any(m.topic == f"{prefix}/availability" and m.payload == b"offline" for m in messages)
    # The final counters go out just before the offline, on the same ordered connection.
    return offline and bool(counters) and 0 < counters[-1].get("epochs_scored", 0) <= stages


def render(template: str, payload: bytes) -> str:
    """Render a value template the way Home Assistant does: ``value`` is the payload, ``value_json`` its JSON."""
    env = jinja2.Environment(undefined=jinja2.Undefined)
    text = payload.decode()
    return env.from_string(template).render(value=text, value_json=json.loads(text)).strip()


def check_discovery_rules(configs: dict[str, dict], base: str, devices: set[str]) -> dict[str, dict]:
    """Home Assistant's rules for device-based discovery payloads; returns each device's components."""
    unique_ids: list[str] = []
    by_identifier = {}
    for topic, config in configs.items():
        m = TOPIC_RE.match(topic)
        assert m, f"{topic} is not a device discovery topic"
        assert set(config) >= {"device", "origin", "components"}, topic
        assert config["origin"]["name"] == "edged" and config["origin"]["sw_version"] == __version__
        dev = config["device"]
        assert isinstance(dev["identifiers"], list) and dev["identifiers"], topic
        assert dev["manufacturer"] == "edged" and dev["sw_version"] == __version__
        by_identifier[dev["identifiers"][0]] = (topic, config)
        for key, component in config["components"].items():
            assert KEY_RE.match(key), key
            assert component["platform"] in PLATFORMS, (topic, key)
            assert component["unique_id"], (topic, key)
            unique_ids.append(component["unique_id"])
            assert component["state_topic"].startswith(f"{base}/{NODE}/")
    assert len(unique_ids) == len(set(unique_ids)), "unique_id must be unique across all entities"

    bridge_topic, bridge = by_identifier[f"edged:{NODE}"]
    assert bridge_topic.endswith(f"/device/edged_{NODE}/config")
    assert bridge["components"]["status"]["state_topic"] == f"{base}/{NODE}/status"
    assert "availability" not in bridge["components"]["status"]  # the last will itself must stay readable

    components = {}
    for name in devices:
        topic, config = by_identifier[f"edged:{NODE}:{name}"]
        assert topic.endswith(f"/device/edged_{NODE}/{name}/config")
        assert config["device"]["name"] == name
        assert config["device"]["model"] == MODEL
        assert config["device"]["via_device"] == f"edged:{NODE}"
        comps = config["components"]
        assert set(comps) == {"stage", "confidence", "quality", "heart_rate", "ibi", "connectivity"}
        for key, c in comps.items():
            assert c["unique_id"] == f"edged:{NODE}:{name}:{key}"
            if key == "connectivity":
                assert c["availability"] == [{"topic": f"{base}/{NODE}/status"}]
                assert c["state_topic"] == f"{base}/{NODE}/{name}/availability"
                assert (c["payload_on"], c["payload_off"], c["device_class"]) == ("online", "offline", "connectivity")
            else:
                assert c["availability"] == [{"topic": f"{base}/{NODE}/status"},
                                             {"topic": f"{base}/{NODE}/{name}/availability"}]
                assert c["availability_mode"] == "all"
                assert c["state_topic"] == f"{base}/{NODE}/{name}/state"
        assert comps["stage"]["device_class"] == "enum" and comps["stage"]["options"] == ["W", "NREM", "REM"]
        components[name] = comps
    assert set(by_identifier) == {f"edged:{NODE}", *(f"edged:{NODE}:{n}" for n in devices)}
    return components


def test_devices_appear_with_their_entities_and_follow_the_config(tmp_path, broker, subscribe, topic_base):
    prefix = f"{topic_base}-ha"  # a configured discovery prefix, not the default
    base = topic_base
    watch = subscribe(f"{prefix}/#")
    data = subscribe(f"{base}/#")
    daemon = start_daemon_info(write_config(tmp_path, broker, base, {"bed1": NIGHT, "bed2": NIGHT}, prefix))
    try:
        # Both replays run to their end: each device publishes its night and its final counters.
        data.wait_for(lambda ms: all(night_delivered(ms, f"{base}/{NODE}/{d}") for d in ("bed1", "bed2")), timeout=60)
        configs = retained_configs(subscribe, prefix)
        components = check_discovery_rules(configs, base, {"bed1", "bed2"})

        # Every topic a config names really carries messages from the run.
        seen = {m.topic for m in data.messages}
        for config in configs.values():
            for c in config["components"].values():
                named = {c["state_topic"], c.get("json_attributes_topic"), *(a["topic"] for a in c.get("availability", []))}
                assert named - {None} <= seen, f"{c['unique_id']} names topics nothing was published on"

        # The templates give Home Assistant the right values for every stage message of the night.
        for name, comps in components.items():
            stages = data.on(f"{base}/{NODE}/{name}/stage")
            assert len(stages) > 100
            for m in stages:
                msg = m.json()
                assert render(comps["stage"]["value_template"], m.payload) == msg["stage"]
                assert float(render(comps["confidence"]["value_template"], m.payload)) == pytest.approx(
                    100 * max(msg["probabilities"].values()), abs=0.051)
                assert float(render(comps["quality"]["value_template"], m.payload)) == pytest.approx(
                    100 * msg["quality"]["score"], abs=0.051)
                if "hr_bpm" in msg:
                    assert float(render(comps["heart_rate"]["value_template"], m.payload)) == msg["hr_bpm"]
                    assert float(render(comps["ibi"]["value_template"], m.payload)) == pytest.approx(
                        60000 / msg["hr_bpm"], abs=0.51)
                else:
                    assert render(comps["heart_rate"]["value_template"], m.payload) == "None"
                attributes = json.loads(render(comps["stage"]["json_attributes_template"], m.payload))
                assert attributes["probabilities"] == msg["probabilities"] and attributes["synthetic"] is False
            state = data.on(f"{base}/{NODE}/{name}/state")[-1]
            assert render(comps["stage"]["value_template"], state.payload) in comps["stage"]["options"]
            availability = [m.payload.decode() for m in data.on(f"{base}/{NODE}/{name}/availability")]
            assert set(availability) <= {comps["connectivity"]["payload_on"], comps["connectivity"]["payload_off"]}

        # Home Assistant restarts and announces itself: every config is published again.
        before = {t: len(watch.on(t)) for t in configs}
        publish(broker, f"{prefix}/status", b"online")
        watch.wait_for(lambda ms: all(len([m for m in ms if m.topic == t]) > before[t] for t in configs), timeout=10)
        for topic, config in configs.items():
            assert watch.on(topic)[-1].json() == config
    finally:
        err = stop(daemon)
    assert "Traceback" not in err, err

    # Restart with bed2 removed from the config: its retained config is cleared, the others stay.
    bed2_topic = f"{prefix}/device/edged_{NODE}/bed2/config"
    daemon = start_daemon_info(write_config(tmp_path, broker, base, {"bed1": NIGHT}, prefix))
    try:
        watch.wait_for(lambda ms: any(m.topic == bed2_topic and m.payload == b"" for m in ms), timeout=30)
        left = retained_configs(subscribe, prefix)
        assert bed2_topic not in left
        check_discovery_rules(left, base, {"bed1"})
    finally:
        err = stop(daemon)
    assert "no longer configured" in err and "Traceback" not in err, err


def test_components_dropped_by_a_new_model_get_a_tombstone_first(broker, subscribe, topic_base):
    """A retained config from before (here: with an extra 'old' component) is corrected the way Home
    Assistant requires: the removed component with its platform only, then the clean config."""
    prefix = f"{topic_base}-ha"
    settings = MqttSettings(host=broker.host, port=broker.port, base_topic=topic_base, node_id=NODE)
    device = ha.DiscoveredDevice("bed1", MODEL, ("W", "NREM", "REM"), synthetic=True, heart=False)
    topic = ha.device_config_topic(prefix, NODE, "bed1")
    stale = ha.device_config(topic_base, NODE, device)
    stale["components"]["old"] = {"platform": "sensor", "unique_id": "edged:e2e:bed1:old", "state_topic": "x"}
    publish(broker, topic, json.dumps(stale).encode(), retain=True)
    watch = subscribe(f"{prefix}/#")
    sink = ha.HomeAssistantDiscovery(settings, [device], prefix=prefix, status_topic=f"{prefix}/status")
    sink.start()
    try:
        watch.wait_for(lambda ms: any(m.topic == topic and '"old":{"platform":"sensor"}' in m.text for m in ms))
        watch.wait_for(lambda ms: len([m for m in ms if m.topic == topic]) >= 4)  # stale, fresh, tombstone, fresh
        last = watch.on(topic)[-1].json()
        assert "old" not in last["components"]
        # A synthetic model says so in the entity name, and a model not fed intervals has no heart entities.
        assert "SYNTHETIC" in last["components"]["stage"]["name"]
        assert not {"heart_rate", "ibi"} & set(last["components"])
    finally:
        sink.close()


def test_homeassistant_section_is_strict():
    with pytest.raises(ConfigError) as err:
        parse_config('[homeassistant]\nenabled = true\ndiscovery_prefx = "ha"\nstatus_topic = "ha/#"\n', "t.toml")
    text = str(err.value)
    assert "t.toml:3: homeassistant.discovery_prefx: unknown key (did you mean 'discovery_prefix'?)" in text
    assert "t.toml:4: homeassistant.status_topic: 'ha/#' must be a topic without wildcards" in text
