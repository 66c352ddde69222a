"""NAM's sparsity penalty, in the paper's form and in the official code's form.

- `loss` (paper, default): L = CE + p·Σ|γ| + p·Σ|λ| over the NAM BatchNorms' scales only.
- `subgradient` (official code): after backward, grad(γ) += p·sign(γ) (network-slimming style).

The scales are collected once from the unwrapped model, so the penalty acts whatever wraps the model
later (DataParallel, DDP, torch.compile) -- the official script's penalty silently never runs under
DataParallel because it looks the layers up by name on the wrapper. Under DDP each rank adds the same
term, and DDP averages identical gradients, so the penalty is applied exactly once per step.
"""

from __future__ import annotations

import torch

from namexp.models.attention import nam_modules


class SparsityPenalty:
    def __init__(self, model: torch.nn.Module, weight: float, mode: str):
        self.scales: list[torch.nn.Parameter] = [p for _, m in nam_modules(model) for p in m.sparsity_parameters()]
        self.weight = weight if self.scales else 0.0
        self.mode = mode

    @property
    def active(self) -> bool:
        return self.weight > 0

    def l1(self) -> torch.Tensor | None:
        """Σ|γ| (and Σ|λ|) over all NAM scales; None without NAM."""
        if not self.scales:
            return None
        return torch.stack([p.detach().abs().sum() for p in self.scales]).sum()

    def loss_term(self) -> torch.Tensor | None:
        """The term to add to the loss (`loss` mode), with gradient; None otherwise."""
        if not self.active or self.mode != "loss":
            return None
        return self.weight * torch.stack([p.abs().sum() for p in self.scales]).sum()

    @torch.no_grad()
    def add_subgradient(self) -> None:
        """`subgradient` mode: grad += p·sign(γ), on gradients that are already unscaled and reduced."""
        if not self.active or self.mode != "subgradient":
            return
        for p in self.scales:
            if p.grad is not None:
                p.grad.add_(torch.sign(p), alpha=self.weight)

    def value(self) -> float:
        """p·Σ|γ|: the penalty's current size, for the logs (0 when off)."""
        l1 = self.l1()
        return float(self.weight * l1) if l1 is not None and self.active else 0.0
