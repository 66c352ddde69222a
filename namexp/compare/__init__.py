"""`namexp compare`: read run folders, group runs by recipe, aggregate over seeds, render and plot.

- `collect`: find and load `record.json` files (`load_runs`).
- `stats`: grouping, mean/std, the `none` baseline and Welch's t-test (`build` -> `Comparison`).
- `render`: terminal (rich), Markdown, CSV, LaTeX and JSON.
- `plots`: PNG plots (matplotlib, Agg).
- `command`: the Typer command `compare`, `run_compare` and `write_sweep_table`.
"""

from __future__ import annotations

from namexp.compare.collect import Run, find_records, load_runs
from namexp.compare.stats import IGNORED_KEYS, Comparison, Group, build

__all__ = [
    "IGNORED_KEYS",
    "Comparison",
    "Group",
    "Run",
    "build",
    "compare",
    "find_records",
    "load_runs",
    "run_compare",
    "write_sweep_table",
]


def __getattr__(name: str):
    # The command pulls in typer and rich: imported only when asked for.
    if name in ("compare", "run_compare", "write_sweep_table"):
        from namexp.compare import command

        return getattr(command, name)
    raise AttributeError(f"module 'namexp.compare' has no attribute {name!r}")
