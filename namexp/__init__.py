"""namexp: an experiment runner for the Normalization-based Attention Module (NAM) and its peers.

The public Python API (kept stable; see the README's "Use the modules in your own code")::

    from namexp import build_model, create_attention, list_attentions, list_backbones

Importing ``namexp`` stays light: those names are looked up on first use (PEP 562 module ``__getattr__``),
so ``import namexp`` alone does not import torch.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# Public name -> the module that defines it, imported on first access.
_LAZY = {
    "build_model": "namexp.models",
    "create_attention": "namexp.models",
    "list_attentions": "namexp.models",
    "list_backbones": "namexp.models",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'namexp' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
