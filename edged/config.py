"""The configuration: one TOML file, strict and self-documenting.

Every key has a type, a default and a description (``edged config-reference`` prints them all). An unknown
key, a wrong type or a bad value is an error that names the file, the line and the key; all errors are
reported at once. Validation has no side effects: it opens no device, broker or model file.
"""

from __future__ import annotations

import difflib
import re
import socket
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edged.errors import ConfigError
from edged.sources.registry import BACKENDS, REQUIRED, Option

NODE_OPTIONS = (
    Option("id", str, "", "Node id in every MQTT topic; unique per edged instance on a broker. "
           "Empty: the host name."),
    Option("log_level", str, "info", "Log level.", choices=("debug", "info", "warning", "error")),
    Option("state_dir", str, "", "Directory for edged's state (the journal of stage messages). Empty: "
           "$STATE_DIRECTORY under systemd (the unit's StateDirectory=), else $XDG_STATE_HOME/edged, else "
           "~/.local/state/edged. Relative paths are relative to this file. One edged per directory."),
)

JOURNAL_OPTIONS = (
    Option("enabled", bool, True, "Write every stage message to a journal (SQLite, in `node.state_dir`) before "
           "publishing it, so what the broker has not acknowledged survives a broker outage and a restart "
           "and is re-sent in order. false: memory only (`mqtt.max_outbox`), lost when edged stops."),
    Option("retention_hours", float, 24.0, "Acknowledged stage messages are kept this long (a local record of "
           "recent nights), then pruned; 0 deletes them as soon as the broker acknowledges them.", minimum=0.0),
    Option("max_mb", float, 256.0, "Size cap of the journal in MB. Over it, acknowledged messages go first, then "
           "the OLDEST unacknowledged ones (counted as journal_discarded and logged).", minimum=1.0),
    Option("synchronous", str, "normal", "normal: a crash or kill of edged loses nothing; a power cut may lose "
           "the last few messages. full: fsync on every message (slower on SD cards).",
           choices=("normal", "full")),
)

MQTT_OPTIONS = (
    Option("host", str, "", "Broker host. Empty: start an embedded mosquitto on loopback (see `embedded`)."),
    Option("port", int, 1883, "Broker port.", minimum=1),
    Option("base_topic", str, "edged", "First level of every topic (see docs/mqtt.md)."),
    Option("client_id", str, "", "MQTT client id. Empty: edged-<node id>."),
    Option("username", str, "", "User name, if the broker requires one."),
    Option("password_file", str, "", "File holding the password; never put the password itself in this file "
           "or on the command line. A leading $CREDENTIALS_DIRECTORY/ names a systemd credential "
           "(LoadCredential= in the unit), e.g. \"$CREDENTIALS_DIRECTORY/mqtt-password\"."),
    Option("tls", bool, False, "Connect with TLS (the broker's certificate is always verified, against "
           "`ca_file` or the system's CAs)."),
    Option("ca_file", str, "", "PEM file of the CA(s) that signed the broker's certificate. Empty: the system's CAs."),
    Option("cert_file", str, "", "Client certificate (PEM), for brokers that require one (require_certificate)."),
    Option("key_file", str, "", "Private key of `cert_file` (PEM); like `password_file`, may be "
           "$CREDENTIALS_DIRECTORY/<name>."),
    Option("tls_insecure", bool, False, "Accept a broker certificate whose name does not match `host` "
           "(the chain is still verified). For test brokers only."),
    Option("keepalive", int, 30, "Keep-alive in seconds; the broker declares edged offline after 1.5x this.",
           minimum=5),
    Option("embedded", str, "auto", "auto: start an embedded broker when `host` is empty or unreachable; "
           "never: only use `host` (buffer until it answers); always: always start one.",
           choices=("auto", "never", "always")),
    Option("embedded_port", int, 0, "Port of the embedded broker; 0 picks a free one.", minimum=0),
    Option("max_outbox", int, 100_000, "Stage messages kept in memory until the broker acknowledges them "
           "when there is no journal (disabled, or its state directory unusable); about 600 bytes each; when "
           "full the oldest is dropped and counted.", minimum=1),
)

DEVICE_OPTIONS = (
    Option("name", str, REQUIRED, "Device name: letters, digits, '-' and '_'; used in topics."),
    Option("type", str, REQUIRED, "Source backend.", choices=tuple(BACKENDS)),
    Option("model", str, "ibi-slpdb-causal-v1", "Model id (a shipped model or one in [models] dirs) or a path "
           "to a manifest .json."),
    Option("quality_threshold", float, 0.5, "Epochs whose signal quality (0-1) is below this are published "
           "flagged as low quality.", minimum=0.0),
    Option("channels", dict, {}, "Which device channel feeds each model signal, e.g. { ibi = \"rr\" }. "
           "Default: an RR channel for ibi, else the channel named like the signal."),
    Option("beat_detector", str, "auto", "For a model fed inter-beat intervals from a raw channel: which "
           "beat detector runs on it. auto: ppg if the channel name says PPG/PLETH/BVP/pulse, else ecg.",
           choices=("auto", "ecg", "ppg")),
    Option("queue_size", int, 1024, "Events buffered between the device and its pipeline; overflow drops "
           "the oldest and counts it.", minimum=1),
    Option("record", bool, False, "Write the device's raw samples, beats, gaps and connection events to EDF+ "
           "files under [recording] dir, for re-scoring with `edged replay FILE`."),
)

RECORDING_OPTIONS = (
    Option("dir", str, "", "Where raw recordings go (one folder per device). Empty: <node.state_dir>/recordings."),
    Option("max_file_mb", float, 512.0, "A file that reaches this size is closed and the session goes on in a "
           "new one.", minimum=1.0),
    Option("max_file_hours", float, 24.0, "A file that covers this long is closed and the session goes on in a "
           "new one.", minimum=0.1),
    Option("daily_at_hour", int, 12, "Files are per day: a session goes on in a new file when the local clock "
           "passes this hour (0-23; noon keeps a night in one file); -1: no daily files.", minimum=-1),
    Option("max_total_mb", float, 4096.0, "Cap of all recordings under `dir`: while they exceed it the oldest "
           "files are deleted (logged, counted; checked as files open and close and every 64 data records, "
           "a file being written is kept); 0: no cap.", minimum=0.0),
    Option("fsync_seconds", float, 10.0, "Written data is synced to the disk this often (a crash of edged loses "
           "nothing written; a power cut at most this much).", minimum=0.1),
)

MODELS_OPTIONS = (
    Option("dirs", list, [], "Extra directories searched for model manifests (*.json), before the shipped ones."),
)

HOMEASSISTANT_OPTIONS = (
    Option("enabled", bool, False, "Publish Home Assistant MQTT discovery configs, so each device appears in "
           "Home Assistant with its entities (see docs/homeassistant.md)."),
    Option("discovery_prefix", str, "homeassistant", "Home Assistant's discovery prefix (its MQTT "
           "integration option of the same name)."),
    Option("status_topic", str, "homeassistant/status", "Where Home Assistant announces itself (its birth "
           "message); the configs are published again whenever `online` arrives there."),
)

DASHBOARD_OPTIONS = (
    Option("enabled", bool, False, "Serve the live dashboard (one page: hypnogram, stage probabilities, "
           "signal quality, heart rate and connection per device)."),
    Option("host", str, "127.0.0.1", "Address to listen on. The page has no login: keep it on loopback, or "
           "put it behind a reverse proxy with authentication."),
    Option("port", int, 8765, "TCP port; 0 picks a free one (logged).", minimum=0),
    Option("history_epochs", int, 1440, "Epochs kept in memory per device for browsers that connect or "
           "reconnect later (1440 = 12 h of 30-s epochs).", minimum=1),
    Option("max_clients", int, 16, "Browsers served at once; more are refused with 503.", minimum=1),
)

REPORT_OPTIONS = (
    Option("enabled", bool, True, "Summarise each device's night (total sleep, efficiency, latency, WASO, "
           "awakenings, minutes per stage) every morning and on SIGUSR1: saved as JSON + hypnogram PNG and "
           "published retained on {base}/{node}/{device}/summary."),
    Option("at", str, "09:00", "Local time of day (HH:MM, 24-hour) of the morning report; it covers what was "
           "scored since the device's previous report."),
    Option("dir", str, "", "Where reports go ({dir}/{device}/{date}.json and .png). Empty: "
           "`reports` in the state directory. Relative paths are relative to this file."),
    Option("png", bool, True, "Also draw the hypnogram and stage probabilities as a PNG."),
    Option("min_awakening_seconds", float, 0.0, "Shortest wake bout, within the sleep period, that counts as an "
           "awakening (0: every wake epoch after sleep onset starts one).", minimum=0.0),
    Option("keep_days", int, 90, "Report files older than this are deleted when a new report is written.",
           minimum=1),
)

SECTIONS: dict[str, tuple[Option, ...]] = {"node": NODE_OPTIONS, "mqtt": MQTT_OPTIONS, "models": MODELS_OPTIONS,
                                           "homeassistant": HOMEASSISTANT_OPTIONS, "dashboard": DASHBOARD_OPTIONS,
                                           "journal": JOURNAL_OPTIONS, "recording": RECORDING_OPTIONS,
                                           "report": REPORT_OPTIONS}

NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True)
class DeviceConfig:
    name: str
    type: str
    model: str
    quality_threshold: float
    channels: dict[str, str]
    beat_detector: str
    queue_size: int
    options: dict[str, Any]  # the backend's own typed options
    record: bool = False


@dataclass(frozen=True)
class Config:
    path: Path | None
    node: dict[str, Any]
    mqtt: dict[str, Any]
    models: dict[str, Any]
    devices: tuple[DeviceConfig, ...] = field(default_factory=tuple)
    homeassistant: dict[str, Any] = field(default_factory=lambda: {o.name: o.default for o in HOMEASSISTANT_OPTIONS})
    dashboard: dict[str, Any] = field(default_factory=lambda: {o.name: o.default for o in DASHBOARD_OPTIONS})
    journal: dict[str, Any] = field(default_factory=lambda: {o.name: o.default for o in JOURNAL_OPTIONS})
    recording: dict[str, Any] = field(default_factory=lambda: {o.name: o.default for o in RECORDING_OPTIONS})
    report: dict[str, Any] = field(default_factory=lambda: {o.name: o.default for o in REPORT_OPTIONS})

    @property
    def node_id(self) -> str:
        return self.node["id"] or re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname()) or "edged"

    @property
    def state_dir(self) -> Path:
        """Where the journal lives (``[node] state_dir``, else the default described there)."""
        from edged.sinks.journal import default_state_dir

        return self.relative(self.node["state_dir"]) if self.node["state_dir"] else default_state_dir()

    def relative(self, value: str) -> Path:
        """A path from the config, resolved against the config file's folder."""
        p = Path(value).expanduser()
        return p if p.is_absolute() or self.path is None else (self.path.parent / p)


# --- locating keys in the TOML text, so that errors can name the line --------------------------------

_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"""^\s*((?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*'))*)\s*=""")
_INLINE_KEY = re.compile(r"""[{,]\s*([A-Za-z0-9_-]+|"[^"]*")\s*=""")


def _split_key(text: str) -> list[str]:
    return [part.strip().strip("\"'") for part in re.split(r"\.(?=(?:[^\"']*[\"'][^\"']*[\"'])*[^\"']*$)", text)]


def key_lines(text: str) -> dict[tuple, int]:
    """Map each key path (``("devices", 0, "speed")``) to the line that sets it. Table headers map too."""
    lines: dict[tuple, int] = {}
    table: tuple = ()
    array_counts: dict[tuple, int] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        m = _HEADER.match(line)
        if m:
            path = tuple(_split_key(m.group(2)))
            if m.group(1) == "[[":
                index = array_counts.get(path, 0)
                array_counts[path] = index + 1
                table = (*path, index)
            else:
                table = path
            lines.setdefault(table, lineno)
            continue
        m = _KEY.match(line)
        if m:
            key = (*table, *_split_key(m.group(1)))
            lines.setdefault(key, lineno)
            rest = line[m.end():]
            for inner in _INLINE_KEY.finditer(rest):
                lines.setdefault((*key, inner.group(1).strip("\"'")), lineno)
    return lines


# --- validation -------------------------------------------------------------------------------------

def _format_path(path: tuple) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


class _Checker:
    def __init__(self, source: str, lines: dict[tuple, int]):
        self.source = source
        self.lines = lines
        self.problems: list[str] = []

    def error(self, path: tuple, message: str) -> None:
        line = None
        for n in range(len(path), 0, -1):  # the key's own line, else its table's
            line = self.lines.get(path[:n])
            if line is not None:
                break
        where = f"{self.source}:{line}" if line else self.source
        self.problems.append(f"{where}: {_format_path(path)}: {message}")

    def section(self, raw: Any, options: tuple[Option, ...], path: tuple, allowed_extra: tuple[str, ...] = ()) -> dict:
        values: dict[str, Any] = {}
        if not isinstance(raw, dict):
            self.error(path, "must be a table")
            return values
        known = {o.name: o for o in options}
        for key in raw:
            if key not in known and key not in allowed_extra:
                hint = difflib.get_close_matches(key, [*known, *allowed_extra], n=1)
                self.error((*path, key), "unknown key" + (f" (did you mean {hint[0]!r}?)" if hint else ""))
        for option in options:
            key_path = (*path, option.name)
            if option.name not in raw:
                if option.default is REQUIRED:
                    self.error(key_path, "required key is missing")
                else:
                    values[option.name] = option.default
                continue
            values[option.name] = self.value(raw[option.name], option, key_path)
        return values

    def value(self, value: Any, option: Option, path: tuple) -> Any:
        want = option.type
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, want) or (want is not bool and isinstance(value, bool)):
            self.error(path, f"must be {_type_name(want)}, got {value!r}")
            return option.default if option.default is not REQUIRED else None
        if option.choices is not None and value not in option.choices:
            self.error(path, f"must be one of {', '.join(map(repr, option.choices))}, got {value!r}")
        if option.minimum is not None and value < option.minimum:
            self.error(path, f"must be >= {option.minimum}, got {value!r}")
        if want is dict and not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            self.error(path, "must map names to strings")
        if want is list and not all(isinstance(v, str) for v in value):
            self.error(path, "must be a list of strings")
        return value


def _type_name(t: type) -> str:
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false",
            dict: "a table", list: "a list"}.get(t, t.__name__)


def parse_config(text: str, source: str = "<config>", path: Path | None = None) -> Config:
    """Validate config text; raise :class:`ConfigError` with every problem, each naming line and key."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{source}: not valid TOML: {exc}"]) from None
    check = _Checker(source, key_lines(text))
    for key in raw:
        if key not in SECTIONS and key != "devices":
            hint = difflib.get_close_matches(key, [*SECTIONS, "devices"], n=1)
            check.error((key,), "unknown section" + (f" (did you mean {hint[0]!r}?)" if hint else ""))
    sections = {name: check.section(raw.get(name, {}), options, (name,)) for name, options in SECTIONS.items()}

    devices: list[DeviceConfig] = []
    raw_devices = raw.get("devices", [])
    if not isinstance(raw_devices, list):
        check.error(("devices",), "must be an array of tables: write each device as [[devices]]")
        raw_devices = []
    seen: set[str] = set()
    for i, raw_device in enumerate(raw_devices):
        where = ("devices", i)
        if not isinstance(raw_device, dict):
            check.error(where, "must be a table")
            continue
        backend = BACKENDS.get(raw_device.get("type")) if isinstance(raw_device.get("type"), str) else None
        backend_keys = tuple(o.name for o in backend.options) if backend else tuple(
            {o.name for b in BACKENDS.values() for o in b.options})  # unknown type: do not also flag its options
        common = check.section(raw_device, DEVICE_OPTIONS, where, allowed_extra=backend_keys)
        options = {}
        if backend is not None:
            options = check.section({k: v for k, v in raw_device.items() if k in backend_keys},
                                    backend.options, where)
        name = common.get("name")
        if isinstance(name, str):
            if not NAME_RE.match(name):
                check.error((*where, "name"), f"{name!r} may only use letters, digits, '-' and '_' (it goes in topics)")
            elif name in seen:
                check.error((*where, "name"), f"device name {name!r} is used twice")
            seen.add(name)
        if backend is None or check.problems:
            continue
        devices.append(DeviceConfig(options=options, **common))

    node_id = sections["node"]["id"]
    if node_id and not NAME_RE.match(node_id):
        check.error(("node", "id"), f"{node_id!r} may only use letters, digits, '-' and '_' (it goes in topics)")
    for key in ("discovery_prefix", "status_topic"):
        topic = sections["homeassistant"][key]
        if not topic or topic.startswith("/") or topic.endswith("/") or any(c in topic for c in "+#\0"):
            check.error(("homeassistant", key), f"{topic!r} must be a topic without wildcards, not starting "
                        "or ending with '/'")
    if sections["recording"]["daily_at_hour"] > 23:
        check.error(("recording", "daily_at_hour"), f"must be an hour 0-23 or -1, got {sections['recording']['daily_at_hour']}")
    at = sections["report"]["at"]
    if not re.fullmatch(r"([01]?\d|2[0-3]):[0-5]\d", at):
        check.error(("report", "at"), f"{at!r} is not a time of day as HH:MM (24-hour)")
    mqtt = sections["mqtt"]
    if not mqtt["tls"]:
        for key in ("ca_file", "cert_file", "key_file", "tls_insecure"):
            if mqtt[key]:
                check.error(("mqtt", key), "is set but TLS is off: add tls = true")
    if mqtt["key_file"] and not mqtt["cert_file"]:
        check.error(("mqtt", "key_file"), "a client key needs its certificate: set cert_file too")
    if mqtt["password_file"] and not mqtt["username"]:
        check.error(("mqtt", "password_file"), "a password needs a user name: set username too")
    if check.problems:
        raise ConfigError(check.problems)
    return Config(path=path, node=sections["node"], mqtt=sections["mqtt"], models=sections["models"],
                  devices=tuple(devices), homeassistant=sections["homeassistant"],
                  dashboard=sections["dashboard"], journal=sections["journal"], recording=sections["recording"],
                  report=sections["report"])


def load_config(path: str | Path) -> Config:
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError([f"{path}: config file not found"]) from None
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read config file: {exc.strerror}"]) from None
    return parse_config(text, str(path), path.resolve())


def reference() -> str:
    """Every key with its type, default and description, as Markdown (``edged config-reference``)."""
    def rows(options: tuple[Option, ...]) -> list[str]:
        out = ["| key | type | default | description |", "|---|---|---|---|"]
        for o in options:
            default = "(required)" if o.default is REQUIRED else repr(o.default)
            choices = f" One of: {', '.join(map(str, o.choices))}." if o.choices else ""
            out.append(f"| `{o.name}` | {o.type.__name__} | `{default}` | {o.doc}{choices} |")
        return out

    parts = ["# edged configuration reference", ""]
    for name, options in SECTIONS.items():
        parts += [f"## [{name}]", "", *rows(options), ""]
    parts += ["## [[devices]]", "", "Keys every device has:", "", *rows(DEVICE_OPTIONS), ""]
    for backend in BACKENDS.values():
        parts += [f"### type = \"{backend.name}\"", "", backend.doc, "", *rows(backend.options), ""]
    return "\n".join(parts)
