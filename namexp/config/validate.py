"""Checks a composed config beyond what its types can say, and turns it into a typed `RunConfig`.

Every failure is a `UserError` whose one line names the key, the bad value and what would be valid. This is
where each config value is checked; the model code it feeds raises plain `ValueError`s naming its arguments.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from operator import attrgetter

from omegaconf import DictConfig, OmegaConf

from namexp.config.schema import DataConfig, RunConfig
from namexp.errors import UserError

DATASETS = ("cifar10", "cifar100", "imagefolder", "synthetic")
OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("multistep", "cosine", "constant")
PRECISIONS = ("fp32", "bf16", "fp16")
PROGRESS = ("auto", "rich", "plain", "none")
SPARSITY_MODES = ("loss", "subgradient")
AUGMENTS = ("crop_flip", "flip", "none", "resized_crop")
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def to_run_config(cfg: DictConfig) -> RunConfig:
    """Validate a composed run config (without its `hydra` node) and return it as a `RunConfig`."""
    run = OmegaConf.to_object(cfg)
    if not isinstance(run, RunConfig):  # composed without the schema: a bug, not a user error
        raise TypeError(f"expected a RunConfig, got {type(run).__name__}")
    validate(run)
    return run


def _choice(key: str, value: str, valid: Collection[str]) -> None:
    if value not in valid:
        raise UserError(f"{key}={value} is not valid: choose one of {', '.join(valid)}")


def _at_least(key: str, value: float, minimum: float, strict: bool = False) -> None:
    if value < minimum or (strict and value == minimum):
        bound = f"> {minimum}" if strict else f">= {minimum}"
        raise UserError(f"{key}={value} is out of range: it must be {bound}")


# Lower bounds of numeric keys: key -> (bound, strict). A strict bound excludes the bound itself.
LOWER_BOUNDS = {
    "optim.lr": (0.0, True),
    "optim.weight_decay": (0.0, False),
    "trainer.epochs": (1, False),
    "trainer.batch_size": (1, False),
    "trainer.devices": (1, False),
    "trainer.eval_batch_size": (1, False),
    "trainer.log_interval": (1, False),
    "trainer.num_workers": (0, False),
    "trainer.limit_train_batches": (0, False),
    "trainer.limit_eval_batches": (0, False),
    "sparsity": (0.0, False),
    "sched.gamma": (0.0, True),
    "sched.warmup_epochs": (0, False),
    "data.num_classes": (2, False),
    "data.image_size": (8, False),
    "data.val_split": (0, False),
    "data.train_subset": (0, False),
    "data.crop_padding": (0, False),
    "data.synthetic_train_size": (1, False),
    "data.synthetic_test_size": (1, False),
    "backbone.width_mult": (0.0, True),
}


def validate(run: RunConfig) -> None:
    # Imported here: the model registries pull in torch, which `namexp --help` should not pay for.
    from namexp.models.attention import attention_names
    from namexp.models.backbones import STEMS, backbone_names, is_timm
    from namexp.models.init import INITS

    choices = {
        "data.name": DATASETS,
        "backbone.name": [run.backbone.name] if is_timm(run.backbone.name) else backbone_names(),  # timm: below
        "backbone.stem": STEMS,
        "backbone.init": INITS,
        "attention.name": attention_names(),
        "optim.name": OPTIMIZERS,
        "sched.name": SCHEDULES,
        "trainer.precision": PRECISIONS,
        "trainer.progress": PROGRESS,
        "sparsity_mode": SPARSITY_MODES,
        "data.augment": AUGMENTS,
    }
    for key, valid in choices.items():
        _choice(key, attrgetter(key)(run), valid)
    if not _DEVICE.match(run.trainer.device):
        raise UserError(f"trainer.device={run.trainer.device} is not valid: use auto, cpu, cuda or cuda:N")
    if not 0.0 <= run.optim.momentum < 1.0:
        raise UserError(f"optim.momentum={run.optim.momentum} is out of range: it must be in [0, 1)")
    for key, (bound, strict) in LOWER_BOUNDS.items():
        _at_least(key, attrgetter(key)(run), bound, strict)
    for m in run.sched.milestones:
        _at_least("sched.milestones (each)", m, 1)
    _validate_model(run)
    _validate_data(run.data)


def _validate_data(d: DataConfig) -> None:
    if len(d.mean) != 3 or len(d.std) != 3:
        raise UserError("data.mean and data.std need 3 values each (one per RGB channel)")
    if min(d.std) <= 0:
        raise UserError(f"data.std={list(d.std)} is out of range: every value must be > 0")
    if d.train_subset and d.val_split >= d.train_subset:
        raise UserError(
            f"data.val_split={d.val_split} is not smaller than data.train_subset={d.train_subset}: "
            "hold out fewer images for validation"
        )


def _validate_model(run: RunConfig) -> None:
    """What `build_model` would refuse, said with the config keys: backbone fit and attention options."""
    from namexp.models.attention import attention_option_names, check_attention_option
    from namexp.models.backbones import (
        CIFAR_ONLY_BACKBONES,
        NUM_STAGES,
        backbone_site_choices,
        is_timm,
        resolve_stem,
        width_mult_backbones,
    )

    b, a = run.backbone, run.attention
    if is_timm(b.name):
        _validate_timm(run)
    elif b.pretrained:
        raise UserError(
            f"backbone.pretrained=true needs a timm/<name> backbone ({b.name} has no pretrained weights): "
            f"set backbone.pretrained=false"
        )
    if b.width_mult != 1.0 and b.name not in width_mult_backbones():
        raise UserError(
            f"backbone.width_mult={b.width_mult} applies to {'/'.join(width_mult_backbones())} only, not {b.name}: "
            f"set backbone.width_mult=1.0"
        )
    if b.name in CIFAR_ONLY_BACKBONES and resolve_stem(b.stem, run.data.image_size) == "imagenet":
        raise UserError(
            f"{b.name} is a CIFAR network and has no ImageNet stem (backbone.stem={b.stem}, "
            f"data.image_size={run.data.image_size}): set backbone.stem=cifar or use resnet18/34/50"
        )
    _choice("attention.sites", a.sites, backbone_site_choices(b.name))
    for option, value in a.options.items():
        try:
            checked = check_attention_option(a.name, option, value)
        except ValueError as exc:
            if option not in attention_option_names(a.name):
                raise UserError(f"{exc}: remove attention.options.{option}") from None
            raise UserError(f"{exc}: set attention.options.{option}") from None
        if isinstance(checked, tuple) and not is_timm(b.name) and len(checked) != NUM_STAGES[b.name]:
            raise UserError(
                f"attention.options.{option}={value} gives {len(checked)} values, one per stage, but {b.name} "
                f"has {NUM_STAGES[b.name]} stages: give {NUM_STAGES[b.name]}"
            )


def _validate_timm(run: RunConfig) -> None:
    """A timm backbone: timm installed, a ResNet-family model, attention its blocks can take."""
    from namexp.models.attention import attention_layer
    from namexp.models.backbones import check_timm_attention, check_timm_backbone

    b, a = run.backbone, run.attention
    try:
        check_timm_backbone(b.name)
    except ValueError as exc:
        raise UserError(f"backbone.name={b.name}: {exc}") from None
    try:
        check_timm_attention(b.name, attention_layer(a.name, a.options), a.sites)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if b.stem == "cifar":
        raise UserError(f"backbone.stem=cifar: {b.name} keeps timm's stem; set backbone.stem=auto")
