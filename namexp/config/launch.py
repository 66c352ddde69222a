"""Drive Hydra from the Typer CLI without handing it `sys.argv`.

Hydra has no supported Click/Typer integration (see docs research runner.md §2.3), so `namexp` does what
`hydra.main` does internally -- create a `Hydra` app over the config tree, then `run` or `multirun` --
but keeps the return values and the exceptions, so that it can check things first (a comma list without
`-m`, a run folder that already holds a run) and answer mistakes with one line.
"""

import contextlib
import copy
import os
from pathlib import Path
from typing import Iterator, List, Sequence, Tuple

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


def group_options(app: Hydra, group: str) -> List[str]:
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


def expand_sweep(app: Hydra, overrides: Sequence[str]) -> List[List[str]]:
    """The override list of every job of a sweep, in Hydra's job order (BasicSweeper's expansion)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    cfg = compose(app, overrides, RunMode.MULTIRUN)
    params = OmegaConf.select(cfg, "hydra.sweeper.params") or {}
    from_config = [f"{k}={v}" for k, v in params.items()]
    parsed = parse_overrides(from_config + list(overrides))
    batches = BasicSweeper.split_arguments(parsed, None)
    return [list(job) for batch in batches for job in batch]


def sweep_values(overrides: Sequence[str]) -> List[str]:
    return [o.input_line for o in parse_overrides(overrides) if o.is_sweep_override()]


CLAIM_FILE = ".namexp-run"  # created exclusively by the run that owns the folder


def holds_run(folder: Path) -> bool:
    return any((folder / name).exists() for name in (CLAIM_FILE, "record.json", ".hydra", "checkpoints"))


def claim_run_dir(run_dir: Path, explicit: bool) -> Path:
    """Create and claim the run folder, never sharing or reusing one that holds a run.

    The claim is an exclusively created file (atomic), so two runs started in the same microsecond
    cannot share a folder: with a generated name the second takes the next free suffix; a folder the
    user named is an error.
    """
    candidate, n = run_dir, 0
    while True:
        if holds_run(candidate):
            if explicit:
                raise UserError(f"{candidate} already holds a run: continue it with --resume {candidate}, "
                                "or choose another folder (hydra.run.dir=...)")
            n += 1
            candidate = run_dir.with_name(f"{run_dir.name}-{n}")
            continue
        try:
            candidate.mkdir(parents=True, exist_ok=True)
            try:
                os.close(os.open(candidate / CLAIM_FILE, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))  # os.open's default is 0o777
            except FileExistsError:
                continue  # another run claimed it between our check and our claim: look again
            return candidate
        except OSError as exc:
            raise UserError(f"cannot write to {candidate} ({exc.strerror}): choose a writable folder with "
                            "hydra.run.dir=... or the NAMEXP_RUNS environment variable") from None


def resolve_dir(cfg: DictConfig, key: str) -> Path:
    value = OmegaConf.select(cfg, key)
    return Path(str(value)).expanduser().absolute()


def explicit_override(overrides: Sequence[str], key: str) -> bool:
    return any(o.split("=", 1)[0].lstrip("+~") == key for o in overrides)


def load_saved_overrides(run_or_sweep: Path) -> Tuple[List[str], bool]:
    """The task overrides a run (or sweep) was started with, and whether it is a sweep."""
    run_overrides = run_or_sweep / ".hydra" / "overrides.yaml"
    sweep_file = run_or_sweep / "multirun.yaml"
    if run_overrides.is_file():
        saved = OmegaConf.load(run_overrides)
        return [str(o) for o in saved if not str(o).startswith("trainer.resume=")], False
    if sweep_file.is_file():
        saved = OmegaConf.load(sweep_file)
        task = OmegaConf.select(saved, "hydra.overrides.task") or []
        return [str(o) for o in task if not str(o).startswith("trainer.resume=")], True
    if not run_or_sweep.exists():
        raise UserError(f"cannot resume {run_or_sweep}: the folder does not exist")
    raise UserError(
        f"cannot resume {run_or_sweep}: it holds no run (.hydra/overrides.yaml) or sweep (multirun.yaml); "
        "point --resume at a run folder or a sweep folder"
    )


