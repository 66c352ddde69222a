"""Datasets in their standard layouts: CIFAR folders and archives, image folders, the host pipeline, splits."""

from __future__ import annotations

import tarfile

import numpy as np
import torch
from PIL import Image

from helpers import TINY, only_run_dir, read_record, run_inproc
from namexp.data.cifar import load_cifar


def test_an_archive_is_unpacked_once_into_the_cache(cifar100_root, tmp_path):
    archive_root = tmp_path / "archives"
    archive_root.mkdir()
    with tarfile.open(archive_root / "cifar-100-python.tar.gz", "w:gz") as tar:
        tar.add(cifar100_root / "cifar-100-python", arcname="cifar-100-python")
    cache = tmp_path / "cache"
    first = load_cifar("cifar100", str(archive_root), str(cache), download=False)
    unpacked = cache / "cifar-100-python" / "train"
    stamp = unpacked.stat().st_mtime_ns
    second = load_cifar("cifar100", str(archive_root), str(cache), download=False)
    assert unpacked.stat().st_mtime_ns == stamp  # read from the cache, not unpacked again
    assert torch.equal(first.train_images, second.train_images)
    direct = load_cifar("cifar100", str(cifar100_root), str(tmp_path / "other"), download=False)
    assert torch.equal(first.train_labels, direct.train_labels)
    assert [p.name for p in cache.iterdir()] == ["cifar-100-python"]  # no staging folders left


def test_the_data_root_comes_from_namexp_data(capsys, cifar100_root, tmp_path, monkeypatch):
    monkeypatch.setenv("NAMEXP_DATA", str(cifar100_root))
    result = run_inproc(["train", *TINY, "trainer.epochs=1", "trainer.limit_train_batches=2"], capsys)
    assert result.code == 0, result.err
    assert read_record(only_run_dir(tmp_path / "runs"))["status"] == "completed"


def test_a_validation_split_picks_best_and_says_so(capsys, cifar100_root, tmp_path):
    record = trained_record(
        capsys, tmp_path, [*TINY, f"data.root={cifar100_root}", "trainer.epochs=2", "data.val_split=100"]
    )
    assert record["selection_split"] == "val" and record["eval_split"] == "test"
    assert record["num_train"] == 400
    assert all(e["val_top1_err"] is not None and e["test_top1_err"] is not None for e in record["epochs"])
    assert record["best"]["val_top1_err"] == min(e["val_top1_err"] for e in record["epochs"])


def trained_record(capsys, tmp_path, overrides: list[str]) -> dict:
    """`namexp train OVERRIDES`, which must succeed; the record of its one run (under tmp_path/runs)."""
    result = run_inproc(["train", *overrides], capsys)
    assert result.code == 0, result.err
    return read_record(only_run_dir(tmp_path / "runs"))


def test_the_host_pipeline_trains_too(capsys, cifar100_root, tmp_path):
    host = ["data.on_device=false", "trainer.num_workers=0"]
    record = trained_record(capsys, tmp_path, [*TINY, f"data.root={cifar100_root}", "trainer.epochs=1", *host])
    assert record["status"] == "completed" and record["num_train"] == 500


def _image_folders(root, classes=("cat", "dog", "fox"), per_class=6):
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for i, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True)
            for j in range(per_class):
                pixels = np.clip(rng.normal(60 + 70 * i, 25, size=(40, 48, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{j}.png")
    return root


def test_image_folders_train_with_imagenet_style_transforms(capsys, tmp_path):
    root = _image_folders(tmp_path / "folders")
    data = ["data=imagefolder", f"data.root={root}", "data.num_classes=3", "data.image_size=32", "data.eval_resize=36"]
    trainer = ["trainer.epochs=2", "trainer.batch_size=6", "trainer.num_workers=0", "trainer.progress=none"]
    record = trained_record(capsys, tmp_path, [*data, "backbone=resnet20", "attention=nam", *trainer])
    assert record["status"] == "completed" and record["num_train"] == 18 and len(record["epochs"]) == 2
    assert record["data"] == "imagefolder"


def test_image_folders_with_the_wrong_class_count_say_so(capsys, tmp_path):
    root = _image_folders(tmp_path / "folders")
    result = run_inproc(
        [
            "train",
            "data=imagefolder",
            f"data.root={root}",
            "data.image_size=32",
            "backbone=resnet20",
            "trainer.num_workers=0",
        ],
        capsys,
    )
    assert result.code == 2
    assert "data.num_classes=1000" in result.err and "3 class folders" in result.err
