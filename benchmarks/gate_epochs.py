"""Per-epoch attention gate diagnostics of training runs (``trainer.log_gates``) as a markdown table.

    python benchmarks/gate_epochs.py runs/long-nam runs/long-half

One row per run and epoch: test top-1 error, and per stage (the sites' first name part) the widest 5-95 %
range of the gate, its mean and the largest NAM |a|·std(x), from each run's record.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def stage_rows(run: Path) -> list[list[str]]:
    record = json.loads((run / "record.json").read_text())
    rows = []
    for entry in record["epochs"]:
        cells = [run.name, str(entry["epoch"]), f"{entry['test_top1_err']:.2f}"]
        stages: dict[str, list[dict]] = {}
        for site, figures in (entry.get("gates") or {}).items():
            stages.setdefault(site.split(".")[0], []).append(figures)
        for stage, sites in sorted(stages.items()):
            widest = max(s["range_5_95"] for s in sites)
            means = [s["mean"] for s in sites]
            slopes = [s["slope_x_std"] for s in sites if s["slope_x_std"] is not None]
            slope = f", \\|a\\|·std x ≤ {max(slopes):.3f}" if slopes else ""
            cells.append(f"{stage}: mean {min(means):.3f}–{max(means):.3f}, range ≤ {widest:.3f}{slope}")
        rows.append(cells)
    return rows


def main(paths: list[str]) -> None:
    rows = [row for path in paths for row in stage_rows(Path(path))]
    print("| run | epoch | test top-1 err % | gates per stage |")
    print("| --- | --- | --- | --- |")
    for row in rows:
        print(f"| {' | '.join(row[:3])} | {'; '.join(row[3:])} |")


if __name__ == "__main__":
    main(sys.argv[1:])
