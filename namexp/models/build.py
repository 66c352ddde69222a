"""``build_model``: the one checked entry point from names and numbers to a network.

Errors are plain ``ValueError``s that name the argument (``stem``, ``width_mult``, ...), not a config key;
``namexp.config.validate`` checks config values before they get here, and ``namexp.train.build.make_model``
turns what is left into the one-line error a user sees.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

from .attention import attention_layer, layer_class, per_stage_options
from .backbones import (
    NUM_STAGES,
    build_timm,
    check_sites,
    get_backbone,
    is_timm,
    resolve_stem,
    site_choices,
    timm_version,
    width_mult_backbones,
)
from .init import apply_init, check_init
from .sites import attention_sites


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
    sites: str = "all",
    init: str = "torchvision",
    pretrained: bool = False,
) -> nn.Module:
    """Build ``backbone`` with ``attention`` at its documented places (public API: ``namexp.build_model``).

    ``backbone`` and ``attention`` are names (``list_backbones()``, ``list_attentions()``, or ``timm/<name>``
    for a model of timm's ResNet family, with the ``namexp[timm]`` extra), the attention's keyword options go
    in ``attention_options`` (as ``create_attention`` takes them); every bad value is a ``ValueError`` naming
    the argument. ``image_size`` (default 32, CIFAR) sets the stem and the feature-map sizes the blocks tell
    their attention. ``sites`` keeps a subset of the documented places: ``all``, ``stage1``..``stageN`` or
    ``last_block_of_stage`` (``namexp.models.backbones.backbone_site_choices``). ``init``: ``torchvision``,
    ``official_nam`` or ``official_cbam`` (``namexp.models.init``). ``pretrained`` (timm models only) loads
    timm's ImageNet weights, which needs the network.
    stem: "auto" (cifar if image_size <= 64 else imagenet), "cifar" (3x3 stride 1, no max-pool) or
    "imagenet" (7x7 stride 2 + 3x3/2 max-pool). ``width_mult`` applies to mobilenetv2 only.
    The attention name and options are resolved once into a constructor (``attention_layer``) that the
    backbone calls at each slot. The model carries ``model.build_config`` (what it was built with, stem resolved).
    """
    attn_layer = attention_layer(attention, attention_options)
    num_classes = _positive_int(num_classes, "num_classes")
    image_size = _positive_int(image_size, "image_size")
    init = check_init(init)
    _check_width_mult(backbone, width_mult)
    if is_timm(backbone):
        model = build_timm(
            backbone, num_classes=num_classes, stem=stem, attn_layer=attn_layer, sites=sites, pretrained=pretrained
        )
        model.build_config = dict(
            stem="timm", image_size=image_size, num_classes=num_classes, sites=sites, attention=attention,
            attention_options=dict(attention_options or {}), pretrained=bool(pretrained), timm=timm_version(),
        )  # fmt: skip
    else:
        if pretrained:
            raise ValueError(f"pretrained weights exist for timm/<name> backbones only, not {backbone}")
        model = _build_namexp(backbone, attn_layer, num_classes, image_size, stem, sites, width_mult)
    apply_init(model, init)
    model.build_config = {"backbone": backbone, **model.build_config, "init": init}
    return model


def _check_width_mult(backbone: str, width_mult: object) -> None:
    if backbone in width_mult_backbones():
        if isinstance(width_mult, bool) or not isinstance(width_mult, (int, float)) or width_mult <= 0:
            raise ValueError(f"width_mult must be a positive number, got {width_mult!r}")
    elif width_mult != 1.0:
        raise ValueError(
            f"width_mult={width_mult} applies to {'/'.join(width_mult_backbones())} only, not {backbone}: "
            f"leave it at 1.0"
        )


def _build_namexp(backbone, attn_layer, num_classes, image_size, stem, sites, width_mult) -> nn.Module:
    """One of namexp's own backbones, its sites and per-stage options checked."""
    factory = get_backbone(backbone)
    stages = NUM_STAGES[backbone]
    sites = check_sites(sites, stages, backbone)
    for option, values in per_stage_options(attn_layer).items():
        if len(values) != stages:
            raise ValueError(
                f"{option}={list(values)} has {len(values)} values, one per stage, but {backbone} has {stages} stages"
            )
    kwargs = dict(
        num_classes=num_classes,
        image_size=image_size,
        stem=resolve_stem(stem, image_size),
        attn_layer=attn_layer,
        sites=sites,
    )
    if backbone in width_mult_backbones():
        kwargs["width_mult"] = float(width_mult)
    model = factory(**kwargs)
    if layer_class(attn_layer).placement != "none" and all(site.module == "none" for site in attention_sites(model)):
        name = layer_class(attn_layer).attention_name
        raise ValueError(
            f"sites={sites} leaves no place for {name} in {backbone}: {name} goes "
            f"{PLACEMENTS[layer_class(attn_layer).placement]}; choose one of {', '.join(site_choices(stages))}"
        )
    return model


PLACEMENTS = {
    "block": "at the end of every block",
    "stage": "between stages (after every stage but the last)",
    "middle": "after the last block of the middle stages",
}
