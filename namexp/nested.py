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


# Config keys added since namexp 0.1, with the value every run recorded before them ran with: a saved config
# without one is read as having it (compare groups such a run with newer runs of the same recipe; eval and
# resume do not call it a change of the config tree).
LATER_KEYS: dict[str, object] = {
    "attention.sites": "all",
    "backbone.init": "torchvision",
    "backbone.pretrained": False,
}


def with_later_keys(flat: Mapping[str, object]) -> dict[str, object]:
    """A flattened saved config with the keys it predates, at the values it ran with."""
    return {**LATER_KEYS, **flat}
