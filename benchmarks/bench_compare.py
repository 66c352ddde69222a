"""Time `namexp compare` on 1,000 realistic run folders (200 epoch entries each).

Writes the folders into a temporary directory (record.json as training writes it, plus .hydra/, tb/,
checkpoints/, metrics.csv and some analysis/analysis.json), then times collect (find + parse) +
aggregate (grouping, statistics, Welch tests) + render (terminal text, Markdown, CSV, JSON), and prints
the median of the repeats. The requirement is under 5 seconds.

    python benchmarks/bench_compare.py [--runs 1000] [--epochs 200] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from namexp.compare.collect import load_runs  # noqa: E402
from namexp.compare.render import render_csv, render_json, render_markdown, terminal_text  # noqa: E402
from namexp.compare.stats import build  # noqa: E402

ATTENTIONS = ("none", "nam", "se", "cbam", "bam", "tam", "eca", "nonlocal", "half")
BACKBONES = ("resnet18", "resnet50")
DATASETS = ("cifar10", "cifar100")
LRS = (0.1, 0.05)


def config(data: str, backbone: str, attention: str, lr: float, seed: int, epochs: int) -> dict:
    return {
        "data": {
            "name": data,
            "root": f"/scratch/u/job{seed}/data",
            "download": True,
            "cache_dir": None,
            "num_classes": 100 if data == "cifar100" else 10,
            "image_size": 32,
            "mean": [0.507, 0.4865, 0.4409],
            "std": [0.2673, 0.2564, 0.2762],
            "val_split": 0,
            "train_subset": 0,
            "augment": "crop_flip",
            "crop_padding": 4,
            "on_device": True,
            "synthetic_train_size": 1024,
            "synthetic_test_size": 256,
            "eval_resize": 256,
        },
        "backbone": {"name": backbone, "stem": "auto", "width_mult": 1.0},
        "attention": {"name": attention, "options": {"reduction": 16} if attention in ("se", "cbam", "bam") else {}},
        "optim": {"name": "sgd", "lr": lr, "momentum": 0.9, "weight_decay": 5e-4, "nesterov": False},
        "sched": {"name": "multistep", "milestones": [60, 120, 160], "gamma": 0.2, "warmup_epochs": 0},
        "trainer": {
            "epochs": epochs,
            "batch_size": 128,
            "eval_batch_size": 512,
            "device": f"cuda:{seed % 4}",
            "precision": "bf16",
            "channels_last": True,
            "compile": False,
            "deterministic": False,
            "log_interval": 50,
            "progress": "plain",
            "num_workers": 4,
            "sync_bn": False,
            "resume": False,
            "limit_train_batches": 0,
            "limit_eval_batches": 0,
        },
        "seed": seed,
        "sparsity": 1e-4,
        "sparsity_mode": "loss",
    }


def make_runs(root: Path, n_runs: int, n_epochs: int) -> None:
    rng = random.Random(0)
    combos = [(d, b, a, lr) for d in DATASETS for b in BACKBONES for a in ATTENTIONS for lr in LRS]
    for i in range(n_runs):
        data, backbone, attention, lr = combos[i % len(combos)]
        seed = i // len(combos)
        status = "completed" if i % 50 else rng.choice(["failed", "diverged", "interrupted", "running"])
        done = n_epochs if status == "completed" else rng.randrange(1, n_epochs)
        base = 22.0 if data == "cifar100" else 5.0
        epochs = []
        for e in range(1, done + 1):
            err = base + 60.0 * (1 - e / n_epochs) ** 2 + rng.gauss(0, 0.3)
            epochs.append(
                {
                    "epoch": e,
                    "train_loss": 2.0 * (1 - e / n_epochs) + 0.01,
                    "train_top1_err": err - 8 + rng.random(),
                    "test_loss": 1.5 * (1 - e / n_epochs) + 0.8,
                    "test_top1_err": err,
                    "test_top5_err": err / 4,
                    "val_loss": None,
                    "val_top1_err": None,
                    "val_top5_err": None,
                    "lr": lr,
                    "penalty": 1e-3 * rng.random(),
                    "nam_l1": 12.3 * rng.random() if attention == "nam" else None,
                    "seconds": 14.2 + rng.random(),
                    "img_s": 3500.0 + 100 * rng.random(),
                }
            )
        cfg = config(data, backbone, attention, lr, seed, n_epochs)
        best = min(epochs, key=lambda x: x["test_top1_err"])
        record = {
            "format": 1,
            "status": status,
            "error": None if status == "completed" else f"{status}: reason",
            "run_dir": f"/cluster/runs/multirun/x/{i}",
            "created": "2024-05-01T10:00:00",
            "updated": "2024-05-01T12:00:00",
            "backbone": backbone,
            "attention": attention,
            "data": data,
            "seed": seed,
            "sparsity": 1e-4 if attention == "nam" else 0.0,
            "sparsity_mode": "loss",
            "choices": {
                "data": data,
                "backbone": backbone,
                "attention": attention,
                "optim": "sgd",
                "sched": "multistep",
                "trainer": "default",
            },
            "overrides": [
                f"data={data}",
                f"backbone={backbone}",
                f"attention={attention}",
                f"optim.lr={lr}",
                f"seed={seed}",
            ],
            "config": cfg,
            "params": 11_220_132 + 4800 * (attention != "none"),
            "flops": 1_114_000_000,
            "macs": 557_000_000,
            "throughput_img_s": 3550.0 + rng.random() * 50,
            "placement": [
                {"site": f"layer{k}.{j}", "module": attention, "channels": 64 * 2 ** (k - 1), "where": "post"}
                for k in range(1, 5)
                for j in range(2)
            ]
            if attention != "none"
            else [],
            "environment": {
                "python": "3.11.9",
                "torch": "2.4.0",
                "torchvision": "0.19.0",
                "namexp": "0.1.0",
                "device": "cuda:0 NVIDIA H100",
                "precision": "bf16",
                "channels_last": True,
                "compile": False,
                "deterministic": False,
                "world_size": 1,
                "hostname": "node42",
                "git_commit": "0123456789abcdef",
            },
            "eval_split": "test",
            "selection_split": "test",
            "epochs": epochs,
            "best": best if status == "completed" else None,
            "final": epochs[-1] if status == "completed" else None,
            "world_size": 1,
        }
        folder = root / str(i)
        for sub in (".hydra", "tb", "checkpoints"):
            (folder / sub).mkdir(parents=True)
        (folder / "record.json").write_text(json.dumps(record, indent=1))
        (folder / ".hydra" / "config.yaml").write_text("data: cifar100\n")
        (folder / "tb" / f"events.out.tfevents.{i}").write_bytes(b"\0" * 256)
        (folder / "checkpoints" / "last.pt").write_bytes(b"\0" * 256)
        (folder / "metrics.csv").write_text("epoch,test_top1_err\n")
        if attention == "nam" and i % 3 == 0 and status == "completed":
            (folder / "analysis").mkdir()
            masking = [
                {"ranking": r, "ratio": 0.3, "finetuned": False, "test_top1_err": 40 + rng.random()}
                for r in ("nam", "bn", "random", "random")
            ]
            (folder / "analysis" / "analysis.json").write_text(json.dumps({"masking": masking}))


def compare_once(root: Path) -> tuple[float, int, int, int]:
    start = time.perf_counter()
    runs, warnings = load_runs([root])
    comp = build(runs, warnings=warnings)
    text = terminal_text(comp) + render_markdown(comp) + render_csv(comp) + render_json(comp)
    return time.perf_counter() - start, len(runs), len(comp.groups), len(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="namexp-bench-") as tmp:
        root = Path(tmp) / "multirun" / "sweep"
        t0 = time.perf_counter()
        make_runs(root, args.runs, args.epochs)
        size = sum(os.path.getsize(root / str(i) / "record.json") for i in range(args.runs))
        print(
            f"wrote {args.runs} run folders ({args.epochs} epochs each, {size / 1e6:.0f} MB of record.json) "
            f"in {time.perf_counter() - t0:.1f} s"
        )
        # scipy and rich are imported once per process (by the first repeat): do that outside the timing.
        import rich.table  # noqa: F401
        import scipy.stats  # noqa: F401

        times = []
        for _ in range(args.repeats):
            seconds, n_runs, n_groups, _ = compare_once(root)
            times.append(seconds)
        print(f"runs read: {n_runs}, groups: {n_groups}; times: {', '.join(f'{t:.2f}' for t in times)} s")
        print(
            f"compare (collect + aggregate + render), median of {args.repeats}: {statistics.median(times):.2f} s "
            f"for {args.runs} runs x {args.epochs} epochs (limit: 5 s)"
        )


if __name__ == "__main__":
    main()
