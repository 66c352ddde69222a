"""One training run, top to bottom: set up, (maybe) resume, train epoch by epoch, record everything.

The step loop does no host synchronisation except at `trainer.log_interval`: losses and accuracies
are summed on the device and read back at those intervals and at the end of each epoch.
"""

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F

from namexp.config.schema import RunConfig
from namexp.data import DataBundle, build_data
from namexp.errors import UserError
from namexp.files import write_text_atomic
from namexp.models import attention_sites
from namexp.models.attention import nam_modules
from namexp.profile import count_flops, count_params, describe_placement, environment
from namexp.train import runtime
from namexp.train.build import LRSchedule, config_dict, make_model, make_optimizer
from namexp.train.checkpoint import FORMAT, load_checkpoint, load_model_state, save_atomic
from namexp.train.penalty import SparsityPenalty
from namexp.train.progress import TrainingProgress
from namexp.train.record import RunRecord, read_record
from namexp.train.signals import Interrupted, StopFlag
from namexp.train.step import training_step
from namexp.train.tensorboard import RunLogger, hparam_values

log = logging.getLogger("namexp")


class Diverged(UserError):
    exit_code = 3


@dataclass
class RunContext:
    """What a run knows beyond its config: where it writes and how it was launched."""

    run_dir: Path
    choices: Dict[str, str] = field(default_factory=dict)
    overrides: List[str] = field(default_factory=list)
    resume_allowed: bool = False  # --resume, or a sweep job that was requeued
    job_num: Optional[int] = None
    dist: runtime.Dist = runtime.Dist()


@dataclass
class EpochSums:
    """Running sums of the epoch in progress (saved in mid-epoch checkpoints)."""

    loss: torch.Tensor
    correct: torch.Tensor
    seen: int = 0
    seconds: float = 0.0

    @classmethod
    def zeros(cls, device: torch.device) -> "EpochSums":
        return cls(torch.zeros((), device=device, dtype=torch.float64), torch.zeros((), device=device, dtype=torch.int64))


def checkpoint_paths(run_dir: Path) -> Dict[str, Path]:
    folder = run_dir / "checkpoints"
    return {"last": folder / "last.pt", "previous": folder / "previous.pt", "best": folder / "best.pt"}


def find_resume_state(ctx: RunContext) -> Optional[Dict[str, Any]]:
    """The checkpoint to continue from, None for a fresh start, or an error if the folder is taken."""
    existing = read_record(ctx.run_dir)
    if existing is None:
        return None
    if not ctx.resume_allowed:
        raise UserError(f"{ctx.run_dir} already holds a run: continue it with --resume {ctx.run_dir}, or choose another folder")
    paths = checkpoint_paths(ctx.run_dir)
    if paths["last"].exists():
        remedy = (f"the previous checkpoint {paths['previous'].name} is intact: move last.pt aside "
                  f"(mv {paths['last']} {paths['last']}.bad) and resume again to continue from it"
                  if paths["previous"].exists() else "no earlier checkpoint is left: train the run again")
        return load_checkpoint(paths["last"], remedy=remedy)
    if paths["previous"].exists():  # a kill between the two renames of a save
        return load_checkpoint(paths["previous"])
    return None  # killed before the first epoch ended: start again in the same folder


@dataclass
class Setup:
    """Everything a run trains with, built from its config (and its checkpoint when resuming)."""

    device: torch.device
    data: DataBundle
    model: torch.nn.Module  # the plain model: what checkpoints hold
    net: torch.nn.Module  # the model as evaluated (compiled when asked)
    train_net: torch.nn.Module  # the model as trained (DDP-wrapped under torchrun)
    penalty: SparsityPenalty
    optimizer: torch.optim.Optimizer
    scaler: Optional[torch.amp.GradScaler]
    schedule: LRSchedule
    start_epoch: int = 0
    start_step: int = 0
    sums: Optional[EpochSums] = None


def train(cfg: RunConfig, ctx: RunContext) -> Dict[str, Any]:
    d = ctx.dist
    state = find_resume_state(ctx)  # before anything is written: a taken folder stays as it was
    if d.enabled:
        dist.barrier()  # every rank has read the folder before rank 0 writes its record
    if state is not None and state["epoch"] >= cfg.trainer.epochs and not state.get("step"):
        done = read_record(ctx.run_dir) or {}
        if done.get("status") == "completed":
            log.info("%s already completed %d epochs; nothing to do (raise trainer.epochs to train further)",
                     ctx.run_dir, state["epoch"])
            return summary(done)

    # The record exists from the first moment, so a run that fails while loading data is recorded as failed.
    record = open_record(cfg, ctx, state) if d.is_main else None
    tb: Optional[RunLogger] = None
    status, error = "failed", None
    try:
        s = set_up(cfg, ctx, state)
        t, steps = cfg.trainer, len(s.data.train)
        if record is not None:
            describe_run(record, cfg, ctx, s)
            tb = RunLogger(ctx.run_dir / "tb", purge_step=s.start_epoch * steps + s.start_step + 1 if state else None)
            if state is None:
                tb.hparams(hparam_values(config_dict(cfg), ctx.choices))

        def save(epoch_done: int, step: int, partial: Optional[EpochSums], best: bool = False) -> None:
            if record is not None:
                save_checkpoint(cfg, ctx, s, record, epoch_done, step, partial, best)

        stop = StopFlag()
        progress = TrainingProgress(t.progress, t.epochs, steps, enabled=d.is_main)
        sums = s.sums or EpochSums.zeros(s.device)
        start_step = s.start_step
        with stop, progress:
            for epoch in range(s.start_epoch, t.epochs):
                progress.start_epoch(epoch + 1, start_step)
                sums = train_epoch(cfg, ctx, s, epoch, start_step, sums, stop, progress,
                                   save_partial=lambda step, partial: save(epoch, step, partial))
                entry = epoch_entry(cfg, s, epoch, sums, d)
                start_step, sums = 0, EpochSums.zeros(s.device)
                if record is not None:
                    record.add_epoch(entry)
                    save(epoch + 1, 0, None, best=record.data["best"]["epoch"] == entry["epoch"] if record.data["best"] else False)
                    record.write()
                    log_epoch(tb, entry, (epoch + 1) * steps, nam_modules(s.model))
                    progress.epoch_done(epoch_line(entry, t.epochs))
        status = "completed"
        if record is not None:
            finish_logs(tb, record, s.model, t.epochs * steps)
    except Interrupted as exc:
        status, error = "interrupted", str(exc)
        raise
    except Diverged as exc:
        status, error = "diverged", str(exc)
        raise
    except BaseException as exc:
        error = " ".join(f"{type(exc).__name__}: {exc}".split())[:500]
        raise
    finally:
        if record is not None:
            record.finish(status, error)
        if tb is not None:
            tb.close()
    return summary(record.data if record else {"status": status})


def open_record(cfg: RunConfig, ctx: RunContext, state: Optional[Dict[str, Any]]) -> RunRecord:
    record = RunRecord(ctx.run_dir, {
        "backbone": cfg.backbone.name, "attention": cfg.attention.name, "data": cfg.data.name,
        "seed": cfg.seed, "sparsity": cfg.sparsity, "sparsity_mode": cfg.sparsity_mode,
        "choices": ctx.choices, "overrides": ctx.overrides, "config": config_dict(cfg),
        "params": None, "flops": None, "macs": None, "throughput_img_s": None, "placement": None,
        "environment": None, "eval_split": "test", "selection_split": "val" if cfg.data.val_split else "test",
        "world_size": ctx.dist.world_size, "num_train": None,
    })
    if state is not None:
        record.restore(state.get("epochs", []), state.get("created"))
    record.write()
    return record


def set_up(cfg: RunConfig, ctx: RunContext, state: Optional[Dict[str, Any]]) -> Setup:
    d, t = ctx.dist, cfg.trainer
    device = runtime.device_for(t, d, ctx.job_num)
    runtime.set_deterministic(t.deterministic, device)
    data = build_data(cfg.data, batch_size=t.batch_size, eval_batch_size=t.eval_batch_size, device=device, seed=cfg.seed,
                      rank=d.rank, world_size=d.world_size, channels_last=t.channels_last, num_workers=t.num_workers,
                      limit_train_batches=t.limit_train_batches, limit_eval_batches=t.limit_eval_batches)
    runtime.seed_everything(cfg.seed)
    model = make_model(cfg, data.num_classes, data.image_size).to(device)
    if t.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if d.enabled and t.sync_bn:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    penalty = SparsityPenalty(model, cfg.sparsity, cfg.sparsity_mode)
    if cfg.sparsity > 0 and not penalty.scales:
        log.warning("sparsity=%g has nothing to act on: attention=%s has no NAM scales (recorded as 0)", cfg.sparsity, cfg.attention.name)
    optimizer = make_optimizer(model, cfg.optim)
    scaler = runtime.grad_scaler(t.precision, device)
    s = Setup(device, data, model, model, model, penalty, optimizer, scaler,
              LRSchedule(cfg.sched, cfg.optim.lr, t.epochs, len(data.train)))
    if state is not None:
        load_model_state(model, state["model"], checkpoint_paths(ctx.run_dir)["last"], f"{cfg.backbone.name}+{cfg.attention.name}")
        optimizer.load_state_dict(state["optimizer"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        runtime.set_rng_state(state["rng"])
        s.start_epoch, s.start_step = state["epoch"], state.get("step", 0)
        if s.start_step:
            p = state["partial"]
            s.sums = EpochSums(p["loss"].to(device), p["correct"].to(device), p["seen"], p["seconds"])
        log.info("resuming %s at epoch %d step %d", ctx.run_dir, s.start_epoch + 1, s.start_step)
    if t.compile:
        s.net = torch.compile(model)  # compiled before the DDP wrap, as timm does
    s.train_net = s.net
    if d.enabled:
        s.train_net = torch.nn.parallel.DistributedDataParallel(s.net, device_ids=[device.index] if device.type == "cuda" else None)
    return s


def describe_run(record: RunRecord, cfg: RunConfig, ctx: RunContext, s: Setup) -> None:
    """What the run is and where it runs: filled in once the model and data exist."""
    t = cfg.trainer
    image_size = s.data.image_size
    params, flops = count_params(s.model), count_flops(s.model, image_size)
    record.data.update({
        "sparsity": s.penalty.weight,  # effective: 0 when the model has no NAM scales
        "params": params, "flops": flops, "macs": flops // 2,
        "placement": describe_placement(attention_sites(s.model)),
        "environment": {**environment(runtime.describe_device(s.device)), "precision": t.precision,
                        "channels_last": t.channels_last, "compile": t.compile, "deterministic": t.deterministic,
                        "world_size": ctx.dist.world_size},
        "num_train": s.data.num_train,
    })
    record.write()
    log.info("run folder %s | %s + %s on %s | %s params, %.3f GFLOPs/image | %d train images, %d steps/epoch",
             ctx.run_dir, cfg.backbone.name, cfg.attention.name, runtime.describe_device(s.device), f"{params:,}",
             flops / 1e9, s.data.num_train, len(s.data.train))


def save_checkpoint(cfg: RunConfig, ctx: RunContext, s: Setup, record: RunRecord, epoch_done: int, step: int,
                    partial: Optional[EpochSums], best: bool) -> None:
    """Everything an exact resume needs; `step` > 0 marks a checkpoint taken inside an epoch."""
    ckpt = {
        "format": FORMAT, "model": s.model.state_dict(), "optimizer": s.optimizer.state_dict(),
        "scaler": s.scaler.state_dict() if s.scaler is not None else None,
        "schedule": {"name": cfg.sched.name, "lr": s.optimizer.param_groups[0]["lr"]},
        "rng": runtime.rng_state(), "epoch": epoch_done, "step": step,
        "partial": None if partial is None else {"loss": partial.loss, "correct": partial.correct,
                                                  "seen": partial.seen, "seconds": partial.seconds},
        "epochs": record.epochs, "config": config_dict(cfg), "choices": dict(ctx.choices),
        "created": record.data["created"],
    }
    paths = checkpoint_paths(ctx.run_dir)
    save_atomic_rotating(ckpt, paths["last"], paths["previous"])
    if best:
        save_atomic({k: ckpt[k] for k in ("format", "model", "config", "choices", "epoch", "epochs")}, paths["best"])


def save_atomic_rotating(state: Dict[str, Any], last: Path, previous: Path) -> None:
    """Keep the previous good checkpoint beside the new one (a damaged last.pt is never the only copy)."""
    if last.exists():
        last.replace(previous)
    save_atomic(state, last)


def train_epoch(cfg: RunConfig, ctx: RunContext, s: Setup, epoch: int, start_step: int, sums: EpochSums,
                stop: StopFlag, progress: TrainingProgress, save_partial) -> EpochSums:
    t, device, d = cfg.trainer, s.device, ctx.dist
    train_net, optimizer, scaler, penalty, schedule = s.train_net, s.optimizer, s.scaler, s.penalty, s.schedule
    steps = len(s.data.train)
    train_net.train()
    started, seen_at_start = time.perf_counter(), sums.seen
    for step, (images, labels) in enumerate(s.data.train.epoch(epoch, start_step), start=start_step):
        LRSchedule.apply(optimizer, schedule.lr_at(epoch, step))
        logits, loss = training_step(train_net, images, labels, optimizer, scaler, t.precision, device, penalty)

        batch = labels.shape[0]
        sums.loss += loss.detach().double() * batch
        sums.correct += (logits.detach().argmax(1) == labels).sum()
        sums.seen += batch
        last = step + 1 == steps
        if (step + 1) % t.log_interval == 0 or last:
            current = float(loss.detach())  # the only read-back in the loop
            if not math.isfinite(current):
                raise Diverged(
                    f"the loss became {current} at epoch {epoch + 1} step {step + 1}: the last good checkpoint is kept in "
                    f"{ctx.run_dir / 'checkpoints'}; lower optim.lr or use trainer.precision=fp32"
                )
            elapsed = time.perf_counter() - started
            progress.update(epoch + 1, step + 1, current, (sums.seen - seen_at_start) * d.world_size / max(elapsed, 1e-9))
        if stop_requested(stop, d, check_now=(step + 1) % t.log_interval == 0 or last) and not last:
            sums.seconds += time.perf_counter() - started
            save_partial(step + 1, sums)
            raise Interrupted(stop.signum, str(ctx.run_dir))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    sums.seconds += time.perf_counter() - started
    return sums


def stop_requested(stop: StopFlag, d: runtime.Dist, check_now: bool) -> bool:
    """A signal stops every rank at the same step: under DDP the ranks agree at logging intervals."""
    if not d.enabled:
        return stop.requested
    if not check_now:
        return False
    flag = torch.tensor([1 if stop.requested else 0], device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    if flag.item() and stop.signum is None:
        stop.signum = 15  # another rank got SIGTERM
    return bool(flag.item())


@torch.no_grad()
def evaluate(net: torch.nn.Module, loader, precision: str, device: torch.device, d: runtime.Dist = runtime.Dist()) -> Dict[str, float]:
    """Loss and top-1/top-5 error (percent) over a whole split, summed over ranks."""
    net.eval()
    sums = torch.zeros(4, device=device, dtype=torch.float64)  # loss, top-1 correct, top-5 correct, images
    for images, labels in loader:
        with runtime.autocast(precision, device):
            logits = net(images)
        logits = logits.float()
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        hits = top == labels[:, None]
        sums[0] += F.cross_entropy(logits, labels, reduction="sum").double()
        sums[1] += hits[:, 0].sum()
        sums[2] += hits.any(1).sum()
        sums[3] += labels.shape[0]  # a Python number: no host-to-device copy per batch
    if d.enabled:
        dist.all_reduce(sums)
    loss, top1, top5, n = sums.tolist()
    n = max(n, 1.0)
    return {"loss": loss / n, "top1_err": 100 * (1 - top1 / n), "top5_err": 100 * (1 - top5 / n), "images": n}


def epoch_entry(cfg: RunConfig, s: Setup, epoch: int, sums: EpochSums, d: runtime.Dist) -> Dict[str, Any]:
    device, data, net, penalty, schedule = s.device, s.data, s.net, s.penalty, s.schedule
    totals = torch.stack([sums.loss, sums.correct.double(), torch.tensor(float(sums.seen), device=device, dtype=torch.float64)])
    if d.enabled:
        dist.all_reduce(totals)
    loss_sum, correct, seen = totals.tolist()
    test = evaluate(net, data.test, cfg.trainer.precision, device, d)
    val = evaluate(net, data.val, cfg.trainer.precision, device, d) if data.val is not None else {}
    l1 = penalty.l1()
    return {
        "epoch": epoch + 1,
        "train_loss": loss_sum / max(seen, 1),
        "train_top1_err": 100 * (1 - correct / max(seen, 1)),
        "test_loss": test["loss"], "test_top1_err": test["top1_err"], "test_top5_err": test["top5_err"],
        "val_loss": val.get("loss"), "val_top1_err": val.get("top1_err"), "val_top5_err": val.get("top5_err"),
        "lr": schedule.lr_at(epoch, 0),
        "penalty": penalty.value(),
        "nam_l1": float(l1) if l1 is not None else None,
        "seconds": sums.seconds,
        "img_s": seen / sums.seconds if sums.seconds > 0 else None,
    }


def epoch_line(e: Dict[str, Any], epochs: int) -> str:
    val = f" | val top-1 err {e['val_top1_err']:.2f}%" if e.get("val_top1_err") is not None else ""
    return (f"epoch {e['epoch']}/{epochs} | train loss {e['train_loss']:.4f} | test loss {e['test_loss']:.4f} "
            f"top-1 err {e['test_top1_err']:.2f}% top-5 err {e['test_top5_err']:.2f}%{val} | lr {e['lr']:.4g} | "
            f"{e['seconds']:.1f}s, {e['img_s'] or 0:,.0f} img/s")


def log_epoch(tb: Optional[RunLogger], e: Dict[str, Any], step: int, nam_layers) -> None:
    if tb is None:
        return
    tb.scalars({
        "train/loss": e["train_loss"], "train/top1_err": e["train_top1_err"],
        "test/loss": e["test_loss"], "test/top1_err": e["test_top1_err"], "test/top5_err": e["test_top5_err"],
        "val/loss": e["val_loss"], "val/top1_err": e["val_top1_err"], "val/top5_err": e["val_top5_err"],
        "lr": e["lr"], "sparsity/penalty": e["penalty"], "sparsity/nam_l1": e["nam_l1"],
        "epoch": e["epoch"], "speed/img_s": e["img_s"],
    }, step)
    tb.nam(nam_layers, step)


def finish_logs(tb: Optional[RunLogger], record: RunRecord, model: torch.nn.Module, last_step: int) -> None:
    """The hparams metrics (same run, last step) and the final NAM weights for compare's plots."""
    best, final = record.data["best"] or {}, (record.epochs[-1] if record.epochs else {})
    if tb is not None:
        tb.scalars({"hparam/best_top1_err": best.get(f"{record.data['selection_split']}_top1_err"),
                    "hparam/final_top1_err": final.get("test_top1_err"),
                    "hparam/final_top5_err": final.get("test_top5_err")}, last_step)
    layers = {site: {part: w.float().cpu().tolist() for part, w in module.nam_weights().items()}
              for site, module in nam_modules(model)}
    if layers:
        write_text_atomic(record.run_dir / "nam_weights.json", json.dumps({"layers": layers}) + "\n")


def summary(record: Dict[str, Any]) -> Dict[str, Any]:
    """What a job returns to Hydra (and the CLI prints)."""
    best, final = record.get("best") or {}, record.get("final") or {}
    return {
        "run_dir": record.get("run_dir"), "status": record.get("status"),
        "backbone": record.get("backbone"), "attention": record.get("attention"), "seed": record.get("seed"),
        "final_top1_err": final.get("test_top1_err"), "final_top5_err": final.get("test_top5_err"),
        "best_top1_err": best.get("test_top1_err"), "best_epoch": best.get("epoch"),
        "params": record.get("params"), "flops": record.get("flops"), "throughput_img_s": record.get("throughput_img_s"),
    }
