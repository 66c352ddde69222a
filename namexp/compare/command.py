"""`namexp compare`: run folders -> the comparison table and plots a paper needs.

The CLI registers `compare` with `app.command("compare")(compare)`; the training CLI calls
`write_sweep_table(sweep_dir)` at the end of a sweep. `run_compare` is the same command as a plain
function (ordinary defaults), for scripts and tests.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

import typer

from namexp.compare import plots as _plots
from namexp.compare.collect import load_runs
from namexp.compare.render import FORMATS, SUFFIXES, render, render_csv, render_markdown, render_terminal, terminal_text
from namexp.compare.stats import Comparison, build
from namexp.files import check_output, output_format, write_text_atomic

TEXT_WIDTH = 200  # characters of the terminal table when the output is not a terminal


def run_compare(
    paths: Sequence[Path | str],
    *,
    format: str | None = None,
    output: Path | str | None = None,
    plot: Path | str | None = None,
    sort: str | None = None,
    desc: bool = False,
    filters: Sequence[str] = (),
    ignore: Sequence[str] = (),
    masked_ratio: float = 0.3,
    force: bool = False,
    console=None,
    err_console=None,
) -> Comparison:
    """Everything `namexp compare` does; returns the comparison. Raises UserError on bad input."""
    from rich.console import Console

    if console is None:
        console = Console()
        if not console.is_terminal and "COLUMNS" not in os.environ:
            console = Console(width=TEXT_WIDTH)  # piped to a file: one wide table rather than 80 columns
    err_console = err_console or Console(stderr=True, highlight=False)
    output = Path(output) if output is not None else None
    fmt = output_format(format, output, FORMATS, SUFFIXES)
    if output is not None:
        check_output(output, force, "comparison.md")

    runs, warnings = load_runs([Path(p) for p in paths])
    comp = build(
        runs, filters=filters, ignore=ignore, masked_ratio=masked_ratio, sort=sort, desc=desc, warnings=warnings
    )
    targets, weights, plot_notes = ([], {}, [])
    if plot is not None:  # refuse before writing anything
        targets, weights, plot_notes = _plots.plan_plots(comp, Path(plot), force)

    for line in comp.warnings:
        err_console.print(f"warning: {line}", markup=False)

    # With a table on stdout, every other message goes to stderr (the table stays parseable).
    status = err_console if fmt is not None and output is None else console
    if fmt is not None and output is None:
        sys.stdout.write(render(comp, fmt))
        sys.stdout.flush()
        if comp.apart:
            err_console.print(
                f"note: {len(comp.apart)} run(s) not completed are listed apart and not averaged", markup=False
            )
    else:
        render_terminal(comp, console)
    if fmt is not None and output is not None:
        write_text_atomic(output, render(comp, fmt))
        console.print(f"wrote {output} ({fmt}, {len(comp.groups)} group(s))", markup=False)
    if plot is not None:
        _plots.draw_plots(comp, targets, weights)
        for note in plot_notes:
            err_console.print(f"note: {note}", markup=False)
        for target in targets:
            status.print(f"wrote {target}", markup=False)
    return comp


def compare(
    paths: list[Path] = typer.Argument(
        ..., help="Run folders, sweep folders (searched recursively for record.json) or record files."
    ),
    format: str | None = typer.Option(
        None, "--format", "-f", help="markdown | csv | latex | json (to stdout, or to --output)."
    ),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Write the table to this file (format from --format or the suffix)."
    ),
    plot: Path | None = typer.Option(None, "--plot", help="Write PNG plots into this folder."),
    sort: str | None = typer.Option(
        None, "--sort", help="Sort by a column (e.g. final_top1_mean, params) or config key (e.g. optim.lr)."
    ),
    desc: bool = typer.Option(False, "--desc", help="Sort in descending order."),
    filter: list[str] | None = typer.Option(
        None,
        "--filter",
        help="KEY=VALUE[,VALUE...] on a column or config key (also !=, <, <=, >, >=); repeatable.",
    ),
    ignore: list[str] | None = typer.Option(
        None, "--ignore", help="A config key (or subtree) that does not define the recipe; repeatable."
    ),
    masked_ratio: float = typer.Option(
        0.3, "--masked-ratio", help="Channel ratio of the err@ columns from analysis/analysis.json."
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing --output file or plot PNGs."),
) -> None:
    """Compare runs: mean ± std over seeds, difference to the `none` baseline with Welch's t-test."""
    run_compare(
        paths,
        format=format,
        output=output,
        plot=plot,
        sort=sort,
        desc=desc,
        filters=filter or (),
        ignore=ignore or (),
        masked_ratio=masked_ratio,
        force=force,
    )


def write_sweep_table(sweep_dir: Path) -> str:
    """Compare every run below `sweep_dir`, write comparison.md and comparison.csv there, return the text table.

    Rewrites both files (they belong to the sweep). Raises UserError when no run record is found.
    """
    sweep_dir = Path(sweep_dir)
    runs, warnings = load_runs([sweep_dir])
    comp = build(runs, warnings=warnings)
    write_text_atomic(sweep_dir / "comparison.md", render_markdown(comp))
    write_text_atomic(sweep_dir / "comparison.csv", render_csv(comp))
    text = terminal_text(comp, width=TEXT_WIDTH)
    if comp.warnings:
        text += "".join(f"warning: {line}\n" for line in comp.warnings)
    return text
