"""Checkpoints that survive a kill and never run code when read.

Writing: to a temporary file in the same folder, flushed to disk, then renamed over the old file
(`os.replace` is atomic), so `last.pt` is always either the previous or the new complete checkpoint; the
one it replaces is kept as `previous.pt`, so a damaged `last.pt` is never the only copy.
Reading: `torch.load(weights_only=True)` (no pickle code execution), then a check that the file holds
what a namexp checkpoint must; a truncated or foreign file is refused with a one-line message.

Format 2 holds the model, the optimizer (and AMP scaler), the run state (`namexp.run.state`), the resolved
config and the config choices. Format 1 (namexp 0.1's) is read as well: its fields are turned into a state.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from namexp.errors import UserError
from namexp.files import write_atomic
from namexp.run.layout import RunFolder

FORMAT = 2
READABLE_FORMATS = (1, 2)
REQUIRED_KEYS = {1: ("format", "model", "config", "epoch"), 2: ("format", "model", "config", "state")}
BEST_KEYS = ("format", "model", "config", "choices", "state")  # best.pt: enough to evaluate, not to resume


def save_atomic(payload: dict[str, Any], path: Path) -> None:
    """torch.save to `path` atomically, synced to disk before the rename (a crash leaves the old file)."""
    write_atomic(path, lambda f: torch.save(payload, f), binary=True, sync=True)


def save_rotating(payload: dict[str, Any], folder: RunFolder, best: bool) -> None:
    """Save `last.pt` (the old one becomes `previous.pt`) and, for a new best epoch, `best.pt`."""
    last = folder.checkpoint("last")
    if last.exists():
        last.replace(folder.checkpoint("previous"))
    save_atomic(payload, last)
    if best:
        save_atomic({k: payload[k] for k in BEST_KEYS}, folder.checkpoint("best"))


def load_checkpoint(
    path: Path,
    map_location: Any = "cpu",
    remedy: str = "use another checkpoint (e.g. checkpoints/best.pt) or train the run again",
) -> dict[str, Any]:
    """A verified checkpoint (format 2 layout, `state` included); a missing, damaged or foreign file is a
    UserError ending with `remedy`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"checkpoint {path} does not exist: give a run folder holding checkpoints/last.pt or a .pt file"
        )
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # zip reader, unpickler and EOF errors all mean the same to a user
        reason = " ".join(str(exc).split())[:160]
        raise UserError(f"checkpoint {path} is truncated or corrupt ({reason}): {remedy}") from None
    version = payload.get("format") if isinstance(payload, dict) else None
    if version not in READABLE_FORMATS:
        if isinstance(payload, dict) and isinstance(version, int):
            raise UserError(f"{path} has checkpoint format {version}, this namexp reads formats 1 and 2")
        raise UserError(f"{path} is not a namexp checkpoint (no namexp format field)")
    missing = [k for k in REQUIRED_KEYS[version] if k not in payload]
    if missing:
        raise UserError(f"{path} is not a namexp checkpoint (missing {', '.join(missing)})")
    if version == 1:
        payload["state"] = _state_from_format_1(payload)
    return payload


def _state_from_format_1(payload: dict[str, Any]) -> dict[str, Any]:
    """Format 1 kept the position as `epoch`/`step`/`partial` and the record's epochs; the best epoch is
    the one with the lowest error on the selection split (val when held out, else test), as it was chosen."""
    val_split = (payload.get("config") or {}).get("data", {}).get("val_split")
    key = "val_top1_err" if val_split else "test_top1_err"
    scored = [e for e in payload.get("epochs", []) if e.get(key) is not None]
    best = min(scored, key=lambda e: e[key]) if scored else None
    return {
        "epochs_done": payload["epoch"],
        "step": payload.get("step", 0),
        "best_epoch": best["epoch"] if best else None,
        "best_score": best[key] if best else None,
        "sums": payload.get("partial"),
        "rng": payload.get("rng"),
    }


def resume_checkpoint(folder: RunFolder) -> dict[str, Any] | None:
    """The checkpoint a run continues from: `last.pt`, else `previous.pt` (a kill between the two renames
    of a save), else None (killed before its first checkpoint: it starts again in the same folder)."""
    last, previous = folder.checkpoint("last"), folder.checkpoint("previous")
    if last.exists():
        remedy = (
            f"the previous checkpoint {previous.name} is intact: move last.pt aside "
            f"(mv {last} {last}.bad) and resume again to continue from it"
            if previous.exists()
            else "no earlier checkpoint is left: train the run again"
        )
        return load_checkpoint(last, remedy=remedy)
    if previous.exists():
        return load_checkpoint(previous)
    return None


def load_model_state(model: torch.nn.Module, state_dict: dict[str, torch.Tensor], source: Path, arch: str) -> None:
    """Load weights strictly; a mismatch means the checkpoint was built for another architecture."""
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        missing = sum(1 for k in model.state_dict() if k not in state_dict)
        unexpected = sum(1 for k in state_dict if k not in model.state_dict())
        raise UserError(
            f"checkpoint {source} does not fit {arch} ({missing} missing, {unexpected} unexpected or mis-shaped "
            f"tensors; {first[:80]}): it was built for another architecture -- evaluate it with its own config"
        ) from None
