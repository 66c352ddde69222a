"""Run folders: one loader for eval, analyze and resume (configs recomposed through Hydra), and folders written
by namexp 0.1 (checkpoint format 1) still read by every command."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from helpers import compose_run, read_checkpoint, read_record, run_inproc
from namexp.nested import LATER_KEYS
from namexp.run.load import _warn_if_changed

FIXTURE = Path(__file__).parent / "fixtures" / "run-namexp-0.1"  # written by namexp 0.1 (commit 12ec2c9)


@pytest.fixture
def old_run(tmp_path: Path) -> Path:
    run = tmp_path / "old-run"
    shutil.copytree(FIXTURE, run)
    return run


def _eval_records(run: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((run / "evals").glob("*.json"))]


def test_the_fixture_is_a_format_1_run():
    payload = torch.load(FIXTURE / "checkpoints" / "last.pt", weights_only=True)
    assert payload["format"] == 1 and payload["epoch"] == 2 and "state" not in payload


def test_an_old_run_evaluates_with_the_epoch_it_reached(old_run, capsys):
    result = run_inproc(["eval", str(old_run)], capsys)
    assert result.code == 0, result.err
    (record,) = _eval_records(old_run)
    assert record["epoch"] == 2 and record["attention"] == "nam"
    # the same weights and data as at the end of training: the same test error
    assert record["top1_err"] == pytest.approx(read_record(old_run)["final"]["test_top1_err"], abs=1e-9)
    result = run_inproc(["eval", str(old_run), "--checkpoint", "best"], capsys)
    assert result.code == 0, result.err


def test_an_old_run_is_compared_and_analyzed(old_run, tmp_path, capsys):
    result = run_inproc(["compare", str(old_run), "--output", str(tmp_path / "table.md")], capsys)
    assert result.code == 0, result.err
    assert "nam" in (tmp_path / "table.md").read_text()
    result = run_inproc(["analyze", str(old_run), "--ratios", "0,0.5", "--random-seeds", "1",
                         "--finetune-epochs", "0", "--no-tensorboard"], capsys)  # fmt: skip
    assert result.code == 0, result.err
    analysis = json.loads((old_run / "analysis" / "analysis.json").read_text())
    assert analysis["epoch"] == 2


def test_an_old_run_resumes_and_keeps_its_epochs(old_run, capsys):
    before = read_record(old_run)["epochs"]
    result = run_inproc(["train", "--resume", str(old_run), "trainer.epochs=3"], capsys)
    assert result.code == 0, result.err
    record = read_record(old_run)
    assert [e["epoch"] for e in record["epochs"]] == [1, 2, 3]
    assert record["epochs"][:2] == before and record["created"] == read_record(FIXTURE)["created"]
    assert record["state"]["epochs_done"] == 3 and record["status"] == "completed"
    assert torch.load(old_run / "checkpoints" / "last.pt", weights_only=True)["format"] == 3  # hashed now
    payload = read_checkpoint(old_run / "checkpoints" / "last.pt")
    assert payload["format"] == 2 and payload["state"]["epochs_done"] == 3
    assert "epochs" not in payload  # the checkpoint no longer carries the record's epochs


def test_eval_takes_group_overrides_as_train_does(old_run, capsys):
    # a group the model does not depend on: accepted, and the evaluation's config shows the choice
    result = run_inproc(["eval", str(old_run), "optim=adamw"], capsys)
    assert result.code == 0, result.err
    assert _eval_records(old_run)[-1]["config"]["optim"]["name"] == "adamw"
    # a group that changes the model: recomposed as train would, so the checkpoint no longer fits
    for command in (["eval", str(old_run)], ["analyze", str(old_run), "--no-tensorboard"]):
        result = run_inproc([*command, "attention=se"], capsys)
        assert result.code == 2, result.err
        assert "does not fit resnet20+se" in result.err and "Traceback" not in result.err


def test_a_checkpoint_outside_its_run_folder_takes_dotted_overrides_only(old_run, tmp_path, capsys):
    bare = tmp_path / "copied.pt"
    shutil.copy(old_run / "checkpoints" / "best.pt", bare)
    result = run_inproc(["eval", str(bare), "trainer.eval_batch_size=50"], capsys)
    assert result.code == 0, result.err
    result = run_inproc(["eval", str(bare), "attention=se"], capsys)
    assert result.code == 2 and "outside a run folder" in result.err


def test_keys_added_since_a_run_are_no_change_of_its_config(caplog):
    """A run saved before attention.sites / backbone.init / backbone.pretrained ran with their defaults."""
    now = asdict(compose_run(["data=synthetic"]))
    trained = json.loads(json.dumps(now))
    for key in LATER_KEYS:
        group, leaf = key.split(".")
        del trained[group][leaf]
    with caplog.at_level("WARNING", logger="namexp"):
        _warn_if_changed(trained, now, [])
    assert "differs" not in caplog.text
    trained["attention"]["sites"] = "stage1"  # a real difference still warns
    with caplog.at_level("WARNING", logger="namexp"):
        _warn_if_changed(trained, now, [])
    assert "attention.sites" in caplog.text
