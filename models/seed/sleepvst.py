"""SleepVST (the SHHS/MESA baseline design): ECG + thoracic respiration -> Wake / Light / Deep / REM.

Inputs, built by the daemon from raw channels with :mod:`edged.dsp` (``FilteredSignal`` in
:mod:`edged.pipeline`; the batch twin is :func:`models.seed.recipe.filtered_signal`):

* ``ecg``: the ECG band-passed 0.66-2.8 Hz (causal Butterworth, order 4) into a pulse-like wave at the
  heart rate, resampled to 10 Hz: 300 samples per 30-s epoch. This is SleepVST's "ECG-derived 10 Hz"
  signal, and it needs nothing beyond the generic raw-channel path.
* ``resp``: the thoracic belt band-passed 0.1-1.0 Hz (:data:`edged.dsp.respiration.RESP_BAND`),
  resampled to 5 Hz: 150 samples per epoch.

Each 30-s patch is z-scored on its own inside the graph (SleepVST's per-patch normalisation, so no
whole-night statistics are needed). SleepVST also median-filters the belt (k5); this implementation
leaves it out (the band-pass already removes what a 5-sample median would).

Published form (:data:`PUBLISHED`, ~1.4 M parameters): two waveform encoders (stem conv k7 1->16, six
residual blocks to 64 channels, each max-pooling by 2, global average pool, linear 64 -> 64),
concatenated to d = 128, sinusoidal positions, a pre-LN transformer (8 heads, FF 512, dropout 0.1, 6
layers), final LayerNorm, linear 128 -> 4, over a 240-epoch (2-h) window, attention in both directions.

Streaming form (``causal=True``): each epoch encoded once; attention causal over the newest 240 epochs
with per-layer key/value caches as explicit state (:class:`~models.seed.recipe.WindowAttention`), and
ALiBi distance penalties instead of absolute positions (a rolling cache has no fixed position 0).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import torch
from torch import nn

from edged.dsp.respiration import RESP_BAND
from models.seed.recipe import StateSpec, WindowAttention, count_macs, count_parameters

CLASSES = ("W", "Light", "Deep", "REM")
ECG_FS, RESP_FS = 10.0, 5.0
ECG_BAND = (0.66, 2.8)
ECG_SAMPLES, RESP_SAMPLES = 300, 150


@dataclass(frozen=True)
class Config:
    stem: int = 16
    channels: tuple[int, ...] = (16, 16, 32, 32, 64, 64)
    embed: int = 64  # per modality; the transformer width is 2 * embed
    layers: int = 6
    heads: int = 8
    ff: int = 512
    dropout: float = 0.1
    context: int = 240  # epochs attended (2 h)
    causal: bool = False


PUBLISHED = Config()
STREAMING = replace(PUBLISHED, causal=True)
# What ships: the streaming form narrowed for a one-core training budget and a Pi.
EDGE = Config(stem=8, channels=(8, 8, 16, 16, 32, 32), embed=32, layers=2, heads=4, ff=128, dropout=0.1,
              context=240, causal=True)


def zscore(x: torch.Tensor) -> torch.Tensor:
    """Each epoch (last axis) to zero mean and unit SD; an all-constant epoch (missing) becomes zeros."""
    centred = x - x.mean(dim=-1, keepdim=True)
    return centred / torch.sqrt((centred * centred).mean(dim=-1, keepdim=True) + 1e-8)


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv1d(c_in, c_out, 3, padding=1), nn.BatchNorm1d(c_out), nn.ReLU(),
                                  nn.Conv1d(c_out, c_out, 3, padding=1), nn.BatchNorm1d(c_out))
        self.shortcut = (nn.Sequential(nn.Conv1d(c_in, c_out, 1), nn.BatchNorm1d(c_out))
                         if c_in != c_out else nn.Identity())
        self.post = nn.Sequential(nn.ReLU(), nn.MaxPool1d(2))

    def forward(self, x):
        return self.post(self.body(x) + self.shortcut(x))


class WaveEncoder(nn.Module):
    """One 30-s patch (N, 1, samples) -> (N, embed)."""

    def __init__(self, cfg: Config):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv1d(1, cfg.stem, 7, padding=3), nn.BatchNorm1d(cfg.stem), nn.ReLU()]
        c = cfg.stem
        for width in cfg.channels:
            layers.append(ResBlock(c, width))
            c = width
        self.net = nn.Sequential(*layers)
        self.proj = nn.Linear(c, cfg.embed)

    def forward(self, x):
        return self.proj(self.net(x).mean(dim=2))


class Layer(nn.Module):
    """Pre-LN transformer layer; attention full (published) or causal with a KV cache (streaming)."""

    def __init__(self, cfg: Config):
        super().__init__()
        d = 2 * cfg.embed
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attention = WindowAttention(d, cfg.heads, window=cfg.context if cfg.causal else None,
                                         alibi=cfg.causal, dropout=cfg.dropout)
        self.ff = nn.Sequential(nn.Linear(d, cfg.ff), nn.ReLU(), nn.Dropout(cfg.dropout), nn.Linear(cfg.ff, d))
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x, *cache):
        y, new = self.attention(self.norm1(x), *cache)
        x = x + self.drop(y)
        return x + self.drop(self.ff(self.norm2(x))), new


def sinusoid(t: int, d: int) -> torch.Tensor:
    pos = torch.arange(t, dtype=torch.float32).unsqueeze(1)
    freq = torch.exp(torch.arange(0, d, 2, dtype=torch.float32) * (-math.log(10000.0) / d))
    pe = torch.zeros(t, d)
    pe[:, 0::2], pe[:, 1::2] = torch.sin(pos * freq), torch.cos(pos * freq)
    return pe


class SleepVST(nn.Module):
    signal_names = ("ecg", "resp")

    def __init__(self, cfg: Config = STREAMING):
        super().__init__()
        self.cfg = cfg
        self.ecg_encoder, self.resp_encoder = WaveEncoder(cfg), WaveEncoder(cfg)
        self.layers = nn.ModuleList(Layer(cfg) for _ in range(cfg.layers))
        self.norm = nn.LayerNorm(2 * cfg.embed)
        self.head = nn.Linear(2 * cfg.embed, len(CLASSES))

    def state_specs(self) -> list[StateSpec]:
        return [s for i, layer in enumerate(self.layers) for s in layer.attention.state_specs(f"layer{i}")]

    def forward(self, ecg: torch.Tensor, resp: torch.Tensor, *state: torch.Tensor):
        """``ecg`` (batch, T, 300), ``resp`` (batch, T, 150) -> logits (batch, T, 4), then the new state."""
        b, t, _ = ecg.shape
        e = self.ecg_encoder(zscore(ecg).reshape(b * t, 1, -1))
        r = self.resp_encoder(zscore(resp).reshape(b * t, 1, -1))
        x = torch.cat([e, r], dim=1).reshape(b, t, -1)
        if not self.cfg.causal:
            x = x + sinusoid(t, x.shape[-1])
        new_state: list[torch.Tensor] = []
        for i, layer in enumerate(self.layers):
            x, cache = layer(x, *state[3 * i : 3 * i + 3])
            new_state += list(cache)
        return (self.head(self.norm(x)), *new_state)


def complexity(cfg: Config | None = None) -> dict:
    """(parameters, MACs per scored epoch). Published: one 240-epoch window scores 240 epochs, so MACs per
    epoch = window MACs / 240 (a daemon re-running the window every epoch would pay 240x that). Streaming:
    one epoch per call with the caches carried."""
    out = {}
    for name, c in ({"published": PUBLISHED, "streaming": STREAMING, "edge": EDGE} if cfg is None else {"custom": cfg}).items():
        model = SleepVST(c)
        if c.causal:
            macs = count_macs(model, torch.zeros(1, 1, ECG_SAMPLES), torch.zeros(1, 1, RESP_SAMPLES),
                              *[s.zeros() for s in model.state_specs()])
        else:
            macs = count_macs(model, torch.zeros(1, c.context, ECG_SAMPLES), torch.zeros(1, c.context, RESP_SAMPLES)) / c.context
        out[name] = {"parameters": count_parameters(model), "macs_per_epoch": int(macs), "config": asdict(c)}
    return out
