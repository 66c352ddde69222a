"""What a model costs: parameters, FLOPs (torch's own counter) and inference latency."""

from __future__ import annotations

import time
from statistics import median

import torch
from torch.utils.flop_counter import FlopCounterMode

FLOPS_NOTE = "FLOPs from torch.utils.flop_counter: 2 per multiply-add (MACs = FLOPs / 2); ops it does not count (pooling, sigmoid, elementwise products) add 0"


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_flops(model: torch.nn.Module, image_size: int, device: torch.device | None = None) -> int:
    """Forward FLOPs for one image, in eval mode (BatchNorm then needs no batch statistics)."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, 3, image_size, image_size, device=device))
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


@torch.no_grad()
def inference_latency_ms(model: torch.nn.Module, batch: torch.Tensor, warmup: int = 3, repeats: int = 10) -> float:
    """Median wall time of one forward pass over `batch`, synchronised on CUDA."""
    model.eval()
    for _ in range(warmup):
        model(batch)
    times = []
    for _ in range(repeats):
        _sync(batch.device)
        start = time.perf_counter()
        model(batch)
        _sync(batch.device)
        times.append((time.perf_counter() - start) * 1000)
    return median(times)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
