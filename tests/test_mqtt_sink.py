"""The MQTT contract and sink, against a REAL mosquitto (see conftest.py): nothing here patches paho."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import jsonschema
import pytest

from edged.errors import SinkError
from edged.sinks import contract
from edged.sinks.broker import EmbeddedBroker, broker_reachable, free_port
from edged.sinks.mqtt import MqttSettings, MqttSink, Outbox

from conftest import Received, Subscriber, make_epoch

REPO = Path(__file__).resolve().parents[1]
NODE = "node1"
VALIDATOR = jsonschema.Draft202012Validator(contract.STAGE_SCHEMA)

SinkFactory = Callable[..., MqttSink]
SubscribeFactory = Callable[..., Subscriber]


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def stage_ids(messages: list[Received], topic: str) -> list[str]:
    return [m.json()["id"] for m in messages if m.topic == topic]


def dedupe(ids: list[str]) -> list[str]:
    """What a consumer does with re-sent messages: keep the first of each id."""
    seen: set[str] = set()
    return [i for i in ids if not (i in seen or seen.add(i))]  # type: ignore[func-returns-value]


def expected_ids(indices: range, device: str = "strap") -> list[str]:
    e = make_epoch(0, device=device)
    return [contract.message_id(NODE, device, e.session, i) for i in indices]


@pytest.fixture
def make_sink(topic_base: str) -> Iterator[SinkFactory]:
    """Sinks with fast reconnects, closed after the test whatever happens."""
    sinks: list[MqttSink] = []

    def make(host: str, port: int, **overrides: object) -> MqttSink:
        settings: dict[str, object] = dict(
            host=host, port=port, base_topic=topic_base, node_id=NODE, keepalive=10,
            reconnect_min_delay=0.05, reconnect_max_delay=0.3,
        )
        settings.update(overrides)
        sink = MqttSink(MqttSettings(**settings))  # type: ignore[arg-type]
        sinks.append(sink)
        sink.start()
        return sink

    yield make
    for sink in sinks:
        sink.close(timeout=1.0)


def topics(base: str, device: str = "strap") -> dict[str, str]:
    return {
        "status": contract.status_topic(base, NODE),
        "availability": contract.availability_topic(base, NODE, device),
        "stage": contract.stage_topic(base, NODE, device),
        "state": contract.state_topic(base, NODE, device),
        "counters": contract.counters_topic(base, NODE, device),
    }


# ------------------------------------------------------------------------------------ contract, no broker


def test_stage_payload_follows_the_contract() -> None:
    epoch = make_epoch(7, received=100.0)
    p = contract.stage_payload(epoch, NODE, now=100.25)
    VALIDATOR.validate(p)
    assert p["v"] == contract.CONTRACT_VERSION == 1
    assert p["id"] == f"{NODE}/strap/{epoch.session}/7"
    assert (p["node"], p["device"], p["session"], p["epoch"]) == (NODE, "strap", epoch.session, 7)
    assert p["start"] == "2024-05-01T22:03:30.000Z" and p["end"] == "2024-05-01T22:04:00.000Z"
    assert p["start_ts"] == epoch.start and p["end_ts"] == epoch.end
    assert list(p["probabilities"]) == ["W", "N1", "N2", "N3", "REM"]  # the model's class order
    assert p["model"] == {"id": "hrv-gru-v1", "synthetic": False}
    assert p["quality"] == {"score": 0.97, "ok": True}
    assert p["latency_ms"] == 250.0
    assert "warning" not in p
    raw = contract.encode(p)
    assert b", " not in raw and b": " not in raw and json.loads(raw) == p  # compact


def test_synthetic_model_always_carries_the_warning() -> None:
    p = contract.stage_payload(make_epoch(0, synthetic=True), NODE)
    assert p["warning"] == contract.SYNTHETIC_WARNING
    VALIDATOR.validate(p)
    del p["warning"]
    with pytest.raises(jsonschema.ValidationError):
        VALIDATOR.validate(p)


def test_schema_is_valid_and_matches_the_file_in_docs() -> None:
    jsonschema.Draft202012Validator.check_schema(contract.STAGE_SCHEMA)
    stored = (REPO / "docs" / "mqtt-stage.schema.json").read_text(encoding="utf-8")
    assert stored == contract.schema_text(), "run: python -m edged.sinks.contract"


def test_probabilities_are_rounded_and_nan_is_refused() -> None:
    odd = dataclasses.replace(make_epoch(0), probabilities={"W": 1 / 3, "S": 2 / 3})
    assert contract.stage_payload(odd, NODE)["probabilities"] == {"W": 0.3333, "S": 0.6667}
    bad = dataclasses.replace(make_epoch(0), quality=float("nan"))
    with pytest.raises(ValueError):
        contract.encode(contract.stage_payload(bad, NODE))


@pytest.mark.parametrize("name", ["", "a/b", "a+", "#", " x"])
def test_topic_levels_that_would_change_the_topic_are_refused(name: str) -> None:
    with pytest.raises(ValueError):
        contract.check_segment(name, "device name")
    with pytest.raises(ValueError):
        MqttSettings(node_id=name)


def test_outbox_keeps_order_and_evicts_the_oldest() -> None:
    box = Outbox(3)
    seqs = [box.put("t", str(i).encode()) for i in range(5)]
    assert len(box) == 3 and box.dropped == 2
    assert [e.payload for e in box.peek(0, 10)] == [b"2", b"3", b"4"]
    assert [e.seq for e in box.peek(seqs[2], 1)] == [seqs[3]]
    assert box.ack(seqs[3]) and not box.ack(seqs[3]) and not box.ack(seqs[0])
    assert [e.payload for e in box.peek(0, 10)] == [b"2", b"4"]


# --------------------------------------------------------------------------------------- real broker


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_stage_messages_arrive_once_each_in_order_and_validate(
    broker: EmbeddedBroker, subscribe: SubscribeFactory, make_sink: SinkFactory, topic_base: str, protocol: str
) -> None:
    t = topics(topic_base)
    sub = subscribe(f"{topic_base}/#")
    sink = make_sink(broker.host, broker.port, protocol=protocol)
    n = 40
    for i in range(n):
        sink.publish_stage(make_epoch(i))
    wait_until(lambda: sink.counters["acked"] == n, what="all PUBACKs")
    sub.wait_for(lambda ms: len(stage_ids(ms, t["stage"])) >= n)
    time.sleep(0.1)  # anything extra (a duplicate) would arrive now
    stage = [m for m in sub.messages if m.topic == t["stage"]]
    assert stage_ids(stage, t["stage"]) == expected_ids(range(n))  # exactly once, in order
    for m in stage:
        assert m.qos == 1 and not m.retain
        VALIDATOR.validate(m.json())
        assert m.json()["latency_ms"] >= 0
    assert sink.connected
    c = sink.counters
    assert (c["published"], c["acked"], c["pending"], c["dropped"], c["reconnects"]) == (n, n, 0, 0, 0)
    assert sub.on(t["status"])[0].text == "online"


def test_late_subscriber_sees_retained_state_status_availability_and_counters(
    broker: EmbeddedBroker, subscribe: SubscribeFactory, make_sink: SinkFactory, topic_base: str
) -> None:
    t = topics(topic_base)
    sink = make_sink(broker.host, broker.port)
    sink.set_availability("strap", True)
    for i in range(3):
        sink.publish_stage(make_epoch(i))
    sink.publish_counters("strap", {"chunks": 12, "samples": 3000, "gaps": 1, "lost_samples": 4})
    wait_until(lambda: sink.counters["acked"] == 3, what="PUBACKs")
    time.sleep(0.1)  # retained messages are acknowledged separately; give them a moment

    late = subscribe(f"{topic_base}/#")
    late.wait_for(lambda ms: {m.topic for m in ms} >= {t["status"], t["availability"], t["state"], t["counters"]})
    got = {m.topic: m for m in late.messages}
    assert all(m.retain for m in got.values())
    assert t["stage"] not in got  # stage messages are not retained: a late subscriber gets no history
    assert got[t["status"]].text == "online" and got[t["availability"]].text == "online"
    state = got[t["state"]].json()
    VALIDATOR.validate(state)
    assert state["epoch"] == 2
    counters = got[t["counters"]].json()
    assert counters["counters"]["lost_samples"] == 4 and counters["v"] == 1 and counters["device"] == "strap"
    assert abs(counters["ts"] - time.time()) < 10


_VICTIM = """
import sys, time
from edged.sinks.mqtt import MqttSettings, MqttSink
host, port, base = sys.argv[1], int(sys.argv[2]), sys.argv[3]
sink = MqttSink(MqttSettings(host=host, port=port, base_topic=base, node_id="victim", keepalive=10))
sink.start()
deadline = time.monotonic() + 10
while not sink.connected:
    if time.monotonic() > deadline:
        sys.exit(2)
    time.sleep(0.01)
print("ready", flush=True)
time.sleep(60)
"""


def test_last_will_marks_the_node_offline_when_the_process_is_killed(
    broker: EmbeddedBroker, subscribe: SubscribeFactory, topic_base: str
) -> None:
    status = contract.status_topic(topic_base, "victim")
    sub = subscribe(status)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with subprocess.Popen(
        [sys.executable, "-c", _VICTIM, broker.host, str(broker.port), topic_base],
        stdout=subprocess.PIPE, env=env, cwd=REPO,
    ) as proc:
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
            sub.wait_for_payload(status, "online")
            proc.send_signal(signal.SIGKILL)  # no chance to say goodbye: only the will can
            proc.wait(5)
            sub.wait_for(lambda ms: ms[-1].topic == status and ms[-1].text == "offline")
        finally:
            if proc.poll() is None:
                proc.kill()
    # Retained: a dashboard that starts later still sees the node as offline.
    subscribe(status).wait_for(lambda ms: bool(ms) and ms[-1].text == "offline" and ms[-1].retain)


def test_clean_close_flushes_marks_offline_and_is_idempotent(
    broker: EmbeddedBroker, subscribe: SubscribeFactory, make_sink: SinkFactory, topic_base: str
) -> None:
    t = topics(topic_base)
    sub = subscribe(f"{topic_base}/#")
    sink = make_sink(broker.host, broker.port)
    sink.set_availability("strap", True)
    for i in range(5):
        sink.publish_stage(make_epoch(i))
    sink.close(timeout=5.0)  # no waiting for acks beforehand: close() must flush them
    assert not sink.connected
    assert sink.counters["pending"] == 0 and sink.counters["acked"] == 5
    sub.wait_for_payload(t["status"], "offline")
    assert stage_ids(sub.messages, t["stage"]) == expected_ids(range(5))
    order = [(m.topic, m.text) for m in sub.messages if m.topic in (t["status"], t["availability"])]
    assert order[-2:] == [(t["availability"], "offline"), (t["status"], "offline")]
    sink.close()  # idempotent
    with pytest.raises(SinkError):
        sink.publish_stage(make_epoch(5))


def _stop_cleanly(broker: EmbeddedBroker) -> None:
    broker.stop()


def _kill_with_messages_in_flight(broker: EmbeddedBroker, sink: MqttSink, first: int) -> int:
    """Freeze the broker, publish into the open socket (the messages are sent but never acknowledged),
    then kill it: the sink must re-send what was in flight. Returns the next epoch index."""
    assert broker.pid is not None
    os.kill(broker.pid, signal.SIGSTOP)
    before = sink.counters["sent"]
    for i in range(first, first + 3):
        sink.publish_stage(make_epoch(i))
    # 3 stage messages + the retained state after each (coalesced, so at least one).
    wait_until(lambda: sink.counters["sent"] >= before + 4, what="messages handed to paho")
    assert sink.counters["acked"] == first
    os.kill(broker.pid, signal.SIGKILL)
    broker.stop()  # reaps the process; the port is kept for the restart
    return first + 3


@pytest.mark.parametrize("how", ["stop", "kill-in-flight"])
def test_broker_restart_on_the_same_port_loses_nothing(
    broker: EmbeddedBroker, subscribe: SubscribeFactory, make_sink: SinkFactory, topic_base: str, how: str
) -> None:
    t = topics(topic_base)
    port = broker.port
    sub = subscribe(t["stage"], persistent=True)  # its session survives the restart (see conftest)
    sink = make_sink(broker.host, broker.port)
    for i in range(5):
        sink.publish_stage(make_epoch(i))
    sub.wait_for(lambda ms: len(ms) >= 5)

    nxt = 5
    if how == "stop":
        _stop_cleanly(broker)
    else:
        nxt = _kill_with_messages_in_flight(broker, sink, 5)
    wait_until(lambda: not sink.connected, what="the sink to notice the broker is gone")
    for i in range(nxt, nxt + 10):  # published during the outage: must wait in the outbox
        sink.publish_stage(make_epoch(i))
    last = nxt + 10
    assert sink.counters["pending"] >= 10 and not sink.connected

    broker.start()
    assert broker.port == port
    wait_until(lambda: sink.connected, what="reconnect")
    wait_until(lambda: sink.counters["pending"] == 0, what="the outbox to drain")
    sub.wait_for(lambda ms: len(dedupe(stage_ids(ms, t["stage"]))) >= last)
    assert dedupe(stage_ids(sub.messages, t["stage"])) == expected_ids(range(last))
    c = sink.counters
    assert (c["published"], c["acked"], c["dropped"]) == (last, last, 0)
    assert c["reconnects"] >= 1


def test_full_outbox_drops_the_oldest_and_counts(
    broker: EmbeddedBroker, subscribe: SubscribeFactory, make_sink: SinkFactory, topic_base: str
) -> None:
    t = topics(topic_base)
    sub = subscribe(t["stage"], persistent=True)
    sink = make_sink(broker.host, broker.port, max_outbox=5)
    wait_until(lambda: sink.connected, what="connect")
    broker.stop()
    wait_until(lambda: not sink.connected, what="disconnect")
    for i in range(12):
        sink.publish_stage(make_epoch(i))
    c = sink.counters
    assert (c["published"], c["pending"], c["dropped"]) == (12, 5, 7)

    broker.start()
    wait_until(lambda: sink.counters["pending"] == 0, what="the outbox to drain")
    sub.wait_for(lambda ms: len(ms) >= 5)
    time.sleep(0.1)
    assert dedupe(stage_ids(sub.messages, t["stage"])) == expected_ids(range(7, 12))  # the newest survive
    assert sink.counters["dropped"] == 7


def test_without_a_broker_the_sink_never_claims_to_be_connected_and_never_blocks(
    make_sink: SinkFactory,
) -> None:
    port = free_port()
    assert not broker_reachable("127.0.0.1", port, timeout=0.2)
    sink = make_sink("127.0.0.1", port)
    t0 = time.monotonic()
    for i in range(200):
        sink.publish_stage(make_epoch(i))
    assert time.monotonic() - t0 < 0.5
    time.sleep(0.2)  # several failed connection attempts
    assert not sink.connected
    assert sink.counters["pending"] == 200 and sink.counters["sent"] == 0
    t0 = time.monotonic()
    sink.close(timeout=2.0)  # nothing to wait for while no broker is there
    assert time.monotonic() - t0 < 1.5


def test_embedded_broker_restarts_on_its_port_and_explains_a_missing_mosquitto(tmp_path: Path) -> None:
    missing = EmbeddedBroker(executable=tmp_path / "no-such-mosquitto")
    with pytest.raises(SinkError):
        missing.start()
    missing.cleanup()
    with pytest.raises(SinkError):
        EmbeddedBroker(host="0.0.0.0")  # anonymous access must never face a network
    with EmbeddedBroker() as b:
        port = b.port
        assert broker_reachable(b.host, port)
        b.stop()
        assert not broker_reachable(b.host, port, timeout=0.2)
        b.start()
        assert b.port == port and broker_reachable(b.host, port)
    assert not b.running


def test_close_stays_bounded_when_the_broker_stops_answering(
    broker: EmbeddedBroker, make_sink: SinkFactory
) -> None:
    sink = make_sink(broker.host, broker.port)
    wait_until(lambda: sink.connected, what="connect")
    assert broker.pid is not None
    os.kill(broker.pid, signal.SIGSTOP)  # connection open, nothing acknowledged any more
    try:
        for i in range(3):
            sink.publish_stage(make_epoch(i))
        t0 = time.monotonic()
        sink.close(timeout=0.5)
        assert time.monotonic() - t0 < 2.5
        assert sink.counters["pending"] == 3 and not sink.connected
    finally:
        os.kill(broker.pid, signal.SIGCONT)
