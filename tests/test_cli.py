"""The command line as a user runs it."""

import json
import subprocess
import sys


def edged(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edged.cli", *args], capture_output=True, text=True, timeout=60)


def test_devices_lists_serial_ports_as_json():
    result = edged("devices", "--json", "--no-ble")
    assert result.returncode == 0, result.stderr
    listing = json.loads(result.stdout)
    assert isinstance(listing["serial"], list) and "ble" not in listing


def test_devices_without_bluetooth_explains_instead_of_failing():
    result = edged("devices", "--ble-timeout", "1")
    assert result.returncode == 0 and "Traceback" not in result.stderr
    assert "Serial ports" in result.stdout and "Bluetooth LE" in result.stdout


def test_models_lists_the_shipped_model_with_its_inputs():
    result = edged("models")
    assert result.returncode == 0
    assert "ibi-slpdb-causal-v1: W/NREM/REM, 30-s epochs, 20 context, int8-static+float; inputs ibi (ibi @ 25 Hz)" in result.stdout


def test_replay_summarises_the_bundled_night_and_its_agreement():
    result = edged("replay", "edged/data/demo/slp61.rr")
    assert result.returncode == 0, result.stderr
    assert "scored 739 epochs (6.16 h) with model ibi-slpdb-causal-v1" in result.stdout
    assert "agreement with reference stages over 719 epochs" in result.stdout
