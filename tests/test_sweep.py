"""Real Hydra multiruns of tiny trainings through the CLI, and the comparison table they write."""

from __future__ import annotations

import csv
import statistics
from pathlib import Path

import pytest

from helpers import TINY, Result, read_record, run_inproc


def sweep_runs(sweep_dir: Path):
    return sorted((p for p in sweep_dir.iterdir() if p.is_dir() and (p / ".hydra").is_dir()), key=lambda p: int(p.name))


def run_sweep(capsys, sweep_dir: Path, overrides: list[str]) -> tuple[Result, list[dict]]:
    """`namexp train -m OVERRIDES` into sweep_dir, which must succeed; its records in job order."""
    result = run_inproc(["train", "-m", *overrides, f"hydra.sweep.dir={sweep_dir}"], capsys)
    assert result.code == 0, result.err
    return result, [read_record(p) for p in sweep_runs(sweep_dir)]


def test_multirun_makes_one_run_per_job_and_a_table_that_matches_the_records(capsys, cifar100_root, tmp_path):
    sweep_dir = tmp_path / "sweep"
    overrides = [*TINY, f"data.root={cifar100_root}", "trainer.epochs=1", "attention=none,nam", "seed=0,1"]
    result, records = run_sweep(capsys, sweep_dir, overrides)
    assert [p.name for p in sweep_runs(sweep_dir)] == ["0", "1", "2", "3"]  # Hydra's own job numbering
    assert (sweep_dir / "multirun.yaml").is_file()
    assert [(r["attention"], r["seed"]) for r in records] == [("none", 0), ("none", 1), ("nam", 0), ("nam", 1)]
    assert all(r["status"] == "completed" for r in records)

    with open(sweep_dir / "comparison.csv") as f:
        rows = {row["attention"]: row for row in csv.DictReader(f)}
    assert set(rows) == {"none", "nam"}
    for attention, row in rows.items():
        finals = [r["final"]["test_top1_err"] for r in records if r["attention"] == attention]
        assert int(row["n"]) == 2
        assert float(row["final_top1_mean"]) == pytest.approx(statistics.mean(finals), rel=1e-6)
        assert float(row["final_top1_std"]) == pytest.approx(statistics.stdev(finals), rel=1e-6)
    assert (sweep_dir / "comparison.md").read_text().count("|") > 10
    assert "final top-1" in result.out  # the table is printed at the end of the sweep


def test_a_failing_job_is_recorded_as_failed_and_the_others_complete(capsys, cifar100_root, tmp_path):
    sweep_dir = tmp_path / "sweep"
    missing = tmp_path / "no-data-here"
    result = run_inproc(
        [
            "train",
            "-m",
            *TINY,
            "trainer.epochs=1",
            "data.download=false",
            f"data.root={cifar100_root},{missing}",
            f"hydra.sweep.dir={sweep_dir}",
        ],
        capsys,
    )
    assert result.code == 1
    statuses = [read_record(p)["status"] for p in sweep_runs(sweep_dir)]
    assert statuses == ["completed", "failed"]
    assert "not found" in read_record(sweep_dir / "1")["error"]
    assert "job 1: failed" in result.out
    assert "Traceback" not in result.err


def test_a_comma_list_without_m_suggests_m(capsys, tmp_path):
    result = run_inproc(["train", "attention=nam,se"], capsys)
    assert result.code == 2
    assert "add -m" in result.err and "Traceback" not in result.err
    assert not (tmp_path / "runs").exists()


def test_a_sweep_preset_runs_as_a_multirun(capsys, tmp_path):
    sweep_dir = tmp_path / "smoke"
    result = run_inproc(
        [
            "train",
            "sweep=smoke",
            "trainer.epochs=1",
            "trainer.progress=none",
            "data.synthetic_train_size=128",
            "data.synthetic_test_size=64",
            f"hydra.sweep.dir={sweep_dir}",
        ],
        capsys,
    )
    assert result.code == 0, result.err
    assert len(sweep_runs(sweep_dir)) == 4


def test_parallel_joblib_launcher_runs_every_job_in_its_own_folder(capsys, tmp_path):
    tiny = "data=synthetic backbone=resnet20 attention=none trainer.epochs=1 trainer.progress=none"
    sizes = "data.synthetic_train_size=64 data.synthetic_test_size=32 trainer.batch_size=32"
    _, records = run_sweep(capsys, tmp_path / "parallel", [*f"{tiny} {sizes}".split(), "seed=range(8)",
                                                          "hydra/launcher=joblib", "hydra.launcher.n_jobs=8"])  # fmt: skip
    assert len(records) == 8
    assert sorted(r["seed"] for r in records) == list(range(8))
    assert len({r["run_dir"] for r in records}) == 8
    assert all(r["status"] == "completed" and len(r["epochs"]) == 1 for r in records)
    assert all((p / "checkpoints" / "last.pt").is_file() for p in sweep_runs(tmp_path / "parallel"))
