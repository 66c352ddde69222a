"""Image folders (`root/train/<class>/*`, `root/val/<class>/*`), read per image on the host."""

from __future__ import annotations

from pathlib import Path

import torch

from namexp.config.schema import DataConfig
from namexp.data.bundle import DataBundle, LoaderOptions, holdout_indices
from namexp.data.cifar import default_data_root
from namexp.data.identity import listing_fingerprint
from namexp.errors import UserError


def build_imagefolder(cfg: DataConfig, opts: LoaderOptions, with_train: bool) -> DataBundle:
    from torchvision import datasets

    root = Path(cfg.root).expanduser() if cfg.root else default_data_root()
    train_dir, val_dir = root / "train", root / "val"
    if not train_dir.is_dir() or not val_dir.is_dir():
        raise UserError(
            f"image folders not found: {root} must hold train/<class>/* and val/<class>/*; set data.root or NAMEXP_DATA"
        )
    train_tf, eval_tf = _transforms(cfg)
    try:
        train_set = datasets.ImageFolder(str(train_dir), transform=train_tf)
        test_set = datasets.ImageFolder(str(val_dir), transform=eval_tf)
    except (FileNotFoundError, RuntimeError) as exc:
        raise UserError(f"cannot read the image folders in {root}: {' '.join(str(exc).split())}") from None
    classes = list(train_set.classes)
    if len(classes) != cfg.num_classes:
        raise UserError(
            f"data.num_classes={cfg.num_classes} but {train_dir} holds {len(classes)} class folders: "
            f"set data.num_classes={len(classes)}"
        )
    val = None
    if cfg.val_split:
        train_idx, val_idx = holdout_indices(len(train_set), cfg.val_split)
        val_set = datasets.ImageFolder(str(train_dir), transform=eval_tf)
        val = torch.utils.data.Subset(val_set, val_idx.tolist())
        train_set = torch.utils.data.Subset(train_set, train_idx.tolist())
    sizes = {"train": len(train_set), "val": len(val) if val is not None else 0, "test": len(test_set)}
    return DataBundle(
        train=opts.host_train(train_set) if with_train else None,
        test=opts.host_eval(test_set),
        val=opts.host_eval(val) if val is not None else None,
        num_classes=cfg.num_classes,
        image_size=cfg.image_size,
        classes=classes,
        num_train=sizes["train"],
        sizes=sizes,
        fingerprint=listing_fingerprint(root),
        source=str(root),
    )


def _transforms(cfg: DataConfig):
    """(train, eval) per-image transforms: a random resized crop and flip, or the eval resize and centre crop."""
    from torchvision import transforms as T

    normalize = T.Normalize(cfg.mean, cfg.std)
    eval_tf = T.Compose([T.Resize(cfg.eval_resize), T.CenterCrop(cfg.image_size), T.ToTensor(), normalize])
    if cfg.augment != "resized_crop":
        return eval_tf, eval_tf
    return T.Compose([T.RandomResizedCrop(cfg.image_size), T.RandomHorizontalFlip(), T.ToTensor(), normalize]), eval_tf
