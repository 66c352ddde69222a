"""``build_model``: the one checked entry point from names and numbers to a network.

Errors are plain ``ValueError``s that name the argument (``stem``, ``width_mult``, ...), not a config key;
``namexp.config.validate`` checks config values before they get here, and ``namexp.train.build.make_model``
turns what is left into the one-line error a user sees.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

from .attention import attention_layer
from .backbones import get_backbone, resolve_stem, width_mult_backbones


def _positive_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return value


def build_model(
    backbone: str,
    attention: str = "none",
    *,
    num_classes: int,
    image_size: int = 32,
    stem: str = "auto",
    attention_options: Mapping[str, object] | None = None,
    width_mult: float = 1.0,
) -> nn.Module:
    """Build ``backbone`` with ``attention`` at its documented places (public API: ``namexp.build_model``).

    ``backbone`` and ``attention`` are names (``list_backbones()``, ``list_attentions()``), the attention's
    keyword options go in ``attention_options`` (as ``create_attention`` takes them); every bad value is a
    ``ValueError`` naming the argument. ``image_size`` (default 32, CIFAR) sets the stem and the feature-map
    sizes the blocks tell their attention.
    stem: "auto" (cifar if image_size <= 64 else imagenet), "cifar" (3x3 stride 1, no max-pool) or
    "imagenet" (7x7 stride 2 + 3x3/2 max-pool). ``width_mult`` applies to mobilenetv2 only.
    The attention name and options are resolved once into a constructor (``attention_layer``) that the
    backbone calls at each slot. The model carries ``model.build_config`` (what it was built with, stem resolved).
    """
    factory = get_backbone(backbone)
    attn_layer = attention_layer(attention, attention_options)
    num_classes = _positive_int(num_classes, "num_classes")
    image_size = _positive_int(image_size, "image_size")
    kwargs = dict(
        num_classes=num_classes, image_size=image_size, stem=resolve_stem(stem, image_size), attn_layer=attn_layer
    )
    if backbone in width_mult_backbones():
        if isinstance(width_mult, bool) or not isinstance(width_mult, (int, float)) or width_mult <= 0:
            raise ValueError(f"width_mult must be a positive number, got {width_mult!r}")
        kwargs["width_mult"] = float(width_mult)
    elif width_mult != 1.0:
        raise ValueError(
            f"width_mult={width_mult} applies to {'/'.join(width_mult_backbones())} only, not {backbone}: "
            f"leave it at 1.0"
        )
    model = factory(**kwargs)
    model.build_config = {"backbone": backbone, **model.build_config}
    return model
