"""Run the real `namexp` CLI from tests, in this process or in a subprocess, and read run folders."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from namexp.cli import main
from namexp.config import launch
from namexp.config.schema import RunConfig
from namexp.config.validate import to_run_config

# A small, fast recipe for tests on the tiny CIFAR-100 fixture.
TINY = [
    "backbone=resnet20",
    "sched=cosine",
    "optim.lr=0.05",
    "trainer.batch_size=50",
    "trainer.eval_batch_size=250",
    "trainer.progress=none",
    "trainer.log_interval=5",
]

# A few seconds on the CPU, no data files: synthetic images, resnet20 + nam.
TINY_SYNTHETIC = [
    "data=synthetic",
    "backbone=resnet20",
    "attention=nam",
    "trainer.progress=none",
    "data.synthetic_train_size=32",
    "data.synthetic_test_size=16",
    "trainer.batch_size=16",
    "trainer.device=cpu",
]


def compose_run(overrides: list[str]) -> RunConfig:
    """The validated run config that `namexp train OVERRIDES` would run, composed through Hydra."""
    with launch.hydra_app("test") as app:
        return to_run_config(launch.job_config(launch.compose(app, overrides)))


@dataclass
class Result:
    code: int
    out: str
    err: str


def _drop_stale_log_handlers() -> None:
    """Hydra's log handlers keep the stdout/stderr of the test that configured them; pytest closes those."""
    loggers = [logging.getLogger()] + [
        lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)
    ]
    for logger in loggers:
        for handler in list(logger.handlers):
            if isinstance(handler, logging.StreamHandler) and getattr(handler.stream, "closed", False):
                logger.removeHandler(handler)


def run_inproc(args: list[str], capsys: pytest.CaptureFixture) -> Result:
    """`namexp ARGS` in this process (fast: torch is imported once for the whole session)."""
    _drop_stale_log_handlers()
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    captured = capsys.readouterr()
    return Result(code, captured.out, captured.err)


def train_once(base: Path, run: Path, args: list[str]) -> Path:
    """`namexp train ARGS` into `run`, caches and runs kept below `base` (for module-scoped fixtures, which the
    per-test environment of conftest.py does not reach); fails the test unless it completes."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NAMEXP_CACHE", str(base / "cache"))
        mp.setenv("NAMEXP_RUNS", str(base / "runs"))
        try:
            main(["train", *args, f"hydra.run.dir={run}"])
        except SystemExit as exc:
            assert exc.code in (0, None)
    return run


def one_error_line(result: Result) -> str:
    """The one `error:` line a refused command printed last (exit code 2, no traceback)."""
    assert result.code == 2, (result.code, result.err)
    assert "Traceback" not in result.out + result.err, result.err
    errors = [line for line in result.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and result.err.strip().splitlines()[-1] == errors[0], result.err
    return errors[0]


def run_subprocess(args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: int = 600) -> Result:
    """`python -m namexp ARGS` in a fresh process, as a user runs it."""
    proc = subprocess.run(
        [sys.executable, "-m", "namexp", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def only_run_dir(root: Path) -> Path:
    """The one run folder below `root` (fails the test if there is not exactly one)."""
    records = sorted(root.rglob("record.json"))
    assert len(records) == 1, f"expected one run below {root}, found {records}"
    return records[0].parent


def read_record(run_dir: Path) -> dict:
    return json.loads((run_dir / "record.json").read_text())


def read_checkpoint(path: Path) -> dict:
    """A checkpoint's dict (format 3 unwrapped once its hash matched), as eval, analyze and resume read it."""
    from namexp.run.checkpoint import load_checkpoint

    return load_checkpoint(path)
