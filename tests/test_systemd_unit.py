"""systemd/edged.service: what the unit must declare, checked by systemd's own tools where they exist."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
UNIT = REPO / "systemd" / "edged.service"
INSTALLED_EDGED = "/opt/edged/.venv/bin/edged"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_systemd_analyze = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed (not a systemd system): the unit is "
    "still checked directive by directive")


def directives() -> dict[str, list[str]]:
    """Every ``Key=value`` of the unit as ``Section.Key -> [values in order]`` (keys may repeat)."""
    out: dict[str, list[str]] = {}
    section = ""
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.setdefault(f"{section}.{key}", []).append(value)
    return out


def one(d: dict[str, list[str]], key: str) -> str:
    values = d.get(key, [])
    assert len(values) == 1, f"{key}: expected exactly one value, got {values}"
    return values[0]


def test_unit_declares_notify_watchdog_restart_and_an_unprivileged_user():
    d = directives()
    assert one(d, "Service.Type") == "notify"
    assert one(d, "Service.NotifyAccess") == "main"  # the embedded mosquitto child may not notify
    assert re.fullmatch(r"\d+s?", one(d, "Service.WatchdogSec"))
    assert one(d, "Service.Restart") == "on-failure"
    assert one(d, "Service.User") not in ("", "root", "0")
    assert "dialout" in one(d, "Service.SupplementaryGroups").split()
    assert one(d, "Service.StateDirectory") == "edged"
    assert one(d, "Service.ExecStart") == f"{INSTALLED_EDGED} run --config /etc/edged/edged.toml"


def test_unit_is_hardened_without_closing_what_serial_ble_and_mqtt_need():
    d = directives()
    for key, value in {"ProtectSystem": "strict", "NoNewPrivileges": "yes", "PrivateTmp": "yes",
                       "ProtectHome": "yes", "DevicePolicy": "closed", "CapabilityBoundingSet": ""}.items():
        assert one(d, f"Service.{key}") == value, key
    # AF_UNIX for D-Bus/BlueZ and sd_notify, AF_INET(6) for the broker; bleak opens no Bluetooth socket.
    assert set(one(d, "Service.RestrictAddressFamilies").split()) == {"AF_UNIX", "AF_INET", "AF_INET6"}
    allowed = [v.split() for v in d["Service.DeviceAllow"]]
    assert {name for name, _ in allowed} >= {"char-ttyUSB", "char-ttyACM"}
    assert all(name.startswith("char-tty") and mode == "rw" for name, mode in allowed)  # serial ports only
    assert "PrivateDevices" not in str(d) and "PrivateNetwork" not in str(d)  # would hide ttys / the broker


def test_secrets_come_as_credentials_never_on_the_command_line():
    d = directives()
    credentials = dict(v.split(":", 1) for v in d["Service.LoadCredential"])
    assert set(credentials) == {"mqtt-password", "mqtt-client-key"}
    for key in ("Service.ExecStart", "Service.ExecStartPre"):
        assert "password" not in one(d, key) and ".key" not in one(d, key)
    example = (REPO / "systemd" / "edged.toml").read_text()
    assert 'password_file = "$CREDENTIALS_DIRECTORY/mqtt-password"' in example  # the names agree


def runnable_copy(tmp_path: Path) -> Path:
    """The unit as shipped, with the install path of edged replaced by this machine's edged, because
    `verify` insists that ExecStart= exists and is executable."""
    local = Path(sys.executable).with_name("edged")
    exe = str(local) if local.exists() else shutil.which("edged")
    assert exe, "the edged console script is not installed (pip install -e .)"
    copy = tmp_path / "edged.service"
    copy.write_text(UNIT.read_text().replace(INSTALLED_EDGED, exe))
    return copy


@needs_systemd_analyze
def test_systemd_analyze_verify_accepts_the_unit(tmp_path):
    result = subprocess.run([SYSTEMD_ANALYZE, "verify", str(runnable_copy(tmp_path))],
                            check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr  # an unknown or misspelt key is only a warning


@needs_systemd_analyze
def test_exposure_is_at_most_2_5_and_the_readme_states_it(tmp_path):
    result = subprocess.run([SYSTEMD_ANALYZE, "security", "--offline=true", str(UNIT)],
                            check=False, capture_output=True, text=True, timeout=60)
    match = re.search(r"Overall exposure level for edged\.service: (\d+\.\d)", result.stdout)
    assert match, result.stdout[-500:] + result.stderr
    exposure = float(match.group(1))
    assert exposure <= 2.5
    readme = (REPO / "README.md").read_text()
    assert f"exposure {match.group(1)}" in readme  # the README figure is the one measured here
    assert "systemd-analyze security --offline=true systemd/edged.service" in readme
