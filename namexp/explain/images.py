"""A fixed, class-balanced, seeded selection of a split's images: the same images for every run on a dataset."""

from __future__ import annotations

import torch

from namexp.errors import UserError

SELECTION_SEED = 0  # fixed, not the run's seed: runs trained with different seeds are shown the same images


def balanced_order(labels: torch.Tensor, seed: int = SELECTION_SEED) -> list[int]:
    """Indices of `labels` round-robin over the classes (in class order), each class's images in a seeded order."""
    g = torch.Generator().manual_seed(seed)
    per_class = []
    for c in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == c).flatten()
        per_class.append(idx[torch.randperm(len(idx), generator=g)].tolist())
    order = []
    for rank in range(max((len(p) for p in per_class), default=0)):
        order += [p[rank] for p in per_class if rank < len(p)]
    return order


def split_loader(data, split: str):
    if split == "test":
        return data.test
    if split == "val":
        if data.val is None:
            raise UserError("--split val: this run held out no validation split (data.val_split=0); use --split test")
        return data.val
    raise UserError(f"--split {split} is not valid: use test or val")


def chosen_indices(labels: torch.Tensor, count: int, split: str, indices: list[int] | None) -> list[int]:
    """`indices` (each checked against the split's size), else the first `count` of the balanced selection."""
    if indices:
        wrong = [i for i in indices if not 0 <= i < len(labels)]
        if wrong:
            raise UserError(
                f"--indices {wrong[0]} is out of range: the {split} split holds {len(labels)} images "
                f"(0-{len(labels) - 1})"
            )
        return list(indices)
    if count > len(labels):
        raise UserError(f"--images {count} is out of range: the {split} split holds {len(labels)} images")
    return balanced_order(labels)[:count]


def select_images(
    cfg, device, count: int, split: str = "test", indices: list[int] | None = None
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """The split's images `indices`, else the first `count` of its balanced selection: (images, labels, classes)."""
    from namexp.train.build import make_data

    data = make_data(cfg, device, with_train=False)
    loader = split_loader(data, split)
    # Two passes over the split (its eval order is fixed): labels first, then only the chosen images kept.
    labels = torch.cat([y.cpu() for _, y in loader])
    chosen = chosen_indices(labels, count, split, indices)
    positions: dict[int, list[int]] = {}
    for rank, index in enumerate(chosen):
        positions.setdefault(index, []).append(rank)
    images: list = [None] * len(chosen)
    start = 0
    for x, _ in loader:
        for index in range(start, start + len(x)):
            for rank in positions.get(index, ()):
                images[rank] = x[index - start].float().cpu()
        start += len(x)
    return torch.stack(images).contiguous(), labels[torch.tensor(chosen)], list(data.classes)
