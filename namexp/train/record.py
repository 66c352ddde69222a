"""`record.json` and `metrics.csv`: what a run leaves for people and for `namexp compare`.

Both files are rewritten whole (temporary file + rename) after every epoch from the epoch list that
the checkpoint also carries, so after a kill and a resume they hold each epoch exactly once.
The layout is documented in docs/run-folder.md.
"""

import csv
import io
import json
import math
from datetime import datetime, timezone
from pathlib import Path
from statistics import median
from typing import Any, Dict, List, Optional

from namexp.files import write_text_atomic

RECORD_FORMAT = 1
EPOCH_FIELDS = (
    "epoch", "train_loss", "train_top1_err", "test_loss", "test_top1_err", "test_top5_err",
    "val_loss", "val_top1_err", "val_top5_err", "lr", "penalty", "nam_l1", "seconds", "img_s",
)


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _finite(value: Any) -> Any:
    """JSON has no NaN/inf: a diverged loss is recorded as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class RunRecord:
    def __init__(self, run_dir: Path, fields: Dict[str, Any]):
        self.run_dir = run_dir
        self.data: Dict[str, Any] = {
            "format": RECORD_FORMAT,
            "status": "running",
            "error": None,
            "run_dir": str(run_dir),
            "created": now_iso(),
            "updated": now_iso(),
            **fields,
            "epochs": [],
            "best": None,
            "final": None,
        }

    @property
    def path(self) -> Path:
        return self.run_dir / "record.json"

    @property
    def epochs(self) -> List[Dict[str, Any]]:
        return self.data["epochs"]

    def restore(self, epochs: List[Dict[str, Any]], created: Optional[str]) -> None:
        """Continue a resumed run: its epochs are the checkpoint's, nothing after them."""
        self.data["epochs"] = [dict(e) for e in epochs]
        if created:
            self.data["created"] = created
        self._update_best()

    def add_epoch(self, entry: Dict[str, Any]) -> None:
        self.epochs.append({k: _finite(entry.get(k)) for k in EPOCH_FIELDS})
        self._update_best()

    def _update_best(self) -> None:
        key = f"{self.data['selection_split']}_top1_err"
        scored = [e for e in self.epochs if e.get(key) is not None]
        self.data["best"] = dict(min(scored, key=lambda e: e[key])) if scored else None
        timed = [e["img_s"] for e in self.epochs[1:] if e.get("img_s")] or [e["img_s"] for e in self.epochs if e.get("img_s")]
        self.data["throughput_img_s"] = median(timed) if timed else None

    def finish(self, status: str, error: Optional[str] = None) -> None:
        self.data["status"] = status
        self.data["error"] = error
        if status == "completed" and self.epochs:
            self.data["final"] = dict(self.epochs[-1])
        self.write()

    def write(self) -> None:
        self.data["updated"] = now_iso()
        write_text_atomic(self.path, json.dumps(self.data, indent=1, default=str) + "\n")
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=EPOCH_FIELDS)
        writer.writeheader()
        writer.writerows(self.epochs)
        write_text_atomic(self.run_dir / "metrics.csv", buffer.getvalue())


def read_record(run_dir: Path) -> Optional[Dict[str, Any]]:
    path = run_dir / "record.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
