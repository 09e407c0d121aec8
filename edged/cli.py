"""The ``edged`` command line.

Every failure the user can fix ends in one line, ``edged: error: ...`` (one per problem for configs), and
a non-zero exit: 2 for a bad config or command line, 1 for anything else that stops the daemon.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from pathlib import Path

from edged import __version__
from edged.errors import ConfigError, EdgedError

log = logging.getLogger("edged")


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper()), stream=sys.stderr,
                        format="%(asctime)s edged %(levelname)s %(name)s: %(message)s")


def _fail(message: str, code: int) -> int:
    for line in message.splitlines() or [message]:
        print(f"edged: error: {line}", file=sys.stderr)
    return code


def _install_stop(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)


# --- edged run --------------------------------------------------------------------------------------

def mqtt_settings(config, host: str, port: int):
    from edged.sinks.mqtt import MqttSettings

    mqtt = config.mqtt
    password = None
    if mqtt["password_file"]:
        path = _secret_path(config, "password_file")
        try:
            password = path.read_text().strip()
        except OSError as exc:  # the path may be shown; the content never is
            raise EdgedError(f"mqtt.password_file: cannot read {path}: {exc.strerror}") from None
    files = {key: str(_secret_path(config, key)) if mqtt[key] else None for key in ("ca_file", "cert_file", "key_file")}
    node = config.node_id
    return MqttSettings(
        host=host, port=port, base_topic=mqtt["base_topic"], node_id=node,
        client_id=mqtt["client_id"], username=mqtt["username"] or None,
        password=password, keepalive=mqtt["keepalive"], max_outbox=mqtt["max_outbox"],
        tls=mqtt["tls"], tls_ca_certs=files["ca_file"], tls_certfile=files["cert_file"],
        tls_keyfile=files["key_file"], tls_insecure=mqtt["tls_insecure"],
    )


_CREDENTIALS = "$CREDENTIALS_DIRECTORY/"


def _secret_path(config, key: str) -> Path:
    """The file an [mqtt] option names; a leading ``$CREDENTIALS_DIRECTORY/`` is a systemd credential
    (``LoadCredential=`` in the unit), the only variable expanded."""
    value = config.mqtt[key]
    if not value.startswith(_CREDENTIALS):
        return config.relative(value)
    directory = os.environ.get("CREDENTIALS_DIRECTORY", "")
    if not directory:
        raise EdgedError(f"mqtt.{key}: {value} is a systemd credential, but $CREDENTIALS_DIRECTORY is not set: "
                         "run edged from its unit (LoadCredential=), or give the file's path")
    return Path(directory) / value[len(_CREDENTIALS):]


def open_journal(config):
    """The stage-message journal in the state directory, or None when ``[journal] enabled = false``. An
    unusable directory is not fatal: the journal logs one error and works from memory."""
    from edged.sinks.journal import Journal, JournalPolicy

    options = config.journal
    if not options["enabled"]:
        return None
    policy = JournalPolicy(retention_hours=options["retention_hours"], max_bytes=int(options["max_mb"] * 1e6),
                           synchronous=options["synchronous"], memory_fallback=config.mqtt["max_outbox"])
    return Journal.open(config.state_dir, policy)


def user_facing_sinks(config, prepared, settings) -> list:
    """Home Assistant discovery and the live dashboard, when enabled, told about each device's model."""
    sinks: list = []  # the dashboard first: it is the one that can fail to start (its port in use)
    if config.dashboard["enabled"]:
        from edged.sinks.dashboard import DashboardDevice, DashboardSink

        options = config.dashboard
        sinks.append(DashboardSink(
            config.node_id, [DashboardDevice.from_manifest(d.name, m.manifest) for d, _, m in prepared],
            host=options["host"], port=options["port"], history_epochs=options["history_epochs"],
            max_clients=options["max_clients"]))
    if config.homeassistant["enabled"]:
        from edged.sinks.homeassistant import DiscoveredDevice, HomeAssistantDiscovery

        sinks.append(HomeAssistantDiscovery(
            settings, [DiscoveredDevice.from_manifest(d.name, m.manifest) for d, _, m in prepared],
            prefix=config.homeassistant["discovery_prefix"], status_topic=config.homeassistant["status_topic"]))
    return sinks


async def _run(config, exit_when_done: bool) -> None:
    from edged.app import Daemon
    from edged.sinks.broker import EmbeddedBroker, broker_reachable
    from edged.sinks.mqtt import MqttSink

    prepared = Daemon.prepare(config)
    mqtt = config.mqtt
    broker = None
    host, port = mqtt["host"], mqtt["port"]
    if mqtt["embedded"] == "always" or (mqtt["embedded"] == "auto" and not host):
        broker = EmbeddedBroker(port=mqtt["embedded_port"])
    elif mqtt["embedded"] == "auto" and not await asyncio.to_thread(broker_reachable, host, port, 3.0):
        log.warning("broker %s:%d is not reachable: starting an embedded broker instead", host, port)
        broker = EmbeddedBroker(port=mqtt["embedded_port"])
    if broker is not None:
        broker.start()
        host, port = broker.host, broker.port
        log.info("embedded mosquitto listening on %s:%d", host, port)
    settings = mqtt_settings(config, host, port)
    journal = open_journal(config)
    sink = MqttSink(settings, journal=journal)
    extras = user_facing_sinks(config, prepared, settings)
    if config.report["enabled"]:
        from edged.sinks.nightly import MAX_NIGHT_HOURS, NightReporter

        reporter = NightReporter.from_config(config, publish=sink.publish_summary)
        if journal is not None:  # a restart in the night: the morning report still covers all of it
            reporter.restore(journal.recent("/stage", time.time() - MAX_NIGHT_HOURS * 3600.0),
                             devices={d.name for d in config.devices})
        extras.append(reporter)
    stop = asyncio.Event()
    _install_stop(asyncio.get_running_loop(), stop)
    try:
        for extra in extras:  # first: a dashboard port already in use stops edged before it says online
            started = extra.start()
            if asyncio.iscoroutine(started):  # the dashboard binds its port on this loop
                await started
        sink.start()
        log.info("edged %s: node %s, %d device(s), publishing to %s:%d under %s/%s", __version__,
                 config.node_id, len(prepared), host, port, mqtt["base_topic"], config.node_id)
        await Daemon(config, [sink, *extras]).run(prepared, stop=stop, exit_when_done=exit_when_done)
    finally:
        for extra in extras:
            await asyncio.to_thread(extra.close)
            if hasattr(extra, "wait_closed"):
                await extra.wait_closed()
        await asyncio.to_thread(sink.close)
        if broker is not None:
            broker.stop()


def cmd_run(args) -> int:
    from edged.config import load_config

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        return _fail(str(exc), 2)
    _setup_logging(args.log_level or config.node["log_level"])
    try:
        asyncio.run(_run(config, args.exit_when_done))
    except EdgedError as exc:
        return _fail(str(exc), 1)
    return 0


# --- edged check-config / config-reference / models -----------------------------------------------

def cmd_check_config(args) -> int:
    from edged.config import load_config

    try:
        config = load_config(args.file)
    except ConfigError as exc:
        return _fail(str(exc), 2)
    print(f"{args.file}: OK: node {config.node_id!r}, {len(config.devices)} device(s): "
          + ", ".join(f"{d.name} ({d.type}, model {d.model})" for d in config.devices))
    return 0


def cmd_config_reference(args) -> int:
    from edged.config import reference

    print(reference())
    return 0


def cmd_models(args) -> int:
    from edged.scoring import catalog
    from edged.scoring.manifest import load_manifest

    for model_id, path in sorted(catalog.available([Path(d) for d in args.dir]).items()):
        try:
            m = load_manifest(path)
        except EdgedError as exc:
            print(f"{model_id}: BROKEN: {exc}")
            continue
        tag = " [SYNTHETIC weights]" if m.synthetic else ""
        print(f"{m.id}{tag}: {'/'.join(m.classes)}, {m.epoch_seconds:g}-s epochs, "
              f"{m.context_epochs} context, {m.quantization}; inputs "
              + ", ".join(f"{i.name} ({i.signal} @ {i.fs:g} Hz)" for i in m.inputs) + f"  [{path}]")
    return 0


def cmd_devices(args) -> int:
    from edged.devices import run

    return run(args)


# --- edged replay -----------------------------------------------------------------------------------

class _Progress:
    """A one-line progress bar on stderr, only when stderr is a terminal."""

    def __init__(self, total: float, enabled: bool):
        self.total = max(total, 1e-9)
        self.enabled = enabled and sys.stderr.isatty()
        self.last = 0.0

    def update(self, position: float, epochs: int) -> None:
        now = time.monotonic()
        if not self.enabled or now - self.last < 0.1:
            return
        self.last = now
        frac = min(1.0, position / self.total)
        bar = "#" * int(frac * 30)
        print(f"\r[{bar:<30}] {frac:6.1%}  {position / 3600:5.2f} h  {epochs} epochs", end="", file=sys.stderr)

    def close(self) -> None:
        if self.enabled:
            print(file=sys.stderr)


async def _replay(args, config, sinks) -> None:
    from edged.app import Daemon

    prepared = Daemon.prepare(config)
    stop = asyncio.Event()
    _install_stop(asyncio.get_running_loop(), stop)
    daemon = Daemon(config, sinks)
    run = asyncio.create_task(daemon.run(prepared, stop=stop, exit_when_done=True))
    progress = _Progress(prepared[0][1].duration, enabled=args.speed == 0 or args.speed > 1)
    while not run.done():
        await asyncio.sleep(0.1)
        runner = daemon.runners[0] if daemon.runners else None
        if runner is not None:
            progress.update(runner.source.position, runner.pipeline.counters.epochs_scored if runner.pipeline else 0)
    progress.close()
    await run


def cmd_replay(args) -> int:
    from edged.config import parse_config
    from edged.sinks.report import agreement, hypnogram_summary
    from edged.sinks.base import CollectingSink

    _setup_logging(args.log_level or "warning")
    channels = dict(item.split("=", 1) for item in args.channel)
    path = Path(args.recording).resolve()
    toml = (f'[[devices]]\nname = "replay"\ntype = "replay"\nmodel = "{args.model}"\n'
            f'path = "{path}"\nspeed = {float(args.speed)}\nchunk_seconds = {float(args.chunk_seconds)}\n'
            f'fs = {float(args.fs)}\n'
            + ("channels = {" + ", ".join(f'{k} = "{v}"' for k, v in channels.items()) + "}\n" if channels else ""))
    if args.record:  # [recording] goes before [[devices]]: a table after it would belong to the device
        # One file per replay: a replayed night runs on a virtual clock, so "a new day" means nothing.
        toml = (f'[recording]\ndir = "{Path(args.record).resolve()}"\ndaily_at_hour = -1\n\n'
                + toml + "record = true\n")
    try:
        config = parse_config(toml, "<replay arguments>")
    except ConfigError as exc:
        return _fail(str(exc), 2)
    collector = CollectingSink()
    try:
        asyncio.run(_replay(args, config, [collector]))
    except EdgedError as exc:
        return _fail(str(exc), 1)
    epochs = collector.epochs.get("replay", [])
    from edged.sources.readers import read_recording

    recording = read_recording(path, fs=args.fs or None)
    print(hypnogram_summary(epochs))
    if epochs:
        from edged.sinks.night import summarize_epochs, summary_text

        print(summary_text(summarize_epochs(epochs)))
    if recording.hypnogram is not None:
        print(agreement(epochs, recording.hypnogram))
    for report_path in args.report:
        if not epochs:
            return _fail(f"{report_path}: no epoch was scored, so there is no night to report", 1)
        from edged.sinks.report import night_report
        from edged.sinks.report_render import write_report

        report = night_report(epochs, title=f"{path.name}: night report", hypnogram=recording.hypnogram,
                              start=recording.start_time)
        try:
            write_report(report, report_path)
        except (OSError, ValueError) as exc:
            return _fail(f"--report {report_path}: {exc}", 1)
        print(f"wrote {report_path}")
    if args.json:
        import json

        Path(args.json).write_text(json.dumps([
            {"epoch": e.index, "start": e.start, "stage": e.stage, "probabilities": e.probabilities,
             "quality": e.quality, "quality_ok": e.quality_ok} for e in epochs], indent=1))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edged", description="Real-time sleep staging over MQTT.")
    parser.add_argument("--version", action="version", version=f"edged {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run the daemon")
    p.add_argument("--config", "-c", required=True, help="TOML config file (see systemd/edged.toml)")
    p.add_argument("--exit-when-done", action="store_true", help="exit once every replayed recording has ended")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"))
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("check-config", help="validate a config file and report every error")
    p.add_argument("file")
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("config-reference", help="print every config key with its default and meaning")
    p.set_defaults(func=cmd_config_reference)

    p = sub.add_parser("models", help="list the models edged can load")
    p.add_argument("--dir", action="append", default=[], help="extra directory of manifests")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("devices", help="list serial ports and Bluetooth LE devices edged can read")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--no-ble", action="store_true", help="skip the Bluetooth LE scan")
    p.add_argument("--ble-timeout", type=float, default=5.0, help="seconds to scan for BLE devices")
    p.add_argument("--probe", action="store_true", help="connect to BLE devices to confirm their services")
    p.set_defaults(func=cmd_devices)

    p = sub.add_parser("replay", help="score a recording with the live pipeline and summarise the night")
    p.add_argument("recording")
    p.add_argument("--model", "-m", default="ibi-slpdb-causal-v1", help="model id or manifest path")
    p.add_argument("--speed", type=float, default=0.0, help="0 = as fast as possible (default), 1 = real time")
    p.add_argument("--chunk-seconds", type=float, default=1.0, help="signal per chunk (default 1 s)")
    p.add_argument("--fs", type=float, default=0.0, help="sample rate for CSV files without a time column")
    p.add_argument("--channel", action="append", default=[], metavar="SIGNAL=CHANNEL",
                   help="feed a model signal from a named channel, e.g. ibi=rr")
    p.add_argument("--json", help="also write every scored epoch to this JSON file")
    p.add_argument("--record", metavar="DIR", help="also write what the pipeline receives as EDF+ under "
                   "DIR/replay/ (as [recording] does for a device), e.g. to convert a recording")
    p.add_argument("--report", action="append", default=[], metavar="FILE",
                   help="write the night report: FILE.html (summary, hypnograms, probabilities, agreement), "
                   "FILE.png (hypnogram picture) or FILE.json (summary); repeatable")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"))
    p.set_defaults(func=cmd_replay)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
