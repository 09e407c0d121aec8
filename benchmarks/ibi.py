"""Beat detection for IBI: accuracy and throughput of the streaming detectors beside offline peers, one run.

    python benchmarks/ibi.py [--repeat N] [--no-windowed]

What it measures, all in this one run on this machine (nothing is asserted; figures are printed):

* ECG accuracy on the eight MIT-BIH Arrhythmia records (100 102 104 106 114 119 123 200, first lead,
  360 Hz, 30.1 min each) against the reference beats, greedy one-to-one matching at 150 ms and at 100 ms
  (sleepecg's tolerance), per record and pooled, for: edged's streaming detector fed 1-s chunks,
  neurokit2 ``ecg_peaks`` (offline, whole record), sleepecg ``detect_heartbeats`` (offline), and
  neurokit2 run the way a streaming wrapper would have to (``ecg_clean`` + ``ecg_findpeaks`` on the last
  10 s at every 1-s chunk, keeping the peaks 2-3 s behind the newest sample). Also the beat-to-beat
  interval error against the reference (|detected IBI - reference IBI| over consecutive matched beats).
* PPG against ECG on the two recordings with both (v102s with its wrapped PLETH undone, bidmc_01): the
  fraction of ECG beats that find their pulse and the interval error, for edged's PPG detector and for
  neurokit2 ``ppg_clean`` + ``ppg_findpeaks``.
* Throughput, as seconds of signal per CPU second (best of ``--repeat``), on 8 h of signal:
  ECG = the eight records concatenated (4.01 h) twice over (8.02 h, 360 Hz), and bidmc_01 lead II
  (125 Hz, 8 min) tiled to 8 h; PPG = bidmc_01 PLETH (125 Hz) tiled to 8 h. neurokit2 ``ecg_process``
  needs ~0.9 GB per 30 min of input (measured below), ~14 GB for 8 h, so it is timed on a 30-min excerpt
  and the figure is per signal-second.
* Peak RSS of the streaming paths after 1 h and after 8 h of 1-s chunks, and the current RSS at each hour,
  each in a fresh child process that reads its input record by record (so the input does not count),
  beside a child that only loads.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import scipy

# Run from a checkout without installing: the repository root is this file's grandparent.
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edged.dsp.beat_metrics import BeatScore, compare_pulses_to_beats, match_beats, pair_beats  # noqa: E402
from edged.dsp.beats import (  # noqa: E402
    StreamingEcgDetector,
    StreamingPpgDetector,
    detect_ecg_beats,
)
from edged.sources.readers import read_recording  # noqa: E402

DATA = REPO.parent / "shared" / "data"
if not DATA.exists():
    DATA = Path("/work/shared/data")
MITBIH = ("100", "102", "104", "106", "114", "119", "123", "200")
V102S_PLETH_SPAN = 4096 / 1250  # 12-bit format 212 at 1250 units/NU: the span PLETH wraps around
HOURS = 8.0


def load_mitbih(rec: str) -> tuple[np.ndarray, float, np.ndarray]:
    with np.load(DATA / "ecg-mitbih" / f"{rec}.npz") as d:
        return d["ecg_mV"].astype(np.float64), float(d["fs"]), d["r_peaks"].astype(np.int64)


def load_bidmc() -> tuple[np.ndarray, np.ndarray, float]:
    rec = read_recording(DATA / "ecg-ppg-resp" / "bidmc_01_Signals.csv")
    return rec.signals["II"].data, rec.signals["PLETH"].data, rec.signals["PLETH"].fs


def load_v102s() -> tuple[np.ndarray, np.ndarray, float]:
    rec = read_recording(DATA / "ecg-ppg-resp" / "v102s.hea")
    pleth = rec.signals["PLETH"].data.copy()
    idx = np.flatnonzero(np.isfinite(pleth))
    pleth[idx[1:]] -= np.cumsum(np.round(np.diff(pleth[idx]) / V102S_PLETH_SPAN)) * V102S_PLETH_SPAN
    return rec.signals["II"].data, pleth, rec.signals["PLETH"].fs


def stream(detector: StreamingEcgDetector | StreamingPpgDetector, x: np.ndarray, size: int) -> np.ndarray:
    out = [detector.push(x[i : i + size]) for i in range(0, len(x), size)]
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


# ------------------------------------------------------------------------------------------------- peers


def nk_ecg_peaks(x: np.ndarray, fs: float) -> np.ndarray:
    import neurokit2 as nk

    return np.asarray(nk.ecg_peaks(x, sampling_rate=fs)[1]["ECG_R_Peaks"], dtype=np.int64)


def nk_ppg_peaks(x: np.ndarray, fs: float) -> np.ndarray:
    import neurokit2 as nk

    clean = nk.ppg_clean(x, sampling_rate=fs)
    return np.asarray(nk.ppg_findpeaks(clean, sampling_rate=fs)["PPG_Peaks"], dtype=np.int64)


def sleepecg_peaks(x: np.ndarray, fs: float) -> np.ndarray:
    import sleepecg

    return np.asarray(sleepecg.detect_heartbeats(x, fs), dtype=np.int64)


def nk_windowed(x: np.ndarray, fs: float, window_s: float = 10.0, margin_s: float = 2.0) -> np.ndarray:
    """neurokit2 as a streaming wrapper would run it: at every 1-s chunk, clean and search the last
    ``window_s`` seconds and keep the peaks found in the second that ends ``margin_s`` before the newest
    sample (so each peak is decided once, with ``margin_s`` of context after it; delay 2-3 s)."""
    import neurokit2 as nk

    w, m, c = int(window_s * fs), int(margin_s * fs), int(fs)
    out: list[int] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # neurokit2 warns on short or flat windows
        for end in range(c, len(x) + 1, c):
            start = max(0, end - w)
            if end - start < 3 * fs:
                continue
            seg = x[start:end]
            peaks = nk.ecg_findpeaks(nk.ecg_clean(seg, sampling_rate=fs), sampling_rate=fs)["ECG_R_Peaks"]
            peaks = np.asarray(peaks, dtype=np.int64) + start
            out.extend(peaks[(peaks >= end - m - c) & (peaks < end - m)].tolist())
    return np.array(out, dtype=np.int64)


def have_sleepecg() -> bool:
    try:
        import sleepecg  # noqa: F401
    except ImportError:
        return False
    return True


# ------------------------------------------------------------------------------------------------ timing


def cpu_best(repeat: int, run: Callable[[], object]) -> float:
    """Least CPU time of ``repeat`` runs (the run least disturbed by other jobs on the shared cores)."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.process_time()
        run()
        best = min(best, time.process_time() - t0)
    return best


def ibi_errors_ms(ref: np.ndarray, det: np.ndarray, tol: int, fs: float) -> np.ndarray:
    r_idx, d_idx = pair_beats(ref, det, tol)
    consecutive = np.flatnonzero(np.diff(r_idx) == 1)
    err = np.diff(det[d_idx])[consecutive] - np.diff(ref[r_idx])[consecutive]
    return np.abs(err) / fs * 1000.0


# --------------------------------------------------------------------------------- RSS child processes


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status (not Linux?)")


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM). Not ``getrusage``'s ru_maxrss: Linux carries that over
    from the parent across fork and exec, so a child forked by a big parent would report the parent."""
    return _status_mb("VmHWM")


def rss_child(kind: str, hours: float) -> None:
    """Stream ``hours`` of signal in 1-s chunks, reading the input piecewise; print the peak RSS (MB) and
    the current RSS at the end of every hour of signal."""
    hourly: list[float] = []
    beats = 0
    if kind in ("ecg", "ppg"):
        if kind == "ecg":
            fs = 360.0
            det: StreamingEcgDetector | StreamingPpgDetector = StreamingEcgDetector(fs)
        else:
            _, pleth, fs = load_bidmc()
            det = StreamingPpgDetector(fs)
        step, total, k = int(fs), int(hours * 3600 * fs), 0
        done = 0
        while done < total:
            # ECG: one 30-min MIT-BIH record at a time; PPG: the 8-min PLETH again and again.
            x = load_mitbih(MITBIH[k % len(MITBIH)])[0] if kind == "ecg" else pleth
            x = x[: total - done]
            for i in range(0, len(x), step):
                beats += len(det.push(x[i : i + step]))
                if (done + i + step) % int(3600 * fs) < step:
                    hourly.append(round(_status_mb("VmRSS"), 1))
            done += len(x)
            k += 1
    elif kind == "ecg_process":  # neurokit2's full pipeline on `hours` of the MIT-BIH concatenation
        import neurokit2 as nk

        x = np.concatenate([load_mitbih(r)[0] for r in MITBIH])
        x = np.tile(x, 3)[: int(hours * 3600 * 360)]
        base = peak_rss_mb()
        t0 = time.process_time()
        signals, _ = nk.ecg_process(x, sampling_rate=360)
        cpu = time.process_time() - t0
        beats = int(signals["ECG_R_Peaks"].sum())
        print(json.dumps({"rss_mb": peak_rss_mb(), "base_mb": base, "cpu": cpu, "beats": beats}))
        return
    else:  # "load": imports and one record in memory, no detection: the floor the others sit on
        load_mitbih(MITBIH[0])
        load_bidmc()
    print(json.dumps({"rss_mb": peak_rss_mb(), "beats": beats, "hourly_mb": hourly}))


def run_child(kind: str, hours: float) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--rss-child", kind, str(hours)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


# -------------------------------------------------------------------------------------------------- main


def machine() -> str:
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import neurokit2

    versions = f"Python {platform.python_version()}, numpy {np.__version__}, scipy {scipy.__version__}, "
    versions += f"neurokit2 {neurokit2.__version__}"
    if have_sleepecg():
        import sleepecg

        versions += f", sleepecg {sleepecg.__version__}"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{platform.machine()} {cpu}, {os.cpu_count()} cores (load {load:.1f} at start); {versions}"


def fmt(s: BeatScore) -> str:
    return f" | {100 * s.sensitivity:6.2f} / {100 * s.positive_predictivity:6.2f} ({s.fp:3d},{s.fn:3d})"


def accuracy(args: argparse.Namespace) -> dict[str, float]:
    """Per-record tables; returns the CPU seconds of the windowed neurokit2 run, if done."""
    detectors: dict[str, Callable[[np.ndarray, float], np.ndarray]] = {
        "edged (stream 1 s)": lambda x, fs: stream(StreamingEcgDetector(fs), x, int(fs)),
        "nk ecg_peaks": nk_ecg_peaks,
    }
    if have_sleepecg():
        detectors["sleepecg"] = sleepecg_peaks
    if not args.no_windowed:
        detectors["nk windowed 10 s"] = nk_windowed
    found: dict[str, dict[str, np.ndarray]] = {name: {} for name in detectors}
    cpu: dict[str, float] = {name: 0.0 for name in detectors}
    refs: dict[str, tuple[np.ndarray, float]] = {}
    for rec in MITBIH:
        x, fs, ref = load_mitbih(rec)
        refs[rec] = (ref, fs)
        for name, detect in detectors.items():
            t0 = time.process_time()
            found[name][rec] = detect(x, fs)
            cpu[name] += time.process_time() - t0
    for tol_s in (0.150, 0.100):
        print(f"\nECG accuracy, MIT-BIH, tolerance {tol_s * 1000:.0f} ms (Se % / PPV %; FP, FN)")
        header = f"{'record':>7} {'beats':>6}" + "".join(f" | {name:>25}" for name in detectors)
        print(header)
        pooled: dict[str, list[BeatScore]] = {name: [] for name in detectors}
        for rec in MITBIH:
            ref, fs = refs[rec]
            row = f"{rec:>7} {len(ref):6d}"
            for name in detectors:
                s = match_beats(ref, found[name][rec], round(tol_s * fs))
                pooled[name].append(s)
                row += fmt(s)
            print(row)
        row = f"{'pooled':>7} {sum(len(r) for r, _ in refs.values()):6d}"
        for name in detectors:
            row += fmt(BeatScore.pooled(pooled[name]))
        print(row)
    print("\nBeat-to-beat interval error vs reference, consecutive beats matched at 150 ms")
    print("(|detected interval - reference interval|, ms: median / p90 / p99)")
    for name in detectors:
        err = np.concatenate(
            [ibi_errors_ms(refs[r][0], found[name][r], round(0.15 * refs[r][1]), refs[r][1]) for r in MITBIH]
        )
        p50, p90, p99 = np.percentile(err, [50, 90, 99])
        print(f"  {name:>25}: {p50:5.1f} / {p90:5.1f} / {p99:5.1f}   ({len(err)} intervals)")
    return {name: cpu[name] for name in detectors if name.startswith("nk windowed")}


def ppg_agreement() -> None:
    print("\nPPG vs ECG (edged ECG beats as reference; pulse within +-150 ms of the median transit)")
    columns = ("pulses", "PTT s", "matched %", "median |dIBI| ms")
    print(f"{'recording':>10} | {'detector':>26} | " + " | ".join(columns))
    for name, load in (("v102s", load_v102s), ("bidmc_01", load_bidmc)):
        ecg, pleth, fs = load()
        beats = detect_ecg_beats(ecg, fs) / fs
        for det_name, pulses in (
            ("edged (stream 1 s)", stream(StreamingPpgDetector(fs), pleth, int(fs))),
            ("nk ppg_clean+findpeaks", nk_ppg_peaks(np.nan_to_num(pleth, nan=float(np.nanmean(pleth))), fs)),
        ):
            a = compare_pulses_to_beats(beats, pulses / fs)
            print(
                f"{name:>10} | {det_name:>26} | {len(pulses):6d} | {a.pulse_transit:5.3f} | "
                f"{100 * a.matched:9.1f} | {1000 * a.median_abs_ibi_error:16.1f}"
            )


def throughput(args: argparse.Namespace, windowed_cpu: dict[str, float]) -> None:
    one_pass = np.concatenate([load_mitbih(r)[0] for r in MITBIH])
    ecg = np.concatenate([one_pass, one_pass])
    fs_ecg = 360.0
    _, pleth, fs_ppg = load_bidmc()
    ppg = np.tile(pleth, int(np.ceil(HOURS * 3600 * fs_ppg / len(pleth))))[: int(HOURS * 3600 * fs_ppg)]
    ecg_s, ppg_s = len(ecg) / fs_ecg, len(ppg) / fs_ppg
    print(f"\nThroughput: seconds of signal per CPU second, best of {args.repeat}")
    print(f"  ECG: MIT-BIH x8 concatenated twice, {ecg_s / 3600:.2f} h at {fs_ecg:g} Hz")
    print(f"  PPG: bidmc_01 PLETH tiled, {ppg_s / 3600:.2f} h at {fs_ppg:g} Hz")

    def line(label: str, seconds: float, cpu: float, note: str = "") -> None:
        print(f"  {label:<52} {seconds / cpu:>10,.0f} x real time   ({cpu:.2f} CPU s{note})")

    def add(label: str, seconds: float, run: Callable[[], object]) -> None:
        line(label, seconds, cpu_best(args.repeat, run))

    add(
        "edged StreamingEcgDetector, 1-s chunks",
        ecg_s,
        lambda: stream(StreamingEcgDetector(fs_ecg), ecg, 360),
    )
    add("edged detect_ecg_beats (batch twin, one push)", ecg_s, lambda: detect_ecg_beats(ecg, fs_ecg))
    add("neurokit2 ecg_peaks (offline)", ecg_s, lambda: nk_ecg_peaks(ecg, fs_ecg))
    if have_sleepecg():
        add("sleepecg detect_heartbeats (offline, C)", ecg_s, lambda: sleepecg_peaks(ecg, fs_ecg))
    else:
        print("  sleepecg: not installed (pip install sleepecg), skipped")
    for cpu in windowed_cpu.values():
        seconds = len(one_pass) / fs_ecg
        line(f"neurokit2 windowed (10-s, 1-s hop), {seconds / 3600:.2f} h", seconds, cpu, ", measured once")
    excerpt_h = 0.5
    child = run_child("ecg_process", excerpt_h)
    grown = child["rss_mb"] - child["base_mb"]
    line(
        "neurokit2 ecg_process, 30-min excerpt (child)",
        excerpt_h * 3600,
        child["cpu"],
        f"; peak RSS {child['rss_mb']:.0f} MB, +{grown:.0f} MB while running: "
        f"~{grown * HOURS / excerpt_h / 1024:.0f} GB for 8 h, so not run on 8 h",
    )
    # A chest strap or a monitor samples ECG at 125-250 Hz: our cost per 1-s chunk hardly changes with the
    # rate, neurokit2's falls with it, so the comparison is repeated at 125 Hz.
    ecg_ii, _, _ = load_bidmc()
    low = np.tile(ecg_ii, int(np.ceil(HOURS * 3600 * fs_ppg / len(ecg_ii))))[: int(HOURS * 3600 * fs_ppg)]
    low_s = len(low) / fs_ppg
    print(f"  ECG at {fs_ppg:g} Hz: bidmc_01 lead II tiled, {low_s / 3600:.2f} h")
    add(
        "edged StreamingEcgDetector, 1-s chunks, 125 Hz",
        low_s,
        lambda: stream(StreamingEcgDetector(125.0), low, 125),
    )
    add("neurokit2 ecg_peaks (offline), 125 Hz", low_s, lambda: nk_ecg_peaks(low, fs_ppg))
    add(
        "edged StreamingPpgDetector, 1-s chunks",
        ppg_s,
        lambda: stream(StreamingPpgDetector(fs_ppg), ppg, 125),
    )
    add("neurokit2 ppg_clean + ppg_findpeaks (offline)", ppg_s, lambda: nk_ppg_peaks(ppg, fs_ppg))


def memory() -> None:
    print("\nPeak RSS (MB) of a fresh child process streaming 1-s chunks (input read record by record)")
    floor = run_child("load", 0)
    print(f"  imports + one record loaded, no detection: {floor['rss_mb']:.0f}")
    for kind, label in (
        ("ecg", "ECG stream (MIT-BIH records in turn)"),
        ("ppg", "PPG stream (bidmc_01 PLETH repeated)"),
    ):
        one, eight = run_child(kind, 1.0), run_child(kind, HOURS)
        print(f"  {label}: peak after 1 h {one['rss_mb']:.0f} ({one['beats']:.0f} beats), ", end="")
        print(f"after 8 h {eight['rss_mb']:.0f} ({eight['beats']:.0f} beats)")
        print(f"    current RSS at the end of each hour of the 8-h run: {eight['hourly_mb']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-windowed", action="store_true", help="skip the slow windowed-neurokit2 peer")
    ap.add_argument("--rss-child", nargs=2, metavar=("KIND", "HOURS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rss_child:
        rss_child(args.rss_child[0], float(args.rss_child[1]))
        return
    print(machine())
    e = StreamingEcgDetector(360.0)
    p = StreamingPpgDetector(125.0)
    print(
        f"delays: ECG {e.delay_samples} samples = {e.delay_samples / 360:.3f} s at 360 Hz; "
        f"PPG {p.delay_samples} samples = {p.delay_samples / 125:.3f} s at 125 Hz"
    )
    memory()  # first, while this process is small (the children are fresh processes anyway)
    windowed = accuracy(args)
    ppg_agreement()
    throughput(args, windowed)


if __name__ == "__main__":
    main()
