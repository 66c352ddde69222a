"""Backbones and their registry: torchvision-style ResNet-18/34/50, He et al.'s CIFAR ResNet-20/56, MobileNetV2.

Every factory takes ``num_classes``, ``image_size``, ``stem`` and ``attn_layer`` (the attention's constructor,
see ``namexp.models.attention.attention_layer``) as keywords, mobilenetv2 also ``width_mult``;
``namexp.models.build_model`` is the checked entry point.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from torch import nn

from ._common import SITES_ALL, STEMS, check_sites, resolve_stem, site_choices
from .cifar_resnet import CifarResNet, resnet20, resnet56
from .mobilenetv2 import MobileNetV2
from .resnet import ResNet, resnet18, resnet34, resnet50
from .timm_models import TIMM_PREFIX, build_timm, check_timm_attention, check_timm_backbone, is_timm, timm_version

BACKBONE_REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "resnet18": resnet18,
    "resnet34": resnet34,
    "resnet50": resnet50,
    "resnet20": resnet20,
    "resnet56": resnet56,
    "mobilenetv2": MobileNetV2,
}

# Networks defined for 32x32 CIFAR inputs only: no ImageNet stem.
CIFAR_ONLY_BACKBONES = ("resnet20", "resnet56")
# How many stages each backbone has, for `sites` (stage1..stageN).
NUM_STAGES = {
    "resnet18": ResNet.NUM_STAGES,
    "resnet34": ResNet.NUM_STAGES,
    "resnet50": ResNet.NUM_STAGES,
    "resnet20": CifarResNet.NUM_STAGES,
    "resnet56": CifarResNet.NUM_STAGES,
    "mobilenetv2": MobileNetV2.NUM_STAGES,
}


__all__ = [
    "BACKBONE_REGISTRY",
    "CIFAR_ONLY_BACKBONES",
    "NUM_STAGES",
    "SITES_ALL",
    "STEMS",
    "TIMM_PREFIX",
    "backbone_names",
    "backbone_site_choices",
    "check_sites",
    "build_timm",
    "check_timm_attention",
    "check_timm_backbone",
    "get_backbone",
    "is_timm",
    "resolve_stem",
    "timm_version",
    "width_mult_backbones",
]


def backbone_names() -> list[str]:
    return list(BACKBONE_REGISTRY)


def get_backbone(name: str) -> Callable[..., nn.Module]:
    try:
        return BACKBONE_REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown backbone {name!r}: choose one of {', '.join(BACKBONE_REGISTRY)}") from None


def width_mult_backbones() -> list[str]:
    """The backbones that take a width multiplier."""
    return [name for name, make in BACKBONE_REGISTRY.items() if "width_mult" in inspect.signature(make).parameters]


def backbone_site_choices(name: str) -> tuple[str, ...]:
    """The ``sites`` values backbone ``name`` takes (ValueError for an unknown backbone; timm models: all)."""
    if is_timm(name):
        return (SITES_ALL,)
    get_backbone(name)
    return site_choices(NUM_STAGES[name])
