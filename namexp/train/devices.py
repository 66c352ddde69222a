"""`trainer.devices=N`: one run (a single run, or each job of a local sweep) as an N-process DDP run on this
machine, started by torch's own elastic launcher (what torchrun runs), NCCL with one GPU each or gloo on the CPU.

The job's process (the one Hydra runs the task in) keeps the folder's lease and waits; its N workers train,
rank 0 writing the run folder as under torchrun. A worker reports a user error or an interruption back as a
value, so the job ends with the same one-line error as a one-process run.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import uuid
from typing import Any

import torch

from namexp.config.schema import RunConfig, TrainerConfig
from namexp.errors import UserError
from namexp.train.runtime import Dist, dist_from_env, init_process_group
from namexp.train.setup import RunContext
from namexp.train.signals import Interrupted

log = logging.getLogger("namexp")
LOG_FORMAT = "[%(asctime)s][%(levelname)s] %(message)s"  # conf/config.yaml's job_logging format


def uses_cuda(trainer: TrainerConfig) -> bool:
    return trainer.device != "cpu" and torch.cuda.is_available()


def check_devices(trainer: TrainerConfig, d: Dist) -> None:
    """One-line errors for a trainer.devices that cannot be honoured, said before a run folder exists."""
    n = trainer.devices
    if n == 1:
        return
    if d.enabled:
        raise UserError(
            f"trainer.devices={n} but this process is already one of {d.world_size} (torchrun or srun started "
            "them): set trainer.devices=1, or run namexp train without torchrun/srun"
        )
    if trainer.device.startswith("cuda:"):
        raise UserError(
            f"trainer.devices={n} uses GPUs 0..{n - 1}: set trainer.device=auto (or cuda), not {trainer.device}"
        )
    if uses_cuda(trainer) and n > torch.cuda.device_count():
        raise UserError(
            f"trainer.devices={n} but this machine has {torch.cuda.device_count()} CUDA device(s): "
            f"set trainer.devices={torch.cuda.device_count()} or fewer"
        )


def train_on_devices(cfg: RunConfig, ctx: RunContext) -> dict[str, Any]:
    """Run `cfg` as trainer.devices processes; returns rank 0's summary (raises what rank 0 raised)."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    n = cfg.trainer.devices
    log.info("training %s as %d processes (%s)", ctx.run_dir, n, "NCCL" if uses_cuda(cfg.trainer) else "gloo")
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=n,
        run_id=f"namexp-{uuid.uuid4().hex[:12]}",
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",
        max_restarts=0,
        start_method="spawn",
        monitor_interval=0.1,
    )  # fmt: skip  -- what `torchrun --standalone --nproc_per_node=N` sets up
    try:
        results = elastic_launch(config, _worker)(cfg, ctx)
    except SignalException as exc:  # the launcher passed the signal on to the workers, which saved and stopped
        raise Interrupted(int(exc.sigval), str(ctx.run_dir)) from None
    outcome = results[0]
    if outcome[0] == "interrupted":
        raise Interrupted(outcome[1], str(ctx.run_dir))
    if outcome[0] == "user_error":
        from namexp.train.loop import Diverged

        raise (Diverged if outcome[2] else UserError)(outcome[1])
    return outcome[1]


def _worker(cfg: RunConfig, ctx: RunContext) -> tuple:
    """One of the N processes: torch's launcher set RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous."""
    from namexp.train.loop import Diverged, train

    d = dist_from_env()
    _log_like_hydra(ctx, d)
    if cfg.trainer.devices > 1 and not uses_cuda(cfg.trainer) and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // cfg.trainer.devices))  # share the cores
    init_process_group(d)
    try:
        return ("completed", train(cfg, dataclasses.replace(ctx, dist=d)))
    except Interrupted as exc:
        return ("interrupted", exc.signum)
    except UserError as exc:
        return ("user_error", str(exc), isinstance(exc, Diverged))
    finally:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def _log_like_hydra(ctx: RunContext, d: Dist) -> None:
    """Rank 0 logs to the run's train.log and the console as the job does; the others show warnings only."""
    root = logging.getLogger()
    formatter = logging.Formatter(LOG_FORMAT)
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stdout)]
    if d.is_main:
        handlers.append(logging.FileHandler(ctx.folder.log))
    for handler in handlers:
        handler.setFormatter(formatter)
        root.addHandler(handler)
    root.setLevel(logging.INFO if d.is_main else logging.WARNING)
