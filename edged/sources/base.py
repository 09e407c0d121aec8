"""The source contract: what every device backend yields, whatever it talks to.

A source is an async iterator of events for one device. A data event concerns one channel and is either

* a :class:`Chunk` of consecutive samples (or, for an ``rr`` channel, consecutive inter-beat intervals), or
* a :class:`Gap`: samples that should have arrived and did not. Gaps are explicit so that nothing downstream
  ever invents or silently splices data.

A live source also yields :class:`Status` events when its device connects or is lost; the daemon
publishes them as the device's availability. A source that reconnects by itself keeps one stream: sample
indices continue and the lost span is a Gap.

Time is derived from sample counts, never from per-packet arrival times: the first sample of a channel is
anchored to the host's wall clock once (``anchor_time``) and sample ``i`` is at ``anchor_time + i / fs``.
The clock model of a live device may refine the anchor; the sample index stays the truth.

For an ``rr`` channel (what a BLE heart-rate strap sends: intervals with no timestamps) the index counts
intervals and beat times are the anchor plus the cumulative sum of the intervals.

An ``hr`` channel (heart rate in bpm at irregular times: a watch, or a strap that sends no RR) counts
readings; every chunk carries ``times``, the stream time of each reading.
"""

from __future__ import annotations

import abc
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

ChannelKind = Literal["signal", "rr", "hr"]


@dataclass(frozen=True, slots=True)
class ChannelSpec:
    """What a channel carries. ``fs`` is the nominal sample rate in Hz (0 for ``rr`` and ``hr`` channels).

    ``offset`` is the stream time (seconds after the source's anchor) of sample 0, or for an ``rr``
    channel of beat 0, the beat that opens the first interval. Live devices anchor on their first
    sample (offset 0); a replayed recording anchors on its start, where the first beat comes a little later.
    """

    name: str
    kind: ChannelKind
    fs: float
    units: str
    offset: float = 0.0

    def __post_init__(self) -> None:
        if self.kind == "signal" and not self.fs > 0:
            raise ValueError(f"channel {self.name!r}: a signal channel needs a positive sample rate")


@dataclass(frozen=True, slots=True)
class Chunk:
    """Consecutive samples of one channel.

    ``start_index`` is the index of ``data[0]`` in the channel's own sample (or interval) count since the
    stream began. ``received`` is ``time.monotonic()`` when the chunk reached edged: latency is measured
    from it, so it stays meaningful at any replay speed.
    """

    channel: str
    start_index: int
    data: np.ndarray
    received: float = field(default_factory=time.monotonic)
    # rr channels from live devices: stream time (s after the anchor) of the beat closing each interval,
    # as placed by the source's clock model. None: beat times follow from the cumulative intervals.
    # hr channels: always the stream time of each reading.
    times: np.ndarray | None = None

    @property
    def end_index(self) -> int:
        """Index one past the last sample of this chunk."""
        return self.start_index + len(self.data)


@dataclass(frozen=True, slots=True)
class Gap:
    """``n_missing`` samples (intervals, for ``rr``) starting at ``start_index`` never arrived.

    For an ``rr`` channel the number of lost beats is usually unknown; ``seconds`` then says how long the
    silence lasted and ``n_missing`` is 0.
    """

    channel: str
    start_index: int
    n_missing: int
    seconds: float
    received: float = field(default_factory=time.monotonic)


@dataclass(frozen=True, slots=True)
class Status:
    """The device connected or went away (a live source's supervisor says so; it is published as the
    device's availability). ``reason`` is for people: "connected", "no data for 10 s", "port closed"..."""

    connected: bool
    reason: str = ""
    received: float = field(default_factory=time.monotonic)


SourceEvent = Chunk | Gap | Status


class Source(abc.ABC):
    """A device backend. Subclasses implement :meth:`channels` and :meth:`_events`; the base class does the
    bookkeeping every backend needs (the anchor and the counters) exactly once."""

    def __init__(self, device: str):
        self.device = device
        self.anchor_time: float | None = None
        self.counters: dict[str, int | float] = {"chunks": 0, "samples": 0, "gaps": 0, "lost_samples": 0}

    @abc.abstractmethod
    def channels(self) -> list[ChannelSpec]:
        """The channels this source will deliver. Known before the first event."""

    @abc.abstractmethod
    def _events(self) -> AsyncIterator[SourceEvent]:
        """Yield events in time order per channel. Set ``self.anchor_time`` before the first one."""

    async def events(self) -> AsyncIterator[SourceEvent]:
        async for event in self._events():
            if isinstance(event, Chunk):
                self.counters["chunks"] += 1
                self.counters["samples"] += len(event.data)
            elif isinstance(event, Gap):
                self.counters["gaps"] += 1
                self.counters["lost_samples"] += event.n_missing
            yield event

    async def close(self) -> None:
        """Release the device. Idempotent."""
