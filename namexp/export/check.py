"""An exported file checked against the PyTorch model it came from, before the export is called done.

Both run on the same inputs: real test images of the run's own dataset (with its eval transform) and
random normal inputs (the same size, seeded), chunked into batches the exported graph accepts. The check
passes when ``max |Δ logits| <= RELATIVE_TOLERANCE · max(1, max |logits|)`` on every input set; top-1
agreement is reported beside it (a near tie may flip within the tolerance).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

RELATIVE_TOLERANCE = 1e-4  # float32: folding and another runtime reorder sums; observed errors are ~1e-6
RANDOM_INPUTS = 16
RANDOM_SEED = 0


def random_inputs(like: Tensor, count: int = RANDOM_INPUTS) -> Tensor:
    generator = torch.Generator().manual_seed(RANDOM_SEED)
    return torch.randn((count, *like.shape[1:]), generator=generator, dtype=like.dtype)


def _batched(fn: Callable[[Tensor], Tensor], inputs: Tensor, batch: int) -> Tensor:
    """fn over `inputs` in chunks of exactly `batch` (a last short chunk is padded, the padding dropped)."""
    outputs = []
    for start in range(0, len(inputs), batch):
        chunk = inputs[start : start + batch]
        short = batch - len(chunk)
        if short:
            chunk = torch.cat([chunk, chunk[:1].expand(short, *chunk.shape[1:])])
        outputs.append(torch.as_tensor(fn(chunk)).float()[: batch - short])
    return torch.cat(outputs)


@torch.no_grad()
def compare_outputs(reference: nn.Module, exported: Callable[[Tensor], Tensor], inputs: Tensor, batch: int) -> dict:
    """max |Δ|, the largest logit and top-1 agreement of `exported` against `reference` on `inputs`."""
    expected = _batched(reference, inputs, batch)
    got = _batched(exported, inputs, batch)
    scale = max(1.0, expected.abs().max().item())
    max_diff = (got - expected).abs().max().item()
    return {
        "images": len(inputs),
        "max_abs_diff": max_diff,
        "max_abs_logit": expected.abs().max().item(),
        "tolerance": RELATIVE_TOLERANCE * scale,
        "top1_agreement": (got.argmax(1) == expected.argmax(1)).float().mean().item(),
        "passed": bool(max_diff <= RELATIVE_TOLERANCE * scale),
    }


def check_export(
    reference: nn.Module, exported: Callable[[Tensor], Tensor], input_sets: dict[str, Tensor], batch: int
) -> dict:
    """compare_outputs for each named input set; ``passed`` only when every set passed."""
    results = {name: compare_outputs(reference, exported, inputs, batch) for name, inputs in input_sets.items()}
    return {
        "inputs": results,
        "relative_tolerance": RELATIVE_TOLERANCE,
        "passed": all(r["passed"] for r in results.values()),
    }


def describe_failure(check: dict) -> str:
    """Which input sets differed and by how much, for the one-line error."""
    return "; ".join(
        f"{name}: max |Δ logits| {r['max_abs_diff']:.3g} > {r['tolerance']:.3g}, top-1 agreement {r['top1_agreement']:.1%}"
        for name, r in check["inputs"].items()
        if not r["passed"]
    )
