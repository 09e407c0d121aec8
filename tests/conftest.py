"""Shared fixtures. MQTT tests talk to a REAL mosquitto (``EmbeddedBroker``), never to a patched client."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edged.scoring.epoch import ScoredEpoch
from edged.sinks.broker import EmbeddedBroker, find_mosquitto

@pytest.fixture(autouse=True)
def _private_state_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test (and every `edged run` it starts, through the environment) gets its own default state
    directory, so no journal is shared between tests, nor with the user's own edged."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path_factory.mktemp("xdg-state")))
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)


@pytest.fixture
def broker() -> Iterator[EmbeddedBroker]:
    """A fresh mosquitto on a free loopback port (starts in ~50 ms), with persistence so that a test can
    restart it on the same port and find its subscribers' sessions again."""
    if find_mosquitto() is None:  # set-up (make test) installs it: its absence is a broken machine, not a skip
        pytest.fail("mosquitto is not installed: run `make test`, or apt-get install mosquitto")
    b = EmbeddedBroker(persistence=True)
    b.start()
    try:
        yield b
    finally:
        b.cleanup()


@pytest.fixture
def topic_base() -> str:
    """A topic base no other test (or other engineer's run on the same machine) shares."""
    return f"edged-test-{uuid.uuid4().hex[:10]}"


@dataclass(frozen=True, slots=True)
class Received:
    topic: str
    payload: bytes
    retain: bool
    qos: int

    @property
    def text(self) -> str:
        return self.payload.decode("utf-8")

    def json(self) -> Any:
        return json.loads(self.payload)


class Subscriber:
    """A real paho client that records every message on ``topic_filter``, in arrival order.

    ``persistent=True`` uses a persistent session (clean_session=False) with a QoS 1 subscription, so the
    broker queues messages for it while it is disconnected, e.g. while both reconnect after a broker
    restart; without it, messages sent before it re-subscribes would be lost and tests would race.
    """

    def __init__(self, host: str, port: int, topic_filter: str, *, persistent: bool = False) -> None:
        self.topic_filter = topic_filter
        self.messages: list[Received] = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"test-sub-{uuid.uuid4().hex[:10]}",
            clean_session=not persistent,
        )
        self._client.reconnect_delay_set(0.05, 0.2)  # type: ignore[arg-type]
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._client.connect(host, port, keepalive=10)
        self._client.loop_start()
        if not self._subscribed.wait(5.0):
            raise TimeoutError(f"subscriber could not subscribe to {topic_filter}")

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        if not rc.is_failure:
            client.subscribe(self.topic_filter, qos=1)

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, rcs: Any, props: Any) -> None:
        self._subscribed.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.messages.append(Received(msg.topic, bytes(msg.payload), bool(msg.retain), msg.qos))
            self._cond.notify_all()

    def on(self, topic: str) -> list[Received]:
        with self._cond:
            return [m for m in self.messages if m.topic == topic]

    def wait_for(self, predicate: Callable[[list[Received]], bool], timeout: float = 5.0) -> list[Received]:
        """Wait until ``predicate(messages)`` holds; return a snapshot, or fail the test with what arrived."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self.messages):
                left = deadline - time.monotonic()
                if left <= 0:
                    got = [(m.topic, m.payload[:80]) for m in self.messages[-10:]]
                    raise AssertionError(f"timed out after {timeout} s; last messages: {got}")
                self._cond.wait(left)
            return list(self.messages)

    def wait_for_payload(self, topic: str, payload: str, timeout: float = 5.0) -> list[Received]:
        return self.wait_for(lambda ms: any(m.topic == topic and m.payload == payload.encode() for m in ms),
                             timeout)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


@pytest.fixture
def subscribe(broker: EmbeddedBroker) -> Iterator[Callable[..., Subscriber]]:
    """``subscribe("base/#")`` -> a connected Subscriber on the test's broker; closed after the test."""
    subs: list[Subscriber] = []

    def make(topic_filter: str, *, persistent: bool = False) -> Subscriber:
        sub = Subscriber(broker.host, broker.port, topic_filter, persistent=persistent)
        subs.append(sub)
        return sub

    yield make
    for sub in subs:
        sub.close()


def make_epoch(
    index: int,
    *,
    device: str = "strap",
    session: str = "2024-05-01T22:00:00.000Z",
    anchor: float = 1_714_600_800.0,
    synthetic: bool = False,
    received: float | None = None,
) -> ScoredEpoch:
    """A plausible scored epoch; ``received`` defaults to 'just now' so latency is small and positive."""
    now = time.monotonic()
    probs = {"W": 0.1, "N1": 0.05, "N2": 0.6, "N3": 0.15, "REM": 0.1}
    return ScoredEpoch(
        device=device,
        session=session,
        index=index,
        start=anchor + 30.0 * index,
        end=anchor + 30.0 * (index + 1),
        stage="N2",
        probabilities=probs,
        model_id="hrv-gru-v1",
        synthetic=synthetic,
        quality=0.97,
        quality_ok=True,
        received=now - 0.012 if received is None else received,
        scored=now,
    )


@pytest.fixture
def epoch_factory() -> Callable[..., ScoredEpoch]:
    return make_epoch


REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "edged" / "data" / "demo" / "slp61.rr"  # the bundled real night (slpdb slp61, beat-by-beat RR)


def daemon_config(broker: EmbeddedBroker, base: str, devices: str, *, node: str = "e2e", node_extra: str = "",
                  sections: str = "") -> str:
    """Config text for `edged run` on ``broker`` under topic ``base``: node id (plus ``node_extra`` lines in
    [node]), MQTT, other ``sections`` (TOML text), then ``devices`` (the [[devices]] tables)."""
    return (f'[node]\nid = "{node}"\n{node_extra}\n[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\n'
            f'base_topic = "{base}"\nembedded = "never"\nkeepalive = 5\n\n{sections}\n{devices}')


def replay_device(path: Path, *, name: str = "bed1", speed: float = 0.0, model: str = "ibi-slpdb-causal-v1") -> str:
    """One [[devices]] table replaying ``path``."""
    return (f'[[devices]]\nname = "{name}"\ntype = "replay"\nmodel = "{model}"\npath = "{path}"\n'
            f'speed = {speed}\n\n')


def start_daemon(cfg: Path, *args: str, env: dict | None = None, **popen: Any) -> subprocess.Popen:
    """`edged run --config cfg` as a real process; its log (stderr) is kept for the test to read."""
    return subprocess.Popen([sys.executable, "-m", "edged.cli", "run", "--config", str(cfg), *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}, **popen)


def expected_epochs(rr_path: Path) -> int:
    """Epochs the IBI pipeline closes over a whole recording: those whose every sample lies before the
    last beat (computed with the batch form, independently of the daemon)."""
    from edged.dsp.ibi import sample_and_hold
    from edged.sources.readers.physionet_rr import read_physionet_rr

    beats = read_physionet_rr(rr_path).rr["rr"].beat_times()
    n = int(beats[-1] * 25) + 50
    determined = np.count_nonzero(np.arange(n) / 25.0 < beats[-1])
    assert len(sample_and_hold(beats, determined)) == determined
    return determined // 750


@pytest.fixture
def daemon_toml(broker: EmbeddedBroker, topic_base: str) -> Callable[..., str]:
    """``daemon_toml(devices, models_dir=None)`` -> a config for `edged run` on this test's broker and topic
    base (node id ``e2e``), with ``devices`` (the [[devices]] tables, as TOML text) appended."""

    def make(devices: str, models_dir: object | None = None) -> str:
        models = f'[models]\ndirs = ["{models_dir}"]\n' if models_dir is not None else ""
        return daemon_config(broker, topic_base, devices, sections=models)

    return make
