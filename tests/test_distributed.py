"""DDP with torchrun on the CPU (gloo), and sweeps through submitit's local executor."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import TINY, read_checkpoint, read_record, run_inproc

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="torchrun with gloo is tested on Linux")

# Global batch 50 (25 per process), a few optimizer steps.
DDP_RECIPE = [
    *TINY,
    "attention=nam",
    "trainer.epochs=2",
    "trainer.limit_train_batches=4",
    "trainer.deterministic=true",
    "trainer.log_interval=1",
]


def torchrun(args, cwd: Path, nproc: int = 2, **popen) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "namexp",
        *args,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen
    )


def test_ddp_training_writes_one_run_and_matches_a_single_process_run(tmp_path, cifar100_root, capsys):
    ddp_run, single_run = tmp_path / "ddp", tmp_path / "single"
    proc = torchrun(["train", *DDP_RECIPE, f"data.root={cifar100_root}", f"hydra.run.dir={ddp_run}"], tmp_path)
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "data") == ["ddp"]  # one run folder, by rank 0
    ddp = read_record(ddp_run)
    assert ddp["status"] == "completed" and ddp["world_size"] == 2 and ddp["environment"]["world_size"] == 2

    result = run_inproc(["train", *DDP_RECIPE, f"data.root={cifar100_root}", f"hydra.run.dir={single_run}"], capsys)
    assert result.code == 0, result.err
    single = read_record(single_run)
    # Same global batches and seed; the only difference is that each process's BatchNorms see 25 images
    # instead of 50 (SyncBatchNorm needs GPUs), which moves the loss a little.
    for d, s in zip(ddp["epochs"], single["epochs"]):
        assert d["train_loss"] == pytest.approx(s["train_loss"], rel=0.02), (d["train_loss"], s["train_loss"])
        assert d["nam_l1"] == pytest.approx(s["nam_l1"], rel=1e-3)  # the penalty acted once per step, not twice
    # evaluation is summed over both shards: every test image counted once
    assert ddp["epochs"][-1]["test_top1_err"] == pytest.approx(single["epochs"][-1]["test_top1_err"], abs=3.0)


def test_sigterm_to_a_ddp_run_leaves_a_resumable_checkpoint(tmp_path, cifar100_root):
    run = tmp_path / "ddp"
    args = [
        "train",
        *TINY,
        "trainer.epochs=3",
        "trainer.log_interval=1",
        f"data.root={cifar100_root}",
        f"hydra.run.dir={run}",
    ]
    proc = torchrun(args, tmp_path, start_new_session=True)
    deadline = time.time() + 300
    while not (run / "checkpoints" / "last.pt").exists():
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[0]
        time.sleep(0.05)
    time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGTERM)  # as a cluster does: every process of the job gets it
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode != 0
    record = read_record(run)
    assert record["status"] == "interrupted", output
    state = read_checkpoint(run / "checkpoints" / "last.pt")
    assert state["state"]["epochs_done"] >= 1

    proc = torchrun(["train", "--resume", str(run)], tmp_path)
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output
    record = read_record(run)
    assert record["status"] == "completed" and [e["epoch"] for e in record["epochs"]] == [1, 2, 3]


def test_sweep_through_submitit_local_makes_complete_runs_and_a_table(tmp_path, capsys):
    sweep_dir = tmp_path / "sweep"
    result = run_inproc(
        [
            "train",
            "-m",
            "data=synthetic",
            "backbone=resnet20",
            "attention=none,nam",
            "trainer.epochs=1",
            "trainer.progress=none",
            "data.synthetic_train_size=64",
            "data.synthetic_test_size=32",
            "trainer.batch_size=32",
            "hydra/launcher=submitit_local",
            "hydra.launcher.timeout_min=10",
            f"hydra.sweep.dir={sweep_dir}",
        ],
        capsys,
    )
    assert result.code == 0, result.err
    runs = sorted(p for p in sweep_dir.iterdir() if (p / "record.json").is_file())
    assert [p.name for p in runs] == ["0", "1"]
    assert [read_record(p)["status"] for p in runs] == ["completed", "completed"]
    assert (sweep_dir / "comparison.md").is_file() and "nam" in (sweep_dir / "comparison.md").read_text()
    assert (sweep_dir / ".submitit").is_dir()  # really went through submitit

    # --resume relaunches through the sweep's own launcher (saved in multirun.yaml), not Hydra's basic one
    submitted = {p.name for p in (sweep_dir / ".submitit").iterdir()}
    result = run_inproc(["train", "--resume", str(sweep_dir)], capsys)
    assert result.code == 0, result.err
    assert {p.name for p in (sweep_dir / ".submitit").iterdir()} > submitted
    assert [e["epoch"] for e in read_record(sweep_dir / "1")["epochs"]] == [1]  # completed: not trained again


def test_slurm_launcher_config_has_the_keys_a_cluster_user_sets():
    from omegaconf import OmegaConf

    from namexp.config import launch

    with launch.hydra_app() as app:
        cfg = launch.compose(app, ["hydra/launcher=slurm", "hydra.launcher.partition=gpu"], launch.RunMode.MULTIRUN)
    launcher = OmegaConf.to_container(cfg.hydra.launcher)
    assert launcher["_target_"].endswith("SlurmLauncher")
    assert launcher["partition"] == "gpu"
    for key in ("gpus_per_node", "cpus_per_task", "mem_gb", "timeout_min", "array_parallelism", "max_num_timeout"):
        assert launcher[key] is not None, key


def test_a_killed_sweep_resumes_each_job_from_its_last_checkpoint(tmp_path, cifar100_root, capsys):
    """What a requeued Slurm job does: it finds its run folder and continues from the last checkpoint."""
    sweep_dir = tmp_path / "sweep"
    args = [
        "train",
        "-m",
        *TINY,
        "trainer.epochs=3",
        f"data.root={cifar100_root}",
        "seed=0,1",
        f"hydra.sweep.dir={sweep_dir}",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "namexp", *args], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 300
    while not (sweep_dir / "0" / "checkpoints" / "last.pt").exists():
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    assert read_record(sweep_dir / "0")["status"] == "running"  # killed: nobody wrote its end

    result = run_inproc(["train", "--resume", str(sweep_dir)], capsys)
    assert result.code == 0, result.err
    for job in ("0", "1"):
        record = read_record(sweep_dir / job)
        assert record["status"] == "completed" and [e["epoch"] for e in record["epochs"]] == [1, 2, 3]
    assert "resuming" in (sweep_dir / "0" / "train.log").read_text()
