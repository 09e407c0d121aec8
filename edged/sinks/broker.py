"""An embedded Mosquitto broker, for when no broker is configured or reachable.

edged runs ``mosquitto`` as a child process on the loopback interface with anonymous access and no
persistence: enough for a dashboard on the same machine, and what the tests use as a REAL broker. It is
not meant to be exposed on a network (no authentication), which is why it only ever listens on loopback.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Final

from edged.errors import SinkError

log = logging.getLogger(__name__)

_SEARCH_DIRS: Final = ("/usr/sbin", "/usr/local/sbin")
_LOOPBACK: Final = frozenset({"127.0.0.1", "::1", "localhost"})
INSTALL_HINT: Final = (
    "install it with 'sudo apt-get install mosquitto' (Debian, Ubuntu, Raspberry Pi OS), or configure "
    "an existing broker under [mqtt] host/port"
)


def find_mosquitto() -> Path | None:
    """The mosquitto executable: on PATH first, then the sbin directories Debian installs it to.

    Debian puts it in /usr/sbin, which is not on an ordinary user's PATH, so a PATH lookup alone would
    report a missing broker that is in fact installed.
    """
    found = shutil.which("mosquitto")
    if found:
        return Path(found)
    for directory in _SEARCH_DIRS:
        candidate = Path(directory) / "mosquitto"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the OS picks it; another process may still take it)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def broker_reachable(host: str, port: int, timeout: float = 1.0) -> bool:
    """True if something accepts TCP connections on ``host:port`` (it is not checked that it speaks MQTT)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class _ExitedWhileStarting(SinkError):
    """mosquitto ran but quit before listening: usually the port was taken meanwhile."""


class EmbeddedBroker:
    """A mosquitto child process listening on ``host:port`` (loopback only).

    ``port=0`` picks a free port on the first ``start()``; the port is then kept, so ``stop()`` followed by
    ``start()`` brings the broker back where clients expect it. ``persistence=True`` keeps retained
    messages and persistent sessions across such a restart (saved after every change); edged itself
    does not use it, tests of broker restarts do.
    """

    def __init__(
        self,
        port: int = 0,
        host: str = "127.0.0.1",
        *,
        persistence: bool = False,
        start_timeout: float = 5.0,
        executable: Path | None = None,
    ) -> None:
        if host not in _LOOPBACK:
            raise SinkError(
                f"the embedded broker allows anonymous access and only listens on loopback, not on {host!r}"
            )
        if not 0 <= port <= 65535:
            raise SinkError(f"embedded broker port {port} is out of range")
        self.host = host
        self.port = port
        self.persistence = persistence
        self.start_timeout = start_timeout
        self._executable = executable
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: Path | None = None

    # ------------------------------------------------------------------------------------- lifecycle

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> EmbeddedBroker:
        """Start mosquitto and return once it accepts TCP connections. A no-op if it already runs."""
        if self.running:
            return self
        exe = self._executable or find_mosquitto()
        if exe is None:
            raise SinkError(f"no MQTT broker configured or reachable and mosquitto is not installed: {INSTALL_HINT}")
        if self._dir is None:
            # One directory per broker, kept across restarts so that a persistent database survives them.
            self._dir = Path(tempfile.mkdtemp(prefix="edged-mosquitto-"))
        # A port picked by the OS can be taken by someone else before mosquitto binds it: try a few.
        attempts = 3 if self.port == 0 else 1
        for attempt in range(1, attempts + 1):
            if self.port == 0 or attempt > 1:
                self.port = free_port(self.host)
            try:
                self._spawn(exe)
                return self
            except _ExitedWhileStarting:
                if attempt == attempts:
                    raise
                log.warning("embedded broker could not start on port %d, trying another port", self.port)
        return self  # pragma: no cover - the loop either returns or raises

    def _spawn(self, exe: Path) -> None:
        assert self._dir is not None
        if broker_reachable(self.host, self.port, timeout=0.2):
            # Otherwise the readiness check below would mistake the other listener for our broker.
            raise _ExitedWhileStarting(f"port {self.host}:{self.port} is already in use by another process")
        conf = self._dir / "mosquitto.conf"
        logfile = self._dir / "mosquitto.log"
        conf.write_text(self._config(), encoding="utf-8")
        # The log is appended to across restarts; only this run's lines say whether this run is ready.
        log_start = logfile.stat().st_size if logfile.exists() else 0
        try:
            with open(logfile, "ab") as out:
                proc = subprocess.Popen(
                    [str(exe), "-c", str(conf)],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    # Its own process group: a Ctrl-C meant for edged must not kill the broker before
                    # edged has published its offline status through it.
                    start_new_session=True,
                )
        except OSError as exc:
            raise SinkError(f"cannot run mosquitto ({exe}): {exc}; {INSTALL_HINT}") from exc
        self._proc = proc
        deadline = time.monotonic() + self.start_timeout
        reachable_since: float | None = None
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                self._proc = None
                raise _ExitedWhileStarting(
                    f"mosquitto exited with code {proc.returncode} while starting on "
                    f"{self.host}:{self.port}: {self._log_tail()}"
                )
            if broker_reachable(self.host, self.port, timeout=0.2):
                now = time.monotonic()
                reachable_since = reachable_since or now
                # mosquitto logs "... running" once every listener is open; should a future version word
                # it differently, a port that stays open for half a second with mosquitto alive will do.
                if " running" in self._log_text(log_start) or now - reachable_since > 0.5:
                    log.info("embedded MQTT broker (mosquitto pid %d) listening on %s:%d",
                             proc.pid, self.host, self.port)
                    return
            time.sleep(0.02)
        self._terminate(proc)
        self._proc = None
        raise SinkError(
            f"mosquitto did not accept connections on {self.host}:{self.port} within "
            f"{self.start_timeout:g} s: {self._log_tail()}"
        )

    def _config(self) -> str:
        assert self._dir is not None
        lines = [
            "# written by edged: embedded broker, loopback only",
            f"listener {self.port} {self.host}",
            "allow_anonymous true",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",  # carries the "running" line that says the listener is open
            "connection_messages true",
            # mosquitto drops QoS 1 messages for a subscriber with more than 1000 queued (its default): a
            # dashboard or recorder that falls behind during a fast replay or a catch-up after an outage
            # would silently miss stages. Queue as many as edged's own outbox holds instead.
            "max_queued_messages 100000",
        ]
        if self.persistence:
            lines += [
                "persistence true",
                f"persistence_location {self._dir}/",
                # Save after every change: a test may SIGKILL the broker, and a restart must still find
                # the sessions and retained messages that existed before.
                "autosave_on_changes true",
                "autosave_interval 1",
            ]
        else:
            lines.append("persistence false")
        if os.geteuid() == 0:
            # As root, mosquitto 2 switches to the 'mosquitto' user, which cannot read our private
            # temporary directory; 'user root' tells it to stay.
            lines.append("user root")
        return "\n".join(lines) + "\n"

    def _log_text(self, offset: int = 0) -> str:
        """The broker's log from byte ``offset`` on."""
        if self._dir is None:
            return ""
        try:
            return (self._dir / "mosquitto.log").read_bytes()[offset:].decode("utf-8", errors="replace")
        except OSError:
            return ""

    def _log_tail(self, n: int = 10) -> str:
        return " | ".join(self._log_text().splitlines()[-n:]) or "(empty log)"

    @staticmethod
    def _terminate(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
        if proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log.warning("mosquitto (pid %d) ignored SIGTERM for %g s, killing it", proc.pid, timeout)
            proc.kill()
            proc.wait()

    def stop(self) -> None:
        """Stop mosquitto (SIGTERM, then SIGKILL after 5 s). Idempotent; keeps the port for a restart.

        Without persistence the temporary directory goes too (``start()`` writes a new one); with it, the
        database is kept for the restart until ``cleanup()``.
        """
        proc, self._proc = self._proc, None
        if proc is not None:
            self._terminate(proc)
            log.info("embedded MQTT broker on %s:%d stopped", self.host, self.port)
        if not self.persistence:
            self._remove_dir()

    def _remove_dir(self) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def cleanup(self) -> None:
        """Stop the broker and remove its temporary directory (config, log, database)."""
        self.stop()
        self._remove_dir()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.running else "stopped"
        return f"EmbeddedBroker({self.host}:{self.port}, {state})"
