"""What `namexp analyze` shows and writes: tables (terminal, Markdown, CSV, JSON), PNG plots, TensorBoard.

Formats:
- terminal (rich): the masking table (one row per ratio, one column per ranking; random as mean ± std over
  its seeds; fine-tuned results in their own columns) and the per-layer weight table;
- markdown: the same two tables as pipe tables, with notes;
- csv: the masking summary, one row per (ranking, ratio, finetuned) with mean and std in separate columns
  (the per-layer statistics are in the JSON record);
- json: the whole analysis record, as written to `analysis/analysis.json`.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from typing import Any

from namexp.analysis.masking import RANKINGS
from namexp.compare.stats import mean_std
from namexp.tables import markdown_table

FORMATS = ("markdown", "csv", "json")
SUFFIXES = {".md": "markdown", ".markdown": "markdown", ".csv": "csv", ".json": "json"}
DASH = "–"
MASKING_PNG = "masking.png"
WEIGHTS_PNG = "weights.png"
CSV_COLUMNS = (
    "ranking",
    "ratio",
    "finetuned",
    "n",
    "seeds",
    "top1_err_mean",
    "top1_err_std",
    "top5_err_mean",
    "delta_top1_err",
    "masked_channels",
    "total_channels",
)
COLORS = {"nam": "tab:red", "bn": "tab:blue", "random": "tab:gray"}


def summary_rows(entries: Sequence[dict], unmasked_top1: float | None) -> list[dict]:
    """One row per (ranking, ratio, finetuned): mean and sample std (ddof=1) over random seeds."""
    groups: dict[tuple, list[dict]] = {}
    for e in entries:
        groups.setdefault((e["ranking"], float(e["ratio"]), bool(e["finetuned"])), []).append(e)
    order = lambda k: (k[2], RANKINGS.index(k[0]) if k[0] in RANKINGS else len(RANKINGS), k[0], k[1])
    rows = []
    for key in sorted(groups, key=order):
        ranking, ratio, finetuned = key
        members = groups[key]
        top1, top1_std = mean_std([m["test_top1_err"] for m in members])
        top5, _ = mean_std([m["test_top5_err"] for m in members])
        seeds = [m["seed"] for m in members if m.get("seed") is not None]
        rows.append(
            {
                "ranking": ranking,
                "ratio": ratio,
                "finetuned": finetuned,
                "n": len(members),
                "seeds": ",".join(str(s) for s in seeds),
                "top1_err_mean": top1,
                "top1_err_std": top1_std,
                "top5_err_mean": top5,
                "delta_top1_err": None if unmasked_top1 is None or top1 is None else top1 - unmasked_top1,
                "masked_channels": members[0].get("masked_channels"),
                "total_channels": members[0].get("total_channels"),
            }
        )
    return rows


# ------------------------------------------------------------------------------------------------ text


def _f(x: float | None, digits: int = 2) -> str:
    return DASH if x is None else f"{x:.{digits}f}"


def _pm(mean: float | None, std: float | None) -> str:
    if mean is None:
        return DASH
    return f"{mean:.2f}" if std is None else f"{mean:.2f} ± {std:.2f}"


def _pct(ratio: float) -> str:
    return f"{ratio * 100:g}%"


def masking_grid(record: dict) -> tuple[list[str], list[list[str]]]:
    """The masking table: rows = ratios, columns = rankings (then fine-tuned rankings)."""
    rows = record["summary"]
    plain = [r for r in RANKINGS if any(x["ranking"] == r and not x["finetuned"] for x in rows)]
    tuned = [r for r in RANKINGS if any(x["ranking"] == r and x["finetuned"] for x in rows)]
    ratios = sorted({x["ratio"] for x in rows})
    lookup = {(x["ranking"], x["ratio"], x["finetuned"]): x for x in rows}
    headers = ["masked", "channels"] + [f"err {r}" for r in plain] + [f"err {r} fine-tuned" for r in tuned]
    table = []
    for ratio in ratios:
        any_row = next(x for x in rows if x["ratio"] == ratio)
        line = [_pct(ratio), f"{any_row['masked_channels']}/{any_row['total_channels']}"]
        for finetuned, names in ((False, plain), (True, tuned)):
            for r in names:
                x = lookup.get((r, ratio, finetuned))
                line.append(DASH if x is None else _pm(x["top1_err_mean"], x["top1_err_std"]))
        table.append(line)
    return headers, table


def layer_grid(record: dict) -> tuple[list[str], list[list[str]]]:
    """Per-layer table: NAM channel weights in units of 1/C, shares below thresholds, mean gate, BN |γ| share."""
    thresholds = record["config"]["thresholds"]
    keys = [f"{t:g}" for t in thresholds]
    headers = (
        ["site", "C", "part", "min·n", "median·n", "max·n"]
        + [f"< {k}/n" for k in keys]
        + ["gate mean"]
        + [f"bn |γ| < {k}/n" for k in keys]
    )
    table = []
    for layer in record["layers"]:
        bn = layer.get("bn") or {}
        parts = layer["nam"] or {"-": None}
        for part, stats in parts.items():
            row = [layer["site"], str(layer["channels"]), part]
            if stats is None:
                row += [DASH] * (3 + len(keys) + 1)
            else:
                rel = stats["relative"]
                row += [_f(rel["min"]), _f(rel["median"]), _f(rel["max"])]
                row += [f"{100 * stats['below'][k]:.0f}%" for k in keys]
                row.append(_f(stats.get("gate_mean"), 3))
            row += [f"{100 * bn['below'][k]:.0f}%" if bn and part in ("channel", "-") else DASH for k in keys]
            table.append(row)
    return headers, table


def notes(record: dict) -> list[str]:
    cfg = record["config"]
    unmasked = record["unmasked"]
    lines = [
        f"Test top-1 error in % on {record['unmasked']['images']} test images ({record['checkpoint_which']} checkpoint, epoch "
        f"{record['epoch']}); unmasked: {unmasked['test_top1_err']:.2f}%.",
        "Masked: at every block-level attention site the floor(ratio·C) lowest-ranked channels of the site's output are "
        "set to 0 (for NAM: the gate set to 0), ranked per layer. nam: NAM's own weight |γ|/Σ|γ|; bn: |γ| of the "
        f"backbone BatchNorm before the site; random: mean ± std over seeds {cfg['random_seeds']}.",
    ]
    if cfg["finetune_epochs"] and cfg["finetune_ratios"]:
        lines.append(
            f"Fine-tuned: {cfg['finetune_epochs']} epoch(s) with the masks in place, {cfg['finetune_optimizer']} lr "
            f"{cfg['finetune_lr']:g} (cosine to 0), no sparsity penalty, on a copy of the model (random: seed "
            f"{cfg['random_seeds'][0] if cfg['random_seeds'] else DASH})."
        )
    lines.append(
        "Weights: NAM's normalised weights in units of the uniform weight 1/n (n = channels, or pixels for the "
        "spatial part); '< t/n' = share of weights below t/n; gate mean = mean of sigmoid(w ⊙ BN(F)) on the "
        "test images (eval mode); bn |γ| = the preceding backbone BatchNorm's |γ| normalised the same way."
    )
    return lines


def render_markdown(record: dict) -> str:
    out = [f"# Analysis of {record['backbone']} + {record['attention']} on {record['data']}", "", "## Masking", ""]
    out += markdown_table(*masking_grid(record))
    headers, rows = layer_grid(record)
    out += ["", "## Layers", ""]
    out += markdown_table(headers, rows)
    out += [""] + [f"- {line}" for line in notes(record)]
    return "\n".join(out) + "\n"


def render_csv(record: dict) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in record["summary"]:
        writer.writerow(
            [
                ""
                if row[c] is None
                else (
                    str(row[c]).lower()
                    if isinstance(row[c], bool)
                    else (repr(row[c]) if isinstance(row[c], float) else row[c])
                )
                for c in CSV_COLUMNS
            ]
        )
    return buf.getvalue()


def jsonable(value: Any) -> Any:
    """NaN/inf -> None, tuples -> lists, recursively (json.dumps(allow_nan=False) must accept the result)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def render_json(record: dict) -> str:
    return json.dumps(jsonable(record), indent=1, allow_nan=False) + "\n"


def render(record: dict, fmt: str) -> str:
    return {"markdown": render_markdown, "csv": render_csv, "json": render_json}[fmt](record)


def render_terminal(record: dict, console) -> None:
    from rich.table import Table

    headers, rows = masking_grid(record)
    table = Table(
        title=f"Masked channels: {record['backbone']} + {record['attention']} on {record['data']} (test top-1 error %)"
    )
    for i, h in enumerate(headers):
        table.add_column(h, justify="left" if i < 2 else "right")
    for r in rows:
        table.add_row(*r)
    console.print(table)
    headers, rows = layer_grid(record)
    layers = Table(title="Per-layer weights (units of the uniform weight 1/n)")
    for i, h in enumerate(headers):
        layers.add_column(h, justify="left" if i < 3 else "right")
    for r in rows:
        layers.add_row(*r)
    console.print(layers)
    for line in notes(record):
        console.print(line, markup=False, highlight=False)


# ----------------------------------------------------------------------------------------------- plots


def masking_figure(record: dict):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.4), dpi=120, layout="constrained")
    ax = fig.subplots()
    rows = record["summary"]
    for ranking in RANKINGS:
        plain = sorted((r for r in rows if r["ranking"] == ranking and not r["finetuned"]), key=lambda r: r["ratio"])
        color = COLORS[ranking]
        if plain:
            x = [100 * r["ratio"] for r in plain]
            y = [r["top1_err_mean"] for r in plain]
            label = ranking if ranking != "random" else f"random (mean ± std, {plain[0]['n']} seeds)"
            ax.plot(x, y, marker="o", color=color, label=label)
            if ranking == "random":
                std = [r["top1_err_std"] or 0.0 for r in plain]
                ax.fill_between(
                    x, [a - s for a, s in zip(y, std)], [a + s for a, s in zip(y, std)], color=color, alpha=0.25
                )
        tuned = sorted((r for r in rows if r["ranking"] == ranking and r["finetuned"]), key=lambda r: r["ratio"])
        if tuned:
            ax.plot(
                [100 * r["ratio"] for r in tuned],
                [r["top1_err_mean"] for r in tuned],
                linestyle="none",
                marker="*",
                markersize=13,
                markeredgecolor="black",
                color=color,
                label=f"{ranking} fine-tuned",
            )
    ax.axhline(record["unmasked"]["test_top1_err"], color="black", linestyle=":", linewidth=1, label="unmasked")
    ax.set_xlabel("channels masked per layer (%)")
    ax.set_ylabel("test top-1 error (%)")
    ax.set_title(
        f"{record['backbone']} + {record['attention']} ({record['data']}, epoch {record['epoch']})", fontsize=10
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def weights_figure(record: dict, weights: dict):
    """One panel per site: NAM channel (and spatial) weights and the preceding BN's normalised |γ|, in units of 1/n."""
    from matplotlib.figure import Figure

    layers = record["layers"]
    cols = min(4, max(1, len(layers)))
    rows = max(1, math.ceil(len(layers) / cols))
    fig = Figure(figsize=(3.2 * cols, 2.6 * rows), dpi=110, layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[len(layers) :]:
        ax.set_visible(False)
    thresholds = record["config"]["thresholds"]
    for ax, layer in zip(axes, layers):
        series = {k: [v * len(w) for v in w] for k, w in weights.get(layer["site"], {}).items() if w}
        top = max([max(v) for v in series.values()] + [max(thresholds, default=1.0), 1.0])
        bins = [top * 1.05 * i / 40 for i in range(41)]  # shared by the series of a panel, from 0
        for part, color in (("channel", "tab:red"), ("spatial", "tab:orange")):
            if part in series:
                ax.hist(series[part], bins=bins, color=color, alpha=0.6, label=f"NAM {part}")
        if "bn" in series:
            ax.hist(series["bn"], bins=bins, histtype="step", color="tab:blue", label="BN |γ|")
        for t in thresholds:
            ax.axvline(t, color="black", linestyle=":", linewidth=0.8)
        ax.set_title(layer["site"], fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_xlabel("weight × n (1 = uniform)", fontsize=7)
    if layers:
        axes[0].legend(fontsize=6)
    fig.suptitle(f"{record['backbone']} + {record['attention']}: normalised weights per layer", fontsize=10)
    return fig


def png_bytes(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def figure_array(fig):
    """An (H, W, 3) uint8 array of a figure (for TensorBoard), drawn with Agg, no pyplot."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[:, :, :3].copy()


# ---------------------------------------------------------------------------------------- TensorBoard


def log_tensorboard(tb_dir, record: dict, figures: dict) -> None:
    """Scalars (step = masked ratio in %), per-layer shares (step = checkpoint epoch), the figures and a text table.

    A new SummaryWriter on the run's tb/ folder writes a new events file beside the training's; nothing
    existing is rewritten.
    """
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(tb_dir))
    try:
        for row in record["summary"]:
            step = int(round(100 * row["ratio"]))
            kind = "finetuned_top1_err" if row["finetuned"] else "masked_top1_err"
            if row["top1_err_mean"] is not None:
                writer.add_scalar(f"analysis/{kind}/{row['ranking']}", row["top1_err_mean"], step)
            if row["top1_err_std"] is not None:
                writer.add_scalar(f"analysis/{kind}_std/{row['ranking']}", row["top1_err_std"], step)
        for e in record["masking"]:
            if e["ranking"] == "random" and not e["finetuned"]:
                writer.add_scalar(
                    f"analysis/masked_top1_err/random_seed{e['seed']}", e["test_top1_err"], int(round(100 * e["ratio"]))
                )
        epoch = int(record["epoch"])
        for layer in record["layers"]:
            for part, stats in layer["nam"].items():
                for key, share in stats["below"].items():
                    writer.add_scalar(f"analysis/nam_below_{key}/{layer['site']}/{part}", share, epoch)
                if stats.get("gate_mean") is not None:
                    writer.add_scalar(f"analysis/gate_mean/{layer['site']}/{part}", stats["gate_mean"], epoch)
        for tag, fig in figures.items():
            writer.add_image(f"analysis/{tag}", figure_array(fig), epoch, dataformats="HWC")
        writer.add_text("analysis/masking", "\n".join(markdown_table(*masking_grid(record))), epoch)
    finally:
        writer.flush()
        writer.close()
