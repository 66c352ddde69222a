"""Squeeze-and-Excitation (Hu, Shen, Sun, "Squeeze-and-Excitation Networks", CVPR 2018).

Global average pool ("squeeze"), a bottleneck of two 1x1 convolutions with bias, C -> C/r -> C, with a ReLU
between ("excitation"), a sigmoid, and a channel-wise multiply. r = 16 as in the paper; the reduced width is
max(1, C // r) (timm rounds it up to a multiple of 8 instead, which gives more parameters on small stages).
Placed at the end of the residual branch, before the identity add (the paper's SE-ResNet module).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from . import _checks


class SqueezeExcitation(nn.Module):
    """SE block; 2·C·h + h + C parameters with h = max(1, C // r) (1x1 convs with bias)."""

    placement = "block"
    attention_name = "se"
    option_checks = {"reduction": _checks.positive_int}

    def __init__(self, channels: int, *, spatial_size: tuple[int, int] | None = None, reduction: int = 16):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Conv2d(channels, hidden, kernel_size=1, bias=True)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, channels, kernel_size=1, bias=True)
        for conv in (self.fc1, self.fc2):
            # He init as the reference SE-ResNets (and the torchvision/timm init loops) give every conv.
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(conv.bias)

    def forward(self, x: Tensor) -> Tensor:
        scale = x.mean(dim=(2, 3), keepdim=True)
        scale = torch.sigmoid(self.fc2(self.relu(self.fc1(scale))))
        return x * scale
