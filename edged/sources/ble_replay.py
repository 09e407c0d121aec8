"""A bleak backend that replays a real recording as the GATT notifications of a Polar-like sensor.

Nothing here patches bleak: :class:`ReplayClient` is a :class:`~bleak.backends.client.BaseBleakClient` and
:class:`ReplayScanner` a :class:`~bleak.backends.scanner.BaseBleakScanner`, plugged in through bleak's
documented ``backend=`` parameter (``BleakScanner(backend=...)``, ``BleakClient(device, backend=...)``).
Code that uses them is the same code that talks to a real strap through BlueZ; only the air is replaced.

The air holds one :class:`VirtualSensor` built from a recording (``replay:<path>?key=value&...``, see
:class:`ReplaySpec`):

* Heart Rate Service 0x180D / 0x2A37 when the recording has an RR track: one notification per second of
  strap time with the intervals closed since the previous one (heart rate only when none closed, contact
  lost while the recording marks a dropout), built with :func:`firmware_bridge.hrs.encode_hrs`;
* the Polar Measurement Data service: a control point that answers start/stop/get-settings commands the
  way a Polar sensor does (``F0`` responses, the FACTOR setting for compressed streams, error statuses for
  unsupported settings), and data frames built with the :mod:`firmware_bridge.polar_pmd` encoders: ECG
  (profile ``h10``: 73 samples per frame, uV, uncompressed) from a recorded ECG resampled to 130 Hz; PPG
  (profile ``sense``: delta-compressed, 3 PPG channels and ambient) from a recorded pleth; PPI (profile
  ``sense``) from the RR track. Sensor timestamps count ns since 2000-01-01 from 2019-01-01, the H10's
  default time after a power cycle.

The sensor lives on its own timeline (recording seconds, run at ``speed`` x real time) whether or not a
client is connected: what happens while the link is down is lost, as with a real strap. Scripted faults
(``disconnect_after``, ``stall_after``, ``lose_every``, ``corrupt_every``, ``away``) reproduce what
users see at night: links that drop, notifications that stop without any error (BlueZ), notifications
lost or garbled. When the recording ends the sensor drops the link and stops advertising, like a strap
whose battery died.

Time: :class:`VirtualClock` runs at ``speed`` x the host's monotonic clock. While it delivers a
notification it reads as the instant the notification was due, so a host that is briefly busy (two
shared cores, a fast replay) delays callbacks without moving arrival times: tests that replay at 100x
measure the daemon, not the scheduler. A source reads arrival times from the transport's clock
(:attr:`ReplayBackend.clock`), which for real hardware is ``time.monotonic``.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import math
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from bleak.args import SizedBuffer
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.client import BaseBleakClient, NotifyCallback
from bleak.backends.descriptor import BleakGATTDescriptor
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData, AdvertisementDataCallback, BaseBleakScanner
from bleak.backends.service import BleakGATTService, BleakGATTServiceCollection
from bleak.exc import BleakDeviceNotFoundError, BleakError
from bleak.uuids import normalize_uuid_str

from edged.errors import ConfigError
from edged.sources.readers import read_recording
from edged.sources.recording import Recording
from firmware_bridge import polar_pmd as pmd
from firmware_bridge.hrs import HEART_RATE_MEASUREMENT_UUID, HEART_RATE_SERVICE_UUID, encode_hrs
from firmware_bridge.polar_pmd import PmdMeasurementType, PmdOpCode, PmdSettingType, PmdStatus

log = logging.getLogger(__name__)

PREFIX = "replay:"
BODY_SENSOR_LOCATION_UUID = normalize_uuid_str("2a38")
POLAR_COMPANY_ID = 0x006B  # Bluetooth SIG company identifier of Polar Electro Oy
MTU = 232  # what a Polar sensor negotiates; an H10 ECG frame of 73 samples fills it (10 + 73 * 3 = 229)
ECG_SAMPLES_PER_FRAME = 73
PPG_SAMPLES_PER_FRAME = 24  # 4 channels of ~14-bit deltas stay under the MTU
ECG_RATES = (130,)
ECG_RESOLUTION = 14
PPG_RATES = (55, 135)  # Verity Sense (current firmware) and OH1
PPG_RESOLUTION = 22
PPG_CHANNELS = 4
# The H10 restarts at this time after a power cycle unless a client sets its clock (TimeSystemExplained.md).
SENSOR_EPOCH_UNIX = 1_546_300_800.0  # 2019-01-01T00:00:00Z
# BLE delivery delay of a notification after the sensor queued it: a connection interval or two.
LATENCY = (0.02, 0.08)
CONNECT_SECONDS = 0.3  # virtual time a connection takes (service discovery included)
RESPONSE_SECONDS = 0.03  # control-point response delay
ADVERTISING_INTERVAL = 0.25  # virtual seconds between advertisements
ECG_UNITS_TO_UV = {"uV": 1.0, "µV": 1.0, "mV": 1e3, "V": 1e6}


# ---------------------------------------------------------------------------------------------- spec


def _floats(text: str) -> tuple[float, ...]:
    return tuple(sorted(float(v) for v in text.split(",") if v.strip()))


@dataclass(frozen=True, slots=True)
class ReplaySpec:
    """What ``replay:<path>?key=value&...`` asks for. Times are recording seconds after the replay starts
    (the first connection), so they mean the same thing at any ``speed``."""

    path: Path
    speed: float = 1.0  # virtual seconds per host second
    profile: Literal["h10", "sense"] = "h10"  # h10: HRS + PMD ECG; sense: HRS + PMD PPG and PPI
    address: str = "C0:FF:EE:00:00:01"
    name: str = ""  # advertised name; default "Polar H10 C0FFEE01" / "Polar Sense C0FFEE01"
    channel: str = ""  # recording channel for ECG/PPG; default: the first signal channel
    start: float = 0.0  # recording second the sensor starts at
    disconnect_after: tuple[float, ...] = ()  # the sensor drops the link at these times
    stall_after: tuple[float, ...] = ()  # notifications stop silently, link up, until the client reconnects
    away: float = 0.0  # seconds out of range (not advertising, not connectable) after a scripted drop
    lose_every: int = 0  # every n-th data notification is lost in the air (0: none)
    corrupt_every: int = 0  # every n-th data notification arrives malformed (0: none)
    rate_error: float = 0.0  # ECG/PPG sample clock error relative to nominal (H10: within ~1 %)
    seed: int = 0  # BLE latency jitter

    _PARSERS: ClassVar[dict[str, Callable[[str], Any]]] = {
        "speed": float, "profile": str, "address": str, "name": str, "channel": str, "start": float,
        "disconnect_after": _floats, "stall_after": _floats, "away": float, "lose_every": int,
        "corrupt_every": int, "rate_error": float, "seed": int,
    }

    @classmethod
    def parse(cls, text: str, *, base: Path | None = None) -> ReplaySpec:
        """Parse ``replay:<path>[?key=value&...]``; raise :class:`ConfigError` naming what is wrong.
        A relative path is taken relative to ``base`` (the config file's folder) when given."""
        if not text.startswith(PREFIX):
            raise ConfigError([f"backend {text!r}: a replay backend is written 'replay:<recording>[?options]'"])
        body = text[len(PREFIX):]
        path_text, _, query = body.partition("?")
        if not path_text:
            raise ConfigError([f"backend {text!r}: no recording path after 'replay:'"])
        path = Path(path_text).expanduser()
        if base is not None and not path.is_absolute():
            path = base / path
        values: dict[str, Any] = {}
        problems = []
        for key, value in urllib.parse.parse_qsl(query, keep_blank_values=True, strict_parsing=False):
            parser = cls._PARSERS.get(key)
            if parser is None:
                problems.append(f"backend {text!r}: unknown replay option {key!r} "
                                f"(known: {', '.join(sorted(cls._PARSERS))})")
                continue
            try:
                values[key] = parser(value)
            except ValueError:
                problems.append(f"backend {text!r}: replay option {key}={value!r} is not a valid {parser.__name__}")
        spec = cls(path=path, **values) if not problems else None
        if spec is not None:
            problems += spec._check(text)
        if problems:
            raise ConfigError(problems)
        assert spec is not None
        return spec

    def _check(self, text: str) -> list[str]:
        out = []
        if not self.speed > 0:
            out.append(f"backend {text!r}: speed must be > 0 (a link needs a time base)")
        if self.profile not in ("h10", "sense"):
            out.append(f"backend {text!r}: profile must be 'h10' or 'sense', got {self.profile!r}")
        for name in ("start", "away"):
            if getattr(self, name) < 0:
                out.append(f"backend {text!r}: {name} must be >= 0")
        for name in ("lose_every", "corrupt_every"):
            if getattr(self, name) < 0 or getattr(self, name) == 1:
                out.append(f"backend {text!r}: {name} must be 0 (off) or >= 2")
        if not -0.05 < self.rate_error < 0.05:
            out.append(f"backend {text!r}: rate_error must be within +-0.05")
        return out

    @property
    def advertised_name(self) -> str:
        if self.name:
            return self.name
        model = "H10" if self.profile == "h10" else "Sense"
        return f"Polar {model} {self.address.replace(':', '')[-8:]}"


# --------------------------------------------------------------------------------------------- clock


class VirtualClock:
    """Seconds on the sensor's timeline: ``speed`` x the host's monotonic clock since creation, except
    while a notification is being delivered, when it reads as the instant that notification was due."""

    def __init__(self, speed: float):
        self.speed = speed
        self._origin = time.monotonic()
        self._pinned: float | None = None

    def now(self) -> float:
        if self._pinned is not None:
            return self._pinned
        return (time.monotonic() - self._origin) * self.speed

    def host_seconds(self, virtual_seconds: float) -> float:
        return max(0.0, virtual_seconds / self.speed)

    @contextlib.contextmanager
    def pinned(self, t: float) -> Iterator[None]:
        previous, self._pinned = self._pinned, t
        try:
            yield
        finally:
            self._pinned = previous


# ------------------------------------------------------------------------------------ what is sent


class _Timeline(abc.ABC):
    """Notifications of one characteristic, indexed from 0, each due at a recording time (when it
    reaches the host: when the sensor queued it plus BLE latency). Due times never decrease."""

    char_uuid: str

    def __init__(self, char_uuid: str, queued: np.ndarray, seed: int):
        self.char_uuid = char_uuid
        rng = np.random.default_rng(seed)
        self.due = np.maximum.accumulate(queued + rng.uniform(*LATENCY, size=len(queued)))

    def first_due_after(self, t: float) -> int:
        return int(np.searchsorted(self.due, t, side="right"))

    @abc.abstractmethod
    def payload(self, k: int) -> bytes | None:
        """Notification ``k``, or None when the sensor sends nothing then."""

    @abc.abstractmethod
    def corrupt(self, payload: bytes) -> bytes:
        """``payload`` damaged the way a broken firmware would send it: decoders must refuse it."""


class _HrsTimeline(_Timeline):
    """Heart Rate Measurement every second of strap time with the intervals closed since the last."""

    def __init__(self, beats: np.ndarray, rr: np.ndarray, lost: np.ndarray, dropouts: list[tuple[float, float]],
                 seed: int):
        self.ticks = np.arange(1.0, beats[-1] + 1.0, 1.0)
        super().__init__(HEART_RATE_MEASUREMENT_UUID, self.ticks, seed)
        closing = np.searchsorted(self.ticks, beats[1:], side="left")  # the tick that reports interval i
        self.bounds = np.searchsorted(closing, np.arange(len(self.ticks) + 1))
        self.rr, self.lost, self.dropouts = rr, lost, _Spans(dropouts)
        self._bpm = 60

    def payload(self, k: int) -> bytes | None:
        idx = np.arange(self.bounds[k], self.bounds[k + 1])
        sent = idx[~self.lost[idx]]
        t = self.ticks[k]
        if len(sent) < len(idx) or self.dropouts.touches(t, t):
            return encode_hrs(0, contact=False)  # off the skin: heart rate only, contact bit clear
        rr = self.rr[sent]
        if len(rr):
            self._bpm = round(60.0 / float(rr.mean()))
        return encode_hrs(min(self._bpm, 255), contact=True, rr=tuple(rr))

    def corrupt(self, payload: bytes) -> bytes:
        return bytes([payload[0] | 0x80]) + payload[1:]  # a reserved flag bit: decoders must refuse it


class _PpiTimeline(_Timeline):
    """PMD PPI frames once a second with the intervals closed since the last; the frame's timestamp is
    the closing beat of its last interval. (How a Verity Sense groups intervals is not documented;
    nothing in edged depends on the grouping.)"""

    def __init__(self, beats: np.ndarray, rr: np.ndarray, lost: np.ndarray, seed: int):
        ticks = np.arange(1.0, beats[-1] + 1.0, 1.0)
        super().__init__(pmd.PMD_DATA_UUID, ticks, seed)
        closing = np.searchsorted(ticks, beats[1:], side="left")
        self.bounds = np.searchsorted(closing, np.arange(len(ticks) + 1))
        self.beats, self.rr, self.lost = beats, rr, lost

    def payload(self, k: int) -> bytes | None:
        idx = np.arange(self.bounds[k], self.bounds[k + 1])
        idx = idx[~self.lost[idx]]
        if len(idx) == 0 or np.any(np.diff(idx) != 1):
            return None  # nothing closed, or a dropout inside: an optical sensor sends nothing then
        ppi_ms = np.round(self.rr[idx] * 1000).astype(int)
        samples = [pmd.PpiSample(hr_bpm=min(255, int(round(60000 / p))), ppi_ms=int(p), error_ms=10,
                                 blocker=False, skin_contact=True) for p in ppi_ms]
        return pmd.encode_ppi_frame(_sensor_ns(self.beats[idx[-1] + 1]), samples)

    def corrupt(self, payload: bytes) -> bytes:
        return payload[:-1]  # a record cut short


class _SignalTimeline(_Timeline):
    """ECG/PPG frames of consecutive samples from the sample taken first at or after ``start``; sample
    ``i`` is taken at ``i / true_fs`` and a frame is queued once its last sample is taken."""

    def __init__(self, mtype: int, samples: np.ndarray, true_fs: float, per_frame: int, start: float,
                 dropouts: list[tuple[float, float]], compressed: bool, seed: int):
        self.mtype, self.samples, self.true_fs = mtype, samples, true_fs
        self.per_frame, self.compressed = per_frame, compressed
        self.first = math.ceil(start * true_fs)
        n_frames = max(0, (len(samples) - self.first) // per_frame)
        last = self.first + np.arange(1, n_frames + 1) * per_frame - 1
        super().__init__(pmd.PMD_DATA_UUID, last / true_fs, seed)
        self.dropouts = _Spans(dropouts)

    def payload(self, k: int) -> bytes | None:
        a = self.first + k * self.per_frame
        b = a + self.per_frame
        t0, t1 = a / self.true_fs, (b - 1) / self.true_fs
        if self.dropouts.touches(t0, t1):
            return None  # the electrodes were off: the recording has no signal here
        return pmd.encode_pmd_frame(self.mtype, 0, _sensor_ns(t1), self.samples[a:b], compressed=self.compressed)

    def corrupt(self, payload: bytes) -> bytes:
        return payload[:7]  # cut inside the header


class _Spans:
    """Sorted, non-overlapping (start, duration) spans, for fast "does [t0, t1] touch one?" queries."""

    def __init__(self, spans: list[tuple[float, float]]):
        ordered = sorted(spans)
        self.starts = np.array([s for s, _ in ordered], dtype=np.float64)
        self.ends = np.array([s + d for s, d in ordered], dtype=np.float64)

    def touches(self, t0: float, t1: float) -> bool:
        i = int(np.searchsorted(self.ends, t0, side="right"))  # first span ending after t0
        return i < len(self.starts) and self.starts[i] <= t1


def _sensor_ns(t: float) -> int:
    """Sensor time of recording second ``t``: the sensor's clock starts at its default time."""
    return pmd.unix_to_pmd_time(SENSOR_EPOCH_UNIX) + int(round(t * 1e9))


def resample_to(x: np.ndarray, fs_in: float, fs_out: float) -> np.ndarray:
    """Polyphase resampling of a recorded channel to a sensor's rate (anti-aliased)."""
    from scipy.signal import resample_poly

    ratio = Fraction(fs_out / fs_in).limit_denominator(1000)
    if ratio == 1:
        return np.asarray(x, dtype=np.float64)
    return resample_poly(np.asarray(x, dtype=np.float64), ratio.numerator, ratio.denominator)


def ecg_microvolts(recording: Recording, channel: str, fs: float) -> np.ndarray:
    """A recorded ECG channel as the integers an H10 would send at ``fs``: uV, rounded."""
    track = recording.signals[channel]
    scale = ECG_UNITS_TO_UV.get(track.units)
    if scale is None:
        raise ConfigError([f"{recording.path}: channel {channel!r} is in {track.units!r}; an ECG replay needs "
                           f"one of {', '.join(ECG_UNITS_TO_UV)}"])
    return np.round(resample_to(track.data, track.fs, fs) * scale).astype(np.int64)


def ppg_counts(recording: Recording, channel: str, fs: float) -> np.ndarray:
    """A recorded pleth as a Verity Sense-like (n, 4) integer stream: the three PPG channels carry the
    same recorded waveform scaled to about +-100000 counts (a real sensor's LEDs differ; one recorded
    wavelength is all the data has), ambient light is 0."""
    track = recording.signals[channel]
    x = resample_to(track.data, track.fs, fs)
    lo, hi = np.percentile(x, [1, 99]) if len(x) else (0.0, 1.0)
    counts = np.round((x - (lo + hi) / 2) / max(hi - lo, 1e-12) * 200_000).astype(np.int64)
    out = np.zeros((len(counts), PPG_CHANNELS), dtype=np.int64)
    out[:, :3] = counts[:, None]
    return out


# -------------------------------------------------------------------------------------------- sensor


@dataclass
class _Stream:
    timeline: _Timeline
    next: int


@dataclass
class SensorLog:
    """What the sensor did, for tests and for people reading a replay's log."""

    connections: int = 0
    sent: int = 0
    lost: int = 0
    corrupted: int = 0
    stalled: int = 0  # notifications swallowed by a stall
    drops: int = 0  # links the sensor dropped
    commands: list[bytes] = field(default_factory=list)


class VirtualSensor:
    """The device on the other side of the air: its GATT table, its state, and what it sends when."""

    def __init__(self, spec: ReplaySpec, recording: Recording, clock: VirtualClock):
        self.spec, self.recording, self.clock = spec, recording, clock
        self.address = spec.address
        self.name = spec.advertised_name
        self.log = SensorLog()
        self.duration = recording.duration
        self._signal = spec.channel or next(iter(recording.signals), "")
        if spec.channel and spec.channel not in recording.signals:
            raise ConfigError([f"{recording.path}: no signal channel {spec.channel!r} "
                               f"(has: {', '.join(recording.signals) or 'none'})"])
        self._rr = next(iter(recording.rr.values()), None)
        if self._rr is not None:
            self._beats = self._rr.beat_times()
            self._lost_rr = np.zeros(len(self._rr.rr), dtype=bool)
            for t, d in recording.gaps:  # a reader's bridge over a dropout: never measured by a strap
                i = int(np.searchsorted(self._beats, t - 1e-6))
                if i < len(self._rr.rr) and abs(self._beats[i] - t) < 1e-3:
                    self._lost_rr[i] = True
        self.features: frozenset[int] = frozenset(self._features())
        if self._rr is None and not self.features:
            raise ConfigError([f"{recording.path}: nothing to replay for profile {spec.profile!r}: the recording "
                               "has neither an RR track nor a signal channel"])
        self.services = self._gatt()
        # State, on the sensor's own timeline.
        self.started_at: float | None = None  # virtual time of the first connection
        self.powered = True
        self.away_until = -math.inf
        self.link: ReplayClient | None = None
        self.stalled = False
        self._subscribed: dict[str, NotifyCallback] = {}
        self._streams: dict[str, _Stream] = {}
        self._pmd_streams: dict[int, _Timeline] = {}
        self._script = sorted([(spec.start + t, "disconnect") for t in spec.disconnect_after]
                              + [(spec.start + t, "stall") for t in spec.stall_after])
        self._air: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._data_count = 0
        self._hrs_timeline: _Timeline | None = None
        self._samples_cache: dict[tuple[int, int], np.ndarray] = {}

    # -- identity

    def _features(self) -> list[int]:
        out = []
        if self._signal:
            out.append(PmdMeasurementType.ECG if self.spec.profile == "h10" else PmdMeasurementType.PPG)
        if self._rr is not None and self.spec.profile == "sense":
            out.append(PmdMeasurementType.PPI)
        return out

    def _gatt(self) -> list[tuple[str, list[tuple[str, list[str]]]]]:
        table: list[tuple[str, list[tuple[str, list[str]]]]] = []
        if self._rr is not None:
            table.append((HEART_RATE_SERVICE_UUID, [(HEART_RATE_MEASUREMENT_UUID, ["notify"]),
                                                    (BODY_SENSOR_LOCATION_UUID, ["read"])]))
        table.append((pmd.PMD_SERVICE_UUID, [(pmd.PMD_CONTROL_POINT_UUID, ["read", "write", "indicate"]),
                                             (pmd.PMD_DATA_UUID, ["notify"])]))
        return table

    def advertisement(self) -> AdvertisementData:
        services = [HEART_RATE_SERVICE_UUID] if self._rr is not None else []
        # Polar's manufacturer payload is proprietary and not emulated: only the company id is real.
        return AdvertisementData(local_name=self.name, manufacturer_data={POLAR_COMPANY_ID: b""},
                                 service_data={}, service_uuids=services, tx_power=None, rssi=-60,
                                 platform_data=())

    def service_collection(self) -> BleakGATTServiceCollection:
        collection = BleakGATTServiceCollection()
        handle = 1
        for service_uuid, chars in self.services:
            service = BleakGATTService(None, handle, service_uuid)
            collection.add_service(service)
            handle += 1
            for char_uuid, properties in chars:
                char = BleakGATTCharacteristic(None, handle + 1, char_uuid, properties,  # type: ignore[arg-type]
                                               lambda: MTU - 3, service)
                collection.add_characteristic(char)
                handle += 3  # declaration, value, CCCD, as on a real table
        return collection

    # -- time

    def recording_time(self, virtual: float | None = None) -> float:
        """Recording second the sensor is at (its own timeline starts at the first connection)."""
        if self.started_at is None:
            return self.spec.start
        return self.spec.start + (self.clock.now() if virtual is None else virtual) - self.started_at

    def _virtual(self, recording_t: float) -> float:
        assert self.started_at is not None
        return self.started_at + recording_t - self.spec.start

    # -- link

    @property
    def advertising(self) -> bool:
        """Advertising (and connectable): powered, in range, and not connected (like most straps)."""
        return self.powered and self.link is None and self.recording_time() >= self.away_until

    def attach(self, client: ReplayClient) -> None:
        if not self.advertising:
            raise BleakDeviceNotFoundError(self.address, f"{self.name} ({self.address}) is not reachable")
        if self.started_at is None:
            self.started_at = self.clock.now()
        self.link = client
        self.stalled = False
        self._subscribed.clear()
        self._streams.clear()
        self._pmd_streams.clear()
        self.log.connections += 1
        self._air = asyncio.get_running_loop().create_task(self._run_air(client), name=f"replay-air:{self.address}")
        log.debug("%s: connected at recording %.1f s", self.name, self.recording_time())

    def detach(self, client: ReplayClient) -> None:
        """The client disconnected. A real sensor stops its streams then."""
        if self.link is client:
            self._unlink()

    def _unlink(self) -> None:
        self.link = None
        self._subscribed.clear()
        self._streams.clear()
        self._pmd_streams.clear()
        if self._air is not None and self._air is not asyncio.current_task():
            self._air.cancel()
        self._air = None

    def _drop_link(self, why: str) -> None:
        client = self.link
        if client is None:
            return
        log.info("%s: dropping the link at recording %.1f s (%s)", self.name, self.recording_time(), why)
        self.log.drops += 1
        self._unlink()
        client._link_lost()

    # -- GATT operations

    def read(self, char_uuid: str) -> bytes:
        if char_uuid == pmd.PMD_CONTROL_POINT_UUID:
            return pmd.encode_features(self.features)
        if char_uuid == BODY_SENSOR_LOCATION_UUID:
            return b"\x01"  # chest
        raise BleakError(f"characteristic {char_uuid} is not readable")

    def subscribe(self, char_uuid: str, callback: NotifyCallback) -> None:
        self._subscribed[char_uuid] = callback
        if char_uuid == HEART_RATE_MEASUREMENT_UUID:
            timeline = self._hrs()
            self._streams[char_uuid] = _Stream(timeline, timeline.first_due_after(self.recording_time()))
            self._wake.set()

    def unsubscribe(self, char_uuid: str) -> None:
        self._subscribed.pop(char_uuid, None)
        if char_uuid == HEART_RATE_MEASUREMENT_UUID:
            self._streams.pop(char_uuid, None)

    def write(self, char_uuid: str, data: bytes) -> None:
        if char_uuid != pmd.PMD_CONTROL_POINT_UUID:
            raise BleakError(f"characteristic {char_uuid} is not writable")
        self.log.commands.append(bytes(data))
        response = self._command(bytes(data))
        if response is None:
            return
        due = self.clock.now() + RESPONSE_SECONDS
        loop = asyncio.get_running_loop()
        client = self.link
        loop.call_later(self.clock.host_seconds(RESPONSE_SECONDS), self._indicate, client, response, due)

    def _indicate(self, client: ReplayClient | None, response: bytes, due: float) -> None:
        callback = self._subscribed.get(pmd.PMD_CONTROL_POINT_UUID)
        if client is None or self.link is not client or callback is None:
            return  # indications not enabled, or the link went away: the response is lost, as over the air
        with self.clock.pinned(due):
            callback(bytearray(response))

    def _command(self, data: bytes) -> bytes | None:
        """A control-point command -> the sensor's response (``F0, op, type, status, more, params``)."""
        if len(data) < 2:
            return pmd.encode_control_point_response(data[0] if data else 0, 0, PmdStatus.INVALID_LENGTH)
        op, mtype = data[0], data[1] & 0x3F
        if op not in (PmdOpCode.GET_MEASUREMENT_SETTINGS, PmdOpCode.REQUEST_MEASUREMENT_START,
                      PmdOpCode.STOP_MEASUREMENT):
            return pmd.encode_control_point_response(op, mtype, PmdStatus.INVALID_OP_CODE)
        if mtype not in self.features:
            return pmd.encode_control_point_response(op, mtype, PmdStatus.NOT_SUPPORTED)
        offered = self._offered(mtype)
        if op == PmdOpCode.GET_MEASUREMENT_SETTINGS:
            return pmd.encode_control_point_response(op, mtype, 0, pmd.encode_settings(offered))
        if op == PmdOpCode.STOP_MEASUREMENT:
            if self._pmd_streams.pop(mtype, None) is None:
                return pmd.encode_control_point_response(op, mtype, PmdStatus.ALREADY_IN_STATE)
            self._streams.pop(pmd.PMD_DATA_UUID, None)
            return pmd.encode_control_point_response(op, mtype, 0)
        if mtype in self._pmd_streams:
            return pmd.encode_control_point_response(op, mtype, PmdStatus.ALREADY_IN_STATE)
        if self._pmd_streams:
            return pmd.encode_control_point_response(op, mtype, PmdStatus.INVALID_STATE)  # one stream at a time here
        try:
            requested = pmd.parse_settings(data[2:])
        except pmd.DecodeError:
            return pmd.encode_control_point_response(op, mtype, PmdStatus.INVALID_PARAMETER)
        errors = {PmdSettingType.SAMPLE_RATE: PmdStatus.INVALID_SAMPLE_RATE,
                  PmdSettingType.RESOLUTION: PmdStatus.INVALID_RESOLUTION,
                  PmdSettingType.CHANNELS: PmdStatus.INVALID_NUMBER_OF_CHANNELS}
        for kind, values in requested.items():
            if kind not in offered or len(values) != 1 or values[0] not in offered[kind]:
                return pmd.encode_control_point_response(op, mtype, errors.get(kind, PmdStatus.INVALID_PARAMETER))
        # A setting left out takes the first value offered.
        rate = int(requested.get(PmdSettingType.SAMPLE_RATE, offered.get(PmdSettingType.SAMPLE_RATE, (0,)))[0])
        timeline = self._pmd_timeline(mtype, rate)
        self._pmd_streams[mtype] = timeline
        self._streams[pmd.PMD_DATA_UUID] = _Stream(timeline, timeline.first_due_after(self.recording_time()))
        self._wake.set()
        params = b""
        if mtype == PmdMeasurementType.PPG:  # compressed frames: their scale is the sensor's to announce
            params = pmd.encode_settings({PmdSettingType.FACTOR: [1.0]})
        return pmd.encode_control_point_response(op, mtype, 0, params)

    def _offered(self, mtype: int) -> dict[PmdSettingType, tuple[float, ...]]:
        if mtype == PmdMeasurementType.ECG:
            return {PmdSettingType.SAMPLE_RATE: ECG_RATES, PmdSettingType.RESOLUTION: (ECG_RESOLUTION,)}
        if mtype == PmdMeasurementType.PPG:
            return {PmdSettingType.SAMPLE_RATE: PPG_RATES, PmdSettingType.RESOLUTION: (PPG_RESOLUTION,),
                    PmdSettingType.CHANNELS: (PPG_CHANNELS,)}
        return {}

    # -- timelines

    def _hrs(self) -> _Timeline:
        if self._hrs_timeline is None:
            assert self._rr is not None
            self._hrs_timeline = _HrsTimeline(self._beats, self._rr.rr, self._lost_rr, self.recording.gaps,
                                              self.spec.seed)
        return self._hrs_timeline

    def _pmd_timeline(self, mtype: int, rate: int) -> _Timeline:
        seed = self.spec.seed * 7919 + self.log.connections  # new jitter per stream start
        if mtype == PmdMeasurementType.PPI:
            assert self._rr is not None
            return _PpiTimeline(self._beats, self._rr.rr, self._lost_rr, seed)
        key = (mtype, rate)
        if key not in self._samples_cache:
            if mtype == PmdMeasurementType.ECG:
                self._samples_cache[key] = ecg_microvolts(self.recording, self._signal, rate)
            else:
                self._samples_cache[key] = ppg_counts(self.recording, self._signal, rate)
        samples = self._samples_cache[key]
        per_frame = ECG_SAMPLES_PER_FRAME if mtype == PmdMeasurementType.ECG else PPG_SAMPLES_PER_FRAME
        true_fs = rate * (1.0 + self.spec.rate_error)
        return _SignalTimeline(mtype, samples, true_fs, per_frame, self.recording_time(), self.recording.gaps,
                               compressed=mtype == PmdMeasurementType.PPG, seed=seed)

    # -- the air

    async def _run_air(self, client: ReplayClient) -> None:
        """Deliver due notifications and scripted faults in time order while ``client`` is linked."""
        while self.link is client:
            self._wake.clear()
            now = self.recording_time()
            item = self._next_item()
            if item is None:
                await self._wake.wait()
                continue
            t, action = item
            if t > now:
                try:  # asyncio.timeout, not wait_for, which can swallow a cancellation on 3.11
                    async with asyncio.timeout(self.clock.host_seconds(t - now)):
                        await self._wake.wait()
                except TimeoutError:
                    pass
                continue  # re-plan: the state may have changed, or the item is due now
            action(t)

    def _next_item(self) -> tuple[float, Callable[[float], None]] | None:
        best: tuple[float, Callable[[float], None]] | None = None
        end = self.duration + 1.0
        if self.powered:
            best = (end, self._power_off)
        if self._script and (best is None or self._script[0][0] < best[0]):
            best = (self._script[0][0], self._scripted)
        for stream in self._streams.values():
            if stream.next < len(stream.timeline.due):
                t = float(stream.timeline.due[stream.next])
                if best is None or t < best[0]:
                    best = (t, lambda t, s=stream: self._send(s, t))
        return best

    def _power_off(self, t: float) -> None:
        self.powered = False
        self._drop_link("end of the recording: the sensor switches off")

    def _scripted(self, t: float) -> None:
        _, kind = self._script.pop(0)
        if kind == "disconnect":
            self.away_until = t + self.spec.away
            self._drop_link("scripted disconnect")
        else:
            log.info("%s: notifications stall at recording %.1f s (scripted; the link stays up)", self.name, t)
            self.stalled = True

    def _send(self, stream: _Stream, t: float) -> None:
        k = stream.next
        stream.next += 1
        payload = stream.timeline.payload(k)
        if payload is None:
            return
        n = self._data_count
        self._data_count += 1
        if self.stalled:
            self.log.stalled += 1
            return
        if self.spec.lose_every and n % self.spec.lose_every == self.spec.lose_every - 1:
            self.log.lost += 1
            return
        if self.spec.corrupt_every and n % self.spec.corrupt_every == self.spec.corrupt_every // 2:
            payload = stream.timeline.corrupt(payload)
            self.log.corrupted += 1
        callback = self._subscribed.get(stream.timeline.char_uuid)
        if callback is None:
            return
        self.log.sent += 1
        with self.clock.pinned(self._virtual(t)):
            callback(bytearray(payload))


# ------------------------------------------------------------------------------------ bleak backends


class ReplayClient(BaseBleakClient):
    """bleak client backend for a :class:`VirtualSensor`. Pass it the ``BLEDevice`` the replay scanner
    found (its ``details`` is the sensor, as a platform backend keeps its OS handle there)."""

    def __init__(self, address_or_ble_device: BLEDevice | str, *,
                 disconnected_callback: Callable[[], None] | None, timeout: float = 10.0, **kwargs: Any):
        super().__init__(address_or_ble_device, disconnected_callback=disconnected_callback, timeout=timeout)
        details = address_or_ble_device.details if isinstance(address_or_ble_device, BLEDevice) else None
        if not isinstance(details, VirtualSensor):
            raise BleakError("the replay backend connects to a BLEDevice found by its own scanner, "
                             "not to a bare address")
        self._sensor: VirtualSensor = details
        self._connected = False

    @property
    def name(self) -> str:
        return self._sensor.name

    @property
    def mtu_size(self) -> int:
        return MTU

    @property
    def is_connected(self) -> bool:
        return self._connected

    async def connect(self, pair: bool, **kwargs: Any) -> None:
        await asyncio.sleep(self._sensor.clock.host_seconds(CONNECT_SECONDS))
        self._sensor.attach(self)
        self.services = self._sensor.service_collection()
        self._connected = True

    async def disconnect(self) -> None:
        if self._connected:
            self._connected = False
            self._sensor.detach(self)

    async def pair(self, *args: Any, **kwargs: Any) -> None:
        log.debug("replay backend: pairing is not needed by a virtual sensor")

    async def unpair(self) -> None:
        log.debug("replay backend: nothing to unpair")

    def _link_lost(self) -> None:
        """The sensor went away: bleak reports unsolicited disconnects through the callback."""
        self._connected = False
        if self._disconnected_callback is not None:
            asyncio.get_running_loop().call_soon(self._disconnected_callback)

    def _require(self, characteristic: BleakGATTCharacteristic, prop: tuple[str, ...]) -> None:
        if not self._connected:
            raise BleakError("Not connected")
        if not set(prop) & set(characteristic.properties):
            raise BleakError(f"characteristic {characteristic.uuid} does not support {' or '.join(prop)}")

    async def read_gatt_char(self, characteristic: BleakGATTCharacteristic, *, use_cached: bool = False,
                             **kwargs: Any) -> bytearray:
        self._require(characteristic, ("read",))
        return bytearray(self._sensor.read(characteristic.uuid))

    async def read_gatt_descriptor(self, descriptor: BleakGATTDescriptor, *, use_cached: bool = False,
                                   **kwargs: Any) -> bytearray:
        raise BleakError("the replay backend emulates no readable descriptors")

    async def write_gatt_char(self, characteristic: BleakGATTCharacteristic, data: SizedBuffer,
                              response: bool) -> None:
        self._require(characteristic, ("write", "write-without-response"))
        self._sensor.write(characteristic.uuid, bytes(data))

    async def write_gatt_descriptor(self, descriptor: BleakGATTDescriptor, data: SizedBuffer) -> None:
        raise BleakError("the replay backend emulates no writable descriptors")

    async def start_notify(self, characteristic: BleakGATTCharacteristic, callback: NotifyCallback,
                           **kwargs: Any) -> None:
        self._require(characteristic, ("notify", "indicate"))
        self._sensor.subscribe(characteristic.uuid, callback)

    async def stop_notify(self, characteristic: BleakGATTCharacteristic) -> None:
        if not self._connected:
            raise BleakError("Not connected")
        self._sensor.unsubscribe(characteristic.uuid)


class ReplayScanner(BaseBleakScanner):
    """bleak scanner backend that hears the advertisements of one :class:`VirtualSensor`. bleak
    instantiates scanner backends itself, so :class:`ReplayBackend` binds the sensor to a subclass."""

    sensor: ClassVar[VirtualSensor]

    def __init__(self, detection_callback: AdvertisementDataCallback | None, service_uuids: list[str] | None,
                 scanning_mode: str = "active", **kwargs: Any):
        super().__init__(detection_callback, service_uuids)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.seen_devices = {}
        self._task = asyncio.get_running_loop().create_task(self._listen(), name="replay-scanner")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _listen(self) -> None:
        sensor = self.sensor
        while True:
            if sensor.advertising:
                adv = sensor.advertisement()
                if self.is_allowed_uuid(adv.service_uuids):
                    device = self.create_or_update_device(sensor.address, sensor.address, sensor.name, sensor, adv)
                    self.call_detection_callbacks(device, adv)
            await asyncio.sleep(max(0.001, sensor.clock.host_seconds(ADVERTISING_INTERVAL)))


class ReplayBackend:
    """The replayed air: one virtual sensor, its clock, and the bleak backend classes that reach it.

    >>> air = ReplayBackend.open("replay:slp61.rr?speed=60")  # doctest: +SKIP
    >>> device = await BleakScanner.find_device_by_name(air.sensor.name, backend=air.scanner)  # doctest: +SKIP
    >>> async with BleakClient(device, backend=air.client) as client: ...  # doctest: +SKIP
    """

    client: type[BaseBleakClient] = ReplayClient

    def __init__(self, spec: ReplaySpec, recording: Recording | None = None):
        self.spec = spec
        self.clock = VirtualClock(spec.speed)
        self.sensor = VirtualSensor(spec, recording if recording is not None else read_recording(spec.path),
                                    self.clock)
        self.scanner: type[BaseBleakScanner] = type("ReplayScanner", (ReplayScanner,), {"sensor": self.sensor})

    @classmethod
    def open(cls, text: str, *, base: Path | None = None) -> ReplayBackend:
        return cls(ReplaySpec.parse(text, base=base))

    @property
    def speed(self) -> float:
        return self.spec.speed
