"""NAM: Normalization-based Attention Module (Liu, Shao, Teng, Hoffmann 2021, arXiv 2111.12419).

A NAM adds nothing but a BatchNorm: its scale factors say how much each channel (or pixel position)
varies, and once normalised to sum to one they weight the BatchNorm's own output before a sigmoid gate.

Channel submodule (registry name ``nam``), for an input F of shape (B, C, H, W) and a BatchNorm2d(C) of
its own with scale γ and shift β::

    y   = BN(F)                      # γ_i · x̂_i + β_i
    w_i = |γ_i| / Σ_j |γ_j|
    out = sigmoid(w ⊙ y) ⊙ F         # the gate multiplies the module's input

Spatial submodule (``nam_spatial``, the paper's "pixel normalization"): the same along the pixels. F is
viewed as (B, H·W, C) and goes through a BatchNorm1d(H·W), i.e. one scale λ_p per pixel position with
statistics over batch and channels; w_p = |λ_p| / Σ_q |λ_q|. It needs the feature-map size when built.

Full NAM (``nam_full``): channel submodule, then spatial submodule (CBAM order), as the paper describes.

Where the paper and the official code (github.com/Christian-lyc/NAM, ``MODELS/attention.py``) disagree:

* Weights. The paper writes w_i = γ_i / Σ_j γ_j; the code normalises absolute values, |γ_i| / Σ_j |γ_j|.
  ``abs_weights=True`` (default) is the code's form, ``False`` the paper's. The paper's form can divide
  by a sum near zero once some γ turn negative.
* Gradient. The code computes w from ``bn.weight.data``, so no gradient flows through w; γ learns only
  through the BatchNorm's affine output. ``detach_weights=True`` (default) is the code's behaviour,
  ``False`` lets gradient through w as the paper's formula would.
* Spatial submodule. The paper describes it; the repository uploaded it on 2021-09-17 (commit d135ad4;
  the first commit holds only a README), commented it out and deleted it on 2021-09-21 (a9c3926, c76abf4),
  four days later, so the spatial part here follows the paper and commit d135ad4.
* Output. The paper's figure shows the sigmoid map as the output; the code returns sigmoid(...) ⊙ F,
  which is what is implemented.

At initialisation (γ = 1, β = 0) the channel gate is about sigmoid(x̂ / C) ≈ 0.5: a NAM starts by
roughly halving the residual branch (compare the ``half`` ablation).

Implementations (option ``impl``; all three compute the same function, gradients and running statistics,
and hold the same parameters, so checkpoints load into any of them):

* ``"reference"``: the code below, op by op, as the formulas read. This is the spec, and the tests hold
  the other two to it (outputs, gradients and running statistics, in float64).
* ``"fused"`` (default: cheaper than the reference, and needs no compiler): BatchNorm and w folded into
  one per-channel affine map with a hand-written backward (``nam_fused.py``): forward = BatchNorm's
  kernel with the folded weight and bias, an in-place sigmoid and one multiply; backward = BatchNorm's
  backward kernel plus three elementwise passes. Under autocast it returns the input's dtype (the
  reference returns float32 there).
* ``"compiled"``: the reference math as a function compiled by ``torch.compile`` (inductor fuses it),
  with dynamic shapes: one graph for every gate of a network in training and one in evaluation (each
  compiles in seconds to a minute on first use).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import _checks
from .nam_fused import exponential_average_factor, fused_gate

IMPLS = ("reference", "fused", "compiled")
DEFAULT_IMPL = "fused"


def normalised_scale(scale: Tensor, *, abs_weights: bool, detach_weights: bool) -> Tensor:
    """NAM's importance weights from a BatchNorm scale: |s| / Σ|s| (or s / Σs), optionally detached."""
    if detach_weights:
        scale = scale.detach()  # the official code reads `.weight.data`
    if abs_weights:
        scale = scale.abs()
    return scale / scale.sum()


def _gate_math(
    x: Tensor,
    w: Tensor,
    weight: Tensor,
    bias: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
    training: bool,
    factor: float,
    eps: float,
) -> Tensor:
    """The reference gate as one function of tensors, x with the BN feature on dimension 1 (for impl=compiled)."""
    shape = (1, -1) + (1,) * (x.dim() - 2)
    y = F.batch_norm(x, running_mean, running_var, weight, bias, training, factor, eps)
    return torch.sigmoid(w.view(shape) * y) * x


def _channel_gate_math(*args) -> Tensor:
    return _gate_math(*args)


def _pixel_gate_math(*args) -> Tensor:
    return _gate_math(*args)


# One function to compile per gate kind: dynamo counts its recompile limit per function, and the two kinds
# see differently laid-out inputs (the pixel gate a (B, H·W, C, 1) view).
GATE_MATH = {"channel": _channel_gate_math, "pixel": _pixel_gate_math}
_compiled_gate_math: dict[str, Callable[..., Tensor]] = {}
COMPILE_BACKEND = "inductor"  # torch.compile's backend for impl=compiled (tests use a cheaper one)


def compiled_gate_math(kind: str) -> Callable[..., Tensor]:
    """``_gate_math`` for gates of ``kind`` under torch.compile, made on first use and shared by those gates.

    Compiled with dynamic shapes, so one graph serves every channel count, feature-map size and batch size
    (a network's gates differ in all three): what remains to recompile for is training vs evaluation, the
    grad mode and the memory layout, a few graphs per kind, below dynamo's recompile limit (8 per function)
    past which it would silently run the rest eagerly (a whole ResNet-18 train and eval pass: 3 per kind).
    """
    if kind not in _compiled_gate_math:
        _compiled_gate_math[kind] = torch.compile(GATE_MATH[kind], dynamic=True, backend=COMPILE_BACKEND)
    return _compiled_gate_math[kind]


def _compiled_gate(x: Tensor, bn: nn.modules.batchnorm._BatchNorm, w: Tensor, kind: str = "channel") -> Tensor:
    training = bn.training or bn.running_mean is None
    factor = exponential_average_factor(bn)  # counts the batch as nn.BatchNorm.forward does
    # Views, not the Parameters themselves: dynamo keeps a Parameter's shape static (its config
    # force_parameter_static_shapes), which would specialise the graph on the channel count again.
    weight, bias = bn.weight.view(-1), bn.bias.view(-1)
    return compiled_gate_math(kind)(x, w, weight, bias, bn.running_mean, bn.running_var, training, factor, bn.eps)


class NAMChannelGate(nn.Module):
    """The channel submodule's computation: sigmoid(w ⊙ BN(F)) ⊙ F with a BatchNorm2d(C)."""

    def __init__(self, channels: int, *, abs_weights: bool, detach_weights: bool, impl: str = DEFAULT_IMPL):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels)
        self.abs_weights = abs_weights
        self.detach_weights = detach_weights
        self.impl = impl

    def weights(self) -> Tensor:
        return normalised_scale(self.bn.weight, abs_weights=self.abs_weights, detach_weights=self.detach_weights)

    def forward(self, x: Tensor) -> Tensor:
        if self.impl == "fused":
            return fused_gate(x, self.bn, self.weights())
        if self.impl == "compiled":
            return _compiled_gate(x, self.bn, self.weights())
        w = self.weights().view(1, -1, 1, 1)
        return torch.sigmoid(w * self.bn(x)) * x


class NAMPixelGate(nn.Module):
    """The spatial submodule's computation ("pixel normalization") with a BatchNorm1d(H·W)."""

    def __init__(
        self,
        spatial_size: tuple[int, int],
        *,
        abs_weights: bool,
        detach_weights: bool,
        owner: str,
        impl: str = DEFAULT_IMPL,
    ):
        super().__init__()
        height, width = spatial_size
        self.spatial_size = (int(height), int(width))
        self.bn = nn.BatchNorm1d(height * width)  # one feature per pixel position
        self.abs_weights = abs_weights
        self.detach_weights = detach_weights
        self.owner = owner  # registry name, for the error message
        self.impl = impl

    def weights(self) -> Tensor:
        return normalised_scale(self.bn.weight, abs_weights=self.abs_weights, detach_weights=self.detach_weights)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        if (h, w) != self.spatial_size:
            bh, bw = self.spatial_size
            raise ValueError(
                f"{self.owner} was built for {bh}x{bw} feature maps but got {h}x{w}: build the model for this "
                f"input size (its image_size) or use attention 'nam', which takes any size"
            )
        # (B, C, H, W) -> (B, H·W, C): BatchNorm1d then normalises each pixel over batch and channels.
        pixels = x.flatten(2).transpose(1, 2)
        if self.impl != "reference":
            # (B, H·W, C, 1): a dense view whatever x's memory format (channels_last-like for contiguous x).
            gate_fn = fused_gate if self.impl == "fused" else functools.partial(_compiled_gate, kind="pixel")
            out = gate_fn(pixels.unsqueeze(-1), self.bn, self.weights())
            return out.squeeze(-1).transpose(1, 2).reshape(b, c, h, w)
        y = self.bn(pixels) * self.weights().view(1, -1, 1)
        gate = torch.sigmoid(y).transpose(1, 2).reshape(b, c, h, w)
        return gate * x

    def extra_repr(self) -> str:
        return f"spatial_size={self.spatial_size}"


class NAMModule(nn.Module):
    """The three NAM variants: their gates, the sparsity parameters and the normalised weights.

    A variant names its gates in ``gate_names``; they are held as ``self.channel`` and/or ``self.spatial``,
    so parameter names are ``...attention.channel.bn.weight`` (γ) and ``...attention.spatial.bn.weight`` (λ)
    in every variant. ``spatial_size`` is needed only by a variant with a spatial gate.
    """

    placement = "block"
    attention_name: str  # set by each variant
    gate_names: tuple[str, ...]  # set by each variant: "channel" and/or "spatial"
    option_checks = {
        "abs_weights": _checks.boolean,
        "detach_weights": _checks.boolean,
        "impl": _checks.choice(*IMPLS),
    }

    def __init__(
        self,
        channels: int,
        *,
        spatial_size: tuple[int, int] | None = None,
        abs_weights: bool = True,
        detach_weights: bool = True,
        impl: str = DEFAULT_IMPL,
    ):
        super().__init__()
        self.abs_weights = abs_weights
        self.detach_weights = detach_weights
        self.impl = impl
        weights = dict(abs_weights=abs_weights, detach_weights=detach_weights, impl=impl)
        if "channel" in self.gate_names:
            self.channel = NAMChannelGate(channels, **weights)
        if "spatial" in self.gate_names:
            size = _require_spatial_size(self.attention_name, spatial_size)
            self.spatial = NAMPixelGate(size, owner=self.attention_name, **weights)

    def _gates(self) -> dict[str, nn.Module]:
        return {name: gate for name, gate in self.named_children() if name in ("channel", "spatial")}

    def sparsity_parameters(self) -> list[nn.Parameter]:
        """The BatchNorm scales the paper's L1 penalty acts on: γ (channel) and λ (spatial)."""
        return [gate.bn.weight for gate in self._gates().values()]

    def nam_scales(self) -> dict[str, nn.Parameter]:
        """The BatchNorm scales behind each submodule's weights: {"channel": γ, "spatial": λ}."""
        return {name: gate.bn.weight for name, gate in self._gates().items()}

    def nam_weights(self) -> dict[str, Tensor]:
        """Normalised weights per submodule, e.g. {"channel": w_c, "spatial": w_p}, detached."""
        return {name: gate.weights().detach() for name, gate in self._gates().items()}

    def extra_repr(self) -> str:
        return f"abs_weights={self.abs_weights}, detach_weights={self.detach_weights}, impl={self.impl}"


def _require_spatial_size(name: str, spatial_size: tuple[int, int] | None) -> tuple[int, int]:
    if spatial_size is None:
        raise ValueError(
            f"{name} needs the feature-map size when it is built: build it through build_model "
            f"(which passes each block's size) or pass spatial_size=(H, W)"
        )
    height, width = spatial_size
    return int(height), int(width)


class NAMChannel(NAMModule):
    """NAM channel submodule (registry name ``nam``), the part the official code runs. 2·C parameters."""

    attention_name = "nam"
    gate_names = ("channel",)

    def forward(self, x: Tensor) -> Tensor:
        return self.channel(x)


class NAMSpatial(NAMModule):
    """NAM spatial submodule alone (registry name ``nam_spatial``); needs ``spatial_size``. 2·H·W parameters."""

    attention_name = "nam_spatial"
    needs_spatial_size = True  # its pixel gate is built for one feature-map size
    gate_names = ("spatial",)

    def forward(self, x: Tensor) -> Tensor:
        return self.spatial(x)


class NAMFull(NAMModule):
    """Channel submodule then spatial submodule (registry name ``nam_full``), as in the paper."""

    attention_name = "nam_full"
    needs_spatial_size = True  # its pixel gate is built for one feature-map size
    gate_names = ("channel", "spatial")

    def forward(self, x: Tensor) -> Tensor:
        return self.spatial(self.channel(x))


def nam_modules(model: nn.Module) -> list[tuple[str, NAMModule]]:
    """Every NAM module in ``model`` with its qualified name, through any wrapper.

    ``named_modules()`` walks into DataParallel/DistributedDataParallel (``.module``) and torch.compile's
    ``_orig_mod``, so the sparsity penalty reaches the NAM layers however the model is wrapped (the
    official script's ``updateBN`` walks only the top level and silently does nothing under DataParallel).
    """
    return [(name, module) for name, module in model.named_modules() if isinstance(module, NAMModule)]
