"""`namexp eval`: re-evaluate a checkpoint with the config it was trained with.

A run folder's config is recomposed from its saved overrides plus the ones given here (`namexp.run.load`),
so they may change where and how it runs (data.root, trainer=gpu_fast, trainer.eval_batch_size, ...), not
what it is. The result goes to `<run>/evals/<time>-<checkpoint>.json` beside the run's record.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

from namexp.errors import UserError
from namexp.files import write_text_atomic
from namexp.run.layout import RunFolder


def eval_folder(checkpoint: Path) -> Path:
    """`evals/` of the checkpoint's run folder (or beside a checkpoint outside one)."""
    parent = checkpoint.resolve().parent
    return RunFolder(parent.parent if parent.name == "checkpoints" else parent).evals


def latency_model(model, folded: bool):
    """The form latency is timed on: the model as trained (eager), or folded for inference (namexp export's form)."""
    if not folded:
        return model
    from namexp.export.fold import fold_for_inference

    return fold_for_inference(model)


def run_eval(target: Path, overrides: list[str], which: str = "last", split: str = "test", folded: bool = False) -> int:
    from namexp.costs import count_flops, count_params, inference_latency_ms
    from namexp.evaluation.metrics import split_metrics
    from namexp.run.load import load_run
    from namexp.train import runtime
    from namexp.train.build import make_data

    run = load_run(target, overrides, which)
    cfg, device = run.cfg, run.device
    data = make_data(cfg, device, with_train=False)
    loader = {"test": data.test, "val": data.val}.get(split)
    if loader is None:
        available = ", or val" if data.val else " (the run held out no validation split)"
        raise UserError(f"--split {split} is not available: use test{available}")
    metrics = split_metrics(run.model, loader, cfg.trainer.precision, device)
    first_batch = next(iter(loader))[0]
    with runtime.autocast(cfg.trainer.precision, device):
        latency = inference_latency_ms(latency_model(run.model, folded), first_batch)
    result = {
        "checkpoint": str(run.checkpoint.resolve()), "which": which, "split": split, "epoch": run.epochs_done,
        "backbone": cfg.backbone.name, "attention": cfg.attention.name, "data": cfg.data.name,
        "loss": metrics["loss"], "top1_err": metrics["top1_err"], "top5_err": metrics["top5_err"],
        "images": int(metrics["images"]), "params": count_params(run.model),
        "flops": count_flops(run.model, data.image_size),
        "latency_ms_per_batch": latency, "latency_batch_size": int(first_batch.shape[0]),
        "latency_form": "folded" if folded else "eager",
        "device": runtime.describe_device(device), "precision": cfg.trainer.precision, "overrides": list(overrides),
        "config": asdict(cfg), "time": datetime.now().isoformat(timespec="seconds"),
    }  # fmt: skip
    out = eval_folder(run.checkpoint) / f"{datetime.now().strftime('%Y-%m-%d_%H-%M-%S.%f')}-{run.checkpoint.stem}.json"
    write_text_atomic(out, json.dumps(result, indent=1) + "\n")
    _show(result, out)
    return 0


def _show(r: dict, out: Path) -> None:
    title = (
        f"{r['backbone']} + {r['attention']} on {r['data']} {r['split']} ({r['images']:,} images, epoch {r['epoch']})"
    )
    table = Table(title=title, show_header=False)
    table.add_row("loss", f"{r['loss']:.4f}")
    table.add_row("top-1 / top-5 error", f"{r['top1_err']:.2f}% / {r['top5_err']:.2f}%")
    table.add_row("params / FLOPs", f"{r['params']:,} / {r['flops'] / 1e9:.3f} G (2 per multiply-add)")
    table.add_row(f"latency ({r['latency_form']})", f"{r['latency_ms_per_batch']:.2f} ms per batch of {r['latency_batch_size']} "
                  f"({r['device']}, {r['precision']})")  # fmt: skip
    table.add_row("eval record", str(out))
    Console().print(table)
