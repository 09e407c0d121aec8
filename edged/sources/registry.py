"""Source backends by name, with each backend's typed options.

Options are declared here, not in the backend modules, so that validating a config never imports a
backend's dependencies (bleak, pyserial): a missing optional dependency fails when that backend is
started, with a message naming it, never at start-up of an unrelated device.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from edged.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Option:
    """One config key: its type, default (``REQUIRED`` when it has none) and what it means."""

    name: str
    type: type
    default: Any
    doc: str
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None


REQUIRED = object()


@dataclass(frozen=True, slots=True)
class Backend:
    name: str
    target: str  # "module:Class"
    doc: str
    options: tuple[Option, ...]

    def load(self) -> type:
        module_name, _, cls_name = self.target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ConfigError([f"source type {self.name!r} needs a package that is not installed: {exc}"]) from None
        return getattr(module, cls_name)


# Options every Bluetooth LE source shares. The advertised name is `ble_name`, not `name`: `name` is the
# device's own name in edged's topics.
_BLE_OPTIONS: tuple[Option, ...] = (
    Option("address", str, "", "Bluetooth address of the device (e.g. \"A0:9E:1A:12:34:56\"); "
           "this or `ble_name` is required."),
    Option("ble_name", str, "", "Advertised name of the device, or its beginning (\"Polar H10\" takes the "
           "first H10 found); used when `address` is empty."),
    Option("silence_seconds", float, 10.0, "No data for this long counts as a lost link (notifications can stop "
           "without any error): disconnect, rescan, reconnect.", minimum=0.1),
    Option("reconnect_min", float, 1.0, "First delay before reconnecting, in seconds; doubles per failed "
           "attempt, with jitter.", minimum=0.01),
    Option("reconnect_max", float, 60.0, "Longest delay between reconnect attempts, in seconds.", minimum=0.01),
    Option("scan_timeout", float, 10.0, "How long one scan looks for the device, in seconds.", minimum=0.1),
    Option("backend", str, "", "bleak backend: \"\" = the platform's (BlueZ on Linux); "
           "\"replay:<recording>[?speed=60&disconnect_after=600...]\" = a recording replayed as GATT "
           "notifications, no Bluetooth needed (see edged/sources/ble_replay.py). Durations above are then "
           "in recording seconds."),
)

BACKENDS: dict[str, Backend] = {
    backend.name: backend
    for backend in (
        Backend(
            name="replay",
            target="edged.sources.replay:ReplaySource",
            doc="Streams a recording file (EDF/EDF+, WFDB, CSV, NPZ, PhysioNet .rr) as if a device sent it.",
            options=(
                Option("path", str, REQUIRED, "Recording file. Relative paths are relative to the config file."),
                Option("speed", float, 1.0, "Playback speed: 1 = real time, 60 = a minute per second, "
                       "0 = as fast as the pipeline goes.", minimum=0.0),
                Option("chunk_seconds", float, 1.0, "Signal per chunk, like a device's notification interval.",
                       minimum=0.001),
                Option("fs", float, 0.0, "Sample rate for CSV files without a time column (0 = from the file).",
                       minimum=0.0),
            ),
        ),
        Backend(
            name="serial",
            target="edged.sources.serial_source:SerialSource",
            doc="A board on a serial port: OpenBCI Cyton, edged's framed protocol (firmware_bridge/PROTOCOL.md) "
                "or ASCII lines. Reconnects forever with backoff; losses become explicit gaps.",
            options=(
                Option("port", str, REQUIRED, "Serial device (/dev/ttyUSB0, /dev/serial/by-id/...; a stable "
                       "by-id path survives re-plugging) or a pyserial URL (socket://host:port, rfc2217://...)."),
                Option("protocol", str, REQUIRED, "Wire protocol.", choices=("cyton", "framed", "ascii")),
                Option("baudrate", int, 115200, "Baud rate (ignored by USB CDC boards).", minimum=1),
                Option("channel_names", list, [], "Channel names in wire order. Cyton: 8 names (default ch1..ch8); "
                       "framed: default from the board's INFO message; ascii: default from the header line, else "
                       "ch1..chN. Configured names (with fs) let edged start while the board is unplugged."),
                Option("fs", float, 0.0, "Sample rate in Hz: required for ascii; framed: default from the "
                       "DATA frames; Cyton: always 250.", minimum=0.0),
                Option("units", str, "", "Channel units when the board does not say (ascii; framed without "
                       "INFO units). Cyton channels are in uV."),
                Option("gain", int, 24, "Cyton PGA gain set on the board (scales counts to uV).",
                       choices=(1, 2, 4, 6, 8, 12, 24)),
                Option("silence_seconds", float, 5.0, "No valid data for this long counts as a disconnection: "
                       "the port is closed and reopened.", minimum=0.5),
                Option("reconnect_min", float, 1.0, "First reconnection delay in seconds; doubles per failed "
                       "attempt, with jitter.", minimum=0.01),
                Option("reconnect_max", float, 30.0, "Longest reconnection delay in seconds.", minimum=0.01),
            ),
        ),
        Backend(
            name="ble-hrs",
            target="edged.sources.ble_source:BleHeartRateSource",
            doc="A heart-rate strap or watch over Bluetooth LE (Heart Rate Service 0x180D: Polar H10/H9/OH1/"
                "Verity Sense, Garmin HR broadcast, Wahoo, Coospo...): RR intervals as channel `rr`. "
                "Reconnects by itself; lost spans become gaps.",
            options=_BLE_OPTIONS,
        ),
        Backend(
            name="polar-pmd",
            target="edged.sources.ble_source:BlePolarPmdSource",
            doc="A Polar Measurement Data stream over Bluetooth LE: H10 ECG (channel `ecg`, uV), Verity Sense/"
                "OH1 PPG (`ppg0` `ppg1` `ppg2` `ambient`) or PPI (`rr`, beat times from the sensor). "
                "Reconnects by itself; lost samples are counted from sensor timestamps and become gaps.",
            options=(
                Option("stream", str, "ecg", "Which PMD stream to start.", choices=("ecg", "ppg", "ppi")),
                Option("sample_rate", int, 0, "Sample rate to request (0 = 130 Hz for ecg, 135 Hz for ppg; "
                       "Verity Sense PPG: 55). Not used for ppi.", minimum=0),
                *_BLE_OPTIONS,
            ),
        ),
    )
}
