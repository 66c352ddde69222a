"""Atomic writes leave complete files with the permissions of any other new file (not mkstemp's 0600)."""

from __future__ import annotations

import os
import stat

import pytest
import torch

from namexp.files import write_atomic, write_text_atomic
from namexp.run.checkpoint import load_checkpoint, save_atomic


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_text_and_checkpoint_are_readable_by_others(tmp_path, umask_022):
    text = tmp_path / "sub" / "record.json"
    write_text_atomic(text, "{}")
    assert text.read_text() == "{}" and mode(text) == 0o644
    ckpt = tmp_path / "last.pt"
    save_atomic({"format": 1, "model": {"w": torch.ones(2)}, "config": {}, "epoch": 3}, ckpt)
    assert load_checkpoint(ckpt)["epoch"] == 3 and mode(ckpt) == 0o644
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "table.md"
    write_text_atomic(path, "old")

    def boom(f):
        f.write("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_atomic(path, boom)
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["table.md"]


def test_every_file_of_a_run_folder_is_readable_by_others_and_not_executable(tmp_path, capsys, umask_022):
    from helpers import run_inproc

    run_dir = tmp_path / "run"
    result = run_inproc(
        [
            "train",
            "data=synthetic",
            "backbone=resnet20",
            "attention=nam",
            "trainer.epochs=1",
            "trainer.progress=none",
            "data.synthetic_train_size=32",
            "data.synthetic_test_size=16",
            "trainer.batch_size=16",
            "trainer.device=cpu",
            f"hydra.run.dir={run_dir}",
        ],
        capsys,
    )
    assert result.code == 0, result.err
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert {"record.json", "last.pt", ".namexp-run", "metrics.csv"} <= {p.name for p in files}
    assert {p.relative_to(run_dir).as_posix(): oct(mode(p)) for p in files if mode(p) != 0o644} == {}
