"""The stage-message journal (edged.sinks.journal): durable order, bounds, degradation; and the MQTT sink
re-sending what a previous run left in it, through a REAL mosquitto."""

from __future__ import annotations

import logging
import resource
import sqlite3
import time
from pathlib import Path

import pytest

from edged.config import load_config, parse_config
from edged.errors import ConfigError
from edged.sinks import contract
from edged.sinks.journal import JOURNAL_FILE, Journal, JournalPolicy, default_state_dir
from edged.sinks.mqtt import MqttSettings, MqttSink

from conftest import make_epoch

NODE = "node1"


def payload(i: int, size: int = 600) -> bytes:
    return f"{i:08d}".encode().ljust(size, b".")


def drain(journal: Journal) -> list[bytes]:
    return [e.payload for e in journal.peek(0, 1_000_000)]


def test_order_acks_and_restart_keep_every_unacknowledged_message(tmp_path: Path) -> None:
    j = Journal.open(tmp_path)
    assert j.durable
    seqs = [j.put("t", payload(i), retain=(("t/state", payload(i)),)) for i in range(10)]
    assert seqs == sorted(seqs) and len(j) == 10
    assert [e.seq for e in j.peek(seqs[3], 2)] == seqs[4:6]
    assert j.ack(seqs[0]) and j.ack(seqs[5]) and not j.ack(seqs[5])
    j.remember("t/availability", b"online")
    j.close()

    again = Journal.open(tmp_path)  # a restart: the same rows, in order, with their original payloads
    assert again.n_recovered == 8 and len(again) == 8
    assert drain(again) == [payload(i) for i in range(10) if i not in (0, 5)]
    assert again.retained() == {"t/state": payload(9), "t/availability": b"online"}
    for entry in again.peek(0, 100):
        assert again.ack(entry.seq)
    assert len(again) == 0
    # Sequence numbers are never reused, even once every row is acknowledged and pruned: the sender's
    # cursor (the highest seq handed over on a connection) must never skip a new message.
    nxt = again.put("t", payload(99))
    assert nxt > seqs[-1]
    again.close()


def test_acknowledged_rows_are_kept_for_the_retention_time_then_pruned(tmp_path: Path) -> None:
    j = Journal.open(tmp_path, JournalPolicy(retention_hours=1.0))
    for i in range(5):
        j.ack(j.put("t", payload(i)))
    j.close()
    with sqlite3.connect(tmp_path / JOURNAL_FILE) as db:
        assert db.execute("SELECT count(*) FROM outbox WHERE acked IS NOT NULL").fetchone()[0] == 5
    time.sleep(0.05)
    j = Journal.open(tmp_path, JournalPolicy(retention_hours=0.01 / 3600))  # 10 ms: all past retention
    assert j.n_pruned == 5
    j.close()

    j = Journal.open(tmp_path / "zero", JournalPolicy(retention_hours=0))  # 0: gone on acknowledgement
    j.ack(j.put("t", payload(1)))
    j.put("t", payload(2))
    j.close()
    with sqlite3.connect(tmp_path / "zero" / JOURNAL_FILE) as db:
        assert db.execute("SELECT count(*) FROM outbox").fetchone()[0] == 1


def test_the_size_cap_discards_the_oldest_unacknowledged_and_counts(tmp_path: Path, caplog) -> None:
    cap = 400_000
    j = Journal.open(tmp_path, JournalPolicy(max_bytes=cap))
    n = 3000  # ~2 MB of payloads: five times the cap
    acked_early = [j.put("t", payload(i)) for i in range(10)]
    for seq in acked_early:
        j.ack(seq)
    for i in range(10, n):
        j.put("t", payload(i))
        assert j.used_bytes() <= cap
    kept = drain(j)
    assert j.n_discarded > 0 and j.dropped == j.n_discarded
    assert len(kept) == len(j) == n - 10 - j.n_discarded
    # What survives is the NEWEST messages, contiguous and in order.
    assert kept == [payload(i) for i in range(n - len(kept), n)]
    assert any("size cap" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert (tmp_path / JOURNAL_FILE).stat().st_size <= cap * 1.05  # the file itself stays bounded
    j.close()


def test_an_unusable_state_directory_is_one_error_and_memory_goes_on(tmp_path: Path, caplog) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    caplog.set_level(logging.ERROR, logger="edged.sinks.journal")
    j = Journal.open(not_a_dir, JournalPolicy(memory_fallback=3))
    assert not j.durable and j.failure
    seqs = [j.put("t", payload(i)) for i in range(5)]
    assert drain(j) == [payload(i) for i in (2, 3, 4)] and j.dropped == 2  # memory: the oldest go
    assert j.ack(seqs[3]) and j.counters["journal_memory_only"] == 5
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and str(not_a_dir) in errors[0] and "memory" in errors[0]


def test_a_second_edged_on_the_same_directory_does_not_share_the_journal(tmp_path: Path, caplog) -> None:
    first = Journal.open(tmp_path)
    second = Journal.open(tmp_path)
    assert first.durable and not second.durable and "another edged" in (second.failure or "")
    first.close()


def test_a_disk_that_fills_up_mid_night_keeps_every_message_in_order(tmp_path: Path, caplog) -> None:
    """RLIMIT_FSIZE makes every write past a size fail as on a full disk (EFBIG): the journal says so once
    and goes on from memory, keeping the unacknowledged rows it had, with their sequence numbers."""
    caplog.set_level(logging.ERROR, logger="edged.sinks.journal")
    j = Journal.open(tmp_path)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (256 << 10, hard))
    try:
        seqs = [j.put("t", payload(i), retain=(("t/state", payload(i)),)) for i in range(800)]
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert not j.durable
    assert 0 < j.counters["journal_memory_only"] < 800
    assert seqs == sorted(set(seqs))
    assert drain(j) == [payload(i) for i in range(800)]  # nothing lost, nothing reordered
    assert sum(r.levelno >= logging.ERROR for r in caplog.records) == 1
    for seq in seqs[:10]:
        assert j.ack(seq)
    assert drain(j)[0] == payload(10)
    j.close()
    # What reached the disk before it filled is still there for the next start (at-least-once).
    again = Journal.open(tmp_path)
    assert again.durable and 0 < len(again) <= 800 - j.counters["journal_memory_only"]
    assert drain(again) == [payload(i) for i in range(len(again))]
    again.close()


def test_default_state_dir_follows_systemd_then_xdg() -> None:
    assert default_state_dir({"STATE_DIRECTORY": "/var/lib/edged:/var/lib/other"}) == Path("/var/lib/edged")
    assert default_state_dir({"XDG_STATE_HOME": "/x/state"}) == Path("/x/state/edged")
    assert default_state_dir({}) == Path.home() / ".local" / "state" / "edged"


# ------------------------------------------------------------------------------- with the MQTT sink


def sink_for(broker, base: str, journal: Journal) -> MqttSink:
    sink = MqttSink(MqttSettings(host=broker.host, port=broker.port, base_topic=base, node_id=NODE, keepalive=10,
                                 reconnect_min_delay=0.05, reconnect_max_delay=0.3), journal=journal)
    sink.start()
    return sink


def wait_until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_restarted_sink_sends_what_the_previous_run_left_first_and_in_order(broker, subscribe, topic_base,
                                                                             tmp_path: Path) -> None:
    stage = contract.stage_topic(topic_base, NODE, "strap")
    sub = subscribe(f"{topic_base}/#", persistent=True)
    first = sink_for(broker, topic_base, Journal.open(tmp_path))
    first.set_availability("strap", True)
    for i in range(5):
        first.publish_stage(make_epoch(i))
    sub.wait_for(lambda ms: sum(m.topic == stage for m in ms) >= 5)
    broker.stop()
    wait_until(lambda: not first.connected)
    for i in range(5, 20):  # scored during the outage; then edged stops before the broker returns
        first.publish_stage(make_epoch(i))
    first.close(timeout=0.5)
    assert first.counters["pending"] == 15

    broker.start()
    second = sink_for(broker, topic_base, Journal.open(tmp_path))
    try:
        wait_until(lambda: second.counters["pending"] == 0)
        second.publish_stage(make_epoch(20))
        sub.wait_for(lambda ms: len({m.json()["id"] for m in ms if m.topic == stage}) >= 21)
        ids = list(dict.fromkeys(m.json()["id"] for m in sub.on(stage)))
        assert ids == [contract.message_id(NODE, "strap", make_epoch(0).session, i) for i in range(21)]
        assert second.counters["journal_recovered"] == 15
        # The previous run's retained state came back with it; its device is offline until it delivers.
        late = subscribe(f"{topic_base}/#")
        late.wait_for(lambda ms: any(m.topic.endswith("/strap/state") for m in ms)
                      and any(m.topic.endswith("/strap/availability") for m in ms))
        assert [m.json()["epoch"] for m in late.on(contract.state_topic(topic_base, NODE, "strap"))] == [20]
        assert late.on(contract.availability_topic(topic_base, NODE, "strap"))[-1].payload == b"offline"
    finally:
        second.close(timeout=2.0)


def test_offline_is_published_once_per_device_on_shutdown(broker, subscribe, topic_base, tmp_path: Path) -> None:
    avail = contract.availability_topic(topic_base, NODE, "strap")
    status = contract.status_topic(topic_base, NODE)
    sub = subscribe(f"{topic_base}/#")
    sink = sink_for(broker, topic_base, Journal.open(tmp_path))
    sink.set_availability("strap", True)
    sink.publish_stage(make_epoch(0))
    sub.wait_for_payload(avail, "online")
    sink.set_availability("strap", False)  # the daemon says so as the device stops ...
    sink.set_availability("strap", False)  # ... and more than one part of it may
    sink.close(timeout=2.0)  # ... and close() marks every device offline
    sub.wait_for_payload(status, "offline")
    assert [m.payload for m in sub.on(avail)] == [b"online", b"offline"]


def test_journal_options_are_strict_and_state_dir_is_relative_to_the_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config('[journal]\nmax_mb = 0.5\nsynchronous = "fast"\nretention = 3\n', "edged.toml")
    problems = err.value.problems
    assert any(p.startswith("edged.toml:2: journal.max_mb: must be >= 1.0") for p in problems)
    assert any(p.startswith("edged.toml:3: journal.synchronous: must be one of") for p in problems)
    assert any("edged.toml:4: journal.retention: unknown key (did you mean 'retention_hours'?)" in p
               for p in problems)
    cfg = tmp_path / "etc" / "edged.toml"
    cfg.parent.mkdir()
    cfg.write_text('[node]\nstate_dir = "state"\n')
    assert load_config(cfg).state_dir == cfg.parent / "state"
