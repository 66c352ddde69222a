"""Models: attention modules, backbones, and the description of where attention sits."""

from __future__ import annotations

from .attention import (
    ATTENTION_REGISTRY,
    attention_layer,
    attention_names,
    create_attention,
    get_attention_class,
    nam_modules,
)
from .backbones import BACKBONE_REGISTRY, backbone_names
from .build import build_model
from .sites import AttentionSite, attention_sites

__all__ = [
    "ATTENTION_REGISTRY",
    "BACKBONE_REGISTRY",
    "AttentionSite",
    "attention_layer",
    "attention_names",
    "attention_sites",
    "backbone_names",
    "build_model",
    "create_attention",
    "get_attention_class",
    "nam_modules",
]
