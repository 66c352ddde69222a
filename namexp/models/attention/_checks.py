"""Checks for attention-module options, declared by each class as ``option_checks``.

A check takes the value and returns it, or raises a ``ValueError`` saying what is wrong with it (the caller,
``check_attention_option``, adds which attention and option it was). No message names a config key: the
config boundary (``namexp.config.validate``) adds that.
"""

from __future__ import annotations

from collections.abc import Callable

Check = Callable[[object], object]


def positive_int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError("must be a positive integer (e.g. 16)")
    return value


def odd_kernel(value: object) -> int:
    value = positive_int(value)
    if value % 2 == 0:
        # An even kernel cannot keep the feature-map size with symmetric padding.
        raise ValueError(f"must be odd so the map keeps its size (use {value - 1} or {value + 1})")
    return value


def optional(check: Check) -> Check:
    """``check``, with None allowed (the module then picks the value itself)."""
    return lambda value: None if value is None else check(value)


def boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


def choice(*choices: str) -> Check:
    def check(value: object) -> str:
        if value not in choices:
            raise ValueError(f"is not one of {', '.join(choices)}")
        return value  # type: ignore[return-value]

    return check
