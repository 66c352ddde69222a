"""Checks for attention-module options, declared by each class as ``option_checks``.

A check takes the value and returns it, or raises a ``ValueError`` saying what is wrong with it (the caller,
``check_attention_option``, adds which attention and option it was). No message names a config key: the
config boundary (``namexp.config.validate``) adds that.
"""

from __future__ import annotations

from collections.abc import Callable

Check = Callable[[object], object]


def positive_int(value: object, example: int = 16) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"must be a positive integer (e.g. {example})")
    return value


def odd_kernel(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError("must be a positive odd integer (e.g. 3)")
    if value % 2 == 0:
        # An even kernel cannot keep the feature-map size with symmetric padding.
        raise ValueError(f"must be odd so the map keeps its size (use {max(value - 1, 1)} or {value + 1})")
    return value


def per_stage(check: Check, named: dict[str, tuple] | None = None) -> Check:
    """``check`` for one value, or a list of such values (one per stage), or a name in ``named`` (its list).

    A list comes back as a tuple; the backbone hands each stage's modules that stage's value.
    """
    named = named or {}

    def check_value_or_list(value: object) -> object:
        if isinstance(value, str) and value in named:
            return named[value]
        if isinstance(value, (list, tuple)):
            if not value:
                raise ValueError("is an empty list: give one value per stage")
            return tuple(check(v) for v in value)
        if isinstance(value, str):
            raise ValueError(f"is not a value, a list with one per stage, or one of {', '.join(named)}")
        return check(value)

    return check_value_or_list


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
