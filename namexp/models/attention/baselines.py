"""The two non-attention entries of the comparison: ``none`` (baseline) and ``half`` (ablation).

``half`` multiplies the residual branch by the constant 0.5 exactly where NAM sits. A NAM channel gate starts
at about sigmoid(x̂ / C) ≈ 0.5 (its weights |γ_i| / Σ|γ_j| average 1/C), so NAM begins as a branch scaling by
one half; ``half`` tests whether NAM's gain is more than that scaling.
"""

from __future__ import annotations

from torch import Tensor, nn


class NoAttention(nn.Identity):
    """Baseline: the identity. Still occupies the block-level site so analysis code can hook it."""

    placement = "none"
    attention_name = "none"
    option_checks: dict = {}

    def __init__(self, channels: int = 0, *, spatial_size: tuple[int, int] | None = None):
        super().__init__()


class HalfScale(nn.Module):
    """Multiply by the constant 0.5; no parameters."""

    placement = "block"
    attention_name = "half"
    option_checks: dict = {}

    def __init__(self, channels: int, *, spatial_size: tuple[int, int] | None = None):
        super().__init__()

    def forward(self, x: Tensor) -> Tensor:
        return x * 0.5
