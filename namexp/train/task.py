"""The Hydra task: what every job of `namexp train` runs, in this process or in a launcher's worker.

It must stay a module-level function (joblib and submitit pickle it by reference).
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from namexp.config.launch import translate_errors
from namexp.config.validate import to_run_config
from namexp.errors import UserError
from namexp.run.lease import Lease
from namexp.train.runtime import Dist, dist_from_env, init_process_group

log = logging.getLogger("namexp")


def train_task(cfg: DictConfig, resume: bool = False, resume_from: str = "last") -> dict[str, Any]:
    """One run; `resume` (from --resume, bound with functools.partial) continues the folder's checkpoint,
    `resume_from` names which one (`previous` for --resume RUN/checkpoints/previous.pt)."""
    from namexp.train.loop import train
    from namexp.train.setup import RunContext  # torch is imported in the job, not at CLI start-up

    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    with translate_errors():
        run_cfg = to_run_config(cfg)
    d = dist_from_env()
    if not d.is_main:
        quiet_non_main_rank()
    choices = {
        k: str(v)
        for k, v in OmegaConf.to_container(hydra_cfg.runtime.choices).items()
        if not k.startswith("hydra") and v is not None
    }
    ctx = RunContext(
        run_dir=Path(hydra_cfg.runtime.output_dir),
        choices=choices,
        overrides=list(hydra_cfg.overrides.task),
        # A sweep job finds a checkpoint in its folder only when it is re-run: a requeue after preemption,
        # or `--resume SWEEP`. Either way it continues (or skips, if it completed).
        resume=resume or multirun,
        resume_from=resume_from,
        job_num=hydra_cfg.job.num if multirun else None,
        dist=d,
    )
    # A sweep job run by several Slurm tasks (tasks_per_node > 1) sets up its own process group; a single run
    # under torchrun or srun already has one (command.py), and keeps it.
    created = init_process_group(d)
    try:
        # One writer per folder: rank 0 holds its lease while it trains (a sweep job resumed while its folder
        # is trained elsewhere is refused here, and reported by the sweep, not trained twice).
        with folder_lease(ctx.run_dir, d):
            if run_cfg.trainer.devices > 1:  # this process waits; trainer.devices workers train (devices.py)
                from namexp.train.devices import check_devices, train_on_devices

                check_devices(run_cfg.trainer, d)
                return train_on_devices(run_cfg, ctx)
            return train(run_cfg, ctx)
    finally:
        if created:
            import torch.distributed as dist

            dist.destroy_process_group()


@contextlib.contextmanager
def folder_lease(run_dir: Path, d: Dist):
    """Rank 0 holds the folder's lease; under DDP every rank hears whether it got it (and stops with the same
    error when not, instead of waiting for rank 0 at the first collective)."""
    held, error = None, None
    if d.is_main:
        try:
            held = Lease(run_dir)
            held.acquire()
        except UserError as exc:
            held, error = None, str(exc)
    if d.enabled:
        import torch.distributed as dist

        box = [error]
        dist.broadcast_object_list(box, src=0)
        error = box[0]
    if error is not None:
        raise UserError(error)
    try:
        yield
    finally:
        if held is not None:
            held.release()


def quiet_non_main_rank() -> None:
    """Only rank 0 writes train.log: the other ranks' file handlers go, and their console shows warnings only."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.FileHandler):
            root.removeHandler(handler)
            handler.close()
    root.setLevel(logging.WARNING)
