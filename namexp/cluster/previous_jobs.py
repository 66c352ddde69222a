"""What an earlier launch of a sweep left in its folder: which job ran as which Slurm job, and which run
folders must not be submitted again (completed, or still live).

The Slurm job ids are kept in `.submitit/slurm_jobs.json` (job number -> Slurm job id), written as soon as
sbatch answers, so a `--resume` after the sweep command died finds jobs that are still queued or running.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from namexp.files import write_text_atomic
from namexp.run.record import read_record

JOB_IDS_FILE = "slurm_jobs.json"
# squeue states of a job that still holds (or will hold) its run folder.
LIVE_STATES = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "SUSPENDED", "RESIZING", "REQUEUE_HOLD"}


def read_job_ids(sweep_dir: Path) -> dict[int, str]:
    path = sweep_dir / ".submitit" / JOB_IDS_FILE
    try:
        return {int(k): str(v) for k, v in json.loads(path.read_text()).items()}
    except (OSError, ValueError):
        return {}


def write_job_ids(sweep_dir: Path, job_ids: dict[int, str]) -> None:
    (sweep_dir / ".submitit").mkdir(parents=True, exist_ok=True)
    text = json.dumps({str(k): v for k, v in sorted(job_ids.items())}, indent=1)
    write_text_atomic(sweep_dir / ".submitit" / JOB_IDS_FILE, text)


def is_completed(run_dir: Path, epochs: int) -> bool:
    """The run folder's record says it completed every epoch the job asks for."""
    record = read_record(run_dir) or {}
    return record.get("status") == "completed" and len(record.get("epochs") or []) >= epochs


def live_slurm_job(slurm_job_id: str | None) -> bool:
    """Whether an earlier Slurm job of this run folder is still queued or running (it holds, or will hold,
    the folder's lease: so it is waited for rather than submitted again)."""
    if not slurm_job_id:
        return False
    try:
        out = subprocess.run(
            ["squeue", "-h", "-j", slurm_job_id, "-o", "%T"], capture_output=True, text=True, timeout=60
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return any(state.strip() in LIVE_STATES for state in out.splitlines())


def held_elsewhere(run_dir: Path) -> str | None:
    """Who trains the run folder now, when a process outside this sweep's Slurm jobs does (its lease)."""
    from namexp.run import lease

    info = lease.holder(run_dir)
    return info.describe() if info is not None and not info.stale else None
