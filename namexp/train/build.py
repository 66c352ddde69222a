"""Objects a run needs, built from its config: the model, the optimizer and the learning-rate schedule."""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

import torch

from namexp.config.schema import OptimConfig, RunConfig, SchedConfig
from namexp.data import DataBundle, build_data
from namexp.errors import UserError
from namexp.models import build_model
from namexp.train.runtime import Dist


def make_model(cfg: RunConfig, num_classes: int, image_size: int, fetch_weights: bool = False) -> torch.nn.Module:
    """The run's model.

    The config was validated; what build_model still refuses (e.g. a dataset's class count) is the user's
    to fix, so its ValueError becomes a one-line UserError. Pretrained weights (``backbone.pretrained``) are
    fetched only with ``fetch_weights`` (a fresh training run): elsewhere the weights come from a checkpoint
    or do not matter (info, bench).
    """
    try:
        return build_model(
            cfg.backbone.name,
            cfg.attention.name,
            num_classes=num_classes,
            image_size=image_size,
            stem=cfg.backbone.stem,
            attention_options=dict(cfg.attention.options),
            width_mult=cfg.backbone.width_mult,
            sites=cfg.attention.sites,
            init=cfg.backbone.init,
            pretrained=cfg.backbone.pretrained and fetch_weights,
        )
    except ValueError as exc:
        raise UserError(f"cannot build {cfg.backbone.name} + {cfg.attention.name}: {exc}") from None


def make_optimizer(model: torch.nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    # Weight decay on every parameter, NAM's γ included, as the official script does.
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.name == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=cfg.nesterov
        )
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


class LRSchedule:
    """The learning rate as a pure function of (epoch, step): nothing to save, exact on resume.

    multistep: lr·gamma^(milestones passed), stepped per epoch like torch's MultiStepLR;
    cosine: half a cosine from lr to 0 over the run, per step; constant: lr.
    warmup_epochs > 0 ramps linearly from 0 over the first epochs, per step.
    """

    def __init__(self, cfg: SchedConfig, base_lr: float, epochs: int, steps_per_epoch: int):
        self.cfg, self.base_lr, self.epochs, self.steps = cfg, base_lr, epochs, max(1, steps_per_epoch)

    def lr_at(self, epoch: int, step: int = 0) -> float:
        t = epoch + step / self.steps  # epochs done, fractional
        if self.cfg.name == "multistep":
            lr = self.base_lr * self.cfg.gamma ** sum(1 for m in self.cfg.milestones if m <= epoch)
        elif self.cfg.name == "cosine":
            lr = self.base_lr * 0.5 * (1 + math.cos(math.pi * t / self.epochs))
        else:
            lr = self.base_lr
        if self.cfg.warmup_epochs and t < self.cfg.warmup_epochs:
            lr *= (epoch * self.steps + step + 1) / (self.cfg.warmup_epochs * self.steps)
        return lr

    @staticmethod
    def apply(optimizer: torch.optim.Optimizer, lr: float) -> None:
        for group in optimizer.param_groups:
            group["lr"] = lr


def config_dict(cfg: RunConfig) -> dict[str, Any]:
    return asdict(cfg)


def make_data(cfg: RunConfig, device: torch.device, d: Dist = Dist(), with_train: bool = True) -> DataBundle:
    """The run's data on `device` (this rank's shard of the training set under DDP)."""
    t = cfg.trainer
    return build_data(
        cfg.data,
        batch_size=t.batch_size,
        eval_batch_size=t.eval_batch_size,
        device=device,
        seed=cfg.seed,
        rank=d.rank,
        world_size=d.world_size,
        channels_last=t.channels_last,
        num_workers=t.num_workers,
        limit_train_batches=t.limit_train_batches,
        limit_eval_batches=t.limit_eval_batches,
        with_train=with_train,
    )
