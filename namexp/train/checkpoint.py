"""Checkpoints that survive a kill and never run code when read.

Writing: to a temporary file in the same folder, flushed to disk, then renamed over the old file
(`os.replace` is atomic), so `last.pt` is always either the previous or the new complete checkpoint.
Reading: `torch.load(weights_only=True)` (no pickle code execution), then a check that the file holds
what a namexp checkpoint must; a truncated or foreign file is refused with a one-line message.
"""

from pathlib import Path
from typing import Any, Dict, Iterable

import torch

from namexp.errors import UserError
from namexp.files import write_atomic

FORMAT = 1
REQUIRED_KEYS = ("format", "model", "config", "epoch")


def save_atomic(state: Dict[str, Any], path: Path) -> None:
    """torch.save to `path` atomically, synced to disk before the rename (a crash leaves the old file)."""
    write_atomic(path, lambda f: torch.save(state, f), binary=True, sync=True)


def load_checkpoint(path: Path, map_location: Any = "cpu", required: Iterable[str] = REQUIRED_KEYS,
                    remedy: str = "use another checkpoint (e.g. checkpoints/best.pt) or train the run again") -> Dict[str, Any]:
    """A verified checkpoint; a missing, damaged or foreign file is a UserError ending with `remedy`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist: give a run folder holding checkpoints/last.pt or a .pt file")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # zip reader, unpickler and EOF errors all mean the same to a user
        reason = " ".join(str(exc).split())[:160]
        raise UserError(f"checkpoint {path} is truncated or corrupt ({reason}): {remedy}") from None
    if not isinstance(state, dict) or any(k not in state for k in required):
        raise UserError(f"{path} is not a namexp checkpoint (missing {', '.join(k for k in required if k not in (state or {}))})")
    if state["format"] != FORMAT:
        raise UserError(f"{path} has checkpoint format {state['format']}, this namexp reads format {FORMAT}")
    return state


def load_model_state(model: torch.nn.Module, state_dict: Dict[str, torch.Tensor], source: Path, arch: str) -> None:
    """Load weights strictly; a mismatch means the checkpoint was built for another architecture."""
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        missing = sum(1 for k in model.state_dict() if k not in state_dict)
        unexpected = sum(1 for k in state_dict if k not in model.state_dict())
        raise UserError(
            f"checkpoint {source} does not fit {arch} ({missing} missing, {unexpected} unexpected or mis-shaped tensors; {first[:80]}): "
            "it was built for another architecture -- evaluate it with its own config"
        ) from None
