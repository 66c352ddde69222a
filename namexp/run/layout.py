"""Where everything lives in a run folder and a sweep folder (docs/run-folder.md): names only, no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

RECORD_FILE = "record.json"
METRICS_FILE = "metrics.csv"
CLAIM_FILE = ".namexp-run"  # created exclusively by the run that owns the folder
LEASE_FILE = ".namexp-lease"  # held while a process trains the folder (namexp/run/lease.py)
HYDRA_DIR = ".hydra"
CHECKPOINTS_DIR = "checkpoints"
TENSORBOARD_DIR = "tb"
EVALS_DIR = "evals"
ANALYSIS_DIR = "analysis"
EXPORTS_DIR = "exports"
EXPLAIN_DIR = "explain"
ANALYSIS_RECORD_FILE = "analysis.json"  # inside ANALYSIS_DIR
NAM_WEIGHTS_FILE = "nam_weights.json"  # in the run folder (train) and in ANALYSIS_DIR (analyze)
LOG_FILE = "train.log"
SWEEP_FILE = "multirun.yaml"  # Hydra's record of a sweep, in the sweep folder
# Folders inside a run that never hold another run (compare does not search them).
RUN_SUBDIRS = frozenset(
    {CHECKPOINTS_DIR, TENSORBOARD_DIR, EVALS_DIR, ANALYSIS_DIR, EXPORTS_DIR, EXPLAIN_DIR, "__pycache__"}
)


@dataclass(frozen=True)
class RunFolder:
    """The paths of one run folder."""

    path: Path

    @property
    def record(self) -> Path:
        return self.path / RECORD_FILE

    @property
    def metrics(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def claim(self) -> Path:
        return self.path / CLAIM_FILE

    @property
    def lease(self) -> Path:
        return self.path / LEASE_FILE

    @property
    def hydra(self) -> Path:
        return self.path / HYDRA_DIR

    @property
    def saved_overrides(self) -> Path:
        return self.hydra / "overrides.yaml"

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS_DIR

    def checkpoint(self, which: str) -> Path:
        """`last` (newest), `previous` (the one before it: rotation keeps it) or `best`."""
        return self.checkpoints / f"{which}.pt"

    @property
    def tensorboard(self) -> Path:
        return self.path / TENSORBOARD_DIR

    @property
    def evals(self) -> Path:
        return self.path / EVALS_DIR

    @property
    def analysis(self) -> Path:
        return self.path / ANALYSIS_DIR

    @property
    def exports(self) -> Path:
        return self.path / EXPORTS_DIR

    @property
    def explain(self) -> Path:
        return self.path / EXPLAIN_DIR

    @property
    def analysis_record(self) -> Path:
        return self.analysis / ANALYSIS_RECORD_FILE

    @property
    def nam_weights(self) -> Path:
        return self.path / NAM_WEIGHTS_FILE

    @property
    def log(self) -> Path:
        return self.path / LOG_FILE
