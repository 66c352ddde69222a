"""`namexp train`: decide between one run and a sweep, check everything that can be checked first, launch.

One run: compose, validate, claim a fresh run folder (or the one given to --resume: a run folder, or its
checkpoints/last.pt or checkpoints/previous.pt), `Hydra.run`.
A sweep (`-m`, or a `sweep` preset that sets `hydra.mode: MULTIRUN`): expand the jobs, validate every
job's config before any starts, `Hydra.multirun` through the configured launcher, then print and write
the sweep's comparison table. Failed jobs are reported, never hidden, and do not stop the others.
Under torchrun every rank runs this; rank 0 picks the run folder and tells the others.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import shutil
from pathlib import Path

from hydra.types import RunMode
from omegaconf import OmegaConf

from namexp.cluster.launcher import LaunchFailed
from namexp.config import launch
from namexp.config.validate import to_run_config
from namexp.errors import UserError
from namexp.run import claim, lease
from namexp.run.layout import RunFolder
from namexp.run.load import resume_target, saved_launcher_overrides, saved_overrides
from namexp.train.devices import check_devices
from namexp.train.runtime import Dist, dist_from_env, init_process_group, resolve_device
from namexp.train.signals import Interrupted
from namexp.train.task import train_task

log = logging.getLogger("namexp")


def run_train(overrides: list[str], multirun: bool = False, resume: Path | None = None) -> int:
    """Returns the process exit code (0 when every job completed)."""
    overrides, resume_from = list(overrides), "last"
    if resume is not None:
        resume, resume_from = resume_target(resume.expanduser().absolute())
        saved, is_sweep = saved_overrides(resume)
        overrides = saved + saved_launcher_overrides(resume, overrides) + overrides
        multirun = multirun or is_sweep
    with launch.hydra_app("train") as app:
        if not multirun:
            fixed = [o.input_line for o in launch.parse_overrides(overrides) if not o.is_sweep_override()]
            multirun = OmegaConf.select(launch.compose(app, fixed), "hydra.mode") == RunMode.MULTIRUN
            if not multirun and launch.sweep_values(overrides):
                first = launch.sweep_values(overrides)[0]
                raise UserError(
                    f"'{first}' is a sweep over several values: add -m to run one job per value "
                    f"(namexp train -m {' '.join(overrides)})"
                )
        if multirun:
            return _sweep(app, overrides, resume)
        return _single(app, overrides, resume, resume_from)


def _single(app, overrides: list[str], resume: Path | None, resume_from: str = "last") -> int:
    d = dist_from_env()
    init_process_group(d)
    cfg = launch.compose(app, overrides)
    run_cfg = to_run_config(launch.job_config(cfg))
    resolve_device(run_cfg.trainer.device, d)  # no CUDA here: say so before a run folder exists
    check_devices(run_cfg.trainer, d)
    if resume is not None and _through_slurm(cfg):
        lease.refuse_if_live(resume)  # trained elsewhere right now: no second Slurm job for it
        return _resume_through_launcher(app, overrides, resume, resume_from)
    if resume is not None:
        run_dir = resume
        lease.refuse_if_live(run_dir)  # before Hydra opens its log (every rank reads it, so all stop together)
        overrides = overrides + ["hydra.output_subdir=null"]  # keep the run's own .hydra
    elif d.is_main:
        wanted = launch.resolve_dir(cfg, "hydra.run.dir")
        new_folders = [p for p in (wanted, *wanted.parents) if not p.exists()]
        run_dir = claim.claim_run_dir(wanted, explicit=launch.explicit_override(overrides, "hydra.run.dir"))
    else:
        run_dir = None
    if d.enabled:
        run_dir = _broadcast_run_dir(run_dir)
        if not d.is_main:  # only rank 0 writes the run folder
            overrides = overrides + [
                "hydra.output_subdir=null",
                "hydra.job_logging.handlers.file.filename=/dev/null",
                "hydra.job_logging.root.level=WARNING",
            ]
    overrides = [o for o in overrides if not o.startswith("hydra.run.dir=")]
    try:  # Hydra.run re-raises the job's exception
        task = functools.partial(train_task, resume=resume is not None, resume_from=resume_from)
        result = app.run(
            launch.CONFIG_NAME, task, overrides + [f"hydra.run.dir={launch.quote(str(run_dir))}"]
        ).return_value
    except UserError as exc:
        from namexp.train.loop import Diverged

        if resume is None and d.is_main and not isinstance(exc, Diverged):
            _discard_unstarted_run(run_dir, new_folders)
        raise
    if d.enabled:
        import torch.distributed as dist

        dist.barrier()  # every rank is done (rank 0 writes the last record last) before the group goes away
        dist.destroy_process_group()
    if d.is_main:
        _print_summary(result)
    return 0


def _through_slurm(cfg) -> bool:
    return str(OmegaConf.select(cfg, "hydra.launcher._target_") or "").endswith("SlurmLauncher")


def _resume_through_launcher(app, overrides: list[str], run_dir: Path, resume_from: str) -> int:
    """`--resume RUN` of a run that was one job of a Slurm sweep: a one-job sweep of that folder through the
    same launcher (its own .hydra kept), so it trains on the cluster again, not on the login node."""
    log.info("resuming %s through its launcher", run_dir)
    task = functools.partial(train_task, resume=True, resume_from=resume_from)
    returns = app.multirun(
        launch.CONFIG_NAME,
        task,
        overrides
        + [
            "hydra.mode=MULTIRUN",
            f"hydra.sweep.dir={launch.quote(str(run_dir))}",
            "hydra.sweep.subdir=.",
            "hydra.output_subdir=null",
        ],
    )
    _print_summary(returns[0][0].return_value)  # a failed job raises its error here
    return 0


def _discard_unstarted_run(run_dir: Path, new_folders: list[Path]) -> None:
    """A mistake found before anything was trained (missing data, a bad split) leaves no run folder behind.

    A folder holding a checkpoint or a recorded epoch is kept, whatever failed (a full disk, say). Only what
    this run wrote is removed (and the folders it created, if left empty), so a folder the user named keeps
    anything else it held.
    """
    folder = RunFolder(run_dir)
    if claim.holds_progress(run_dir):
        return
    for path in (folder.record, folder.metrics, folder.log, folder.claim):
        path.unlink(missing_ok=True)
    for path in (folder.tensorboard, folder.hydra, folder.checkpoints):
        shutil.rmtree(path, ignore_errors=True)
    for folder in [run_dir, *new_folders]:
        with contextlib.suppress(OSError):
            folder.rmdir()  # only when nothing else is left


def _broadcast_run_dir(run_dir: Path | None) -> Path:
    import torch.distributed as dist

    box = [str(run_dir) if run_dir is not None else None]
    dist.broadcast_object_list(box, src=0)
    return Path(box[0])


def _sweep(app, overrides: list[str], resume: Path | None) -> int:
    if dist_from_env().enabled:
        raise UserError(
            "a sweep cannot run under torchrun: start the sweep with namexp train -m, or train one run with torchrun"
        )
    jobs = launch.expand_sweep(app, overrides)
    for job_overrides in jobs:  # a typo in the 40th job should not wait for 39 trainings
        try:
            check_devices(to_run_config(launch.job_config(launch.compose(app, job_overrides))).trainer, Dist())
        except UserError as exc:
            raise UserError(f"job {' '.join(job_overrides)}: {exc}") from None
    cfg = launch.compose(app, overrides, RunMode.MULTIRUN)
    if resume is not None:
        sweep_dir = resume
    else:
        sweep_dir = launch.resolve_dir(cfg, "hydra.sweep.dir")
        if claim.holds_sweep(sweep_dir):
            raise UserError(
                f"{sweep_dir} already holds a sweep: continue it with --resume {sweep_dir}, or choose another hydra.sweep.dir"
            )
    overrides = [o for o in overrides if not o.startswith("hydra.sweep.dir=")]
    log.info("sweep of %d jobs into %s", len(jobs), sweep_dir)
    failure: BaseException | None = None
    try:
        # hydra.mode tells each job it is part of a sweep (hydra.main sets it the same way).
        app.multirun(
            launch.CONFIG_NAME,
            train_task,
            overrides + ["hydra.mode=MULTIRUN", f"hydra.sweep.dir={launch.quote(str(sweep_dir))}"],
        )
    except LaunchFailed:  # sbatch refused the jobs: nothing ran, nothing to report
        raise
    except Exception as exc:  # the sweeper re-raises the first failed job's error after all jobs ran
        failure = exc
    except Interrupted:  # Ctrl-C or SIGTERM stops the whole sweep; show where it stands, then stop
        _sweep_report(sweep_dir, len(jobs), None)
        raise
    return _sweep_report(sweep_dir, len(jobs), failure)


def _sweep_report(sweep_dir: Path, n_jobs: int, failure: BaseException | None) -> int:
    from rich.console import Console

    from namexp.compare.command import write_sweep_table

    console = Console()
    statuses = _job_statuses(sweep_dir)
    where = f"; table in {sweep_dir / 'comparison.md'}"
    try:
        console.print(write_sweep_table(sweep_dir))
    except UserError as exc:  # no job got as far as writing a record
        console.print(f"[red]no comparison table: {exc}")
        where = ""
    bad = {k: v for k, v in statuses.items() if v != "completed"}
    done = len(statuses) - len(bad)
    console.print(f"sweep {sweep_dir}: {done}/{n_jobs} jobs completed{where}")
    for job, status in sorted(bad.items()):
        console.print(f"  job {job}: {status}")
    if failure is not None or bad or done < n_jobs:
        if failure is not None:
            console.print(f"first failure: {' '.join(str(failure).split())[:300]}")
        return 1
    return 0


def _job_statuses(sweep_dir: Path) -> dict[str, str]:
    from namexp.run.record import read_record

    statuses = {}
    for child in sweep_dir.iterdir() if sweep_dir.is_dir() else []:
        if child.is_dir() and RunFolder(child).hydra.is_dir():
            record = read_record(child)
            statuses[child.name] = record.get("status", "unknown") if record else "failed before training"
    return statuses


def _print_summary(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"{result.get('backbone')} + {result.get('attention')} (seed {result.get('seed')})", show_header=False
    )
    fmt = lambda v, spec: "–" if v is None else format(v, spec)
    table.add_row("status", str(result.get("status")))
    table.add_row(
        "final test top-1 / top-5 error",
        f"{fmt(result.get('final_top1_err'), '.2f')}% / {fmt(result.get('final_top5_err'), '.2f')}%",
    )
    table.add_row(
        "best test top-1 error", f"{fmt(result.get('best_top1_err'), '.2f')}% (epoch {result.get('best_epoch')})"
    )
    table.add_row(
        "params / FLOPs", f"{fmt(result.get('params'), ',')} / {fmt((result.get('flops') or 0) / 1e9, '.3f')} G"
    )
    table.add_row("training throughput", f"{fmt(result.get('throughput_img_s'), ',.0f')} img/s")
    table.add_row("run folder", str(result.get("run_dir")))
    Console().print(table)
