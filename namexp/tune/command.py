"""`namexp tune`: check everything, open (or continue) the study or the arms' studies, run them, report.

Nothing is created before every check passed: the space against each arm's config, K, the metric, the
validation split, the storage, and each existing study's definition.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import typer

from namexp.errors import UserError

log = logging.getLogger("namexp")
OVERRIDES = {"allow_extra_args": True, "ignore_unknown_options": True}


@dataclass
class TuneRequest:
    overrides: list[str]
    space: str | None
    trials: int
    seeds: int
    storage: str | None
    study: str | None
    metric: str
    pruner: str
    arms: str | None
    final_seeds: int


def tune(
    ctx: typer.Context,
    space: str | None = typer.Option(None, "--space", help="conf/tune/NAME.yaml by NAME, or a YAML file's path."),
    trials: int = typer.Option(20, "--trials", help="Finished trials the study (each arm's) ends with."),
    seeds: int = typer.Option(3, "--seeds", help="Seeds per trial; the trial's value is their mean."),
    storage: str | None = typer.Option(
        None, "--storage", help="Optuna RDB URL (default sqlite:///STUDY_DIR/study.db), e.g. postgresql://..."
    ),
    study: str | None = typer.Option(None, "--study", help="Study name (default: the space's name, or 'tune')."),
    metric: str = typer.Option("val_top1_err", "--metric", help="The recorded per-epoch metric to optimise."),
    pruner: str = typer.Option("median", "--pruner", help="median, halving (successive halving) or none."),
    arms: str | None = typer.Option(
        None, "--arms", help="KEY=a,b,...: tune each arm alike, retrain each best on fresh seeds, compare to none."
    ),
    final_seeds: int = typer.Option(5, "--final-seeds", help="--arms: fresh seeds per arm's best setting."),
) -> None:
    """Optuna search over a space, K seeds per trial on the validation split; with --arms, a fair comparison.

    Extra arguments are Hydra overrides (fixed for every trial) and space entries such as
    sparsity=log(1e-5,1e-2) optim.lr=float(0.01,0.2) attention.options.abs_weights=choice(true,false).
    """
    request = TuneRequest(ctx.args, space, trials, seeds, storage, study, metric, pruner, arms, final_seeds)
    code = run_tune(request)
    if code:
        raise typer.Exit(code)


def require_extra() -> None:
    try:
        import optuna  # noqa: F401
        import statsmodels  # noqa: F401
    except ImportError as exc:
        raise UserError(
            f"namexp tune needs the tune extra ({exc.name} is missing): pip install 'namexp[tune]'"
        ) from None


def run_tune(request: TuneRequest) -> int:
    require_extra()
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeat, plots, retries

    from namexp.config import launch
    from namexp.config.paths import conf_dir
    from namexp.tune import arms as arms_mod
    from namexp.tune import plan, report, space, study
    from namexp.tune.objective import TrialRunner

    if request.trials < 1:
        raise UserError(f"--trials {request.trials}: a study needs at least one trial (e.g. --trials 20)")
    study.make_pruner(request.pruner, request.trials)  # a bad --pruner before anything exists
    file_entries = space.read_space_file(request.space, conf_dir() / "tune") if request.space else {}
    params, overrides = space.build_space(file_entries, request.overrides)
    arm_list = arms_mod.parse_arms(request.arms, overrides) if request.arms else [None]
    if request.arms:
        plan.check_seeds(request.final_seeds, "--final-seeds")
    name = request.study or (Path(request.space).stem if request.space else "tune")
    study_dir = plan.runs_root() / "tune" / name
    with launch.hydra_app("tune") as app:
        objectives = [
            plan.plan_objective(app, overrides + arm.overrides if arm else overrides, params, request.seeds,
                                request.metric, optional_keys=arm is not None)
            for arm in arm_list
        ]  # fmt: skip
    url = request.storage or study.default_storage(study_dir)
    if request.storage is None:
        study_dir.mkdir(parents=True, exist_ok=True)
    storage = study.open_storage(url)
    names = [arms_mod.study_name(name, arm) for arm in arm_list]
    for study_name, objective in zip(names, objectives):
        study.check_definition(storage, study_name, objective)
    studies = []
    for arm, study_name, objective in zip(arm_list, names, objectives):
        if objective.dropped:
            log.warning("arm %s: %s not in its config, not searched", arm.label, ", ".join(objective.dropped))
        one = study.load_or_create(
            storage, study_name, objective, study.make_sampler(),
            study.make_pruner(request.pruner, request.trials),
        )  # fmt: skip
        folder = study_dir / arm.label if arm else study_dir
        study.finish_study(one, TrialRunner(objective, folder, study_name, request.trials), request.trials)
        report.write_study_report(one, folder, url, objective)
        studies.append(one)
    if request.arms:
        return arms_mod.compare_arms(arm_list, studies, objectives, study_dir, request.final_seeds)
    return 0
