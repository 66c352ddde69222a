"""Crop, flip and normalise whole batches on the training device.

The per-image PIL pipeline of the reference scripts (RandomCrop(32, padding=4), RandomHorizontalFlip,
ToTensor, Normalize) costs a CPU core per few thousand images per second. Here the training set is
stored once, zero-padded, as uint8 NHWC on the device, and one batch is augmented by a single
gather whose row and column indices carry both the crop offset and the flip; normalisation is one
multiply-add. Padding with 0 before normalising matches RandomCrop's black border exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass
class AugmentDraws:
    """The random choices for every image of one epoch (drawn on the CPU from the epoch's seed)."""

    offset_y: torch.Tensor  # int64 (N,), in [0, 2·padding]
    offset_x: torch.Tensor
    flip: torch.Tensor  # bool (N,)

    def to(self, device: torch.device) -> AugmentDraws:
        return AugmentDraws(*(t.to(device, non_blocking=True) for t in (self.offset_y, self.offset_x, self.flip)))

    def take(self, index: torch.Tensor) -> AugmentDraws:
        return AugmentDraws(self.offset_y[index], self.offset_x[index], self.flip[index])


class Normalizer:
    """uint8 NHWC -> float NCHW, (x/255 - mean)/std as a single multiply-add."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], device: torch.device, channels_last: bool):
        std_t = torch.tensor(std, dtype=torch.float32, device=device)
        self.scale = 1.0 / (255.0 * std_t)
        self.shift = -torch.tensor(mean, dtype=torch.float32, device=device) / std_t
        self.channels_last = channels_last

    def __call__(self, nhwc_uint8: torch.Tensor) -> torch.Tensor:
        x = torch.addcmul(self.shift, nhwc_uint8.to(torch.float32), self.scale)  # still NHWC
        x = x.permute(0, 3, 1, 2)  # NCHW view with channels_last strides
        return x if self.channels_last else x.contiguous()


class BatchAugment:
    """Random crop (zero padding) and horizontal flip for a batch, as one gather."""

    def __init__(self, image_size: int, padding: int, crop: bool, flip: bool):
        self.image_size = image_size
        self.padding = padding if crop else 0
        self.flip = flip

    def pad(self, nhwc_uint8: torch.Tensor) -> torch.Tensor:
        """Pad the whole stored dataset once (N, H+2p, W+2p, C)."""
        p = self.padding
        if p == 0:
            return nhwc_uint8
        return torch.nn.functional.pad(nhwc_uint8, (0, 0, p, p, p, p))

    def draw(self, n: int, generator: torch.Generator) -> AugmentDraws:
        span = 2 * self.padding + 1
        offset_y = torch.randint(0, span, (n,), generator=generator)
        offset_x = torch.randint(0, span, (n,), generator=generator)
        flip = torch.rand(n, generator=generator) < 0.5 if self.flip else torch.zeros(n, dtype=torch.bool)
        return AugmentDraws(offset_y, offset_x, flip)

    def __call__(self, padded: torch.Tensor, index: torch.Tensor, draws: AugmentDraws) -> torch.Tensor:
        """Crop (and maybe flip) images `index` of the padded store; returns uint8 NHWC (B, H, W, C)."""
        size = self.image_size
        steps = torch.arange(size, device=padded.device)
        rows = draws.offset_y[:, None] + steps  # (B, H)
        # A flipped image reads its crop's columns right to left.
        cols = torch.where(
            draws.flip[:, None], draws.offset_x[:, None] + (size - 1 - steps), draws.offset_x[:, None] + steps
        )
        return padded[index[:, None, None], rows[:, :, None], cols[:, None, :]]
