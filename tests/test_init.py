"""`backbone.init`: each init reproduces its official per-layer formulas on a ResNet-18."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from helpers import compose_run, run_inproc
from namexp.models import build_model
from namexp.models.init import INITS
from namexp.train.build import make_model


def resnet18(attention: str, init: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("resnet18", attention, num_classes=100, image_size=32, init=init)


def close(actual: float, expected: float, rel: float = 0.03) -> bool:
    return abs(actual - expected) <= rel * expected


# layer2.0.conv1: 64 -> 128 channels, 3x3 (fan_in 576, fan_out 1152: the two rules give different stds).
FAN_IN, FAN_OUT = 64 * 9, 128 * 9
CONV_RULES = {
    "torchvision": (math.sqrt(2 / FAN_OUT), "normal"),  # kaiming_normal_, fan_out, ReLU gain
    "official_nam": (math.sqrt(2 / FAN_IN), "uniform"),  # kaiming_uniform_ with its defaults: fan_in, gain sqrt(2)
    "official_cbam": (math.sqrt(2 / FAN_OUT), "normal"),  # kaiming_normal_(mode='fan_out')
}


@pytest.mark.parametrize("init", INITS)
def test_conv_weights_follow_the_official_std_formula(init):
    weight = resnet18("nam", init).layer2[0].conv1.weight.detach()
    std, law = CONV_RULES[init]
    assert close(weight.std().item(), std), (init, weight.std().item(), std)
    assert abs(weight.mean().item()) < 0.05 * std
    bound = math.sqrt(3) * std  # a uniform law's bound; a normal law of 73,728 draws goes well past it
    assert (weight.abs().max().item() <= bound * (1 + 1e-6)) == (law == "uniform")


def test_official_cbam_head_biases_and_shortcut():
    model = resnet18("cbam", "official_cbam")
    assert close(model.fc.weight.std().item(), math.sqrt(2 / 512))  # kaiming_normal_(fc.weight): fan_in
    biases = {n: p for n, p in model.named_parameters() if n.endswith(".bias") and "bn" not in n.split(".")[-2]}
    assert "fc.bias" in biases and "layer1.0.attention.channel_gate.mlp.0.bias" in biases
    assert all(p.eq(0).all() for p in biases.values()), [n for n, p in biases.items() if not p.eq(0).all()]
    # The key `layer2.0.downsample.0.weight` holds no "conv": PyTorch's default, std 1 / sqrt(3 * fan_in).
    shortcut = model.layer2[0].downsample[0].weight
    assert close(shortcut.std().item(), 1 / math.sqrt(3 * 64), rel=0.05)
    assert all(b.attention.spatial_gate.bn.weight.eq(0).all() for b in model.modules() if hasattr(b, "bn2"))


def test_official_nam_sets_every_bn_to_one_and_leaves_linear_and_conv_biases_at_pytorch_default():
    model = resnet18("cbam", "official_nam")
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(m.weight.eq(1).all() and m.bias.eq(0).all() for m in norms)  # CBAM's spatial gate included
    assert not model.fc.bias.eq(0).all()  # nn.Linear's default: uniform(-1/sqrt(512), 1/sqrt(512))
    assert close(model.fc.weight.std().item(), 1 / math.sqrt(3 * 512))
    bam = resnet18("bam", "official_nam").stage_attention["layer1"].spatial[0]
    assert not bam.bias.eq(0).all() and bam.bias.abs().max() <= 1 / math.sqrt(64)  # PyTorch's default bias
    assert close(bam.weight.std().item(), math.sqrt(2 / 64), rel=0.1)  # kaiming_uniform_, fan_in = 64 (1x1)


@pytest.mark.parametrize("init", INITS)
def test_attention_of_other_families_keeps_its_own_init(init):
    nonlocal_block = resnet18("nonlocal", init).stage_attention["layer2"]
    assert nonlocal_block.out_bn.weight.eq(0).all() and nonlocal_block.theta.weight.std() < 0.02
    se = resnet18("se", init).layer1[0].attention
    reference = resnet18("se", "torchvision").layer1[0].attention
    for a, b in zip(se.parameters(), reference.parameters()):  # drawn when built, untouched by the init
        assert torch.equal(a, b)


def test_torchvision_is_the_default_and_what_the_backbones_build():
    default, named = resnet18("nam", "torchvision"), build_model("resnet18", "nam", num_classes=100)
    assert named.build_config["init"] == "torchvision" and default.build_config["init"] == "torchvision"
    torch.manual_seed(0)
    plain = build_model("resnet18", "nam", num_classes=100, image_size=32)
    for a, b in zip(default.state_dict().values(), plain.state_dict().values()):
        assert torch.equal(a, b)


def test_init_is_reachable_from_the_config_and_checked(capsys):
    run = compose_run(["data=synthetic", "backbone=resnet20", "backbone.init=official_nam"])
    model = make_model(run, run.data.num_classes, run.data.image_size)
    assert model.build_config["init"] == "official_nam"
    result = run_inproc(["info", "data=synthetic", "backbone.init=paper"], capsys)
    assert result.code == 2 and len(result.err.strip().splitlines()) == 1
    assert "backbone.init=paper" in result.err and "torchvision, official_nam, official_cbam" in result.err
    with pytest.raises(ValueError, match="unknown init 'paper': choose one of torchvision, official_nam"):
        build_model("resnet20", "nam", num_classes=10, init="paper")
