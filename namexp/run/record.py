"""`record.json` and `metrics.csv`: what a run leaves for people and for `namexp compare`.

Both files are rewritten whole (temporary file + rename) after every epoch, before the checkpoint: the record
may be ahead of the checkpoint after a kill, never behind, and a resumed run cuts it back to the epochs its
run state has done, so each epoch is recorded exactly once. The layout is documented in docs/run-folder.md.
"""

from __future__ import annotations

import csv
import io
import json
import math
from datetime import datetime, timezone
from pathlib import Path
from statistics import median
from typing import Any

from namexp.files import write_text_atomic
from namexp.run.layout import RECORD_FILE, RunFolder

RECORD_FORMAT = 1
EPOCH_FIELDS = (
    "epoch", "train_loss", "train_top1_err", "test_loss", "test_top1_err", "test_top5_err",
    "val_loss", "val_top1_err", "val_top5_err", "lr", "penalty", "nam_l1", "seconds", "img_s",
)  # fmt: skip


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _finite(value: Any) -> Any:
    """JSON has no NaN/inf: a diverged loss is recorded as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class RunRecord:
    """The record of one run, written from its epochs and its run state."""

    def __init__(self, folder: RunFolder, fields: dict[str, Any]):
        self.folder = folder
        self.data: dict[str, Any] = {
            "format": RECORD_FORMAT,
            "status": "running",
            "error": None,
            "run_dir": str(folder.path),
            "created": now_iso(),
            "updated": now_iso(),
            **fields,
            "epochs": [],
            "best": None,
            "final": None,
        }

    @classmethod
    def continued(cls, folder: RunFolder, fields: dict[str, Any], epochs_done: int) -> RunRecord:
        """The record of a resumed run: its creation time and its first `epochs_done` epochs (what the
        checkpoint holds); an epoch recorded after the checkpoint was taken is trained again."""
        record = cls(folder, fields)
        earlier = read_record(folder.path) or {}
        record.data["created"] = earlier.get("created") or record.data["created"]
        record.data["epochs"] = [dict(e) for e in earlier.get("epochs", [])[:epochs_done]]
        return record

    @property
    def epochs(self) -> list[dict[str, Any]]:
        return self.data["epochs"]

    def add_epoch(self, entry: dict[str, Any]) -> None:
        kept = {k: _finite(entry.get(k)) for k in EPOCH_FIELDS}
        if entry.get("gates"):  # per-site gate diagnostics (trainer.log_gates): record.json only
            kept["gates"] = entry["gates"]
        self.epochs.append(kept)

    def set_state(self, state: Any) -> None:
        """Where the run stands (`RunState`): epochs done, position, and the best epoch's entry."""
        self.data["state"] = state.for_record()
        best = state.best_epoch
        self.data["best"] = dict(self.epochs[best - 1]) if best and best <= len(self.epochs) else None
        timed = [e["img_s"] for e in self.epochs[1:] if e.get("img_s")] or [
            e["img_s"] for e in self.epochs if e.get("img_s")
        ]  # the first epoch holds warm-up: left out when there are others
        self.data["throughput_img_s"] = median(timed) if timed else None

    def finish(self, status: str, error: str | None = None) -> None:
        self.data["status"] = status
        self.data["error"] = error
        if status == "completed" and self.epochs:
            self.data["final"] = dict(self.epochs[-1])
        self.write()

    def write(self) -> None:
        self.data["updated"] = now_iso()
        write_text_atomic(self.folder.record, json.dumps(self.data, indent=1, default=str) + "\n")
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=EPOCH_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(self.epochs)
        write_text_atomic(self.folder.metrics, buffer.getvalue())


def read_record(run_dir: Path) -> dict[str, Any] | None:
    path = Path(run_dir) / RECORD_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
