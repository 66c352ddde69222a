"""Each module's own attention, from the gates `GateRecorder` captured (output / input at each site).

* Channel gates: per site, the gate's mean over images and positions per channel -- a heat strip with one row
  per site and one column per channel (sites with fewer channels leave the rest blank). Every gating module
  has one; for modules with a spatial part it is the channel gate times the spatial gate's mean.
* Spatial maps: per site and image, the gate's mean over channels, upsampled (bilinear) to the image's size
  and drawn over it. Only modules that gate positions have one (``SPATIAL_MODULES``); asking it of another
  (SE, ECA, channel NAM, ``half``) is a one-line error.
"""

from __future__ import annotations

import re

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from namexp.errors import UserError

MAP_KINDS = ("channel", "spatial")
SPATIAL_MODULES = frozenset({"cbam", "bam", "tam", "nam_spatial", "nam_full"})


def parse_maps(text: str) -> tuple[str, ...] | None:
    """--maps: auto (None: channel strips, spatial maps where the module has them), none, or a comma list."""
    if text == "auto":
        return None
    if text == "none":
        return ()
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    wrong = [k for k in kinds if k not in MAP_KINDS]
    if wrong or not kinds:
        raise UserError(f"--maps {text} is not valid: use auto, none, or a comma list of {', '.join(MAP_KINDS)}")
    return kinds


def kinds_for(module: str, requested: tuple[str, ...] | None, run: str) -> tuple[str, ...]:
    """The maps drawn for a run whose attention is `module`; a map it does not have, asked for, is an error."""
    if requested is None:
        return ("channel", "spatial") if module in SPATIAL_MODULES else ("channel",)
    if "spatial" in requested and module not in SPATIAL_MODULES:
        raise UserError(
            f"{run}: attention {module} has no spatial map (only {', '.join(sorted(SPATIAL_MODULES))} do): "
            "use --maps channel"
        )
    return requested


def choose_sites(available: list[str], requested: list[str] | None, run: str) -> list[str]:
    """The sites drawn: all, or the ones named with --sites (each must exist in the run)."""
    if not requested:
        return available
    missing = [s for s in requested if s not in available]
    if missing:
        raise UserError(f"{run} has no attention site {missing[0]}: choose --sites from {', '.join(available)}")
    return requested


def channel_strip(gates: dict[str, Tensor], sites: list[str]) -> np.ndarray:
    """(sites, max channels) of per-channel mean gates, NaN where a site has fewer channels."""
    rows = [gates[s].double().nanmean(dim=(0, 2, 3)) for s in sites]
    strip = np.full((len(rows), max(len(r) for r in rows)), np.nan)
    for i, row in enumerate(rows):
        strip[i, : len(row)] = row.numpy()
    return strip


def spatial_map(gate: Tensor, size: tuple[int, int]) -> Tensor:
    """(N, H, W) mean over channels of a site's gate, at the image's size; positions without a defined gate
    (every input channel 0) take the map's mean."""
    mean = gate.double().nanmean(dim=1, keepdim=True)
    mean = torch.where(mean.isfinite(), mean, mean.nanmean())
    return F.interpolate(mean.float(), size=size, mode="bilinear", align_corners=False)[:, 0]


def file_stem(name: str) -> str:
    """A run's name as a file name part."""
    return re.sub(r"[^\w.-]+", "_", name).strip("_") or "run"


def render_channel_strip(name: str, sites: list[str], strip: np.ndarray):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(min(2 + 0.12 * strip.shape[1], 14), 1 + 0.35 * len(sites)), dpi=80)
    ax = fig.subplots()
    shown = ax.imshow(np.ma.masked_invalid(strip), aspect="auto", cmap="viridis", interpolation="nearest")
    ax.set_yticks(range(len(sites)), sites, fontsize=7)
    ax.set_xlabel("channel")
    ax.set_title(f"channel gates, mean over images and positions: {name}", fontsize=9)
    fig.colorbar(shown, ax=ax, label="gate")
    fig.tight_layout()
    return fig


def render_spatial(name: str, shown_images: list[np.ndarray], sites: list[str], maps: list[Tensor]):
    """Rows: images; columns: sites; each cell the site's spatial gate over the image, its own colour range."""
    from matplotlib.figure import Figure

    rows, cols = len(shown_images), len(sites)
    fig = Figure(figsize=(1.9 * cols, 1.9 * rows + 0.4), dpi=80)
    axes = fig.subplots(rows, cols, squeeze=False)
    for i, image in enumerate(shown_images):
        for j, (site, site_maps) in enumerate(zip(sites, maps)):
            cell = site_maps[i].numpy()
            axes[i][j].imshow(image)
            axes[i][j].imshow(cell, cmap="jet", alpha=0.5)
            head = f"{site}\n" if i == 0 else ""
            axes[i][j].set_title(f"{head}{cell.min():.4f}-{cell.max():.4f}", fontsize=7)
            axes[i][j].axis("off")
    fig.suptitle(f"spatial gates (mean over channels; range per cell): {name}", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / fig.get_figheight()))  # half an inch on top for the title
    return fig
