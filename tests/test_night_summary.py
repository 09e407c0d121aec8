"""The night summary against an independent computation (YASA) on a real hypnogram, its edge cases, and
the report files `edged replay --report` writes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from edged.sinks.night import epochs_to_night, summarize, summarize_epochs
from tests.conftest import make_epoch

ROOT = Path(__file__).resolve().parents[1]
HYPNO_6H = ROOT.parent / "shared" / "data" / "hypnograms" / "data_full_6hrs_100Hz_hypno_30s.txt"
FIVE = ("W", "N1", "N2", "N3", "REM")


def _real_night() -> list[str]:
    codes = np.loadtxt(HYPNO_6H).astype(int)
    return [FIVE[c] for c in codes]


def test_real_6h_hypnogram_matches_yasa_within_a_minute_and_a_percent():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import yasa

    night = _real_night()
    ours = summarize(night, 30.0, FIVE)
    yasa_names = {"W": "WAKE", "N1": "N1", "N2": "N2", "N3": "N3", "REM": "REM"}
    theirs = yasa.Hypnogram([yasa_names[s] for s in night], n_stages=5, freq="30s").sleep_statistics()

    minutes = {"tib_minutes": "TIB", "spt_minutes": "SPT", "tst_minutes": "TST", "waso_minutes": "WASO",
               "sol_minutes": "SOL"}
    for key, yasa_key in minutes.items():
        assert abs(ours[key] - float(theirs[yasa_key])) <= 1.0, key
    for stage in ("N1", "N2", "N3", "REM"):
        assert abs(ours["stages"][stage]["minutes"] - float(theirs[stage])) <= 1.0, stage
        assert abs(ours["stages"][stage]["percent_of_tst"] - float(theirs[f"%{stage}"])) <= 1.0, stage
    assert abs(ours["stages"]["W"]["minutes"] - float(theirs["WAKE"])) <= 1.0
    assert abs(ours["sleep_efficiency_percent"] - float(theirs["SE"])) <= 1.0
    assert abs(ours["sleep_maintenance_efficiency_percent"] - float(theirs["SME"])) <= 1.0
    assert abs(ours["latency_minutes"]["REM"] - float(theirs["Lat_REM"])) <= 1.0
    # The real night: 6 h in bed, a short latency, mostly N2; not a degenerate hypnogram.
    assert ours["tib_minutes"] == 360.0 and 300 < ours["tst_minutes"] < 360


def test_awakenings_count_wake_bouts_inside_the_sleep_period():
    night = _real_night()
    ours = summarize(night, 30.0, FIVE)
    # Independent count: wake runs in the text of the sleep period (first to last sleep epoch).
    text = "".join("w" if s == "W" else "s" for s in night)
    period = text[text.index("s"): text.rindex("s") + 1]
    assert ours["awakenings"] == len(re.findall("w+", period)) > 0
    longer = summarize(night, 30.0, FIVE, min_awakening_epochs=3)
    assert longer["awakenings"] == len([r for r in re.findall("w+", period) if len(r) >= 3])
    assert longer["awakenings"] < ours["awakenings"]


def test_hand_made_night_gives_the_textbook_numbers():
    # 10 min awake, 20 min NREM, 5 min awake, 10 min REM, 5 min awake: 30-s epochs.
    night = ["W"] * 20 + ["NREM"] * 40 + ["W"] * 10 + ["REM"] * 20 + ["W"] * 10
    s = summarize(night, 30.0, ("W", "NREM", "REM"))
    assert s["tib_minutes"] == 50.0
    assert s["sol_minutes"] == 10.0
    assert s["spt_minutes"] == 35.0
    assert s["tst_minutes"] == 30.0
    assert s["waso_minutes"] == 5.0
    assert s["awakenings"] == 1
    assert s["sleep_efficiency_percent"] == 60.0
    assert s["stages"]["REM"] == {"minutes": 10.0, "percent_of_tst": 33.33}
    assert s["stages"]["W"] == {"minutes": 20.0, "percent_of_tib": 40.0}
    assert s["latency_minutes"] == {"NREM": 10.0, "REM": 35.0}


def test_mouse_epochs_of_four_seconds_and_unscored_gaps():
    night = ["W"] * 15 + [None] * 15 + ["NREM"] * 30 + ["REM"] * 15
    s = summarize(night, 4.0, ("W", "NREM", "REM"))
    assert s["tib_minutes"] == 5.0
    assert s["unscored_minutes"] == 1.0
    assert s["tst_minutes"] == 3.0
    assert s["sol_minutes"] == 2.0  # the unscored minute counts as time in bed before sleep onset


def test_a_night_without_sleep_has_no_latency_and_no_efficiency_of_sleep():
    s = summarize(["W"] * 10, 30.0, ("W", "NREM", "REM"))
    assert s["tst_minutes"] == 0.0 and s["sleep_efficiency_percent"] == 0.0
    assert s["sol_minutes"] is None and s["waso_minutes"] is None and s["awakenings"] is None
    assert s["stages"]["NREM"]["percent_of_tst"] is None


def test_stages_outside_the_classes_are_refused():
    with pytest.raises(ValueError, match="N2"):
        summarize(["W", "N2"], 30.0, ("W", "NREM", "REM"))


def test_scored_epochs_are_placed_on_their_grid_and_gaps_become_unscored():
    epochs = [make_epoch(i) for i in (3, 4, 7)]
    stages, low = epochs_to_night(epochs)
    assert stages == ["N2", "N2", None, None, "N2"]
    s = summarize_epochs(epochs)
    assert s["device"] == "strap" and s["unscored_minutes"] == 1.0 and s["tib_minutes"] == 2.5
    assert s["start"] == epochs[0].start and s["end"] == epochs[-1].end


def test_replay_report_writes_html_png_and_json_with_the_reference_beside(tmp_path):
    rec = ROOT / "edged" / "data" / "demo" / "slp61.rr"
    html, png, js, ep = (tmp_path / n for n in ("night.html", "night.png", "night.json", "epochs.json"))
    out = subprocess.run(
        [sys.executable, "-m", "edged.cli", "replay", str(rec), "--report", str(html), "--report", str(png),
         "--report", str(js), "--json", str(ep)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    summary = json.loads(js.read_text())
    epochs = json.loads(ep.read_text())
    # The JSON summary is the summary of exactly the epochs the replay scored.
    stages = [e["stage"] for e in epochs]
    assert summary["epochs"] == len(stages)
    assert summary["stages"]["W"]["minutes"] == stages.count("W") * 0.5
    assert summary["model"] == "ibi-slpdb-causal-v1" and summary["synthetic"] is False
    assert f"total sleep {summary['tst_minutes']:.1f} min" in out.stdout

    page = html.read_text()
    assert "predicted (ibi-slpdb-causal-v1)" in page and "reference (recording" in page
    assert page.count("<svg") >= 3  # predicted, reference, probabilities
    assert "Cohen's kappa" in page and "id='confusion'" in page
    # Every predicted epoch is drawn once on the predicted track.
    predicted = page.split("<h3>predicted")[1].split("</svg>")[0]
    assert predicted.count("<rect") == len(stages)

    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width > 800 and height > 400


def test_replay_report_with_an_unknown_suffix_fails_with_one_line(tmp_path):
    rec = ROOT / "edged" / "data" / "demo" / "slp61.rr"
    out = subprocess.run([sys.executable, "-m", "edged.cli", "replay", str(rec), "--report", str(tmp_path / "x.pdf")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1].startswith("edged: error: --report")
    assert ".html, .png or .json" in out.stderr
