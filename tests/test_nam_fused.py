"""NAM's `impl` option: the fused autograd Function (and the compiled gate) must be the reference, exactly.

For random inputs, in training and evaluation, for every NAM variant and both `abs_weights` and
`detach_weights`: outputs, gradients w.r.t. the input, γ, β (and λ), and the running statistics after a few
steps agree with `impl=reference` -- tightly in float64, within float32 rounding in float32.
"""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from helpers import compose_run, run_inproc
from namexp.models import build_model
from namexp.models.attention import create_attention, nam
from namexp.models.attention.nam_fused import NAMGateFunction
from namexp.train.build import make_model

SHAPE = (4, 6, 5, 3)  # B, C, H, W: odd sizes, H != W
TOLERANCES = {torch.float64: {"rtol": 1e-10, "atol": 1e-12}, torch.float32: {"rtol": 2e-4, "atol": 2e-5}}


def _pair(name, impl="fused", dtype=torch.float64, seed=0, **options):
    """A reference module and an `impl` one with the same (randomised) parameters."""
    torch.manual_seed(seed)
    ref = create_attention(name, SHAPE[1], spatial_size=SHAPE[2:], **options).to(dtype)
    with torch.no_grad():
        for p in ref.parameters():  # scales mostly positive with one negative (the abs_weights case), shifts random
            p.uniform_(0.5, 1.5)
        for gate in ref._gates().values():
            gate.bn.weight[1] = -0.3
            gate.bn.bias.normal_()
    other = create_attention(name, SHAPE[1], spatial_size=SHAPE[2:], impl=impl, **options).to(dtype)
    other.load_state_dict(ref.state_dict())
    return ref, other


def _inputs(step, dtype, channels_last):
    g = torch.Generator().manual_seed(100 + step)
    x = (torch.randn(SHAPE, generator=g, dtype=torch.float64) * 1.7 + 0.4).to(dtype)
    grad = torch.randn(SHAPE, generator=g, dtype=torch.float64).to(dtype)
    if channels_last:
        x, grad = x.contiguous(memory_format=torch.channels_last), grad.contiguous(memory_format=torch.channels_last)
    return x, grad


def _compare_steps(ref, other, dtype, channels_last, modes=("train",) * 3 + ("eval",) * 2):
    tol = TOLERANCES[dtype]
    for step, mode in enumerate(modes):
        ref.train(mode == "train")
        other.train(mode == "train")
        x, grad = _inputs(step, dtype, channels_last)
        x_ref, x_other = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        out_ref, out_other = ref(x_ref), other(x_other)
        torch.testing.assert_close(
            out_other, out_ref, **tol, msg=lambda m, step=step, mode=mode: f"output, step {step} ({mode}): {m}"
        )
        out_ref.backward(grad)
        out_other.backward(grad)
        torch.testing.assert_close(
            x_other.grad, x_ref.grad, **tol, msg=lambda m, step=step: f"input grad, step {step}: {m}"
        )
        for (name, p_ref), p_other in zip(ref.named_parameters(), other.parameters()):
            torch.testing.assert_close(
                p_other.grad, p_ref.grad, **tol, msg=lambda m, name=name, step=step: f"{name}.grad, step {step}: {m}"
            )
            p_ref.grad = p_other.grad = None
        for (name, b_ref), b_other in zip(ref.named_buffers(), other.buffers()):
            torch.testing.assert_close(
                b_other, b_ref, **tol, msg=lambda m, name=name, step=step: f"{name}, step {step}: {m}"
            )


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("detach_weights", [True, False], ids=["detached", "through_w"])
@pytest.mark.parametrize("abs_weights", [True, False], ids=["abs", "signed"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("name", ["nam", "nam_full", "nam_spatial"])
def test_fused_equals_reference(name, dtype, abs_weights, detach_weights, channels_last):
    ref, fused = _pair(name, "fused", dtype, abs_weights=abs_weights, detach_weights=detach_weights)
    _compare_steps(ref, fused, dtype, channels_last)


def test_fused_gradient_through_w_is_there_and_matches():
    """With detach_weights=False γ gets the extra term through w; the fused Function must return it."""
    _, fused_d = _pair("nam", "fused", detach_weights=True)
    ref_t, fused_t = _pair("nam", "fused", detach_weights=False)
    x, grad = _inputs(0, torch.float64, False)
    grads = []
    for module in (fused_d, fused_t, ref_t):
        module(x).backward(grad)
        grads.append(module.channel.bn.weight.grad)
    assert (grads[1] - grads[0]).abs().max() > 1e-3
    torch.testing.assert_close(grads[1], grads[2], rtol=1e-10, atol=1e-12)


def test_fused_running_statistics_follow_batchnorm_momentum_none():
    """momentum=None (cumulative average) is nn.BatchNorm's other mode: the fused path follows it too."""
    ref, fused = _pair("nam", "fused")
    for module in (ref, fused):
        module.channel.bn.momentum = None
    _compare_steps(ref, fused, torch.float64, False, modes=("train",) * 4 + ("eval",))
    assert int(fused.channel.bn.num_batches_tracked) == 4


def test_fused_autograd_function_alone_matches_autograd_of_the_formula():
    torch.manual_seed(0)
    x = torch.randn(3, 4, 2, 2, dtype=torch.float64, requires_grad=True)
    w = torch.rand(4, dtype=torch.float64, requires_grad=True)
    gamma = torch.randn(4, dtype=torch.float64, requires_grad=True)
    beta = torch.randn(4, dtype=torch.float64, requires_grad=True)

    def gate(x, w, gamma, beta):
        # The batch statistics carry gradient through the Function's backward, not through these inputs.
        var, mean = torch.var_mean(x.detach(), dim=(0, 2, 3), correction=0)
        invstd = torch.rsqrt(var + 1e-5)
        with torch.no_grad():
            a, b = w * gamma * invstd, w * (beta - gamma * mean * invstd)
            s = torch.sigmoid(a.view(1, -1, 1, 1) * x + b.view(1, -1, 1, 1))
        return NAMGateFunction.apply(x, s, w, gamma, beta, mean, invstd, True)

    # The gate s enters the Function without gradient, so finite differences through the Function alone
    # would miss its dependence on x: compare with autograd of the formula instead (gradient-checked itself).
    def reference(x, w, gamma, beta):
        y = nn.functional.batch_norm(x, None, None, gamma, beta, True, 0.1, 1e-5)
        return torch.sigmoid(w.view(1, -1, 1, 1) * y) * x

    assert torch.autograd.gradcheck(reference, (x, w, gamma, beta))
    out = gate(x, w, gamma, beta)
    expected = reference(x, w, gamma, beta)
    grad = torch.randn_like(out)
    got = torch.autograd.grad(out, (x, w, gamma, beta), grad)
    want = torch.autograd.grad(expected, (x, w, gamma, beta), grad)
    for g_got, g_want in zip(got, want):
        torch.testing.assert_close(g_got, g_want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["nam", "nam_full"])
def test_fused_under_bf16_autocast_is_close(name):
    ref, fused = _pair(name, "fused", torch.float32)
    x = torch.randn(8, 6, 5, 3).to(torch.bfloat16)
    x_ref, x_fused = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out_ref, out_fused = ref(x_ref), fused(x_fused)
    assert out_fused.shape == out_ref.shape
    scale = out_ref.float().abs().max()
    assert (out_fused.float() - out_ref.float()).abs().max() <= 0.02 * scale
    grad = torch.randn(out_ref.shape)
    out_ref.backward(grad.to(out_ref.dtype))
    out_fused.backward(grad.to(out_fused.dtype))
    assert x_fused.grad.dtype == x.dtype
    assert (x_fused.grad.float() - x_ref.grad.float()).abs().max() <= 0.03 * x_ref.grad.float().abs().max()
    for p_ref, p_fused in zip(ref.parameters(), fused.parameters()):
        assert (p_fused.grad - p_ref.grad).abs().max() <= 0.03 * p_ref.grad.abs().max() + 1e-6


def test_fused_traces_under_torch_compile():
    """dynamo traces the autograd Function in one graph (aot_eager: the tracing, without code generation)."""

    def make(impl):
        torch.manual_seed(0)
        return nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1),
            create_attention("nam_full", 6, spatial_size=(5, 3), impl=impl),
            nn.Flatten(),
            nn.Linear(6 * 15, 4),
        )

    ref, fused = make("reference"), make("fused")
    compiled = torch.compile(fused, backend="aot_eager", fullgraph=True)
    x, y = torch.randn(4, 3, 5, 3), torch.tensor([0, 1, 2, 3])
    for net in (ref, compiled):
        for _ in range(2):
            net.train()
            nn.functional.cross_entropy(net(x), y).backward()
    ref.eval()
    compiled.eval()
    torch.testing.assert_close(compiled(x), ref(x), rtol=1e-5, atol=1e-6)
    for (name, p_ref), p_fused in zip(ref.named_parameters(), fused.parameters()):
        torch.testing.assert_close(
            p_fused.grad, p_ref.grad, rtol=1e-5, atol=1e-6, msg=lambda m, name=name: f"{name}: {m}"
        )
    for (name, b_ref), b_fused in zip(ref.named_buffers(), fused.buffers()):
        torch.testing.assert_close(b_fused, b_ref, rtol=1e-5, atol=1e-6, msg=lambda m, name=name: f"{name}: {m}")


def test_compiled_impl_equals_reference(monkeypatch):
    """impl=compiled: the reference math as one compiled function (aot_eager here; inductor in the slow test)."""
    compiled = {kind: torch.compile(math, backend="aot_eager") for kind, math in nam.GATE_MATH.items()}
    monkeypatch.setattr(nam, "_compiled_gate_math", compiled)
    ref, compiled = _pair("nam_full", "compiled", torch.float32)
    _compare_steps(ref, compiled, torch.float32, False)


@pytest.mark.slow
def test_compiled_impl_with_inductor_equals_reference():
    ref, compiled = _pair("nam", "compiled", torch.float32)
    _compare_steps(ref, compiled, torch.float32, True)


class _Messages(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.texts.append(record.getMessage())


@pytest.mark.parametrize("backend", ["aot_eager", pytest.param("inductor", marks=pytest.mark.slow)])
def test_compiled_impl_compiles_a_whole_resnet18_pass_below_the_recompile_limit(backend, monkeypatch):
    """Train steps (two batch sizes) and evaluation (without and with grad) of ResNet-18 + nam_full: every
    gate of every channel count and map size shares a few graphs per gate kind, and nothing falls back."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()  # earlier tests compiled these functions too: their cache entries would count
    counters.clear()
    monkeypatch.setattr(nam, "_compiled_gate_math", {})
    monkeypatch.setattr(nam, "COMPILE_BACKEND", backend)
    torch.manual_seed(0)
    model = build_model("resnet18", "nam_full", num_classes=10, image_size=32, attention_options={"impl": "compiled"})
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    messages = _Messages()
    logging.getLogger("torch._dynamo").addHandler(messages)
    try:
        for batch in (4, 3):
            nn.functional.cross_entropy(model.train()(x[:batch]), y[:batch]).backward()
        with torch.no_grad():
            model.eval()(x)
        model(x)
    finally:
        logging.getLogger("torch._dynamo").removeHandler(messages)
        torch._dynamo.reset()
    frames = counters["frames"]
    assert frames["total"] == frames["ok"] <= 2 * 3, dict(frames)  # per kind: train, eval, eval with grad
    assert not [k for k in counters["unimplemented"] if "recompile" in k.lower()], dict(counters["unimplemented"])
    assert not [m for m in messages.texts if "recompile_limit" in m or "cache_size_limit" in m], messages.texts


# ------------------------------------------------------------------------------------------- config path
@pytest.mark.parametrize("attention", ["nam", "nam_full", "nam_spatial"])
@pytest.mark.parametrize("impl", ["fused", "reference"])
def test_impl_is_reachable_from_the_config(attention, impl):
    overrides = ["backbone=resnet20", "data=synthetic", f"attention={attention}"]
    run = compose_run(overrides + ([] if impl == "fused" else [f"attention.options.impl={impl}"]))  # fused: the default
    assert run.attention.options["impl"] == impl
    model = make_model(run, run.data.num_classes, run.data.image_size)
    modules = [m for m in model.modules() if isinstance(m, nam.NAMModule)]
    assert modules and all(m.impl == impl for m in modules)
    gates = [g for m in modules for g in m._gates().values()]
    assert gates and all(g.impl == impl for g in gates)


def test_bad_impl_is_a_user_error_listing_the_valid_values(capsys):
    with pytest.raises(ValueError, match="impl='fast' is not one of reference, fused, compiled"):
        create_attention("nam", 8, impl="fast")
    result = run_inproc(["info", "backbone=resnet20", "data=synthetic", "++attention.options.impl=fast"], capsys)
    assert result.code == 2
    assert "reference, fused, compiled" in result.err and "attention.options.impl" in result.err


def test_fused_model_trains_a_step_like_the_reference_model():
    """Same seed, same weights, same batch: one SGD step of ResNet-20 + NAM gives the same loss and weights."""

    def model(impl):
        torch.manual_seed(0)
        return build_model("resnet20", "nam", num_classes=10, image_size=32, attention_options={"impl": impl})

    ref, fused = model("reference"), model("fused")
    assert list(ref.state_dict()) == list(fused.state_dict())  # checkpoints load into either
    fused.load_state_dict(ref.state_dict())
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(8, 3, 32, 32, generator=g), torch.randint(0, 10, (8,), generator=g)
    losses = []
    for net in (ref, fused):
        net.train()
        opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
        loss = nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=1e-6)
    for (name, a), b in zip(ref.state_dict().items(), fused.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=lambda m, name=name: f"{name}: {m}")
