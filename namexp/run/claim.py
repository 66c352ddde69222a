"""Whether a folder holds a run (and trained epochs), and claiming a fresh one: the one place that decides."""

from __future__ import annotations

import os
from pathlib import Path

from namexp.errors import UserError
from namexp.run.layout import CHECKPOINTS_DIR, CLAIM_FILE, HYDRA_DIR, RECORD_FILE, SWEEP_FILE, RunFolder
from namexp.run.record import read_record


def holds_run(folder: Path) -> bool:
    """A run was started in `folder` (claimed, configured by Hydra, recorded or checkpointed)."""
    return any((folder / name).exists() for name in (CLAIM_FILE, RECORD_FILE, HYDRA_DIR, CHECKPOINTS_DIR))


def holds_progress(folder: Path) -> bool:
    """Something was trained in `folder`: a checkpoint, or a record with epochs. Such a folder is never removed
    when a run fails, and the way on is `namexp train --resume` (not training again)."""
    run = RunFolder(folder)
    return any(run.checkpoints.glob("*.pt")) or bool((read_record(folder) or {}).get("epochs"))


def holds_sweep(folder: Path) -> bool:
    return (folder / SWEEP_FILE).exists()


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
                raise UserError(
                    f"{candidate} already holds a run: continue it with --resume {candidate}, "
                    "or choose another folder (hydra.run.dir=...)"
                )
            n += 1
            candidate = run_dir.with_name(f"{run_dir.name}-{n}")
            continue
        try:
            candidate.mkdir(parents=True, exist_ok=True)
            try:  # os.open's default mode is 0o777: a claim is an ordinary file
                os.close(os.open(candidate / CLAIM_FILE, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            except FileExistsError:
                continue  # another run claimed it between our check and our claim: look again
            return candidate
        except OSError as exc:
            raise UserError(
                f"cannot write to {candidate} ({exc.strerror}): choose a writable folder with "
                "hydra.run.dir=... or the NAMEXP_RUNS environment variable"
            ) from None
