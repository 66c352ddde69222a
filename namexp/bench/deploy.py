"""`namexp bench --deploy`: what each attention module costs at inference, in the forms a model ships in.

For every attention type of --attentions (plus `none`, the baseline) on the configuration the overrides
compose, three forms of the same (untrained: timing does not depend on the weights) model in eval mode,
float32, contiguous memory:

* ``eager``: the model as namexp trains it;
* ``folded``: ``namexp.export.fold`` (BatchNorms folded into convolutions, NAM gates into x·sigmoid(a·x+b));
* ``onnxruntime``: the folded model exported by ``torch.onnx.export(dynamo=True)`` with a dynamic batch,
  run by ONNX Runtime (needs the ``export`` extra).

Each batch size of --batches is timed in --repeats rounds; a round times every (model, form) once, in an
order that rotates between rounds, with max(1, --steps // batch) calls each; the figure is the median over
rounds of the mean time per call. Latency = ms per call, throughput = batch / latency.
"""

from __future__ import annotations

import sys
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from statistics import median
from typing import TYPE_CHECKING, Any

from namexp.bench.plan import BASELINE, compose_run, is_attention_override, parse_attentions
from namexp.bench.timing import rotate, timed
from namexp.errors import UserError

if TYPE_CHECKING:
    import torch
    from rich.console import Console

    from namexp.bench.plan import BenchOptions

FORMS = ("eager", "folded", "onnxruntime")


@dataclass
class DeployContender:
    label: str
    params: int
    runners: dict[str, Any]  # form -> callable(images) -> logits
    ms: dict[tuple[str, int], list[float]] = field(default_factory=dict)  # (form, batch) -> ms per call, per round


def parse_batches(text: str) -> list[int]:
    try:
        batches = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        batches = []
    if not batches or any(b < 1 for b in batches):
        raise UserError(f"--batches {text!r} is not valid: give positive batch sizes as a comma list, e.g. 1,64")
    return batches


def _onnx_runner(folded: torch.nn.Module, example: torch.Tensor, path: Path):
    from namexp.export.formats import FORMATS, ExportOptions

    onnx = FORMATS["onnx"]
    onnx.write(folded.cpu(), example.cpu(), path, ExportOptions(batch=2, dynamic_batch=True))
    return onnx.load(path)


def build_deploy_contenders(options: BenchOptions, overrides: list[str], tmp: Path, status: Console):
    """One DeployContender per attention type, all three forms built (the ONNX file written into `tmp`)."""
    import torch

    from namexp.costs import count_params
    from namexp.export.fold import fold_for_inference
    from namexp.train import runtime
    from namexp.train.build import make_model

    contenders, device = [], None
    for choice in parse_attentions(options.attentions):
        cfg = compose_run([o for o in overrides if not is_attention_override(o)] + choice.overrides())
        device = device or runtime.device_for(cfg.trainer)
        status.print(f"[dim]building {cfg.backbone.name} + {choice.label}: eager, folded, ONNX...[/dim]")
        runtime.seed_everything(cfg.seed)
        model = make_model(cfg, cfg.data.num_classes, cfg.data.image_size).eval()
        folded = fold_for_inference(model)  # eager's faster gate form; the ONNX file gets export's
        example = torch.zeros(2, 3, cfg.data.image_size, cfg.data.image_size)
        exported = fold_for_inference(model, gate_form="conv")
        runners = {"onnxruntime": _onnx_runner(exported, example, tmp / f"{len(contenders)}.onnx")}
        runners["eager"], runners["folded"] = model.to(device), folded.to(device)
        contenders.append(DeployContender(choice.label, count_params(model), runners))
    return contenders, cfg, device


def time_deploy(contenders: list[DeployContender], cfg, device, options: BenchOptions, batches: list[int], status):
    """Fill each contender's samples: one untimed call per form, then --repeats rotating rounds per batch size."""
    import torch

    size = cfg.data.image_size
    for batch in batches:
        images = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
        inputs = {form: images if form == "onnxruntime" else images.to(device) for form in FORMS}
        calls = max(1, options.steps // batch)
        for c in contenders:
            for form in FORMS:
                _call(c.runners[form], inputs[form], max(2, options.warmup // batch))  # first calls pick kernels
        for r in range(options.repeats):
            status.print(f"[dim]deploy: batch {batch}, round {r + 1}/{options.repeats}...[/dim]")
            for c in rotate(contenders, r):
                for form in rotate(list(FORMS), r):
                    seconds, _ = timed(device, lambda fn=c.runners[form], x=inputs[form], n=calls: _call(fn, x, n))
                    c.ms.setdefault((form, batch), []).append(seconds / calls * 1000)


def _call(runner, images, n: int) -> None:
    import torch

    with torch.inference_mode():
        for _ in range(n):
            runner(images)


def deploy_record(contenders, cfg, device, options, batches, argv) -> dict[str, Any]:
    from namexp.bench.record import machine_description
    from namexp.export.formats import onnx_providers

    base = next(c for c in contenders if c.label == BASELINE)
    rows = []
    for c in contenders:
        row: dict[str, Any] = {"attention": c.label, "params": c.params, "forms": {}}
        for (form, batch), samples in c.ms.items():
            ms, base_ms = median(samples), median(base.ms[(form, batch)])
            row["forms"][f"{form}@{batch}"] = {
                "ms_per_batch": ms, "img_s": batch / ms * 1000, "overhead_pct": (ms / base_ms - 1) * 100,
                "samples_ms": samples,
            }  # fmt: skip
        rows.append(row)
    providers = onnx_providers()
    return {
        "command": " ".join(argv), "created": datetime.now().isoformat(timespec="seconds"),
        "config": {"backbone": cfg.backbone.name, "data": cfg.data.name, "image_size": cfg.data.image_size,
                   "num_classes": cfg.data.num_classes, "device": str(device), "precision": "fp32"},
        "settings": {"batches": batches, "repeats": options.repeats, "steps": options.steps, "warmup": options.warmup},
        "onnxruntime_providers": providers, "rows": rows, "machine": machine_description(device),
    }  # fmt: skip


def deploy_tables(result: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]], str]]:
    """Per batch size: ms per batch (latency) or img/s, each form, and the overhead over `none`."""
    c = result["config"]
    tables = []
    for batch in result["settings"]["batches"]:
        single = batch == 1
        columns = ["attention", "params"]
        columns += [f"{form} {'ms' if single else 'img/s'}" for form in FORMS]
        columns += [f"{form} vs none" for form in FORMS]
        rows = []
        for row in result["rows"]:
            cells = [row["forms"][f"{form}@{batch}"] for form in FORMS]
            values = [f"{x['ms_per_batch']:.2f}" if single else f"{x['img_s']:,.0f}" for x in cells]
            rows.append(
                [row["attention"], f"{row['params']:,}", *values, *(f"{x['overhead_pct']:+.1f}%" for x in cells)]
            )
        what = "latency per image (batch 1)" if single else f"throughput at batch {batch}"
        title = f"{what}: {c['backbone']} on {c['data']} ({c['image_size']} px), {c['device']}, fp32"
        caption = "medians over rounds; 'vs none': time per batch over the `none` model's in the same form"
        tables.append((title, columns, rows, caption))
    return tables


def publish_deploy(result: dict[str, Any], console: Console, output: Path | None) -> None:
    from namexp.bench.publish import markdown_report, print_tables, write_output

    s, tables = result["settings"], deploy_tables(result)
    print_tables(console, tables)
    if output is not None:
        intro = [
            result["created"],
            "",
            f"{s['repeats']} rounds (medians), max(1, {s['steps']} // batch) calls per round; ONNX Runtime on "
            f"{', '.join(result['onnxruntime_providers'])}.",
        ]
        write_output(output, result, markdown_report("namexp bench --deploy", intro, tables, result))
        console.print(f"wrote {output}")


def run_deploy(options: BenchOptions, overrides: list[str], argv: list[str]) -> int:
    from rich.console import Console

    from namexp.bench.plan import check_bench_output
    from namexp.config import launch
    from namexp.export.formats import require_onnx

    require_onnx()
    options.check()
    check_bench_output(options.output, options.force)
    if launch.sweep_values(overrides):
        raise UserError(
            "namexp bench --deploy measures one backbone: drop the comma list (attentions go in --attentions)"
        )
    batches = parse_batches(options.batches)
    # Wide when written to a file or pipe, so that no column is cut to 80 characters.
    console, status = Console(width=None if sys.stdout.isatty() else 180), Console(stderr=True)
    if options.repeats < 3:
        status.print(f"[yellow]note:[/yellow] --repeats {options.repeats}: medians of fewer than 3 rounds are noisy")
    with tempfile.TemporaryDirectory(prefix="namexp-deploy-") as tmp:
        contenders, cfg, device = build_deploy_contenders(options, overrides, Path(tmp), status)
        time_deploy(contenders, cfg, device, options, batches, status)
    publish_deploy(deploy_record(contenders, cfg, device, options, batches, argv), console, options.output)
    return 0
