"""Every GPU path of namexp, once, in a few minutes: the first thing to run when a session is lent a GPU.

    benchmarks/gpu_check.sh                       # on a GPU: about 5 minutes, writes docs/benchmarks/gpu-check.json
    benchmarks/gpu_check.sh --dry-run --data DIR  # the same checks on the CPU at tiny size (the test suite runs it)

Each check is the real `namexp` command (train, eval, bench; torchrun for DDP), short, and is recorded as
passed, failed (with the error) or skipped (with the reason: CUDA-only paths in a dry run), with its figures:
seconds, training img/s, test error, and what the check is about (the loss scale of fp16's scaler, the process
group's backend). The JSON also names the machine, torch and the namexp commit. Exit code 0 when none failed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import torch

from namexp.cli import main as namexp_main

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = REPO / "docs" / "benchmarks" / "gpu-check.json"
DEFAULT_DATA = REPO.parent / "shared" / "data"


@dataclass
class Check:
    name: str
    what: str
    args: list[str] = field(default_factory=list)  # train overrides beyond the base recipe
    cuda_only: str = ""  # why it needs CUDA (skipped in a dry run)
    dry_skip: str = ""  # why a dry run skips it although the CPU could run it


CHECKS = [
    Check("fp32", "fp32 training, host DataLoader pipeline", ["trainer.precision=fp32", "data.on_device=false"]),
    Check("bf16", "bf16 autocast", ["trainer.precision=bf16"]),
    Check("fp16_scaler", "fp16 autocast with the gradient scaler", ["trainer.precision=fp16"], cuda_only="fp16"),
    Check("channels_last", "channels_last memory format", ["trainer.channels_last=true"]),
    Check(
        "compile",
        "torch.compile",
        ["trainer.compile=true"],
        dry_skip="torch.compile's CPU build takes minutes on a small CPU; it runs on the GPU",
    ),  # fmt: skip
    Check("on_device", "the on-device data pipeline (augmentation on the GPU)", ["data.on_device=true"]),
]


def recipe(dry: bool, data: Path | None) -> list[str]:
    """Short trainings: in a dry run tiny synthetic images on the CPU; on a GPU, 100 batches of CIFAR-100
    (synthetic images when there is no CIFAR-100)."""
    common = ["backbone=resnet20", "attention=nam", "trainer.epochs=1", "trainer.progress=none"]
    if dry:
        return [*common, "data=synthetic", "data.synthetic_train_size=32", "data.synthetic_test_size=16",
                "trainer.batch_size=16", "trainer.eval_batch_size=16", "trainer.device=cpu"]  # fmt: skip
    sized = ["trainer.device=cuda", "trainer.batch_size=256", "trainer.limit_train_batches=100"]
    if data is None:
        return [*common, *sized, "data=synthetic", "data.synthetic_train_size=25600"]
    return [*common, *sized, "data=cifar100", f"data.root={data}"]


def namexp(args: list[str]) -> None:
    """`namexp ARGS` in this process (torch imported once); raises on a non-zero exit."""
    try:
        namexp_main(list(args))
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise RuntimeError(f"namexp {' '.join(args)} exited with {exc.code}") from None


def run_figures(run: Path) -> dict:
    record = json.loads((run / "record.json").read_text())
    if record.get("status") != "completed":
        raise RuntimeError(f"{run}: status {record.get('status')}: {record.get('error')}")
    last = record["epochs"][-1]
    return {"img_s": record.get("throughput_img_s") or last.get("img_s"), "test_top1_err": last["test_top1_err"],
            "train_loss": last["train_loss"], "device": record["environment"]["device"]}  # fmt: skip


def train_check(check: Check, base: list[str], work: Path) -> dict:
    run = work / check.name
    namexp(["train", *base, *check.args, f"hydra.run.dir={run}"])
    figures = run_figures(run)
    if check.name == "fp16_scaler":
        from namexp.run.checkpoint import load_checkpoint

        figures["loss_scale"] = load_checkpoint(run / "checkpoints" / "last.pt")["scaler"]["scale"]
    return figures


def eval_check(work: Path) -> dict:
    namexp(["eval", str(work / "fp32")])
    result = json.loads(sorted((work / "fp32" / "evals").glob("*.json"))[-1].read_text())
    return {"test_top1_err": result["top1_err"], "latency_ms_per_batch": result["latency_ms_per_batch"],
            "latency_batch_size": result["latency_batch_size"], "device": result["device"]}  # fmt: skip


def bench_check(base: list[str], work: Path, dry: bool) -> dict:
    out = work / "bench.json"
    overrides = [a for a in base if a.split("=")[0] not in ("trainer.epochs", "trainer.progress")]
    namexp(["bench", *overrides, "--skip-reference", "--skip-overheads", "--steps", "2" if dry else "20",
            "--warmup", "1" if dry else "5", "--repeats", "1" if dry else "3", "--eval-steps", "1",
            "--output", str(out)])  # fmt: skip
    result = json.loads(out.read_text())
    return {
        f"{name}_img_s": round(row["img_s"], 1) for name, row in result["throughput"].items() if row and "img_s" in row
    }


def ddp_check(base: list[str], work: Path) -> dict:
    """One GPU as a 1-process DDP run under torchrun: NCCL's process group, the DDP wrapper, all-reduces."""
    run = work / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
               "-m", "namexp", "train", *base, "trainer.devices=1", f"hydra.run.dir={run}"]  # fmt: skip
    proc = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"torchrun exited with {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}")
    figures = run_figures(run)
    record = json.loads((run / "record.json").read_text())
    figures.update(world_size=record["world_size"], backend=record["environment"].get("distributed_backend"))
    if figures["backend"] != "nccl":
        raise RuntimeError(f"the process group's backend was {figures['backend']}, not nccl")
    return figures


def cifar_check(data: Path | None, work: Path, dry: bool) -> dict:
    """A short real CIFAR-100 run with the fast GPU settings (bf16, channels_last, compile, on-device data)."""
    if data is None or not any((data / n).exists() for n in ("cifar-100-python", "cifar-100-python.tar.xz")):
        raise FileNotFoundError(f"no CIFAR-100 under {data}: pass --data DIR or set NAMEXP_DATA")
    run = work / "cifar100"
    settings = (["trainer.device=cpu", "trainer.epochs=1", "trainer.limit_train_batches=1", "trainer.batch_size=20",
                 "trainer.eval_batch_size=50", "trainer.limit_eval_batches=1"] if dry
                else ["trainer=gpu_fast", "trainer.epochs=2"])  # fmt: skip
    namexp(["train", "data=cifar100", f"data.root={data}", "backbone=resnet20", "attention=nam",
            "trainer.progress=none", *settings, f"hydra.run.dir={run}"])  # fmt: skip
    return run_figures(run)


def run_one(name: str, skip: str, body) -> dict:
    """One check's entry: skipped (with why), or passed with its figures, or failed with the error."""
    if skip:
        print(f"[gpu_check] {name}: skipped ({skip})", flush=True)
        return {"status": "skipped", "reason": skip}
    print(f"[gpu_check] {name} ...", flush=True)
    started = time.perf_counter()
    try:
        figures = body()
        entry = {"status": "passed", **figures}
    except BaseException as exc:  # a check that fails must not stop the others (Ctrl-C still does)
        if isinstance(exc, KeyboardInterrupt):
            raise
        entry = {"status": "failed", "error": " ".join(f"{type(exc).__name__}: {exc}".split())[:400]}
    entry["seconds"] = round(time.perf_counter() - started, 1)
    print(f"[gpu_check] {name}: {entry['status']} in {entry['seconds']} s", flush=True)
    return entry


def run_checks(dry: bool, data: Path | None, work: Path) -> dict[str, dict]:
    cuda = torch.cuda.is_available() and not dry
    no_cuda = "" if cuda else ("no CUDA" if not torch.cuda.is_available() else "dry run")
    base = recipe(not cuda, data)
    results = {}
    for check in CHECKS:
        skip = f"{no_cuda}: {check.cuda_only} needs CUDA" if check.cuda_only and no_cuda else ""
        skip = skip or (f"dry run: {check.dry_skip}" if check.dry_skip and not cuda else "")
        results[check.name] = run_one(check.name, skip, lambda c=check: train_check(c, base, work))
    fp32_ok = results["fp32"]["status"] == "passed"
    results["eval"] = run_one("eval", "" if fp32_ok else "the fp32 run failed", lambda: eval_check(work))
    results["bench"] = run_one("bench", "", lambda: bench_check(base, work, not cuda))
    ddp_skip = "" if cuda else f"{no_cuda}: NCCL needs CUDA"
    results["ddp_nccl"] = run_one("ddp_nccl", ddp_skip, lambda: ddp_check(base, work))
    results["cifar100"] = run_one("cifar100", "", lambda: cifar_check(data, work, not cuda))
    return results


def machine() -> dict:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    return {
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "cuda_devices": torch.cuda.device_count(), "torch": torch.__version__, "cuda": torch.version.cuda,
        "cpus": len(os.sched_getaffinity(0)), "namexp_commit": commit.stdout.strip() or None,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="the same checks on the CPU at tiny size")
    parser.add_argument("--data", type=Path, default=None, help="folder holding CIFAR-100 (default: NAMEXP_DATA, "
                        "else ../shared/data on a GPU)")  # fmt: skip
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="the JSON written")
    args = parser.parse_args(argv)
    dry = args.dry_run or os.environ.get("NAMEXP_GPU_CHECK_DRY") == "1"
    data = args.data or (Path(os.environ["NAMEXP_DATA"]) if os.environ.get("NAMEXP_DATA") else None)
    if data is None and not dry and DEFAULT_DATA.is_dir():
        data = DEFAULT_DATA
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="namexp-gpu-check-") as work:
        os.environ.setdefault("NAMEXP_CACHE", str(Path(work) / "cache"))
        results = run_checks(dry, data.absolute() if data else None, Path(work))
    report = {
        "format": 1, "created": datetime.now(UTC).isoformat(timespec="seconds"), "dry_run": dry,
        "passed": all(r["status"] != "failed" for r in results.values()),
        "seconds": round(time.perf_counter() - started, 1), "machine": machine(), "checks": results,
        "command": " ".join(["benchmarks/gpu_check.sh", *(argv if argv is not None else sys.argv[1:])]),
    }  # fmt: skip
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=1) + "\n")
    failed = [name for name, r in results.items() if r["status"] == "failed"]
    print(f"[gpu_check] {'FAILED: ' + ', '.join(failed) if failed else 'all checks passed or skipped'}; "
          f"{report['seconds']} s; written to {args.output}")  # fmt: skip
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
