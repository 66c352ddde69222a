"""Triplet attention (Misra, Nalamada, Arasanipalai, Hou, "Rotate to Attend", WACV 2021).

Three branches, each a CBAM-style spatial gate (cat[max, mean] over one dim -> k x k conv without bias + BN(1)
-> sigmoid -> multiply) applied to a different rotation of the (B, C, H, W) input:

* ``cw``: permute to (B, H, C, W), pool over H, attend over the (C, W) plane, permute back;
* ``hc``: permute to (B, W, H, C), pool over W, attend over the (H, C) plane, permute back;
* ``hw``: the plain view, pool over C, attend over the (H, W) plane (CBAM's spatial gate).

The output is the average of the three. No reduction ratio; 3 · (2·k² + 2) parameters (300 at k = 7).

Init as the official code (github.com/landskape-ai/triplet-attention): its model init sets to 0 the BN weight
of every module whose state-dict key contains "SpatialGate" (the rule it copied from CBAM). In its module only
the (H, W) branch is called ``SpatialGate``; the two rotated branches are ``ChannelGateH``/``ChannelGateW`` and
keep BN weight 1. Reproduced here: ``hw`` starts at a constant 0.5 gate, ``cw`` and ``hc`` do not.
"""

from __future__ import annotations

from torch import Tensor, nn

from . import _checks
from .cbam import SpatialGate


class TripletAttention(nn.Module):
    placement = "block"
    attention_name = "tam"
    option_checks = {"kernel_size": _checks.odd_kernel}

    def __init__(self, channels: int, *, spatial_size: tuple[int, int] | None = None, kernel_size: int = 7):
        super().__init__()
        self.cw = SpatialGate(kernel_size, zero_init=False)
        self.hc = SpatialGate(kernel_size, zero_init=False)
        self.hw = SpatialGate(kernel_size, zero_init=True)

    def forward(self, x: Tensor) -> Tensor:
        x_cw = self.cw(x.permute(0, 2, 1, 3)).permute(0, 2, 1, 3)
        x_hc = self.hc(x.permute(0, 3, 2, 1)).permute(0, 3, 2, 1)
        x_hw = self.hw(x)
        return (x_cw + x_hc + x_hw) / 3
