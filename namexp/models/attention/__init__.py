"""Attention modules and their registry.

Every class follows one constructor contract, ``Cls(channels, *, spatial_size=None, **options)``, and names
where it goes in a network with the class attribute ``placement``:

* ``"block"``: end of the residual branch, after the block's last BatchNorm, before the identity add and
  the final ReLU (nam, nam_spatial, nam_full, se, cbam, tam, eca, half);
* ``"stage"``: between stages, not in blocks (bam);
* ``"middle"``: after a few blocks of the middle stages (nonlocal);
* ``"none"``: nowhere (none).

Options with the same meaning share a name: ``reduction`` (C -> C/r bottlenecks), ``kernel_size``
(spatial or 1-D conv kernel). Each class checks nothing itself; it declares a check per option in
``option_checks``, which ``attention_layer`` (and the config boundary, through ``check_attention_option``)
applies once. Errors here are plain ``ValueError``s.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping

from torch import nn

from .bam import BAM
from .baselines import HalfScale, NoAttention
from .cbam import CBAM
from .eca import ECA, eca_kernel_size
from .nam import NAMChannel, NAMFull, NAMModule, NAMSpatial, nam_modules
from .non_local import NonLocalBlock
from .se import SqueezeExcitation
from .triplet import TripletAttention

ATTENTION_REGISTRY: dict[str, type[nn.Module]] = {
    "none": NoAttention,
    "nam": NAMChannel,
    "nam_spatial": NAMSpatial,
    "nam_full": NAMFull,
    "se": SqueezeExcitation,
    "cbam": CBAM,
    "bam": BAM,
    "tam": TripletAttention,
    "eca": ECA,
    "nonlocal": NonLocalBlock,
    "half": HalfScale,
}

# An attention class, or ``functools.partial(cls, **options)``: ``layer(channels, spatial_size=...)`` builds one.
AttentionLayer = Callable[..., nn.Module]

__all__ = [
    "ATTENTION_REGISTRY",
    "BAM",
    "CBAM",
    "ECA",
    "AttentionLayer",
    "HalfScale",
    "NAMChannel",
    "NAMFull",
    "NAMModule",
    "NAMSpatial",
    "NoAttention",
    "NonLocalBlock",
    "SqueezeExcitation",
    "TripletAttention",
    "attention_layer",
    "attention_names",
    "attention_option_names",
    "check_attention_option",
    "check_attention_options",
    "create_attention",
    "eca_kernel_size",
    "for_stage",
    "get_attention_class",
    "is_attention_module",
    "layer_class",
    "layer_options",
    "nam_modules",
    "per_stage_options",
]


def attention_names() -> list[str]:
    return list(ATTENTION_REGISTRY)


def get_attention_class(name: str) -> type[nn.Module]:
    try:
        return ATTENTION_REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown attention {name!r}: choose one of {', '.join(ATTENTION_REGISTRY)}") from None


def attention_option_names(name: str) -> list[str]:
    """The keyword options the attention ``name`` accepts (besides ``spatial_size``)."""
    parameters = inspect.signature(get_attention_class(name).__init__).parameters.values()
    return [p.name for p in parameters if p.kind is p.KEYWORD_ONLY and p.name != "spatial_size"]


def check_attention_option(name: str, option: str, value: object) -> object:
    """``value`` checked as option ``option`` of attention ``name``; ValueError for an unknown option or value."""
    valid = attention_option_names(name)
    if option not in valid:
        fix = f"valid options are {', '.join(valid)}" if valid else "it takes no options"
        raise ValueError(f"unknown option {option!r} for attention {name!r}: {fix}")
    try:
        return get_attention_class(name).option_checks[option](value)
    except ValueError as exc:
        raise ValueError(f"attention {name!r}: option {option}={value!r} {exc}") from None


def check_attention_options(name: str, options: Mapping[str, object] | None) -> dict:
    """``options`` for attention ``name`` as a new dict, each checked by ``check_attention_option``."""
    return {option: check_attention_option(name, option, value) for option, value in (options or {}).items()}


def attention_layer(name: str, options: Mapping[str, object] | None = None) -> AttentionLayer:
    """Attention ``name`` with its ``options``, checked once, as a constructor ``layer(channels, spatial_size=...)``.

    Backbones take such a constructor (``attn_layer``, as timm's blocks do) and call it at every slot its
    placement puts it in; an attention class itself (no options) works as well.
    """
    return functools.partial(get_attention_class(name), **check_attention_options(name, options))


def layer_class(layer: AttentionLayer) -> type[nn.Module]:
    """The attention class an ``attn_layer`` builds (its ``placement`` and ``attention_name``)."""
    return layer.func if isinstance(layer, functools.partial) else layer


def layer_options(layer: AttentionLayer) -> dict:
    """The options an ``attn_layer`` passes to its class."""
    return dict(layer.keywords) if isinstance(layer, functools.partial) else {}


def per_stage_options(layer: AttentionLayer) -> dict[str, tuple]:
    """The options of ``layer`` given as one value per stage (a tuple, for a class's ``per_stage_options``)."""
    names = getattr(layer_class(layer), "per_stage_options", ())
    return {k: v for k, v in layer_options(layer).items() if k in names and isinstance(v, tuple)}


def for_stage(layer: AttentionLayer, stage: int) -> AttentionLayer:
    """``layer`` with each per-stage option set to its value for stage ``stage`` (1-based)."""
    chosen = {k: v[stage - 1] for k, v in per_stage_options(layer).items()}
    if not chosen:
        return layer
    return functools.partial(layer_class(layer), **{**layer_options(layer), **chosen})


def create_attention(name: str, channels: int, *, spatial_size: tuple[int, int] | None = None, **options) -> nn.Module:
    """Build attention ``name`` for ``channels`` channels (public API: ``namexp.create_attention``).

    One contract for every type: the channel count first, then keyword options (each type's are listed by
    ``attention_option_names``; the defaults are those of ``conf/attention/<name>.yaml``). An unknown name or
    option, a bad option value or a bad channel count is a ``ValueError`` that says what would be valid.
    ``spatial_size=(H, W)`` is needed by the NAM variants with a spatial gate. ``none`` gives an identity.
    """
    layer = attention_layer(name, options)
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
        raise ValueError(f"attention {name!r} needs a positive integer channel count, got {channels!r}")
    return layer(channels, spatial_size=spatial_size)


_ATTENTION_CLASSES = tuple(ATTENTION_REGISTRY.values())


def is_attention_module(module: nn.Module) -> bool:
    """True for instances of the registry's classes (used to keep backbone init away from them)."""
    return isinstance(module, _ATTENTION_CLASSES)
