"""Helpers the backbones share: feature-map sizes, attention slots, stems and weight init."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from namexp.models.attention import (
    AttentionLayer,
    NoAttention,
    for_stage,
    is_attention_module,
    layer_class,
    layer_options,
)
from namexp.models.sites import SiteSpec

STEMS = ("auto", "cifar", "imagenet")


def resolve_stem(stem: str, image_size: int) -> str:
    """'auto' -> 'cifar' up to 64 px, 'imagenet' above; anything else must be 'cifar' or 'imagenet'."""
    if stem not in STEMS:
        raise ValueError(f"unknown stem {stem!r}: choose one of {', '.join(STEMS)}")
    if stem == "auto":
        return "cifar" if image_size <= 64 else "imagenet"
    return stem


def conv_out(size: int, stride: int) -> int:
    """Output size of a 'same'-padded conv or of the 3x3/2 max-pool with padding 1: ceil(size / stride)."""
    return (size - 1) // stride + 1


def placed_attention(
    kind: str, attn_layer: AttentionLayer, channels: int, spatial_size: tuple[int, int] | None
) -> nn.Module | None:
    """``attn_layer``'s module if its placement is ``kind``, else None."""
    if layer_class(attn_layer).placement != kind:
        return None
    return attn_layer(channels, spatial_size=spatial_size)


# Which of its documented places a model fills (`attention.sites`): every one, only those of stage k, or only
# those after the last block of each stage. A slot between stages belongs to the stage (and block) it follows.
SITES_ALL = "all"
SITES_LAST_BLOCK = "last_block_of_stage"


def site_choices(num_stages: int) -> tuple[str, ...]:
    """The ``sites`` values a backbone with ``num_stages`` stages takes."""
    return (SITES_ALL, *(f"stage{k}" for k in range(1, num_stages + 1)), SITES_LAST_BLOCK)


def check_sites(sites: object, num_stages: int, backbone: str) -> str:
    choices = site_choices(num_stages)
    if sites not in choices:
        raise ValueError(f"unknown sites {sites!r} for {backbone}: choose one of {', '.join(choices)}")
    return sites  # type: ignore[return-value]


def sited(attn_layer: AttentionLayer, sites: str, stage: int, last_block: bool) -> AttentionLayer:
    """``attn_layer`` for a slot in (or after) a block of stage ``stage`` when ``sites`` selects it, else none.

    Per-stage options (ECA's kernel_size list) are set to their value for this stage.
    """
    if sites == SITES_ALL or (sites == SITES_LAST_BLOCK and last_block) or sites == f"stage{stage}":
        return for_stage(attn_layer, stage)
    return NoAttention


def block_attention(attn_layer: AttentionLayer, channels: int, spatial_size: tuple[int, int] | None) -> nn.Module:
    """The module for a block-level slot: the attention if it is a block module, else an identity."""
    module = placed_attention("block", attn_layer, channels, spatial_size)
    return module if module is not None else NoAttention(channels)


def stage_slots(
    slots: dict[str, tuple[str, ...]],
    after: str,
    channels: int,
    spatial_size: tuple[int, int] | None,
    attn_layer: AttentionLayer,
    *,
    describe: Callable[[str, str], str],
) -> tuple[dict[str, nn.Module], list[SiteSpec]]:
    """The between-stage attention that runs after ``after`` (if the attention's placement puts one there).

    ``slots`` maps a placement ("stage", "middle") to the names after which such modules go. Returns the
    module keyed by ``after`` (for the backbone's ``stage_attention`` ModuleDict) and its site record.
    """
    modules: dict[str, nn.Module] = {}
    specs: list[SiteSpec] = []
    for kind, names in slots.items():
        if after not in names:
            continue
        module = placed_attention(kind, attn_layer, channels, spatial_size)
        if module is None:
            continue
        modules[after] = module
        specs.append(SiteSpec(f"stage_attention.{after}", kind, channels, spatial_size, describe(kind, after)))
    return modules, specs


def init_backbone_weights(model: nn.Module) -> None:
    """He init (fan_out, ReLU) for convs, BatchNorm weight 1 / bias 0, Linear left at PyTorch's default.

    Attention modules initialise themselves when built (zero-init BNs in CBAM, triplet and non-local
    blocks, ...), so everything inside them is skipped here.
    """
    own_init = {id(sub) for module in model.modules() if is_attention_module(module) for sub in module.modules()}
    for module in model.modules():
        if id(module) in own_init:
            continue
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


def build_config(attn_layer: AttentionLayer, **fields) -> dict:
    """What a backbone was built with, stored on the model as ``model.build_config``."""
    attention = {"attention": layer_class(attn_layer).attention_name, "attention_options": layer_options(attn_layer)}
    return {**fields, **attention}
