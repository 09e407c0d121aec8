"""systemd's notification protocol (sd_notify), spoken directly: one datagram per message.

A ``Type=notify`` unit gets ``$NOTIFY_SOCKET`` (an AF_UNIX datagram socket; a leading ``@`` is the abstract
namespace) and, with ``WatchdogSec=``, ``$WATCHDOG_USEC``. edged sends ``READY=1`` once every device and
the publisher run, ``STATUS=...`` lines people see in ``systemctl status``, ``WATCHDOG=1`` at half the
watchdog interval while the pipeline really moves (decided by the daemon's supervisor, not here) and
``STOPPING=1`` when it begins to shut down. Outside systemd every call is a cheap no-op.

No dependency: the protocol is "send ``KEY=value`` lines to that socket" (sd_notify(3)), and python-systemd
is not on PyPI for every platform edged runs on.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


class Notifier:
    """Sends sd_notify messages to ``$NOTIFY_SOCKET`` (read once, at construction)."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.address: str | bytes | None = None
        path = env.get("NOTIFY_SOCKET", "")
        if path.startswith("@"):
            self.address = b"\0" + path[1:].encode()
        elif path.startswith("/"):
            self.address = path
        # WATCHDOG_PID, when set, names the process the watchdog is meant for (a wrapper may sit between).
        watchdog_pid = env.get("WATCHDOG_PID", "")
        usec = env.get("WATCHDOG_USEC", "")
        self.watchdog_seconds: float | None = None
        if usec.isdigit() and int(usec) > 0 and (not watchdog_pid or watchdog_pid == str(os.getpid())):
            self.watchdog_seconds = int(usec) / 1e6
        self._socket: socket.socket | None = None
        self._failed = False

    @property
    def enabled(self) -> bool:
        return self.address is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between two WATCHDOG=1 (half of systemd's timeout, as sd_watchdog_enabled(3) advises)."""
        return self.watchdog_seconds / 2 if self.watchdog_seconds and self.enabled else None

    def send(self, *lines: str) -> bool:
        """Send ``KEY=value`` lines as one datagram. False if there is no socket or sending failed (logged
        once: a notification that cannot be delivered must never stop the daemon)."""
        if self.address is None:
            return False
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._socket.sendto("\n".join(lines).encode(), self.address)
            return True
        except OSError as exc:
            if not self._failed:
                self._failed = True
                log.warning("cannot notify systemd through %s: %s", self.address, exc)
            return False

    def ready(self, status: str) -> bool:
        return self.send("READY=1", f"STATUS={status}")

    def status(self, status: str) -> bool:
        return self.send(f"STATUS={status}")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def stopping(self, status: str = "stopping") -> bool:
        return self.send("STOPPING=1", f"STATUS={status}")

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
