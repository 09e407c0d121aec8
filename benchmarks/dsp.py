"""Throughput of each streaming DSP stage on a real ECG night, fed 1-s chunks, beside SciPy one-pass peers.

    python benchmarks/dsp.py [--record PATH] [--repeat N]

Prints input samples per second and the real-time factor (seconds of signal per second of CPU) of each
stage, best of ``--repeat`` runs; the one-pass peers (sosfilt, resample_poly, upfirdn, and our batch
``resample``) are measured in the same run, so the ratio between streamed and one-pass is what to compare
across machines. Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import scipy
from scipy import signal

# Run from a checkout without installing: the repository root is this file's grandparent.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edged.dsp.epocher import Epocher  # noqa: E402
from edged.dsp.filters import CausalFilter, design_bandpass  # noqa: E402
from edged.dsp.ibi import StreamingIbi  # noqa: E402
from edged.dsp.resample import StreamingResampler, resample  # noqa: E402
from edged.dsp.ring import RingBuffer  # noqa: E402

DEFAULT_RECORD = Path("/work/shared/data/ecg-mitbih/100.npz")
FS_OUT = 100.0
EPOCH_S = 30


def best_of(repeat: int, run: Callable[[], object]) -> float:
    """Fastest wall time of ``repeat`` runs: the least disturbed by the other jobs sharing the cores."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--record", type=Path, default=DEFAULT_RECORD, help="npz with ecg_mV, fs, r_peaks")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    with np.load(args.record) as d:
        x = d["ecg_mV"].astype(np.float64)
        fs = float(d["fs"])
        beats = d["r_peaks"].astype(np.float64) / fs
    n_sec = len(x) / fs
    step = int(fs)  # 1-s chunks
    chunks = [x[i : i + step] for i in range(0, len(x), step)]
    sos = design_bandpass(0.5, 40.0, fs)
    y100 = resample(signal.sosfilt(sos, x), fs, FS_OUT)
    chunks100 = [y100[i : i + int(FS_OUT)] for i in range(0, len(y100), int(FS_OUT))]
    beat_chunks = np.split(beats, np.searchsorted(beats, np.arange(1.0, n_sec)))

    def ring() -> None:
        rb = RingBuffer(int(5 * 60 * fs))
        for c in chunks:
            rb.append(c)
            rb.latest(step)

    def filt() -> None:
        f = CausalFilter(sos)
        for c in chunks:
            f.process(c)

    def resampler() -> None:
        r = StreamingResampler(fs, FS_OUT)
        for c in chunks:
            r.process(c)

    def epocher() -> None:
        e = Epocher(int(EPOCH_S * FS_OUT))
        start = 0
        for c in chunks100:
            e.push(start, c)
            start += len(c)

    def ibi() -> None:
        s = StreamingIbi()
        for b in beat_chunks:
            s.push_beats(b)

    def chain() -> None:
        f, r, e = CausalFilter(sos), StreamingResampler(fs, FS_OUT), Epocher(int(EPOCH_S * FS_OUT))
        for c in chunks:
            y = r.process(f.process(c))
            e.push(r.n_out - len(y), y)

    r_ = StreamingResampler(fs, FS_OUT)
    up, down = r_.up, r_.down

    def poly() -> None:
        signal.resample_poly(x, up, down)

    def fir() -> None:
        signal.upfirdn(r_.taps, x, up, down)

    def batch() -> None:
        resample(x, fs, FS_OUT)

    rows: list[tuple[str, float, float]] = [  # label, input samples, seconds
        ("RingBuffer.append+latest(1 s), 5-min window", len(x), best_of(args.repeat, ring)),
        ("CausalFilter band-pass 0.5-40 Hz (4 sections)", len(x), best_of(args.repeat, filt)),
        (f"StreamingResampler {fs:g}->{FS_OUT:g} Hz", len(x), best_of(args.repeat, resampler)),
        ("Epocher 30 s @ 100 Hz (input 100 Hz)", len(y100), best_of(args.repeat, epocher)),
        ("StreamingIbi (beats; counted as 25 Hz output)", n_sec * 25, best_of(args.repeat, ibi)),
        ("chain: filter -> resample -> epocher", len(x), best_of(args.repeat, chain)),
        ("  one-pass scipy sosfilt", len(x), best_of(args.repeat, lambda: signal.sosfilt(sos, x))),
        (f"  one-pass scipy resample_poly({up}, {down})", len(x), best_of(args.repeat, poly)),
        (f"  one-pass scipy upfirdn (our {len(r_.taps)} taps)", len(x), best_of(args.repeat, fir)),
        ("  one-pass edged.dsp.resample (batch twin)", len(x), best_of(args.repeat, batch)),
    ]

    print(f"record {args.record.name}: {len(x)} samples at {fs:g} Hz ({n_sec / 3600:.2f} h), 1-s chunks")
    print(f"python {platform.python_version()}, numpy {np.__version__}, scipy {scipy.__version__}, "
          f"{platform.machine()}; best of {args.repeat}")
    print(f"resampler: {up}/{down}, {len(r_.taps)} taps, delay {r_.delay_samples} output samples")
    print(f"{'stage':48s} {'samples/s':>14s} {'x real time':>12s}")
    for label, n, sec in rows:
        print(f"{label:48s} {n / sec:14.3e} {n_sec / sec:12.0f}")


if __name__ == "__main__":
    main()
