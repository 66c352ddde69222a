"""Shared fixtures: small datasets in the standard layouts, built in temporary folders.

Fast tests never need `../shared`: when `NAMEXP_TEST_DATA` points at the shared data folder they use its
pixel-exact `mini/` CIFAR fixtures, otherwise they write tiny CIFAR pickles of their own in the same
"python version" layout. Tests on the full CIFAR-100 use `full_cifar100_root` and skip without it.
"""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

TEST_DATA_ENV = "NAMEXP_TEST_DATA"


def shared_data() -> Path | None:
    value = os.environ.get(TEST_DATA_ENV)
    return Path(value) if value and Path(value).is_dir() else None


def write_cifar100(
    folder: Path, per_class_train: int = 5, per_class_test: int = 5, classes: int = 100, seed: int = 0
) -> Path:
    """A tiny CIFAR-100 in the official layout: cifar-100-python/{train,test,meta}, learnable by colour."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(40, 216, size=(classes, 3))
    out = folder / "cifar-100-python"
    out.mkdir(parents=True, exist_ok=True)

    def batch(per_class: int) -> dict:
        labels = np.repeat(np.arange(classes), per_class)
        rng.shuffle(labels)
        images = colours[labels][:, :, None] + rng.normal(0, 20, size=(labels.size, 3, 1024))
        data = images.clip(0, 255).astype(np.uint8).reshape(labels.size, 3072)
        return {
            "filenames": [f"img_{i}.png" for i in range(labels.size)],
            "batch_label": "tiny",
            "fine_labels": labels.tolist(),
            "coarse_labels": (labels // 5).tolist(),
            "data": data,
        }

    for name, per_class in (("train", per_class_train), ("test", per_class_test)):
        with open(out / name, "wb") as f:
            pickle.dump(batch(per_class), f, protocol=2)
    with open(out / "meta", "wb") as f:
        pickle.dump(
            {
                "fine_label_names": [f"class_{i}" for i in range(classes)],
                "coarse_label_names": [f"super_{i}" for i in range(20)],
            },
            f,
            protocol=2,
        )
    return folder


def copy_or_write_cifar100(root: Path) -> Path:
    """A data root holding a small CIFAR-100: the shared mini fixture when available, else a generated one."""
    shared = shared_data()
    if shared is not None and (shared / "mini" / "cifar-100-python").is_dir():
        shutil.copytree(shared / "mini" / "cifar-100-python", root / "cifar-100-python")
        return root
    return write_cifar100(root)


@pytest.fixture
def cifar100_root(tmp_path: Path) -> Path:
    return copy_or_write_cifar100(tmp_path / "data")


@pytest.fixture
def full_cifar100_root() -> Path:
    shared = shared_data()
    if shared is None or not (shared / "cifar-100-python.tar.xz").is_file():
        pytest.skip(
            f"the full CIFAR-100 is not available: set {TEST_DATA_ENV} to a folder holding cifar-100-python.tar.xz"
        )
    return shared


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs, caches and downloads of a test stay in its temporary folder; nothing reaches the network."""
    monkeypatch.setenv("NAMEXP_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("NAMEXP_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("NAMEXP_DATA", raising=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A real two-epoch run on synthetic images (last.pt, previous.pt, best.pt, record.json, metrics.csv),
    trained once per test module; tests that change it use `run`, a copy."""
    from helpers import TINY_SYNTHETIC, train_once

    base = tmp_path_factory.mktemp("trained")
    return train_once(base, base / "run", [*TINY_SYNTHETIC, "trainer.epochs=2"])


@pytest.fixture
def run(trained: Path, tmp_path: Path) -> Path:
    """A fresh copy of `trained` that the test may damage."""
    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    return copy


CLUSTER_SCRIPT = Path(__file__).parent / "cluster" / "slurm_cluster.sh"


@pytest.fixture(scope="session")
def slurm_cluster():
    """The single-node Slurm test cluster (tests/cluster/slurm_cluster.sh), started once for the session.

    Stopped at the end only when this session started it; skips (saying why) where it cannot start."""
    import subprocess

    env = {**os.environ, "NAMEXP_SLURM_STATE": os.environ.get("NAMEXP_SLURM_STATE", "/tmp/namexp-slurm")}
    was_up = subprocess.run([CLUSTER_SCRIPT, "status"], env=env, capture_output=True).returncode == 0
    start = subprocess.run([CLUSTER_SCRIPT, "start"], env=env, capture_output=True, text=True)
    if start.returncode != 0:
        pytest.skip(f"no Slurm test cluster: {start.stderr.strip().splitlines()[-1:] or start.returncode}")
    os.environ["SLURM_CONF"] = str(Path(env["NAMEXP_SLURM_STATE"]) / "slurm.conf")
    yield os.environ["SLURM_CONF"]
    if not was_up:
        subprocess.run([CLUSTER_SCRIPT, "stop"], env=env, capture_output=True)
