"""OpenBCI Cyton (and Cyton + Daisy) serial packets.

Packet (docs.openbci.com, "Cyton Data Format"; the same as BrainFlow's ``cyton.cpp``/``cyton_daisy.cpp``),
33 bytes, sent at 250 Hz over the dongle's 115200-baud serial port::

    0      0xA0 header
    1      sample counter, 0..255, +1 per packet, wrapping
    2-25   8 channels, 24-bit big-endian two's complement (ADS1299 counts)
    26-31  6 aux bytes: for footer 0xC0 the accelerometer x, y, z as int16 big-endian
    32     footer 0xC0..0xC6 (0xC0 accelerometer, 0xC1..0xC6 other aux formats)

Counts become microvolts with ``4.5 V / gain / (2^23 - 1)``, per channel (gain 24 by default; the user sets
gains with the ``x...X`` channel commands, so the source must tell the decoder which gains it set).

With the Daisy module the board still sends 250 packets per second, alternately the main board's 8
channels (odd counters) and the Daisy's (even counters): a 16-channel sample is an odd packet followed by
the next, even, one, giving 125 Hz. A half whose partner is missing is dropped, and its sample counted as
lost: a sample with 8 of its 16 channels would make every downstream stage special-case it.

The counter is the only loss signal, and it is exact only modulo 256 packets (modulo 128 samples with the
Daisy): a silence longer than that (about 1 s) hides whole wraps. :func:`unwrap_lost` resolves them from the
elapsed time, which only the source knows (it owns the clock).

:class:`CytonDecoder` is fed whatever the serial port returns, and never raises: bytes that do not belong
to a packet are counted as garbage and skipped. After garbage it accepts a packet only when the next one
also has a valid header and footer and the next counter, or its own counter follows the last good
packet's, so that a stray 0xA0 ... 0xC0 inside noise cannot knock a good stream out of step. Between
packets that follow each other byte for byte, a counter jump is taken as what it almost always is: packets
the radio link lost (counted in ``lost_samples``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from firmware_bridge.errors import DecodeError

PACKET_SIZE = 33
HEADER = 0xA0
FOOTER_MIN, FOOTER_MAX = 0xC0, 0xC6
N_CHANNELS = 8
SAMPLE_RATE = 250.0
DAISY_SAMPLE_RATE = 125.0
ADS1299_VREF = 4.5
DEFAULT_GAIN = 24
ALLOWED_GAINS = (1, 2, 4, 6, 8, 12, 24)
# LIS3DH at +-4 G, 12-bit left-justified in 16 bits: 0.002 G per count after the 4-bit shift (BrainFlow).
ACCEL_G_PER_COUNT = 0.002 / 16

CMD_START = b"b"
CMD_STOP = b"s"
CMD_SOFT_RESET = b"v"


def counts_to_uv(gain: float) -> float:
    """Microvolts per ADS1299 count at this PGA gain."""
    return ADS1299_VREF / gain / (2**23 - 1) * 1e6


@dataclass(frozen=True, slots=True, eq=False)
class CytonBlock:
    """Samples decoded from one :meth:`CytonDecoder.feed` call (all arrays read-only).

    ``uv``: (n, 8 or 16) microvolts. ``counters``: the packet counter of each sample (with the Daisy, that
    of its odd, main-board half). ``lost_before[i]``: samples lost between sample ``i`` and the sample
    before it (0 for the first sample after :meth:`CytonDecoder.reset`). ``aux``: (n, 6) raw aux bytes
    ((n, 12) with the Daisy: the main-board half's, then the Daisy half's). ``footers``: each packet's footer
    (the main-board half's with the Daisy).
    """

    uv: np.ndarray
    counters: np.ndarray
    lost_before: np.ndarray
    aux: np.ndarray
    footers: np.ndarray

    def __len__(self) -> int:
        return len(self.uv)

    def accel_g(self) -> np.ndarray:
        """(n, 3) accelerometer in G from 0xC0 packets; NaN where the footer says the aux bytes hold
        something else. The Cyton refreshes the accelerometer at 25 Hz, so values repeat or read 0 between
        updates, depending on the firmware."""
        g = np.ascontiguousarray(self.aux[:, :6]).view(">i2").astype(np.float64) * ACCEL_G_PER_COUNT
        g[self.footers != FOOTER_MIN] = np.nan
        return g


@dataclass(slots=True)
class CytonCounters:
    packets: int = 0  # valid packets accepted
    samples: int = 0  # samples delivered (8-channel, or 16-channel with the Daisy)
    lost_samples: int = 0  # exact modulo the counter's period (see unwrap_lost)
    garbage_bytes: int = 0  # bytes skipped while looking for a packet
    orphan_halves: int = 0  # Daisy packets dropped for want of their partner


@dataclass(slots=True)
class CytonDecoder:
    """Stateful packet decoder over arbitrary byte chunks.

    ``gains``: the PGA gain of every channel (one value for all, or one per channel: 8, or 16 with the
    Daisy). Call :meth:`reset` whenever the stream restarts (after ``b``/``v``): the board restarts its
    counter, which would otherwise read as a loss.
    """

    gains: float | Sequence[float] = DEFAULT_GAIN
    daisy: bool = False
    counters: CytonCounters = field(default_factory=CytonCounters)
    _scale: np.ndarray = field(init=False, repr=False)
    _buf: bytearray = field(init=False, repr=False, default_factory=bytearray)
    _locked: bool = field(init=False, repr=False, default=False)
    _last_counter: int | None = field(init=False, repr=False, default=None)  # last accepted packet
    _last_sample: int | None = field(init=False, repr=False, default=None)  # counter/pair id of last output
    _pending: np.ndarray | None = field(init=False, repr=False, default=None)  # odd half awaiting its partner

    def __post_init__(self) -> None:
        n = 2 * N_CHANNELS if self.daisy else N_CHANNELS
        given = np.asarray(self.gains, dtype=np.float64)
        gains = np.full(n, float(given)) if given.ndim == 0 else given
        if gains.shape != (n,):
            raise ValueError(f"gains: expected one value or {n}, got shape {given.shape}")
        bad = sorted({float(g) for g in gains} - set(map(float, ALLOWED_GAINS)))
        if bad:
            raise ValueError(f"gains {bad} are not ADS1299 gains {ALLOWED_GAINS}")
        self._scale = ADS1299_VREF / gains / (2**23 - 1) * 1e6

    @property
    def n_channels(self) -> int:
        return len(self._scale)

    @property
    def sample_rate(self) -> float:
        return DAISY_SAMPLE_RATE if self.daisy else SAMPLE_RATE

    def reset(self) -> None:
        """Forget the stream position and any partial packet (the counters keep counting)."""
        self._buf.clear()
        self._locked = False
        self._last_counter = None
        self._last_sample = None
        self._pending = None

    def feed(self, data: bytes) -> CytonBlock:
        """Decode whatever complete packets ``data`` (with earlier leftovers) contains."""
        self._buf += data
        packets = self._take_packets()
        if self.daisy:
            packets = self._pair_daisy(packets)
        return self._to_block(packets)

    # -- framing ----------------------------------------------------------------------------------

    def _take_packets(self) -> np.ndarray:
        buf = np.frombuffer(bytes(self._buf), dtype=np.uint8)
        n = len(buf)
        starts: list[int] = []
        pos = 0
        if n >= PACKET_SIZE:
            foot = buf[PACKET_SIZE - 1 :]
            valid = (buf[: n - PACKET_SIZE + 1] == HEADER) & (foot >= FOOTER_MIN) & (foot <= FOOTER_MAX)
            candidates = np.flatnonzero(valid)
            n_valid = len(valid)
            while pos + PACKET_SIZE <= n:
                if valid[pos]:
                    if self._locked or self._follows(int(buf[pos + 1])):
                        starts.append(pos)
                        self._accept(int(buf[pos + 1]))
                        pos += PACKET_SIZE
                        continue
                    if pos + PACKET_SIZE < n_valid:
                        nxt_counter = int(buf[pos + PACKET_SIZE + 1])
                        if valid[pos + PACKET_SIZE] and nxt_counter == (int(buf[pos + 1]) + 1) & 0xFF:
                            starts.append(pos)  # confirmed by the packet after it
                            self._accept(int(buf[pos + 1]))
                            pos += PACKET_SIZE
                            continue
                    else:
                        break  # cannot confirm yet: wait for the next packet
                # Not a packet here: skip to the next place one could start.
                self._locked = False
                later = candidates[np.searchsorted(candidates, pos, side="right") :]
                nxt = int(later[0]) if len(later) else n_valid
                self.counters.garbage_bytes += nxt - pos
                pos = nxt
        taken = buf[np.asarray(starts, dtype=np.int64)[:, None] + np.arange(PACKET_SIZE)] if starts else None
        del self._buf[:pos]
        return taken if taken is not None else np.zeros((0, PACKET_SIZE), dtype=np.uint8)

    def _follows(self, counter: int) -> bool:
        return self._last_counter is not None and counter == (self._last_counter + 1) & 0xFF

    def _accept(self, counter: int) -> None:
        self._locked = True
        self._last_counter = counter
        self.counters.packets += 1

    # -- Daisy ------------------------------------------------------------------------------------

    def _pair_daisy(self, packets: np.ndarray) -> np.ndarray:
        """Join (odd, next even) packet pairs into 66-byte rows; drop and count orphans."""
        rows = []
        for pkt in packets:
            counter = int(pkt[1])
            if counter % 2:  # main-board half: opens a sample
                if self._pending is not None:
                    self.counters.orphan_halves += 1
                self._pending = pkt
            elif self._pending is not None and counter == (int(self._pending[1]) + 1) & 0xFF:
                rows.append(np.concatenate([self._pending, pkt]))
                self._pending = None
            else:
                self.counters.orphan_halves += 1
                if self._pending is not None:
                    self.counters.orphan_halves += 1
                self._pending = None
        return np.array(rows, dtype=np.uint8).reshape(len(rows), 2 * PACKET_SIZE)

    # -- values -----------------------------------------------------------------------------------

    def _to_block(self, rows: np.ndarray) -> CytonBlock:
        halves = 2 if self.daisy else 1
        n = len(rows)
        parts = rows.reshape(n, halves, PACKET_SIZE)
        # 24-bit big-endian two's complement, all channels of all packets at once.
        b = parts[:, :, 2:26].reshape(n, halves * N_CHANNELS, 3).astype(np.int32)
        counts = b[:, :, 0] << 16 | b[:, :, 1] << 8 | b[:, :, 2]
        counts -= (counts & 0x800000) << 1
        uv = counts * self._scale
        counters = parts[:, 0, 1].astype(np.int64)
        # A sample's position: the counter, or with the Daisy the pair number (odd counter c -> (c-1)/2).
        position = (counters - 1) % 256 // 2 if self.daisy else counters
        period = 128 if self.daisy else 256
        prev = np.empty(n, dtype=np.int64)
        if n:
            prev[0] = position[0] - 1 if self._last_sample is None else self._last_sample
            prev[1:] = position[:-1]
        lost = (position - prev - 1) % period
        if n:
            self._last_sample = int(position[-1])
        self.counters.samples += n
        self.counters.lost_samples += int(lost.sum())
        aux = parts[:, :, 26:32].reshape(n, 6 * halves)
        footers = parts[:, 0, 32]
        block = CytonBlock(uv=uv, counters=counters.astype(np.uint8), lost_before=lost, aux=aux, footers=footers)
        for arr in (block.uv, block.counters, block.lost_before, block.aux, block.footers):
            arr.setflags(write=False)
        return block


def unwrap_lost(lost_mod: int, period: int, elapsed_s: float, sample_rate: float) -> int:
    """The number of lost samples that agrees with the counter (``lost_mod`` modulo ``period``) and comes
    closest to what ``elapsed_s`` (time from the last sample before the gap to the first after it, by the
    source's clock) implies. Reliable while the clock's error stays under half a period (~0.5 s)."""
    if not 0 <= lost_mod < period:
        raise ValueError("lost_mod must be in [0, period)")
    expected = elapsed_s * sample_rate - 1
    wraps = max(0, round((expected - lost_mod) / period))
    return lost_mod + wraps * period


def encode_cyton_packet(
    counter: int, channels: Sequence[int] | np.ndarray, aux: bytes = bytes(6), footer: int = FOOTER_MIN
) -> bytes:
    """One 33-byte packet from raw 24-bit counts (for emulators). Use :func:`counts_to_uv` to go from uV."""
    values = [int(v) for v in channels]
    if len(values) != N_CHANNELS:
        raise ValueError(f"a packet carries {N_CHANNELS} channels, got {len(values)}")
    if any(not -(2**23) <= v < 2**23 for v in values):
        raise ValueError("a channel value does not fit 24 bits")
    if len(aux) != 6 or not FOOTER_MIN <= footer <= FOOTER_MAX or not 0 <= counter <= 255:
        raise ValueError("aux must be 6 bytes, footer 0xC0..0xC6, counter 0..255")
    body = b"".join((v & 0xFFFFFF).to_bytes(3, "big") for v in values)
    return bytes([HEADER, counter]) + body + bytes(aux) + bytes([footer])


def decode_cyton_packet(packet: bytes, gain: float = DEFAULT_GAIN) -> tuple[int, np.ndarray]:
    """A single packet's counter and channel values in uV (for tests and tools; streams use the decoder)."""
    packet = bytes(packet)
    if len(packet) != PACKET_SIZE:
        raise DecodeError(f"Cyton packet: {len(packet)} bytes, expected 33", kind="length")
    if packet[0] != HEADER or not FOOTER_MIN <= packet[-1] <= FOOTER_MAX:
        raise DecodeError("Cyton packet: bad header or footer byte", kind="value")
    decoder = CytonDecoder(gains=gain)
    decoder._locked = True  # a lone packet has no neighbour to confirm it
    block = decoder.feed(packet)
    return int(block.counters[0]), block.uv[0].copy()
