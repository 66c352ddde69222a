"""Sweeps through namexp's Slurm launcher on a real single-node Slurm cluster (tests/cluster/slurm_cluster.sh).

Every test submits real sbatch job arrays through `namexp train -m ... hydra/launcher=slurm` and reads the
outcome back from the run folders and from Slurm's accounting (sacct). Run: pytest -m cluster.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import test_distributed as ddp_tests

from helpers import TINY, read_checkpoint, read_record
from namexp.run.record import read_record as record_if_any

DDP_RECIPE = ddp_tests.DDP_RECIPE
torchrun_reference = ddp_tests.torchrun_reference  # the 2-process torchrun run the Slurm job is compared with
pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("slurm_cluster")]

# One CPU and little memory per job, no GPUs: the test cluster is one 2-core machine.
SLURM = [
    "hydra/launcher=slurm",
    "hydra.launcher.gpus_per_node=0",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=1",
    "hydra.launcher.timeout_min=20",
]
SYNTHETIC = [
    "data=synthetic",
    "backbone=resnet20",
    "trainer.progress=none",
    "data.synthetic_train_size=64",
    "data.synthetic_test_size=32",
    "trainer.batch_size=16",
    "trainer.device=cpu",
]
# Long enough epochs (40 steps of 8 images) that a signal lands mid-epoch.
SLOW_EPOCHS = [*SYNTHETIC, "data.synthetic_train_size=320", "trainer.batch_size=8", "trainer.log_interval=1"]
WAIT_S = 600  # a job that never ends fails the test instead of hanging it


STARTED: list[tuple[subprocess.Popen, Path]] = []


@pytest.fixture(autouse=True)
def _nothing_left_running():
    """A failed test leaves no sweep command and no Slurm job behind to slow the next one down."""
    yield
    while STARTED:
        proc, cwd = STARTED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for ids in cwd.rglob("slurm_jobs.json"):
            subprocess.run(["scancel", *json.loads(ids.read_text()).values()], capture_output=True)


def namexp(args: list[str], cwd: Path) -> subprocess.Popen:
    # COLUMNS: rich does not wrap the sweep report's lines
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "COLUMNS": "1000"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "namexp", *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    STARTED.append((proc, cwd))
    return proc


def finish(proc: subprocess.Popen) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=WAIT_S)
    return proc.returncode, out


def slurm_ids(sweep_dir: Path) -> dict[str, str]:
    """Job number -> the Slurm job id namexp's launcher submitted it as."""
    return json.loads((sweep_dir / ".submitit" / "slurm_jobs.json").read_text())


def sacct_states(job_id: str) -> list[str]:
    """Every state the job went through in Slurm's accounting, oldest first (-D: requeued runs too)."""
    out = subprocess.run(
        ["sacct", "-n", "-P", "-D", "-X", "-j", job_id, "-o", "State"], capture_output=True, text=True, check=True
    ).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def last_state(job_id: str) -> str:
    """The job's latest state in the accounting; PENDING while sacct has no line for it yet (a pending array
    task, or accounting a moment behind the controller)."""
    states = sacct_states(job_id)
    return states[-1] if states else "PENDING"


def final_states(job_id: str) -> list[str]:
    """sacct_states once the job has ended (accounting lags a moment behind the job's own end)."""
    unfinished = ("PENDING", "RUNNING", "REQUEUED", "COMPLETING", "CONFIGURING")
    wait_until(lambda: last_state(job_id) not in unfinished, f"Slurm to record the end of {job_id}")
    return sacct_states(job_id)


def wait_until(condition, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.time() + WAIT_S
    while not condition():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the sweep command ended before {what}: {proc.stdout.read()}")
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def epochs_of(run: Path) -> list[int]:
    return [e["epoch"] for e in read_record(run)["epochs"]]


def running_mid_epoch(run: Path) -> bool:
    """The job trains past its first epoch: a signal now lands inside an epoch (or at most at its end)."""
    record = record_if_any(run) or {}
    return record.get("status") == "running" and len(record.get("epochs") or []) >= 1


def test_a_four_job_sweep_completes_through_slurm_with_its_table(tmp_path):
    sweep = tmp_path / "sweep"
    code, out = finish(
        namexp(
            ["train", "-m", *SYNTHETIC, *SLURM, "attention=none,nam", "seed=0,1", "trainer.epochs=2",
             f"hydra.sweep.dir={sweep}"],
            tmp_path,
        )
    )  # fmt: skip
    assert code == 0, out
    assert "Launching 4 jobs locally" not in out
    ids = slurm_ids(sweep)
    assert sorted(ids) == ["0", "1", "2", "3"]
    for job, slurm_id in ids.items():
        assert read_record(sweep / job)["status"] == "completed" and epochs_of(sweep / job) == [1, 2]
        assert final_states(slurm_id) == ["COMPLETED"]
    table = (sweep / "comparison.md").read_text()
    assert "none" in table and "nam" in table
    assert "4/4 jobs completed" in out


def test_failed_and_cancelled_jobs_are_reported_and_the_wait_goes_on(tmp_path, cifar100_root):
    """Jobs 0 and 1 train; 2 and 3 fail (no data). Job 0 is cancelled while 1 still trains: the command
    waits for job 1, then writes the table once."""
    sweep, missing = tmp_path / "sweep", tmp_path / "no-data-here"
    proc = namexp(
        ["train", "-m", *TINY, *SLURM, "trainer.epochs=4", "trainer.log_interval=1", "data.download=false",
         f"data.root={cifar100_root},{missing}", "seed=0,1", f"hydra.sweep.dir={sweep}"],
        tmp_path,
    )  # fmt: skip
    wait_until(lambda: running_mid_epoch(sweep / "0"), "job 0 trains", proc)
    ids = slurm_ids(sweep)
    subprocess.run(["scancel", ids["0"]], check=True)
    wait_until(lambda: last_state(ids["0"]).startswith("CANCELLED"), "job 0 is cancelled")
    time.sleep(5)  # submitit polls sacct at intervals: the old launcher would have stopped waiting by now
    assert proc.poll() is None or read_record(sweep / "1")["status"] == "completed"
    code, out = finish(proc)
    assert code == 1, out
    assert read_record(sweep / "1")["status"] == "completed" and epochs_of(sweep / "1") == [1, 2, 3, 4]
    assert (sweep / "comparison.md").is_file()
    assert "1/4 jobs completed" in out
    for job in ("2", "3"):
        assert final_states(ids[job]) == ["FAILED"]
        assert read_record(sweep / job)["status"] == "failed"
        assert "not found" in (sweep / job / "train.log").read_text()  # the error is in the job's own log
        assert f"job {job}: failed" in out
    assert read_record(sweep / "0")["status"] == "interrupted"  # Slurm's SIGTERM: a checkpoint, then the end


def test_gpus_on_a_cluster_without_gpus_is_one_clear_line(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["train", "-m", *SYNTHETIC, *SLURM, "hydra.launcher.gpus_per_node=1", "seed=0,1", f"hydra.sweep.dir={sweep}"]
    code, out = finish(namexp(args, tmp_path))
    assert code != 0
    assert "hydra.launcher.gpus_per_node=0" in out and "Traceback" not in out
    assert "comparison.md" not in out  # no table was written, so none is named


def test_usr2_and_scontrol_requeue_resume_from_a_mid_epoch_checkpoint(tmp_path):
    """Job 0 gets submitit's preemption signal (scancel --signal=USR2), job 1 is requeued by Slurm
    (scontrol requeue: SIGTERM, then back in the queue). Both save a mid-epoch checkpoint, say
    `interrupted` meanwhile, and finish every epoch exactly once."""
    sweep = tmp_path / "sweep"
    proc = namexp(
        ["train", "-m", *SLOW_EPOCHS, *SLURM, "trainer.epochs=3", "seed=0,1", f"hydra.sweep.dir={sweep}"], tmp_path
    )
    for job in ("0", "1"):
        wait_until(lambda job=job: running_mid_epoch(sweep / job), f"job {job} trains", proc)
    ids = slurm_ids(sweep)
    subprocess.run(["scancel", "--signal=USR2", ids["0"]], check=True)
    subprocess.run(["scontrol", "requeue", ids["1"]], check=True)
    for job in ("0", "1"):
        wait_until(lambda job=job: record_if_any(sweep / job)["status"] == "interrupted", f"job {job} checkpoints")
        assert read_checkpoint(sweep / job / "checkpoints" / "last.pt")["state"]["step"] > 0  # mid-epoch

    code, out = finish(proc)
    assert code == 0, out
    for job in ("0", "1"):
        assert read_record(sweep / job)["status"] == "completed"
        assert epochs_of(sweep / job) == [1, 2, 3]  # none lost, none twice
        log = (sweep / job / "train.log").read_text()
        assert "resuming" in log and " step 0" not in log.split("resuming", 1)[1].splitlines()[0]
        states = final_states(ids[job])
        assert len(states) >= 2 and states[-1] == "COMPLETED", states  # it ran again after the requeue


def test_resume_of_a_sweep_whose_command_died_runs_only_the_unfinished_jobs(tmp_path):
    """Job 0 completes, job 1 still runs and job 2 was cancelled when the sweep command dies. --resume
    (no launcher given: it is the sweep's own) waits for job 1, submits job 2 again, and leaves job 0 alone.
    Then --resume of one run of the sweep trains it further, through Slurm as well."""
    sweep = tmp_path / "sweep"
    proc = namexp(["train", "-m", *SLOW_EPOCHS, *SLURM, "trainer.epochs=1,4,2", f"hydra.sweep.dir={sweep}"], tmp_path)
    wait_until(lambda: (record_if_any(sweep / "0") or {}).get("status") == "completed", "job 0 completes", proc)
    before = slurm_ids(sweep)
    proc.kill()
    proc.wait()
    subprocess.run(["scancel", before["2"]], check=True)
    wait_until(lambda: not last_state(before["2"]).startswith(("PENDING", "RUNNING")), "job 2 is cancelled")
    assert (record_if_any(sweep / "1") or {}).get("status") != "completed"  # job 1 is still live

    code, out = finish(namexp(["train", "--resume", str(sweep)], tmp_path))
    assert code == 0, out
    assert "locally" not in out  # through Slurm, with the sweep's own launcher settings
    after = slurm_ids(sweep)
    assert after["0"] == before["0"] and after["1"] == before["1"]  # not submitted again
    assert after["2"] != before["2"] and final_states(after["2"]) == ["COMPLETED"]
    for job, epochs in (("0", 1), ("1", 4), ("2", 2)):
        assert read_record(sweep / job)["status"] == "completed"
        assert epochs_of(sweep / job) == list(range(1, epochs + 1))
    for job in ("0", "1"):  # each trained by one Slurm job only
        assert final_states(before[job]) == ["COMPLETED"]
        assert (sweep / job / "train.log").read_text().count("run folder") == 1
    assert "3/3 jobs completed" in out

    # One run of the sweep, resumed on its own, goes back to Slurm too (not onto the login node).
    code, out = finish(namexp(["train", "--resume", str(sweep / "0"), "trainer.epochs=2"], tmp_path))
    assert code == 0, out
    assert epochs_of(sweep / "0") == [1, 2] and read_record(sweep / "0")["status"] == "completed"
    assert final_states(slurm_ids(sweep / "0")["0"]) == ["COMPLETED"]


def test_a_job_with_two_tasks_trains_one_ddp_run_like_torchrun(torchrun_reference, tmp_path):
    """hydra.launcher.tasks_per_node=2: Slurm starts two tasks for the job, which train one 2-process DDP run
    (ranks from SLURM_PROCID/SLURM_NTASKS) into the job's folder, with torchrun's result."""
    sweep, data = tmp_path / "sweep", torchrun_reference.parent / "data"
    args = ["train", "-m", *DDP_RECIPE, *SLURM, "hydra.launcher.tasks_per_node=2", "hydra.launcher.mem_gb=2",
            f"data.root={data}", f"hydra.sweep.dir={sweep}"]  # fmt: skip
    code, out = finish(namexp(args, tmp_path))
    assert code == 0, out
    assert final_states(slurm_ids(sweep)["0"]) == ["COMPLETED"]
    assert read_record(sweep / "0")["status"] == "completed"
    ddp_tests.assert_same_training(sweep / "0", torchrun_reference)  # world size 2, torchrun's losses and errors
    ddp_tests.assert_one_copy_of_each_log_line(sweep / "0")
