"""One ordinary run folder, trained in this process: the trial's and the final retraining's unit.

The folder is named by the tuner (`trial-0003/seed-1`), so a tuner killed mid-run finds it again: a folder
with a checkpoint is resumed from it, and one where nothing was saved yet is cleared and trained afresh.
"""

from __future__ import annotations

import contextlib
import functools
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from namexp.config import launch
from namexp.config.validate import to_run_config
from namexp.run import claim
from namexp.run.layout import RunFolder
from namexp.run.record import read_record


def without_key(overrides: list[str], key: str) -> list[str]:
    return [o for o in overrides if o.split("=", 1)[0].lstrip("+~") != key]


def train_run(
    overrides: list[str], run_dir: Path, tags: dict[str, Any], on_epoch: Callable[[dict], None] | None = None
) -> dict[str, Any]:
    """Train (or finish, or just read back) the run in `run_dir`; returns its record."""
    from namexp.train.task import train_task

    record = read_record(run_dir) or {}
    if record.get("status") in ("completed", "pruned"):
        return record  # done before the tuner was stopped
    resume = any(RunFolder(run_dir).checkpoints.glob("*.pt"))
    if not resume:
        _clear_unsaved(run_dir)
    with launch.hydra_app("train") as app:
        to_run_config(launch.job_config(launch.compose(app, overrides)))  # a bad config leaves no folder
        extra = []
        if resume:
            extra = ["hydra.output_subdir=null"]  # keep the run's own .hydra
        else:
            claim.claim_run_dir(run_dir, explicit=True)
        task = functools.partial(train_task, resume=resume, tags=tags, on_epoch=on_epoch)
        app.run(launch.CONFIG_NAME, task, [*overrides, *extra, f"hydra.run.dir={launch.quote(str(run_dir))}"])
    return read_record(run_dir) or {}


def _clear_unsaved(run_dir: Path) -> None:
    """A run killed before its first checkpoint has nothing to resume: its files go, the folder stays its own."""
    folder = RunFolder(run_dir)
    if not run_dir.exists():
        return
    for path in (folder.record, folder.metrics, folder.log, folder.claim):
        path.unlink(missing_ok=True)
    for path in (folder.tensorboard, folder.hydra, folder.checkpoints):
        shutil.rmtree(path, ignore_errors=True)
    with contextlib.suppress(OSError):
        run_dir.rmdir()
