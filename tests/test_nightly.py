"""The morning report: scheduled and on-demand night summaries from a running daemon."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
from pathlib import Path

import pytest

from edged.config import parse_config
from edged.sinks.night import summarize
from edged.sinks.nightly import NightReporter, next_occurrence, parse_clock
from tests.conftest import expected_epochs, make_epoch, start_daemon

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "edged" / "data" / "demo" / "slp61.rr"


def test_next_occurrence_is_today_or_tomorrow():
    at = parse_clock("09:00")
    assert next_occurrence(at, dt.datetime(2026, 3, 1, 8, 59)) == dt.datetime(2026, 3, 1, 9, 0)
    assert next_occurrence(at, dt.datetime(2026, 3, 1, 9, 0)) == dt.datetime(2026, 3, 2, 9, 0)
    assert next_occurrence(at, dt.datetime(2026, 12, 31, 23, 0)) == dt.datetime(2027, 1, 1, 9, 0)
    with pytest.raises(ValueError, match="HH:MM"):
        parse_clock("nine")


def test_report_config_is_strict():
    with pytest.raises(Exception, match=r"x.toml:2: report.at"):
        parse_config('[report]\nat = "9h"\n', "x.toml")
    config = parse_config('[report]\nat = "06:30"\ndir = "nights"\n', "x.toml", Path("/etc/edged/x.toml"))
    assert config.report["at"] == "06:30" and config.report["enabled"] is True


def test_reporter_writes_publishes_and_starts_a_new_night(tmp_path):
    published = []
    reporter = NightReporter(tmp_path, at=parse_clock("09:00"), publish=lambda d, s: published.append((d, s)))
    for i in range(20):
        reporter.publish_stage(make_epoch(i, device="bed1"))
    for i in range(5):
        reporter.publish_stage(make_epoch(i, device="bed2", synthetic=True))
    now = dt.datetime(2026, 3, 2, 9, 0).timestamp()
    paths = reporter.report_all(now)
    assert [p.relative_to(tmp_path).as_posix() for p in paths] == ["bed1/2026-03-02.json", "bed2/2026-03-02.json"]
    assert (tmp_path / "bed1" / "2026-03-02.png").read_bytes()[:4] == b"\x89PNG"
    bed1 = json.loads(paths[0].read_text())
    assert bed1 == published[0][1]
    assert bed1["tst_minutes"] == 10.0 and bed1["stages"]["N2"]["minutes"] == 10.0
    assert published[1][1]["synthetic"] is True
    # The next report only covers what came after this one; nothing new -> nothing written.
    assert reporter.report_all(now + 60) == []
    reporter.publish_stage(make_epoch(20, device="bed1"))
    again = reporter.report_all(now + 120)
    assert [p.name for p in again] == ["2026-03-02_090200.json"]  # a second report that day keeps the first


def test_old_report_files_are_pruned(tmp_path):
    reporter = NightReporter(tmp_path, at=parse_clock("09:00"), keep_days=2)
    old = tmp_path / "bed1" / "2020-01-01.json"
    old.parent.mkdir()
    old.write_text("{}")
    os.utime(old, (0, 0))
    reporter.publish_stage(make_epoch(0, device="bed1"))
    reporter.report_all()
    assert not old.exists() and len(list((tmp_path / "bed1").glob("*.json"))) == 1


def test_sigusr1_makes_a_running_daemon_report_the_night(tmp_path, broker, subscribe, daemon_toml, topic_base):
    n = expected_epochs(DEMO)
    reports = tmp_path / "reports"
    config = tmp_path / "edged.toml"
    config.write_text(daemon_toml(
        f'[[devices]]\nname = "bed1"\ntype = "replay"\nmodel = "ibi-slpdb-causal-v1"\npath = "{DEMO}"\nspeed = 3000.0\n'
    ) + f'\n[report]\nat = "{(dt.datetime.now() + dt.timedelta(hours=12)).strftime("%H:%M")}"\ndir = "{reports}"\n')
    sub = subscribe(f"{topic_base}/e2e/bed1/#")
    daemon = start_daemon(config)
    try:
        sub.wait_for(lambda ms: sum(m.topic.endswith("/stage") for m in ms) >= n, timeout=120)
        daemon.send_signal(signal.SIGUSR1)
        messages = sub.wait_for(lambda ms: any(m.topic.endswith("/summary") for m in ms), timeout=60)
    finally:
        daemon.send_signal(signal.SIGTERM)
        stderr = daemon.communicate(timeout=30)[1]
    assert daemon.returncode == 0, stderr
    summary = next(m for m in messages if m.topic.endswith("/summary"))
    payload = summary.json()
    stages = [m.json()["stage"] for m in messages if m.topic.endswith("/stage")]
    expected = summarize(stages, 30.0, ("W", "NREM", "REM"))
    for key in ("tib_minutes", "tst_minutes", "sol_minutes", "waso_minutes", "awakenings", "stages"):
        assert payload[key] == expected[key], key
    assert payload["v"] == 1 and payload["node"] == "e2e" and payload["device"] == "bed1"
    assert payload["model"] == "ibi-slpdb-causal-v1" and "warning" not in payload
    saved = list((reports / "bed1").glob("*.json"))
    assert len(saved) == 1 and json.loads(saved[0].read_text())["tst_minutes"] == payload["tst_minutes"]
    assert saved[0].with_suffix(".png").stat().st_size > 10_000
    # Retained: a subscriber arriving now still gets the last summary.
    late = subscribe(f"{topic_base}/e2e/bed1/summary")
    got = late.wait_for(lambda ms: len(ms) >= 1, timeout=10)
    assert got[0].retain and got[0].json()["tst_minutes"] == payload["tst_minutes"]


def test_the_compact_night_store_gives_back_the_epochs_it_was_given(tmp_path):
    from dataclasses import replace

    from edged.sinks.nightly import MAX_NIGHT_HOURS

    published = []
    reporter = NightReporter(tmp_path, at=parse_clock("09:00"), publish=lambda d, s: published.append(s), png=False)
    given = [replace(make_epoch(i, session="s1" if i < 5 else "s2"), hr_bpm=None if i % 3 else 55.5,
                     quality_ok=i % 4 != 0, stage="REM" if i % 2 else "N2") for i in range(10)]
    for e in given:
        reporter.publish_stage(e)
    rebuilt = reporter._nights["strap"].epochs()
    strip = lambda e: replace(e, received=0.0, scored=0.0)  # noqa: E731  (monotonic stamps are not kept)
    assert [strip(e) for e in rebuilt] == [strip(e) for e in given]
    # Epochs older than the horizon are forgotten as newer ones arrive.
    late = make_epoch(int(MAX_NIGHT_HOURS * 120) + 5)
    reporter.publish_stage(late)
    kept = reporter._nights["strap"].epochs()
    assert [e.index for e in kept] == [6, 7, 8, 9, late.index]


def test_a_restart_in_the_night_takes_the_nights_epochs_back_from_the_journal(tmp_path):
    from dataclasses import replace

    from edged.sinks import contract
    from edged.sinks.journal import Journal
    from edged.sinks.night import summarize_epochs

    journal = Journal.open(tmp_path / "state")
    base = dt.datetime(2026, 3, 1, 23, 0).timestamp()
    night = [replace(make_epoch(i, device="bed1", anchor=base), stage="W" if i < 4 else "N2") for i in range(40)]
    other = make_epoch(0, device="gone", anchor=base)  # a device no longer in the config
    for e in [*night, other]:
        topic = contract.stage_topic("edged", "n", e.device)
        journal.put(topic, contract.encode(contract.stage_payload(e, "n")))
        journal.put(contract.counters_topic("edged", "n", e.device), b"{}")  # not a stage: ignored
    journal.close()

    # The daemon restarts: a new reporter, the same journal on disk.
    reopened = Journal.open(tmp_path / "state")
    reporter = NightReporter(tmp_path / "reports", at=parse_clock("09:00"), png=False)
    now = base + 3600 * 4
    restored = reporter.restore(reopened.recent("/stage", now - 36 * 3600), devices={"bed1"}, now=now)
    assert restored == 40
    (path,) = reporter.report_all(now)
    summary = json.loads(path.read_text())
    expected = summarize_epochs(night)
    for key in ("tib_minutes", "tst_minutes", "sol_minutes", "stages", "start", "end", "session"):
        assert summary[key] == expected[key], key

    # Restarted again after that report: what the report covered is not taken back a second time.
    again = NightReporter(tmp_path / "reports", at=parse_clock("09:00"), png=False)
    assert again.restore(reopened.recent("/stage", now - 36 * 3600), devices={"bed1"}, now=now) == 0
    reopened.close()
