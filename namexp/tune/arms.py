"""`--arms KEY=a,b,...`: every arm tuned with the same trials and the same space (its shared keys), then each
arm's best setting retrained on fresh seeds and compared on the test split against `none` (or the first arm).

Welch's t-test per arm against the baseline (the same test as `namexp compare`), Holm's correction over the
arms (statsmodels), and the seeds per arm a two-sided t-test at alpha 0.05 would need to detect the observed
difference with 80 % power (statsmodels' TTestIndPower; the effect size is Cohen's d with the pooled std).
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from namexp.compare.stats import mean_std, welch_p
from namexp.errors import UserError
from namexp.files import write_text_atomic
from namexp.run.lease import Lease
from namexp.tune.objective import FINISHED
from namexp.tune.plan import Objective
from namexp.tune.report import comparison_markdown, notice
from namexp.tune.runs import train_run, without_key
from namexp.tune.space import override

ALPHA, POWER = 0.05, 0.8
MIN_SEEDS = 2  # the fewest per arm a t-test can use


@dataclass(frozen=True)
class Arm:
    key: str
    value: str

    @property
    def label(self) -> str:
        return f"{self.key}={self.value}"

    @property
    def overrides(self) -> list[str]:
        return [self.label]


def parse_arms(text: str, overrides: list[str]) -> list[Arm]:
    key, sep, values = text.partition("=")
    items = [v.strip() for v in values.split(",") if v.strip()]
    if not sep or not key or len(items) < 2 or len(set(items)) != len(items):
        raise UserError(f"--arms {text}: write KEY=a,b,... with two or more different values, e.g. attention=none,nam")
    if without_key(overrides, key) != overrides:
        raise UserError(f"--arms sets {key}: drop the {key}=... override")
    return [Arm(key.strip(), v) for v in items]


def study_name(name: str, arm: Arm | None) -> str:
    return name if arm is None else f"{name}.{arm.label}"


def test_metric(metric: str) -> str:
    """What the final runs are compared on: the metric's test-split counterpart (test_top1_err otherwise)."""
    if metric.startswith("val_"):
        return "test_" + metric.removeprefix("val_")
    return metric if metric.startswith("test_") else "test_top1_err"


def retrain_best(arm: Arm, study, objective: Objective, folder: Path, final_seeds: int) -> list[float]:
    """The best trial's setting on fresh seeds (after the tuning seeds); returns each seed's test metric."""
    if not study.get_trials(deepcopy=False, states=(optuna_state_complete(),)):
        raise UserError(
            f"arm {arm.label}: no trial completed (all pruned or failed): raise --trials or use --pruner none"
        )
    best = study.best_trial
    first = objective.seeds[-1] + 1
    overrides = without_key(objective.overrides, "seed") + [override(k, v) for k, v in best.params.items()]
    # Named by the best trial: a study extended with more trials retrains a new best in a folder of its own,
    # never reading the old best's runs as the new one's.
    final = folder / "final" / f"trial-{best.number:04d}"
    final.mkdir(parents=True, exist_ok=True)
    held = Lease(final)  # several tuners on one study: one retrains, the others wait and read its records
    held.wait_and_acquire(lambda other: notice(f"{final}: retrained by {other.describe()}; waiting for it"))
    try:
        metric, values = test_metric(objective.metric), []
        for seed in range(first, first + final_seeds):
            run_dir = final / f"seed-{seed}"
            tags = {"study": study.study_name, "final": True, "best_trial": best.number}
            record = train_run([*overrides, f"seed={seed}"], run_dir, tags)
            value = (record.get("final") or {}).get(metric)
            if value is None:
                raise RuntimeError(f"{run_dir} recorded no final {metric}")
            values.append(float(value))
    finally:
        held.release()
    return values


def optuna_state_complete():
    from optuna.trial import TrialState

    return TrialState.COMPLETE


def seeds_needed(a: list[float], b: list[float]) -> float | None:
    """Seeds per arm for 80 % power at alpha 0.05 given the observed difference; inf when there is none, None when
    it cannot be told (fewer than two values, no spread, or the solver did not converge)."""
    from statsmodels.stats.power import TTestIndPower

    (ma, sa), (mb, sb) = mean_std(a), mean_std(b)
    if ma is None or mb is None or sa is None or sb is None:
        return None
    pooled = math.sqrt(((len(a) - 1) * sa**2 + (len(b) - 1) * sb**2) / (len(a) + len(b) - 2))
    if ma == mb:
        return math.inf
    if pooled == 0:
        return None
    d = abs(ma - mb) / pooled
    # The two-sided power as its upper tail alone (one-sided at alpha / 2): the lower tail (a significant result
    # of the wrong sign) is below 1e-5 wherever the power is near 80 %, and statsmodels' noncentral t returns NaN
    # for it once d is large (about 9), which once crashed a tune. Same seeds as the two-sided solve for d <= 5.
    one_tail = {"alpha": ALPHA / 2, "ratio": 1.0, "alternative": "larger"}
    power = TTestIndPower()
    if power.power(effect_size=d, nobs1=MIN_SEEDS, **one_tail) >= POWER:
        return float(MIN_SEEDS)  # the solver searches above two seeds and cannot land on them
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # statsmodels' ConvergenceWarning: handled below as "unknown"
        n = power.solve_power(effect_size=d, power=POWER, **one_tail)
    return float(math.ceil(n)) if math.isfinite(n) else None


def comparison(arms: list[Arm], values: list[list[float]], studies) -> list[dict[str, Any]]:
    from statsmodels.stats.multitest import multipletests

    labels = [a.value for a in arms]
    base = labels.index("none") if "none" in labels else 0
    rows, raw = [], []
    for arm, vals, study in zip(arms, values, studies):
        mean, std = mean_std(vals)
        rows.append({"arm": arm.label, "n": len(vals), "mean": mean, "std": std, "values": vals,
                     "best_trial": study.best_trial.number, "best_params": study.best_trial.params,
                     "best_val": study.best_value, "trials": len(study.get_trials(deepcopy=False, states=FINISHED))})  # fmt: skip
    for i, row in enumerate(rows):
        if i == base:
            row.update(baseline=True, delta=None, p=None, p_holm=None, seeds_needed=None)
            continue
        row.update(baseline=False, delta=row["mean"] - rows[base]["mean"], p=welch_p(values[i], values[base]))
        row["seeds_needed"] = seeds_needed(values[i], values[base])
        raw.append(i)
    tested = [i for i in raw if rows[i]["p"] is not None]
    if tested:
        adjusted = multipletests([rows[i]["p"] for i in tested], alpha=ALPHA, method="holm")[1]
        for i, p in zip(tested, adjusted):
            rows[i]["p_holm"] = float(p)
    for i in raw:
        rows[i].setdefault("p_holm", None)
    return rows


def compare_arms(arms: list[Arm], studies, objectives: list[Objective], study_dir: Path, final_seeds: int) -> int:
    values = [
        retrain_best(arm, study, objective, study_dir / arm.label, final_seeds)
        for arm, study, objective in zip(arms, studies, objectives)
    ]
    rows = comparison(arms, values, studies)
    metric = test_metric(objectives[0].metric)
    text = comparison_markdown(rows, metric, final_seeds)
    write_text_atomic(study_dir / "comparison.md", text)
    write_text_atomic(study_dir / "comparison.json", json.dumps({"metric": metric, "arms": rows}, indent=1) + "\n")
    print(text)
    return 0
