"""Real tiny trainings on the CPU through the CLI: learning, records, TensorBoard, eval, sparsity, resume."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

from helpers import TINY, only_run_dir, read_record, run_inproc


def train(capsys, root: Path, tmp_path: Path, *extra: str):
    result = run_inproc(["train", *TINY, f"data.root={root}", *extra], capsys)
    assert result.code == 0, result.err
    return only_run_dir(tmp_path / "runs")


def test_tiny_training_learns_and_writes_a_complete_run_folder(capsys, cifar100_root, tmp_path):
    run = train(capsys, cifar100_root, tmp_path, "trainer.epochs=6")
    record = read_record(run)
    epochs = record["epochs"]
    assert record["status"] == "completed" and len(epochs) == 6
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"] - 0.2, [e["train_loss"] for e in epochs]
    for key in (
        "backbone",
        "attention",
        "data",
        "seed",
        "sparsity",
        "params",
        "flops",
        "throughput_img_s",
        "environment",
    ):
        assert record[key] is not None, key
    assert (record["backbone"], record["attention"], record["data"]) == ("resnet20", "nam", "cifar100")
    assert record["final"]["epoch"] == 6 and 0 <= record["final"]["test_top1_err"] <= 100
    assert record["best"]["test_top1_err"] == min(e["test_top1_err"] for e in epochs)
    assert record["selection_split"] == "test" and record["environment"]["torch"] == torch.__version__
    assert record["placement"][0]["where"].startswith("end of residual branch")
    with open(run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    assert float(rows[-1]["test_top1_err"]) == pytest.approx(record["final"]["test_top1_err"])
    for name in (
        ".hydra/config.yaml",
        ".hydra/overrides.yaml",
        "train.log",
        "checkpoints/last.pt",
        "checkpoints/best.pt",
    ):
        assert (run / name).is_file(), name
    assert "run folder" in (run / "train.log").read_text()


def test_tensorboard_events_read_back_with_tensorboards_reader(capsys, cifar100_root, tmp_path):
    run = train(capsys, cifar100_root, tmp_path, "trainer.epochs=2")
    acc = EventAccumulator(str(run / "tb"), size_guidance={SCALARS: 0, "histograms": 0, "tensors": 0})
    acc.Reload()
    scalars = set(acc.Tags()["scalars"])
    for tag in (
        "train/loss",
        "test/loss",
        "test/top1_err",
        "test/top5_err",
        "lr",
        "sparsity/penalty",
        "sparsity/nam_l1",
        "hparam/final_top1_err",
        "nam_l1/layer1.0.attention/channel",
        "nam_small_share/layer1.0.attention/channel",
    ):
        assert tag in scalars, tag
    assert "nam_gamma/layer1.0.attention/channel" in acc.Tags()["histograms"]
    steps = math.ceil(read_record(run)["num_train"] / 50)
    assert [e.step for e in acc.Scalars("test/top1_err")] == [steps, 2 * steps]  # global (optimizer) steps
    final = read_record(run)["final"]["test_top1_err"]
    assert acc.Scalars("hparam/final_top1_err")[-1].value == pytest.approx(final, rel=1e-5)
    # the hparams session lives in the run's own folder, not in a sub-run
    assert {"_hparams_/experiment", "_hparams_/session_start_info"} <= set(acc.PluginTagToContent("hparams"))
    assert [p.name for p in (run / "tb").iterdir() if p.is_dir()] == []


def test_eval_reproduces_the_final_test_numbers(capsys, cifar100_root, tmp_path):
    run = train(capsys, cifar100_root, tmp_path, "trainer.epochs=2")
    final = read_record(run)["final"]
    result = run_inproc(["eval", str(run), f"data.root={cifar100_root}"], capsys)
    assert result.code == 0, result.err
    evals = list((run / "evals").glob("*.json"))
    assert len(evals) == 1
    report = json.loads(evals[0].read_text())
    assert report["top1_err"] == pytest.approx(final["test_top1_err"], abs=1e-9)
    assert report["top5_err"] == pytest.approx(final["test_top5_err"], abs=1e-9)
    assert report["loss"] == pytest.approx(final["test_loss"], rel=1e-6)
    assert report["params"] == read_record(run)["params"] and report["latency_ms_per_batch"] > 0


@pytest.mark.parametrize("mode", ["loss", "subgradient"])
def test_sparsity_lowers_the_nam_gamma_l1(capsys, cifar100_root, tmp_path, mode):
    l1 = {}
    for p in (0.0, 0.05):
        result = run_inproc(
            [
                "train",
                *TINY,
                f"data.root={cifar100_root}",
                "trainer.epochs=2",
                f"sparsity={p}",
                f"sparsity_mode={mode}",
                f"hydra.run.dir={tmp_path / f'runs/p{p}'}",
            ],
            capsys,
        )
        assert result.code == 0, result.err
        record = read_record(tmp_path / f"runs/p{p}")
        l1[p] = record["epochs"][-1]["nam_l1"]
        assert record["sparsity"] == p and record["sparsity_mode"] == mode
    assert l1[0.05] < l1[0.0] - 1.0, l1
    assert read_record(tmp_path / "runs/p0.05")["epochs"][-1]["penalty"] == pytest.approx(0.05 * l1[0.05], rel=1e-6)


def test_resume_continues_where_it_stopped(capsys, cifar100_root, tmp_path):
    run = train(capsys, cifar100_root, tmp_path, "trainer.epochs=2")
    first = read_record(run)["epochs"]
    hydra_overrides = (run / ".hydra" / "overrides.yaml").read_text()
    result = run_inproc(["train", "--resume", str(run), "trainer.epochs=3"], capsys)
    assert result.code == 0, result.err
    record = read_record(run)
    assert [e["epoch"] for e in record["epochs"]] == [1, 2, 3]
    assert record["epochs"][:2] == first  # the first two epochs are kept, not re-run
    assert record["status"] == "completed" and record["final"]["epoch"] == 3
    with open(run / "metrics.csv") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [1, 2, 3]
    acc = EventAccumulator(str(run / "tb"), size_guidance={SCALARS: 0})
    acc.Reload()
    steps = math.ceil(record["num_train"] / 50)
    assert [e.step for e in acc.Scalars("test/top1_err")] == [steps, 2 * steps, 3 * steps]
    assert (run / ".hydra" / "overrides.yaml").read_text() == hydra_overrides  # the run's own .hydra is kept
    assert "trainer.resume=true" not in record["overrides"]
