"""`namexp export`: a run's model out of namexp, folded for inference, written, run back and checked.

Step by step: load the run (config recomposed from its folder, checkpoint verified) -> take the model to
the CPU in float32 -> fold it (``namexp.export.fold``) -> write it to a temporary file beside the output ->
load that file with its own runtime and check it against the unfolded PyTorch model on the run's test
images and random inputs (``namexp.export.check``) -> only then move it into place, with the check's
figures beside it in ``<output>.check.json``. A failing export or check leaves nothing behind and changes
nothing the user had.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from namexp.errors import UserError
from namexp.export.check import check_export, describe_failure, random_inputs
from namexp.export.formats import ExportFormat, ExportOptions, get_format
from namexp.files import check_output, new_file_mode, write_text_atomic

DEFAULT_CHECK_IMAGES = 256


@dataclass(frozen=True)
class ExportRequest:
    target: Path
    format: str = "onnx"
    output: Path | None = None
    which: str = "last"
    options: ExportOptions = ExportOptions()
    check_images: int = DEFAULT_CHECK_IMAGES
    force: bool = False

    def validate(self) -> None:
        if self.options.batch < 1:
            raise UserError(f"--batch {self.options.batch} is not valid: give a positive batch size")
        if self.check_images < 1:
            raise UserError(f"--check-images {self.check_images} is not valid: give a positive number of images")
        if self.options.opset is not None and self.format != "onnx":
            raise UserError(f"--opset applies to --format onnx only, not {self.format}: leave it out")


def default_output(checkpoint: Path, fmt: ExportFormat) -> Path:
    """`<run>/exports/<checkpoint>.<suffix>` for a run's checkpoint, else beside the checkpoint file."""
    from namexp.run.load import folder_of

    folder = folder_of(checkpoint)
    parent = folder.exports if folder is not None else checkpoint.resolve().parent
    return parent / f"{checkpoint.stem}{fmt.suffix}"


def check_record_path(output: Path) -> Path:
    return output.with_name(output.name + ".check.json")


def claim_output(output: Path, force: bool, fmt: ExportFormat) -> None:
    """Refuse a run's own files (even with --force), a suffix of another format, an existing file without
    --force; make sure the folder can take the file."""
    from namexp.run.layout import CHECKPOINTS_DIR, METRICS_FILE, RECORD_FILE

    if output.resolve().parent.name == CHECKPOINTS_DIR or output.name in (RECORD_FILE, METRICS_FILE):
        raise UserError(f"--output {output} is a run's own file: write the export elsewhere (default: RUN/exports/)")
    if not output.name.endswith(fmt.suffix):
        raise UserError(f"--output {output}: --format {fmt.name} writes a {fmt.suffix} file, name it so")
    for path in (output, check_record_path(output)):
        check_output(path, force, f"model{fmt.suffix}")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(
            f"cannot create the folder for {output}: {exc.strerror or exc}; choose another --output"
        ) from None


def dataset_images(cfg, count: int) -> torch.Tensor:
    """The first `count` images of the run's test split, with its eval transform, on the CPU."""
    from namexp.train.build import make_data

    data = make_data(cfg, torch.device("cpu"), with_train=False)
    batches, total = [], 0
    for images, _ in data.test:
        batches.append(images.float().contiguous())
        total += len(images)
        if total >= count:
            break
    return torch.cat(batches)[:count]


def write_checked(model, folded, fmt: ExportFormat, request: ExportRequest, output: Path, images) -> dict:
    """Write `folded` to a temporary file, check it, and move it to `output` only when the check passes."""
    options = request.options
    # A dynamic batch is traced at 2 or more (torch.export specialises a dimension of size 1); clone() so
    # that the example saved in a .pt2 file is one image, not a view of every check image.
    trace_batch = max(2, options.batch) if options.dynamic_batch else options.batch
    example = images[:1].expand(trace_batch, *images.shape[1:]).clone()
    fd, tmp_name = tempfile.mkstemp(prefix=f".{output.name}.", suffix=fmt.suffix, dir=output.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        try:
            details = fmt.write(folded, example, tmp, options)
        except OSError as exc:
            raise UserError(f"could not write {output}: {exc.strerror or exc}; nothing was written") from None
        except Exception as exc:
            reason = " ".join(str(exc).split())[:200]
            raise UserError(f"{fmt.name} export failed ({type(exc).__name__}: {reason}); nothing was written") from None
        check_batch = 64 if options.dynamic_batch else options.batch
        inputs = {"test images": images, "random inputs": random_inputs(images)}
        check = check_export(model, fmt.load(tmp), inputs, check_batch)
        if not check["passed"]:
            raise UserError(
                f"the {fmt.name} export differs from the PyTorch model ({describe_failure(check)}); nothing was written"
            )
        os.chmod(tmp, new_file_mode())  # mkstemp makes it owner-only; an export is shared like any file
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)
    return {**details, "check": check}


def run_export(request: ExportRequest, overrides: list[str]) -> int:
    from namexp.export.fold import fold_for_inference
    from namexp.run.load import load_run, resolve_checkpoint

    request.validate()
    fmt = get_format(request.format)
    checkpoint = resolve_checkpoint(request.target, request.which)
    output = (request.output or default_output(checkpoint, fmt)).expanduser()
    run = load_run(request.target, overrides, request.which)  # a damaged checkpoint stops it before any write
    claim_output(output, request.force, fmt)
    model = run.model.to(device="cpu", dtype=torch.float32, memory_format=torch.contiguous_format).eval()
    images = dataset_images(run.cfg, request.check_images)
    try:
        folded = fold_for_inference(model, gate_form="conv")  # the form ONNX Runtime runs fastest
    except ValueError as exc:
        raise UserError(f"cannot fold {run.checkpoint} for export: {exc}") from None
    result = write_checked(model, folded, fmt, request, output, images)
    record = {
        "file": str(output.resolve()), "format": fmt.name, "checkpoint": str(run.checkpoint.resolve()),
        "epoch": run.epochs_done, "backbone": run.cfg.backbone.name, "attention": run.cfg.attention.name,
        "data": run.cfg.data.name, "options": asdict(request.options), "folding": folded.folding,
        "input": {"layout": "NCHW float32, normalised: (pixel / 255 - mean) / std", "mean": list(run.cfg.data.mean),
                  "std": list(run.cfg.data.std), "image_size": run.cfg.data.image_size},
        "torch": torch.__version__, "time": datetime.now().isoformat(timespec="seconds"), **result,
    }  # fmt: skip
    write_text_atomic(check_record_path(output), json.dumps(record, indent=1) + "\n")
    _show(record)
    return 0


def _show(record: dict) -> None:
    table = Table(title=f"{record['backbone']} + {record['attention']} -> {record['format']}", show_header=False)
    table.add_row("file", record["file"])
    f = record["folding"]
    table.add_row("folded", f"{f['nam_gates']} NAM gates, {f['batchnorms_folded']} BatchNorms into conv/linear "
                  f"({f['batchnorms_left']} left)")  # fmt: skip
    for name, r in record["check"]["inputs"].items():
        table.add_row(
            f"check: {name}",
            f"{r['images']} images, max |Δ logits| {r['max_abs_diff']:.2e} (<= {r['tolerance']:.1e}), "
            f"top-1 agreement {r['top1_agreement']:.1%}",
        )
    Console().print(table)
    # The paths on lines of their own: a table cell may be cut to the terminal's width.
    print(f"wrote {record['file']}\ncheck record {check_record_path(Path(record['file']))}")
