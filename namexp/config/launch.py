"""Drive Hydra from the Typer CLI without handing it `sys.argv`.

Hydra has no supported Click/Typer integration (see docs research runner.md §2.3), so `namexp` does what
`hydra.main` does internally -- create a `Hydra` app over the config tree, then `run` or `multirun` --
but keeps the return values and the exceptions, so that it can check things first (a comma list without
`-m`, a run folder that already holds a run) and answer mistakes with one line.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Sequence
from pathlib import Path

from hydra._internal.hydra import Hydra
from hydra._internal.utils import create_config_search_path
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from omegaconf.errors import OmegaConfBaseException

from namexp.config.paths import conf_dir
from namexp.config.schema import register_schema
from namexp.errors import UserError

CONFIG_NAME = "config"
# Config groups a user chooses from (Hydra's own groups are not listed).
USER_GROUPS = ("data", "backbone", "attention", "optim", "sched", "trainer", "experiment", "sweep")


@contextlib.contextmanager
def hydra_app(task_name: str = "train") -> Iterator[Hydra]:
    """A Hydra app over namexp's config tree; Hydra's global state is cleared afterwards."""
    register_schema()
    GlobalHydra.instance().clear()
    search_path = create_config_search_path(str(conf_dir()))
    app = Hydra.create_main_hydra2(task_name=task_name, config_search_path=search_path)
    try:
        with translate_errors():
            yield app
    finally:
        GlobalHydra.instance().clear()


def group_options(app: Hydra, group: str) -> list[str]:
    return sorted(app.config_loader.get_group_options(group))


@contextlib.contextmanager
def translate_errors() -> Iterator[None]:
    """Turn Hydra's and OmegaConf's multi-line errors into one-line `UserError`s."""
    try:
        yield
    except MissingConfigException as exc:
        group = (exc.missing_cfg_file or "").split("/")[0]
        if exc.options and group:
            bad = (exc.missing_cfg_file or "").split("/", 1)[-1]
            raise UserError(
                f"unknown {group} '{bad}': valid choices are {', '.join(sorted(exc.options))} (use {group}=NAME)"
            ) from None
        raise UserError(_first_lines(str(exc))) from None
    except OverrideParseException as exc:
        raise UserError(f"cannot parse the override: {_first_lines(str(exc))}") from None
    except ConfigCompositionException as exc:
        message = str(exc)
        if "Ambiguous value" in message or "add --multirun" in message:
            raise UserError(
                "a comma list or range sweeps over values: add -m to run one job per value "
                "(e.g. namexp train -m attention=nam,se)"
            ) from None
        cause = exc.__cause__
        if isinstance(cause, OmegaConfBaseException):
            raise UserError(_omegaconf_message(cause)) from None
        raise UserError(_first_lines(message)) from None
    except OmegaConfBaseException as exc:
        raise UserError(_omegaconf_message(exc)) from None


def _first_lines(message: str) -> str:
    return " ".join(message.split())


def _omegaconf_message(exc: OmegaConfBaseException) -> str:
    key = getattr(exc, "full_key", None)
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if "not in struct" in first or "Key '" in first and "not in" in first:
        return f"unknown config key {key or first}: check the spelling (namexp info --cfg prints every key)"
    if key:
        return f"{key}: {first}"
    return _first_lines(first)


def parse_overrides(overrides: Sequence[str]):
    try:
        return OverridesParser.create().parse_overrides(list(overrides))
    except OverrideParseException as exc:
        raise UserError(f"cannot parse the override: {_first_lines(str(exc))}") from None


def compose(app: Hydra, overrides: Sequence[str], run_mode: RunMode = RunMode.RUN) -> DictConfig:
    """The full config (hydra node included) for `overrides`."""
    return app.compose_config(CONFIG_NAME, list(overrides), run_mode=run_mode, with_log_configuration=False)


def job_config(cfg: DictConfig) -> DictConfig:
    """The run config a task sees: `cfg` without Hydra's node."""
    job = copy.deepcopy(cfg)  # as Hydra's run_job does: the structured type (RunConfig) survives
    with read_write(job), open_dict(job):
        job.pop("hydra", None)
    return job


def quote(value: str) -> str:
    """Quote a value for Hydra's override grammar (paths may hold spaces, commas, '=')."""
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def expand_sweep(app: Hydra, overrides: Sequence[str]) -> list[list[str]]:
    """The override list of every job of a sweep, in Hydra's job order (BasicSweeper's expansion)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    cfg = compose(app, overrides, RunMode.MULTIRUN)
    params = OmegaConf.select(cfg, "hydra.sweeper.params") or {}
    from_config = [f"{k}={v}" for k, v in params.items()]
    parsed = parse_overrides(from_config + list(overrides))
    batches = BasicSweeper.split_arguments(parsed, None)
    return [list(job) for batch in batches for job in batch]


def sweep_values(overrides: Sequence[str]) -> list[str]:
    return [o.input_line for o in parse_overrides(overrides) if o.is_sweep_override()]


def resolve_dir(cfg: DictConfig, key: str) -> Path:
    value = OmegaConf.select(cfg, key)
    return Path(str(value)).expanduser().absolute()


def explicit_override(overrides: Sequence[str], key: str) -> bool:
    return any(o.split("=", 1)[0].lstrip("+~") == key for o in overrides)
