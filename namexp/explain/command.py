"""`namexp explain RUN...`: attention diagnostics per site, a Grad-CAM grid, and the images in TensorBoard.

Every run is shown the same images: the first N of a fixed, seeded, class-balanced selection of its split
(``namexp.explain.images``). Runs with another backbone or dataset go to a grid of their own, never mixed.
Outputs go to ``<run>/explain/`` (one run) or ``--output DIR``; existing ones stay unless ``--force``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from namexp.errors import UserError
from namexp.explain.gates import SiteGate
from namexp.explain.grid import RunCams
from namexp.explain.inputs import expand_runs, is_run_folder
from namexp.explain.maps import parse_maps
from namexp.run.layout import RunFolder

OUTPUT_FILES = ("diagnostics.json", "diagnostics.md")
OUTPUT_GLOBS = ("gradcam*.png", "channel_gates_*.png", "spatial_gates_*.png")
TB_TAG = "explain/gradcam"


@dataclass(frozen=True)
class ExplainRequest:
    runs: list[Path]
    images: int = 8
    split: str = "test"
    output: Path | None = None
    force: bool = False
    which: str = "last"
    maps: str = "auto"  # channel strips and spatial maps: auto, none, or a comma list of channel, spatial
    sites: list[str] | None = None  # the sites the maps show (default: all)
    indices: list[int] | None = None  # these images of the split instead of the balanced selection
    seed: int | None = None  # a sweep folder: each group's run with this seed (default: its first)

    def validate(self) -> list[Path]:
        """The run folders to explain (sweeps expanded), or a one-line error."""
        parse_maps(self.maps)
        if not self.runs:
            raise UserError("give at least one run folder")
        if self.images < 1:
            raise UserError(f"--images {self.images} is not valid: give a positive number of images")
        if self.split not in ("test", "val"):
            raise UserError(f"--split {self.split} is not valid: use test or val")
        runs = expand_runs(self.runs, self.seed)
        if self.output is None and len(self.runs) > 1:
            raise UserError("several runs: give --output DIR for the shared outputs")
        return runs


@dataclass
class Group:
    """Runs that share a backbone and a dataset: one grid."""

    key: tuple
    images: object = None
    labels: object = None
    classes: list[str] = field(default_factory=list)
    columns: list[RunCams] = field(default_factory=list)
    folders: list[RunFolder] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)  # the run names of its columns, in order


def output_dir(request: ExplainRequest) -> Path:
    """--output, else the one run's explain/ folder, else the one sweep's."""
    if request.output is not None:
        return request.output.expanduser()
    given = request.runs[0].expanduser()
    return RunFolder(given).explain if is_run_folder(given) else given / "explain"


def claim_output(output: Path, force: bool) -> None:
    """Refuse existing outputs without --force. The folder is made only when the first file is written, so a
    refused command (bad images, a damaged checkpoint) leaves nothing behind."""
    if output.exists() and not output.is_dir():
        raise UserError(f"--output {output} is a file: give a folder")
    globbed = [p for pattern in OUTPUT_GLOBS for p in output.glob(pattern)]
    existing = [p for p in (*(output / n for n in OUTPUT_FILES), *globbed) if p.exists()]
    if existing and not force:
        raise UserError(f"{existing[0]} already exists: choose another --output or add --force to overwrite it")


def run_names(runs: list[Path]) -> list[str]:
    """Folder names, or the paths given when two share a name (numbered when a run is given twice)."""
    names = [run.expanduser().resolve().name for run in runs]
    if len(set(names)) < len(names):
        names = [str(run) for run in runs]
    if len(set(names)) < len(names):
        names = [f"{name} #{i}" for i, name in enumerate(names, start=1)]
    return names


def explain_one(run: Path, name: str, request: ExplainRequest, groups: dict, maps: list) -> list[SiteGate]:
    """Diagnostics of one run; its Grad-CAM column goes into the group of its backbone and dataset, its own
    attention maps into `maps`."""
    from namexp.explain.gates import record_gates
    from namexp.explain.gradcam import gradcam, predictions
    from namexp.explain.images import select_images
    from namexp.explain.module_maps import run_maps
    from namexp.run.load import load_run

    loaded = load_run(run, [], request.which)
    cfg, model = loaded.cfg, loaded.model
    key = (cfg.backbone.name, cfg.data.name, cfg.data.num_classes, cfg.data.image_size)
    group = groups.setdefault(key, Group(key))
    if group.images is None:
        group.images, group.labels, group.classes = select_images(
            cfg, loaded.device, request.images, request.split, request.indices
        )
    images = group.images.to(loaded.device)
    recorder = record_gates(model, images)
    sites = recorder.summaries()
    maps.append(run_maps(name, RunFolder(run.expanduser()), recorder, group.images, request.maps, request.sites))
    predicted, confidence = predictions(model, images)
    # The map of the true class (what the readers compare across modules), whatever was predicted;
    # the column is named by what tells runs apart: the attention type, then the folder.
    cams = gradcam(model, images, group.labels.to(loaded.device))
    group.columns.append(RunCams(f"{cfg.attention.name} ({name})", cams, predicted, confidence))
    group.folders.append(RunFolder(run.expanduser()))
    group.runs.append(name)
    return sites


def grid_name(group: Group, index: int, several: bool) -> str:
    """gradcam.png, or with several groups gradcam_<n>_<backbone>_<data>.png (n: the group's order, from 1)."""
    backbone, data = group.key[0].replace("/", "-"), group.key[1]
    return f"gradcam_{index}_{backbone}_{data}.png" if several else "gradcam.png"


def grid_files(groups: dict) -> dict[str, Group]:
    """Each group's grid file name, in the order the runs were given."""
    several = len(groups) > 1
    return {grid_name(group, index, several): group for index, group in enumerate(groups.values(), start=1)}


def write_grids(output: Path, grids: dict[str, Group]) -> list[Path]:
    from namexp.analysis.report import figure_array, png_bytes
    from namexp.explain.grid import render_grid
    from namexp.explain.report import log_images
    from namexp.files import write_atomic

    written = []
    for name, group in grids.items():
        fig = render_grid(group.images, group.labels, group.classes, group.columns)
        path = output / name
        data = png_bytes(fig)
        write_atomic(path, lambda f, data=data: f.write(data), binary=True)
        image = figure_array(fig)
        for folder in group.folders:
            log_images(folder.tensorboard, TB_TAG, image)
        written.append(path)
    return written


def write_maps(output: Path, maps: list) -> list[Path]:
    from namexp.explain.module_maps import write_run_maps

    return [path for run in maps for path in write_run_maps(output, run)]


def run_explain(request: ExplainRequest) -> int:
    from namexp.explain.gradcam import require_captum
    from namexp.explain.report import print_diagnostics, write_diagnostics

    runs = request.validate()
    require_captum()
    output = output_dir(request)
    claim_output(output, request.force)
    groups: dict = {}
    maps: list = []
    diagnostics = {name: explain_one(run, name, request, groups, maps) for run, name in zip(runs, run_names(runs))}
    count = len(request.indices) if request.indices else request.images
    files = grid_files(groups)
    meta = {"images": count, "indices": request.indices, "split": request.split, "checkpoint": request.which}
    meta["grids"] = {name: group.runs for name, group in files.items()}
    write_diagnostics(output, diagnostics, meta)
    grids = write_grids(output, files)
    grids += write_maps(output, maps)
    print_diagnostics(diagnostics)
    print(f"wrote {output / 'diagnostics.json'}, {output / 'diagnostics.md'}, {', '.join(str(g) for g in grids)}")
    return 0
