"""SlumberNet (Sci Rep 2024): mouse EEG + EMG -> Wake / NREM / REM, one 4-s epoch at a time.

Inputs, built by the daemon from raw channels (``FilteredSignal`` in :mod:`edged.pipeline`; batch twin
:func:`models.seed.recipe.filtered_signal`), both at 64 Hz = 256 samples per 4-s epoch, in mV:

* ``eeg``: no filter before the anti-aliased resampler (SlumberNet filters only the EMG);
* ``emg``: causal Butterworth band-pass 0.5-25 Hz (the paper's 0.5-Hz high-pass; the upper edge sits
  under the 64-Hz output's Nyquist, where the resampler cuts anyway).

Per-epoch baseline correction happens inside the graph: each channel's least-squares line over the epoch
is subtracted (the authors' code subtracts a 12th-order polynomial, which over 4 s also removes most of
the delta band that marks NREM; a line removes drift and offset only).

Published form (:data:`PUBLISHED`): the (256, 2) epoch as a one-channel image; seven residual blocks,
feature maps 8, 16, 32, 64, 128, 256, 256 (doubling, capped), no striding; each block three Conv2D +
BatchNorm (+ ReLU between) with kernels (2, 8), (2, 5), (2, 3) (time x the 2-wide signal axis, Keras
"same" padding), a 1x1 Conv2D + BatchNorm shortcut, ReLU after the sum; global average pool, dense 3.
The "same" padding means most taps of the wide kernels fall on padding: 4.3 M parameters, but only
~0.9 G effective multiply-accumulates per epoch (taps on real data), which is the published cost figure.
The convolutions are computed as the equivalent 1-D convolution over (feature, signal) pairs so that
padding taps cost nothing; BatchNorm normalises each (feature map, signal column) pair [inferred].

Edge form (:class:`SlumberNetLite`, ``slumbernet-lite``): EEG and EMG as two channels of a 1-D network,
a strided stem and four depthwise-separable residual stages each halving time (256 -> 8), global average
pool, dense 3: ~1/1000 of the published cost, for many cages per Pi.

Both are causal by construction (one epoch, no context) and stateless.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

from models.seed.recipe import StateSpec, count_macs, count_parameters

CLASSES = ("W", "NREM", "REM")
FS = 64.0
EPOCH_SECONDS = 4.0
SAMPLES = 256
EEG_BAND: tuple[float, float] | None = None
EMG_BAND = (0.5, 25.0)


def detrend(x: torch.Tensor) -> torch.Tensor:
    """Subtract each epoch's least-squares line (last axis)."""
    n = x.shape[-1]
    t = torch.arange(n, dtype=torch.float32) - (n - 1) / 2
    centred = x - x.mean(dim=-1, keepdim=True)
    slope = (centred * t).sum(dim=-1, keepdim=True) / (t * t).sum()
    return centred - slope * t


class PairConv(nn.Module):
    """Keras ``Conv2D(f, (kt, kw), padding="same")`` on a (time, 2) image, computed as a Conv1d over
    (feature, column) channel pairs: column ``j`` of the output reads column ``c`` of the input through
    kernel tap ``c - j + pad_left``; taps that would read padding are simply absent. Parameters are the
    original 2-D kernel's; the exporter folds the gather into a constant 1-D kernel."""

    def __init__(self, c_in: int, c_out: int, kt: int, kw: int):
        super().__init__()
        self.c_in, self.c_out, self.kt, self.kw = c_in, c_out, kt, kw
        self.weight = nn.Parameter(torch.empty(c_out, c_in, kt, kw))
        self.bias = nn.Parameter(torch.zeros(c_out))
        nn.init.kaiming_uniform_(self.weight, a=5 ** 0.5)
        self.pad_left = (kw - 1) // 2
        self.last_macs = 0

    def kernel1d(self) -> torch.Tensor:
        rows = []
        for j in range(2):
            cols = []
            for c in range(2):
                tap = c - j + self.pad_left
                w = self.weight[..., tap] if 0 <= tap < self.kw else torch.zeros_like(self.weight[..., 0])
                cols.append(w)  # (out, in, kt)
            rows.append(torch.stack(cols, dim=2))  # (out, in, 2, kt)
        return torch.stack(rows, dim=1).reshape(2 * self.c_out, 2 * self.c_in, self.kt)

    def forward(self, x):  # (N, 2 * c_in, T): channel = feature * 2 + column
        pad = self.kt - 1  # Keras "same" for an even kernel pads the end
        y = F.conv1d(F.pad(x, (pad // 2, pad - pad // 2)), self.kernel1d(), self.bias.repeat_interleave(2))
        real_taps = sum(1 for j in range(2) for c in range(2) if 0 <= c - j + self.pad_left < self.kw)
        self.last_macs = y.shape[-1] * self.c_out * self.c_in * self.kt * real_taps
        return y


class Block(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        layers: list[nn.Module] = []
        c = c_in
        for i, kw in enumerate((8, 5, 3)):
            layers += [PairConv(c, c_out, 2, kw), nn.BatchNorm1d(2 * c_out)]
            if i < 2:
                layers.append(nn.ReLU())
            c = c_out
        self.body = nn.Sequential(*layers)
        self.shortcut = nn.Sequential(PairConv(c_in, c_out, 1, 1), nn.BatchNorm1d(2 * c_out))

    def forward(self, x):
        return F.relu(self.body(x) + self.shortcut(x))


@dataclass(frozen=True)
class Config:
    features: tuple[int, ...] = (8, 16, 32, 64, 128, 256, 256)


PUBLISHED = Config()


class SlumberNet(nn.Module):
    signal_names = ("eeg", "emg")

    def __init__(self, cfg: Config = PUBLISHED):
        super().__init__()
        self.cfg = cfg
        blocks, c = [], 1
        for f in cfg.features:
            blocks.append(Block(c, f))
            c = f
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(c, len(CLASSES))

    def state_specs(self) -> list[StateSpec]:
        return []

    def forward(self, eeg: torch.Tensor, emg: torch.Tensor):
        """``eeg``, ``emg`` (batch, T, 256) -> logits (batch, T, 3); every epoch on its own."""
        b, t, n = eeg.shape
        x = torch.stack([detrend(eeg), detrend(emg)], dim=2).reshape(b * t, 2, n)  # (N, 2 columns, time)
        y = self.blocks(x)  # (N, 2 * features, time)
        y = y.reshape(b * t, -1, 2 * n).mean(dim=2)
        return (self.head(y).reshape(b, t, -1),)


@dataclass(frozen=True)
class LiteConfig:
    stem: int = 16
    widths: tuple[int, ...] = (24, 32, 48, 64)
    kernel: int = 7


LITE = LiteConfig()


class SeparableStage(nn.Module):
    """Depthwise conv (stride 2) + pointwise conv, BatchNorm + ReLU each; a strided 1x1 shortcut."""

    def __init__(self, c_in: int, c_out: int, kernel: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv1d(c_in, c_in, kernel, stride=2, padding=kernel // 2, groups=c_in), nn.BatchNorm1d(c_in), nn.ReLU(),
            nn.Conv1d(c_in, c_out, 1), nn.BatchNorm1d(c_out),
        )
        self.shortcut = nn.Sequential(nn.Conv1d(c_in, c_out, 1, stride=2), nn.BatchNorm1d(c_out))

    def forward(self, x):
        return F.relu(self.body(x) + self.shortcut(x))


class SlumberNetLite(nn.Module):
    signal_names = ("eeg", "emg")

    def __init__(self, cfg: LiteConfig = LITE):
        super().__init__()
        self.cfg = cfg
        layers: list[nn.Module] = [nn.Conv1d(2, cfg.stem, cfg.kernel, stride=2, padding=cfg.kernel // 2),
                                   nn.BatchNorm1d(cfg.stem), nn.ReLU()]
        c = cfg.stem
        for w in cfg.widths:
            layers.append(SeparableStage(c, w, cfg.kernel))
            c = w
        self.net = nn.Sequential(*layers)
        self.head = nn.Linear(c, len(CLASSES))

    def state_specs(self) -> list[StateSpec]:
        return []

    def forward(self, eeg: torch.Tensor, emg: torch.Tensor):
        b, t, n = eeg.shape
        x = torch.stack([detrend(eeg), detrend(emg)], dim=2).reshape(b * t, n, 2).transpose(1, 2)
        return (self.head(self.net(x).mean(dim=2)).reshape(b, t, -1),)


def complexity() -> dict:
    """(parameters, MACs per 4-s epoch) of the published SlumberNet and of the edge variant. Published MACs
    count the taps that read real data (padding taps skipped, as :class:`PairConv` computes them)."""
    out = {}
    for name, model in (("published", SlumberNet()), ("lite", SlumberNetLite())):
        macs = count_macs(model, torch.zeros(1, 1, SAMPLES), torch.zeros(1, 1, SAMPLES))
        cfg = model.cfg
        out[name] = {"parameters": count_parameters(model), "macs_per_epoch": int(macs), "config": asdict(cfg)}
    return out
