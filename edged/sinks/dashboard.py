"""The built-in live dashboard: one page served by edged, updated by server-sent events.

An HTTP/1.1 server on the daemon's own asyncio loop (``asyncio`` streams, no web framework), on loopback
by default. Three static files (``edged/data/dashboard/``) and one event stream:

``GET /events`` (``text/event-stream``)
    ``hello`` first (node, run id, devices and their models), then the stage messages kept in memory
    (the same JSON as the MQTT ``stage`` topic, each with ``id: {run}-{seq}``), then each device's
    current availability and counters, then live events as they happen. ``retry:`` tells the browser to
    reconnect after 2 s when the stream ends (the daemon restarted, the network blinked); the browser
    then sends ``Last-Event-ID`` and gets only what it missed, provided it is the same daemon run and the
    events are still in memory. Otherwise it gets everything kept, and the page merges by message id, so
    nothing is shown twice.

Why server-sent events rather than WebSocket or MQTT over websockets: the traffic is one way, one event
per device per 30 s; SSE brings reconnection and resume (``Last-Event-ID``) in every browser for free, and
needs neither a framing library on the server nor a websocket listener on the broker.

Memory is bounded: ``history_epochs`` stage messages per device, and a browser that falls more than
``_CLIENT_BACKLOG`` live events behind is disconnected (it reconnects and resumes). Calls from the pipeline
never wait on a browser.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import heapq
import ipaddress
import itertools
import json
import logging
import os
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final

from edged import __version__
from edged.errors import SinkError
from edged.scoring.epoch import ScoredEpoch
from edged.sinks import contract

log = logging.getLogger(__name__)

RETRY_MS: Final = 2000  # how soon a browser reconnects after the stream ends
_PING_SECONDS: Final = 15.0  # a comment line this often keeps proxies from closing an idle stream
_CLIENT_BACKLOG: Final = 5000  # events queued for one browser before it is dropped (it then resumes)
_REQUEST_TIMEOUT: Final = 10.0
_WRITE_TIMEOUT: Final = 10.0
_MAX_REQUEST: Final = 16 * 1024

_STATIC: Final = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
}


@dataclass(frozen=True, slots=True)
class DashboardDevice:
    name: str
    model_id: str
    classes: tuple[str, ...]
    synthetic: bool

    @classmethod
    def from_manifest(cls, name: str, manifest: Any) -> DashboardDevice:
        return cls(name, manifest.id, tuple(manifest.classes), bool(manifest.synthetic))


def _event(name: str, data: Mapping[str, Any], event_id: str | None = None) -> bytes:
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {name}\ndata: {text}\n\n".encode()


class _Client:
    """One connected browser: events waiting to be written, bounded."""

    def __init__(self, catch_up: list[bytes]) -> None:
        self.pending: collections.deque[bytes] = collections.deque(catch_up)
        # Room for the catch-up plus a backlog: a large history must not make a new browser overflow.
        self.limit = len(catch_up) + _CLIENT_BACKLOG
        self.wake = asyncio.Event()
        self.overflowed = False  # too far behind, hung up, or the server is stopping: end the stream

    def push(self, event: bytes) -> None:
        if len(self.pending) >= self.limit:
            self.overflowed = True  # the writer loop ends the stream; the browser resumes from its last id
        else:
            self.pending.append(event)
        self.wake.set()


class DashboardSink:
    """A :class:`edged.sinks.base.Sink` that serves the live page. ``await start()`` on the daemon's loop,
    ``close()`` (idempotent) then ``await wait_closed()``."""

    def __init__(
        self,
        node: str,
        devices: Iterable[DashboardDevice],
        *,
        host: str = "127.0.0.1",
        port: int = 8765,
        history_epochs: int = 1440,
        max_clients: int = 16,
    ) -> None:
        if history_epochs < 1 or max_clients < 1:
            raise ValueError("history_epochs and max_clients must be at least 1")
        self.node = node
        self.devices = {d.name: d for d in devices}
        self.host = host
        self.port = port
        self.max_clients = max_clients
        # A new id per daemon run: a browser's Last-Event-ID from an earlier run means "send everything".
        self.run = uuid.uuid4().hex[:8]
        self._seq = itertools.count(1)
        self._history: dict[str, collections.deque[tuple[int, bytes]]] = collections.defaultdict(
            lambda: collections.deque(maxlen=history_epochs))
        self._availability: dict[str, tuple[bool, float]] = {}
        self._counters: dict[str, dict[str, Any]] = {}
        self._clients: set[_Client] = set()
        self._files: dict[str, bytes] = {}
        self._server: asyncio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._connections: set[asyncio.Task] = set()
        self._bound_ip = "127.0.0.1"
        self._closed = False

    # --------------------------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Load the page and listen. Raises :class:`SinkError` if the address cannot be bound."""
        folder = resources.files("edged") / "data" / "dashboard"
        for name, _ in _STATIC.values():
            self._files[name] = (folder / name).read_bytes()
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        try:
            self._server = await asyncio.start_server(self._serve, self.host, self.port, limit=_MAX_REQUEST)
        except OSError as exc:
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise SinkError(f"dashboard: cannot listen on {self.host}:{self.port}: {reason} "
                            "(set [dashboard] host/port)") from None
        self._bound_ip, self.port = self._server.sockets[0].getsockname()[:2]
        log.info("dashboard: http://%s:%d/ (run %s)", self._url_host(), self.port, self.run)

    def _url_host(self) -> str:
        return f"[{self.host}]" if ":" in self.host else self.host

    @property
    def url(self) -> str:
        return f"http://{self._url_host()}:{self.port}/"

    def close(self, timeout: float = 5.0) -> None:
        """Stop listening and end every stream (browsers retry and find the next run). Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._loop is None or self._loop.is_closed():
            return
        if threading.get_ident() == self._loop_thread:
            self._shutdown()
        else:
            self._loop.call_soon_threadsafe(self._shutdown)

    def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for client in self._clients:
            client.overflowed = True  # ends its writer loop
            client.wake.set()

    async def wait_closed(self) -> None:
        # Streams end at once (close() told them to); a request still being read gets 2 s, then is cut.
        # Connections first: from Python 3.12 on, Server.wait_closed() waits for every one of them.
        await asyncio.sleep(0)  # let a close() scheduled from another thread run first
        if self._connections:
            await asyncio.wait(self._connections, timeout=2.0)
        for task in list(self._connections):
            task.cancel()
        if self._server is not None:
            await self._server.wait_closed()

    # ------------------------------------------------------------------------------- sink calls

    def publish_stage(self, epoch: ScoredEpoch) -> None:
        self._call(self._stage, contract.stage_payload(epoch, self.node))

    def set_availability(self, device: str, online: bool) -> None:
        self._call(self._set_availability, device, online)

    def publish_counters(self, device: str, counters: dict[str, int | float]) -> None:
        self._call(self._set_counters, device, contract.counters_payload(self.node, device, counters))

    def _call(self, fn, *args: Any) -> None:
        # The daemon calls sinks from its loop; anything else is handed over, never run concurrently.
        if self._loop is None or threading.get_ident() == self._loop_thread:
            fn(*args)
        elif not self._loop.is_closed():
            self._loop.call_soon_threadsafe(fn, *args)

    def _stage(self, payload: dict[str, Any]) -> None:
        seq = next(self._seq)
        event = _event("stage", payload, f"{self.run}-{seq}")
        self._history[payload["device"]].append((seq, event))
        self._broadcast(event)

    def _set_availability(self, device: str, online: bool) -> None:
        self._availability[device] = (online, round(time.time(), 3))  # when it changed, for a late browser
        self._broadcast(self._availability_event(device))

    def _set_counters(self, device: str, payload: dict[str, Any]) -> None:
        self._counters[device] = payload
        self._broadcast(_event("counters", payload))

    def _availability_event(self, device: str) -> bytes:
        online, since = self._availability[device]
        return _event("availability", {"device": device, "online": online, "ts": since})

    def _broadcast(self, event: bytes) -> None:
        for client in self._clients:
            client.push(event)

    # ----------------------------------------------------------------------------------- HTTP

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        try:
            await self._respond(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError, asyncio.LimitOverrunError,
                ValueError):
            pass  # the browser went away or sent garbage: nothing to keep
        finally:
            if task is not None:
                self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _respond(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async with asyncio.timeout(_REQUEST_TIMEOUT):
            head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            await self._plain(writer, 400, "Bad Request", "bad request line")
            return
        method, target, _ = parts
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        path, _, query = target.partition("?")
        if not self._host_allowed(headers.get("host", "")):
            await self._plain(writer, 421, "Misdirected Request", "this dashboard answers to localhost only")
        elif method not in ("GET", "HEAD"):
            await self._plain(writer, 405, "Method Not Allowed", "only GET and HEAD", allow="GET, HEAD")
        elif path == "/events":
            # A browser resuming sends Last-Event-ID; the page restarting a failed stream passes ?last=.
            last = headers.get("last-event-id") or urllib.parse.parse_qs(query).get("last", [""])[0]
            await self._stream(reader, writer, last, head_only=method == "HEAD")
        elif path in _STATIC:
            name, content_type = _STATIC[path]
            await self._send(writer, 200, "OK", content_type, self._files[name], head_only=method == "HEAD")
        else:
            await self._plain(writer, 404, "Not Found", f"no such page: {path}")

    def _host_allowed(self, host: str) -> bool:
        """On loopback, only requests addressed to a loopback name: a web page the user visits could
        otherwise point its own domain at 127.0.0.1 (DNS rebinding) and read the night's data."""
        if not ipaddress.ip_address(self._bound_ip).is_loopback:
            return True
        name = host.rsplit(":", 1)[0] if not host.startswith("[") else host[1:].split("]", 1)[0]
        return name.lower() in ("localhost", "127.0.0.1", "::1") or name.startswith("127.")

    async def _send(self, writer: asyncio.StreamWriter, status: int, reason: str, content_type: str,
                    body: bytes, *, head_only: bool = False, **extra: str) -> None:
        fields = {"Content-Type": content_type, "Content-Length": str(len(body)), "Cache-Control": "no-cache",
                  "X-Content-Type-Options": "nosniff", "Connection": "close",
                  **{k.replace("_", "-").title(): v for k, v in extra.items()}}
        writer.write(f"HTTP/1.1 {status} {reason}\r\n".encode()
                     + "".join(f"{k}: {v}\r\n" for k, v in fields.items()).encode() + b"\r\n"
                     + (b"" if head_only else body))
        await writer.drain()

    async def _plain(self, writer: asyncio.StreamWriter, status: int, reason: str, text: str, **extra: str) -> None:
        await self._send(writer, status, reason, "text/plain; charset=utf-8", (text + "\n").encode(), **extra)

    # ------------------------------------------------------------------------------- the stream

    def _catch_up(self, last_event_id: str) -> list[bytes]:
        """Everything a browser needs after ``last_event_id``: the hello, missed stage messages in the
        order they happened, then the current availability and counters of every device."""
        run, _, seq_text = last_event_id.rpartition("-")
        after = int(seq_text) if run == self.run and seq_text.isdigit() else 0
        hello = {
            "v": contract.CONTRACT_VERSION, "node": self.node, "run": self.run, "version": __version__,
            "resumed": after > 0, "synthetic_warning": contract.SYNTHETIC_WARNING,
            "devices": [{"name": d.name, "model": d.model_id, "classes": list(d.classes), "synthetic": d.synthetic}
                        for d in self.devices.values()],
        }
        out = [f"retry: {RETRY_MS}\n\n".encode(), _event("hello", hello)]
        merged = heapq.merge(*self._history.values(), key=lambda item: item[0])
        out += [event for seq, event in merged if seq > after]
        out += [self._availability_event(d) for d in self._availability]
        out += [_event("counters", c) for c in self._counters.values()]
        return out

    async def _stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, last_event_id: str, *,
                      head_only: bool) -> None:
        if self._closed:
            await self._plain(writer, 503, "Service Unavailable", "edged is stopping", retry_after="2")
            return
        if len(self._clients) >= self.max_clients:
            await self._plain(writer, 503, "Service Unavailable", "too many dashboards open", retry_after="10")
            return
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
                     b"Cache-Control: no-cache\r\nX-Accel-Buffering: no\r\nConnection: close\r\n\r\n")
        if head_only:
            await writer.drain()
            return
        # Snapshot and registration without an await in between: no event can fall between the two.
        client = _Client(self._catch_up(last_event_id))
        self._clients.add(client)
        # A closed tab is only noticed on the next write otherwise, up to a ping later: watch for EOF so its
        # slot (max_clients) is freed at once.
        watcher = asyncio.create_task(self._watch_for_hang_up(reader, client))
        try:
            while not client.overflowed:
                while client.pending:
                    writer.write(client.pending.popleft())
                async with asyncio.timeout(_WRITE_TIMEOUT):
                    await writer.drain()
                client.wake.clear()
                if client.pending or client.overflowed:
                    continue
                try:
                    async with asyncio.timeout(_PING_SECONDS):
                        await client.wake.wait()
                except TimeoutError:
                    writer.write(b": ping\n\n")
        finally:
            watcher.cancel()
            self._clients.discard(client)

    @staticmethod
    async def _watch_for_hang_up(reader: asyncio.StreamReader, client: _Client) -> None:
        with contextlib.suppress(ConnectionError):
            while await reader.read(1024):
                pass  # a browser sends nothing after its request; whatever comes is ignored
        client.overflowed = True
        client.wake.set()

