"""Nested mappings (resolved configs) as flat dotted keys: one `flatten` for compare and TensorBoard's hparams."""

from __future__ import annotations

from collections.abc import Mapping


def flatten(tree: Mapping, prefix: str = "") -> dict[str, object]:
    """`{"optim": {"lr": 0.1}}` -> `{"optim.lr": 0.1}`; other values (lists too) are kept as they are.

    An empty mapping adds no key (as if unset).
    """
    flat: dict[str, object] = {}
    for key, value in tree.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(flatten(value, name))
        else:
            flat[name] = value
    return flat
