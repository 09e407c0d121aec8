"""The MQTT sink: publishes scored epochs, availability and counters following ``edged.sinks.contract``.

Design, and why:

* **edged owns the queue, not paho.** paho keeps unacknowledged messages in memory only, drops the NEWEST
  when its queue is full and offers no way to inspect it. The sink therefore writes every stage message to
  its :class:`~edged.sinks.journal.Journal` (SQLite in the state directory, or memory) BEFORE sending it,
  keeps it there until the broker acknowledges it (PUBACK), and hands paho only a small window of messages
  at a time. A restarted edged re-sends what the journal still holds, first and in order. On every new
  connection paho's own copies are discarded and the window is rebuilt from the journal, so ordering is
  decided in one place. A message that
  was in flight when a connection dropped is sent again; duplicates are harmless because every stage
  message carries a stable ``id``.
* **The caller never touches the network.** ``publish_stage`` only appends to the outbox and wakes a small
  sender thread; the caller is an asyncio loop and must not wait on paho's locks or on a broker.
* **Three threads, three rules.** The caller, paho's network thread (callbacks) and the sender thread share
  state under ``_lock``, which is never held while calling into paho. ``_send_lock`` is held by the sender
  while it publishes and by the connect/disconnect callbacks while they reset the window, so a publish can
  never straddle a reconnect (which could reorder messages). ``on_publish`` runs with paho's message lock
  held and so takes ``_lock`` only: taking ``_send_lock`` there could deadlock against the sender.
* **No state that lies.** ``connected`` becomes true on a successful CONNACK only, and false as soon as paho
  reports the connection gone.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import ssl
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edged.errors import SinkError
from edged.scoring.epoch import ScoredEpoch
from edged.sinks import contract
from edged.sinks.journal import Journal, Outbox, OutboxEntry  # noqa: F401  (Outbox: the memory queue, re-exported)

log = logging.getLogger(__name__)

_QOS = 1
_OFFLINE = contract.OFFLINE.encode()


@dataclass(frozen=True, slots=True)
class MqttSettings:
    """How to reach the broker and how much to hold while it is away. Every field has a working default."""

    host: str = "127.0.0.1"
    port: int = 1883
    base_topic: str = contract.DEFAULT_BASE_TOPIC
    node_id: str = field(default_factory=contract.default_node_id)
    client_id: str = ""  # empty: "edged-{node_id}-{pid}", unique per process so two daemons never kick each other
    username: str | None = None
    password: str | None = field(default=None, repr=False)  # never in logs or reprs
    keepalive: int = 30  # seconds; the broker publishes the last will after ~1.5 x keepalive of silence
    protocol: Literal["3.1.1", "5"] = "3.1.1"
    # TLS ([mqtt] tls, ca_file, cert_file, key_file, tls_insecure); tested against a real mosquitto with
    # its own CA in tests/test_mqtt_tls.py. The broker's certificate is always verified.
    tls: bool = False
    tls_ca_certs: str | None = None
    tls_certfile: str | None = None
    tls_keyfile: str | None = None
    tls_insecure: bool = False  # skip host-name verification (self-signed test brokers only)
    max_outbox: int = 100_000  # stage messages held until acknowledged: ~69 device-nights of 30-s epochs
    max_inflight: int = 20  # stage messages handed to paho before their PUBACKs come back
    reconnect_min_delay: float = 1.0  # seconds; paho doubles the delay after each failed attempt ...
    reconnect_max_delay: float = 30.0  # ... up to this

    def __post_init__(self) -> None:
        problems: list[str] = []
        if not self.host:
            problems.append("host must not be empty")
        if not 1 <= self.port <= 65535:
            problems.append(f"port {self.port} is not between 1 and 65535")
        try:
            contract.check_base_topic(self.base_topic)
        except ValueError as exc:
            problems.append(f"base_topic: {exc}")
        try:
            contract.check_segment(self.node_id, "node_id")
        except ValueError as exc:
            problems.append(str(exc))
        if self.keepalive < 5:
            problems.append(f"keepalive {self.keepalive} must be at least 5 seconds")
        if self.max_outbox < 1:
            problems.append(f"max_outbox {self.max_outbox} must be at least 1")
        if self.max_inflight < 1:
            problems.append(f"max_inflight {self.max_inflight} must be at least 1")
        if not 0 < self.reconnect_min_delay <= self.reconnect_max_delay:
            problems.append("reconnect delays must satisfy 0 < reconnect_min_delay <= reconnect_max_delay")
        if self.password is not None and self.username is None:
            problems.append("password is set without username")
        if problems:
            raise ValueError("invalid MQTT settings: " + "; ".join(problems))

    @property
    def effective_client_id(self) -> str:
        return self.client_id or f"edged-{self.node_id}-{os.getpid()}"


# ----------------------------------------------------------------------------------------------- sink


@dataclass(slots=True)
class _Device:
    online: bool | None = None
    state: bytes | None = None
    counters: bytes | None = None
    summary: bytes | None = None


class MqttSink:
    """Publishes to one broker. ``start()`` once, ``publish_*`` from any thread, ``close()`` once (idempotent).

    ``publish_stage`` never blocks on the network: messages wait in the journal while the broker is away
    and go out in order when it is back. ``journal``: a durable :class:`Journal` (the sink closes it);
    without one, messages wait in memory (at most ``max_outbox``) and a restart loses what is unsent.
    """

    HEARTBEAT_EVERY = 1.0  # seconds: the sender thread turns at least this often, so its liveness shows

    def __init__(self, settings: MqttSettings | None = None, *, journal: Journal | None = None) -> None:
        self.settings = settings or MqttSettings()
        s = self.settings
        self.node = s.node_id
        self.base = s.base_topic
        self._status_topic = contract.status_topic(self.base, self.node)

        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._send_lock = threading.Lock()

        # Everything below is guarded by _lock.
        self._outbox = journal if journal is not None else Journal.memory(s.max_outbox)
        self._devices: dict[str, _Device] = {}
        self._restore(self._outbox.retained())
        # Retained messages waiting for the sender, latest value per topic, in the order they were set.
        self._control: OrderedDict[str, bytes] = OrderedDict()
        self._inflight: dict[int, int] = {}  # paho mid -> outbox seq
        self._control_inflight: set[int] = set()  # mids of retained messages not yet acknowledged
        self._early_acks: set[int] = set()  # PUBACKs that beat the sender to recording their mid
        self._cursor = 0  # highest outbox seq handed to paho on the current connection
        self._send_failed = False  # paho refused a publish on this connection: wait for the reconnect
        self._goodbye_mid: int | None = None  # mid of the status=offline sent by close()
        self._goodbye_acked = False
        self._saying_goodbye = False  # close() has flushed and now marks everything offline
        self._connected = False
        self._ever_connected = False
        self._started = False
        self._closing = False
        self._closed = False
        self._stop_sender = False
        self._last_connect_error: str | None = None
        self._n_published = 0
        self._n_sent = 0
        self._n_acked = 0
        self._n_rejected = 0
        self._n_reconnects = 0
        self._sender_beat = time.monotonic()  # the sender thread's last turn (see health())
        self._n_sender_restarts = 0

        self._client = self._make_client()
        self._sender = threading.Thread(target=self._sender_main, name=f"edged-mqtt-send-{self.node}", daemon=True)

    def _make_client(self) -> mqtt.Client:
        s = self.settings
        v5 = s.protocol == "5"
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=s.effective_client_id,
            protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
            # A clean session: the outbox is the durable part; a broker-side session would only add a
            # second, invisible queue of re-sends.
            clean_session=None if v5 else True,
        )
        if s.username is not None:
            client.username_pw_set(s.username, s.password)
        if s.tls:
            try:
                client.tls_set(
                    ca_certs=s.tls_ca_certs,
                    certfile=s.tls_certfile,
                    keyfile=s.tls_keyfile,
                    cert_reqs=ssl.CERT_REQUIRED,
                )
            except (OSError, ValueError, ssl.SSLError) as exc:
                raise SinkError(f"MQTT TLS settings are unusable: {exc}") from exc
            client.tls_insecure_set(s.tls_insecure)
        client.will_set(self._status_topic, contract.OFFLINE, qos=_QOS, retain=True)
        client.reconnect_delay_set(s.reconnect_min_delay, s.reconnect_max_delay)  # type: ignore[arg-type]
        # The outbox bounds and windows messages; paho's own limits would only reorder or drop silently.
        client.max_inflight_messages_set(0)
        client.max_queued_messages_set(0)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        return client

    # ------------------------------------------------------------------------------------- public API

    def start(self) -> None:
        """Begin connecting in the background; returns at once. The broker need not be up yet."""
        with self._lock:
            if self._closed or self._closing:
                raise SinkError("the MQTT sink is closed and cannot be started again")
            if self._started:
                return
            self._started = True
        s = self.settings
        log.info("MQTT: connecting to %s:%d as %s (topics under %s/%s)", s.host, s.port,
                 s.effective_client_id, self.base, self.node)
        self._sender.start()
        if s.protocol == "5":
            # Always a clean start (paho's default is clean on the first connect only): see _make_client.
            self._client.connect_async(s.host, s.port, keepalive=s.keepalive, clean_start=True)
        else:
            self._client.connect_async(s.host, s.port, keepalive=s.keepalive)
        self._client.loop_start()

    @property
    def connected(self) -> bool:
        """True between a successful CONNACK and the loss of that connection."""
        with self._lock:
            return self._connected

    @property
    def counters(self) -> dict[str, int]:
        """published: stage messages accepted; sent: messages of any kind handed to paho, re-sends
        included; acked: stage messages the broker acknowledged; pending: stage messages in the outbox;
        inflight: stage messages sent and not yet acknowledged on this connection; dropped: lost from the
        queue (evicted from a full memory outbox, or discarded by the journal's size cap); rejected: refused
        by an MQTT 5 broker; reconnects: successful connections after the first; journal_*: see
        :attr:`Journal.counters`."""
        with self._lock:
            return {**self._outbox.counters,
                "published": self._n_published,
                "sent": self._n_sent,
                "acked": self._n_acked,
                "pending": len(self._outbox),
                "inflight": len(self._inflight),
                "dropped": self._outbox.dropped,
                "rejected": self._n_rejected,
                "reconnects": self._n_reconnects,
                "sender_restarts": self._n_sender_restarts,
            }

    def publish_stage(self, epoch: ScoredEpoch) -> None:
        """Queue the stage message of one epoch and update the device's retained state.

        Raises ``ValueError`` for a device name that cannot be a topic level and ``SinkError`` after close.
        """
        contract.check_segment(epoch.device, "device name")
        payload = contract.stage_payload(epoch, self.node)
        data = contract.encode(payload)
        stage = contract.stage_topic(self.base, self.node, epoch.device)
        state = contract.state_topic(self.base, self.node, epoch.device)
        with self._lock:
            self._check_open()
            before = self._outbox.dropped
            # Journaled (with the retained state it implies) before anything can reach the network.
            self._outbox.put(stage, data, retain=((state, data),))
            self._n_published += 1
            total_dropped = self._outbox.dropped
            self._device(epoch.device).state = data
            self._set_control(state, data)
            self._wake.notify_all()
        if total_dropped != before and (total_dropped in (1, 10, 100) or total_dropped % 1000 == 0):
            # One line per drop would flood the log during a long outage: warn at 1, 10, 100, then every 1000.
            log.warning("MQTT queue full: dropped the oldest stage message, %d dropped so far", total_dropped)

    def set_availability(self, device: str, online: bool) -> None:
        """Publish the device's retained availability (``online`` / ``offline``) when it changes; re-sent
        on every reconnect. Setting the value it already has publishes nothing (several parts of the daemon
        may say "offline" for one device as it stops: the broker hears it once)."""
        contract.check_segment(device, "device name")
        topic = contract.availability_topic(self.base, self.node, device)
        payload = (contract.ONLINE if online else contract.OFFLINE).encode()
        with self._lock:
            self._check_open()
            dev = self._device(device)
            if dev.online is online:
                return
            dev.online = online
            self._outbox.remember(topic, payload)
            self._set_control(topic, payload)
            self._wake.notify_all()

    def publish_counters(self, device: str, counters: Mapping[str, Any]) -> None:
        """Publish the device's counters (a plain dict from the caller) as retained JSON with a timestamp."""
        contract.check_segment(device, "device name")
        data = contract.encode(contract.counters_payload(self.node, device, counters))
        with self._lock:
            self._check_open()
            self._device(device).counters = data
            self._set_control(contract.counters_topic(self.base, self.node, device), data)
            self._wake.notify_all()

    def publish_summary(self, device: str, summary: Mapping[str, Any]) -> None:
        """Publish a device's night summary (:func:`edged.sinks.night.summarize_epochs`), retained."""
        contract.check_segment(device, "device name")
        data = contract.encode(contract.summary_payload(self.node, summary))
        with self._lock:
            self._check_open()
            self._device(device).summary = data
            self._set_control(contract.summary_topic(self.base, self.node, device), data)
            self._wake.notify_all()

    def close(self, timeout: float = 5.0) -> None:
        """Flush (bounded), mark devices and this node offline, disconnect. Idempotent.

        Waits up to ``timeout`` seconds in all: first for pending stage messages to be acknowledged, then
        for the offline messages. It does not wait for a broker known to be unreachable (the last attempt
        to connect failed), but does wait for a connection still being set up. What is still
        unacknowledged afterwards is lost and logged.
        """
        with self._lock:
            if self._closed or self._closing:
                return
            self._closing = True
            started = self._started
        deadline = time.monotonic() + max(0.0, timeout)
        try:
            if started:
                self._flush_and_say_goodbye(deadline)
        finally:
            self._shutdown(started)

    def __enter__(self) -> MqttSink:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --------------------------------------------------------------------------------------- closing

    def _flush_and_say_goodbye(self, deadline: float) -> None:
        with self._lock:
            while self._may_deliver() and len(self._outbox) and (left := deadline - time.monotonic()) > 0:
                self._wake.wait(left)
            for name, dev in self._devices.items():
                if dev.online:  # those already offline said so once; the broker keeps it retained
                    dev.online = False
                    self._outbox.remember(contract.availability_topic(self.base, self.node, name),
                                          contract.OFFLINE.encode())
                    self._set_control(contract.availability_topic(self.base, self.node, name),
                                      contract.OFFLINE.encode())
            # Last, so that a consumer seeing the node go offline has already seen its devices do so.
            self._saying_goodbye = True
            self._set_control(self._status_topic, _OFFLINE)
            self._wake.notify_all()
            # PUBACKs come back in order, so the acknowledged goodbye implies the devices' offline too.
            while self._may_deliver() and not self._goodbye_acked and (left := deadline - time.monotonic()) > 0:
                self._wake.wait(left)
            pending = len(self._outbox)
            said_offline = self._goodbye_acked
        if pending and self._outbox.durable:
            log.warning("MQTT: closing with %d stage message(s) not acknowledged by the broker; they stay in the "
                        "journal and are sent after the next start", pending)
        elif pending:
            log.warning("MQTT: closing with %d stage message(s) not acknowledged by the broker; they are lost "
                        "(no journal)", pending)
        if not said_offline:
            log.warning("MQTT: the offline status was not acknowledged before closing; if it never reached "
                        "the broker, the broker's last will marks this node offline instead")

    def _shutdown(self, started: bool) -> None:
        with self._lock:
            self._stop_sender = True
            self._wake.notify_all()
        if started:
            self._sender.join(timeout=5.0)
            with self._send_lock:
                # A DISCONNECT tells the broker NOT to publish the will, so whatever offline message the
                # sender had no time to hand over goes out now, ahead of it on the same ordered stream.
                with self._lock:
                    leftovers = list(self._control.items()) if self._connected else []
                    self._control.clear()
                for topic, payload in leftovers:
                    self._client.publish(topic, payload, qos=_QOS, retain=True)
                self._client.disconnect()
            # paho's loop_stop() joins without a timeout and its thread only ends once the DISCONNECT is
            # written; a broker that stopped reading would keep it (and close()) waiting until keepalive
            # runs out. Give it a second, then cut the socket.
            with self._lock:
                end = time.monotonic() + 1.0
                while self._connected and (left := end - time.monotonic()) > 0:
                    self._wake.wait(left)
                stuck = self._connected
            if stuck:
                log.warning("MQTT: the broker did not take the DISCONNECT within 1 s; closing the socket")
                sock = self._client.socket()
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)
            self._client.loop_stop()
        with self._lock:
            self._connected = False
            self._closed = True
            self._outbox.close()
            self._wake.notify_all()
        log.info("MQTT sink closed (%s)", self.counters)

    # ----------------------------------------------------------------------------------- supervision

    def health(self, stall_seconds: float = 10.0) -> str | None:
        """None while the sender thread is alive and turning; otherwise what is wrong (for the daemon's
        supervisor, which then calls :meth:`restart_sender` and withholds systemd's watchdog)."""
        with self._lock:
            if not self._started or self._closing or self._closed:
                return None
            beat = self._sender_beat
        if not self._sender.is_alive():
            return "the MQTT sender thread has died"
        if time.monotonic() - beat > stall_seconds:
            return f"the MQTT sender thread has not turned for {time.monotonic() - beat:.0f} s"
        return None

    def restart_sender(self) -> bool:
        """Start a new sender thread if the current one has died (a stalled one cannot be killed: the
        daemon's watchdog then lets systemd restart the whole process). True if one was started."""
        with self._lock:
            if not self._started or self._closing or self._closed or self._sender.is_alive():
                return False
            self._n_sender_restarts += 1
            self._sender_beat = time.monotonic()
            self._sender = threading.Thread(target=self._sender_main, name=f"edged-mqtt-send-{self.node}",
                                            daemon=True)
        self._sender.start()
        log.warning("MQTT: sender thread restarted")
        return True

    # ------------------------------------------------------------------------------ helpers (under _lock)

    def _restore(self, retained: dict[str, bytes]) -> None:
        """Take over the retained state a previous run journaled: each device's latest ``state`` (so a
        broker that lost it gets it back) and, as ``offline``, every device it knew (whatever was online
        then is not any more; this run says ``online`` again when the device delivers)."""
        prefix = f"{self.base}/{self.node}/"
        for topic, payload in retained.items():
            if not topic.startswith(prefix) or topic.count("/") != prefix.count("/") + 1:
                continue
            device, _, kind = topic[len(prefix):].partition("/")
            if kind == "state":
                self._device(device).state = payload
            elif kind == "availability":
                self._device(device).online = False

    def _may_deliver(self) -> bool:
        # Connected, or connecting without a failure yet (e.g. close() right after start()).
        return self._connected or self._last_connect_error is None

    def _check_open(self) -> None:
        if self._closing or self._closed:
            raise SinkError("the MQTT sink is closed")

    def _device(self, name: str) -> _Device:
        dev = self._devices.get(name)
        if dev is None:
            dev = self._devices[name] = _Device()
        return dev

    def _set_control(self, topic: str, payload: bytes) -> None:
        # Latest value wins, and moves to the back so retained messages go out in the order they were set.
        self._control.pop(topic, None)
        self._control[topic] = payload

    def _rebuild_control(self) -> None:
        """Every retained message edged owns, for a fresh connection: the broker may have restarted and
        forgotten them (the embedded one keeps nothing), so they are all published again."""
        self._control.clear()
        # Still online while close() flushes: the node is alive and delivering its backlog. While saying
        # goodbye, the node's offline goes last, after its devices', as in close().
        if not self._saying_goodbye:
            self._control[self._status_topic] = contract.ONLINE.encode()
        for name, dev in self._devices.items():
            if dev.online is not None:
                self._control[contract.availability_topic(self.base, self.node, name)] = (
                    contract.ONLINE if dev.online else contract.OFFLINE).encode()
            if dev.state is not None:
                self._control[contract.state_topic(self.base, self.node, name)] = dev.state
            if dev.counters is not None:
                self._control[contract.counters_topic(self.base, self.node, name)] = dev.counters
            if dev.summary is not None:
                self._control[contract.summary_topic(self.base, self.node, name)] = dev.summary
        if self._saying_goodbye:
            self._control[self._status_topic] = _OFFLINE

    def _reset_connection_state(self) -> None:
        # In-flight belongs to a connection: after it, everything unacknowledged is sent again from the
        # oldest, and acknowledgements that were never matched can no longer be.
        self._inflight.clear()
        self._control_inflight.clear()
        self._early_acks.clear()
        self._cursor = 0
        self._send_failed = False
        self._goodbye_mid = None

    def _has_work(self) -> bool:
        if not self._connected or self._send_failed:
            return False
        if self._control:
            return True
        return len(self._inflight) < self.settings.max_inflight and bool(
            self._outbox.peek(self._cursor, 1))

    # ---------------------------------------------------------------------------------- sender thread

    def _sender_main(self) -> None:
        try:
            while True:
                with self._lock:
                    self._sender_beat = time.monotonic()
                    while not self._stop_sender and not self._has_work():
                        # A timed wait, so that an idle sender still shows it is alive (see health()).
                        self._wake.wait(self.HEARTBEAT_EVERY)
                        self._sender_beat = time.monotonic()
                    if self._stop_sender:
                        return
                with self._send_lock:
                    self._send_batch()
        except Exception:
            # A dead sender would silently stop all publishing: make it loud.
            log.exception("MQTT sender thread crashed; no further messages will be published")
            raise

    def _send_batch(self) -> None:
        """Hand paho the pending retained messages and a window of stage messages. Holds ``_send_lock``."""
        with self._lock:
            if not self._connected:
                return
            control = list(self._control.items())
            self._control.clear()
            room = self.settings.max_inflight - len(self._inflight)
            entries = self._outbox.peek(self._cursor, room)
            if entries:
                self._cursor = entries[-1].seq
        for topic, payload in control:
            if not self._send(topic, payload, retain=True, seq=None):
                return
        for entry in entries:
            if not self._send(entry.topic, entry.payload, retain=False, seq=entry.seq):
                return

    def _send(self, topic: str, payload: bytes, *, retain: bool, seq: int | None) -> bool:
        info = self._client.publish(topic, payload, qos=_QOS, retain=retain)
        with self._lock:
            self._n_sent += 1
            mid = info.mid
            if mid in self._early_acks:
                # The PUBACK arrived between publish() returning and this line.
                self._early_acks.discard(mid)
                if seq is not None:
                    self._ack_stage(seq)
                elif topic == self._status_topic and payload == _OFFLINE:
                    self._goodbye_acked = True
                    self._wake.notify_all()
            elif seq is not None:
                self._inflight[mid] = seq
            else:
                self._control_inflight.add(mid)
                if topic == self._status_topic and payload == _OFFLINE:
                    self._goodbye_mid = mid
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            # Normally NO_CONN: the socket is already gone and on_disconnect (waiting for _send_lock) will
            # reset the window; the next connection re-sends from the outbox and paho's copy is discarded
            # on connect. Stop sending until then instead of spinning against a dead socket.
            with self._lock:
                self._send_failed = True
            level = logging.DEBUG if info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN else logging.WARNING
            log.log(level, "MQTT publish to %s returned %s; re-sending after the next connect", topic, info.rc)
            return False
        return True

    def _ack_stage(self, seq: int) -> None:
        if self._outbox.ack(seq):
            self._n_acked += 1
        self._wake.notify_all()

    # ------------------------------------------------------------------------- paho callbacks (network)

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            # paho retries with backoff; refused credentials will not fix themselves, so say it loudly.
            self._note_connect_error(f"broker refused the connection: {reason_code}", logging.ERROR)
            return
        with self._send_lock:
            # paho would re-send its own unacknowledged copies right after this callback, ahead of
            # anything older still in the outbox; drop them so the outbox alone decides the order.
            dropped = client.drop_out_messages()
            with self._lock:
                self._reset_connection_state()
                self._rebuild_control()
                self._connected = True
                if self._ever_connected:
                    self._n_reconnects += 1
                self._ever_connected = True
                self._last_connect_error = None
                pending = len(self._outbox)
                self._wake.notify_all()
        s = self.settings
        log.info("MQTT: connected to %s:%d (%d stage message(s) pending, %d paho copies discarded)",
                 s.host, s.port, pending, len(dropped))

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        s = self.settings
        # paho calls this inside its `except OSError:`; the exception says what failed (a refused TCP
        # connection, or a TLS handshake: "connection refused" for a bad certificate would mislead).
        exc = sys.exc_info()[1]
        if isinstance(exc, ssl.SSLCertVerificationError):
            self._note_connect_error(f"TLS: the certificate of {s.host}:{s.port} was not accepted: "
                                     f"{exc.verify_message} (check mqtt.ca_file and the broker's certificate)",
                                     logging.ERROR)
        elif isinstance(exc, ssl.SSLError):
            self._note_connect_error(f"TLS handshake with {s.host}:{s.port} failed: {exc.reason or exc}", logging.ERROR)
        elif isinstance(exc, OSError) and exc.strerror:
            self._note_connect_error(f"cannot reach {s.host}:{s.port}: {exc.strerror}")
        else:
            self._note_connect_error(f"cannot reach {s.host}:{s.port}")

    def _note_connect_error(self, message: str, level: int = logging.WARNING) -> None:
        """Log a failed connection attempt once per distinct problem. ``level``: ERROR for what retrying
        alone will not fix (refused credentials, an untrusted certificate), WARNING for an unreachable broker."""
        with self._lock:
            repeated = message == self._last_connect_error
            self._last_connect_error = message
            pending = len(self._outbox)
            self._wake.notify_all()  # close() stops waiting for a broker that turned out to be unreachable
        # Warn when the problem appears or changes, not on every retry of a long outage.
        log.log(logging.DEBUG if repeated else level,
                "MQTT: %s; retrying, %d stage message(s) kept in the outbox", message, pending)

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        with self._send_lock:
            with self._lock:
                was_connected = self._connected
                self._connected = False
                self._reset_connection_state()
                closing = self._closing
                pending = len(self._outbox)
                self._wake.notify_all()
        if was_connected and not closing:
            log.warning("MQTT: connection to %s:%d lost (%s); %d stage message(s) wait in the outbox",
                        self.settings.host, self.settings.port, reason_code, pending)

    def _on_publish(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        # Runs with paho's message lock held: take _lock only (see the module docstring).
        rejected = False
        with self._lock:
            seq = self._inflight.pop(mid, None)
            if seq is not None:
                if reason_code.is_failure:
                    # An MQTT 5 broker refused it (ACL, quota): re-sending would loop forever.
                    rejected = True
                    self._n_rejected += 1
                    self._outbox.ack(seq)
                    self._wake.notify_all()
                else:
                    self._ack_stage(seq)
            elif mid in self._control_inflight:
                self._control_inflight.discard(mid)
                if mid == self._goodbye_mid:
                    self._goodbye_acked = True
                self._wake.notify_all()
            else:
                self._early_acks.add(mid)
        if rejected:
            log.error("MQTT: broker rejected a stage message (%s); it is dropped", reason_code)
