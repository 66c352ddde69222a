"""Checkpoints that survive a kill and a full disk, carry a hash of their contents, and never run code when read.

Format 3 (one file, still a `torch.save` file): ``{"format": 3, "sha256": <hex>, "payload": <uint8 tensor>}``,
where the payload is the bytes of `torch.save(<the format-2 dict>)` and `sha256` their hash. Reading checks the
hash before the payload is unpickled (`torch.load(weights_only=True)`, which runs no code either), so a changed
byte anywhere in the payload is found; a damaged file is refused in one line that names the run's intact
checkpoint (previous.pt, else best.pt) and the command that uses it.

Writing: to a temporary file in the same folder, synced to disk; only then the rotation (`last.pt` becomes
`previous.pt`, the new file becomes `last.pt`), so a write that fails (disk full, I/O error) leaves `last.pt`
and `previous.pt` as they were, and a kill leaves at least one complete checkpoint.

The format-2 dict holds the model, the optimizer (and AMP scaler), the run state (`namexp.run.state`), the
resolved config and the config choices. Formats 2 and 1 (namexp 0.1's; its fields are turned into a state)
are still read as plain `torch.save` files, without a hash to check.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

from namexp.errors import UserError
from namexp.files import write_atomic
from namexp.run.layout import CHECKPOINTS_DIR, RunFolder

FILE_FORMAT = 3  # the hashed file
PAYLOAD_FORMAT = 2  # the dict inside it
READABLE_FORMATS = (1, 2, 3)
REQUIRED_KEYS = {1: ("format", "model", "config", "epoch"), 2: ("format", "model", "config", "state")}
BEST_KEYS = ("format", "model", "config", "choices", "state")  # best.pt: enough to evaluate, not to resume
# Where to turn when a run's checkpoint is damaged, in order of preference.
_ALTERNATIVES = {"last": ("previous", "best"), "previous": ("last", "best"), "best": ("last", "previous")}
_DESCRIBED = {"last": "latest", "previous": "previous", "best": "best"}


class _Damaged(Exception):
    """The file is not what was written: cut short, or bytes changed (the reason is the message)."""


def checkpoint_bytes(payload: dict[str, Any]) -> bytes:
    """The bytes of a format-3 file holding `payload` (a format-2 dict)."""
    inner = io.BytesIO()
    torch.save(payload, inner)
    data = inner.getbuffer()
    wrapper = {
        "format": FILE_FORMAT,
        "sha256": hashlib.sha256(data).hexdigest(),
        "payload": torch.frombuffer(data, dtype=torch.uint8),
    }
    outer = io.BytesIO()
    torch.save(wrapper, outer)
    return outer.getvalue()


def save_atomic(payload: dict[str, Any], path: Path, install: Callable[[Path], None] | None = None) -> None:
    """Write `payload` to `path` as a format-3 file, synced to disk before it is renamed into place.

    The bytes are made in memory first, so a failing disk fails the write itself (an OSError, which
    `write_atomic` turns into a one-line WriteFailed), never torch's serializer half-way."""
    data = checkpoint_bytes(payload)

    def write(f: IO) -> None:
        f.write(data)

    write_atomic(path, write, binary=True, sync=True, install=install)


def save_rotating(payload: dict[str, Any], folder: RunFolder, best: bool) -> None:
    """Save `last.pt` (the old one becomes `previous.pt`) and, for a new best epoch, `best.pt`.

    The new file is complete and on disk before anything is renamed: a failed write changes neither file; a
    kill between the two renames leaves `previous.pt` alone, which `resume_checkpoint` continues from."""
    last, previous = folder.checkpoint("last"), folder.checkpoint("previous")

    def rotate(complete: Path) -> None:
        if last.exists():
            os.replace(last, previous)
        os.replace(complete, last)

    save_atomic(payload, last, install=rotate)
    if best:
        save_atomic({k: payload[k] for k in BEST_KEYS}, folder.checkpoint("best"))


def load_checkpoint(path: Path, map_location: Any = "cpu") -> dict[str, Any]:
    """A verified checkpoint (format 2 layout, `state` included); a missing, damaged or foreign file is a
    UserError; a damaged one in a run folder names the run's intact checkpoint and the command to use it."""
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"checkpoint {path} does not exist: give a run folder holding checkpoints/last.pt or a .pt file"
        )
    try:
        return _read(path, map_location)
    except _Damaged as exc:
        raise UserError(f"checkpoint {path} is {exc}: {intact_alternative(path)}") from None


def _read(path: Path, map_location: Any) -> dict[str, Any]:
    payload = _torch_load(path, map_location)
    if isinstance(payload, dict) and payload.get("format") == FILE_FORMAT:
        payload = _unwrap(payload, path, map_location)
    version = payload.get("format") if isinstance(payload, dict) else None
    if version not in REQUIRED_KEYS:
        if isinstance(payload, dict) and isinstance(version, int):
            raise UserError(f"{path} has checkpoint format {version}, this namexp reads formats 1, 2 and 3")
        raise UserError(f"{path} is not a namexp checkpoint (no namexp format field)")
    missing = [k for k in REQUIRED_KEYS[version] if k not in payload]
    if missing:
        raise UserError(f"{path} is not a namexp checkpoint (missing {', '.join(missing)})")
    if version == 1:
        payload["state"] = _state_from_format_1(payload)
    return payload


def _unwrap(wrapper: dict[str, Any], path: Path, map_location: Any) -> Any:
    """The payload of a format-3 file, once its bytes match the hash written with them."""
    data, digest = wrapper.get("payload"), wrapper.get("sha256")
    if not isinstance(data, torch.Tensor) or data.dtype != torch.uint8 or not isinstance(digest, str):
        raise UserError(f"{path} is not a namexp checkpoint (format 3 without its payload bytes and sha256)")
    data = data.cpu().contiguous().numpy()
    if hashlib.sha256(data).hexdigest() != digest:
        raise _Damaged("corrupt (sha256 mismatch)")
    return _torch_load(io.BytesIO(data.tobytes()), map_location)


def _torch_load(source: Path | IO, map_location: Any) -> Any:
    try:
        return torch.load(source, map_location=map_location, weights_only=True)
    except Exception as exc:  # zip reader, unpickler and EOF errors all mean the same to a user
        raise _Damaged(f"truncated or corrupt ({' '.join(str(exc).split())[:160]})") from None


def verifies(path: Path) -> bool:
    """`path` is a complete checkpoint whose hash (format 3) matches."""
    try:
        _read(Path(path), "cpu")
    except (_Damaged, UserError):
        return False
    return True


def intact_alternative(damaged: Path) -> str:
    """What to use instead of a damaged checkpoint: the first of the run's other checkpoints that verifies,
    with the command that uses it."""
    which = damaged.stem
    if damaged.parent.name != CHECKPOINTS_DIR or which not in _ALTERNATIVES or damaged.suffix != ".pt":
        return "use another checkpoint (e.g. checkpoints/best.pt) or train the run again"
    folder = RunFolder(damaged.parent.parent)
    for other in _ALTERNATIVES[which]:
        path = folder.checkpoint(other)
        if path.is_file() and verifies(path):
            return f"its {_DESCRIBED[other]} checkpoint {path.name} is intact -- {_how_to_use(folder, other, which)}"
    return f"no intact checkpoint is left in {folder.checkpoints}: train the run again"


def _how_to_use(folder: RunFolder, intact: str, damaged: str) -> str:
    if intact == "best":
        return (
            f"evaluate it with: namexp eval {folder.path} --checkpoint best "
            "(it holds no optimizer state: the run cannot resume from it)"
        )
    if damaged == "best":  # evaluating was the point
        return f"evaluate it with: namexp eval {folder.checkpoint(intact)}"
    target = folder.path if intact == "last" else folder.checkpoint(intact)
    return f"resume with: namexp train --resume {target}"


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


def resume_checkpoint(folder: RunFolder, which: str = "last") -> dict[str, Any] | None:
    """The checkpoint a run continues from. `which="previous"` (--resume RUN/checkpoints/previous.pt): that
    file. Else `last.pt`, else `previous.pt` (a kill between the two renames of a save), else None (killed
    before its first checkpoint: it starts again in the same folder)."""
    if which != "last":
        return load_checkpoint(folder.checkpoint(which))
    for path in (folder.checkpoint("last"), folder.checkpoint("previous")):
        if path.exists():
            return load_checkpoint(path)
    return None


def set_aside(path: Path) -> Path | None:
    """Move `path` to `<name>.set-aside-<n>.pt` beside it (never over another file, never deleted);
    None when there is no such file."""
    if not path.exists():
        return None
    n = 1
    while (target := path.with_name(f"{path.stem}.set-aside-{n}{path.suffix}")).exists():
        n += 1
    os.replace(path, target)
    return target


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
