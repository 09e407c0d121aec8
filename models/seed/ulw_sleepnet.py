"""ULW-SleepNet (Wang et al., "ULW-SleepNet: An Ultra-Lightweight Network for Multimodal Sleep Stage
Scoring"; authors' Keras code: github.com/wzw999/ULW-SLEEPNET), in PyTorch.

One 30-s epoch of four channels at 100 Hz (EEG Fpz-Cz, EEG Pz-Oz, EOG horizontal, EMG submental; raw uV)
-> W/N1/N2/N3/REM. The same feature extractor (shared weights) runs on each channel alone: three
Dual-Stream Separable Convolution (DSSC) blocks of 8/16/32 filters, each a main stream of two
(separable conv k3 "same" -> BatchNorm -> ReLU -> max-pool 2) plus a shortcut of two stride-2 1x1
separable convs, added, then dropout 0.1 (3000 -> 750 -> 188 -> 47 samples). Global average pooling gives
32 features per channel; the 4 x 32 are concatenated -> dropout 0.3 -> linear 64 (no activation) ->
linear 5. Trainable parameters with four channels: 13,337, as the paper's 13.3 K (Keras also counts the
224 BatchNorm running statistics, which are not trained).

:class:`UlwSleepNet` is the published network: ``(batch, 4, 3000) -> logits``. It looks at one epoch and
nothing else, so it is causal as published; :class:`UlwStreaming` is the form edged runs: the same
weights behind one ONNX input per channel (the daemon builds each model input from one device channel),
a fixed input gain per channel, and the extractor called per channel so that int8 scales are per channel;
no recurrent state, no context, no look-ahead.

:func:`complexity` gives (parameters, MACs per scored epoch) of both forms for ``benchmarks/models.py``.
"""

from __future__ import annotations

import torch
from torch import nn

CHANNELS = 4
SAMPLES_PER_EPOCH = 3000
N_CLASSES = 5
INPUT_NAMES = ("fpz_cz", "pz_oz", "eog", "emg")  # ONNX input names, in channel order
INPUT_GAIN = (1 / 50, 1 / 50, 1 / 100, 1 / 10)  # streaming form: 1 / typical amplitude (uV) of each channel
PUBLISHED_PARAMETERS = 13_337  # the authors' model.summary() with 4 channels: 13,561 minus 224 BN statistics
PUBLISHED_FLOPS = 7.89e6


class SeparableConv1d(nn.Module):
    """Keras ``SeparableConv1D``: a depthwise conv (no bias, the stride here) then a pointwise 1x1 conv."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1):
        super().__init__()
        self.depthwise = nn.Conv1d(c_in, c_in, kernel, stride=stride, padding=kernel // 2, groups=c_in, bias=False)
        self.pointwise = nn.Conv1d(c_in, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class DSSCBlock(nn.Module):
    """Dual-Stream Separable Convolution block: halves the length twice ("same" pooling: ceil)."""

    def __init__(self, c_in: int, filters: int, dropout: float = 0.1):
        super().__init__()

        def stage(a: int, b: int) -> nn.Sequential:
            return nn.Sequential(SeparableConv1d(a, b, 3), nn.BatchNorm1d(b), nn.ReLU(),
                                 nn.MaxPool1d(2, 2, ceil_mode=True))

        self.main = nn.Sequential(stage(c_in, filters), stage(filters, filters))
        self.shortcut = nn.Sequential(SeparableConv1d(c_in, filters, 1, stride=2),
                                      SeparableConv1d(filters, filters, 1, stride=2))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.main(x) + self.shortcut(x))


class ChannelExtractor(nn.Module):
    """(N, 1, 3000) one channel -> (N, 32) features; shared by every channel."""

    def __init__(self, filters: tuple[int, ...] = (8, 16, 32)):
        super().__init__()
        blocks, c = [], 1
        for f in filters:
            blocks.append(DSSCBlock(c, f))
            c = f
        self.blocks = nn.Sequential(*blocks)
        self.out_features = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x).mean(-1)


class UlwSleepNet(nn.Module):
    """The published network: (B, 4, 3000) raw uV -> (B, 5) logits."""

    def __init__(self, channels: int = CHANNELS):
        super().__init__()
        self.channels = channels
        self.extractor = ChannelExtractor()
        self.drop = nn.Dropout(0.3)
        self.fc = nn.Linear(channels * self.extractor.out_features, 64)
        self.out = nn.Linear(64, N_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        f = self.extractor(x.reshape(b * self.channels, 1, x.shape[-1]))
        return self.head(f.reshape(b, -1))

    def head(self, features: torch.Tensor) -> torch.Tensor:
        """(B, 4 * 32) concatenated channel features -> (B, 5) logits."""
        return self.out(self.fc(self.drop(features)))


class UlwStreaming(nn.Module):
    """What edged runs, in the streaming contract of :mod:`models.seed.recipe`: one signal per channel,
    each (B, T, 3000) for T epochs in time order -> ``(logits (B, T, 5),)``. No state: every epoch is
    scored from itself alone, so T = 1 per call (the daemon) and one call over a night are the same.

    Two differences from the published network, neither adding a parameter:

    * each channel is multiplied by a fixed gain (:data:`INPUT_GAIN`, 1 / its typical amplitude in uV)
      first: the published network reads raw microvolts, where the few-uV EMG and the 100-uV EOG differ
      a hundredfold; scaled, the shared extractor trained to a lower loss in the same steps here;
    * the shared extractor is called once per channel instead of once on the channels stacked into the
      batch (the same arithmetic): the exported graph then holds one copy of its ops per channel (weights
      still shared) and static int8 gives each channel's activations their own scale."""

    signal_names = INPUT_NAMES

    def __init__(self, net: UlwSleepNet | None = None):
        super().__init__()
        self.net = net if net is not None else UlwSleepNet()

    def state_specs(self) -> list:
        return []

    def forward(self, fpz_cz: torch.Tensor, pz_oz: torch.Tensor, eog: torch.Tensor, emg: torch.Tensor):
        b, t, n = fpz_cz.shape
        features = [self.net.extractor(x.reshape(b * t, 1, n) * gain)
                    for x, gain in zip((fpz_cz, pz_oz, eog, emg), INPUT_GAIN)]
        return (self.net.head(torch.cat(features, dim=1)).reshape(b, t, N_CLASSES),)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_macs(model: nn.Module, *inputs: torch.Tensor) -> int:
    """Multiply-accumulates of one forward call, counted by hooks on Conv1d, Linear and LSTM modules
    (the ops that hold nearly all of the arithmetic; pooling, activations, BatchNorm are not counted)."""
    total = 0

    def conv(m: nn.Conv1d, _i, out):
        nonlocal total
        total += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0]

    def linear(m: nn.Linear, _i, out):
        nonlocal total
        total += out.numel() * m.in_features

    def lstm(m: nn.LSTM, inp, _out):
        nonlocal total
        x = inp[0]
        steps = x.shape[0] * x.shape[1]  # batch * time (one of them is 1 in a streaming step)
        dirs = 2 if m.bidirectional else 1
        total += steps * dirs * 4 * m.hidden_size * (m.input_size + m.hidden_size)

    hooks = []
    for m in model.modules():
        if isinstance(m, nn.Conv1d):
            hooks.append(m.register_forward_hook(conv))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(linear))
        elif isinstance(m, nn.LSTM):
            hooks.append(m.register_forward_hook(lstm))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(*inputs)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return total


def complexity() -> dict[str, dict[str, int]]:
    """Parameters and MACs per scored 30-s epoch, published and streaming forms (the same network here)."""
    net = UlwSleepNet()
    x = torch.zeros(1, CHANNELS, SAMPLES_PER_EPOCH)
    one = torch.zeros(1, 1, SAMPLES_PER_EPOCH)  # (batch, epochs, samples): one scored epoch
    return {
        "published": {"parameters": count_parameters(net), "macs_per_epoch": count_macs(net, x)},
        "streaming": {"parameters": count_parameters(net),
                      "macs_per_epoch": count_macs(UlwStreaming(net), one, one, one, one)},
    }
