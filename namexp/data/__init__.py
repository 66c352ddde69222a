"""Datasets and the loaders that feed the training loop (see `loader.py` for the two paths)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from namexp.config.schema import DataConfig
from namexp.data.augment import BatchAugment, Normalizer
from namexp.data.cifar import ImageSplits, default_data_root, load_cifar
from namexp.data.loader import (
    HostEvalLoader,
    HostTrainLoader,
    OnDeviceEvalLoader,
    OnDeviceTrainLoader,
    TensorImageDataset,
)
from namexp.data.synthetic import make_synthetic
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


def load_splits(cfg: DataConfig, seed: int = 0) -> ImageSplits:
    """The whole in-memory dataset (CIFAR or synthetic) as uint8 tensors on the CPU."""
    if cfg.name in ("cifar10", "cifar100"):
        splits = load_cifar(cfg.name, cfg.root, cfg.cache_dir, cfg.download)
        if cfg.num_classes != len(splits.classes):
            raise UserError(
                f"data.num_classes={cfg.num_classes} but {cfg.name} has {len(splits.classes)} classes: drop the override"
            )
        if cfg.image_size != 32:
            raise UserError(f"data.image_size={cfg.image_size} but {cfg.name} images are 32x32: drop the override")
        return splits
    if cfg.name == "synthetic":
        return make_synthetic(
            cfg.num_classes, cfg.image_size, cfg.synthetic_train_size, cfg.synthetic_test_size, seed=0
        )
    raise UserError(f"data.name={cfg.name} is not an in-memory dataset")


def split_train_val(images: torch.Tensor, labels: torch.Tensor, val_split: int):
    n = labels.shape[0]
    if val_split >= n:
        raise UserError(f"data.val_split={val_split} is not smaller than the training set ({n} images): hold out fewer")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(VAL_SPLIT_SEED))
    val_idx, train_idx = order[:val_split].sort().values, order[val_split:].sort().values
    return (images[train_idx], labels[train_idx]), (images[val_idx], labels[val_idx])


def build_data(
    cfg: DataConfig,
    *,
    batch_size: int,
    eval_batch_size: int,
    device: torch.device,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
    channels_last: bool = False,
    num_workers: int = 4,
    limit_train_batches: int = 0,
    limit_eval_batches: int = 0,
    with_train: bool = True,
) -> DataBundle:
    """Loaders for every split; `with_train=False` (evaluation) leaves the training loader out."""
    if batch_size % world_size:
        raise UserError(
            f"trainer.batch_size={batch_size} does not split over {world_size} processes: use a multiple of {world_size}"
        )
    per_rank = batch_size // world_size
    if cfg.name == "imagefolder":
        return _build_imagefolder(
            cfg,
            per_rank,
            eval_batch_size,
            device,
            seed,
            rank,
            world_size,
            channels_last,
            num_workers,
            limit_train_batches,
            limit_eval_batches,
            with_train,
        )

    splits = load_splits(cfg, seed)
    train_images, train_labels = splits.train_images, splits.train_labels
    if cfg.train_subset:
        if cfg.train_subset > train_labels.shape[0]:
            raise UserError(
                f"data.train_subset={cfg.train_subset} is larger than the training set ({train_labels.shape[0]} images)"
            )
        train_images, train_labels = train_images[: cfg.train_subset], train_labels[: cfg.train_subset]
    val = None
    if cfg.val_split:
        (train_images, train_labels), (val_images, val_labels) = split_train_val(
            train_images, train_labels, cfg.val_split
        )
        val = (val_images, val_labels)

    crop, flip = cfg.augment == "crop_flip", cfg.augment in ("crop_flip", "flip")
    if cfg.augment == "resized_crop":
        raise UserError(
            "data.augment=resized_crop is for image folders: use crop_flip, flip or none for CIFAR/synthetic"
        )

    if not cfg.on_device:
        train_tf, eval_tf = reference_transforms(cfg, crop, flip)
        train = (
            None
            if not with_train
            else HostTrainLoader(
                TensorImageDataset(train_images, train_labels, train_tf),
                batch_size=per_rank,
                device=device,
                seed=seed,
                num_workers=num_workers,
                rank=rank,
                world_size=world_size,
                limit_batches=limit_train_batches,
                channels_last=channels_last,
            )
        )
        make_eval = lambda x, y: HostEvalLoader(
            TensorImageDataset(x, y, eval_tf),
            batch_size=eval_batch_size,
            device=device,  # noqa: E731
            num_workers=num_workers,
            rank=rank,
            world_size=world_size,
            limit_batches=limit_eval_batches,
            channels_last=channels_last,
        )
    else:
        normalizer = Normalizer(cfg.mean, cfg.std, device, channels_last)
        augment = BatchAugment(cfg.image_size, cfg.crop_padding, crop=crop, flip=flip)
        train = (
            None
            if not with_train
            else OnDeviceTrainLoader(
                train_images,
                train_labels,
                batch_size=per_rank,
                device=device,
                normalizer=normalizer,
                augment=augment,
                seed=seed,
                rank=rank,
                world_size=world_size,
                limit_batches=limit_train_batches,
            )
        )
        make_eval = lambda x, y: OnDeviceEvalLoader(
            x,
            y,
            batch_size=eval_batch_size,
            device=device,  # noqa: E731
            normalizer=normalizer,
            rank=rank,
            world_size=world_size,
            limit_batches=limit_eval_batches,
        )
    return DataBundle(
        train=train,
        test=make_eval(splits.test_images, splits.test_labels),
        val=make_eval(*val) if val else None,
        num_classes=cfg.num_classes,
        image_size=cfg.image_size,
        classes=splits.classes,
        num_train=int(train_labels.shape[0]),
    )


def reference_transforms(cfg: DataConfig, crop: bool, flip: bool):
    """The per-image torchvision pipeline the official NAM script uses (crop, flip, to-tensor, normalize)."""
    from torchvision import transforms as T

    steps = []
    if crop:
        steps.append(T.RandomCrop(cfg.image_size, padding=cfg.crop_padding))
    if flip:
        steps.append(T.RandomHorizontalFlip())
    tail = [T.ToTensor(), T.Normalize(cfg.mean, cfg.std)]
    return T.Compose(steps + tail), T.Compose(tail)


def _build_imagefolder(
    cfg,
    per_rank,
    eval_batch_size,
    device,
    seed,
    rank,
    world_size,
    channels_last,
    num_workers,
    limit_train_batches,
    limit_eval_batches,
    with_train,
) -> DataBundle:
    from torchvision import datasets
    from torchvision import transforms as T

    root = Path(cfg.root).expanduser() if cfg.root else default_data_root()
    train_dir, val_dir = root / "train", root / "val"
    if not train_dir.is_dir() or not val_dir.is_dir():
        raise UserError(
            f"image folders not found: {root} must hold train/<class>/* and val/<class>/*; set data.root or NAMEXP_DATA"
        )
    normalize = T.Normalize(cfg.mean, cfg.std)
    train_tf = (
        T.Compose([T.RandomResizedCrop(cfg.image_size), T.RandomHorizontalFlip(), T.ToTensor(), normalize])
        if cfg.augment == "resized_crop"
        else T.Compose([T.Resize(cfg.eval_resize), T.CenterCrop(cfg.image_size), T.ToTensor(), normalize])
    )
    eval_tf = T.Compose([T.Resize(cfg.eval_resize), T.CenterCrop(cfg.image_size), T.ToTensor(), normalize])
    try:
        train_set = datasets.ImageFolder(str(train_dir), transform=train_tf)
        test_set = datasets.ImageFolder(str(val_dir), transform=eval_tf)
    except (FileNotFoundError, RuntimeError) as exc:
        raise UserError(f"cannot read the image folders in {root}: {' '.join(str(exc).split())}") from None
    if len(train_set.classes) != cfg.num_classes:
        raise UserError(
            f"data.num_classes={cfg.num_classes} but {train_dir} holds {len(train_set.classes)} class folders: set data.num_classes={len(train_set.classes)}"
        )
    val = None
    if cfg.val_split:
        n = len(train_set)
        if cfg.val_split >= n:
            raise UserError(
                f"data.val_split={cfg.val_split} is not smaller than the training set ({n} images): hold out fewer"
            )
        order = torch.randperm(n, generator=torch.Generator().manual_seed(VAL_SPLIT_SEED))
        val_set = datasets.ImageFolder(str(train_dir), transform=eval_tf)
        val = torch.utils.data.Subset(val_set, order[: cfg.val_split].tolist())
        train_set = torch.utils.data.Subset(train_set, order[cfg.val_split :].tolist())
    common = dict(device=device, num_workers=num_workers, rank=rank, world_size=world_size, channels_last=channels_last)
    train = (
        HostTrainLoader(train_set, batch_size=per_rank, seed=seed, limit_batches=limit_train_batches, **common)
        if with_train
        else None
    )
    make_eval = lambda ds: HostEvalLoader(ds, batch_size=eval_batch_size, limit_batches=limit_eval_batches, **common)  # noqa: E731
    classes = train_set.dataset.classes if isinstance(train_set, torch.utils.data.Subset) else train_set.classes
    return DataBundle(
        train=train,
        test=make_eval(test_set),
        val=make_eval(val) if val is not None else None,
        num_classes=cfg.num_classes,
        image_size=cfg.image_size,
        classes=list(classes),
        num_train=len(train_set),
    )
