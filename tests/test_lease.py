"""The run folder's lease: one writer at a time, on one machine or several; stale leases are taken over."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import TINY, TINY_SYNTHETIC, one_error_line, read_record, run_inproc, run_subprocess
from namexp.errors import UserError
from namexp.run import lease
from namexp.run.layout import RunFolder

HOLD = "import sys; from pathlib import Path; from namexp.run.lease import Lease; l = Lease(Path(sys.argv[1])); " \
       "l.acquire(); print('held', flush=True); sys.stdin.read(); l.release()"  # fmt: skip


def hold_lease(folder: Path) -> subprocess.Popen:
    """Another process holding `folder`'s lease until its stdin closes."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)  # fmt: skip
    assert proc.stdout.readline().strip() == "held"
    return proc


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def write_lease(folder: Path, host: str, pid: int, age_s: float) -> Path:
    path = RunFolder(folder).lease
    path.write_text(json.dumps({"host": host, "pid": pid, "started": time.time() - age_s, "token": "old"}))
    os.utime(path, (time.time() - age_s, time.time() - age_s))
    return path


def test_a_lease_held_by_another_process_refuses_a_second_writer_and_is_gone_after(tmp_path):
    holder = hold_lease(tmp_path)
    try:
        assert lease.is_live(tmp_path)
        info = lease.holder(tmp_path)
        assert (info.pid, info.host) == (holder.pid, socket.gethostname())
        with pytest.raises(UserError, match=rf"being trained by pid {holder.pid} on {socket.gethostname()}"):
            lease.Lease(tmp_path).acquire()
    finally:
        holder.communicate("")
    assert holder.returncode == 0
    assert lease.holder(tmp_path) is None and not lease.is_live(tmp_path)
    with lease.Lease(tmp_path):
        assert lease.holder(tmp_path).pid == os.getpid()
    assert not RunFolder(tmp_path).lease.exists()


def test_waiting_for_a_lease_is_told_once_and_takes_it_when_the_holder_releases(tmp_path, monkeypatch):
    monkeypatch.setattr(lease, "HEARTBEAT_S", 0.05)  # poll fast: the holder lets go within a second
    holder = hold_lease(tmp_path)
    assert not lease.Lease(tmp_path).try_acquire()  # live holder: no, and no error
    told = []

    def on_wait(info: lease.LeaseInfo) -> None:
        told.append(info.pid)
        holder.stdin.close()  # the holder releases only once we are known to wait

    mine = lease.Lease(tmp_path)
    mine.wait_and_acquire(on_wait)
    try:
        assert told == [holder.pid]
        assert lease.holder(tmp_path).pid == os.getpid()
    finally:
        mine.release()
        holder.wait()
    assert not RunFolder(tmp_path).lease.exists()


def test_a_stale_lease_is_taken_over_with_a_message(tmp_path, caplog):
    write_lease(tmp_path, socket.gethostname(), dead_pid(), age_s=1)  # this host, its process is gone
    assert lease.holder(tmp_path).stale and not lease.is_live(tmp_path)
    with caplog.at_level(logging.WARNING, logger="namexp"), lease.Lease(tmp_path):
        assert lease.holder(tmp_path).pid == os.getpid()
    assert "taking over the stale lease" in caplog.text

    # Another host: only the heartbeat's age tells; a fresh one stands, an old one is stale.
    write_lease(tmp_path, "node-elsewhere", 1, age_s=2)
    with pytest.raises(UserError, match="being trained by pid 1 on node-elsewhere"):
        lease.Lease(tmp_path).acquire()
    write_lease(tmp_path, "node-elsewhere", 1, age_s=lease.STALE_AFTER_S + 10)
    with lease.Lease(tmp_path):
        assert lease.holder(tmp_path).host == socket.gethostname()


def snapshot(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


@pytest.mark.long
def test_a_second_train_on_a_live_run_folder_refuses_and_leaves_the_first_alone(tmp_path, cifar100_root):
    """Two real processes on one run folder: the second exits with a one-line error naming the first."""
    run = tmp_path / "run"
    args = [*TINY, "trainer.epochs=3", "trainer.limit_train_batches=4", "trainer.log_interval=1",
            f"data.root={cifar100_root}", f"hydra.run.dir={run}"]  # fmt: skip
    first = subprocess.Popen([sys.executable, "-m", "namexp", "train", *args], cwd=tmp_path,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    deadline = time.time() + 300
    while not (run / "checkpoints" / "last.pt").exists():  # it trains: one epoch saved, more to come
        assert first.poll() is None and time.time() < deadline, first.communicate()[0]
        time.sleep(0.05)
    before = {k: v for k, v in snapshot(run).items() if k in (".hydra/config.yaml", ".hydra/overrides.yaml")}
    second = run_subprocess(["train", "--resume", str(run)], cwd=tmp_path)
    first_output, _ = first.communicate(timeout=600)
    assert first.returncode == 0, first_output

    error = one_error_line(second)
    assert f"being trained by pid {first.pid} on {socket.gethostname()}" in error and "--resume" in error
    record = read_record(run)
    assert record["status"] == "completed" and [e["epoch"] for e in record["epochs"]] == [1, 2, 3]
    assert {k: v for k, v in snapshot(run).items() if k in before} == before
    log = (run / "train.log").read_text()
    assert "being trained" not in log and "resuming" not in log
    assert not RunFolder(run).lease.exists()  # released when it completed


def test_resuming_a_sweep_skips_completed_jobs_and_reports_a_live_one(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    result = run_inproc(["train", "-m", *TINY_SYNTHETIC, "trainer.epochs=1", "seed=0,1", f"hydra.sweep.dir={sweep}"],
                        capsys)  # fmt: skip
    assert result.code == 0, result.err
    records = {job: read_record(sweep / job) for job in ("0", "1")}
    holder = hold_lease(sweep / "0")  # job 0 is being trained elsewhere (a requeued job, another host...)
    try:
        result = run_inproc(["train", "--resume", str(sweep)], capsys)
    finally:
        holder.communicate("")
    assert result.code == 1
    out = " ".join(result.out.split())  # rich wraps long lines
    assert f"being trained by pid {holder.pid}" in out, out
    assert read_record(sweep / "0") == records["0"]  # not trained twice
    assert read_record(sweep / "1")["epochs"] == records["1"]["epochs"]  # completed: returned without training
    assert "already completed" in (sweep / "1" / "train.log").read_text()
