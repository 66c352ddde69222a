"""A trial: K seeds of one sampled setting, each an ordinary run folder; its value is their mean metric.

Intermediate values go to the pruner after every epoch: at seed k (0-based) and epoch e the trial reports the
mean over seeds 0..k of the metric at epoch e, as step k*epochs + e, so the same step means the same quantity
in every trial and the median pruner compares like with like. A pruned trial's current run is recorded as
`pruned`. A trial of a killed tuner is retried with the same setting in the same folders (resumed from
their checkpoints), so no setting is trained twice.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from statistics import fmean
from typing import Any

import optuna

from namexp.tune.plan import Objective
from namexp.tune.runs import train_run, without_key
from namexp.tune.space import Param, override

FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


class Surplus(Exception):
    """The study already has its N trials counted (another worker asked first): this one does not run."""


def worker_id() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid()}


def folder_number(trial: optuna.Trial) -> int:
    """The trial whose folders this one uses: the first of a chain of retries, else its own number."""
    frozen = trial.study._storage.get_trial(trial._trial_id)
    history = optuna.storages.RetryFailedTrialCallback.retry_history(frozen)
    return int(history[0]) if history else trial.number


def trial_dir(study_dir: Path, number: int) -> Path:
    return study_dir / f"trial-{number:04d}"


def counted(trials: list[optuna.trial.FrozenTrial]) -> list[optuna.trial.FrozenTrial]:
    """Trials that are or will be finished: the N of a study counts these."""
    waiting = (optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)
    return [t for t in trials if t.state in FINISHED or t.state in waiting]


def suggest(trial: optuna.Trial, param: Param) -> Any:
    if param.kind == "choice":
        return trial.suggest_categorical(param.key, list(param.values))
    if param.kind == "int":
        return trial.suggest_int(param.key, int(param.values[0]), int(param.values[1]))
    return trial.suggest_float(param.key, float(param.values[0]), float(param.values[1]), log=param.kind == "log")


class TrialRunner:
    """The Optuna objective of one study: `study_dir/trial-NNNN/seed-S` per seed."""

    def __init__(self, objective: Objective, study_dir: Path, study_name: str, n_trials: int):
        self.objective = objective
        self.study_dir = study_dir
        self.study_name = study_name
        self.n_trials = n_trials
        self.surplus = False

    def __call__(self, trial: optuna.Trial) -> float:
        trial.set_user_attr("worker", worker_id())  # first: a retried trial carries its dead worker's
        before = [t for t in counted(trial.study.get_trials(deepcopy=False)) if t.number < trial.number]
        if len(before) >= self.n_trials:
            self.surplus = True
            raise Surplus(f"trial {trial.number}: the study already counts {len(before)} trials")
        params = {p.key: suggest(trial, p) for p in self.objective.space}
        folder = trial_dir(self.study_dir, folder_number(trial))
        trial.set_user_attr("folder", str(folder))
        curves: list[dict[int, float]] = []
        finals: list[float] = []
        for k, seed in enumerate(self.objective.seeds):
            curves.append({})
            record = self._run_seed(trial, params, folder / f"seed-{seed}", k, seed, curves)
            for entry in record.get("epochs", []):  # epochs trained before a kill: reported now, in order
                self._report(trial, curves, k, entry, may_prune=False)
            final = (record.get("final") or {}).get(self.objective.metric)
            if final is None:
                raise RuntimeError(f"{folder / f'seed-{seed}'} recorded no final {self.objective.metric}")
            finals.append(float(final))
            trial.set_user_attr("seed_values", finals)
        return fmean(finals)

    def _run_seed(self, trial, params, run_dir: Path, k: int, seed: int, curves) -> dict[str, Any]:
        from namexp.train.loop import Diverged, StoppedEarly

        overrides = without_key(self.objective.overrides, "seed")
        overrides += [override(key, value) for key, value in params.items()] + [f"seed={seed}"]
        tags = {"study": self.study_name, "trial": trial.number, "seed_index": k, "folder": run_dir.parent.name}
        try:
            return train_run(overrides, run_dir, tags, lambda entry: self._report(trial, curves, k, entry))
        except StoppedEarly as exc:
            raise optuna.TrialPruned(str(exc)) from None
        except Diverged as exc:  # a setting that diverges is hopeless, not a broken study
            trial.set_user_attr("diverged", str(exc))
            raise optuna.TrialPruned(f"diverged: {exc}") from None

    def _report(self, trial: optuna.Trial, curves, k: int, entry: dict, may_prune: bool = True) -> None:
        from namexp.train.loop import StoppedEarly

        epoch, value = int(entry["epoch"]), entry.get(self.objective.metric)
        if value is None or epoch in curves[k]:
            return
        curves[k][epoch] = float(value)
        so_far = [curve[epoch] for curve in curves if epoch in curve]
        step = k * self.objective.epochs + epoch
        mean = fmean(so_far)
        if step not in trial.study._storage.get_trial(trial._trial_id).intermediate_values:
            trial.report(mean, step)
        if may_prune and trial.should_prune():
            raise StoppedEarly(
                "pruned",
                f"pruned (study {self.study_name}, trial {trial.number}) at seed {k + 1} epoch {epoch}: "
                f"{self.objective.metric} {mean:.3f} is worse than the pruner's threshold",
            )
