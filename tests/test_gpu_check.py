"""The GPU check's dry run: every check of benchmarks/gpu_check.sh on the CPU at tiny size, CUDA-only ones
skipped with the reason, one JSON of what passed and the figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.long
def test_the_gpu_check_dry_run_exercises_every_path_the_cpu_can_and_writes_its_figures(tmp_path, cifar100_root):
    out = tmp_path / "gpu-check.json"
    proc = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--dry-run", "--data", str(cifar100_root),
         "--output", str(out)],
        cwd=tmp_path, capture_output=True, text=True, timeout=900,
        env={**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    checks = report["checks"]
    assert report["dry_run"] and report["passed"]
    assert set(checks) == {"fp32", "bf16", "fp16_scaler", "channels_last", "compile", "on_device", "eval", "bench",
                           "ddp_nccl", "cifar100"}  # fmt: skip
    ran = {name for name, c in checks.items() if c["status"] == "passed"}
    assert ran == {"fp32", "bf16", "channels_last", "on_device", "eval", "bench", "cifar100"}, checks
    if not torch.cuda.is_available():
        assert checks["fp16_scaler"]["reason"].startswith("no CUDA") and "NCCL" in checks["ddp_nccl"]["reason"]
    assert checks["compile"]["status"] == "skipped" and checks["compile"]["reason"].startswith("dry run")
    for name in ("fp32", "bf16", "channels_last", "on_device", "cifar100"):
        assert checks[name]["img_s"] > 0 and 0 <= checks[name]["test_top1_err"] <= 100, checks[name]
        assert checks[name]["seconds"] > 0 and checks[name]["device"].startswith("cpu")
    # eval reads back the fp32 run's checkpoint: the same test error as its last epoch
    assert checks["eval"]["test_top1_err"] == checks["fp32"]["test_top1_err"]
    assert checks["bench"]["namexp_img_s"] > 0
    assert report["machine"]["torch"] == torch.__version__
