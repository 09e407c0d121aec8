"""A small causal IBI sleep stager: a per-epoch conv encoder shared over the context window (the spirit of
WatchSleepNet's epoch encoder, ~1/1000 of its size) and a causal temporal conv head over the last C epochs.

Two ways to run the same weights, giving the same numbers for every epoch:

* :meth:`IbiStager.forward` -- the deployed form: ``ibi`` (batch, 1, C * 750), the IBI of epochs
  ``k - C + 1 .. k`` oldest first, to class probabilities (batch, 3). This is what is exported to ONNX.
* :meth:`IbiStager.night_logits` -- the training form: one whole night (or a crop of it) padded with
  ``C - 1`` zero epochs in front; each epoch is encoded once and the windows are formed from the encoded
  epochs, which is ~C times cheaper than encoding every window from scratch.

Everything the network derives from its input is computed from the window itself: per-epoch (epoch mean
IBI, relative beat-to-beat deviation, share of valid samples) and per-window (each epoch's mean IBI and
variability relative to the window's valid epochs). No whole-night statistic, no look-ahead.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

SAMPLES_PER_EPOCH = 750
N_SCALARS = 3  # per-epoch: log mean IBI, log relative variability, valid share
MIN_IBI = 0.25  # s (240 bpm): floor for the epoch mean before dividing by it
REL_CLIP = 0.5  # beat deviations beyond +-50 % of the epoch mean are clipped (ectopics, missed beats)


@dataclass(frozen=True)
class ArchConfig:
    context: int = 20  # C: epochs in the window, the scored one last
    enc_channels: tuple[int, ...] = (16, 32, 32, 48)
    enc_kernel: int = 5  # kernel of the stride-2 encoder convs after the first
    hidden: int = 32
    dilations: tuple[int, ...] = (1, 2, 4, 8)
    dropout: float = 0.2
    batchnorm: bool = False  # BatchNorm after each encoder conv: trained less stably here (see the card)
    absolute: bool = True  # also give the head each epoch's absolute mean IBI and variability

    def to_dict(self) -> dict:
        return asdict(self)


class EpochEncoder(nn.Module):
    """(N, 750) IBI samples of N epochs -> (N, enc_channels[-1] + 3) features of each epoch alone."""

    def __init__(self, channels: tuple[int, ...], kernel: int = 5, batchnorm: bool = True):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 2
        for i, c_out in enumerate(channels):
            # First layer: 10-sample kernel, stride 5 (25 Hz -> 5 Hz; a beat lasts ~25 samples).
            k, s, p = (10, 5, 0) if i == 0 else (kernel, 2, kernel // 2)
            layers.append(nn.Conv1d(c_in, c_out, k, stride=s, padding=p, bias=not batchnorm))
            if batchnorm:
                layers.append(nn.BatchNorm1d(c_out))
            layers.append(nn.ReLU())
            c_in = c_out
        self.conv = nn.Sequential(*layers)
        self.out_features = channels[-1] + N_SCALARS

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = (x > 0).to(x.dtype)
        count = m.sum(-1, keepdim=True)
        mean = (x * m).sum(-1, keepdim=True) / count.clamp(min=1.0)
        mean = mean.clamp(min=MIN_IBI)
        rel = (x / mean - 1.0).clamp(-REL_CLIP, REL_CLIP) * m
        var = (rel * rel).sum(-1, keepdim=True) / count.clamp(min=1.0)
        valid = count / SAMPLES_PER_EPOCH
        has = (count > 0).to(x.dtype)
        scalars = torch.cat([torch.log(mean) * has, torch.log(torch.sqrt(var) + 0.01) * has, valid], dim=-1)
        h = self.conv(torch.stack([rel * 4.0, m], dim=1))
        return torch.cat([h.mean(-1), scalars], dim=-1)


class CausalBlock(nn.Module):
    def __init__(self, channels: int, dilation: int, dropout: float):
        super().__init__()
        self.pad = 2 * dilation
        self.conv = nn.Conv1d(channels, channels, 3, dilation=dilation)
        self.drop = nn.Dropout(dropout)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.drop(F.relu(self.conv(F.pad(h, (self.pad, 0)))))


class WindowHead(nn.Module):
    """(B, C, F) encoded epochs of a window, oldest first -> (B, 3) logits for the last epoch."""

    def __init__(self, in_features: int, cfg: ArchConfig):
        super().__init__()
        self.enc_dim = in_features - N_SCALARS
        self.absolute = cfg.absolute
        self.inp = nn.Conv1d(in_features + (2 if cfg.absolute else 0), cfg.hidden, 1)
        self.blocks = nn.Sequential(*[CausalBlock(cfg.hidden, d, cfg.dropout) for d in cfg.dilations])
        self.fc = nn.Linear(2 * cfg.hidden, cfg.hidden)
        self.drop = nn.Dropout(cfg.dropout)
        self.out = nn.Linear(cfg.hidden, 3)

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        enc = e[..., : self.enc_dim]
        log_mean, log_var, valid = e[..., self.enc_dim], e[..., self.enc_dim + 1], e[..., self.enc_dim + 2]
        # Window-relative level and variability: heart rate and HRV of each epoch against the window's own
        # valid epochs (an epoch more than half missing does not count), which removes the subject's baseline.
        v = (valid > 0.5).to(e.dtype)
        nv = v.sum(-1, keepdim=True).clamp(min=1.0)
        rel_mean = (log_mean - (log_mean * v).sum(-1, keepdim=True) / nv) * v
        rel_var = (log_var - (log_var * v).sum(-1, keepdim=True) / nv) * v
        parts = [enc, (rel_mean * 5.0).unsqueeze(-1), rel_var.unsqueeze(-1), valid.unsqueeze(-1)]
        if self.absolute:  # the level itself still tells wake from sleep when a whole window is one stage
            has = (valid > 0).to(e.dtype)
            parts += [(log_mean * 3.0).unsqueeze(-1), ((log_var + 2.5) * has).unsqueeze(-1)]
        x = torch.cat(parts, dim=-1)
        h = self.blocks(F.relu(self.inp(x.transpose(1, 2))))
        z = torch.cat([h[:, :, -1], h.mean(-1)], dim=-1)
        return self.out(self.drop(F.relu(self.fc(z))))


class IbiStager(nn.Module):
    def __init__(self, cfg: ArchConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = EpochEncoder(cfg.enc_channels, cfg.enc_kernel, cfg.batchnorm)
        self.head = WindowHead(self.encoder.out_features, cfg)

    def forward(self, ibi: torch.Tensor) -> torch.Tensor:
        """Deployed form: (B, 1, C*750) -> softmax probabilities (B, 3)."""
        c = self.cfg.context
        e = self.encoder(ibi.reshape(-1, SAMPLES_PER_EPOCH))
        e = e.reshape(-1, c, e.shape[-1])
        return torch.softmax(self.head(e), dim=-1)

    def window_logits(self, ibi: torch.Tensor) -> torch.Tensor:
        c = self.cfg.context
        e = self.encoder(ibi.reshape(-1, SAMPLES_PER_EPOCH))
        return self.head(e.reshape(-1, c, e.shape[-1]))

    def night_logits(self, padded: torch.Tensor, lengths: list[int] | None = None) -> torch.Tensor:
        """Training form: ``padded`` (sum of (C - 1 + n_i), 750) = one or more nights (crops), each led by
        C - 1 epochs of context (zeros before a record start); returns (sum of n_i, 3) logits, one per
        epoch after each lead."""
        c = self.cfg.context
        e = self.encoder(padded)
        if lengths is None:
            lengths = [padded.shape[0]]
        parts, start = [], 0
        for n in lengths:
            parts.append(e[start : start + n].unfold(0, c, 1).transpose(1, 2))  # (n - C + 1, C, F)
            start += n
        return self.head(torch.cat(parts, dim=0))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def module_macs(model: IbiStager) -> dict[str, int]:
    """Multiply-accumulates of one deployed call (one scored epoch) per conv / linear module, by module
    name (``encoder.conv.0``, ``head.inp`` ...); the encoder's run once per context epoch."""
    out: dict[str, int] = {}
    length = SAMPLES_PER_EPOCH
    c = model.cfg.context
    for name, m in model.encoder.conv.named_children():
        if isinstance(m, nn.Conv1d):
            length = (length + 2 * m.padding[0] - m.dilation[0] * (m.kernel_size[0] - 1) - 1) // m.stride[0] + 1
            out[f"encoder.conv.{name}"] = m.in_channels * m.out_channels * m.kernel_size[0] * length * c
    for name, m in model.head.named_modules():
        if isinstance(m, nn.Conv1d):
            out[f"head.{name}"] = m.in_channels * m.out_channels * m.kernel_size[0] * c
        elif isinstance(m, nn.Linear):
            out[f"head.{name}"] = m.in_features * m.out_features
    return out


def macs_per_window(model: IbiStager) -> dict:
    per_module = module_macs(model)
    encoder = sum(v for k, v in per_module.items() if k.startswith("encoder."))
    return {
        "encoder_per_epoch": encoder // model.cfg.context,
        "head": sum(v for k, v in per_module.items() if k.startswith("head.")),
        "per_scored_epoch": sum(per_module.values()),
    }


def onnx_node_module(node_name: str) -> str:
    """The torch module an exported node came from: ``/head/blocks/blocks.0/conv/Conv`` -> ``head.blocks.0.conv``."""
    return ".".join(part.split(".")[-1] for part in node_name.strip("/").split("/")[:-1])
