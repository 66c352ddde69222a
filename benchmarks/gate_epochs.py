"""Per-epoch attention gate diagnostics of training runs (``trainer.log_gates``) as a markdown table.

    python benchmarks/gate_epochs.py runs/long-nam runs/long-half

One row per run and epoch, from each run's record.json: test top-1 error, how many sites' gates have a 5-95 %
range of at least ``CONSTANT_RANGE`` and (where recorded) how many have a channel whose own gate varies with the
input, and per stage (the sites' first name part) the range of the sites' gate means, the widest 5-95 % range,
the largest std over positions and the largest NAM |a|·std(x) (its median over features, and its largest
feature's where recorded).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from namexp.explain.gates import CONSTANT_RANGE
from namexp.tables import markdown_table


def largest(sites: list[dict], key: str) -> float | None:
    values = [s[key] for s in sites if s.get(key) is not None]
    return max(values) if values else None


def stage_cell(sites: list[dict]) -> str:
    means = [s["mean"] for s in sites]
    cell = f"{min(means):.3f}–{max(means):.3f} · {largest(sites, 'range_5_95'):.3f}"
    cell += f" · {largest(sites, 'std_positions'):.4f}"
    median, top = largest(sites, "slope_x_std"), largest(sites, "slope_x_std_max")
    if median is not None:
        cell += f" · {median:.3f}" + (f" ({top:.3f})" if top is not None else "")
    return cell


def epoch_rows(run: Path) -> tuple[list[str], list[list[str]]]:
    """The stage names and one row per logged epoch of `run`."""
    record = json.loads((run / "record.json").read_text())
    stages: list[str] = []
    rows = []
    for entry in record["epochs"]:
        gates = entry.get("gates") or {}
        by_stage: dict[str, list[dict]] = {}
        for site, figures in gates.items():
            by_stage.setdefault(site.split(".")[0], []).append(figures)
        stages = stages or sorted(by_stage)
        wide = sum(f["range_5_95"] >= CONSTANT_RANGE for f in gates.values())
        varying = [f["varying_channels"] > 0 for f in gates.values() if f.get("varying_channels") is not None]
        count = f"{wide} / {sum(varying)}" if varying else f"{wide} / –"
        cells = [run.name, str(entry["epoch"]), f"{entry['test_top1_err']:.2f}", f"{count} of {len(gates)}"]
        rows.append(cells + [stage_cell(by_stage[s]) if s in by_stage else "–" for s in stages])
    return stages, rows


def table(paths: list[str]) -> list[str]:
    stages: list[str] = []
    rows: list[list[str]] = []
    for path in paths:
        run_stages, run_rows = epoch_rows(Path(path))
        stages = stages if len(stages) >= len(run_stages) else run_stages
        rows += run_rows
    headers = ["run", "epoch", "test top-1 err %", "sites: wide range / varying channel", *stages]
    return markdown_table(headers, [row + ["–"] * (len(headers) - len(row)) for row in rows])


def main(paths: list[str]) -> None:
    print(
        "Per stage: gate means (min–max over its sites) · widest 5–95 % range · largest std over positions"
        " · largest NAM |a|·std x, median over features (largest feature). Wide range: at least"
        f" {CONSTANT_RANGE}; varying channel: one whose own range over images and positions is (– : not logged).\n"
    )
    print("\n".join(table(paths)))


if __name__ == "__main__":
    main(sys.argv[1:])
