"""Measure: set up the planned run, then time the pipelines, the eval latency and the attention overheads."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from namexp.bench.overheads import Contender, build_contenders, time_contenders
from namexp.bench.pipelines import Pipeline, limit_pipeline, namexp_pipeline, reference_pipeline
from namexp.bench.timing import infer, rotate, synthetic_batch, timed

if TYPE_CHECKING:
    import torch
    from rich.console import Console

    from namexp.bench.plan import BenchOptions, BenchPlan
    from namexp.config.schema import RunConfig
    from namexp.train.setup import Setup


@dataclass
class Measurements:
    """The raw samples of one bench, and what of the set-up the record reports."""

    device: torch.device
    sparsity: float  # the penalty weight namexp's step applied
    params: int
    throughput: dict[str, list[float]]  # img/s of each repeat, per pipeline
    steps: dict[str, int]  # steps per timed call, per pipeline
    latency_ms: list[float]  # eval latency of each repeat
    contenders: list[Contender] | None  # the attention overheads' samples, None with --skip-overheads
    notes: list[str]


def measure(plan: BenchPlan, tmp: Path, status: Console) -> Measurements:
    from namexp.costs import count_params
    from namexp.train.setup import RunContext, set_up

    run, opts, t = plan.run, plan.options, plan.run.trainer
    ctx = RunContext(run_dir=tmp / "run")
    with _room_for_graphs(t.compile):
        status.print(f"[dim]setting up {run.backbone.name} + {run.attention.name} on {run.data.name}...[/dim]")
        s = set_up(run, ctx, None)
        device, data = s.device, s.data
        notes = []
        if len(data.train) < opts.steps:
            notes.append(
                f"the training set holds only {len(data.train)} batches: namexp timed {len(data.train)} steps per call"
            )
        images, labels = synthetic_batch(t.batch_size, data.image_size, data.num_classes, device, t.channels_last)
        pipelines = [
            limit_pipeline(run, s, images, labels, opts.steps, opts.warmup),
            namexp_pipeline(run, ctx, s, opts.steps, opts.warmup),
        ]
        if not opts.skip_reference:
            status.print("[dim]starting the reference DataLoader...[/dim]")
            pipelines.append(reference_pipeline(run, s, opts.steps, opts.warmup, opts.repeats))
        throughput = time_pipelines(pipelines, device, opts, status, t.compile)
        steps = {p.name: p.steps for p in pipelines}
        del pipelines  # lets the reference DataLoader's workers go
        latency = eval_latency(run, s, opts)
        contenders = None
        if plan.attention_runs:
            contenders = build_contenders(plan.attention_runs, data.num_classes, data.image_size, device, status)
            time_contenders(contenders, images, labels, device, opts, status)
    return Measurements(device, s.penalty.weight, count_params(s.model), throughput, steps, latency, contenders, notes)


def _room_for_graphs(compile: bool) -> contextlib.AbstractContextManager:
    """Every model of the bench is compiled through the same forward code: allow more graphs than the default 8."""
    if not compile:
        return contextlib.nullcontext()
    import torch

    config = torch._dynamo.config
    key = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
    return config.patch(**{key: max(64, getattr(config, key))})


def time_pipelines(
    pipelines: list[Pipeline], device: torch.device, opts: BenchOptions, status: Console, compiling: bool
) -> dict[str, list[float]]:
    """img/s of --steps steps, per pipeline and repeat, the pipelines' order rotating from repeat to repeat."""
    status.print(f"[dim]warm-up ({opts.warmup} steps each{', compiling' if compiling else ''})...[/dim]")
    for p in pipelines:
        p.warm_up()
    throughput: dict[str, list[float]] = {p.name: [] for p in pipelines}
    for r in range(opts.repeats):
        status.print(f"[dim]throughput repeat {r + 1}/{opts.repeats}...[/dim]")
        for p in rotate(pipelines, r):
            seconds, seen = timed(device, lambda p=p: p.run(opts.steps))
            throughput[p.name].append(seen / seconds)
    return throughput


def eval_latency(run: RunConfig, s: Setup, opts: BenchOptions) -> list[float]:
    """ms per eval batch (inference mode), per repeat of --eval-steps forwards."""
    t, device, data = run.trainer, s.device, s.data
    images, _ = synthetic_batch(t.eval_batch_size, data.image_size, data.num_classes, device, t.channels_last)
    s.net.eval()
    for _ in range(max(1, opts.warmup)):
        infer(s.net, images, t.precision, device)
    latency = []
    for _ in range(opts.repeats):
        seconds, _ = timed(device, lambda: [infer(s.net, images, t.precision, device) for _ in range(opts.eval_steps)])
        latency.append(seconds / opts.eval_steps * 1000)
    s.net.train()
    return latency
