"""``python -m models train sleepvst``: the streaming SleepVST (ECG + respiration -> W/Light/Deep/REM).

Without ``--data`` it trains on :mod:`models.seed.synthetic_cardiorespiratory` (no overnight ECG +
respiration waveforms with stages exist here) and ships ``"synthetic": true``. With ``--data DIR`` (NSRR
SHHS or MESA EDFs with their ``-nsrr.xml`` annotations beside them, read by :mod:`models.datasets.nsrr`)
the same recipe trains and evaluates on real nights, subject-wise.
"""

from __future__ import annotations

import functools
from dataclasses import asdict
from pathlib import Path

import numpy as np

from edged.dsp.respiration import RESP_BAND
from models.seed import recipe as r
from models.seed import sleepvst as arch
from models.seed import synthetic_cardiorespiratory as gen

DATA = None  # the generator; pass --data for NSRR nights
SHIPPED = "shipped/sleepvst_causal.json"
GEN_ECG_FS, GEN_RESP_FS = 128.0, 32.0
ECG_NAMES = ("ECG", "EKG", "ECG II", "ECG1")
RESP_NAMES = ("THOR RES", "Thor", "THOR", "Thor Res", "Resp chest", "RESP")


def _prepare(name: str, subject: str, ecg: tuple[float, np.ndarray], belt: tuple[float, np.ndarray],
             labels: np.ndarray) -> r.Prepared:
    n = len(labels)
    e = r.epochs_of(r.filtered_signal(ecg[1], ecg[0], arch.ECG_FS, arch.ECG_BAND), arch.ECG_SAMPLES, n)
    b = r.epochs_of(r.filtered_signal(belt[1], belt[0], arch.RESP_FS, RESP_BAND), arch.RESP_SAMPLES, n)
    return r.Prepared(name, subject, [e, b], np.asarray(labels, np.int64))


@functools.lru_cache(maxsize=4)
def _synthetic(seeds: tuple[int, ...], quick: bool) -> list[r.Prepared]:
    out = []
    for s in seeds:
        night = gen.generate(s, hours=0.5 if quick else 3.0, ecg_fs=GEN_ECG_FS, resp_fs=GEN_RESP_FS)
        out.append(_prepare(f"synthetic-{s}", f"generated-{s}", (night.ecg_fs, night.ecg), (night.resp_fs, night.belt),
                            night.stages))
    return out


def _real(data: Path, quick: bool) -> list[r.Prepared]:
    from models.datasets import nsrr

    edfs = sorted(Path(data).glob("*.edf"))[: 3 if quick else None]
    if not edfs:
        raise FileNotFoundError(f"{data}: no NSRR .edf files (with -nsrr.xml annotations)")
    out = []
    for edf in edfs:
        night = nsrr.load_night(edf, scheme="4-stage")
        ecg = next((night.signals[c] for c in ECG_NAMES if c in night.signals), None)
        belt = next((night.signals[c] for c in RESP_NAMES if c in night.signals), None)
        if ecg is None or belt is None:
            raise ValueError(f"{edf}: needs an ECG ({'/'.join(ECG_NAMES)}) and a thoracic belt ({'/'.join(RESP_NAMES)})")
        out.append(_prepare(night.record, night.subject, ecg, belt, night.labels))
    return out


RECIPE = r.Recipe(
    name="sleepvst",
    model_id="sleepvst-causal-synthetic-v1",
    stem="sleepvst_causal",
    description=("Causal SleepVST: ECG band-passed 0.66-2.8 Hz at 10 Hz + thoracic respiration 0.1-1 Hz at 5 Hz, "
                 "per-epoch ResNet encoders, causal transformer over the last 240 epochs (KV cache as state) -> "
                 "W/Light/Deep/REM. Weights trained on SYNTHETIC signals."),
    classes=arch.CLASSES,
    epoch_seconds=30.0,
    inputs=[
        {"name": "ecg", "signal": "ecg", "fs": arch.ECG_FS, "units": "mV", "band": list(arch.ECG_BAND)},
        {"name": "resp", "signal": "resp", "fs": arch.RESP_FS, "units": "a.u.", "band": list(RESP_BAND)},
    ],
    build=lambda: arch.SleepVST(arch.EDGE),
    arch=asdict(arch.EDGE),
    synthetic_nights=lambda seeds, quick: _synthetic(tuple(seeds), quick),
    real_nights=_real,
    synthetic_data=("models.seed.synthetic_cardiorespiratory (documented generator: ECG 128 Hz + thoracic belt "
                    "32 Hz, 3-h nights, stage rules for heart rate, HRV and breathing)"),
    real_data="NSRR SHHS/MESA EDF + XML (models.datasets.nsrr)",
    fit=r.Fit(steps=300, lr=2e-3, weight_decay=1e-3, warmup=20),
    quick_fit=r.Fit(steps=6, lr=2e-3, warmup=2),
    crop=32,
    batch=8,
    train_seeds=tuple(range(0, 10)),
    eval_seeds=(1000, 1001, 1002),
    quick_seeds=(0, 1),
)


def train(data, out, *, quick=False, seed=0, work=None, command=""):
    report = r.train_recipe(RECIPE, data, Path(out), quick=quick, seed=seed, work=work, command=command)
    if not quick:
        report["real_recording"] = real_recording_check(Path(out) / report["manifest"])
        _save(report, work, out)
        from models.seed import cards

        cards.write("sleepvst", report)
    return report


def real_recording_check(manifest: Path) -> dict:
    """The shipped model on BIDMC 01 (real ECG lead II + impedance respiration, 125 Hz, 8 min, unlabelled)."""
    from models.datasets import data_root

    check = r.score_real_recording(manifest, data_root() / "ecg-ppg-resp" / "bidmc_01_Signals.csv",
                                   {"ecg": "II", "resp": "RESP"})
    return dict(check, what="8 min of ECG lead II + impedance respiration at 125 Hz from an ICU patient, unlabelled")


def _save(report: dict, work, out) -> None:
    import json

    work = Path(work) if work is not None else Path(out) / "work"
    (work / f"{RECIPE.stem}.report.json").write_text(json.dumps(report, indent=2) + "\n")


def evaluate(data, *, quick=False, seed=0, work=None):
    return r.evaluate_recipe(RECIPE, data, quick=quick, seed=seed)


def export(work, out):
    return r.export_recipe(RECIPE, Path(work), Path(out))


def quantize(manifest, *, data=None, out, work=None):
    work = Path(work) if work is not None else Path(__file__).resolve().parents[1] / "work" / RECIPE.name
    return r.quantize_recipe(RECIPE, Path(manifest), data=data, out=Path(out), work=work)


CARD = ("models.seed.cards:render_sleepvst", "work/sleepvst/sleepvst_causal.report.json", "cards/sleepvst.md")
