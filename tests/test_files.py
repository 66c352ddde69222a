"""Atomic writes leave complete files with the permissions of any other new file (not mkstemp's 0600)."""

import os
import stat

import pytest
import torch

from namexp.files import write_text_atomic
from namexp.train.checkpoint import load_checkpoint, save_atomic


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

    from namexp.files import write_atomic
    with pytest.raises(RuntimeError):
        write_atomic(path, boom)
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["table.md"]
