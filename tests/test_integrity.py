"""Checkpoints carry a hash of their contents: a changed byte is refused by eval, analyze, export and --resume in one line
that names the intact previous.pt; resuming from previous.pt finishes the run and sets the damaged last.pt aside;
checkpoints written before the hash (formats 1 and 2) still load."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import torch

from helpers import one_error_line, read_checkpoint, read_record, run_inproc
from namexp.run.checkpoint import load_checkpoint

FIXTURE = Path(__file__).parent / "fixtures" / "run-namexp-0.1"  # format 1, written by namexp 0.1
ANALYZE_QUICK = ["--ratios", "0,0.5", "--random-seeds", "1", "--finetune-epochs", "0", "--no-tensorboard"]


def flip_payload_byte(checkpoint: Path) -> bytes:
    """Flip one byte in the middle of the payload (tensor data, which torch.load alone would read without
    complaint); returns the damaged payload."""
    payload = torch.load(checkpoint, weights_only=True)["payload"].numpy().tobytes()
    raw = bytearray(checkpoint.read_bytes())
    middle = len(payload) // 2
    at = raw.find(payload[middle : middle + 64])
    assert at >= 0 and raw.count(payload[middle : middle + 64]) == 1
    raw[at] ^= 0xFF
    checkpoint.write_bytes(raw)
    damaged = bytearray(payload)
    damaged[middle] ^= 0xFF
    return bytes(damaged)


def test_checkpoints_are_format_3_with_the_hash_of_their_payload(trained):
    import hashlib

    for name in ("last", "previous", "best"):
        wrapper = torch.load(trained / "checkpoints" / f"{name}.pt", weights_only=True)
        assert wrapper["format"] == 3 and set(wrapper) == {"format", "sha256", "payload"}
        assert hashlib.sha256(wrapper["payload"].numpy().tobytes()).hexdigest() == wrapper["sha256"]
        assert read_checkpoint(trained / "checkpoints" / f"{name}.pt")["format"] == 2
    assert read_checkpoint(trained / "checkpoints" / "last.pt")["state"]["epochs_done"] == 2
    assert read_checkpoint(trained / "checkpoints" / "previous.pt")["state"]["epochs_done"] == 1


def test_a_flipped_byte_is_refused_by_eval_analyze_and_resume(run, capsys):
    last, previous = run / "checkpoints" / "last.pt", run / "checkpoints" / "previous.pt"
    damaged = flip_payload_byte(last)
    torch.load(io.BytesIO(damaged), weights_only=True)  # unpickling alone would not notice: the hash does
    before = {p.name: p.read_bytes() for p in (run / "checkpoints").iterdir()}
    record_before = (run / "record.json").read_bytes()
    expected = (
        f"error: checkpoint {last} is corrupt (sha256 mismatch): its previous checkpoint previous.pt is intact "
        f"-- resume with: namexp train --resume {previous}"
    )
    for command in (
        ["eval", str(run)],
        ["analyze", str(run), *ANALYZE_QUICK],
        ["train", "--resume", str(run), "trainer.epochs=3"],
        ["export", str(run), "--format", "exported"],
    ):
        assert one_error_line(run_inproc(command, capsys)) == expected, command
    assert not (run / "exports").exists()
    assert {p.name: p.read_bytes() for p in (run / "checkpoints").iterdir()} == before  # nothing moved or lost
    assert (run / "record.json").read_bytes() == record_before


def test_resuming_from_previous_finishes_the_run_and_sets_the_damaged_last_aside(run, capsys):
    last, previous = run / "checkpoints" / "last.pt", run / "checkpoints" / "previous.pt"
    flip_payload_byte(last)
    damaged = last.read_bytes()
    result = run_inproc(["train", "--resume", str(previous), "trainer.epochs=3"], capsys)
    assert result.code == 0, result.err
    record = read_record(run)
    assert record["status"] == "completed" and [e["epoch"] for e in record["epochs"]] == [1, 2, 3]
    assert (run / "checkpoints" / "last.set-aside-1.pt").read_bytes() == damaged  # set aside, not deleted
    assert read_checkpoint(last)["state"]["epochs_done"] == 3
    assert read_checkpoint(previous)["state"]["epochs_done"] == 2  # epoch 2 trained again from epoch 1's state
    assert run_inproc(["eval", str(run)], capsys).code == 0


def test_a_second_set_aside_never_overwrites_the_first(run, capsys):
    last, previous = run / "checkpoints" / "last.pt", run / "checkpoints" / "previous.pt"
    (run / "checkpoints" / "last.set-aside-1.pt").write_bytes(b"kept from before")
    flip_payload_byte(last)
    damaged = last.read_bytes()
    assert run_inproc(["train", "--resume", str(previous)], capsys).code == 0
    assert (run / "checkpoints" / "last.set-aside-1.pt").read_bytes() == b"kept from before"
    assert (run / "checkpoints" / "last.set-aside-2.pt").read_bytes() == damaged
    assert read_record(run)["status"] == "completed"


def test_with_previous_damaged_too_best_is_named_for_evaluation(run, capsys):
    last, previous = run / "checkpoints" / "last.pt", run / "checkpoints" / "previous.pt"
    flip_payload_byte(last)
    flip_payload_byte(previous)
    line = one_error_line(run_inproc(["eval", str(run)], capsys))
    assert line == (
        f"error: checkpoint {last} is corrupt (sha256 mismatch): its best checkpoint best.pt is intact -- "
        f"evaluate it with: namexp eval {run} --checkpoint best (it holds no optimizer state: the run cannot "
        "resume from it)"
    )
    line = one_error_line(run_inproc(["train", "--resume", str(previous)], capsys))
    assert f"checkpoint {previous} is corrupt (sha256 mismatch)" in line and "best.pt is intact" in line
    assert not (run / "checkpoints" / "last.set-aside-1.pt").exists()  # refused before anything moved
    assert run_inproc(["eval", str(run), "--checkpoint", "best"], capsys).code == 0


def test_resume_takes_last_or_previous_and_refuses_best_with_a_reason(run, capsys):
    line = one_error_line(run_inproc(["train", "--resume", str(run / "checkpoints" / "best.pt")], capsys))
    assert "best.pt holds the best epoch's weights but no optimizer state" in line
    assert f"--resume {run / 'checkpoints' / 'previous.pt'}" in line
    stray = run / "elsewhere.pt"
    shutil.copy(run / "checkpoints" / "last.pt", stray)
    line = one_error_line(run_inproc(["train", "--resume", str(stray)], capsys))
    assert "checkpoints/last.pt or checkpoints/previous.pt" in line
    result = run_inproc(["train", "--resume", str(run / "checkpoints" / "last.pt"), "trainer.epochs=3"], capsys)
    assert result.code == 0, result.err
    assert [e["epoch"] for e in read_record(run)["epochs"]] == [1, 2, 3]
    assert not list((run / "checkpoints").glob("*set-aside*"))  # resuming from last.pt moves nothing


def test_format_1_and_format_2_checkpoints_still_load(run, capsys):
    old = load_checkpoint(FIXTURE / "checkpoints" / "last.pt")  # format 1: no hash to check
    assert old["format"] == 1 and old["state"]["epochs_done"] == 2
    last = run / "checkpoints" / "last.pt"
    for name in ("last", "previous", "best"):  # as a format-2 run left them: plain torch.save files
        path = run / "checkpoints" / f"{name}.pt"
        torch.save(read_checkpoint(path), path)
    assert torch.load(last, weights_only=True)["format"] == 2
    result = run_inproc(["eval", str(run)], capsys)
    assert result.code == 0, result.err
    result = run_inproc(["train", "--resume", str(run), "trainer.epochs=3"], capsys)
    assert result.code == 0, result.err
    assert torch.load(last, weights_only=True)["format"] == 3  # a resumed run continues in format 3
    assert read_checkpoint(last)["state"]["epochs_done"] == 3


def test_a_truncated_format_2_checkpoint_names_the_intact_previous(run, capsys):
    last = run / "checkpoints" / "last.pt"
    torch.save(read_checkpoint(last), last)
    last.write_bytes(last.read_bytes()[:1000])
    line = one_error_line(run_inproc(["eval", str(run)], capsys))
    assert f"checkpoint {last} is truncated or corrupt" in line and "previous checkpoint previous.pt is intact" in line
