"""What a study leaves in its folder: summary.json and summary.md (every trial, its state, value, setting and
folder; the best one), and Optuna's own matplotlib plots: optimisation history and parameter importance."""

from __future__ import annotations

import json
import logging
import math
import sys
import warnings
from pathlib import Path
from typing import Any

from namexp.files import write_text_atomic
from namexp.tune.plan import Objective

log = logging.getLogger("namexp")


def notice(message: str) -> None:
    """A progress line for the user on stderr: the "namexp" logger shows INFO only once Hydra has configured
    logging for a run in this process, and a tuner may wait before it trains anything."""
    print(message, file=sys.stderr, flush=True)


def study_summary(study, storage_url: str, objective: Objective) -> dict[str, Any]:
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    best = study.best_trial if done else None
    return {
        "study": study.study_name,
        "storage": storage_url,
        "direction": objective.direction,
        **objective.definition(),
        "states": {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState},
        "best": None if best is None else _trial(best),
        "trials": [_trial(t) for t in trials],
    }


def _trial(t) -> dict[str, Any]:
    return {
        "number": t.number,
        "state": t.state.name.lower(),
        "value": t.value,
        "params": t.params,
        "seed_values": t.user_attrs.get("seed_values"),
        "folder": t.user_attrs.get("folder"),
        "last_step": t.last_step,
        "retry_of": (t.system_attrs.get("retry_history") or [None])[0],
    }


def summary_markdown(summary: dict[str, Any]) -> str:
    keys = list(summary["space"])
    lines = [
        f"# Study {summary['study']}",
        "",
        f"{summary['direction']} {summary['metric']} (mean over seeds {summary['seeds']}); space "
        + ", ".join(f"`{k}={v}`" for k, v in summary["space"].items())
        + f"; overrides `{' '.join(summary['overrides']) or '(none)'}`; storage `{summary['storage']}`.",
        "",
        "States: " + ", ".join(f"{n} {s}" for s, n in summary["states"].items() if n) + ".",
        "",
    ]
    best = summary["best"]
    if best:
        setting = ", ".join(f"{k}={_fmt(v)}" for k, v in best["params"].items())
        lines += [f"Best: trial {best['number']}, {summary['metric']} {_fmt(best['value'])} with {setting}.", ""]
    lines += ["A pruned trial's value is the last mean it reported, at step seed_index × epochs + epoch.", ""]
    lines += ["| trial | state | value | " + " | ".join(keys) + " | per seed | folder |",
              "| --- " * (len(keys) + 5) + "|"]  # fmt: skip
    for t in summary["trials"]:
        per_seed = ", ".join(_fmt(v) for v in t["seed_values"] or [])
        params = " | ".join(_fmt(t["params"].get(k)) for k in keys)
        value = _fmt(t["value"]) + (f" (step {t['last_step']})" if t["state"] == "pruned" else "")
        lines.append(f"| {t['number']} | {t['state']} | {value} | {params} | {per_seed} | {t['folder'] or ''} |")
    return "\n".join(lines) + "\n"


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value)


def write_study_report(study, folder: Path, storage_url: str, objective: Objective) -> dict[str, Any]:
    summary = study_summary(study, storage_url, objective)
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(folder / "summary.json", json.dumps(summary, indent=1, default=str) + "\n")
    write_text_atomic(folder / "summary.md", summary_markdown(summary))
    write_plots(study, folder)
    best = summary["best"]
    print(f"study {study.study_name}: {summary['states']['complete']} complete, {summary['states']['pruned']} pruned"
          + (f"; best trial {best['number']}: {objective.metric} {_fmt(best['value'])} {best['params']}" if best else "")
          + f"; summary in {folder / 'summary.md'}")  # fmt: skip
    return summary


def write_plots(study, folder: Path) -> None:
    """Optuna's matplotlib history and importance plots; importance needs two complete trials."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    plots = {"history.png": ovm.plot_optimization_history, "importance.png": ovm.plot_param_importances}
    for name, plot in plots.items():
        try:
            with warnings.catch_warnings():  # equal importances on a flat study: the plot shows it
                warnings.simplefilter("ignore", UserWarning)
                ax = plot(study)
        except (ValueError, RuntimeError) as exc:  # too few complete trials for the plot
            log.info("no %s: %s", name, exc)
            continue
        ax.figure.savefig(folder / name, dpi=120, bbox_inches="tight")
        plt.close(ax.figure)


def comparison_markdown(rows: list[dict[str, Any]], metric: str, final_seeds: int) -> str:
    lines = [
        f"# Arms: best setting of each, retrained on {final_seeds} fresh seeds, final {metric}",
        "",
        "p: Welch's t-test against the baseline; Holm: Holm-corrected over the arms; seeds needed: per arm for a "
        "two-sided t-test at alpha 0.05 with 80 % power to detect the observed difference.",
        "",
        "| arm | trials | best val | best setting | n | mean ± std | Δ | p | p (Holm) | seeds needed |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        setting = ", ".join(f"{k}={_fmt(v)}" for k, v in r["best_params"].items())
        spread = f"{_fmt(r['mean'])} ± {_fmt(r['std'])}"
        delta = "baseline" if r["baseline"] else _fmt(r["delta"])
        needed = r["seeds_needed"]
        needed = "–" if needed is None else ("∞" if needed == math.inf else str(int(needed)))
        lines.append(f"| {r['arm']} | {r['trials']} | {_fmt(r['best_val'])} | {setting} | {r['n']} | {spread} | "
                     f"{delta} | {_fmt(r['p'])} | {_fmt(r['p_holm'])} | {needed} |")  # fmt: skip
    return "\n".join(lines) + "\n"
