"""``python -m models train watchsleepnet``: the streaming WatchSleepNet (IBI -> W/NREM/REM), trained on
the REAL slpdb beat-by-beat RR (``../shared/data/ibi-sleep-slpdb``, read by :mod:`models.ibi.data`, the
loader of the shipped ``ibi-slpdb`` model: same sample-and-hold IBI, same held-out night slp61), evaluated
leave-one-subject-out. Without data (``--data`` pointing nowhere is an error; the synthetic path is only
used by ``--quick`` when no slpdb is present) it falls back to :mod:`models.seed.synthetic_cardiorespiratory`.
"""

from __future__ import annotations

import functools
from dataclasses import asdict
from pathlib import Path

import numpy as np

from edged.dsp.ibi import IBI_FS, sample_and_hold
from models.seed import recipe as r
from models.seed import synthetic_cardiorespiratory as gen
from models.seed import watchsleepnet as arch

DATA = "ibi-sleep-slpdb"
SHIPPED = "shipped/watchsleepnet_causal.json"
HELD_OUT = "slp61"  # never trained on: the demo night, as for ibi-slpdb
QUICK_RECORDS = ("slp01a", "slp01b", "slp04")


@functools.lru_cache(maxsize=2)
def _real_cached(data: str, quick: bool) -> list[r.Prepared]:
    from models.ibi.data import SAMPLES_PER_EPOCH, load_nights

    nights = load_nights(data, exclude=(HELD_OUT,))
    if quick:
        nights = [n for n in nights if n.name in QUICK_RECORDS]
    return [r.Prepared(n.name, n.subject, [n.ibi[: n.n_epochs * SAMPLES_PER_EPOCH].reshape(n.n_epochs, SAMPLES_PER_EPOCH)],
                       n.labels) for n in nights]


def _real(data: Path, quick: bool) -> list[r.Prepared]:
    return _real_cached(str(data), quick)


@functools.lru_cache(maxsize=4)
def _synthetic(seeds: tuple[int, ...], quick: bool) -> list[r.Prepared]:
    out = []
    for s in seeds:
        night = gen.generate(s, hours=0.75 if quick else 4.0)
        n = night.n_epochs
        ibi = sample_and_hold(night.beats, n * arch.SAMPLES, fs=IBI_FS).reshape(n, arch.SAMPLES)
        out.append(r.Prepared(f"synthetic-{s}", f"generated-{s}", [ibi], gen.TO_THREE[night.stages]))
    return out


RECIPE = r.Recipe(
    name="watchsleepnet",
    model_id="watchsleepnet-causal-slpdb-v1",
    stem="watchsleepnet_causal",
    description=("Causal WatchSleepNet: sample-and-hold IBI at 25 Hz, per-epoch ResNet encoder, left-padded TCN, "
                 "unidirectional LSTM and attention over the last 16 epochs with their state carried between "
                 "epochs -> W/NREM/REM; trained on real slpdb RR"),
    classes=arch.CLASSES,
    epoch_seconds=30.0,
    inputs=[{"name": "ibi", "signal": "ibi", "fs": IBI_FS, "units": "s", "missing_value": 0.0}],
    build=lambda: arch.WatchSleepNet(arch.EDGE),
    arch=asdict(arch.EDGE),
    synthetic_nights=lambda seeds, quick: _synthetic(tuple(seeds), quick),
    real_nights=_real,
    synthetic_data="models.seed.synthetic_cardiorespiratory beat times as sample-and-hold IBI",
    real_data=("MIT-BIH Polysomnographic Database (PhysioNet slpdb, ODC-By 1.0): beat-by-beat RR from "
               "cardiologist-reviewed ECG beats with R&K stages per 30-s epoch; slp61 held out"),
    fit=r.Fit(steps=150, lr=3e-3, weight_decay=1e-2, warmup=10),
    quick_fit=r.Fit(steps=4, lr=3e-3, warmup=1),
    crop=64,
    batch=8,
    train_seeds=tuple(range(0, 10)),
    eval_seeds=(1000, 1001, 1002),
    max_folds=12,
    # The encoder's convolutions in int8 except its stem, which reads the beat deviations (77 % of the MACs);
    # stem, TCN, mixing layer, LSTM, attention and head stay float. Everything in int8 agreed with float on
    # 97.9 % of the parity epochs, all convolutions on 97.9 %, this split on 99.4 % (MinMax calibration: 98.3 %).
    int8_ops=("Conv",),
    float_first_conv=True,
    float_nodes=("/tcn.",),
)


def train(data, out, *, quick=False, seed=0, work=None, command=""):
    report = r.train_recipe(RECIPE, data, Path(out), quick=quick, seed=seed, work=work, command=command)
    if data is not None and not quick:
        work = Path(work) if work is not None else Path(out) / "work"
        report["held_out"] = held_out(Path(data), Path(out) / report["manifest"], work / f"{RECIPE.stem}.float.json")
        import json

        (work / f"{RECIPE.stem}.report.json").write_text(json.dumps(report, indent=2) + "\n")
    if not quick:
        from models.seed import cards

        cards.write("watchsleepnet", report)
    return report


def held_out(data: Path, manifest: Path, float_manifest: Path | None = None) -> dict:
    """The shipped int8 graph streamed over slp61 (never trained on), epoch by epoch with its state; with
    ``float_manifest`` also the float graph, and how often the two agree."""
    from edged.scoring.session import OnnxModel
    from models.ibi.data import SAMPLES_PER_EPOCH, load_night
    from models.metrics import scores

    night = load_night(data / f"{HELD_OUT}.rr")
    x = night.ibi[: night.n_epochs * SAMPLES_PER_EPOCH].reshape(night.n_epochs, 1, 1, SAMPLES_PER_EPOCH)

    def stream(path: Path) -> np.ndarray:
        model = OnnxModel.load(path)
        state, pred = model.initial_state(), []
        for k in range(night.n_epochs):
            p, state = model.run({"ibi": x[k]}, state)
            pred.append(int(np.argmax(p[0])))
        return np.array(pred)

    pred = stream(manifest)
    out = dict(scores(night.labels, pred, arch.CLASSES), record=HELD_OUT, graph="int8")
    if float_manifest is not None and Path(float_manifest).exists():
        ref = stream(float_manifest)
        scored = night.labels >= 0
        out["int8_vs_float"] = {
            "agreement": round(float(np.mean(pred == ref)), 4),
            "accuracy_float": round(float(np.mean(ref[scored] == night.labels[scored])), 4),
            "accuracy_int8": round(float(np.mean(pred[scored] == night.labels[scored])), 4),
        }
    return out


def evaluate(data, *, quick=False, seed=0, work=None):
    return r.evaluate_recipe(RECIPE, data, quick=quick, seed=seed)


def export(work, out):
    return r.export_recipe(RECIPE, Path(work), Path(out))


def quantize(manifest, *, data=None, out, work=None):
    work = Path(work) if work is not None else Path(__file__).resolve().parents[1] / "work" / RECIPE.name
    return r.quantize_recipe(RECIPE, Path(manifest), data=data, out=Path(out), work=work)


CARD = ("models.seed.cards:render_watchsleepnet", "work/watchsleepnet/watchsleepnet_causal.report.json",
        "cards/watchsleepnet.md")
