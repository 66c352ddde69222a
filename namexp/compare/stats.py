"""Grouping of runs, per-group statistics, the `none` baseline and Welch's t-test.

Runs are grouped by everything that defines the recipe except the seed: the record's `data`, `backbone`,
`attention` and effective `sparsity`, plus every key of the flattened resolved config whose value differs
among the runs, except the bookkeeping keys in `IGNORED_KEYS` (and those given with `--ignore`).

Keys that belong to the attention module (under `attention.`, or present only for attention models and
fixed per attention type) never split an attention type's group by themselves, are left out when a
group's `none` baseline is looked up, and are shown as a variant only when they differ within one
attention type (e.g. `attention.options.abs_weights`, `attention.sites`). Other keys that split groups are shown as a variant
where they differ among the runs of the same data and backbone (e.g. `optim.lr`).
"""

from __future__ import annotations

import math
import re
import warnings as _warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from namexp.compare.collect import MISSING, RECORD_FIELDS, Run
from namexp.errors import UserError

# Config keys (and everything below them) that do not define the recipe. `sparsity` is the configured
# weight; the effective one (0 without NAM) is the record's `sparsity` field, which always groups.
IGNORED_KEYS: tuple[str, ...] = (
    "seed",
    "sparsity",
    "data.root",
    "data.cache_dir",
    "data.download",
    "trainer.device",
    "trainer.log_interval",
    "trainer.progress",
    "trainer.num_workers",
    "trainer.resume",
    # How NAM's gate is computed (same results, different speed): not part of the recipe.
    "attention.options.impl",
    "hydra",
)

# Config subtrees owned by the attention module.
ATTENTION_PREFIXES: tuple[str, ...] = ("attention",)
# Sparsity keys besides the effective sparsity: irrelevant (shown as n/a) for runs whose effective
# sparsity is 0, and never required to match between a run and its `none` baseline.
SPARSITY_KEYS: tuple[str, ...] = ("sparsity_mode",)
# Runs that read different data never pool: the record's data fingerprint is part of the recipe.
DATA_FINGERPRINT_KEY = "data.fingerprint"
_FINGERPRINT_SHOWN = len("sha256:") + 12
NOT_APPLICABLE = "n/a"
UNSET_TEXT = "(unset)"  # how a key that a run does not have is shown

BASELINE = "none"
ATTENTION_ORDER = ("none", "nam", "nam_spatial", "nam_full", "half", "se", "cbam", "bam", "tam", "eca", "nonlocal")
RANKING_ORDER = ("nam", "bn", "random")

# (column id prefix, record entry, entry field): mean and std columns are "<prefix>_mean", "<prefix>_std".
ERROR_STATS: tuple[tuple[str, str, str], ...] = (
    ("best_top1", "best", "test_top1_err"),
    ("final_top1", "final", "test_top1_err"),
    ("best_top5", "best", "test_top5_err"),
    ("final_top5", "final", "test_top5_err"),
)
# Welch tests against the baseline: (column suffix, statistic prefix)
DELTAS: tuple[tuple[str, str], ...] = (("final_top1", "final_top1"), ("best_top1", "best_top1"))

# Every group column id, in display order (masked columns "masked_<ranking>" are appended per comparison).
COLUMNS: tuple[str, ...] = (
    "data",
    "backbone",
    "attention",
    "sparsity",
    "variant",
    "n",
    *(f"{name}_{part}" for name, _, _ in ERROR_STATS for part in ("mean", "std")),
    "params",
    "flops",
    "throughput",
    "delta_final_top1",
    "p_final_top1",
    "delta_best_top1",
    "p_best_top1",
    "baseline_n",
    "selection_split",
)
COLUMN_ALIASES = {
    "final_top1": "final_top1_mean",
    "best_top1": "best_top1_mean",
    "final_top5": "final_top5_mean",
    "best_top5": "best_top5_mean",
    "throughput_img_s": "throughput",
    "img_s": "throughput",
    "runs": "n",
    "seeds": "n",
}


def _under(key: str, prefixes: Iterable[str]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def is_attention_key(key: str) -> bool:
    return key == "attention" or _under(key, ATTENTION_PREFIXES)


def number(value: Any) -> float | None:
    """A finite float, or None for null, NaN, inf, strings and booleans."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (ddof=1; None when fewer than 2 values)."""
    n = len(values)
    if n == 0:
        return None, None
    mean = math.fsum(values) / n
    if n < 2:
        return mean, None
    return mean, math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))


def welch_p(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Two-sided p-value of Welch's t-test (unequal variances); None with < 2 values on a side."""
    if len(a) < 2 or len(b) < 2:
        return None
    from scipy import stats

    with _warnings.catch_warnings():
        _warnings.simplefilter("ignore")  # zero variance on both sides: scipy warns and returns NaN
        p = float(stats.ttest_ind(list(a), list(b), equal_var=False).pvalue)
    return p if math.isfinite(p) else None


def format_value(value: Any) -> str:
    """A config value as text (`key=value` in the variant column, filter matching)."""
    if value is MISSING or value == MISSING:
        return UNSET_TEXT
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        if value and all(isinstance(v, tuple) and len(v) == 2 for v in value):  # a frozen dict
            return "{" + ", ".join(f"{k}: {format_value(v)}" for k, v in value) + "}"
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    return str(value)


# --------------------------------------------------------------------------------------------- filters


@dataclass(frozen=True)
class Filter:
    key: str
    op: str
    values: tuple[str, ...]
    text: str

    def matches(self, actual: Any) -> bool:
        if self.op == "=":
            return any(_equal(actual, v) for v in self.values)
        if self.op == "!=":
            return not any(_equal(actual, v) for v in self.values)
        x, y = number(actual), number(_parse_number(self.values[0]))
        if x is None or y is None:
            return False
        return {"<": x < y, "<=": x <= y, ">": x > y, ">=": x >= y}[self.op]


_FILTER_RE = re.compile(r"^\s*([^=!<>\s]+)\s*(!=|<=|>=|=|<|>)(.*)$")


def parse_filter(text: str) -> Filter:
    """`key=value[,value...]` (also `!=`, `<`, `<=`, `>`, `>=` for numbers)."""
    match = _FILTER_RE.match(text)
    if not match:
        raise UserError(f"bad --filter {text!r}: write KEY=VALUE[,VALUE...] (e.g. --filter attention=nam,se)")
    key, op, rest = match.group(1), match.group(2), match.group(3).strip()
    key = COLUMN_ALIASES.get(key, key)
    values = tuple(v.strip() for v in rest.split(",")) if op in ("=", "!=") else (rest,)
    if op not in ("=", "!=") and _parse_number(rest) is None:
        raise UserError(f"bad --filter {text!r}: {op} needs a number (e.g. --filter final_top1_mean<30)")
    return Filter(key=key, op=op, values=values, text=text)


def _parse_number(text: str) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def _equal(actual: Any, text: str) -> bool:
    lowered = text.strip().lower()
    if actual is MISSING or actual == MISSING:
        return lowered in ("", "unset", "(unset)", "<unset>", "missing")
    if actual is None:
        return lowered in ("null", "none", "~", "")
    if isinstance(actual, bool):
        return lowered in (("true", "1", "yes", "on") if actual else ("false", "0", "no", "off"))
    if isinstance(actual, (int, float)):
        y = _parse_number(text)
        return y is not None and math.isclose(float(actual), y, rel_tol=1e-9, abs_tol=1e-12)
    shown = format_value(actual)
    return shown == text.strip() or shown.lower() == lowered


# ---------------------------------------------------------------------------------------------- groups


@dataclass
class Group:
    data: str
    backbone: str
    attention: str
    sparsity: float
    recipe: dict  # value of every key that differs among the runs (frozen; MISSING when unset)
    runs: list[Run]
    variant: dict = field(default_factory=dict)  # the recipe keys shown in the variant column
    stats: dict = field(default_factory=dict)  # column id -> value (None when not available)
    values: dict = field(default_factory=dict)  # statistic prefix -> the per-run values used
    baseline: Group | None = None

    @property
    def variant_text(self) -> str:
        return ", ".join(f"{k}={format_value(v)}" for k, v in self.variant.items())

    @property
    def label(self) -> str:
        parts = [self.data, self.backbone, self.attention]
        label = "/".join(parts)
        if self.sparsity:
            label += f" p={self.sparsity:g}"
        if self.variant:
            label += f" [{self.variant_text}]"
        return label

    @property
    def seeds(self) -> list:
        return [r.seed for r in self.runs]

    def value(self, key: str) -> Any:
        """A column value, or the group's common value of a record field / config key (None when mixed)."""
        key = COLUMN_ALIASES.get(key, key)
        if key in self.stats:
            return self.stats[key]
        values = {_hashable(r.value(key)) for r in self.runs}
        if len(values) == 1:
            value = values.pop()
            return None if value is MISSING else value
        return None


def _hashable(value: Any) -> Any:
    try:
        hash(value)
        return value
    except TypeError:
        return repr(value)


@dataclass
class Comparison:
    groups: list[Group]
    apart: list[Run]  # unfinished, failed and diverged runs: listed, never averaged
    warnings: list[str]
    masked_ratio: float
    masked_rankings: list[str]
    n_runs: int  # runs read (before filters)

    @property
    def show_variant(self) -> bool:
        return any(g.variant for g in self.groups)

    @property
    def columns(self) -> list[str]:
        """The machine-readable columns (CSV, JSON): always the same set, plus one per masking ranking."""
        return list(COLUMNS) + [f"masked_{r}" for r in self.masked_rankings]


def recipe_values(run: Run, ignored: Sequence[str]) -> dict:
    """The run's flattened config without bookkeeping keys; sparsity keys are n/a without sparsity."""
    flat = {k: v for k, v in run.flat.items() if not _under(k, ignored)}
    if not _under(DATA_FINGERPRINT_KEY, ignored):
        fingerprint = run.record.get("data_fingerprint")
        flat[DATA_FINGERPRINT_KEY] = str(fingerprint)[:_FINGERPRINT_SHOWN] if fingerprint else MISSING
    if run.sparsity == 0:
        for key in SPARSITY_KEYS:
            if key in flat:
                flat[key] = NOT_APPLICABLE
    return flat


def masked_errors(analysis: dict | None, ratio: float) -> dict[str, float]:
    """Mean non-finetuned test top-1 error per ranking at `ratio` (random: averaged over its seeds)."""
    if not isinstance(analysis, dict):
        return {}
    entries = analysis.get("masking")
    if not isinstance(entries, list):
        return {}
    collected: dict[str, list[float]] = {}
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("finetuned"):
            continue
        r, err = number(entry.get("ratio")), number(entry.get("test_top1_err"))
        ranking = entry.get("ranking")
        if r is None or err is None or not isinstance(ranking, str) or not math.isclose(r, ratio, abs_tol=1e-9):
            continue
        collected.setdefault(ranking, []).append(err)
    return {k: math.fsum(v) / len(v) for k, v in collected.items()}


def _ranking_key(ranking: str):
    return (RANKING_ORDER.index(ranking) if ranking in RANKING_ORDER else len(RANKING_ORDER), ranking)


def _attention_key(attention: str):
    return (ATTENTION_ORDER.index(attention) if attention in ATTENTION_ORDER else len(ATTENTION_ORDER), attention)


def _entry_value(run: Run, entry: str, name: str) -> float | None:
    part = run.record.get(entry)
    return number(part.get(name)) if isinstance(part, dict) else None


def valid_filter_keys(runs: Sequence[Run], masked_rankings: Sequence[str]) -> list[str]:
    keys = list(COLUMNS) + [f"masked_{r}" for r in masked_rankings] + list(RECORD_FIELDS)
    config_keys = sorted({k for r in runs for k in r.flat})
    seen, out = set(), []
    for k in keys + config_keys:
        if k not in seen:
            seen.add(k)
            out.append(k)
    return out


def _check_key(key: str, valid: Sequence[str], what: str) -> None:
    if key in valid:
        return
    import difflib

    close = difflib.get_close_matches(key, valid, n=3, cutoff=0.6)
    hint = f" (did you mean {' or '.join(close)}?)" if close else ""
    common = ["data", "backbone", "attention", "sparsity", "seed", "n", "final_top1_mean", "best_top1_mean", "params"]
    config = [k for k in valid if "." in k]
    preview = [k for k in common if k in valid] + config[:8]
    more = len(valid) - len(preview)
    raise UserError(
        f"unknown {what} key {key!r}{hint}: use a column or a dotted config key, e.g. "
        f"{', '.join(preview)}" + (f" ... ({more} more)" if more > 0 else "")
    )


def build(
    runs: Sequence[Run],
    *,
    filters: Sequence[str] = (),
    ignore: Sequence[str] = (),
    masked_ratio: float = 0.3,
    sort: str | None = None,
    desc: bool = False,
    warnings: Sequence[str] = (),
) -> Comparison:
    """Group, aggregate, compare with the baseline, filter and sort. Raises UserError on bad keys."""
    if not (0.0 <= masked_ratio <= 1.0):
        raise UserError(f"--masked-ratio {masked_ratio:g} is not a fraction: give a value in [0, 1] (e.g. 0.3)")
    notes = list(warnings)
    ignored = tuple(IGNORED_KEYS) + tuple(k.strip() for k in ignore if k.strip())

    # Masked-channel errors per run, before filters (their column ids are valid filter keys).
    masked = {id(r): masked_errors(r.analysis, masked_ratio) for r in runs}
    rankings = sorted({k for m in masked.values() for k in m}, key=_ranking_key)

    parsed = [parse_filter(f) for f in filters]
    valid = valid_filter_keys(runs, rankings)
    run_level_keys = set(RECORD_FIELDS) | {k for r in runs for k in r.flat}
    run_filters, group_filters = [], []
    for f in parsed:
        _check_key(f.key, valid, "filter")
        (run_filters if f.key in run_level_keys else group_filters).append(f)
    if sort is not None:
        sort = COLUMN_ALIASES.get(sort, sort)
        _check_key(sort, valid, "sort")

    # The pool the groups and their baselines come from: every run-level filter except those on the
    # attention (so `--filter attention=nam` still shows the difference to `none`).
    def passes(run: Run, which: Iterable[Filter]) -> bool:
        return all(f.matches(run.value(f.key)) for f in which)

    attention_filters = [f for f in run_filters if is_attention_key(f.key)]
    other_filters = [f for f in run_filters if not is_attention_key(f.key)]
    pool = [r for r in runs if passes(r, other_filters)]
    apart = [r for r in pool if not r.completed and passes(r, attention_filters)]
    completed = [r for r in pool if r.completed]

    _note_unknown_data(completed, notes)
    groups = _group(completed, ignored, notes)
    for group in groups:
        _aggregate(group, masked, rankings)
    _attach_baselines(groups)

    shown = [g for g in groups if all(passes(r, attention_filters) for r in g.runs)]
    shown = [g for g in shown if all(f.matches(g.value(f.key)) for f in group_filters)]
    shown.sort(key=_default_order)
    if sort is not None:
        shown = _sorted(shown, sort, desc)
    apart.sort(key=lambda r: (str(r.folder),))
    return Comparison(
        groups=shown,
        apart=apart,
        warnings=notes,
        masked_ratio=masked_ratio,
        masked_rankings=[r for r in rankings if any(g.stats.get(f"masked_{r}") is not None for g in shown)],
        n_runs=len(runs),
    )


def _group(completed: Sequence[Run], ignored: Sequence[str], notes: list[str]) -> list[Group]:
    recipes = [recipe_values(r, ignored) for r in completed]
    all_keys = sorted({k for rec in recipes for k in rec})
    distinct: dict[str, set] = {}
    for key in all_keys:
        distinct[key] = {_hashable(rec.get(key, MISSING)) for rec in recipes}
    varying = [k for k in all_keys if len(distinct[k]) > 1]

    owned = _attention_owned_keys(completed, recipes, varying)

    def context(run: Run, key: str) -> tuple:
        if key in SPARSITY_KEYS:
            return (run.data, run.backbone, run.attention, run.sparsity)
        if key in owned:
            return (run.data, run.backbone, run.attention)
        return (run.data, run.backbone)

    # Keys shown as a variant: those that differ within their context.
    per_context: dict[tuple, set] = {}
    for run, rec in zip(completed, recipes):
        for key in varying:
            per_context.setdefault((key, *context(run, key)), set()).add(_hashable(rec.get(key, MISSING)))

    by_key: dict[tuple, Group] = {}
    for run, rec in zip(completed, recipes):
        recipe = {k: _hashable(rec.get(k, MISSING)) for k in varying}
        gkey = (run.data, run.backbone, run.attention, run.sparsity, tuple(recipe.values()))
        group = by_key.get(gkey)
        if group is None:
            variant = {k: v for k, v in recipe.items() if len(per_context[(k, *context(run, k))]) > 1}
            group = Group(run.data, run.backbone, run.attention, run.sparsity, recipe, [], variant)
            group.stats["_baseline_key"] = (
                run.data,
                run.backbone,
                tuple(v for k, v in recipe.items() if k not in owned and k not in SPARSITY_KEYS),
            )
            by_key[gkey] = group
        group.runs.append(run)

    groups = list(by_key.values())
    _note_repeated_seeds(groups, notes)
    if len(completed) >= 2:
        unique = [k for k in varying if k not in owned and len(distinct[k]) == len(completed)]
        _note_keys_that_split_seeds(completed, recipes, varying, unique, notes)
    return groups


def _note_unknown_data(completed: Sequence[Run], notes: list[str]) -> None:
    unknown = [r for r in completed if not r.record.get("data_fingerprint")]
    if unknown:
        notes.append(
            f"{len(unknown)} run(s) were recorded before data fingerprints (e.g. {unknown[0].folder}): compare "
            "cannot tell whether they read the same data; runs with and without a fingerprint are grouped apart"
        )


def _attention_owned_keys(completed: Sequence[Run], recipes: list[dict], varying: list[str]) -> set[str]:
    """Keys that belong to the attention type: under attention., or unset for every `none` run and fixed per type."""
    has_none = any(r.attention == BASELINE for r in completed)
    owned: set[str] = set()
    for key in varying:
        if is_attention_key(key):
            owned.add(key)
            continue
        if key in SPARSITY_KEYS or not has_none:
            continue
        per_type: dict[str, set] = {}
        for run, rec in zip(completed, recipes):
            per_type.setdefault(run.attention, set()).add(_hashable(rec.get(key, MISSING)))
        if all(len(v) == 1 for v in per_type.values()) and per_type.get(BASELINE, {MISSING}) <= {MISSING, None}:
            owned.add(key)
    return owned


def _note_repeated_seeds(groups: list[Group], notes: list[str]) -> None:
    for group in groups:
        seeds: dict = {}
        for run in group.runs:
            seeds.setdefault(_hashable(run.seed), []).append(str(run.folder))
        for seed, folders in seeds.items():
            if len(folders) > 1 and seed is not None:
                notes.append(
                    f"{group.label}: seed {seed} appears in {len(folders)} runs ({', '.join(folders)}); "
                    "they are counted as separate samples"
                )


def _note_keys_that_split_seeds(
    completed: Sequence[Run], recipes: list[dict], varying: list[str], unique: list[str], notes: list[str]
) -> None:
    """A key that differs in every run (a run name, a time stamp) splits every seed into its own group."""
    for key in unique:
        rest = [k for k in varying if k != key]
        merged: dict[tuple, set] = {}
        for r, rec in zip(completed, recipes):
            rest_key = (
                r.data,
                r.backbone,
                r.attention,
                r.sparsity,
                tuple(_hashable(rec.get(k, MISSING)) for k in rest),
            )
            merged.setdefault(rest_key, set()).add(_hashable(r.seed))
        if any(len(seeds) > 1 for seeds in merged.values()):  # it keeps different seeds of one recipe apart
            notes.append(
                f"config key {key!r} differs in every run and keeps seeds apart; "
                f"if it does not define the recipe, pass --ignore {key}"
            )


def _aggregate(group: Group, masked: dict, rankings: Sequence[str]) -> None:
    runs = group.runs
    stats = group.stats
    stats.update(
        data=group.data,
        backbone=group.backbone,
        attention=group.attention,
        sparsity=group.sparsity,
        variant=group.variant_text,
        n=len(runs),
    )
    for name, entry, key in ERROR_STATS:
        values = [v for v in (_entry_value(r, entry, key) for r in runs) if v is not None]
        group.values[name] = values
        stats[f"{name}_mean"], stats[f"{name}_std"] = mean_std(values)
    for column, field_name in (("params", "params"), ("flops", "flops"), ("throughput", "throughput_img_s")):
        values = [v for v in (number(r.record.get(field_name)) for r in runs) if v is not None]
        mean, _ = mean_std(values)
        if mean is not None and column != "throughput" and mean == int(mean):
            mean = int(mean)
        stats[column] = mean
    splits = sorted({str(r.record.get("selection_split")) for r in runs if r.record.get("selection_split")})
    stats["selection_split"] = "/".join(splits) if splits else None
    for ranking in rankings:
        values = [masked[id(r)][ranking] for r in runs if ranking in masked[id(r)]]
        stats[f"masked_{ranking}"] = mean_std(values)[0]


def _attach_baselines(groups: Sequence[Group]) -> None:
    baselines: dict[tuple, Group] = {}
    for group in groups:
        if group.attention == BASELINE:
            key = group.stats["_baseline_key"]
            if key not in baselines or len(group.runs) > len(baselines[key].runs):
                baselines[key] = group
    for group in groups:
        base_key = group.stats.pop("_baseline_key")
        base = baselines.get(base_key) if group.attention != BASELINE else None
        group.baseline = base
        group.stats["baseline_n"] = len(base.runs) if base is not None else None
        for column, name in DELTAS:
            mean = group.stats.get(f"{name}_mean")
            base_mean = base.stats.get(f"{name}_mean") if base is not None else None
            if mean is None or base_mean is None:
                group.stats[f"delta_{column}"] = None
                group.stats[f"p_{column}"] = None
                continue
            group.stats[f"delta_{column}"] = mean - base_mean
            group.stats[f"p_{column}"] = welch_p(group.values[name], base.values[name])


def _default_order(group: Group):
    return (
        group.data,
        group.backbone,
        tuple(_sort_token(v) for k, v in group.recipe.items() if k in group.variant and not is_attention_key(k)),
        _attention_key(group.attention),
        group.sparsity,
        group.variant_text,
    )


def _sort_token(value: Any):
    x = number(value)
    return (0, x, "") if x is not None else (1, 0.0, format_value(value))


def _sorted(groups: list[Group], key: str, desc: bool) -> list[Group]:
    present = [g for g in groups if g.value(key) is not None]
    absent = [g for g in groups if g.value(key) is None]  # always last
    present.sort(key=lambda g: _sort_token(g.value(key)), reverse=desc)
    return present + absent
