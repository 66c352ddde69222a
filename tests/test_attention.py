"""Attention modules: registry, exact formulas (NAM by hand), options, errors, parameter counts, inits."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from namexp.models import attention_sites, build_model
from namexp.models.attention import (
    ATTENTION_REGISTRY,
    NAMModule,
    attention_layer,
    attention_names,
    attention_option_names,
    create_attention,
    eca_kernel_size,
    get_attention_class,
    layer_class,
    layer_options,
    nam_modules,
)

EXPECTED_NAMES = ["none", "nam", "nam_spatial", "nam_full", "se", "cbam", "bam", "tam", "eca", "nonlocal", "half"]
EPS = 1e-5  # BatchNorm's default eps


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# --- registry -------------------------------------------------------------------------------------------


def test_registry_names_and_placements():
    assert attention_names() == EXPECTED_NAMES
    placements = {name: cls.placement for name, cls in ATTENTION_REGISTRY.items()}
    assert placements == {
        "none": "none",
        "nam": "block",
        "nam_spatial": "block",
        "nam_full": "block",
        "se": "block",
        "cbam": "block",
        "bam": "stage",
        "tam": "block",
        "eca": "block",
        "nonlocal": "middle",
        "half": "block",
    }


@pytest.mark.parametrize("name", EXPECTED_NAMES)
def test_every_module_keeps_the_shape_and_accepts_spatial_size(name):
    torch.manual_seed(0)
    module = create_attention(name, 32, spatial_size=(6, 6))
    assert isinstance(module, get_attention_class(name))
    x = torch.randn(2, 32, 6, 6)
    assert module(x).shape == x.shape


def test_none_is_an_identity():
    module = create_attention("none", 16)
    x = torch.randn(2, 16, 4, 4)
    assert isinstance(module, nn.Identity)
    assert module(x) is x


def test_every_option_has_a_check():
    for name, cls in ATTENTION_REGISTRY.items():
        assert set(cls.option_checks) == set(attention_option_names(name)), name


def test_attention_layer_is_a_checked_constructor():
    layer = attention_layer("se", {"reduction": 4})
    assert layer_class(layer) is get_attention_class("se") and layer_options(layer) == {"reduction": 4}
    assert layer(64).fc1.out_channels == 16  # reduction 4 reaches the module
    with pytest.raises(ValueError, match="reduction=0 must be a positive integer"):
        attention_layer("se", {"reduction": 0})
    # A bare class works as a layer too (no options).
    assert layer_class(get_attention_class("cbam")).placement == "block"
    assert layer_options(get_attention_class("cbam")) == {}


def test_half_scales_by_one_half_without_parameters():
    module = create_attention("half", 16)
    x = torch.randn(2, 16, 4, 4)
    torch.testing.assert_close(module(x), 0.5 * x)
    assert n_params(module) == 0


# --- errors ---------------------------------------------------------------------------------------------


def test_unknown_attention_lists_the_valid_names():
    with pytest.raises(ValueError) as info:
        create_attention("nma", 16)
    message = str(info.value)
    assert "'nma'" in message and "\n" not in message
    assert all(name in message for name in EXPECTED_NAMES)
    with pytest.raises(ValueError):
        get_attention_class("NAM")


def test_unknown_option_names_it_and_the_valid_ones():
    with pytest.raises(ValueError) as info:
        create_attention("se", 16, ratio=8)
    message = str(info.value)
    assert "'ratio'" in message and "reduction" in message and "\n" not in message
    with pytest.raises(ValueError) as info:
        create_attention("nam", 16, reduction=16)
    assert "abs_weights" in str(info.value) and "detach_weights" in str(info.value)
    with pytest.raises(ValueError, match="no options"):
        create_attention("none", 16, reduction=16)


@pytest.mark.parametrize(
    "name, options",
    [
        ("se", {"reduction": 0}),
        ("cbam", {"kernel_size": 4}),
        ("tam", {"kernel_size": 6}),
        ("eca", {"kernel_size": 2}),
        ("bam", {"combine": "concat"}),
        ("nam", {"abs_weights": "yes"}),
        ("nonlocal", {"subsample": 1}),
    ],
)
def test_bad_option_values_raise_value_error(name, options):
    with pytest.raises(ValueError):
        create_attention(name, 32, spatial_size=(4, 4), **options)


def test_nam_spatial_needs_spatial_size():
    for name in ("nam_spatial", "nam_full"):
        with pytest.raises(ValueError, match="spatial_size"):
            create_attention(name, 16)


def test_nam_spatial_rejects_another_input_size():
    module = create_attention("nam_spatial", 16, spatial_size=(8, 8))
    module(torch.randn(2, 16, 8, 8))  # the built size works
    with pytest.raises(ValueError) as info:
        module(torch.randn(2, 16, 16, 16))
    message = str(info.value)
    assert "8x8" in message and "16x16" in message and "image_size" in message and "\n" not in message
    with pytest.raises(ValueError, match="nam_full was built for 8x8"):
        create_attention("nam_full", 16, spatial_size=(8, 8))(torch.randn(2, 16, 8, 4))


# --- NAM: the formulas by hand ---------------------------------------------------------------------------


def fixed_input() -> torch.Tensor:
    torch.manual_seed(123)
    return torch.randn(3, 4, 5, 6) * 2 + 0.5


GAMMA = torch.tensor([1.5, -0.5, 2.0, 0.7])  # mixed signs: |γ| and γ give different weights
BETA = torch.tensor([0.1, -0.2, 0.3, 0.0])


def hand_channel(x, gamma, beta, *, abs_weights, detach_weights):
    mean = x.mean(dim=(0, 2, 3), keepdim=True)
    var = x.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
    y = gamma.view(1, -1, 1, 1) * (x - mean) / torch.sqrt(var + EPS) + beta.view(1, -1, 1, 1)
    g = gamma.detach() if detach_weights else gamma
    g = g.abs() if abs_weights else g
    w = (g / g.sum()).view(1, -1, 1, 1)
    return torch.sigmoid(w * y) * x


def hand_spatial(x, lam, beta, *, abs_weights, detach_weights):
    b, c, h, w_ = x.shape
    flat = x.reshape(b, c, h * w_)  # pixel p's statistics over batch and channels
    mean = flat.mean(dim=(0, 1), keepdim=True)
    var = flat.var(dim=(0, 1), unbiased=False, keepdim=True)
    y = lam.view(1, 1, -1) * (flat - mean) / torch.sqrt(var + EPS) + beta.view(1, 1, -1)
    g = lam.detach() if detach_weights else lam
    g = g.abs() if abs_weights else g
    w = (g / g.sum()).view(1, 1, -1)
    return (torch.sigmoid(w * y) * flat).reshape(b, c, h, w_)


def pixel_values(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    lam = torch.linspace(-0.4, 2.0, n)
    lam[n // 2] = 3.0
    beta = torch.linspace(-0.3, 0.3, n)
    return lam, beta


def nam_with(name: str, abs_weights: bool, **gates: tuple[torch.Tensor, torch.Tensor]):
    """The NAM variant `name` (4 channels, 5x6 maps) in train mode, each named gate's BN set to (scale, shift)."""
    module = create_attention(name, 4, spatial_size=(5, 6), abs_weights=abs_weights).train()
    with torch.no_grad():
        for gate, (scale, shift) in gates.items():
            getattr(module, gate).bn.weight.copy_(scale)
            getattr(module, gate).bn.bias.copy_(shift)
    return module


@pytest.mark.parametrize("abs_weights", [True, False])
def test_nam_channel_matches_hand_computation(abs_weights):
    x = fixed_input()
    module = nam_with("nam", abs_weights, channel=(GAMMA, BETA))
    expected = hand_channel(x, GAMMA, BETA, abs_weights=abs_weights, detach_weights=True)
    torch.testing.assert_close(module(x), expected, rtol=1e-5, atol=1e-6)
    g = GAMMA.abs() if abs_weights else GAMMA
    torch.testing.assert_close(module.nam_weights()["channel"], g / g.sum())


@pytest.mark.parametrize("abs_weights", [True, False])
def test_nam_spatial_matches_hand_computation(abs_weights):
    x = fixed_input()
    lam, beta = pixel_values(30)
    module = nam_with("nam_spatial", abs_weights, spatial=(lam, beta))
    expected = hand_spatial(x, lam, beta, abs_weights=abs_weights, detach_weights=True)
    torch.testing.assert_close(module(x), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("abs_weights", [True, False])
def test_nam_full_is_channel_then_spatial(abs_weights):
    x = fixed_input()
    lam, beta = pixel_values(30)
    module = nam_with("nam_full", abs_weights, channel=(GAMMA, BETA), spatial=(lam, beta))
    after_channel = hand_channel(x, GAMMA, BETA, abs_weights=abs_weights, detach_weights=True)
    expected = hand_spatial(after_channel, lam, beta, abs_weights=abs_weights, detach_weights=True)
    torch.testing.assert_close(module(x), expected, rtol=1e-5, atol=1e-6)
    assert set(module.nam_weights()) == {"channel", "spatial"}
    assert module.sparsity_parameters() == [module.channel.bn.weight, module.spatial.bn.weight]


def _scale_grad(name, detach_weights, x, scale, shift, hand):
    """Gradient of a fixed loss w.r.t. the NAM BN scale, from the module and from the hand formula."""
    spatial = name == "nam_spatial"
    module = create_attention(name, 4, spatial_size=(5, 6), detach_weights=detach_weights).train()
    bn = module.spatial.bn if spatial else module.channel.bn
    with torch.no_grad():
        bn.weight.copy_(scale)
        bn.bias.copy_(shift)
    weights = torch.linspace(-1.0, 1.0, x.numel()).view_as(x)  # a loss that is not symmetric in the outputs
    (module(x) * weights).sum().backward()
    hand_scale = scale.clone().requires_grad_(True)
    (hand(x, hand_scale, shift, abs_weights=True, detach_weights=detach_weights) * weights).sum().backward()
    return bn.weight.grad, hand_scale.grad


@pytest.mark.parametrize("name", ["nam", "nam_spatial"])
def test_detach_weights_controls_the_gradient_through_w(name):
    x = fixed_input()
    if name == "nam":
        scale, shift, hand = GAMMA, BETA, hand_channel
    else:
        (scale, shift), hand = pixel_values(30), hand_spatial
    detached, hand_detached = _scale_grad(name, True, x, scale, shift, hand)
    through, hand_through = _scale_grad(name, False, x, scale, shift, hand)
    torch.testing.assert_close(detached, hand_detached, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(through, hand_through, rtol=1e-4, atol=1e-6)
    # The extra term is the gradient through w; it must be there when not detached.
    assert (through - detached).abs().max() > 1e-3


def test_nam_weights_sum_to_one_and_sparsity_parameters_are_the_bn_scales():
    channel = create_attention("nam", 8)
    assert channel.sparsity_parameters() == [channel.channel.bn.weight]
    w = channel.nam_weights()["channel"]
    assert not w.requires_grad
    torch.testing.assert_close(w.sum(), torch.tensor(1.0))
    spatial = create_attention("nam_spatial", 8, spatial_size=(3, 4))
    assert spatial.sparsity_parameters() == [spatial.spatial.bn.weight]
    assert spatial.nam_weights()["spatial"].shape == (12,)


def test_nam_modules_finds_them_through_wrappers():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        create_attention("nam", 8),
        nn.Sequential(create_attention("nam_full", 8, spatial_size=(4, 4))),
        create_attention("se", 8),
    )
    assert [name for name, _ in nam_modules(net)] == ["1", "2.0"]
    wrapped = nn.DataParallel(net)  # on a CPU-only machine it just holds `.module`
    assert [name for name, _ in nam_modules(wrapped)] == ["module.1", "module.2.0"]

    class CompiledLike(nn.Module):  # torch.compile's OptimizedModule keeps the model as `_orig_mod`
        def __init__(self, inner):
            super().__init__()
            self._orig_mod = inner

    assert [name for name, _ in nam_modules(CompiledLike(wrapped))] == ["_orig_mod.module.1", "_orig_mod.module.2.0"]
    assert all(isinstance(m, NAMModule) for _, m in nam_modules(net))


def test_nam_parameter_counts():
    assert n_params(create_attention("nam", 64)) == 128
    assert n_params(create_attention("nam_spatial", 64, spatial_size=(8, 8))) == 128
    assert n_params(create_attention("nam_full", 64, spatial_size=(4, 4))) == 128 + 32


# --- the peers -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("channels, k", [(64, 3), (128, 5), (256, 5), (512, 5), (2048, 7)])
def test_eca_kernel_size(channels, k):
    assert eca_kernel_size(channels) == k
    module = create_attention("eca", channels)
    assert module.conv.kernel_size == (k,) and n_params(module) == k
    assert create_attention("eca", channels, kernel_size=9).conv.kernel_size == (9,)


@pytest.mark.parametrize(
    "backbone, kernel_size, per_stage",
    [
        ("resnet18", [3, 5, 7, 7], (3, 5, 7, 7)),
        ("resnet50", "eca_resnet50", (3, 5, 5, 7)),
        ("resnet18", "eca_resnet18", (3, 5, 7, 7)),
        ("resnet20", [3, 5, 7], (3, 5, 7)),
    ],
)
def test_eca_per_stage_kernel_sizes_reach_each_stage(backbone, kernel_size, per_stage):
    model = build_model(backbone, "eca", num_classes=10, attention_options={"kernel_size": kernel_size})
    found = {(s.site.split(".")[0], model.get_submodule(s.site).conv.kernel_size[0]) for s in attention_sites(model)}
    assert found == {(f"layer{i}", k) for i, k in enumerate(per_stage, start=1)}
    blocks = {"resnet18": [2, 2, 2, 2], "resnet50": [3, 4, 6, 3], "resnet20": [3, 3, 3]}[backbone]
    eca_params = sum(p.numel() for n, p in model.named_parameters() if ".attention." in n)
    assert eca_params == sum(n * k for n, k in zip(blocks, per_stage))


def test_eca_yaml_names_the_released_settings():
    from namexp.models.attention.eca import RELEASED_KERNEL_SIZES

    text = (Path(__file__).resolve().parents[1] / "conf" / "attention" / "eca.yaml").read_text()
    documented = {
        name: tuple(int(k) for k in ks.split(",")) for name, ks in re.findall(r"(eca_resnet\d+)\s+= \[(.*?)\]", text)
    }
    assert documented == {k: v for k, v in RELEASED_KERNEL_SIZES.items() if k != "eca_resnet152"}
    assert RELEASED_KERNEL_SIZES["eca_resnet152"] == RELEASED_KERNEL_SIZES["eca_resnet101"]
    for name, sizes in RELEASED_KERNEL_SIZES.items():  # the checkpoint names end in k<sizes>
        assert f"{name}_k{''.join(map(str, sizes))}" in text or name == "eca_resnet152"


def test_eca_kernel_size_mistakes():
    with pytest.raises(ValueError, match="has 4 values, one per stage, but resnet20 has 3 stages"):
        build_model("resnet20", "eca", num_classes=10, attention_options={"kernel_size": "eca_resnet50"})
    with pytest.raises(ValueError, match="holds one value per stage: build the network with build_model"):
        create_attention("eca", 64, kernel_size=[3, 5, 5, 7])
    with pytest.raises(ValueError, match="one of eca_resnet18, eca_resnet34"):
        create_attention("eca", 64, kernel_size="eca_resnet19")
    for bad in (0, -3, 2, [3, 4, 5, 7], []):
        with pytest.raises(ValueError) as info:
            create_attention("eca", 64, kernel_size=bad)
        suggested = [int(n) for n in re.findall(r"(?:e\.g\. |use |or )(\d+)", str(info.value))]
        assert suggested or "empty" in str(info.value), str(info.value)
        assert all(n % 2 == 1 for n in suggested), f"an even kernel suggested: {info.value}"


def test_eca_matches_its_formula():
    torch.manual_seed(0)
    module = create_attention("eca", 16)
    x = torch.randn(2, 16, 3, 3)
    pooled = x.mean(dim=(2, 3))  # (B, C)
    k = module.conv.weight.view(-1)
    padded = F.pad(pooled, (1, 1))
    logits = torch.stack([(padded[:, i : i + 3] * k).sum(1) for i in range(16)], dim=1)
    torch.testing.assert_close(module(x), x * torch.sigmoid(logits)[:, :, None, None])


def test_se_and_cbam_parameter_counts():
    # SE, r = 16, 1x1 convs with bias: 2·C·C/r + C/r + C
    assert n_params(create_attention("se", 64)) == 2 * 64 * 4 + 4 + 64
    assert n_params(create_attention("se", 8)) == 2 * 8 * 1 + 1 + 8  # reduced width floored at 1
    # CBAM: the same MLP as Linear layers with bias, plus 7x7 conv (98) and BN(1) (2)
    assert n_params(create_attention("cbam", 64)) == 580 + 100


def test_tam_has_300_parameters_and_the_official_init():
    module = create_attention("tam", 64)
    assert n_params(module) == 300
    assert module.hw.bn.weight.item() == 0.0  # the official "SpatialGate" branch
    assert module.cw.bn.weight.item() == 1.0 and module.hc.bn.weight.item() == 1.0


def test_tam_matches_three_rotated_gates():
    torch.manual_seed(0)
    module = create_attention("tam", 4)
    with torch.no_grad():
        for gate in (module.cw, module.hc, module.hw):
            gate.bn.weight.fill_(1.0)
            gate.conv.weight.normal_()
    module.eval()
    x = torch.randn(2, 4, 5, 6)

    def gate(g, t):  # t: (B, D, P, Q), pooled over D
        pooled = torch.cat([t.amax(1, keepdim=True), t.mean(1, keepdim=True)], 1)
        return t * torch.sigmoid(g.bn(g.conv(pooled)))

    expected = (
        gate(module.cw, x.transpose(1, 2)).transpose(1, 2)
        + gate(module.hc, x.permute(0, 3, 2, 1)).permute(0, 3, 2, 1)
        + gate(module.hw, x)
    ) / 3
    torch.testing.assert_close(module(x), expected)


def test_cbam_spatial_gate_starts_at_one_half():
    torch.manual_seed(0)
    module = create_attention("cbam", 32)
    assert module.spatial_gate.bn.weight.item() == 0.0
    x = torch.randn(2, 32, 4, 4)
    # With BN weight 0 and bias 0 the spatial gate is sigmoid(0) = 0.5: the output is half the channel gate's.
    torch.testing.assert_close(module(x), 0.5 * module.channel_gate(x))


@pytest.mark.parametrize("combine", ["add", "multiply"])
def test_bam_combines_the_branches(combine):
    torch.manual_seed(0)
    module = create_attention("bam", 32, combine=combine).eval()
    x = torch.randn(2, 32, 8, 8)
    mc = module.channel(x.mean(dim=(2, 3)))[:, :, None, None]
    ms = module.spatial(x)
    logits = mc + ms if combine == "add" else mc * ms
    torch.testing.assert_close(module(x), x * (1 + torch.sigmoid(logits)))
    assert module.spatial[3].dilation == (4, 4) and module.spatial[3].padding == (4, 4)
    assert create_attention("bam", 32).combine == "add"  # the paper's form by default


def test_bam_bn_position_paper_normalises_each_branch_output():
    torch.manual_seed(0)
    code, paper = create_attention("bam", 64), create_attention("bam", 64, bn_position="output")
    assert code.bn_position == "hidden" and "bn_position='output'" in repr(paper)
    kinds = lambda seq: [type(m).__name__ for m in seq]
    assert kinds(code.channel) == ["Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert kinds(paper.channel) == ["Linear", "ReLU", "Linear", "BatchNorm1d"] and paper.channel[3].num_features == 64
    assert kinds(paper.spatial)[-2:] == ["Conv2d", "BatchNorm2d"] and paper.spatial[-1].num_features == 1
    assert sum(isinstance(m, nn.BatchNorm2d) for m in code.spatial) == 3 and not isinstance(
        code.spatial[-1], nn.BatchNorm2d
    )
    hidden = 64 // 16  # BN parameters: code 2·h per hidden layer (4 of them), paper 2·C + 2
    assert n_params(code) - n_params(paper) == 4 * 2 * hidden - (2 * 64 + 2)

    with torch.no_grad():  # evaluation with non-trivial BN statistics: Mc = BN(W1 ReLU(W0 avg + b0) + b1)
        for bn in (paper.channel[3], paper.spatial[-1]):
            bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2), bn.weight.uniform_(0.5, 2)
    paper.eval()
    x = torch.randn(2, 64, 8, 8)
    lin0, lin1, bn = paper.channel[0], paper.channel[2], paper.channel[3]
    mlp = lin1(torch.relu(lin0(x.mean(dim=(2, 3)))))
    mc = (mlp - bn.running_mean) / torch.sqrt(bn.running_var + EPS) * bn.weight + bn.bias
    ms = paper.spatial(x)
    torch.testing.assert_close(paper(x), x * (1 + torch.sigmoid(mc[:, :, None, None] + ms)))


def test_nonlocal_starts_as_identity_and_learns():
    torch.manual_seed(0)
    module = create_attention("nonlocal", 16).train()
    x = torch.randn(2, 16, 7, 7)  # odd size: the 2x2 max-pool keeps the border (ceil mode)
    out = module(x)
    torch.testing.assert_close(out, x)
    assert module.theta.out_channels == 8  # C / 2
    (out * torch.randn_like(out)).sum().backward()
    assert module.out_bn.weight.grad.abs().sum() > 1e-3  # the zero-initialised scale does get a gradient
    assert module.theta.weight.std() < 0.02  # N(0, 0.01²) init
