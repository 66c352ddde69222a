"""NAM's γ per gate of a run's checkpoint, as a markdown table: where the gate's weight went.

    python benchmarks/nam_gammas.py runs/long-nam [last|best]

NAM's gate is sigmoid(w·BN(x)) with w = |γ|/Σ|γ| over the gate's BatchNorm; on the running statistics a
channel's |a|·std(x) is w·|γ|. Per gate: its channels, the mean and largest |γ|, and the largest w·|γ|.
"""

from __future__ import annotations

import sys
from pathlib import Path

from namexp.run.checkpoint import load_checkpoint
from namexp.run.layout import RunFolder
from namexp.tables import markdown_table


def gamma_rows(state: dict) -> list[list[str]]:
    rows = []
    for key, gamma in state.items():
        if ".attention." not in key or not key.endswith(".bn.weight"):
            continue
        size = gamma.abs()
        weight = size / size.sum()
        gate = key.removesuffix(".bn.weight").replace(".attention", "")
        rows.append(
            [gate, str(gamma.numel()), f"{size.mean():.4f}", f"{size.max():.3f}", f"{(weight * size).max():.3f}"]
        )
    return rows


def main(run: str, which: str = "last") -> None:
    state = load_checkpoint(RunFolder(Path(run)).checkpoint(which))["model"]
    headers = ["gate", "C", "mean |γ|", "largest |γ|", "largest w·|γ|"]
    print("\n".join(markdown_table(headers, gamma_rows(state))))


if __name__ == "__main__":
    main(*sys.argv[1:])
