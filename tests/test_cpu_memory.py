"""trainer.keep_cpu_memory: glibc keeps freed activations in the process (namexp/train/cpu_memory.py).

Each check runs in a fresh Python process: the setting is process-wide and this test process has other runs.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from helpers import TINY, only_run_dir, read_record, run_subprocess
from namexp.train.cpu_memory import glibc

needs_glibc = pytest.mark.skipif(
    glibc() is None, reason="keep_cpu_memory acts through glibc's mallopt (Linux with glibc only)"
)

RSS_AFTER_FREE = textwrap.dedent("""
    import os, sys, torch
    from namexp.train import cpu_memory
    kept = cpu_memory.keep_freed_memory() if sys.argv[1] == "keep" else False
    page = os.sysconf("SC_PAGE_SIZE")
    def rss_mib():
        return int(open("/proc/self/statm").read().split()[1]) * page / 2**20
    t = torch.ones(64 * 2**20 // 4)  # 64 MiB, every page touched: above glibc's largest default mmap threshold
    before = rss_mib()
    del t
    print(kept, before - rss_mib())
""")


def released_mib(mode: str) -> tuple[bool, float]:
    out = subprocess.run(
        [sys.executable, "-c", RSS_AFTER_FREE, mode], capture_output=True, text=True, check=True
    ).stdout
    kept, released = out.split()
    return kept == "True", float(released)


@needs_glibc
def test_freed_activations_stay_in_the_process_only_when_kept():
    kept, released = released_mib("keep")
    assert kept and released < 8, f"a freed 64 MiB tensor gave {released:.0f} MiB back to the OS although kept"
    kept, released = released_mib("system")
    assert not kept and released > 56, (
        f"glibc's default should unmap a freed 64 MiB tensor, gave back {released:.0f} MiB"
    )


@needs_glibc
@pytest.mark.parametrize("keep", [True, False])
def test_cpu_runs_record_whether_freed_memory_is_kept(cifar100_root, tmp_path, keep):
    result = run_subprocess(
        [
            "train",
            *TINY,
            f"data.root={cifar100_root}",
            "trainer.device=cpu",
            "trainer.epochs=1",
            "trainer.limit_train_batches=2",
            "trainer.limit_eval_batches=1",
            f"trainer.keep_cpu_memory={str(keep).lower()}",
        ],
        cwd=tmp_path,
    )
    assert result.code == 0, result.err
    device = read_record(only_run_dir(tmp_path / "runs"))["environment"]["device"]
    assert device.startswith("cpu (") and ("freed memory kept" in device) == keep, device
