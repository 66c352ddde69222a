"""The run folder's lease: one writer at a time, on one machine or several; stale leases are taken over."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import TINY_SYNTHETIC, read_record, run_inproc
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
