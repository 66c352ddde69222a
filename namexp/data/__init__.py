"""Datasets and the loaders that feed the training loop (see `loader.py` for the two paths).

`build_data` is the one entry: in-memory datasets (CIFAR, synthetic) here, image folders in `imagefolder.py`.
"""

from __future__ import annotations

import torch

from namexp.config.schema import DataConfig
from namexp.data.augment import BatchAugment, Normalizer
from namexp.data.bundle import DataBundle, LoaderOptions, holdout_indices
from namexp.data.cifar import ImageSplits, load_cifar
from namexp.data.imagefolder import build_imagefolder
from namexp.data.loader import OnDeviceEvalLoader, OnDeviceTrainLoader, TensorImageDataset
from namexp.data.synthetic import make_synthetic
from namexp.errors import UserError


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
    train_idx, val_idx = (i.sort().values for i in holdout_indices(labels.shape[0], val_split))
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
    opts = LoaderOptions(
        batch_size // world_size, eval_batch_size, device, seed, rank, world_size, channels_last, num_workers,
        limit_train_batches, limit_eval_batches,
    )  # fmt: skip
    if cfg.name == "imagefolder":
        return build_imagefolder(cfg, opts, with_train)
    splits = load_splits(cfg, seed)
    (train_images, train_labels), val = _train_and_val(cfg, splits)
    if cfg.augment == "resized_crop":
        raise UserError(
            "data.augment=resized_crop is for image folders: use crop_flip, flip or none for CIFAR/synthetic"
        )
    crop, flip = cfg.augment == "crop_flip", cfg.augment in ("crop_flip", "flip")
    loaders = _on_device_loaders if cfg.on_device else _host_loaders
    train_loader, eval_loader = loaders(cfg, opts, crop, flip)
    sizes = {"train": len(train_labels), "val": len(val[1]) if val else 0, "test": len(splits.test_labels)}
    return DataBundle(
        train=train_loader(train_images, train_labels) if with_train else None,
        test=eval_loader(splits.test_images, splits.test_labels),
        val=eval_loader(*val) if val else None,
        num_classes=cfg.num_classes,
        image_size=cfg.image_size,
        classes=splits.classes,
        num_train=sizes["train"],
        sizes=sizes,
        fingerprint=splits.fingerprint,
        source=splits.source,
    )


def _train_and_val(cfg: DataConfig, splits: ImageSplits):
    """The training images (data.train_subset of them) and the validation hold-out (None without data.val_split)."""
    images, labels = splits.train_images, splits.train_labels
    if cfg.train_subset:
        if cfg.train_subset > labels.shape[0]:
            raise UserError(
                f"data.train_subset={cfg.train_subset} is larger than the training set ({labels.shape[0]} images)"
            )
        images, labels = images[: cfg.train_subset], labels[: cfg.train_subset]
    if not cfg.val_split:
        return (images, labels), None
    return split_train_val(images, labels, cfg.val_split)


def _host_loaders(cfg: DataConfig, opts: LoaderOptions, crop: bool, flip: bool):
    """(train, eval) loader makers over a DataLoader with the official script's per-image transforms."""
    train_tf, eval_tf = reference_transforms(cfg, crop, flip)
    return (
        lambda images, labels: opts.host_train(TensorImageDataset(images, labels, train_tf)),
        lambda images, labels: opts.host_eval(TensorImageDataset(images, labels, eval_tf)),
    )


def _on_device_loaders(cfg: DataConfig, opts: LoaderOptions, crop: bool, flip: bool):
    """(train, eval) loader makers over uint8 tensors held on the device, augmented there in whole batches."""
    normalizer = Normalizer(cfg.mean, cfg.std, opts.device, opts.channels_last)
    augment = BatchAugment(cfg.image_size, cfg.crop_padding, crop=crop, flip=flip)
    shard = dict(device=opts.device, normalizer=normalizer, rank=opts.rank, world_size=opts.world_size)

    def train_loader(images: torch.Tensor, labels: torch.Tensor) -> OnDeviceTrainLoader:
        return OnDeviceTrainLoader(
            images, labels, batch_size=opts.batch_size, augment=augment, seed=opts.seed,
            limit_batches=opts.limit_train_batches, **shard,
        )  # fmt: skip

    def eval_loader(images: torch.Tensor, labels: torch.Tensor) -> OnDeviceEvalLoader:
        return OnDeviceEvalLoader(
            images, labels, batch_size=opts.eval_batch_size, limit_batches=opts.limit_eval_batches, **shard
        )

    return train_loader, eval_loader


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


__all__ = ["DataBundle", "build_data", "load_splits", "reference_transforms"]
