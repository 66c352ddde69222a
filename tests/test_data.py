"""Datasets in their standard layouts: CIFAR folders and archives, image folders, the host pipeline, splits."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import write_cifar100
from helpers import TINY, only_run_dir, read_record, run_inproc
from namexp.data.cifar import load_cifar, unpacked_folder
from namexp.errors import UserError


def archive_of(data_root: Path, into: Path) -> Path:
    """`into/cifar-100-python.tar.gz` holding data_root's cifar-100-python/ (as the official archive does)."""
    into.mkdir(parents=True, exist_ok=True)
    with tarfile.open(into / "cifar-100-python.tar.gz", "w:gz") as tar:
        tar.add(data_root / "cifar-100-python", arcname="cifar-100-python")
    return into


def test_an_archive_is_unpacked_once_into_the_cache(cifar100_root, tmp_path):
    archive_root = archive_of(cifar100_root, tmp_path / "archives")
    cache = tmp_path / "cache"
    first = load_cifar("cifar100", str(archive_root), str(cache), download=False)
    unpacked = unpacked_folder(archive_root / "cifar-100-python.tar.gz", "cifar-100-python", cache) / "train"
    stamp = unpacked.stat().st_mtime_ns
    second = load_cifar("cifar100", str(archive_root), str(cache), download=False)
    assert unpacked.stat().st_mtime_ns == stamp  # read from the cache, not unpacked again
    assert torch.equal(first.train_images, second.train_images)
    direct = load_cifar("cifar100", str(cifar100_root), str(tmp_path / "other"), download=False)
    assert torch.equal(first.train_labels, direct.train_labels)
    assert first.fingerprint == second.fingerprint == direct.fingerprint  # same files, wherever they are read
    assert [p.name for p in cache.iterdir()] == [unpacked.parent.parent.name]  # no staging folders left


def test_two_archives_never_share_a_cache_entry_and_a_changed_one_is_unpacked_again(tmp_path):
    cache = tmp_path / "cache"
    one = archive_of(write_cifar100(tmp_path / "src1", seed=1), tmp_path / "root1")
    two = archive_of(write_cifar100(tmp_path / "src2", seed=2), tmp_path / "root2")
    first, second = (load_cifar("cifar100", str(root), str(cache), download=False) for root in (one, two))
    assert len(list(cache.glob("cifar-100-python-*"))) == 2
    assert first.fingerprint != second.fingerprint
    assert not torch.equal(first.train_images, second.train_images)
    archive_of(write_cifar100(tmp_path / "src3", seed=3), one)  # the archive in root1 is replaced
    third = load_cifar("cifar100", str(one), str(cache), download=False)
    assert len(list(cache.glob("cifar-100-python-*"))) == 3
    assert third.fingerprint not in (first.fingerprint, second.fingerprint)


@pytest.mark.parametrize("root", ["typo", "empty"])
def test_a_root_without_the_data_is_an_error_even_when_the_cache_holds_a_copy(root, cifar100_root, tmp_path, capsys):
    cache = tmp_path / "cache"
    load_cifar("cifar100", str(archive_of(cifar100_root, tmp_path / "archives")), str(cache), download=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="cifar100 not found: .*(does not exist|holds neither)"):
        load_cifar("cifar100", str(tmp_path / root), str(cache), download=False)
    result = run_inproc(["train", *TINY, f"data.root={tmp_path / root}", f"data.cache_dir={cache}"], capsys)
    assert result.code == 2 and "Traceback" not in result.err
    assert str(tmp_path / root) in result.err and not (tmp_path / "runs").exists()


def test_a_record_names_its_data_code_and_sizes(capsys, cifar100_root, tmp_path):
    record = trained_record(
        capsys, tmp_path, [*TINY, f"data.root={cifar100_root}", "trainer.epochs=1", "data.val_split=50"]
    )
    splits = load_cifar("cifar100", str(cifar100_root), str(tmp_path / "c"), download=False)
    assert record["data_fingerprint"] == splits.fingerprint and splits.fingerprint.startswith("sha256:")
    train, test = len(splits.train_labels), len(splits.test_labels)
    assert record["data_sizes"] == {"train": train - 50, "val": 50, "test": test}
    assert record["data_source"] == str(cifar100_root / "cifar-100-python")
    env = record["environment"]
    assert env["namexp"] and env["git_dirty"] in (True, False, None)
    assert (env["git_commit"] is None) == (env["git_dirty"] is None)


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
