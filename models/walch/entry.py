"""``ibi-walch``: causal W/NREM/REM from wrist heart rate (what a watch or a BLE heart-rate device sends).

``python -m models train ibi-walch --data ../shared/data/hr-sleep-walch --out models/shipped`` runs the whole
recipe (the entry-module contract of :mod:`models.registry`):

1. pretraining once on slpdb (``ibi-sleep-slpdb`` beside the Walch folder): ECG beats turned into watch
   readings (:func:`models.walch.data.watch_readings`), 4 samplings of each night;
2. leave-one-subject-out over Walch's 25 subjects (:func:`models.datasets.walch.loso_folds`): per fold a
   short fine-tuning of all layers from the pretrained weights, scored on the left-out subject; each fold
   model is also exported, quantised to int8 and compared with its float graph on the left-out night;
3. the shipped model: fine-tuned on all 25 subjects, float ONNX, static int8, manifest, model card.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from edged.dsp.hr import HR_FS, MAX_HR_SILENCE
from models.export import quantized_op_summary, write_manifest
from models.metrics import format_scores, scores
from models.walch.arch import (
    ArchConfig,
    HrStager,
    count_parameters,
    macs_per_scored_epoch,
)
from models.walch.data import (
    CLASSES,
    EPOCH_SECONDS,
    WATCH_AVERAGE,
    WATCH_SPACING,
    Night,
    slpdb_nights,
    walch_nights,
    windows,
)
from models.walch.train import TrainConfig, fit, loso

log = logging.getLogger(__name__)

DATA = "hr-sleep-walch"  # under the shared data root, when --data is not given
MODEL_ID = "ibi-walch-causal-v1"
STEM = "ibi_walch_causal"
INPUTS = ("hr", "elapsed")
OUTPUT = "probabilities"
OPSET = 17
MODELS_DIR = Path(__file__).resolve().parents[1]
DEFAULT_CARD = MODELS_DIR / "cards" / "ibi-walch.md"
DEFAULT_WORK = MODELS_DIR / "work" / "ibi-walch"  # git-ignored: float checkpoints, the full report
SHIPPED = f"shipped/{STEM}.json"  # relative to models/
CARD = ("models.walch.card:render", "work/ibi-walch/ibi_walch_causal.report.json", "cards/ibi-walch.md")

ARCH = ArchConfig(enc_channels=(4, 8))
PRETRAIN = TrainConfig(steps=600)
FINETUNE = TrainConfig(steps=400, warmup_steps=20)
SLPDB_VARIANTS = 4
QUICK_SLPDB = ["slp01a", "slp04"]
QUICK_WALCH = ["46343", "3509524", "5132496"]
QUICK_PRETRAIN = replace(PRETRAIN, steps=3, crops_per_step=2, crop_epochs=64, warmup_steps=1)
QUICK_FINETUNE = replace(FINETUNE, steps=3, crops_per_step=2, crop_epochs=64, warmup_steps=1)

CALIBRATION_WINDOWS = 512
CALIBRATION_METHOD = "Percentile"
CHECK_WINDOWS = 2000
CHECK_AGREEMENT = 0.995  # on training windows, which flatter agreement; the goal is judged on held-out folds
AGREEMENT_GOAL = 0.99
ACCURACY_DROP_GOAL = 1.0  # points

DATA_DESCRIPTION = (
    "Walch et al. 2019, PhysioNet sleep-accel (ODC-By 1.0): Apple Watch heart rate and PSG stages of 25 "
    "subjects, PSG night only; pretrained on the MIT-BIH Polysomnographic Database (PhysioNet slpdb, ODC-By "
    "1.0), ECG beats turned into watch-like heart-rate readings"
)


def slpdb_dir(data: Path) -> Path:
    path = data.parent / "ibi-sleep-slpdb"
    if not path.is_dir():
        raise SystemExit(f"{path}: pretraining needs the slpdb folder beside {data}")
    return path


# ------------------------------------------------------------------------------------------ ONNX helpers


def export_float(model: HrStager, path: Path) -> Path:
    import onnx

    c, s = model.cfg.context, model.cfg.samples_per_epoch
    model.eval()
    example = (torch.zeros(2, 1, c * s), torch.zeros(2, 1, c))
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(model, example, str(path), input_names=list(INPUTS), output_names=[OUTPUT],
                          dynamic_axes={**{n: {0: "batch"} for n in INPUTS}, OUTPUT: {0: "batch"}},
                          opset_version=OPSET, do_constant_folding=True, dynamo=False)
    onnx.checker.check_model(onnx.load(str(path)))
    return path


def run_onnx(path: Path, feeds: dict[str, np.ndarray], batch: int = 256) -> np.ndarray:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    n = len(next(iter(feeds.values())))
    return np.concatenate([sess.run([OUTPUT], {k: v[i : i + batch] for k, v in feeds.items()})[0]
                           for i in range(0, n, batch)])


class _Calibration:
    def __init__(self, feeds: dict[str, np.ndarray], batch: int = 64):
        n = len(next(iter(feeds.values())))
        self._it = iter([{k: v[i : i + batch].astype(np.float32) for k, v in feeds.items()}
                         for i in range(0, n, batch)])

    def get_next(self):
        return next(self._it, None)


def quantize_onnx(float_path: Path, out_path: Path, calibration: dict[str, np.ndarray], exclude: list[str]) -> Path:
    """Static QDQ int8 of the Conv layers (per-channel int8 weights, uint8 activations); ``exclude``
    names nodes kept float."""
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(float_path), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(out_path), _Calibration(calibration), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                        op_types_to_quantize=["Conv"], nodes_to_exclude=exclude or None,
                        calibrate_method=getattr(CalibrationMethod, CALIBRATION_METHOD),
                        extra_options={"WeightSymmetric": True})
    return out_path


def quantization_attempts(float_path: Path) -> list[tuple[str, list[str]]]:
    """(description, Conv nodes kept float), most int8 first."""
    import onnx

    convs = [n.name for n in onnx.load(str(float_path)).graph.node if n.op_type == "Conv"]
    head_io = [n for n in convs if n.startswith(("/head/inp/", "/head/fc/", "/head/out/"))]
    head = [n for n in convs if n.startswith("/head/")]
    return [("every Conv in int8", []),
            ("every Conv in int8 but the head's input and output 1x1 convs", head_io),
            ("the encoder convs in int8, the head float", head)]


def sample_windows(nights: list[Night], context: int, n: int, seed: int) -> dict[str, np.ndarray]:
    """``n`` real model inputs from ``nights``, spread in proportion to their length."""
    rng = np.random.default_rng(seed)
    sizes = np.array([x.n_epochs for x in nights], dtype=np.float64)
    picks = rng.choice(len(nights), size=n, p=sizes / sizes.sum())
    parts = []
    for i, night in enumerate(nights):
        k = int((picks == i).sum())
        if k:
            parts.append(windows(night, context, np.sort(rng.choice(night.n_epochs, size=k, replace=False))))
    return {name: np.concatenate([p[name] for p in parts]) for name in INPUTS}


def compare(float_probs: np.ndarray, int8_probs: np.ndarray, labels: np.ndarray) -> dict:
    pf, pq = float_probs.argmax(1), int8_probs.argmax(1)
    scored = labels >= 0
    acc_f = float((pf[scored] == labels[scored]).mean())
    acc_q = float((pq[scored] == labels[scored]).mean())
    agreement = float((pf == pq).mean())
    return {"epochs": len(labels), "agreement": round(agreement, 4), "accuracy_float": round(acc_f, 4),
            "accuracy_int8": round(acc_q, 4), "accuracy_diff_points": round(100.0 * (acc_q - acc_f), 2),
            "max_abs_probability_diff": round(float(np.abs(float_probs - int8_probs).max()), 4)}


# ------------------------------------------------------------------------------------------- recipe


def _load(data: Path, quick: bool, seed: int) -> tuple[list[Night], list[Night]]:
    slpdb = slpdb_nights(slpdb_dir(data), variants=1 if quick else SLPDB_VARIANTS, seed=seed,
                         records=QUICK_SLPDB if quick else None)
    walch = walch_nights(data, QUICK_WALCH if quick else None)
    return slpdb, walch


def _pretrain(slpdb: list[Night], quick: bool, seed: int) -> dict[str, torch.Tensor]:
    t0 = time.monotonic()
    model = fit(slpdb, ARCH, QUICK_PRETRAIN if quick else PRETRAIN, seed=seed)
    log.info("pretrained on %d watch-like slpdb nights in %.0f s", len(slpdb), time.monotonic() - t0)
    return {k: v.clone() for k, v in model.state_dict().items()}


def _fold_int8_check(cv: dict, walch: list[Night], exclusions: list[str], tmp: Path) -> dict:
    """Each fold model as float ONNX and int8 (calibrated on its training subjects' windows) on its
    left-out night; also the night form (training) against the window form (ONNX float)."""
    by_subject = {n.subject: n for n in walch}
    rows, pf_all, pq_all, y_all, torch_vs_onnx = [], [], [], [], 0.0
    for k, (subject, pred) in enumerate(cv["predictions"].items()):
        night = by_subject[subject]
        train = [n for n in walch if n.subject != subject]
        fpath = export_float(pred["model"], tmp / f"fold{k}.float.onnx")
        qpath = quantize_onnx(fpath, tmp / f"fold{k}.int8.onnx", sample_windows(train, ARCH.context, 256, k), exclusions)
        feeds = windows(night, ARCH.context)
        pf, pq = run_onnx(fpath, feeds), run_onnx(qpath, feeds)
        torch_vs_onnx = max(torch_vs_onnx, float(np.abs(pf - pred["probs"]).max()))
        rows.append({"subject": subject, **compare(pf, pq, night.labels)})
        pf_all.append(pf)
        pq_all.append(pq)
        y_all.append(night.labels)
    pooled = compare(np.concatenate(pf_all), np.concatenate(pq_all), np.concatenate(y_all))
    y = np.concatenate(y_all)
    pooled["int8_scores"] = scores(y, np.concatenate(pq_all).argmax(1), CLASSES)
    pooled["goal_met"] = bool(pooled["agreement"] >= AGREEMENT_GOAL
                              and pooled["accuracy_diff_points"] >= -ACCURACY_DROP_GOAL)
    pooled["min_fold_agreement"] = min(r["agreement"] for r in rows)
    return {"pooled": pooled, "folds": rows, "torch_night_vs_onnx_window_max_abs": torch_vs_onnx}


def evaluate(data, *, quick: bool = False, seed: int = 0, work: Path | None = None, init=None,
             int8_exclusions: list[str] | None = None, pretrained: bool = True) -> dict:
    """Leave-one-subject-out on Walch (fine-tuned from slpdb pretraining; ``pretrained=False`` trains each
    fold from scratch with the same steps, the ablation in the card); with ``int8_exclusions`` each fold
    model is also checked as int8 on its left-out night."""
    torch.set_num_threads(1)
    data = Path(data)
    slpdb, walch = _load(data, quick, seed)
    if init is None and pretrained:
        init = _pretrain(slpdb, quick, seed)
    subjects = [n.subject for n in walch]
    folds = [(s, [t for t in subjects if t != s]) for s in subjects]
    cv = loso(walch, folds, ARCH, QUICK_FINETUNE if quick else FINETUNE, seed=seed, init=init)
    pooled = cv["pooled"]
    how = "fine-tuned from one slpdb pretraining" if init is not None else "trained from scratch (no pretraining)"
    report = {"protocol": (f"leave-one-subject-out over {len(subjects)} Walch subjects (PSG night only), "
                           f"each fold {how}; predictions pooled over folds; unscored epochs excluded"),
              "classes": list(CLASSES), **{k: pooled[k] for k in ("epochs", "accuracy", "kappa", "macro_f1", "f1",
                                                                   "confusion", "fold_kappa_mean", "fold_kappa_sd")},
              "folds": [{k: f[k] for k in ("subject", "epochs", "kappa", "accuracy", "macro_f1", "f1", "confusion",
                                           "seconds")} for f in cv["folds"]]}
    if int8_exclusions is not None:
        with tempfile.TemporaryDirectory() as tmp:
            report["int8_vs_float_held_out"] = _fold_int8_check(cv, walch, int8_exclusions, Path(tmp))
    return report


def _save(model: HrStager, path: Path) -> None:
    torch.save({"arch": model.cfg.to_dict(), "state": model.state_dict()}, path)


def _restore(path: Path) -> HrStager:
    saved = torch.load(path, weights_only=True)
    arch = {k: tuple(v) if isinstance(v, list) else v for k, v in saved["arch"].items() if k != "reach"}
    model = HrStager(ArchConfig(**arch))
    model.load_state_dict(saved["state"])
    return model.eval()


def _manifest(report: dict, onnx_name: str, quantization: str, detail: str) -> dict:
    quick = report["quick"]
    m = {
        "schema": 1,
        "id": report["id"],
        "onnx": onnx_name,
        "sha256": "",
        "description": (
            "Causal W/NREM/REM stager on wrist heart rate: readings (bpm at irregular times) held as 60/bpm at "
            f"1 Hz, last {ARCH.context} epochs, plus hours since the session started; per-epoch conv encoder + "
            "causal dilated temporal conv head" + (" -- SMOKE RUN, not a usable model" if quick else "")),
        "classes": list(CLASSES),
        "epoch_seconds": EPOCH_SECONDS,
        "context_epochs": ARCH.context,
        "lookahead_epochs": 0,
        "inputs": [
            {"name": "hr", "signal": "hr", "fs": HR_FS, "units": "s", "missing_value": 0.0},
            {"name": "elapsed", "signal": "elapsed", "fs": 1.0 / EPOCH_SECONDS, "units": "h", "missing_value": 0.0},
        ],
        "state": [],
        "output": OUTPUT,
        "quantization": quantization,
        "quantization_detail": detail,
        "synthetic": False,
        "training": {
            "data": DATA_DESCRIPTION,
            "subjects": report["subjects"],
            "pretraining_records": report["pretraining_records"],
            "hr_input": {"fs": HR_FS, "max_silence_s": MAX_HR_SILENCE,
                         "slpdb_watch_readings": {"spacing_s": list(WATCH_SPACING), "average_s": WATCH_AVERAGE}},
            "elapsed_input": "hours from the session start (training: from the PSG start) to the epoch start",
            "command": report["command"],
            "wall_seconds": report["wall_seconds"],
            "seed": report["seed"],
            "arch": report["arch"],
            "pretrain": report["pretrain"],
            "finetune": report["finetune"],
            "parameters": report["params"],
            "macs_per_scored_epoch": report["macs"]["per_scored_epoch"],
        },
        "metrics": {},
    }
    cv = report.get("loso")
    if cv:
        m["metrics"] = {
            "protocol": cv["protocol"],
            **{k: cv[k] for k in ("kappa", "accuracy", "macro_f1", "f1", "confusion", "fold_kappa_mean",
                                  "fold_kappa_sd")},
            "folds": [{k: f[k] for k in ("subject", "epochs", "kappa", "accuracy", "macro_f1", "f1")}
                      for f in cv["folds"]],
            "int8_vs_float_held_out": {k: v for k, v in cv["int8_vs_float_held_out"]["pooled"].items()
                                       if k != "int8_scores"},
            "int8_loso": {k: cv["int8_vs_float_held_out"]["pooled"]["int8_scores"][k]
                          for k in ("kappa", "accuracy", "macro_f1", "f1")},
        }
    return m


def _choose_quantization(float_path: Path, calib: dict, check: dict, tmp: Path) -> tuple:
    check_float = run_onnx(float_path, check)
    tried = []
    for what, exclude in quantization_attempts(float_path):
        path = quantize_onnx(float_path, tmp / "try.int8.onnx", calib, exclude)
        agreement = float((run_onnx(path, check).argmax(1) == check_float.argmax(1)).mean())
        tried.append({"what": what, "kept_float": exclude, "agreement_training_windows": round(agreement, 4)})
        log.info("int8 (%s) vs float on %d training windows: agreement %.4f", what, len(check_float), agreement)
        if agreement >= CHECK_AGREEMENT:
            return what, exclude, tried
    return None, None, tried


def train(data, out, *, quick: bool = False, seed: int = 0, work: Path | None = None, command: str = "",
          card_path: Path | None = None) -> dict:
    t_start = time.monotonic()
    cpu_start = time.process_time()
    torch.set_num_threads(1)
    data, out = Path(data), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(work) if work else (out / "work" if quick else DEFAULT_WORK)
    work.mkdir(parents=True, exist_ok=True)
    slpdb, walch = _load(data, quick, seed)
    init = _pretrain(slpdb, quick, seed)
    pretrain_s = time.monotonic() - t_start

    # Which Conv nodes stay float is decided once, on a model trained like the fold models but on all
    # subjects (the shipped one), from training windows; the held-out folds then report the result.
    t0 = time.monotonic()
    model = fit(walch, ARCH, QUICK_FINETUNE if quick else FINETUNE, seed=seed, init=init)
    final_s = time.monotonic() - t0
    _save(model, work / f"{STEM}.pt")
    float_path = export_float(model, work / f"{STEM}.float.onnx")
    calib = sample_windows(walch, ARCH.context, 64 if quick else CALIBRATION_WINDOWS, seed + 1)
    check = sample_windows(walch, ARCH.context, 64 if quick else CHECK_WINDOWS, seed + 2)
    with tempfile.TemporaryDirectory() as tmp:
        what, exclude, tried = _choose_quantization(float_path, calib, check, Path(tmp))

    t0 = time.monotonic()
    cv = None if quick else evaluate(data, seed=seed, init=init, int8_exclusions=exclude if what else [])
    loso_s = time.monotonic() - t0

    if what is not None:
        shipped = quantize_onnx(float_path, out / f"{STEM}.int8.onnx", calib, exclude)
        quantization = "int8-static" if not exclude else "int8-static+float"
        ops = quantized_op_summary(shipped)
        fmt = lambda d: ", ".join(f"{k} x{v}" for k, v in d.items()) or "none"
        detail = (f"static QDQ, per-channel int8 weights, uint8 activations ({CALIBRATION_METHOD} calibration on "
                  f"{len(calib['hr'])} training windows); {what}. int8 ops: {fmt(ops['int8'])}. "
                  f"float32 ops: {fmt(ops['float'])}.")
    else:
        log.warning("static int8 missed the agreement bar on training windows: shipping the float model")
        shipped = out / f"{STEM}.float32.onnx"
        shutil.copyfile(float_path, shipped)
        quantization, ops = "float32", {"int8": {}, "float": {}}
        detail = "float32: static int8 missed the agreement bar (see metrics)"
    for stale in out.glob(f"{STEM}.*.onnx"):
        if stale != shipped:
            stale.unlink()
    wall = time.monotonic() - t_start
    report = {
        "id": MODEL_ID + ("-quick-smoke" if quick else ""),
        "quick": quick,
        "onnx": shipped.name,
        "manifest": f"{STEM}.json",
        "command": command,
        "seed": seed,
        "wall_seconds": round(wall, 1),
        "timing": {"pretrain_s": round(pretrain_s, 1), "final_fit_s": round(final_s, 1), "loso_s": round(loso_s, 1),
                   "cpu_seconds": round(time.process_time() - cpu_start, 1), "cpu_source": "process_time"},
        "subjects": len(walch),
        "pretraining_records": sorted({n.name.split("~")[0] for n in slpdb}),
        "slpdb_variants": 1 if quick else SLPDB_VARIANTS,
        "arch": ARCH.to_dict(),
        "pretrain": (QUICK_PRETRAIN if quick else PRETRAIN).to_dict(),
        "finetune": (QUICK_FINETUNE if quick else FINETUNE).to_dict(),
        "params": count_parameters(model),
        "macs": macs_per_scored_epoch(model),
        "quantization": quantization,
        "quantization_attempts": tried,
        "quantized_ops": ops,
        "loso": cv,
    }
    manifest = _manifest(report, shipped.name, quantization, detail)
    write_manifest(out / f"{STEM}.json", manifest)
    (work / f"{STEM}.report.json").write_text(json.dumps(report, indent=2) + "\n")
    if not quick:
        from models.walch import card

        card_path = Path(card_path) if card_path else DEFAULT_CARD
        card_path.write_text(card.render(report))
    log.info("wrote %s and %s in %.0f s", shipped, out / f"{STEM}.json", wall)
    if cv:
        log.info("LOSO pooled: %s", format_scores(cv, CLASSES))
    return report


def export(work, out) -> Path:
    """The float model trained in ``work`` -> float ONNX + manifest in ``out``."""
    work, out = Path(work), Path(out)
    report = json.loads((work / f"{STEM}.report.json").read_text())
    model = _restore(work / f"{STEM}.pt")
    path = export_float(model, out / f"{STEM}.float32.onnx")
    return write_manifest(out / f"{STEM}.float32.json", _manifest(report, path.name, "float32", "float32"))


def quantize(manifest, *, data, out) -> Path:
    """A float manifest (from :func:`export`) -> static int8 ONNX + manifest in ``out``, calibrated on
    Walch windows from ``data``."""
    from edged.scoring.manifest import load_manifest

    m = load_manifest(manifest)
    raw = json.loads(Path(manifest).read_text())
    walch = walch_nights(data)
    calib = sample_windows(walch, m.context_epochs, CALIBRATION_WINDOWS, 1)
    check = sample_windows(walch, m.context_epochs, CHECK_WINDOWS, 2)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        what, exclude, tried = _choose_quantization(m.onnx, calib, check, Path(tmp))
    if what is None:
        raise SystemExit(f"{manifest}: static int8 misses the agreement bar ({tried})")
    path = quantize_onnx(m.onnx, out / f"{STEM}.int8.onnx", calib, exclude)
    raw.update(onnx=path.name, quantization="int8-static" if not exclude else "int8-static+float",
               quantization_detail=f"static QDQ int8, {what}")
    return write_manifest(out / f"{STEM}.json", raw)

