"""The `namexp` command line: a thin Typer layer over the modules that do the work.

Every command takes Hydra overrides (`key=value`, `group=option`) as extra arguments. Mistakes a user
can fix (`UserError`) end in one line on stderr and exit code 2 -- no traceback unless `--debug`.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from pathlib import Path

import typer

from namexp.errors import UserError
from namexp.train.signals import Interrupted

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Train, evaluate and compare CNNs with NAM and its peer attention modules (SE, CBAM, BAM, TAM, ECA, non-local).",
)
OVERRIDES = {"allow_extra_args": True, "ignore_unknown_options": True}
# Shared by the commands that read a run's checkpoint (eval, export).
RUN_OR_CHECKPOINT = typer.Argument(..., help="A run folder or a checkpoint file (.pt).")
WHICH_CHECKPOINT = typer.Option("last", "--checkpoint", "-c", help="Which checkpoint of a run folder: last or best.")


@app.command(context_settings=OVERRIDES)
def train(
    ctx: typer.Context,
    multirun: bool = typer.Option(
        False, "--multirun", "-m", help="Sweep: one job per combination of comma-listed values."
    ),
    resume: Path | None = typer.Option(
        None,
        "--resume",
        help="Continue the run (or sweep) in this folder from its last checkpoint; or give a run's "
        "checkpoints/previous.pt to continue from that one (its last.pt is set aside).",
    ),
    print_config: bool = typer.Option(False, "--cfg", help="Print the composed config and exit."),
) -> None:
    """Train one run, or a sweep with -m. Extra arguments are Hydra overrides, e.g. attention=se trainer.epochs=30."""
    if print_config:
        return _print_config(ctx.args)
    from namexp.train.command import run_train

    _exit(run_train(ctx.args, multirun=multirun, resume=resume))


@app.command("eval", context_settings=OVERRIDES)
def eval_command(
    ctx: typer.Context,
    target: Path = RUN_OR_CHECKPOINT,
    checkpoint: str = WHICH_CHECKPOINT,
    split: str = typer.Option("test", "--split", help="test, or val when the run held out a validation split."),
    folded: bool = typer.Option(
        False, "--folded", help="Time latency on the model folded for inference (the form namexp export writes)."
    ),
) -> None:
    """Evaluate a checkpoint with its own config: loss, top-1/top-5 error, params, FLOPs, latency."""
    from namexp.evaluation.command import run_eval

    _exit(run_eval(target, ctx.args, which=checkpoint, split=split, folded=folded))


@app.command("export", context_settings=OVERRIDES)
def export_command(
    ctx: typer.Context,
    target: Path = RUN_OR_CHECKPOINT,
    format: str = typer.Option(
        "onnx", "--format", "-f", help="onnx (needs the export extra), exported (torch.export .pt2) or torchscript."
    ),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="The file to write (default: RUN/exports/<checkpoint>.<suffix>)."
    ),
    checkpoint: str = WHICH_CHECKPOINT,
    batch: int = typer.Option(
        1, "--batch", help="The batch size the graph is traced with (its fixed batch size unless --dynamic-batch)."
    ),
    dynamic_batch: bool = typer.Option(False, "--dynamic-batch", help="Accept any batch size (1 to 4096)."),
    opset: int | None = typer.Option(None, "--opset", help="ONNX opset version (default: the exporter's)."),
    check_images: int = typer.Option(256, "--check-images", help="Test images the export is checked on."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output file."),
) -> None:
    """Fold a run's model for inference, export it, and check the file against PyTorch on real test images."""
    from namexp.export.command import ExportRequest, run_export
    from namexp.export.formats import ExportOptions

    options = ExportOptions(batch=batch, dynamic_batch=dynamic_batch, opset=opset)
    request = ExportRequest(target, format, output, checkpoint, options, check_images, force)
    _exit(run_export(request, ctx.args))


@app.command("explain")
def explain_command(
    runs: list[Path] = typer.Argument(..., help="Run folders (a grid per backbone and dataset)."),
    images: int = typer.Option(8, "--images", help="Images: the first N of a seeded, class-balanced selection."),
    split: str = typer.Option("test", "--split", help="test, or val when the runs held out a validation split."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Output folder (default: RUN/explain/)."),
    force: bool = typer.Option(False, "--force", help="Overwrite existing outputs."),
    checkpoint: str = WHICH_CHECKPOINT,
    maps: str = typer.Option(
        "auto",
        "--maps",
        help="Each module's own maps: auto, none, or channel,spatial (spatial: CBAM, BAM, TAM, NAM-spatial).",
    ),
    sites: str = typer.Option("", "--sites", help="Attention sites the maps show, comma list (default: all)."),
    indices: str = typer.Option("", "--indices", help="These images of the split (comma list) instead of --images."),
    seed: int | None = typer.Option(
        None, "--seed", help="Sweep folders: each group's run with this seed (default: first)."
    ),
) -> None:
    """Where models look (Grad-CAM) and whether each attention module attends or only scales (needs captum)."""
    from namexp.explain.command import ExplainRequest, run_explain
    from namexp.explain.inputs import parse_indices

    chosen = [s.strip() for s in sites.split(",") if s.strip()] or None
    request = ExplainRequest(runs, images, split, output, force, checkpoint, maps, chosen, parse_indices(indices), seed)
    _exit(run_explain(request))


@app.command(context_settings=OVERRIDES)
def info(
    ctx: typer.Context,
    print_config: bool = typer.Option(False, "--cfg", help="Also print the composed config."),
) -> None:
    """Parameters, FLOPs and attention placement of the model the overrides compose, and every valid choice."""
    from namexp.info import show_info

    _exit(show_info(ctx.args, print_config=print_config))


@app.command(context_settings=OVERRIDES)
def bench(
    ctx: typer.Context,
    attentions: str = typer.Option(
        "none,nam,nam_full,se,cbam,bam,tam,eca",
        "--attentions",
        help="Attention types to measure overheads over none for, comma list (options as nam:impl=fused).",
    ),
    steps: int = typer.Option(20, "--steps", help="Timed steps per pipeline and repeat (>= 1)."),
    warmup: int = typer.Option(5, "--warmup", help="Untimed steps first, covering torch.compile's compilation (>= 0)."),
    repeats: int = typer.Option(5, "--repeats", help="Interleaved repeats; the median is reported (>= 1)."),
    eval_steps: int = typer.Option(10, "--eval-steps", help="Eval batches per latency repeat (>= 1)."),
    output: Path | None = typer.Option(None, "--output", help="Also write the result to this file: .json or .md."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing --output file."),
    skip_reference: bool = typer.Option(False, "--skip-reference", help="Do not time the official script's pipeline."),
    skip_overheads: bool = typer.Option(False, "--skip-overheads", help="Do not measure the attention overheads."),
    deploy: bool = typer.Option(
        False,
        "--deploy",
        help="Inference cost instead: eager vs folded vs ONNX Runtime per attention (export extra).",
    ),
    batches: str = typer.Option("1,64", "--batches", help="--deploy: batch sizes, comma list."),
) -> None:
    """Training img/s: the limit vs namexp vs the reference pipeline, eval latency, attention overheads.

    Extra arguments are Hydra overrides of the one configuration it times, e.g. backbone=resnet18 trainer.device=cpu.
    """
    from namexp.bench.command import run_bench
    from namexp.bench.plan import BenchOptions

    options = BenchOptions(
        attentions=attentions,
        steps=steps,
        warmup=warmup,
        repeats=repeats,
        eval_steps=eval_steps,
        output=output.expanduser() if output else None,
        force=force,
        skip_reference=skip_reference,
        skip_overheads=skip_overheads,
        deploy=deploy,
        batches=batches,
    )
    _exit(run_bench(options, ctx))


def _register_package_commands() -> None:
    # compare and analyze are defined in their own packages, beside the code they drive.
    from namexp.analysis.command import analyze
    from namexp.compare.command import compare
    from namexp.tune.command import OVERRIDES as TUNE_OVERRIDES
    from namexp.tune.command import tune

    app.command("compare")(compare)
    app.command("tune", context_settings=TUNE_OVERRIDES)(tune)
    app.command("analyze", context_settings=OVERRIDES)(analyze)


def _exit(code: int) -> None:
    if code:
        raise typer.Exit(code)


def _print_config(overrides: list[str]) -> None:
    from omegaconf import OmegaConf

    from namexp.config import launch

    with launch.hydra_app() as hydra:
        cfg = launch.compose(
            hydra, [o.input_line for o in launch.parse_overrides(overrides) if not o.is_sweep_override()]
        )
        typer.echo(OmegaConf.to_yaml(launch.job_config(cfg)))


def _thread_hook(args) -> None:
    if not issubclass(args.exc_type, OSError):
        threading.__excepthook__(args)


def _quiet_background_failures() -> None:
    """On a full disk the log file and TensorBoard's writer thread fail too: the command's one-line error (or a
    warning) says what happened, without a traceback from each of them."""
    logging.raiseExceptions = False
    threading.excepthook = _thread_hook


def main(argv: list[str] | None = None) -> None:
    """Entry point: runs the app and turns errors into exit codes (2: user error, 3: diverged, 130/143: interrupted)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("NAMEXP_DEBUG") == "1"
    argv = [a for a in argv if a != "--debug"]
    if not debug:
        _quiet_background_failures()
    _register_package_commands()
    try:
        # Typer's standalone mode prints usage errors itself and exits with the code a command raises
        # through typer.Exit; everything else comes here.
        app(args=argv, prog_name="namexp")
    except UserError as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except Interrupted as exc:
        print(f"interrupted: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except Exception as exc:
        if debug:
            raise
        print(
            f"error: internal error {type(exc).__name__}: {' '.join(str(exc).split())[:300]} "
            "(run with --debug for the traceback; please report it)",
            file=sys.stderr,
        )
        sys.exit(1)


if __name__ == "__main__":
    main()
