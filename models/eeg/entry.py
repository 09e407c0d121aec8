"""``eeg-sleepedf`` in the model registry: the causal five-stage EEG scorer on Sleep-EDF-20 features.

``train`` is the whole recipe: leave-one-subject-out evaluation over the 8 subjects (each fold's model also
exported, quantised and compared int8 vs float on its held-out subject), the final fit on all 16 nights,
float ONNX export, static int8 quantisation, manifest and card. ``evaluate``, ``export`` and ``quantize``
run single steps through the same functions.

The model's inputs are edged's per-epoch EEG features (:mod:`edged.dsp.eeg_features`, feature set
``sleepedf-eeg-v1``) of Fpz-Cz and Pz-Oz; the training inputs are built by that same code from the
dataset's columns 0-17.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from models.eeg.data import CHANNELS, CLASSES, FEATURES, load_nights

log = logging.getLogger(__name__)

DATA = "eeg-features-sleepedf"  # default data set, under the shared data root
STEM = "eeg_sleepedf"
SHIPPED = f"shipped/{STEM}.json"  # relative to models/
CARD = ("models.eeg.card:render", f"work/eeg-sleepedf/{STEM}.report.json", "cards/eeg-sleepedf.md")
MODEL_ID = "eeg-sleepedf-causal-v1"
OUTPUT = "probabilities"
SIGNALS = {"fpz_cz": "fpz-cz", "pz_oz": "pz-oz"}  # ONNX input -> manifest signal (map device channels to these)
DEFAULT_WORK = Path(__file__).resolve().parents[1] / "work" / "eeg-sleepedf"
DEFAULT_CARD = Path(__file__).resolve().parents[1] / "cards" / "eeg-sleepedf.md"

# Three subjects (one with the short night SC4011), one member, a few hundred steps: proves the path only.
QUICK_NIGHTS = ("SC4001E0", "SC4002E0", "SC4011E0", "SC4012E0", "SC4021E0", "SC4022E0")
CALIBRATION_WINDOWS = 2048
# Static int8 variants, most int8 first: (ops quantised, what that means). The first whose int8 and float
# agree on >= 99 % of the held-out folds' epochs, losing <= 1 point of accuracy, ships.
VARIANTS = ((("MatMul", "Gemm"), "every MatMul and Gemm in int8"),
            (("Gemm",), "the window head's Gemms in int8, the per-epoch encoder's MatMul float"))
CALIBRATION_METHOD = "Percentile"
AGREEMENT_GOAL = 0.99
ACCURACY_DROP_GOAL = 1.0  # points
PEER = {"name": "LightGBM on columns 0-17 + causal 3/5-epoch context (issue 5, same protocol)",
        "kappa": 0.73, "accuracy": 0.80}
GOAL = {"accuracy": 0.84, "kappa": 0.78}
DATA_DESCRIPTION = (
    "Sleep-EDF-20 (Sleep-EDF Expanded, cassette SC4001-SC4072: 16 nights of 8 subjects, PhysioNet, ODC-By "
    "1.0): per-epoch features of Fpz-Cz and Pz-Oz (eeg-features-sleepedf columns 0-17), 5 stages per 30 s"
)


def _configs(quick: bool):
    from models.eeg.arch import ArchConfig
    from models.eeg.train import TrainConfig

    arch, cfg = ArchConfig(), TrainConfig()
    if quick:
        arch, cfg = replace(arch, members=1, context=5, hidden=16), replace(cfg, passes=0.3)
    return arch, cfg


def _nights(data, quick: bool):
    if data is None:
        raise SystemExit("eeg-sleepedf trains on real data only: give --data (the eeg-features-sleepedf directory)")
    return load_nights(Path(data), QUICK_NIGHTS if quick else None)


# --- ONNX: export, int8, running --------------------------------------------------------------------------


def export_float(model, path: Path, example: np.ndarray) -> Path:
    """Two inputs ``(batch, context, n_features)``, one per channel, dynamic batch; output probabilities."""
    import onnx
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    names = list(SIGNALS)
    with torch.no_grad():
        torch.onnx.export(
            model.eval(), tuple(torch.from_numpy(example[:, c]) for c in range(len(names))), str(path),
            input_names=names, output_names=[OUTPUT],
            dynamic_axes={**{n: {0: "batch"} for n in names}, OUTPUT: {0: "batch"}},
            opset_version=17, do_constant_folding=True, dynamo=False,
        )
    onnx.checker.check_model(onnx.load(str(path)))
    return path


class _Calibration:
    def __init__(self, x: np.ndarray, batch: int = 256):
        self._it = iter([{n: x[i : i + batch, c] for c, n in enumerate(SIGNALS)} for i in range(0, len(x), batch)])

    def get_next(self):
        return next(self._it, None)


def quantize_int8(float_path: Path, out_path: Path, calibration: np.ndarray,
                  op_types: tuple[str, ...] = ("MatMul", "Gemm")) -> Path:
    """Static QDQ int8 of the ``op_types`` ops (per-channel int8 weights, uint8 activations, percentile ranges
    from real training windows). The standardisation in front stays float32: the raw features share one
    tensor but differ in scale by orders of magnitude, so one uint8 scale for them would erase them."""
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    # onnxruntime's percentile calibrator prints its progress to stdout; keep the command's output readable.
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(float_path), str(pre), skip_symbolic_shape=True)
        quantize_static(
            str(pre), str(out_path), _Calibration(calibration.astype(np.float32)),
            quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            per_channel=True, op_types_to_quantize=list(op_types),
            calibrate_method=getattr(CalibrationMethod, CALIBRATION_METHOD),
            extra_options={"WeightSymmetric": True},
        )
    return out_path


def run_onnx(path: Path, x: np.ndarray, batch: int = 1024) -> np.ndarray:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    outs = [sess.run([OUTPUT], {n: x[i : i + batch, c] for c, n in enumerate(SIGNALS)})[0]
            for i in range(0, len(x), batch)]
    return np.concatenate(outs)


def _calibration(x: np.ndarray, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed + 1)
    return x[np.sort(rng.choice(len(x), size=min(n, len(x)), replace=False))]


def _compare(float_probs: np.ndarray, int8_probs: np.ndarray, labels: np.ndarray) -> dict:
    pf, pq = float_probs.argmax(1), int8_probs.argmax(1)
    acc_f, acc_q = float((pf == labels).mean()), float((pq == labels).mean())
    return {"epochs": len(labels), "agreement": round(float((pf == pq).mean()), 4),
            "accuracy_float": round(acc_f, 4), "accuracy_int8": round(acc_q, 4),
            "accuracy_diff_points": round(100.0 * (acc_q - acc_f), 2),
            "max_abs_probability_diff": round(float(np.abs(float_probs - int8_probs).max()), 4)}


# --- the contract -----------------------------------------------------------------------------------------


def evaluate(data, *, quick=False, seed=0, work=None, _keep_models: bool = False) -> dict:
    """Leave-one-subject-out over the 8 subjects, scored on each night's evaluation crop, pooled and per fold;
    each fold's model is also exported and quantised, and int8 compared with float on its held-out subject."""
    import torch

    from models.eeg.train import loso
    from models.metrics import scores

    torch.set_num_threads(1)
    arch, cfg = _configs(quick)
    nights = _nights(data, quick)
    t0 = time.monotonic()
    cv = loso(nights, arch, cfg, seed=seed)
    loso_s = time.monotonic() - t0
    # int8 against float on held-out folds, each fold's own model quantised with its own training windows.
    from models.eeg.train import NightInputs

    inputs = {n.name: NightInputs.build(n, arch.context) for n in nights}
    fold_int8 = [[] for _ in VARIANTS]
    all_y, all_f, all_q = [], [], [[] for _ in VARIANTS]
    with tempfile.TemporaryDirectory() as tmp:
        for held in cv["held"]:
            train_x = np.concatenate([inputs[n.name].x for n in nights if n.subject != held["subject"]])
            fpath = export_float(held["model"], Path(tmp) / "f.onnx", held["x"][:2])
            pf = run_onnx(fpath, held["x"])
            all_y.append(held["labels"])
            all_f.append(pf)
            for v, (ops, _) in enumerate(VARIANTS):
                qpath = quantize_int8(fpath, Path(tmp) / "q.onnx", _calibration(train_x, CALIBRATION_WINDOWS, seed),
                                      ops)
                pq = run_onnx(qpath, held["x"])
                fold_int8[v].append({"subject": held["subject"], **_compare(pf, pq, held["labels"]),
                                     "torch_vs_onnx_float_max_abs": float(np.abs(pf - held["probs"]).max())})
                all_q[v].append(pq)
    y = np.concatenate(all_y)
    variants = []
    for v, (ops, what) in enumerate(VARIANTS):
        q = np.concatenate(all_q[v])
        pooled_v = {"ops": list(ops), "variant": what, **_compare(np.concatenate(all_f), q, y),
                    "int8_scores": scores(y, q.argmax(1), CLASSES)}
        pooled_v["goal_met"] = bool(pooled_v["agreement"] >= AGREEMENT_GOAL
                                    and pooled_v["accuracy_diff_points"] >= -ACCURACY_DROP_GOAL)
        variants.append(pooled_v)
        log.info("int8 (%s) vs float, held-out folds: agreement %.4f, accuracy %+.2f points", what,
                 pooled_v["agreement"], pooled_v["accuracy_diff_points"])
    chosen = next((v for v, p in enumerate(variants) if p["goal_met"]), len(VARIANTS) - 1)
    int8_pooled = variants[chosen]
    pooled = cv["pooled"]
    subjects = sorted({n.subject for n in nights})
    result = {
        "protocol": (f"leave-one-subject-out over {len(subjects)} subjects ({len(nights)} nights), every epoch of "
                     "each night cropped to 30 min before its first and after its last sleep epoch scored, the "
                     "causal context starting at the crop (as edged started 30 min before sleep); predictions "
                     "pooled over folds; float model"),
        "classes": list(CLASSES),
        **{k: pooled[k] for k in ("epochs", "accuracy", "kappa", "macro_f1", "f1", "confusion", "support",
                                  "fold_kappa_mean", "fold_kappa_sd")},
        "folds": cv["folds"],
        "int8_vs_float": {"pooled": int8_pooled, "folds": fold_int8[chosen], "chosen": chosen,
                          "variants": [{k: v for k, v in p.items() if k != "int8_scores"} for p in variants],
                          "what": "each fold's model exported and quantised (calibration on its own training "
                                  "windows), run on its held-out subject's cropped epochs"},
        "loso_seconds": round(loso_s, 1),
        "arch": arch.to_dict(),
        "train": cfg.to_dict(),
    }
    if work is not None:
        Path(work).mkdir(parents=True, exist_ok=True)
        (Path(work) / f"{STEM}.evaluate.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def _manifest(report: dict, onnx_name: str, quantization: str, detail: str) -> dict:
    ev = report["evaluation"]
    brief = lambda s: {k: s[k] for k in ("kappa", "accuracy", "macro_f1", "f1")}
    return {
        "schema": 1,
        "id": report["id"],
        "onnx": onnx_name,
        "sha256": "",
        "description": (
            "Causal five-stage EEG scorer: per-epoch Welch band powers, variance and Hjorth mobility of Fpz-Cz "
            f"and Pz-Oz (feature set {FEATURES.name}) over the last {report['arch']['context']} epochs, small MLP"
            + (f" ensemble of {report['arch']['members']}" if report["arch"]["members"] > 1 else "")
            + (" -- SMOKE RUN, not a usable model" if report["quick"] else "")
        ),
        "classes": list(CLASSES),
        "epoch_seconds": FEATURES.epoch_seconds,
        "context_epochs": report["arch"]["context"],
        "lookahead_epochs": 0,
        "inputs": [{"name": name, "signal": signal, "fs": FEATURES.fs, "units": FEATURES.units,
                    "features": FEATURES.name, "missing_value": 0.0} for name, signal in SIGNALS.items()],
        "state": [],
        "output": OUTPUT,
        "quantization": quantization,
        "quantization_detail": detail,
        "synthetic": False,
        "training": {
            "data": DATA_DESCRIPTION,
            "nights": report["nights"],
            "subjects": report["subjects"],
            "command": report["command"],
            "wall_seconds": report["wall_seconds"],
            "seed": report["seed"],
            "arch": report["arch"],
            "optimiser": report["train"],
            "parameters": report["params"],
            "macs_per_scored_epoch": report["macs"],
            "int8_ops": report["evaluation"]["int8_vs_float"]["pooled"]["ops"],
            "channels": "map the device's Fpz-Cz and Pz-Oz (or the nearest derivations) to signals "
                        "'fpz-cz' and 'pz-oz'; any rate, units V/mV/uV",
        },
        "metrics": {
            "protocol": ev["protocol"],
            **{k: ev[k] for k in ("epochs", "kappa", "accuracy", "macro_f1", "f1", "confusion",
                                  "fold_kappa_mean", "fold_kappa_sd")},
            "folds": [{"subject": f["subject"], "nights": f["nights"], "epochs": f["epochs"], **brief(f)}
                      for f in ev["folds"]],
            "peer": PEER,
            "beats_peer": bool(ev["kappa"] > PEER["kappa"] and ev["accuracy"] > PEER["accuracy"]),
            "goal": GOAL,
            "int8_vs_float": {k: v for k, v in ev["int8_vs_float"]["pooled"].items() if k != "int8_scores"},
            "int8_loso": brief(ev["int8_vs_float"]["pooled"]["int8_scores"]),
        },
    }


def _save_float(model, work: Path, arch) -> Path:
    import torch

    path = work / f"{STEM}.float.pt"
    torch.save({"arch": arch.to_dict(), "state": model.state_dict(), "n_members": len(model.members)}, path)
    return path


def _load_float(work: Path):
    import torch

    from models.eeg.arch import ArchConfig, Ensemble, FeatureWindowNet

    ckpt = torch.load(Path(work) / f"{STEM}.float.pt", weights_only=True)
    arch = ArchConfig(**ckpt["arch"])
    zeros = np.zeros(len(CHANNELS) * FEATURES.n_features)
    model = Ensemble([FeatureWindowNet(len(CHANNELS), FEATURES.n_features, arch, zeros, zeros + 1)
                      for _ in range(ckpt["n_members"])])
    model.load_state_dict(ckpt["state"])
    return model.eval(), arch


def train(data, out, *, quick=False, seed=0, work=None, command="") -> dict:
    import torch

    from models.eeg import card
    from models.eeg.arch import count_parameters, macs_per_epoch
    from models.eeg.train import NightInputs, fit, predict
    from models.export import quantized_op_summary, write_manifest

    t_start = time.monotonic()
    torch.set_num_threads(1)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(work) if work else (out / "work" if quick else DEFAULT_WORK)
    work.mkdir(parents=True, exist_ok=True)
    arch, cfg = _configs(quick)
    nights = _nights(data, quick)

    evaluation = evaluate(data, quick=quick, seed=seed, work=work)

    t0 = time.monotonic()
    inputs = [NightInputs.build(n, arch.context) for n in nights]
    model = fit(inputs, arch, cfg, seed=seed)
    final_s = time.monotonic() - t0
    _save_float(model, work, arch)

    x_all = np.concatenate([i.x for i in inputs])
    y_all = np.concatenate([i.night.labels for i in inputs])
    float_path = export_float(model, work / f"{STEM}.float32.onnx", x_all[:2])
    pick = np.sort(np.random.default_rng(seed + 100).choice(len(x_all), size=min(4096, len(x_all)), replace=False))
    check = x_all[pick]
    float_check = run_onnx(float_path, check)
    parity = float(np.abs(predict(model, check) - float_check).max())
    if parity > 1e-4:
        raise RuntimeError(f"exported graph disagrees with the trained model (max |dp| {parity:.3g})")
    ops_quantized = tuple(evaluation["int8_vs_float"]["pooled"]["ops"])
    int8_path = quantize_int8(float_path, out / f"{STEM}.int8.onnx", _calibration(x_all, CALIBRATION_WINDOWS, seed),
                              ops_quantized)
    final_check = _compare(float_check, run_onnx(int8_path, check), y_all[pick])
    ops = quantized_op_summary(int8_path)
    wall = time.monotonic() - t_start
    report = {
        "id": MODEL_ID + ("-quick-smoke" if quick else ""),
        "quick": quick,
        "manifest": f"{STEM}.json",
        "onnx": int8_path.name,
        "command": command,
        "seed": seed,
        "wall_seconds": round(wall, 1),
        "timing": {"loso_and_int8_check_s": round(t0 - t_start, 1), "final_fit_s": round(final_s, 1)},
        "nights": [n.name for n in nights],
        "subjects": len({n.subject for n in nights}),
        "arch": arch.to_dict(),
        "train": cfg.to_dict(),
        "params": count_parameters(model),
        "macs": macs_per_epoch(model, arch),
        "evaluation": evaluation,
        "final_model": {"torch_vs_onnx_float_max_abs": parity,
                        "int8_vs_float_on_training_windows": {k: final_check[k] for k in
                                                              ("epochs", "agreement", "max_abs_probability_diff")}},
        "quantized_ops": ops,
    }
    fmt = lambda d: ", ".join(f"{k} x{v}" for k, v in d.items()) or "none"
    detail = (f"static QDQ int8, {evaluation['int8_vs_float']['pooled']['variant']} (per-channel int8 weights, uint8 activations, "
              f"{CALIBRATION_METHOD} calibration on {min(CALIBRATION_WINDOWS, len(x_all))} training windows): "
              f"int8 ops {fmt(ops['int8'])}; float32 ops {fmt(ops['float'])} (input standardisation, "
              "softmax, ensemble mean)")
    write_manifest(out / f"{STEM}.json", _manifest(report, int8_path.name, "int8-static+float", detail))
    (work / f"{STEM}.report.json").write_text(json.dumps(report, indent=2) + "\n")
    card_path = out / "eeg-sleepedf.md" if quick else DEFAULT_CARD
    card_path.write_text(card.render(report))
    log.info("wrote %s, %s, %s in %.0f s", int8_path, out / f"{STEM}.json", card_path, wall)
    return report


def export(work, out) -> Path:
    """The float model ``train`` saved in ``work`` -> float ONNX + float32 manifest in ``out``."""
    from models.export import write_manifest

    work, out = Path(work), Path(out)
    report_path = work / f"{STEM}.report.json"
    if not report_path.exists() or not (work / f"{STEM}.float.pt").exists():
        raise SystemExit(f"{work}: no trained model; run `python -m models train eeg-sleepedf --work {work}` first")
    report = json.loads(report_path.read_text())
    model, arch = _load_float(work)
    example = np.zeros((2, len(CHANNELS), arch.context, FEATURES.n_features), np.float32) + FEATURES.missing_row()
    path = export_float(model, out / f"{STEM}.float32.onnx", example.astype(np.float32))
    return write_manifest(out / f"{STEM}.float32.json",
                          _manifest(report, path.name, "float32", "float32 throughout"))


def quantize(manifest, *, data, out) -> Path:
    """A float32 manifest of this model -> static int8 (calibration on the training windows of ``data``)."""
    from edged.scoring.manifest import load_manifest
    from models.eeg.train import NightInputs
    from models.export import quantized_op_summary, write_manifest

    m = load_manifest(manifest)
    raw = json.loads(Path(manifest).read_text())
    nights = _nights(data, False)
    x = np.concatenate([NightInputs.build(n, m.context_epochs).x for n in nights])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ops_quantized = tuple(raw.get("training", {}).get("int8_ops") or VARIANTS[0][0])
    path = quantize_int8(m.onnx, out / f"{STEM}.int8.onnx", _calibration(x, CALIBRATION_WINDOWS, 0), ops_quantized)
    ops = quantized_op_summary(path)
    raw.update(onnx=path.name, quantization="int8-static+float",
               quantization_detail=f"static QDQ int8 of {'/'.join(ops_quantized)}; int8 ops {ops['int8']}, "
                                   f"float {ops['float']}")
    return write_manifest(out / f"{STEM}.json", raw)
