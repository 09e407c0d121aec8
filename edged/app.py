"""Wiring: configuration in, running tasks out.

One asyncio loop. Per device two named tasks joined by a bounded queue: a reader (the source backend) and
a processor (the device pipeline, which scores epochs and hands them to the sinks). Live devices never
wait for a slow consumer: when the queue is full the oldest chunk is dropped, counted, and turned into an
explicit gap so the pipeline never splices across it. A replayed recording instead waits (back-pressure),
so a fast replay loses nothing.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from edged.config import Config, DeviceConfig
from edged.errors import EdgedError
from edged.pipeline import DevicePipeline, match_channels
from edged.scoring import catalog
from edged.scoring.session import OnnxModel
from edged.sinks.base import Sink
from edged.sources.base import ChannelSpec, Chunk, Gap, Source, SourceEvent, Status
from edged.sources.registry import BACKENDS

log = logging.getLogger(__name__)

COUNTERS_INTERVAL = 10.0  # seconds between retained counter updates per device


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
    failed: BaseException | None = None
    tasks: list[asyncio.Task] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.config.name

    def counters(self) -> dict[str, int | float]:
        out: dict[str, int | float] = dict(self.source.counters)
        out["queue_dropped"] = self.queue.dropped
        if self.pipeline is not None:
            out.update(self.pipeline.counters.as_dict())
        return out

    async def read(self) -> None:
        try:
            async for event in self.source.events():
                await self.queue.put(event)
        finally:
            self.queue.items.append(_END)  # type: ignore[arg-type]  # after everything read, even on error
            self.queue._readable.set()

    async def process(self) -> None:
        online = False
        while True:
            event = await self.queue.get()
            if event is _END:
                break
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

    def __init__(self, config: Config, sinks: list[Sink]):
        self.config = config
        self.sinks = sinks
        self.runners: list[DeviceRunner] = []

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
            block = getattr(source, "speed", None) is not None  # a replay can wait; a live device cannot
            queue = EventQueue(device.queue_size, channels={c.name: c for c in source.channels()}, block=block)
            runner = DeviceRunner(device, source, model, self.sinks, queue)
            runner.tasks = [
                asyncio.create_task(self._guard(runner, runner.read()), name=f"{device.name}:reader"),
                asyncio.create_task(self._guard(runner, runner.process()), name=f"{device.name}:pipeline"),
            ]
            self.runners.append(runner)
        counters_task = asyncio.create_task(self._publish_counters(stop), name="counters")
        try:
            while not stop.is_set():
                if exit_when_done and all(r.finished or r.failed for r in self.runners):
                    break
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation (gh-86296).
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.2):
                        await stop.wait()
        finally:
            counters_task.cancel()
            for runner in self.runners:
                for task in runner.tasks:
                    task.cancel()
            await asyncio.gather(counters_task, *(t for r in self.runners for t in r.tasks), return_exceptions=True)
            for runner in self.runners:
                await runner.source.close()
                if not runner.finished:
                    for sink in self.sinks:
                        sink.publish_counters(runner.name, runner.counters())
                        sink.set_availability(runner.name, False)
        failed = [r for r in self.runners if r.failed]
        if failed:
            raise EdgedError("; ".join(f"device {r.name!r} failed: {r.failed}" for r in failed))

    async def _guard(self, runner: DeviceRunner, work) -> None:
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a failing device must not take the others down; it is reported
            runner.failed = exc
            log.exception("device %s stopped", runner.name)
            for sink in self.sinks:
                sink.set_availability(runner.name, False)

    async def _publish_counters(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.sleep(COUNTERS_INTERVAL)
            for runner in self.runners:
                if not runner.finished:
                    for sink in self.sinks:
                        sink.publish_counters(runner.name, runner.counters())
