"""BLE sources: heart-rate straps and watches (Heart Rate Service) and Polar PMD streams (H10 ECG,
Verity Sense / OH1 PPG and PPI), each supervised all night through bleak.

bleak has no automatic reconnect, and a BLE link at night fails in two ways: the link drops (bleak calls
``disconnected_callback``), or notifications simply stop while the link looks fine (BlueZ is known to do
this after 30-100 s). :class:`BleSource` treats both as loss: after ``silence_seconds`` without data it
disconnects, then RESCANS (a stale ``BLEDevice`` is a common reason reconnects fail on BlueZ), connects to
the fresh ``BLEDevice`` and RE-ENABLES notifications (and restarts PMD streams), with capped exponential
backoff and jitter between attempts. Each loss is a ``Status(False)`` and each connection a
``Status(True)``, published as the device's availability. The stream stays one stream: indices continue
and the lost span is an explicit :class:`Gap`, never spliced:

* HRS (``rr``): intervals carry no timestamps, so the lost span comes from :class:`RRBeatClock`, which
  places beats on the host's clock from notification arrival times and reports silences it could not
  explain with intervals.
* PMD ECG/PPG: every frame carries the sensor time of its last sample, so lost samples are counted from
  timestamps and sample counts (the sensor's true rate, which differs from nominal by up to ~1 %, is
  measured from loss-free frames): exact to the sample while the sensor's clock runs.
* PMD PPI: every interval's closing beat has a sensor time; a jump between one frame's first beat and the
  previous frame's last is the lost span.

Transport: ``backend = ""`` uses bleak's platform backend (BlueZ on a Pi); ``backend = "replay:<recording>
[?options]"`` uses :mod:`edged.sources.ble_replay`, a bleak backend that replays a real recording as GATT
notifications, so the whole daemon runs without Bluetooth hardware. Every duration here (silence, backoff,
scan and command timeouts) is measured on the transport's clock: host seconds for a real device, recording
seconds for a replay at ``speed`` x real time.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from bleak import BleakClient, BleakScanner
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.client import BaseBleakClient
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData, BaseBleakScanner
from bleak.exc import BleakError

from edged.errors import ConfigError, SourceError
from edged.sources.base import ChannelSpec, Chunk, Gap, Source, SourceEvent, Status
from edged.sources.clock import RRBeatClock
from edged.sources.supervisor import Backoff, describe
from firmware_bridge import polar_pmd as pmd
from firmware_bridge.errors import DecodeError
from firmware_bridge.hrs import HEART_RATE_MEASUREMENT_UUID, decode_hrs
from firmware_bridge.polar_pmd import PmdMeasurementType, PmdSettingType, PmdStatus

if TYPE_CHECKING:
    from edged.sources.ble_replay import ReplayBackend

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 20.0  # connect + service discovery; BlueZ can take 10 s on a busy Pi
COMMAND_TIMEOUT = 5.0  # a PMD control-point response
DISCONNECT_TIMEOUT = 10.0  # BlueZ sometimes never answers a disconnect after a timeout
INBOX_LIMIT = 4096  # notifications waiting for the reader; far beyond any burst a sensor sends

STREAMS: dict[str, int] = {"ecg": PmdMeasurementType.ECG, "ppg": PmdMeasurementType.PPG,
                           "ppi": PmdMeasurementType.PPI}
DEFAULT_RATES = {"ecg": 130, "ppg": 135, "ppi": 0}
PPG_CHANNELS = ("ppg0", "ppg1", "ppg2", "ambient")
# Start refusals that no retry can fix: the config asks for something this sensor does not do.
FATAL_STATUSES = frozenset({
    PmdStatus.INVALID_OP_CODE, PmdStatus.INVALID_MEASUREMENT_TYPE, PmdStatus.NOT_SUPPORTED,
    PmdStatus.INVALID_LENGTH, PmdStatus.INVALID_PARAMETER, PmdStatus.INVALID_RESOLUTION,
    PmdStatus.INVALID_SAMPLE_RATE, PmdStatus.INVALID_RANGE, PmdStatus.INVALID_NUMBER_OF_CHANNELS,
})


# ------------------------------------------------------------------------------------------ transport


@dataclass(frozen=True, slots=True)
class BleTransport:
    """Which bleak backends reach the device, and the clock its notifications are timed on.

    ``scanner``/``client`` are passed to bleak's ``backend=`` (None: bleak's platform backend). ``clock``
    returns monotonic seconds on the device's timeline and ``scale`` is how many of them pass per host
    second (1 for real hardware)."""

    scanner: type[BaseBleakScanner] | None
    client: type[BaseBleakClient] | None
    clock: Callable[[], float]
    scale: float
    label: str

    def host_seconds(self, seconds: float) -> float:
        return max(0.0, seconds / self.scale)


def open_transport(backend: str, *, base: Path | None = None) -> BleTransport:
    """``""``: bleak's platform backend; ``"replay:<recording>[?options]"``: the replaying backend
    (relative recording paths are relative to ``base``, else to the working directory)."""
    if backend == "":
        return BleTransport(None, None, time.monotonic, 1.0, "bleak platform backend")
    if backend.startswith("replay:"):
        from edged.sources.ble_replay import ReplayBackend

        return replay_transport(ReplayBackend.open(backend, base=base))
    raise ConfigError([f"backend {backend!r}: use \"\" (bleak's platform backend) or "
                       "\"replay:<recording>[?options]\" (a recording replayed as GATT notifications)"])


def replay_transport(air: ReplayBackend, *, scanner: type[BaseBleakScanner] | None = None) -> BleTransport:
    """The transport of a replayed sensor (``scanner`` overrides its scanner backend class)."""
    return BleTransport(scanner or air.scanner, air.client, air.clock.now, air.speed, f"replay of {air.spec.path}")


# ----------------------------------------------------------------------------------------- plumbing


@dataclass(frozen=True, slots=True)
class _Note:
    """One notification as it reached edged: ``arrival`` on the transport's clock, ``received`` on the
    host's monotonic clock (latency is measured from it)."""

    uuid: str
    data: bytes
    arrival: float
    received: float


@dataclass(frozen=True, slots=True)
class _LinkLost:
    reason: str


class _StreamEnded(Exception):
    """The device said the stream is over (e.g. a PMD 'measurement stopped'): reconnect and restart."""


@dataclass(eq=False)
class _Link:
    """One connection. Its callbacks write to its own inbox, so nothing from an old connection (a late
    notification, a late disconnect callback) can reach a newer one."""

    client: BleakClient
    address: str
    inbox: asyncio.Queue[_Note | _LinkLost] = field(default_factory=asyncio.Queue)
    control: asyncio.Queue[bytes] = field(default_factory=asyncio.Queue)  # PMD responses while starting
    streaming: bool = False
    data_seen: bool = False
    lost: str = ""


# ------------------------------------------------------------------------------------------- source


class BleSource(Source):
    """Scanning, connecting and supervision shared by every BLE source; subclasses say what to enable
    (:meth:`_start`) and how to decode a notification (:meth:`_decode`)."""

    data_uuids: ClassVar[tuple[str, ...]]  # notifications that count as data (reset the silence timer)

    def __init__(
        self,
        device: str,
        *,
        address: str = "",
        ble_name: str = "",
        silence_seconds: float = 10.0,
        reconnect_min: float = 1.0,
        reconnect_max: float = 60.0,
        scan_timeout: float = 10.0,
        backend: str = "",
        transport: BleTransport | None = None,
    ):
        super().__init__(device)
        problems = []
        if not address and not ble_name:
            problems.append(f"device {device!r}: set `address` (e.g. \"A0:9E:1A:12:34:56\") or `ble_name` "
                            "(the advertised name, or its beginning, e.g. \"Polar H10\")")
        if not 0 < reconnect_min <= reconnect_max:
            problems.append(f"device {device!r}: need 0 < reconnect_min <= reconnect_max")
        for key, value in (("silence_seconds", silence_seconds), ("scan_timeout", scan_timeout)):
            if not value > 0:
                problems.append(f"device {device!r}: {key} must be > 0")
        if problems:
            raise ConfigError(problems)
        self.address = address
        self.ble_name = ble_name
        self.silence_seconds = silence_seconds
        self.reconnect_min = reconnect_min
        self.reconnect_max = reconnect_max
        self.scan_timeout = scan_timeout
        self.transport = transport if transport is not None else open_transport(backend)
        self.counters.update({
            "notifications": 0, "bad_packets": 0, "connections": 0, "reconnects": 0, "link_losses": 0,
            "silences": 0, "connect_failures": 0, "scan_misses": 0, "notifications_dropped": 0,
        })
        self._link: _Link | None = None
        self._closed = False
        self.anchor_clock: float | None = None  # anchor_time's twin on the transport's clock
        self._rng = random.Random()

    @property
    def target(self) -> str:
        return self.address or repr(self.ble_name)

    # -- what subclasses provide

    @abc.abstractmethod
    async def _start(self, link: _Link) -> None:
        """Enable notifications (and start streams) on a fresh connection. Raise :class:`SourceError` for
        what no retry can fix; anything else is retried with backoff."""

    @abc.abstractmethod
    def _decode(self, note: _Note) -> list[SourceEvent]:
        """Events from one notification. May raise :class:`_StreamEnded`."""

    async def _stop(self, link: _Link) -> None:
        """Politely stop streams before disconnecting (best effort)."""

    # -- supervision

    async def _events(self) -> AsyncIterator[SourceEvent]:
        # Not edged.sources.supervisor.Supervisor (which serial sources use): it times silence from Chunks
        # and Gaps on the host's clock, whereas a BLE link is alive while ANY notification arrives (a strap
        # off the skin still notifies, and the beat clock holds beats back for seconds after a resync:
        # reconnecting then would only churn BlueZ), and a replay runs on its own clock.
        backoff = Backoff(self.reconnect_min, self.reconnect_max, factor=2.0, jitter=0.5)
        attempt = 0
        reported: bool | None = None  # the availability last reported
        logged = ""  # failures are logged when their reason changes, not once per retry all night
        try:
            while not self._closed:
                device, reason = await self._scan()
                link = None
                if device is not None:
                    link, reason = await self._open(device)
                if link is not None:
                    self._link = link
                    if self.counters["connections"]:
                        self.counters["reconnects"] += 1
                    self.counters["connections"] += 1
                    reported, logged = True, ""
                    log.info("%s: connected to %s (%s)", self.device, link.address, self.transport.label)
                    yield Status(True, f"connected to {link.address}")
                    async for event in self._receive(link):
                        yield event
                    reason = link.lost
                    if link.data_seen:
                        attempt = 0  # it worked for a while: the first retry is quick again
                    await self._release(link)
                if self._closed:
                    break
                if reported is not False:
                    reported = False
                    yield Status(False, reason)
                delay = backoff.delay(attempt, self._rng.random())
                attempt += 1
                if reason != logged:
                    logged = reason
                    log.warning("%s: %s; retrying with backoff up to %g s (logged again when the reason changes)",
                                self.device, reason, self.reconnect_max)
                else:
                    log.debug("%s: %s; retrying in %.2f s", self.device, reason, delay)
                await asyncio.sleep(self.transport.host_seconds(delay))
        finally:
            if self._link is not None:
                await self._release(self._link)

    async def _scan(self) -> tuple[BLEDevice | None, str]:
        """Find the device afresh (a BLEDevice from before a drop may be stale)."""
        try:
            device = await BleakScanner.find_device_by_filter(
                self._matches, timeout=self.transport.host_seconds(self.scan_timeout), backend=self.transport.scanner)
        except Exception as exc:  # any failure of the BLE stack (adapter gone, BlueZ restarting) is retried
            self._log_unexpected(exc, "scan")
            return None, f"scan failed: {describe(exc)}"
        if device is None:
            self.counters["scan_misses"] += 1
            return None, f"{self.target} not found in a {self.scan_timeout:g}-s scan"
        return device, ""

    def _matches(self, device: BLEDevice, adv: AdvertisementData) -> bool:
        if self.address:
            return device.address.lower() == self.address.lower()
        name = adv.local_name or device.name or ""
        return name.startswith(self.ble_name)

    async def _open(self, device: BLEDevice) -> tuple[_Link | None, str]:
        link: _Link | None = None

        def on_disconnect(_client: BleakClient) -> None:
            if link is not None:
                link.inbox.put_nowait(_LinkLost("the link dropped"))

        client = BleakClient(device, disconnected_callback=on_disconnect, backend=self.transport.client,
                             timeout=self.transport.host_seconds(CONNECT_TIMEOUT))
        link = _Link(client, device.address)
        try:
            async with asyncio.timeout(self.transport.host_seconds(CONNECT_TIMEOUT)):
                await client.connect()
            await self._start(link)
        except SourceError:
            await self._release(link)
            raise
        except Exception as exc:  # connect/subscribe failures of any kind are retried, never fatal
            self.counters["connect_failures"] += 1
            self._log_unexpected(exc, "connect")
            await self._release(link)
            return None, f"cannot start {device.address}: {describe(exc)}"
        link.streaming = True
        return link, ""

    async def _receive(self, link: _Link) -> AsyncIterator[SourceEvent]:
        """Events from one connection until it is lost (link drop, silence, or the device ends it)."""
        clock = self.transport.clock
        last = clock()
        while True:
            if link.inbox.empty():
                remaining = last + self.silence_seconds - clock()
                if remaining <= 0:
                    self.counters["silences"] += 1
                    link.lost = f"no data for {self.silence_seconds:g} s"
                    return
                try:
                    # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that
                    # arrives as the get completes (gh-86296), and the daemon would never stop.
                    async with asyncio.timeout(self.transport.host_seconds(remaining)):
                        item = await link.inbox.get()
                except TimeoutError:
                    continue  # re-check: something may have arrived as the timer fired
            else:
                item = link.inbox.get_nowait()
            if isinstance(item, _LinkLost):
                self.counters["link_losses"] += 1
                link.lost = item.reason
                return
            if item.uuid in self.data_uuids:
                last = item.arrival
                link.data_seen = True
            self.counters["notifications"] += 1
            try:
                events = self._decode(item)
            except _StreamEnded as exc:
                link.lost = str(exc)
                return
            for event in events:
                yield event

    def _listener(self, link: _Link, uuid: str) -> Callable[[BleakGATTCharacteristic, bytearray], None]:
        clock = self.transport.clock

        def on_notify(_char: BleakGATTCharacteristic, data: bytearray) -> None:
            if link.inbox.qsize() >= INBOX_LIMIT:  # the reader is stuck: drop, count; gaps show downstream
                self.counters["notifications_dropped"] += 1
                return
            link.inbox.put_nowait(_Note(uuid, bytes(data), clock(), time.monotonic()))

        return on_notify

    async def _release(self, link: _Link) -> None:
        if self._link is link:
            self._link = None
        client = link.client
        try:
            if client.is_connected:
                async with asyncio.timeout(self.transport.host_seconds(COMMAND_TIMEOUT)):
                    await self._stop(link)
        except Exception as exc:  # stopping streams is a courtesy; the disconnect stops them anyway
            log.debug("%s: stopping streams failed: %s", self.device, describe(exc))
        try:
            async with asyncio.timeout(self.transport.host_seconds(DISCONNECT_TIMEOUT)):
                await client.disconnect()
        except Exception as exc:
            log.warning("%s: disconnect did not complete (%s); continuing with a rescan", self.device,
                        describe(exc))

    async def close(self) -> None:
        self._closed = True
        if self._link is not None:
            await self._release(self._link)

    # -- helpers for subclasses

    def _anchor(self, note: _Note) -> None:
        """Anchor the stream on the first notification: its arrival is stream time 0."""
        self.anchor_clock = note.arrival
        self.anchor_time = time.time() - (time.monotonic() - note.received)

    def _stream_time(self, note: _Note) -> float:
        if self.anchor_clock is None:
            self._anchor(note)
        assert self.anchor_clock is not None
        return note.arrival - self.anchor_clock

    def _bad_packet(self, note: _Note, exc: DecodeError) -> None:
        self.counters["bad_packets"] += 1
        n = self.counters["bad_packets"]
        if n & (n - 1) == 0:  # 1, 2, 4, 8...: visible in the log without flooding it all night
            log.warning("%s: malformed notification skipped (%s; %d so far): %s", self.device, exc.kind, n, exc)

    def _log_unexpected(self, exc: Exception, phase: str) -> None:
        if not isinstance(exc, (BleakError, OSError, TimeoutError, DecodeError)):
            log.error("%s: unexpected error during %s; retrying", self.device, phase, exc_info=exc)


# -------------------------------------------------------------------------------------- heart rate


class BleHeartRateSource(BleSource):
    """A heart-rate strap or watch through the standard Heart Rate Service (0x180D / 0x2A37).

    Two channels: ``rr`` (intervals in seconds, beat times placed by :class:`RRBeatClock`) when the device
    sends them, and ``hr``, the heart rate of every notification (bpm, timed by its arrival on the stream
    clock), which is all a watch or a strap without RR gives: a model with an ``hr`` input runs on it.
    A notification reporting lost skin contact carries no heart rate (its reading is sent as 0, which
    the pipeline treats as missing). Notifications without intervals are counted (``hr_only``), as are
    those reporting lost contact (``contact_lost``)."""

    data_uuids = (HEART_RATE_MEASUREMENT_UUID,)

    def __init__(self, device: str, **options: Any):
        super().__init__(device, **options)
        self.clock = RRBeatClock()
        self._index = 0
        self._hr_index = 0
        self.counters.update({"hr_only": 0, "contact_lost": 0})

    def channels(self) -> list[ChannelSpec]:
        return [ChannelSpec("rr", "rr", 0.0, "s"), ChannelSpec("hr", "hr", 0.0, "bpm")]

    async def _start(self, link: _Link) -> None:
        await link.client.start_notify(HEART_RATE_MEASUREMENT_UUID, self._listener(link, HEART_RATE_MEASUREMENT_UUID))

    def _decode(self, note: _Note) -> list[SourceEvent]:
        try:
            m = decode_hrs(note.data)
        except DecodeError as exc:
            self._bad_packet(note, exc)
            return []
        if m.contact is False:
            self.counters["contact_lost"] += 1
        if not m.rr:
            self.counters["hr_only"] += 1
        # Every notification goes to the clock, with or without intervals: their spacing is how it
        # notices a missing one.
        arrival = self._stream_time(note)
        released = self.clock.push(np.asarray(m.rr, dtype=np.float64), arrival)
        bpm = 0.0 if m.contact is False else float(m.bpm)
        events: list[SourceEvent] = [Chunk("hr", self._hr_index, np.array([bpm]), note.received,
                                           times=np.array([arrival]))]
        self._hr_index += 1
        if len(released.rr) == 0:
            return events
        if released.lost_seconds > 0:
            events.append(Gap("rr", self._index, 0, float(released.lost_seconds), note.received))
        events.append(Chunk("rr", self._index, released.rr, note.received, times=released.times))
        self._index += len(released.rr)
        return events


# ------------------------------------------------------------------------------------------- Polar PMD


class FrameIndexer:
    """Sample indices of a PMD signal stream from frame timestamps (sensor time of each frame's last
    sample) and sample counts. Pure.

    Frames are consecutive when the timestamp step is within half a frame of the samples they hold: BLE
    loses whole frames, so anything less is timestamp jitter or the sensor's rate error, never lost
    samples. The sensor's true sample period is measured over consecutive frames (a long baseline, so
    jitter averages out) and converts a longer step into a count of lost samples. When the sensor clock
    jumps (a reboot, another app setting its time), the host's arrival times size the gap instead."""

    def __init__(self, fs: float, *, min_baseline: int = 500):
        self.nominal_ns = 1e9 / fs
        self.min_baseline = min_baseline
        self.next_index = 0
        self.clock_jumps = 0
        self._last_ts: int | None = None
        self._last_arrival = 0.0
        self._sum_dt = 0.0
        self._sum_n = 0

    @property
    def period_ns(self) -> float:
        """The sensor's sample period in sensor ns, as measured (nominal until enough is seen)."""
        return self._sum_dt / self._sum_n if self._sum_n >= self.min_baseline else self.nominal_ns

    def place(self, timestamp_ns: int, n: int, arrival: float) -> tuple[int, int]:
        """(samples lost before this frame, index of its first sample)."""
        missing = 0
        if self._last_ts is not None:
            dt = timestamp_ns - self._last_ts
            host_dt = (arrival - self._last_arrival) * 1e9
            if dt <= 0 or abs(dt - host_dt) > max(2e9, 0.05 * host_dt):
                self.clock_jumps += 1
                missing = max(0, round(host_dt / self.period_ns) - n)
            else:
                excess = dt / self.period_ns - n
                if excess < n / 2:
                    self._sum_dt += dt
                    self._sum_n += n
                else:
                    missing = round(excess)
        start = self.next_index + missing
        self.next_index = start + n
        self._last_ts, self._last_arrival = timestamp_ns, arrival
        return missing, start


class SensorTimeMap:
    """Sensor seconds -> stream seconds for beats timed by the sensor (PMD PPI). Pure.

    ``arrival - sensor time of the newest beat`` bounds the offset from above (a beat cannot arrive before
    it happened), and the lowest bounds are the least delayed. So, as :class:`RRBeatClock` does for
    untimed intervals, the map first holds ``settle`` frames and starts from the lowest of their bounds
    (one frame alone may be a second late: a sensor batches beats), then follows the lower envelope over
    ``window`` seconds at a bounded slew, so corrections never distort an interval by more than ``slew``.
    When a beat would land after the frame that reported it, it pulls back faster (``causal_slew``) but
    still gradually: interval fidelity matters more to a sleep model than tens of ms of absolute time."""

    def __init__(self, *, window: float = 120.0, slew: float = 0.005, causal_slew: float = 0.02, settle: int = 8):
        self.window, self.slew, self.causal_slew, self.settle = window, slew, causal_slew, settle
        self.offset: float | None = None
        self._bounds: deque[tuple[float, float]] = deque()

    def reset(self) -> None:
        self.offset = None
        self._bounds.clear()

    @property
    def settled(self) -> bool:
        return self.offset is not None

    def observe(self, arrival: float, newest_beat: float) -> None:
        """A frame arrived at stream time ``arrival`` with its newest beat at sensor time ``newest_beat``."""
        bound = arrival - newest_beat
        self._bounds.append((arrival, bound))
        while self._bounds[0][0] < arrival - self.window:
            self._bounds.popleft()
        if self.offset is None and len(self._bounds) >= self.settle:
            self.settle_now()

    def settle_now(self) -> None:
        """Start from what has been seen so far (fewer than ``settle`` frames: before a clock jump)."""
        if self._bounds:
            self.offset = min(b for _, b in self._bounds)

    def place(self, beats: np.ndarray, span: float) -> np.ndarray:
        """Stream times of beats (sensor seconds) that followed ``span`` sensor seconds after the last ones
        placed; call after :meth:`observe` has seen their frame and the map has settled."""
        assert self.offset is not None
        target = min(b for _, b in self._bounds)
        step = float(np.clip(target - self.offset, -self.slew * span, self.slew * span))
        newest = self._bounds[-1][1]
        if self.offset + step > newest:
            step = max(newest - self.offset, -self.causal_slew * span)
        # Spread the correction over the span in proportion to time, so no one interval takes all of it.
        share = np.clip((beats - (beats[-1] - span)) / span, 0.0, 1.0)
        times = beats + self.offset + step * share
        self.offset += step
        return times


class BlePolarPmdSource(BleSource):
    """One Polar Measurement Data stream: ``ecg`` (H10, channel ``ecg`` in uV), ``ppg`` (Verity Sense /
    OH1, channels ``ppg0 ppg1 ppg2 ambient`` in sensor counts) or ``ppi`` (Verity Sense / OH1 pulse-to-pulse
    intervals, channel ``rr`` with beat times from the sensor)."""

    data_uuids = (pmd.PMD_DATA_UUID,)

    def __init__(self, device: str, *, stream: str = "ecg", sample_rate: int = 0, **options: Any):
        if stream not in STREAMS:
            raise ConfigError([f"device {device!r}: stream must be one of {', '.join(STREAMS)}, got {stream!r}"])
        if stream == "ppi" and sample_rate:
            raise ConfigError([f"device {device!r}: a ppi stream has no sample_rate"])
        super().__init__(device, **options)
        self.stream = stream
        self.mtype = STREAMS[stream]
        self.sample_rate = sample_rate or DEFAULT_RATES[stream]
        self.factor = 1.0
        self.counters.update({"frames": 0, "other_frames": 0, "sensor_clock_jumps": 0})
        self.counters.update({"ppi_blocked": 0, "ppi_invalid": 0} if stream == "ppi" else {"frames_lost": 0})
        self.indexer = FrameIndexer(self.sample_rate) if stream != "ppi" else None
        self.time_map = SensorTimeMap()
        self._rr_index = 0
        self._sensor_ref_ns: int | None = None  # PPI: sensor times are taken relative to this, in exact ns
        self._last_beat_s: float | None = None  # sensor seconds (from the reference) of the last beat received
        self._placed_s: float | None = None  # ... and of the last beat placed on the stream's clock
        self._held: list[tuple[np.ndarray, np.ndarray, float, float]] = []  # frames waiting for the map to settle
        self._fallback_clock: RRBeatClock | None = None  # PPI frames without timestamps (old firmware)

    def channels(self) -> list[ChannelSpec]:
        if self.stream == "ecg":
            return [ChannelSpec("ecg", "signal", float(self.sample_rate), "uV")]
        if self.stream == "ppg":
            return [ChannelSpec(name, "signal", float(self.sample_rate), "counts") for name in PPG_CHANNELS]
        return [ChannelSpec("rr", "rr", 0.0, "s")]

    def _start_command(self) -> bytes:
        if self.stream == "ecg":
            return pmd.start_ecg_command(self.sample_rate)
        if self.stream == "ppg":
            return pmd.start_ppg_command(self.sample_rate)
        return pmd.start_ppi_command()

    async def _start(self, link: _Link) -> None:
        def on_control(_char: BleakGATTCharacteristic, data: bytearray) -> None:
            if link.streaming:  # after start-up, e.g. "measurement stopped": the reader decides
                link.inbox.put_nowait(_Note(pmd.PMD_CONTROL_POINT_UUID, bytes(data), self.transport.clock(),
                                            time.monotonic()))
            else:
                link.control.put_nowait(bytes(data))

        client = link.client
        await client.start_notify(pmd.PMD_CONTROL_POINT_UUID, on_control)
        await client.start_notify(pmd.PMD_DATA_UUID, self._listener(link, pmd.PMD_DATA_UUID))
        features = pmd.parse_features(await client.read_gatt_char(pmd.PMD_CONTROL_POINT_UUID))
        if self.mtype not in features:
            offered = ", ".join(n for n, t in STREAMS.items() if t in features) or "none of ecg, ppg, ppi"
            raise SourceError(f"device {self.device!r}: {link.address} has no PMD {self.stream} stream "
                              f"(it offers {offered})")
        response = await self._command(link, self._start_command())
        if response.status == PmdStatus.ALREADY_IN_STATE:  # left running by an earlier connection
            await self._command(link, pmd.stop_command(self.mtype))
            response = await self._command(link, self._start_command())
        if not response.ok:
            if response.status in FATAL_STATUSES:
                raise SourceError(f"device {self.device!r}: {link.address} refused to start {self.stream} "
                                  f"({response.status_text}){await self._offered(link)}")
            raise BleakError(f"the sensor refused to start {self.stream}: {response.status_text}")
        settings = pmd.parse_settings(response.parameters)
        self.factor = float(settings.get(PmdSettingType.FACTOR, (1.0,))[0])

    async def _offered(self, link: _Link) -> str:
        """What the sensor offers for this stream, for an error message."""
        try:
            response = await self._command(link, pmd.get_settings_command(self.mtype))
            offered = pmd.parse_settings(response.parameters) if response.ok else {}
        except Exception:  # the message is still useful without it
            return ""
        parts = [f"{kind.name.lower()} {'/'.join(f'{v:g}' for v in values)}" for kind, values in offered.items()]
        return f"; it offers {', '.join(parts)}" if parts else ""

    async def _command(self, link: _Link, command: bytes) -> pmd.PmdControlPointResponse:
        """Write a control-point command and wait for its response (continuations appended)."""
        await link.client.write_gatt_char(pmd.PMD_CONTROL_POINT_UUID, command, response=True)
        first: pmd.PmdControlPointResponse | None = None
        parameters = b""
        while True:
            async with asyncio.timeout(self.transport.host_seconds(COMMAND_TIMEOUT)):
                data = await link.control.get()
            try:
                message = pmd.parse_control_point(data)
            except DecodeError as exc:
                self.counters["bad_packets"] += 1
                log.warning("%s: malformed control-point response skipped: %s", self.device, exc)
                continue
            if isinstance(message, pmd.PmdMeasurementStopped):
                continue
            if first is None:
                if message.op_code != command[0] or message.measurement_type != command[1] & 0x3F:
                    continue  # a late answer to an earlier command
                first = message
            parameters += message.parameters
            if not message.more:
                return replace(first, parameters=parameters, more=False)

    async def _stop(self, link: _Link) -> None:
        await link.client.write_gatt_char(pmd.PMD_CONTROL_POINT_UUID, pmd.stop_command(self.mtype), response=True)

    def _decode(self, note: _Note) -> list[SourceEvent]:
        if note.uuid == pmd.PMD_CONTROL_POINT_UUID:
            try:
                message = pmd.parse_control_point(note.data)
            except DecodeError as exc:
                self._bad_packet(note, exc)
                return []
            if isinstance(message, pmd.PmdMeasurementStopped) and self.mtype in message.measurement_types:
                raise _StreamEnded(f"the sensor stopped the {self.stream} stream")
            return []
        try:
            frame = pmd.decode_pmd_frame(note.data, factor=self.factor)
        except DecodeError as exc:
            self._bad_packet(note, exc)
            return []
        if frame.measurement_type != self.mtype:
            self.counters["other_frames"] += 1  # another client's stream on a shared sensor
            return []
        self.counters["frames"] += 1
        if isinstance(frame, pmd.PmdPpiFrame):
            return self._ppi(frame, note)
        return self._signal(frame, note)

    def _signal(self, frame: pmd.PmdSignalFrame, note: _Note) -> list[SourceEvent]:
        assert self.indexer is not None
        n = len(frame.samples)
        if self.anchor_clock is None:
            # Stream time 0 is the first sample, taken (n - 1) periods before the frame's timestamp.
            self._anchor(note)
            self.anchor_time = (self.anchor_time or time.time()) - self.transport.host_seconds(
                (n - 1) / self.sample_rate)
        jumps = self.indexer.clock_jumps
        missing, start = self.indexer.place(frame.timestamp_ns, n, note.arrival)
        if self.indexer.clock_jumps != jumps:
            self.counters["sensor_clock_jumps"] += 1
            log.warning("%s: the sensor's clock jumped; sizing the gap from arrival times instead", self.device)
        names = [c.name for c in self.channels()]
        values = frame.values()
        events: list[SourceEvent] = []
        if missing:
            self.counters["frames_lost"] += max(1, round(missing / n))
            events += [Gap(name, start - missing, missing, missing / self.sample_rate, note.received) for name in names]
        events += [Chunk(name, start, np.asarray(values[:, i], dtype=np.float64), note.received)
                   for i, name in enumerate(names)]
        return events

    def _ppi(self, frame: pmd.PmdPpiFrame, note: _Note) -> list[SourceEvent]:
        valid = [s for s in frame.samples if s.ppi_ms > 0]
        self.counters["ppi_invalid"] += len(frame.samples) - len(valid)
        self.counters["ppi_blocked"] += sum(s.blocker for s in valid)
        if not valid:
            return []
        rr = np.array([s.ppi_ms for s in valid], dtype=np.float64) / 1000.0
        arrival = self._stream_time(note)
        beats_ns = pmd.PmdPpiFrame(frame.timestamp_ns, tuple(valid)).beat_times_ns()
        if beats_ns is None:
            return self._ppi_untimed(rr, arrival, note)
        if self._sensor_ref_ns is None:
            self._sensor_ref_ns = int(beats_ns[0])
        beats = (beats_ns - self._sensor_ref_ns) / 1e9  # integer ns first: float seconds since 2000 lose them
        lost = 0.0
        before: list[SourceEvent] = []
        opening = float(beats[0] - rr[0])
        if self._last_beat_s is not None:
            silence = opening - self._last_beat_s
            if silence < -1.0 or silence > 86_400.0:  # the sensor's clock jumped: start placing afresh
                self.counters["sensor_clock_jumps"] += 1
                before = self._release_held(force=True)
                self.time_map.reset()
                self._placed_s = None
                lost = float(rr[0])  # unknown; at least the interval before the first beat is in doubt
            elif silence < 0.0:
                keep = beats > self._last_beat_s + 1e-3  # intervals already delivered (a repeated frame)
                beats, rr = beats[keep], rr[keep]
                if len(rr) == 0:
                    return []
            elif silence > 0.05:  # PPI values are whole ms: a few ms of disagreement is rounding
                lost = silence
        self._last_beat_s = float(beats[-1])
        self.time_map.observe(arrival, float(beats[-1]))
        self._held.append((rr, beats, lost, note.received))
        return before + self._release_held()

    def _release_held(self, *, force: bool = False) -> list[SourceEvent]:
        """PPI frames held while the time map settles (a few seconds at the start and after a sensor
        clock jump), all at once when it has."""
        if force and not self.time_map.settled:
            self.time_map.settle_now()
        if not self.time_map.settled:
            return []
        events: list[SourceEvent] = []
        for rr, beats, lost, received in self._held:
            span = float(beats[-1] - (self._placed_s if self._placed_s is not None else beats[0] - rr[0]))
            times = self.time_map.place(beats, max(span, 1e-3))
            self._placed_s = float(beats[-1])
            if lost:
                events.append(Gap("rr", self._rr_index, 0, lost, received))
            events.append(Chunk("rr", self._rr_index, rr, received, times=times))
            self._rr_index += len(rr)
        self._held.clear()
        return events

    def _ppi_untimed(self, rr: np.ndarray, arrival: float, note: _Note) -> list[SourceEvent]:
        """Frames without a timestamp: place beats from arrival times, as for a heart-rate strap."""
        if self._fallback_clock is None:
            self._fallback_clock = RRBeatClock()
        released = self._fallback_clock.push(rr, arrival)
        events: list[SourceEvent] = []
        if len(released.rr):
            if released.lost_seconds > 0:
                events.append(Gap("rr", self._rr_index, 0, float(released.lost_seconds), note.received))
            events.append(Chunk("rr", self._rr_index, released.rr, note.received, times=released.times))
            self._rr_index += len(released.rr)
        return events
