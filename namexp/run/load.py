"""A run's config and model back from its folder (or a bare checkpoint): what eval, analyze and resume use.

A run folder's config is recomposed through Hydra from the overrides it was started with
(`.hydra/overrides.yaml`) plus the new ones, exactly as `train --resume` does, so group overrides
(`trainer=gpu_fast`, `data=cifar100`) work for every command. A checkpoint outside a run folder carries its
resolved config, which dotted `key=value` overrides may change.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from namexp.config.schema import RunConfig
from namexp.errors import UserError
from namexp.nested import flatten, with_later_keys
from namexp.run.layout import CHECKPOINTS_DIR, SWEEP_FILE, RunFolder

log = logging.getLogger("namexp")
CHECKPOINT_CHOICES = ("last", "best")
# namexp 0.1 kept --resume as a config key (trainer.resume); it is an argument of the run now.
_RETIRED_OVERRIDES = ("trainer.resume=",)
_RETIRED_KEYS = (("trainer", "resume"),)


def resolve_checkpoint(target: Path, which: str) -> Path:
    """The checkpoint file a command reads: `target` itself, or `checkpoints/<which>.pt` of a run folder."""
    if which not in CHECKPOINT_CHOICES:
        raise UserError(f"--checkpoint {which} is not valid: use last or best")
    target = Path(target).expanduser()
    return RunFolder(target).checkpoint(which) if target.is_dir() else target


def folder_of(checkpoint: Path) -> RunFolder | None:
    """The run folder a checkpoint belongs to, when it sits in one that Hydra configured."""
    parent = checkpoint.resolve().parent
    folder = RunFolder(parent.parent if parent.name == CHECKPOINTS_DIR else parent)
    return folder if folder.saved_overrides.is_file() else None


def resume_target(target: Path) -> tuple[Path, str]:
    """What `train --resume TARGET` continues: (run or sweep folder, which checkpoint). TARGET is a folder
    (its last.pt), or a run's `checkpoints/last.pt` or `checkpoints/previous.pt`."""
    if target.is_dir() or target.suffix != ".pt":
        return target, "last"
    which, folder = target.stem, RunFolder(target.parent.parent)
    if which == "best" and target.parent.name == CHECKPOINTS_DIR:
        raise UserError(
            f"cannot resume from {target}: best.pt holds the best epoch's weights but no optimizer state; resume "
            f"with --resume {folder.path} (its last.pt) or --resume {folder.checkpoint('previous')}"
        )
    if target.parent.name != CHECKPOINTS_DIR or which not in ("last", "previous"):
        raise UserError(
            f"cannot resume from {target}: --resume takes a run folder, a sweep folder, or a run's "
            "checkpoints/last.pt or checkpoints/previous.pt"
        )
    if not target.is_file():
        raise UserError(f"cannot resume from {target}: the file does not exist")
    return folder.path, which


def saved_overrides(run_or_sweep: Path) -> tuple[list[str], bool]:
    """The task overrides a run (or sweep) was started with, and whether it is a sweep."""
    folder = RunFolder(run_or_sweep)
    if folder.saved_overrides.is_file():
        saved, is_sweep = list(OmegaConf.load(folder.saved_overrides)), False
    elif (run_or_sweep / SWEEP_FILE).is_file():
        saved, is_sweep = (
            OmegaConf.select(OmegaConf.load(run_or_sweep / SWEEP_FILE), "hydra.overrides.task") or [],
            True,
        )
    elif not run_or_sweep.exists():
        raise UserError(f"cannot resume {run_or_sweep}: the folder does not exist")
    else:
        raise UserError(
            f"cannot resume {run_or_sweep}: it holds no run (.hydra/overrides.yaml) or sweep ({SWEEP_FILE}); "
            "point --resume at a run folder or a sweep folder"
        )
    return [str(o) for o in saved if not str(o).startswith(_RETIRED_OVERRIDES)], is_sweep


def saved_launcher_overrides(run_or_sweep: Path, given: list[str]) -> list[str]:
    """The launcher settings a run or sweep was started with (`hydra/launcher=slurm`, `hydra.launcher.*`), so
    --resume relaunches the same way; a setting the user gives again wins, and a new `hydra/launcher` drops
    them all (another launcher has other keys)."""
    sweep_file, hydra_file = run_or_sweep / SWEEP_FILE, RunFolder(run_or_sweep).hydra / "hydra.yaml"
    source = hydra_file if hydra_file.is_file() else sweep_file
    if not source.is_file():
        return []
    saved = [str(o) for o in OmegaConf.select(OmegaConf.load(source), "hydra.overrides.hydra") or []]
    saved = [o for o in saved if o.startswith(("hydra/launcher=", "hydra.launcher."))]
    given_keys = {o.split("=", 1)[0].lstrip("+~") for o in given}
    if "hydra/launcher" in given_keys:
        return []
    return [o for o in saved if o.split("=", 1)[0].lstrip("+~") not in given_keys]


def check_overrides(overrides: list[str]) -> None:
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise UserError(f"cannot read the overrides {' '.join(bad)}: give them as key=value (e.g. data.root=/data)")


def run_config(checkpoint: Path, payload: dict[str, Any], overrides: list[str]) -> RunConfig:
    """The config to rebuild a checkpoint's run with: recomposed from the run folder, or the checkpoint's own."""
    from namexp.config import launch
    from namexp.config.validate import to_run_config, validate

    check_overrides(overrides)
    folder = folder_of(checkpoint)
    if folder is None:
        if any("." not in o.split("=", 1)[0] for o in overrides):
            raise UserError(
                f"{checkpoint} is outside a run folder, so config groups cannot be re-chosen: "
                "override single keys (e.g. data.root=/data), or evaluate the run folder"
            )
        with launch.translate_errors():
            saved = _without_retired_keys(payload["config"])
            merged = OmegaConf.merge(OmegaConf.structured(RunConfig), saved, OmegaConf.from_dotlist(overrides))
            cfg = OmegaConf.to_object(merged)
        validate(cfg)
        return cfg
    saved, _ = saved_overrides(folder.path)
    with launch.hydra_app("eval") as app:
        cfg = to_run_config(launch.job_config(launch.compose(app, saved + overrides)))
    _warn_if_changed(payload["config"], asdict(cfg), overrides)
    return cfg


def _without_retired_keys(config: dict) -> dict:
    config = {k: dict(v) if isinstance(v, dict) else v for k, v in config.items()}
    for group, key in _RETIRED_KEYS:
        config.get(group, {}).pop(key, None)
    return config


def _warn_if_changed(trained: dict, now: dict, overrides: list[str]) -> None:
    """Say so when the config tree changed since training (a recomposed key the user did not override differs)."""
    chosen = [o.split("=", 1)[0].lstrip("+~") for o in overrides]
    before, after = with_later_keys(flatten(_without_retired_keys(trained))), flatten(now)
    changed = [
        k for k in sorted(set(before) | set(after))
        if before.get(k) != after.get(k) and not any(k == c or k.startswith(c + ".") for c in chosen)
    ]  # fmt: skip
    if changed:
        log.warning(
            "the config recomposed from the run's overrides differs from the one it was trained with in %s "
            "(the config tree changed since): using the recomposed one",
            ", ".join(changed[:8]),
        )


@dataclass
class LoadedRun:
    """A checkpoint's model on its device, in eval mode, with the config it was rebuilt from."""

    cfg: RunConfig
    payload: dict[str, Any]
    checkpoint: Path
    device: Any
    model: Any

    @property
    def epochs_done(self) -> int:
        return self.payload["state"]["epochs_done"]


def load_run(target: Path, overrides: list[str] = (), which: str = "last") -> LoadedRun:
    """Config + model of a run folder's (or a checkpoint file's) checkpoint, ready to evaluate."""
    import torch

    from namexp.run.checkpoint import load_checkpoint, load_model_state
    from namexp.train import runtime
    from namexp.train.build import make_model

    path = resolve_checkpoint(target, which)
    payload = load_checkpoint(path)
    cfg = run_config(path, payload, list(overrides))
    device = runtime.device_for(cfg.trainer)
    # Classes and input size from the config (build_data checks that the data agrees with them).
    model = make_model(cfg, cfg.data.num_classes, cfg.data.image_size).to(device)
    load_model_state(model, payload["model"], path, f"{cfg.backbone.name}+{cfg.attention.name}")
    if cfg.trainer.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.eval()
    return LoadedRun(cfg, payload, path, device, model)
