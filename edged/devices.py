"""``edged devices``: what edged could read on this machine, one function per kind of device.

Serial ports come from pyserial's ``serial.tools.list_ports`` (sysfs on Linux), with USB VID:PID, the
descriptions the USB device gives, and the stable ``/dev/serial/by-id/...`` path to put in the config
(``/dev/ttyUSB0`` may become ``ttyUSB1`` after a re-plug; the by-id path does not). Bluetooth LE devices
come from a scan (``edged.ble_scan.list_ble_devices``); a machine without Bluetooth still lists its serial
ports, and says why there is no Bluetooth list.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from edged.errors import EdgedError

log = logging.getLogger(__name__)

BY_ID = Path("/dev/serial/by-id")

# USB bridges and boards users plug in, so the listing can say what a port probably is.
_KNOWN_USB: dict[tuple[int, int | None], str] = {
    (0x0403, 0x6015): "FTDI FT231X: the OpenBCI USB dongle (protocol = \"cyton\")",
    (0x0403, None): "FTDI USB-serial bridge",
    (0x10C4, 0xEA60): "Silicon Labs CP210x bridge (ESP32 dev boards)",
    (0x1A86, 0x7523): "WCH CH340 bridge (Arduino clones)",
    (0x1A86, 0x55D4): "WCH CH9102 bridge (ESP32 dev boards)",
    (0x2341, None): "Arduino",
    (0x2E8A, None): "Raspberry Pi RP2040 (MicroPython: edged_board.py, protocol = \"framed\")",
    (0x303A, None): "Espressif ESP32 native USB",
    (0x239A, None): "Adafruit board",
}


@dataclass(frozen=True, slots=True)
class SerialPortInfo:
    device: str  # /dev/ttyUSB0
    stable_path: str | None  # /dev/serial/by-id/... when udev made one
    description: str
    vid: int | None
    pid: int | None
    serial_number: str | None
    manufacturer: str | None
    hint: str  # what it probably is, from the USB ids

    @property
    def usb_id(self) -> str:
        return f"{self.vid:04x}:{self.pid:04x}" if self.vid is not None and self.pid is not None else ""


def _stable_paths() -> dict[str, str]:
    """Real device path -> its /dev/serial/by-id link."""
    out: dict[str, str] = {}
    try:
        for link in sorted(BY_ID.iterdir()):
            out.setdefault(os.path.realpath(link), str(link))
    except OSError:
        pass  # no USB serial devices, or no udev (containers)
    return out


def _hint(vid: int | None, pid: int | None) -> str:
    if vid is None:
        return ""
    return _KNOWN_USB.get((vid, pid)) or _KNOWN_USB.get((vid, None), "")


def list_serial_ports() -> list[SerialPortInfo]:
    """Serial ports on this machine, USB ones first. Built-in UARTs with nothing behind them
    (``/dev/ttyS*`` with no description) are left out: every PC has dozens."""
    from serial.tools import list_ports  # pyserial is a dependency of the serial backend only

    stable = _stable_paths()
    ports = []
    for p in list_ports.comports():
        if p.vid is None and (not p.description or p.description == "n/a"):
            continue
        ports.append(SerialPortInfo(
            device=p.device, stable_path=stable.get(os.path.realpath(p.device)),
            description=p.description if p.description != "n/a" else "",
            vid=p.vid, pid=p.pid, serial_number=p.serial_number, manufacturer=p.manufacturer,
            hint=_hint(p.vid, p.pid),
        ))
    ports.sort(key=lambda q: (q.vid is None, q.device))
    return ports


def format_serial_ports(ports: list[SerialPortInfo]) -> str:
    if not ports:
        return ("Serial ports: none found. Plug the board in; on Linux check `dmesg | tail` and that your user "
                "is in the `dialout` group.")
    lines = ["Serial ports (use the by-id path as `port`: it survives re-plugging):"]
    for p in ports:
        lines.append(f"  {p.stable_path or p.device}")
        details = [p.device if p.stable_path else "", p.usb_id, p.description, p.manufacturer or "",
                   f"serial {p.serial_number}" if p.serial_number else ""]
        lines.append("      " + " | ".join(d for d in details if d))
        if p.hint:
            lines.append(f"      probably: {p.hint}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """``edged devices [--json] [--no-ble] [--ble-timeout S] [--probe]``: every kind of device edged can
    read, listed. Exit status 0 whatever was found (an empty list is an answer, not an error)."""
    serial_ports = list_serial_ports()
    ble: list = []
    ble_problem = ""
    timeout = float(getattr(args, "ble_timeout", 5.0))
    if not getattr(args, "no_ble", False):
        try:
            from edged.ble_scan import list_ble_devices  # bleak is only needed for this part
        except ImportError as exc:
            ble_problem = f"Bluetooth LE: not available ({exc})"
        else:
            try:
                ble = list_ble_devices(timeout, probe=bool(getattr(args, "probe", False)))
            except EdgedError as exc:
                ble_problem = f"Bluetooth LE: {exc}"
    if args.json:
        out: dict[str, object] = {"serial": [{**asdict(p), "usb_id": p.usb_id} for p in serial_ports]}
        if not getattr(args, "no_ble", False):
            out["ble"] = [asdict(d) for d in ble] if not ble_problem else {"error": ble_problem}
        print(json.dumps(out, indent=1))
        return 0
    print(format_serial_ports(serial_ports))
    if not getattr(args, "no_ble", False):
        from edged.ble_scan import format_ble_devices

        print()
        print(ble_problem or format_ble_devices(ble, timeout))
    return 0
