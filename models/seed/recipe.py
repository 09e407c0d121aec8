"""What WatchSleepNet, SleepVST and SlumberNet share on the training side: complexity counting, export of
stateful (recurrent / cached-attention) models to ONNX with their state as explicit inputs and outputs,
static int8 quantisation with calibration feeds, stream-vs-whole parity, a small training loop, and the
manifest they ship with.

The streaming contract every model here follows: ``model(*signals, *state) -> (logits, *new_state)``, with
each signal ``(batch, T, samples_per_epoch)`` and ``T`` epochs in time order. Whole-sequence scoring is one
call from the zero state; the daemon calls it with ``T = 1`` per closed epoch and carries the state
(:mod:`edged.scoring.session`). Because the zero state *is* the left padding, the two are the same
function, which :func:`stream_logits` lets tests check.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from models.export import OPSET, quantized_op_summary, write_manifest

log = logging.getLogger(__name__)

PROBABILITIES = "probabilities"


@dataclass(frozen=True)
class StateSpec:
    """One recurrent state tensor: ONNX input / output names and shape (batch first, batch = 1 here)."""

    input: str
    output: str
    shape: tuple[int, ...]

    def zeros(self, batch: int = 1) -> torch.Tensor:
        return torch.zeros((batch, *self.shape[1:]))

    def as_manifest(self) -> dict:
        return {"input": self.input, "output": self.output, "shape": list(self.shape)}


# ----------------------------------------------------------------------------------------- complexity


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def count_macs(module: nn.Module, *inputs: torch.Tensor) -> int:
    """Multiply-accumulates of one forward pass with ``inputs`` (batch 1 expected): Conv, Linear and LSTM
    counted from their shapes, plus whatever modules report themselves in ``last_macs`` (attention's
    matrix products, structured convolutions). Elementwise work (norms, activations) is not counted."""
    total = 0
    hooks = []

    def conv(m, inp, out):
        nonlocal total
        total += out.numel() * (m.in_channels // m.groups) * math.prod(m.kernel_size)

    def linear(m, inp, out):
        nonlocal total
        total += out.numel() * m.in_features

    def lstm(m, inp, out):
        nonlocal total
        x = inp[0]
        steps = x.shape[0] * x.shape[1]  # batch * time
        dirs = 2 if m.bidirectional else 1
        h = m.hidden_size
        for layer in range(m.num_layers):
            n_in = m.input_size if layer == 0 else h * dirs
            total += steps * dirs * 4 * h * (n_in + h)

    def reported(m, inp, out):
        nonlocal total
        total += int(getattr(m, "last_macs", 0))

    for m in module.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d)):
            hooks.append(m.register_forward_hook(conv))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(linear))
        elif isinstance(m, nn.LSTM):
            hooks.append(m.register_forward_hook(lstm))
        elif hasattr(m, "last_macs"):
            hooks.append(m.register_forward_hook(reported))
    try:
        with torch.no_grad():
            module.eval()(*inputs)
    finally:
        for h in hooks:
            h.remove()
    return int(total)


# ------------------------------------------------------------------------------ streaming / ONNX step


class OnnxStep(nn.Module):
    """The graph edged runs: one epoch per signal, shaped ``(batch, 1, samples)`` as the manifest implies,
    plus the state tensors; returns class probabilities ``(batch, classes)`` and the new state."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, *args):
        n = len(self.model.signal_names)
        signals, state = args[:n], args[n:]
        logits, *new_state = self.model(*signals, *state)
        return (torch.softmax(logits[:, -1], dim=-1), *new_state)


def zero_state(model: nn.Module, batch: int = 1) -> list[torch.Tensor]:
    return [s.zeros(batch) for s in model.state_specs()]


@torch.no_grad()
def stream_logits(model: nn.Module, signals: Sequence[torch.Tensor]) -> torch.Tensor:
    """Epoch by epoch with the state carried, as the daemon runs it: (batch, T, classes)."""
    model.eval()
    state = zero_state(model, signals[0].shape[0])
    out = []
    for t in range(signals[0].shape[1]):
        logits, *state = model(*(s[:, t : t + 1] for s in signals), *state)
        out.append(logits)
    return torch.cat(out, dim=1)


@torch.no_grad()
def sequence_logits(model: nn.Module, signals: Sequence[torch.Tensor]) -> torch.Tensor:
    """The whole sequence in one call from the zero state: (batch, T, classes)."""
    model.eval()
    return model(*signals, *zero_state(model, signals[0].shape[0]))[0]


def export_step(model: nn.Module, path: Path, samples: Sequence[int]) -> Path:
    """``model`` as its one-epoch ONNX step (see :class:`OnnxStep`), batch axis dynamic."""
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model.eval()
    specs = model.state_specs()
    example = tuple(torch.zeros(1, 1, n) for n in samples) + tuple(s.zeros() for s in specs)
    inputs = list(model.signal_names) + [s.input for s in specs]
    outputs = [PROBABILITIES] + [s.output for s in specs]
    with torch.no_grad():
        torch.onnx.export(
            OnnxStep(model), example, str(path), input_names=inputs, output_names=outputs,
            dynamic_axes={name: {0: "batch"} for name in inputs + outputs},
            opset_version=OPSET, do_constant_folding=True, dynamo=False,
        )
    onnx.checker.check_model(onnx.load(str(path)))
    return path


class _FeedReader:
    """onnxruntime calibration reader over prepared feed dicts."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]):
        self._it = iter(feeds)

    def get_next(self):
        return next(self._it, None)

    def rewind(self):  # pragma: no cover - only some calibrators call it
        raise NotImplementedError


def _equal_batches(feeds: list[dict[str, np.ndarray]], size: int = 32) -> list[dict[str, np.ndarray]]:
    """Single-epoch feeds -> batches of one size (the Percentile calibrator stacks them; a short last
    batch would not stack)."""
    size = min(size, len(feeds))
    return [{k: np.concatenate([f[k] for f in feeds[i : i + size]]) for k in feeds[0]}
            for i in range(0, len(feeds) - size + 1, size)]


def quantize_static(float_path: Path, out_path: Path, feeds: list[dict[str, np.ndarray]], *,
                    op_types: Sequence[str], calibrate_method: str = "Percentile",
                    exclude_nodes: Sequence[str] = ()) -> Path:
    """Static int8 of the ops in ``op_types`` (QDQ, per-channel symmetric int8 weights, uint8 activations:
    the settings of :func:`models.export.quantize_int8_static`), calibrated on ``feeds`` (real model inputs
    *with* realistic recurrent state); everything else stays float32. BatchNorm is already folded into the
    convolutions by the exporter (eval mode), which the pre-processing re-checks."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static as q
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(float_path), str(pre), skip_symbolic_shape=True)
        q(str(pre), str(out_path), _FeedReader(feeds), quant_format=QuantFormat.QDQ,
          activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
          op_types_to_quantize=list(op_types), nodes_to_exclude=list(exclude_nodes) or None,
          calibrate_method=getattr(CalibrationMethod, calibrate_method),
          extra_options={"WeightSymmetric": True})
    return Path(out_path)


def _kept_float(path: Path, first: bool, patterns: Sequence[str]) -> list[str]:
    import onnx

    names = [n.name for n in onnx.load(str(path)).graph.node]
    return ([first_conv(path)] if first else []) + [n for n in names if any(p in n for p in patterns)]


def first_conv(path: Path) -> str:
    """Name of the graph's first Conv node (the one reading the raw input)."""
    import onnx

    return next(n.name for n in onnx.load(str(path)).graph.node if n.op_type == "Conv")


def onnx_session(path: Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def onnx_stream(path: Path, model: nn.Module, signals: Sequence[np.ndarray]) -> tuple[np.ndarray, list]:
    """Run an exported step graph epoch by epoch over ``signals`` (each (batch, T, samples)), carrying the
    state; returns probabilities (batch, T, classes) and the per-step feeds (for calibration)."""
    sess = onnx_session(path)
    specs = model.state_specs()
    batch, steps = signals[0].shape[:2]
    state = {s.input: np.zeros((batch, *s.shape[1:]), np.float32) for s in specs}
    outs, feeds = [], []
    names = [PROBABILITIES] + [s.output for s in specs]
    for t in range(steps):
        feed = {n: np.ascontiguousarray(x[:, t : t + 1], dtype=np.float32) for n, x in zip(model.signal_names, signals)}
        feed.update(state)
        feeds.append(feed)
        probs, *new = sess.run(names, feed)
        state = {s.input: v for s, v in zip(specs, new)}
        outs.append(probs)
    return np.stack(outs, axis=1), feeds


# ------------------------------------------------------------------------------------------- training


@dataclass(frozen=True)
class Fit:
    steps: int
    lr: float = 2e-3
    weight_decay: float = 1e-3
    warmup: int = 20
    clip: float = 1.0


def fit(model: nn.Module, batch: Callable[[np.random.Generator], tuple[list[np.ndarray], np.ndarray]],
        cfg: Fit, *, seed: int, class_weight: np.ndarray | None = None) -> dict:
    """AdamW with warm-up and cosine decay; ``batch(rng)`` returns (signals, labels (B, T), -1 = ignore).
    Returns the loss curve summary."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    weight = None if class_weight is None else torch.tensor(class_weight, dtype=torch.float32)
    loss_fn = nn.CrossEntropyLoss(weight=weight, ignore_index=-1)
    losses = []
    started = time.perf_counter()
    model.train()
    for step in range(cfg.steps):
        lr = cfg.lr * min(1.0, (step + 1) / max(1, cfg.warmup)) * 0.5 * (1 + math.cos(math.pi * step / cfg.steps))
        for g in opt.param_groups:
            g["lr"] = lr
        signals, labels = batch(rng)
        xs = [torch.from_numpy(np.ascontiguousarray(s, dtype=np.float32)) for s in signals]
        logits = model(*xs, *zero_state(model, xs[0].shape[0]))[0]
        loss = loss_fn(logits.reshape(-1, logits.shape[-1]), torch.from_numpy(labels.reshape(-1)).long())
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
        opt.step()
        losses.append(float(loss.detach()))
        if step % 50 == 0 or step == cfg.steps - 1:
            log.debug("step %d/%d loss %.4f", step, cfg.steps, losses[-1])
    model.eval()
    tail = losses[-max(1, len(losses) // 10):]
    return {"steps": cfg.steps, "first_loss": round(losses[0], 4), "final_loss": round(float(np.mean(tail)), 4),
            "seconds": round(time.perf_counter() - started, 1)}


# ------------------------------------------------------------------------------------ export + manifest


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(np.argmax(a, -1) == np.argmax(b, -1)))


def ship(model: nn.Module, *, stem: str, out: Path, work: Path, samples: Sequence[int],
         calibration: Sequence[np.ndarray], check: Sequence[np.ndarray], manifest: dict,
         op_types: Sequence[str] = ("Conv", "Gemm", "MatMul"), calib_epochs: int = 512,
         float_first_conv: bool = False, float_nodes: Sequence[str] = (), calibrate_method: str = "Percentile") -> dict:
    """Float ONNX (into ``work``), static int8 (into ``out``) calibrated on ``calibration`` signals streamed
    through the float graph, parity of PyTorch / float / int8 on ``check`` signals, and the int8 manifest.
    Returns the parity report. ``manifest`` holds everything but onnx, sha256 and the quantisation fields."""
    out, work = Path(out), Path(work)
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    float_path = export_step(model, work / f"{stem}.float.onnx", samples)
    _, feeds = onnx_stream(float_path, model, calibration)
    # Calibration batches: every epoch's feed (batch x time) -> batches of 32 single-epoch feeds.
    flat = [{k: v[i : i + 1] for k, v in f.items()} for f in feeds for i in range(len(next(iter(f.values()))))]
    rng = np.random.default_rng(0)
    pick = rng.permutation(len(flat))[: min(len(flat), calib_epochs)]
    batches = _equal_batches([flat[j] for j in pick])
    exclude = _kept_float(float_path, float_first_conv, float_nodes)
    int8_path = quantize_static(float_path, out / f"{stem}.int8.onnx", batches, op_types=op_types, exclude_nodes=exclude,
                                calibrate_method=calibrate_method)
    with torch.no_grad():
        torch_probs = torch.softmax(sequence_logits(model, [torch.from_numpy(c) for c in check]), -1).numpy()
    float_probs, _ = onnx_stream(float_path, model, check)
    int8_probs, _ = onnx_stream(int8_path, model, check)
    ops = quantized_op_summary(int8_path)
    parity = {
        "epochs": int(np.prod(float_probs.shape[:2])),
        "torch_vs_float": round(agreement(torch_probs, float_probs), 4),
        "float_vs_int8": round(agreement(float_probs, int8_probs), 4),
        "max_abs_probability_diff_int8": round(float(np.abs(float_probs - int8_probs).max()), 4),
        "quantized_ops": ops,
    }
    kept = ", ".join(f"{k} x{v}" for k, v in ops["float"].items())
    done = ", ".join(f"{k} x{v}" for k, v in ops["int8"].items())
    body = dict(manifest)
    body.update({
        "onnx": int8_path.name,
        "quantization": "int8-static+float" if model.state_specs() or ops["float"] else "int8-static",
        "quantization_detail": (
            f"static QDQ, per-channel symmetric int8 weights, uint8 activations ({calibrate_method} calibration on "
            f"{len(pick)} epochs streamed with their recurrent state); BatchNorm folded into the convolutions "
            f"at export. int8 ops: {done}. float32 ops: {kept}."
        ),
    })
    body["training"] = dict(body.get("training", {}), int8_parity=parity)
    write_manifest(out / f"{stem}.json", {"schema": 1, **body})
    write_manifest(work / f"{stem}.float.json", {"schema": 1, **body, "onnx": float_path.name,
                                                "quantization": "float32", "quantization_detail": "float32"})
    return {"float": str(float_path), "int8": str(int8_path), "manifest": f"{stem}.json", "parity": parity}


# ------------------------------------------------------------------------ streaming building blocks


class CausalConv(nn.Module):
    """A dilated temporal conv over epochs. Causal: the ``(k - 1) * dilation`` past inputs it needs are its
    state (zeros = the left padding of the published TCN, made one-sided). Published: symmetric padding."""

    def __init__(self, channels: int, kernel: int, dilation: int, *, causal: bool):
        super().__init__()
        self.causal = causal
        self.history = (kernel - 1) * dilation
        pad = 0 if causal else self.history // 2
        self.conv = nn.Conv1d(channels, channels, kernel, dilation=dilation, padding=pad)

    def forward(self, x: torch.Tensor, state: torch.Tensor | None = None):
        if not self.causal:
            return self.conv(x), None
        full = torch.cat([state, x], dim=2)
        return self.conv(full), full[:, :, full.shape[2] - self.history :]


class WindowAttention(nn.Module):
    """Multi-head self-attention over epochs.

    ``window=None``: every epoch attends to every epoch of the sequence (the published, offline form).
    ``window=W``: causal, each epoch attends to itself and the ``W - 1`` epochs before it. Keys and values
    of those ``W - 1`` epochs, and whether each is real (1) or before the stream began (0), are the state:
    a KV cache, so the daemon computes one query and one key/value per epoch. ``alibi`` adds a per-head
    linear distance penalty (Press et al., ALiBi) instead of absolute positions, which a rolling cache
    cannot carry."""

    def __init__(self, dim: int, heads: int, *, window: int | None, alibi: bool = False, dropout: float = 0.0):
        super().__init__()
        assert dim % heads == 0, (dim, heads)
        self.dim, self.heads, self.window = dim, heads, window
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)
        slopes = torch.tensor([2.0 ** (-8.0 * (i + 1) / heads) for i in range(heads)]) if alibi else None
        self.register_buffer("slopes", slopes, persistent=False)
        self.last_macs = 0

    def state_specs(self, prefix: str) -> list[StateSpec]:
        if self.window is None:
            return []
        w = self.window - 1
        return [StateSpec(f"{prefix}_k_in", f"{prefix}_k_out", (1, w, self.dim)),
                StateSpec(f"{prefix}_v_in", f"{prefix}_v_out", (1, w, self.dim)),
                StateSpec(f"{prefix}_valid_in", f"{prefix}_valid_out", (1, w))]

    def forward(self, x: torch.Tensor, k_cache=None, v_cache=None, valid=None):
        b, t, _ = x.shape
        d, h, dh = self.dim, self.heads, self.dim // self.heads
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        if self.window is None:
            keys, values = k, v
            past = 0
            allowed = torch.ones(t, t, dtype=torch.bool)
            real = torch.ones(b, t)
        else:
            past = self.window - 1
            keys, values = torch.cat([k_cache, k], 1), torch.cat([v_cache, v], 1)
            real = torch.cat([valid, torch.ones(b, t)], 1)
            qpos = torch.arange(t).unsqueeze(1) + past
            kpos = torch.arange(t + past).unsqueeze(0)
            allowed = (kpos <= qpos) & (kpos > qpos - self.window)
        s = keys.shape[1]
        scores = q.reshape(b, t, h, dh).transpose(1, 2) @ keys.reshape(b, s, h, dh).permute(0, 2, 3, 1)
        scores = scores / math.sqrt(dh)
        if self.slopes is not None:
            distance = (torch.arange(t).unsqueeze(1) + past - torch.arange(s).unsqueeze(0)).float()
            scores = scores - self.slopes.view(1, h, 1, 1) * distance
        scores = scores.masked_fill(~allowed, -1e9) + (real - 1.0).view(b, 1, 1, s) * 1e9
        weights = self.drop(torch.softmax(scores, dim=-1))
        y = (weights @ values.reshape(b, s, h, dh).transpose(1, 2)).transpose(1, 2).reshape(b, t, d)
        self.last_macs = 2 * t * (s if self.window is None else self.window) * d
        if self.window is None:
            return self.out(y), ()
        return self.out(y), (keys[:, s - past :], values[:, s - past :], real[:, s - past :])


def filtered_signal(x: np.ndarray, fs: float, fs_out: float, band: tuple[float, float] | None) -> np.ndarray:
    """Batch twin of the daemon's raw-channel input (:class:`edged.pipeline.FilteredSignal`): the causal
    Butterworth band-pass the manifest names (zero initial state), then the anti-aliased resampler, both
    from :mod:`edged.dsp`. Training inputs are built with it, so a model sees in training what it sees live."""
    from scipy.signal import sosfilt

    from edged.dsp.filters import design_bandpass
    from edged.dsp.resample import resample

    y = sosfilt(design_bandpass(band[0], band[1], fs), np.asarray(x, np.float64)) if band else np.asarray(x, np.float64)
    return resample(y, fs, fs_out).astype(np.float32)


def epochs_of(x: np.ndarray, samples: int, n_epochs: int) -> np.ndarray:
    """A signal cut into ``n_epochs`` consecutive epochs of ``samples`` (zero-padded at the end)."""
    out = np.zeros(n_epochs * samples, np.float32)
    m = min(len(x), len(out))
    out[:m] = x[:m]
    return out.reshape(n_epochs, samples)


# ------------------------------------------------------------------------------ the shared recipe


@dataclass
class Prepared:
    """One recording as model inputs: ``inputs[k]`` is (n_epochs, samples) for signal input ``k`` and
    ``labels`` (n_epochs,) class indices, -1 unscored; ``subject`` groups recordings into folds."""

    name: str
    subject: str
    inputs: list[np.ndarray]
    labels: np.ndarray


@dataclass
class Recipe:
    """Everything that differs between the seed models; :func:`train` and :func:`evaluate` do the rest."""

    name: str  # registry name
    model_id: str
    stem: str  # file stem in models/shipped
    description: str
    classes: tuple[str, ...]
    epoch_seconds: float
    inputs: list[dict]  # manifest "inputs"
    build: Callable[[], nn.Module]
    arch: dict
    synthetic_nights: Callable[[Sequence[int], bool], list[Prepared]]  # seeds, quick
    real_nights: Callable[[Path, bool], list[Prepared]] | None
    synthetic_data: str  # what the generator is, for the manifest / card
    real_data: str  # what --data expects
    fit: Fit
    quick_fit: Fit
    crop: int  # epochs per training crop
    batch: int
    train_seeds: tuple[int, ...]
    eval_seeds: tuple[int, ...]
    quick_seeds: tuple[int, ...] = (0, 1)
    augment: Callable[[list[np.ndarray], np.random.Generator], list[np.ndarray]] | None = None
    class_weight_power: float = 0.5
    max_folds: int = 12
    calib_epochs: int = 512  # int8 calibration epochs (streamed with their state)
    check_epochs: int = 200  # epochs per recording in the torch / float / int8 parity check (stateless models)
    int8_ops: tuple[str, ...] = ("Conv", "Gemm", "MatMul")  # op types statically quantised; the rest stays float
    float_first_conv: bool = False  # keep the convolution reading the raw input in float
    float_nodes: tuple[str, ...] = ()  # ONNX nodes whose name contains one of these stay float
    calibrate_method: str = "Percentile"  # onnxruntime CalibrationMethod


def _batches(recipe: Recipe, nights: list[Prepared], batch: int):
    sizes = np.array([len(n.labels) for n in nights], dtype=np.float64)
    p = sizes / sizes.sum()
    crop = recipe.crop

    def draw(rng: np.random.Generator):
        xs = [[] for _ in nights[0].inputs]
        ys = []
        for i in rng.choice(len(nights), size=batch, p=p):
            n = nights[i]
            length = min(crop, len(n.labels))
            start = int(rng.integers(0, len(n.labels) - length + 1))
            for k, x in enumerate(n.inputs):
                xs[k].append(x[start : start + length])
            ys.append(n.labels[start : start + length])
        length = min(len(y) for y in ys)
        signals = [np.stack([a[:length] for a in x]) for x in xs]
        if recipe.augment is not None:
            signals = recipe.augment(signals, rng)
        return signals, np.stack([y[:length] for y in ys])

    return draw


def _class_weight(recipe: Recipe, nights: list[Prepared]) -> np.ndarray:
    labels = np.concatenate([n.labels for n in nights])
    counts = np.bincount(labels[labels >= 0], minlength=len(recipe.classes)).astype(np.float64)
    w = (counts.sum() / np.maximum(counts, 1)) ** recipe.class_weight_power
    return w / w.mean()


def train_model(recipe: Recipe, nights: list[Prepared], cfg: Fit, seed: int) -> tuple[nn.Module, dict]:
    torch.manual_seed(seed)
    model = recipe.build()
    batch = min(recipe.batch, 4) if cfg is recipe.quick_fit else recipe.batch  # a smoke run proves the path only
    log_fit = fit(model, _batches(recipe, nights, batch), cfg, seed=seed, class_weight=_class_weight(recipe, nights))
    return model, log_fit


@torch.no_grad()
def predict(model: nn.Module, night: Prepared) -> np.ndarray:
    """Class probabilities per epoch, the whole recording from the zero state (== epoch by epoch)."""
    xs = [torch.from_numpy(np.ascontiguousarray(x[None], dtype=np.float32)) for x in night.inputs]
    if not model.state_specs():  # stateless: epochs are independent, batch them
        xs = [x.transpose(0, 1) for x in xs]
        return torch.softmax(model.eval()(*xs)[0][:, 0], -1).numpy()
    return torch.softmax(sequence_logits(model, xs)[0], -1).numpy()


def _scores(recipe: Recipe, y: np.ndarray, p: np.ndarray) -> dict:
    from models.metrics import scores

    return scores(y, p, recipe.classes)


def _train_seeds(recipe: Recipe, quick: bool) -> tuple[int, ...]:
    return recipe.quick_seeds if quick else recipe.train_seeds


def _eval_seeds(recipe: Recipe, quick: bool) -> tuple[int, ...]:
    return recipe.eval_seeds[:1] if quick else recipe.eval_seeds


def _synthetic_scores(recipe: Recipe, model: nn.Module, quick: bool) -> dict:
    test_n = recipe.synthetic_nights(_eval_seeds(recipe, quick), quick)
    y = np.concatenate([n.labels for n in test_n])
    pred = np.concatenate([predict(model, n).argmax(1) for n in test_n])
    report = _scores(recipe, y, pred)
    report.update(protocol=f"synthetic: trained on generated recordings (seeds {list(_train_seeds(recipe, quick))}), "
                  f"scored on generated recordings of unseen seeds {list(_eval_seeds(recipe, quick))}; "
                  "a check of the generator and the training path, NOT an accuracy", synthetic=True)
    return report


def manifest_metrics(evaluation: dict | None, *, synthetic: bool) -> dict:
    """The manifest's ``metrics``. A synthetic model's scores on generated nights go under
    ``generator_sanity_check``, never as top-level kappa/accuracy, so no reader can take them for accuracy."""
    if evaluation is None:
        return {"protocol": "none: --quick smoke run"}
    if not synthetic:
        return evaluation
    return {"protocol": evaluation["protocol"], "synthetic": True,
            "generator_sanity_check": {k: v for k, v in evaluation.items() if k not in ("protocol", "synthetic")}}


def evaluate_recipe(recipe: Recipe, data: Path | None, *, quick: bool, seed: int) -> dict:
    """Real data: subject-wise folds (leave-one-subject-out up to ``max_folds`` subjects, else that many
    folds of whole subjects), predictions pooled. Synthetic: fit on the training seeds, score generated
    nights of unseen seeds (different generated "subjects") -- a check of the pipeline, not an accuracy."""
    started = time.perf_counter()
    cfg = recipe.quick_fit if quick else recipe.fit
    if data is None:
        model, _ = train_model(recipe, recipe.synthetic_nights(_train_seeds(recipe, quick), quick), cfg, seed)
        report = _synthetic_scores(recipe, model, quick)
    else:
        nights = recipe.real_nights(Path(data), quick)
        subjects = sorted({n.subject for n in nights})
        if len(subjects) < 2:
            raise ValueError(f"{data}: subject-wise folds need at least two subjects, found {subjects}")
        n_folds = min(len(subjects), 2 if quick else recipe.max_folds)
        folds = [subjects[i::n_folds] for i in range(n_folds)]
        ys, preds, per_fold = [], [], []
        for k, held in enumerate(folds):
            train_n = [n for n in nights if n.subject not in held]
            test_n = [n for n in nights if n.subject in held]
            model, _ = train_model(recipe, train_n, cfg, seed + k)
            y = np.concatenate([n.labels for n in test_n])
            p = np.concatenate([predict(model, n).argmax(1) for n in test_n])
            ys.append(y)
            preds.append(p)
            s = _scores(recipe, y, p)
            per_fold.append({"subjects": held, "epochs": s["epochs"], "kappa": s["kappa"], "accuracy": s["accuracy"],
                             "macro_f1": s["macro_f1"], "f1": s["f1"]})
            log.info("fold %d/%d %s kappa %s", k + 1, n_folds, held, s["kappa"])
        report = _scores(recipe, np.concatenate(ys), np.concatenate(preds))
        kind = "leave-one-subject-out" if n_folds == len(subjects) else f"{n_folds} folds of whole subjects"
        report.update(protocol=f"{kind} over {len(subjects)} subjects ({len(nights)} recordings), predictions pooled; "
                      "unscored epochs excluded", folds=per_fold, synthetic=False)
    report["classes"] = list(recipe.classes)
    report["wall_seconds"] = round(time.perf_counter() - started, 1)
    return report


def train_recipe(recipe: Recipe, data: Path | None, out: Path, *, quick: bool, seed: int, work: Path | None,
                 command: str) -> dict:
    """The whole recipe of the registry contract: evaluation (skipped with ``quick``), final fit, float
    ONNX, int8, parity, manifest; the report (and checkpoint) in ``work``."""
    torch.set_num_threads(1)
    started = time.perf_counter()
    out = Path(out)
    work = Path(work) if work is not None else out / "work"
    work.mkdir(parents=True, exist_ok=True)
    cfg = recipe.quick_fit if quick else recipe.fit
    if data is None:
        nights = recipe.synthetic_nights(_train_seeds(recipe, quick), quick)
        check = recipe.synthetic_nights(_eval_seeds(recipe, quick), quick)
        model, fit_log = train_model(recipe, nights, cfg, seed)
        # Synthetic: the final model is the evaluated one (same generated training set), scored on unseen seeds.
        evaluation = None if quick else dict(_synthetic_scores(recipe, model, False),
                                             wall_seconds=round(time.perf_counter() - started, 1))
    else:
        evaluation = None if quick else evaluate_recipe(recipe, data, quick=False, seed=seed)
        nights = recipe.real_nights(Path(data), quick)
        check = nights[:2]
        model, fit_log = train_model(recipe, nights, cfg, seed)
    torch.save({"state_dict": model.state_dict(), "arch": recipe.arch}, work / f"{recipe.stem}.pt")
    samples = [round(spec["fs"] * recipe.epoch_seconds) for spec in recipe.inputs]
    length = min(len(n.labels) for n in check)
    if not model.state_specs():
        length = min(length, 8 if quick else recipe.check_epochs)
    calib_len = min(len(n.labels) for n in nights[:4])
    calib_epochs = 8 if quick else recipe.calib_epochs
    calib_nights = nights[:4]
    steps = min(calib_len, -(-calib_epochs // len(calib_nights)))  # what calibration needs, no more
    calib = [np.stack([x[:steps] for x in col]) for col in zip(*[n.inputs for n in calib_nights])]
    check_x = [np.stack([x[:length] for x in col]) for col in zip(*[n.inputs for n in check])]
    manifest = {
        "id": recipe.model_id,
        "description": recipe.description if data is not None or "SYNTHETIC" in recipe.description else
        recipe.description.split("; trained on")[0] + ". Weights trained on SYNTHETIC signals.",
        "classes": list(recipe.classes),
        "epoch_seconds": recipe.epoch_seconds,
        "context_epochs": 1,
        "lookahead_epochs": 0,
        "inputs": recipe.inputs,
        "state": [s.as_manifest() for s in model.state_specs()],
        "output": PROBABILITIES,
        "synthetic": data is None,
        "training": {
            "data": recipe.synthetic_data if data is None else f"{recipe.real_data}: {data}",
            "recordings": [n.name for n in nights],
            "subjects": len({n.subject for n in nights}),
            "command": command,
            "seed": seed,
            "arch": recipe.arch,
            "parameters": count_parameters(model),
            "fit": fit_log,
            "quick": quick,
        },
        "metrics": manifest_metrics(evaluation, synthetic=data is None),
    }
    shipped = ship(model, stem=recipe.stem, out=out, work=work, samples=samples, calibration=calib, check=check_x,
                   manifest=manifest, calib_epochs=calib_epochs, op_types=recipe.int8_ops,
                   float_first_conv=recipe.float_first_conv, float_nodes=recipe.float_nodes,
                   calibrate_method=recipe.calibrate_method)
    wall = round(time.perf_counter() - started, 1)
    # The wall time belongs in the manifest too: rewrite it with the final figure.
    path = out / shipped["manifest"]
    raw = json.loads(path.read_text())
    raw["training"]["wall_seconds"] = wall
    write_manifest(path, raw)
    report = {"id": recipe.model_id, "name": recipe.name, "manifest": shipped["manifest"], "wall_seconds": wall,
              "synthetic": data is None, "parity": shipped["parity"], "evaluation": evaluation, "fit": fit_log,
              "command": command, "quick": quick, "data": None if data is None else str(data),
              "parameters": count_parameters(model), "manifest_body": raw}
    (work / f"{recipe.stem}.report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def load_trained(recipe: Recipe, work: Path) -> nn.Module:
    checkpoint = torch.load(Path(work) / f"{recipe.stem}.pt", weights_only=False)
    model = recipe.build()
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval()


def export_recipe(recipe: Recipe, work: Path, out: Path) -> Path:
    """The trained float model in ``work`` -> float ONNX + float32 manifest in ``out``."""
    model = load_trained(recipe, work)
    report = json.loads((Path(work) / f"{recipe.stem}.report.json").read_text())
    out = Path(out)
    samples = [round(spec["fs"] * recipe.epoch_seconds) for spec in recipe.inputs]
    path = export_step(model, out / f"{recipe.stem}.float.onnx", samples)
    body = dict(report["manifest_body"], onnx=path.name, quantization="float32", quantization_detail="float32")
    return write_manifest(out / f"{recipe.stem}.float.json", body)


def quantize_recipe(recipe: Recipe, manifest: Path, *, data: Path | None, out: Path, work: Path) -> Path:
    """Static int8 of the float model a manifest names, calibrated on generated (or ``data``) recordings
    streamed with their state; writes the int8 ONNX and its manifest into ``out``."""
    model = load_trained(recipe, work)
    raw = json.loads(Path(manifest).read_text())
    nights = recipe.synthetic_nights(recipe.train_seeds[:2], True) if data is None else recipe.real_nights(Path(data), True)
    steps = min([64 if model.state_specs() else 128] + [len(n.labels) for n in nights])
    calib = [np.stack([x[:steps] for x in col]) for col in zip(*[n.inputs for n in nights])]
    _, feeds = onnx_stream(Path(manifest).parent / raw["onnx"], model, calib)
    flat = [{k: v[i : i + 1] for k, v in f.items()} for f in feeds for i in range(len(next(iter(f.values()))))]
    batches = _equal_batches(flat)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    float_path = Path(manifest).parent / raw["onnx"]
    int8 = quantize_static(float_path, out / f"{recipe.stem}.int8.onnx", batches, op_types=recipe.int8_ops,
                           exclude_nodes=_kept_float(float_path, recipe.float_first_conv, recipe.float_nodes))
    ops = quantized_op_summary(int8)
    raw.update(onnx=int8.name, quantization="int8-static+float",
               quantization_detail=f"static QDQ int8 (Percentile, {len(flat)} calibration epochs); int8 ops: {ops['int8']}; float32: {ops['float']}")
    return write_manifest(out / f"{recipe.stem}.json", raw)


def score_real_recording(manifest: Path, path: Path, channel_map: dict[str, str], *, seconds: float | None = None) -> dict:
    """How shipped weights behave on a real, unlabelled recording: stage counts when edged's pipeline
    replays ``path`` (the first ``seconds``) into the int8 model. For synthetic weights this shows whether
    the generator transfers; it is not an accuracy (there are no labels)."""
    import asyncio

    from edged.pipeline import DevicePipeline
    from edged.scoring.session import OnnxModel
    from edged.sources.readers import read_recording
    from edged.sources.recording import Recording, SignalTrack
    from edged.sources.replay import ReplaySource

    rec = read_recording(path)
    if seconds is not None:
        rec = Recording(path=str(path), signals={k: SignalTrack(data=t.data[: int(seconds * t.fs)], fs=t.fs, units=t.units)
                                                  for k, t in rec.signals.items()})
    model = OnnxModel.load(manifest)

    async def run():
        source = ReplaySource("check", path=path, speed=0.0, chunk_seconds=1.0, recording=rec)
        pipe = DevicePipeline("check", source.channels(), model, anchor_time=0.0, channel_map=channel_map)
        out = []
        async for event in source.events():
            out += pipe.push(event)
        return out

    scored = asyncio.run(run())
    stages = [e.stage for e in scored]
    return {"recording": str(Path(path).name), "epochs": len(stages),
            "stages": {c: stages.count(c) for c in model.manifest.classes}}


def reship(recipe: Recipe, data: Path | None, out: Path, work: Path) -> dict:
    """Redo the int8 step of a finished training run from its checkpoint and report (e.g. after changing
    ``int8_ops``): same calibration and parity data as :func:`train_recipe`, same manifest otherwise."""
    report_path = Path(work) / f"{recipe.stem}.report.json"
    report = json.loads(report_path.read_text())
    model = load_trained(recipe, work)
    nights = recipe.synthetic_nights(_train_seeds(recipe, False), False) if data is None else recipe.real_nights(Path(data), False)
    check = recipe.synthetic_nights(_eval_seeds(recipe, False), False) if data is None else nights[:2]
    length = min(len(n.labels) for n in check)
    if not model.state_specs():
        length = min(length, recipe.check_epochs)
    calib_nights = nights[:4]
    steps = min(min(len(n.labels) for n in calib_nights), -(-recipe.calib_epochs // len(calib_nights)))
    calib = [np.stack([x[:steps] for x in col]) for col in zip(*[n.inputs for n in calib_nights])]
    check_x = [np.stack([x[:length] for x in col]) for col in zip(*[n.inputs for n in check])]
    body = {k: v for k, v in report["manifest_body"].items()
            if k not in ("schema", "onnx", "sha256", "quantization", "quantization_detail")}
    shipped = ship(model, stem=recipe.stem, out=Path(out), work=Path(work), samples=[round(i["fs"] * recipe.epoch_seconds) for i in recipe.inputs],
                   calibration=calib, check=check_x, manifest=body, calib_epochs=recipe.calib_epochs, op_types=recipe.int8_ops,
                   float_first_conv=recipe.float_first_conv, float_nodes=recipe.float_nodes,
                   calibrate_method=recipe.calibrate_method)
    path = Path(out) / shipped["manifest"]
    raw = json.loads(path.read_text())
    write_manifest(path, raw)
    report.update(parity=shipped["parity"], manifest_body=raw)
    report_path.write_text(json.dumps(report, indent=2) + "\n")
    return report
