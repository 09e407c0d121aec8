"""Connection supervision for live sources: connect, watch, lose, back off, reconnect, forever.

A live backend describes ONE connection as a *session*: an async generator that opens the device, starts
it, and yields the stream's events until something goes wrong, closing the device in its ``finally``. It
raises :class:`DeviceLost` (or any ``OSError``, which pyserial's and bleak's errors are) when the device
goes away, and yields :data:`IDLE` after every read that brought no sample, at least every second or so,
so that silence can be timed without cancelling blocking I/O.

:class:`Supervisor` runs sessions one after another and owns everything that is the same for every
backend:

* **silence**: no Chunk or Gap for ``silence_seconds`` is a loss (a board that stops sending without any
  error is the most common failure at night);
* **status**: ``Status(True, "connected")`` before the first data of a session (not when a port merely
  opened: a port can open on a board that sends nothing), ``Status(False, reason)`` once per loss, and
  once when the very first attempt fails, so the device is published offline rather than unknown;
* **backoff**: capped exponential with jitter (so devices that failed together do not retry in lockstep),
  restarting from ``minimum`` after every successful connection;
* **logging**: once per change of state or of failure reason, never once per retry;
* **counters** (in the dict it is given, normally ``Source.counters``): ``connections``, ``reconnects``,
  ``disconnects``.

No exception escapes :meth:`Supervisor.run` except cancellation: an unexpected one (a bug) is logged with
its traceback, once per distinct message, and retried like any other failure; the night goes on.
What happens to the stream across a reconnection (one stream, gaps for the lost span) is the backend's
business; see ``edged.sources.serial_source``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, MutableMapping
from dataclasses import dataclass
from typing import Final

from edged.errors import EdgedError, SourceError
from edged.sources.base import Chunk, Gap, SourceEvent, Status

log = logging.getLogger(__name__)


class DeviceLost(SourceError):
    """The device went away during a session; the message says why, for people."""


class Idle:
    """What a session yields after a read that brought no sample (lets the supervisor time silence).
    Use the one instance, :data:`IDLE`."""

    def __repr__(self) -> str:
        return "IDLE"


IDLE: Final = Idle()

SessionItem = SourceEvent | Idle
Session = Callable[[], AsyncGenerator[SessionItem, None]]


@dataclass(frozen=True, slots=True)
class Backoff:
    """Capped exponential backoff with jitter: attempt ``k`` (0 after each success) waits
    ``min(maximum, minimum * factor**k)`` scaled down by up to ``jitter`` (a fraction) at random."""

    minimum: float = 1.0
    maximum: float = 30.0
    factor: float = 2.0
    jitter: float = 0.3

    def __post_init__(self) -> None:
        if not 0 < self.minimum <= self.maximum or self.factor < 1 or not 0 <= self.jitter < 1:
            raise ValueError("need 0 < minimum <= maximum, factor >= 1 and 0 <= jitter < 1")

    def delay(self, attempt: int, uniform: float) -> float:
        """Seconds to wait before attempt ``attempt + 1``; ``uniform`` is a random number in [0, 1)."""
        base = min(self.maximum, self.minimum * self.factor ** min(attempt, 64))
        return base * (1.0 - self.jitter * uniform)


def describe(exc: BaseException) -> str:
    """A short, stable reason for a failure (stable, so that repeats of one failure are logged once)."""
    text = str(exc).strip()
    return text if text else type(exc).__name__


class Supervisor:
    """Runs a backend's sessions forever; see the module docstring."""

    def __init__(
        self,
        name: str,
        *,
        silence_seconds: float,
        backoff: Backoff,
        counters: MutableMapping[str, int | float] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if not silence_seconds > 0:
            raise ValueError("silence_seconds must be positive")
        self.name = name
        self.silence_seconds = silence_seconds
        self.backoff = backoff
        self.counters: MutableMapping[str, int | float] = counters if counters is not None else {}
        for key in ("connections", "reconnects", "disconnects"):
            self.counters.setdefault(key, 0)
        self._rng = rng or random.Random()
        self.connected = False
        self.last_reason = ""
        self._ever_reported = False  # a Status was sent (the first failed attempt sends one too)
        self._logged_reason: str | None = None
        self._lost_at: float | None = None

    async def run(self, session: Session) -> AsyncIterator[SourceEvent]:
        attempt = 0
        while True:
            reason, traced = "", False
            try:
                async with contextlib.aclosing(session()) as items:
                    deadline = time.monotonic() + self.silence_seconds
                    async for item in items:
                        now = time.monotonic()
                        if isinstance(item, (Chunk, Gap)):
                            deadline = now + self.silence_seconds
                            if not self.connected:
                                attempt = 0
                                yield self._on_connected()
                            yield item
                        elif isinstance(item, Idle):
                            if now > deadline:
                                raise DeviceLost(f"no data for {self.silence_seconds:g} s")
                        else:
                            yield item
                reason = "the device ended the stream"
            except asyncio.CancelledError:
                raise
            except (DeviceLost, OSError, EdgedError) as exc:
                reason = describe(exc)
            except Exception as exc:  # a bug must not end the night: report it loudly once, then retry
                reason = f"unexpected {type(exc).__name__}: {describe(exc)}"
                if reason != self._logged_reason:
                    log.exception("%s: %s", self.name, reason)
                    traced = True
            status = self._on_failure(reason, logged=traced)
            if status is not None:
                yield status
            delay = self.backoff.delay(attempt, self._rng.random())
            attempt += 1
            await asyncio.sleep(delay)

    def _on_connected(self) -> Status:
        self.connected = True
        self._ever_reported = True
        self.counters["connections"] += 1
        if self.counters["connections"] > 1:
            self.counters["reconnects"] += 1
            outage = time.monotonic() - self._lost_at if self._lost_at is not None else 0.0
            log.info("%s: connected again after %.1f s offline", self.name, outage)
        else:
            log.info("%s: connected", self.name)
        self._logged_reason = None
        self._lost_at = None
        return Status(True, "connected")

    def _on_failure(self, reason: str, *, logged: bool) -> Status | None:
        """Bookkeeping after a session ended; the Status to send, if the state changed."""
        self.last_reason = reason
        if self.connected:
            self.connected = False
            self.counters["disconnects"] += 1
            self._lost_at = time.monotonic()
            self._logged_reason = reason
            log.warning("%s: connection lost: %s; reconnecting (backoff %g-%g s)", self.name, reason,
                        self.backoff.minimum, self.backoff.maximum)
            return Status(False, reason)
        if self._lost_at is None:
            self._lost_at = time.monotonic()
        if reason != self._logged_reason:
            self._logged_reason = reason
            if not logged:
                log.warning("%s: cannot connect: %s (retrying with backoff up to %g s; logged again only "
                            "when the reason changes)", self.name, reason, self.backoff.maximum)
        else:
            log.debug("%s: still cannot connect: %s", self.name, reason)
        if not self._ever_reported:
            self._ever_reported = True
            return Status(False, reason)
        return None
