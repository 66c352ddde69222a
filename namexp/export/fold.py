"""The inference form of a model: every BatchNorm that eval mode makes a constant affine map folded away.

* A NAM gate in eval mode is ``sigmoid(w ⊙ BN(x)) ⊙ x`` where BN is the per-feature affine map
  ``γ (x - μ) / √(σ² + ε) + β``; so the gate is ``x · sigmoid(a·x + b)`` with constant
  ``a = w γ / √(σ² + ε)`` and ``b = w (β - γ μ / √(σ² + ε))``, per channel (``nam``) or per pixel position
  (``nam_spatial``). Exact up to float rounding; a and b are computed in float64.
* Every other BatchNorm right after a convolution (ResNet and MobileNetV2 blocks, CBAM's and TAM's spatial
  convolutions, BAM's spatial branch) or a Linear layer (BAM's channel MLP) is folded into it by
  ``torch.fx.experimental.optimization.fuse``, PyTorch's own conv/linear-BatchNorm folding, which leaves a
  BatchNorm alone where its input has other users. SE, ECA, non-local and ``half`` hold nothing to fold.

The folded model is a ``torch.fx.GraphModule`` of plain ops: what ``torch.export``, ONNX and TorchScript see.

A per-channel gate's ``a·x + b`` has two forms, equal up to float rounding: ``affine`` (an elementwise
multiply-add, the faster one in eager PyTorch: ``namexp eval --folded``) and ``conv`` (a depthwise 1×1
convolution with bias, what ``namexp export`` writes). ONNX Runtime runs the conv form in its blocked (NCHWc)
layout with the sigmoid fused into the convolution, where the affine form drops each gate out of that layout
and back (docs/benchmarks.md, "Deployment cost").
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from namexp.models.attention.nam import NAMChannelGate, NAMPixelGate

GATE_FORMS = ("affine", "conv")


class FoldedGate(nn.Module):
    """``x · sigmoid(a·x + b)`` with constant a, b shaped to broadcast over x: a folded NAM gate; ``conv``
    computes a·x + b of a per-channel gate as a depthwise 1×1 convolution (see the module's docstring)."""

    def __init__(self, slope: Tensor, offset: Tensor, form: str = "affine"):
        super().__init__()
        self.register_buffer("slope", slope)
        self.register_buffer("offset", offset)
        self.form = form

    def forward(self, x: Tensor) -> Tensor:
        if self.form == "conv":
            channels = self.slope.shape[1]
            kernel, bias = self.slope.reshape(channels, 1, 1, 1), self.offset.reshape(channels)
            return x * torch.sigmoid(F.conv2d(x, kernel, bias, groups=channels))
        return x * torch.sigmoid(torch.addcmul(self.offset, self.slope, x))

    def extra_repr(self) -> str:
        return f"shape={tuple(self.slope.shape)}, form={self.form}"


def gate_slope_offset(gate: NAMChannelGate | NAMPixelGate) -> tuple[Tensor, Tensor]:
    """NAM's eval-mode gate as sigmoid(a·x + b): the per-feature (a, b), in float64."""
    bn = gate.bn
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("a NAM gate without running statistics has no eval-mode form to fold")
    with torch.no_grad():
        w = gate.weights().double()
        inv_std = (bn.running_var.double() + bn.eps).rsqrt()
        gamma, beta = bn.weight.double(), bn.bias.double()
        slope = w * gamma * inv_std
        offset = w * (beta - gamma * bn.running_mean.double() * inv_std)
    return slope, offset


def folded_gate(gate: NAMChannelGate | NAMPixelGate, form: str = "affine") -> FoldedGate:
    """The FoldedGate equal to ``gate`` in eval mode, in the gate's dtype and device (a per-pixel gate is
    always affine: its a, b vary over positions, not channels)."""
    slope, offset = gate_slope_offset(gate)
    if isinstance(gate, NAMPixelGate):
        shape, form = (1, 1, *gate.spatial_size), "affine"  # one (a, b) per pixel position p = h·W + w
    else:
        shape = (1, -1, 1, 1)  # one (a, b) per channel
    dtype = gate.bn.weight.dtype
    return FoldedGate(slope.view(shape).to(dtype), offset.view(shape).to(dtype), form)


def fold_nam_gates(model: nn.Module, form: str = "affine") -> int:
    """Replace every NAM gate in ``model`` (in place) by its FoldedGate; returns how many."""
    targets = [
        (name, module) for name, module in model.named_modules() if isinstance(module, (NAMChannelGate, NAMPixelGate))
    ]
    for name, gate in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, folded_gate(gate, form))
    return len(targets)


def count_batchnorms(model: nn.Module) -> int:
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def fold_for_inference(model: nn.Module, gate_form: str = "affine") -> nn.Module:
    """A folded copy of ``model`` in eval mode (the model itself is left as it was); ``gate_form``: how NAM's
    per-channel gates compute a·x + b, ``affine`` for eager PyTorch or ``conv`` for export.

    The copy carries ``folding`` = {"nam_gates": n, "gate_form": ..., "batchnorms_folded": n, ...}.
    """
    from torch.fx.experimental.optimization import fuse

    if gate_form not in GATE_FORMS:
        raise ValueError(f"gate_form {gate_form!r}: choose one of {', '.join(GATE_FORMS)}")
    folded = copy.deepcopy(model).eval()
    before = count_batchnorms(folded)
    gates = fold_nam_gates(folded, gate_form)
    after_gates = count_batchnorms(folded)
    try:
        folded = fuse(folded, inplace=True)
    except Exception as exc:  # torch.fx: a forward with data-dependent control flow cannot be traced
        raise ValueError(f"the model cannot be folded (torch.fx could not trace it: {str(exc)[:120]})") from None
    left = count_batchnorms(folded)
    folded.folding = {
        "nam_gates": gates, "gate_form": gate_form, "batchnorms_folded": after_gates - left, "batchnorms_left": left,
        "batchnorms_total": before,
    }  # fmt: skip
    return folded.eval()
