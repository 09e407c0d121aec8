"""A small causal classifier over the last ``context`` epochs of per-epoch EEG feature rows.

Per scored epoch the model sees, for each channel, the feature rows of that epoch and the ``context - 1``
before it (``(batch, context, n_features)`` per ONNX input, one input per channel, as the manifest
declares). The rows of both channels are concatenated, standardised with the training set's mean and
standard deviation (constants in the graph, so edged feeds raw features) and clipped to +-5 sd (so the
first int8 layer gets a known range instead of the heavy tails of the differences), encoded epoch by epoch by one
shared layer, and the window of encodings is classified by a two-layer head. No recurrence, no look-ahead:
the prediction for epoch ``k`` depends on epochs ``k - context + 1 .. k`` only.

An ensemble of such networks trained from different seeds averages their probabilities inside one graph.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class ArchConfig:
    context: int = 10  # epochs seen, the scored one included (20 measured no better)
    hidden: int = 64  # per-epoch encoding width and head width
    dropout: float = 0.2
    members: int = 1  # ensemble size (seeds); 3 measured no better than 1
    clip: float = 5.0  # standardised features are clipped to +-clip sd: a known range for the int8 input

    def to_dict(self) -> dict:
        return asdict(self)


class FeatureWindowNet(nn.Module):
    def __init__(self, n_channels: int, n_features: int, arch: ArchConfig, mean: np.ndarray, std: np.ndarray):
        super().__init__()
        width = n_channels * n_features
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).reshape(width))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).reshape(width))
        self.clip = float(arch.clip)
        self.encode = nn.Linear(width, arch.hidden)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(arch.dropout),
            nn.Linear(arch.context * arch.hidden, arch.hidden),
            nn.ReLU(),
            nn.Linear(arch.hidden, 5),
        )

    def logits(self, *channels: torch.Tensor) -> torch.Tensor:
        x = torch.cat(channels, dim=-1)  # (batch, context, channels * features)
        z = torch.clamp((x - self.mean) / self.std, -self.clip, self.clip)
        return self.head(torch.relu(self.encode(z)))


class Ensemble(nn.Module):
    """Mean class probabilities of its members: the exported model (ONNX output ``probabilities``)."""

    def __init__(self, members: list[FeatureWindowNet]):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, *channels: torch.Tensor) -> torch.Tensor:
        probs = [torch.softmax(m.logits(*channels), dim=-1) for m in self.members]
        return torch.stack(probs).mean(dim=0)


def count_parameters(model: nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def macs_per_epoch(model: Ensemble, arch: ArchConfig) -> int:
    """Multiply-accumulates to score one epoch (every Linear over the whole window, per member)."""
    per = 0
    for m in model.members:
        enc = m.encode
        per += arch.context * enc.in_features * enc.out_features
        per += sum(layer.in_features * layer.out_features for layer in m.head if isinstance(layer, nn.Linear))
    return int(per)
