"""The real CIFAR-100 (found through NAMEXP_TEST_DATA; skipped, saying why, without it)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from helpers import only_run_dir, read_record, run_inproc
from namexp.data.cifar import load_cifar


def test_the_full_archive_unpacks_once_and_loads_exactly(full_cifar100_root, tmp_path):
    cache = tmp_path / "cache"
    splits = load_cifar("cifar100", str(full_cifar100_root), str(cache), download=False)
    assert splits.train_images.shape == (50000, 3, 32, 32) and splits.train_images.dtype == torch.uint8
    assert splits.test_images.shape == (10000, 3, 32, 32)
    assert torch.bincount(splits.train_labels).tolist() == [500] * 100
    assert torch.bincount(splits.test_labels).tolist() == [100] * 100
    assert len(splits.classes) == 100 and splits.classes[0] == "apple"
    assert {"meta", "test", "train"} <= {p.name for p in Path(splits.source).iterdir()}
    assert Path(splits.source).is_relative_to(cache)  # unpacked into the cache, not beside the archive
    again = load_cifar("cifar100", str(full_cifar100_root), str(cache), download=False)  # from the cache now
    assert torch.equal(again.train_images[:100], splits.train_images[:100])


@pytest.mark.slow
def test_one_epoch_of_resnet20_on_the_full_set_is_far_above_chance(full_cifar100_root, tmp_path, capsys):
    result = run_inproc(
        [
            "train",
            "experiment=quick_cpu",
            "trainer.epochs=1",
            "trainer.progress=none",
            f"data.root={full_cifar100_root}",
            f"data.cache_dir={tmp_path / 'cache'}",
        ],
        capsys,
    )
    assert result.code == 0, result.err
    record = read_record(only_run_dir(tmp_path / "runs"))
    assert record["num_train"] == 50000
    assert record["final"]["test_top1_err"] < 92.0  # chance is 99 %; one epoch of ResNet-20 reaches ~13 % accuracy
