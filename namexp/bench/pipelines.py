"""The three training pipelines the bench times against each other: limit, namexp and reference.

All three run the training loop's own `training_step` on the same model and optimizer, so they differ
only in what surrounds the step: nothing (limit), namexp's epoch (namexp), the official script's input
pipeline and per-step read-back (reference).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from namexp.train.step import training_step

if TYPE_CHECKING:
    import torch

    from namexp.config.schema import RunConfig
    from namexp.train.setup import RunContext, Setup


@dataclass
class Pipeline:
    name: str
    run: Callable[[int], int]  # runs n steps, returns the number of images trained on
    warm_up: Callable[[], object]  # at least --warmup steps (and torch.compile's compilation)
    steps: int  # what one timed call of n = --steps really runs


def limit_pipeline(
    run: RunConfig, s: Setup, images: torch.Tensor, labels: torch.Tensor, steps: int, warmup: int
) -> Pipeline:
    """The step alone on a batch already on the device: no data, no penalty, no metrics, no read-back."""
    t = run.trainer

    def limit(n: int) -> int:
        s.train_net.train()
        for _ in range(n):
            training_step(s.train_net, images, labels, s.optimizer, s.scaler, t.precision, s.device)
        return n * t.batch_size

    return Pipeline("limit", limit, lambda: limit(max(1, warmup)), steps)


def namexp_pipeline(run: RunConfig, ctx: RunContext, s: Setup, steps: int, warmup: int) -> Pipeline:
    """Whole calls of the training loop's train_epoch (plan.fit_to_steps made one call run --steps steps)."""
    from namexp.train.loop import train_epoch
    from namexp.train.progress import TrainingProgress
    from namexp.train.signals import StopFlag

    data_steps = len(s.data.train)
    progress = TrainingProgress("none", 1, data_steps, enabled=False)
    stop = StopFlag()  # not entered: Ctrl-C stops the bench at once
    epochs = iter(range(10**9))  # each call a new epoch: a new shuffle and augmentation, as in training

    def namexp(_: int) -> int:
        # s.state stays at step 0 with no partial sums (nothing pauses), so each call is a whole epoch
        return train_epoch(run, ctx, s, next(epochs), stop, progress, save_partial=lambda: None).seen

    def warm_up() -> None:
        for _ in range(max(1, math.ceil(warmup / max(1, data_steps)))):
            namexp(0)

    return Pipeline("namexp", namexp, warm_up, min(steps, data_steps))


def reference_pipeline(run: RunConfig, s: Setup, steps: int, warmup: int, repeats: int) -> Pipeline:
    """The official script: DataLoader batches moved to the device, the step, `loss.item()` every step."""
    import torch

    t, device = run.trainer, s.device
    batches = reference_batches(run, t.batch_size, device, total_steps=warmup + 1 + steps * repeats)

    def reference(n: int) -> int:
        s.train_net.train()
        for _ in range(n):
            x, y = next(batches)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if t.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            _, loss = training_step(s.train_net, x, y, s.optimizer, s.scaler, t.precision, device)
            loss.item()  # the official script reads the loss every step
        return n * t.batch_size

    # The first batch waits for the workers to start.
    return Pipeline("reference", reference, lambda: reference(1 + warmup), steps)


def reference_batches(
    run: RunConfig, batch_size: int, device: torch.device, total_steps: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The official script's input pipeline, as a persistent iterator over `total_steps` full batches."""
    import torch

    from namexp.data import load_splits, reference_transforms
    from namexp.data.loader import TensorImageDataset

    d = run.data
    splits = load_splits(d, run.seed)
    images, labels = splits.train_images, splits.train_labels
    if d.train_subset:
        images, labels = images[: d.train_subset], labels[: d.train_subset]
    crop, flip = d.augment == "crop_flip", d.augment in ("crop_flip", "flip")
    train_tf, _ = reference_transforms(d, crop, flip)
    dataset = TensorImageDataset(images, labels, train_tf)
    # shuffle=True, drawn for as many batches as the bench takes (whole permutations, one after another).
    sampler = torch.utils.data.RandomSampler(
        dataset, num_samples=total_steps * batch_size, generator=torch.Generator().manual_seed(run.seed)
    )
    workers = run.trainer.num_workers
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        drop_last=True,
        persistent_workers=workers > 0,
    )
    return iter(loader)
