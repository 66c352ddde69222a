"""Everything a study needs checked before it exists: the space against the composed config, K, the metric,
the validation split. A mistake here is a one-line error and no study or run folder is touched."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from namexp.config import launch
from namexp.config.validate import to_run_config
from namexp.errors import UserError
from namexp.run.record import EPOCH_FIELDS
from namexp.tune.space import Param, override

# Per-epoch record fields a study can optimise; img_s is maximised, every loss and error minimised.
METRICS = tuple(f for f in EPOCH_FIELDS if f not in ("epoch", "lr", "seconds", "penalty"))
MAXIMISED = ("img_s",)
_MISSING = object()


@dataclass
class Objective:
    """What one study optimises: the trial runs' overrides, the space, K seeds and the metric."""

    overrides: list[str]
    space: list[Param]
    seeds: list[int]
    metric: str
    epochs: int
    dropped: list[str] = field(default_factory=list)  # space keys this arm's config does not have

    @property
    def direction(self) -> str:
        return "maximize" if self.metric in MAXIMISED else "minimize"

    def definition(self) -> dict[str, Any]:
        """What a study is (stored with it): a re-run with another definition is refused."""
        return {
            "space": {p.key: p.spec for p in self.space},
            "overrides": list(self.overrides),
            "seeds": list(self.seeds),
            "metric": self.metric,
        }


def runs_root() -> Path:
    """Where run folders go: $NAMEXP_RUNS, else ./runs (as hydra.run.dir's default)."""
    return Path(os.environ.get("NAMEXP_RUNS") or "runs").expanduser().absolute()


def check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise UserError(f"--metric {metric} is not recorded per epoch: choose one of {', '.join(METRICS)}")


def check_seeds(count: int, what: str) -> None:
    if count < 1:
        raise UserError(f"{what} {count}: a trial needs at least one seed (e.g. {what} 3)")


def plan_objective(
    app, overrides: list[str], space: list[Param], seeds: int, metric: str, optional_keys: bool = False
) -> Objective:
    """Check the space against the config `overrides` compose; `optional_keys` (arms) drops the keys this
    config does not have instead of refusing them."""
    check_metric(metric)
    check_seeds(seeds, "--seeds")
    cfg = launch.job_config(launch.compose(app, overrides))
    run_cfg = to_run_config(cfg)
    kept, dropped = [], []
    for param in space:
        if _has_key(cfg, param.key):
            kept.append(param)
        elif optional_keys:
            dropped.append(param.key)
        else:
            raise UserError(
                f"search space key '{param.key}' is not in the config: check the spelling "
                "(namexp train --cfg [overrides] prints every key)"
            )
    if not kept:
        raise UserError(f"no key of the search space is in the config of {' '.join(overrides) or 'the defaults'}")
    for param in kept:  # each end of each range (each choice) must be a valid run config
        for value in param.corners():
            try:
                with launch.translate_errors():
                    to_run_config(launch.job_config(launch.compose(app, [*overrides, override(param.key, value)])))
            except UserError as exc:
                raise UserError(f"search space {param.key}={param.spec}: the value {value} is refused: {exc}") from None
    if metric.startswith("val_") and not run_cfg.data.val_split:
        raise UserError(
            f"--metric {metric} needs a validation split: add data.val_split=N (images held out of training, "
            "e.g. data.val_split=5000)"
        )
    if run_cfg.trainer.devices > 1:  # the pruner's per-epoch hook lives in this process, not in spawned workers
        raise UserError(
            f"namexp tune trains each trial in its own process (the pruner watches every epoch): drop "
            f"trainer.devices={run_cfg.trainer.devices}, or start one tuner worker per device on a shared --storage"
        )
    first_seed = int(run_cfg.seed)
    return Objective(
        overrides=list(overrides),
        space=kept,
        seeds=[first_seed + k for k in range(seeds)],
        metric=metric,
        epochs=int(run_cfg.trainer.epochs),
        dropped=dropped,
    )


def _has_key(cfg: DictConfig, key: str) -> bool:
    if key in launch.USER_GROUPS:
        return True
    return OmegaConf.select(cfg, key, default=_MISSING) is not _MISSING
