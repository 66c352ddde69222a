"""The Hydra task: what every job of `namexp train` runs, in this process or in a launcher's worker.

It must stay a module-level function (joblib and submitit pickle it by reference).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from namexp.config.launch import translate_errors
from namexp.config.validate import to_run_config
from namexp.train.runtime import dist_from_env

log = logging.getLogger("namexp")


def train_task(
    cfg: DictConfig, resume: bool = False, resume_from: str = "last", tags=None, on_epoch=None
) -> dict[str, Any]:
    """One run; `resume` (from --resume, bound with functools.partial) continues the folder's checkpoint,
    `resume_from` names which one (`previous` for --resume RUN/checkpoints/previous.pt); `tags` and `on_epoch`:
    see RunContext (namexp tune binds them)."""
    from namexp.train.loop import train
    from namexp.train.setup import RunContext  # torch is imported in the job, not at CLI start-up

    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    with translate_errors():
        run_cfg = to_run_config(cfg)
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
        dist=dist_from_env(),
        tags=dict(tags or {}),
        on_epoch=on_epoch,
    )
    return train(run_cfg, ctx)
