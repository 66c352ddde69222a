"""`namexp bench`: how fast namexp trains, against the limit and against the reference pipeline.

For one configuration (backbone, attention, batch size, device, precision, channels_last, compile -- all
from Hydra overrides, as for `namexp train`), in one process and on one model:

1. **limit**: forward + backward + optimizer step on a batch already on the device (normalised, in the
   right memory format), nothing else; on CUDA synchronised only at the timer boundaries.
2. **namexp**: namexp's own training step, i.e. whole calls of `namexp.train.loop.train_epoch` with
   `trainer.limit_train_batches` = steps: the on-device data pipeline (uint8 store, crop/flip, normalise),
   the loss with the sparsity penalty, the metric sums and the loss read-back at `trainer.log_interval`.
3. **reference**: what the official NAM script does: a torch DataLoader over per-image PIL transforms
   (RandomCrop(32, padding=4), RandomHorizontalFlip, ToTensor, Normalize) with `trainer.num_workers`
   workers, shuffled, pinned on CUDA; per step `.to(device)`, forward, loss, backward, step, `loss.item()`.
   A persistent iterator is used, so worker start-up is not timed.

Each is timed over `--steps` steps after `--warmup` steps (which also cover torch.compile's compilation),
`--repeats` times, interleaved (limit, namexp, reference, rotating the order), and the median is reported,
as timm's benchmark.py does. Then the eval latency of one eval batch (inference mode) and, for a list of
attention types, the training-step and inference overheads over `none` on the same backbone (pure model
cost, limit-style steps, interleaved across attention types per repeat).

Flags (anywhere among the overrides): --attentions LIST, --steps N, --warmup N, --repeats N,
--eval-steps N, --output FILE (.json or .md), --force, --skip-reference, --skip-overheads.
An attention in --attentions may carry options: `nam:impl=fused` or `se:reduction=8`.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import os
import platform
import shlex
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from rich.console import Console
from rich.table import Table

from namexp.config import launch
from namexp.config.validate import to_run_config
from namexp.errors import UserError
from namexp.files import check_output, write_text_atomic

DEFAULT_ATTENTIONS = "none,nam,nam_full,se,cbam,bam,tam,eca"
BASELINE = "none"
FORMAT = 1


# ------------------------------------------------------------------------------------------------ options
@dataclass
class BenchOptions:
    attentions: str = DEFAULT_ATTENTIONS
    steps: int = 20
    warmup: int = 5
    repeats: int = 5
    eval_steps: int = 10
    output: Optional[Path] = None
    force: bool = False
    skip_reference: bool = False
    skip_overheads: bool = False
    overrides: List[str] = field(default_factory=list)


_VALUE_FLAGS = {"attentions": str, "steps": int, "warmup": int, "repeats": int, "eval-steps": int, "output": str}
_SWITCHES = ("force", "skip-reference", "skip-overheads")
_MINIMUM = {"steps": 1, "warmup": 0, "repeats": 1, "eval-steps": 1}


def parse_args(args: List[str]) -> BenchOptions:
    """Split `--flags` (anywhere in the list) from Hydra overrides."""
    opts = BenchOptions()
    i = 0
    valid = ", ".join([f"--{n} VALUE" for n in _VALUE_FLAGS] + [f"--{n}" for n in _SWITCHES])
    while i < len(args):
        arg = args[i]
        i += 1
        if not arg.startswith("-"):
            opts.overrides.append(arg)
            continue
        if not arg.startswith("--"):
            raise UserError(f"unknown option {arg!r} for namexp bench (it measures one configuration, -m does not "
                            f"apply): valid options are {valid}")
        name, has_value, value = arg[2:].partition("=")
        if name in _SWITCHES:
            if has_value:
                raise UserError(f"--{name} takes no value: write --{name} alone")
            setattr(opts, name.replace("-", "_"), True)
            continue
        if name not in _VALUE_FLAGS:
            raise UserError(f"unknown option --{name} for namexp bench: valid options are {valid}")
        if not has_value:
            if i >= len(args):
                raise UserError(f"--{name} needs a value, e.g. --{name} {_example(name)}")
            value = args[i]
            i += 1
        kind = _VALUE_FLAGS[name]
        if kind is int:
            try:
                number = int(value)
            except ValueError:
                raise UserError(f"--{name}={value} is not an integer: use e.g. --{name} {_example(name)}") from None
            if number < _MINIMUM[name]:
                raise UserError(f"--{name}={number} is out of range: it must be >= {_MINIMUM[name]}")
            setattr(opts, name.replace("-", "_"), number)
        elif name == "output":
            opts.output = Path(value).expanduser()
        else:
            setattr(opts, name, value)
    return opts


def _example(name: str) -> str:
    return {"attentions": "none,nam,se", "output": "bench.json", "steps": "20", "warmup": "5", "repeats": "5",
            "eval-steps": "10"}[name]


@dataclass(frozen=True)
class AttentionChoice:
    label: str  # as given, e.g. "nam:impl=fused"
    name: str
    options: Tuple[Tuple[str, str], ...]  # (key, value as written)

    def overrides(self) -> List[str]:
        return [f"attention={self.name}"] + [f"++attention.options.{k}={v}" for k, v in self.options]


def parse_attentions(text: str) -> List[AttentionChoice]:
    from namexp.models.attention import attention_names

    valid = attention_names()
    choices: List[AttentionChoice] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, *opts = item.split(":")
        if name not in valid:
            raise UserError(f"--attentions: unknown attention {name!r}: choose from {', '.join(valid)} "
                            f"(options as name:key=value, e.g. nam:impl=fused)")
        pairs = []
        for opt in opts:
            key, eq, value = opt.partition("=")
            if not eq or not key:
                raise UserError(f"--attentions: {item!r} has the option {opt!r}: write options as name:key=value")
            pairs.append((key, value))
        choice = AttentionChoice(item, name, tuple(pairs))
        if choice.label in [c.label for c in choices]:
            raise UserError(f"--attentions lists {item!r} twice: list each attention once")
        choices.append(choice)
    if not any(c.label == BASELINE for c in choices):
        choices.insert(0, AttentionChoice(BASELINE, BASELINE, ()))  # the overheads are relative to it
    return choices


# ----------------------------------------------------------------------------------------------- configs
def _is_attention_override(override: str) -> bool:
    key = override.split("=", 1)[0].lstrip("+~")
    return key == "attention" or key.startswith("attention.")


def compose_run(overrides: List[str]):
    with launch.hydra_app("bench") as app:
        return to_run_config(launch.job_config(launch.compose(app, overrides)))


def check_bench_output(path: Optional[Path], force: bool) -> None:
    """The suffix picks the format (there is no --format); folders and existing files as every command."""
    if path is None:
        return
    if path.suffix.lower() not in (".json", ".md"):
        raise UserError(f"--output {path}: the file must end in .json or .md (it picks the format)")
    check_output(path, force, "bench.md")


# ------------------------------------------------------------------------------------------------ timing
def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device, fn: Callable[[], Any]) -> Tuple[float, Any]:
    """Wall seconds of `fn()`, synchronised on CUDA before each clock read."""
    _sync(device)
    start = time.perf_counter()
    result = fn()
    _sync(device)
    return time.perf_counter() - start, result


def train_step(net, optimizer, scaler, images, labels, precision: str, device) -> Any:
    """One limit-style step: forward, loss, backward, optimizer step -- no metrics, no read-back."""
    from namexp.train.step import training_step

    return training_step(net, images, labels, optimizer, scaler, precision, device)[1]


def infer(net, images, precision: str, device) -> Any:
    import torch

    from namexp.train import runtime

    with torch.inference_mode(), runtime.autocast(precision, device):
        return net(images)


def synthetic_batch(batch_size: int, image_size: int, num_classes: int, device, channels_last: bool):
    """A normalised-looking batch already on the device, in the model's memory format."""
    import torch

    g = torch.Generator().manual_seed(0)
    images = torch.randn(batch_size, 3, image_size, image_size, generator=g).to(device)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, num_classes, (batch_size,), generator=g).to(device)
    return images, labels


def _median(values: List[float]) -> float:
    return float(statistics.median(values))


def _rotate(items: list, r: int) -> list:
    k = r % len(items) if items else 0
    return items[k:] + items[:k]


# --------------------------------------------------------------------------------------------- the bench
def run_bench(overrides: List[str]) -> int:
    opts = parse_args(list(overrides))
    check_bench_output(opts.output, opts.force)
    if launch.sweep_values(opts.overrides):
        raise UserError("namexp bench measures one configuration: drop the comma list or range "
                        "(compare attention types with --attentions none,nam,se)")
    choices = [] if opts.skip_overheads else parse_attentions(opts.attentions)
    run = compose_run(opts.overrides)
    # Each attention of the overhead list: the same overrides, with its own attention group and options.
    base = [o for o in opts.overrides if not _is_attention_override(o)]
    attention_runs = [(c, compose_run(base + c.overrides())) for c in choices]

    console, status = Console(), Console(stderr=True)
    with tempfile.TemporaryDirectory(prefix="namexp-bench-") as tmp:
        result = _measure(run, attention_runs, opts, Path(tmp), status)
    result["command"] = shlex.join(["namexp", "bench", *overrides])
    result["argv"] = ["namexp", "bench", *overrides]
    print_report(console, result)
    if opts.output is not None:
        write_output(opts.output, result)
        console.print(f"wrote {opts.output}")
    return 0


def _measure(run, attention_runs, opts: BenchOptions, tmp: Path, status: Console) -> Dict[str, Any]:
    import torch

    from namexp.profile import count_params
    from namexp.train import runtime
    from namexp.train.build import make_model, make_optimizer
    from namexp.train.loop import EpochSums, RunContext, set_up, train_epoch
    from namexp.train.progress import TrainingProgress
    from namexp.train.signals import StopFlag

    t = run.trainer
    notes: List[str] = []
    steps, warmup, repeats = opts.steps, opts.warmup, opts.repeats
    if t.limit_train_batches and t.limit_train_batches != steps:
        notes.append(f"trainer.limit_train_batches={t.limit_train_batches} replaced by --steps {steps}")
    t.limit_train_batches = steps
    if run.data.name == "synthetic" and run.data.synthetic_train_size < steps * t.batch_size:
        notes.append(f"data.synthetic_train_size raised from {run.data.synthetic_train_size} to {steps * t.batch_size} "
                     "so that one train_epoch call runs --steps steps")
        run.data.synthetic_train_size = steps * t.batch_size
    if run.data.name == "imagefolder" and not opts.skip_reference:
        raise UserError("the reference pipeline needs an in-memory dataset (cifar10, cifar100, synthetic); "
                        "with data=imagefolder namexp itself uses the host DataLoader: add --skip-reference")

    ctx = RunContext(run_dir=tmp / "run")
    # Every model of the bench is compiled through the same forward code: allow more graphs than the default 8.
    compile_limit = contextlib.nullcontext()
    if t.compile:
        key = "recompile_limit" if hasattr(torch._dynamo.config, "recompile_limit") else "cache_size_limit"
        compile_limit = torch._dynamo.config.patch(**{key: max(64, getattr(torch._dynamo.config, key))})
    with compile_limit:
        status.print(f"[dim]setting up {run.backbone.name} + {run.attention.name} on {run.data.name}...[/dim]")
        s = set_up(run, ctx, None)
        device = s.device
        data_steps = len(s.data.train)
        if data_steps < steps:
            notes.append(f"the training set holds only {data_steps} batches: namexp timed {data_steps} steps per call")
        images, labels = synthetic_batch(t.batch_size, s.data.image_size, s.data.num_classes, device, t.channels_last)
        eval_images, _ = synthetic_batch(t.eval_batch_size, s.data.image_size, s.data.num_classes, device, t.channels_last)

        # ---- 1. limit
        def limit_run(n: int) -> int:
            s.train_net.train()
            for _ in range(n):
                train_step(s.train_net, s.optimizer, s.scaler, images, labels, t.precision, device)
            return n * t.batch_size

        # ---- 2. namexp
        progress = TrainingProgress("none", 1, data_steps, enabled=False)
        stop = StopFlag()  # not entered: Ctrl-C stops the bench at once
        epoch_counter = iter(range(10**9))

        def namexp_run(_: int) -> int:
            sums = EpochSums.zeros(device)
            train_epoch(run, ctx, s, next(epoch_counter), stop, progress, save_partial=lambda *a: None)
            return sums.seen

        # ---- 3. reference
        reference_iter = None
        if not opts.skip_reference:
            status.print("[dim]starting the reference DataLoader...[/dim]")
            reference_iter = reference_batches(run, t.batch_size, device, total_steps=warmup + 1 + steps * repeats)

        def reference_run(n: int) -> int:
            import torch.nn.functional as F

            s.train_net.train()
            for _ in range(n):
                x, y = next(reference_iter)
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                if t.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                with runtime.autocast(t.precision, device):
                    loss = F.cross_entropy(s.train_net(x), y)
                s.optimizer.zero_grad(set_to_none=True)
                if s.scaler is not None:
                    s.scaler.scale(loss).backward()
                    s.scaler.step(s.optimizer)
                    s.scaler.update()
                else:
                    loss.backward()
                    s.optimizer.step()
                loss.item()  # the official script reads the loss every step
            return n * t.batch_size

        pipelines: List[Tuple[str, Callable[[int], int]]] = [("limit", limit_run), ("namexp", namexp_run)]
        if reference_iter is not None:
            pipelines.append(("reference", reference_run))

        status.print(f"[dim]warm-up ({warmup} steps each{', compiling' if t.compile else ''})...[/dim]")
        limit_run(max(1, warmup))
        for _ in range(max(1, math.ceil(warmup / max(1, data_steps)))):
            namexp_run(0)
        if reference_iter is not None:
            reference_run(1 + warmup)  # the first batch waits for the workers to start
        throughput: Dict[str, List[float]] = {name: [] for name, _ in pipelines}
        for r in range(repeats):
            status.print(f"[dim]throughput repeat {r + 1}/{repeats}...[/dim]")
            for name, fn in _rotate(pipelines, r):
                seconds, seen = timed(device, lambda fn=fn: fn(steps))
                throughput[name].append(seen / seconds)

        # ---- eval latency (one eval batch, inference mode)
        s.net.eval()
        for _ in range(max(1, warmup)):
            infer(s.net, eval_images, t.precision, device)
        latency = []
        for _ in range(repeats):
            seconds, _ = timed(device, lambda: [infer(s.net, eval_images, t.precision, device)
                                                for _ in range(opts.eval_steps)])
            latency.append(seconds / opts.eval_steps * 1000)
        s.net.train()
        main_params = count_params(s.model)
        reference_iter = None  # lets the DataLoader's workers go

        # ---- attention overheads (pure model cost, interleaved across attention types)
        overheads = None
        if attention_runs:
            overheads = _overheads(attention_runs, s.data.num_classes, s.data.image_size, images, labels, device, t,
                                   opts, status, make_model, make_optimizer, count_params)

    result: Dict[str, Any] = {
        "format": FORMAT,
        "created": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "settings": {"steps": steps, "warmup": warmup, "repeats": repeats, "eval_steps": opts.eval_steps,
                     "attentions": [c.label for c, _ in attention_runs], "skip_reference": opts.skip_reference},
        "config": {
            "backbone": run.backbone.name, "attention": run.attention.name,
            "attention_options": dict(run.attention.options), "data": run.data.name,
            "batch_size": t.batch_size, "eval_batch_size": t.eval_batch_size, "device": str(device),
            "precision": t.precision, "channels_last": t.channels_last, "compile": t.compile,
            "num_workers": t.num_workers, "log_interval": t.log_interval, "sparsity": s.penalty.weight,
            "sparsity_mode": run.sparsity_mode, "optimizer": run.optim.name, "params": main_params,
        },
        "machine": machine_description(device),
        "throughput": {name: _throughput_entry(values, min(steps, data_steps) if name == "namexp" else steps, t.batch_size)
                       for name, values in throughput.items()},
        "eval_latency": {"batch_size": t.eval_batch_size, "median_ms": _median(latency), "samples_ms": latency},
        "overheads": overheads,
        "notes": notes,
    }
    result["throughput"].setdefault("reference", None)
    tp = result["throughput"]
    result["ratios"] = {
        "namexp_vs_limit": tp["namexp"]["img_s"] / tp["limit"]["img_s"],
        "namexp_vs_reference": tp["namexp"]["img_s"] / tp["reference"]["img_s"] if tp["reference"] else None,
    }
    return result


def _throughput_entry(values: List[float], steps: int, batch_size: int) -> Dict[str, Any]:
    img_s = _median(values)
    return {"img_s": img_s, "ms_per_step": batch_size / img_s * 1000, "samples_img_s": values, "steps": steps,
            "batch_size": batch_size}


def reference_batches(run, batch_size: int, device, total_steps: int):
    """The official script's input pipeline, as a persistent iterator over `total_steps` full batches."""
    import torch

    from namexp.data import load_splits, reference_transforms
    from namexp.data.loader import TensorImageDataset

    d = run.data
    splits = load_splits(d, run.seed)
    images, labels = splits.train_images, splits.train_labels
    if d.train_subset:
        images, labels = images[: d.train_subset], labels[: d.train_subset]
    crop, flip = d.augment == "crop_flip", d.augment in ("crop_flip", "flip")
    train_tf, _ = reference_transforms(d, crop, flip)
    dataset = TensorImageDataset(images, labels, train_tf)
    # shuffle=True, drawn for as many batches as the bench takes (whole permutations, one after another).
    sampler = torch.utils.data.RandomSampler(dataset, num_samples=total_steps * batch_size,
                                             generator=torch.Generator().manual_seed(run.seed))
    workers = run.trainer.num_workers
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                                         pin_memory=device.type == "cuda", drop_last=True,
                                         persistent_workers=workers > 0)
    return iter(loader)


def _overheads(attention_runs, num_classes, image_size, images, labels, device, t, opts, status,
               make_model, make_optimizer, count_params) -> Dict[str, Any]:
    import torch

    from namexp.train import runtime

    models = []
    for choice, cfg in attention_runs:
        status.print(f"[dim]building {cfg.backbone.name} + {choice.label}...[/dim]")
        runtime.seed_everything(cfg.seed)
        model = make_model(cfg, num_classes, image_size).to(device)
        if t.channels_last:
            model = model.to(memory_format=torch.channels_last)
        net = torch.compile(model) if t.compile else model
        models.append({"choice": choice, "cfg": cfg, "model": model, "net": net,
                       "optimizer": make_optimizer(model, cfg.optim), "scaler": runtime.grad_scaler(t.precision, device),
                       "params": count_params(model), "train": [], "infer": []})

    def train_n(m, n):
        m["net"].train()
        for _ in range(n):
            train_step(m["net"], m["optimizer"], m["scaler"], images, labels, t.precision, device)

    def infer_n(m, n):
        m["net"].eval()
        for _ in range(n):
            infer(m["net"], images, t.precision, device)
        m["net"].train()

    status.print(f"[dim]overheads: warm-up of {len(models)} models...[/dim]")
    for m in models:
        train_n(m, max(1, opts.warmup))
        infer_n(m, max(1, opts.warmup))
    for r in range(opts.repeats):
        status.print(f"[dim]overheads repeat {r + 1}/{opts.repeats}...[/dim]")
        for m in _rotate(models, r):
            seconds, _ = timed(device, lambda m=m: train_n(m, opts.steps))
            m["train"].append(seconds / opts.steps * 1000)
            seconds, _ = timed(device, lambda m=m: infer_n(m, opts.eval_steps))
            m["infer"].append(seconds / opts.eval_steps * 1000)

    base = next(m for m in models if m["choice"].label == BASELINE)
    rows = []
    for m in models:
        # Per-repeat ratios to the baseline measured in the same repeat, then the median: drift cancels.
        train_ratio = [a / b for a, b in zip(m["train"], base["train"])]
        infer_ratio = [a / b for a, b in zip(m["infer"], base["infer"])]
        rows.append({
            "attention": m["choice"].label, "name": m["choice"].name,
            "options": dict(m["cfg"].attention.options), "params": m["params"],
            "extra_params": m["params"] - base["params"],
            "train_step_ms": _median(m["train"]), "train_overhead_pct": 100 * (_median(train_ratio) - 1),
            "infer_ms": _median(m["infer"]), "infer_overhead_pct": 100 * (_median(infer_ratio) - 1),
            "train_samples_ms": m["train"], "infer_samples_ms": m["infer"],
        })
    return {"baseline": BASELINE, "backbone": attention_runs[0][1].backbone.name, "batch_size": t.batch_size,
            "train_steps": opts.steps, "infer_steps": opts.eval_steps, "rows": rows}


# ---------------------------------------------------------------------------------------------- machine
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine_description(device) -> Dict[str, Any]:
    import torch

    from namexp.profile import environment
    from namexp.train import runtime

    env = environment(runtime.describe_device(device))
    info: Dict[str, Any] = {
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


# ----------------------------------------------------------------------------------------------- report
def _fmt(value: Optional[float], spec: str = ",.1f", suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def _pct(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:+.1f}%"


PIPELINES = (
    ("limit", "forward + backward + optimizer step on a batch already on the device"),
    ("namexp", "namexp's train_epoch: on-device data and augmentation, penalty, metric sums, read-backs"),
    ("reference", "DataLoader + per-image PIL transforms, .to(device), loss.item() every step (official script)"),
)


def _rows(result: Dict[str, Any]):
    """The report's tables as (title, columns, rows, caption), shared by the terminal and Markdown output."""
    c, tp, ratios = result["config"], result["throughput"], result["ratios"]
    limit = tp["limit"]["img_s"]
    throughput_rows = []
    for name, _ in PIPELINES:
        entry = tp.get(name)
        if entry is None:
            throughput_rows.append([name, "skipped", "-", "-"])
            continue
        throughput_rows.append([name, _fmt(entry["img_s"]), _fmt(entry["ms_per_step"], ",.2f"), f"{entry['img_s'] / limit:.3f}"])
    latency = result["eval_latency"]
    tables = [(
        f"training throughput: {c['backbone']} + {c['attention']}, batch {c['batch_size']}, {c['device']}, "
        f"{c['precision']}, channels_last={c['channels_last']}, compile={c['compile']}",
        ["pipeline", "img/s (median)", "ms/step", "vs limit"], throughput_rows,
        "; ".join(f"{name}: {what}" for name, what in PIPELINES),
    ), (
        "ratios and eval latency",
        ["figure", "value"],
        [["namexp / limit", f"{ratios['namexp_vs_limit']:.3f}"],
         ["namexp / reference", "-" if ratios["namexp_vs_reference"] is None else f"{ratios['namexp_vs_reference']:.2f}x"],
         [f"eval latency, batch of {latency['batch_size']}", f"{latency['median_ms']:,.2f} ms"]],
        "eval latency: median of inference-mode forwards of one eval batch",
    )]
    o = result.get("overheads")
    if o:
        tables.append((
            f"attention overheads over none on {o['backbone']}, batch {o['batch_size']}",
            ["attention", "extra params", "train ms/step", "train overhead", "infer ms/batch", "infer overhead"],
            [[r["attention"], f"{r['extra_params']:,}", _fmt(r["train_step_ms"], ",.2f"), _pct(r["train_overhead_pct"]),
              _fmt(r["infer_ms"], ",.2f"), _pct(r["infer_overhead_pct"])] for r in o["rows"]],
            "pure model cost (limit-style steps; inference-mode forwards of the same batch); overhead = median over "
            "repeats of (time / none's time in the same repeat) - 1",
        ))
    return tables


def _machine_line(result: Dict[str, Any]) -> str:
    m, c = result["machine"], result["config"]
    load = f", load {m['load_average_1m']}" if "load_average_1m" in m else ""
    return (f"device {m['device']}; CPU {m['cpu']} x{m['cpu_count']}, {m['torch_threads']} torch "
            f"threads{load}; torch {m['torch']}; {c['precision']}, channels_last={c['channels_last']}, "
            f"compile={c['compile']}")


def print_report(console: Console, result: Dict[str, Any]) -> None:
    for title, columns, rows, caption in _rows(result):
        table = Table(title=title, caption=caption)
        for i, col in enumerate(columns):
            table.add_column(col, justify="left" if i == 0 else "right", no_wrap=i == 0)
        for row in rows:
            table.add_row(*row)
        console.print(table)
    console.print(f"[dim]{_machine_line(result)}[/dim]")
    s = result["settings"]
    console.print(f"[dim]{s['steps']} steps x {s['repeats']} repeats after {s['warmup']} warm-up steps; "
                  f"command: {result['command']}[/dim]")
    for note in result["notes"]:
        console.print(f"[yellow]note:[/yellow] {note}")


def render_markdown(result: Dict[str, Any]) -> str:
    lines = ["# namexp bench", "", f"`{result['command']}`", "", f"{result['created']}: {_machine_line(result)}", ""]
    s = result["settings"]
    lines += [f"{s['steps']} timed steps x {s['repeats']} repeats (medians) after {s['warmup']} warm-up steps.", ""]
    for title, columns, rows, caption in _rows(result):
        lines += [f"## {title}", "", "| " + " | ".join(columns) + " |", "|" + "|".join(" --- " for _ in columns) + "|"]
        lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
        lines += ["", caption, ""]
    if result["notes"]:
        lines += ["## notes", ""] + [f"- {n}" for n in result["notes"]] + [""]
    lines += ["## machine", "", "```json", json.dumps(result["machine"], indent=2), "```", ""]
    return "\n".join(lines)


def write_output(path: Path, result: Dict[str, Any]) -> None:
    text = render_markdown(result) if path.suffix.lower() == ".md" else json.dumps(result, indent=2) + "\n"
    write_text_atomic(path, text)
