"""NAM's gate in fewer passes over the activation: a hand-written autograd Function (``impl="fused"``).

The reference gate (``nam.py``) is the readable spec::

    y = BN(x);  z = w ⊙ y;  s = sigmoid(z);  out = s ⊙ x        (w = |γ| / Σ|γ|, per channel)

Run op by op it reads and writes the activation many times: BatchNorm's statistics and its normalisation,
the multiply by w, the sigmoid, the multiply by x -- and as many passes again in the backward, plus the
sum of the two gradients that reach x. Here BatchNorm and w are folded into one per-channel affine map::

    a_c = w_c · γ_c · rstd_c        b_c = w_c · (β_c − γ_c · μ_c · rstd_c)
    z   = a_c · x + b_c             out = x · sigmoid(z)

so the forward is BatchNorm's own kernel with the folded weight w·γ and bias w·β (one statistics pass
and one affine pass, and the running statistics updated by the same code as nn.BatchNorm), an in-place
sigmoid and one multiply. (``torch.var_mean`` plus an ``addcmul`` computes the same, but on the CPU
``var_mean`` over (0, 2, 3) alone takes longer than the whole BatchNorm forward.)

The backward, with gz = ∂L/∂z = g · x · s · (1 − s)::

    ∂L/∂x = g · s + a · (gz − mean(gz) − x̂ · mean(gz · x̂))      (the last term only in training)
    ∂L/∂γ = w · Σ gz·x̂      ∂L/∂β = w · Σ gz      ∂L/∂w = γ · Σ gz·x̂ + β · Σ gz

The middle part is exactly BatchNorm's backward for the weight w·γ, so it is computed by
``aten.native_batch_norm_backward`` (one fused kernel that also returns the two sums); the gradient through
w = normalised(γ) is left to autograd outside the Function, so ``abs_weights`` and ``detach_weights`` work
as in the reference. The running statistics are updated exactly as ``nn.BatchNorm`` does (momentum, or a
cumulative average when momentum is None; unbiased running variance; ``num_batches_tracked``).

Under autocast the fused gate returns x's dtype (bf16/fp16); the reference returns float32 there, because
w (float32) promotes its product with the BatchNorm output. Values agree to bf16 precision.

The same code serves the spatial gate: a BatchNorm1d over the H·W pixel positions of (B, H·W, C) is a
BatchNorm over dimension 1 of the 4-D view (B, H·W, C, 1), which is a dense channels_last-style view of
the input whatever its memory format, so the kernels see it without a copy.

Under ``torch.compile`` dynamo traces the Function (forward and backward) like any other code.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

aten = torch.ops.aten


class NAMGateFunction(torch.autograd.Function):
    """out = x · s, s = sigmoid(a · x + b) already computed, with the hand-written backward through a, b.

    Inputs: x (B, F, ...) with the normalised feature on dimension 1; the gate s (computed without
    gradient); w, gamma, beta (F,) with gradient as autograd asks; mean, invstd (F,) without gradient: the
    batch statistics in training (the backward then includes the gradient through them), the running
    statistics in evaluation.
    """

    @staticmethod
    def forward(
        ctx, x: Tensor, s: Tensor, w: Tensor, gamma: Tensor, beta: Tensor, mean: Tensor, invstd: Tensor, training: bool
    ) -> Tensor:
        ctx.save_for_backward(x, s, w, gamma, beta, mean, invstd)
        ctx.training = training
        return x * s

    @staticmethod
    def backward(ctx, g: Tensor):
        x, s, w, gamma, beta, mean, invstd = ctx.saved_tensors
        need_x = ctx.needs_input_grad[0]
        need_w, need_gamma, need_beta = ctx.needs_input_grad[2:5]
        if not _dense(x):
            x = x.contiguous()
        g = same_layout(g, x)
        gz = aten.sigmoid_backward(g * x, s)  # ∂L/∂z = g · x · s · (1 − s)
        # BatchNorm's backward for the weight w·γ: a·(gz − mean(gz) − x̂·mean(gz·x̂)) and the sums Σgz·x̂, Σgz.
        # With train=True it uses the statistics passed here; in evaluation the statistics are constants,
        # so ∂L/∂x is then just a·gz and is computed below instead (the sums are the same formulas).
        grad_x_bn, sum_gz_xhat, sum_gz = aten.native_batch_norm_backward(
            gz.to(x.dtype),
            x,
            (w * gamma).to(mean.dtype),
            None,
            None,
            mean,
            invstd,
            True,
            0.0,
            [need_x and ctx.training, True, True],
        )
        grad_x = grad_w = grad_gamma = grad_beta = None
        if need_x:
            if ctx.training:
                grad_x = grad_x_bn.addcmul_(g, s)
            else:
                a = (w * gamma * invstd).view((1, -1) + (1,) * (x.dim() - 2))
                grad_x = torch.addcmul(g * s, gz, a).to(x.dtype)
        if need_w:
            grad_w = (gamma * sum_gz_xhat + beta * sum_gz).to(w.dtype)
        if need_gamma:
            grad_gamma = (w * sum_gz_xhat).to(gamma.dtype)
        if need_beta:
            grad_beta = (w * sum_gz).to(beta.dtype)
        return grad_x, None, grad_w, grad_gamma, grad_beta, None, None, None


def _dense(x: Tensor) -> bool:
    return x.is_contiguous() or (x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last))


def same_layout(t: Tensor, like: Tensor) -> Tensor:
    """``t`` in ``like``'s memory format (a no-op when it already is, as in a model of one format).

    The CPU kernel of ``native_batch_norm_backward`` returns wrong results when the gradient is
    channels_last while the input is contiguous (seen with torch 2.14 on a (3, 20, 6, 1) input), so the
    gradient is brought to the input's format first.
    """
    if like.is_contiguous():
        return t.contiguous()
    if like.dim() == 4 and like.is_contiguous(memory_format=torch.channels_last):
        return t.contiguous(memory_format=torch.channels_last)
    return t.contiguous()


def exponential_average_factor(bn: nn.modules.batchnorm._BatchNorm) -> float:
    """What ``nn.BatchNorm.forward`` does before normalising in training: count the batch, pick the factor."""
    factor = 0.0 if bn.momentum is None else bn.momentum
    if bn.training and bn.track_running_stats and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
    return factor


def fused_gate(x: Tensor, bn: nn.modules.batchnorm._BatchNorm, w: Tensor) -> Tensor:
    """x · sigmoid(w ⊙ bn(x)) for x with bn's feature on dimension 1, in the fused form (same results).

    The forward is BatchNorm's own kernel run with the folded weight w·γ and bias w·β, i.e. z = a·x + b
    with the statistics computed once (and the running statistics updated by the very code nn.BatchNorm
    uses), then an in-place sigmoid and one multiply.
    """
    training = bn.training or bn.running_mean is None
    gamma = bn.weight if bn.affine else torch.ones(x.shape[1], device=x.device)
    beta = bn.bias if bn.affine else torch.zeros(x.shape[1], device=x.device)
    factor = exponential_average_factor(bn)
    with torch.no_grad():
        wd = w.detach()
        # Under autocast this runs in x's dtype with float32 statistics, as nn.BatchNorm does.
        z, mean, invstd = aten.native_batch_norm(
            x, wd * gamma, wd * beta, bn.running_mean, bn.running_var, training, factor, bn.eps
        )
        s = z.sigmoid_()
        if not training:
            mean, invstd = bn.running_mean.clone(), torch.rsqrt(bn.running_var + bn.eps)
    return NAMGateFunction.apply(x, s, w, gamma, beta, mean, invstd, training)
