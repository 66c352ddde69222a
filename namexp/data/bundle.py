"""What `build_data` returns (`DataBundle`), the loader settings it builds with, and the validation hold-out."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from namexp.data.loader import HostEvalLoader, HostTrainLoader
from namexp.errors import UserError

# The validation split is the same for every seed (a fair comparison selects on the same images).
VAL_SPLIT_SEED = 20211124


@dataclass
class DataBundle:
    train: object | None  # a train loader: len(), .epoch(epoch, start_step); None when not asked for
    test: object  # an eval loader: len(), iter()
    val: object | None
    num_classes: int
    image_size: int
    classes: list[str]
    num_train: int
    sizes: dict[str, int]  # images per split: train, val (0 without a hold-out), test
    fingerprint: str  # which data this is (namexp.data.identity)
    source: str  # the folder it was read from, or "synthetic"


@dataclass(frozen=True)
class LoaderOptions:
    """How every loader of a run batches and places its data (the trainer's settings, this process's rank)."""

    batch_size: int  # per process
    eval_batch_size: int
    device: torch.device
    seed: int
    rank: int = 0
    world_size: int = 1
    channels_last: bool = False
    num_workers: int = 4
    limit_train_batches: int = 0
    limit_eval_batches: int = 0

    def host_train(self, dataset: torch.utils.data.Dataset) -> HostTrainLoader:
        return HostTrainLoader(
            dataset, batch_size=self.batch_size, seed=self.seed, limit_batches=self.limit_train_batches, **self._host()
        )

    def host_eval(self, dataset: torch.utils.data.Dataset) -> HostEvalLoader:
        return HostEvalLoader(
            dataset, batch_size=self.eval_batch_size, limit_batches=self.limit_eval_batches, **self._host()
        )

    def _host(self) -> dict:
        return dict(
            device=self.device,
            num_workers=self.num_workers,
            rank=self.rank,
            world_size=self.world_size,
            channels_last=self.channels_last,
        )


def holdout_indices(n: int, val_split: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, validation) indices of a training set of n images, `val_split` of them held out."""
    if val_split >= n:
        raise UserError(f"data.val_split={val_split} is not smaller than the training set ({n} images): hold out fewer")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(VAL_SPLIT_SEED))
    return order[val_split:], order[:val_split]
