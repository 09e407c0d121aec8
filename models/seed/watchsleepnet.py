"""WatchSleepNet (Wang et al., CHIL 2025): inter-beat intervals -> Wake / NREM / REM.

Input: the sample-and-hold IBI signal of :mod:`edged.dsp.ibi` (25 Hz, 750 samples per 30-s epoch, seconds,
0 = missing), no normalisation, exactly what the daemon builds from an RR, ECG or PPG channel.

Published form (:data:`PUBLISHED`, 8.46 M parameters, offline, sees the whole night):
per-epoch ResNet encoder (stem conv k7 1->16; four residual blocks 32/64/128/256 channels, stride 4:
750 -> 188 -> 47 -> 12 -> 3; a final conv k3 without padding -> one 256-d vector), a TCN across epochs
(three conv k5 256->256 + BN + ReLU + dropout, dilations 1/2/4, symmetric padding: +-14 epochs), a
4-layer bidirectional LSTM (hidden 256), multi-head self-attention (512-d, 16 heads) over the night,
linear 512 -> 3. The attention adds its input back (residual) [inferred; the brief does not say].

Streaming form (``causal=True``), what edged runs: the same encoder; TCN padded on the left only (28 past
epochs), its past inputs carried as state; a unidirectional LSTM whose hidden and cell state are explicit
ONNX inputs/outputs (batch-first ``(batch, layers, hidden)``); self-attention restricted to a bounded
causal window with a key/value cache (:class:`~models.seed.recipe.WindowAttention`), or none. One call
per epoch; see :mod:`models.seed.recipe` for the contract and the stream == whole-night identity.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import torch
from torch import nn

from models.seed.recipe import CausalConv, StateSpec, WindowAttention, count_macs, count_parameters

SAMPLES = 750  # 30 s at 25 Hz
CLASSES = ("W", "NREM", "REM")
MIN_IBI = 0.25  # s: floor for an epoch's mean interval before dividing or taking a log
N_STATS = 5


@dataclass(frozen=True)
class Config:
    stem: int = 16
    channels: tuple[int, ...] = (32, 64, 128, 256)
    tcn_kernel: int = 5
    dilations: tuple[int, ...] = (1, 2, 4)
    lstm_layers: int = 4
    lstm_hidden: int = 256
    heads: int = 16  # 0: no attention
    dropout: float = 0.2
    causal: bool = False
    attention_window: int = 16  # causal form only: epochs attended, the scored one included
    # Edge addition (not in the paper): per-epoch IBI statistics against a running baseline of the night
    # so far (state ``baseline``), and the encoder fed beat-to-beat deviations relative to the epoch mean
    # instead of raw seconds. A subject's resting heart rate then no longer has to be learnt from a dozen
    # training nights; everything stays causal. See :class:`EpochStats`.
    epoch_stats: bool = False
    baseline_epochs: float = 60.0  # the running baseline's time constant (30 min)


PUBLISHED = Config()
STREAMING = replace(PUBLISHED, causal=True)  # the published widths, made causal
# What ships: the streaming form narrowed so that leave-one-subject-out training fits a one-core budget.
EDGE = Config(stem=8, channels=(16, 24, 32, 48), lstm_layers=1, lstm_hidden=48, heads=4, dropout=0.2,
              causal=True, attention_window=16, epoch_stats=True)


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, dropout: float):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv1d(c_in, c_out, 3, stride=4, padding=1), nn.BatchNorm1d(c_out), nn.ReLU(), nn.Dropout(dropout),
            nn.Conv1d(c_out, c_out, 3, padding=1), nn.BatchNorm1d(c_out), nn.ReLU(), nn.Dropout(dropout),
        )
        self.shortcut = nn.Sequential(nn.Conv1d(c_in, c_out, 1, stride=4), nn.BatchNorm1d(c_out))

    def forward(self, x):
        return self.body(x) + self.shortcut(x)


class Encoder(nn.Module):
    """One 30-s IBI epoch (N, 1, 750) -> (N, channels[-1])."""

    def __init__(self, cfg: Config):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv1d(2 if cfg.epoch_stats else 1, cfg.stem, 7, padding=3), nn.ReLU()]
        c = cfg.stem
        for width in cfg.channels:
            layers.append(ResBlock(c, width, cfg.dropout))
            c = width
        layers.append(nn.Conv1d(c, c, 3))  # length 3 -> 1
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x).mean(dim=2)


class EpochStats(nn.Module):
    """Per epoch of IBI (batch, T, 750): the encoder's input (deviation of each sample from the epoch's
    mean interval, relative, clipped to +-50 % (ectopics, missed beats), x4; and the valid-beat mask) and
    five scalars: log mean interval and log variability relative to the running baseline, the valid share,
    and the absolute log mean and log variability. The baseline (state ``(batch, 3)``: log mean, log
    variability, epochs counted) is the running mean of the epochs at least half valid, becoming an
    exponential average with a ``tau``-epoch time constant once that many have been seen."""

    def __init__(self, tau: float):
        super().__init__()
        self.alpha_min = 1.0 / tau

    def forward(self, x: torch.Tensor, baseline: torch.Tensor):
        valid = (x > 0).float()
        count = valid.sum(-1)
        has = (count > 0).float()
        mean = (x * valid).sum(-1) / count.clamp(min=1.0)
        centred = (x - mean.unsqueeze(-1)) * valid
        sd = torch.sqrt((centred * centred).sum(-1) / count.clamp(min=1.0))
        log_mean = torch.log(mean.clamp(min=MIN_IBI)) * has
        log_sd = torch.log(sd + 0.01) * has
        share = count / x.shape[-1]
        rel = (centred / mean.clamp(min=MIN_IBI).unsqueeze(-1)).clamp(-0.5, 0.5) * 4.0
        bm, bs, n = baseline[:, 0], baseline[:, 1], baseline[:, 2]
        rel_mean, rel_sd = [], []
        for t in range(x.shape[1]):
            use = (share[:, t] > 0.5).float()
            n = n + use
            a = use * torch.maximum(1.0 / n.clamp(min=1.0), torch.full_like(n, self.alpha_min))
            bm = bm + a * (log_mean[:, t] - bm)
            bs = bs + a * (log_sd[:, t] - bs)
            rel_mean.append((log_mean[:, t] - bm) * use)
            rel_sd.append((log_sd[:, t] - bs) * use)
        scalars = torch.stack([torch.stack(rel_mean, 1) * 5.0, torch.stack(rel_sd, 1), share,
                               log_mean * 3.0, (log_sd + 2.5) * has], dim=-1)
        return torch.stack([rel, valid], dim=2), scalars, torch.stack([bm, bs, n], dim=1)


class TcnLayer(nn.Module):
    def __init__(self, channels: int, kernel: int, dilation: int, *, causal: bool, dropout: float):
        super().__init__()
        self.conv = CausalConv(channels, kernel, dilation, causal=causal)
        self.post = nn.Sequential(nn.BatchNorm1d(channels), nn.ReLU(), nn.Dropout(dropout))

    def forward(self, x, state=None):
        y, new = self.conv(x, state)
        return self.post(y), new


class WatchSleepNet(nn.Module):
    signal_names = ("ibi",)

    def __init__(self, cfg: Config = STREAMING):
        super().__init__()
        self.cfg = cfg
        c = cfg.channels[-1]
        self.encoder = Encoder(cfg)
        self.stats = EpochStats(cfg.baseline_epochs) if cfg.epoch_stats else None
        self.mix = nn.Linear(c + N_STATS, c) if cfg.epoch_stats else None
        self.tcn = nn.ModuleList(
            TcnLayer(c, cfg.tcn_kernel, d, causal=cfg.causal, dropout=cfg.dropout) for d in cfg.dilations
        )
        self.lstm = nn.LSTM(c, cfg.lstm_hidden, cfg.lstm_layers, batch_first=True, bidirectional=not cfg.causal,
                            dropout=cfg.dropout if cfg.lstm_layers > 1 else 0.0)
        d = cfg.lstm_hidden * (1 if cfg.causal else 2)
        self.attention = (
            WindowAttention(d, cfg.heads, window=cfg.attention_window if cfg.causal else None, dropout=0.0)
            if cfg.heads else None
        )
        self.head = nn.Linear(d, len(CLASSES))

    def state_specs(self) -> list[StateSpec]:
        cfg = self.cfg
        if not cfg.causal:
            return []
        c = cfg.channels[-1]
        specs = [StateSpec(f"tcn{i}_in", f"tcn{i}_out", (1, c, layer.conv.history)) for i, layer in enumerate(self.tcn)]
        shape = (1, cfg.lstm_layers, cfg.lstm_hidden)
        specs += [StateSpec("h_in", "h_out", shape), StateSpec("c_in", "c_out", shape)]
        if self.attention is not None:
            specs += self.attention.state_specs("attn")
        if self.stats is not None:
            specs.append(StateSpec("baseline_in", "baseline_out", (1, 3)))
        return specs

    def forward(self, ibi: torch.Tensor, *state: torch.Tensor):
        """``ibi`` (batch, T, 750) -> logits (batch, T, 3), then the new state (causal form)."""
        b, t, n = ibi.shape
        if self.stats is not None:
            enc_in, scalars, baseline = self.stats(ibi, state[-1])
            z = self.encoder(enc_in.reshape(b * t, 2, n)).reshape(b, t, -1)
            z = torch.relu(self.mix(torch.cat([z, scalars], dim=-1))).transpose(1, 2)
        else:
            z = self.encoder(ibi.reshape(b * t, 1, n)).reshape(b, t, -1).transpose(1, 2)
        new_state: list[torch.Tensor] = []
        k = len(self.tcn)
        for i, layer in enumerate(self.tcn):
            z, s = layer(z, state[i] if self.cfg.causal else None)
            if s is not None:
                new_state.append(s)
        z = z.transpose(1, 2)
        if self.cfg.causal:
            h0, c0 = state[k].transpose(0, 1).contiguous(), state[k + 1].transpose(0, 1).contiguous()
            z, (h1, c1) = self.lstm(z, (h0, c0))
            new_state += [h1.transpose(0, 1), c1.transpose(0, 1)]
        else:
            z, _ = self.lstm(z)
        if self.attention is not None:
            y, cache = self.attention(z, *state[k + 2 : k + 5]) if self.cfg.causal else self.attention(z)
            z = z + y
            new_state += list(cache)
        if self.stats is not None:
            new_state.append(baseline)
        return (self.head(z), *new_state)


def complexity(cfg: Config | None = None, *, nights_epochs: int = 960) -> dict:
    """(parameters, MACs per scored epoch) of the published, the streaming (published widths) and the
    shipped edge form. The published form scores a whole night at once: its MACs per epoch are those of a
    ``nights_epochs``-epoch night divided by it (the attention term grows with the night). The streaming
    forms do one epoch per call, state carried."""
    out = {}
    for name, c in ({"published": PUBLISHED, "streaming": STREAMING, "edge": EDGE} if cfg is None else {"custom": cfg}).items():
        model = WatchSleepNet(c)
        if c.causal:
            macs = count_macs(model, torch.zeros(1, 1, SAMPLES), *[s.zeros() for s in model.state_specs()])
        else:
            macs = count_macs(model, torch.zeros(1, nights_epochs, SAMPLES)) / nights_epochs
        out[name] = {"parameters": count_parameters(model), "macs_per_epoch": int(macs), "config": asdict(c)}
    return out
