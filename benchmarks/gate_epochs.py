"""Per-epoch attention gate diagnostics of training runs (``trainer.log_gates``) as a markdown table.

    python benchmarks/gate_epochs.py runs/long-nam runs/long-half

One row per run and epoch, from each run's record.json: test top-1 error, how many sites' gates select (5-95 %
range at least ``CONSTANT_RANGE``, as `namexp explain` says it), and per stage (the sites' first name part) the
range of the sites' gate means, the widest 5-95 % range and the largest NAM |a|·std(x).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from namexp.explain.gates import CONSTANT_RANGE


def stage_cell(sites: list[dict]) -> str:
    means = [s["mean"] for s in sites]
    slopes = [s["slope_x_std"] for s in sites if s.get("slope_x_std") is not None]
    cell = f"{min(means):.3f}–{max(means):.3f} · {max(s['range_5_95'] for s in sites):.3f}"
    return cell + (f" · {max(slopes):.3f}" if slopes else "")


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
        selecting = sum(f["range_5_95"] >= CONSTANT_RANGE for f in gates.values())
        cells = [run.name, str(entry["epoch"]), f"{entry['test_top1_err']:.2f}", f"{selecting} of {len(gates)}"]
        rows.append(cells + [stage_cell(by_stage[s]) if s in by_stage else "–" for s in stages])
    return stages, rows


def table(paths: list[str]) -> list[str]:
    stages: list[str] = []
    rows: list[list[str]] = []
    for path in paths:
        run_stages, run_rows = epoch_rows(Path(path))
        stages = stages if len(stages) >= len(run_stages) else run_stages
        rows += run_rows
    headers = ["run", "epoch", "test top-1 err %", "sites selecting", *stages]
    lines = ["| " + " | ".join(headers) + " |", "|" + " --- |" * len(headers)]
    lines += ["| " + " | ".join(row + ["–"] * (len(headers) - len(row))) + " |" for row in rows]
    return lines


def main(paths: list[str]) -> None:
    print("Per stage: gate means (min–max over its sites) · widest 5–95 % range · largest NAM |a|·std x;")
    print(f"a site selects when its range is at least {CONSTANT_RANGE}.\n")
    print("\n".join(table(paths)))


if __name__ == "__main__":
    main(sys.argv[1:])
