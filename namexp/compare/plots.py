"""PNG plots of a comparison (matplotlib, drawn on Agg figures without pyplot's global state).

1. `test_top1_curves.png`: test top-1 error per epoch, one mean line with a ±std band per group, one panel
   per data set and backbone.
2. `final_top1_vs_params.png`: mean final top-1 error (± std error bars) against parameters, one labelled
   marker per group, one panel per data set and backbone.
3. `nam_weights.png`: the distribution of NAM's normalized weights per attention type, read from each run's
   `nam_weights.json` (`{"layers": {"<site>": {"channel": [...], "spatial": [...]}}}`); skipped with a
   note when no run has one.
"""

from __future__ import annotations

import io
import json
import math
import warnings as _warnings
from pathlib import Path

from namexp.compare.stats import Comparison, Group, format_value, number
from namexp.errors import UserError
from namexp.files import write_atomic

CURVES = "test_top1_curves.png"
PARAMS = "final_top1_vs_params.png"
NAM_WEIGHTS = "nam_weights.png"
DPI = 120


def _figure(panels: int, width: float = 6.4, height: float = 4.4):
    from matplotlib.figure import Figure

    cols = min(panels, 2)
    rows = math.ceil(panels / cols)
    fig = Figure(figsize=(width * cols, height * rows), dpi=DPI, layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[panels:]:
        ax.set_visible(False)
    return fig, list(axes[:panels])


def _colors(n: int):
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _panels(groups: list[Group]) -> dict[tuple[str, str], list[Group]]:
    panels: dict[tuple[str, str], list[Group]] = {}
    for group in groups:
        panels.setdefault((group.data, group.backbone), []).append(group)
    return panels


def _labeller(groups: list[Group]):
    from namexp.compare.render import short_keys

    names = short_keys(sorted({k for g in groups for k in g.variant}))
    # p=0 is named too where the same attention also appears with a penalty (else "nam" could be either)
    sparsities: dict[str, set] = {}
    for g in groups:
        sparsities.setdefault(g.attention, set()).add(g.sparsity)

    def label(group: Group) -> str:
        text = group.attention
        if group.sparsity or len(sparsities[group.attention]) > 1:
            text += f" p={group.sparsity:g}"
        if group.variant:
            text += " [" + ", ".join(f"{names[k]}={format_value(v)}" for k, v in group.variant.items()) + "]"
        return f"{text} (n={len(group.runs)})"

    return label


def curve_stats(group: Group):
    """(epochs, mean, std) of the test top-1 error per epoch over the group's runs (std 0 with one run)."""
    import numpy as np

    length = max((len(r.curve) for r in group.runs), default=0)
    values = np.full((len(group.runs), length), np.nan)
    for i, run in enumerate(group.runs):
        for j, v in enumerate(run.curve):
            x = number(v)
            if x is not None:
                values[i, j] = x
    counts = np.sum(~np.isnan(values), axis=0)
    keep = counts > 0
    with _warnings.catch_warnings():
        _warnings.simplefilter("ignore")
        mean = np.nanmean(values[:, keep], axis=0)
        std = np.where(counts[keep] > 1, np.nanstd(values[:, keep], axis=0, ddof=1), 0.0)
    epochs = np.arange(1, length + 1)[keep]
    return epochs, mean, np.nan_to_num(std)


def save_png(fig, path: Path) -> None:
    """The figure as a PNG at `path`, drawn in memory and written atomically (a failed write keeps the old plot)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    data = buffer.getvalue()
    write_atomic(path, lambda f: f.write(data), binary=True)


def plot_curves(comp: Comparison, path: Path) -> None:
    from matplotlib.ticker import MaxNLocator

    panels = _panels(comp.groups)
    label = _labeller(comp.groups)
    fig, axes = _figure(len(panels))
    for ax, ((data, backbone), groups) in zip(axes, panels.items()):
        for group, color in zip(groups, _colors(len(groups))):
            epochs, mean, std = curve_stats(group)
            if len(epochs) == 0:
                continue
            ax.plot(epochs, mean, color=color, linewidth=1.2, label=label(group))
            ax.fill_between(epochs, mean - std, mean + std, color=color, alpha=0.2, linewidth=0)
        ax.set_title(f"{data} / {backbone}")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("test top-1 error (%)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle("Test top-1 error per epoch (mean ± std over seeds)")
    save_png(fig, path)


def plot_params(comp: Comparison, path: Path) -> None:
    panels = _panels(comp.groups)
    label = _labeller(comp.groups)
    fig, axes = _figure(len(panels))
    for ax, ((data, backbone), groups) in zip(axes, panels.items()):
        for group, color in zip(groups, _colors(len(groups))):
            params, mean = group.stats.get("params"), group.stats.get("final_top1_mean")
            if params is None or mean is None:
                continue
            std = group.stats.get("final_top1_std") or 0.0
            x = params / 1e6
            ax.errorbar([x], [mean], yerr=[std], fmt="o", color=color, capsize=3)
            ax.annotate(label(group), (x, mean), textcoords="offset points", xytext=(5, 4), fontsize="small")
        ax.set_title(f"{data} / {backbone}")
        ax.margins(x=0.25, y=0.1)  # room for the labels
        ax.set_xlabel("parameters (M)")
        ax.set_ylabel("final test top-1 error (%)")
        ax.grid(True, alpha=0.3)
    fig.suptitle("Final top-1 error vs parameters (mean ± std over seeds)")
    save_png(fig, path)


def load_nam_weights(comp: Comparison) -> tuple[dict[str, dict], list[str]]:
    """{attention: {"channel": [...], "spatial": [...], "runs": n}} pooled over the compared runs, plus notes."""
    pooled: dict[str, dict] = {}
    notes: list[str] = []
    for group in comp.groups:
        for run in group.runs:
            path = run.nam_weights_path()
            if path is None:
                continue
            try:
                layers = json.loads(path.read_text(encoding="utf-8")).get("layers")
            except (OSError, ValueError, AttributeError) as exc:
                notes.append(f"ignoring {path}: unreadable or corrupt ({exc.__class__.__name__})")
                continue
            if not isinstance(layers, dict):
                notes.append(f"ignoring {path}: no 'layers' object")
                continue
            target = pooled.setdefault(group.attention, {"channel": [], "spatial": [], "runs": 0})
            target["runs"] += 1
            for site in layers.values():
                if not isinstance(site, dict):
                    continue
                for kind in ("channel", "spatial"):
                    values = site.get(kind)
                    if isinstance(values, list):
                        target[kind].extend(x for x in (number(v) for v in values) if x is not None)
    return {k: v for k, v in pooled.items() if v["channel"] or v["spatial"]}, notes


def plot_nam_weights(weights: dict[str, dict], path: Path) -> None:
    import numpy as np

    kinds = [k for k in ("channel", "spatial") if any(w[k] for w in weights.values())]
    fig, axes = _figure(len(kinds))
    for ax, kind in zip(axes, kinds):
        names = [a for a in weights if weights[a][kind]]
        bins = np.histogram_bin_edges(np.concatenate([np.asarray(weights[a][kind]) for a in names]), bins=50)
        for name, color in zip(names, _colors(len(names))):
            values = weights[name][kind]
            ax.hist(
                values,
                bins=bins,
                density=True,
                histtype="step",
                color=color,
                linewidth=1.3,
                label=f"{name} ({len(values)} weights, {weights[name]['runs']} run(s))",
            )
        ax.set_title(f"NAM {kind} weights")
        ax.set_xlabel(f"{kind} weight (as in nam_weights.json)")
        ax.set_ylabel("density")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle("Distribution of NAM weights per attention type")
    save_png(fig, path)


def plan_plots(comp: Comparison, out_dir: Path, force: bool = False) -> tuple[list[Path], dict, list[str]]:
    """The PNGs `write_plots` would write, the NAM weights and notes; UserError if one exists without force."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--plot {out_dir} is a file: give a folder for the plots")
    if not comp.groups:
        return [], {}, ["no completed runs to plot: no plots written"]
    weights, notes = load_nam_weights(comp)
    targets = [out_dir / CURVES, out_dir / PARAMS]
    if weights:
        targets.append(out_dir / NAM_WEIGHTS)
    else:
        notes.append("no nam_weights.json in the compared runs: skipped the NAM weight plot")
    existing = [str(t) for t in targets if t.exists()]
    if existing and not force:
        raise UserError(
            f"{', '.join(existing)} already exist(s): pass --force to overwrite, or choose another --plot folder"
        )
    return targets, weights, notes


def draw_plots(comp: Comparison, targets: list[Path], weights: dict) -> None:
    if not targets:
        return
    targets[0].parent.mkdir(parents=True, exist_ok=True)
    plot_curves(comp, targets[0])
    plot_params(comp, targets[1])
    if weights:
        plot_nam_weights(weights, targets[2])


def write_plots(comp: Comparison, out_dir: Path, force: bool = False) -> tuple[list[Path], list[str]]:
    """Write the PNGs into `out_dir`; returns (written files, notes). Refuses to overwrite without force."""
    targets, weights, notes = plan_plots(comp, out_dir, force)
    draw_plots(comp, targets, weights)
    return targets, notes
