"""namexp's Slurm launcher: hydra-submitit-launcher's SlurmLauncher, made to finish what a sweep starts.

What it adds (`hydra/launcher=slurm` points here):
- it waits for every job, whatever order they end in; a cancelled or failed job is collected as a failed
  JobReturn instead of ending the wait, so the sweep table is written once, final;
- a failed job ends as Slurm state FAILED (Hydra's run_job returns the error; it is re-raised in the job)
  and its train.log says why;
- a job whose run folder completed, or whose earlier Slurm job is still queued or running, is not submitted
  again (`--resume SWEEP`): a live one is waited for, so its result still reaches the table; one whose folder
  another process holds (its lease) is reported, not trained twice;
- SIGUSR2 (submitit's preemption and time-out signal) reaches the training loop, which saves a mid-epoch
  checkpoint; then submitit's own handler requeues the job, which resumes from that checkpoint;
- sbatch's refusals become one-line errors (e.g. gres on a cluster without GPUs).
"""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides, run_job, setup_globals
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher
from omegaconf import OmegaConf, open_dict

from namexp.cluster import previous_jobs
from namexp.errors import UserError

log = logging.getLogger("namexp")


class LaunchFailed(UserError):
    """sbatch refused the sweep: no job ran, so there is no table to report."""


class SlurmSweepLauncher(SlurmLauncher):
    def __call__(self, sweep_overrides, job_dir_key, job_num, job_id, singleton_state) -> JobReturn:
        """One sweep job, inside its Slurm job (the parent's __call__ with the failure and signal paths)."""
        import submitit

        from namexp.train.signals import Interrupted

        Singleton.set_state(singleton_state)
        setup_globals()
        sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, sweep_overrides)
        with open_dict(sweep_config.hydra.job) as job:
            job.id = submitit.JobEnvironment().job_id
            sweep_config.hydra.job.num = job_num
        try:
            result = run_job(
                hydra_context=self.hydra_context,
                task_function=self.task_function,
                config=sweep_config,
                job_dir_key=job_dir_key,
                job_subdir_key="hydra.sweep.subdir",
            )
        except Interrupted as exc:  # the loop saved a mid-epoch checkpoint and marked the run interrupted
            submitit_handler = signal.getsignal(signal.SIGUSR2)
            if exc.signum == signal.SIGUSR2 and callable(submitit_handler):
                submitit_handler(exc.signum, None)  # submitit: resubmit self.checkpoint(), scontrol requeue, exit
            raise  # SIGTERM: Slurm itself requeues (scontrol requeue, preemption) or cancels the job
        if result.status == JobStatus.FAILED:
            error = result._return_value
            # Still the job's logging: the message lands in the run's train.log.
            log.error("job %d failed: %s", job_num, error, exc_info=not isinstance(error, UserError) and error)
            raise error  # a non-zero exit: Slurm records the job as FAILED
        return result

    def launch(self, job_overrides, initial_job_idx: int) -> list[JobReturn]:
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        known = previous_jobs.read_job_ids(sweep_dir)
        by_idx = dict(enumerate((list(o) for o in job_overrides), start=initial_job_idx))
        returns: dict[int, JobReturn] = {}
        waits: dict[int, Any] = {}  # job number -> submitit job to wait for
        to_submit = []
        for idx, overrides in by_idx.items():
            job_cfg = self._job_config(overrides, idx)
            run_dir = sweep_dir / str(job_cfg.hydra.sweep.subdir)
            if previous_jobs.is_completed(run_dir, int(OmegaConf.select(job_cfg, "trainer.epochs") or 0)):
                log.info("job %d: %s already completed; not submitted again", idx, run_dir)
                returns[idx] = _completed(overrides, run_dir)
            elif previous_jobs.live_slurm_job(known.get(idx)):
                log.info("job %d: Slurm job %s still holds %s; waiting for it instead", idx, known[idx], run_dir)
                waits[idx] = self._attach(known[idx])
            elif holder := previous_jobs.held_elsewhere(run_dir):
                message = f"{run_dir} is being trained by {holder}: not submitted again"
                log.warning("job %d: %s", idx, message)
                returns[idx] = JobReturn(overrides=overrides, status=JobStatus.FAILED, _return_value=UserError(message))
            else:
                to_submit.append((idx, overrides))
        if to_submit:
            submitted = self._submit(to_submit)
            known.update({idx: job.job_id for idx, job in submitted.items()})
            previous_jobs.write_job_ids(sweep_dir, known)
            waits.update(submitted)
        for idx, job in waits.items():  # every job, whatever order they end in
            returns[idx] = _outcome(job, by_idx[idx])
        return [returns[idx] for idx in sorted(returns)]

    def _job_config(self, overrides: list[str], idx: int):
        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        with open_dict(cfg.hydra.job):
            cfg.hydra.job.num = idx
        return cfg

    def _attach(self, slurm_job_id: str):
        from submitit.slurm.slurm import SlurmJob

        return SlurmJob(folder=self.params["submitit_folder"], job_id=slurm_job_id)

    def _submit(self, jobs: list[tuple[int, list[str]]]) -> dict[int, Any]:
        executor = self._executor()
        log.info(f"Submitit '{self._EXECUTOR}' sweep output dir : {self.config.hydra.sweep.dir}")
        params = []
        for idx, overrides in jobs:
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            params.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state()))
        try:
            submitted = executor.map_array(self, *zip(*params))
        except Exception as exc:  # submitit's FailedJobError carries sbatch's stderr
            raise _sbatch_error(exc) from None
        return {idx: job for (idx, _), job in zip(jobs, submitted)}

    def _executor(self):
        """The parent's executor setup (hydra-submitit-launcher 1.2's launch, without its wait)."""
        import submitit

        init_keys = {"max_num_timeout", "submitit_folder"}
        executor = submitit.AutoExecutor(
            cluster=self._EXECUTOR,
            folder=self.params["submitit_folder"],
            **{f"{self._EXECUTOR}_max_num_timeout": self.params["max_num_timeout"]},
        )
        baseparams = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(
            **{
                k if k in baseparams else f"{self._EXECUTOR}_{k}": v
                for k, v in self.params.items()
                if k not in init_keys
            }
        )
        return executor


def _completed(overrides, run_dir: Path) -> JobReturn:
    from namexp.run.record import read_record
    from namexp.train.outputs import summary

    return JobReturn(
        overrides=list(overrides),
        working_dir=str(run_dir),
        status=JobStatus.COMPLETED,
        _return_value=summary(read_record(run_dir)),
    )


def _outcome(job, overrides: list[str]) -> JobReturn:
    """The job's own JobReturn; a job that failed, was cancelled or died becomes a FAILED one saying so."""
    try:
        return job.results()[0]
    except Exception as exc:  # submitit's FailedJobError / UncompletedJobError (e.g. CANCELLED)
        reason = str(exc).strip().splitlines()
        message = f"Slurm job {job.job_id} ({job.state}): {reason[-1] if reason else type(exc).__name__}"
        log.error("job %s", message)
        return JobReturn(overrides=overrides, status=JobStatus.FAILED, _return_value=RuntimeError(message))


def _sbatch_error(exc: Exception) -> LaunchFailed:
    text = str(exc)
    if "Invalid generic resource" in text:
        return LaunchFailed(
            "sbatch refused the jobs: the cluster has no such GPUs (Invalid generic resource); on a cluster "
            "without GPUs set hydra.launcher.gpus_per_node=0, else check the cluster's GPUs (sinfo -o %G)"
        )
    lines = [line.strip() for line in text.splitlines() if "sbatch: error" in line] or text.strip().splitlines()[-1:]
    return LaunchFailed(
        f"sbatch refused the jobs: {lines[0] if lines else type(exc).__name__}; check the hydra.launcher settings"
    )
