"""Backbones and their registry: torchvision-style ResNet-18/34/50, He et al.'s CIFAR ResNet-20/56, MobileNetV2.

Every factory takes ``num_classes``, ``image_size``, ``stem``, ``attention`` and ``attention_options`` as
keywords (mobilenetv2 also ``width_mult``); ``namexp.models.build_model`` is the checked entry point.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from .cifar_resnet import resnet20, resnet56
from .mobilenetv2 import mobilenetv2
from .resnet import resnet18, resnet34, resnet50

BACKBONE_REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "resnet18": resnet18,
    "resnet34": resnet34,
    "resnet50": resnet50,
    "resnet20": resnet20,
    "resnet56": resnet56,
    "mobilenetv2": mobilenetv2,
}

# Networks defined for 32x32 CIFAR inputs only: no ImageNet stem.
CIFAR_ONLY_BACKBONES = ("resnet20", "resnet56")


def backbone_names() -> list[str]:
    return list(BACKBONE_REGISTRY)
