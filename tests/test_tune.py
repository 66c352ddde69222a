"""`namexp tune`: real Optuna studies in SQLite over tiny real trainings (synthetic images, CPU).

Each trial is K ordinary run folders; the tests read the study back with Optuna's own API and the run folders'
records, kill a real tuner process with SIGKILL, and run two tuner processes on one SQLite file.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from helpers import one_error_line, read_record, run_inproc
from namexp.run.layout import LEASE_FILE
from namexp.run.lease import STALE_AFTER_S

# A few seconds per run: 48 synthetic training images (16 of them held out for validation), 16 test images.
TINY = [
    "data=synthetic",
    "backbone=resnet20",
    "attention=nam",
    "sched=constant",
    "trainer.progress=none",
    "trainer.device=cpu",
    "trainer.batch_size=16",
    "trainer.eval_batch_size=64",
    "data.synthetic_train_size=48",
    "data.synthetic_test_size=16",
    "data.val_split=16",
    "trainer.epochs=2",
]
LR_SPACE = "optim.lr=log(1e-5,0.3)"
# One thread per tuner: these models are too small to gain from more, and a second tuner process shares the cores.
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


@pytest.fixture(autouse=True)
def _one_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def study_dir(name: str = "tune") -> Path:
    return Path(os.environ["NAMEXP_RUNS"]) / "tune" / name


def load(name: str = "tune", folder: str | None = None) -> optuna.Study:
    db = study_dir(folder or name) / "study.db"
    return optuna.load_study(study_name=name, storage=f"sqlite:///{db}")


def has_trials(name: str = "tune") -> bool:
    try:
        return bool(load(name, folder="tune").trials)
    except Exception:  # no database or no study in it yet
        return False


def finished(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]


def run_folders(root: Path) -> list[Path]:
    return sorted(p.parent.relative_to(root) for p in root.rglob("record.json"))


@pytest.mark.long
def test_six_trials_over_two_keys_find_a_better_setting(capsys):
    result = run_inproc(
        ["tune", *TINY, LR_SPACE, "sparsity=log(1e-5,1e-2)", "--trials", "6", "--seeds", "2", "--metric", "val_loss"],
        capsys,
    )
    assert result.code == 0, result.err
    study = load()
    done = finished(study)
    assert len(done) == 6 and len(study.trials) == 6
    complete = [t for t in done if t.state == optuna.trial.TrialState.COMPLETE]
    worst = max(t.value if t.value is not None else max(t.intermediate_values.values()) for t in done)
    assert study.best_value < worst
    assert set(study.best_params) == {"optim.lr", "sparsity"}
    for t in complete:  # the value is the mean of the two seeds' final val_loss, read from their records
        records = [read_record(Path(t.user_attrs["folder"]) / f"seed-{s}") for s in (0, 1)]
        assert [r["seed"] for r in records] == [0, 1]
        assert t.value == pytest.approx(sum(r["final"]["val_loss"] for r in records) / 2)
        assert all(r["tags"]["study"] == "tune" and r["tags"]["trial"] == t.number for r in records)
        assert records[0]["config"]["optim"]["lr"] == pytest.approx(t.params["optim.lr"])
    summary = json.loads((study_dir() / "summary.json").read_text())
    assert summary["best"]["number"] == study.best_trial.number
    assert f"Best: trial {study.best_trial.number}" in (study_dir() / "summary.md").read_text()
    assert (study_dir() / "history.png").stat().st_size > 0


@pytest.mark.parametrize("pruner", ["median", "halving"])
def test_hopeless_trials_are_pruned_and_recorded_as_pruned(pruner, capsys):
    """Two good settings first (the median pruner's start-up trials), then a learning rate that learns nothing:
    below the median, and not in the top third that successive halving promotes."""
    from namexp.config import launch
    from namexp.tune import plan, space, study

    args = [*TINY, "trainer.epochs=3", "optim.lr=log(1e-5,0.3)", "--metric", "train_loss", "--seeds", "2"]
    args += ["--pruner", pruner]
    params, overrides = space.build_space({}, [LR_SPACE])
    with launch.hydra_app("tune") as app:
        objective = plan.plan_objective(app, TINY + ["trainer.epochs=3"], params, 2, "train_loss")
    study_dir().mkdir(parents=True)
    storage = study.open_storage(study.default_storage(study_dir()))
    created = study.load_or_create(storage, "tune", objective, study.make_sampler(), study.make_pruner(pruner, 3))
    for lr in (0.1, 0.1, 1e-5):  # Optuna's own way to seed a study with settings
        created.enqueue_trial({"optim.lr": lr})

    assert run_inproc(["tune", *args, "--trials", "3"], capsys).code == 0
    trials = load().trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 2 + [optuna.trial.TrialState.PRUNED]
    pruned = trials[2]
    folder = Path(pruned.user_attrs["folder"])
    record = read_record(folder / "seed-0")
    assert record["status"] == "pruned" and "pruned" in record["error"]
    assert len(record["epochs"]) < 3 or not (folder / "seed-1").exists()  # it stopped before the trial's end
    assert "1 pruned" in (study_dir() / "summary.md").read_text()


def tuner(args: list[str], cwd: Path, name: str = "tuner") -> subprocess.Popen:
    """`namexp tune ARGS` in a process of its own; its output goes to cwd/NAME.log (read by `output`)."""
    with open(cwd / f"{name}.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "namexp", "tune", *args], cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, **ONE_THREAD},
        )  # fmt: skip
    proc.log = cwd / f"{name}.log"
    return proc


def output(proc: subprocess.Popen) -> str:
    return proc.log.read_text(errors="replace")[-2000:]


def wait_for(condition, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, output(proc)
        assert time.monotonic() < deadline, "the tuner never got there"
        time.sleep(0.2)


@pytest.mark.long
def test_a_killed_tuner_continues_to_exactly_n_trials_in_the_same_folders(tmp_path, capsys):
    args = [*TINY, "trainer.epochs=3", LR_SPACE, "--trials", "3", "--seeds", "1", "--pruner", "none"]
    proc = tuner(args, tmp_path)
    second = study_dir() / "trial-0001" / "seed-0"
    wait_for(lambda: any((second / "checkpoints").glob("*.pt")), proc)  # mid-trial, after its first epoch
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed = load().trials[1]
    assert killed.state == optuna.trial.TrialState.RUNNING  # what a killed tuner leaves in the database

    assert run_inproc(["tune", *args], capsys).code == 0
    study = load()
    assert len(finished(study)) == 3
    states = {t.number: t.state for t in study.trials}
    assert states[1] == optuna.trial.TrialState.FAIL  # the dead trial, retried with the same setting:
    retry = next(t for t in study.trials if t.system_attrs.get("retry_history") == [1])
    assert retry.state == optuna.trial.TrialState.COMPLETE and retry.params == killed.params
    assert retry.user_attrs["folder"] == str(study_dir() / "trial-0001")
    folders = run_folders(study_dir())  # one per finished trial, the killed one's reused, nothing trained twice
    assert len(folders) == 3 and {str(study_dir() / f.parent) for f in folders} == {
        t.user_attrs["folder"] for t in finished(study)
    }
    record = read_record(second)
    assert record["status"] == "completed" and [e["epoch"] for e in record["epochs"]] == [1, 2, 3]
    assert record["tags"]["trial"] == retry.number and record["tags"]["folder"] == "trial-0001"


@pytest.mark.long
def test_tuners_opening_a_new_storage_at_once_all_open_it(tmp_path):
    """Each opener creates Optuna's schema; the losers of that race (a UNIQUE or "already exists" error) open
    the winner's. Without the retry about one open in six failed here."""
    code = "import sys; from namexp.tune.study import open_storage; open_storage(sys.argv[1])"
    for round_ in range(6):
        url = new_storage_url(tmp_path / f"round-{round_}")
        openers = [
            subprocess.Popen([sys.executable, "-c", code, url], stderr=subprocess.PIPE, text=True) for _ in range(4)
        ]
        for proc in openers:
            _, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err[-500:]


def new_storage_url(folder: Path) -> str:
    folder.mkdir()
    return f"sqlite:///{folder / 'study.db'}"


@pytest.mark.long
def test_two_workers_share_one_sqlite_study(tmp_path):
    args = [*TINY, "trainer.epochs=3", LR_SPACE, "--trials", "4", "--seeds", "1", "--pruner", "none"]
    first = tuner(args, tmp_path, "first")
    wait_for(lambda: has_trials(), first)
    second = tuner(args, tmp_path, "second")
    for proc in (first, second):
        assert proc.wait(timeout=600) == 0, output(proc)
    study = load()
    assert len(finished(study)) == 4
    workers = [t.user_attrs["worker"]["pid"] for t in finished(study)]
    assert set(workers) == {first.pid, second.pid}  # both worked on the one study
    folders = run_folders(study_dir())
    assert len(folders) == 4 and {str(study_dir() / f.parent) for f in folders} == {
        t.user_attrs["folder"] for t in finished(study)
    }
    assert all(read_record(study_dir() / f)["status"] == "completed" for f in folders)


@pytest.mark.long
def test_arms_get_the_same_trials_and_a_holm_table(capsys):
    fixed = [o for o in TINY if not o.startswith("attention=")]  # the arms set it
    args = [*fixed, "optim.lr=log(0.01,0.2)", "attention.options.abs_weights=choice(true,false)", "--trials", "2"]
    args += ["--seeds", "1", "--arms", "attention=none,nam", "--final-seeds", "2", "--pruner", "none"]
    result = run_inproc(["tune", *args], capsys)
    assert result.code == 0, result.err
    root = study_dir()
    for arm, keys in (("none", {"optim.lr"}), ("nam", {"optim.lr", "attention.options.abs_weights"})):
        study = load(f"tune.attention={arm}", folder="tune")
        assert len(finished(study)) == 2 and set(study.best_params) == keys
        finals = sorted((root / f"attention={arm}" / "final").glob("*/seed-*/record.json"))
        assert {p.parent.parent.name for p in finals} == {f"trial-{study.best_trial.number:04d}"}
        assert [json.loads(p.read_text())["seed"] for p in finals] == [1, 2]  # fresh seeds, not the tuning seed 0
    table = json.loads((root / "comparison.json").read_text())
    rows = {r["arm"]: r for r in table["arms"]}
    assert table["metric"] == "test_top1_err" and rows["attention=none"]["baseline"]
    nam = rows["attention=nam"]
    assert nam["n"] == 2 and nam["trials"] == 2
    assert nam["p_holm"] is None or 0 <= nam["p"] <= nam["p_holm"] <= 1
    text = (root / "comparison.md").read_text()
    assert "p (Holm)" in text and "seeds needed" in text and "attention=nam" in text


@pytest.mark.long
def test_two_workers_with_arms_wait_for_each_other_and_retrain_each_best_once(tmp_path):
    fixed = [o for o in TINY if not o.startswith("attention=")]
    args = [*fixed, LR_SPACE, "--trials", "2", "--seeds", "1", "--arms", "attention=none,nam", "--final-seeds", "2"]
    args += ["--pruner", "none"]
    root = study_dir()
    first = tuner(args, tmp_path, "first")
    # The first tuner is paused while it retrains arm none's best (it holds that folder's lease), so the second
    # reaches the same retraining for certain; it resumes well before its lease could look stale.
    wait_for(lambda: any((root / "attention=none" / "final").glob(f"trial-*/{LEASE_FILE}")), first)
    first.send_signal(signal.SIGSTOP)
    try:
        second = tuner(args, tmp_path, "second")
        wait_for(lambda: "waiting for it" in second.log.read_text(errors="replace"), second, timeout=STALE_AFTER_S - 10)
    finally:
        first.send_signal(signal.SIGCONT)
    for proc in (first, second):
        assert proc.wait(timeout=600) == 0, output(proc)
    assert f"retrained by pid {first.pid}" in second.log.read_text(errors="replace")
    for arm in ("none", "nam"):
        study = load(f"tune.attention={arm}", folder="tune")
        assert len(finished(study)) == 2
        final = root / f"attention={arm}" / "final"
        assert [p.name for p in final.iterdir()] == [f"trial-{study.best_trial.number:04d}"]  # the final best's
        for seed in (1, 2):
            run = final / f"trial-{study.best_trial.number:04d}" / f"seed-{seed}"
            assert read_record(run)["status"] == "completed"
            assert (run / "train.log").read_text().count("run folder") == 1  # trained once, by one of the two
    table = json.loads((root / "comparison.json").read_text())
    assert [r["n"] for r in table["arms"]] == [2, 2]
    assert "attention=nam" in output(first) and "attention=nam" in output(second)  # both printed the table


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["optim.lrr=float(0.01,0.1)"], "search space key 'optim.lrr' is not in the config"),
        (["sparsity=log(0,1e-2)"], "a log range needs LOW > 0"),
        (["optim.lr=float(0.2,0.1)"], "LOW must be below HIGH"),
        (["optim.lr=float(a,0.1)"], "'a' is not a number"),
        (["optim=choice(sgd)"], "choice needs two or more values"),
        (["optim=choice(sgd,bogus)"], "the value bogus is refused"),
        ([LR_SPACE, "--seeds", "0"], "a trial needs at least one seed"),
        ([LR_SPACE, "--trials", "0"], "a study needs at least one trial"),
        ([LR_SPACE, "--pruner", "hyperband"], "choose median, halving or none"),
        ([LR_SPACE, "--metric", "val_top7_err"], "is not recorded per epoch"),
        ([LR_SPACE, "data.val_split=0"], "needs a validation split: add data.val_split=N"),
        ([LR_SPACE, "--storage", "sqlite:////nonexistent/folder/study.db"], "cannot open the storage"),
        ([LR_SPACE, "--storage", "nosuchdb://host/study"], "cannot open the storage"),
        ([LR_SPACE, "--space", "no_such_space"], "no search space 'no_such_space'"),
        ([LR_SPACE, "--arms", "attention=nam"], "two or more different values"),
        ([LR_SPACE, "trainer.devices=2"], "drop trainer.devices=2"),
    ],
)
def test_bad_input_is_one_line_and_creates_no_study(extra, expected, capsys):
    line = one_error_line(run_inproc(["tune", *TINY, *extra], capsys))
    assert expected in line, line
    assert not list(Path(os.environ["NAMEXP_RUNS"]).rglob("study.db"))
    assert not list(Path(os.environ["NAMEXP_RUNS"]).rglob("record.json"))


def test_a_study_name_with_another_space_is_refused_unchanged(capsys):
    from namexp.config import launch
    from namexp.tune import plan, space, study

    params, _ = space.build_space({}, ["sparsity=log(1e-5,1e-2)"])
    with launch.hydra_app("tune") as app:
        objective = plan.plan_objective(app, TINY, params, 1, "val_top1_err")
    study_dir("mine").mkdir(parents=True)
    storage = study.open_storage(study.default_storage(study_dir("mine")))
    study.load_or_create(storage, "mine", objective, study.make_sampler(), study.make_pruner("none", 2))
    before = (study_dir("mine") / "study.db").read_bytes()

    line = one_error_line(run_inproc(["tune", *TINY, LR_SPACE, "--seeds", "1", "--study", "mine"], capsys))
    assert "study 'mine' exists with another space" in line and "choose another --study name" in line
    assert (study_dir("mine") / "study.db").read_bytes() == before
    assert not list(study_dir("mine").rglob("record.json"))


def test_without_optuna_the_error_names_the_extra(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)  # what an install without the extra imports
    line = one_error_line(run_inproc(["tune", *TINY, LR_SPACE], capsys))
    assert "pip install 'namexp[tune]'" in line
