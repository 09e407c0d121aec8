"""Wiring: configuration in, running tasks out, and every task watched.

One asyncio loop. Per device two named tasks joined by a bounded queue: a reader (the source backend) and
a processor (the device pipeline, which scores epochs and hands them to the sinks). Live devices never
wait for a slow consumer: when the queue is full the oldest chunk is dropped, counted, and turned into an
explicit gap so the pipeline never splices across it. A replayed recording instead waits (back-pressure),
so a fast replay loses nothing.

Supervision (``Daemon._supervise``, every ``MONITOR_EVERY`` seconds):

* a device whose reader or processor crashed, or whose processor has events waiting and took none for
  ``STALL_SECONDS``, is restarted after a delay (``RESTART_DELAY``, doubled each time up to 30 s): both
  tasks, a fresh source and pipeline (so a new session: the stream's position cannot be trusted after a
  crash), published offline meanwhile. At most ``RESTART_LIMIT`` restarts in ``RESTART_WINDOW`` seconds;
  then the device is marked failed, published offline and reported (log, systemd status, exit code), and
  the other devices go on. A source's own reconnections (a serial port that vanished, a strap out of range)
  are not crashes: its supervisor handles them inside the reader.
* a crashed counters task is restarted at once, and a sink's publisher thread that died (``health()`` /
  ``restart_sender()``, optional on the Sink protocol) too, each within the same kind of budget.
* systemd's watchdog (``edged.notify``) is fed at half ``$WATCHDOG_USEC`` only while the pipeline really
  moves: every running device's processor is idle waiting for data or took an event recently, and every
  publisher reports itself alive. A loop blocked by a stuck computation feeds nothing, so systemd restarts
  the process.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from edged.config import Config, DeviceConfig
from edged.errors import EdgedError
from edged.notify import Notifier
from edged.pipeline import DevicePipeline, match_channels
from edged.scoring import catalog
from edged.scoring.session import OnnxModel
from edged.sinks.raw_recording import RawRecorder, recorder_for
from edged.sinks.base import Sink
from edged.sources.base import ChannelSpec, Chunk, Gap, Source, SourceEvent, Status
from edged.sources.registry import BACKENDS

log = logging.getLogger(__name__)

COUNTERS_INTERVAL = 10.0  # seconds between retained counter updates per device
MONITOR_EVERY = 0.2  # seconds between two supervision passes
STALL_SECONDS = 60.0  # a processor with events waiting that takes none for this long is stalled
RESTART_LIMIT = 5  # restarts of one task (a device, the counters, a publisher) allowed ...
RESTART_WINDOW = 600.0  # ... within this many seconds; one more marks it failed
RESTART_DELAY = 1.0  # seconds before a device's first restart; doubled for each further one, up to 30 s


class RestartBudget:
    """At most ``limit`` restarts in any ``window`` seconds (monotonic clock)."""

    def __init__(self, limit: int = RESTART_LIMIT, window: float = RESTART_WINDOW):
        self.limit = limit
        self.window = window
        self.times: collections.deque[float] = collections.deque()

    def allow(self, now: float) -> bool:
        """Take one restart if the budget has one left."""
        while self.times and now - self.times[0] > self.window:
            self.times.popleft()
        if len(self.times) >= self.limit:
            return False
        self.times.append(now)
        return True


class EventQueue:
    """A bounded FIFO of source events between a reader and a processor.

    With ``block=False`` (live devices) a full queue drops its oldest event; a dropped chunk becomes a
    :class:`Gap` of exactly its size, delivered before anything newer, so loss is exact and visible.
    """

    def __init__(self, maxsize: int, *, channels: dict[str, ChannelSpec], block: bool):
        self.maxsize = maxsize
        self.block = block
        self.channels = channels
        self.items: collections.deque[SourceEvent] = collections.deque()
        self.gaps: dict[str, Gap] = {}  # per channel, merged, older than everything in ``items``
        self.dropped = 0
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()

    def _to_gap(self, event: SourceEvent) -> Gap | None:
        if isinstance(event, Status):
            return None  # a status is superseded by later ones; nothing to account for
        if isinstance(event, Gap):
            return event
        spec = self.channels[event.channel]
        if spec.kind == "hr":  # readings at irregular times: their index counts readings
            span = float(event.times[-1] - event.times[0]) if event.times is not None and len(event.data) else 0.0
            return Gap(event.channel, event.start_index, len(event.data), span, event.received)
        seconds = float(event.data.sum()) if spec.kind == "rr" else len(event.data) / spec.fs
        n_missing = 0 if spec.kind == "rr" else len(event.data)
        return Gap(event.channel, event.start_index, n_missing, seconds, event.received)

    async def put(self, event: SourceEvent) -> None:
        while self.block and len(self.items) >= self.maxsize:
            self._writable.clear()
            await self._writable.wait()
        if len(self.items) >= self.maxsize:
            lost = self._to_gap(self.items.popleft())
            self.dropped += 1
            if lost is None:
                self.items.append(event)
                self._readable.set()
                return
            earlier = self.gaps.get(lost.channel)
            if earlier is not None:
                lost = Gap(lost.channel, earlier.start_index, earlier.n_missing + lost.n_missing,
                           earlier.seconds + lost.seconds, lost.received)
            self.gaps[lost.channel] = lost
        self.items.append(event)
        self._readable.set()

    async def get(self) -> SourceEvent:
        while not self.items and not self.gaps:
            self._readable.clear()
            await self._readable.wait()
        if self.gaps:
            return self.gaps.pop(next(iter(self.gaps)))
        event = self.items.popleft()
        self._writable.set()
        return event


_END = object()


@dataclass
class DeviceRunner:
    config: DeviceConfig
    source: Source
    model: OnnxModel
    sinks: list[Sink]
    queue: EventQueue
    pipeline: DevicePipeline | None = None
    finished: bool = False
    failed: str | None = None  # why the device was given up on (restart budget spent)
    tasks: list[asyncio.Task] = field(default_factory=list)
    restarts: int = 0
    budget: RestartBudget = field(default_factory=RestartBudget)
    progress: float = field(default_factory=time.monotonic)  # when the processor last took an event
    idle: bool = False  # the processor is waiting for the next event
    restart_at: float | None = None  # when a device stopped for a restart starts again
    recorder: RawRecorder | None = None  # raw EDF+ recording of everything the pipeline receives

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def running(self) -> bool:
        return not (self.finished or self.failed)

    def counters(self) -> dict[str, int | float]:
        out: dict[str, int | float] = dict(self.source.counters)
        out["queue_dropped"] = self.queue.dropped
        out["restarts"] = self.restarts
        if self.pipeline is not None:
            out.update(self.pipeline.counters.as_dict())
        return out

    def waiting(self) -> int:
        """Events queued for the processor."""
        return len(self.queue.items) + len(self.queue.gaps)

    def problem(self, now: float, stall_seconds: float) -> tuple[str, BaseException | None] | None:
        """Why this device needs a restart (crashed or stalled task), or None."""
        for task in self.tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                exc = task.exception()
                role = task.get_name().rpartition(":")[2]
                return f"{role} crashed: {type(exc).__name__}: {exc}", exc
        if not self.idle and self.waiting() and now - self.progress > stall_seconds:
            stalled = now - self.progress
            return f"pipeline stalled: {self.waiting()} event(s) waiting, none taken for {stalled:.0f} s", None
        return None

    async def read(self) -> None:
        async for event in self.source.events():
            await self.queue.put(event)
        # Only after a normal end: a crashed reader is restarted, and its device must not look finished.
        self.queue.items.append(_END)  # type: ignore[arg-type]
        self.queue._readable.set()

    async def process(self) -> None:
        online = False
        while True:
            self.idle = True
            event = await self.queue.get()
            self.idle = False
            self.progress = time.monotonic()
            if event is _END:
                break
            if self.recorder is not None:
                self.recorder.push(event, self.source)
            if isinstance(event, Status):
                online = event.connected
                for sink in self.sinks:
                    sink.set_availability(self.name, online)
                continue
            if self.pipeline is None:
                self.pipeline = DevicePipeline(
                    self.name, self.source.channels(), self.model, anchor_time=self.source.anchor_time or time.time(),
                    quality_threshold=self.config.quality_threshold, channel_map=self.config.channels,
                    beat_detector=self.config.beat_detector,
                )
            if not online:
                online = True
                for sink in self.sinks:
                    sink.set_availability(self.name, True)
            for scored in self.pipeline.push(event):
                for sink in self.sinks:
                    sink.publish_stage(scored)
        self.finished = True
        for sink in self.sinks:
            sink.publish_counters(self.name, self.counters())
            sink.set_availability(self.name, False)


def _build_source(device: DeviceConfig, config: Config) -> Source:
    backend = BACKENDS[device.type]
    options = dict(device.options)
    if "path" in options:
        options["path"] = str(config.relative(options["path"]))
    backend_option = str(options.get("backend", ""))
    if backend_option.startswith("replay:"):  # a BLE replay names a recording: relative to the config too
        recording, sep, query = backend_option[len("replay:"):].partition("?")
        options["backend"] = f"replay:{config.relative(recording)}{sep}{query}"
    return backend.load()(device.name, **options)


class Daemon:
    """Builds every device, model and sink from a config, then runs until stopped (or, with
    ``exit_when_done``, until every finite source has ended)."""

    def __init__(self, config: Config, sinks: list[Sink], *, notifier: Notifier | None = None,
                 source_factory: Callable[[DeviceConfig], Source] | None = None):
        self.config = config
        self.sinks = sinks
        self.runners: list[DeviceRunner] = []
        self.notifier = notifier or Notifier()
        # How a restarted device gets a fresh source: from its config, like at start-up.
        self.source_factory = source_factory or (lambda device: _build_source(device, config))
        self.stall_seconds = STALL_SECONDS
        self.restart_delay = RESTART_DELAY
        self._counters_task: asyncio.Task | None = None
        self._stop = asyncio.Event()
        self._counters_budget = RestartBudget()
        self._sender_budgets = [RestartBudget() for _ in sinks]
        self._next_watchdog = 0.0
        self._next_status = 0.0
        self._withheld: str | None = None  # why the watchdog is not fed (logged once per reason)

    @staticmethod
    def prepare(config: Config) -> list[tuple[DeviceConfig, Source, OnnxModel]]:
        """Open every source and model and check they fit, reporting every problem at once. Nothing is
        published before this succeeds, so a broken set-up fails fast with clear lines."""
        if not config.devices:
            raise EdgedError(f"{config.path or 'config'}: no devices configured: add a [[devices]] table")
        extra_dirs = [config.relative(d) for d in config.models["dirs"]]
        models: dict[Path, OnnxModel] = {}
        prepared, problems = [], []
        for device in config.devices:
            try:
                manifest_path = catalog.resolve(device.model, extra_dirs).resolve()
                if manifest_path not in models:
                    models[manifest_path] = OnnxModel.load(manifest_path)
                model = models[manifest_path]
                source = _build_source(device, config)
                match_channels(model.manifest, source.channels(), device.channels)
                prepared.append((device, source, model))
            except EdgedError as exc:
                problems += [f"device {device.name!r}: {line}" for line in str(exc).splitlines()]
        if problems:
            raise EdgedError("\n".join(problems))
        return prepared

    async def run(self, prepared, *, stop: asyncio.Event, exit_when_done: bool = False) -> None:
        for device, source, model in prepared:
            runner = DeviceRunner(device, source, model, self.sinks, _queue_for(device, source))
            runner.recorder = recorder_for(self.config, device)
            self._start(runner)
            self.runners.append(runner)
        self._stop = stop
        self._counters_task = asyncio.create_task(self._publish_counters(stop), name="counters")
        self.notifier.ready(self._status_line())
        try:
            while not stop.is_set():
                if exit_when_done and not any(r.running for r in self.runners):
                    break
                await self._supervise()
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation (gh-86296).
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(MONITOR_EVERY):
                        await stop.wait()
        finally:
            self.notifier.stopping(f"stopping: {self._status_line()}")
            tasks = [t for r in self.runners for t in r.tasks]
            if self._counters_task is not None:
                tasks.append(self._counters_task)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for runner in self.runners:
                await runner.source.close()
                if runner.recorder is not None:
                    runner.recorder.close()
                if not runner.finished:
                    # Once per device: sinks publish availability on change only (see MqttSink).
                    for sink in self.sinks:
                        sink.publish_counters(runner.name, runner.counters())
                        sink.set_availability(runner.name, False)
        failed = [r for r in self.runners if r.failed]
        if failed:
            raise EdgedError("; ".join(f"device {r.name!r} failed: {r.failed}" for r in failed))

    def _start(self, runner: DeviceRunner) -> None:
        runner.progress = time.monotonic()
        runner.tasks = [
            asyncio.create_task(runner.read(), name=f"{runner.name}:reader"),
            asyncio.create_task(runner.process(), name=f"{runner.name}:pipeline"),
        ]

    # ---------------------------------------------------------------------------------- supervision

    async def _supervise(self) -> None:
        now = time.monotonic()
        for runner in self.runners:
            if not runner.running:
                continue
            if runner.restart_at is not None:
                if now >= runner.restart_at:
                    await self._relaunch(runner)
                continue
            found = runner.problem(now, self.stall_seconds)
            if found is not None:
                await self._stop_for_restart(runner, *found)
        task = self._counters_task
        if task is not None and task.done() and not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            if self._counters_budget.allow(now):
                log.error("counters task crashed (%s: %s); restarting it", type(exc).__name__, exc, exc_info=exc)
                self._counters_task = asyncio.create_task(self._publish_counters(self._stop), name="counters")
            else:
                log.error("counters task crashed %d times in %g min; counters are no longer published",
                          RESTART_LIMIT + 1, RESTART_WINDOW / 60)
                self._counters_task = None
        for sink, budget in zip(self.sinks, self._sender_budgets):
            health = getattr(sink, "health", None)
            restart = getattr(sink, "restart_sender", None)
            problem = health() if health is not None else None
            if problem and "died" in problem and restart is not None and budget.allow(now):
                log.error("%s; restarting it", problem)
                restart()
        self._feed_watchdog(now)

    async def _stop_for_restart(self, runner: DeviceRunner, problem: str, exc: BaseException | None) -> None:
        """Stop a device whose task crashed or stalled and schedule its restart, or give up on it when its
        restart budget is spent."""
        name = runner.name
        log.error("device %s: %s", name, problem, exc_info=exc)
        for sink in self.sinks:
            sink.publish_counters(name, runner.counters())
            sink.set_availability(name, False)
        for task in runner.tasks:
            task.cancel()
        await asyncio.gather(*runner.tasks, return_exceptions=True)
        await runner.source.close()
        if not runner.budget.allow(time.monotonic()):
            runner.failed = f"{problem} ({RESTART_LIMIT} restarts within {RESTART_WINDOW / 60:g} min already)"
            log.error("device %s failed: %s; giving up on it, the other devices go on", name, runner.failed)
            self.notifier.status(self._status_line())
            return
        delay = min(30.0, self.restart_delay * 2 ** runner.restarts)
        runner.restart_at = time.monotonic() + delay
        log.warning("device %s: restarting in %g s", name, delay)

    async def _relaunch(self, runner: DeviceRunner) -> None:
        """Start a stopped device again with a fresh source, queue and pipeline."""
        runner.restart_at = None
        try:
            source = await asyncio.to_thread(self.source_factory, runner.config)
            queue = await asyncio.to_thread(_queue_for, runner.config, source)
        except Exception as rebuild:  # noqa: BLE001  (whatever stops the rebuild ends this device)
            runner.failed = f"restarting it failed: {rebuild}"
            log.error("device %s failed: %s; the other devices go on", runner.name, runner.failed)
            return
        runner.restarts += 1
        runner.source, runner.queue, runner.pipeline = source, queue, None
        log.warning("device %s restarted (%d so far): a new session begins", runner.name, runner.restarts)
        self._start(runner)

    def _moving(self, now: float) -> str | None:
        """None if the pipeline really moves; else why not (see the module docstring)."""
        window = max(self.notifier.watchdog_interval or 0.0, 1.0) * 2
        for runner in self.runners:
            if runner.restart_at is not None:
                continue  # stopped on purpose, waiting to restart
            if runner.running and not runner.idle and runner.waiting() and now - runner.progress > window:
                stalled = now - runner.progress
                return f"device {runner.name}: {runner.waiting()} event(s) waiting, none taken for {stalled:.1f} s"
        for sink in self.sinks:
            health = getattr(sink, "health", None)
            problem = health() if health is not None else None
            if problem:
                return problem
        return None

    def _feed_watchdog(self, now: float) -> None:
        interval = self.notifier.watchdog_interval
        if now >= self._next_status:
            self._next_status = now + COUNTERS_INTERVAL
            self.notifier.status(self._status_line())
        if interval is None or now < self._next_watchdog:
            return
        why = self._moving(now)
        if why is None:
            self.notifier.watchdog()
            self._next_watchdog = now + interval
            if self._withheld is not None:
                log.warning("pipeline moving again: feeding systemd's watchdog again")
            self._withheld = None
        elif why != self._withheld:
            self._withheld = why
            log.error("not feeding systemd's watchdog: %s", why)

    def _status_line(self) -> str:
        running = sum(r.running for r in self.runners)
        finished = sum(r.finished for r in self.runners)
        failed = [r.name for r in self.runners if r.failed]
        epochs = sum(r.pipeline.counters.epochs_scored for r in self.runners if r.pipeline is not None)
        line = f"{len(self.runners)} device(s): {running} running, {finished} finished, {len(failed)} failed"
        return line + (f" ({', '.join(failed)})" if failed else "") + f"; {epochs} epochs scored this session"

    async def _publish_counters(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.sleep(COUNTERS_INTERVAL)
            for runner in self.runners:
                if runner.running:
                    for sink in self.sinks:
                        sink.publish_counters(runner.name, runner.counters())


def _queue_for(device: DeviceConfig, source: Source) -> EventQueue:
    block = getattr(source, "speed", None) is not None  # a replay can wait; a live device cannot
    return EventQueue(device.queue_size, channels={c.name: c for c in source.channels()}, block=block)
