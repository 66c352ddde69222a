"""`namexp analyze RUN_DIR`: does NAM suppress less salient channels, and does its ranking say which?

NAM's abstract calls suppressing less salient weights "the key for model compression" without measuring it.
This command measures it on a trained run, from the run folder alone (the checkpoint carries its config):

1. per NAM layer, the distribution of the normalised weights w (and of the preceding backbone BN's |γ|) and
   the mean gate sigmoid(w ⊙ BN(F)) on the test images (`weights.py`);
2. the test error with a share of each layer's channels masked at every block-level attention site, ranked
   by NAM's w, by the preceding BN's |γ| (network slimming) and at random (`masking.py`);
3. the same after a short fine-tune with the masks in place, on a copy of the model;
4. tables, `analysis/analysis.json` (read by `namexp compare`), `analysis/nam_weights.json`, PNG plots and
   TensorBoard events in the run's `tb/` (`report.py`).

Re-running keeps the previous result: the files of an existing `analysis/` move to
`analysis/previous-<time>/` before the new ones are put in place. The run's checkpoints are only read.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Optional, Sequence

import typer

from namexp.errors import UserError
from namexp.files import check_output, output_format, write_text_atomic

DEFAULT_RATIOS = "0,0.1,0.2,0.3,0.5,0.7"
DEFAULT_THRESHOLDS = "0.1,0.5"
ANALYSIS_DIR = "analysis"
RECORD_NAME = "analysis.json"
FORMAT = 1


# --------------------------------------------------------------------------------------------- options


def parse_floats(text: str, option: str, example: str) -> list[float]:
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    if not items:
        raise UserError(f"{option} is empty: give a comma list of numbers (e.g. {option} {example})")
    out = []
    for item in items:
        try:
            value = float(item)
        except ValueError:
            raise UserError(f"{option} {text!r}: {item!r} is not a number (e.g. {option} {example})") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise UserError(f"{option} {text!r}: {item!r} is not a finite number (e.g. {option} {example})")
        out.append(value)
    return out


def parse_ratios(text: str, option: str = "--ratios", example: str = DEFAULT_RATIOS) -> list[float]:
    values = parse_floats(text, option, example)
    bad = [v for v in values if not 0.0 <= v < 1.0]
    if bad:
        raise UserError(f"{option}: ratio {bad[0]:g} is outside [0, 1): give the share of each layer's channels to mask, "
                        f"at least one channel stays (e.g. {option} {example})")
    return sorted(set(values))


def parse_thresholds(text: str) -> list[float]:
    values = parse_floats(text, "--thresholds", DEFAULT_THRESHOLDS)
    bad = [v for v in values if v <= 0]
    if bad:
        raise UserError(f"--thresholds: {bad[0]:g} is not positive: give fractions of the uniform weight 1/C (e.g. --thresholds 0.1,0.5)")
    return sorted(set(values))


def parse_rankings(text: Optional[str]) -> Optional[list[str]]:
    if text is None or text.strip().lower() in ("", "auto", "all"):
        return None
    return [t.strip().lower() for t in text.split(",") if t.strip()]


# ----------------------------------------------------------------------------------------------- model


def load_run(run_dir: Path, overrides: Sequence[str] = (), which: str = "last"):
    """(cfg, state, checkpoint path, device, model on device in eval mode) of a run folder's checkpoint."""
    import torch

    from namexp.evaluate import config_from_checkpoint, resolve_checkpoint
    from namexp.train import runtime
    from namexp.train.build import make_model
    from namexp.train.checkpoint import load_checkpoint, load_model_state

    run_dir = Path(run_dir).expanduser()
    if not run_dir.exists():
        raise UserError(f"run folder {run_dir} does not exist: give a run folder (holding record.json and checkpoints/)")
    if not run_dir.is_dir():
        raise UserError(f"{run_dir} is not a folder: give the run folder (analyze writes into its analysis/), not a file")
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise UserError(f"cannot read the overrides {' '.join(bad)}: give them as key=value (e.g. data.root=/data)")
    path = resolve_checkpoint(run_dir, which)
    state = load_checkpoint(path)
    cfg = config_from_checkpoint(state, list(overrides))
    device = runtime.device_for(cfg.trainer)
    # Classes and input size from the config (build_data checks that the data agrees with them).
    model = make_model(cfg, cfg.data.num_classes, cfg.data.image_size).to(device)
    load_model_state(model, state["model"], path, f"{cfg.backbone.name}+{cfg.attention.name}")
    if cfg.trainer.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.eval()
    return cfg, state, path, device, model


def load_data(cfg, device, with_train: bool):
    from namexp.data import build_data

    t = cfg.trainer
    return build_data(cfg.data, batch_size=t.batch_size, eval_batch_size=t.eval_batch_size, device=device, seed=cfg.seed,
                      channels_last=t.channels_last, num_workers=t.num_workers, limit_train_batches=t.limit_train_batches,
                      limit_eval_batches=t.limit_eval_batches, with_train=with_train)


# ------------------------------------------------------------------------------------------------ files


def _stamp() -> str:
    return datetime.now().strftime("%Y-%m-%d_%H-%M-%S")


def publish(run_dir: Path, files: dict[str, bytes]) -> tuple[Path, Optional[Path]]:
    """Put `files` into run_dir/analysis; what was there moves to analysis/previous-<time>/ first.

    The new files are written to a hidden staging folder beside it, so a failure leaves the old result intact.
    Returns (analysis folder, the previous-result folder or None).
    """
    analysis = run_dir / ANALYSIS_DIR
    staging = run_dir / f".{ANALYSIS_DIR}-staging-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:
        for name, data in files.items():
            (staging / name).write_bytes(data)
        previous = None
        if analysis.is_dir():
            current = [p for p in analysis.iterdir() if not p.name.startswith("previous-")]
            if current:
                previous = analysis / f"previous-{_stamp()}"
                n = 1
                while previous.exists():
                    n += 1
                    previous = analysis / f"previous-{_stamp()}-{n}"
                previous.mkdir()
                for item in current:
                    item.rename(previous / item.name)
        analysis.mkdir(exist_ok=True)
        for item in staging.iterdir():
            os.replace(item, analysis / item.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return analysis, previous


# ----------------------------------------------------------------------------------------------- command


def run_analyze(
    run_dir: Path | str,
    overrides: Sequence[str] = (),
    *,
    which: str = "last",
    ratios: str = DEFAULT_RATIOS,
    rankings: Optional[str] = None,
    random_seeds: int = 3,
    thresholds: str = DEFAULT_THRESHOLDS,
    finetune_epochs: int = 1,
    finetune_ratio: str = "0.3",
    finetune_lr: float = 0.01,
    device: Optional[str] = None,
    batch_size: Optional[int] = None,
    limit_batches: int = 0,
    format: Optional[str] = None,
    output: Path | str | None = None,
    force: bool = False,
    tensorboard: bool = True,
    console=None,
    err_console=None,
) -> dict:
    """Everything `namexp analyze` does; returns the analysis record. Raises UserError on bad input."""
    from rich.console import Console

    started = time.perf_counter()
    # --- options, checked before any work ---------------------------------------------------------------
    ratio_list = parse_ratios(ratios)
    if 0.0 not in ratio_list:
        ratio_list = [0.0] + ratio_list  # the unmasked reference point of every curve
    threshold_list = parse_thresholds(thresholds)
    requested = parse_rankings(rankings)
    if requested is not None:
        from namexp.analysis.masking import RANKINGS

        unknown = [r for r in requested if r not in RANKINGS]
        if unknown or not requested:
            raise UserError(f"unknown ranking {(unknown or [rankings])[0]!r}: use a comma list of {', '.join(RANKINGS)} "
                            "(e.g. --rankings nam,bn,random)")
    if random_seeds < 0:
        raise UserError(f"--random-seeds {random_seeds} is negative: give how many random rankings to average (e.g. 3), or 0 for none")
    if finetune_epochs < 0:
        raise UserError(f"--finetune-epochs {finetune_epochs} is negative: give 0 to skip fine-tuning, or e.g. 1")
    ft_ratios = parse_ratios(finetune_ratio, "--finetune-ratio", "0.3") if finetune_epochs else []
    ratio_list = sorted(set(ratio_list) | set(ft_ratios))  # a fine-tuned point always has its before-fine-tuning twin
    if finetune_epochs and not (finetune_lr > 0 and finetune_lr < float("inf")):
        raise UserError(f"--finetune-lr {finetune_lr:g} is not a positive number: e.g. --finetune-lr 0.01")
    if batch_size is not None and batch_size < 1:
        raise UserError(f"--batch-size {batch_size} is not positive: e.g. --batch-size 256")
    if limit_batches < 0:
        raise UserError(f"--limit-batches {limit_batches} is negative: give 0 for every batch")
    output = Path(output) if output is not None else None
    from namexp.analysis.report import FORMATS, SUFFIXES

    fmt = output_format(format, output, FORMATS, SUFFIXES)
    if output is not None:
        check_output(output, force, "analysis.md")
    if requested is not None and "random" in requested and random_seeds == 0:
        raise UserError("--rankings asks for random but --random-seeds is 0: give --random-seeds 1 or more")

    extra = list(overrides)
    if device is not None:
        extra.append(f"trainer.device={device}")
    if batch_size is not None:
        extra.append(f"trainer.eval_batch_size={batch_size}")
    if limit_batches:
        extra += [f"trainer.limit_eval_batches={limit_batches}", f"trainer.limit_train_batches={limit_batches}"]

    if console is None:
        console = Console()
        if not console.is_terminal and "COLUMNS" not in os.environ:
            console = Console(width=200)
    err_console = err_console or Console(stderr=True, highlight=False)

    # --- the run -----------------------------------------------------------------------------------------
    from namexp.analysis import report as rep
    from namexp.analysis import weights as wts
    from namexp.analysis.masking import (FinetuneRecipe, StudyPlan, available_rankings, block_sites, check_rankings,
                                         run_study)
    from namexp.train import runtime
    from namexp.train.loop import evaluate
    from namexp.train.penalty import SparsityPenalty

    run_dir = Path(run_dir).expanduser()
    cfg, state, path, dev, model = load_run(run_dir, extra, which)
    sites = block_sites(model)
    if not sites:
        raise UserError(f"{cfg.backbone.name} has no block-level attention sites to mask: analyze needs a residual backbone "
                        "(resnet18/34/50, resnet20/56, mobilenetv2)")
    if requested is None:
        requested = [r for r in available_rankings(sites) if r != "random" or random_seeds > 0]
    chosen = check_rankings(requested, sites, cfg.attention.name)
    if not chosen:
        raise UserError("no ranking to run: give --rankings (e.g. bn,random) or --random-seeds 1 or more")
    seeds = list(range(random_seeds)) if "random" in chosen else []
    do_finetune = bool(finetune_epochs and ft_ratios)
    data = load_data(cfg, dev, with_train=do_finetune)

    say = lambda text: err_console.print(text, markup=False, highlight=False)  # noqa: E731
    say(f"analyzing {path} ({cfg.backbone.name} + {cfg.attention.name}, epoch {state['epoch']}) on "
        f"{runtime.describe_device(dev)}: {len(sites)} sites, {sum(s.channels for s in sites)} channels, rankings {', '.join(chosen)}")

    # Unmasked evaluation, with the gate means read on the way (no masks, no change to the model).
    recorder = wts.GateRecorder(sites)
    with recorder.attached():
        unmasked = evaluate(model, data.test, cfg.trainer.precision, dev)
    gates = recorder.means()
    say(f"unmasked: top-1 err {unmasked['top1_err']:.2f}% on {int(unmasked['images'])} test images")
    layers = wts.layer_stats(sites, threshold_list, gates)

    plan = StudyPlan(ratios=ratio_list, rankings=chosen, random_seeds=seeds, finetune_ratios=ft_ratios,
                     finetune_epochs=finetune_epochs, finetune_lr=finetune_lr)
    recipe = FinetuneRecipe(epochs=finetune_epochs, lr=finetune_lr, optim=cfg.optim, precision=cfg.trainer.precision,
                            seed=cfg.seed) if do_finetune else None

    def progress(e: dict) -> None:
        seed = f" seed {e['seed']}" if e["seed"] is not None else ""
        tuned = " fine-tuned" if e["finetuned"] else ""
        say(f"{e['ranking']}{seed}{tuned} {e['ratio'] * 100:g}% ({e['masked_channels']}/{e['total_channels']} channels): "
            f"top-1 err {e['test_top1_err']:.2f}%")

    study = run_study(model, sites, data.test, cfg.trainer.precision, dev, plan, train_loader=data.train if do_finetune else None,
                      recipe=recipe, report=progress)

    # --- the record -----------------------------------------------------------------------------------
    record = {
        "format": FORMAT,
        "created": datetime.now().isoformat(timespec="seconds"),
        "run_dir": str(run_dir.resolve()),
        "checkpoint": str(path.resolve()),
        "checkpoint_which": which,
        "epoch": int(state["epoch"]),
        "backbone": cfg.backbone.name, "attention": cfg.attention.name, "data": cfg.data.name,
        "seed": cfg.seed, "sparsity": SparsityPenalty(model, cfg.sparsity, cfg.sparsity_mode).weight,  # effective, as the record
        "config": {
            "ratios": ratio_list, "rankings": chosen, "random_seeds": seeds,
            "thresholds": threshold_list,
            "threshold_convention": "a threshold t counts weights w < t/n, i.e. t is a fraction of the uniform weight 1/n "
                                    "(n = channels, or pixels for the spatial part)",
            "masked_count": "per layer floor(ratio * C) channels, lowest-ranked first, at every block-level site",
            "finetune_epochs": finetune_epochs if do_finetune else 0, "finetune_ratios": ft_ratios if do_finetune else [],
            "finetune_lr": finetune_lr, "finetune_optimizer": cfg.optim.name, "finetune_schedule": "cosine from lr to 0",
            "finetune_momentum": cfg.optim.momentum, "finetune_weight_decay": cfg.optim.weight_decay,
            "finetune_batch_size": cfg.trainer.batch_size, "finetune_random_seeds": seeds[:1] if do_finetune else [],
            "device": runtime.describe_device(dev), "precision": cfg.trainer.precision,
            "eval_batch_size": cfg.trainer.eval_batch_size, "limit_batches": limit_batches,
            "overrides": list(overrides), "tensorboard": tensorboard,
        },
        "run_config": asdict(cfg),
        "unmasked": {"test_top1_err": unmasked["top1_err"], "test_top5_err": unmasked["top5_err"],
                     "test_loss": unmasked["loss"], "images": int(unmasked["images"])},
        "sites": [s.to_record() for s in sites],
        "layers": layers,
        "masking": study.entries,
        "summary": rep.summary_rows(study.entries, unmasked["top1_err"]),
        "evaluations": study.evaluations + 1,
        "finetunes": study.finetunes,
    }

    # --- files ------------------------------------------------------------------------------------------
    nam_weights = wts.nam_weights_json(sites)
    plotted = {site: dict(parts) for site, parts in nam_weights["layers"].items()}
    for s in sites:
        if s.preceding_bn is not None:
            plotted.setdefault(s.site, {})["bn"] = wts.normalise(s.preceding_bn.weight).tolist()
    figures = {"masking": rep.masking_figure(record), "weights": rep.weights_figure(record, plotted)}
    record["files"] = [RECORD_NAME, "analysis.md", rep.MASKING_PNG, rep.WEIGHTS_PNG] + (["nam_weights.json"] if nam_weights["layers"] else [])
    record["seconds"] = time.perf_counter() - started
    files = {
        RECORD_NAME: rep.render_json(record).encode(),
        "analysis.md": rep.render_markdown(record).encode(),
        rep.MASKING_PNG: rep.png_bytes(figures["masking"]),
        rep.WEIGHTS_PNG: rep.png_bytes(figures["weights"]),
    }
    if nam_weights["layers"]:
        files["nam_weights.json"] = (rep.render_json(nam_weights)).encode()
    folder, previous = publish(run_dir, files)
    if tensorboard:
        rep.log_tensorboard(run_dir / "tb", record, figures)

    # --- show ---------------------------------------------------------------------------------------------
    status = err_console if fmt is not None and output is None else console
    if fmt is not None and output is None:
        sys.stdout.write(rep.render(record, fmt))
        sys.stdout.flush()
    else:
        rep.render_terminal(record, console)
    if fmt is not None and output is not None:
        write_text_atomic(output, rep.render(record, fmt))
        status.print(f"wrote {output} ({fmt})", markup=False, highlight=False)
    if previous is not None:
        status.print(f"kept the previous analysis in {previous}", markup=False, highlight=False)
    status.print(f"wrote {folder} ({', '.join(record['files'])})" + (f" and TensorBoard events in {run_dir / 'tb'}" if tensorboard else ""),
                 markup=False, highlight=False)
    return record


def analyze(
    ctx: typer.Context,
    run_dir: Path = typer.Argument(..., help="The run folder (holding checkpoints/ and record.json)."),
    checkpoint: str = typer.Option("last", "--checkpoint", "-c", help="Which checkpoint: last or best."),
    ratios: str = typer.Option(DEFAULT_RATIOS, "--ratios", help="Shares of each layer's channels to mask, comma list in [0, 1) (0 and the fine-tune ratios are always added)."),
    rankings: Optional[str] = typer.Option(None, "--rankings", help="Comma list of nam, bn, random (default: every one the run has)."),
    random_seeds: int = typer.Option(3, "--random-seeds", help="How many random rankings (seeds 0..N-1) to average."),
    thresholds: str = typer.Option(DEFAULT_THRESHOLDS, "--thresholds", help="Weight thresholds as fractions of the uniform weight 1/C (share of w < t/C)."),
    finetune_epochs: int = typer.Option(1, "--finetune-epochs", help="Fine-tune epochs with the masks in place (0: no fine-tuning)."),
    finetune_ratio: str = typer.Option("0.3", "--finetune-ratio", help="Masked ratio(s) to fine-tune at, comma list."),
    finetune_lr: float = typer.Option(0.01, "--finetune-lr", help="Fine-tune learning rate (run's optimizer, cosine to 0)."),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu, cuda or cuda:N (default: the run's trainer.device)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Evaluation batch size (default: the run's trainer.eval_batch_size)."),
    limit_batches: int = typer.Option(0, "--limit-batches", help="Use only this many batches per evaluation and fine-tune epoch (0: all)."),
    format: Optional[str] = typer.Option(None, "--format", "-f", help="markdown | csv | json (to stdout, or to --output)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the table to this file (format from --format or the suffix)."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing --output file."),
    tensorboard: bool = typer.Option(True, "--tensorboard/--no-tensorboard", help="Also log the results to the run's tb/ folder."),
) -> None:
    """Measure NAM's weights and gates, and the error with the lowest-ranked channels masked (nam vs bn vs random).

    Extra arguments are overrides of where and how it runs, as for eval (e.g. data.root=/data trainer.device=cpu).
    Results go to RUN_DIR/analysis/ (a previous analysis moves to analysis/previous-<time>/) and RUN_DIR/tb.
    """
    run_analyze(
        run_dir, list(ctx.args), which=checkpoint, ratios=ratios, rankings=rankings, random_seeds=random_seeds,
        thresholds=thresholds, finetune_epochs=finetune_epochs, finetune_ratio=finetune_ratio, finetune_lr=finetune_lr,
        device=device, batch_size=batch_size, limit_batches=limit_batches, format=format, output=output, force=force,
        tensorboard=tensorboard,
    )
