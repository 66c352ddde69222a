"""BAM: Bottleneck Attention Module (Park, Woo, Lee, Kweon, BMVC 2018).

Two branches on the same input F:

* channel branch Mc: global average pool, Linear C -> C/r, BatchNorm1d, ReLU, Linear C/r -> C;
* spatial branch Ms: 1x1 conv C -> C/r + BN + ReLU, two 3x3 convs with dilation 4 (padding 4, so the map
  keeps its size) each + BN + ReLU, and a 1x1 conv C/r -> 1.

The paper combines them as F · (1 + sigmoid(Mc + Ms)) (``combine="add"``, the default). The official code
(github.com/Jongchan/attention-module, ``MODELS/bam.py``) multiplies instead, F · (1 + sigmoid(Mc · Ms))
(``combine="multiply"``); users noticed the mismatch (issues #39, #52 there). The official file also fails
to build (an undefined ``gate_activation``); that line has no effect and is not reproduced.

Where the BatchNorms go differs too (issue #49 there). The official code normalises after each hidden layer
and not the branch outputs (``bn_position="hidden"``, the default, as above). The paper normalises each
branch's output, Mc = BN(MLP(AvgPool(F))) and Ms = BN(f(F)), to bring the two to one scale
(``bn_position="output"``: a BatchNorm1d(C) after the MLP, a BatchNorm2d(1) after the last 1x1 conv, and
none inside; the hidden ReLUs stay).

BAM is not a block module: it sits between stages, where the resolution changes (after ResNet's layer1-3).
Its channel branch uses BatchNorm1d, so training needs a batch of at least 2.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from . import _checks


class BAM(nn.Module):
    placement = "stage"
    attention_name = "bam"
    option_checks = {
        "reduction": _checks.positive_int,
        "dilation": _checks.positive_int,
        "combine": _checks.choice("add", "multiply"),
        "bn_position": _checks.choice("hidden", "output"),
    }

    def __init__(
        self,
        channels: int,
        *,
        spatial_size: tuple[int, int] | None = None,
        reduction: int = 16,
        dilation: int = 4,
        combine: str = "add",
        bn_position: str = "hidden",
    ):
        super().__init__()
        self.combine = combine
        self.bn_position = bn_position
        hidden = max(1, channels // reduction)
        inner = bn_position == "hidden"

        def relu(norm: nn.Module) -> list[nn.Module]:
            """ReLU after a hidden layer, with the layer's BatchNorm first where the official code has one."""
            return [norm, nn.ReLU(inplace=True)] if inner else [nn.ReLU(inplace=True)]

        self.channel = nn.Sequential(
            nn.Linear(channels, hidden),
            *relu(nn.BatchNorm1d(hidden)),
            nn.Linear(hidden, channels),
            *([] if inner else [nn.BatchNorm1d(channels)]),
        )
        self.spatial = nn.Sequential(
            nn.Conv2d(channels, hidden, kernel_size=1),
            *relu(nn.BatchNorm2d(hidden)),
            nn.Conv2d(hidden, hidden, kernel_size=3, padding=dilation, dilation=dilation),
            *relu(nn.BatchNorm2d(hidden)),
            nn.Conv2d(hidden, hidden, kernel_size=3, padding=dilation, dilation=dilation),
            *relu(nn.BatchNorm2d(hidden)),
            nn.Conv2d(hidden, 1, kernel_size=1),
            *([] if inner else [nn.BatchNorm2d(1)]),
        )
        for module in self.spatial:
            if isinstance(module, nn.Conv2d):
                # As the official init loop: He init for every conv, biases zero; BNs keep weight 1 / bias 0.
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> Tensor:
        mc = self.channel(x.mean(dim=(2, 3)))[:, :, None, None]  # (B, C, 1, 1)
        ms = self.spatial(x)  # (B, 1, H, W)
        logits = mc + ms if self.combine == "add" else mc * ms
        return x * (1 + torch.sigmoid(logits))

    def extra_repr(self) -> str:
        return f"combine={self.combine!r}, bn_position={self.bn_position!r}"
