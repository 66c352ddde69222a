"""One optimizer step, shared by training, the benchmark's limit and analyze's fine-tune."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from namexp.train import runtime
from namexp.train.penalty import SparsityPenalty


def training_step(
    net: torch.nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    precision: str,
    device: torch.device,
    penalty: SparsityPenalty | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward, cross-entropy (+ the sparsity term), backward, step; returns (logits, CE loss), unsynchronised."""
    with runtime.autocast(precision, device):
        logits = net(images)
        loss = F.cross_entropy(logits, labels)
    term = penalty.loss_term() if penalty is not None else None
    total = loss if term is None else loss + term
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(total).backward()
        scaler.unscale_(optimizer)  # the subgradient must be added to unscaled gradients
        if penalty is not None:
            penalty.add_subgradient()
        scaler.step(optimizer)
        scaler.update()
    else:
        total.backward()
        if penalty is not None:
            penalty.add_subgradient()
        optimizer.step()
    return logits, loss
