"""One run's own attention maps (``namexp.explain.maps``), drawn as PNGs and logged to the run's TensorBoard."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from namexp.errors import UserError
from namexp.explain.gates import GateRecorder
from namexp.explain.maps import (
    channel_strip,
    choose_sites,
    file_stem,
    kinds_for,
    parse_maps,
    render_channel_strip,
    render_spatial,
    spatial_map,
)  # fmt: skip
from namexp.run.layout import RunFolder

TB_TAGS = {"channel": "explain/channel_gates", "spatial": "explain/spatial_gates"}


@dataclass
class RunMaps:
    name: str
    module: str  # the attention type, named in the figures' titles beside the run (a sweep's runs are numbers)
    folder: RunFolder
    sites: list[str]
    strip: np.ndarray | None = None
    spatial: list[Tensor] = field(default_factory=list)
    images: list[np.ndarray] = field(default_factory=list)


def run_maps(name: str, folder: RunFolder, recorder: GateRecorder, images: Tensor, maps: str, sites) -> RunMaps:
    """The maps of one run's recorded gates, checked against what its attention has (one-line errors)."""
    from namexp.explain.grid import display_image

    recorded = [s for s in recorder.sites if recorder.gates[s.site]]
    module = recorded[0].module if recorded else "none"
    requested = parse_maps(maps)
    if not recorded:
        if requested:  # asked for explicitly: nothing to draw is an error, not an empty picture
            raise UserError(f"{name}: attention {module} has no gate to map: use --maps none")
        return RunMaps(name, module, folder, [])
    kinds = kinds_for(module, requested, name)
    chosen = choose_sites([s.site for s in recorded], sites, name)
    gates = {s: torch.cat(recorder.gates[s]) for s in chosen}
    result = RunMaps(name, module, folder, chosen)
    if "channel" in kinds:
        result.strip = channel_strip(gates, chosen)
    if "spatial" in kinds:
        size = tuple(images.shape[-2:])
        result.spatial = [spatial_map(gates[s], size) for s in chosen]
        result.images = [display_image(image) for image in images]
    return result


def write_run_maps(output: Path, run: RunMaps) -> list[Path]:
    from namexp.analysis.report import figure_array, png_bytes
    from namexp.explain.report import log_images
    from namexp.files import write_atomic

    figures, title = {}, f"{run.module} ({run.name})"  # as the Grad-CAM grid names its columns
    if run.strip is not None:
        figures["channel"] = render_channel_strip(title, run.sites, run.strip)
    if run.spatial:
        figures["spatial"] = render_spatial(title, run.images, run.sites, run.spatial)
    written = []
    for kind, fig in figures.items():
        path = output / f"{kind}_gates_{file_stem(run.name)}.png"
        data = png_bytes(fig)
        write_atomic(path, lambda f, data=data: f.write(data), binary=True)
        log_images(run.folder.tensorboard, TB_TAGS[kind], figure_array(fig))
        written.append(path)
    return written
