"""Publish: a bench record as terminal tables, as Markdown (`--output *.md`) or as JSON (`--output *.json`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from namexp.files import write_text_atomic
from namexp.tables import markdown_table

PIPELINES = (
    ("limit", "forward + backward + optimizer step on a batch already on the device"),
    ("namexp", "namexp's train_epoch: on-device data and augmentation, penalty, metric sums, read-backs"),
    ("reference", "DataLoader + per-image PIL transforms, .to(device), loss.item() every step (official script)"),
)

# (title, columns, rows, caption): one table of the report, for the terminal and Markdown alike.
ReportTable = tuple[str, list[str], list[list[str]], str]


def _fmt(value: float | None, spec: str = ",.1f") -> str:
    return "-" if value is None else f"{value:{spec}}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:+.1f}%"


def report_tables(result: dict[str, Any]) -> list[ReportTable]:
    """The report's tables, shared by the terminal and Markdown output."""
    c, tp, ratios, latency = result["config"], result["throughput"], result["ratios"], result["eval_latency"]
    limit = tp["limit"]["img_s"]
    throughput_rows = []
    for name, _ in PIPELINES:
        entry = tp.get(name)
        if entry is None:
            throughput_rows.append([name, "skipped", "-", "-"])
        else:
            throughput_rows.append(
                [name, _fmt(entry["img_s"]), _fmt(entry["ms_per_step"], ",.2f"), f"{entry['img_s'] / limit:.3f}"]
            )
    vs_reference = ratios["namexp_vs_reference"]
    tables = [
        (
            f"training throughput: {c['backbone']} + {c['attention']}, batch {c['batch_size']}, {c['device']}, "
            f"{c['precision']}, channels_last={c['channels_last']}, compile={c['compile']}",
            ["pipeline", "img/s (median)", "ms/step", "vs limit"],
            throughput_rows,
            "; ".join(f"{name}: {what}" for name, what in PIPELINES),
        ),
        (
            "ratios and eval latency",
            ["figure", "value"],
            [
                ["namexp / limit", f"{ratios['namexp_vs_limit']:.3f}"],
                ["namexp / reference", "-" if vs_reference is None else f"{vs_reference:.2f}x"],
                [f"eval latency, batch of {latency['batch_size']}", f"{latency['median_ms']:,.2f} ms"],
            ],
            "eval latency: median of inference-mode forwards of one eval batch",
        ),
    ]
    o = result.get("overheads")
    if o:
        tables.append(
            (
                f"attention overheads over none on {o['backbone']}, batch {o['batch_size']}",
                ["attention", "extra params", "train ms/step", "train overhead", "infer ms/batch", "infer overhead"],
                [
                    [
                        r["attention"],
                        f"{r['extra_params']:,}",
                        _fmt(r["train_step_ms"], ",.2f"),
                        _pct(r["train_overhead_pct"]),
                        _fmt(r["infer_ms"], ",.2f"),
                        _pct(r["infer_overhead_pct"]),
                    ]
                    for r in o["rows"]
                ],
                "pure model cost (limit-style steps; inference-mode forwards of the same batch); overhead = median over "
                "repeats of (time / none's time in the same repeat) - 1",
            )
        )
    return tables


def machine_line(result: dict[str, Any]) -> str:
    m, c = result["machine"], result["config"]
    load = f", load {m['load_average_1m']}" if "load_average_1m" in m else ""
    return (
        f"device {m['device']}; CPU {m['cpu']} x{m['cpu_count']}, {m['torch_threads']} torch "
        f"threads{load}; torch {m['torch']}; {c['precision']}, channels_last={c['channels_last']}, "
        f"compile={c['compile']}"
    )


def print_tables(console: Console, tables: list[ReportTable]) -> None:
    for title, columns, rows, caption in tables:
        table = Table(title=title, caption=caption)
        for i, col in enumerate(columns):
            table.add_column(col, justify="left" if i == 0 else "right", no_wrap=i == 0)
        for row in rows:
            table.add_row(*row)
        console.print(table)


def print_report(console: Console, result: dict[str, Any]) -> None:
    print_tables(console, report_tables(result))
    console.print(f"[dim]{machine_line(result)}[/dim]")
    s = result["settings"]
    console.print(
        f"[dim]{s['steps']} steps x {s['repeats']} repeats after {s['warmup']} warm-up steps; "
        f"command: {result['command']}[/dim]"
    )
    for note in result["notes"]:
        console.print(f"[yellow]note:[/yellow] {note}")


def markdown_report(heading: str, intro: list[str], tables: list[ReportTable], result: dict[str, Any]) -> str:
    """A bench report as Markdown: heading, command, intro lines, the tables, notes, the machine."""
    lines = [f"# {heading}", "", f"`{result['command']}`", "", *intro, ""]
    for title, columns, rows, caption in tables:
        lines += [f"## {title}", "", *markdown_table(columns, rows), "", caption, ""]
    if result.get("notes"):
        lines += ["## notes", ""] + [f"- {n}" for n in result["notes"]] + [""]
    lines += ["## machine", "", "```json", json.dumps(result["machine"], indent=2), "```", ""]
    return "\n".join(lines)


def render_markdown(result: dict[str, Any]) -> str:
    s = result["settings"]
    intro = [
        f"{result['created']}: {machine_line(result)}",
        "",
        f"{s['steps']} timed steps x {s['repeats']} repeats (medians) after {s['warmup']} warm-up steps.",
    ]
    return markdown_report("namexp bench", intro, report_tables(result), result)


def write_output(path: Path, result: dict[str, Any], markdown: str | None = None) -> None:
    """The suffix picks the format (plan.check_bench_output allowed only .json and .md)."""
    if path.suffix.lower() == ".md":
        text = markdown if markdown is not None else render_markdown(result)
    else:
        text = json.dumps(result, indent=2) + "\n"
    write_text_atomic(path, text)
