"""CBAM: Convolutional Block Attention Module (Woo, Park, Lee, Kweon, ECCV 2018).

Channel gate then spatial gate, applied one after the other:

* channel gate: a shared MLP (Linear C -> C/r with bias, ReLU, Linear C/r -> C with bias; r = 16) on the
  global average-pooled and the global max-pooled features; the two outputs are summed, passed through a
  sigmoid and multiplied in;
* spatial gate: the channel-wise max and mean maps, concatenated (max first, as the official code's
  ``ChannelPool``), a 7x7 convolution without bias plus BatchNorm2d(1), a sigmoid, a multiply.

Follows the official code (github.com/Jongchan/attention-module, ``MODELS/cbam.py``): the spatial conv is
followed by a BatchNorm with momentum 0.01, and the model init sets the spatial gate's BN weight to 0, so that
gate starts at sigmoid(0) = 0.5 everywhere. Max pooling uses ``amax`` instead of adaptive max pooling, which
has no deterministic CUDA backward.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from . import _checks


class ChannelGate(nn.Module):
    """CBAM's channel gate: sigmoid(MLP(avgpool F) + MLP(maxpool F)) ⊙ F."""

    def __init__(self, channels: int, reduction: int):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels))

    def forward(self, x: Tensor) -> Tensor:
        logits = self.mlp(x.mean(dim=(2, 3))) + self.mlp(x.amax(dim=(2, 3)))
        return x * torch.sigmoid(logits)[:, :, None, None]


class SpatialGate(nn.Module):
    """Gate over the last two dims from [max, mean] over dim 1: k x k conv (no bias) + BN(1) + sigmoid.

    Also the building block of triplet attention, which applies it to rotated views of the tensor.
    ``zero_init`` sets the BN weight to 0 as the official CBAM / triplet-attention init does.
    """

    def __init__(self, kernel_size: int = 7, *, zero_init: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(1, eps=1e-5, momentum=0.01)  # official BasicConv's momentum
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")
        nn.init.constant_(self.bn.weight, 0.0 if zero_init else 1.0)
        nn.init.zeros_(self.bn.bias)

    def forward(self, x: Tensor) -> Tensor:
        pooled = torch.cat([x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.bn(self.conv(pooled)))


class CBAM(nn.Module):
    """CBAM module; SE-like MLP parameters plus 2·k² + 2 for the spatial gate (100 at k = 7)."""

    placement = "block"
    attention_name = "cbam"
    option_checks = {"reduction": _checks.positive_int, "kernel_size": _checks.odd_kernel}

    def __init__(
        self,
        channels: int,
        *,
        spatial_size: tuple[int, int] | None = None,
        reduction: int = 16,
        kernel_size: int = 7,
    ):
        super().__init__()
        self.channel_gate = ChannelGate(channels, reduction)
        self.spatial_gate = SpatialGate(kernel_size, zero_init=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.spatial_gate(self.channel_gate(x))
