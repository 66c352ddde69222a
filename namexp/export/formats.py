"""The export formats: how each writes a folded model to a file and how that file is run again to check it.

* ``onnx``: ``torch.onnx.export(..., dynamo=True)`` (the torch.export-based exporter; needs onnx and
  onnxscript), run back with ONNX Runtime. Needs the ``export`` extra.
* ``exported``: a ``torch.export`` ExportedProgram saved with ``torch.export.save`` (``.pt2``), loaded with
  ``torch.export.load``.
* ``torchscript``: ``torch.jit.trace`` (deprecated by PyTorch in favour of torch.export, kept for runtimes
  that still load TorchScript), loaded with ``torch.jit.load``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from namexp.errors import UserError

Runner = Callable[[Tensor], Tensor]
EXPORT_EXTRA = "pip install 'namexp[export]'"
MAX_DYNAMIC_BATCH = 4096


@dataclass(frozen=True)
class ExportOptions:
    batch: int = 1  # the example batch the graph is traced with (its fixed batch size unless dynamic_batch)
    dynamic_batch: bool = False
    opset: int | None = None  # ONNX opset; None: the exporter's default


@dataclass(frozen=True)
class ExportFormat:
    name: str
    suffix: str
    write: Callable[[nn.Module, Tensor, Path, ExportOptions], dict]
    load: Callable[[Path], Runner]


def _batch_dims(options: ExportOptions) -> tuple[dict[int, object], ...] | None:
    if not options.dynamic_batch:
        return None
    return ({0: torch.export.Dim("batch", min=1, max=MAX_DYNAMIC_BATCH)},)


def _write_exported(model: nn.Module, example: Tensor, path: Path, options: ExportOptions) -> dict:
    program = torch.export.export(model, (example,), dynamic_shapes=_batch_dims(options))
    torch.export.save(program, path)
    return {}


def _load_exported(path: Path) -> Runner:
    return torch.export.load(path).module()


def require_onnx() -> None:
    """ONNX export and its check need onnx, onnxscript and onnxruntime: the ``export`` extra."""
    import importlib.util

    missing = [m for m in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(m) is None]
    if missing:
        raise UserError(f"--format onnx needs {', '.join(missing)}, not installed: {EXPORT_EXTRA}")


def _write_onnx(model: nn.Module, example: Tensor, path: Path, options: ExportOptions) -> dict:
    import onnx

    torch.onnx.export(
        model,
        (example,),
        str(path),
        dynamo=True,
        opset_version=options.opset,
        dynamic_shapes=_batch_dims(options),
        input_names=["images"],
        output_names=["logits"],
        external_data=False,
        verbose=False,
    )
    opsets = onnx.load(str(path), load_external_data=False).opset_import
    return {"opset": next((o.version for o in opsets if o.domain in ("", "ai.onnx")), None)}


def onnx_providers() -> list[str]:
    """The ONNX Runtime providers namexp runs on here, best first: CUDA when ONNX Runtime has it, the CPU."""
    import onnxruntime

    wanted = ("CUDAExecutionProvider", "CPUExecutionProvider")
    return [p for p in wanted if p in onnxruntime.get_available_providers()]


def onnx_session(path: Path):
    """An ONNX Runtime session on the best provider here."""
    import onnxruntime

    return onnxruntime.InferenceSession(str(path), providers=onnx_providers())


def _load_onnx(path: Path) -> Runner:
    session = onnx_session(path)
    name = session.get_inputs()[0].name

    def run(images: Tensor) -> Tensor:
        return torch.from_numpy(session.run(None, {name: images.detach().cpu().numpy()})[0])

    return run


def _write_torchscript(model: nn.Module, example: Tensor, path: Path, options: ExportOptions) -> dict:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*deprecated.*", category=Warning)
        torch.jit.save(torch.jit.trace(model, example), str(path))
    return {}


def _load_torchscript(path: Path) -> Runner:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*deprecated.*", category=Warning)
        return torch.jit.load(str(path), map_location="cpu")


FORMATS = {
    f.name: f
    for f in (
        ExportFormat("onnx", ".onnx", _write_onnx, _load_onnx),
        ExportFormat("exported", ".pt2", _write_exported, _load_exported),
        ExportFormat("torchscript", ".ts.pt", _write_torchscript, _load_torchscript),
    )
}


def get_format(name: str) -> ExportFormat:
    if name not in FORMATS:
        raise UserError(f"--format {name} is not an export format: use {', '.join(FORMATS)}")
    if name == "onnx":
        require_onnx()
    return FORMATS[name]
