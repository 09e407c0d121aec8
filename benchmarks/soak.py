"""Soak: an 8-hour night on 8 devices at high speed through the real daemon, its journal and a real broker,
with the daemon's memory and open files sampled all along.

Prints figures; asserts nothing. What runs:

* 8 replay devices, each an 8-h real recording from ../shared/data: the first 8 h of beat-to-beat RR of
  MMASH users 1-6 (Polar H7 straps, their dropouts included), one slpdb night (slp45, RR from the ECG;
  the whole 6.3-h night, so it ends first) and MIT-BIH record 100's raw 360-Hz ECG repeated to 8 h
  (16 x 30 min), scored from streaming beat detection; all through the shipped IBI model;
* `edged run` as its own process with the journal on (SQLite WAL in a temporary state directory) and an
  embedded mosquitto on loopback; a subscriber in this process counts the stage messages (QoS 1);
* every ``--every`` seconds: the daemon's RSS (VmRSS), its open file descriptors (/proc/PID/fd), its
  threads, the journal's size on disk and the stage messages delivered so far.

"Growth after warm-up" compares the last sample taken while every device was still streaming with the
first sample after ``--warmup-hours`` of stream time (model sessions, caches and the journal's pages are
allocated by then). Goal: <= 5 MB and no descriptor growth.

Usage: nice -n 10 python benchmarks/soak.py [--speed 200] [--every 2] [--warmup-hours 1]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edged.sinks.broker import EmbeddedBroker  # noqa: E402
from edged.sources.readers import read_recording  # noqa: E402
from edged.sources.readers.physionet_rr import write_rr_text  # noqa: E402

DATA = REPO.parent / "shared" / "data"
NIGHT = 8 * 3600.0


def recordings(tmp: Path) -> list[tuple[str, Path, str]]:
    """(device name, recording, extra TOML) for the 8 devices."""
    out = []
    for user in range(1, 7):
        track = read_recording(DATA / "rr-24h-mmash" / f"user_{user}" / "RR.csv").rr["rr"]
        n = int(np.searchsorted(track.beat_times(), NIGHT)) - 1
        path = tmp / f"mmash_user{user}_8h.rr"
        write_rr_text(path, track.rr[:n], track.first_beat)
        out.append((f"mmash{user}", path, ""))
    out.append(("slp45", DATA / "ibi-sleep-slpdb" / "slp45.rr", ""))
    ecg = np.load(DATA / "ecg-mitbih" / "100.npz")
    fs = float(ecg["fs"])
    reps = int(np.ceil(NIGHT * fs / len(ecg["ecg_mV"])))
    path = tmp / "mitbih100_x16.npz"
    np.savez(path, ecg_mV=np.tile(ecg["ecg_mV"], reps)[: int(NIGHT * fs)].astype(np.float32), fs=fs)
    out.append(("ecg100", path, 'channels = { ibi = "ecg_mV" }\n'))
    return out


class Counter:
    """Stage messages delivered, once per id."""

    def __init__(self, port: int, topic: str) -> None:
        self.ids: set[str] = set()
        self.lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"soak-{os.getpid()}")
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(topic, qos=1)
        self.client.loop_start()

    def _on_message(self, client, userdata, msg) -> None:
        with self.lock:
            self.ids.add(json.loads(msg.payload)["id"])

    def count(self) -> int:
        with self.lock:
            return len(self.ids)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def sample(pid: int) -> tuple[float, int, int, float]:
    """(RSS in MB, open descriptors, threads, CPU seconds so far) of a process."""
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    fields = {line.split(":")[0]: line.split(":")[1].strip() for line in status if ":" in line}
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")
    return int(fields["VmRSS"].split()[0]) / 1024, len(os.listdir(f"/proc/{pid}/fd")), int(fields["Threads"]), cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--speed", type=float, default=200.0, help="times real time (default 200: 8 h in 144 s)")
    parser.add_argument("--every", type=float, default=2.0, help="seconds between samples")
    parser.add_argument("--warmup-hours", type=float, default=1.0, help="stream hours before growth is measured")
    parser.add_argument("--no-journal", action="store_true", help="[journal] enabled = false, for comparison")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores; python {sys.version.split()[0]}; speed {args.speed:g}x; "
          f"journal {'off' if args.no_journal else 'on'}")
    with tempfile.TemporaryDirectory() as tmpdir, EmbeddedBroker() as broker:
        tmp = Path(tmpdir)
        devices = recordings(tmp)
        state = tmp / "state"
        cfg = tmp / "soak.toml"
        cfg.write_text(f'[node]\nid = "soak"\nlog_level = "warning"\nstate_dir = "{state}"\n\n[mqtt]\n'
                       f'host = "127.0.0.1"\nport = {broker.port}\nbase_topic = "soak"\nembedded = "never"\n\n'
                       f'[journal]\nenabled = {"false" if args.no_journal else "true"}\n\n'
                       + "\n".join(f'[[devices]]\nname = "{name}"\ntype = "replay"\npath = "{path}"\n'
                                   f'speed = {args.speed}\nqueue_size = 4096\n{extra}'
                                   for name, path, extra in devices))
        counter = Counter(broker.port, "soak/+/+/stage")
        proc = subprocess.Popen([sys.executable, "-m", "edged.cli", "run", "--config", str(cfg), "--exit-when-done"],
                                cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        stderr: list[str] = []
        threading.Thread(target=lambda: stderr.extend(proc.stderr), daemon=True).start()
        samples: list[tuple[float, float, float, int, int, float, int]] = []
        t0 = None
        print(f"{'wall s':>7} {'stream h':>8} {'RSS MB':>7} {'fds':>4} {'threads':>7} {'journal MB':>10} {'stages':>7}")
        cpu = 0.0
        while proc.poll() is None:
            try:
                rss, fds, threads, cpu = sample(proc.pid)
            except (FileNotFoundError, ProcessLookupError):
                break
            delivered = counter.count()
            if t0 is None and delivered:
                t0 = time.monotonic()  # streaming began (start-up, model and recording loading are over)
            wall = time.monotonic() - t0 if t0 is not None else 0.0
            journal = sum(f.stat().st_size for f in state.glob("journal.sqlite3*")) / 1e6 if state.exists() else 0.0
            # Stream time from what was delivered (on a loaded machine the replay may lag its nominal speed).
            stream_h = delivered / len(devices) * 30 / 3600
            samples.append((wall, stream_h, rss, fds, threads, journal, delivered))
            print(f"{wall:7.1f} {stream_h:8.2f} {rss:7.1f} {fds:4d} {threads:7d} {journal:10.2f} {delivered:7d}",
                  flush=True)
            time.sleep(args.every)
        proc.wait()
        time.sleep(1.0)
        counter.close()
        if proc.returncode != 0:
            raise SystemExit(f"daemon failed ({proc.returncode}): {''.join(stderr)[-3000:]}")
        # Growth: from the first sample after warm-up to the last one while every device streamed (the
        # shortest night, slp45, ends at 6.3 h).
        shortest = min(read_recording(p).duration for _, p, _ in devices[6:7]) / 3600
        steady = [s for s in samples if args.warmup_hours <= s[1] <= shortest - 0.05]
        expected = sum(int(read_recording(p).duration // 30) for _, p, _ in devices)
        print(f"stage messages delivered: {counter.count()} (whole 30-s epochs in the recordings: about {expected})")
        print(f"daemon CPU at the last sample: {cpu:.1f} s (user+sys, start-up included)")
        if len(steady) >= 2:
            first, last = steady[0], steady[-1]
            peak = max(s[2] for s in steady)
            print(f"after warm-up ({first[1]:.2f} h -> {last[1]:.2f} h of stream, {len(steady)} samples): "
                  f"RSS {first[2]:.1f} -> {last[2]:.1f} MB (growth {last[2] - first[2]:+.1f} MB, peak {peak:.1f} MB); "
                  f"open fds {first[3]} -> {last[3]} (growth {last[3] - first[3]:+d}, "
                  f"max {max(s[3] for s in steady)}); "
                  f"threads {first[4]} -> {last[4]}")
            print(f"journal on disk at the end: {samples[-1][5]:.2f} MB")
        else:
            print("too few samples after warm-up: lower --speed or --every")
        warnings = [line.rstrip() for line in stderr if " WARNING " in line or " ERROR " in line]
        print(f"daemon warnings/errors: {len(warnings)}" + "".join(f"\n  {w}" for w in warnings[:10]))


if __name__ == "__main__":
    main()
