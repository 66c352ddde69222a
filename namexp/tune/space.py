"""The search space of a study: `key=log(1e-5,1e-2)`, `key=float(a,b)`, `key=int(a,b)`, `key=choice(a,b,...)`.

A space comes from a file (`--space NAME` reads `conf/tune/NAME.yaml`; any other value is a YAML file's
path) holding `key: spec` lines, and/or from the command line's overrides whose value is one of those
forms. Every key must exist in the composed config and every end of every range must compose into a valid
run config, so a typo is a one-line error before any study exists.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from namexp.errors import UserError

KINDS = ("log", "float", "int", "choice")
_SPEC = re.compile(r"^\s*(log|float|int|choice)\s*\((.*)\)\s*$", re.DOTALL)
_FORMS = "log(LOW,HIGH), float(LOW,HIGH), int(LOW,HIGH) or choice(A,B,...)"


@dataclass(frozen=True)
class Param:
    """One searched key: its kind and its bounds (log, float, int) or its choices."""

    key: str
    kind: str
    values: tuple  # (low, high), or the choices

    @property
    def spec(self) -> str:
        return f"{self.kind}({','.join(_text(v) for v in self.values)})"

    def distribution(self):
        import optuna.distributions as d

        if self.kind == "choice":
            return d.CategoricalDistribution(list(self.values))
        if self.kind == "int":
            return d.IntDistribution(int(self.values[0]), int(self.values[1]))
        return d.FloatDistribution(float(self.values[0]), float(self.values[1]), log=self.kind == "log")

    def corners(self) -> list[Any]:
        """The values whose configs must all be valid: both ends of a range, or every choice."""
        return list(self.values)


def _text(value: Any) -> str:
    """A value as a Hydra override writes it (floats exactly, booleans in lower case)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return repr(value)
    return str(value)


def override(key: str, value: Any) -> str:
    return f"{key}={_text(value)}"


def is_space_override(text: str) -> bool:
    key, sep, value = text.partition("=")
    return bool(sep) and bool(_SPEC.match(value))


def parse_spec(key: str, spec: Any) -> Param:
    """One `key: spec` entry; a malformed spec is a one-line error naming the forms that are valid."""
    match = _SPEC.match(str(spec))
    if not key or not re.fullmatch(r"[A-Za-z_][\w.]*", key):
        raise UserError(f"search space key '{key}' is not a config key: write KEY={_FORMS}")
    if not match:
        raise UserError(f"search space '{key}: {spec}' is malformed: write {key}={_FORMS}")
    kind, inner = match.group(1), match.group(2)
    items = [item.strip() for item in inner.split(",")]
    if kind == "choice":
        if len(items) < 2 or any(not item for item in items):
            raise UserError(f"search space '{key}={spec}': choice needs two or more values, e.g. {key}=choice(a,b)")
        return Param(key, kind, tuple(_scalar(item) for item in items))
    if len(items) != 2:
        raise UserError(f"search space '{key}={spec}': {kind} takes LOW,HIGH, e.g. {key}={kind}(1,10)")
    low, high = (_number(key, spec, item, integer=kind == "int") for item in items)
    if not low < high:
        raise UserError(f"search space '{key}={spec}': LOW must be below HIGH")
    if kind == "log" and low <= 0:
        raise UserError(f"search space '{key}={spec}': a log range needs LOW > 0, e.g. {key}=log(1e-5,1e-2)")
    return Param(key, kind, (low, high))


def _number(key: str, spec: Any, text: str, integer: bool) -> float | int:
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        what = "an integer" if integer else "a number"
        raise UserError(f"search space '{key}={spec}': '{text}' is not {what}") from None
    if not math.isfinite(value):
        raise UserError(f"search space '{key}={spec}': '{text}' is not a finite number")
    return value


def _scalar(text: str) -> Any:
    """A choice as YAML reads it (numbers and booleans typed, the rest strings), as Hydra would."""
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return value if isinstance(value, (int, float, bool, str)) else text


def read_space_file(name_or_file: str, conf_tune: Path) -> dict[str, Any]:
    """`key: spec` pairs from conf/tune/NAME.yaml or from a YAML file's path."""
    import yaml

    path = Path(name_or_file).expanduser()
    if not path.suffix and not path.exists():
        path = conf_tune / f"{name_or_file}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in conf_tune.glob("*.yaml")) if conf_tune.is_dir() else []
        raise UserError(
            f"no search space '{name_or_file}': give a YAML file's path or one of {', '.join(known) or '(none)'} "
            "(conf/tune/NAME.yaml), or space overrides such as sparsity=log(1e-5,1e-2)"
        )
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise UserError(f"cannot read the search space {path}: {' '.join(str(exc).split())[:200]}") from None
    if not isinstance(data, dict) or not data:
        raise UserError(f"search space {path} must map config keys to specs, e.g. 'sparsity: log(1e-5,1e-2)'")
    return {str(k): v for k, v in data.items()}


def build_space(file_entries: dict[str, Any], overrides: list[str]) -> tuple[list[Param], list[str]]:
    """The space (file first, command-line specs override it) and the remaining plain overrides."""
    entries = dict(file_entries)
    plain = []
    for text in overrides:
        if is_space_override(text):
            key, _, value = text.partition("=")
            entries[key] = value
        else:
            plain.append(text)
    if not entries:
        raise UserError(
            f"no search space: give --space NAME (conf/tune/NAME.yaml) or overrides such as sparsity=log(1e-5,1e-2) "
            f"(forms: {_FORMS})"
        )
    plain_keys = {o.split("=", 1)[0].lstrip("+~") for o in plain}
    for key in entries:
        if key in plain_keys:
            raise UserError(f"'{key}' is both searched and set by an override: drop one of them")
    return [parse_spec(k, v) for k, v in entries.items()], plain


def describe(space: list[Param]) -> dict[str, str]:
    """The space as stored with the study (what a re-run must match)."""
    return {p.key: p.spec for p in space}
