"""Render a `Comparison` as a rich terminal table, Markdown, CSV, LaTeX or JSON.

Every machine format parses back: CSV with the csv module (numbers as plain numbers, mean and std in
separate columns, empty cells for missing values), JSON with the json module (no NaN), Markdown as pipe
tables of equal column count, LaTeX as a booktabs `tabular`.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Callable
from typing import Any

from namexp.compare.collect import MISSING, Run
from namexp.compare.stats import BASELINE, Comparison, Group, format_value
from namexp.tables import markdown_table

FORMATS = ("markdown", "csv", "latex", "json")
SUFFIXES = {".md": "markdown", ".markdown": "markdown", ".csv": "csv", ".tex": "latex", ".json": "json"}
DASH = "–"


def notes(comp: Comparison) -> list[str]:
    lines = [
        "Errors: test-split top-1/top-5 error in %, mean ± sample std (ddof=1) over the n runs (seeds) of a group; "
        f"{DASH} = not available (std needs n ≥ 2).",
        "best: the epoch with the lowest top-1 error on the 'best on' split (test = optimistic, as most papers); "
        "final: the last epoch.",
        "params: trainable parameters; FLOPs: forward FLOPs per image at the data's input size, "
        "FLOPs = 2 per multiply-add (from the record); train img/s: mean of the runs' median training throughput.",
        f"Δ: difference of the mean error to the `{BASELINE}` baseline of the same data, backbone and recipe "
        f"(negative = lower error); p: Welch's t-test (unequal variances), {DASH} with < 2 runs on a side or no baseline.",
    ]
    if comp.masked_rankings:
        pct = _pct(comp.masked_ratio)
        lines.append(
            f"err@{pct} <ranking>: test top-1 error with {pct} of the channels masked in that ranking's order, "
            "without fine-tuning (random: mean over its seeds), from analysis/analysis.json."
        )
    return lines


def _pct(ratio: float) -> str:
    return f"{ratio * 100:g}%"


# ------------------------------------------------------------------------------------------ cell text


def _fmt(x: float | None, digits: int = 2) -> str:
    return DASH if x is None else f"{x:.{digits}f}"


def _fmt_pm(mean: float | None, std: float | None, pm: str = " ± ", dash: str = DASH) -> str:
    if mean is None:
        return dash
    return f"{mean:.2f}{pm}{dash if std is None else f'{std:.2f}'}"


def _fmt_count(x: float | None, dash: str = DASH) -> str:
    if x is None:
        return dash
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(x) >= scale:
            return f"{x / scale:.2f}{suffix}"
    return f"{x:g}"


def _fmt_p(p: float | None, dash: str = DASH) -> str:
    if p is None:
        return dash
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def _fmt_delta(d: float | None, dash: str = DASH) -> str:
    return dash if d is None else f"{d:+.2f}"


# A display column: (id, header, function of (group, dash, pm) -> text, right-aligned)
Display = tuple[str, str, Callable[[Group, str, str], str], bool]


def _constant(comp: Comparison, key: str) -> str | None:
    values = {str(g.stats.get(key)) for g in comp.groups}
    return values.pop() if len(values) == 1 else None


def short_keys(keys: list[str]) -> dict[str, str]:
    """Each dotted key's shortest suffix that no other key shares (`attention.options.abs_weights` -> `abs_weights`)."""
    out = {}
    for key in keys:
        parts = key.split(".")
        for i in range(len(parts) - 1, -1, -1):
            suffix = ".".join(parts[i:])
            if not any(o != key and (o == suffix or o.endswith("." + suffix)) for o in keys):
                out[key] = suffix
                break
        else:
            out[key] = key
    return out


def display_columns(comp: Comparison, compact: bool = False) -> list[Display]:
    """The columns of the human-readable tables. `compact` (the terminal) leaves out columns that hold one
    value in every row (they go to the title) and puts each Welch p-value into its difference's cell."""
    s = lambda key: lambda g, dash, pm: dash if g.stats.get(key) is None else str(g.stats[key])
    cols: list[Display] = []
    for key in ("data", "backbone"):
        if not (compact and _constant(comp, key) is not None):
            cols.append((key, key, s(key), False))
    cols.append(("attention", "attention", s("attention"), False))
    if not (compact and all(g.sparsity == 0 for g in comp.groups)):
        cols.append(("sparsity", "sparsity", lambda g, d, pm: f"{g.sparsity:g}", True))
    if comp.show_variant:
        if compact:
            names = short_keys(sorted({k for g in comp.groups for k in g.variant}))
            text = lambda g, d, pm: ", ".join(f"{names[k]}={format_value(v)}" for k, v in g.variant.items())
        else:
            text = lambda g, d, pm: g.variant_text
        cols.append(("variant", "variant", text, False))
    cols.append(("n", "n", lambda g, d, pm: str(g.stats["n"]), True))
    unit = "" if compact else " err (%)"
    for name, header in (
        ("best_top1", "best top-1"),
        ("final_top1", "final top-1"),
        ("best_top5", "best top-5"),
        ("final_top5", "final top-5"),
    ):
        cols.append(
            (
                name,
                header + unit,
                lambda g, d, pm, n=name: _fmt_pm(g.stats[f"{n}_mean"], g.stats[f"{n}_std"], pm, d),
                True,
            )
        )
    cols += [
        ("params", "params", lambda g, d, pm: _fmt_count(g.stats["params"], d), True),
        (
            "flops",
            "FLOPs (2/MAC)" if compact else "FLOPs (2 per mult-add)",
            lambda g, d, pm: _fmt_count(g.stats["flops"], d),
            True,
        ),
        (
            "throughput",
            "train img/s",
            lambda g, d, pm: d if g.stats["throughput"] is None else f"{g.stats['throughput']:,.0f}",
            True,
        ),
    ]
    for which in ("final", "best"):
        delta, p = f"delta_{which}_top1", f"p_{which}_top1"
        cols.append(
            (
                delta,
                f"Δ {which} top-1" if compact else f"Δ {which} top-1 vs {BASELINE}",
                lambda g, d, pm, a=delta: _fmt_delta(g.stats[a], d),
                True,
            )
        )
        cols.append(
            (p, "p (Welch)" if compact else f"p {which} (Welch)", lambda g, d, pm, b=p: _fmt_p(g.stats[b], d), True)
        )
    if not (compact and _constant(comp, "selection_split") is not None):
        cols.append(("selection_split", "best on", s("selection_split"), False))
    pct = _pct(comp.masked_ratio)
    for ranking in comp.masked_rankings:
        key = f"masked_{ranking}"
        cols.append(
            (
                key,
                f"err@{pct} {ranking}",
                lambda g, d, pm, k=key: d if g.stats.get(k) is None else f"{g.stats[k]:.2f}",
                True,
            )
        )
    return cols


APART_HEADERS = ("run", "status", "error", "epochs done", "data", "backbone", "attention", "seed")


def _relative(path: os.PathLike | str) -> str:
    path = os.fspath(path)
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return path if rel.startswith(os.pardir + os.sep + os.pardir) else rel


def apart_rows(comp: Comparison) -> list[list[str]]:
    rows = []
    for run in comp.apart:
        rows.append(
            [
                _relative(run.folder),
                run.status,
                str(run.record.get("error") or DASH),
                str(run.epochs_done),
                run.data,
                run.backbone,
                run.attention,
                DASH if run.seed is None else str(run.seed),
            ]
        )
    return rows


# -------------------------------------------------------------------------------------------- terminal


IDENTITY_COLUMNS = ("data", "backbone", "attention", "sparsity", "variant", "n")


def _column_width(header: str, cells: list[str]) -> tuple[int, int]:
    """(narrowest width without breaking a word, width with every cell on one line; headers may wrap)."""
    narrow = max(len(word) for text in [header] + cells for word in (text.split() or [""]))
    wide = max([narrow] + [len(text) for text in cells])
    return narrow, wide


def _chunks(columns: list, widths: dict, available: int) -> list[list]:
    """Split the columns into tables that fit `available` characters, each repeating the identity columns.

    A difference and its p-value stay in the same table."""
    pad, edges = 3, 2  # SIMPLE_HEAD: a space each side of a cell and one between cells; the outer edges
    ident = [c for c in columns if c[0] in IDENTITY_COLUMNS]
    units: list[list] = []
    for col in columns:
        if col[0] in IDENTITY_COLUMNS:
            continue
        if col[0].startswith("p_") and units and units[-1][0][0] == "delta_" + col[0][2:]:
            units[-1].append(col)
        else:
            units.append([col])
    width = lambda cols: sum(widths[c[0]] + pad for c in cols)
    if width(columns) + edges <= available or not units:
        return [columns]
    base = width(ident) + edges
    chunks, current = [], []
    for unit in units:
        if current and base + width(current) + width(unit) > available:
            chunks.append(ident + current)
            current = []
        current += unit
    chunks.append(ident + current)
    return chunks


def render_terminal(comp: Comparison, console=None) -> None:
    """Print the results table, then the table of runs listed apart, to a rich Console.

    A table wider than the console is split into several tables that each repeat the identity columns
    (attention, variant, n, ...), so that no number is cut off or broken inside.
    """
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = console or Console()
    context = [v for v in (_constant(comp, "data"), _constant(comp, "backbone")) if v is not None]
    title = f"namexp compare: {len(comp.groups)} group(s) of completed runs"
    if context:
        title += " on " + " / ".join(context)
    if not comp.groups:
        console.print(Text("no completed runs match: nothing to average"))
    else:
        columns = display_columns(comp, compact=True)
        cells = {c[0]: [c[2](g, DASH, " ± ") for g in comp.groups] for c in columns}
        sizes = {c[0]: _column_width(c[1], cells[c[0]]) for c in columns}
        # Numbers stay on one line where the console allows it, else wrap at their spaces.
        one_line = {k: v[1] if k != "variant" else min(v[1], 40) for k, v in sizes.items()}
        chunks = _chunks(columns, one_line, console.width)
        if len(chunks) > 1:
            narrow = {k: v[0] if k != "variant" else min(v[1], 24) for k, v in sizes.items()}
            chunks = _chunks(columns, {k: max(narrow[k], min(one_line[k], 13)) for k in one_line}, console.width)
        for i, chunk in enumerate(chunks):
            table = Table(
                title=title + (f" ({i + 1}/{len(chunks)})" if len(chunks) > 1 else ""),
                header_style="bold",
                box=box.SIMPLE_HEAD,
            )
            for col_id, header, _, right in chunk:
                table.add_column(
                    Text(header),
                    justify="right" if right else "left",
                    overflow="fold",
                    max_width=40 if col_id == "variant" else None,
                )
            for r, group in enumerate(comp.groups):
                table.add_row(
                    *(Text(cells[c[0]][r]) for c in chunk), style="dim" if group.attention == BASELINE else None
                )
            console.print(table)
        lines = notes(comp)
        split = _constant(comp, "selection_split")
        if split is not None:
            lines.append(
                f"best on: {split} in every row"
                + (" (optimistic: best picked on the test split)." if split == "test" else ".")
            )
        for line in lines:
            console.print(Text(line, style="dim"))
    if comp.apart:
        apart = Table(
            title=f"{len(comp.apart)} run(s) listed apart (not completed, never averaged)",
            header_style="bold",
            box=box.SIMPLE_HEAD,
        )
        for header in APART_HEADERS:
            apart.add_column(Text(header), overflow="fold")
        for row in apart_rows(comp):
            apart.add_row(*(Text(c) for c in row))
        console.print(apart)


def terminal_text(comp: Comparison, width: int = 240) -> str:
    from rich.console import Console

    buffer = io.StringIO()
    console = Console(file=buffer, width=width, color_system=None, force_terminal=False, highlight=False)
    render_terminal(comp, console)
    return buffer.getvalue()


# -------------------------------------------------------------------------------------------- markdown


def render_markdown(comp: Comparison) -> str:
    columns = display_columns(comp)
    lines = [" ".join(notes(comp)), ""]
    if comp.groups:
        rows = [[fn(g, DASH, " ± ") for _, _, fn, _ in columns] for g in comp.groups]
        lines += markdown_table([header for _, header, _, _ in columns], rows)
    else:
        lines.append("No completed runs match.")
    if comp.apart:
        lines += ["", f"Runs listed apart (not completed, never averaged): {len(comp.apart)}", ""]
        lines += markdown_table(list(APART_HEADERS), apart_rows(comp))
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------- csv


def _plain(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return _round(value) if math.isfinite(value) else ""
    return value


def _round(value: float) -> float:
    """10 significant digits: drops floating-point noise (29.900000000000002 -> 29.9), keeps p-values."""
    return float(f"{value:.10g}")


def render_csv(comp: Comparison) -> str:
    """One row per group; every statistic in its own column (ids as in --sort/--filter)."""
    columns = comp.columns
    extra = ["masked_ratio"] if comp.masked_rankings else []
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns + extra + ["seeds"])
    for group in comp.groups:
        row = [_plain(group.stats.get(c)) for c in columns]
        row += [repr(comp.masked_ratio)] if extra else []
        row.append(" ".join(str(s) for s in group.seeds))
        writer.writerow(row)
    return buffer.getvalue()


# ----------------------------------------------------------------------------------------------- latex

_LATEX_ESCAPES = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def latex_escape(text: str) -> str:
    out = "".join(_LATEX_ESCAPES.get(ch, ch) for ch in text)
    return out.replace("Δ", r"$\Delta$").replace("–", "--").replace("≥", r"$\geq$")


def _ascii(text: str) -> str:
    for a, b in (("±", "+/-"), ("–", "--"), ("Δ", "Delta"), ("≥", ">="), ("\n", " ")):
        text = text.replace(a, b)
    return text


def render_latex(comp: Comparison) -> str:
    columns = display_columns(comp)
    spec = "".join("r" if right else "l" for _, _, _, right in columns)
    lines = [f"% {_ascii(line)}" for line in notes(comp)]
    lines += [
        f"\\begin{{tabular}}{{{spec}}}",
        "\\toprule",
        " & ".join(latex_escape(header) for _, header, _, _ in columns) + " \\\\",
        "\\midrule",
    ]
    for group in comp.groups:
        cells = []
        for _, _, fn, _ in columns:
            text = fn(group, "\x00", "\x01")  # placeholders, so escaping leaves the math alone
            cells.append(latex_escape(text).replace("\x01", r" $\pm$ ").replace("\x00", "--"))
        lines.append(" & ".join(cells) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}"]
    if comp.apart:
        lines.append(f"% runs listed apart (not completed, never averaged): {len(comp.apart)}")
        lines += ["% " + _ascii(", ".join(row)) for row in apart_rows(comp)]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------ json


def _jsonable(value: Any) -> Any:
    if value is MISSING:
        return None
    if isinstance(value, float):
        return _round(value) if math.isfinite(value) else None
    if isinstance(value, tuple):
        if value and all(isinstance(v, tuple) and len(v) == 2 and isinstance(v[0], str) for v in value):
            return {k: _jsonable(v) for k, v in value}
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return format_value(value)


def group_dict(group: Group, comp: Comparison) -> dict:
    out = {c: _jsonable(group.stats.get(c)) for c in comp.columns if c != "variant"}
    out["variant"] = {k: _jsonable(v) for k, v in group.variant.items()}
    out["variant_text"] = group.variant_text
    out["recipe"] = {k: _jsonable(v) for k, v in group.recipe.items()}
    out["label"] = group.label
    out["seeds"] = [_jsonable(s) for s in group.seeds]
    out["runs"] = [str(r.folder) for r in group.runs]
    out["values"] = {name: [_jsonable(v) for v in values] for name, values in group.values.items()}
    out["baseline"] = (
        None
        if group.baseline is None
        else {
            "label": group.baseline.label,
            "n": len(group.baseline.runs),
            "runs": [str(r.folder) for r in group.baseline.runs],
        }
    )
    return out


def run_dict(run: Run) -> dict:
    return {
        "run": str(run.folder),
        "status": run.status,
        "error": run.record.get("error"),
        "epochs_done": run.epochs_done,
        "data": run.record.get("data"),
        "backbone": run.record.get("backbone"),
        "attention": run.record.get("attention"),
        "seed": _jsonable(run.seed),
    }


def comparison_dict(comp: Comparison) -> dict:
    return {
        "format": 1,
        "masked_ratio": comp.masked_ratio,
        "notes": notes(comp),
        "columns": comp.columns,
        "groups": [group_dict(g, comp) for g in comp.groups],
        "apart": [run_dict(r) for r in comp.apart],
        "warnings": list(comp.warnings),
        "runs_read": comp.n_runs,
    }


def render_json(comp: Comparison) -> str:
    return json.dumps(comparison_dict(comp), indent=2, allow_nan=False, ensure_ascii=False) + "\n"


RENDERERS = {"markdown": render_markdown, "csv": render_csv, "latex": render_latex, "json": render_json}


def render(comp: Comparison, fmt: str) -> str:
    return RENDERERS[fmt](comp)
