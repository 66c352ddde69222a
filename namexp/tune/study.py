"""The study in its database, and running it to exactly N finished trials however often it is started.

Storage: an Optuna RDB storage, SQLite in the study folder by default, any SQLAlchemy URL (PostgreSQL,
MySQL) when given, so several processes, machines or Slurm jobs work on one study. Each worker asks for one
trial at a time; a trial numbered past N counted trials does not run, so concurrent workers stop at N, and
each waits for the others' trials before it reports (the best trial is final then).

A trial left RUNNING by a killed tuner is failed and retried with the same setting in the same folders
(Optuna's RetryFailedTrialCallback): at once when its process is gone from this host, and through Optuna's
heartbeat (60 s, stale after 180 s) when it ran on another machine.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import optuna
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from namexp.errors import UserError
from namexp.run.lease import pid_alive
from namexp.tune.objective import FINISHED, Surplus, TrialRunner, counted
from namexp.tune.plan import Objective
from namexp.tune.report import notice

DEFINITION_ATTR = "namexp_definition"
HEARTBEAT_S, GRACE_S = 60, 180
# Tuners that open a new storage at the same moment both create Optuna's schema; the loser's error names one of
# these, and opening again finds the schema the winner made.
SCHEMA_RACE = ("already exists", "UNIQUE constraint failed", "IntegrityError", "duplicate key")
OPEN_ATTEMPTS = 5
WAIT_POLL_S = 5  # how often a tuner that has run its share looks whether the others' trials have ended


def default_storage(study_dir: Path) -> str:
    return f"sqlite:///{study_dir / 'study.db'}"


def open_storage(url: str) -> RDBStorage:
    """The RDB storage at `url`; one that cannot be opened is a one-line error."""
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    if url.startswith("sqlite:///"):
        folder = Path(url.removeprefix("sqlite:///")).expanduser().parent
        if not folder.is_dir():
            raise UserError(f"cannot open the storage {url}: the folder {folder} does not exist; create it first")
    attempt = 1
    while True:
        try:
            return RDBStorage(
                url,
                engine_kwargs=engine,
                heartbeat_interval=HEARTBEAT_S,
                grace_period=GRACE_S,
                heartbeat_stale_trial_callback=_retry(),
            )
        except Exception as exc:  # SQLAlchemy's and the drivers' errors have no common type
            message = " ".join(str(exc).split())
            if attempt < OPEN_ATTEMPTS and any(sign in message for sign in SCHEMA_RACE):
                time.sleep(0.2 * attempt)  # the other tuner's schema is there now: open it
                attempt += 1
                continue
            raise UserError(
                f"cannot open the storage {url}: {message[:200]} (give --storage sqlite:///PATH or a reachable RDB URL)"
            ) from None


def _retry():
    """Re-enqueue a dead trial's setting (the retry keeps its params, reports and the first trial's number)."""
    retry = (
        getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None) or optuna.storages.RetryFailedTrialCallback
    )
    return retry(max_retry=None, inherit_intermediate_values=True)


def make_sampler():
    """TPE, unseeded: a fixed seed would make a re-run or a second worker sample the same settings again."""
    return optuna.samplers.TPESampler()


def make_pruner(name: str, n_trials: int):
    """median: stop a trial worse than the median of earlier trials at the same step (after a few trials);
    halving: asynchronous successive halving; none: every trial runs to its end."""
    startup = max(2, min(5, n_trials // 3))
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=1)
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise UserError(f"--pruner {name}: choose median, halving or none")


def existing_definition(storage: RDBStorage, name: str) -> dict | None:
    """The stored definition of the study `name`, or None when there is no such study."""
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
        if summary.study_name == name:
            text = summary.user_attrs.get(DEFINITION_ATTR)
            return json.loads(text) if text else {}
    return None


def check_definition(storage: RDBStorage, name: str, objective: Objective) -> None:
    """A study continues only with the same space, overrides, seeds and metric."""
    stored = existing_definition(storage, name)
    if stored is None:
        return
    wanted = objective.definition()
    differing = [k for k in wanted if stored.get(k) != wanted[k]]
    if differing:
        key = differing[0]
        raise UserError(
            f"study '{name}' exists with another {key} ({json.dumps(stored.get(key))}, not "
            f"{json.dumps(wanted[key])}): re-run with the study's own settings, or choose another --study name"
        )


def load_or_create(storage: RDBStorage, name: str, objective: Objective, sampler, pruner) -> optuna.Study:
    study = optuna.create_study(
        storage=storage,
        study_name=name,
        direction=objective.direction,
        sampler=sampler,
        pruner=pruner,
        load_if_exists=True,
    )
    if DEFINITION_ATTR not in study.user_attrs:
        study.set_user_attr(DEFINITION_ATTR, json.dumps(objective.definition()))
    return study


def recover_dead_trials(study: optuna.Study) -> list[int]:
    """RUNNING trials whose process on this host is gone: failed now and retried (the heartbeat does the same
    for other hosts after its grace period)."""
    storage, host, recovered = study._storage, socket.gethostname(), []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get("worker") or {}
        if worker.get("host") != host or worker.get("pid") == os.getpid() or pid_alive(worker.get("pid")):
            continue
        try:
            storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        except Exception:  # another worker failed it first
            continue
        _retry()(study, storage.get_trial(trial._trial_id))
        recovered.append(trial.number)
    optuna.storages.fail_stale_trials(study)
    return recovered


def run_study(study: optuna.Study, runner: TrialRunner, n_trials: int) -> None:
    """Trials until the study has `n_trials` finished (complete or pruned) ones, or others hold the rest."""
    while True:
        recovered = recover_dead_trials(study)
        if recovered:
            notice(f"study {study.study_name}: retrying trial(s) {recovered} left running by a stopped tuner")
        trials = study.get_trials(deepcopy=False)
        finished = [t for t in trials if t.state in FINISHED]
        waiting = [t for t in trials if t.state == TrialState.WAITING]
        if len(finished) >= n_trials or (len(counted(trials)) >= n_trials and not waiting):
            return
        study.optimize(runner, n_trials=1, catch=(Surplus,))
        if runner.surplus:  # N trials are counted: the workers that hold them finish them
            return


def finish_study(study: optuna.Study, runner: TrialRunner, n_trials: int) -> None:
    """run_study, then wait while other tuners finish the trials they hold (running again any whose tuner
    died): a tuner returns when the study is done, so its report, its best trial and the arms' retraining of
    that best are final."""
    told = False
    while True:
        run_study(study, runner, n_trials)
        running = [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]
        if not running:
            return
        if not told:
            notice(f"study {study.study_name}: waiting for trial(s) {running}, which other tuners run")
            told = True
        time.sleep(WAIT_POLL_S)
