"""The streaming spine, measured: `edged run` on an 8-hour night and on many real-time streams.

Prints figures; asserts nothing. The daemon runs as its own process pinned to one core (so CPU and RSS are
the daemon's alone); mosquitto runs on loopback; the subscriber that checks delivery runs in this process.

1. One stream, as fast as it goes: 8 h of real beat-to-beat RR (MMASH user_1, a Polar H7 strap; the first
   8 h of its ~24-h recording, dropouts included) replayed as a heart-rate strap sends it (one notification
   per second of signal), scored by the shipped IBI model and published at QoS 1. Reports wall and CPU
   seconds, real-time factor, per-epoch latency p50/p99 (from the ``latency_ms`` the daemon puts in each
   stage message) and the daemon's peak RSS.
2. N streams at real speed: N replay devices (slpdb nights, speed 1, one notification a second each) in one
   daemon pinned to one core; CPU share over a steady window after start-up. The largest N found at or
   under 50 % of the core is reported.

Usage: python benchmarks/spine.py [--quick]   (--quick: shorter windows for the multi-stream search)
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
MMASH = DATA / "rr-24h-mmash" / "user_1" / "RR.csv"
SLPDB = sorted((DATA / "ibi-sleep-slpdb").glob("*.rr"))
CORE = 0


def eight_hour_night(directory: Path) -> tuple[Path, float]:
    track = read_recording(MMASH).rr["rr"]
    beats = track.beat_times()
    n = int(np.searchsorted(beats, 8 * 3600.0)) - 1
    path = directory / "mmash_user1_8h.rr"
    write_rr_text(path, track.rr[:n], track.first_beat)
    return path, float(beats[n])


class Collector:
    def __init__(self, port: int, topic: str):
        self.stage: list[dict] = []
        self.events: list[tuple[float, str, bytes]] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-{os.getpid()}")
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(topic, qos=1)
        self.client.loop_start()

    def _on_message(self, client, userdata, msg) -> None:
        now = time.perf_counter()
        with self.lock:
            if msg.topic.endswith("/stage"):
                self.stage.append(json.loads(msg.payload))
            else:
                self.events.append((now, msg.topic, bytes(msg.payload)))

    def first(self, suffix: str, payload: bytes) -> float | None:
        with self.lock:
            return next((t for t, topic, p in self.events if topic.endswith(suffix) and p == payload), None)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


MODEL = "ibi-slpdb-causal-v1"


def config_text(port: int, base: str, devices: list[tuple[str, Path, float]]) -> str:
    parts = [f'[node]\nid = "bench"\nlog_level = "warning"\n\n[mqtt]\nhost = "127.0.0.1"\nport = {port}\n'
             f'base_topic = "{base}"\nembedded = "never"\n']
    for name, path, speed in devices:
        parts.append(f'[[devices]]\nname = "{name}"\ntype = "replay"\npath = "{path}"\nspeed = {speed}\n'
                     f'model = "{MODEL}"\nqueue_size = 4096\n')
    return "\n".join(parts)


def start_daemon(cfg: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "edged.cli", "run", "--config", str(cfg), *extra],
                            cwd=REPO, preexec_fn=lambda: os.sched_setaffinity(0, {CORE}),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_stream(broker: EmbeddedBroker, tmp: Path) -> None:
    night, seconds = eight_hour_night(tmp)
    cfg = tmp / "one.toml"
    cfg.write_text(config_text(broker.port, "bench1", [("strap", night, 0.0)]))
    sub = Collector(broker.port, "bench1/#")
    t0 = time.perf_counter()
    proc = start_daemon(cfg, "--exit-when-done")
    _, status, usage = os.wait4(proc.pid, 0)
    wall_total = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    stderr = proc.stderr.read()
    time.sleep(0.5)
    sub.close()
    if proc.returncode != 0:
        raise SystemExit(f"daemon failed ({proc.returncode}): {stderr}")
    t_online = sub.first("/strap/availability", b"online")
    t_offline = sub.first("/strap/availability", b"offline")
    stream_wall = (t_offline - t_online) if t_online and t_offline else float("nan")
    cpu = usage.ru_utime + usage.ru_stime  # wait4 reports this child alone
    latency = np.array([s["latency_ms"] for s in sub.stage])
    expected = int(seconds // 30)
    print("1) one stream, 8 h of real RR (MMASH user_1, first 8 h) replayed as strap notifications, speed 0")
    print(f"   epochs published {len(sub.stage)} (night holds {expected} whole epochs), "
          f"in order: {[s['epoch'] for s in sub.stage] == list(range(len(sub.stage)))}")
    print(f"   streaming wall {stream_wall:.2f} s (first to last device message) -> real-time factor "
          f"{seconds / stream_wall:,.0f}x; whole process incl. start-up {wall_total:.2f} s "
          f"({seconds / wall_total:,.0f}x)")
    print(f"   daemon CPU {cpu:.2f} s (user+sys, whole process incl. start-up) -> {seconds / cpu:,.0f}x real time per CPU second")
    print(f"   latency from the epoch's last sample to publish: p50 {np.percentile(latency, 50):.2f} ms, "
          f"p99 {np.percentile(latency, 99):.2f} ms, max {latency.max():.2f} ms")
    print(f"   daemon peak RSS {usage.ru_maxrss / 1024:.1f} MB")


def many_streams(broker: EmbeddedBroker, tmp: Path, n: int, settle: float, window: float) -> float:
    devices = [(f"s{i:04d}", SLPDB[i % len(SLPDB)], 1.0) for i in range(n)]
    cfg = tmp / f"many_{n}.toml"
    cfg.write_text(config_text(broker.port, f"bench{n}", devices))
    sub = Collector(broker.port, f"bench{n}/+/+/availability")
    proc = start_daemon(cfg)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:  # start-up (loading N recordings) is not the steady state
            with sub.lock:
                online = sum(1 for _, _, p in sub.events if p == b"online")
            if online >= n:
                break
            if proc.poll() is not None:
                raise SystemExit(f"daemon exited: {proc.stderr.read()}")
            time.sleep(0.2)
        time.sleep(settle)
        c0, t0 = proc_cpu_seconds(proc.pid), time.monotonic()
        time.sleep(window)
        c1, t1 = proc_cpu_seconds(proc.pid), time.monotonic()
        return (c1 - c0) / (t1 - t0)
    finally:
        proc.terminate()
        proc.wait(60)
        sub.close()


def main() -> None:
    global MODEL
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="shorter measuring windows")
    parser.add_argument("--max-streams", type=int, default=3200)
    parser.add_argument("--model", default=MODEL, help="model id or manifest path (default: the shipped IBI model)")
    parser.add_argument("--skip-many", action="store_true", help="only the one-stream measurement")
    args = parser.parse_args()
    MODEL = args.model
    settle, window = (5.0, 31.0) if args.quick else (10.0, 61.0)  # a window spans at least one epoch close
    print(f"machine: {os.cpu_count()} cores, daemon pinned to core {CORE}; python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory() as tmpdir, EmbeddedBroker() as broker:
        tmp = Path(tmpdir)
        one_stream(broker, tmp)
        if args.skip_many:
            return
        print("2) N heart-rate-strap streams at real speed in one daemon on one core (slpdb nights, 1 notification/s each)")
        n, best, results = 100, 0, {}
        while n <= args.max_streams:
            share = many_streams(broker, tmp, n, settle, window)
            results[n] = share
            print(f"   N = {n:5d}: {share:6.1%} of one core")
            if share > 0.5:
                break
            best, n = n, n * 2
        if best and n <= args.max_streams:  # bisect once between the last good and first bad N
            mid = (best + n) // 2
            share = many_streams(broker, tmp, mid, settle, window)
            print(f"   N = {mid:5d}: {share:6.1%} of one core")
            if share <= 0.5:
                best = mid
        print(f"   largest N measured at <= 50 % of one core: {best}"
              + (" (the search stopped at --max-streams)" if n > args.max_streams else ""))


if __name__ == "__main__":
    main()
