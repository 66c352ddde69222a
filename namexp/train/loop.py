"""One training run, top to bottom: set up (or resume), then for each epoch train, evaluate, add to the run
state, record and save.

The step loop does no host synchronisation except at `trainer.log_interval`: losses and accuracies
are summed on the device and read back at those intervals and at the end of each epoch.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist

from namexp.config.schema import RunConfig
from namexp.errors import UserError
from namexp.evaluation.metrics import split_metrics
from namexp.files import WriteFailed
from namexp.run.checkpoint import resume_checkpoint, set_aside
from namexp.run.claim import holds_progress
from namexp.run.record import RunRecord, read_record
from namexp.run.state import EpochSums
from namexp.train import runtime
from namexp.train.build import LRSchedule
from namexp.train.gate_log import GateLog
from namexp.train.outputs import (
    describe_run,
    epoch_line,
    finish_logs,
    log_epoch,
    open_record,
    open_tensorboard,
    save_checkpoint,
    selection_split,
    summary,
)  # fmt: skip
from namexp.train.progress import TrainingProgress
from namexp.train.setup import RunContext, Setup, set_up
from namexp.train.signals import Interrupted, StopFlag
from namexp.train.step import training_step

log = logging.getLogger("namexp")
__all__ = ["Diverged", "EpochSums", "RunContext", "set_up", "train", "train_epoch"]


class Diverged(UserError):
    exit_code = 3


class StoppedEarly(Exception):
    """The run's epoch hook ended it (namexp tune's pruner): the record keeps the hook's status, e.g. pruned."""

    def __init__(self, status: str, message: str):
        self.status = status
        super().__init__(message)


def train(cfg: RunConfig, ctx: RunContext) -> dict[str, Any]:
    d, t = ctx.dist, cfg.trainer
    checkpoint = resume_checkpoint(ctx.folder, ctx.resume_from) if ctx.resume else None  # before any write
    if d.enabled:
        dist.barrier()  # every rank has read the folder before rank 0 writes its record
    if ctx.resume and ctx.resume_from != "last" and d.is_main:
        _set_aside_last(ctx)
    if checkpoint is not None and _already_completed(cfg, ctx, checkpoint["state"]):
        return summary(read_record(ctx.run_dir))

    record: RunRecord | None = None
    s: Setup | None = None
    tb = None
    status, error = "failed", None
    try:
        if d.is_main:  # held before it is first written, so a failed write still ends with the record's last word
            record = open_record(cfg, ctx, checkpoint["state"]["epochs_done"] if checkpoint else None)
            record.write()
        s = set_up(cfg, ctx, checkpoint)
        if record is not None:
            describe_run(record, cfg, ctx, s)
            tb = open_tensorboard(cfg, ctx, s, resumed=checkpoint is not None)
            gates = GateLog(s.model, s.data.test, t.gate_images if t.log_gates else 0)
        steps, selection = len(s.data.train), f"{selection_split(cfg)}_top1_err"
        with StopFlag() as stop, TrainingProgress(t.progress, t.epochs, steps, enabled=d.is_main) as progress:
            for epoch in range(s.state.epochs_done, t.epochs):
                progress.start_epoch(epoch + 1, s.state.step)
                sums = train_epoch(
                    cfg,
                    ctx,
                    s,
                    epoch,
                    stop,
                    progress,
                    save_partial=lambda: record is not None and save_checkpoint(cfg, ctx, s),
                )
                entry = epoch_entry(cfg, s, epoch, sums, d)
                best = s.state.end_epoch(entry[selection])
                if record is not None:  # the record first: after a kill it may be ahead of the checkpoint, never behind
                    entry["gates"] = gates.measure(s.model)
                    record.add_epoch(entry)
                    record.set_state(s.state)
                    record.write()
                    save_checkpoint(cfg, ctx, s, best)
                    log_epoch(tb, entry, (epoch + 1) * steps, s.model)
                    progress.epoch_done(epoch_line(entry, t.epochs))
                if ctx.on_epoch is not None:
                    ctx.on_epoch(entry)
        if tb is not None:
            finish_logs(tb, record, s.model, t.epochs * steps)
        status = "completed"
    except Interrupted as exc:
        status, error = "interrupted", str(exc)
        raise
    except SystemExit as exc:  # submitit's own SIGUSR2 handler (a signal before the step loop): it requeues the job
        status, error = "interrupted", f"stopped by the cluster (exit {exc.code}): the job is requeued"
        raise
    except Diverged as exc:
        status, error = "diverged", str(exc)
        raise
    except StoppedEarly as exc:
        status, error = exc.status, str(exc)
        raise
    except WriteFailed as exc:  # a full disk: what was written stays, and the user is told how to go on
        failure = exc.next_step(_way_on(ctx))
        error = str(failure)
        raise failure from None
    except BaseException as exc:
        error = " ".join(f"{type(exc).__name__}: {exc}".split())[:500]
        raise
    finally:
        _close(record, s, tb, status, error)
    return summary(record.data if record else {"status": status})


def _set_aside_last(ctx: RunContext) -> None:
    """Resuming from previous.pt: the newer last.pt (damaged, or not wanted) moves aside, never deleted, so the
    next save does not rotate it into previous.pt."""
    moved = set_aside(ctx.folder.checkpoint("last"))
    if moved is not None:
        log.warning("resuming from %s: moved last.pt aside to %s", ctx.folder.checkpoint(ctx.resume_from), moved)


def _way_on(ctx: RunContext) -> str:
    """After a failed write: resume what was trained, or train again when nothing was (the folder goes)."""
    if ctx.resume or holds_progress(ctx.run_dir):
        return f"resume with: namexp train --resume {ctx.run_dir}"
    return "train again (nothing was trained yet)"


def _close(record: RunRecord | None, s: Setup | None, tb, status: str, error: str | None) -> None:
    """The record's last word (status, state) and the event file closed. When the run failed already, a record
    that cannot be written (the disk still full) is said in the log, and the run's own error is what is raised."""
    try:
        if record is not None:
            if s is not None:
                record.set_state(s.state)
            record.finish(status, error)
    except WriteFailed as exc:
        if status == "completed":
            raise exc.next_step(f"resume with: namexp train --resume {record.folder.path}") from None
        log.error("the record could not be marked %s: %s", status, exc)
    finally:
        if tb is not None:
            tb.close()


def _already_completed(cfg: RunConfig, ctx: RunContext, state: dict[str, Any]) -> bool:
    if state["epochs_done"] < cfg.trainer.epochs or state["step"]:
        return False
    if (read_record(ctx.run_dir) or {}).get("status") != "completed":
        return False
    log.info("%s already completed %d epochs; nothing to do (raise trainer.epochs to train further)",
             ctx.run_dir, state["epochs_done"])  # fmt: skip
    return True


def train_epoch(cfg: RunConfig, ctx: RunContext, s: Setup, epoch: int, stop: StopFlag, progress: TrainingProgress,
                save_partial: Callable[[], Any]) -> EpochSums:  # fmt: skip
    """Train one epoch from the state's position in it; a stop request saves a mid-epoch checkpoint and stops."""
    t, device, d = cfg.trainer, s.device, ctx.dist
    start_step, sums = s.state.step, s.state.sums or EpochSums.zeros(device)
    steps = len(s.data.train)
    s.train_net.train()
    started, seen_at_start = time.perf_counter(), sums.seen
    for step, (images, labels) in enumerate(s.data.train.epoch(epoch, start_step), start=start_step):
        LRSchedule.apply(s.optimizer, s.schedule.lr_at(epoch, step))
        logits, loss = training_step(s.train_net, images, labels, s.optimizer, s.scaler, t.precision, device, s.penalty)

        batch = labels.shape[0]
        sums.loss += loss.detach().double() * batch
        sums.correct += (logits.detach().argmax(1) == labels).sum()
        sums.seen += batch
        last = step + 1 == steps
        check_now = (step + 1) % t.log_interval == 0 or last
        if check_now:
            current = float(loss.detach())  # the only read-back in the loop
            if not math.isfinite(current):
                raise Diverged(
                    f"the loss became {current} at epoch {epoch + 1} step {step + 1}: the last good checkpoint is "
                    f"kept in {ctx.folder.checkpoints}; lower optim.lr or use trainer.precision=fp32"
                )
            img_s = (sums.seen - seen_at_start) * d.world_size / max(time.perf_counter() - started, 1e-9)
            progress.update(epoch + 1, step + 1, current, img_s)
        if stop_requested(stop, d, check_now) and not last:
            sums.seconds += time.perf_counter() - started
            s.state.pause(step + 1, sums)
            save_partial()
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


def epoch_entry(cfg: RunConfig, s: Setup, epoch: int, sums: EpochSums, d: runtime.Dist) -> dict[str, Any]:
    """The epoch's record entry: training sums (over every rank), then test (and val) evaluated."""
    totals = torch.stack(
        [sums.loss, sums.correct.double(), torch.tensor(float(sums.seen), device=s.device, dtype=torch.float64)]
    )
    if d.enabled:
        dist.all_reduce(totals)
    loss_sum, correct, seen = totals.tolist()
    precision = cfg.trainer.precision
    test = split_metrics(s.net, s.data.test, precision, s.device, d)
    val = split_metrics(s.net, s.data.val, precision, s.device, d) if s.data.val is not None else {}
    l1 = s.penalty.l1()
    return {
        "epoch": epoch + 1,
        "train_loss": loss_sum / max(seen, 1),
        "train_top1_err": 100 * (1 - correct / max(seen, 1)),
        "test_loss": test["loss"], "test_top1_err": test["top1_err"], "test_top5_err": test["top5_err"],
        "val_loss": val.get("loss"), "val_top1_err": val.get("top1_err"), "val_top5_err": val.get("top5_err"),
        "lr": s.schedule.lr_at(epoch, 0),
        "penalty": s.penalty.value(),
        "nam_l1": float(l1) if l1 is not None else None,
        "seconds": sums.seconds,
        "img_s": seen / sums.seconds if sums.seconds > 0 else None,
    }  # fmt: skip
