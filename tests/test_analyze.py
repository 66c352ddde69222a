"""`namexp analyze` on tiny trained runs: masks, rankings, the exact unmasked reference, outputs, compare, errors.

Two tiny runs (resnet20 + nam, resnet20 + none; one epoch on 100 training images, evaluated on 100 test
images) are trained once for the whole module; every analysis keeps to few ratios and seeds.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import shared_data, write_cifar100
from helpers import TINY, only_run_dir, read_record, run_inproc
from namexp.analysis import report
from namexp.analysis.command import load_run
from namexp.analysis.masking import (
    block_sites,
    channel_order,
    channel_scores,
    make_masks,
    masked_count,
    masks_applied,
)
from namexp.cli import main

# One epoch of 2 steps on 100 training images; the test error on one batch of 100 images.
RECIPE = {**{o.split("=")[0]: o for o in TINY}, "trainer.eval_batch_size": "trainer.eval_batch_size=100"}
TRAIN = [*RECIPE.values(), "trainer.epochs=1", "data.train_subset=100", "trainer.limit_eval_batches=1"]
QUICK = ["--ratios", "0,0.3", "--random-seeds", "2"]


def _main(args) -> int:
    try:
        main(list(args))
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """{"root": data root, "nam": run folder, "none": run folder}, trained once for this module."""
    base = tmp_path_factory.mktemp("analyze")
    shared = shared_data()
    if shared is not None and (shared / "mini" / "cifar-100-python").is_dir():
        root = base / "data"
        shutil.copytree(shared / "mini" / "cifar-100-python", root / "cifar-100-python")
    else:
        root = write_cifar100(base / "data")
    out = {"root": root}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NAMEXP_CACHE", str(base / "cache"))
        mp.delenv("NAMEXP_DATA", raising=False)
        for attention in ("nam", "none"):
            mp.setenv("NAMEXP_RUNS", str(base / "runs" / attention))
            assert _main(["train", *TRAIN, f"attention={attention}", f"data.root={root}"]) == 0
            out[attention] = only_run_dir(base / "runs" / attention)
    return out


def analysis_of(run: Path) -> dict:
    return json.loads((run / "analysis" / "analysis.json").read_text())


def test_nam_run_full_analysis_outputs_and_compare(tiny, capsys):
    run, root = tiny["nam"], tiny["root"]
    checkpoints = {p.name: p.read_bytes() for p in (run / "checkpoints").glob("*.pt")}
    result = run_inproc(
        [
            "analyze",
            str(run),
            *QUICK,
            "--finetune-epochs",
            "1",
            "--finetune-ratio",
            "0.3",
            "--limit-batches",
            "1",
            f"data.root={root}",
            "trainer.device=cpu",
        ],
        capsys,
    )
    assert result.code == 0, result.err
    assert "Masked channels" in result.out and "err nam" in result.out
    assert {
        p.name: p.read_bytes() for p in (run / "checkpoints").glob("*.pt")
    } == checkpoints  # fine-tuning used a copy
    a = analysis_of(run)
    final = read_record(run)["final"]["test_top1_err"]

    # masking 0% reproduces the unmasked error exactly, for every ranking and seed
    assert a["unmasked"]["test_top1_err"] == final
    zero = [e for e in a["masking"] if e["ratio"] == 0.0]
    assert {(e["ranking"], e["seed"]) for e in zero} == {("nam", None), ("bn", None), ("random", 0), ("random", 1)}
    assert all(e["test_top1_err"] == final and e["masked_channels"] == 0 for e in zero)

    # the masking list in the format compare reads; fine-tuned entries for nam, bn and random's first seed
    for e in a["masking"]:
        assert e["ranking"] in ("nam", "bn", "random") and isinstance(e["finetuned"], bool)
        assert isinstance(e["ratio"], float) and 0 <= e["test_top1_err"] <= 100 and "seed" in e
    tuned = [e for e in a["masking"] if e["finetuned"]]
    assert {(e["ranking"], e["seed"], e["ratio"]) for e in tuned} == {
        ("nam", None, 0.3),
        ("bn", None, 0.3),
        ("random", 0, 0.3),
    }
    sites = [s["site"] for s in a["sites"]]
    assert len(sites) == 9 and sites[0] == "layer1.0.attention"
    expected = sum(masked_count(0.3, s["channels"]) for s in a["sites"])
    assert all(e["masked_channels"] == expected for e in a["masking"] if e["ratio"] == 0.3)
    assert a["config"]["thresholds"] == [0.1, 0.5] and a["config"]["ratios"] == [0.0, 0.3]

    # per-layer stats: weights sum to 1, gates in (0, 1), thresholds as fractions of 1/C
    layer = a["layers"][0]["nam"]["channel"]
    assert layer["n"] == 16 and layer["sum"] == pytest.approx(1.0) and set(layer["below"]) == {"0.1", "0.5"}
    assert 0 < layer["gate_mean"] < 1 and len(layer["gate_per_unit"]) == 16
    assert a["layers"][0]["bn"]["n"] == 16

    # nam_weights.json as compare's plot reads it, PNGs, TensorBoard beside the training events
    weights = json.loads((run / "analysis" / "nam_weights.json").read_text())
    assert list(weights["layers"]) == sites and len(weights["layers"][sites[-1]]["channel"]) == 64
    for name in ("masking.png", "weights.png", "analysis.md"):
        assert (run / "analysis" / name).stat().st_size > 0, name
    acc = EventAccumulator(str(run / "tb"), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    scalars = set(acc.Tags()["scalars"])
    assert "test/top1_err" in scalars  # the training's events are still there
    assert [e.step for e in acc.Scalars("analysis/masked_top1_err/nam")] == [0, 30]
    assert {
        "analysis/masked_top1_err/bn",
        "analysis/masked_top1_err/random",
        "analysis/finetuned_top1_err/nam",
    } <= scalars
    assert "analysis/masking" in acc.Tags()["images"]

    # compare shows the err@30% columns from analysis.json
    shown = run_inproc(["compare", str(run), "--format", "markdown"], capsys)
    assert shown.code == 0, shown.err
    header, _, row = [line for line in shown.out.splitlines() if line.startswith("|")][:3]
    cells = dict(zip([c.strip() for c in header.split("|")], [c.strip() for c in row.split("|")]))
    plain30 = {
        (e["ranking"], e["seed"]): e["test_top1_err"] for e in a["masking"] if e["ratio"] == 0.3 and not e["finetuned"]
    }
    assert (
        cells["err@30% nam"] == f"{plain30[('nam', None)]:.2f}"
        and cells["err@30% bn"] == f"{plain30[('bn', None)]:.2f}"
    )
    assert cells["err@30% random"] == f"{(plain30[('random', 0)] + plain30[('random', 1)]) / 2:.2f}"

    # every format parses back (renderers on the record just written)
    rows = list(csv.DictReader(io.StringIO(report.render(a, "csv"))))
    assert [r["ranking"] for r in rows if r["finetuned"] == "false" and r["ratio"] == "0.3"] == ["nam", "bn", "random"]
    rnd = next(r for r in rows if r["ranking"] == "random" and r["ratio"] == "0.3" and r["finetuned"] == "false")
    assert int(rnd["n"]) == 2 and rnd["seeds"] == "0,1" and float(rnd["top1_err_mean"]) >= 0
    assert json.loads(report.render(a, "json"))["masking"] == a["masking"]
    tables, current = [], []
    for line in report.render(a, "markdown").splitlines() + [""]:
        if line.startswith("|"):
            current.append(line)
        elif current:
            tables.append(current)
            current = []
    assert len(tables) == 2
    for table in tables:
        widths = {line.count("|") - line.count("\\|") for line in table}
        assert len(widths) == 1 and set(table[1].replace("|", "").replace(" ", "")) == {
            "-"
        }  # "| --- |" (namexp.tables)
    assert len(tables[0]) == 2 + 2  # header, rule, ratios 0 and 0.3


def test_rerun_keeps_previous_and_writes_formats(tiny, capsys, tmp_path):
    run = tiny["nam"]
    first = run_inproc(
        [
            "analyze",
            str(run),
            "--ratios",
            "0",
            "--random-seeds",
            "1",
            "--finetune-epochs",
            "0",
            "--no-tensorboard",
            "--format",
            "json",
        ],
        capsys,
    )
    assert first.code == 0, first.err
    parsed = json.loads(first.out)  # only the JSON on stdout; messages on stderr
    assert {e["ratio"] for e in parsed["masking"]} == {0.0} and not any(e["finetuned"] for e in parsed["masking"])
    out = tmp_path / "table.csv"
    second = run_inproc(
        [
            "analyze",
            str(run),
            "--ratios",
            "0.5",
            "--rankings",
            "bn",
            "--finetune-epochs",
            "0",
            "--no-tensorboard",
            "--output",
            str(out),
        ],
        capsys,
    )
    assert second.code == 0, second.err
    rows = list(csv.DictReader(out.open()))
    assert [(r["ranking"], r["ratio"]) for r in rows] == [("bn", "0.0"), ("bn", "0.5")]  # 0 is always added
    previous = sorted((run / "analysis").glob("previous-*"))
    assert len(previous) >= 1 and (previous[-1] / "analysis.json").is_file()
    assert analysis_of(run)["config"]["rankings"] == ["bn"]
    refused = run_inproc(["analyze", str(run), "--ratios", "0", "--finetune-epochs", "0", "--output", str(out)], capsys)
    assert refused.code == 2 and "--force" in refused.err


def test_masks_zero_exactly_the_lowest_ranked_channels(tiny):
    cfg, state, path, device, model = load_run(tiny["nam"], [f"data.root={tiny['root']}"])
    sites = block_sites(model)
    assert [s.module_name for s in sites] == ["nam"] * 9
    torch.manual_seed(0)
    for s in sites:  # spread NAM's γ so its ranking differs from the BN's and from the index order
        s.module.channel.bn.weight.data = torch.rand(s.channels) + 0.01
    images = torch.randn(4, 3, 32, 32)
    for ranking, seed in (("nam", None), ("bn", None), ("random", 0)):
        scores = channel_scores(sites, ranking, seed)
        masks = make_masks(channel_order(scores), 0.3)
        seen = {}
        with masks_applied(model, masks):
            handles = [
                model.get_submodule(s.site).register_forward_hook(
                    lambda m, i, o, name=s.site, seen=seen: seen.__setitem__(name, o.detach())
                )
                for s in sites
            ]
            with torch.no_grad():
                model(images)
            for h in handles:
                h.remove()
        for s in sites:
            out = seen[s.site]
            zeroed = {c for c in range(s.channels) if bool((out[:, c] == 0).all())}
            k = masked_count(0.3, s.channels)
            assert len(zeroed) == k == int(0.3 * s.channels), (ranking, s.site)
            score = scores[s.site]
            kept = set(range(s.channels)) - zeroed
            assert max(score[c] for c in zeroed) <= min(score[c] for c in kept), (ranking, s.site)
            if ranking == "nam":
                w = s.module.nam_weights()["channel"]
                assert zeroed == set(torch.argsort(w)[:k].tolist())
    assert not any(m._forward_hooks for m in model.modules())  # every hook is gone
    # random rankings: the same seed gives the same order, another seed another order
    a, b, c = (channel_order(channel_scores(sites, "random", s)) for s in (0, 0, 1))
    assert all(torch.equal(a[s.site], b[s.site]) for s in sites)
    assert any(not torch.equal(a[s.site], c[s.site]) for s in sites)
    assert [masked_count(r, 64) for r in (0.0, 0.1, 0.3, 0.5, 0.7, 0.99)] == [0, 6, 19, 32, 44, 63]


def test_run_without_nam_gets_bn_and_random_only(tiny, capsys):
    run = tiny["none"]
    result = run_inproc(["analyze", str(run), *QUICK, "--finetune-epochs", "0", "--no-tensorboard"], capsys)
    assert result.code == 0, result.err
    a = analysis_of(run)
    assert {e["ranking"] for e in a["masking"]} == {"bn", "random"} and a["config"]["rankings"] == ["bn", "random"]
    assert all(
        e["test_top1_err"] == read_record(run)["final"]["test_top1_err"] for e in a["masking"] if e["ratio"] == 0
    )
    assert all(layer["nam"] == {} and layer["bn"] is not None for layer in a["layers"])
    assert a["sparsity"] == read_record(run)["sparsity"] == 0.0  # the effective weight: nothing to act on
    assert not (run / "analysis" / "nam_weights.json").exists()
    refused = run_inproc(["analyze", str(run), "--rankings", "nam", "--finetune-epochs", "0"], capsys)
    assert refused.code == 2 and "ranking nam is not available" in refused.err and "Traceback" not in refused.err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--ratios", "0,1"], "outside [0, 1)"),
        (["--ratios", "-0.1"], "outside [0, 1)"),
        (["--ratios", "a"], "not a number"),
        (["--finetune-ratio", "1.5"], "outside [0, 1)"),
        (["--rankings", "slimming"], "unknown ranking"),
        (["--thresholds", "0"], "not positive"),
        (["--checkpoint", "middle"], "use last or best"),
        (["--format", "xml"], "unknown --format"),
        (["--random-seeds", "-1"], "negative"),
        (["--finetune-lr", "0"], "--finetune-lr"),
        (["trainer"], "key=value"),
    ],
)
def test_bad_inputs_are_user_errors(tiny, capsys, args, message):
    result = run_inproc(["analyze", str(tiny["nam"]), *args], capsys)
    assert result.code == 2, (result.out, result.err)
    assert result.err.startswith("error:") and message in result.err and "Traceback" not in result.err


def test_missing_run_or_checkpoint_is_a_user_error(capsys, tmp_path):
    missing = run_inproc(["analyze", str(tmp_path / "nope")], capsys)
    assert missing.code == 2 and "does not exist" in missing.err
    empty = tmp_path / "empty"
    empty.mkdir()
    nockpt = run_inproc(["analyze", str(empty)], capsys)
    assert nockpt.code == 2 and "last.pt" in nockpt.err


def trained_looking_model(attention: str, options: dict | None = None) -> torch.nn.Module:
    """resnet20 + `attention` (10 classes) in eval mode, its BatchNorms given spread scales and running statistics."""
    from namexp.models import build_model

    torch.manual_seed(0)
    model = build_model("resnet20", attention, num_classes=10, image_size=32, attention_options=options)
    for m in model.modules():
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            m.weight.data.uniform_(0.05, 2.0)
            m.running_mean.normal_(0, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.mark.parametrize(
    "attention, rankings, parts",
    [
        ("nam_full", ["nam", "bn", "random"], {"channel", "spatial"}),
        ("nam_spatial", ["bn", "random"], {"spatial"}),
        ("bam", ["bn", "random"], set()),  # between-stage attention: the block-level slots are identities
    ],
)
def test_sites_gates_and_exact_zero_ratio_for_other_attentions(attention, rankings, parts):
    from namexp.analysis.masking import StudyPlan, available_rankings, run_study
    from namexp.analysis.weights import gate_means, layer_stats
    from namexp.evaluation.metrics import split_metrics as evaluate

    model = trained_looking_model(attention)
    sites = block_sites(model)
    assert len(sites) == 9 and all(s.preceding_bn is not None for s in sites)
    assert available_rankings(sites) == rankings
    cpu = torch.device("cpu")
    batch = [(torch.randn(2, 3, 32, 32), torch.randint(0, 10, (2,)))]

    gates = gate_means(model, sites, batch, "fp32", cpu)
    layers = layer_stats(sites, [0.1, 0.5], gates)
    assert set(layers[0]["nam"]) == parts
    if parts:  # the recorded mean gates are sigmoid(w ⊙ BN(F)) as the network computes it
        module = sites[0].module
        seen = {}
        handles = [
            getattr(module, p).register_forward_pre_hook(lambda m, i, p=p: seen.__setitem__(p, i[0].detach()))
            for p in parts
        ]
        with torch.no_grad():
            model(batch[0][0])
            for h in handles:
                h.remove()
            if "channel" in parts:
                w = module.channel.weights().view(1, -1, 1, 1)
                expected = torch.sigmoid(w * module.channel.bn(seen["channel"])).mean(dim=(0, 2, 3))
                assert torch.allclose(gates[sites[0].site]["channel"].float(), expected, atol=1e-6)
            if "spatial" in parts:
                pixels = seen["spatial"].flatten(2).transpose(1, 2)
                expected = torch.sigmoid(module.spatial.bn(pixels) * module.spatial.weights().view(1, -1, 1)).mean(
                    dim=(0, 2)
                )
                assert torch.allclose(gates[sites[0].site]["spatial"].float(), expected, atol=1e-6)

    plain = evaluate(model, batch, "fp32", cpu)
    plan = StudyPlan(ratios=[0.0, 0.5], rankings=rankings, random_seeds=[0], finetune_ratios=[], finetune_epochs=0)
    study = run_study(model, sites, batch, "fp32", cpu, plan)
    zero = [e for e in study.entries if e["ratio"] == 0.0]
    assert len(zero) == len(rankings) and all(e["test_loss"] == plain["loss"] for e in zero)  # bit-exact
    assert all(e["test_loss"] != plain["loss"] for e in study.entries if e["ratio"] == 0.5)
    assert study.evaluations == 1 + len(rankings)  # equal masks (ratio 0) are evaluated once


@pytest.mark.parametrize("impl", ["fused", "reference"])
def test_gate_recording_leaves_the_evaluation_bit_exact_under_bf16(impl):
    """Recording gates must not change what is evaluated: the unmasked error is the 0 % point of every curve.

    (It once switched the gates to the reference impl while recording; under bf16 autocast that moved the
    unmasked error of a fused-gate run by 0.09 points away from its own 0 % masking point.)
    """
    from namexp.analysis.weights import GateRecorder
    from namexp.evaluation.metrics import split_metrics as evaluate

    model = trained_looking_model("nam_full", {"impl": impl})
    sites = block_sites(model)
    batch = [(torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,)))]
    cpu = torch.device("cpu")

    plain = evaluate(model, batch, "bf16", cpu)
    recorder = GateRecorder(sites)
    with recorder.attached():
        recorded = evaluate(model, batch, "bf16", cpu)
    assert recorded["loss"] == plain["loss"]
    assert all(gate.impl == impl for _, _, gate in recorder.targets)
    means = recorder.means()
    assert set(means) == {s.site for s in sites} and all(set(v) == {"channel", "spatial"} for v in means.values())
    assert all(((g > 0) & (g < 1)).all() for v in means.values() for g in v.values())
