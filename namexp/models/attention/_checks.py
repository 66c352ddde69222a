"""Checks for attention-module options; each failure is a one-line `UserError` naming the fix."""

from __future__ import annotations

from namexp.errors import UserError


def positive_int(attention: str, option: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(
            f"attention {attention!r}: option {option}={value!r} must be a positive integer: "
            f"set attention.options.{option} to e.g. 16"
        )
    return value


def odd_kernel(attention: str, option: str, value: object) -> int:
    value = positive_int(attention, option, value)
    if value % 2 == 0:
        # An even kernel cannot keep the feature-map size with symmetric padding.
        raise UserError(
            f"attention {attention!r}: option {option}={value} must be odd so the map keeps its size: "
            f"use {value - 1} or {value + 1}"
        )
    return value


def boolean(attention: str, option: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise UserError(
            f"attention {attention!r}: option {option}={value!r} must be true or false: "
            f"set attention.options.{option} to true or false"
        )
    return value


def choice(attention: str, option: str, value: object, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise UserError(
            f"attention {attention!r}: option {option}={value!r} is not one of {', '.join(choices)}: "
            f"set attention.options.{option} to one of them"
        )
    return value  # type: ignore[return-value]
