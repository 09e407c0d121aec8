"""The MQTT contract, in code: topics, payloads and the JSON Schema of a stage message.

Everything a consumer (Home Assistant, Node-RED, Grafana, a script) may rely on is defined here and written
down for people in ``docs/mqtt.md``. The two must agree; ``tests/test_mqtt_sink.py`` checks the schema file.

Versioning: ``CONTRACT_VERSION`` is carried in every JSON payload as ``v``. Adding a field keeps ``v``
(consumers must ignore fields they do not know); renaming or removing a field, or changing its type or
unit, bumps it.

Topic layout (``base`` defaults to ``edged``, ``node`` to the host name)::

    {base}/{node}/status                  retained  online | offline   (offline is the last will)
    {base}/{node}/{device}/availability   retained  online | offline
    {base}/{node}/{device}/stage          QoS 1, not retained, one JSON message per scored epoch
    {base}/{node}/{device}/state          QoS 1, retained, the latest stage message
    {base}/{node}/{device}/counters       retained JSON: device counters with a timestamp
    {base}/{node}/{device}/summary        QoS 1, retained JSON: the last night summary (edged.sinks.night)
"""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from edged.scoring.epoch import ScoredEpoch

CONTRACT_VERSION: Final = 1

DEFAULT_BASE_TOPIC: Final = "edged"

ONLINE: Final = "online"
OFFLINE: Final = "offline"

SYNTHETIC_WARNING: Final = "model trained on synthetic signals; not a sleep measurement"

# Probabilities and quality are rounded so that payloads stay short and stable across platforms; four
# decimals are far below any meaningful difference between two model outputs.
_DECIMALS: Final = 4

# Characters that would change the meaning of a topic (level separator, wildcards) or that brokers reject.
_FORBIDDEN_IN_SEGMENT = re.compile(r"[/+#\x00]")
_UNSAFE_FOR_NODE = re.compile(r"[^A-Za-z0-9_.-]")

ISO_UTC_PATTERN: Final = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$"


# --------------------------------------------------------------------------------------------- topics


def check_segment(value: str, what: str) -> str:
    """Return ``value`` if it can be one topic level; raise ``ValueError`` naming ``what`` otherwise.

    A node or device name containing ``/`` would silently move its messages to another topic level and a
    wildcard would make the topic unpublishable, so both are refused rather than escaped.
    """
    if not value:
        raise ValueError(f"{what} must not be empty")
    if _FORBIDDEN_IN_SEGMENT.search(value):
        raise ValueError(f"{what} {value!r} must not contain '/', '+', '#' or NUL")
    if value != value.strip():
        raise ValueError(f"{what} {value!r} must not start or end with whitespace")
    return value


def check_base_topic(base: str) -> str:
    """Return ``base`` if it is a usable topic prefix (one or more levels, no wildcards)."""
    if not base or base.startswith("/") or base.endswith("/"):
        raise ValueError(f"base topic {base!r} must be non-empty and must not start or end with '/'")
    for level in base.split("/"):
        check_segment(level, "base topic level")
    return base


def default_node_id() -> str:
    """The host name, reduced to characters every consumer accepts in a topic level and an entity id."""
    name = socket.gethostname().split(".")[0] or "edged"
    return _UNSAFE_FOR_NODE.sub("_", name)


def status_topic(base: str, node: str) -> str:
    return f"{base}/{node}/status"


def availability_topic(base: str, node: str, device: str) -> str:
    return f"{base}/{node}/{device}/availability"


def stage_topic(base: str, node: str, device: str) -> str:
    return f"{base}/{node}/{device}/stage"


def state_topic(base: str, node: str, device: str) -> str:
    return f"{base}/{node}/{device}/state"


def counters_topic(base: str, node: str, device: str) -> str:
    return f"{base}/{node}/{device}/counters"


def summary_topic(base: str, node: str, device: str) -> str:
    return f"{base}/{node}/{device}/summary"


# -------------------------------------------------------------------------------------------- payloads


def iso_utc(ts: float) -> str:
    """POSIX seconds -> ``2024-05-01T22:13:07.250Z`` (UTC, milliseconds, ``Z`` suffix)."""
    return datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def message_id(node: str, device: str, session: str, index: int) -> str:
    """The stable id of a stage message: the same epoch always gets the same id, so re-sends can be dropped."""
    return f"{node}/{device}/{session}/{index}"


def stage_payload(epoch: ScoredEpoch, node: str, *, now: float | None = None) -> dict[str, Any]:
    """The stage message for one scored epoch, as a JSON-ready dict.

    ``now`` is ``time.monotonic()`` at hand-over (defaults to the current value); ``latency_ms`` is measured
    from ``epoch.received`` to it, so it covers DSP and scoring but not time spent waiting for the broker.
    """
    if now is None:
        now = time.monotonic()
    payload: dict[str, Any] = {
        "v": CONTRACT_VERSION,
        "id": message_id(node, epoch.device, epoch.session, epoch.index),
        "node": node,
        "device": epoch.device,
        "session": epoch.session,
        "epoch": epoch.index,
        "start": iso_utc(epoch.start),
        "end": iso_utc(epoch.end),
        "start_ts": round(epoch.start, 3),
        "end_ts": round(epoch.end, 3),
        "stage": epoch.stage,
        "probabilities": {str(k): round(float(p), _DECIMALS) for k, p in epoch.probabilities.items()},
        "model": {"id": epoch.model_id, "synthetic": bool(epoch.synthetic)},
        "quality": {"score": round(float(epoch.quality), _DECIMALS), "ok": bool(epoch.quality_ok)},
        "latency_ms": round((now - epoch.received) * 1000.0, 1),
    }
    if epoch.hr_bpm is not None:
        payload["hr_bpm"] = round(float(epoch.hr_bpm), 1)
    if epoch.synthetic:
        payload["warning"] = SYNTHETIC_WARNING
    return payload


def counters_payload(node: str, device: str, counters: Mapping[str, Any], *, ts: float | None = None) -> dict[str, Any]:
    """The retained counters message: the caller's counters, nested so they can never clash with ``v``/``ts``."""
    if ts is None:
        ts = time.time()
    return {
        "v": CONTRACT_VERSION,
        "node": node,
        "device": device,
        "time": iso_utc(ts),
        "ts": round(ts, 3),
        "counters": dict(counters),
    }


def summary_payload(node: str, summary: Mapping[str, Any], *, ts: float | None = None) -> dict[str, Any]:
    """The retained night-summary message: the summary's fields (see :mod:`edged.sinks.night`) with the
    contract version, the node and when it was made; a synthetic model's summary carries the warning."""
    if ts is None:
        ts = time.time()
    payload = {"v": CONTRACT_VERSION, "node": node, **summary, "time": iso_utc(ts), "ts": round(ts, 3)}
    for key in ("start", "end"):
        if isinstance(payload.get(key), (int, float)):
            payload[f"{key}_ts"] = round(float(payload[key]), 3)
            payload[key] = iso_utc(float(payload[key]))
    if summary.get("synthetic"):
        payload["warning"] = SYNTHETIC_WARNING
    return payload


def encode(payload: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON. NaN and infinity are refused: they are not JSON and break most consumers."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


# ---------------------------------------------------------------------------------------------- schema

_ISO = {"type": "string", "pattern": ISO_UTC_PATTERN, "description": "ISO 8601, UTC, milliseconds"}

STAGE_SCHEMA: Final[dict[str, Any]] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "urn:edged:mqtt:stage:v1",
    "title": "edged stage message, contract v1",
    "description": (
        "One message per scored 30-s epoch on {base}/{node}/{device}/stage (QoS 1) and, retained, on "
        "{base}/{node}/{device}/state. Unknown fields must be ignored: new fields are added without "
        "changing v."
    ),
    "type": "object",
    "required": [
        "v", "id", "node", "device", "session", "epoch", "start", "end", "start_ts", "end_ts",
        "stage", "probabilities", "model", "quality", "latency_ms",
    ],
    "properties": {
        "v": {"const": CONTRACT_VERSION, "description": "contract version"},
        "id": {
            "type": "string",
            "minLength": 1,
            "description": "{node}/{device}/{session}/{epoch}; identical for re-sent duplicates",
        },
        "node": {"type": "string", "minLength": 1},
        "device": {"type": "string", "minLength": 1},
        "session": {"type": "string", "minLength": 1, "description": "id of the device's stream (its anchor time)"},
        "epoch": {"type": "integer", "minimum": 0, "description": "epoch index since the session's anchor"},
        "start": _ISO,
        "end": _ISO,
        "start_ts": {"type": "number", "description": "epoch start, POSIX seconds"},
        "end_ts": {"type": "number", "description": "epoch end, POSIX seconds"},
        "stage": {"type": "string", "minLength": 1, "description": "one of the model's classes"},
        "probabilities": {
            "type": "object",
            "description": "class -> probability, in the model's class order, 4 decimals",
            "additionalProperties": {"type": "number", "minimum": 0, "maximum": 1},
        },
        "model": {
            "type": "object",
            "required": ["id", "synthetic"],
            "properties": {"id": {"type": "string"}, "synthetic": {"type": "boolean"}},
        },
        "quality": {
            "type": "object",
            "required": ["score", "ok"],
            "properties": {
                "score": {"type": "number", "minimum": 0, "maximum": 1},
                "ok": {"type": "boolean"},
            },
        },
        "latency_ms": {
            "type": "number",
            "description": "milliseconds from the epoch's last sample reaching edged to hand-over for publishing",
        },
        "hr_bpm": {
            "type": "number",
            "description": "mean heart rate over the epoch's valid inter-beat intervals; absent when the model "
                           "is not fed intervals or no valid interval covers the epoch",
        },
        "warning": {"type": "string", "description": "present when the model is not fit for real measurements"},
    },
    # A synthetic model must never publish a stage without saying so.
    "if": {"properties": {"model": {"properties": {"synthetic": {"const": True}}}}},
    "then": {"required": ["warning"]},
    "additionalProperties": True,
}

SCHEMA_PATH: Final = Path(__file__).resolve().parents[2] / "docs" / "mqtt-stage.schema.json"


def schema_text() -> str:
    """The schema exactly as stored in ``docs/mqtt-stage.schema.json`` (key order kept: it reads best)."""
    return json.dumps(STAGE_SCHEMA, indent=2) + "\n"


def write_schema(path: Path = SCHEMA_PATH) -> Path:
    """Write the stage schema file; run ``python -m edged.sinks.contract`` after changing the schema."""
    path.write_text(schema_text(), encoding="utf-8")
    return path


if __name__ == "__main__":
    print(write_schema())
