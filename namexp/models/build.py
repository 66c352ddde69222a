"""``build_model``: the one checked entry point from config values to a network."""

from __future__ import annotations

import inspect

from torch import nn

from namexp.errors import UserError

from .attention import get_attention_class, validate_attention_options
from .backbones import BACKBONE_REGISTRY, CIFAR_ONLY_BACKBONES
from .backbones._common import resolve_stem


def _positive_int(value: object, what: str, fix: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{what} must be a positive integer, got {value!r}: {fix}")
    return value


def build_model(
    backbone: str,
    attention: str = "none",
    *,
    num_classes: int,
    image_size: int,
    stem: str = "auto",
    attention_options: dict | None = None,
    width_mult: float = 1.0,
) -> nn.Module:
    """Build ``backbone`` with ``attention`` at its documented places.

    stem: "auto" (cifar if image_size <= 64 else imagenet), "cifar" (3x3 stride 1, no max-pool) or
    "imagenet" (7x7 stride 2 + 3x3/2 max-pool). ``width_mult`` applies to mobilenetv2 only.
    The model carries ``model.build_config`` (what it was built with, stem resolved).
    """
    try:
        factory = BACKBONE_REGISTRY[backbone]
    except (KeyError, TypeError):
        raise UserError(
            f"unknown backbone {backbone!r}: choose one of {', '.join(BACKBONE_REGISTRY)} (e.g. backbone=resnet18)"
        ) from None
    get_attention_class(attention)
    options = validate_attention_options(attention, attention_options)
    num_classes = _positive_int(num_classes, "num_classes", "check the dataset's number of classes")
    image_size = _positive_int(image_size, "image_size", "set data.image_size to the input side in pixels")
    stem = resolve_stem(stem, image_size)
    if backbone in CIFAR_ONLY_BACKBONES and stem == "imagenet":
        raise UserError(
            f"{backbone} is a CIFAR network and has no ImageNet stem (got stem=imagenet, image size {image_size}): "
            f"set backbone.stem=cifar or use resnet18/34/50"
        )
    kwargs = dict(num_classes=num_classes, image_size=image_size, stem=stem, attention=attention,
                  attention_options=options)
    if "width_mult" in inspect.signature(factory).parameters:
        if isinstance(width_mult, bool) or not isinstance(width_mult, (int, float)) or width_mult <= 0:
            raise UserError(f"width_mult must be a positive number, got {width_mult!r}: set backbone.width_mult")
        kwargs["width_mult"] = float(width_mult)
    elif width_mult != 1.0:
        raise UserError(
            f"width_mult={width_mult} applies to mobilenetv2 only, not {backbone}: set backbone.width_mult=1.0"
        )
    model = factory(**kwargs)
    model.build_config = {"backbone": backbone, **model.build_config}
    return model
