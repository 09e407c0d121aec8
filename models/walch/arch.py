"""A small causal stager for wrist heart rate: a per-epoch encoder shared over the context window and a
causal dilated temporal conv head over the last C epochs, with elapsed time since the session start.

The WatchSleepNet design (per-epoch encoder + temporal model over epochs) shrunk for a 1-Hz held heart
rate: an epoch is 30 samples holding 3-15 readings, so the encoder is two small convs plus three scalars.

Two ways to run the same weights, giving the same numbers for every epoch:

* :meth:`HrStager.forward` -- the deployed form: ``hr`` (batch, 1, C * 30), the held interval of epochs
  ``k - C + 1 .. k`` oldest first, and ``elapsed`` (batch, 1, C), hours from the session start to each of
  those epochs (0 before the start), to class probabilities (batch, 3). This is what is exported to ONNX.
* :meth:`HrStager.night_logits` -- the training form: the same causal head run once along whole crops of
  nights (each led by ``C - 1`` epochs of history), O(n) instead of O(n * C); see :class:`SequenceHead`
  for why the two agree exactly.

Normalisation is computed inside the graph from the past only: each epoch's heart-rate level and
variability relative to the mean of the last ``baseline_epochs`` valid epochs (which removes the
subject's baseline), plus their absolute values. No whole-night statistic, no look-ahead.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

from models.ibi.arch import CausalBlock  # the same residual causal conv block as the slpdb model

N_SCALARS = 3  # per epoch: log mean interval, log relative variability, valid share
MIN_INTERVAL = 0.25  # s (240 bpm)
REL_CLIP = 0.5
ELAPSED_SCALE_H = 8.0  # elapsed hours are given as hours / 8, clipped at 1.5 (12 h)


@dataclass(frozen=True)
class ArchConfig:
    context: int = 70  # C: epochs in the window (35 min), the scored one last; >= reach
    samples_per_epoch: int = 30
    enc_channels: tuple[int, ...] = (16, 32)
    hidden: int = 32
    dilations: tuple[int, ...] = (1, 2, 4, 8)
    baseline_epochs: int = 40  # M: the heart-rate baseline is the mean of the last 20 min
    scales: tuple[int, ...] = (4, 10, 20)  # epochs: trailing level and spread of the heart rate (<= M)
    dropout: float = 0.2
    elapsed: bool = True  # use the elapsed-time input (still an input of the graph when False)

    @property
    def reach(self) -> int:
        """Epochs a position depends on, itself included: M + R - 1."""
        return self.baseline_epochs + 2 * sum(self.dilations)

    def to_dict(self) -> dict:
        return {**asdict(self), "reach": self.reach}


class EpochEncoder(nn.Module):
    """(N, 30) held intervals of N epochs -> (N, enc_channels[-1] + 3) features of each epoch alone."""

    def __init__(self, channels: tuple[int, ...]):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 2
        for i, c_out in enumerate(channels):
            layers += [nn.Conv1d(c_in, c_out, 5, stride=1 if i == 0 else 2, padding=2), nn.ReLU()]
            c_in = c_out
        self.conv = nn.Sequential(*layers)
        self.out_features = channels[-1] + N_SCALARS

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = (x > 0).to(x.dtype)
        count = m.sum(-1, keepdim=True)
        mean = ((x * m).sum(-1, keepdim=True) / count.clamp(min=1.0)).clamp(min=MIN_INTERVAL)
        rel = (x / mean - 1.0).clamp(-REL_CLIP, REL_CLIP) * m
        var = (rel * rel).sum(-1, keepdim=True) / count.clamp(min=1.0)
        has = (count > 0).to(x.dtype)
        scalars = torch.cat([torch.log(mean) * has, torch.log(torch.sqrt(var) + 0.005) * has,
                             count / x.shape[-1]], dim=-1)
        h = self.conv(torch.stack([rel * 10.0, m], dim=1))
        return torch.cat([h.mean(-1), scalars], dim=-1)


class SequenceHead(nn.Module):
    """(B, T, F) encoded epochs and (B, T) elapsed hours, oldest first -> (B, T, 3) logits, each position
    from itself and the positions before it only.

    Every operation is causal with a bounded reach: the heart-rate baseline of position ``j`` is the mean
    over the valid epochs of ``j - M + 1 .. j`` (M = ``baseline_epochs``), and the dilated convs reach
    ``R - 1 = 2 * sum(dilations)`` positions back. Position ``j`` therefore depends on epochs
    ``j - (M + R - 2) .. j`` only, and a window of ``C >= M + R - 1`` epochs gives its last position exactly
    the value the same head computes over a whole night: the deployed window form and the training
    night form are one function.
    """

    def __init__(self, in_features: int, cfg: ArchConfig):
        super().__init__()
        self.enc_dim = in_features - N_SCALARS
        self.use_elapsed = cfg.elapsed
        self.m = cfg.baseline_epochs
        self.scales = cfg.scales
        self.inp = nn.Conv1d(self.enc_dim + 6 + 2 * len(cfg.scales), cfg.hidden, 1)
        self.blocks = nn.Sequential(*[CausalBlock(cfg.hidden, d, cfg.dropout) for d in cfg.dilations])
        self.fc = nn.Conv1d(cfg.hidden + 1, cfg.hidden, 1)
        self.drop = nn.Dropout(cfg.dropout)
        self.out = nn.Conv1d(cfg.hidden, 3, 1)

    @staticmethod
    def _trailing_sum(x: torch.Tensor, m: int) -> torch.Tensor:
        """Sum over the last ``m`` positions (zeros before the start), along the last axis of (B, T). A
        pooled window, not a cumulative sum: a cumsum along a whole night accumulates float32 rounding that
        the 70-epoch window does not, and the two forms would drift apart by ~1e-3."""
        return F.avg_pool1d(F.pad(x.unsqueeze(1), (m - 1, 0)), m, stride=1).squeeze(1) * m

    def forward(self, e: torch.Tensor, elapsed: torch.Tensor) -> torch.Tensor:
        enc = e[..., : self.enc_dim]
        log_mean, log_var, valid = e[..., self.enc_dim], e[..., self.enc_dim + 1], e[..., self.enc_dim + 2]
        v = (valid > 0.5).to(e.dtype)
        nv = self._trailing_sum(v, self.m).clamp(min=1.0)
        base = self._trailing_sum(log_mean * v, self.m) / nv
        rel_mean = (log_mean - base) * v
        rel_var = (log_var - self._trailing_sum(log_var * v, self.m) / nv) * v
        # Heart-rate level and its spread over the last few minutes at several scales, against the baseline.
        scale_feats = []
        for s in self.scales:
            ns = self._trailing_sum(v, s)
            has_s = (ns > 0.5).to(e.dtype)
            ns = ns.clamp(min=1.0)
            mean_s = self._trailing_sum(log_mean * v, s) / ns
            sq_s = self._trailing_sum(log_mean * log_mean * v, s) / ns
            std_s = torch.sqrt((sq_s - mean_s * mean_s).clamp(min=0.0) + 1e-6)
            scale_feats += [((mean_s - base) * 8.0 * has_s).unsqueeze(-1),
                            (torch.log(std_s + 0.005) + 3.0).mul(has_s).unsqueeze(-1)]
        has = (valid > 0).to(e.dtype)
        el = (elapsed / ELAPSED_SCALE_H).clamp(0.0, 1.5) if self.use_elapsed else torch.zeros_like(elapsed)
        x = torch.cat([enc, (rel_mean * 8.0).unsqueeze(-1), rel_var.unsqueeze(-1), valid.unsqueeze(-1),
                       (log_mean * 3.0).unsqueeze(-1), ((log_var + 3.0) * has).unsqueeze(-1), el.unsqueeze(-1),
                       *scale_feats], dim=-1)
        h = self.blocks(F.relu(self.inp(x.transpose(1, 2))))
        z = torch.cat([h, el.unsqueeze(1)], dim=1)
        return self.out(self.drop(F.relu(self.fc(z)))).transpose(1, 2)


class HrStager(nn.Module):
    def __init__(self, cfg: ArchConfig):
        super().__init__()
        if cfg.context < cfg.reach:
            raise ValueError(f"context {cfg.context} < the head's reach {cfg.reach}: windows would differ from nights")
        self.cfg = cfg
        self.encoder = EpochEncoder(cfg.enc_channels)
        self.head = SequenceHead(self.encoder.out_features, cfg)

    def window_logits(self, hr: torch.Tensor, elapsed: torch.Tensor) -> torch.Tensor:
        c, s = self.cfg.context, self.cfg.samples_per_epoch
        e = self.encoder(hr.reshape(-1, s))
        return self.head(e.reshape(-1, c, e.shape[-1]), elapsed.reshape(-1, c))[:, -1]

    def forward(self, hr: torch.Tensor, elapsed: torch.Tensor) -> torch.Tensor:
        """Deployed form: (B, 1, C*30), (B, 1, C) -> softmax probabilities (B, 3)."""
        return torch.softmax(self.window_logits(hr, elapsed), dim=-1)

    def night_logits(self, hr: torch.Tensor, elapsed: torch.Tensor) -> torch.Tensor:
        """Training form: ``hr`` (B, C - 1 + n, 30) and ``elapsed`` (B, C - 1 + n), crops led by C - 1 epochs
        of history (zeros before a record start) -> (B, n, 3) logits."""
        b, t, s = hr.shape
        e = self.encoder(hr.reshape(-1, s)).reshape(b, t, -1)
        return self.head(e, elapsed)[:, self.cfg.context - 1 :]


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def macs_per_scored_epoch(model: HrStager) -> dict:
    """Multiply-accumulates of one deployed call: the encoder runs on each of the C epochs."""
    c = model.cfg.context
    length, enc = model.cfg.samples_per_epoch, 0
    for m in model.encoder.conv:
        if isinstance(m, nn.Conv1d):
            length = (length + 2 * m.padding[0] - (m.kernel_size[0] - 1) - 1) // m.stride[0] + 1
            enc += m.in_channels * m.out_channels * m.kernel_size[0] * length
    head = 0
    for m in model.head.modules():
        if isinstance(m, nn.Conv1d):
            head += m.in_channels * m.out_channels * m.kernel_size[0] * c
        elif isinstance(m, nn.Linear):
            head += m.in_features * m.out_features
    return {"encoder_per_epoch": enc, "head": head, "per_scored_epoch": enc * c + head}
