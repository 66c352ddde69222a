"""Everything a run trains with, built from its config and, when it resumes, its checkpoint."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from namexp.config.schema import RunConfig
from namexp.data import DataBundle
from namexp.run.checkpoint import load_model_state
from namexp.run.layout import RunFolder
from namexp.run.state import RunState
from namexp.train import runtime
from namexp.train.build import LRSchedule, make_data, make_model, make_optimizer
from namexp.train.penalty import SparsityPenalty

log = logging.getLogger("namexp")


@dataclass
class RunContext:
    """What a run knows beyond its config: where it writes and how it was launched."""

    run_dir: Path
    choices: dict[str, str] = field(default_factory=dict)
    overrides: list[str] = field(default_factory=list)
    resume: bool = False  # continue from the folder's checkpoint: --resume, or a sweep job run again
    resume_from: str = "last"  # "previous": --resume RUN/checkpoints/previous.pt (last.pt is then set aside)
    job_num: int | None = None
    dist: runtime.Dist = runtime.Dist()
    tags: dict[str, Any] = field(default_factory=dict)  # kept in the record as "tags" (namexp tune: study, trial)
    on_epoch: Callable[[dict[str, Any]], None] | None = None  # after each recorded epoch; may raise StoppedEarly

    @property
    def folder(self) -> RunFolder:
        return RunFolder(self.run_dir)


@dataclass
class Setup:
    """The run's device, data, model, optimizer and state."""

    device: torch.device
    data: DataBundle
    model: torch.nn.Module  # the plain model: what checkpoints hold
    net: torch.nn.Module  # the model as evaluated (compiled when asked)
    train_net: torch.nn.Module  # the model as trained (DDP-wrapped under torchrun)
    penalty: SparsityPenalty
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    schedule: LRSchedule
    state: RunState


def set_up(cfg: RunConfig, ctx: RunContext, checkpoint: dict[str, Any] | None) -> Setup:
    d, t = ctx.dist, cfg.trainer
    device = runtime.device_for(t, d, ctx.job_num)
    runtime.set_deterministic(t.deterministic, device)
    data = make_data(cfg, device, d)
    runtime.seed_everything(cfg.seed)
    model = make_model(cfg, data.num_classes, data.image_size, fetch_weights=checkpoint is None).to(device)
    if t.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if d.enabled and t.sync_bn:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    penalty = SparsityPenalty(model, cfg.sparsity, cfg.sparsity_mode)
    if cfg.sparsity > 0 and not penalty.scales:
        log.warning("sparsity=%g has nothing to act on: attention=%s has no NAM scales (recorded as 0)",
                    cfg.sparsity, cfg.attention.name)  # fmt: skip
    optimizer = make_optimizer(model, cfg.optim)
    scaler = runtime.grad_scaler(t.precision, device)
    schedule = LRSchedule(cfg.sched, cfg.optim.lr, t.epochs, len(data.train))
    state = RunState() if checkpoint is None else _restore(cfg, ctx, checkpoint, model, optimizer, scaler, device)
    net = torch.compile(model) if t.compile else model  # compiled before the DDP wrap, as timm does
    train_net = net
    if d.enabled:
        train_net = torch.nn.parallel.DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None
        )
    return Setup(device, data, model, net, train_net, penalty, optimizer, scaler, schedule, state)


def _restore(cfg, ctx: RunContext, checkpoint: dict[str, Any], model, optimizer, scaler, device) -> RunState:
    """Model, optimizer, scaler and RNGs as the checkpoint left them; returns its run state."""
    load_model_state(
        model, checkpoint["model"], ctx.folder.checkpoint(ctx.resume_from), f"{cfg.backbone.name}+{cfg.attention.name}"
    )
    optimizer.load_state_dict(checkpoint["optimizer"])
    if scaler is not None and checkpoint.get("scaler"):
        scaler.load_state_dict(checkpoint["scaler"])
    state = RunState.from_checkpoint(checkpoint["state"], device)
    state.restore_rng()
    log.info("resuming %s at epoch %d step %d", ctx.run_dir, state.epochs_done + 1, state.step)
    return state
