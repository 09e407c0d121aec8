"""Device emulators: a REAL recording sent over a pseudo-terminal exactly as a board would send it.

    python -m firmware_bridge.emulate <cyton|framed|ascii> <recording> [--speed S] [--garbage-every N]
        [--drop-every N] [--link PATH] [--loop] ...

opens a pty pair (``os.openpty``), prints the path of its serial end (and of ``--link``, a symlink that
stays put when the emulator is restarted), and writes the protocol's bytes, paced by the recording's own
timeline at ``speed`` times real time. Point edged (or any serial tool) at that path.

What each protocol sends (bytes built by the codecs of ``firmware_bridge``):

* ``cyton``: 33-byte packets (``cyton.encode_cyton_packet``) at 250 Hz, 8 channels. The recording is
  resampled to 250 Hz (``scipy.signal.resample_poly``) and converted to ADS1299 counts at ``gain``; a
  recording with fewer than 8 channels fills the rest by repeating its channels in order (ch1, ch2, ...,
  ch1, ...), so every channel carries real signal. Like the board, it streams only after ``b``, stops on
  ``s``, and answers ``v`` with its banner ending in ``$$$``; the counter restarts at 0 on ``b`` and wraps
  at 255. Channels in mV or V are converted to uV; any other unit is taken as uV.
* ``framed``: edged's protocol (``framed.encode_frame``/``encode_info``): a 0x00 and an INFO frame at
  boot, INFO again every ``info_every`` device seconds and 50 ms after a host opens the port, DATA frames of
  ``samples_per_frame`` int24 samples with one scale per channel, 64-bit device timestamps.
* ``ascii``: a header line (``t_ms,<names>``) 50 ms after a host opens the port, then one line per sample:
  device time in ms (3 decimals) and values with ``decimals`` decimals.

The device keeps sampling whatever the host does: samples taken while no host has the port open, while
the port is "unplugged" (:meth:`DeviceEmulator.close_port`) or while a Cyton is stopped are not sent,
as on a real board. Fault injection, for tests that must count exactly:

* ``drop_every=N``: every N-th packet (Cyton packet, DATA frame, line) is not sent, as if lost on the link;
  counters and sample indices advance as for a sent one.
* ``garbage_every=N``: after every N-th packet, a burst of ``garbage_size`` random bytes that never
  contain the protocol's sync byte (Cyton 0xA0, framed 0x00, ascii newline or digits), closed by the
  protocol's terminator (framed 0x00, ascii newline). So each burst costs exactly itself (Cyton: that many
  garbage bytes; framed: one bad frame; ascii: one malformed line) and no good packet.

:attr:`DeviceEmulator.reference` holds, for every device sample, exactly the values a correct host
decodes (after the wire's quantisation), and :attr:`DeviceEmulator.history` what happened to each sample
(sent, dropped, unsent): tests compare what edged delivered with them sample for sample.

This module does I/O (it is a test tool, not a codec) and reads recordings with ``edged``'s readers; the
codecs it uses stay pure. A Cyton packet carries one sample, so encoding is a loop over packets; the
framed protocol encodes a frame per call and ascii lines are formatted with numpy.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import math
import os
import select
import sys
import threading
import time
import tty
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

import numpy as np

from firmware_bridge import cyton
from firmware_bridge.framed import ChannelInfo, encode_frame, encode_info

PROTOCOLS = ("cyton", "framed", "ascii")
ATTACH_DELAY = 0.05  # seconds between a host opening the port and the board starting to talk to it
MAX_PENDING = 64 * 1024  # bytes waiting for the pty before new packets are refused (a board's TX buffer)
CYTON_BANNER = (b"OpenBCI V3 8-16 channel\nOn Board ADS1299 Device ID: 0x3E\nLIS3DH Device ID: 0x33\n"
                b"Firmware: v3.1.2 (edged emulator)\n$$$")
_UV_PER_UNIT = {"uv": 1.0, "µv": 1.0, "mv": 1e3, "v": 1e6}
_INT24_MAX = (1 << 23) - 1


@dataclasses.dataclass
class EmulatorCounters:
    packets_sent: int = 0  # packets (Cyton packets, DATA frames, lines) handed to the pty whole
    samples_sent: int = 0
    packets_dropped: int = 0  # not sent on purpose (drop_every)
    samples_dropped: int = 0
    garbage_bursts: int = 0
    garbage_bytes: int = 0  # including each burst's terminator
    samples_unsent: int = 0  # taken while no host listened, the port was unplugged or the Cyton was stopped
    overrun_packets: int = 0  # refused because the pty buffer stayed full (nobody reading)
    info_frames: int = 0
    ports_opened: int = 0
    host_attaches: int = 0
    commands: int = 0


class DeviceEmulator:
    """A board streaming ``samples`` (n, channels), taken at ``fs`` Hz, over a pty. See the module docstring.

    Drive it with :meth:`open_port` then :meth:`start` (a thread) or :meth:`run` (the caller's thread);
    :meth:`close_port`/:meth:`open_port` unplug and re-plug it (``link`` then points at the new pty);
    ``paused = True`` makes it fall silent with the port open (the failure that raises no error).
    """

    def __init__(
        self,
        protocol: str,
        samples: np.ndarray,
        fs: float,
        *,
        names: Sequence[str],
        units: Sequence[str],
        speed: float = 1.0,
        garbage_every: int = 0,
        drop_every: int = 0,
        garbage_size: int = 16,
        samples_per_frame: int = 10,
        decimals: int = 4,
        gain: int = cyton.DEFAULT_GAIN,
        drift_ppm: float = 0.0,
        info_every: float = 10.0,
        loop: bool = False,
        link: str | os.PathLike[str] | None = None,
        seed: int = 0,
        device_name: str = "edged-emulator",
    ) -> None:
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}")
        if not speed > 0 or garbage_every < 0 or drop_every < 0 or drop_every == 1 or samples_per_frame < 1:
            raise ValueError("need speed > 0, garbage_every >= 0, drop_every 0 or >= 2, samples_per_frame >= 1")
        data = np.asarray(samples, dtype=np.float64)
        if data.ndim != 2 or len(data) == 0 or data.shape[1] != len(names) or len(units) != len(names):
            raise ValueError("samples must be (n, channels) with one name and unit per channel")
        self.protocol = protocol
        self.speed = speed
        self.garbage_every = garbage_every
        self.drop_every = drop_every
        self.garbage_size = garbage_size
        self.drift_ppm = drift_ppm
        self.info_every = info_every
        self.loop = loop
        self.link = Path(link) if link is not None else None
        self.device_name = device_name
        self.counters = EmulatorCounters()
        self._rng = np.random.default_rng(seed)
        self._prepare(data, fs, list(names), list(units), samples_per_frame, decimals, gain)
        # history: runs of [kind, first device sample, end] in device order; kind is "sent", "dropped" or
        # "unsent". A device sample k carries reference[k % len(reference)].
        self.history: list[list] = []
        self._lock = threading.RLock()
        self._master: int | None = None
        self.slave_path: str | None = None
        self._attached = False  # a host has had the port open for ATTACH_DELAY: the board talks to it
        self._host_open_since: float | None = None
        self._out = bytearray()
        self._packets_done = 0  # packets (sent or not) so far: the device's packet count
        self._seq = 0  # framed sequence number: every frame, sent or not
        self._next_info = 0.0  # device seconds of the next periodic INFO
        self._cyton_streaming = False
        self._cyton_counter = 0
        self.paused = False  # True: the board goes silent without any error (the port stays open)
        self.garbage_at: list[int] = []  # for each burst, the device sample whose packet comes after it
        self._t0: float | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    # -- what goes on the wire -----------------------------------------------------------------------

    def _prepare(self, data: np.ndarray, fs: float, names: list[str], units: list[str], per_frame: int,
                 decimals: int, gain: int) -> None:
        if self.protocol == "cyton":
            from scipy.signal import resample_poly

            up, down = _ratio(cyton.SAMPLE_RATE, fs)
            uv = data * np.array([_UV_PER_UNIT.get(u.lower(), 1.0) for u in units])
            if (up, down) != (1, 1):
                uv = resample_poly(uv, up, down, axis=0)
            fill = [i % data.shape[1] for i in range(cyton.N_CHANNELS)]  # repeat channels in order
            self._counts = np.clip(np.rint(uv[:, fill] / cyton.counts_to_uv(gain)), -_INT24_MAX, _INT24_MAX)
            self._counts = self._counts.astype(np.int64)
            self.reference = self._counts * cyton.counts_to_uv(gain)  # what CytonDecoder computes
            self.fs = cyton.SAMPLE_RATE
            self.names = [f"ch{i + 1}" for i in range(cyton.N_CHANNELS)]
            self.units = ["uV"] * cyton.N_CHANNELS
            self.samples_per_packet = 1
        elif self.protocol == "framed":
            peak = np.max(np.abs(data), axis=0)
            # One float32 scale per channel so the channel's peak uses the int24 range; the reference is
            # raw x float32(scale), as FramedDecoder computes it.
            self._scales = np.where(peak > 0, peak / (_INT24_MAX - 1), 1.0).astype(np.float32)
            self._raw = np.rint(data / self._scales.astype(np.float64)).astype(np.int64)
            self.reference = self._raw * self._scales.astype(np.float64)
            self.fs = float(np.float32(fs))  # DATA frames carry the rate as float32
            self.names, self.units = names, units
            self.samples_per_packet = per_frame
        else:
            scale = 10**decimals
            self._fixed = np.rint(data * scale).astype(np.int64)
            self.reference = self._fixed / scale  # float("12.3456") is exactly 123456 / 10**4
            self._decimals = decimals
            self.fs = fs
            self.names = [n.replace(" ", "_").replace(",", "_") or f"ch{i + 1}" for i, n in enumerate(names)]
            self.units = units
            self.samples_per_packet = 1
        self.reference.setflags(write=False)

    @classmethod
    def from_recording(cls, protocol: str, path: str | os.PathLike[str], *, channels: Sequence[str] | None = None,
                       seconds: float | None = None, start: float = 0.0, **options: Any) -> DeviceEmulator:
        """An emulator for a recording file (any format ``edged.sources.readers`` reads). ``channels``:
        which signals (default: every signal at the first signal's rate); ``start``/``seconds``: an excerpt."""
        from edged.sources.readers import read_recording  # the emulator is a test tool; the codecs stay pure

        recording = read_recording(path)
        if not recording.signals:
            raise ValueError(f"{path}: no sampled signal to emulate")
        chosen = list(channels) if channels else None
        if chosen is None:
            first = next(iter(recording.signals.values()))
            chosen = [n for n, t in recording.signals.items() if t.fs == first.fs]
        tracks = [recording.signals[n] for n in chosen]
        if len({t.fs for t in tracks}) != 1:
            raise ValueError("channels of one device must share a sample rate")
        fs = tracks[0].fs
        n = min(len(t.data) for t in tracks)
        a = round(start * fs)
        b = n if seconds is None else min(n, a + round(seconds * fs))
        data = np.stack([t.data[a:b] for t in tracks], axis=1)
        return cls(protocol, data, fs, names=chosen, units=[t.units for t in tracks], **options)

    # -- the port ------------------------------------------------------------------------------------

    def open_port(self) -> str:
        """Plug in: a new pty (and ``link`` re-pointed at it). Returns the serial end's path."""
        with self._lock:
            if self._master is not None:
                return self.slave_path or ""
            master, slave = os.openpty()
            tty.setraw(slave)  # a serial line, not a terminal: no echo, no line editing, no CR/LF mangling
            self.slave_path = os.ttyname(slave)
            # The emulator keeps no handle on the serial end, so it can tell when a host has it open (the
            # master polls as hung up while nobody does), the way a board sees DTR.
            os.close(slave)
            os.set_blocking(master, False)
            self._master = master
            self._attached = False
            self._host_open_since = None
            self._out.clear()
            self.counters.ports_opened += 1
            if self.link is not None:
                tmp = self.link.with_name(self.link.name + ".new")
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
                os.symlink(self.slave_path, tmp)
                os.replace(tmp, self.link)  # atomic: a host never sees the link missing or half made
            return self.slave_path

    def close_port(self) -> None:
        """Unplug: the pty goes away (a host reading it gets an error) and ``link`` disappears."""
        with self._lock:
            if self._master is None:
                return
            if self.link is not None:
                with contextlib.suppress(FileNotFoundError):
                    self.link.unlink()
            os.close(self._master)
            self._master = None
            self._attached = False
            self._out.clear()  # bytes in flight when the cable was pulled are gone

    @property
    def path(self) -> str | None:
        """Where a host should open the device: the link if there is one, else the pty."""
        return str(self.link) if self.link is not None else self.slave_path

    # -- running -------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the device's clock and send from a background thread."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, name=f"emulator-{self.protocol}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop sending (the port stays plugged in: :meth:`close_port` unplugs it)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.close_port()

    def run(self, tick: float = 0.004) -> None:
        """Send until :meth:`stop` (or, without ``loop``, until the recording has been sent)."""
        if self._t0 is None:
            self._t0 = time.monotonic()
        while not self._stop.is_set():
            if not self.step():
                break
            self._stop.wait(tick)

    @property
    def total_samples(self) -> int | None:
        return None if self.loop else len(self.reference)

    def device_time(self, now: float | None = None) -> float:
        """Device seconds since the emulator started (its crystal runs ``drift_ppm`` fast)."""
        if self._t0 is None:
            return 0.0
        now = time.monotonic() if now is None else now
        return (now - self._t0) * self.speed * (1.0 + self.drift_ppm * 1e-6)

    def step(self, now: float | None = None) -> bool:
        """Do what is due by ``now``: commands, host attach, packets, writing. False once finished."""
        with self._lock:
            if self._t0 is None:
                self._t0 = time.monotonic()
            t_dev = self.device_time(now)
            self._poll_host(t_dev)
            per = self.samples_per_packet
            due = int(t_dev * self.fs) // per
            if self.total_samples is not None:
                due = min(due, self.total_samples // per)
            if due > self._packets_done:
                self._emit_packets(self._packets_done, due, t_dev)
                self._packets_done = due
            if self.protocol == "framed" and t_dev >= self._next_info:
                self._send_info(t_dev)
            self._flush()
            finished = self.total_samples is not None and self._packets_done >= self.total_samples // per
            return not (finished and not self._out)

    def _poll_host(self, t_dev: float) -> None:
        master = self._master
        if master is None:
            return
        events = select.poll()
        events.register(master, select.POLLIN | select.POLLHUP)
        flags = dict(events.poll(0)).get(master, 0)
        host_open = not flags & select.POLLHUP
        now = time.monotonic()
        if not host_open:
            self._host_open_since = None
            self._attached = False
        elif self._host_open_since is None:
            self._host_open_since = now
        if self._host_open_since is not None and not self._attached and now - self._host_open_since >= ATTACH_DELAY:
            # Like a board that sees DTR: it starts talking a moment after the host opened the port (a
            # host flushes its input buffer right after opening, which would swallow anything sooner).
            self._attached = True
            self.counters.host_attaches += 1
            if self.protocol == "ascii":
                self._out += ("t_ms," + ",".join(self.names) + "\n").encode()
            elif self.protocol == "framed":
                self._send_info(t_dev)
        if host_open and flags & select.POLLIN:
            try:
                commands = os.read(master, 4096)
            except OSError:
                commands = b""
            if self.protocol == "cyton":
                self._cyton_commands(commands)

    def _cyton_commands(self, commands: bytes) -> None:
        for command in commands:  # a handful of bytes per connection
            self.counters.commands += 1
            if command == cyton.CMD_SOFT_RESET[0]:
                self._cyton_streaming = False
                self._out += CYTON_BANNER
            elif command == cyton.CMD_START[0]:
                self._cyton_streaming = True
                self._cyton_counter = 0
            elif command == cyton.CMD_STOP[0]:
                self._cyton_streaming = False

    def _emit_packets(self, first: int, end: int, t_dev: float) -> None:
        """Packets [first, end) of the device's life are due: send, drop or skip each."""
        per = self.samples_per_packet
        packets = np.arange(first, end)
        streaming = self._master is not None and self._attached and not self.paused
        if self.protocol == "cyton":
            streaming = streaming and self._cyton_streaming
            if not self._cyton_streaming:
                # A stopped Cyton takes no samples: no counter advance, nothing to drop.
                self._record("unsent", first * per, end * per)
                return
        dropped = (packets + 1) % self.drop_every == 0 if self.drop_every else np.zeros(len(packets), bool)
        garbage = (packets + 1) % self.garbage_every == 0 if self.garbage_every else np.zeros(len(packets), bool)
        if self.protocol == "ascii" and streaming:
            lines = self._ascii_lines(first * per, end * per)
        for i, p in enumerate(packets.tolist()):
            a, b = p * per, (p + 1) * per
            wire: bytes | None = None
            if self.protocol == "cyton":
                counter = self._cyton_counter
                self._cyton_counter = (counter + 1) & 0xFF
                if streaming and not dropped[i]:
                    wire = cyton.encode_cyton_packet(counter, self._counts[a % len(self._counts)])
            elif self.protocol == "framed":
                seq = self._seq
                self._seq = (seq + 1) & 0xFFFFFFFF
                if streaming and not dropped[i]:
                    wire = self._data_frame(seq, a)
            elif streaming and not dropped[i]:
                wire = lines[i]
            if not streaming:
                self._record("unsent", a, b)
            elif dropped[i]:
                self.counters.packets_dropped += 1
                self.counters.samples_dropped += per
                self._record("dropped", a, b)
            elif len(self._out) > MAX_PENDING:
                self.counters.overrun_packets += 1
                self._record("unsent", a, b)
            else:
                assert wire is not None
                self._out += wire
                self.counters.packets_sent += 1
                self.counters.samples_sent += per
                self._record("sent", a, b)
            if streaming and garbage[i]:
                self._out += self._garbage()
                self.garbage_at.append(b)

    def _data_frame(self, seq: int, first: int) -> bytes:
        rows = np.arange(first, first + self.samples_per_packet) % len(self._raw)
        return encode_frame(self._raw[rows], seq=seq, timestamp_us=round(first * 1e6 / self.fs),
                            first_sample=first % (1 << 32), sample_rate=self.fs, scales=self._scales,
                            sample_format="int24")

    def _send_info(self, t_dev: float) -> None:
        self._next_info = t_dev + self.info_every
        seq = self._seq
        self._seq = (seq + 1) & 0xFFFFFFFF
        if self._master is None or not self._attached:
            return
        if self.counters.info_frames == 0:
            self._out += b"\x00"  # PROTOCOL.md: close off whatever the receiver held before the first frame
        self._out += encode_info(seq=seq, timestamp_us=round(t_dev * 1e6), device_name=self.device_name,
                                 firmware="edged emulator 1",
                                 channels=[ChannelInfo(n, u) for n, u in zip(self.names, self.units)])
        self.counters.info_frames += 1

    def _ascii_lines(self, a: int, b: int) -> list[bytes]:
        rows = np.arange(a, b)
        us = np.rint(rows * 1e6 / self.fs).astype(np.int64)
        columns = [_fixed_point(us, 3)] + [_fixed_point(self._fixed[rows % len(self._fixed), c], self._decimals)
                                           for c in range(self._fixed.shape[1])]
        text = columns[0]
        for col in columns[1:]:
            text = np.char.add(np.char.add(text, ","), col)
        return [line.encode("ascii") for line in np.char.add(text, "\n").tolist()]

    def _garbage(self) -> bytes:
        forbidden = {"cyton": b"\xa0", "framed": b"\x00", "ascii": b"\n\r0123456789"}[self.protocol]
        allowed = np.array([v for v in range(256) if v not in forbidden], dtype=np.uint8)
        burst = allowed[self._rng.integers(0, len(allowed), self.garbage_size)].tobytes()
        burst += {"cyton": b"", "framed": b"\x00", "ascii": b"\n"}[self.protocol]
        self.counters.garbage_bursts += 1
        self.counters.garbage_bytes += len(burst)
        return burst

    def _record(self, kind: str, a: int, b: int) -> None:
        if kind == "unsent":
            self.counters.samples_unsent += b - a
        if self.history and self.history[-1][0] == kind and self.history[-1][2] == a:
            self.history[-1][2] = b
        else:
            self.history.append([kind, a, b])

    def _flush(self) -> None:
        if self._master is None or not self._out:
            return
        try:
            written = os.write(self._master, self._out)
        except BlockingIOError:
            return  # the pty is full: nobody is reading; try again next tick
        except OSError as exc:
            if exc.errno in (errno.EIO, errno.EAGAIN):
                return
            raise
        del self._out[:written]

    # -- ground truth for tests -------------------------------------------------------------------------

    def samples_of(self, kind: str, start: int = 0, end: int | None = None) -> int:
        """How many device samples in [start, end) were ``kind`` ("sent", "dropped", "unsent")."""
        end = math.inf if end is None else end  # type: ignore[assignment]
        with self._lock:
            return sum(max(0, min(b, end) - max(a, start)) for k, a, b in self.history if k == kind)


def _ratio(to_fs: float, from_fs: float) -> tuple[int, int]:
    from fractions import Fraction

    f = Fraction(to_fs).limit_denominator(1000) / Fraction(from_fs).limit_denominator(1000)
    return f.numerator, f.denominator


def _fixed_point(k: np.ndarray, decimals: int) -> np.ndarray:
    """Integers k as decimal strings of k / 10**decimals, e.g. (-1234, 3) -> "-1.234" (vectorised)."""
    scale = 10**decimals
    sign = np.where(k < 0, "-", "")
    mag = np.abs(k)
    whole = np.char.mod("%d", mag // scale)
    frac = np.char.zfill(np.char.mod("%d", mag % scale), decimals)
    return np.char.add(np.char.add(sign, whole), np.char.add(".", frac))


# ------------------------------------------------------------------------------------ command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m firmware_bridge.emulate",
                                     description="Emulate a serial board on a pty from a real recording.")
    parser.add_argument("protocol", choices=PROTOCOLS)
    parser.add_argument("recording", help="EDF/WFDB/CSV/NPZ file (see edged.sources.readers)")
    parser.add_argument("--speed", type=float, default=1.0, help="times real time (default 1)")
    parser.add_argument("--garbage-every", type=int, default=0, metavar="N", help="a garbage burst after every N-th packet")
    parser.add_argument("--garbage-size", type=int, default=16, metavar="BYTES")
    parser.add_argument("--drop-every", type=int, default=0, metavar="N", help="do not send every N-th packet")
    parser.add_argument("--channels", default="", help="comma-separated signals to send (default: all at the first one's rate)")
    parser.add_argument("--start", type=float, default=0.0, help="start this many seconds into the recording")
    parser.add_argument("--seconds", type=float, default=None, help="send only this much of the recording")
    parser.add_argument("--samples-per-frame", type=int, default=10, help="framed: samples per DATA frame")
    parser.add_argument("--gain", type=int, default=cyton.DEFAULT_GAIN, choices=cyton.ALLOWED_GAINS, help="cyton: PGA gain")
    parser.add_argument("--drift-ppm", type=float, default=0.0, help="the device's crystal runs this much fast")
    parser.add_argument("--loop", action="store_true", help="start the recording over at its end (sample indices go on)")
    parser.add_argument("--link", help="also make this symlink to the pty (stable across restarts)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    emulator = DeviceEmulator.from_recording(
        args.protocol, args.recording, channels=[c for c in args.channels.split(",") if c] or None,
        start=args.start, seconds=args.seconds, speed=args.speed, garbage_every=args.garbage_every,
        garbage_size=args.garbage_size, drop_every=args.drop_every, samples_per_frame=args.samples_per_frame,
        gain=args.gain, drift_ppm=args.drift_ppm, loop=args.loop, link=args.link, seed=args.seed)
    slave = emulator.open_port()
    print(slave, flush=True)
    if emulator.link is not None:
        print(f"{emulator.link} -> {slave}", file=sys.stderr, flush=True)
    print(f"{args.protocol}: {', '.join(emulator.names)} at {emulator.fs:g} Hz, speed {args.speed:g}; Ctrl-C stops",
          file=sys.stderr, flush=True)
    try:
        emulator.run()
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()
        emulator.close_port()
        print(f"sent {emulator.counters.packets_sent} packets, {emulator.counters.samples_sent} samples; "
              f"{dataclasses.asdict(emulator.counters)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
