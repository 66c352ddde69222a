"""Non-local block (Wang, Girshick, Gupta, He, "Non-local Neural Networks", CVPR 2018), embedded Gaussian.

For an input x of shape (B, C, H, W) with inter channels C' = C / 2::

    θ = conv1x1(x), φ = conv1x1(x), g = conv1x1(x)          # C -> C'
    f = softmax_j(θ_iᵀ φ_j)                                 # over positions j
    y_i = Σ_j f_ij g_j
    z = BN(W y) + x                                         # W: conv1x1 C' -> C

As in the paper's implementation, φ and g are subsampled by a 2x2 max-pool (``subsample=True``), which cuts
the affinity matrix by 4x and keeps memory down at 32x32 (here with ``ceil_mode`` so odd and 1-pixel maps keep
their border). The output BN starts with weight and bias 0, so the block starts as the identity. The 1x1 convs
are initialised from N(0, 0.01²) with zero bias, the paper code's ``conv_init_std`` (video-nonlocal-net).
Its embedded Gaussian has no 1/sqrt(C') scaling (that is the later transformer convention).

Not a block module: it goes into a few blocks of the middle stages (after the last block of ResNet's
layer2 and layer3), since each costs O((H·W)²) memory.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from . import _checks


class NonLocalBlock(nn.Module):
    """Embedded-Gaussian non-local block, its output BN zero-initialised.

    4·C·C' + 3·C' + 3·C parameters, with C' = C / reduction.
    """

    placement = "middle"
    attention_name = "nonlocal"
    option_checks = {"reduction": _checks.positive_int, "subsample": _checks.boolean}

    def __init__(
        self,
        channels: int,
        *,
        spatial_size: tuple[int, int] | None = None,
        reduction: int = 2,
        subsample: bool = True,
    ):
        super().__init__()
        self.subsample = subsample
        inter = max(1, channels // reduction)
        self.theta = nn.Conv2d(channels, inter, kernel_size=1)
        self.phi = nn.Conv2d(channels, inter, kernel_size=1)
        self.g = nn.Conv2d(channels, inter, kernel_size=1)
        self.pool = nn.MaxPool2d(2, ceil_mode=True) if self.subsample else nn.Identity()
        self.out_conv = nn.Conv2d(inter, channels, kernel_size=1)
        self.out_bn = nn.BatchNorm2d(channels)
        for conv in (self.theta, self.phi, self.g, self.out_conv):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)
        # Zero-initialised output BN: z = x at the start, so inserting the block does not disturb the net.
        nn.init.zeros_(self.out_bn.weight)
        nn.init.zeros_(self.out_bn.bias)

    def forward(self, x: Tensor) -> Tensor:
        b, _, h, w = x.shape
        query = self.theta(x).flatten(2).transpose(1, 2)  # (B, N, C')
        key = self.pool(self.phi(x)).flatten(2)  # (B, C', M)
        value = self.pool(self.g(x)).flatten(2).transpose(1, 2)  # (B, M, C')
        affinity = torch.softmax(query @ key, dim=-1)  # (B, N, M), normalised over positions j
        y = (affinity @ value).transpose(1, 2).reshape(b, -1, h, w)
        return x + self.out_bn(self.out_conv(y))

    def extra_repr(self) -> str:
        return f"subsample={self.subsample}"
