"""Bad input gets one clear line; an interrupted run loses nothing; a resumed run is exact."""

from __future__ import annotations

import hashlib
import os
import pickle
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import copy_or_write_cifar100
from helpers import TINY, read_checkpoint, read_record, run_inproc
from namexp.cli import main
from namexp.errors import UserError


def snapshot(folder: Path) -> dict:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def trained_workspace(tmp_path_factory):
    """A finished tiny run (trained once for the module) whose files must survive every mistake below."""
    tmp = tmp_path_factory.mktemp("workspace")
    data = copy_or_write_cifar100(tmp / "data")
    run = tmp / "runs" / "existing"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NAMEXP_CACHE", str(tmp / "cache"))
        try:
            main(["train", *TINY, f"data.root={data}", "trainer.epochs=1", f"hydra.run.dir={run}"])
        except SystemExit as exc:
            assert exc.code in (0, None)
    return {"run": run, "data": data, "tmp": tmp}


@pytest.fixture
def workspace(trained_workspace, monkeypatch):
    monkeypatch.setenv("NAMEXP_RUNS", str(trained_workspace["tmp"] / "runs"))
    return trained_workspace


def _crafted_pickle(path: Path) -> None:
    class Exploit:
        def __reduce__(self):
            return (os.system, ("echo pwned > /tmp/namexp-pwned",))

    path.write_bytes(pickle.dumps({"data": Exploit(), "fine_labels": [0]}, protocol=2))


def _bad_data(kind: str, tmp: Path, data: Path) -> Path:
    root = tmp / f"bad-{kind}"
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for name in ("meta", "test"):
        (folder / name).write_bytes((data / "cifar-100-python" / name).read_bytes())
    train = (data / "cifar-100-python" / "train").read_bytes()
    if kind == "truncated":
        (folder / "train").write_bytes(train[: len(train) // 2])
    elif kind == "not-cifar":
        (folder / "train").write_bytes(pickle.dumps(["just", "a", "list"], protocol=2))
    elif kind == "crafted":
        _crafted_pickle(folder / "train")
    return root


# (case id, arguments built from the workspace, words the one-line message must hold)
BAD_INPUTS = [
    ("unknown-choice", lambda w: ["train", "attention=squeeze"], ["unknown attention 'squeeze'", "nam", "se", "cbam"]),
    ("unknown-backbone", lambda w: ["info", "backbone=resnet19"], ["unknown backbone", "resnet18", "resnet20"]),
    ("unknown-key", lambda w: ["train", "trainer.epoch=3"], ["unknown config key", "trainer.epoch"]),
    ("wrong-type", lambda w: ["train", "trainer.epochs=many"], ["trainer.epochs", "many"]),
    ("lr-not-positive", lambda w: ["train", "optim.lr=0"], ["optim.lr=0", "> 0"]),
    ("epochs-below-1", lambda w: ["train", "trainer.epochs=0"], ["trainer.epochs=0", ">= 1"]),
    ("batch-below-1", lambda w: ["train", "trainer.batch_size=0"], ["trainer.batch_size=0", ">= 1"]),
    ("negative-sparsity", lambda w: ["train", "sparsity=-0.1"], ["sparsity=-0.1", ">= 0"]),
    (
        "val-split-too-large",
        lambda w: ["train", *TINY, f"data.root={w['data']}", "data.val_split=600"],
        ["data.val_split=600", "training set"],
    ),
    (
        "dataset-missing-offline",
        lambda w: ["train", *TINY, f"data.root={w['tmp'] / 'nowhere'}"],
        ["cifar100 not found", "NAMEXP_DATA"],
    ),
    (
        "dataset-truncated",
        lambda w: ["train", *TINY, f"data.root={_bad_data('truncated', w['tmp'], w['data'])}"],
        ["truncated or corrupt"],
    ),
    (
        "not-a-cifar-pickle",
        lambda w: ["train", *TINY, f"data.root={_bad_data('not-cifar', w['tmp'], w['data'])}"],
        ["not a CIFAR pickle"],
    ),
    (
        "crafted-pickle",
        lambda w: ["train", *TINY, f"data.root={_bad_data('crafted', w['tmp'], w['data'])}"],
        ["refusing to load", "posix.system"],
    ),
    ("checkpoint-missing", lambda w: ["eval", str(w["tmp"] / "nothing.pt")], ["does not exist"]),
    ("checkpoint-truncated", lambda w: ["eval", str(_truncated_copy(w))], ["truncated or corrupt"]),
    (
        "checkpoint-other-architecture",
        lambda w: ["eval", str(w["run"]), "backbone.name=resnet56", f"data.root={w['data']}"],
        ["does not fit", "another architecture"],
    ),
    (
        "folder-holds-a-run",
        lambda w: ["train", *TINY, f"data.root={w['data']}", f"hydra.run.dir={w['run']}"],
        ["already holds a run", "--resume"],
    ),
    (
        "folder-not-writable",
        lambda w: ["train", *TINY, f"data.root={w['data']}", f"hydra.run.dir={w['run'] / 'record.json' / 'x'}"],
        ["cannot write"],
    ),
    ("comma-list-without-m", lambda w: ["train", "seed=1,2"], ["add -m"]),
    ("compare-without-runs", lambda w: ["compare", str(w["tmp"] / "cache")], ["no runs found"]),
    (
        "cuda-where-there-is-none",
        lambda w: ["train", *TINY, f"data.root={w['data']}", "trainer.device=cuda"],
        ["trainer.device=cuda", "no CUDA device"],
    ),
    (
        "resume-nothing",
        lambda w: ["train", "--resume", str(w["tmp"] / "never-made")],
        ["cannot resume", "does not exist"],
    ),
]


def _truncated_copy(w) -> Path:
    source = (w["run"] / "checkpoints" / "last.pt").read_bytes()
    bad = w["tmp"] / "truncated.pt"
    bad.write_bytes(source[: len(source) // 3])
    return bad


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message for a machine without CUDA")
@pytest.mark.parametrize("case,args,words", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_gets_one_clear_line_and_changes_nothing(case, args, words, workspace, capsys):
    (workspace["tmp"] / "cache").mkdir(exist_ok=True)
    before = snapshot(workspace["run"])
    runs_before = sorted(p.name for p in (workspace["tmp"] / "runs").iterdir())
    result = run_inproc(args(workspace), capsys)
    assert result.code == 2, (result.code, result.err)
    message = result.err.strip().splitlines()
    assert message and message[-1].startswith("error: "), result.err
    for word in words:
        assert word in message[-1], (word, message[-1])
    assert "Traceback" not in result.err + result.out
    assert snapshot(workspace["run"]) == before
    assert sorted(p.name for p in (workspace["tmp"] / "runs").iterdir()) == runs_before  # no half-made run folder
    assert not Path("/tmp/namexp-pwned").exists()


def test_spatial_nam_fed_the_wrong_input_size_says_how_to_fix_it():
    from namexp.models import build_model

    model = build_model("resnet20", "nam_spatial", num_classes=10, image_size=32)
    with pytest.raises(ValueError, match=r"built for 32x32 feature maps but got 64x64.*image_size"):
        model(torch.zeros(2, 3, 64, 64))


def test_debug_flag_shows_the_traceback(capsys):
    with pytest.raises(UserError):
        run_inproc(["--debug", "train", "optim.lr=-1"], capsys)


# --- interruption and exact resume -------------------------------------------------------------------------------

DETERMINISTIC = [*TINY, "trainer.epochs=3", "trainer.deterministic=true", "trainer.log_interval=1"]


def _weights(run: Path) -> dict:
    return read_checkpoint(run / "checkpoints" / "last.pt")["model"]


def _metrics(run: Path) -> list:
    timing = ("seconds", "img_s")
    return [{k: v for k, v in e.items() if k not in timing} for e in read_record(run)["epochs"]]


def _start(args, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "namexp", *args],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


@pytest.fixture
def reference_run(tmp_path, cifar100_root, capsys):
    run = tmp_path / "reference"
    result = run_inproc(["train", *DETERMINISTIC, f"data.root={cifar100_root}", f"hydra.run.dir={run}"], capsys)
    assert result.code == 0, result.err
    return run


@pytest.mark.parametrize(
    "sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGUSR2], ids=["SIGKILL", "SIGTERM", "SIGUSR2"]
)  # SIGUSR2: submitit's preemption and time-out signal
def test_a_killed_run_resumes_to_the_same_weights_and_metrics(sig, reference_run, tmp_path, cifar100_root, capsys):
    run = tmp_path / "interrupted"
    proc = _start(["train", *DETERMINISTIC, f"data.root={cifar100_root}", f"hydra.run.dir={run}"], tmp_path)
    rng = random.Random(int(sig))
    deadline = time.time() + 120
    while not (run / "checkpoints" / "last.pt").exists():  # after the first epoch: a random point in the second
        assert proc.poll() is None and time.time() < deadline, (
            proc.stderr.read() if proc.poll() is not None else "timeout"
        )
        time.sleep(0.02)
    time.sleep(rng.uniform(0.05, 0.6))
    proc.send_signal(sig)
    code = proc.wait(timeout=120)
    if sig != signal.SIGKILL:
        stderr = proc.stderr.read()
        assert code == 128 + sig, stderr
        assert "checkpoint saved" in stderr and "Traceback" not in stderr
        record = read_record(run)
        assert record["status"] == "interrupted"
        state = read_checkpoint(run / "checkpoints" / "last.pt")
        assert (
            state["state"]["step"] > 0 or len(record["epochs"]) > 1
        )  # mid-epoch checkpoint (unless it ended an epoch)
    else:
        assert code == -signal.SIGKILL
        read_checkpoint(run / "checkpoints" / "last.pt")  # the last completed checkpoint is intact

    result = run_inproc(["train", "--resume", str(run)], capsys)
    assert result.code == 0, result.err
    assert read_record(run)["status"] == "completed"
    assert _metrics(run) == _metrics(reference_run)
    reference, resumed = _weights(reference_run), _weights(run)
    assert reference.keys() == resumed.keys()
    for name in reference:
        assert torch.equal(reference[name], resumed[name]), name


def test_a_truncated_last_checkpoint_is_refused_and_the_previous_one_resumes(tmp_path, cifar100_root, capsys):
    run = tmp_path / "run"
    assert (
        run_inproc(
            ["train", *TINY, "trainer.epochs=2", f"data.root={cifar100_root}", f"hydra.run.dir={run}"], capsys
        ).code
        == 0
    )
    last, previous = run / "checkpoints" / "last.pt", run / "checkpoints" / "previous.pt"
    last.write_bytes(last.read_bytes()[:1000])
    result = run_inproc(["train", "--resume", str(run), "trainer.epochs=3"], capsys)
    assert result.code == 2
    assert (
        "truncated or corrupt" in result.err and "previous.pt is intact" in result.err and "Traceback" not in result.err
    )
    assert read_checkpoint(previous)["state"]["epochs_done"] == 1
    last.rename(last.with_suffix(".pt.bad"))
    result = run_inproc(["train", "--resume", str(run), "trainer.epochs=3"], capsys)
    assert result.code == 0, result.err
    assert [e["epoch"] for e in read_record(run)["epochs"]] == [1, 2, 3]  # epoch 2 re-run from epoch 1's state


def test_a_diverging_run_stops_and_is_marked_diverged(tmp_path, cifar100_root, capsys):
    run = tmp_path / "run"
    result = run_inproc(
        ["train", *TINY, "trainer.epochs=3", "optim.lr=1e6", f"data.root={cifar100_root}", f"hydra.run.dir={run}"],
        capsys,
    )
    assert result.code == 3
    assert "became nan" in result.err or "became inf" in result.err
    assert read_record(run)["status"] == "diverged"
    assert "Traceback" not in result.err


def test_runs_started_at_the_same_moment_never_share_a_folder(tmp_path):
    procs = [
        _start(
            [
                "train",
                "data=synthetic",
                "backbone=resnet20",
                "attention=none",
                "trainer.epochs=1",
                "trainer.progress=none",
                "data.synthetic_train_size=32",
                "data.synthetic_test_size=32",
                f"hydra.run.dir={tmp_path / 'same'}",
            ],
            tmp_path,
        )
        for _ in range(3)
    ]
    codes = [p.wait(timeout=300) for p in procs]
    assert sorted(codes) == [0, 2, 2], [p.stderr.read() for p in procs]  # one owns the folder, two are told
    assert read_record(tmp_path / "same")["status"] == "completed"


def test_ctrl_c_stops_a_whole_sweep_after_saving_the_running_job(tmp_path, cifar100_root):
    sweep_dir = tmp_path / "sweep"
    proc = _start(
        [
            "train",
            "-m",
            *TINY,
            "trainer.epochs=4",
            f"data.root={cifar100_root}",
            "seed=0,1",
            f"hydra.sweep.dir={sweep_dir}",
        ],
        tmp_path,
    )
    deadline = time.time() + 120
    while not (sweep_dir / "0" / "checkpoints" / "last.pt").exists():
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=120) == 128 + signal.SIGINT
    assert "Traceback" not in proc.stderr.read()
    assert read_record(sweep_dir / "0")["status"] in ("interrupted", "completed")
    assert not (sweep_dir / "1").exists()  # the next job never started
