"""The ``serial`` backend: boards on a serial port (USB CDC, USB-UART, a pyserial URL), all night long.

Three wire protocols, chosen by the ``protocol`` option, each decoded by its pure codec in
``firmware_bridge``:

* ``cyton``: OpenBCI Cyton, 8 channels in uV at 250 Hz. Started with ``s`` (stop a stream left running),
  ``v`` (soft reset; the board answers with a banner ending in ``$$$``) and ``b`` (start), on every
  connection. The 8-bit packet counter is the loss signal: exact within a connection, with whole wraps
  (256 packets, about 1 s) resolved from how long the link was silent.
* ``framed``: edged's own protocol (``firmware_bridge/PROTOCOL.md``). Channel names and units come from
  the INFO message, the rate from DATA frames (read once at start-up, for up to 12 s, unless
  ``channel_names`` and ``fs`` are configured). Losses are exact from the sample index, within a
  connection AND across a reconnection, as long as the board kept counting (checked against its clock).
* ``ascii``: CSV-like lines (``firmware_bridge.framed.AsciiLineDecoder``) at the configured ``fs``, named
  by a header line or ``channel_names``. With a time column, losses follow from jumps in device time;
  without one, losses inside a connection cannot be seen at all (the protocol has no counter).

How the daemon sees it (the source contract, ``edged.sources.base``): ONE stream per device for the whole
night. :class:`~edged.sources.supervisor.Supervisor` reconnects with capped backoff after any serial
error or ``silence_seconds`` without valid data, and says so with ``Status`` events. Sample indices
continue across reconnections; what was lost in between is a ``Gap`` per channel:

* exact when the protocol knows it: counter jumps, the framed sample index (also across a reconnection);
* otherwise **estimated** from host time: ``round((t_first - t_last) * rate) - 1`` samples, where
  ``t_last`` is the clock model's host time of the last sample delivered before the loss, ``t_first`` the
  arrival of the first block after it minus that block's own duration (an upper bound on when its first
  sample was taken), and ``rate`` the device's rate as measured by the clock model (the nominal rate until
  it has measured one). The error is the transport latency of that first block times the rate: typically
  a sample or two at 250 Hz. Such gaps are counted in ``estimated_gaps``.

Nothing is ever invented: a lost span is a Gap, never interpolated samples.

Blocking serial reads never run on the event loop: a :class:`SerialLink` owns a reader thread that drains
the port continuously (so a busy loop, e.g. during inference on a Pi, cannot overflow the kernel's tty
buffer) and stamps each read with ``time.monotonic()`` as it returns, which is what the clock model
(``edged.sources.device_clock``) needs. Opening, writing and closing run in worker threads. A session
reads what the thread gathered every ``BATCH_SECONDS`` (50 ms) and sends one Chunk per channel for it, cut
only where samples were lost, so a 250-Hz Cyton makes ~20 chunks per second per channel, not one per
USB transfer.

Counters (in ``source.counters``, published with the device's counters): ``connections``, ``reconnects``,
``disconnects``; ``bad_packets`` (framed: frames failing COBS/CRC/length/version/value checks plus
unknown types; ascii: malformed lines), ``garbage_bytes`` (bytes skipped between packets: Cyton resync,
framed bytes before the first delimiter, the partial first line of an ascii connection);
``link_lost_samples`` (exact losses inside connections, per sample instant), ``outage_lost_samples``
(samples lost across reconnections, per sample instant), ``estimated_gaps``; ``mismatched_frames``
(framed DATA frames whose channel count or rate differ from the stream's: their samples become a gap);
``reader_dropped_bytes``; ``clock_drift_ppm`` and ``clock_offset_s``. The base class's ``samples`` and
``lost_samples`` count per channel, as for every source.
"""

from __future__ import annotations

import abc
import asyncio
import collections
import contextlib
import logging
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from dataclasses import dataclass

import numpy as np
import serial

from edged.errors import ConfigError, SourceError
from edged.sources.base import ChannelSpec, Chunk, Gap, Source, SourceEvent
from edged.sources.device_clock import DeviceClock
from edged.sources.supervisor import IDLE, Backoff, SessionItem, Supervisor
from firmware_bridge import cyton
from firmware_bridge.framed import AsciiCounters, AsciiLineDecoder, DataFrame, FramedDecoder, InfoMessage

log = logging.getLogger(__name__)

PROTOCOLS = ("cyton", "framed", "ascii")
READ_TIMEOUT = 0.1  # seconds a reader-thread read blocks: bounds how long closing a port can take
IDLE_AFTER = 0.25  # seconds a session waits for bytes before telling the supervisor it is idle
BATCH_SECONDS = 0.05  # shortest time between two reads of a session: samples per Chunk vs latency
INFO_WAIT = 12.0  # a framed board repeats INFO at least every 10 s (PROTOCOL.md section 4)
CYTON_RESET_WAIT = 3.0  # the Cyton's reply to 'v' ends with '$$$' well within this
MAX_BUFFERED = 8 << 20  # bytes the reader thread holds for a stalled event loop (~17 min of Cyton)
_U32 = 1 << 32


# ------------------------------------------------------------------------------------ the port


class SerialLink:
    """One open serial port and the thread that reads it. ``open``/``write``/``close`` block (run them in
    a worker thread); :meth:`read` is a coroutine. A failed port raises from :meth:`read`, after whatever
    was read before the failure has been delivered."""

    def __init__(self, url: str, baudrate: int) -> None:
        self.url = url
        self.baudrate = baudrate
        self.dropped_bytes = 0
        self._port: serial.SerialBase | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._items: collections.deque[tuple[float, bytes]] = collections.deque()
        self._buffered = 0
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready: asyncio.Event | None = None

    async def open(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._ready = asyncio.Event()
        await asyncio.to_thread(self._open)

    def _open(self) -> None:
        # exclusive: a second process on the same port would steal bytes from both.
        port = serial.serial_for_url(self.url, baudrate=self.baudrate, timeout=READ_TIMEOUT, exclusive=True)
        with self._lock:
            if self._closed:  # closed while opening (the session was cancelled): do not leak the port
                port.close()
                return
            self._port = port
        self._thread = threading.Thread(target=self._read_forever, name=f"serial-reader {self.url}", daemon=True)
        self._thread.start()

    def _read_forever(self) -> None:
        port = self._port
        assert port is not None
        while not self._stop.is_set():
            try:
                data = port.read(1)  # blocks until a byte or READ_TIMEOUT...
                if data:
                    data += port.read(port.in_waiting)  # ...then takes whatever else is already there
            except Exception as exc:  # noqa: BLE001  (any failure ends this connection; read() raises it)
                with self._lock:
                    self._error = exc
                self._wake()
                return
            if not data:
                continue
            arrival = time.monotonic()
            with self._lock:
                if self._buffered + len(data) > MAX_BUFFERED:
                    self.dropped_bytes += len(data)  # the loop has been stalled for minutes: count, drop
                    continue
                self._items.append((arrival, data))
                self._buffered += len(data)
            self._wake()

    def _wake(self) -> None:
        loop, ready = self._loop, self._ready
        if loop is not None and ready is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
                loop.call_soon_threadsafe(ready.set)

    async def read(self, timeout: float) -> list[tuple[float, bytes]]:
        """Everything read since the last call, as (arrival, bytes) pairs; waits up to ``timeout`` s for
        something. Raises the port's error once everything read before it has been returned."""
        assert self._ready is not None, "open() first"
        with self._lock:
            empty = not self._items and self._error is None
            if empty:
                self._ready.clear()
        if empty:
            # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow a cancellation that arrives
            # as the event is set, and a session that cannot be cancelled never closes its port.
            try:
                async with asyncio.timeout(timeout):
                    await self._ready.wait()
            except TimeoutError:
                pass
        with self._lock:
            items = list(self._items)
            self._items.clear()
            self._buffered = 0
            error = self._error
        if not items and error is not None:
            raise error
        return items

    async def read_until(self, marker: bytes, timeout: float) -> bytes | None:
        """Read until ``marker`` has arrived (returning everything up to and including it) or ``timeout``
        passes (None). Bytes after the marker are discarded: used only before a stream is started."""
        deadline = time.monotonic() + timeout
        seen = b""
        while (left := deadline - time.monotonic()) > 0:
            for _, data in await self.read(min(left, IDLE_AFTER)):
                seen += data
            at = seen.find(marker)
            if at >= 0:
                return seen[: at + len(marker)]
        return None

    def write(self, data: bytes) -> None:
        port = self._port
        if port is None:
            raise SourceError(f"{self.url}: port is not open")
        port.write(data)
        port.flush()

    def close(self) -> None:
        """Stop the reader and close the port. Idempotent; safe from any thread."""
        with self._lock:
            self._closed = True
            port, self._port = self._port, None
        self._stop.set()
        if port is None:
            return
        cancel = getattr(port, "cancel_read", None)
        if cancel is not None:
            # Wake a read blocked in select() now rather than after READ_TIMEOUT. The port may already be
            # gone (unplugged); closing it is all that is left either way.
            with contextlib.suppress(Exception):
                cancel()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2.0)
        try:
            port.close()
        except Exception as exc:  # noqa: BLE001  (a vanished device cannot be closed cleanly: nothing to do)
            log.debug("%s: closing: %s", self.url, exc)


def open_port_blocking(url: str, baudrate: int) -> serial.SerialBase:
    """A plain pyserial port (for start-up probes, which run before the event loop has other work)."""
    try:
        return serial.serial_for_url(url, baudrate=baudrate, timeout=READ_TIMEOUT, exclusive=True)
    except (serial.SerialException, OSError, ValueError) as exc:
        raise SourceError(f"serial port {url}: {exc}") from None


# ------------------------------------------------------------------------------------ protocols


@dataclass(frozen=True, slots=True)
class Layout:
    """What a device's stream carries, fixed before the first event: channel names and units, the nominal
    rate, and for ascii whether the first column is device time (None: let a header line decide)."""

    names: tuple[str, ...]
    units: tuple[str, ...]
    fs: float
    time_column: bool | None = None
    time_unit: str = "ms"


@dataclass(frozen=True, slots=True)
class Block:
    """Consecutive samples decoded from the wire, with what the protocol says about their position.

    ``values`` (n, channels) in channel units. ``lost_before``: samples the protocol says went missing just
    before ``values[0]`` (exact, or modulo the wire's ``lost_period``). ``device_time``: the device's clock
    at ``values[0]`` in seconds (None when the protocol has no clock: the sample index is the clock then).
    ``device_index``: the device's own index of ``values[0]`` (framed; wraps at 2**32). ``restarted``: the
    device began a new run, so this block's position relative to earlier ones is unknown.
    """

    values: np.ndarray
    lost_before: int = 0
    device_time: float | None = None
    device_index: int | None = None
    restarted: bool = False


def _split(lost: np.ndarray, restart: np.ndarray | None = None) -> list[tuple[int, int]]:
    """[start, end) runs of a decoded batch, cut before every sample preceded by a loss or a restart."""
    marks = lost[1:] != 0 if restart is None else (lost[1:] != 0) | restart[1:]
    cuts = np.concatenate(([0], np.flatnonzero(marks) + 1, [len(lost)]))
    return list(zip(cuts[:-1].tolist(), cuts[1:].tolist()))


class Wire(abc.ABC):
    """One protocol's side of a connection: start-up commands, decoding, counters."""

    lost_period: int | None = None  # lost_before is exact only modulo this many samples

    def __init__(self, device: str, layout: Layout) -> None:
        self.device = device
        self.layout = layout

    async def start(self, link: SerialLink, patience: float) -> None:
        """Commands that make the board stream, sent after every (re)connection."""

    @abc.abstractmethod
    def reset(self) -> None:
        """A new connection: forget any partial packet and the stream position (keep the counters)."""

    @abc.abstractmethod
    def feed(self, data: bytes) -> list[Block]: ...

    @abc.abstractmethod
    def stats(self) -> dict[str, int]:
        """``bad_packets`` and ``garbage_bytes`` so far (and any protocol-specific counters)."""


class CytonWire(Wire):
    lost_period = 256

    def __init__(self, device: str, layout: Layout, gain: int) -> None:
        super().__init__(device, layout)
        self.decoder = cyton.CytonDecoder(gains=gain)
        self._banner_logged = False
        self._silent_logged = False  # "no reply" is logged once until the board answers again

    async def start(self, link: SerialLink, patience: float) -> None:
        await asyncio.to_thread(link.write, cyton.CMD_STOP + cyton.CMD_SOFT_RESET)
        banner = await link.read_until(b"$$$", min(CYTON_RESET_WAIT, patience))
        if banner is None:
            level = logging.DEBUG if self._silent_logged else logging.INFO
            log.log(level, "%s: no reply to the Cyton soft reset ('v'): is the board switched on? Starting the "
                    "stream anyway", self.device)
            self._silent_logged = True
        else:
            self._silent_logged = False
            if not self._banner_logged:
                self._banner_logged = True
                text = banner.decode("ascii", "replace").replace("$$$", "").split()
                log.info("%s: Cyton says: %s", self.device, " ".join(text)[:200])
        self.decoder.reset()  # whatever came before the stream started is not part of it
        await asyncio.to_thread(link.write, cyton.CMD_START)

    def reset(self) -> None:
        self.decoder.reset()

    def feed(self, data: bytes) -> list[Block]:
        block = self.decoder.feed(data)
        if not len(block):
            return []
        return [Block(block.uv[a:b], int(block.lost_before[a])) for a, b in _split(block.lost_before)]

    def stats(self) -> dict[str, int]:
        c = self.decoder.counters
        return {"bad_packets": c.orphan_halves, "garbage_bytes": c.garbage_bytes}


class FramedWire(Wire):
    def __init__(self, device: str, layout: Layout, names_from_board: bool) -> None:
        super().__init__(device, layout)
        self.decoder = FramedDecoder()
        self.names_from_board = names_from_board
        self.mismatched_frames = 0
        self._carry = 0  # samples of mismatched frames, reported as lost before the next good one
        self._warned_info: tuple | None = None
        self._warned_mismatch = False

    def reset(self) -> None:
        self.decoder.reset()
        self._carry = 0

    def feed(self, data: bytes) -> list[Block]:
        out = []
        n_ch, fs = len(self.layout.names), self.layout.fs
        for msg in self.decoder.feed(data):
            if isinstance(msg, InfoMessage):
                self._check_info(msg)
                continue
            assert isinstance(msg, DataFrame)
            if msg.restarted:
                self._carry = 0
            if msg.n_channels != n_ch or abs(msg.sample_rate - fs) > 1e-4 * fs:
                # The board changed its set-up under us (new firmware?): samples we cannot place in the
                # declared channels are lost, and said so, rather than shoehorned in.
                self.mismatched_frames += 1
                self._carry += msg.lost_samples_before + msg.n_samples
                if not self._warned_mismatch:
                    self._warned_mismatch = True
                    log.error("%s: DATA frames carry %d channels at %g Hz, the stream was set up for %d at %g Hz: "
                              "their samples are counted as lost (restart edged to follow the board)",
                              self.device, msg.n_channels, msg.sample_rate, n_ch, fs)
                continue
            out.append(Block(msg.values(), msg.lost_samples_before + self._carry, msg.timestamp_us * 1e-6,
                             msg.first_sample, msg.restarted))
            self._carry = 0
        return out

    def _check_info(self, msg: InfoMessage) -> None:
        names = tuple(c.name for c in msg.channels)
        if names == self.layout.names or not self.names_from_board or names == self._warned_info:
            return
        self._warned_info = names
        log.warning("%s: the board now names its channels %s; the stream keeps %s (restart edged to follow)",
                    self.device, ", ".join(names), ", ".join(self.layout.names))

    def stats(self) -> dict[str, int]:
        c = self.decoder.counters
        return {"bad_packets": c.bad_frames + c.unknown_type, "garbage_bytes": c.skipped_bytes,
                "mismatched_frames": self.mismatched_frames}


def first_line_filter(data: bytes) -> tuple[bytes, int, bool]:
    """The first bytes of an ascii connection: (bytes to decode, bytes dropped, whether filtering is over,
    i.e. the first line was kept or has ended).

    The port was opened mid-stream, so the first line may be the tail of one, and a tail of numbers can
    parse as a wrong sample: a first line of numbers is dropped. A text line (header, banner) is kept, so
    a board that prints its header right after the port opens is still understood."""
    cut = data.find(b"\n")
    first = data if cut < 0 else data[: cut + 1]
    if any(c.isalpha() for c in first.decode("ascii", "replace")):
        return data, 0, True
    return data[len(first):], len(first), cut >= 0


class AsciiWire(Wire):
    def __init__(self, device: str, layout: Layout) -> None:
        super().__init__(device, layout)
        self.time_column = layout.time_column  # None until the first connection's header decides
        self.time_unit = layout.time_unit
        self._earlier = AsciiCounters()  # counters of the decoders of earlier connections
        self._skipped = 0
        self.decoder = self._new_decoder()
        self._first_line = True
        self._last_time: float | None = None

    def _new_decoder(self) -> AsciiLineDecoder:
        return AsciiLineDecoder(n_channels=len(self.layout.names), time_column=self.time_column,
                                time_unit=self.time_unit)

    def reset(self) -> None:
        old = self.decoder.counters
        self._earlier.lines += old.lines
        self._earlier.malformed += old.malformed
        self._earlier.headers += old.headers
        self.decoder = self._new_decoder()
        self._first_line = True
        self._last_time = None

    def feed(self, data: bytes) -> list[Block]:
        if self._first_line:
            data = self._drop_partial_line(data)
            if not data:
                return []
        block = self.decoder.feed(data)
        if not len(block):
            return []
        if self.time_column is None:  # pinned for later connections, which may miss the header
            self.time_column = bool(self.decoder.time_column)
            self.time_unit = self.decoder.time_unit
        if block.times_s is None:
            return [Block(block.values)]
        t = block.times_s
        prev = np.nan if self._last_time is None else self._last_time
        self._last_time = float(t[-1])
        steps = np.diff(t, prepend=prev)
        # A time step of k sample periods (k >= 2) means k - 1 lines never arrived; a step back means the
        # board restarted its clock. Round to whole periods: millis() is only good to a millisecond.
        periods = np.rint(steps * self.layout.fs)
        lost = np.where(periods >= 2, periods - 1, 0).astype(np.int64)
        restart = steps <= 0
        return [Block(block.values[a:b], int(lost[a]), float(t[a]), None, bool(restart[a]))
                for a, b in _split(lost, restart)]

    def _drop_partial_line(self, data: bytes) -> bytes:
        kept, skipped, over = first_line_filter(data)
        self._skipped += skipped
        self._first_line = not over
        return kept

    def stats(self) -> dict[str, int]:
        return {"bad_packets": self._earlier.malformed + self.decoder.counters.malformed,
                "garbage_bytes": self._skipped}


# ------------------------------------------------------------------------------------ the source


class SerialSource(Source):
    """See the module docstring. Options (validated by the config, see ``edged.sources.registry``)."""

    def __init__(
        self,
        device: str,
        *,
        port: str,
        protocol: str,
        baudrate: int = 115200,
        channel_names: Sequence[str] = (),
        fs: float = 0.0,
        units: str = "",
        gain: int = cyton.DEFAULT_GAIN,
        silence_seconds: float = 5.0,
        reconnect_min: float = 1.0,
        reconnect_max: float = 30.0,
    ) -> None:
        super().__init__(device)
        problems = []
        if protocol not in PROTOCOLS:
            problems.append(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
        if protocol == "ascii" and not fs > 0:
            problems.append("protocol 'ascii' needs fs (the board's sample rate in Hz): lines carry no rate")
        if protocol == "cyton" and channel_names and len(channel_names) != cyton.N_CHANNELS:
            problems.append(f"a Cyton has {cyton.N_CHANNELS} channels; channel_names names {len(channel_names)}")
        if protocol == "cyton" and gain not in cyton.ALLOWED_GAINS:
            problems.append(f"gain must be one of {cyton.ALLOWED_GAINS}, got {gain}")
        if len(set(channel_names)) != len(channel_names) or any(not n for n in channel_names):
            problems.append("channel_names must be distinct and non-empty")
        if not 0 < reconnect_min <= reconnect_max:
            problems.append("need 0 < reconnect_min <= reconnect_max")
        if not silence_seconds > 0:
            problems.append("silence_seconds must be positive")
        if problems:
            raise ConfigError([f"device {device!r}: {p}" for p in problems])
        self.port = port
        self.protocol = protocol
        self.baudrate = baudrate
        self.channel_names = tuple(channel_names)
        self.fs = fs
        self.units = units
        self.gain = gain
        self.silence_seconds = silence_seconds
        self.clock = DeviceClock()
        self.counters.update({
            "connections": 0, "reconnects": 0, "disconnects": 0, "bad_packets": 0, "garbage_bytes": 0,
            "link_lost_samples": 0, "outage_lost_samples": 0, "estimated_gaps": 0, "reader_dropped_bytes": 0,
        })
        self.supervisor = Supervisor(device, silence_seconds=silence_seconds,
                                     backoff=Backoff(reconnect_min, reconnect_max), counters=self.counters)
        self._layout: Layout | None = None
        self._wire: Wire | None = None
        self._link: SerialLink | None = None
        self._dropped_bytes_before = 0  # reader drops of earlier links
        # Stream position: the next stream index, and where the last delivered sample was.
        self._next_index = 0
        self._started = False
        self._resume = False  # the next block is the first of a new connection
        self._last_x: float | None = None  # clock position (device seconds) of the last delivered sample
        self._last_arrival = 0.0
        self._next_device_index: int | None = None
        self._next_device_time: float | None = None

    # -- channels ------------------------------------------------------------------------------------

    def channels(self) -> list[ChannelSpec]:
        layout = self.layout()
        return [ChannelSpec(name, "signal", layout.fs, unit) for name, unit in zip(layout.names, layout.units)]

    def layout(self) -> Layout:
        """The stream's layout: from the protocol and the config, or read from the board once (framed
        without ``channel_names`` and ``fs``; ascii without ``channel_names``)."""
        if self._layout is None:
            self._layout = self._make_layout()
        return self._layout

    def _make_layout(self) -> Layout:
        if self.protocol == "cyton":
            names = self.channel_names or tuple(f"ch{i + 1}" for i in range(cyton.N_CHANNELS))
            return Layout(names, ("uV",) * cyton.N_CHANNELS, cyton.SAMPLE_RATE)
        if self.protocol == "framed":
            if self.channel_names and self.fs > 0:
                return Layout(self.channel_names, (self.units,) * len(self.channel_names), self.fs)
            return self._probe_framed()
        if self.channel_names:
            return Layout(self.channel_names, (self.units,) * len(self.channel_names), self.fs)
        return self._probe_ascii()

    def _probe(self, what: str, done: Callable[[bytes], bool]) -> None:
        """Read the port for up to INFO_WAIT seconds, feeding ``done(bytes) -> bool`` until it says yes.

        This runs once, at start-up, before the daemon has anything else to do (it blocks the caller)."""
        deadline = time.monotonic() + INFO_WAIT
        advice = ("configure channel_names" + (" and fs" if self.protocol == "framed" else "")
                  + " to start without the board")
        try:
            port = open_port_blocking(self.port, self.baudrate)
        except SourceError as exc:
            raise SourceError(f"{exc}; the channels must be read from the board: {advice}") from None
        try:
            while time.monotonic() < deadline:
                try:
                    data = port.read(max(1, port.in_waiting))
                except (serial.SerialException, OSError) as exc:
                    raise SourceError(f"serial port {self.port}: {exc}") from None
                if data and done(data):
                    return
        finally:
            port.close()
        raise SourceError(f"serial port {self.port}: no {what} within {INFO_WAIT:g} s, so the channels are unknown; "
                          f"check the board and its protocol ({self.protocol!r}), or {advice}")

    def _probe_framed(self) -> Layout:
        decoder = FramedDecoder()
        found: dict[str, object] = {}

        def done(data: bytes) -> bool:
            for msg in decoder.feed(data):
                key = "info" if isinstance(msg, InfoMessage) else "data"
                found.setdefault(key, msg)
            return "data" in found and ("info" in found or bool(self.channel_names))

        self._probe("INFO and DATA frames" if not self.channel_names else "DATA frame", done)
        data = found["data"]
        assert isinstance(data, DataFrame)
        fs = self.fs or float(data.sample_rate)
        if self.channel_names:
            names, units = self.channel_names, (self.units,) * len(self.channel_names)
        else:
            info = found["info"]
            assert isinstance(info, InfoMessage)
            names = tuple(c.name for c in info.channels)
            units = tuple(c.unit or self.units for c in info.channels)
        if len(names) != data.n_channels:
            raise SourceError(f"serial port {self.port}: the board names {len(names)} channels but its DATA "
                              f"frames carry {data.n_channels}")
        log.info("%s: board on %s streams %s at %g Hz", self.device, self.port, ", ".join(names), fs)
        return Layout(names, units, fs)

    def _probe_ascii(self) -> Layout:
        decoder = AsciiLineDecoder()  # nothing fixed yet: a header line or the first data line decides
        first_line = True

        def done(data: bytes) -> bool:
            nonlocal first_line
            if first_line:
                data, _, over = first_line_filter(data)
                first_line = not over
            return bool(data) and len(decoder.feed(data)) > 0

        self._probe("data line", done)
        assert decoder.n_channels is not None
        names = decoder.channel_names or tuple(f"ch{i + 1}" for i in range(decoder.n_channels))
        log.info("%s: board on %s prints %s%s at %g Hz (as configured)", self.device, self.port, ", ".join(names),
                 f" with device time in {decoder.time_unit}" if decoder.time_column else "", self.fs)
        return Layout(tuple(names), (self.units,) * len(names), self.fs, bool(decoder.time_column),
                      decoder.time_unit)

    def _make_wire(self, layout: Layout) -> Wire:
        if self.protocol == "cyton":
            return CytonWire(self.device, layout, self.gain)
        if self.protocol == "framed":
            return FramedWire(self.device, layout, names_from_board=not self.channel_names)
        return AsciiWire(self.device, layout)

    # -- events --------------------------------------------------------------------------------------

    async def _events(self) -> AsyncIterator[SourceEvent]:
        layout = self.layout()
        self._wire = self._make_wire(layout)
        async for event in self.supervisor.run(self._session):
            yield event

    async def _session(self) -> AsyncGenerator[SessionItem, None]:
        """One connection: open, start, read and decode until the port fails. The supervisor times
        silence and reconnects."""
        wire = self._wire
        assert wire is not None
        link = self._link = SerialLink(self.port, self.baudrate)
        try:
            await link.open()
            wire.reset()
            self._resume = self._started
            await wire.start(link, self.silence_seconds / 2)
            while True:
                started = time.monotonic()
                reads = await link.read(IDLE_AFTER)  # raises when the port fails
                placed: list[tuple[Block, float, int]] = []
                for arrival, data in reads:
                    blocks = wire.feed(data)
                    later = sum(len(b.values) for b in blocks)
                    for block in blocks:
                        later -= len(block.values)
                        placed.append((block, arrival, later))
                events = self._place_all(placed)
                self._update_counters(link)
                for event in events:
                    yield event
                if not events:
                    yield IDLE
                # Let a few reads' worth gather (the reader thread holds them): one Chunk per channel per
                # BATCH_SECONDS rather than per USB transfer keeps a Cyton at ~20 events/s per channel.
                await asyncio.sleep(max(0.0, BATCH_SECONDS - (time.monotonic() - started)))
        finally:
            self._link = None
            self._dropped_bytes_before += link.dropped_bytes
            await asyncio.to_thread(link.close)

    def _update_counters(self, link: SerialLink) -> None:
        assert self._wire is not None
        self.counters.update(self._wire.stats())
        self.counters["reader_dropped_bytes"] = self._dropped_bytes_before + link.dropped_bytes
        if self.clock.ready:
            self.counters.update(self.clock.state())

    async def close(self) -> None:
        link = self._link
        if link is not None:
            await asyncio.to_thread(link.close)

    # -- placing blocks in the stream ---------------------------------------------------------------

    def rate(self) -> float:
        """Samples per host second: measured by the clock model once it has fitted, else nominal."""
        fs = self.layout().fs
        return fs / self.clock.host_seconds_per_device_second if self.clock.fits else fs

    def _last_host_time(self) -> float:
        """Host time of the last sample delivered: from the clock model, else its arrival."""
        if self.clock.ready and self._last_x is not None:
            return float(self.clock.host_time(self._last_x))
        return self._last_arrival

    def _place_all(self, placed: list[tuple[Block, float, int]]) -> list[SourceEvent]:
        """Events for decoded blocks in stream order (each with its read's arrival and the samples after it
        in that read): consecutive blocks join into one Chunk per channel, cut only where samples are lost."""
        names = self.layout().names
        events: list[SourceEvent] = []
        run: list[np.ndarray] = []
        run_start, run_arrival = 0, 0.0

        def flush() -> None:
            if run:
                values = np.concatenate(run) if len(run) > 1 else run[0]
                events.extend(Chunk(name, run_start, np.ascontiguousarray(values[:, i]), run_arrival)
                              for i, name in enumerate(names))
                run.clear()

        for block, arrival, later in placed:
            start, missing = self._place(block, arrival, later)
            if missing:
                flush()
                events.extend(Gap(name, start, missing, missing / self.layout().fs, arrival) for name in names)
            if not run:
                run_start = start + missing
            run.append(block.values)
            run_arrival = arrival  # latency is measured from when the newest sample arrived
        flush()
        return events

    def _place(self, block: Block, arrival: float, later: int = 0) -> tuple[int, int]:
        """Put one decoded block in the stream: the stream index where it (or the gap before it) starts and
        the samples lost just before it. ``arrival``: its read's arrival; ``later``: samples after it in
        that read."""
        layout = self.layout()
        fs = layout.fs
        n = len(block.values)
        rate = self.rate()
        # The latest its first sample can have been taken: the read's arrival, less the samples behind it in
        # the read (all already buffered when a stalled host read them in one go).
        first_host = arrival - (n + later - 1) / rate
        estimated = False
        if not self._started:
            missing = 0
            self._started = True
            # Wall-clock time of stream sample 0, placed by the host clock at its arrival.
            self.anchor_time = time.time() - (time.monotonic() - first_host)
        elif self._resume or block.restarted:
            missing, estimated = self._outage(block, first_host, rate)
            log.info("%s: stream resumes after %d lost samples (%.2f s; %s)", self.device, missing, missing / fs,
                     "estimated from host time" if estimated else "exact, from the board's own count")
            self.counters["outage_lost_samples"] += missing
            self.counters["estimated_gaps"] += int(estimated)
            self._resume = False
        else:
            missing = block.lost_before
            if self._wire is not None and self._wire.lost_period and missing:
                # The counter is exact only modulo its period: whole periods lost in a long dropout show only
                # in host time, from the last sample before it to the first after it. Right while that time
                # is known to half a period (Cyton: 0.5 s), which transport latency (ms) leaves far behind.
                elapsed = first_host - self._last_host_time()
                missing = cyton.unwrap_lost(missing, self._wire.lost_period, elapsed, rate)
            self.counters["link_lost_samples"] += missing
        start = self._next_index
        self._next_index = start + missing + n
        # The clock model: device seconds of this block's newest sample against the latest it can have been
        # taken (the read's arrival, less the samples after it in the read).
        if estimated:
            self.clock.reset(keep_drift=True)  # the position was estimated: do not fit across the step
        if block.device_time is not None:
            x_last = block.device_time + (n - 1) / fs
            self._next_device_time = block.device_time + n / fs
        else:
            x_last = (self._next_index - 1) / fs
        self.clock.observe(x_last, arrival - later / rate)
        self._last_x = x_last
        self._last_arrival = arrival
        if block.device_index is not None:
            self._next_device_index = (block.device_index + n) % _U32
        return start, missing

    def _outage(self, block: Block, first_host: float, rate: float) -> tuple[int, bool]:
        """Samples lost between the last delivered sample and ``block`` (a new connection, or a device
        that restarted); and whether that number is an estimate."""
        fs = self.layout().fs
        host_span = max(0.0, first_host - self._last_host_time())  # from the last sample to this block's first
        if not block.restarted and block.device_time is not None and self._next_device_time is not None:
            # The board may have kept counting while we were away: then its own clock says exactly what
            # we missed. Believe it only if its clock went forward by about what the host's did (a
            # board that rebooted and happens to be ahead would otherwise fake a position).
            device_span = block.device_time - self._next_device_time
            host_in_device = host_span / self.clock.host_seconds_per_device_second
            if device_span >= -0.5 / fs and abs(device_span - host_in_device) <= 0.25 * host_in_device + 2.0:
                if block.device_index is not None and self._next_device_index is not None:
                    by_index = (block.device_index - self._next_device_index) % _U32
                    if abs(by_index / fs - device_span) <= 0.01 * device_span + 0.1:
                        return by_index, False
                else:
                    return max(0, round(device_span * fs)), False
            log.debug("%s: the board's position is not plausible (device %.3f s, host %.3f s): estimating",
                      self.device, device_span, host_in_device)
        return max(0, round(host_span * rate) - 1), True
