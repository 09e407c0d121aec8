"""``ibi-slpdb`` in the model registry: the causal W/NREM/REM IBI stager trained on slpdb.

``train`` is the whole recipe (:func:`models.ibi.pipeline.run`, which made the shipped files);
``evaluate``, ``export`` and ``quantize`` are its steps run alone, through the same functions, so a step
run alone gives what the recipe gave for it.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from models.ibi import pipeline
from models.ibi.data import CLASSES, load_nights, windows

log = logging.getLogger(__name__)

DATA = "ibi-sleep-slpdb"  # default data set, under the shared data root
SHIPPED = "shipped/ibi_slpdb_causal.json"  # relative to models/
CARD = ("models.ibi.card:render", "work/ibi-slpdb/ibi_slpdb_causal.report.json", "cards/ibi-slpdb.md")
FLOAT_STEM = f"{pipeline.STEM}.float32"


def _training_nights(data: Path, quick: bool, records: list[str] | None = None):
    nights = load_nights(data, exclude=(pipeline.HELD_OUT,))
    if records is not None:
        nights = [n for n in nights if n.name in records]
    elif quick:
        nights = [n for n in nights if n.name in pipeline.QUICK_RECORDS]
    return nights


def train(data, out, *, quick=False, seed=0, work=None, command="") -> dict:
    if data is None:
        raise SystemExit("ibi-slpdb trains on real data only: give --data (the slpdb .rr/.an directory)")
    return pipeline.run(data, out, quick=quick, seed=seed, work=work, command=command)


def evaluate(data, *, quick=False, seed=0, work=None) -> dict:
    """Leave-one-subject-out over the training records (slp61 never used), as in ``train``."""
    import torch

    from models.ibi.train import loso

    torch.set_num_threads(1)
    nights = _training_nights(Path(data), quick)
    cv = loso(nights, pipeline.ARCH, pipeline.QUICK_TRAIN if quick else pipeline.TRAIN, seed=seed)
    pooled = cv["pooled"]
    subjects = sorted({n.subject for n in nights})
    result = {
        "protocol": (f"leave-one-subject-out over {len(subjects)} subjects ({len(nights)} records), predictions "
                     f"pooled over folds; epochs unscored in the reference excluded; {pipeline.HELD_OUT} never used"),
        "classes": list(CLASSES),
        **{k: pooled[k] for k in ("epochs", "accuracy", "kappa", "macro_f1", "f1", "confusion",
                                  "fold_kappa_mean", "fold_kappa_sd")},
        "folds": cv["folds"],
    }
    if work is not None:
        Path(work).mkdir(parents=True, exist_ok=True)
        (Path(work) / f"{pipeline.STEM}.evaluate.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def export(work, out) -> Path:
    """The float ONNX that ``train`` exported (and checked against PyTorch) into ``work`` -> ``out``, with a
    float32 manifest built from the same run's report."""
    work, out = Path(work), Path(out)
    report_path = work / f"{pipeline.STEM}.report.json"
    float_path = work / f"{pipeline.STEM}.float.onnx"
    for p in (report_path, float_path):
        if not p.exists():
            raise SystemExit(f"{p}: missing; run `python -m models train ibi-slpdb --work {work}` first")
    report = json.loads(report_path.read_text())
    out.mkdir(parents=True, exist_ok=True)
    onnx_path = out / f"{FLOAT_STEM}.onnx"
    if onnx_path.resolve() != float_path.resolve():
        shutil.copyfile(float_path, onnx_path)
    manifest = pipeline.manifest_from_report(report)
    manifest.update(
        id=report["id"] + "-float32",
        onnx=onnx_path.name,
        quantization="float32",
        quantization_detail="float32: the exported graph, not quantised",
    )
    manifest["training"]["calibration"] = report["calibration"]  # how `quantize` calibrates, as train did
    metrics = manifest["metrics"]
    metrics.pop("int8_vs_float")
    metrics["held_out"].pop("int8")
    path = out / f"{FLOAT_STEM}.json"
    pipeline.write_manifest(path, manifest)
    return path


def quantize(manifest, *, data, out) -> Path:
    """Static int8 of an exported float model, calibrated on its own training records exactly as ``train``
    does, then scored against float on the held-out night; refuses when int8 misses the agreement bar."""
    from edged.scoring.manifest import load_manifest
    from models.export import quantized_op_summary, run_onnx
    from models.ibi.arch import ArchConfig, IbiStager, module_macs
    from models.metrics import scores

    if data is None:
        raise SystemExit("ibi-slpdb calibrates on real data: give --data (the slpdb .rr/.an directory)")
    float_manifest = load_manifest(manifest)
    if float_manifest.quantization != "float32":
        raise SystemExit(f"{manifest}: not a float32 model (quantization {float_manifest.quantization!r})")
    raw = json.loads(Path(manifest).read_text())
    training = raw["training"]
    arch = ArchConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in training["arch"].items()})
    calibration = training.get("calibration", {"windows": pipeline.CALIBRATION_WINDOWS,
                                               "check_windows": pipeline.CHECK_WINDOWS})
    nights = _training_nights(Path(data), False, records=training["records"])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    int8_path = out / f"{pipeline.STEM}.int8.onnx"
    label, agreement, tried, calib = pipeline.quantize_checked(
        float_manifest.onnx, int8_path, nights, module_macs(IbiStager(arch)), context=arch.context,
        n_calibration=calibration["windows"], n_check=calibration["check_windows"], seed=training["seed"])
    if agreement < pipeline.CHECK_AGREEMENT:
        int8_path.unlink()
        raise SystemExit(f"static int8 agrees with float on {agreement:.4f} of training windows, below "
                         f"{pipeline.CHECK_AGREEMENT}: keep the float model")

    held = next(n for n in load_nights(Path(data)) if n.name == pipeline.HELD_OUT)
    held_windows = windows(held, arch.context)
    io = {"input_name": pipeline.INPUT, "output_name": pipeline.OUTPUT}
    float_probs = run_onnx(float_manifest.onnx, held_windows, **io)
    int8_probs = run_onnx(int8_path, held_windows, **io)
    comparison = pipeline._compare(float_probs, int8_probs, held.labels)
    comparison["agreement_training_windows"] = round(agreement, 4)
    ops = quantized_op_summary(int8_path)
    detail = pipeline._quantization_detail({"shipped_variant": "int8", "quantized_ops": ops, "calibration": calib,
                                            "quantization_attempts": tried, "int8_mac_share": tried[-1]["int8_mac_share"]})
    held_int8 = scores(held.labels, int8_probs.argmax(1), CLASSES)
    raw.update(id=raw["id"].removesuffix("-float32"), onnx=int8_path.name, quantization=label,
               quantization_detail=detail)
    raw["training"].pop("calibration", None)
    raw["metrics"]["held_out"]["int8"] = {k: held_int8[k] for k in ("epochs", "kappa", "accuracy", "macro_f1",
                                                                     "f1", "confusion")}
    raw["metrics"]["int8_vs_float"] = {**comparison, "data": pipeline.HELD_OUT, "quantized_ops": ops,
                                       "calibration": calib, "attempts": tried}
    log.info("int8 vs float on %s: %s", pipeline.HELD_OUT, comparison)
    path = out / f"{pipeline.STEM}.json"
    pipeline.write_manifest(path, raw)
    return path
