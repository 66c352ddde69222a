"""Batches for training and evaluation.

Two paths with one interface (`len(loader)`, `loader.epoch(epoch, start_step)` / `iter(loader)`):
- `OnDeviceTrainLoader` / `OnDeviceEvalLoader`: in-memory datasets (CIFAR, synthetic) held as uint8 on
  the training device, augmented there in whole batches (`augment.py`). No host work per step.
- `HostTrainLoader` / `HostEvalLoader`: a torch DataLoader with per-image PIL transforms and pinned
  memory, for image folders that do not fit on the device (and as the reference in benchmarks).

All randomness of an epoch (the order and every crop and flip) is drawn from a generator seeded by
(seed, epoch), so an epoch can be replayed from any step: that is what makes resume exact.
Under DDP every rank takes its own shard of each epoch's order (padded to equal length, as
DistributedSampler does) and a per-rank batch of batch_size / world_size.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch

from namexp.data.augment import AugmentDraws, BatchAugment, Normalizer

Batch = tuple[torch.Tensor, torch.Tensor]


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    # A fixed odd multiplier keeps (seed, epoch) pairs apart without collisions for sane ranges.
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def shard_order(n: int, generator: torch.Generator, rank: int, world_size: int) -> torch.Tensor:
    """This rank's indices of a shuffled epoch, padded so that every rank gets the same count."""
    order = torch.randperm(n, generator=generator)
    if world_size > 1:
        total = math.ceil(n / world_size) * world_size
        if total > n:
            order = torch.cat([order, order[: total - n]])
        order = order[rank::world_size]
    return order


def steps_per_epoch(num_images: int, world_size: int, batch_size: int, limit_batches: int = 0) -> int:
    steps = math.ceil(math.ceil(num_images / world_size) / batch_size)
    return min(steps, limit_batches) if limit_batches else steps


class _EpochOrder:
    """What both train loaders share: each epoch's order, drawn from (seed, epoch), this rank's shard of it."""

    def __init__(self, num_images: int, batch_size: int, seed: int, rank: int, world_size: int, limit_batches: int):
        self.num_images, self.batch_size, self.seed = num_images, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.steps = steps_per_epoch(num_images, world_size, batch_size, limit_batches)

    def __len__(self) -> int:
        return self.steps

    def epoch_order(self, epoch: int) -> tuple[torch.Tensor, torch.Generator]:
        """This rank's indices for `epoch`, and the generator that drew them (the epoch's other draws follow)."""
        g = epoch_generator(self.seed, epoch)
        return shard_order(self.num_images, g, self.rank, self.world_size), g


class OnDeviceTrainLoader(_EpochOrder):
    def __init__(
        self,
        images: torch.Tensor,  # uint8 (N, C, H, W) on the CPU
        labels: torch.Tensor,
        *,
        batch_size: int,
        device: torch.device,
        normalizer: Normalizer,
        augment: BatchAugment,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        limit_batches: int = 0,
    ):
        super().__init__(images.shape[0], batch_size, seed, rank, world_size, limit_batches)
        self.device = device
        self.augment = augment
        self.normalizer = normalizer
        self.padded = augment.pad(images.permute(0, 2, 3, 1).contiguous()).to(device)
        self.labels = labels.to(device)

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[Batch]:
        order, g = self.epoch_order(epoch)
        draws = self.augment.draw(self.num_images, g)
        # Move the epoch's choices once; batches then slice them on the device.
        order = order.to(self.device, non_blocking=True)
        draws = draws.to(self.device)
        for step in range(start_step, self.steps):
            index = order[step * self.batch_size : (step + 1) * self.batch_size]
            crops = self.augment(self.padded, index, draws.take(index))
            yield self.normalizer(crops), self.labels[index]


class OnDeviceEvalLoader:
    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        batch_size: int,
        device: torch.device,
        normalizer: Normalizer,
        rank: int = 0,
        world_size: int = 1,
        limit_batches: int = 0,
    ):
        # Evaluation shards without padding (every image counted once); sums are all-reduced later.
        self.images = images[rank::world_size].permute(0, 2, 3, 1).contiguous().to(device)
        self.labels = labels[rank::world_size].to(device)
        self.batch_size = batch_size
        self.normalizer = normalizer
        self.num_images = labels.shape[0]
        self.steps = math.ceil(self.labels.shape[0] / batch_size)
        if limit_batches:
            self.steps = min(self.steps, limit_batches)

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[Batch]:
        for step in range(self.steps):
            sl = slice(step * self.batch_size, (step + 1) * self.batch_size)
            yield self.normalizer(self.images[sl]), self.labels[sl]


class _ListSampler(torch.utils.data.Sampler):
    def __init__(self, indices):
        self.indices = indices

    def __iter__(self):
        return iter(self.indices.tolist())

    def __len__(self) -> int:
        return len(self.indices)


class HostTrainLoader(_EpochOrder):
    """A DataLoader over a map-style dataset, with the same per-epoch order as the on-device path."""

    def __init__(
        self,
        dataset: torch.utils.data.Dataset,
        *,
        batch_size: int,
        device: torch.device,
        seed: int,
        num_workers: int,
        rank: int = 0,
        world_size: int = 1,
        limit_batches: int = 0,
        channels_last: bool = False,
    ):
        super().__init__(len(dataset), batch_size, seed, rank, world_size, limit_batches)
        self.dataset = dataset
        self.device = device
        self.num_workers = num_workers
        self.channels_last = channels_last

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[Batch]:
        order, g = self.epoch_order(epoch)
        order = order[start_step * self.batch_size : self.steps * self.batch_size]
        loader = torch.utils.data.DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            sampler=_ListSampler(order),
            num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
            # Seeds the workers' transform RNG from the epoch, so the epoch replays identically.
            generator=torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,), generator=g))),
        )
        for images, labels in loader:
            yield _to_device(images, labels, self.device, self.channels_last)


class HostEvalLoader:
    def __init__(
        self,
        dataset,
        *,
        batch_size: int,
        device: torch.device,
        num_workers: int,
        rank: int = 0,
        world_size: int = 1,
        limit_batches: int = 0,
        channels_last: bool = False,
    ):
        indices = torch.arange(rank, len(dataset), world_size)
        self.loader = torch.utils.data.DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=_ListSampler(indices),
            num_workers=num_workers,
            pin_memory=device.type == "cuda",
        )
        self.device, self.channels_last = device, channels_last
        self.num_images = len(dataset)
        self.steps = len(self.loader) if not limit_batches else min(len(self.loader), limit_batches)

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[Batch]:
        for step, (images, labels) in enumerate(self.loader):
            if step >= self.steps:
                break
            yield _to_device(images, labels, self.device, self.channels_last)


def _to_device(images: torch.Tensor, labels: torch.Tensor, device: torch.device, channels_last: bool) -> Batch:
    images = images.to(device, non_blocking=True)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, labels.to(device, non_blocking=True)


class TensorImageDataset(torch.utils.data.Dataset):
    """uint8 NCHW tensors seen as PIL images through a torchvision transform (the reference pipeline)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Callable | None = None):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return self.labels.shape[0]

    def __getitem__(self, i: int):
        from PIL import Image

        image = Image.fromarray(self.images[i].permute(1, 2, 0).numpy())
        return (self.transform(image) if self.transform else image), int(self.labels[i])


__all__ = [
    "AugmentDraws",
    "HostEvalLoader",
    "HostTrainLoader",
    "OnDeviceEvalLoader",
    "OnDeviceTrainLoader",
    "TensorImageDataset",
    "epoch_generator",
]
