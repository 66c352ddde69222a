"""`attention.sites`: which documented places hold a module, as a sweep axis.

Each choice puts modules exactly where `attention_sites(model)` and `namexp info` say, parameter counts follow,
a bad value is one line listing the choices (test_backbones), the run record keeps it, and `compare` groups by it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from test_compare import make_run
from torch import nn

from helpers import TINY, compose_run, only_run_dir, read_record, run_inproc
from namexp.compare import build, load_runs
from namexp.models import attention_sites, build_model
from namexp.models.backbones import backbone_site_choices
from namexp.train.build import make_model

STAGES = {"resnet18": [2, 2, 2, 2], "resnet50": [3, 4, 6, 3], "resnet20": [3, 3, 3]}
# MobileNetV2's four site stages: the blocks (features.N) of the 16+24-, 32-, 64+96- and 160+320-channel rows.
MOBILENET_STAGES = [[1, 2, 3], [4, 5, 6], [7, 8, 9, 10, 11, 12, 13], [14, 15, 16, 17]]


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def expected_block_sites(backbone: str, sites: str) -> list[str]:
    """The block sites a choice selects, written out from the architecture."""
    if backbone == "mobilenetv2":
        stages = [[f"features.{i}.attention" for i in blocks] for blocks in MOBILENET_STAGES]
    else:
        stages = [[f"layer{k}.{i}.attention" for i in range(n)] for k, n in enumerate(STAGES[backbone], start=1)]
    if sites == "all":
        return [site for stage in stages for site in stage]
    if sites == "last_block_of_stage":
        return [stage[-1] for stage in stages]
    return stages[int(sites.removeprefix("stage")) - 1]


@pytest.mark.parametrize("backbone", ["resnet18", "resnet50", "resnet20", "mobilenetv2"])
def test_each_choice_puts_nam_exactly_in_those_blocks_and_counts_its_parameters(backbone):
    baseline = n_params(build_model(backbone, "none", num_classes=10))
    added = {}
    for sites in backbone_site_choices(backbone):
        model = build_model(backbone, "nam", num_classes=10, sites=sites)
        found = attention_sites(model)
        assert [s.site for s in found] == expected_block_sites(backbone, sites), sites
        assert all(s.module == "nam" for s in found)
        # Every other block slot holds an identity.
        chosen = {s.site for s in found}
        empty = [name for name, m in model.named_modules() if name.endswith(".attention") and name not in chosen]
        assert all(isinstance(model.get_submodule(name), nn.Identity) for name in empty)
        added[sites] = n_params(model) - baseline
        assert added[sites] == sum(2 * s.channels for s in found), sites  # NAM: γ and β per channel
        assert model.build_config["sites"] == sites
    assert 0 < added["stage1"] < added["all"] and added["last_block_of_stage"] < added["all"]
    assert sum(added[f"stage{k}"] for k in range(1, len(backbone_site_choices(backbone)) - 1)) == added["all"]


def test_stage4_nam_on_resnet18_has_fewer_parameters_than_all():
    params = {s: n_params(build_model("resnet18", "nam", num_classes=100, sites=s)) for s in ("all", "stage4")}
    assert params["all"] - 11_220_132 == 3_840 and params["stage4"] - 11_220_132 == 2 * (2 * 512)
    assert params["stage4"] < params["all"]


@pytest.mark.parametrize(
    "attention, sites, expected",
    [
        ("bam", "stage2", ["stage_attention.layer2"]),
        ("bam", "last_block_of_stage", ["stage_attention.layer1", "stage_attention.layer2", "stage_attention.layer3"]),
        ("nonlocal", "stage3", ["stage_attention.layer3"]),
    ],
)
def test_between_stage_modules_belong_to_the_stage_they_follow(attention, sites, expected):
    model = build_model("resnet18", attention, num_classes=10, sites=sites)
    assert [s.site for s in attention_sites(model)] == expected


def test_a_choice_that_leaves_no_place_is_a_clear_error():
    with pytest.raises(ValueError, match="sites=stage4 leaves no place for bam in resnet18: bam goes between"):
        build_model("resnet18", "bam", num_classes=10, sites="stage4")
    with pytest.raises(ValueError, match="unknown sites 'stage4' for resnet20: choose one of all, stage1"):
        build_model("resnet20", "nam", num_classes=10, sites="stage4")


def _info_sites(output: str) -> list[str]:
    return re.findall(r"(?m)^│ ((?:layer|features|stage_attention)[\w.]+)", output)


@pytest.mark.parametrize("sites", ["stage2", "last_block_of_stage"])
def test_namexp_info_shows_where_the_modules_sit_and_lists_the_choices(sites, capsys):
    overrides = ["data=synthetic", "backbone=resnet20", "attention=cbam", f"attention.sites={sites}"]
    result = run_inproc(["info", *overrides], capsys)
    assert result.code == 0, result.err
    run = compose_run(overrides)
    model = make_model(run, run.data.num_classes, run.data.image_size)
    assert (
        _info_sites(result.out) == [s.site for s in attention_sites(model)] == expected_block_sites("resnet20", sites)
    )
    choices = " ".join(result.out.split("attention.sites (resnet20)", 1)[1].replace("│", " ").split())
    assert all(f"{c}," in choices for c in ("all", "stage1", "stage2", "stage3")) and "last_block_of_stage" in choices
    assert "stage4" not in result.out  # resnet20 has three stages


def test_the_run_record_keeps_the_sites(capsys, cifar100_root, tmp_path):
    extra = ["trainer.epochs=1", "trainer.limit_train_batches=1", "trainer.limit_eval_batches=1"]
    result = run_inproc(["train", *TINY, f"data.root={cifar100_root}", "attention.sites=stage3", *extra], capsys)
    assert result.code == 0, result.err
    record = read_record(only_run_dir(tmp_path / "runs"))
    assert record["sites"] == "stage3" and record["config"]["attention"]["sites"] == "stage3"
    assert [p["site"] for p in record["placement"]] == expected_block_sites("resnet20", "stage3")


def test_compare_groups_by_sites(tmp_path: Path):
    for seed in range(2):
        make_run(tmp_path, f"none{seed}", attention="none", seed=seed, final=30.0 + seed)
        make_run(tmp_path, f"nam{seed}", attention="nam", seed=seed, final=29.0 + seed)  # a record without sites
        make_run(tmp_path, f"nam_all{seed}", attention="nam", seed=seed, final=29.0, config={"attention.sites": "all"})
        make_run(tmp_path, f"nam4_{seed}", attention="nam", seed=seed, final=31.0, config={"attention.sites": "stage4"})
    comp = build(load_runs([tmp_path])[0])
    nam = {g.variant_text: g for g in comp.groups if g.attention == "nam"}
    assert sorted(nam) == ["attention.sites=all", "attention.sites=stage4"]
    assert nam["attention.sites=all"].stats["n"] == 4 and nam["attention.sites=stage4"].stats["n"] == 2
    assert all(g.baseline is not None and g.baseline.attention == "none" for g in nam.values())
    assert nam["attention.sites=stage4"].stats["delta_final_top1"] == pytest.approx(31.0 - 30.5)
