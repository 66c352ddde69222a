"""What `namexp explain` is pointed at: run folders, or sweep folders standing for their comparison's groups."""

from __future__ import annotations

from pathlib import Path

from namexp.errors import UserError
from namexp.run.layout import RunFolder


def is_run_folder(path: Path) -> bool:
    folder = RunFolder(path.expanduser())
    return folder.record.is_file() and folder.checkpoints.is_dir()


def parse_indices(text: str) -> list[int] | None:
    """--indices "3,17,42" -> [3, 17, 42]; empty -> None (the balanced selection)."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    try:
        return [int(p) for p in parts] or None
    except ValueError:
        raise UserError(f"--indices {text} is not valid: give image indices as a comma list, e.g. 0,5,9") from None


def sweep_runs(folder: Path, seed: int | None) -> list[Path]:
    """One run per group of the sweep's comparison (as `namexp compare` groups them): its first seed, or `seed`."""
    from namexp.compare.collect import load_runs
    from namexp.compare.stats import build

    runs, warnings = load_runs([folder])
    chosen = []
    for group in build(runs, warnings=warnings).groups:
        seeds = sorted(group.runs, key=lambda r: (r.seed is None, r.seed if r.seed is not None else 0))
        picked = seeds if seed is None else [r for r in seeds if r.seed == seed]
        if not picked:
            have = ", ".join(str(r.seed) for r in seeds)
            raise UserError(f"{folder}: {group.label} has no run with seed {seed} (seeds: {have}): choose --seed")
        if not is_run_folder(picked[0].folder):
            raise UserError(f"{picked[0].folder} has no checkpoints/: train it again or leave it out")
        chosen.append(picked[0].folder)
    if not chosen:
        raise UserError(f"{folder} holds no completed run: explain a run folder, or finish the sweep first")
    return chosen


def expand_runs(paths: list[Path], seed: int | None) -> list[Path]:
    """Run folders as given; each sweep folder replaced by one run per group of its comparison."""
    runs: list[Path] = []
    for path in paths:
        if is_run_folder(path):
            runs.append(path)
        elif path.expanduser().is_dir() and any(path.expanduser().rglob("record.json")):
            runs += sweep_runs(path.expanduser(), seed)
        else:
            raise UserError(
                f"{path} is not a run folder (no record.json and checkpoints/) or a sweep folder: give a run's or "
                "a sweep's folder"
            )
    return runs
