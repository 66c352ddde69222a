"""NAM's folded gate in ONNX Runtime, in both forms of a·x + b, against `none`: latency and throughput.

    python benchmarks/nam_gate_forms.py [--backbone resnet18] [--rounds 7]

The `affine` form (elementwise multiply-add) drops every gate out of ONNX Runtime's blocked layout; the `conv`
form (a depthwise 1×1 convolution, what `namexp export` writes) keeps it there with the sigmoid fused
(namexp/export/fold.py). The three models run in rotating order within each round; medians over rounds.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import onnxruntime
import torch

from namexp.bench.timing import rotate
from namexp.export.fold import fold_for_inference
from namexp.export.formats import FORMATS, ExportOptions
from namexp.models import build_model
from namexp.tables import markdown_table

CONTENDERS = (("none", "affine"), ("nam", "affine"), ("nam", "conv"))


def session(backbone: str, attention: str, form: str, folder: Path) -> onnxruntime.InferenceSession:
    torch.manual_seed(0)
    model = build_model(backbone, attention, num_classes=100, image_size=32).eval()
    path = folder / f"{attention}-{form}.onnx"
    options = ExportOptions(batch=2, dynamic_batch=True)
    FORMATS["onnx"].write(fold_for_inference(model, form), torch.zeros(2, 3, 32, 32), path, options)
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def ms_per_call(sess: onnxruntime.InferenceSession, images, calls: int) -> float:
    feed = {sess.get_inputs()[0].name: images}
    start = time.perf_counter()
    for _ in range(calls):
        sess.run(None, feed)
    return (time.perf_counter() - start) / calls * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        sessions = [session(args.backbone, a, f, Path(tmp)) for a, f in CONTENDERS]
        for batch, calls in ((1, 50), (64, 3)):
            images = torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(0)).numpy()
            for sess in sessions:
                ms_per_call(sess, images, 3)  # first calls pick kernels
            samples = [[] for _ in sessions]
            for r in range(args.rounds):
                for i in rotate(list(range(len(sessions))), r):
                    samples[i].append(ms_per_call(sessions[i], images, calls))
            medians = [statistics.median(s) for s in samples]
            for (attention, form), ms in zip(CONTENDERS, medians):
                rows.append(
                    [args.backbone, batch, attention, form, f"{ms:.2f}", f"{(ms / medians[0] - 1) * 100:+.1f} %"]
                )
    header = ["backbone", "batch", "attention", "gate form", "ms per batch (median)", "vs none"]
    print("\n".join(markdown_table(header, rows)))


if __name__ == "__main__":
    main()
