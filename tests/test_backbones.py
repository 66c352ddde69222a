"""Backbones: every backbone x attention trains a step, exact parameter counts, sites, sizes, errors."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from helpers import run_inproc
from namexp.models import attention_names, attention_sites, backbone_names, build_model
from namexp.models.attention import NoAttention

BACKBONES = ["resnet18", "resnet34", "resnet50", "resnet20", "resnet56", "mobilenetv2"]


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def train_step(model: nn.Module, image_size: int, num_classes: int) -> None:
    """One forward and backward pass on a batch of 2; every parameter must get a finite gradient."""
    x = torch.randn(2, 3, image_size, image_size)
    target = torch.tensor([0, num_classes - 1])
    logits = model.train()(x)
    assert logits.shape == (2, num_classes)
    nn.functional.cross_entropy(logits, target).backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None]
    assert not missing, f"no gradient for {missing[:5]}"
    bad = [name for name, p in model.named_parameters() if not torch.isfinite(p.grad).all()]
    assert not bad, f"non-finite gradient for {bad[:5]}"


def test_registry_names():
    assert backbone_names() == BACKBONES


@pytest.mark.parametrize("attention", attention_names())
@pytest.mark.parametrize("backbone", BACKBONES)
def test_cifar_stem_forward_backward(backbone, attention):
    torch.manual_seed(0)
    model = build_model(backbone, attention, num_classes=10, image_size=32)
    assert model.build_config["stem"] == "cifar"
    train_step(model, 32, 10)


IMAGENET_CASES = [("resnet18", a) for a in attention_names()] + [
    ("resnet50", "none"),
    ("resnet50", "nam_full"),
    ("resnet50", "bam"),
    ("resnet50", "nonlocal"),
    ("resnet34", "tam"),
    ("mobilenetv2", "none"),
    ("mobilenetv2", "nam_full"),
    ("mobilenetv2", "bam"),
    ("mobilenetv2", "nonlocal"),
    ("mobilenetv2", "cbam"),
]


@pytest.mark.parametrize("backbone, attention", IMAGENET_CASES)
def test_imagenet_stem_forward_backward(backbone, attention):
    torch.manual_seed(0)
    model = build_model(backbone, attention, num_classes=7, image_size=64, stem="imagenet")
    assert model.build_config["stem"] == "imagenet"
    train_step(model, 64, 7)


# --- parameter counts ------------------------------------------------------------------------------------


def test_cifar_resnet18_parameter_counts():
    def count(attention):
        return n_params(build_model("resnet18", attention, num_classes=100, image_size=32))

    base = count("none")
    assert base == 11_220_132
    assert count("nam") - base == 3_840
    assert count("se") - base == 89_080
    assert count("tam") - base == 2_400
    assert count("half") == base


def test_imagenet_resnet50_parameter_count():
    assert n_params(build_model("resnet50", num_classes=1000, image_size=224)) == 25_557_032


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet50", "mobilenetv2"])
def test_imagenet_layouts_match_torchvision(name):
    ours = build_model(name, num_classes=1000, image_size=224).state_dict()
    theirs = getattr(torchvision.models, name.replace("mobilenetv2", "mobilenet_v2"))().state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}


def test_mobilenetv2_width_multiplier_matches_torchvision():
    ours = build_model("mobilenetv2", num_classes=10, image_size=224, width_mult=0.5)
    assert n_params(ours) == n_params(torchvision.models.mobilenet_v2(num_classes=10, width_mult=0.5))
    channels = [m.out_channels for m in ours.modules() if isinstance(m, nn.Conv2d)]
    assert all(c % 8 == 0 for c in channels)
    train_step(build_model("mobilenetv2", "nam", num_classes=10, image_size=32, width_mult=0.5), 32, 10)


def test_cifar_resnet_parameter_counts():
    # Option A shortcuts are parameter-free: the paper's 0.27M / 0.85M.
    assert n_params(build_model("resnet20", num_classes=10, image_size=32)) == 269_722
    assert n_params(build_model("resnet56", num_classes=10, image_size=32)) == 853_018


# --- attention sites -------------------------------------------------------------------------------------


def sites_and_blocks(backbone: str, attention: str) -> list[tuple]:
    """(site, the block that holds it) for every attention site of a 32x32, 10-class model."""
    model = build_model(backbone, attention, num_classes=10, image_size=32)
    return [(site, model.get_submodule(site.site.rsplit(".", 1)[0])) for site in attention_sites(model)]


def test_resnet18_block_sites():
    sites = sites_and_blocks("resnet18", "nam")
    assert [s.site for s, _ in sites] == [f"layer{i}.{j}.attention" for i in range(1, 5) for j in range(2)]
    assert [s.channels for s, _ in sites] == [64, 64, 128, 128, 256, 256, 512, 512]
    assert [s.spatial_size for s, _ in sites] == [(32, 32)] * 2 + [(16, 16)] * 2 + [(8, 8)] * 2 + [(4, 4)] * 2
    for site, block in sites:
        assert site.module == "nam" and site.kind == "block"
        assert site.preceding_bn is block.bn2
        assert "after bn2" in site.where


def test_resnet50_block_sites_follow_bn3():
    sites = sites_and_blocks("resnet50", "se")
    assert len(sites) == 16
    for site, block in sites:
        assert site.preceding_bn is block.bn3 and site.channels == block.bn3.num_features


def test_stage_and_middle_sites():
    bam = attention_sites(build_model("resnet18", "bam", num_classes=10, image_size=32))
    assert [(s.site, s.channels, s.kind) for s in bam] == [
        ("stage_attention.layer1", 64, "stage"),
        ("stage_attention.layer2", 128, "stage"),
        ("stage_attention.layer3", 256, "stage"),
    ]
    assert all(s.preceding_bn is None for s in bam)
    nonlocal_ = attention_sites(build_model("resnet18", "nonlocal", num_classes=10, image_size=32))
    assert [(s.site, s.kind) for s in nonlocal_] == [
        ("stage_attention.layer2", "middle"),
        ("stage_attention.layer3", "middle"),
    ]
    assert len(attention_sites(build_model("resnet20", "bam", num_classes=10, image_size=32))) == 2
    assert len(attention_sites(build_model("resnet20", "nonlocal", num_classes=10, image_size=32))) == 1


def test_none_keeps_empty_block_sites():
    model = build_model("resnet18", "none", num_classes=10, image_size=32)
    sites = attention_sites(model)
    assert len(sites) == 8 and {s.module for s in sites} == {"none"}
    assert all(isinstance(model.get_submodule(s.site), nn.Identity) for s in sites)
    # With bam the block slots hold identities too, but only the stage sites are reported.
    bam_model = build_model("resnet18", "bam", num_classes=10, image_size=32)
    assert isinstance(bam_model.layer1[0].attention, NoAttention)


def test_mobilenetv2_sites():
    sites = sites_and_blocks("mobilenetv2", "eca")
    assert len(sites) == 17
    for site, block in sites:
        assert site.preceding_bn is block.conv[-1] and isinstance(block.conv[-1], nn.BatchNorm2d)
    model = build_model("mobilenetv2", "none", num_classes=10, image_size=32)
    assert sum(model.features[i].use_res_connect for i in range(1, 18)) == 10  # stride 1 and in == out only
    cifar_bam = attention_sites(build_model("mobilenetv2", "bam", num_classes=10, image_size=32))
    assert [s.channels for s in cifar_bam] == [24, 32, 96]
    imagenet_bam = attention_sites(build_model("mobilenetv2", "bam", num_classes=10, image_size=64, stem="imagenet"))
    assert [s.channels for s in imagenet_bam] == [16, 24, 32, 96]
    nonlocal_ = attention_sites(build_model("mobilenetv2", "nonlocal", num_classes=10, image_size=32))
    assert [s.channels for s in nonlocal_] == [32, 96]


def test_sites_through_a_wrapper_and_as_records():
    model = nn.DataParallel(build_model("resnet18", "tam", num_classes=10, image_size=32))
    sites = attention_sites(model)
    assert sites[0].site == "module.layer1.0.attention"
    assert sites[0].to_record()["preceding_bn"] == "module.layer1.0.bn2"


@pytest.mark.parametrize(
    "backbone, image_size, stem",
    [
        ("resnet18", 64, "imagenet"),
        ("resnet50", 72, "imagenet"),
        ("resnet20", 32, "cifar"),
        ("mobilenetv2", 32, "cifar"),
        ("mobilenetv2", 64, "imagenet"),
    ],
)
def test_recorded_sizes_match_the_real_feature_maps(backbone, image_size, stem):
    """Each site's recorded (channels, H, W) is what actually flows into the module there."""
    between = "nonlocal" if backbone == "resnet50" else "bam"
    for attention in ("none", between):  # the block sites, then the between-stage ones
        model = build_model(backbone, attention, num_classes=10, image_size=image_size, stem=stem).eval()
        sites = attention_sites(model)
        seen = {}
        for site in sites:
            model.get_submodule(site.site).register_forward_hook(
                lambda module, inputs, output, name=site.site, seen=seen: seen.__setitem__(
                    name, tuple(inputs[0].shape[1:])
                )
            )
        model(torch.randn(1, 3, image_size, image_size))
        assert seen == {site.site: (site.channels, *site.spatial_size) for site in sites}


# --- init ------------------------------------------------------------------------------------------------


def test_backbone_init_leaves_attention_init_alone():
    model = build_model("resnet18", "cbam", num_classes=10, image_size=32)
    assert all(b.attention.spatial_gate.bn.weight.item() == 0.0 for b in model.modules() if hasattr(b, "bn2"))
    assert all(
        m.weight.eq(1).all() for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d) and "attention" not in n
    )
    nl = build_model("resnet18", "nonlocal", num_classes=10, image_size=32).stage_attention["layer2"]
    assert nl.out_bn.weight.eq(0).all() and nl.theta.weight.std() < 0.02  # not He-initialised (std ~0.12)
    conv = model.layer3[0].conv1  # He init, fan_out: std = sqrt(2 / (256 * 9))
    assert abs(conv.weight.std().item() - (2 / (256 * 9)) ** 0.5) < 0.002


# --- errors and options ----------------------------------------------------------------------------------


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ValueError) as info:
        build_model("resnet19", num_classes=10, image_size=32)
    assert all(name in str(info.value) for name in BACKBONES)
    with pytest.raises(ValueError) as info:
        build_model("resnet18", "cbma", num_classes=10, image_size=32)
    assert all(name in str(info.value) for name in attention_names())
    with pytest.raises(ValueError) as info:
        build_model("resnet18", num_classes=10, image_size=32, stem="tiny")
    assert all(name in str(info.value) for name in ("auto", "cifar", "imagenet"))
    with pytest.raises(ValueError) as info:
        build_model("resnet18", "se", num_classes=10, image_size=32, attention_options={"ratio": 4})
    assert "'ratio'" in str(info.value) and "reduction" in str(info.value)
    with pytest.raises(ValueError):
        build_model("resnet18", "none", num_classes=10, image_size=32, attention_options={"reduction": 4})


def test_backbone_specific_errors():
    with pytest.raises(ValueError, match="CIFAR network"):
        build_model("resnet20", num_classes=10, image_size=32, stem="imagenet")
    with pytest.raises(ValueError, match="CIFAR network"):
        build_model("resnet56", num_classes=10, image_size=224)  # auto picks the ImageNet stem above 64 px
    with pytest.raises(ValueError, match="mobilenetv2 only"):
        build_model("resnet18", num_classes=10, image_size=32, width_mult=0.5)
    with pytest.raises(ValueError, match="num_classes"):
        build_model("resnet18", num_classes=0, image_size=32)


def test_auto_stem_and_options_reach_the_modules():
    assert build_model("resnet18", num_classes=10, image_size=64).conv1.kernel_size == (3, 3)
    assert build_model("resnet18", num_classes=10, image_size=96).conv1.kernel_size == (7, 7)
    model = build_model(
        "resnet18",
        "nam",
        num_classes=10,
        image_size=32,
        attention_options={"abs_weights": False, "detach_weights": False},
    )
    assert not model.layer1[0].attention.abs_weights and not model.layer4[1].attention.detach_weights
    assert model.build_config["attention_options"] == {"abs_weights": False, "detach_weights": False}


def test_nam_spatial_model_rejects_another_image_size():
    model = build_model("resnet20", "nam_spatial", num_classes=10, image_size=32)
    with pytest.raises(ValueError, match="32x32 feature maps but got 16x16"):
        model(torch.randn(2, 3, 16, 16))


# --- the same mistakes in a config: one line that names the key ------------------------------------------


@pytest.mark.parametrize(
    "overrides, words",
    [
        (["backbone=resnet18", "backbone.width_mult=0.5"], ["backbone.width_mult=0.5", "mobilenetv2 only"]),
        (["backbone=resnet20", "backbone.stem=imagenet"], ["CIFAR network", "backbone.stem=imagenet"]),
        (["attention=se", "++attention.options.ratio=4"], ["'ratio'", "reduction", "attention.options.ratio"]),
        (
            ["attention=cbam", "++attention.options.kernel_size=4"],
            ["kernel_size=4", "3 or 5", "attention.options.kernel_size"],
        ),
        (["attention.sites=stage5"], ["attention.sites=stage5", "all, stage1, stage2, stage3, stage4, last_block"]),
        (["backbone=resnet56", "attention.sites=stage4"], ["attention.sites=stage4", "stage3, last_block_of_stage"]),
        (["attention=bam", "attention.sites=stage4"], ["sites=stage4 leaves no place for bam", "stage3"]),
        (
            ["backbone=resnet20", "attention=eca", "attention.options.kernel_size=[3,5,5,7]"],
            ["attention.options.kernel_size", "one per stage", "resnet20 has 3 stages"],
        ),
        (["attention=eca", "attention.options.kernel_size=0"], ["kernel_size=0", "odd integer (e.g. 3)"]),
    ],
)
def test_config_mistakes_name_the_config_key(overrides, words, capsys):
    result = run_inproc(["info", "data=synthetic", *overrides], capsys)
    assert result.code == 2
    message = result.err.strip().splitlines()
    assert len(message) == 1 and message[0].startswith("error: "), result.err
    assert all(word in message[0] for word in words), message[0]
