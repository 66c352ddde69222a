"""How close NAM's gate runs to the memory-traffic floor of any standalone implementation, on this machine.

NAM's channel gate in training, out = x · sigmoid(w ⊙ BN(x)), cannot do with fewer passes over its
activation than: forward, one read for the batch statistics and one read + one write for the output;
backward, one read of x and of the incoming gradient g for the two per-channel sums, then one more read of
both and a write of ∂L/∂x. This script times exactly that traffic with the cheapest ATen kernels into
preallocated buffers (``x.sum()``, ``copy_``, ``add(out=)``: no sigmoid, no allocation, so a lower bound
that no implementation reaches), that plus the arithmetic of one sigmoid forward and one backward (a
sigmoid pass's cost beyond a copy's), then the gate itself in each ``impl`` (forward + backward of every NAM
site of the model, nothing else), and puts both next to a whole training step of the backbone without
attention. All in one process, activations shaped as the model's NAM sites at the given batch.

Caveat: each kernel here runs on its own, so the activations sit in the CPU's caches as much as they fit
(480 MiB of L3 on the development VM: all of them); inside a training step they compete with the rest of
the step. Read the ratios between rows, and the step percentage as the order of magnitude it is.

    python benchmarks/nam_floor.py [--backbone resnet18] [--batch 128] [--repeats 15]     # ~2 min
"""

from __future__ import annotations

import argparse
import statistics

import torch

from namexp.bench.timing import synthetic_batch, timed
from namexp.models.attention.nam import IMPLS, NAMChannelGate
from namexp.models.build import build_model
from namexp.models.sites import attention_sites
from namexp.train import cpu_memory
from namexp.train.step import training_step

CPU = torch.device("cpu")


def median_ms(fn, repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    return statistics.median(timed(CPU, fn)[0] for _ in range(repeats)) * 1000


def site_shapes(backbone: str, batch: int, image_size: int) -> list[tuple[int, int, int, int]]:
    """(B, C, H, W) of every NAM site of ``backbone`` with attention=nam."""
    model = build_model(backbone, "nam", num_classes=100, image_size=image_size)
    return [(batch, s.channels, *s.spatial_size) for s in attention_sites(model) if s.module == "nam"]


def floor_ms(xs: list[torch.Tensor], gs: list[torch.Tensor], outs: list[torch.Tensor], repeats: int) -> dict:
    def read_x():
        for x in xs:
            x.sum()

    def read_x_and_g():
        for x, g in zip(xs, gs):
            x.sum(), g.sum()

    def read_write():
        for x, out in zip(xs, outs):
            out.copy_(x)

    def read_two_write_one():
        for x, g, out in zip(xs, gs, outs):
            torch.add(x, g, out=out)

    def sigmoid_read_write():
        for x, out in zip(xs, outs):
            torch.sigmoid(x, out=out)

    forward = median_ms(read_x, repeats) + median_ms(read_write, repeats)
    backward = median_ms(read_x_and_g, repeats) + median_ms(read_two_write_one, repeats)
    # The sigmoid's own arithmetic (exp, divide): what a sigmoid pass costs beyond a copy. Any gate pays it at
    # least once forward and once backward (recomputed there, or saved forward and read back).
    sigmoid = max(0.0, median_ms(sigmoid_read_write, repeats) - median_ms(read_write, repeats))
    return {"forward": forward, "backward": backward}, {"forward": forward + sigmoid, "backward": backward + sigmoid}


def gate_ms(impl: str, xs: list[torch.Tensor], gs: list[torch.Tensor], repeats: int) -> dict:
    torch.manual_seed(0)
    gates = [NAMChannelGate(x.shape[1], abs_weights=True, detach_weights=True, impl=impl) for x in xs]
    inputs = [x.detach().clone().requires_grad_() for x in xs]

    def forward():
        return [gate(x) for gate, x in zip(gates, inputs)]

    def forward_backward():
        torch.autograd.backward(forward(), gs)

    fwd = median_ms(forward, repeats)
    return {"forward": fwd, "backward": median_ms(forward_backward, repeats) - fwd}


def step_ms(backbone: str, batch: int, image_size: int, repeats: int) -> float:
    """One SGD `training_step` (bench's limit step) of the backbone without attention, batch in memory."""
    torch.manual_seed(0)
    model = build_model(backbone, "none", num_classes=100, image_size=image_size)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    images, labels = synthetic_batch(batch, image_size, 100, CPU, channels_last=False)
    return median_ms(lambda: training_step(model, images, labels, optimizer, None, "fp32", CPU), repeats, warmup=2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--impls", default=",".join(IMPLS), help=f"comma-separated, from {', '.join(IMPLS)}")
    args = parser.parse_args()
    cpu_memory.keep_freed_memory()  # as namexp's CPU runs do

    shapes = site_shapes(args.backbone, args.batch, args.image_size)
    xs = [torch.randn(shape) for shape in shapes]
    gs = [torch.randn(shape) for shape in shapes]
    outs = [torch.empty(shape) for shape in shapes]
    megabytes = sum(x.numel() * x.element_size() for x in xs) / 1e6
    step = step_ms(args.backbone, args.batch, args.image_size, max(5, args.repeats // 3))
    print(
        f"{args.backbone}, batch {args.batch}: {len(shapes)} NAM sites, {megabytes:.0f} MB of activation "
        f"per pass over all of them; a training step of {args.backbone} + none takes {step:,.0f} ms "
        f"({torch.get_num_threads()} threads)"
    )
    traffic, with_sigmoid = floor_ms(xs, gs, outs, args.repeats)
    rows = [("traffic floor (no sigmoid, no allocation)", traffic), ("floor + the sigmoid's arithmetic", with_sigmoid)]
    rows += [(f"gate, impl={impl}", gate_ms(impl, xs, gs, args.repeats)) for impl in args.impls.split(",")]
    floor = rows[0][1]["forward"] + rows[0][1]["backward"]
    print(f"{'':44s}{'forward':>10s}{'backward':>10s}{'total':>10s}{'x floor':>9s}{'% of step':>11s}")
    for name, t in rows:
        total = t["forward"] + t["backward"]
        print(
            f"{name:44s}{t['forward']:8.1f}ms{t['backward']:8.1f}ms{total:8.1f}ms{total / floor:9.2f}"
            f"{100 * total / step:10.1f}%"
        )


if __name__ == "__main__":
    main()
