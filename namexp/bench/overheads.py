"""Attention overheads: the pure model cost of each attention type, timed interleaved with the others.

Each model takes limit-style steps (the training loop's `training_step` on one batch already on the device)
and inference-mode forwards of the same batch; the repeats rotate the order, so drift hits each alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from namexp.bench.timing import infer, rotate, timed
from namexp.train.step import training_step

if TYPE_CHECKING:
    import torch
    from rich.console import Console

    from namexp.bench.plan import AttentionChoice, BenchOptions
    from namexp.config.schema import RunConfig


@dataclass
class Contender:
    """One attention type's model, and its samples (ms per training step, ms per inference batch)."""

    choice: AttentionChoice
    cfg: RunConfig
    net: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scaler: Any
    params: int
    train_ms: list[float] = field(default_factory=list)
    infer_ms: list[float] = field(default_factory=list)


def build_contenders(
    attention_runs: list[tuple[AttentionChoice, RunConfig]],
    num_classes: int,
    image_size: int,
    device: torch.device,
    status: Console,
) -> list[Contender]:
    import torch

    from namexp.costs import count_params
    from namexp.train import runtime
    from namexp.train.build import make_model, make_optimizer

    contenders = []
    for choice, cfg in attention_runs:
        status.print(f"[dim]building {cfg.backbone.name} + {choice.label}...[/dim]")
        t = cfg.trainer
        runtime.seed_everything(cfg.seed)
        model = make_model(cfg, num_classes, image_size).to(device)
        if t.channels_last:
            model = model.to(memory_format=torch.channels_last)
        net = torch.compile(model) if t.compile else model
        contenders.append(
            Contender(
                choice,
                cfg,
                net,
                make_optimizer(model, cfg.optim),
                runtime.grad_scaler(t.precision, device),
                count_params(model),
            )
        )
    return contenders


def time_contenders(
    contenders: list[Contender],
    images: torch.Tensor,
    labels: torch.Tensor,
    device: torch.device,
    options: BenchOptions,
    status: Console,
) -> None:
    """Fill each contender's samples: --warmup untimed, then --repeats rounds in rotating order."""
    status.print(f"[dim]overheads: warm-up of {len(contenders)} models...[/dim]")
    for c in contenders:
        _train(c, images, labels, device, max(1, options.warmup))
        _infer(c, images, device, max(1, options.warmup))
    for r in range(options.repeats):
        status.print(f"[dim]overheads repeat {r + 1}/{options.repeats}...[/dim]")
        for c in rotate(contenders, r):
            seconds, _ = timed(device, lambda c=c: _train(c, images, labels, device, options.steps))
            c.train_ms.append(seconds / options.steps * 1000)
            seconds, _ = timed(device, lambda c=c: _infer(c, images, device, options.eval_steps))
            c.infer_ms.append(seconds / options.eval_steps * 1000)


def _train(c: Contender, images: torch.Tensor, labels: torch.Tensor, device: torch.device, n: int) -> None:
    c.net.train()
    for _ in range(n):
        training_step(c.net, images, labels, c.optimizer, c.scaler, c.cfg.trainer.precision, device)


def _infer(c: Contender, images: torch.Tensor, device: torch.device, n: int) -> None:
    c.net.eval()
    for _ in range(n):
        infer(c.net, images, c.cfg.trainer.precision, device)
    c.net.train()
