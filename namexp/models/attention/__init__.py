"""Attention modules and their registry.

Every class follows one constructor contract, ``Cls(channels, *, spatial_size=None, **options)``, and names
where it goes in a network with the class attribute ``placement``:

* ``"block"``: end of the residual branch, after the block's last BatchNorm, before the identity add and
  the final ReLU (nam, nam_spatial, nam_full, se, cbam, tam, eca, half);
* ``"stage"``: between stages, not in blocks (bam);
* ``"middle"``: after a few blocks of the middle stages (nonlocal);
* ``"none"``: nowhere (none).

Options with the same meaning share a name: ``reduction`` (C -> C/r bottlenecks), ``kernel_size``
(spatial or 1-D conv kernel).
"""

from __future__ import annotations

import inspect

from torch import nn

from namexp.errors import UserError

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

__all__ = [
    "ATTENTION_REGISTRY",
    "BAM",
    "CBAM",
    "ECA",
    "HalfScale",
    "NAMChannel",
    "NAMFull",
    "NAMModule",
    "NAMSpatial",
    "NoAttention",
    "NonLocalBlock",
    "SqueezeExcitation",
    "TripletAttention",
    "attention_names",
    "attention_option_names",
    "create_attention",
    "eca_kernel_size",
    "get_attention_class",
    "is_attention_module",
    "nam_modules",
    "validate_attention_options",
]


def attention_names() -> list[str]:
    return list(ATTENTION_REGISTRY)


def get_attention_class(name: str) -> type[nn.Module]:
    try:
        return ATTENTION_REGISTRY[name]
    except (KeyError, TypeError):
        raise UserError(
            f"unknown attention {name!r}: choose one of {', '.join(ATTENTION_REGISTRY)} (e.g. attention=nam)"
        ) from None


def attention_option_names(name: str) -> list[str]:
    """The keyword options the attention ``name`` accepts (besides ``spatial_size``)."""
    parameters = inspect.signature(get_attention_class(name).__init__).parameters.values()
    return [p.name for p in parameters if p.kind is p.KEYWORD_ONLY and p.name != "spatial_size"]


def validate_attention_options(name: str, options: dict | None) -> dict:
    """Return ``options`` as a dict, or raise UserError naming the unknown option and the valid ones."""
    options = dict(options or {})
    valid = attention_option_names(name)
    unknown = sorted(key for key in options if key not in valid)
    if unknown:
        bad = ", ".join(repr(key) for key in unknown)
        if valid:
            fix = f"valid options are {', '.join(valid)}"
        else:
            fix = "it takes no options, so leave attention.options empty"
        raise UserError(f"unknown option {bad} for attention {name!r}: {fix}")
    return options


def create_attention(
    name: str, channels: int, *, spatial_size: tuple[int, int] | None = None, **options
) -> nn.Module:
    """Build attention ``name`` for ``channels`` channels; ``none`` gives an identity (an ``nn.Identity``)."""
    cls = get_attention_class(name)
    options = validate_attention_options(name, options)
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
        raise UserError(f"attention {name!r} needs a positive integer channel count, got {channels!r}")
    return cls(channels, spatial_size=spatial_size, **options)


_ATTENTION_CLASSES = tuple(ATTENTION_REGISTRY.values())


def is_attention_module(module: nn.Module) -> bool:
    """True for instances of the registry's classes (used to keep backbone init away from them)."""
    return isinstance(module, _ATTENTION_CLASSES)
