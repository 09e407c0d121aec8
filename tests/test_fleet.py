"""A ward, not one bed: two edged nodes against one real broker (docs/fleet.md).

Each node publishes only under its own node id, one node's death (its last will) says nothing about the
other, and consumers in a shared-subscription group split the stage messages between them: every message
reaches exactly one member of the group."""

from __future__ import annotations

import json
import signal
import threading
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from tests.conftest import DEMO, expected_epochs, replay_device, start_daemon



def _node_config(tmp_path: Path, daemon_toml, node: str, devices: list[str], speed: float) -> Path:
    text = daemon_toml("".join(replay_device(DEMO, name=d, speed=speed) for d in devices))
    path = tmp_path / f"{node}.toml"
    path.write_text(text.replace('id = "e2e"', f'id = "{node}"'))
    return path


class GroupMember:
    """One consumer of a shared subscription ``$share/{group}/{filter}`` (MQTT 5, as a worker would be)."""

    def __init__(self, broker, group: str, topic_filter: str):
        self.ids: list[str] = []
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"worker-{uuid.uuid4().hex[:8]}",
                                  protocol=mqtt.MQTTv5)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(f"$share/{group}/{topic_filter}", qos=1)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert self.subscribed.wait(5)

    def _on_message(self, client, userdata, msg):
        with self.lock:
            self.ids.append(json.loads(msg.payload)["id"])

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def test_two_nodes_share_a_broker_without_collision_and_shared_subscribers_split_the_work(
        tmp_path, broker, subscribe, daemon_toml, topic_base):
    everything = subscribe(f"{topic_base}/#")
    workers = [GroupMember(broker, "stagers", f"{topic_base}/+/+/stage") for _ in range(2)]
    # The same device name on both nodes: the node id alone must keep them apart.
    ward_a = _node_config(tmp_path, daemon_toml, "ward-a", ["bed1", "bed2"], speed=3000.0)
    ward_b = _node_config(tmp_path, daemon_toml, "ward-b", ["bed1"], speed=3000.0)
    # 3000x real time (the night in ~7 s): fast, yet slow enough that no subscriber's queue at the broker
    # overflows (mosquitto drops QoS 1 messages beyond max_queued_messages, 1000 by default, per client).
    procs = [start_daemon(ward_a), start_daemon(ward_b)]
    try:
        n_epochs = expected_epochs(DEMO)

        seen = {"n": 0, "stages": 0, "offline": set()}

        def done(ms):
            # Incremental (the predicate runs on every message: a full scan each time would slow the
            # subscriber until the broker drops messages for it). Availability is a control message and may
            # overtake queued stages: wait for both.
            for m in ms[seen["n"]:]:
                seen["stages"] += m.topic.endswith("/stage")
                if m.topic.endswith("/availability") and m.payload == b"offline":
                    seen["offline"].add(m.topic)
            seen["n"] = len(ms)
            return len(seen["offline"]) == 3 and seen["stages"] >= 3 * n_epochs
        messages = everything.wait_for(done, timeout=180)
        time.sleep(0.5)  # a stray duplicate or extra epoch would arrive now
        messages = everything.wait_for(lambda ms: True)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.communicate(timeout=30)
    stage = [m for m in messages if m.topic.endswith("/stage")]
    per_topic: dict[str, list[dict]] = {}
    for m in stage:
        per_topic.setdefault(m.topic, []).append(m.json())
    assert set(per_topic) == {f"{topic_base}/ward-a/bed1/stage", f"{topic_base}/ward-a/bed2/stage",
                              f"{topic_base}/ward-b/bed1/stage"}
    # Each stream is complete, in order, and names its own node: nothing crossed over.
    assert {len(v) for v in per_topic.values()} == {n_epochs}
    for topic, payloads in per_topic.items():
        node = topic.split("/")[-3]
        assert all(p["node"] == node and p["id"].startswith(f"{node}/") for p in payloads)
        assert [p["epoch"] for p in payloads] == sorted(p["epoch"] for p in payloads)
    all_ids = [p["id"] for v in per_topic.values() for p in v]
    assert len(set(all_ids)) == len(all_ids)  # ids are unique across the ward
    # Same recording, same model: ward-a/bed1 and ward-b/bed1 stage identically (no state is shared).
    assert [p["stage"] for p in per_topic[f"{topic_base}/ward-a/bed1/stage"]] == \
        [p["stage"] for p in per_topic[f"{topic_base}/ward-b/bed1/stage"]]

    # Shared subscription: every stage message went to exactly one worker of the group.
    everyone = set(all_ids)
    got = [set(w.ids) for w in workers]
    deadline_ids = sum(len(w.ids) for w in workers)
    for w in workers:
        w.close()
    assert got[0] | got[1] == everyone
    assert not (got[0] & got[1])
    assert deadline_ids == len(everyone)
    assert got[0] and got[1]  # the broker really spread the load


def test_one_node_dying_leaves_the_other_online(tmp_path, broker, subscribe, daemon_toml, topic_base):
    status = subscribe(f"{topic_base}/+/status")
    ward_a = start_daemon(_node_config(tmp_path, daemon_toml, "ward-a", ["bed1"], speed=1.0))
    ward_b = start_daemon(_node_config(tmp_path, daemon_toml, "ward-b", ["bed1"], speed=1.0))
    try:
        status.wait_for(lambda ms: {m.topic for m in ms if m.payload == b"online"}
                        == {f"{topic_base}/ward-a/status", f"{topic_base}/ward-b/status"}, timeout=60)
        ward_a.kill()  # no goodbye: the broker publishes ward-a's last will
        ward_a.communicate(timeout=10)
        status.wait_for_payload(f"{topic_base}/ward-a/status", "offline", timeout=30)
        latest = {}
        for m in status.wait_for(lambda ms: True, timeout=1):
            latest[m.topic] = m.payload
        assert latest[f"{topic_base}/ward-b/status"] == b"online"
        assert ward_b.poll() is None
    finally:
        for p in (ward_a, ward_b):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.communicate(timeout=30)
