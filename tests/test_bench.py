"""`namexp bench`: a smoke test (it runs and reports every figure) and its option handling. No timing assertions."""

from __future__ import annotations

import json
import math

import pytest

from helpers import run_inproc
from namexp.bench import command
from namexp.bench.plan import parse_attentions
from namexp.errors import UserError

SMOKE = [
    "bench",
    "data=synthetic",
    "backbone=resnet20",
    "trainer.batch_size=16",
    "trainer.eval_batch_size=32",
    "trainer.num_workers=1",
    "--steps",
    "2",
    "--warmup",
    "1",
    "--repeats",
    "1",
    "--eval-steps",
    "1",
    "--attentions",
    "none,nam",
]


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_bench_smoke_writes_every_figure(tmp_path, capsys):
    out = tmp_path / "b.json"
    result = run_inproc(SMOKE + ["--output", str(out)], capsys)
    assert result.code == 0, result.err
    data = json.loads(out.read_text())

    for name in ("limit", "namexp", "reference"):
        entry = data["throughput"][name]
        assert _positive(entry["img_s"]) and _positive(entry["ms_per_step"]), name
        assert entry["samples_img_s"] and all(_positive(v) for v in entry["samples_img_s"])
    assert _positive(data["ratios"]["namexp_vs_limit"]) and _positive(data["ratios"]["namexp_vs_reference"])
    assert _positive(data["eval_latency"]["median_ms"]) and data["eval_latency"]["batch_size"] == 32

    rows = {row["attention"]: row for row in data["overheads"]["rows"]}
    assert list(rows) == ["none", "nam"]
    for row in rows.values():
        assert _positive(row["train_step_ms"]) and _positive(row["infer_ms"]) and _positive(row["params"])
        assert math.isfinite(row["train_overhead_pct"]) and math.isfinite(row["infer_overhead_pct"])
    assert rows["none"]["train_overhead_pct"] == 0 and rows["none"]["infer_overhead_pct"] == 0
    assert rows["nam"]["extra_params"] == 2 * (3 * 16 + 3 * 32 + 3 * 64)  # a BatchNorm per ResNet-20 block

    config, machine = data["config"], data["machine"]
    assert (config["backbone"], config["attention"], config["batch_size"]) == ("resnet20", "nam", 16)
    assert config["precision"] == "fp32" and config["channels_last"] is False and config["compile"] is False
    for key in ("cpu", "cpu_count", "torch_threads", "device_name", "torch"):
        assert machine[key], key
    assert data["command"].startswith("namexp bench data=synthetic") and "--output" in data["command"]
    assert "limit" in result.out and "reference" in result.out and "overhead" in result.out


def test_bench_refuses_to_overwrite_and_checks_the_suffix(tmp_path, capsys):
    existing = tmp_path / "b.json"
    existing.write_text("{}")
    result = run_inproc(["bench", "data=synthetic", "--output", str(existing)], capsys)
    assert result.code == 2 and "--force" in result.err
    assert existing.read_text() == "{}"
    result = run_inproc(["bench", "data=synthetic", "--output", str(tmp_path / "b.txt")], capsys)
    assert result.code == 2 and ".json or .md" in result.err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--bogus", "1"], "unknown option '--bogus'"),
        (["--steps", "0"], "must be >= 1"),
        (["--warmup=-1"], "must be >= 0"),
        (["-m"], "unknown option '-m'"),
        (["attention=nam,se"], "--attentions"),
        (["--attentions", "none,nope"], "unknown attention 'nope'"),
    ],
)
def test_bench_option_errors_are_one_line_user_errors(args, message, capsys):
    result = run_inproc(["bench", "data=synthetic", *args], capsys)
    assert result.code == 2
    assert message in result.err and len(result.err.strip().splitlines()) == 1, result.err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--steps", "zero"], "Invalid value for '--steps'"),
        (["--steps"], "requires an argument"),
        (["--force=yes"], "does not take a value"),
    ],
)
def test_malformed_flags_are_typer_usage_errors(args, message, capsys):
    result = run_inproc(["bench", "data=synthetic", *args], capsys)
    assert result.code == 2
    assert message in " ".join(result.err.replace("│", " ").split()) and "Traceback" not in result.err


def test_options_and_overrides_are_separated(monkeypatch, capsys):
    seen = {}

    def plan_bench(options, overrides, argv, valid_flags):
        seen.update(options=options, overrides=overrides, argv=argv, valid_flags=valid_flags)
        raise UserError("planned")

    monkeypatch.setattr(command, "plan_bench", plan_bench)
    result = run_inproc(
        [
            "bench",
            "data=synthetic",
            "--steps",
            "3",
            "trainer.batch_size=8",
            "--warmup=2",
            "--skip-reference",
            "--output",
            "x.md",
        ],
        capsys,
    )
    assert result.code == 2 and "planned" in result.err
    opts = seen["options"]
    assert seen["overrides"] == ["data=synthetic", "trainer.batch_size=8"]
    assert (opts.steps, opts.warmup, opts.repeats, opts.skip_reference, opts.output.name) == (3, 2, 5, True, "x.md")
    # The record's command: the overrides, then the options given (in the command's order), defaults left out.
    assert seen["argv"] == [
        "namexp",
        "bench",
        "data=synthetic",
        "trainer.batch_size=8",
        "--steps",
        "3",
        "--warmup",
        "2",
        "--output",
        "x.md",
        "--skip-reference",
    ]
    assert "--steps VALUE" in seen["valid_flags"] and "--force" in seen["valid_flags"]


def test_attention_list_takes_options_and_always_has_the_baseline():
    choices = parse_attentions("nam,nam:impl=fused,se:reduction=8")
    assert [c.label for c in choices] == ["none", "nam", "nam:impl=fused", "se:reduction=8"]
    assert choices[2].overrides() == ["attention=nam", "++attention.options.impl=fused"]
    with pytest.raises(UserError, match="twice"):
        parse_attentions("nam,nam")
    with pytest.raises(UserError, match="name:key=value"):
        parse_attentions("nam:impl")
