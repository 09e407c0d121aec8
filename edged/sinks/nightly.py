"""The morning report: each device's night summarised at a set local time, or on demand (SIGUSR1).

For every device that was scored since the last report, the reporter computes the night summary
(:mod:`edged.sinks.night`), saves it as ``{dir}/{device}/{date}.json`` with a hypnogram PNG beside it, and
publishes it retained on ``{base}/{node}/{device}/summary``. The night is everything scored since that
device's previous report (at most ``MAX_NIGHT_HOURS``: older epochs are dropped as they age), so a report
at 09:00 covers the evening before. Files older than ``keep_days`` are deleted when a report is written:
disk use stays bounded on a box that runs for months.

The summary is computed and drawn in a worker thread: the asyncio loop, which carries the live stages,
never waits for matplotlib.
"""

from __future__ import annotations

import array
import asyncio
import bisect
import contextlib
import datetime as dt
import json
import logging
import math
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edged.scoring.epoch import ScoredEpoch
from edged.sinks.night import summarize_epochs
from edged.sinks.report import night_report
from edged.sinks.report_render import render_png

log = logging.getLogger(__name__)

MAX_NIGHT_HOURS = 36.0  # epochs older than this (stream time) are not part of any report


def parse_clock(text: str) -> dt.time:
    """``"HH:MM"`` (24-hour, local time) -> :class:`datetime.time`; ValueError otherwise."""
    try:
        hours, minutes = text.split(":")
        return dt.time(int(hours), int(minutes))
    except (ValueError, TypeError):
        raise ValueError(f"{text!r} is not a time of day as HH:MM (24-hour)") from None


def next_occurrence(at: dt.time, now: dt.datetime) -> dt.datetime:
    """The next local datetime at time of day ``at`` strictly after ``now`` (naive local datetimes)."""
    candidate = now.replace(hour=at.hour, minute=at.minute, second=0, microsecond=0)
    return candidate if candidate > now else candidate + dt.timedelta(days=1)


class _Night:
    """One device's epochs since its last report, stored compactly: a ScoredEpoch object costs ~0.5 kB, a
    row here about 50 bytes (tracemalloc, 5 classes), so eight devices over the 36-h horizon stay under 2 MB.
    Rebuilt into ScoredEpoch objects only when the report is made."""

    def __init__(self, first: ScoredEpoch):
        self.device, self.model_id, self.synthetic = first.device, first.model_id, first.synthetic
        self.classes = tuple(first.probabilities)
        self.sessions: list[str] = []
        self.session_of = array.array("H")
        self.index = array.array("q")
        self.start = array.array("d")
        self.end = array.array("d")
        self.stage = array.array("B")
        self.quality = array.array("d")
        self.ok = array.array("B")
        self.hr = array.array("d")  # NaN: none
        self.probs = array.array("d")  # len(classes) per epoch

    def __len__(self) -> int:
        return len(self.start)

    def add(self, e: ScoredEpoch) -> None:
        if not self.sessions or self.sessions[-1] != e.session:
            self.sessions.append(e.session)
        self.session_of.append(len(self.sessions) - 1)
        self.index.append(e.index)
        self.start.append(e.start)
        self.end.append(e.end)
        self.stage.append(self.classes.index(e.stage))
        self.quality.append(e.quality)
        self.ok.append(e.quality_ok)
        self.hr.append(math.nan if e.hr_bpm is None else e.hr_bpm)
        self.probs.extend(e.probabilities[c] for c in self.classes)

    def drop_before(self, t: float) -> None:
        """Forget epochs that started before ``t`` (they are older than any night worth reporting)."""
        n = bisect.bisect_left(self.start, t)
        if n:
            k = len(self.classes)
            for column in (self.session_of, self.index, self.start, self.end, self.stage, self.quality, self.ok,
                           self.hr):
                del column[:n]
            del self.probs[: n * k]

    def epochs(self) -> list[ScoredEpoch]:
        k = len(self.classes)
        return [
            ScoredEpoch(device=self.device, session=self.sessions[self.session_of[i]], index=self.index[i],
                        start=self.start[i], end=self.end[i], stage=self.classes[self.stage[i]],
                        probabilities={c: float(self.probs[i * k + j]) for j, c in enumerate(self.classes)},
                        model_id=self.model_id, synthetic=self.synthetic, quality=float(self.quality[i]),
                        quality_ok=bool(self.ok[i]), received=0.0, scored=0.0,
                        hr_bpm=None if math.isnan(self.hr[i]) else float(self.hr[i]))
            for i in range(len(self))
        ]


class NightReporter:
    """A sink that remembers each device's recent epochs and reports the night on schedule or request."""

    def __init__(self, out_dir: Path, *, at: dt.time, publish: Callable[[str, dict[str, Any]], None] | None = None,
                 min_awakening_seconds: float = 0.0, png: bool = True, keep_days: int = 90):
        self.out_dir = Path(out_dir)
        self.at = at
        self.publish = publish
        self.min_awakening_seconds = min_awakening_seconds
        self.png = png
        self.keep_days = keep_days
        self._nights: dict[str, _Night] = {}
        self._lock = threading.Lock()  # publish_stage comes from the loop, reports run in a worker thread
        self._requested = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.reports_written = 0
        self.report_failures = 0

    @classmethod
    def from_config(cls, config, publish=None) -> "NightReporter":
        options = config.report
        out_dir = config.relative(options["dir"]) if options["dir"] else config.state_dir / "reports"
        return cls(out_dir, at=parse_clock(options["at"]), publish=publish,
                   min_awakening_seconds=options["min_awakening_seconds"], png=options["png"],
                   keep_days=options["keep_days"])

    def restore(self, stage_payloads: list[bytes], devices: set[str] | None = None, now: float | None = None) -> int:
        """Take back the epochs of stage messages published before a restart (from the journal), so the
        morning report still covers the whole night. Epochs a saved report already covered (up to its
        ``end``) and epochs of devices not in ``devices`` are skipped. Returns the epochs restored."""
        now = time.time() if now is None else now
        reported = {}
        restored = 0
        for raw in stage_payloads:
            try:
                p = json.loads(raw)
                device = p["device"]
                if devices is not None and device not in devices:
                    continue
                if device not in reported:
                    reported[device] = self._last_reported_end(device)
                if p["start_ts"] < max(reported[device], now - MAX_NIGHT_HOURS * 3600.0):
                    continue
                self.publish_stage(ScoredEpoch(
                    device=device, session=p["session"], index=p["epoch"], start=p["start_ts"], end=p["end_ts"],
                    stage=p["stage"], probabilities=dict(p["probabilities"]), model_id=p["model"]["id"],
                    synthetic=p["model"]["synthetic"], quality=p["quality"]["score"], quality_ok=p["quality"]["ok"],
                    received=0.0, scored=0.0, hr_bpm=p.get("hr_bpm")))
                restored += 1
            except (ValueError, KeyError, TypeError) as exc:  # a row from another contract version: skip it
                log.debug("night report: journal row skipped (%s)", exc)
        if restored:
            log.info("night reports: %d epoch(s) of this night taken back from the journal", restored)
        return restored

    def _last_reported_end(self, device: str) -> float:
        ends = []
        for path in (self.out_dir / device).glob("*.json"):
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                ends.append(float(json.loads(path.read_text())["end"]))
        return max(ends, default=float("-inf"))

    # --- the Sink protocol ---------------------------------------------------------------------------

    def publish_stage(self, epoch: ScoredEpoch) -> None:
        with self._lock:
            night = self._nights.get(epoch.device)
            if night is None or night.classes != tuple(epoch.probabilities):  # a new model: a new night
                night = self._nights[epoch.device] = _Night(epoch)
            night.add(epoch)
            horizon = epoch.end - MAX_NIGHT_HOURS * 3600.0
            if night.start[0] < horizon:
                night.drop_before(horizon)

    def set_availability(self, device: str, online: bool) -> None:
        pass

    def publish_counters(self, device: str, counters: dict[str, int | float]) -> None:
        pass

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not on Windows, not off the main thread
            self._loop.add_signal_handler(signal.SIGUSR1, self.request)
        self._task = asyncio.create_task(self._schedule(), name="night-reports")
        log.info("night reports at %s local time (and on SIGUSR1) into %s", self.at.strftime("%H:%M"), self.out_dir)

    def request(self) -> None:
        """Report every device's night now (the SIGUSR1 handler; call on the loop)."""
        self._requested.set()

    def close(self, timeout: float = 5.0) -> None:
        if self._task is not None and self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._task.cancel)

    async def wait_closed(self) -> None:
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    # --- scheduling ------------------------------------------------------------------------------------

    async def _schedule(self) -> None:
        while True:
            due = next_occurrence(self.at, dt.datetime.now())
            # Sleep in short steps against the wall clock: a suspended box or an NTP step must not push the
            # report hours late (a monotonic sleep would).
            while dt.datetime.now() < due and not self._requested.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(30.0, max(0.05, (due - dt.datetime.now()).total_seconds()))):
                        await self._requested.wait()
            self._requested.clear()
            await asyncio.to_thread(self.report_all)

    def report_all(self, now: float | None = None) -> list[Path]:
        """Summarise, save and publish each device's night since its last report; return the JSON paths."""
        now = time.time() if now is None else now
        with self._lock:
            nights, self._nights = self._nights, {}
        written = []
        for device, night in sorted(nights.items()):
            if not len(night):
                continue
            try:
                written.append(self._report(device, night.epochs(), now))
                self.reports_written += 1
            except Exception:  # one device's failing report (a full disk) must not stop the others or the loop
                self.report_failures += 1
                log.exception("night report for %s failed", device)
        self._prune(now)
        return written

    def _report(self, device: str, epochs: list[ScoredEpoch], now: float) -> Path:
        epoch_seconds = epochs[0].end - epochs[0].start
        min_epochs = max(1, math.ceil(self.min_awakening_seconds / epoch_seconds))
        summary = summarize_epochs(epochs, min_awakening_epochs=min_epochs)
        date = dt.datetime.fromtimestamp(now).strftime("%Y-%m-%d")
        folder = self.out_dir / device
        folder.mkdir(parents=True, exist_ok=True)
        stem = folder / date
        if stem.with_suffix(".json").exists():  # a second report the same day (on demand): keep both
            stem = folder / f"{date}_{dt.datetime.fromtimestamp(now).strftime('%H%M%S')}"
        json_path = stem.with_suffix(".json")
        json_path.write_text(json.dumps(summary, indent=1) + "\n")
        if self.png:
            render_png(night_report(epochs, title=f"{device}: night of {date}"), stem.with_suffix(".png"))
        if self.publish is not None:
            self.publish(device, summary)
        log.info("night report for %s: %s (%d epochs, TST %.0f min, SE %s %%)", device, json_path, summary["epochs"],
                 summary["tst_minutes"], summary["sleep_efficiency_percent"])
        return json_path

    def _prune(self, now: float) -> None:
        cutoff = now - self.keep_days * 86400.0
        for path in self.out_dir.glob("*/*"):
            with contextlib.suppress(OSError):
                if path.suffix in (".json", ".png") and path.stat().st_mtime < cutoff:
                    path.unlink()
