"""A model's loss and top-1/top-5 error over a whole split: the one evaluation every command uses."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

from namexp.train import runtime


@torch.no_grad()
def split_metrics(
    net: torch.nn.Module, loader, precision: str, device: torch.device, d: runtime.Dist = runtime.Dist()
) -> dict[str, float]:
    """Loss and top-1/top-5 error (percent) over a whole split, summed over DDP ranks."""
    net.eval()
    sums = torch.zeros(4, device=device, dtype=torch.float64)  # loss, top-1 correct, top-5 correct, images
    for images, labels in loader:
        with runtime.autocast(precision, device):
            logits = net(images)
        logits = logits.float()
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        hits = top == labels[:, None]
        sums[0] += F.cross_entropy(logits, labels, reduction="sum").double()
        sums[1] += hits[:, 0].sum()
        sums[2] += hits.any(1).sum()
        sums[3] += labels.shape[0]  # a Python number: no host-to-device copy per batch
    if d.enabled:
        dist.all_reduce(sums)
    loss, top1, top5, n = sums.tolist()
    n = max(n, 1.0)
    return {"loss": loss / n, "top1_err": 100 * (1 - top1 / n), "top5_err": 100 * (1 - top5 / n), "images": n}
