"""DDP with torchrun on the CPU (gloo), and sweeps through submitit's local executor."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import copy_or_write_cifar100
from helpers import TINY, TINY_SYNTHETIC, one_error_line, read_checkpoint, read_record, run_inproc

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


@pytest.fixture(scope="module")
def torchrun_reference(tmp_path_factory) -> Path:
    """One 2-process torchrun run of DDP_RECIPE: what the Slurm and trainer.devices runs are compared with."""
    base = tmp_path_factory.mktemp("torchrun")
    data = copy_or_write_cifar100(base / "data")
    proc = torchrun(["train", *DDP_RECIPE, f"data.root={data}", f"hydra.run.dir={base / 'ddp'}"], base)
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output
    assert sorted(p.name for p in base.iterdir() if p.name != "data") == ["ddp"]  # one run folder, by rank 0
    return base / "ddp"


def assert_same_training(run: Path, reference: Path) -> None:
    """Same ranks, same shards, deterministic kernels: the same losses and errors, epoch by epoch."""
    got, want = read_record(run), read_record(reference)
    assert got["world_size"] == want["world_size"] == 2
    keys = ("train_loss", "test_loss", "test_top1_err", "nam_l1")
    assert len(got["epochs"]) == len(want["epochs"])
    for g, w in zip(got["epochs"], want["epochs"]):
        assert [g[k] for k in keys] == pytest.approx([w[k] for k in keys], rel=1e-5), (g, w)


def assert_one_copy_of_each_log_line(run: Path) -> None:
    lines = [line.split("]", 2)[-1] for line in (run / "train.log").read_text().splitlines() if line.strip()]
    epoch_lines = [line for line in lines if "epoch" in line]
    assert epoch_lines and len(epoch_lines) == len(set(epoch_lines)), lines


def test_ddp_training_writes_one_run_and_matches_a_single_process_run(torchrun_reference, tmp_path, capsys):
    single_run, cifar100_root = tmp_path / "single", torchrun_reference.parent / "data"
    ddp = read_record(torchrun_reference)
    assert ddp["status"] == "completed" and ddp["world_size"] == 2 and ddp["environment"]["world_size"] == 2
    assert ddp["environment"]["distributed_backend"] == "gloo"
    assert_one_copy_of_each_log_line(torchrun_reference)

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


def fake_slurm_task(args: list[str], cwd: Path, rank: int, ntasks: int = 2) -> subprocess.Popen:
    """One task of `srun -n NTASKS namexp ARGS` as Slurm starts it: only Slurm's variables, no torchrun's."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    env.update(
        SLURM_PROCID=str(rank), SLURM_LOCALID=str(rank), SLURM_NTASKS=str(ntasks), SLURM_STEP_ID="0",
        SLURM_JOB_ID=str(40000 + os.getpid() % 1000), SLURM_JOB_NODELIST="localhost",
        OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1",
    )  # fmt: skip
    return subprocess.Popen(
        [sys.executable, "-m", "namexp", *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip


@pytest.mark.long
def test_srun_tasks_train_one_ddp_run_like_torchrun(torchrun_reference, tmp_path):
    """`srun -n 2 namexp train ...` on one node, faked: the two tasks find each other from Slurm's variables."""
    run = tmp_path / "slurm"
    args = ["train", *DDP_RECIPE, f"data.root={torchrun_reference.parent / 'data'}", f"hydra.run.dir={run}"]
    tasks = [fake_slurm_task(args, tmp_path, rank) for rank in (0, 1)]
    outputs = [task.communicate(timeout=600)[0] for task in tasks]
    assert [task.returncode for task in tasks] == [0, 0], outputs
    assert sorted(p.name for p in tmp_path.iterdir()) == ["slurm"]  # one run folder, written by rank 0
    record = read_record(run)
    assert record["status"] == "completed" and record["environment"]["world_size"] == 2
    assert_same_training(run, torchrun_reference)
    assert_one_copy_of_each_log_line(run)


@pytest.mark.long
def test_trainer_devices_2_trains_one_ddp_run_like_torchrun(torchrun_reference, tmp_path, capsys):
    """torch's own launcher starts the two processes; the result is torchrun's."""
    run = tmp_path / "devices"
    data = torchrun_reference.parent / "data"
    result = run_inproc(["train", *DDP_RECIPE, "trainer.devices=2", f"data.root={data}", f"hydra.run.dir={run}"],
                        capsys)  # fmt: skip
    assert result.code == 0, result.err
    assert read_record(run)["status"] == "completed"
    assert_same_training(run, torchrun_reference)
    assert_one_copy_of_each_log_line(run)


@pytest.mark.long
def test_a_local_sweep_with_trainer_devices_2_runs_each_job_as_a_2_process_run(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    result = run_inproc(
        ["train", "-m", *TINY_SYNTHETIC, "trainer.epochs=1", "trainer.devices=2", "seed=0,1", f"hydra.sweep.dir={sweep}"],
        capsys,
    )  # fmt: skip
    assert result.code == 0, result.err
    for job in ("0", "1"):
        record = read_record(sweep / job)
        assert record["status"] == "completed" and record["world_size"] == 2 and record["seed"] == int(job)
        assert_one_copy_of_each_log_line(sweep / job)
    assert (sweep / "comparison.md").is_file()


def test_trainer_devices_that_cannot_be_honoured_are_one_line_errors(tmp_path, capsys):
    from namexp.config.schema import TrainerConfig
    from namexp.errors import UserError
    from namexp.train.devices import check_devices
    from namexp.train.runtime import Dist

    error = one_error_line(run_inproc(["train", *TINY_SYNTHETIC, "trainer.devices=0"], capsys))
    assert "trainer.devices=0" in error and ">= 1" in error
    assert not (tmp_path / "runs").exists()
    with pytest.raises(UserError, match="already one of 2 .*set trainer.devices=1"):
        check_devices(TrainerConfig(devices=2), Dist(0, 0, 2))  # under torchrun or srun
    with pytest.raises(UserError, match="set trainer.device=auto"):
        check_devices(TrainerConfig(devices=2, device="cuda:1"), Dist())


def test_slurm_environment_gives_rank_world_size_and_rendezvous():
    from namexp.train.runtime import dist_from_env
    from namexp.train.slurm_env import parse_first_host

    slurm = {"SLURM_PROCID": "3", "SLURM_LOCALID": "1", "SLURM_NTASKS": "4", "SLURM_STEP_ID": "0",
             "SLURM_JOB_ID": "1234", "SLURM_JOB_NODELIST": "gpu[07-08],cpu1"}  # fmt: skip
    d = dist_from_env(slurm)
    assert (d.rank, d.local_rank, d.world_size) == (3, 1, 4)
    assert d.init_method == dist_from_env({**slurm, "SLURM_PROCID": "0"}).init_method  # every task meets there
    assert d.init_method.startswith("tcp://gpu07:") and 1024 < int(d.init_method.rsplit(":", 1)[1]) < 32768
    assert dist_from_env({**slurm, "MASTER_ADDR": "head", "MASTER_PORT": "2950"}).init_method == "tcp://head:2950"
    # torchrun's variables win; a batch script (no step) or a one-task step is not distributed
    assert dist_from_env({**slurm, "WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}).world_size == 2
    assert not dist_from_env({k: v for k, v in slurm.items() if k != "SLURM_STEP_ID"}).enabled
    assert not dist_from_env({**slurm, "SLURM_NTASKS": "1"}).enabled
    # torchrun --nproc_per_node=1 is a (one-process) DDP run: the 1-GPU NCCL check of benchmarks/gpu_check.sh
    one = {"WORLD_SIZE": "1", "RANK": "0", "LOCAL_RANK": "0"}
    assert dist_from_env({**one, "TORCHELASTIC_RUN_ID": "x"}).enabled and not dist_from_env(one).enabled
    assert parse_first_host("node[01-03,07],other") == "node01"
    assert parse_first_host("rack[2-3]-n[009-010]") == "rack2-n009"
    assert parse_first_host("localhost") == "localhost"


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
