"""Plan: the bench's options and Hydra overrides -> the configurations it times, checked before anything runs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from namexp.errors import UserError
from namexp.files import check_output

if TYPE_CHECKING:
    from namexp.config.schema import RunConfig

BASELINE = "none"  # the attention the overheads are relative to
MINIMUM = {"steps": 1, "warmup": 0, "repeats": 1, "eval_steps": 1}


@dataclass(frozen=True)
class BenchOptions:
    """The `namexp bench` options (their defaults live with the Typer command)."""

    attentions: str
    steps: int
    warmup: int
    repeats: int
    eval_steps: int
    output: Path | None
    force: bool
    skip_reference: bool
    skip_overheads: bool
    deploy: bool = False  # the inference-form bench (namexp.bench.deploy) instead of the training one
    batches: str = "1,64"  # --deploy's batch sizes

    def check(self) -> None:
        for name, minimum in MINIMUM.items():
            value = getattr(self, name)
            if value < minimum:
                flag = "--" + name.replace("_", "-")
                raise UserError(f"{flag}={value} is out of range: it must be >= {minimum}")


@dataclass(frozen=True)
class AttentionChoice:
    label: str  # as given, e.g. "nam:impl=fused"
    name: str
    options: tuple[tuple[str, str], ...]  # (key, value as written)

    def overrides(self) -> list[str]:
        return [f"attention={self.name}"] + [f"++attention.options.{k}={v}" for k, v in self.options]


@dataclass
class BenchPlan:
    """What to time: the main configuration (fitted to --steps) and one per attention of the overhead list."""

    options: BenchOptions
    run: RunConfig
    attention_runs: list[tuple[AttentionChoice, RunConfig]]
    notes: list[str]  # what the bench changed in the configuration, and why
    argv: list[str]  # the command line, for the record


def plan_bench(options: BenchOptions, overrides: list[str], argv: list[str], valid_flags: list[str]) -> BenchPlan:
    """Check the options and overrides (one-line UserErrors), compose every configuration the bench times."""
    from namexp.config import launch

    check_overrides(overrides, valid_flags)
    options.check()
    check_bench_output(options.output, options.force)
    if launch.sweep_values(overrides):
        raise UserError(
            "namexp bench measures one configuration: drop the comma list or range "
            "(compare attention types with --attentions none,nam,se)"
        )
    choices = [] if options.skip_overheads else parse_attentions(options.attentions)
    run = compose_run(overrides)
    notes = fit_to_steps(run, options)
    # Each attention of the overhead list: the same overrides, with its own attention group and options.
    base = [o for o in overrides if not is_attention_override(o)]
    attention_runs = [(c, compose_run(base + c.overrides())) for c in choices]
    return BenchPlan(options, run, attention_runs, notes, argv)


def check_overrides(overrides: list[str], valid_flags: list[str]) -> None:
    """Typer passes unknown options on with the overrides: refuse them here."""
    for arg in overrides:
        if arg.startswith("-"):
            hint = " (it measures one configuration, -m does not apply)" if arg in ("-m", "--multirun") else ""
            raise UserError(
                f"unknown option {arg.split('=', 1)[0]!r} for namexp bench{hint}: valid options are "
                f"{', '.join(valid_flags)}"
            )


def check_bench_output(path: Path | None, force: bool) -> None:
    """The suffix picks the format (there is no --format); folders and existing files as every command."""
    if path is None:
        return
    if path.suffix.lower() not in (".json", ".md"):
        raise UserError(f"--output {path}: the file must end in .json or .md (it picks the format)")
    check_output(path, force, "bench.md")


def parse_attentions(text: str) -> list[AttentionChoice]:
    from namexp.models.attention import attention_names

    valid = attention_names()
    choices: list[AttentionChoice] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, *opts = item.split(":")
        if name not in valid:
            raise UserError(
                f"--attentions: unknown attention {name!r}: choose from {', '.join(valid)} "
                f"(options as name:key=value, e.g. nam:impl=fused)"
            )
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


def compose_run(overrides: list[str]) -> RunConfig:
    from namexp.config import launch
    from namexp.config.validate import to_run_config

    with launch.hydra_app("bench") as app:
        return to_run_config(launch.job_config(launch.compose(app, overrides)))


def fit_to_steps(run: RunConfig, options: BenchOptions) -> list[str]:
    """Make one train_epoch call run --steps steps; the notes say what changed."""
    t, d, steps = run.trainer, run.data, options.steps
    notes = []
    if t.limit_train_batches and t.limit_train_batches != steps:
        notes.append(f"trainer.limit_train_batches={t.limit_train_batches} replaced by --steps {steps}")
    t.limit_train_batches = steps
    if d.name == "synthetic" and d.synthetic_train_size < steps * t.batch_size:
        notes.append(
            f"data.synthetic_train_size raised from {d.synthetic_train_size} to {steps * t.batch_size} "
            "so that one train_epoch call runs --steps steps"
        )
        d.synthetic_train_size = steps * t.batch_size
    if d.name == "imagefolder" and not options.skip_reference:
        raise UserError(
            "the reference pipeline needs an in-memory dataset (cifar10, cifar100, synthetic); "
            "with data=imagefolder namexp itself uses the host DataLoader: add --skip-reference"
        )
    return notes


def is_attention_override(override: str) -> bool:
    key = override.split("=", 1)[0].lstrip("+~")
    return key == "attention" or key.startswith("attention.")
