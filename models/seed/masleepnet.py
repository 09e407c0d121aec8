"""MASleepNet (Wang et al., "MASleepNet: A Sleep Staging Model Integrating Multi-Scale Convolution and
Attention Mechanisms", Biomimetics 2025, 10(10):642), reconstructed in PyTorch.

No code is public; what the paper states: per modality (EEG Fpz-Cz/Pz-Oz, EOG, EMG at 100 Hz) a
multi-scale CNN with a short branch (kernel 50, spindles and fast activity) and a long branch (kernel 400,
~4 s, slow waves), squeeze-and-excitation (SE) in each branch; channel-wise attention fusing the
modalities; a BiLSTM sequence encoder with attention "to identify key temporal segments"; a fully
connected classifier. Everything else is a reconstruction [inferred], in the spirit of the multi-resolution
CNNs it builds on:

* short branch: conv k50 s6 -> BN -> GELU -> max-pool 8/2 -> dropout -> 2 x (conv k8 -> BN -> GELU) ->
  max-pool 4/4 -> SE; long branch: conv k400 s50 -> BN -> GELU -> max-pool 4/2 -> dropout ->
  2 x (conv k7 -> BN -> GELU) -> max-pool 2/2 -> SE; the two maps concatenated along time (64 + 16 steps);
* three modalities (EEG with its two derivations as two input channels, EOG, EMG), each its own branch
  weights; fused by SE attention over the stacked modality channels, then a 1x1 conv to ``d_model``;
* attention pooling over the 80 time steps of the epoch (the "key temporal segments") -> one vector
  per epoch; an LSTM across epochs; a linear classifier per epoch.

:class:`MASleepNet` with ``bidirectional=True`` is the published form: a sequence of epochs -> one
label per epoch, using the future epochs of the sequence through the backward LSTM. It cannot run live.
The streaming form (``bidirectional=False``) replaces it with a unidirectional LSTM, so epoch k depends on
epochs <= k only, and :class:`MASleepNetStreaming` runs one epoch per call with the LSTM state (h, c) as
explicit inputs and outputs, which edged carries between epochs (manifest ``state``). The streaming
variant shipped is also narrower (:data:`STREAMING`): the published widths cost ~182 M MACs per epoch (13x the
streaming widths) and did not fit the one-core training budget; both configurations are reported by :func:`complexity`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

from models.seed.ulw_sleepnet import count_macs, count_parameters

SAMPLES_PER_EPOCH = 3000
N_CLASSES = 5
INPUT_NAMES = ("fpz_cz", "pz_oz", "eog", "emg")
MODALITIES = (("eeg", 2), ("eog", 1), ("emg", 1))  # name, input channels (in INPUT_NAMES order)
STATE_NAMES = (("lstm_h_in", "lstm_h_out"), ("lstm_c_in", "lstm_c_out"))


@dataclass(frozen=True)
class Config:
    conv1: int = 64  # first conv of each branch
    conv2: int = 128  # the two following convs
    d_model: int = 128  # fused per-time-step features
    hidden: int = 128  # LSTM units per direction
    bidirectional: bool = True
    sequence: int = 20  # epochs per training sequence (published form) / crop length (streaming)
    se_reduction: int = 8
    dropout: float = 0.5

    def to_dict(self) -> dict:
        return asdict(self)


PUBLISHED = Config()
STREAMING = Config(conv1=16, conv2=32, d_model=48, hidden=48, bidirectional=False, sequence=40, dropout=0.2)


class SqueezeExcite(nn.Module):
    """Channel attention: global average over time -> bottleneck -> sigmoid gate per channel."""

    def __init__(self, channels: int, reduction: int):
        super().__init__()
        mid = max(4, channels // reduction)
        self.fc1 = nn.Linear(channels, mid)
        self.fc2 = nn.Linear(mid, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean(-1)))))
        return x * gate.unsqueeze(-1)


def _conv_bn(c_in: int, c_out: int, kernel: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv1d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
            nn.BatchNorm1d(c_out), nn.GELU()]


class MultiScaleExtractor(nn.Module):
    """(N, c_in, 3000) one modality -> (N, conv2, 80): short- and long-kernel branches, SE in each."""

    def __init__(self, c_in: int, cfg: Config):
        super().__init__()
        a, b = cfg.conv1, cfg.conv2
        self.short = nn.Sequential(
            *_conv_bn(c_in, a, 50, 6), nn.MaxPool1d(8, 2, padding=4), nn.Dropout(cfg.dropout),
            *_conv_bn(a, b, 8), *_conv_bn(b, b, 8), nn.MaxPool1d(4, 4, padding=2),
            SqueezeExcite(b, cfg.se_reduction),
        )
        self.long = nn.Sequential(
            *_conv_bn(c_in, a, 400, 50), nn.MaxPool1d(4, 2, padding=2), nn.Dropout(cfg.dropout),
            *_conv_bn(a, b, 7), *_conv_bn(b, b, 7), nn.MaxPool1d(2, 2, padding=1),
            SqueezeExcite(b, cfg.se_reduction),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.short(x), self.long(x)], dim=-1)


class EpochEncoder(nn.Module):
    """(N, 4, 3000) -> (N, d_model): modalities, SE fusion, attention pooling over time."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.splits = [c for _, c in MODALITIES]
        self.branches = nn.ModuleList([MultiScaleExtractor(c, cfg) for _, c in MODALITIES])
        fused = cfg.conv2 * len(MODALITIES)
        self.fuse_attention = SqueezeExcite(fused, cfg.se_reduction)
        self.project = nn.Conv1d(fused, cfg.d_model, 1)
        self.score = nn.Conv1d(cfg.d_model, 1, 1)  # attention logit per time step
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = torch.split(x, self.splits, dim=1)
        h = torch.cat([branch(p) for branch, p in zip(self.branches, parts)], dim=1)
        h = F.gelu(self.project(self.fuse_attention(h)))
        weights = torch.softmax(self.score(h), dim=-1)
        return self.drop((h * weights).sum(-1))


class MASleepNet(nn.Module):
    """A sequence of epochs (B, L, 4, 3000) raw uV -> (B, L, 5) logits, one per epoch."""

    def __init__(self, cfg: Config = PUBLISHED):
        super().__init__()
        self.cfg = cfg
        self.encoder = EpochEncoder(cfg)
        self.lstm = nn.LSTM(cfg.d_model, cfg.hidden, batch_first=True, bidirectional=cfg.bidirectional)
        self.classifier = nn.Linear(cfg.hidden * (2 if cfg.bidirectional else 1), N_CLASSES)

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        return self.sequence_logits(x, state)[0]

    def sequence_logits(self, x: torch.Tensor, state=None):
        """Logits for every epoch, and the LSTM state after the last one (streaming form only)."""
        b, l = x.shape[:2]
        e = self.encoder(x.reshape(b * l, *x.shape[2:])).reshape(b, l, -1)
        y, new_state = self.lstm(e, state)
        return self.classifier(y), new_state


class MASleepNetStreaming(nn.Module):
    """The streaming form edged runs, in the contract of :mod:`models.seed.recipe`:
    ``(fpz_cz, pz_oz, eog, emg)`` each (B, T, 3000) for T epochs in time order, plus the LSTM state
    ``h``, ``c`` (B, hidden) -> ``(logits (B, T, 5), h, c)``. The daemon calls it with T = 1 per epoch and
    carries (h, c); one call over a whole night from the zero state gives the same numbers."""

    signal_names = INPUT_NAMES

    def __init__(self, net: MASleepNet | None = None):
        super().__init__()
        net = net if net is not None else MASleepNet(STREAMING)
        if net.cfg.bidirectional:
            raise ValueError("the bidirectional (published) MASleepNet needs future epochs; it cannot stream")
        self.net = net

    def state_specs(self) -> list:
        from models.seed.recipe import StateSpec

        h = self.net.cfg.hidden
        return [StateSpec(i, o, (1, h)) for i, o in STATE_NAMES]

    def forward(self, fpz_cz, pz_oz, eog, emg, h, c):
        x = torch.stack([fpz_cz, pz_oz, eog, emg], dim=2)  # (B, T, 4, 3000)
        logits, (h2, c2) = self.net.sequence_logits(x, (h.unsqueeze(0), c.unsqueeze(0)))
        return logits, h2[0], c2[0]


def complexity() -> dict[str, dict[str, int]]:
    """Parameters and MACs per scored 30-s epoch of the published (BiLSTM, published widths) and streaming
    (unidirectional, :data:`STREAMING` widths) forms. The published form's MACs are those of one epoch
    of a sequence (its LSTM cost per epoch included)."""
    out = {}
    for name, cfg in (("published", PUBLISHED), ("streaming", STREAMING)):
        net = MASleepNet(cfg)
        x = torch.zeros(1, 1, len(INPUT_NAMES), SAMPLES_PER_EPOCH)
        out[name] = {"parameters": count_parameters(net), "macs_per_epoch": count_macs(net, x)}
    return out
