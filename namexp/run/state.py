"""The run state: where a run stands, as one object.

Epochs done, the best epoch so far, the position inside the epoch in progress (with its running sums),
and every RNG's state. The state is saved once, into the checkpoint; the record is written from it (its
`epochs_done` and `best`), so after a kill the record is cut back to what the checkpoint holds.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch


@dataclass
class EpochSums:
    """Running sums of the epoch in progress (kept in mid-epoch checkpoints)."""

    loss: torch.Tensor
    correct: torch.Tensor
    seen: int = 0
    seconds: float = 0.0

    @classmethod
    def zeros(cls, device: torch.device) -> EpochSums:
        return cls(
            torch.zeros((), device=device, dtype=torch.float64), torch.zeros((), device=device, dtype=torch.int64)
        )

    def to_dict(self) -> dict[str, Any]:
        return {"loss": self.loss, "correct": self.correct, "seen": self.seen, "seconds": self.seconds}

    @classmethod
    def from_dict(cls, d: dict[str, Any], device: torch.device) -> EpochSums:
        return cls(d["loss"].to(device), d["correct"].to(device), d["seen"], d["seconds"])


@dataclass
class RunState:
    """Where a run stands. `step` > 0: inside epoch `epochs_done + 1`, after that many steps (with `sums`)."""

    epochs_done: int = 0
    step: int = 0
    best_epoch: int | None = None
    best_score: float | None = None  # the selection split's top-1 error of the best epoch
    sums: EpochSums | None = None
    rng: dict[str, Any] = field(default_factory=dict)

    def end_epoch(self, score: float | None) -> bool:
        """Count a finished epoch; True when it is the new best (lowest selection error; ties keep the earlier)."""
        self.epochs_done += 1
        self.step, self.sums = 0, None
        if score is not None and (self.best_score is None or score < self.best_score):
            self.best_epoch, self.best_score = self.epochs_done, score
            return True
        return False

    def pause(self, step: int, sums: EpochSums) -> None:
        """Mark a position inside the epoch in progress (a mid-epoch checkpoint follows)."""
        self.step, self.sums = step, sums

    def to_checkpoint(self) -> dict[str, Any]:
        """The state as saved, with the RNGs as they are now (`torch.load(weights_only=True)` reads it)."""
        return {
            "epochs_done": self.epochs_done,
            "step": self.step,
            "best_epoch": self.best_epoch,
            "best_score": self.best_score,
            "sums": None if self.sums is None else self.sums.to_dict(),
            "rng": capture_rng(),
        }

    @classmethod
    def from_checkpoint(cls, d: dict[str, Any], device: torch.device) -> RunState:
        sums = EpochSums.from_dict(d["sums"], device) if d.get("sums") is not None else None
        return cls(d["epochs_done"], d["step"], d.get("best_epoch"), d.get("best_score"), sums, d["rng"])

    def restore_rng(self) -> None:
        restore_rng(self.rng)

    def for_record(self) -> dict[str, Any]:
        return {"epochs_done": self.epochs_done, "step": self.step, "best_epoch": self.best_epoch}


def capture_rng() -> dict[str, Any]:
    """Every RNG a run touches, in a form `torch.load(weights_only=True)` accepts."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].copy()),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    random.setstate(_as_tuple(state["python"]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy(), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_as_tuple(v) for v in value)
    return value
