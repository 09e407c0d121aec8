"""Nearby Bluetooth LE devices, and which edged source type can read each (for ``edged devices``).

A scan only sees advertisements: a strap that advertises the Heart Rate Service (0x180D) is readable by
``ble-hrs``; a Polar sensor is recognised by Polar's company id or its name, but whether it offers PMD
streams (and which) is only certain after connecting, which ``probe=True`` does: it reads the GATT table
and the PMD control point's feature bitmap of every candidate (a few seconds each).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

from bleak import BleakClient, BleakScanner
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData

from edged.errors import SourceError
from edged.sources.ble_source import STREAMS, BleTransport, open_transport
from edged.sources.supervisor import describe
from firmware_bridge import polar_pmd as pmd
from firmware_bridge.hrs import HEART_RATE_SERVICE_UUID

log = logging.getLogger(__name__)

POLAR_COMPANY_ID = 0x006B
# Polar models with a PMD service (polar-ble-sdk's supported devices); the H9 and older straps have none.
PMD_MODELS = ("H10", "OH1", "Sense", "Verity")
PROBE_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class BleDeviceInfo:
    """One device heard during a scan.

    ``services``: advertised service UUIDs (all GATT services when probed). ``kinds``: edged source types
    that can read it. ``pmd_streams``: PMD streams it offers (probed only). ``probed``: whether ``kinds``
    was confirmed by connecting (otherwise a polar-pmd entry is inferred from the name)."""

    address: str
    name: str
    rssi: int | None
    services: tuple[str, ...]
    kinds: tuple[str, ...]
    pmd_streams: tuple[str, ...] = ()
    probed: bool = False
    error: str = ""

    def describe(self) -> str:
        kinds = ", ".join(self.kinds) or "not readable by edged"
        extra = f" (pmd: {', '.join(self.pmd_streams)})" if self.pmd_streams else ""
        how = "" if self.probed or not self.kinds else " [from its advertisement; --probe to confirm]"
        err = f" [probe failed: {self.error}]" if self.error else ""
        rssi = f"{self.rssi} dBm" if self.rssi is not None else "?"
        return f"{self.address}  {self.name or '(no name)'}  {rssi}  {kinds}{extra}{how}{err}"


def _kinds_from_advertisement(device: BLEDevice, adv: AdvertisementData) -> tuple[str, ...]:
    services = {u.lower() for u in adv.service_uuids}
    name = adv.local_name or device.name or ""
    kinds = []
    if HEART_RATE_SERVICE_UUID in services:
        kinds.append("ble-hrs")
    polar = POLAR_COMPANY_ID in adv.manufacturer_data or name.startswith("Polar ")
    if pmd.PMD_SERVICE_UUID in services or (polar and any(m in name.split() for m in PMD_MODELS)):
        kinds.append("polar-pmd")
    return tuple(kinds)


async def _probe(device: BLEDevice, info: BleDeviceInfo, transport: BleTransport) -> BleDeviceInfo:
    """Connect, read the GATT table (and PMD features); never raises."""
    try:
        async with asyncio.timeout(transport.host_seconds(PROBE_TIMEOUT)):
            async with BleakClient(device, backend=transport.client,
                                   timeout=transport.host_seconds(PROBE_TIMEOUT)) as client:
                services = tuple(s.uuid for s in client.services)
                kinds = []
                if HEART_RATE_SERVICE_UUID in services:
                    kinds.append("ble-hrs")
                streams: tuple[str, ...] = ()
                if pmd.PMD_SERVICE_UUID in services:
                    features = pmd.parse_features(await client.read_gatt_char(pmd.PMD_CONTROL_POINT_UUID))
                    streams = tuple(name for name, mtype in STREAMS.items() if mtype in features)
                    if streams:
                        kinds.append("polar-pmd")
        return BleDeviceInfo(info.address, info.name, info.rssi, services, tuple(kinds), streams, probed=True)
    except Exception as exc:  # one unreachable device must not spoil the listing
        return BleDeviceInfo(info.address, info.name, info.rssi, info.services, info.kinds, error=describe(exc))


async def scan_ble_devices(timeout: float = 5.0, *, backend: str = "", probe: bool = False,
                           base: Path | None = None) -> list[BleDeviceInfo]:
    """Scan for ``timeout`` seconds; strongest signal first. ``backend`` as in a BLE source's config
    (``""``: the platform's; ``"replay:<recording>"``: a replayed sensor). Raises :class:`SourceError`
    when Bluetooth itself is unavailable."""
    transport = open_transport(backend, base=base)
    try:
        found = await BleakScanner.discover(transport.host_seconds(timeout), return_adv=True,
                                            backend=transport.scanner)
    except Exception as exc:
        raise SourceError(f"Bluetooth LE scan failed ({describe(exc)}): is there an adapter, is BlueZ running "
                          "(systemctl status bluetooth) and the adapter powered (bluetoothctl power on)?") from None
    devices = []
    for device, adv in found.values():
        info = BleDeviceInfo(
            address=device.address,
            name=adv.local_name or device.name or "",
            rssi=adv.rssi,
            services=tuple(sorted(u.lower() for u in adv.service_uuids)),
            kinds=_kinds_from_advertisement(device, adv),
        )
        if probe and info.kinds:
            info = await _probe(device, info, transport)
        devices.append(info)
    devices.sort(key=lambda d: -(d.rssi if d.rssi is not None else -999))
    return devices


def list_ble_devices(timeout: float = 5.0, *, backend: str = "", probe: bool = False) -> list[BleDeviceInfo]:
    """Blocking form of :func:`scan_ble_devices`, for the command line."""
    return asyncio.run(scan_ble_devices(timeout, backend=backend, probe=probe))


def format_ble_devices(devices: list[BleDeviceInfo], timeout: float) -> str:
    """The listing for people: readable devices first, with the config keys to use."""
    if not devices:
        return (f"Bluetooth LE: nothing heard in {timeout:g} s. Wake the strap (wear it, or wet the "
                "electrodes); a strap connected to a phone or watch may not advertise.")
    readable = [d for d in devices if d.kinds]
    lines = [f"Bluetooth LE ({len(devices)} heard in {timeout:g} s, {len(readable)} readable by edged; "
             "use `type` and `address` in the config):"]
    lines += [f"  {d.describe()}" for d in readable]
    others = len(devices) - len(readable)
    if others:
        lines.append(f"  ... and {others} other device(s) edged cannot read")
    return "\n".join(lines)
