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


def list_attentions() -> list[str]:
    """Every attention name ``create_attention`` and ``build_model`` accept, ``"none"`` included."""
    return attention_names()


def list_backbones() -> list[str]:
    """Every backbone name ``build_model`` accepts."""
    return backbone_names()


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
    "list_attentions",
    "list_backbones",
    "nam_modules",
]
