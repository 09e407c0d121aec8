"""Home Assistant MQTT discovery: every monitored device appears in Home Assistant with its entities, no YAML.

Device-based discovery (Home Assistant 2024.11+): one retained JSON config per device on
``{prefix}/device/edged_{node}/{device}/config`` carrying the device block, the origin and all its
components, plus one for the node itself (the "bridge") on ``{prefix}/device/edged_{node}/config``.
The entities read edged's own contract topics (``docs/mqtt.md``): nothing is published twice, and the
value templates pick fields out of the retained ``state`` message.

Rules kept, and why:

* **Configs are retained** (QoS 1), so a Home Assistant that starts later finds them; they are also
  published on every connection (a broker restarted without persistence forgets them) and again whenever
  Home Assistant announces itself ``online`` on its status topic (its birth message, not retained by
  default), as Home Assistant's documentation asks.
* **Availability is the node's last will AND the device's own availability** (``availability_mode: all``):
  a device is only available when edged runs and the device delivers data. The connectivity entity is the
  exception: it *shows* the device's availability, so it depends on the node's status alone; bound to both
  it would turn ``unavailable`` exactly when it should say ``disconnected``.
* **Stable ids.** ``unique_id`` is ``edged:{node}:{device}:{entity}``; ``:`` cannot occur in node or device
  names, so two (node, device) pairs can never produce the same id. The discovery topic keeps node and
  device on separate levels for the same reason.
* **Removal.** Configs this node published for a device that is no longer configured are cleared with an
  empty retained payload: at start-up the sink subscribes to its own discovery subtree, and every retained
  config found there whose device is not configured any more is deleted. A configured device whose
  retained config still lists components edged no longer publishes (a different model) first gets the
  "tombstone" Home Assistant requires (the removed components with their platform only), then its new
  config.

The sink has its own MQTT connection: discovery is a low-rate control plane, and keeping it apart leaves
the stage publisher (``edged.sinks.mqtt``) free of subscriptions. It publishes nothing per epoch.
"""

from __future__ import annotations

import json
import logging
import os
import ssl
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from edged import __version__
from edged.errors import SinkError
from edged.scoring.epoch import ScoredEpoch
from edged.sinks import contract
from edged.sinks.mqtt import MqttSettings

log = logging.getLogger(__name__)

DEFAULT_PREFIX: Final = "homeassistant"
DEFAULT_STATUS_TOPIC: Final = "homeassistant/status"  # Home Assistant's birth and last-will topic
MANUFACTURER: Final = "edged"
_QOS: Final = 1


@dataclass(frozen=True, slots=True)
class DiscoveredDevice:
    """What Home Assistant is told about one configured device."""

    name: str
    model_id: str
    classes: tuple[str, ...]  # the model's classes: the stage entity's enum options
    synthetic: bool
    heart: bool  # the model is fed inter-beat intervals, so stage messages carry hr_bpm

    @classmethod
    def from_manifest(cls, name: str, manifest: Any) -> DiscoveredDevice:
        return cls(name=name, model_id=manifest.id, classes=tuple(manifest.classes),
                   synthetic=bool(manifest.synthetic), heart=any(i.signal == "ibi" for i in manifest.inputs))


# ---------------------------------------------------------------------------------------- payloads


def node_object_id(node: str) -> str:
    return f"edged_{node}"


def bridge_config_topic(prefix: str, node: str) -> str:
    return f"{prefix}/device/{node_object_id(node)}/config"


def device_config_topic(prefix: str, node: str, device: str) -> str:
    return f"{prefix}/device/{node_object_id(node)}/{device}/config"


def bridge_identifier(node: str) -> str:
    return f"edged:{node}"


def device_identifier(node: str, device: str) -> str:
    return f"edged:{node}:{device}"


def unique_id(node: str, device: str, entity: str) -> str:
    return f"edged:{node}:{device}:{entity}"


def origin() -> dict[str, str]:
    return {"name": "edged", "sw_version": __version__}


def bridge_config(base: str, node: str) -> dict[str, Any]:
    """The node as a device of its own: what the monitored devices are connected through (``via_device``)."""
    return {
        "device": {
            "identifiers": [bridge_identifier(node)],
            "name": f"edged {node}",
            "manufacturer": MANUFACTURER,
            "model": "edged node",
            "sw_version": __version__,
        },
        "origin": origin(),
        "components": {
            "status": {
                "platform": "binary_sensor",
                "unique_id": f"edged:{node}:status",
                "name": "Status",
                "device_class": "connectivity",
                "entity_category": "diagnostic",
                # The node's own last will: it must stay readable while the node is offline, so no
                # availability of its own.
                "state_topic": contract.status_topic(base, node),
                "payload_on": contract.ONLINE,
                "payload_off": contract.OFFLINE,
            },
        },
        "qos": _QOS,
    }


# Value templates on the retained ``state`` message (Home Assistant templates are Jinja2). A field that
# the message may lack renders ``none``, which Home Assistant shows as "unknown" rather than a wrong 0.
_HR = "{{ value_json.hr_bpm if value_json.hr_bpm is defined else none }}"
# The stage message's hr_bpm is 60 / (mean valid inter-beat interval), so this is that mean interval.
_IBI = ("{{ (60000 / value_json.hr_bpm) | round(0) "
        "if value_json.hr_bpm is defined and value_json.hr_bpm > 0 else none }}")
_STAGE_ATTRIBUTES = ("{{ {'probabilities': value_json.probabilities, 'epoch': value_json.epoch, "
                     "'epoch_start': value_json.start, 'session': value_json.session, "
                     "'model': value_json.model.id, 'synthetic': value_json.model.synthetic, "
                     "'quality_ok': value_json.quality.ok} | tojson }}")


def device_config(base: str, node: str, device: DiscoveredDevice) -> dict[str, Any]:
    """The device-based discovery config of one monitored device."""
    state = contract.state_topic(base, node, device.name)
    availability = contract.availability_topic(base, node, device.name)
    both = {
        "availability": [{"topic": contract.status_topic(base, node)}, {"topic": availability}],
        "availability_mode": "all",
    }

    def entity(key: str, platform: str, name: str, **options: Any) -> tuple[str, dict[str, Any]]:
        return key, {"platform": platform, "unique_id": unique_id(node, device.name, key), "name": name,
                     **both, **options}

    stage_name = "Sleep stage (SYNTHETIC model, not a measurement)" if device.synthetic else "Sleep stage"
    components = dict([
        entity("stage", "sensor", stage_name, device_class="enum", options=list(device.classes),
               icon="mdi:sleep", state_topic=state, value_template="{{ value_json.stage }}",
               json_attributes_topic=state, json_attributes_template=_STAGE_ATTRIBUTES),
        entity("confidence", "sensor", "Stage confidence", unit_of_measurement="%", state_class="measurement",
               suggested_display_precision=0, icon="mdi:gauge", state_topic=state,
               value_template="{{ (value_json.probabilities[value_json.stage] * 100) | round(1) }}"),
        entity("quality", "sensor", "Signal quality", unit_of_measurement="%", state_class="measurement",
               suggested_display_precision=0, icon="mdi:signal", entity_category="diagnostic",
               state_topic=state, value_template="{{ (value_json.quality.score * 100) | round(1) }}"),
    ])
    if device.heart:
        components.update([
            entity("heart_rate", "sensor", "Heart rate", unit_of_measurement="bpm", state_class="measurement",
                   suggested_display_precision=0, icon="mdi:heart-pulse", state_topic=state,
                   value_template=_HR),
            entity("ibi", "sensor", "Mean inter-beat interval", device_class="duration",
                   unit_of_measurement="ms", state_class="measurement", suggested_display_precision=0,
                   icon="mdi:heart-flash", state_topic=state, value_template=_IBI),
        ])
    key, connectivity = entity("connectivity", "binary_sensor", "Connected", device_class="connectivity",
                               entity_category="diagnostic", state_topic=availability,
                               payload_on=contract.ONLINE, payload_off=contract.OFFLINE)
    connectivity["availability"] = [{"topic": contract.status_topic(base, node)}]
    del connectivity["availability_mode"]
    components[key] = connectivity
    return {
        "device": {
            "identifiers": [device_identifier(node, device.name)],
            "name": device.name,
            "manufacturer": MANUFACTURER,
            "model": device.model_id,
            "sw_version": __version__,
            "via_device": bridge_identifier(node),
        },
        "origin": origin(),
        "components": components,
        "qos": _QOS,
    }


def tombstone(config: Mapping[str, Any], removed: Mapping[str, str]) -> dict[str, Any]:
    """``config`` plus each removed component reduced to its platform: how Home Assistant learns that a
    component of a device-based config is gone (omitting it is not enough)."""
    out = dict(config)
    out["components"] = {**config["components"], **{k: {"platform": p} for k, p in removed.items()}}
    return out


def _encode(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


# -------------------------------------------------------------------------------------------- sink


class HomeAssistantDiscovery:
    """Publishes discovery configs and keeps them right; a :class:`edged.sinks.base.Sink` for its lifecycle
    (the per-epoch calls do nothing: Home Assistant reads edged's own topics)."""

    def __init__(
        self,
        settings: MqttSettings,
        devices: Iterable[DiscoveredDevice],
        *,
        prefix: str = DEFAULT_PREFIX,
        status_topic: str = DEFAULT_STATUS_TOPIC,
    ) -> None:
        self.settings = settings
        self.prefix = contract.check_base_topic(prefix)
        self.status_topic = status_topic
        self.node = settings.node_id
        base = settings.base_topic
        self.devices = {d.name: d for d in devices}
        self._configs: dict[str, bytes] = {bridge_config_topic(self.prefix, self.node): _encode(bridge_config(base, self.node))}
        self._components: dict[str, dict[str, str]] = {}  # device -> component key -> platform
        for d in self.devices.values():
            config = device_config(base, self.node, d)
            self._configs[device_config_topic(self.prefix, self.node, d.name)] = _encode(config)
            self._components[d.name] = {k: c["platform"] for k, c in config["components"].items()}
        self._own_configs = f"{self.prefix}/device/{node_object_id(self.node)}/+/config"
        self._lock = threading.Lock()
        self._started = False
        self._closed = False
        self._client = self._make_client()

    # The connection settings are the MQTT sink's; only the client id differs (a second, separate client).
    def _make_client(self) -> mqtt.Client:
        s = self.settings
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"{s.effective_client_id}-ha" if s.client_id else f"edged-{self.node}-ha-{os.getpid()}",
            protocol=MQTTProtocolVersion.MQTTv5 if s.protocol == "5" else MQTTProtocolVersion.MQTTv311,
        )
        if s.username is not None:
            client.username_pw_set(s.username, s.password)
        if s.tls:
            try:
                client.tls_set(ca_certs=s.tls_ca_certs, certfile=s.tls_certfile, keyfile=s.tls_keyfile,
                               cert_reqs=ssl.CERT_REQUIRED)
            except (OSError, ValueError, ssl.SSLError) as exc:
                raise SinkError(f"MQTT TLS settings are unusable: {exc}") from exc
            client.tls_insecure_set(s.tls_insecure)
        client.reconnect_delay_set(s.reconnect_min_delay, s.reconnect_max_delay)  # type: ignore[arg-type]
        client.on_connect = self._on_connect
        client.on_message = self._on_message
        return client

    def start(self) -> None:
        with self._lock:
            if self._started or self._closed:
                return
            self._started = True
        s = self.settings
        log.info("Home Assistant discovery: %d device(s) under %s/device/%s", len(self.devices), self.prefix,
                 node_object_id(self.node))
        self._client.connect_async(s.host, s.port, keepalive=s.keepalive)
        self._client.loop_start()

    # Sink protocol: Home Assistant reads the contract topics the MQTT sink publishes.
    def publish_stage(self, epoch: ScoredEpoch) -> None:
        pass

    def set_availability(self, device: str, online: bool) -> None:
        pass

    def publish_counters(self, device: str, counters: dict[str, int | float]) -> None:
        pass

    def close(self, timeout: float = 5.0) -> None:
        """Disconnect, leaving the retained configs: the availability topics tell Home Assistant the rest."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            started = self._started
        if started:
            self._client.disconnect()
            self._client.loop_stop()

    # ----------------------------------------------------------------------------- paho callbacks

    def _announce(self, client: mqtt.Client, why: str) -> None:
        for topic, payload in self._configs.items():
            client.publish(topic, payload, qos=_QOS, retain=True)
        log.info("Home Assistant discovery: published %d config(s) (%s)", len(self._configs), why)

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            log.warning("Home Assistant discovery: broker refused the connection: %s", reason_code)
            return
        # Our own subtree first: retained configs of devices no longer configured come back and are cleared.
        client.subscribe([(self._own_configs, _QOS), (self.status_topic, _QOS)])
        self._announce(client, "connected")

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic == self.status_topic:
            if bytes(msg.payload) == contract.ONLINE.encode():
                self._announce(client, f"Home Assistant announced itself on {self.status_topic}")
            return
        if msg.retain:
            # Only what the broker kept from before: the live echo of our own publications (retain flag
            # cleared on delivery to an existing subscription) must not trigger another round.
            self._check_retained_config(client, msg.topic, bytes(msg.payload))

    def _check_retained_config(self, client: mqtt.Client, topic: str, payload: bytes) -> None:
        if not payload:
            return  # already removed (possibly by us)
        device = topic.split("/")[-2]
        if device not in self.devices:
            log.info("Home Assistant discovery: device %r is no longer configured: removing its config %s",
                     device, topic)
            client.publish(topic, b"", qos=_QOS, retain=True)
            return
        try:
            previous = json.loads(payload)
            components = previous.get("components") or previous.get("cmps") or {}
            published = {k: (c.get("platform") or c.get("p")) for k, c in components.items() if isinstance(c, dict)}
        except (ValueError, AttributeError):
            return  # not a config this code wrote; the fresh one published on connect replaces it
        current = self._components[device]
        removed = {k: p for k, p in published.items() if k not in current and isinstance(p, str)}
        if removed:
            config = json.loads(self._configs[topic])
            log.info("Home Assistant discovery: %s no longer has %s: removing them", device, ", ".join(sorted(removed)))
            client.publish(topic, _encode(tombstone(config, removed)), qos=_QOS, retain=True)
            client.publish(topic, self._configs[topic], qos=_QOS, retain=True)
