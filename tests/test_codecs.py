"""The wire codecs of ``firmware_bridge``: vectors written from the public specifications, round trips,
resynchronisation, exact loss counts across counter wraps, the MicroPython framing against the host's,
and fuzzing.

Byte vectors are written out by hand from the specifications (never produced by the encoder under test);
where an encoder exists, it must reproduce them.

Fuzzing: every single-message decoder gets >= 100 000 random and mutated inputs (random bytes; valid
messages with flipped bits, truncations, insertions, deletions, overwritten bytes) and may raise nothing
but ``DecodeError``; every stream decoder gets >= 100 000 such chunks and may raise nothing at all. The
loops are seeded (reproducible); a hypothesis test per decoder adds shrinking.
"""

from __future__ import annotations

import contextlib
import math
import random
import struct
import zlib
from collections.abc import Callable, Iterator

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_bridge import cyton, framed, polar_pmd
from firmware_bridge.cyton import CytonDecoder, decode_cyton_packet, encode_cyton_packet, unwrap_lost
from firmware_bridge.errors import DecodeError
from firmware_bridge.firmware import edged_board, framing_mpy
from firmware_bridge.framed import (
    AsciiLineDecoder,
    ChannelInfo,
    DataFrame,
    FramedDecoder,
    InfoMessage,
    cobs_decode,
    cobs_encode,
    decode_frame,
    encode_frame,
    encode_info,
)
from firmware_bridge.hrs import HeartRateMeasurement, decode_hrs, encode_hrs
from firmware_bridge.polar_pmd import (
    PmdMeasurementType,
    PmdSettingType,
    PmdStatus,
    PpiSample,
    decode_pmd_frame,
    encode_pmd_frame,
    pmd_time_to_unix,
)

FUZZ_N = 100_000
LIGHT = settings(max_examples=300, deadline=None)
U32 = 1 << 32


def pieces(data: bytes, size: int | str, rng: random.Random) -> Iterator[bytes]:
    """``data`` cut into chunks of ``size`` bytes, or at random points (including empty chunks)."""
    i = 0
    while i < len(data):
        k = rng.randint(0, 80) if size == "random" else int(size)
        yield data[i : i + k]
        i += k


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One to three random corruptions of a valid message."""
    b = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(5)
        if op == 0 and b:  # flip one bit
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
        elif op == 1 and b:  # truncate
            del b[rng.randrange(len(b)) :]
        elif op == 2:  # insert random bytes
            i = rng.randrange(len(b) + 1)
            b[i:i] = rng.randbytes(rng.randint(1, 4))
        elif op == 3 and b:  # delete a span
            i = rng.randrange(len(b))
            del b[i : i + rng.randint(1, 4)]
        elif b:  # overwrite a byte
            b[rng.randrange(len(b))] = rng.randrange(256)
    return bytes(b)


def fuzz_inputs(valid: list[bytes], rng: random.Random, n: int, max_random: int) -> Iterator[bytes]:
    """Half random bytes (random lengths), half mutated valid messages."""
    for i in range(n):
        if i % 2:
            yield rng.randbytes(rng.randint(0, max_random))
        else:
            yield mutate(rng.choice(valid), rng)


def assert_only_decode_errors(decode: Callable[[bytes], object], inputs: Iterator[bytes]) -> tuple[int, int]:
    """Run every input; anything but success or DecodeError fails the test (naming the input)."""
    ok = bad = 0
    for data in inputs:
        try:
            decode(data)
            ok += 1
        except DecodeError:
            bad += 1
        except Exception as exc:  # anything else is the bug this test looks for
            pytest.fail(f"{decode.__name__}({data.hex()}) raised {type(exc).__name__}: {exc}")
    return ok, bad


# ================================================================================================ HRS


class TestHeartRateMeasurement:
    # Vectors from the Heart Rate Service specification's field layout (flags, HR, energy, RR in 1/1024 s).
    @pytest.mark.parametrize(
        ("data", "expected"),
        [
            (bytes([0x00, 60]), HeartRateMeasurement(60)),
            (bytes([0x10, 72, 0x00, 0x04]), HeartRateMeasurement(72, rr=(1.0,))),
            (bytes([0x01, 0x2C, 0x01]), HeartRateMeasurement(300)),  # uint16 HR, little-endian
            (bytes([0x06, 55]), HeartRateMeasurement(55, contact=True)),  # supported + detected
            (bytes([0x04, 55]), HeartRateMeasurement(55, contact=False)),  # supported, not detected
            (bytes([0x02, 55]), HeartRateMeasurement(55, contact=None)),  # bit1 without bit2: no meaning
            (bytes([0x08, 70, 0x34, 0x12]), HeartRateMeasurement(70, energy_kj=0x1234)),
            # several RR per notification, oldest first: 1024/1024, 512/1024, 819/1024 s
            (
                bytes([0x10, 65, 0x00, 0x04, 0x00, 0x02, 0x33, 0x03]),
                HeartRateMeasurement(65, rr=(1.0, 0.5, 819 / 1024)),
            ),
            # every field: uint16 HR 300, contact, energy 16 kJ, RR 0.75 s
            (
                bytes([0x1F, 0x2C, 0x01, 0x10, 0x00, 0x00, 0x03]),
                HeartRateMeasurement(300, contact=True, energy_kj=16, rr=(0.75,)),
            ),
            (bytes([0x10, 80]), HeartRateMeasurement(80, rr=())),  # RR flag, no values: accepted
        ],
    )
    def test_spec_vectors(self, data: bytes, expected: HeartRateMeasurement) -> None:
        assert decode_hrs(data) == expected

    def test_every_flag_combination(self) -> None:
        """All 32 combinations of the 5 defined flag bits, fields built by hand per the layout."""
        for flags in range(32):
            body = bytearray([0x2C, 0x01] if flags & 1 else [90])
            if flags & 0x08:
                body += bytes([0xE8, 0x03])  # 1000 kJ
            if flags & 0x10:
                body += bytes([0x00, 0x02, 0x00, 0x03])  # 0.5 s, 0.75 s
            m = decode_hrs(bytes([flags]) + bytes(body))
            assert m.bpm == (300 if flags & 1 else 90)
            assert m.contact == (bool(flags & 2) if flags & 4 else None)
            assert m.energy_kj == (1000 if flags & 8 else None)
            assert m.rr == ((0.5, 0.75) if flags & 0x10 else ())
            assert decode_hrs(encode_hrs(m.bpm, contact=m.contact, energy_kj=m.energy_kj, rr=m.rr)) == m

    @pytest.mark.parametrize(
        ("data", "kind"),
        [
            (b"", "length"),
            (bytes([0x00]), "length"),
            (bytes([0x01, 0x2C]), "length"),  # uint16 HR cut short
            (bytes([0x10, 70, 0x00]), "length"),  # odd RR field
            (bytes([0x18, 70, 0xE8]), "length"),  # energy cut short
            (bytes([0x00, 70, 0x01]), "length"),  # trailing byte, no RR flag
            (bytes([0x20, 70]), "reserved"),
            (bytes([0x80, 70]), "reserved"),
        ],
    )
    def test_malformed(self, data: bytes, kind: str) -> None:
        with pytest.raises(DecodeError) as err:
            decode_hrs(data)
        assert err.value.kind == kind
        assert "heart rate measurement" in str(err.value)

    def test_encode_vectors(self) -> None:
        assert encode_hrs(72, rr=[1.0]) == bytes([0x10, 72, 0x00, 0x04])
        assert encode_hrs(72, hr_uint16=True) == bytes([0x01, 72, 0x00])
        assert encode_hrs(300) == bytes([0x01, 0x2C, 0x01])
        with pytest.raises(ValueError):
            encode_hrs(72, rr=[70.0])  # > 65535/1024 s

    @LIGHT
    @given(
        bpm=st.integers(0, 0xFFFF),
        contact=st.none() | st.booleans(),
        energy=st.none() | st.integers(0, 0xFFFF),
        rr=st.lists(st.integers(0, 0xFFFF), max_size=9),
    )
    def test_round_trip(self, bpm: int, contact: bool | None, energy: int | None, rr: list[int]) -> None:
        m = HeartRateMeasurement(bpm, contact, energy, tuple(u / 1024 for u in rr))
        data = encode_hrs(bpm, contact=contact, energy_kj=energy, rr=m.rr)
        assert decode_hrs(data) == m
        assert encode_hrs(m.bpm, contact=m.contact, energy_kj=m.energy_kj, rr=m.rr) == data


# ================================================================================================ PMD


def pmd_header(mtype: int, ts: int, ftype: int) -> bytes:
    return bytes([mtype]) + ts.to_bytes(8, "little") + bytes([ftype])


def signal_frame(data: bytes, factor: float = 1.0) -> polar_pmd.PmdSignalFrame:
    frame = decode_pmd_frame(data, factor=factor)
    assert isinstance(frame, polar_pmd.PmdSignalFrame)
    return frame


def response(data: bytes) -> polar_pmd.PmdControlPointResponse:
    r = polar_pmd.parse_control_point(data)
    assert isinstance(r, polar_pmd.PmdControlPointResponse)
    return r


class TestPolarPmd:
    def test_time_epoch(self) -> None:
        assert pmd_time_to_unix(0) == 946_684_800.0  # 2000-01-01T00:00:00Z
        # TimeSystemExplained.md: the H10's default time 2019-01-01T00:00:00Z is 599616000000000000 ns
        assert pmd_time_to_unix(599_616_000_000_000_000) == 1_546_300_800.0
        assert pmd_time_to_unix(694_512_000_000_000_500) == pytest.approx(1_641_196_800.0000005, abs=1e-6)
        assert polar_pmd.unix_to_pmd_time(1_546_300_800.0) == 599_616_000_000_000_000

    def test_control_point_commands(self) -> None:
        # The H10 ECG start command seen in the SDK and in captures: 130 Hz (0x0082), 14 bit (0x000E).
        assert polar_pmd.start_ecg_command() == bytes.fromhex("02 00 00 01 82 00 01 01 0E 00")
        assert polar_pmd.start_ppg_command() == bytes.fromhex("02 01 00 01 87 00 01 01 16 00 04 01 04")
        assert polar_pmd.start_acc_command() == bytes.fromhex("02 02 00 01 C8 00 01 01 10 00 02 01 08 00")
        assert polar_pmd.start_ppi_command() == bytes.fromhex("02 03")
        assert polar_pmd.stop_command(PmdMeasurementType.ECG) == bytes.fromhex("03 00")
        assert polar_pmd.get_settings_command(PmdMeasurementType.PPG) == bytes.fromhex("01 01")
        with pytest.raises(ValueError):
            polar_pmd.start_command(0, {PmdSettingType.FACTOR: 1})

    def test_control_point_responses(self) -> None:
        # Get-settings answer for the H10's ECG: success, no continuation, 130 Hz, 14 bit.
        r = response(bytes.fromhex("F0 01 00 00 00 00 01 82 00 01 01 0E 00"))
        assert (r.op_code, r.measurement_type, r.ok, r.more) == (1, 0, True, False)
        assert polar_pmd.parse_settings(r.parameters) == {
            PmdSettingType.SAMPLE_RATE: (130,),
            PmdSettingType.RESOLUTION: (14,),
        }
        # A start response carrying the stream's FACTOR (float32 1.0 = 00 00 80 3F).
        r = response(bytes.fromhex("F0 02 01 00 00 05 01 00 00 80 3F"))
        assert polar_pmd.parse_settings(r.parameters) == {PmdSettingType.FACTOR: (1.0,)}
        # Several allowed values, continuation flagged.
        r = response(bytes.fromhex("F0 01 02 00 01 00 02 32 00 C8 00"))
        assert r.more and polar_pmd.parse_settings(r.parameters) == {PmdSettingType.SAMPLE_RATE: (50, 200)}
        # An error carries no parameters.
        r = response(bytes.fromhex("F0 02 00 06 00 01"))
        assert r.status == PmdStatus.ALREADY_IN_STATE and not r.ok and r.parameters == b""
        assert r.status_text == "already in state"
        # The sensor stopping streams on its own.
        stopped = polar_pmd.parse_control_point(bytes.fromhex("01 00 01"))
        assert stopped == polar_pmd.PmdMeasurementStopped((0, 1))
        # Feature bitmap: bit i = type i. 0x05 = ECG and ACC (the H10).
        h10 = {PmdMeasurementType.ECG, PmdMeasurementType.ACC}
        assert polar_pmd.parse_features(bytes.fromhex("0F 05 00")) == h10
        assert polar_pmd.parse_features(polar_pmd.encode_features([1, 3, 9])) == {1, 3, 9}
        for bad in (b"", b"\xf0\x01", b"\x07", bytes.fromhex("F0 01 00 00 00 00 02")):
            with pytest.raises(DecodeError):
                polar_pmd.parse_settings(response(bad).parameters)
        with pytest.raises(DecodeError):
            polar_pmd.parse_settings(bytes([9, 1, 0]))  # unknown setting type
        settings = polar_pmd.encode_settings({PmdSettingType.SAMPLE_RATE: [130]})
        enc = polar_pmd.encode_control_point_response(1, 0, parameters=settings)
        assert enc == bytes.fromhex("F0 01 00 00 00 00 01 82 00")

    def test_ecg_frame_by_hand(self) -> None:
        ts = 599_616_023_171_427_290  # from TimeSystemExplained.md
        payload = bytes.fromhex("010000 ffffff ffff7f 000080 f4ffff")  # 1, -1, 2^23-1, -2^23, -12 (3-byte LE)
        frame = signal_frame(pmd_header(0x00, ts, 0x00) + payload)
        assert frame.samples.ravel().tolist() == [1, -1, 8_388_607, -8_388_608, -12]
        assert frame.unit == "uV" and frame.factor == 1.0 and frame.timestamp_ns == ts
        assert frame.values().ravel().tolist() == [1.0, -1.0, 8_388_607.0, -8_388_608.0, -12.0]
        # The timestamp is the LAST sample's; earlier ones 1/130 s apart before it.
        times = frame.sample_times_ns(130.0)
        assert times[-1] == ts and times[0] == ts - round(4e9 / 130)
        assert np.allclose(np.diff(times), 1e9 / 130, atol=1)
        assert encode_pmd_frame(0, 0, ts, frame.samples) == pmd_header(0, ts, 0) + payload

    def test_ppg_and_acc_raw_frames_by_hand(self) -> None:
        # PPG type 0: ppg0, ppg1, ppg2, ambient, 3-byte signed LE each.
        f = signal_frame(pmd_header(0x01, 5, 0x00) + bytes.fromhex("102700 feffff 000010 640000"))
        assert f.samples.tolist() == [[10000, -2, 1_048_576, 100]]
        assert f.channels == ("ppg0", "ppg1", "ppg2", "ambient")
        # ACC type 1: x, y, z int16 LE in mG.
        f = signal_frame(pmd_header(0x02, 5, 0x01) + bytes.fromhex("e803 18fc 0000 0100 0200 0300"))
        assert f.samples.tolist() == [[1000, -1000, 0], [1, 2, 3]] and f.unit == "mG"

    def test_delta_compressed_frame_built_bit_by_bit(self) -> None:
        """ACC compressed type 1 (0x81: 3 channels, 16-bit reference), two blocks.

        Reference (x, y, z) = (100, -2, 1000): 64 00 | FE FF | E8 03.
        Block 1: width 3, count 2, deltas (+1, -1, +3), (-4, 0, +2). As 3-bit two's complement, LSB first:
            +1 -> 1 0 0   -1 -> 1 1 1   +3 -> 1 1 0   -4 -> 0 0 1   0 -> 0 0 0   +2 -> 0 1 0
        Stream: 100 111 110 001 000 010 (18 bits), bit k = bit (k % 8) of byte k // 8:
            byte 0 = bits 0-7  = 1 0 0 1 1 1 1 1 -> 0b11111001 = 0xF9
            byte 1 = bits 8-15 = 0 0 0 1 0 0 0 0 -> 0b00001000 = 0x08
            byte 2 = bits 16,17 = 1 0            -> 0x01
        Block 2: width 1, count 1, deltas (0, -1, -1) -> bits 0 1 1 -> 0x06.
        """
        payload = bytes.fromhex("6400 feff e803") + bytes.fromhex("03 02 f9 08 01") + bytes.fromhex("01 01 06")
        expected = [[100, -2, 1000], [101, -3, 1003], [97, -3, 1005], [97, -4, 1004]]
        ts = 10**17
        f = signal_frame(pmd_header(0x02, ts, 0x81) + payload, factor=0.5)
        assert f.compressed and f.frame_type == 1
        assert f.samples.tolist() == expected
        assert f.factor == 0.5 and f.values().tolist() == (np.array(expected) * 0.5).tolist()
        assert polar_pmd.decode_delta_frame(payload, 3, 16).tolist() == expected
        # The encoder chooses the same widths for the same blocks, so it reproduces the hand-made bytes.
        assert polar_pmd.encode_delta_frame(np.array(expected), 16, max_block=2) == payload
        wire = encode_pmd_frame(2, 1, ts, expected, compressed=True, max_block=2)
        assert wire == pmd_header(2, ts, 0x81) + payload
        # ACC compressed type 0 is in G: the factor is scaled to mG.
        f0 = signal_frame(pmd_header(0x02, ts, 0x80) + payload, factor=0.001)
        assert f0.factor == pytest.approx(1.0)
        # Width 0: samples equal to the previous one.
        zero = polar_pmd.decode_delta_frame(bytes.fromhex("6400 feff e803 00 03"), 3, 16)
        assert zero.tolist() == [[100, -2, 1000]] * 4

    def test_compressed_ppg_round_trip(self) -> None:
        rng = np.random.default_rng(7)
        walk = np.cumsum(rng.integers(-3000, 3000, (120, 4)), axis=0) + 200_000
        for max_block in (1, 7, 36, 255):
            data = encode_pmd_frame(1, 0, 12345, walk, compressed=True, max_block=max_block)
            assert data[9] == 0x80
            assert np.array_equal(signal_frame(data).samples, walk)

    def test_ppi_frame_by_hand(self) -> None:
        ts = 700_000_000_000_000_000
        payload = bytes.fromhex("3c e803 0a00 06") + bytes.fromhex("3e c803 0c00 01")
        f = decode_pmd_frame(pmd_header(0x03, ts, 0x00) + payload)
        assert isinstance(f, polar_pmd.PmdPpiFrame)
        assert f.samples == (
            PpiSample(hr_bpm=60, ppi_ms=1000, error_ms=10, blocker=False, skin_contact=True),
            PpiSample(hr_bpm=62, ppi_ms=968, error_ms=12, blocker=True, skin_contact=None),
        )
        assert f.beat_times_ns().tolist() == [ts - 968_000_000, ts]  # type: ignore[union-attr]
        assert polar_pmd.encode_ppi_frame(ts, f.samples) == pmd_header(3, ts, 0) + payload
        assert decode_pmd_frame(pmd_header(0x03, 0, 0x00) + payload).beat_times_ns() is None  # type: ignore[union-attr]

    @pytest.mark.parametrize(
        ("data", "kind"),
        [
            (b"\x00" * 9, "length"),  # header cut short
            (pmd_header(0, 1, 0), "length"),  # no samples
            (pmd_header(0, 1, 0) + b"\x01\x02", "length"),  # not whole 3-byte samples
            (pmd_header(0, 1, 0x80) + b"\x01\x02\x03", "type"),  # compressed ECG: not a known format
            (pmd_header(0, 1, 5) + b"\x01\x02\x03", "type"),
            (pmd_header(0x20, 1, 0) + b"\x01", "type"),
            (pmd_header(3, 1, 0) + b"\x01" * 7, "length"),  # PPI: not whole 6-byte records
            (pmd_header(2, 1, 0x81) + bytes(6) + b"\x21\x01" + bytes(20), "value"),  # 33-bit deltas
            (pmd_header(2, 1, 0x81) + bytes(6) + b"\x03\x02\xf9", "length"),  # block cut short
            (pmd_header(2, 1, 0x81) + bytes(6) + b"\x03", "length"),  # block header cut short
            (pmd_header(2, 1, 0x81) + bytes(5), "length"),  # reference cut short
        ],
    )
    def test_malformed(self, data: bytes, kind: str) -> None:
        with pytest.raises(DecodeError) as err:
            decode_pmd_frame(data)
        assert err.value.kind == kind

    @LIGHT
    @given(
        st.lists(st.lists(st.integers(-(2**15), 2**15 - 1), min_size=3, max_size=3), min_size=1, max_size=60),
        st.integers(1, 255),
    )
    def test_delta_round_trip(self, samples: list[list[int]], max_block: int) -> None:
        arr = np.array(samples, dtype=np.int64)
        payload = polar_pmd.encode_delta_frame(arr, 16, max_block=max_block)
        assert np.array_equal(polar_pmd.decode_delta_frame(payload, 3, 16), arr)


# ============================================================================================== Cyton


def cyton_packet_by_hand(counter: int, channel_bytes: list[bytes], footer: int = 0xC0) -> bytes:
    return bytes([0xA0, counter]) + b"".join(channel_bytes) + bytes(6) + bytes([footer])


def cyton_stream(counters: list[int], rng: np.random.Generator) -> tuple[bytes, np.ndarray]:
    values = rng.integers(-(2**23), 2**23, (len(counters), 8))
    data = b"".join(encode_cyton_packet(c, v) for c, v in zip(counters, values, strict=True))
    return data, values


class TestCyton:
    def test_known_values(self) -> None:
        packet = cyton_packet_by_hand(
            7, [b"\x7f\xff\xff", b"\x80\x00\x00", b"\x00\x00\x01", b"\xff\xff\xff"] + [b"\x00\x00\x00"] * 4
        )
        counter, uv = decode_cyton_packet(packet)
        scale = 4.5 / 24 / (2**23 - 1) * 1e6  # 0.02235 uV per count at gain 24
        assert counter == 7
        assert uv[0] == pytest.approx(187_500.0, rel=1e-12)  # full scale: 4.5 V / 24
        assert uv[1] == pytest.approx(-(2**23) * scale, rel=1e-12)
        assert uv[2] == pytest.approx(0.022351744455, rel=1e-9)
        assert uv[3] == pytest.approx(-scale, rel=1e-12)
        assert encode_cyton_packet(7, [2**23 - 1, -(2**23), 1, -1, 0, 0, 0, 0]) == packet
        assert cyton.counts_to_uv(1) == pytest.approx(4.5 / (2**23 - 1) * 1e6)
        with pytest.raises(DecodeError):
            decode_cyton_packet(packet[:-1] + b"\xc7")

    def test_per_channel_gains_and_accel(self) -> None:
        gains = [1, 2, 4, 6, 8, 12, 24, 24]
        aux = bytes.fromhex("0010 fff0 0000")  # int16 BE: 16, -16, 0
        data = encode_cyton_packet(0, [1000] * 8, aux=aux) + encode_cyton_packet(1, [1000] * 8, aux=aux, footer=0xC1)
        block = CytonDecoder(gains=gains).feed(data + encode_cyton_packet(2, [0] * 8))
        assert block.uv[0] == pytest.approx([1000 * cyton.counts_to_uv(g) for g in gains])
        accel = block.accel_g()
        assert accel[0].tolist() == pytest.approx([16 * 0.002 / 16, -16 * 0.002 / 16, 0.0])
        assert np.isnan(accel[1]).all()  # footer 0xC1: the aux bytes are not the accelerometer
        with pytest.raises(ValueError):
            CytonDecoder(gains=3)

    @pytest.mark.parametrize("size", [1, 7, 33, 64, 1000, "random"])
    def test_chunking_changes_nothing(self, size: int | str) -> None:
        rng = np.random.default_rng(1)
        counters = [i % 256 for i in range(600)]
        data, values = cyton_stream(counters, rng)
        decoder = CytonDecoder()
        blocks = [decoder.feed(c) for c in pieces(data, size, random.Random(2))]
        uv = np.concatenate([b.uv for b in blocks])
        # The last packet waits for nothing here: it follows its predecessor, so it is accepted at once.
        assert len(uv) == 600
        assert np.array_equal(uv, values * (4.5 / 24 / (2**23 - 1) * 1e6))
        assert decoder.counters.lost_samples == 0 and decoder.counters.garbage_bytes == 0

    def test_lost_samples_exact_across_wrap(self) -> None:
        rng = np.random.default_rng(3)
        sent = list(range(240, 256)) + list(range(0, 20))  # 255 -> 0 wrap
        dropped = {254, 255, 0, 7}  # 3 lost across the wrap, 1 more later
        kept = [c for c in sent if c not in dropped]
        data, _ = cyton_stream(kept, rng)
        decoder = CytonDecoder()
        block = decoder.feed(data)
        assert block.counters.tolist() == kept
        lost = dict(zip(block.counters.tolist(), block.lost_before.tolist(), strict=True))
        assert lost[1] == 3 and lost[8] == 1
        assert sum(lost.values()) == 4 == decoder.counters.lost_samples
        # A jump that wraps: 200 -> 10 means 65 packets lost (modulo 256).
        d2 = CytonDecoder()
        b2 = d2.feed(b"".join(encode_cyton_packet(c, [0] * 8) for c in (199, 200, 10, 11)))
        assert b2.lost_before.tolist() == [0, 0, 65, 0]
        # The counter cannot see whole wraps; the elapsed time can.
        assert unwrap_lost(65, 256, elapsed_s=(65 + 256 + 1) / 250, sample_rate=250) == 321
        assert unwrap_lost(65, 256, elapsed_s=66 / 250, sample_rate=250) == 65

    def test_resync_after_garbage(self) -> None:
        rng = np.random.default_rng(4)
        counters = [i % 256 for i in range(100, 400)]
        packets = [encode_cyton_packet(c, rng.integers(-(2**23), 2**23, 8)) for c in counters]
        fake = b"\xa0\x55" + bytes(30) + b"\xc0"  # looks like a packet (header ... footer) inside noise
        garbage = {
            10: b"\x13hello, text from the board\r\n",
            50: b"\x01" + fake + b"\x02",
            90: fake[:20],  # a truncated packet
            150: bytes(rng.integers(0, 256, 200, dtype=np.uint8)).replace(b"\xa0", b"\xa1"),
        }
        stream = b"".join(garbage.get(i, b"") + p for i, p in enumerate(packets))
        for size in (1, 33, 100, "random"):
            decoder = CytonDecoder()
            block_list = [decoder.feed(c) for c in pieces(stream, size, random.Random(5))]
            got = np.concatenate([b.counters for b in block_list]).tolist()
            assert got == counters  # every real packet, in order, none invented
            assert decoder.counters.lost_samples == 0
            assert decoder.counters.garbage_bytes == sum(len(g) for g in garbage.values())
        # A packet whose footer is corrupted is dropped (and counted lost); the stream continues.
        broken = list(packets)
        broken[30] = broken[30][:-1] + b"\x00"
        decoder = CytonDecoder()
        block = decoder.feed(b"".join(broken))
        assert len(block) == len(counters) - 1 and decoder.counters.lost_samples == 1

    def test_daisy_interleaving(self) -> None:
        # Odd counter: channels 1-8 (main board); the next, even, counter: channels 9-16 (Daisy).
        counters = list(range(249, 256)) + list(range(0, 9))  # ..., 253/254, 255/0 (wrap), 1/2, ...
        pkts = {c: encode_cyton_packet(c, [c * 100 + k for k in range(8)]) for c in counters}
        decoder = CytonDecoder(daisy=True)
        # 249/250, 251/252, 253/254, 255/0, 1/2, 3/4, 5/6, 7/8
        block = decoder.feed(b"".join(pkts[c] for c in counters))
        assert block.counters.tolist() == [249, 251, 253, 255, 1, 3, 5, 7]
        scale = 4.5 / 24 / (2**23 - 1) * 1e6
        first = np.round(block.uv[0] / scale).astype(int).tolist()
        assert first == [24900 + k for k in range(8)] + [25000 + k for k in range(8)]
        wrap = np.round(block.uv[3] / scale).astype(int).tolist()
        assert wrap == [25500 + k for k in range(8)] + [k for k in range(8)]
        assert decoder.n_channels == 16 and decoder.sample_rate == 125.0
        # Lose the Daisy half of 3/4 and all of 7/8 -> samples 3 and 7 lost, one orphan half.
        decoder = CytonDecoder(daisy=True)
        keep = [c for c in range(1, 13) if c not in (4, 7, 8)]
        block = decoder.feed(b"".join(encode_cyton_packet(c, [0] * 8) for c in keep))
        assert block.counters.tolist() == [1, 5, 9, 11]
        assert block.lost_before.tolist() == [0, 1, 1, 0]
        assert decoder.counters.orphan_halves == 1 and decoder.counters.lost_samples == 2


# ============================================================================================= framed


def info_wire(seq: int = 0, ts: int = 5) -> bytes:
    return encode_info(seq=seq, timestamp_us=ts, device_name="demo", channels=[("ecg", "uV")], firmware="1")


def data_wire(seq: int, first: int, n: int = 10, ts: int | None = None, fmt: str = "int16", n_ch: int = 2) -> bytes:
    samples = (np.arange(n * n_ch).reshape(n, n_ch) + first) % 1000
    return encode_frame(
        samples, seq=seq, timestamp_us=ts if ts is not None else first * 4000, first_sample=first,
        sample_rate=250.0, scales=[0.5] * n_ch, sample_format=fmt,
    )  # fmt: skip


class TestFramed:
    def test_crc_check_value(self) -> None:
        assert framed.crc32(b"123456789") == 0xCBF43926 == framing_mpy.crc32(b"123456789")

    @pytest.mark.parametrize(
        ("raw", "encoded"),
        [  # the examples of Cheshire & Baker's COBS (as tabulated on Wikipedia)
            ("00", "01 01"),
            ("00 00", "01 01 01"),
            ("00 11 00", "01 02 11 01"),
            ("11 22 00 33", "03 11 22 02 33"),
            ("11 22 33 44", "05 11 22 33 44"),
            ("11 00 00 00", "02 11 01 01 01"),
        ],
    )
    def test_cobs_vectors(self, raw: str, encoded: str) -> None:
        assert cobs_encode(bytes.fromhex(raw)) == bytes.fromhex(encoded)
        assert bytes(framing_mpy.cobs_encode(bytes.fromhex(raw))) == bytes.fromhex(encoded)
        assert cobs_decode(bytes.fromhex(encoded)) == bytes.fromhex(raw)

    def test_cobs_254_byte_runs(self) -> None:
        run = bytes(range(1, 255))  # 254 non-zero bytes: one 0xFF block, nothing after it
        cases = {
            run: b"\xff" + run,
            b"\x00" + run: b"\x01\xff" + run,
            bytes(range(1, 256)): b"\xff" + run + b"\x02\xff",
            bytes(range(2, 256)) + b"\x00": b"\xff" + bytes(range(2, 256)) + b"\x01\x01",
        }
        for raw, encoded in cases.items():
            assert cobs_encode(raw) == encoded == bytes(framing_mpy.cobs_encode(raw))
            assert cobs_decode(encoded) == raw

    def test_spec_vectors(self) -> None:
        """The two frames of PROTOCOL.md section 7, byte for byte."""
        wire = bytes.fromhex(
            "04 01 01 01 01 01 04 40 42 0f 01 01 01 01 02 fa 01 01 02 02 03 02 01 01 03 7a 43 01 01 02 3f 01 03 80"
            "3f 07 02 fd ff f2 01 07 05 ac ad 61 19 00"
        )
        frame = bytes.fromhex(
            "01 01 01 00 00 00 40 42 0f 00 00 00 00 00 fa 00 00 00 02 00 02 01 00 00 7a 43"
            "00 00 00 3f 00 00 80 3f 00 02 fd ff f2 01 07 00 ac ad 61 19"
        )
        assert zlib.crc32(frame[:-4]) == struct.unpack("<I", frame[-4:])[0]
        assert cobs_decode(wire[:-1]) == frame
        msg = decode_frame(wire)
        assert isinstance(msg, DataFrame)
        assert (msg.seq, msg.timestamp_us, msg.first_sample, msg.sample_rate) == (1, 1_000_000, 250, 250.0)
        assert msg.raw.tolist() == [[512, -3], [498, 7]] and msg.values().tolist() == [[256.0, -3.0], [249.0, 7.0]]
        assert msg.sample_times_us().tolist() == [1_000_000.0, 1_004_000.0]
        common = dict(seq=1, timestamp_us=1_000_000, first_sample=250, sample_rate=250.0, scales=[0.5, 1.0])
        assert encode_frame([[512, -3], [498, 7]], **common) == wire  # type: ignore[arg-type]
        assert bytes(framing_mpy.data_frame(1, 1_000_000, 250, 250.0, 1, [0.5, 1.0], [512, -3, 498, 7], 2)) == wire
        info = bytes.fromhex(
            "03 01 02 01 01 01 02 05 01 01 01 01 01 01 14 04 64 65 6d 6f 01 31 01 03 65 63 67 02 75 56 05 fa 43 51 00"
        )
        assert info_wire() == info == bytes(framing_mpy.info_frame(0, 5, "demo", "1", [("ecg", "uV")]))
        assert decode_frame(info) == InfoMessage(0, 5, "demo", "1", (ChannelInfo("ecg", "uV"),))

    @pytest.mark.parametrize("fmt", ["int16", "int24", "int32", "float32"])
    def test_round_trip_and_firmware_equality(self, fmt: str) -> None:
        rng = np.random.default_rng(8)
        bits = {"int16": 16, "int24": 24, "int32": 32}.get(fmt)
        for n_ch, n in ((1, 1), (3, 17), (8, 40)):
            if bits:
                samples = rng.integers(-(2 ** (bits - 1)), 2 ** (bits - 1), (n, n_ch))
                samples[0, 0] = -(2 ** (bits - 1))
                samples[-1, -1] = 2 ** (bits - 1) - 1
            else:
                samples = rng.normal(0, 100, (n, n_ch)).astype(np.float32)
            scales = rng.uniform(1e-3, 10, n_ch).astype(np.float32).tolist()
            args = dict(seq=U32 - 1, timestamp_us=2**40 + 3, first_sample=123_456, sample_rate=512.0)
            wire = encode_frame(samples, scales=scales, sample_format=fmt, **args)  # type: ignore[arg-type]
            code = framed.FORMAT_CODES[fmt]
            flat = samples.ravel().tolist()
            board = framing_mpy.data_frame(U32 - 1, 2**40 + 3, 123_456, 512.0, code, scales, flat, n_ch)
            assert bytes(board) == wire
            msg = decode_frame(wire)
            assert isinstance(msg, DataFrame)
            assert np.array_equal(msg.raw, samples) and msg.sample_format == fmt
            assert msg.scales.tolist() == scales and msg.seq == U32 - 1 and msg.timestamp_us == 2**40 + 3
            assert b"\x00" not in wire[:-1]

    @LIGHT
    @given(
        st.binary(max_size=600),
        st.text(max_size=40),
        st.lists(st.tuples(st.text(max_size=12), st.text(max_size=6)), min_size=1, max_size=12),
    )
    def test_firmware_cobs_and_info_equal_host(self, data: bytes, name: str, channels: list[tuple[str, str]]) -> None:
        assert bytes(framing_mpy.cobs_encode(data)) == cobs_encode(data)
        assert framing_mpy.crc32(data) == zlib.crc32(data)
        try:
            host = encode_info(seq=7, timestamp_us=9, device_name=name, channels=channels, firmware="x")
        except ValueError:  # a name over 255 UTF-8 bytes: the board refuses it too
            with pytest.raises(ValueError):
                framing_mpy.info_frame(7, 9, name, "x", channels)
            return
        assert bytes(framing_mpy.info_frame(7, 9, name, "x", channels)) == host
        assert decode_frame(host) == InfoMessage(7, 9, name, "x", tuple(ChannelInfo(*c) for c in channels))

    @pytest.mark.parametrize("size", [1, 5, 64, 4096, "random"])
    def test_stream_with_wraps_losses_and_garbage(self, size: int | str) -> None:
        """Sequence numbers wrap at 2^32, and so do sample indices; losses are counted exactly."""
        first0 = U32 - 25  # sample index wraps inside the third frame
        wires = [info_wire(seq=U32 - 3, ts=1)]
        seqs = [U32 - 2, U32 - 1, 0, 1, 2, 3, 4, 5]
        firsts = [(first0 + 10 * k) % U32 for k in range(len(seqs))]
        for s, f in zip(seqs, firsts, strict=True):
            wires.append(data_wire(s, f, ts=10_000 + 40_000 * seqs.index(s)))
        # Drop frames seq 0 and 3 (20 samples), corrupt frame seq 4 (bad CRC: also lost), add garbage.
        drop = {3, 6}
        corrupt_index = 7
        corrupted = bytearray(wires[corrupt_index])
        corrupted[20] ^= 0x40
        stream = b"junk-before-first-delimiter\x00"
        for i, w in enumerate(wires):
            if i in drop:
                continue
            stream += bytes(corrupted) if i == corrupt_index else w
            if i == 4:
                stream += b"\xde\xad\xbe\xef\x00"  # line noise between frames: one bad frame
        decoder = FramedDecoder()
        messages = [m for c in pieces(stream, size, random.Random(9)) for m in decoder.feed(c)]
        data = [m for m in messages if isinstance(m, DataFrame)]
        assert [m.seq for m in data] == [U32 - 2, U32 - 1, 1, 2, 5]
        assert [m.lost_frames_before for m in data] == [0, 0, 1, 0, 2]
        assert [m.lost_samples_before for m in data] == [0, 0, 10, 0, 20]
        c = decoder.counters
        assert (c.lost_frames, c.lost_samples, c.restarts) == (3, 30, 0)
        assert c.bad_crc + c.bad_cobs + c.bad_length == 2  # the corrupted frame and the noise
        assert c.skipped_bytes == len(b"junk-before-first-delimiter")
        assert data[2].first_sample == firsts[3] and data[2].raw.tolist() == data_wire_samples(firsts[3])

    def test_device_overrun_restart_and_errors_are_counted(self) -> None:
        decoder = FramedDecoder()
        out = decoder.feed(info_wire(seq=0, ts=1) + data_wire(1, 0) + data_wire(2, 10) + data_wire(3, 57))
        assert [getattr(m, "lost_samples_before", None) for m in out] == [None, 0, 0, 37]  # the board dropped 37
        assert decoder.counters.lost_frames == 0 and decoder.counters.lost_samples == 37
        # The board reboots: INFO with seq 0, then data from sample 0 again, at an earlier device time.
        out = decoder.feed(info_wire(seq=0, ts=2) + data_wire(1, 0, ts=100))
        assert [m.restarted for m in out] == [True, False]
        assert decoder.counters.restarts == 1 and decoder.counters.lost_samples == 37
        # A clock that goes back inside a run also marks a restart.
        out = decoder.feed(data_wire(2, 10, ts=50))
        assert out[0].restarted and decoder.counters.restarts == 2
        # Version, unknown type, bad field: counted by reason.
        frame = bytearray(cobs_decode(data_wire(3, 20)[:-1]))
        for byte0, byte1, counter in ((2, 1, "bad_version"), (1, 0x7E, "unknown_type")):
            f = bytearray(frame)
            f[0], f[1] = byte0, byte1
            f[-4:] = struct.pack("<I", zlib.crc32(bytes(f[:-4])))
            before = getattr(decoder.counters, counter)
            assert decoder.feed(cobs_encode(bytes(f)) + b"\x00") == []
            assert getattr(decoder.counters, counter) == before + 1
        f = bytearray(frame)
        f[14 + 7] = 9  # sample format 9
        f[-4:] = struct.pack("<I", zlib.crc32(bytes(f[:-4])))
        assert decoder.feed(cobs_encode(bytes(f)) + b"\x00") == [] and decoder.counters.bad_value == 1
        f = bytearray(frame)
        f[14 + 4] = 11  # sample count 11 where 10 are sent
        f[-4:] = struct.pack("<I", zlib.crc32(bytes(f[:-4])))
        assert decoder.feed(cobs_encode(bytes(f)) + b"\x00") == [] and decoder.counters.bad_length == 1
        # A run without delimiters longer than any frame is dropped, and memory stays bounded.
        decoder.feed(b"\x01" * 10_000)
        assert decoder.counters.bad_length == 2 and len(decoder._buf) <= framed.MAX_ENCODED
        out = decoder.feed(b"\x01" * 50 + b"\x00" + data_wire(4, 30))
        assert len(out) == 1 and decoder.counters.bad_length == 2

    def test_firmware_sampling_loop_under_cpython(self) -> None:
        """edged_board's ring and frame writer: the frames decode to the samples the handler stored, the
        device clock survives the 2^30 tick wrap, and an overrun reaches the host as an exact loss."""
        ring = edged_board.SampleRing(64, 2)
        sent: list[bytes] = []
        tick = (1 << 30) - 4000 * 20  # MicroPython's ticks_us wraps at 2^30: here after 20 samples
        writer = edged_board.FrameWriter(
            ring, sent.append, 250, framing_mpy.FORMAT_INT24, [0.25, 1.0], [("ecg", "uV"), ("x", "")], "t", 8,
            clock=lambda: tick,
        )  # fmt: skip
        writer.send_info()

        def produce(k: int) -> None:
            nonlocal tick
            for _ in range(k):
                base = ring.slot()
                idx = ring.head
                ring.values[base] = idx * 3 - 100_000
                ring.values[base + 1] = -idx
                ring.commit(tick)
                tick = (tick + 4000) % (1 << 30)

        produce(40)
        writer.pump()
        produce(200)  # the main loop stalls: the 64-slot ring overruns
        writer.pump()
        produce(16)
        writer.pump()
        decoder = FramedDecoder()
        msgs = decoder.feed(b"".join(sent))
        data = [m for m in msgs if isinstance(m, DataFrame)]
        assert isinstance(msgs[0], InfoMessage) and msgs[0].channels[0] == ChannelInfo("ecg", "uV")
        for m in data:
            idx = m.first_sample + np.arange(m.n_samples)
            assert m.raw[:, 0].tolist() == (idx * 3 - 100_000).tolist()
            assert m.raw[:, 1].tolist() == (-idx).tolist()
        times = np.concatenate([m.sample_times_us() for m in data])
        assert np.all(np.diff([m.timestamp_us for m in data]) > 0)  # through the tick wrap
        assert decoder.counters.lost_samples == writer.overrun_samples > 0
        assert decoder.counters.bad_frames == 0 and decoder.counters.lost_frames == 0
        waiting = (ring.head - writer.tail) & edged_board.COUNT_MASK  # less than a frame, not yet sent
        assert len(times) + writer.overrun_samples + waiting == 40 + 200 + 16


def data_wire_samples(first: int, n: int = 10, n_ch: int = 2) -> list[list[int]]:
    return ((np.arange(n * n_ch).reshape(n, n_ch) + first) % 1000).tolist()


class TestAsciiLines:
    def test_plain_lines(self) -> None:
        d = AsciiLineDecoder()
        block = d.feed(b"512,498\n510, 497\r\n 509;496 \n508\t495,\n")
        assert block.values.tolist() == [[512, 498], [510, 497], [509, 496], [508, 495]]
        assert block.times_s is None and d.counters.lines == 4

    def test_header_with_time_column(self) -> None:
        d = AsciiLineDecoder()
        block = d.feed(b"t_ms,ch1,ch2\n1000,5,6\n1004,7,8\n")
        assert d.channel_names == ("ch1", "ch2") and d.time_unit == "ms"
        assert block.values.tolist() == [[5, 6], [7, 8]] and block.times_s.tolist() == [1.0, 1.004]  # type: ignore[union-attr]
        micros = AsciiLineDecoder().feed(b"micros ecg\n2000000 1.5\n")
        assert micros.times_s.tolist() == [2.0] and micros.values.tolist() == [[1.5]]  # type: ignore[union-attr]

    def test_boot_banner_is_not_a_header(self) -> None:
        d = AsciiLineDecoder()
        block = d.feed(b"Starting ECG v1.2\n512\n498\n")
        assert block.values.tolist() == [[512], [498]] and d.counters.malformed == 1 and d.counters.headers == 0
        d = AsciiLineDecoder()
        block = d.feed(b"== edged demo ==\nt_ms,ecg\n1000,2\n1004,4\n")
        assert d.channel_names == ("ecg",) and block.times_s.tolist() == [1.0, 1.004]  # type: ignore[union-attr]
        assert d.counters.malformed == 1 and d.counters.headers == 1

    def test_malformed_lines_are_counted_and_skipped(self) -> None:
        d = AsciiLineDecoder()
        text = (
            b"t,a,b\n0.0,1,2\n"
            b"oops\n"  # text after data
            b"0.1,1\n"  # too few fields
            b"0.2,nan,3\n"  # not a finite number
            b"0.3,1_0,3\n"  # Python would read 1_0 as 10; a sketch would not print it
            b"0.4,\xff,3\n"  # not ASCII
            b"t,a,b\n"  # the header again: the board rebooted
        )
        text += b"9" * 2000 + b"\n"  # overlong line
        text += b"0.5,3,4\n"
        blocks = [d.feed(c) for c in pieces(text, 3, random.Random(1))]
        values = np.concatenate([b.values for b in blocks if len(b)])
        assert values.tolist() == [[1, 2], [3, 4]]
        assert d.counters.malformed == 6 and d.counters.headers == 2 and d.counters.lines == 2

    def test_chunking_changes_nothing(self) -> None:
        lines = b"".join(f"{i},{-i},{i * 2}\n".encode() for i in range(300))
        expected = AsciiLineDecoder().feed(lines).values
        for size in (1, 2, 7, 64, "random"):
            d = AsciiLineDecoder()
            blocks = [d.feed(c) for c in pieces(lines, size, random.Random(3))]
            got = np.concatenate([b.values for b in blocks if len(b)])  # before the first line: (0, 0)
            assert np.array_equal(got, expected)


# =========================================================================================== fuzzing


class TestFuzz:
    """>= 100 000 inputs per decoder; seeded, so a failure names a reproducible input."""

    def test_hrs(self) -> None:
        rng = random.Random(101)
        valid = [
            encode_hrs(
                rng.randint(0, 400), contact=rng.choice([None, True, False]), energy_kj=rng.choice([None, 5]),
                rr=[0.8] * rng.randint(0, 8),
            )
            for _ in range(50)
        ]  # fmt: skip
        ok, bad = assert_only_decode_errors(decode_hrs, fuzz_inputs(valid, rng, FUZZ_N, 24))
        assert ok + bad == FUZZ_N and ok > 1000 and bad > 1000

    def test_pmd(self) -> None:
        rng = random.Random(102)
        nrng = np.random.default_rng(102)

        def walk(n: int, ch: int, step: int) -> np.ndarray:
            return np.cumsum(nrng.integers(-step, step, (n, ch)), axis=0)

        valid = [
            encode_pmd_frame(0, 0, 10**17, nrng.integers(-3000, 3000, 73)),
            encode_pmd_frame(1, 0, 10**17, walk(36, 4, 900), compressed=True),
            encode_pmd_frame(1, 0, 10**17, nrng.integers(-(2**20), 2**20, (10, 4))),
            encode_pmd_frame(2, 1, 10**17, walk(40, 3, 50), compressed=True, max_block=9),
            encode_pmd_frame(2, 0, 10**17, nrng.integers(-100, 100, (20, 3)), compressed=True),
            encode_pmd_frame(2, 2, 10**17, nrng.integers(-100, 100, (20, 3))),
            polar_pmd.encode_ppi_frame(10**17, [PpiSample(60, 1000, 5, False, True)] * 5),
        ]

        def decode_any_pmd(data: bytes) -> object:
            decode_pmd_frame(data, factor=1.5)
            return None

        ok, bad = assert_only_decode_errors(decode_any_pmd, fuzz_inputs(valid, rng, FUZZ_N, 300))
        assert ok + bad == FUZZ_N and ok > 1000 and bad > 1000

    def test_pmd_control_point(self) -> None:
        rng = random.Random(103)
        valid = [
            bytes.fromhex("F0 01 00 00 00 00 01 82 00 01 01 0E 00"),
            bytes.fromhex("F0 02 01 00 00 05 01 00 00 80 3F"),
            bytes.fromhex("F0 01 02 00 01 00 02 32 00 C8 00 02 03 02 00 04 00 08 00"),
            bytes.fromhex("01 00 01"),
        ]

        def control_point(data: bytes) -> object:
            r = polar_pmd.parse_control_point(data)
            if isinstance(r, polar_pmd.PmdControlPointResponse):
                polar_pmd.parse_settings(r.parameters)
            return polar_pmd.parse_features(data)

        ok, bad = assert_only_decode_errors(control_point, fuzz_inputs(valid, rng, FUZZ_N, 30))
        assert ok + bad == FUZZ_N and bad > 1000

    def test_framed_single_frames(self) -> None:
        rng = random.Random(104)
        valid = [data_wire(7, 70, n=n, fmt=f, n_ch=c) for f in framed.FORMAT_CODES for n, c in ((1, 1), (9, 3))]
        valid += [info_wire(3), bytes(framing_mpy.info_frame(1, 2, "board", "fw", [("a", "uV"), ("b", "")]))]
        inputs = list(fuzz_inputs(valid, rng, FUZZ_N, 120))
        # Mutations mostly break the CRC; also fuzz behind it, with a recomputed CRC on mutated frames.
        for i in range(0, len(inputs), 4):
            raw = mutate(cobs_decode(rng.choice(valid)[:-1])[:-4], rng)
            inputs[i] = cobs_encode(raw + struct.pack("<I", zlib.crc32(raw))) + b"\x00"
        ok, bad = assert_only_decode_errors(decode_frame, iter(inputs))
        assert ok + bad == FUZZ_N and ok > 1000 and bad > 10_000
        ok, bad = assert_only_decode_errors(cobs_decode, (rng.randbytes(rng.randint(0, 40)) for _ in range(FUZZ_N)))
        assert ok + bad == FUZZ_N

    def test_cyton_single_packets(self) -> None:
        rng = random.Random(105)
        valid = [encode_cyton_packet(i, [rng.randint(-(2**23), 2**23 - 1) for _ in range(8)]) for i in range(20)]
        inputs = fuzz_inputs(valid, rng, FUZZ_N, 40)
        ok, bad = assert_only_decode_errors(decode_cyton_packet, inputs)
        assert ok + bad == FUZZ_N and ok > 1000 and bad > 1000

    def test_stream_decoders_never_raise(self) -> None:
        """>= 100 000 chunks each: random bytes, valid stream pieces, mutated pieces. Nothing may escape,
        and each decoder still decodes a clean stream perfectly afterwards."""
        rng = random.Random(106)
        nrng = np.random.default_rng(106)
        cyton_clean, _ = cyton_stream([i % 256 for i in range(300)], nrng)
        framed_clean = info_wire() + b"".join(data_wire(s, 10 * (s - 1)) for s in range(1, 40))
        ascii_clean = b"t_ms,a,b\n" + b"".join(f"{i},{i % 7},{-i}\n".encode() for i in range(400))
        decoders: list[tuple[Callable[[], object], bytes]] = [
            (lambda: CytonDecoder(), cyton_clean),
            (lambda: CytonDecoder(daisy=True, gains=[24] * 16), cyton_clean),
            (lambda: FramedDecoder(), framed_clean),
            (lambda: AsciiLineDecoder(), ascii_clean),
        ]
        for make, clean in decoders:
            decoder = make()
            fed = 0
            while fed < FUZZ_N:
                kind = rng.randrange(3)
                if kind == 0:
                    chunk = rng.randbytes(rng.randint(0, 64))
                else:
                    start = rng.randrange(len(clean))
                    chunk = clean[start : start + rng.randint(1, 200)]
                    if kind == 2:
                        chunk = mutate(chunk, rng)
                decoder.feed(chunk)  # type: ignore[attr-defined]
                fed += 1
            assert fed >= FUZZ_N
            # Recovery: after the storm, a clean stream (after a delimiter/newline) decodes in full.
            if isinstance(decoder, CytonDecoder):
                decoder.reset()
                before = decoder.counters.samples
                got = sum(len(decoder.feed(c)) for c in pieces(cyton_clean, 50, rng))
                # counters 0..255, 0..43: with the Daisy, 0 is an orphan, (1,2)...(255,0)...(41,42) pair up
                assert decoder.counters.samples - before == got == (149 if decoder.daisy else 300)
                assert len(decoder._buf) < 2 * cyton.PACKET_SIZE
            elif isinstance(decoder, FramedDecoder):
                decoder.reset()
                assert len(decoder._buf) <= framed.MAX_ENCODED
                msgs = [m for c in pieces(b"\x00" + framed_clean, 50, rng) for m in decoder.feed(c)]
                assert len(msgs) == 40
            else:
                assert isinstance(decoder, AsciiLineDecoder) and len(decoder._buf) <= framed.MAX_LINE
                fresh = AsciiLineDecoder()
                assert len(fresh.feed(ascii_clean)) == 400

    # ---- hypothesis: the same properties, with shrinking ----

    @LIGHT
    @given(st.binary(max_size=40))
    def test_hypothesis_hrs(self, data: bytes) -> None:
        with contextlib.suppress(DecodeError):
            decode_hrs(data)

    @LIGHT
    @given(st.sampled_from([0, 1, 2, 3, 7]), st.integers(0, 255), st.binary(max_size=200))
    def test_hypothesis_pmd(self, mtype: int, ftype: int, payload: bytes) -> None:
        with contextlib.suppress(DecodeError):
            decode_pmd_frame(pmd_header(mtype, 1, ftype) + payload)

    @LIGHT
    @given(st.binary(max_size=200))
    def test_hypothesis_framed(self, data: bytes) -> None:
        for candidate in (data, cobs_encode(data + struct.pack("<I", zlib.crc32(data)))):
            with contextlib.suppress(DecodeError):
                decode_frame(candidate)

    @LIGHT
    @given(st.lists(st.binary(max_size=80), max_size=12))
    def test_hypothesis_stream_decoders(self, chunks: list[bytes]) -> None:
        for decoder in (CytonDecoder(), CytonDecoder(daisy=True), FramedDecoder(), AsciiLineDecoder()):
            for chunk in chunks:
                decoder.feed(chunk)


def test_sanity_of_fuzz_helpers() -> None:
    """The mutator really mutates (else the fuzzing above would be hollow)."""
    rng = random.Random(0)
    base = bytes(range(64))
    assert sum(mutate(base, rng) != base for _ in range(1000)) > 990
    assert math.isclose(sum(1 for _ in fuzz_inputs([base], rng, 1000, 10)), 1000)
