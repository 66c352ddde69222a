"""A write that fails (disk full, I/O error, read-only folder) leaves the last good file byte-identical, no
temporary file, and one line for the user: checkpoints (last.pt and previous.pt), record.json, metrics.csv and
compare's tables and plots.

The failures are the operating system's answers, made to happen: the file object's `write` puts half the bytes
into the temporary file and then raises ENOSPC, `os.fsync` or `os.replace` raise, or the folder is really made
read-only. From the first failure on, every later write of that file fails too, as on a disk that stays full.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from helpers import TINY_SYNTHETIC, one_error_line, read_checkpoint, read_record, run_inproc
from namexp.compare.command import write_sweep_table
from namexp.files import WriteFailed

pytestmark = pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="finds a descriptor's file in /proc")

NO_SPACE = "[Errno 28] No space left on device"
IO_ERROR = "[Errno 5] Input/output error"
NOT_WRITABLE = "[Errno 13] Permission denied"
FIXES = {NO_SPACE: "free space", IO_ERROR: "check the disk", NOT_WRITABLE: "make the folder writable"}


class FailingDisk:
    """Makes the OS fail writes of the file called `name` (its temporary `.name.*.tmp` and its rename); `create`
    refuses the temporary file itself, as a folder does that a non-root user may not write to."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, name: str, how: str):
        self.name, self.how, self.failures = name, how, 0
        real_fdopen, real_fsync, real_replace, real_mkstemp = os.fdopen, os.fsync, os.replace, tempfile.mkstemp

        def mkstemp(*args, prefix=None, **kwargs):
            if how == "create" and prefix == f".{name}.":
                self.failures += 1
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
            return real_mkstemp(*args, prefix=prefix, **kwargs)

        def fdopen(fd, *args, **kwargs):
            f = real_fdopen(fd, *args, **kwargs)
            return _HalfThenFull(f, self) if how == "write" and self._ours(_path_of(fd)) else f

        def fsync(fd):
            if how == "fsync" and self._ours(_path_of(fd)):
                self.failures += 1
                raise OSError(errno.EIO, os.strerror(errno.EIO))
            return real_fsync(fd)

        def replace(src, dst, *args, **kwargs):
            if how == "replace" and (self._ours(str(src)) or Path(dst).name == name):
                self.failures += 1
                raise OSError(errno.EIO, os.strerror(errno.EIO))
            return real_replace(src, dst, *args, **kwargs)

        monkeypatch.setattr(os, "fdopen", fdopen)
        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "replace", replace)
        monkeypatch.setattr(tempfile, "mkstemp", mkstemp)

    def _ours(self, path: str) -> bool:
        base = Path(path).name
        return base == self.name or (base.startswith(f".{self.name}.") and base.endswith(".tmp"))


class _HalfThenFull:
    """A file whose every write puts half its bytes on disk, then finds the disk full."""

    def __init__(self, f, disk: FailingDisk):
        self._f, self._disk = f, disk

    def write(self, data):
        self._f.write(data[: len(data) // 2])
        self._f.flush()
        self._disk.failures += 1
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()
        return False


def _path_of(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


def temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*.tmp"))


def as_bytes(*paths: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in paths}


# (file that fails, how, the OS error the user is shown)
RUN_FILES = [
    ("last.pt", "write", NO_SPACE),
    ("last.pt", "fsync", IO_ERROR),
    ("last.pt", "replace", IO_ERROR),
    ("last.pt", "create", NOT_WRITABLE),
    ("record.json", "write", NO_SPACE),
    ("record.json", "replace", IO_ERROR),
    ("metrics.csv", "write", NO_SPACE),
]


@pytest.mark.parametrize("name,how,reason", RUN_FILES, ids=[f"{n}-{h}" for n, h, _ in RUN_FILES])
def test_a_failed_write_while_training_keeps_the_last_good_files(name, how, reason, run, monkeypatch, capsys):
    checkpoints = run / "checkpoints"
    kept = as_bytes(checkpoints / "last.pt", checkpoints / "previous.pt") if name == "last.pt" else as_bytes(run / name)
    disk = FailingDisk(monkeypatch, name, how)
    result = run_inproc(["train", "--resume", str(run), "trainer.epochs=3"], capsys)
    line = one_error_line(result)
    target = checkpoints / name if name.endswith(".pt") else run / name
    assert (
        line
        == f"error: could not write {target}: {reason} -- {FIXES[reason]} and resume with: namexp train --resume {run}"
    )
    assert disk.failures >= 1
    for file, data in kept.items():
        assert (checkpoints / file if file.endswith(".pt") else run / file).read_bytes() == data, file
    assert temporaries(run) == []
    assert read_checkpoint(checkpoints / "last.pt")["state"]["epochs_done"] == 2

    monkeypatch.undo()  # space again: the run goes on from where it stood and loses nothing
    result = run_inproc(["train", "--resume", str(run), "trainer.epochs=3"], capsys)
    assert result.code == 0, result.err
    assert [e["epoch"] for e in read_record(run)["epochs"]] == [1, 2, 3]
    assert read_checkpoint(checkpoints / "last.pt")["state"]["epochs_done"] == 3


def test_a_fresh_run_whose_first_checkpoint_fails_keeps_its_folder(tmp_path, monkeypatch, capsys):
    run = tmp_path / "fresh"
    FailingDisk(monkeypatch, "last.pt", "write")
    result = run_inproc(["train", *TINY_SYNTHETIC, "trainer.epochs=2", f"hydra.run.dir={run}"], capsys)
    line = one_error_line(result)
    assert line.startswith(f"error: could not write {run / 'checkpoints' / 'last.pt'}: {NO_SPACE}")
    assert line.endswith(f"free space and resume with: namexp train --resume {run}")
    record = read_record(run)  # the record holds an epoch: the folder is kept, whatever failed
    assert [e["epoch"] for e in record["epochs"]] == [1] and record["status"] == "failed"
    assert record["error"] and "No space left on device" in record["error"]
    assert not (run / "checkpoints" / "last.pt").exists() and temporaries(run) == []

    monkeypatch.undo()
    result = run_inproc(["train", "--resume", str(run)], capsys)
    assert result.code == 0, result.err
    assert read_record(run)["status"] == "completed" and [e["epoch"] for e in read_record(run)["epochs"]] == [1, 2]


def test_a_fresh_run_that_could_not_write_anything_is_told_to_train_again(tmp_path, monkeypatch, capsys):
    run = tmp_path / "fresh"
    FailingDisk(monkeypatch, "record.json", "write")
    line = one_error_line(run_inproc(["train", *TINY_SYNTHETIC, "trainer.epochs=1", f"hydra.run.dir={run}"], capsys))
    assert line.startswith(f"error: could not write {run / 'record.json'}: {NO_SPACE}")
    assert line.endswith("free space and train again (nothing was trained yet)")
    assert not run.exists()  # nothing was trained: no half-made run folder is left


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_checkpoints_folder_keeps_both_checkpoints(run, capsys):
    checkpoints = run / "checkpoints"
    kept = as_bytes(checkpoints / "last.pt", checkpoints / "previous.pt")
    checkpoints.chmod(0o555)
    try:
        line = one_error_line(run_inproc(["train", "--resume", str(run), "trainer.epochs=3"], capsys))
    finally:
        checkpoints.chmod(0o755)
    assert line == (
        f"error: could not write {checkpoints / 'last.pt'}: [Errno 13] Permission denied -- make the folder "
        f"writable and resume with: namexp train --resume {run}"
    )
    assert as_bytes(checkpoints / "last.pt", checkpoints / "previous.pt") == kept
    assert temporaries(run) == []


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_table_folder_keeps_the_table(trained, tmp_path, capsys):
    out = tmp_path / "tables"
    out.mkdir()
    table = out / "table.md"
    assert run_inproc(["compare", str(trained), "--output", str(table)], capsys).code == 0
    kept = table.read_bytes()
    out.chmod(0o555)
    try:
        line = one_error_line(run_inproc(["compare", str(trained), "--output", str(table), "--force"], capsys))
    finally:
        out.chmod(0o755)
    assert line.startswith(f"error: could not write {table}: [Errno 13] Permission denied")
    assert table.read_bytes() == kept


@pytest.mark.parametrize("name", ["table.md", "table.csv"])
@pytest.mark.parametrize("how", ["write", "replace"])
def test_a_failed_comparison_table_keeps_the_previous_table(name, how, trained, tmp_path, monkeypatch, capsys):
    table = tmp_path / name
    assert run_inproc(["compare", str(trained), "--output", str(table)], capsys).code == 0
    kept = table.read_bytes()
    FailingDisk(monkeypatch, name, how)
    line = one_error_line(run_inproc(["compare", str(trained), "--output", str(table), "--force"], capsys))
    reason = NO_SPACE if how == "write" else IO_ERROR
    assert (
        line
        == f"error: could not write {table}: {reason} -- {FIXES[reason]} and run the command again (the file as it was is kept)"
    )
    assert table.read_bytes() == kept and temporaries(tmp_path) == []


def test_a_failed_plot_keeps_the_previous_plot(trained, tmp_path, monkeypatch, capsys):
    plots = tmp_path / "plots"
    assert run_inproc(["compare", str(trained), "--plot", str(plots)], capsys).code == 0
    kept = as_bytes(*plots.iterdir())
    assert "test_top1_curves.png" in kept
    FailingDisk(monkeypatch, "test_top1_curves.png", "write")
    line = one_error_line(run_inproc(["compare", str(trained), "--plot", str(plots), "--force"], capsys))
    assert line.startswith(f"error: could not write {plots / 'test_top1_curves.png'}: {NO_SPACE}")
    assert as_bytes(*plots.iterdir()) == kept and temporaries(plots) == []


def test_a_failed_sweep_table_keeps_the_previous_one(trained, tmp_path, monkeypatch):
    sweep = tmp_path / "sweep"
    shutil.copytree(trained, sweep / "0")
    write_sweep_table(sweep)
    kept = as_bytes(sweep / "comparison.md", sweep / "comparison.csv")
    FailingDisk(monkeypatch, "comparison.md", "write")
    with pytest.raises(WriteFailed, match=r"could not write .*comparison\.md: \[Errno 28\] No space left on device"):
        write_sweep_table(sweep)
    assert as_bytes(sweep / "comparison.md", sweep / "comparison.csv") == kept and temporaries(sweep) == []


def test_tensorboard_events_that_cannot_be_written_never_stop_the_run(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "tb").write_text("a file where the events folder should be")  # the OS refuses the folder
    result = run_inproc(["train", *TINY_SYNTHETIC, "trainer.epochs=1", f"hydra.run.dir={run}"], capsys)
    assert result.code == 0, result.err
    assert "TensorBoard events in" in result.out + result.err and "Traceback" not in result.out + result.err
    record = read_record(run)
    assert record["status"] == "completed" and [e["epoch"] for e in record["epochs"]] == [1]
    assert read_checkpoint(run / "checkpoints" / "last.pt")["state"]["epochs_done"] == 1
