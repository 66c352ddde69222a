"""`namexp bench`, step by step: plan -> measure -> record -> publish."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from namexp.bench.plan import BenchOptions, plan_bench


def run_bench(options: BenchOptions, ctx: typer.Context) -> int:
    """Run the bench for the command `ctx` parsed: its options, and its extra arguments as Hydra overrides."""
    from namexp.bench.measure import measure
    from namexp.bench.publish import print_report, write_output
    from namexp.bench.record import build_record

    overrides = list(ctx.args)
    valid_flags = [_flag(param) for param in _options(ctx)]
    if options.deploy:
        from namexp.bench.deploy import run_deploy
        from namexp.bench.plan import check_overrides

        check_overrides(overrides, valid_flags)
        return run_deploy(options, overrides, command_line(ctx, overrides))
    plan = plan_bench(options, overrides, command_line(ctx, overrides), valid_flags)
    console, status = Console(), Console(stderr=True)
    with tempfile.TemporaryDirectory(prefix="namexp-bench-") as tmp:
        measurements = measure(plan, Path(tmp), status)
    result = build_record(plan, measurements)
    print_report(console, result)
    if options.output is not None:
        write_output(options.output, result)
        console.print(f"wrote {options.output}")
    return 0


def command_line(ctx: typer.Context, overrides: list[str]) -> list[str]:
    """`namexp bench`, the overrides, then the options given on the command line (defaults left out)."""
    argv = ["namexp", "bench", *overrides]
    for param in _options(ctx):
        # By the source's name: Typer's ParameterSource is click's or, from Typer 0.2x, its own copy's.
        if getattr(ctx.get_parameter_source(param.name), "name", None) == "COMMANDLINE":
            value = ctx.params[param.name]
            argv += [param.opts[0]] if param.is_flag else [param.opts[0], str(value)]
    return argv


def _options(ctx: typer.Context) -> list[Any]:
    return [param for param in ctx.command.params if param.param_type_name == "option"]


def _flag(param: Any) -> str:
    return param.opts[0] if param.is_flag else f"{param.opts[0]} VALUE"
