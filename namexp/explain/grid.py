"""The Grad-CAM picture: one row per image, the image then one column per run, as a PNG (matplotlib)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import Tensor


@dataclass
class RunCams:
    """One run's column: its name, Grad-CAM maps (N, H, W), predicted classes and confidences."""

    name: str
    cams: Tensor
    predicted: Tensor
    confidence: Tensor


def display_image(image: Tensor) -> np.ndarray:
    """A normalised (C, H, W) image rescaled to [0, 1] for display, as (H, W, 3)."""
    x = image.float().cpu()
    x = (x - x.min()) / (x.max() - x.min()).clamp_min(1e-12)
    x = x.permute(1, 2, 0).numpy()
    return x if x.shape[2] == 3 else np.repeat(x[:, :, :1], 3, axis=2)


def render_grid(images: Tensor, labels: Tensor, classes: list[str], runs: list[RunCams]):
    """The grid as a matplotlib Figure (no pyplot: nothing global changes)."""
    from matplotlib.figure import Figure

    rows, cols = len(images), len(runs) + 1
    fig = Figure(figsize=(2.2 * cols, 2.2 * rows), dpi=80)
    axes = fig.subplots(rows, cols, squeeze=False)
    for i, image in enumerate(images):
        shown = display_image(image)
        axes[i][0].imshow(shown)
        axes[i][0].set_title(f"true: {classes[int(labels[i])]}", fontsize=8)
        for j, run in enumerate(runs, start=1):
            axes[i][j].imshow(shown)
            axes[i][j].imshow(run.cams[i].numpy(), cmap="jet", alpha=0.5, vmin=0, vmax=1)
            pred = classes[int(run.predicted[i])]
            title = f"{run.name}\n" if i == 0 else ""
            axes[i][j].set_title(f"{title}pred: {pred} ({float(run.confidence[i]):.2f})", fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    return fig
