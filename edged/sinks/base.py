"""The sink contract: where scored epochs go. The MQTT sink is the main one; ``edged replay`` adds a
collecting sink for its summary. A sink must never block the caller (the asyncio loop) on network I/O."""

from __future__ import annotations

from typing import Protocol

from edged.scoring.epoch import ScoredEpoch


class Sink(Protocol):
    def publish_stage(self, epoch: ScoredEpoch) -> None: ...

    def set_availability(self, device: str, online: bool) -> None: ...

    def publish_counters(self, device: str, counters: dict[str, int | float]) -> None: ...

    def close(self, timeout: float = 5.0) -> None: ...


class CollectingSink:
    """Keeps every scored epoch in memory, per device (for summaries and tests of a finite replay)."""

    def __init__(self) -> None:
        self.epochs: dict[str, list[ScoredEpoch]] = {}
        self.availability: dict[str, bool] = {}
        self.counters: dict[str, dict] = {}

    def publish_stage(self, epoch: ScoredEpoch) -> None:
        self.epochs.setdefault(epoch.device, []).append(epoch)

    def set_availability(self, device: str, online: bool) -> None:
        self.availability[device] = online

    def publish_counters(self, device: str, counters: dict[str, int | float]) -> None:
        self.counters[device] = dict(counters)

    def close(self, timeout: float = 5.0) -> None:
        pass
