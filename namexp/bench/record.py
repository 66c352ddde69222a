"""Record: the bench's result as one JSON-ready dict (format FORMAT; docs/benchmarks/*.json hold such records)."""

from __future__ import annotations

import datetime
import os
import platform
import shlex
from pathlib import Path
from statistics import median
from typing import TYPE_CHECKING, Any

from namexp.bench.plan import BASELINE

if TYPE_CHECKING:
    import torch

    from namexp.bench.measure import Measurements
    from namexp.bench.overheads import Contender
    from namexp.bench.plan import BenchPlan

FORMAT = 1


def build_record(plan: BenchPlan, m: Measurements) -> dict[str, Any]:
    run, opts, t = plan.run, plan.options, plan.run.trainer
    result: dict[str, Any] = {
        "format": FORMAT,
        "created": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "settings": {
            "steps": opts.steps,
            "warmup": opts.warmup,
            "repeats": opts.repeats,
            "eval_steps": opts.eval_steps,
            "attentions": [c.label for c, _ in plan.attention_runs],
            "skip_reference": opts.skip_reference,
        },
        "config": {
            "backbone": run.backbone.name,
            "attention": run.attention.name,
            "attention_options": dict(run.attention.options),
            "data": run.data.name,
            "batch_size": t.batch_size,
            "eval_batch_size": t.eval_batch_size,
            "device": str(m.device),
            "precision": t.precision,
            "channels_last": t.channels_last,
            "compile": t.compile,
            "num_workers": t.num_workers,
            "log_interval": t.log_interval,
            "sparsity": m.sparsity,
            "sparsity_mode": run.sparsity_mode,
            "optimizer": run.optim.name,
            "params": m.params,
        },
        "machine": machine_description(m.device),
        "throughput": {
            name: throughput_entry(values, m.steps[name], t.batch_size) for name, values in m.throughput.items()
        },
        "eval_latency": {
            "batch_size": t.eval_batch_size,
            "median_ms": float(median(m.latency_ms)),
            "samples_ms": m.latency_ms,
        },
        "overheads": overheads_entry(m.contenders, t.batch_size, opts.steps, opts.eval_steps) if m.contenders else None,
        "notes": plan.notes + m.notes,
    }
    tp = result["throughput"]
    tp.setdefault("reference", None)
    result["ratios"] = {
        "namexp_vs_limit": tp["namexp"]["img_s"] / tp["limit"]["img_s"],
        "namexp_vs_reference": tp["namexp"]["img_s"] / tp["reference"]["img_s"] if tp["reference"] else None,
    }
    result["command"] = shlex.join(plan.argv)
    result["argv"] = plan.argv
    return result


def throughput_entry(values: list[float], steps: int, batch_size: int) -> dict[str, Any]:
    img_s = float(median(values))
    return {
        "img_s": img_s,
        "ms_per_step": batch_size / img_s * 1000,
        "samples_img_s": values,
        "steps": steps,
        "batch_size": batch_size,
    }


def overheads_entry(contenders: list[Contender], batch_size: int, train_steps: int, infer_steps: int) -> dict[str, Any]:
    base = next(c for c in contenders if c.choice.label == BASELINE)
    rows = []
    for c in contenders:
        # Per-repeat ratios to the baseline measured in the same repeat, then the median: drift cancels.
        train_ratio = [a / b for a, b in zip(c.train_ms, base.train_ms)]
        infer_ratio = [a / b for a, b in zip(c.infer_ms, base.infer_ms)]
        rows.append(
            {
                "attention": c.choice.label,
                "name": c.choice.name,
                "options": dict(c.cfg.attention.options),
                "params": c.params,
                "extra_params": c.params - base.params,
                "train_step_ms": float(median(c.train_ms)),
                "train_overhead_pct": 100 * (median(train_ratio) - 1),
                "infer_ms": float(median(c.infer_ms)),
                "infer_overhead_pct": 100 * (median(infer_ratio) - 1),
                "train_samples_ms": c.train_ms,
                "infer_samples_ms": c.infer_ms,
            }
        )
    return {
        "baseline": BASELINE,
        "backbone": contenders[0].cfg.backbone.name,
        "batch_size": batch_size,
        "train_steps": train_steps,
        "infer_steps": infer_steps,
        "rows": rows,
    }


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine_description(device: torch.device) -> dict[str, Any]:
    import torch

    from namexp.provenance import environment
    from namexp.train import runtime

    env = environment(runtime.describe_device(device))
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "platform": platform.platform(),
        "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,
    }
    try:
        info["load_average_1m"] = round(os.getloadavg()[0], 2)  # a busy machine distorts every figure
    except OSError:
        pass
    return {**env, **info}
