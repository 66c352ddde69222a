"""Per-epoch attention gate diagnostics of a training run (``trainer.log_gates``).

At each epoch's end rank 0 runs the plain model in eval mode on a few fixed test images (the first
``trainer.gate_images`` of the test split, whose eval order is fixed) and summarises each attention site's
gate with ``namexp.explain.gates`` -- the same figures ``namexp explain`` reports, so one can watch whether a
gate ever leaves a constant scale (e.g. NAM's 0.5) while it trains. One eval forward pass of a few images:
cheap next to the epoch's evaluation. The figures go into the record's epoch entry (``gates``) and to
TensorBoard as ``gates/<figure>/<site>``.
"""

from __future__ import annotations

import torch
from torch import nn

from namexp.explain.gates import diagnose
from namexp.models import attention_sites

# What each site's summary contributes per epoch (std: over channels, the gate's spread that selects channels).
FIGURES = (
    "mean",
    "std_channels",
    "std_positions",
    "range_5_95",
    "near_mean",
    "varying_channels",
    "slope_x_std",
    "slope_x_std_max",
)


def fixed_images(loader, count: int) -> torch.Tensor:
    """The first `count` images of an eval loader (its order is fixed), as float."""
    taken, seen = [], 0
    for images, _ in loader:
        taken.append(images[: count - seen].float())
        seen += len(taken[-1])
        if seen >= count:
            break
    return torch.cat(taken)


class GateLog:
    """The fixed images and the model's sites; `measure` gives one epoch's figures per site."""

    def __init__(self, model: nn.Module, loader, count: int):
        self.active = count > 0 and any(s.module != "none" for s in attention_sites(model))
        self.images = fixed_images(loader, count) if self.active else None

    def measure(self, model: nn.Module) -> dict[str, dict[str, float | str | None]]:
        if not self.active:
            return {}
        was_training = model.training
        model.eval()  # the gate as it is used at test time (NAM's BN on its running statistics)
        try:
            sites = diagnose(model, self.images.to(next(model.parameters()).device))
        finally:
            model.train(was_training)
        records = {s.site: (s.module, s.to_record()) for s in sites}
        return {site: {"module": module, **{k: r[k] for k in FIGURES}} for site, (module, r) in records.items()}


def gate_scalars(gates: dict[str, dict]) -> dict[str, float | None]:
    """TensorBoard tags gates/<figure>/<site> (grouped by figure: one chart compares every site)."""
    return {f"gates/{k}/{site}": figures[k] for site, figures in gates.items() for k in FIGURES}
