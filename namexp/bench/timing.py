"""The timer and the inputs every bench measurement shares (also used by benchmarks/nam_floor.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import torch

T = TypeVar("T")


def _sync(device: torch.device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, fn: Callable[[], T]) -> tuple[float, T]:
    """Wall seconds of `fn()`, synchronised on CUDA before each clock read."""
    _sync(device)
    start = time.perf_counter()
    result = fn()
    _sync(device)
    return time.perf_counter() - start, result


def infer(net: torch.nn.Module, images: torch.Tensor, precision: str, device: torch.device) -> Any:
    """One forward in inference mode, under the run's autocast."""
    import torch

    from namexp.train import runtime

    with torch.inference_mode(), runtime.autocast(precision, device):
        return net(images)


def synthetic_batch(
    batch_size: int, image_size: int, num_classes: int, device: torch.device, channels_last: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """A normalised-looking batch already on the device, in the model's memory format."""
    import torch

    g = torch.Generator().manual_seed(0)
    images = torch.randn(batch_size, 3, image_size, image_size, generator=g).to(device)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, num_classes, (batch_size,), generator=g).to(device)
    return images, labels


def rotate(items: list[T], r: int) -> list[T]:
    """`items` started at position r: interleaved repeats change who goes first, so drift hits each alike."""
    k = r % len(items) if items else 0
    return items[k:] + items[:k]
