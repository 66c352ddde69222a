"""What a training run writes besides its weights: the record, TensorBoard events, log lines, the summary."""

from __future__ import annotations

import json
import logging
from typing import Any

import torch
import torch.distributed as dist

from namexp.config.schema import RunConfig
from namexp.costs import count_flops, count_params
from namexp.files import write_text_atomic
from namexp.models import attention_sites
from namexp.models.attention import nam_modules
from namexp.models.sites import placement_record
from namexp.provenance import environment
from namexp.run.checkpoint import PAYLOAD_FORMAT, save_rotating
from namexp.run.record import RunRecord
from namexp.train import runtime
from namexp.train.build import config_dict
from namexp.train.gate_log import gate_scalars
from namexp.train.setup import RunContext, Setup
from namexp.train.tensorboard import RunLogger, hparam_values

log = logging.getLogger("namexp")


def open_record(cfg: RunConfig, ctx: RunContext, epochs_done: int | None) -> RunRecord:
    """The run's record (the caller writes it at once: a run that fails while loading data is recorded as
    failed); a resumed run keeps its record's first `epochs_done` epochs."""
    fields = {
        "backbone": cfg.backbone.name, "attention": cfg.attention.name, "sites": cfg.attention.sites,
        "data": cfg.data.name, "seed": cfg.seed, "sparsity": cfg.sparsity, "sparsity_mode": cfg.sparsity_mode,
        "choices": ctx.choices, "overrides": ctx.overrides, "config": config_dict(cfg),
        "params": None, "flops": None, "macs": None, "throughput_img_s": None, "placement": None,
        "environment": None, "eval_split": "test", "selection_split": selection_split(cfg),
        "world_size": ctx.dist.world_size, "num_train": None,
    }  # fmt: skip
    if ctx.tags:
        fields["tags"] = dict(ctx.tags)
    if epochs_done is None:
        record = RunRecord(ctx.folder, fields)
    else:
        record = RunRecord.continued(ctx.folder, fields, epochs_done)
    return record


def selection_split(cfg: RunConfig) -> str:
    """The split that picks the best epoch: val when one is held out, else test (optimistic, as most papers)."""
    return "val" if cfg.data.val_split else "test"


def describe_run(record: RunRecord, cfg: RunConfig, ctx: RunContext, s: Setup) -> None:
    """What the run is and where it runs: filled in once the model and data exist."""
    t = cfg.trainer
    params, flops = count_params(s.model), count_flops(s.model, s.data.image_size)
    device = runtime.describe_device(s.device)
    record.data.update({
        "sparsity": s.penalty.weight,  # effective: 0 when the model has no NAM scales
        "params": params, "flops": flops, "macs": flops // 2,
        "placement": placement_record(attention_sites(s.model)),
        "environment": {**environment(device), "precision": t.precision, "channels_last": t.channels_last,
                        "compile": t.compile, "deterministic": t.deterministic, "world_size": ctx.dist.world_size,
                        "distributed_backend": dist.get_backend() if dist.is_initialized() else None},
        "num_train": s.data.num_train,
        "data_sizes": s.data.sizes, "data_fingerprint": s.data.fingerprint, "data_source": s.data.source,
    })  # fmt: skip
    record.set_state(s.state)
    record.write()
    log.info("run folder %s | %s + %s on %s | %s params, %.3f GFLOPs/image | %d train images, %d steps/epoch",
             ctx.run_dir, cfg.backbone.name, cfg.attention.name, device, f"{params:,}", flops / 1e9,
             s.data.num_train, len(s.data.train))  # fmt: skip


def open_tensorboard(cfg: RunConfig, ctx: RunContext, s: Setup, resumed: bool) -> RunLogger:
    """The run's event writer; a resumed run hides the killed run's events after its checkpoint."""
    steps = len(s.data.train)
    purge_step = s.state.epochs_done * steps + s.state.step + 1 if resumed else None
    tb = RunLogger(ctx.folder.tensorboard, purge_step=purge_step)
    if not resumed:
        tb.hparams(hparam_values(config_dict(cfg), ctx.choices))
    return tb


def save_checkpoint(cfg: RunConfig, ctx: RunContext, s: Setup, best: bool = False) -> None:
    """Everything an exact resume needs: weights, optimizer, scaler and the run state (RNGs included)."""
    payload = {
        "format": PAYLOAD_FORMAT, "model": s.model.state_dict(), "optimizer": s.optimizer.state_dict(),
        "scaler": s.scaler.state_dict() if s.scaler is not None else None,
        "state": s.state.to_checkpoint(), "config": config_dict(cfg), "choices": dict(ctx.choices),
    }  # fmt: skip
    save_rotating(payload, ctx.folder, best)


def epoch_line(e: dict[str, Any], epochs: int) -> str:
    val = f" | val top-1 err {e['val_top1_err']:.2f}%" if e.get("val_top1_err") is not None else ""
    return (f"epoch {e['epoch']}/{epochs} | train loss {e['train_loss']:.4f} | test loss {e['test_loss']:.4f} "
            f"top-1 err {e['test_top1_err']:.2f}% top-5 err {e['test_top5_err']:.2f}%{val} | lr {e['lr']:.4g} | "
            f"{e['seconds']:.1f}s, {e['img_s'] or 0:,.0f} img/s")  # fmt: skip


def log_epoch(tb: RunLogger, e: dict[str, Any], step: int, model: torch.nn.Module) -> None:
    tb.scalars({
        "train/loss": e["train_loss"], "train/top1_err": e["train_top1_err"],
        "test/loss": e["test_loss"], "test/top1_err": e["test_top1_err"], "test/top5_err": e["test_top5_err"],
        "val/loss": e["val_loss"], "val/top1_err": e["val_top1_err"], "val/top5_err": e["val_top5_err"],
        "lr": e["lr"], "sparsity/penalty": e["penalty"], "sparsity/nam_l1": e["nam_l1"],
        "epoch": e["epoch"], "speed/img_s": e["img_s"],
    }, step)  # fmt: skip
    tb.scalars(gate_scalars(e.get("gates") or {}), step)
    tb.nam(nam_modules(model), step)


def finish_logs(tb: RunLogger, record: RunRecord, model: torch.nn.Module, last_step: int) -> None:
    """The hparams metrics (same run, last step) and the final NAM weights for compare's plots."""
    best, final = record.data["best"] or {}, (record.epochs[-1] if record.epochs else {})
    tb.scalars({"hparam/best_top1_err": best.get(f"{record.data['selection_split']}_top1_err"),
                "hparam/final_top1_err": final.get("test_top1_err"),
                "hparam/final_top5_err": final.get("test_top5_err")}, last_step)  # fmt: skip
    layers = {
        site: {part: w.float().cpu().tolist() for part, w in module.nam_weights().items()}
        for site, module in nam_modules(model)
    }
    if layers:
        write_text_atomic(record.folder.nam_weights, json.dumps({"layers": layers}) + "\n")


def summary(record: dict[str, Any]) -> dict[str, Any]:
    """What a job returns to Hydra (and the CLI prints)."""
    best, final = record.get("best") or {}, record.get("final") or {}
    return {
        "run_dir": record.get("run_dir"), "status": record.get("status"),
        "backbone": record.get("backbone"), "attention": record.get("attention"), "seed": record.get("seed"),
        "final_top1_err": final.get("test_top1_err"), "final_top5_err": final.get("test_top5_err"),
        "best_top1_err": best.get("test_top1_err"), "best_epoch": best.get("epoch"),
        "params": record.get("params"), "flops": record.get("flops"),
        "throughput_img_s": record.get("throughput_img_s"),
    }  # fmt: skip
