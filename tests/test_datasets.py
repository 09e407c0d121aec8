"""Dataset loaders (models.datasets) on the real files here and on small files written in each native format.

Where the real data set cannot be on these machines (raw Sleep-EDF, SHHS/MESA, DREAMT, SlumberNet), the
test writes a file the way the data set stores it (EDF+ through edged's own writer, NSRR XML, DREAMT CSV,
SlumberNet text) with a known hypnogram, and checks the loader returns exactly those epochs, aligned with
the signal; malformed files must fail with a message naming the file and what is wrong.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

from edged.errors import RecordingError
from edged.sources.readers.edf import write_edf
from edged.sources.recording import Recording, SignalTrack
from models.datasets import (
    UNSCORED,
    data_root,
    dreamt,
    mouse,
    nsrr,
    sleepedf,
    slpdb,
    stage_labels,
)

DATA = data_root()
START = datetime(1989, 4, 24, 16, 13, tzinfo=timezone.utc).timestamp()
W, N1, N2, N3, REM, U = 0, 1, 2, 3, 4, UNSCORED


def _epoch_coded(n_epochs: int, fs: float, epoch: float = 30.0) -> np.ndarray:
    """A signal whose value is its epoch's index (plus a small ripple), so alignment can be read back."""
    t = np.arange(round(n_epochs * epoch * fs)) / fs
    return (t // epoch) + 0.1 * np.sin(2 * np.pi * 0.7 * t)


# ----------------------------------------------------------------------------------------------- slpdb


def test_slpdb_real_records_subjects_and_stages() -> None:
    nights = slpdb.load_nights(DATA / "ibi-sleep-slpdb")
    assert len(nights) == 15
    by_record = {n.record: n for n in nights}
    assert len({n.subject for n in nights}) == 13
    assert by_record["slp01a"].subject == by_record["slp01b"].subject == "slp01"
    from models.ibi.data import (
        load_night,  # the shipped model's own reading: same epochs, same classes
    )

    ibi_night = load_night(DATA / "ibi-sleep-slpdb" / "slp61.rr")
    night = by_record["slp61"]
    np.testing.assert_array_equal(night.labels, ibi_night.labels)
    assert night.classes == ("W", "NREM", "REM") and set(np.unique(night.labels)) <= {U, 0, 1, 2}
    assert np.all(np.diff(night.beats) > 0)
    assert night.beats[-1] == pytest.approx(night.n_epochs * 30.0, abs=60.0)
    five = slpdb.load_night(DATA / "ibi-sleep-slpdb" / "slp61.rr", scheme="5-stage")
    assert set(np.unique(five.labels)) > {0, 1, 2}  # N1/N2/N3 kept apart
    np.testing.assert_array_equal(five.labels == U, night.labels == U)


def test_stage_labels_refuse_a_stage_the_scheme_lacks() -> None:
    assert stage_labels(["W", None, "N3", "REM"], "4-stage").tolist() == [0, U, 2, 3]
    with pytest.raises(ValueError, match="'N1'.*mouse"):
        stage_labels(["W", "N1"], "mouse")
    with pytest.raises(ValueError, match="unknown class scheme"):
        stage_labels(["W"], "7-stage")


# -------------------------------------------------------------------------------------------- Sleep-EDF

# 240 epochs (2 h): 80 wake, 80 scored with every R&K label, 80 wake; the hypnogram runs 10 min past the PSG.
SLEEP_EDF_SCORING = [
    (0, 80, "Sleep stage W"), (80, 90, "Sleep stage 1"), (90, 110, "Sleep stage 2"), (110, 115, "Sleep stage 3"),
    (115, 120, "Sleep stage 4"), (120, 121, "Movement time"), (121, 140, "Sleep stage R"),
    (140, 142, "Sleep stage ?"), (142, 160, "Sleep stage 2"), (160, 240, "Sleep stage W"), (240, 260, "Sleep stage ?"),
]


def _expected_sleep_edf() -> np.ndarray:
    code = {"W": W, "1": N1, "2": N2, "3": N3, "4": N3, "R": REM, "?": U}
    out = np.empty(240, dtype=np.int64)
    for a, b, text in SLEEP_EDF_SCORING:
        if a < 240:
            out[a:b] = U if text == "Movement time" else code[text.rsplit(" ", 1)[1]]
    return out


def _write_sleep_edf(folder: Path, *, hyp_start: float = START, scoring=SLEEP_EDF_SCORING) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    psg = folder / "SC4012E0-PSG.edf"
    eeg = _epoch_coded(240, 100.0)
    signals = {
        "EEG Fpz-Cz": SignalTrack(eeg, 100.0, "uV"),
        "EEG Pz-Oz": SignalTrack(-eeg, 100.0, "uV"),
        "EOG horizontal": SignalTrack(eeg * 2, 100.0, "uV"),
        "EMG submental": SignalTrack(_epoch_coded(240, 1.0), 1.0, "uV"),
    }
    write_edf(psg, Recording(path=str(psg), signals=signals, start_time=START))
    annotations = [(a * 30.0, (b - a) * 30.0, text) for a, b, text in scoring]
    hyp = folder / "SC4012EC-Hypnogram.edf"
    write_edf(hyp, Recording(path=str(hyp), start_time=hyp_start), annotations)
    return psg


def test_sleep_edf_night_is_cropped_labelled_and_aligned(tmp_path: Path) -> None:
    psg = _write_sleep_edf(tmp_path)
    night = sleepedf.load_night(psg)
    assert (night.subject, night.record, night.dataset) == ("SC401", "SC4012E0", "sleep-edf")
    assert night.classes == ("W", "N1", "N2", "N3", "REM")
    # Sleep runs from epoch 80 to 159: 30 min (60 epochs) kept on either side.
    np.testing.assert_array_equal(night.labels, _expected_sleep_edf()[20:220])
    assert night.start_seconds == 20 * 30.0
    assert list(night.signals) == list(sleepedf.CHANNELS)
    fs, emg = night.signals["EMG submental"]
    assert fs == 1.0 and len(emg) == 200 * 30
    # Each epoch's samples are the ones recorded during that epoch.
    means = np.nanmean(night.epoch_samples("EEG Fpz-Cz"), axis=1)
    np.testing.assert_allclose(means, np.arange(20, 220), atol=0.01)

    whole = sleepedf.load_night(psg, crop_minutes=None, scheme="3-stage", channels=None)
    assert whole.n_epochs == 240  # the hypnogram's tail past the recording is dropped
    assert whole.classes == ("W", "NREM", "REM") and whole.labels[115] == 1 and whole.labels[125] == 2
    assert len(whole.signals) == 4


def test_sleep_edf_subject_ids_of_the_real_feature_files() -> None:
    names = sorted(p.name for p in (DATA / "eeg-features-sleepedf").glob("SC4*.npz"))
    ids = [sleepedf.subject_of(n) for n in names]
    assert len(names) == 16 and len({s for s, _ in ids}) == 8
    assert sleepedf.subject_of("SC4001E0.npz") == ("SC400", 1) == sleepedf.subject_of("SC4001EC-Hypnogram.edf")
    assert sleepedf.subject_of("ST7022J0-PSG.edf") == ("ST702", 2)


def test_sleep_edf_malformed_inputs_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(RecordingError, match="not a Sleep-EDF file name"):
        sleepedf.subject_of("night1-PSG.edf")
    psg = _write_sleep_edf(tmp_path / "shifted", hyp_start=START + 10)
    with pytest.raises(RecordingError, match=r"Hypnogram\.edf: starts \+10\.0 s from its PSG"):
        sleepedf.load_night(psg)
    psg = _write_sleep_edf(tmp_path / "nostages", scoring=[(0, 240, "Lights off")])
    with pytest.raises(RecordingError, match="no 'Sleep stage ...' annotations"):
        sleepedf.load_night(psg)
    psg = _write_sleep_edf(tmp_path / "awake", scoring=[(0, 240, "Sleep stage W")])
    with pytest.raises(RecordingError, match="no sleep epoch to crop around"):
        sleepedf.load_night(psg)
    psg = _write_sleep_edf(tmp_path / "ok")
    with pytest.raises(RecordingError, match="no channel 'EEG C3'"):
        sleepedf.load_night(psg, channels=["EEG C3"])
    (tmp_path / "ok" / "SC4012EC-Hypnogram.edf").unlink()
    with pytest.raises(RecordingError, match="no hypnogram files SC4012"):
        sleepedf.load_night(psg)
    (tmp_path / "ok" / "SC4012EC-Hypnogram.edf").write_bytes(b"0       " + b"x" * 100)
    with pytest.raises(RecordingError, match="truncated"):
        sleepedf.load_night(psg)


# --------------------------------------------------------------------------------------------- NSRR

NSRR_STAGES = [(0, 4, "Wake|0"), (4, 6, "Stage 1 sleep|1"), (6, 10, "Stage 2 sleep|2"), (10, 12, "Stage 3 sleep|3"),
               (12, 13, "Stage 4 sleep|4"), (13, 16, "REM sleep|5"), (16, 17, "Unscored|9"), (17, 20, "Wake|0")]


def _nsrr_xml(stages=NSRR_STAGES, *, extra: str = "") -> str:
    def event(kind: str, concept: str, start: float, duration: float) -> str:
        return (f"<ScoredEvent><EventType>{kind}</EventType><EventConcept>{concept}</EventConcept>"
                f"<Start>{start}</Start><Duration>{duration}</Duration></ScoredEvent>\n")

    body = event("", "Recording Start Time", 0, 36000.0)
    body += event("Respiratory|Respiratory", "SpO2 desaturation|SpO2 desaturation", 200.5, 14.2)
    body += "".join(event("Stages|Stages", c, a * 30.0, (b - a) * 30.0) for a, b, c in stages)
    return ('<?xml version="1.0" encoding="UTF-8" standalone="no"?>\n<PSGAnnotation>\n'
            "<SoftwareVersion>Compumedics</SoftwareVersion><EpochLength>30</EpochLength>\n"
            f"<ScoredEvents>\n{body}{extra}</ScoredEvents>\n</PSGAnnotation>\n")


def _write_nsrr(folder: Path, name: str = "shhs1-200077", xml: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    edf = folder / f"{name}.edf"
    signals = {"ECG": SignalTrack(_epoch_coded(20, 125.0), 125.0, "mV"),
               "THOR RES": SignalTrack(np.sin(np.arange(20 * 30 * 10) / 10.0), 10.0, "")}
    write_edf(edf, Recording(path=str(edf), signals=signals, start_time=START))
    (folder / f"{name}-nsrr.xml").write_text(_nsrr_xml() if xml is None else xml)
    return edf


def test_nsrr_night_from_edf_and_xml(tmp_path: Path) -> None:
    edf = _write_nsrr(tmp_path)
    night = nsrr.load_night(edf)
    assert (night.dataset, night.subject, night.record) == ("shhs", "shhs-200077", "shhs1-200077")
    expected = [W] * 4 + [N1] * 2 + [N2] * 4 + [N3] * 3 + [REM] * 3 + [U] + [W] * 3
    np.testing.assert_array_equal(night.labels, expected)
    assert set(night.signals) == {"ECG", "THOR RES"} and night.signals["ECG"][0] == 125.0
    np.testing.assert_allclose(np.nanmean(night.epoch_samples("ECG"), axis=1), np.arange(20), atol=0.01)
    three = nsrr.load_night(edf, channels=["ECG"], scheme="3-stage")
    assert three.labels.tolist() == [0] * 4 + [1] * 9 + [2] * 3 + [U] + [0] * 3
    assert nsrr.subject_of("shhs2-200077.edf") == night.subject  # both visits: one subject
    assert nsrr.subject_of("mesa-sleep-0042-nsrr.xml") == "mesa-0042"


@pytest.mark.parametrize(
    ("xml", "message"),
    [
        (_nsrr_xml()[:-40], r"-nsrr\.xml:\d+:\d+: not well-formed XML"),
        (_nsrr_xml([]), "no ScoredEvent of type 'Stages|Stages'"),
        (_nsrr_xml(extra="<ScoredEvent><EventType>Stages|Stages</EventType><EventConcept>Wake|0</EventConcept>"
                         "<Duration>30</Duration></ScoredEvent>"), r"ScoredEvent \d+ \(Wake\|0\): Start None"),
        (_nsrr_xml(extra="<ScoredEvent><EventType>Stages|Stages</EventType><EventConcept>Wake</EventConcept>"
                         "<Start>0</Start><Duration>30</Duration></ScoredEvent>"), "is not '<name>|<code>'"),
        (_nsrr_xml([(0, 1, "Wake|0")]).replace("<Start>0.0</Start><Duration>30.0", "<Start>7.5</Start><Duration>30.0"),
         "not on the 30-s epoch grid"),
        ("<html><body/></html>", "not an NSRR annotation file"),
    ],
)
def test_nsrr_malformed_annotations(tmp_path: Path, xml: str, message: str) -> None:
    edf = _write_nsrr(tmp_path, xml=xml)
    with pytest.raises(RecordingError, match=message):
        nsrr.load_night(edf)


# -------------------------------------------------------------------------------------------- DREAMT


def _dreamt_csv(path: Path, stages: list[str], *, tail_rows: int = 100, edit=None) -> Path:
    per = 30 * 64
    n = len(stages) * per + tail_rows
    t = np.arange(n) / 64.0
    labels = [stages[min(i // per, len(stages) - 1)] for i in range(n)]
    header = ("TIMESTAMP,BVP,ACC_X,ACC_Y,ACC_Z,TEMP,EDA,HR,IBI,Sleep_Stage,Obstructive_Apnea,Central_Apnea,"
              "Hypopnea,Multiple_Events")
    rows = [header]
    for i in range(n):
        ibi = "0.81" if i % 50 == 0 else ""
        rows.append(f"{t[i]:.6f},{(i // per) + 0.01 * np.sin(i / 9):.4f},12,-60,8,33.1,0.21,71.5,{ibi},{labels[i]},"
                    ",,,")
    if edit is not None:
        edit(rows)
    path.write_text("\n".join(rows) + "\n")
    return path


def test_dreamt_csv_night(tmp_path: Path) -> None:
    stages = ["P", "P", "W", "N1", "N2", "N3", "R", "Missing", "W"]
    path = _dreamt_csv(tmp_path / "S002_whole_df.csv", stages)
    night = dreamt.load_night(path)
    assert (night.dataset, night.subject) == ("dreamt", "S002")
    np.testing.assert_array_equal(night.labels, [U, U, W, N1, N2, N3, REM, U, W])  # the partial tail is dropped
    assert set(night.signals) == set(dreamt.SIGNALS)
    assert night.signals["BVP"][0] == 64.0
    np.testing.assert_allclose(np.mean(night.epoch_samples("BVP"), axis=1), np.arange(9), atol=0.01)
    assert night.signals["HR"][1][0] == 71.5
    assert dreamt.load_nights(tmp_path, scheme="3-stage")[0].labels.tolist() == [U, U, 0, 1, 1, 1, 2, U, 0]


def _replace_row(k: int, old: str, new: str):
    def edit(rows: list[str]) -> None:
        rows[k] = rows[k].replace(old, new, 1)

    return edit


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_replace_row(0, "Sleep_Stage", "Stage"), "no column 'Sleep_Stage'"),
        (_replace_row(2000, ",N1,", ",S1,"), r"S009_whole_df\.csv:2001: Sleep_Stage 'S1' is not one of"),
        (_replace_row(11, ",12,", ",twelve,"), r":12: column 'ACC_X' is not a number: 'twelve'"),
        (_replace_row(31, "0.468750,", "0.500000,"), r":32: TIMESTAMP steps from 0.453125 to 0.5 s"),
    ],
)
def test_dreamt_malformed_csv(tmp_path: Path, edit, message: str) -> None:
    path = _dreamt_csv(tmp_path / "S009_whole_df.csv", ["W", "N1"], edit=edit)
    with pytest.raises(RecordingError, match=message):
        dreamt.load_night(path)


def test_dreamt_rejects_a_file_that_is_not_dreamt(tmp_path: Path) -> None:
    with pytest.raises(RecordingError, match="not a DREAMT file name"):
        dreamt.load_night(tmp_path / "night.csv")
    with pytest.raises(RecordingError, match="recording not found"):
        dreamt.load_night(tmp_path / "S001_whole_df.csv")


# --------------------------------------------------------------------------------------------- mouse


def _slumbernet_pair(folder: Path, stages: list[str], *, score_rows=None) -> Path:
    per = 4 * 256
    sig = folder / "m3_baseline-256Hz.txt"
    idx = np.arange(len(stages) * per)
    data = np.column_stack((idx // per + 0.001 * np.sin(idx), -(idx // per) * 0.5))
    np.savetxt(sig, data, fmt="%.6f", delimiter="\t")
    header = [f"header line {i}" for i in range(19)]
    rows = score_rows or [f"05/03/2023 07:{k // 15:02d}:{(k * 4) % 60:02d},{k + 1},{s},0," for k, s in enumerate(stages)]
    (folder / "m3_baseline-256Hz_sco.txt").write_text("\n".join(header + rows) + "\n")
    return sig


def test_slumbernet_pair(tmp_path: Path) -> None:
    sig = _slumbernet_pair(tmp_path, ["W", "W", "N", "N", "A", "R", "R", "W"])
    night = mouse.load_slumbernet(sig, mouse="m3")
    assert night.classes == ("W", "NREM", "REM") and night.epoch_seconds == 4.0
    np.testing.assert_array_equal(night.labels, [0, 0, 1, 1, U, 2, 2, 0])
    fs, eeg = night.signals["eeg"]
    assert fs == 256.0 and len(eeg) == 8 * 1024
    np.testing.assert_allclose(np.mean(night.epoch_samples("eeg"), axis=1), np.arange(8), atol=0.01)
    np.testing.assert_allclose(night.epoch_samples("emg")[:, 0], -0.5 * np.arange(8))


def test_slumbernet_malformed(tmp_path: Path) -> None:
    sig = _slumbernet_pair(tmp_path, ["W", "N"], score_rows=["05/03/2023 07:00:00,1,W,0,", "05/03/2023 07:00:04,3,N,0,"])
    with pytest.raises(RecordingError, match=r"_sco\.txt:21: epoch 3 out of sequence \(expected 2\)"):
        mouse.load_slumbernet(sig)
    sig.write_text("0.1\t0.2\n0.3\tx\n")
    (tmp_path / "m3_baseline-256Hz_sco.txt").write_text("h\n05/03/2023 07:00:00,1,W,0,\n")
    with pytest.raises(RecordingError, match="expected two numeric columns"):
        mouse.load_slumbernet(sig)


def test_misleep_real_recording_and_state_file(tmp_path: Path) -> None:
    folder = DATA / "mouse-eeg-emg"
    night = mouse.load_misleep(folder / "10mins_example_mat.mat", mouse="example")
    assert set(night.signals) == {"EEG_P", "EMG_DIFF"}
    assert night.signals["EEG_P"][0] == 305.0 and len(night.signals["EEG_P"][1]) == 150 * 4 * 305
    assert night.n_epochs == 150 and np.all(night.labels == U)  # no scoring exists for this recording
    seconds, fs = mouse.read_misleep_states(folder / "20240117_female2_nf_annotation.txt")
    assert fs == 305.0 and len(seconds) == 86450  # 24 h scored second by second, bouts back to back
    assert seconds[:688] == ["W"] * 688 and seconds[688] == "NREM"
    # That state file belongs to another (24-h) recording: pairing it with the 10-min one is refused.
    with pytest.raises(RecordingError, match="not the same recording"):
        mouse.load_misleep(folder / "10mins_example_mat.mat", folder / "20240117_female2_nf_annotation.txt")

    # A state file for the 10-min recording, in MiSleep's layout: bout boundaries off the 4-s grid.
    bouts = [(0, 9, 3, "Wake"), (10, 301, 1, "NREM"), (302, 399, 2, "REM"), (400, 599, 3, "Wake")]
    lines = ["READ ONLY! DO NOT EDIT!", "4-INIT 3-Wake 2-REM 1-NREM", "Sampling rate: 305",
             "==========Marker==========", "==========Start-End==========", "==========Sleep state=========="]
    lines += [f"04:07:12:{a % 60:02d}, {a}, 1, 04:07:12:{b % 60:02d}, {b}, 0, {c}, {n}" for a, b, c, n in bouts]
    states = tmp_path / "example_annotation.txt"
    states.write_text("\n".join(lines) + "\n")
    night = mouse.load_misleep(folder / "10mins_example_mat.mat", states)
    expected = [0, 0, U] + [1] * 72 + [U] + [2] * 24 + [0] * 50  # epochs 2 (8-11 s) and 75 (300-303 s) mixed
    np.testing.assert_array_equal(night.labels, expected)

    states.write_text("\n".join(lines[:6] + ["04:07:12:00, 0, 1, 04:07:12:09, 9, 0, 7, Dream"]) + "\n")
    with pytest.raises(RecordingError, match=r"annotation\.txt:7: state code 7"):
        mouse.load_misleep(folder / "10mins_example_mat.mat", states)
    with pytest.raises(RecordingError, match="not a MATLAB .mat file|no struct 'data'"):
        mouse.read_misleep_mat(states)
