"""What ONNX Runtime makes of each attention type's folded graph: the op counts after its CPU optimisations.

    python benchmarks/ort_nodes.py [--backbone resnet18] [--attentions none,nam,se]

Explains the deployment table in docs/benchmarks.md: ONNX Runtime runs a plain ResNet as fused convolutions
in its blocked (NCHWc) layout; an op it cannot run in that layout costs a conversion to NCHW and back
(ReorderOutput/ReorderInput) and stops the Conv+Add+Relu fusion around it.
"""

from __future__ import annotations

import argparse
import collections
import tempfile
from pathlib import Path

import onnx
import onnxruntime
import torch

from namexp.export.fold import fold_for_inference
from namexp.export.formats import FORMATS, ExportOptions
from namexp.models import build_model


def optimised_ops(backbone: str, attention: str, folder: Path, gate_form: str = "conv") -> collections.Counter:
    """The op counts of ONNX Runtime's optimised graph of the folded model (NAM's gate as namexp export writes
    it unless `gate_form` says otherwise; tests/test_export.py compares the two forms with it)."""
    model = build_model(backbone, attention, num_classes=100, image_size=32).eval()
    path = folder / f"{attention}-{gate_form}.onnx"
    FORMATS["onnx"].write(fold_for_inference(model, gate_form), torch.zeros(1, 3, 32, 32), path, ExportOptions())
    options = onnxruntime.SessionOptions()
    options.optimized_model_filepath = str(folder / f"{attention}-{gate_form}.optimised.onnx")
    options.log_severity_level = 3  # its warning that the saved graph is specific to this CPU is the point here
    onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return collections.Counter(node.op_type for node in onnx.load(options.optimized_model_filepath).graph.node)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--attentions", default="none,nam,nam_full,se,cbam,bam,tam,eca")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for attention in args.attentions.split(","):
            ops = optimised_ops(args.backbone, attention, Path(tmp))
            print(
                f"{args.backbone} + {attention}: {sum(ops.values())} nodes: "
                + ", ".join(f"{op} {n}" for op, n in ops.most_common())
            )


if __name__ == "__main__":
    main()
