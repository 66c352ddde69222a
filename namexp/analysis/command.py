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
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import typer

from namexp.errors import UserError
from namexp.files import WriteFailed, check_output, output_format, write_text_atomic
from namexp.run.layout import ANALYSIS_DIR, ANALYSIS_RECORD_FILE, NAM_WEIGHTS_FILE, RunFolder

DEFAULT_RATIOS = "0,0.1,0.2,0.3,0.5,0.7"
DEFAULT_THRESHOLDS = "0.1,0.5"
MARKDOWN_FILE = "analysis.md"  # in ANALYSIS_DIR, beside ANALYSIS_RECORD_FILE
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
        raise UserError(
            f"{option}: ratio {bad[0]:g} is outside [0, 1): give the share of each layer's channels to "
            f"mask, at least one channel stays (e.g. {option} {example})"
        )
    return sorted(set(values))


def parse_thresholds(text: str) -> list[float]:
    values = parse_floats(text, "--thresholds", DEFAULT_THRESHOLDS)
    bad = [v for v in values if v <= 0]
    if bad:
        raise UserError(
            f"--thresholds: {bad[0]:g} is not positive: give fractions of the uniform weight 1/C "
            "(e.g. --thresholds 0.1,0.5)"
        )
    return sorted(set(values))


def parse_rankings(text: str | None) -> list[str] | None:
    if text is None or text.strip().lower() in ("", "auto", "all"):
        return None
    return [t.strip().lower() for t in text.split(",") if t.strip()]


# ----------------------------------------------------------------------------------------------- model


def load_run(run_dir: Path, overrides: Sequence[str] = (), which: str = "last"):
    """(cfg, checkpoint payload, checkpoint path, device, model on device in eval mode) of a run folder."""
    from namexp.run.load import load_run as load_checkpointed_run

    run_dir = Path(run_dir).expanduser()
    if not run_dir.exists():
        raise UserError(
            f"run folder {run_dir} does not exist: give a run folder (holding record.json and checkpoints/)"
        )
    if not run_dir.is_dir():
        raise UserError(
            f"{run_dir} is not a folder: give the run folder (analyze writes into its analysis/), not a file"
        )
    run = load_checkpointed_run(run_dir, list(overrides), which)
    return run.cfg, run.payload, run.checkpoint, run.device, run.model


def load_data(cfg, device, with_train: bool):
    from namexp.train.build import make_data

    return make_data(cfg, device, with_train=with_train)


# ------------------------------------------------------------------------------------------------ plan


@dataclass(frozen=True)
class AnalyzeOptions:
    """The options of `namexp analyze` as given (comma lists as text); `plan_analysis` checks them."""

    which: str = "last"
    ratios: str = DEFAULT_RATIOS
    rankings: str | None = None
    random_seeds: int = 3
    thresholds: str = DEFAULT_THRESHOLDS
    finetune_epochs: int = 1
    finetune_ratio: str = "0.3"
    finetune_lr: float = 0.01
    device: str | None = None
    batch_size: int | None = None
    limit_batches: int = 0
    format: str | None = None
    output: Path | str | None = None
    force: bool = False
    tensorboard: bool = True


@dataclass(frozen=True)
class AnalysisPlan:
    """What one analysis runs and where its results go, checked before any work."""

    run_dir: Path
    overrides: list[str]  # as given (recorded); `load_overrides` adds the options that are overrides
    load_overrides: list[str]
    which: str
    ratios: list[float]  # with 0 and the fine-tune ratios
    thresholds: list[float]
    rankings: list[str] | None  # None: every ranking the run has
    random_seeds: int
    finetune_epochs: int
    finetune_ratios: list[float]  # [] without fine-tuning
    finetune_lr: float
    limit_batches: int
    format: str | None
    output: Path | None
    tensorboard: bool

    @property
    def finetunes(self) -> bool:
        return bool(self.finetune_epochs and self.finetune_ratios)


def _check_counts(o: AnalyzeOptions) -> None:
    if o.random_seeds < 0:
        raise UserError(
            f"--random-seeds {o.random_seeds} is negative: give how many random rankings to average "
            "(e.g. 3), or 0 for none"
        )
    if o.finetune_epochs < 0:
        raise UserError(f"--finetune-epochs {o.finetune_epochs} is negative: give 0 to skip fine-tuning, or e.g. 1")


def _check_run_options(o: AnalyzeOptions) -> None:
    if o.finetune_epochs and not (o.finetune_lr > 0 and o.finetune_lr < float("inf")):
        raise UserError(f"--finetune-lr {o.finetune_lr:g} is not a positive number: e.g. --finetune-lr 0.01")
    if o.batch_size is not None and o.batch_size < 1:
        raise UserError(f"--batch-size {o.batch_size} is not positive: e.g. --batch-size 256")
    if o.limit_batches < 0:
        raise UserError(f"--limit-batches {o.limit_batches} is negative: give 0 for every batch")


def _requested_rankings(o: AnalyzeOptions) -> list[str] | None:
    requested = parse_rankings(o.rankings)
    if requested is not None:
        from namexp.analysis.masking import RANKINGS

        unknown = [r for r in requested if r not in RANKINGS]
        if unknown or not requested:
            raise UserError(
                f"unknown ranking {(unknown or [o.rankings])[0]!r}: use a comma list of "
                f"{', '.join(RANKINGS)} (e.g. --rankings nam,bn,random)"
            )
    return requested


def _load_overrides(overrides: Sequence[str], o: AnalyzeOptions) -> list[str]:
    """The overrides, plus the options that are overrides of where and how the run's model is evaluated."""
    extra = list(overrides)
    if o.device is not None:
        extra.append(f"trainer.device={o.device}")
    if o.batch_size is not None:
        extra.append(f"trainer.eval_batch_size={o.batch_size}")
    if o.limit_batches:
        extra += [f"trainer.limit_eval_batches={o.limit_batches}", f"trainer.limit_train_batches={o.limit_batches}"]
    return extra


def plan_analysis(run_dir: Path | str, overrides: Sequence[str], o: AnalyzeOptions) -> AnalysisPlan:
    """The plan from the CLI options; UserError for a bad one (the checks run in the order of the options)."""
    from namexp.analysis.report import FORMATS, SUFFIXES

    ratios = parse_ratios(o.ratios)
    if 0.0 not in ratios:
        ratios = [0.0] + ratios  # the unmasked reference point of every curve
    thresholds = parse_thresholds(o.thresholds)
    requested = _requested_rankings(o)
    _check_counts(o)
    ft_ratios = parse_ratios(o.finetune_ratio, "--finetune-ratio", "0.3") if o.finetune_epochs else []
    ratios = sorted(set(ratios) | set(ft_ratios))  # a fine-tuned point always has its before-fine-tuning twin
    _check_run_options(o)
    output = Path(o.output) if o.output is not None else None
    fmt = output_format(o.format, output, FORMATS, SUFFIXES)
    if output is not None:
        check_output(output, o.force, MARKDOWN_FILE)
    if requested is not None and "random" in requested and o.random_seeds == 0:
        raise UserError("--rankings asks for random but --random-seeds is 0: give --random-seeds 1 or more")
    return AnalysisPlan(
        run_dir=Path(run_dir).expanduser(),
        overrides=list(overrides),
        load_overrides=_load_overrides(overrides, o),
        which=o.which,
        ratios=ratios,
        thresholds=thresholds,
        rankings=requested,
        random_seeds=o.random_seeds,
        finetune_epochs=o.finetune_epochs,
        finetune_ratios=ft_ratios,
        finetune_lr=o.finetune_lr,
        limit_batches=o.limit_batches,
        format=fmt,
        output=output,
        tensorboard=o.tensorboard,
    )


# ------------------------------------------------------------------------------------------------- run


@dataclass
class Measured:
    """What the study measured on the run's checkpoint (the record and the files are made from it)."""

    cfg: Any
    state: dict
    checkpoint: Path
    device: Any
    model: Any
    sites: list  # BlockSites
    rankings: list[str]
    seeds: list[int]
    unmasked: dict  # metrics of the evaluation without masks
    layers: list[dict]
    study: Any  # masking.StudyResult


def _choose_rankings(plan: AnalysisPlan, sites: Sequence, attention: str) -> list[str]:
    from namexp.analysis.masking import available_rankings, check_rankings

    requested = plan.rankings
    if requested is None:
        requested = [r for r in available_rankings(sites) if r != "random" or plan.random_seeds > 0]
    chosen = check_rankings(requested, sites, attention)
    if not chosen:
        raise UserError("no ranking to run: give --rankings (e.g. bn,random) or --random-seeds 1 or more")
    return chosen


def _measure_unmasked(m: Measured, test_loader, thresholds: list[float]) -> None:
    """Unmasked evaluation, with the gate means read on the way (no masks, no change to the model)."""
    from namexp.analysis import weights as wts
    from namexp.evaluation.metrics import split_metrics

    recorder = wts.GateRecorder(m.sites)
    with recorder.attached():
        m.unmasked = split_metrics(m.model, test_loader, m.cfg.trainer.precision, m.device)
    m.layers = wts.layer_stats(m.sites, thresholds, recorder.means())


def _progress(say: Callable[[str], None]) -> Callable[[dict], None]:
    def report(e: dict) -> None:
        seed = f" seed {e['seed']}" if e["seed"] is not None else ""
        tuned = " fine-tuned" if e["finetuned"] else ""
        say(
            f"{e['ranking']}{seed}{tuned} {e['ratio'] * 100:g}% ({e['masked_channels']}/{e['total_channels']} "
            f"channels): top-1 err {e['test_top1_err']:.2f}%"
        )

    return report


def run_analysis(plan: AnalysisPlan, say: Callable[[str], None]) -> Measured:
    """Load the run, evaluate it unmasked (reading the gates), then run the masking study (and fine-tunes)."""
    from namexp.analysis.masking import FinetuneRecipe, StudyPlan, block_sites, run_study
    from namexp.train import runtime

    cfg, state, path, dev, model = load_run(plan.run_dir, plan.load_overrides, plan.which)
    sites = block_sites(model)
    if not sites:
        raise UserError(
            f"{cfg.backbone.name} has no block-level attention sites to mask: analyze needs a residual "
            "backbone (resnet18/34/50, resnet20/56, mobilenetv2)"
        )
    chosen = _choose_rankings(plan, sites, cfg.attention.name)
    seeds = list(range(plan.random_seeds)) if "random" in chosen else []
    data = load_data(cfg, dev, with_train=plan.finetunes)
    say(
        f"analyzing {path} ({cfg.backbone.name} + {cfg.attention.name}, epoch {state['state']['epochs_done']}) on "
        f"{runtime.describe_device(dev)}: {len(sites)} sites, {sum(s.channels for s in sites)} channels, "
        f"rankings {', '.join(chosen)}"
    )
    m = Measured(cfg, state, path, dev, model, sites, chosen, seeds, unmasked={}, layers=[], study=None)
    _measure_unmasked(m, data.test, plan.thresholds)
    say(f"unmasked: top-1 err {m.unmasked['top1_err']:.2f}% on {int(m.unmasked['images'])} test images")

    study = StudyPlan(
        ratios=plan.ratios,
        rankings=chosen,
        random_seeds=seeds,
        finetune_ratios=plan.finetune_ratios,
        finetune_epochs=plan.finetune_epochs,
        finetune_lr=plan.finetune_lr,
    )
    recipe = (
        FinetuneRecipe(
            epochs=plan.finetune_epochs,
            lr=plan.finetune_lr,
            optim=cfg.optim,
            precision=cfg.trainer.precision,
            seed=cfg.seed,
        )
        if plan.finetunes
        else None
    )
    m.study = run_study(
        model,
        sites,
        data.test,
        cfg.trainer.precision,
        dev,
        study,
        train_loader=data.train if plan.finetunes else None,
        recipe=recipe,
        report=_progress(say),
    )
    return m


# ---------------------------------------------------------------------------------------------- record


def _record_config(plan: AnalysisPlan, m: Measured) -> dict:
    """The record's `config`: how the study ran."""
    from namexp.train import runtime

    cfg, tuned = m.cfg, plan.finetunes
    return {
        "ratios": plan.ratios,
        "rankings": m.rankings,
        "random_seeds": m.seeds,
        "thresholds": plan.thresholds,
        "threshold_convention": "a threshold t counts weights w < t/n, i.e. t is a fraction of the uniform weight 1/n "
        "(n = channels, or pixels for the spatial part)",
        "masked_count": "per layer floor(ratio * C) channels, lowest-ranked first, at every block-level site",
        "finetune_epochs": plan.finetune_epochs if tuned else 0,
        "finetune_ratios": plan.finetune_ratios if tuned else [],
        "finetune_lr": plan.finetune_lr,
        "finetune_optimizer": cfg.optim.name,
        "finetune_schedule": "cosine from lr to 0",
        "finetune_momentum": cfg.optim.momentum,
        "finetune_weight_decay": cfg.optim.weight_decay,
        "finetune_batch_size": cfg.trainer.batch_size,
        "finetune_random_seeds": m.seeds[:1] if tuned else [],
        "device": runtime.describe_device(m.device),
        "precision": cfg.trainer.precision,
        "eval_batch_size": cfg.trainer.eval_batch_size,
        "limit_batches": plan.limit_batches,
        "overrides": list(plan.overrides),
        "tensorboard": plan.tensorboard,
    }


def analysis_record(plan: AnalysisPlan, m: Measured) -> dict:
    """The analysis record (`analysis/analysis.json`, read by `namexp compare`), less its `files` and `seconds`."""
    from namexp.analysis.report import summary_rows
    from namexp.train.penalty import SparsityPenalty

    cfg, unmasked = m.cfg, m.unmasked
    return {
        "format": FORMAT,
        "created": datetime.now().isoformat(timespec="seconds"),
        "run_dir": str(plan.run_dir.resolve()),
        "checkpoint": str(m.checkpoint.resolve()),
        "checkpoint_which": plan.which,
        "epoch": int(m.state["state"]["epochs_done"]),
        "backbone": cfg.backbone.name,
        "attention": cfg.attention.name,
        "data": cfg.data.name,
        "seed": cfg.seed,
        "sparsity": SparsityPenalty(m.model, cfg.sparsity, cfg.sparsity_mode).weight,  # effective, as the record
        "config": _record_config(plan, m),
        "run_config": asdict(cfg),
        "unmasked": {
            "test_top1_err": unmasked["top1_err"],
            "test_top5_err": unmasked["top5_err"],
            "test_loss": unmasked["loss"],
            "images": int(unmasked["images"]),
        },
        "sites": [s.to_record() for s in m.sites],
        "layers": m.layers,
        "masking": m.study.entries,
        "summary": summary_rows(m.study.entries, unmasked["top1_err"]),
        "evaluations": m.study.evaluations + 1,
        "finetunes": m.study.finetunes,
    }


# --------------------------------------------------------------------------------------------- publish


def _stamp() -> str:
    return datetime.now().strftime("%Y-%m-%d_%H-%M-%S")


def _move_aside(analysis: Path) -> Path | None:
    """Move the current result in `analysis` into a new analysis/previous-<time>/ (None if there is none)."""
    current = [p for p in analysis.iterdir() if not p.name.startswith("previous-")] if analysis.is_dir() else []
    if not current:
        return None
    previous = analysis / f"previous-{_stamp()}"
    n = 1
    while previous.exists():
        n += 1
        previous = analysis / f"previous-{_stamp()}-{n}"
    previous.mkdir()
    for item in current:
        item.rename(previous / item.name)
    return previous


def replace_analysis(run_dir: Path, files: dict[str, bytes]) -> tuple[Path, Path | None]:
    """Put `files` into run_dir/analysis; what was there moves to analysis/previous-<time>/ first.

    The new files are written to a hidden staging folder beside it, so a failure leaves the old result intact.
    Returns (analysis folder, the previous-result folder or None).
    """
    analysis = RunFolder(run_dir).analysis
    staging = run_dir / f".{ANALYSIS_DIR}-staging-{os.getpid()}"
    try:
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir(parents=True)
        for name, data in files.items():
            (staging / name).write_bytes(data)
        previous = _move_aside(analysis)
        analysis.mkdir(exist_ok=True)
        for item in staging.iterdir():
            os.replace(item, analysis / item.name)
    except OSError as exc:  # a full disk or a read-only folder: one line, the previous result as it was
        raise WriteFailed(analysis, exc) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return analysis, previous


def analysis_files(record: dict, m: Measured, started: float) -> tuple[dict[str, bytes], dict]:
    """(the files of analysis/ by name, the figures); completes the record with its `files` and `seconds`."""
    from namexp.analysis import report as rep
    from namexp.analysis import weights as wts

    nam_weights = wts.nam_weights_json(m.sites)
    plotted = {site: dict(parts) for site, parts in nam_weights["layers"].items()}
    for s in m.sites:
        if s.preceding_bn is not None:
            plotted.setdefault(s.site, {})["bn"] = wts.normalise(s.preceding_bn.weight).tolist()
    figures = {"masking": rep.masking_figure(record), "weights": rep.weights_figure(record, plotted)}
    with_weights = [NAM_WEIGHTS_FILE] if nam_weights["layers"] else []
    record["files"] = [ANALYSIS_RECORD_FILE, MARKDOWN_FILE, rep.MASKING_PNG, rep.WEIGHTS_PNG] + with_weights
    record["seconds"] = time.perf_counter() - started
    files = {
        ANALYSIS_RECORD_FILE: rep.render_json(record).encode(),
        MARKDOWN_FILE: rep.render_markdown(record).encode(),
        rep.MASKING_PNG: rep.png_bytes(figures["masking"]),
        rep.WEIGHTS_PNG: rep.png_bytes(figures["weights"]),
    }
    if with_weights:
        files[NAM_WEIGHTS_FILE] = rep.render_json(nam_weights).encode()
    return files, figures


def publish_analysis(plan: AnalysisPlan, record: dict, m: Measured, started: float) -> tuple[Path, Path | None]:
    """Write analysis/ (keeping the previous result) and, if asked, the TensorBoard events.

    Returns (analysis folder, the previous-result folder or None)."""
    from namexp.analysis.report import log_tensorboard

    files, figures = analysis_files(record, m, started)
    folder, previous = replace_analysis(plan.run_dir, files)
    if plan.tensorboard:
        log_tensorboard(RunFolder(plan.run_dir).tensorboard, record, figures)
    return folder, previous


def show(plan: AnalysisPlan, record: dict, written: tuple[Path, Path | None], console, err_console) -> None:
    """The tables on the terminal, or in --format on stdout or --output; then where the files went."""
    from namexp.analysis import report as rep

    folder, previous = written
    fmt, output = plan.format, plan.output
    # With a table on stdout, every other message goes to stderr (the table stays parseable).
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
    tb = f" and TensorBoard events in {RunFolder(plan.run_dir).tensorboard}" if plan.tensorboard else ""
    status.print(f"wrote {folder} ({', '.join(record['files'])})" + tb, markup=False, highlight=False)


# --------------------------------------------------------------------------------------------- command


def _consoles(console, err_console):
    from rich.console import Console

    if console is None:
        console = Console()
        if not console.is_terminal and "COLUMNS" not in os.environ:
            console = Console(width=200)
    return console, err_console or Console(stderr=True, highlight=False)


def run_analyze(
    run_dir: Path | str,
    overrides: Sequence[str] = (),
    options: AnalyzeOptions = AnalyzeOptions(),
    *,
    console=None,
    err_console=None,
) -> dict:
    """Everything `namexp analyze` does (plan, run, record, publish, show); returns the analysis record.

    Raises UserError on bad input, before any work where the options alone tell.
    """
    started = time.perf_counter()
    plan = plan_analysis(run_dir, overrides, options)
    console, err_console = _consoles(console, err_console)
    measured = run_analysis(plan, lambda text: err_console.print(text, markup=False, highlight=False))
    record = analysis_record(plan, measured)
    written = publish_analysis(plan, record, measured, started)
    show(plan, record, written, console, err_console)
    return record


def analyze(
    ctx: typer.Context,
    run_dir: Path = typer.Argument(..., help="The run folder (holding checkpoints/ and record.json)."),
    checkpoint: str = typer.Option("last", "--checkpoint", "-c", help="Which checkpoint: last or best."),
    ratios: str = typer.Option(
        DEFAULT_RATIOS,
        "--ratios",
        help="Shares of each layer's channels to mask, comma list in [0, 1) "
        "(0 and the fine-tune ratios are always added).",
    ),
    rankings: str | None = typer.Option(
        None, "--rankings", help="Comma list of nam, bn, random (default: every one the run has)."
    ),
    random_seeds: int = typer.Option(3, "--random-seeds", help="How many random rankings (seeds 0..N-1) to average."),
    thresholds: str = typer.Option(
        DEFAULT_THRESHOLDS,
        "--thresholds",
        help="Weight thresholds as fractions of the uniform weight 1/C (share of w < t/C).",
    ),
    finetune_epochs: int = typer.Option(
        1, "--finetune-epochs", help="Fine-tune epochs with the masks in place (0: no fine-tuning)."
    ),
    finetune_ratio: str = typer.Option("0.3", "--finetune-ratio", help="Masked ratio(s) to fine-tune at, comma list."),
    finetune_lr: float = typer.Option(
        0.01, "--finetune-lr", help="Fine-tune learning rate (run's optimizer, cosine to 0)."
    ),
    device: str | None = typer.Option(
        None, "--device", help="auto, cpu, cuda or cuda:N (default: the run's trainer.device)."
    ),
    batch_size: int | None = typer.Option(
        None, "--batch-size", help="Evaluation batch size (default: the run's trainer.eval_batch_size)."
    ),
    limit_batches: int = typer.Option(
        0, "--limit-batches", help="Use only this many batches per evaluation and fine-tune epoch (0: all)."
    ),
    format: str | None = typer.Option(
        None, "--format", "-f", help="markdown | csv | json (to stdout, or to --output)."
    ),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Write the table to this file (format from --format or the suffix)."
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing --output file."),
    tensorboard: bool = typer.Option(
        True, "--tensorboard/--no-tensorboard", help="Also log the results to the run's tb/ folder."
    ),
) -> None:
    """Measure NAM's weights and gates, and the error with the lowest-ranked channels masked (nam vs bn vs random).

    Extra arguments are overrides of where and how it runs, as for eval (e.g. data.root=/data trainer.device=cpu).
    Results go to RUN_DIR/analysis/ (a previous analysis moves to analysis/previous-<time>/) and RUN_DIR/tb.
    """
    run_analyze(
        run_dir,
        list(ctx.args),
        AnalyzeOptions(
            which=checkpoint,
            ratios=ratios,
            rankings=rankings,
            random_seeds=random_seeds,
            thresholds=thresholds,
            finetune_epochs=finetune_epochs,
            finetune_ratio=finetune_ratio,
            finetune_lr=finetune_lr,
            device=device,
            batch_size=batch_size,
            limit_batches=limit_batches,
            format=format,
            output=output,
            force=force,
            tensorboard=tensorboard,
        ),
    )
