"""The diagnostics written and shown: diagnostics.json, diagnostics.md, a rich table, TensorBoard images."""

from __future__ import annotations

import json
from pathlib import Path

from namexp.explain.gates import CONSTANT_RANGE, SiteGate
from namexp.files import write_text_atomic
from namexp.tables import markdown_table

HEADERS = (
    "run",
    "site",
    "attention",
    "mean",
    "std ch",
    "std pos",
    "std img",
    "5-95 %",
    "±0.01",
    "varying ch",
    "|a|·std x median / max",
    "verdict",
)


def _row(run: str, s: SiteGate) -> list[str]:
    slope = "" if s.slope_x_std is None else f"{s.slope_x_std:.3g} / {s.slope_x_std_max:.3g}"
    return [
        run,
        s.site,
        s.module,
        f"{s.mean:.3f}",
        f"{s.std_channels:.2g}",
        f"{s.std_positions:.2g}",
        f"{s.std_images:.2g}",
        f"{s.p05:.3f}-{s.p95:.3f}",
        f"{100 * s.near_mean:.0f} %",
        f"{100 * s.varying_channels:.0f} %",
        slope,
        s.verdict,
    ]


def rows(diagnostics: dict[str, list[SiteGate]]) -> list[list[str]]:
    return [_row(run, s) for run, sites in diagnostics.items() for s in sites]


def write_diagnostics(output: Path, diagnostics: dict[str, list[SiteGate]], meta: dict) -> None:
    record = {**meta, "constant_range": CONSTANT_RANGE, "runs": {}}
    for run, sites in diagnostics.items():
        record["runs"][run] = [s.to_record() for s in sites]
    write_text_atomic(output / "diagnostics.json", json.dumps(record, indent=2) + "\n")
    lines = [
        "# Attention diagnostics",
        "",
        f"Gate = output / input of each attention module on {meta['images']} {meta['split']} images. "
        f'"constant scale": the gate\'s 5-95 % range is below {CONSTANT_RANGE} and no channel varies; '
        f'"fixed per-channel scale": channels differ but none varies with the input; "selects": the share of '
        f"channels whose own 5-95 % range (over images and positions) is at least {CONSTANT_RANGE} is above 0 "
        "(\"varying ch\"). |a|·std x: NAM's gate slope times its input's spread, median and largest over features.",
        "",
        *markdown_table(HEADERS, rows(diagnostics)),
        "",
        "Grad-CAM grids (one per backbone and dataset):",
        "",
        *(f"- `{name}`: {', '.join(runs)}" for name, runs in meta["grids"].items()),
    ]
    write_text_atomic(output / "diagnostics.md", "\n".join(lines) + "\n")


def print_diagnostics(diagnostics: dict[str, list[SiteGate]]) -> None:
    from rich.console import Console
    from rich.table import Table

    skip = 1 if len(diagnostics) == 1 else 0  # one run: no run column
    table = Table(title=f"Attention gates (constant scale: 5-95 % range < {CONSTANT_RANGE}, no channel varying)")
    for header in HEADERS[skip:]:
        table.add_column(header, no_wrap=header in ("site", "verdict"))
    for row in rows(diagnostics):
        table.add_row(*row[skip:])
    console = Console()
    if not console.is_terminal:
        console.width = max(console.width, 140)  # piped: a full-width table, not a truncated one
    console.print(table)


def log_images(tb_dir: Path, tag: str, image) -> None:
    """`image` (H, W, 3) uint8 into a new events file in the run's tb/ folder."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(tb_dir))
    try:
        writer.add_image(tag, image, 0, dataformats="HWC")
    finally:
        writer.close()
