"""timm backbones (`backbone=timm/<name>`, the extra namexp[timm]): build, train a step, evaluate, errors."""

from __future__ import annotations

import socket

import pytest
import torch
from torch import nn

from helpers import TINY, only_run_dir, read_record, run_inproc
from namexp.models import attention_sites, build_model
from namexp.models.attention import NAMChannel
from namexp.models.attention.cbam import CBAM
from namexp.models.backbones import timm_models

timm = pytest.importorskip("timm", reason="timm is not installed (pip install 'namexp[timm]')")

BLOCKS = {"timm/resnet18": 8, "timm/resnet50": 16}
MODULES = {"nam": NAMChannel, "cbam": CBAM}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("attention", ["nam", "cbam"])
@pytest.mark.parametrize("backbone", ["timm/resnet18", "timm/resnet50"])
def test_timm_resnet_with_namexp_attention_trains_a_step_and_evaluates(backbone, attention):
    torch.manual_seed(0)
    model = build_model(backbone, attention, num_classes=10, image_size=32)
    assert isinstance(model, timm.models.resnet.ResNet) and model.build_config["timm"] == timm.__version__
    sites = attention_sites(model)
    assert len(sites) == BLOCKS[backbone] and all(s.module == attention for s in sites)
    assert all(isinstance(model.get_submodule(s.site), MODULES[attention]) for s in sites)
    assert all(s.site.endswith(".se") and "after bn" in s.where for s in sites)
    if attention == "nam":  # 2·C per block over the same timm model without attention
        assert n_params(model) - n_params(build_model(backbone, "none", num_classes=10)) == sum(
            2 * s.channels for s in sites
        )

    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 3, 5, 9])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    before = {name: p.detach().clone() for name, p in model.named_parameters() if ".se." in name}
    # Two steps: timm zero-initialises each branch's last BN (zero_init_last), so in the first step the
    # attention sees zeros and gets zero gradients; it learns from the second.
    for _ in range(2):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model.train()(x), y).backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)
        optimizer.step()
    assert any(not torch.equal(p, before[name]) for name, p in model.named_parameters() if name in before)
    with torch.no_grad():
        logits = model.eval()(x)
    assert logits.shape == (4, 10) and torch.isfinite(logits).all()


def test_a_training_run_on_a_timm_backbone_records_timm(capsys, cifar100_root, tmp_path):
    extra = [
        "backbone=timm/resnet18",
        "trainer.epochs=1",
        "trainer.limit_train_batches=1",
        "trainer.limit_eval_batches=1",
    ]
    result = run_inproc(["train", *TINY, f"data.root={cifar100_root}", *extra], capsys)
    assert result.code == 0, result.err
    record = read_record(only_run_dir(tmp_path / "runs"))
    assert record["status"] == "completed" and record["backbone"] == "timm/resnet18"
    assert record["environment"]["timm"] == timm.__version__
    assert len(record["placement"]) == 8 and record["placement"][0]["site"] == "layer1.0.se"


@pytest.mark.parametrize(
    "overrides, words",
    [
        (["backbone=timm/resnet18", "backbone.name=timm/efficientnet_b0"], ["efficientnet family", "resnet (resnet*"]),
        (["backbone=timm/resnet18", "attention=bam"], ["bam does not fit timm/resnet18", "none, nam, se"]),
        (["backbone=timm/resnet18", "attention=nam_full"], ["nam_full does not fit"]),
        (["backbone=timm/resnet18", "attention.sites=stage2"], ["attention.sites=stage2 needs a namexp backbone"]),
        (["backbone=timm/resnet18", "backbone.name=timm/resnet_nope"], ["timm has no model 'resnet_nope'"]),
        (["backbone=resnet18", "backbone.pretrained=true"], ["backbone.pretrained=true needs a timm/<name>"]),
    ],
)
def test_what_timm_cannot_take_is_a_one_line_error(overrides, words, capsys):
    result = run_inproc(["info", "data=synthetic", *overrides], capsys)
    message = result.err.strip().splitlines()
    assert result.code == 2 and len(message) == 1, result.err
    assert all(word in message[0] for word in words), message[0]


def test_missing_timm_names_the_extra(monkeypatch, capsys):
    monkeypatch.setattr(timm_models, "timm_installed", lambda: False)
    result = run_inproc(["info", "data=synthetic", "backbone=timm/resnet18"], capsys)
    message = result.err.strip().splitlines()
    assert result.code == 2 and len(message) == 1, result.err
    assert "needs timm, which is not installed: pip install 'namexp[timm]'" in message[0]


def test_pretrained_offline_is_a_one_line_error(monkeypatch):
    def unreachable(*args, **kwargs):
        raise OSError("no route to host")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(socket, "create_connection", unreachable)
    with pytest.raises(ValueError, match=r"pretrained=true needs the network: .* cannot be reached \(offline\?\)"):
        build_model("timm/resnet18", "nam", num_classes=10, pretrained=True)
    # With HF_HUB_OFFLINE, weights come from the local cache only: none there is the same kind of error.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True, raising=False)
    with pytest.raises(ValueError, match="cannot fetch the pretrained weights of timm/resnet18") as info:
        build_model("timm/resnet18", "nam", num_classes=10, pretrained=True)
    assert "\n" not in str(info.value)


def test_pretrained_needs_a_timm_backbone_in_the_api():
    with pytest.raises(ValueError, match="pretrained weights exist for timm/<name> backbones only"):
        build_model("resnet18", "nam", num_classes=10, pretrained=True)
