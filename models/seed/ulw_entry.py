"""``python -m models train ulw-sleepnet``: ULW-SleepNet trained on the synthetic PSG generator, exported,
quantised to int8, with manifest and card (entry-module contract: :mod:`models.registry`).

This module also holds the recipe both four-channel PSG designs share (MASleepNet's entry calls it with
its own :class:`Design`): how a night becomes model inputs (what edged's ``FilteredSignal`` computes live:
the causal band-pass of :mod:`edged.dsp.filters`, the resampler of :mod:`edged.dsp.resample`), where nights
come from (the generator, or with ``--data`` a Sleep-EDF directory through
:mod:`models.datasets.sleepedf`, split by subject), training, export and int8 through
:mod:`models.seed.recipe`, the held-out check, the manifest and the card.

The SHIPPED weights are synthetic: trained on :mod:`models.seed.synthetic_psg`, because no raw EEG/EOG/EMG
nights with stages exist on this machine. Figures on generated nights check the generator and the training
path; they say nothing about accuracy on people, and the manifest and card say so.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edged.dsp.filters import CausalFilter, design_bandpass
from edged.dsp.resample import resample
from models.seed import synthetic_psg as gen

log = logging.getLogger(__name__)

PACKAGE = Path(__file__).resolve().parents[1]

# ------------------------------------------------------------------------------ the shared PSG recipe

# ONNX input name, manifest signal, causal band-pass (Hz) applied live by edged and here before training.
INPUTS = (
    ("fpz_cz", "eeg_fpz_cz", (0.3, 35.0)),
    ("pz_oz", "eeg_pz_oz", (0.3, 35.0)),
    ("eog", "eog", (0.3, 35.0)),
    ("emg", "emg", (10.0, 45.0)),
)
# Which Sleep-EDF channel feeds each signal (``edged replay --channel SIGNAL=CHANNEL``).
SLEEP_EDF_CHANNELS = {"eeg_fpz_cz": "EEG Fpz-Cz", "eeg_pz_oz": "EEG Pz-Oz", "eog": "EOG horizontal",
                      "emg": "EMG submental"}
FS = gen.FS
SAMPLES = gen.SAMPLES_PER_EPOCH
CLASSES = gen.CLASSES
REPLAY_FLAGS = " ".join(f"--channel {s}='{c}'" for s, c in SLEEP_EDF_CHANNELS.items())


def manifest_inputs(bands: dict[str, tuple[float, float] | None] | None = None) -> list[dict]:
    """The manifest's ``inputs``; ``bands`` (signal -> band or None) overrides the default band where the
    training data could not carry it (see :func:`resolve_bands`)."""
    out = []
    for name, signal, band in INPUTS:
        band = (bands or {}).get(signal, band)
        item = {"name": name, "signal": signal, "fs": FS, "units": gen.UNITS, "missing_value": 0.0}
        if band is not None:
            item["band"] = list(band)
        out.append(item)
    return out


def preprocess(signals: np.ndarray) -> np.ndarray:
    """(4, n) raw uV at 100 Hz -> (4, n // 3000, 3000) float32 epochs: :func:`preprocess_channels` for
    signals already at the model's rate (the generator's)."""
    return preprocess_channels([(FS, x) for x in signals], [band for _, _, band in INPUTS])


def preprocess_channels(channels: list[tuple[float, np.ndarray]], bands: list[tuple[float, float] | None],
                        n_epochs: int | None = None) -> np.ndarray:
    """Each channel (fs, raw samples) as edged's ``FilteredSignal`` turns it into model input: the causal
    band-pass of its manifest input at the channel's own rate (from rest at the first sample), then the
    batch twin of the streaming resampler to 100 Hz (a pass-through at 100 Hz). Returns
    (4, n_epochs, 3000) float32; ``n_epochs`` defaults to what every channel covers."""
    resampled = []
    for (fs, x), band in zip(channels, bands):
        y = np.asarray(x, np.float64)
        if band is not None:
            y = CausalFilter(design_bandpass(*band, fs)).process(y)
        resampled.append(resample(y, fs, FS) if fs != FS else y)
    covered = min(len(y) for y in resampled) // SAMPLES
    n_epochs = covered if n_epochs is None else min(n_epochs, covered)
    out = np.empty((len(channels), n_epochs, SAMPLES), np.float32)
    for i, y in enumerate(resampled):
        out[i] = y[: n_epochs * SAMPLES].reshape(n_epochs, SAMPLES)
    return out


def resolve_bands(rates: dict[str, set[float]]) -> dict[str, tuple[float, float] | None]:
    """Signal -> the band training (and so edged, through the manifest) applies: the default band where
    every night's channel is sampled fast enough for it, else none. Sleep-EDF cassette EMG is a 1-Hz
    envelope: no 10-45 Hz band exists there, and a model trained on it expects an envelope-like EMG."""
    out = {}
    for _, signal, band in INPUTS:
        slowest = min(rates.get(signal, {FS}))
        out[signal] = band if band is not None and band[1] < slowest / 2 else None
    return out


@dataclass(frozen=True)
class PsgNight:
    name: str
    x: np.ndarray  # (4, n_epochs, 3000) float32, preprocessed
    y: np.ndarray  # (n_epochs,) class index, -1 unscored


@dataclass(frozen=True)
class DataPlan:
    train: int  # generated nights to train on
    test: int  # held-out generated nights for the sanity check
    hours: float


FULL_DATA = DataPlan(train=10, test=3, hours=6.0)
QUICK_DATA = DataPlan(train=2, test=1, hours=0.5)


def synthetic_nights(plan: DataPlan, seed: int) -> tuple[list[PsgNight], list[PsgNight]]:
    """Training and held-out nights from the generator; every night is its own synthetic subject."""
    base = 100_000 * seed

    def night(s: int) -> PsgNight:
        n = gen.generate(s, plan.hours)
        return PsgNight(f"synthetic-{s}", preprocess(n.signals), n.stages)

    train = [night(base + i) for i in range(plan.train)]
    test = [night(base + 1000 + i) for i in range(plan.test)]
    return train, test


@dataclass(frozen=True)
class Nights:
    train: list[PsgNight]
    test: list[PsgNight]
    description: str
    synthetic: bool
    bands: dict[str, tuple[float, float] | None]


def load_nights(data: Path | None, plan: DataPlan, seed: int, *, quick: bool = False) -> Nights:
    """The generator's nights when ``data`` is None, else a Sleep-EDF directory (``*-PSG.edf`` with their
    hypnograms, read by :mod:`models.datasets.sleepedf`, cropped to 30 min around sleep) split by subject:
    every fifth subject (sorted) held out."""
    if data is None:
        train, test = synthetic_nights(plan, seed)
        return Nights(train, test, GENERATOR_DESCRIPTION, True, {s: b for _, s, b in INPUTS})
    from models.datasets import sleepedf

    psgs = sorted(Path(data).glob("*-PSG.edf"))
    if not psgs:
        raise SystemExit(f"{data}: no Sleep-EDF *-PSG.edf files")
    raw = [sleepedf.load_night(p) for p in psgs]
    rates: dict[str, set[float]] = {}
    for night in raw:
        for _, signal, _ in INPUTS:
            rates.setdefault(signal, set()).add(night.signals[SLEEP_EDF_CHANNELS[signal]][0])
    bands = resolve_bands(rates)
    subjects = sorted({n.subject for n in raw})
    if len(subjects) < 2:
        raise SystemExit(f"{data}: {len(subjects)} subject; a subject-wise held-out set needs at least two")
    held = set(subjects[:1]) if quick else set(subjects[::5])
    if quick:  # smoke run: one held-out night, two training nights
        raw = [n for n in raw if n.subject in held][:1] + [n for n in raw if n.subject not in held][:2]

    def convert(night) -> PsgNight:
        channels = [night.signals[SLEEP_EDF_CHANNELS[s]] for _, s, _ in INPUTS]
        x = preprocess_channels(channels, [bands[s] for _, s, _ in INPUTS], night.n_epochs)
        return PsgNight(night.record, x, night.labels[: x.shape[1]])

    train = [convert(n) for n in raw if n.subject not in held]
    test = [convert(n) for n in raw if n.subject in held]
    description = (f"Sleep-EDF Expanded ({Path(data).name}): {len(raw)} nights, {len(subjects)} subjects, "
                   "cropped to 30 min before the first and after the last sleep epoch")
    return Nights(train, test, description, False, bands)


# Static int8 variants tried in turn, until float and int8 agree on this share of training epochs (else the
# best one ships, and the card says the goal is missed): (calibration method, op types in int8, whether the
# design's ``keep_float`` nodes stay float32).
QUANTIZATION_ATTEMPTS = (
    ("Percentile", ("Conv", "Gemm", "MatMul"), False),
    ("MinMax", ("Conv", "Gemm", "MatMul"), False),
    ("Percentile", ("Conv", "Gemm", "MatMul"), True),
    ("MinMax", ("Conv", "Gemm", "MatMul"), True),
)
DECIDE_AGREEMENT = 0.995

GENERATOR_DESCRIPTION = (
    "SYNTHETIC: nights from models.seed.synthetic_psg (documented generator of stage-dependent EEG rhythms, "
    "EOG and EMG; no real recording)"
)


def sampler(nights: list[PsgNight], batch: int, length: int) -> Callable[[np.random.Generator], tuple]:
    """Training batches for the recipe's ``fit``: ``batch`` crops of ``length`` consecutive epochs."""

    def draw(rng: np.random.Generator):
        picks = []
        for _ in range(batch):
            night = nights[int(rng.integers(len(nights)))]
            start = int(rng.integers(0, len(night.y) - length + 1))
            picks.append((night, start))
        signals = [np.stack([n.x[c, s:s + length] for n, s in picks]) for c in range(len(INPUTS))]
        labels = np.stack([n.y[s:s + length] for n, s in picks])
        return signals, labels

    return draw


def class_weights(nights: list[PsgNight]) -> np.ndarray:
    """Inverse square-root frequency, mean 1: N1 (rare) counts more without dominating."""
    y = np.concatenate([n.y for n in nights])
    counts = np.bincount(y[y >= 0], minlength=len(CLASSES)).astype(np.float64)
    w = 1.0 / np.sqrt(np.maximum(counts, 1.0))
    return w / w.mean()


def stack_nights(nights: list[PsgNight]) -> tuple[list[np.ndarray], np.ndarray]:
    """Whole nights as the recipe's signals (each (nights, epochs, 3000)), cut to the shortest night."""
    length = min(len(n.y) for n in nights)
    signals = [np.stack([n.x[c, :length] for n in nights]) for c in range(len(INPUTS))]
    return signals, np.stack([n.y[:length] for n in nights])


def spread(nights: list[PsgNight], per_night: int, offset: float) -> list[np.ndarray]:
    """``per_night`` epochs evenly spread over each night (``offset`` of the spacing in), each night one
    sequence in time order: the recipe's signals, (nights, per_night, 3000) each."""
    length = min(len(n.y) for n in nights)
    step = length / per_night
    idx = (np.arange(per_night) * step + offset * step).astype(int)
    return [np.stack([n.x[c, idx] for n in nights]) for c in range(len(INPUTS))]


@dataclass(frozen=True)
class Design:
    """What differs between the two PSG designs; the rest of the recipe is shared."""

    name: str  # registry name, card file name
    model_id: str
    stem: str
    title: str
    build: Callable[[], object]  # the streaming torch module (models.seed.recipe contract)
    arch: Callable[[object], dict]
    complexity: Callable[[], dict]
    steps: int
    quick_steps: int
    batch: int
    crop_epochs: int
    lr: float
    source: str  # the architecture's module, whose complexity() the card quotes
    keep_float: tuple[str, ...]  # ONNX node-name fragments the last int8 variants leave float32
    about: str  # card: the architecture, published vs streaming
    published: str  # card: the paper's figures


def _sanity(nights_y: np.ndarray, probs: np.ndarray) -> dict:
    from models.metrics import scores

    return scores(nights_y.reshape(-1), probs.reshape(-1, probs.shape[-1]).argmax(-1), CLASSES)


class _Feeds:
    """onnxruntime calibration reader over prepared feed dicts."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]):
        self._it = iter(feeds)

    def get_next(self):
        return next(self._it, None)


def _quantize(float_path: Path, out_path: Path, feeds: list[dict], *, op_types, method: str, exclude) -> Path:
    """:func:`models.seed.recipe.quantize_static` (same settings) with nodes that stay float32."""
    import tempfile

    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(float_path), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(out_path), _Feeds(feeds), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                        op_types_to_quantize=list(op_types), nodes_to_exclude=list(exclude) or None,
                        calibrate_method=getattr(CalibrationMethod, method), extra_options={"WeightSymmetric": True})
    return out_path


def _ship(design: Design, model, body: dict, *, out: Path, work: Path, calibration: list[np.ndarray],
          decide: list[np.ndarray]) -> dict:
    """Float ONNX (into ``work``), static int8 variants (:data:`QUANTIZATION_ATTEMPTS`) calibrated on
    ``calibration`` streamed through the float graph with its state, the first (else best) that agrees with
    float on ``decide`` into ``out`` with its manifest. The steps of :func:`models.seed.recipe.ship`, with
    a choice of calibration method."""
    import torch

    from models.export import quantized_op_summary, write_manifest
    from models.seed import recipe

    float_path = recipe.export_step(model, work / f"{design.stem}.float.onnx", [SAMPLES] * len(INPUTS))
    _, feeds = recipe.onnx_stream(float_path, model, calibration)
    flat = [{k: v[i:i + 1] for k, v in f.items()} for f in feeds for i in range(len(next(iter(f.values()))))]
    batches = [{k: np.concatenate([x[k] for x in flat[i:i + 32]]) for k in flat[0]} for i in range(0, len(flat), 32)]
    float_probs, _ = recipe.onnx_stream(float_path, model, decide)
    int8_path = out / f"{design.stem}.int8.onnx"
    import onnx

    kept = [n.name for n in onnx.load(str(float_path)).graph.node
            if n.op_type in ("Conv", "Gemm", "MatMul") and any(f in n.name for f in design.keep_float)]
    variants = [(m, ops, kept if keep else []) for m, ops, keep in QUANTIZATION_ATTEMPTS if kept or not keep]
    attempts = []
    for method, op_types, exclude in variants:
        _quantize(float_path, int8_path, batches, op_types=op_types, method=method, exclude=exclude)
        int8_probs, _ = recipe.onnx_stream(int8_path, model, decide)
        agreement = round(recipe.agreement(float_probs, int8_probs), 4)
        attempts.append({"calibration": method, "int8_ops": list(op_types), "float_nodes": len(exclude),
                         "agreement_training_nights": agreement})
        log.info("%s: int8 (%s calibration, %s, %d nodes kept float) vs float on training nights: argmax "
                 "agreement %.4f", design.name, method, "/".join(op_types), len(exclude), agreement)
        if agreement >= DECIDE_AGREEMENT:
            break
    best = max(range(len(attempts)), key=lambda i: attempts[i]["agreement_training_nights"])
    if best != len(attempts) - 1:  # none met the bar: the best one ships
        method, op_types, exclude = variants[best]
        _quantize(float_path, int8_path, batches, op_types=op_types, method=method, exclude=exclude)
    chosen = attempts[best]
    with torch.no_grad():
        torch_probs = torch.softmax(recipe.sequence_logits(model, [torch.from_numpy(c) for c in decide]), -1).numpy()
    ops = quantized_op_summary(int8_path)
    fmt = lambda d: ", ".join(f"{k} x{v}" for k, v in d.items()) or "none"  # noqa: E731
    manifest = dict(body, onnx=int8_path.name,
                    quantization="int8-static+float" if ops["float"] else "int8-static",
                    quantization_detail=(
                        f"static QDQ, per-channel symmetric int8 weights, uint8 activations ({chosen['calibration']} "
                        f"calibration on {len(flat)} training epochs spread over every training night, streamed "
                        f"with their recurrent state); BatchNorm "
                        f"folded into the convolutions at export"
                        + (f"; {chosen['float_nodes']} nodes kept float32 ({', '.join(design.keep_float)})"
                           if chosen["float_nodes"] else "")
                        + f". int8 ops: {fmt(ops['int8'])}. "
                        f"float32 ops: {fmt(ops['float'])}."))
    write_manifest(out / f"{design.stem}.json", {"schema": 1, **manifest})
    parity = {"epochs": int(np.prod(float_probs.shape[:2])),
              "torch_vs_float": round(recipe.agreement(torch_probs, float_probs), 4),
              "float_vs_int8": chosen["agreement_training_nights"], "quantized_ops": ops}
    return {"float": str(float_path), "int8": str(int8_path), "manifest": f"{design.stem}.json",
            "parity": parity, "attempts": attempts}


def run(design: Design, data: Path | None, out: Path, *, quick: bool, seed: int, work: Path | None,
        command: str, card_path: Path | None = None) -> dict:
    """Train, export, quantise, check, write manifest, report and card (see the module docstring)."""
    import torch

    from models.export import write_manifest
    from models.seed import recipe

    t_start, cpu_start = time.monotonic(), time.process_time()
    torch.set_num_threads(1)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(work) if work else (out / "work" if quick else PACKAGE / "work" / design.name)
    work.mkdir(parents=True, exist_ok=True)
    plan = QUICK_DATA if quick else FULL_DATA
    nights = load_nights(data, plan, seed, quick=quick)
    train, test, synthetic = nights.train, nights.test, nights.synthetic
    log.info("%s: %d training nights, %d held-out nights (%s)", design.name, len(train), len(test), nights.description)

    torch.manual_seed(seed)
    model = design.build()
    fit_cfg = recipe.Fit(steps=design.quick_steps if quick else design.steps, lr=design.lr,
                         warmup=2 if quick else 20)
    t0 = time.monotonic()
    history = recipe.fit(model, sampler(train, 4 if quick else design.batch, design.crop_epochs), fit_cfg,
                         seed=seed, class_weight=class_weights(train))
    fit_s = time.monotonic() - t0
    torch.save(model.state_dict(), work / f"{design.stem}.pt")
    log.info("%s: fitted in %.0f s: %s", design.name, fit_s, history)

    # Calibration epochs spread over every training night (each night is another subject, with its own
    # amplitudes: ranges from a couple of nights clip the others); which int8 variant ships is decided on
    # the training epochs halfway between them, never on the held-out nights (which only report it).
    per_night = 16 if quick else 64  # x nights: whole calibration batches of 32
    calibration = spread(train, per_night, 0.0)
    decide = spread(train, per_night, 0.5)
    complexity = design.complexity()
    model_id = design.model_id + ("-quick-smoke" if quick else "")
    body = {
        "id": model_id,
        "description": (
            f"{design.title}, streaming form: W/N1/N2/N3/REM from EEG Fpz-Cz, EEG Pz-Oz, EOG and EMG at 100 Hz. "
            + ("SYNTHETIC WEIGHTS: trained on a generator, not on people; its stages are not sleep stages"
               if synthetic else f"Trained on {nights.description}")
            + (" -- SMOKE RUN, not a usable model" if quick else "")
        ),
        "classes": list(CLASSES),
        "epoch_seconds": gen.EPOCH_SECONDS,
        "context_epochs": 1,
        "lookahead_epochs": 0,
        "inputs": manifest_inputs(nights.bands),
        "state": [s.as_manifest() for s in model.state_specs()],
        "output": recipe.PROBABILITIES,
        "synthetic": synthetic,
        "training": {
            "data": nights.description,
            **({"generator": "models.seed.synthetic_psg", "hours_per_night": plan.hours} if synthetic else {}),
            "train_nights": [n.name for n in train],
            "held_out_nights": [n.name for n in test],
            "command": command,
            "real_data_command": f"python -m models train {design.name} --data <Sleep-EDF dir> --out models/shipped",
            "seed": seed,
            "arch": design.arch(model),
            "optimiser": {"steps": fit_cfg.steps, "lr": fit_cfg.lr, "weight_decay": fit_cfg.weight_decay,
                          "batch": 4 if quick else design.batch, "crop_epochs": design.crop_epochs},
            "parameters": complexity["streaming"]["parameters"],
            "macs_per_scored_epoch": complexity["streaming"]["macs_per_epoch"],
        },
        "metrics": {},
    }
    t0 = time.monotonic()
    shipped = _ship(design, model, body, out=out, work=work, calibration=calibration, decide=decide)
    attempts = shipped["attempts"]
    held = {"float": Path(shipped["float"]), "int8": Path(shipped["int8"])}
    y_all = np.concatenate([n.y for n in test])
    sanity, probs = {}, {}
    for graph, path in held.items():  # night by night: real held-out nights differ in length
        probs[graph] = np.concatenate([recipe.onnx_stream(path, model, stack_nights([n])[0])[0][0] for n in test])
        sanity[graph] = _sanity(y_all, probs[graph])
    export_s = time.monotonic() - t0
    parity = dict(shipped["parity"], attempts=attempts,
                  float_vs_int8_training_nights=shipped["parity"]["float_vs_int8"], epochs=len(y_all),
                  float_vs_int8=round(float((probs["float"].argmax(-1) == probs["int8"].argmax(-1)).mean()), 4),
                  max_abs_probability_diff_int8=round(float(np.abs(probs["float"] - probs["int8"]).max()), 4))
    if parity["float_vs_int8"] < 0.99:
        log.warning("%s: int8 misses the 99 %% agreement goal on the held-out nights (%.4f)", design.name,
                    parity["float_vs_int8"])
    wall = round(time.monotonic() - t_start, 1)
    cpu = round(time.process_time() - cpu_start, 1)  # the shared VM's wall time depends on its other jobs
    manifest_path = out / shipped["manifest"]
    manifest = json.loads(manifest_path.read_text())
    manifest["training"]["wall_seconds"] = wall
    manifest["training"]["cpu_seconds"] = cpu
    brief = lambda v: {m: v[m] for m in ("epochs", "kappa", "accuracy", "macro_f1", "f1", "confusion")}  # noqa: E731
    int8_vs_float = {"data": "held-out " + ("generated nights" if synthetic else "subjects' nights"),
                     "agreement": parity["float_vs_int8"], "goal_met": parity["float_vs_int8"] >= 0.99,
                     "agreement_training_nights": parity["float_vs_int8_training_nights"], "attempts": attempts,
                     "torch_vs_float_agreement_training_nights": parity["torch_vs_float"],
                     "max_abs_probability_diff": parity["max_abs_probability_diff_int8"], "epochs": parity["epochs"]}
    if synthetic:
        manifest["metrics"] = {
            "protocol": (
                "NOT AN ACCURACY. Generator sanity check only: the model scored "
                f"{len(test)} held-out generated nights ({', '.join(n.name for n in test)}); this shows the "
                "generator's stages are learnable and the export path works, nothing about real sleep"
            ),
            "generator_sanity_check": {k: brief(v) for k, v in sanity.items()},
            "int8_vs_float": int8_vs_float,
        }
    else:
        manifest["metrics"] = {
            "protocol": (f"held-out subjects ({', '.join(n.name for n in test)}), int8 graph streamed epoch by "
                         "epoch; unscored epochs excluded"),
            **brief(sanity["int8"]),
            "float": brief(sanity["float"]),
            "int8_vs_float": int8_vs_float,
        }
    manifest.pop("sha256", None)
    write_manifest(manifest_path, manifest)
    log.info("%s: int8 vs float argmax agreement %.4f on %d held-out epochs; int8 accuracy %s%s", design.name,
             parity["float_vs_int8"], parity["epochs"], sanity["int8"]["accuracy"],
             " (generator sanity check, not accuracy)" if synthetic else "")

    report = {
        "id": model_id,
        "name": design.name,
        "quick": quick,
        "synthetic": synthetic,
        "data": nights.description,
        "manifest": shipped["manifest"],
        "onnx": Path(shipped["int8"]).name,
        "command": command,
        "seed": seed,
        "wall_seconds": wall,
        "cpu_seconds": cpu,
        "timing": {"fit_s": round(fit_s, 1), "export_check_s": round(export_s, 1)},
        "history": history,
        "plan": {"train": len(train), "test": len(test), "hours": plan.hours if synthetic else None},
        "complexity": complexity,
        "parity": parity,
        "sanity": sanity,
        "quantization": manifest["quantization"],
        "quantization_detail": manifest["quantization_detail"],
        "manifest_body": {k: v for k, v in body.items() if k != "metrics"},
    }
    (work / f"{design.stem}.report.json").write_text(json.dumps(report, indent=2) + "\n")
    card_path = card_path or (out / f"{design.name}.md" if quick else PACKAGE / "cards" / f"{design.name}.md")
    card_path.parent.mkdir(parents=True, exist_ok=True)
    card_path.write_text(render(design, report))
    log.info("%s: wrote %s, %s, %s in %.0f s", design.name, shipped["int8"], manifest_path, card_path, wall)
    return report


def evaluate_design(design: Design, data: Path | None, *, quick: bool, seed: int, work: Path | None) -> dict:
    """Train on the training nights, score the held-out nights with the PyTorch model (streaming form).
    On generated nights this is the generator sanity check, not an accuracy (``protocol`` says so)."""
    import torch

    from models.seed import recipe

    torch.set_num_threads(1)
    plan = QUICK_DATA if quick else FULL_DATA
    nights = load_nights(data, plan, seed, quick=quick)
    train, test = nights.train, nights.test
    torch.manual_seed(seed)
    model = design.build()
    recipe.fit(model, sampler(train, 4 if quick else design.batch, design.crop_epochs),
               recipe.Fit(steps=design.quick_steps if quick else design.steps, lr=design.lr, warmup=2 if quick else 20),
               seed=seed, class_weight=class_weights(train))
    probs = [torch.softmax(recipe.sequence_logits(model, [torch.from_numpy(c) for c in stack_nights([n])[0]]), -1)
             .numpy()[0] for n in test]
    result = _sanity(np.concatenate([n.y for n in test]), np.concatenate(probs))
    result.update({
        "protocol": (f"NOT AN ACCURACY: generator sanity check, {len(train)} generated nights for training, "
                     f"{len(test)} other generated nights (other synthetic subjects) scored" if nights.synthetic
                     else f"{nights.description}; trained on {len(train)} nights, scored the held-out subjects' "
                     f"{len(test)} nights (PyTorch, streaming form)"),
        "classes": list(CLASSES),
    })
    return result


def export_design(design: Design, work: Path, out: Path) -> Path:
    """The float model trained into ``work`` (checkpoint + report) -> float ONNX + manifest in ``out``."""
    import torch

    from models.export import write_manifest
    from models.seed import recipe

    work, out = Path(work), Path(out)
    report = json.loads((work / f"{design.stem}.report.json").read_text())
    model = design.build()
    model.load_state_dict(torch.load(work / f"{design.stem}.pt"))
    onnx_path = recipe.export_step(model, out / f"{design.stem}.float.onnx", [SAMPLES] * len(INPUTS))
    body = dict(report["manifest_body"], onnx=onnx_path.name, quantization="float32",
                quantization_detail="float32", metrics={})
    return write_manifest(out / f"{design.stem}.float.json", {"schema": 1, **body})


def quantize_design(design: Design, manifest: Path, *, data: Path | None, out: Path) -> Path:
    """Static int8 (QDQ; Conv, Gemm and MatMul in int8, recurrent parts float) of a float manifest,
    calibrated on generated (or ``data``) nights streamed through the float graph with their state."""
    from models.export import quantized_op_summary, write_manifest
    from models.seed import recipe

    manifest, out = Path(manifest), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    body = json.loads(manifest.read_text())
    float_path = manifest.parent / body["onnx"]
    signals, _ = stack_nights(load_nights(data, QUICK_DATA, seed=0, quick=True).train)
    steps = min(128, signals[0].shape[1]) // 16 * 16  # whole calibration batches of 16 steps: equal shapes
    _, feeds = recipe.onnx_stream(float_path, design.build(), [s[:, :steps] for s in signals])
    batches = [{k: np.concatenate([f[k] for f in feeds[i:i + 16]]) for k in feeds[0]} for i in range(0, len(feeds), 16)]
    int8_path = recipe.quantize_static(float_path, out / f"{design.stem}.int8.onnx", batches,
                                       op_types=("Conv", "Gemm", "MatMul"))
    ops = quantized_op_summary(int8_path)
    body.update(onnx=int8_path.name, quantization="int8-static+float",
                quantization_detail=("static QDQ, per-channel int8 weights, uint8 activations; int8 ops: "
                                     + ", ".join(f"{k} x{v}" for k, v in ops["int8"].items())
                                     + "; float32 ops: " + ", ".join(f"{k} x{v}" for k, v in ops["float"].items())))
    body.pop("sha256", None)
    return write_manifest(out / f"{design.stem}.json", body)


def render(design: Design, report: dict) -> str:
    """The model card, from a training report (synthetic or real weights)."""
    c = report["complexity"]
    s_f, s_q = report["sanity"]["float"], report["sanity"]["int8"]
    p = report["parity"]
    body = report["manifest_body"]
    synthetic = report.get("synthetic", True)
    f1 = lambda s: ", ".join(f"{k} {'-' if v is None else f'{v:.2f}'}" for k, v in s["f1"].items())  # noqa: E731
    state = body["state"]
    bands = ", ".join(
        f"`{i['name']}` <- signal `{i['signal']}` (" + (f"{i['band'][0]:g}-{i['band'][1]:g} Hz)" if i.get("band") else "no band)")
        for i in body["inputs"])
    lines = [f"# Model card: {design.title} (`{report['id']}`)", ""]
    if synthetic:
        lines += [
            "> **Synthetic weights.** This model was trained on generated signals "
            "(`models/seed/synthetic_psg.py`), not on any person's sleep. Its manifest says `\"synthetic\": true` "
            "and every stage message it produces carries `synthetic: true`. Do not use its stages as sleep "
            "stages. No figure below is an accuracy.",
            "",
        ]
    lines += [
        "## What it is",
        "",
        design.about,
        "",
        "| form | parameters | MACs per scored 30-s epoch |",
        "|---|---|---|",
        f"| published | {c['published']['parameters']:,} | {c['published']['macs_per_epoch']:,} |",
        f"| streaming (shipped) | {c['streaming']['parameters']:,} | {c['streaming']['macs_per_epoch']:,} |",
        "",
        f"Counted by `{design.source}.complexity()` (Conv, Linear and LSTM multiply-accumulates; "
        "pooling, activations and normalisation not counted). " + design.published,
        "",
        "## Inputs and outputs (manifest)",
        "",
        "Four ONNX inputs, one per channel, each `(batch, 1, 3000)`: 30 s at 100 Hz in microvolts. edged "
        "builds each from its device channel as training did (`edged.dsp`): the causal Butterworth band-pass "
        "named in the manifest at the channel's own rate, then resampling to 100 Hz: " + bands
        + f". Output `probabilities` (batch, 5): {', '.join(CLASSES)}. Context 1 epoch, look-ahead 0. "
        + ("Recurrent state carried by edged between epochs: "
           + ", ".join(f"`{x['input']}` -> `{x['output']}` {x['shape']}" for x in state) + "."
           if state else "No recurrent state."),
        "",
        "Replaying a Sleep-EDF-style EDF (channel names as in Sleep-EDF):",
        "",
        "```sh",
        f"edged replay night.edf --model models/shipped/{design.stem}.json {REPLAY_FLAGS}",
        "```",
        "",
    ]
    if synthetic:
        lines += [
            "## Training data: the synthetic generator",
            "",
            f"{report['plan']['train']} generated nights of {report['plan']['hours']:g} h for training, "
            f"{report['plan']['test']} other generated nights held out (seed {report['seed']}). The generator "
            "(`models/seed/synthetic_psg.py`, deterministic by seed) draws a plausible hypnogram (wake, ~90-min "
            "cycles, N3 early, REM late, brief awakenings) and writes, per stage: alpha in W (strongest on "
            "Pz-Oz), theta and vertex sharp waves in N1, spindles and K-complexes in N2, slow waves in N3, "
            "sawtooth bursts with rapid eye movements and EMG atonia in REM; blinks and saccades in wake EOG, "
            "slow rolling eye movements in N1; EMG tone falling from W to N3 and lowest in REM. Rhythm "
            "amplitudes vary from epoch to epoch and stage changes fall up to 10 s either side of the epoch "
            "boundary. Its EMG is a raw broadband signal (as a live board delivers it), unlike Sleep-EDF "
            "cassette recordings, whose EMG is a 1-Hz envelope.",
            "",
            "## Generator sanity check (NOT accuracy)",
            "",
            f"On the held-out generated nights ({s_q['epochs']} epochs), streamed epoch by epoch through the "
            "exported graphs. These numbers only show that the generator's stages are learnable and that "
            "export and quantisation keep the model intact; they say nothing about real sleep (the generator's "
            "stages are far easier to tell apart than real ones).",
        ]
    else:
        lines += [
            "## Training data",
            "",
            f"{report['data']}. {report['plan']['train']} nights for training, {report['plan']['test']} nights of "
            "held-out subjects (every fifth subject in sorted order) for the figures below.",
            "",
            "## Held-out subjects",
            "",
            f"{s_q['epochs']} scored epochs, streamed epoch by epoch through the exported graphs.",
        ]
    lines += [
        "",
        "| graph | kappa | accuracy | macro F1 | per-class F1 |",
        "|---|---|---|---|---|",
        f"| ONNX float | {s_f['kappa']} | {s_f['accuracy']} | {s_f['macro_f1']} | {f1(s_f)} |",
        f"| ONNX int8 (shipped) | {s_q['kappa']} | {s_q['accuracy']} | {s_q['macro_f1']} | {f1(s_q)} |",
        "",
        "## int8",
        "",
        f"{report['quantization']}: {report['quantization_detail']}",
        "",
        f"On {p['epochs']} held-out epochs: int8 and float agree on the stage of "
        f"{100 * p['float_vs_int8']:.2f} % of epochs (largest probability difference "
        f"{p['max_abs_probability_diff_int8']}; goal >= 99 %: {'met' if p['float_vs_int8'] >= 0.99 else 'NOT met'}). "
        + ("Variants tried, on training epochs not used for calibration: "
           + "; ".join(f"{a.get('calibration', 'Percentile')} calibration, {'/'.join(a['int8_ops'])} in int8: "
                       f"{100 * a['agreement_training_nights']:.2f} %"
                       + (f", {a['float_nodes']} nodes float" if a.get("float_nodes") else "")
                       for a in p.get("attempts", [])) + ". " if p.get("attempts") else "")
        + f"PyTorch and ONNX float agree on {100 * p['torch_vs_float']:.2f} % of those training epochs.",
        "",
        "## Reproduce",
        "",
        "```sh",
        f"{report['command'] or f'python -m models train {design.name} --out models/shipped'}",
        "```",
        "",
        f"Wall time {report['wall_seconds']:.0f} s, CPU time {report.get('cpu_seconds', 0):.0f} s on one thread "
        f"(fit {report['timing']['fit_s']:.0f} s wall, {report['history']['steps']} steps; loss "
        f"{report['history']['first_loss']} -> {report['history']['final_loss']}), on the shared 2-core "
        "development VM under `nice -n 10` with other jobs running (hence wall > CPU)"
        + (". Generating the nights is part of it." if synthetic else "."),
        "",
    ]
    if synthetic:
        lines += [
            "Real data (Sleep-EDF Expanded, which users download themselves from PhysioNet; none is on this "
            "machine, so it has not been run here):",
            "",
            "```sh",
            f"python -m models train {design.name} --data <Sleep-EDF dir> --out models/shipped",
            "```",
            "",
            "reads every `*-PSG.edf` with its hypnogram through `models/datasets/sleepedf.py` (cropped to 30 min "
            "around sleep), holds out every fifth subject, and writes a manifest with `\"synthetic\": false` and "
            "the held-out figures. Cassette EMG (`SC4*`) is a 1-Hz envelope: no 10-45 Hz band exists there, so "
            "that model's EMG input has no band and expects an envelope-like EMG; the manifest records it.",
            "",
        ]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ ULW-SleepNet


def _build():
    from models.seed.ulw_sleepnet import UlwStreaming

    return UlwStreaming()


def _arch(model) -> dict:
    return {"filters": [8, 16, 32], "dssc_blocks": 3, "fc": 64, "dropout": [0.1, 0.3], "shared_extractor": True}


def _complexity() -> dict:
    from models.seed.ulw_sleepnet import complexity

    return complexity()


DESIGN = Design(
    name="ulw-sleepnet",
    model_id="ulw-sleepnet-synthetic-v1",
    stem="ulw_sleepnet",
    title="ULW-SleepNet",
    build=_build,
    arch=_arch,
    complexity=_complexity,
    steps=200,
    quick_steps=3,
    batch=32,
    crop_epochs=1,
    lr=3e-3,
    source="models.seed.ulw_sleepnet",
    keep_float=("/extractor/blocks/blocks.0/",),  # the first DSSC block, on the full-rate signal
    about=(
        "ULW-SleepNet (Wang et al.; authors' Keras code github.com/wzw999/ULW-SLEEPNET) rebuilt in PyTorch "
        "(`models/seed/ulw_sleepnet.py`): one shared feature extractor of three Dual-Stream Separable "
        "Convolution blocks (8/16/32 filters) runs on each of the four channels, global average pooling, "
        "linear 64, linear 5. It scores each 30-s epoch from that epoch alone, so the published network is "
        "already causal; the streaming form edged runs is the same network with one ONNX input per channel, "
        "no state, and a fixed gain per channel (1/50, 1/50, 1/100, 1/10 for Fpz-Cz, Pz-Oz, EOG, EMG in uV) "
        "(the few-uV EMG and the 100-uV EOG differ a hundredfold in raw microvolts; scaled, training reached a "
        "lower loss in the same steps), and the shared extractor called once per channel rather than on the "
        "channels stacked into the batch (the same arithmetic), so that static int8 gives each channel's "
        "activations their own scale. If static int8 of the whole network misses the float-agreement bar, "
        "the variants that keep the first DSSC block float32 are tried (it reads the full-rate signal: "
        "930,000 of the 3,498,352 MACs per epoch, 26.6 %); the int8 section says which variant shipped. "
        "Trained here with AdamW and cosine decay (the recipe shared by the seed models), not "
        "the authors' Adam/AMSGrad with warm restarts."
    ),
    published=("Published: 13.3 K parameters and 7.89 M FLOPs (the trainable count matches exactly: 13,337; "
               "3.50 M MACs is about 7.0 M FLOPs before the BatchNorm, pooling and activation work); "
               "Sleep-EDF-20 86.9 % and Sleep-EDF-78 81.4 % accuracy (paper, real data, not reproduced here)."),
)

DATA = None  # trained on its synthetic generator unless --data names a Sleep-EDF directory
SHIPPED = "shipped/ulw_sleepnet.json"
CARD = ("models.seed.ulw_entry:render_card", "work/ulw-sleepnet/ulw_sleepnet.report.json", "cards/ulw-sleepnet.md")


def train(data, out, *, quick=False, seed=0, work=None, command="") -> dict:
    return run(DESIGN, data, out, quick=quick, seed=seed, work=work, command=command)


def evaluate(data, *, quick=False, seed=0, work=None) -> dict:
    return evaluate_design(DESIGN, data, quick=quick, seed=seed, work=work)


def export(work, out) -> Path:
    return export_design(DESIGN, work, out)


def quantize(manifest, *, data=None, out) -> Path:
    return quantize_design(DESIGN, manifest, data=data, out=out)


def render_card(report: dict) -> str:
    return render(DESIGN, report)
