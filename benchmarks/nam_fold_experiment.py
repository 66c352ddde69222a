"""Experiment (not used by namexp): NAM's batch statistics taken from the BatchNorm before it.

In a ResNet block NAM's input is bn2's output x = γ₂·x̂ + β₂, whose batch mean is β₂ and whose biased
batch variance is γ₂²·σ²/(σ²+ε₂) exactly (σ² = the batch variance of bn2's input). So NAM's BatchNorm needs
no statistics pass of its own: its mean and variance follow from bn2's. The function of the block is the
same, hence so are the gradients; ``--check`` shows it in float64.

Under ``torch.compile`` this removes one sweep over the activation in the forward. ``--profile`` measures
what it buys on ResNet-18: inductor's kernel time per training step for ``none``, ``nam`` (the default
fused gate) and ``nam`` folded, over interleaved profiled steps. On the 2-core development CPU, NAM's
kernels cost about +130 ms a step over ``none``; folding saves 20-40 ms of it, all in the forward
(docs/benchmarks.md): still above 3 % of a ~1.9 s step, and it would make NAM take over its block's
BatchNorm (``namexp analyze`` records gates through NAM's forward pre-hooks), so namexp does not use it.

    python benchmarks/nam_fold_experiment.py --check
    python benchmarks/nam_fold_experiment.py --profile [--steps 6]      # ~5 min on 2 cores
"""

from __future__ import annotations

import argparse
import collections
import types

import torch
import torch.nn.functional as F

from namexp.models.backbones.resnet import BasicBlock
from namexp.models.build import build_model


def bn_then_folded_nam(h, bn, gate):
    """gate(bn(h)) for NAM's channel gate, with NAM's batch statistics derived from bn's."""
    nam_bn, shape, w = gate.bn, (1, -1, 1, 1), gate.weights()
    if bn.training:
        var, mean = torch.var_mean(h, dim=(0, 2, 3), correction=0)
        invstd = torch.rsqrt(var + bn.eps)
        nam_mean, nam_var = bn.bias, bn.weight.square() * var * invstd.square()
        n = h.numel() / h.shape[1]
        with torch.no_grad():  # running statistics as nn.BatchNorm updates them (momentum, unbiased variance)
            for module, m, v in ((bn, mean, var), (nam_bn, nam_mean, nam_var)):
                module.num_batches_tracked.add_(1)
                module.running_mean.lerp_(m.detach(), module.momentum)
                module.running_var.lerp_(v.detach() * n / (n - 1), module.momentum)
    else:
        mean, invstd = bn.running_mean, torch.rsqrt(bn.running_var + bn.eps)
        nam_mean, nam_var = nam_bn.running_mean, nam_bn.running_var
    scale = bn.weight * invstd
    x = h * scale.view(shape) + (bn.bias - mean * scale).view(shape)
    nam_scale = w * nam_bn.weight * torch.rsqrt(nam_var + nam_bn.eps)
    z = x * nam_scale.view(shape) + (w * nam_bn.bias - nam_mean * nam_scale).view(shape)
    return torch.sigmoid(z) * x


def _folded_block_forward(self, x):
    identity = x if self.downsample is None else self.downsample(x)
    out = self.relu(self.bn1(self.conv1(x)))
    out = bn_then_folded_nam(self.conv2(out), self.bn2, self.attention.channel)
    return self.relu(out + identity)


def make(kind: str, impl: str = "fused"):
    """ResNet-18 (CIFAR stem) with attention none, nam, or nam folded into bn2 ("fold")."""
    torch.manual_seed(0)
    attention = "none" if kind == "none" else "nam"
    options = {"impl": impl} if attention == "nam" else None
    model = build_model("resnet18", attention, num_classes=100, image_size=32, attention_options=options)
    if kind == "fold":
        for block in model.modules():
            if isinstance(block, BasicBlock):
                block.forward = types.MethodType(_folded_block_forward, block)
    return model


def check() -> None:
    reference, folded = make("nam", impl="reference").double(), make("fold").double()
    with torch.no_grad():  # spread BatchNorm parameters, so that the check is not at the trivial γ=1, β=0
        for p in reference.parameters():
            if p.dim() == 1:
                p.uniform_(0.5, 1.5)
    folded.load_state_dict(reference.state_dict())
    x = torch.randn(8, 3, 32, 32, dtype=torch.float64)
    out_a, out_b = reference(x), folded(x)
    out_a.square().sum().backward()
    out_b.square().sum().backward()
    grad = max(float((a.grad - b.grad).abs().max() / a.grad.abs().max().clamp_min(1e-300))
               for a, b in zip(reference.parameters(), folded.parameters()))
    state = max(float((a.double() - b.double()).abs().max())
                for a, b in zip(reference.state_dict().values(), folded.state_dict().values()))
    reference.eval(), folded.eval()
    with torch.no_grad():
        train_diff = float((out_a - out_b).abs().max())
        eval_diff = float((reference(x) - folded(x)).abs().max())
    print(f"train output max |diff| {train_diff:.1e}, gradients max relative diff {grad:.1e}, "
          f"running statistics max |diff| {state:.1e}, eval output max |diff| {eval_diff:.1e}")


def profile(steps: int) -> None:
    import torch._inductor.config as inductor_config
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    inductor_config.cpp.enable_kernel_profile = True  # inductor's C++ kernels appear by name
    x, y = torch.randn(128, 3, 32, 32), torch.randint(0, 100, (128,))
    kinds, step_fns = ("none", "nam", "fold"), {}
    for kind in kinds:
        model = make(kind)
        net, opt = torch.compile(model), torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

        def step(net=net, opt=opt):
            loss = F.cross_entropy(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()

        for _ in range(3):  # compile and warm up
            step()
        step_fns[kind] = step
    totals = {kind: collections.Counter() for kind in kinds}
    for r in range(steps):
        for kind in kinds[r % 3:] + kinds[:r % 3]:  # interleaved, order rotating
            with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
                step_fns[kind]()
            for event in prof.key_averages():
                if event.key.startswith("graph_"):
                    key = "inductor backward kernels" if "backward" in event.key else "inductor forward kernels"
                elif event.key.startswith("aten::convolution") or event.key.startswith("aten::mkldnn_conv"):
                    key = "convolutions"
                else:
                    key = "everything else"
                totals[kind][key] += event.self_cpu_time_total / steps / 1000
    print(f"{'ms per step':28s}" + "".join(f"{k:>10s}" for k in kinds))
    for key in ("inductor forward kernels", "inductor backward kernels", "convolutions", "everything else"):
        print(f"{key:28s}" + "".join(f"{totals[k][key]:10.1f}" for k in kinds))
    print(f"{'total':28s}" + "".join(f"{sum(totals[k].values()):10.1f}" for k in kinds))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="float64: folded == reference")
    parser.add_argument("--profile", action="store_true", help="inductor kernel time per step, ResNet-18, batch 128")
    parser.add_argument("--steps", type=int, default=6, help="profiled steps per model (interleaved)")
    args = parser.parse_args()
    if not (args.check or args.profile):
        parser.error("choose --check and/or --profile")
    if args.check:
        check()
    if args.profile:
        profile(args.steps)
