"""ECA: Efficient Channel Attention (Wang, Wu, Zhu, Li, Zuo, Hu, CVPR 2020).

Global average pool, then a 1-D convolution (no bias) across the channel axis with an odd kernel k, a sigmoid
and a channel-wise multiply. The paper picks k adaptively, k = ψ(C) = |log2(C)/γ + b/γ|_odd with γ = 2, b = 1;
here (as timm): t = int(|(log2 C + b) / γ|), k = t if t is odd else t + 1, and at least 3. That gives
k = 3 / 5 / 5 / 5 / 7 for C = 64 / 128 / 256 / 512 / 2048.

The official code (github.com/BangguWu/ECANet) does not implement ψ: its module defaults to k = 3 and its
released ResNets use hand-picked per-stage lists, named in their checkpoints: ``eca_resnet18_k3577`` (3, 5,
7, 7), ``eca_resnet34_k3357`` (3, 3, 5, 7), ``eca_resnet50_k3557`` (3, 5, 5, 7), ``eca_resnet101_k3357`` and
``eca_resnet152_k3357`` (3, 3, 5, 7). ``kernel_size`` overrides ψ(C): one odd integer for every module, a list
with one per stage (the backbone gives each stage's modules its value), or one of those names (its list).
The 1-D conv keeps PyTorch's default init (the official init loop touches Conv2d only).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from . import _checks

# The per-stage kernel sizes of the official ECA-Net checkpoints (their names end in k<the four sizes>).
RELEASED_KERNEL_SIZES: dict[str, tuple[int, ...]] = {
    "eca_resnet18": (3, 5, 7, 7),
    "eca_resnet34": (3, 3, 5, 7),
    "eca_resnet50": (3, 5, 5, 7),
    "eca_resnet101": (3, 3, 5, 7),
    "eca_resnet152": (3, 3, 5, 7),
}


def eca_kernel_size(channels: int, gamma: int = 2, b: int = 1) -> int:
    """The paper's adaptive kernel size ψ(C): odd, at least 3."""
    t = int(abs((math.log2(channels) + b) / gamma))
    k = t if t % 2 else t + 1
    return max(k, 3)


class ECA(nn.Module):
    """ECA module; k parameters."""

    placement = "block"
    attention_name = "eca"
    option_checks = {"kernel_size": _checks.optional(_checks.per_stage(_checks.odd_kernel, RELEASED_KERNEL_SIZES))}
    per_stage_options = ("kernel_size",)  # a list holds one value per stage; the backbone picks the stage's

    def __init__(
        self,
        channels: int,
        *,
        spatial_size: tuple[int, int] | None = None,
        kernel_size: int | None = None,
    ):
        super().__init__()
        if isinstance(kernel_size, (tuple, list)):
            raise ValueError(
                f"kernel_size={list(kernel_size)} holds one value per stage: build the network with build_model "
                f"(each stage's modules get its value), or give one odd integer here"
            )
        if kernel_size is None:
            kernel_size = eca_kernel_size(channels)
        self.conv = nn.Conv1d(1, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        y = x.mean(dim=(2, 3)).unsqueeze(1)  # (B, 1, C): the channels as a 1-D sequence
        y = torch.sigmoid(self.conv(y))
        return x * y.transpose(1, 2).unsqueeze(-1)  # (B, C, 1, 1)
