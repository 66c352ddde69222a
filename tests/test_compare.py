"""`namexp compare` on crafted run folders (no training, no GPU)."""

from __future__ import annotations

import copy
import csv
import io
import json
import math
import re
from pathlib import Path

import pytest
import typer
from scipy import stats as sps
from typer.testing import CliRunner

from namexp.compare import build, load_runs
from namexp.compare.command import compare, run_compare, write_sweep_table
from namexp.compare.render import render_csv, render_json, render_latex, render_markdown
from namexp.compare.stats import IGNORED_KEYS
from namexp.errors import UserError

# --------------------------------------------------------------------------------------------- helpers

BASE_CONFIG = {
    "data": {
        "name": "cifar100",
        "root": None,
        "download": True,
        "cache_dir": None,
        "num_classes": 100,
        "mean": [0.5, 0.5, 0.5],
        "val_split": 0,
    },
    "backbone": {"name": "resnet18", "stem": "auto", "width_mult": 1.0},
    "attention": {"name": "none", "options": {}},
    "optim": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4},
    "sched": {"name": "multistep", "milestones": [60, 120, 160], "gamma": 0.2},
    "trainer": {
        "epochs": 3,
        "batch_size": 128,
        "device": "auto",
        "num_workers": 4,
        "log_interval": 50,
        "progress": "auto",
        "resume": False,
    },
    "seed": 0,
    "sparsity": 1e-4,
    "sparsity_mode": "loss",
}
PARAMS = {"none": 11_220_132, "nam": 11_224_932, "se": 11_309_732}


def make_run(
    root: Path,
    name: str,
    *,
    attention: str = "none",
    seed: int = 0,
    final: float = 30.0,
    best: float | None = None,
    status: str = "completed",
    epochs: int = 3,
    backbone: str = "resnet18",
    data: str = "cifar100",
    config: dict | None = None,
    error: str | None = None,
    analysis: dict | None = None,
    nam_weights: dict | None = None,
    selection_split: str = "test",
    fingerprint: str | None = "sha256:" + "5eed" * 16,
) -> Path:
    """Write a run folder with a record.json as training writes it (docs/run-folder.md)."""
    folder = root / name
    folder.mkdir(parents=True)
    cfg = copy.deepcopy(BASE_CONFIG)
    cfg["attention"]["name"] = attention
    cfg["backbone"]["name"] = backbone
    cfg["data"]["name"] = data
    cfg["seed"] = seed
    # Bookkeeping that differs between seeds and must not split groups.
    cfg["data"]["root"] = f"/scratch/job{seed}/data"
    cfg["trainer"]["device"] = f"cuda:{seed % 2}"
    if attention == "se":
        cfg["attention"]["options"] = {"reduction": 16}
    for key, value in (config or {}).items():
        node = cfg
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    best = final - 0.4 if best is None else best
    n_epochs = epochs if status == "completed" else max(epochs - 2, 1)
    entries = []
    for e in range(1, n_epochs + 1):
        err = final + 10.0 * (epochs - e)
        entries.append(
            {
                "epoch": e,
                "train_loss": 1.0 / e,
                "train_top1_err": err - 5,
                "test_loss": 1.5 / e,
                "test_top1_err": err,
                "test_top5_err": err / 3,
                "val_loss": None,
                "val_top1_err": None,
                "val_top5_err": None,
                "lr": 0.1,
                "penalty": 0.0,
                "nam_l1": None,
                "seconds": 10.0,
                "img_s": 5000.0,
            }
        )
    effective = cfg["sparsity"] if attention.startswith("nam") else 0.0
    record = {
        "format": 1,
        "status": status,
        "error": error,
        "run_dir": "/elsewhere/" + name,
        "created": "2024-01-01T00:00:00",
        "updated": "2024-01-01T01:00:00",
        "backbone": backbone,
        "attention": attention,
        "data": data,
        "seed": seed,
        "sparsity": effective,
        "sparsity_mode": cfg["sparsity_mode"],
        **({"data_fingerprint": fingerprint} if fingerprint else {}),
        "choices": {"data": data, "backbone": backbone, "attention": attention},
        "overrides": [f"attention={attention}", f"seed={seed}"],
        "config": cfg,
        "params": PARAMS.get(attention, 11_250_000),
        "flops": 1_114_000_000,
        "macs": 557_000_000,
        "throughput_img_s": 5000.0 + seed,
        "placement": [],
        "environment": {"device": "cpu"},
        "eval_split": "test",
        "selection_split": selection_split,
        "epochs": entries,
        "best": {**entries[-1], "test_top1_err": best, "test_top5_err": best / 3} if status == "completed" else None,
        "final": {**entries[-1], "test_top5_err": final / 3} if status == "completed" else None,
        "world_size": 1,
    }
    (folder / "record.json").write_text(json.dumps(record))
    if analysis is not None:
        (folder / "analysis").mkdir()
        (folder / "analysis" / "analysis.json").write_text(json.dumps(analysis))
    if nam_weights is not None:
        (folder / "nam_weights.json").write_text(json.dumps(nam_weights))
    return folder


NAM_FINAL = [29.1, 29.9, 29.4]
NONE_FINAL = [30.2, 30.5, 29.7]
SE_FINAL = [29.8, 30.6]


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    root = tmp_path / "runs" / "multirun" / "2024-01-01" / "12-00-00"
    i = 0
    for attention, finals in (("none", NONE_FINAL), ("nam", NAM_FINAL), ("se", SE_FINAL)):
        for seed, final in enumerate(finals):
            make_run(root, str(i), attention=attention, seed=seed, final=final)
            i += 1
    return root


def welch_expected(a: list[float], b: list[float]) -> tuple[float, float]:
    """(difference of means, two-sided Welch p) from the textbook formulas."""
    na, nb = len(a), len(b)
    ma, mb = sum(a) / na, sum(b) / nb
    va = sum((x - ma) ** 2 for x in a) / (na - 1)
    vb = sum((x - mb) ** 2 for x in b) / (nb - 1)
    se2 = va / na + vb / nb
    t = (ma - mb) / math.sqrt(se2)
    df = se2**2 / ((va / na) ** 2 / (na - 1) + (vb / nb) ** 2 / (nb - 1))
    return ma - mb, 2 * sps.t.sf(abs(t), df)


def sample_std(xs: list[float]) -> float:
    m = sum(xs) / len(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def by_attention(comp) -> dict:
    return {g.attention: g for g in comp.groups}


def make_app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def main() -> None:  # keeps "compare" a subcommand
        pass

    app.command("compare")(compare)
    return app


def invoke(*args: str):
    return CliRunner().invoke(make_app(), ["compare", *map(str, args)])


def md_rows(text: str) -> list[list[str]]:
    """The first pipe table of a Markdown text, split into cells."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    table = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        table.append([c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]])
    return table


# ------------------------------------------------------------------------------------------ statistics


def test_mean_std_and_welch_against_hand_computation(sweep: Path):
    runs, warnings = load_runs([sweep])
    assert warnings == []
    groups = by_attention(build(runs))
    assert set(groups) == {"none", "nam", "se"}
    nam, none, se = groups["nam"], groups["none"], groups["se"]
    assert nam.stats["n"] == 3 and se.stats["n"] == 2 and none.stats["n"] == 3
    assert nam.stats["final_top1_mean"] == pytest.approx(sum(NAM_FINAL) / 3)
    assert nam.stats["final_top1_std"] == pytest.approx(sample_std(NAM_FINAL))
    assert nam.stats["best_top1_mean"] == pytest.approx(sum(NAM_FINAL) / 3 - 0.4)
    assert nam.stats["final_top5_mean"] == pytest.approx(sum(NAM_FINAL) / 9)
    delta, p = welch_expected(NAM_FINAL, NONE_FINAL)
    assert nam.stats["delta_final_top1"] == pytest.approx(delta)
    assert nam.stats["p_final_top1"] == pytest.approx(p, rel=1e-9)
    best_delta, best_p = welch_expected([x - 0.4 for x in NAM_FINAL], [x - 0.4 for x in NONE_FINAL])
    assert nam.stats["delta_best_top1"] == pytest.approx(best_delta)
    assert nam.stats["p_best_top1"] == pytest.approx(best_p, rel=1e-6)
    se_delta, se_p = welch_expected(SE_FINAL, NONE_FINAL)
    assert se.stats["p_final_top1"] == pytest.approx(se_p, rel=1e-9)
    assert se.stats["delta_final_top1"] == pytest.approx(se_delta)
    # The baseline has no difference to itself; params, FLOPs, throughput from the record.
    assert none.stats["delta_final_top1"] is None and none.stats["p_final_top1"] is None
    assert nam.stats["params"] == PARAMS["nam"] and nam.stats["flops"] == 1_114_000_000
    assert nam.stats["throughput"] == pytest.approx(5001.0)
    assert nam.stats["selection_split"] == "test"
    assert nam.sparsity == pytest.approx(1e-4) and se.sparsity == 0 and none.sparsity == 0
    # se has an attention-only option (reduction): no variant, and the baseline still matches.
    assert all(not g.variant for g in groups.values())


def test_single_run_has_no_std_and_no_p(tmp_path: Path):
    make_run(tmp_path, "a", attention="nam", final=29.0)
    make_run(tmp_path, "b", attention="none", seed=0, final=30.0)
    make_run(tmp_path, "c", attention="none", seed=1, final=31.0)
    comp = build(load_runs([tmp_path])[0])
    nam = by_attention(comp)["nam"]
    assert nam.stats["final_top1_std"] is None
    assert nam.stats["delta_final_top1"] == pytest.approx(29.0 - 30.5)
    assert nam.stats["p_final_top1"] is None
    row = next(r for r in md_rows(render_markdown(comp))[2:] if r[2] == "nam")
    assert "29.00 ± –" in row and "–" in row


# ----------------------------------------------------------------------------------- grouping/variants


def test_seeds_group_together_and_other_keys_split(tmp_path: Path):
    for seed in range(2):
        make_run(tmp_path, f"none{seed}", attention="none", seed=seed, final=30.0 + seed)
        make_run(tmp_path, f"none_lr{seed}", attention="none", seed=seed, final=32.0 + seed, config={"optim.lr": 0.05})
        make_run(tmp_path, f"nam{seed}", attention="nam", seed=seed, final=29.0 + seed)
        make_run(
            tmp_path,
            f"nam_abs{seed}",
            attention="nam",
            seed=seed,
            final=28.0 + seed,
            config={"attention.options": {"abs_weights": True}},
        )
        make_run(tmp_path, f"se{seed}", attention="se", seed=seed, final=29.5 + seed)
    comp = build(load_runs([tmp_path])[0])
    assert len(comp.groups) == 5 and all(g.stats["n"] == 2 for g in comp.groups)
    variants = sorted(g.variant_text for g in comp.groups)
    # optim.lr splits the none runs and shows for every group of that data/backbone; abs_weights shows only
    # for nam (where it differs); se's reduction and the per-seed data.root/trainer.device never show.
    assert variants == sorted(
        [
            "optim.lr=0.05",
            "optim.lr=0.1",
            "attention.options.abs_weights=(unset), optim.lr=0.1",
            "attention.options.abs_weights=true, optim.lr=0.1",
            "optim.lr=0.1",
        ]
    )
    nam_groups = [g for g in comp.groups if g.attention == "nam"]
    for g in nam_groups:  # both nam variants are compared with the lr=0.1 none baseline
        assert g.baseline is not None and g.baseline.variant == {"optim.lr": 0.1}
    abs_group = next(g for g in nam_groups if g.variant.get("attention.options.abs_weights") is True)
    assert abs_group.stats["delta_final_top1"] == pytest.approx(28.5 - 30.5)
    table = render_markdown(comp)
    assert "variant" in md_rows(table)[0]


def test_runs_that_read_different_data_never_pool(tmp_path: Path):
    other = "sha256:" + "0dd" * 21 + "f"
    for seed in range(2):
        make_run(tmp_path, f"a{seed}", seed=seed, final=30.0 + seed)
        make_run(tmp_path, f"b{seed}", seed=seed, final=40.0 + seed, fingerprint=other)
    comp = build(load_runs([tmp_path])[0])
    assert sorted(g.stats["n"] for g in comp.groups) == [2, 2]
    assert sorted(g.variant_text for g in comp.groups) == [
        "data.fingerprint=sha256:0dd0dd0dd0dd",
        "data.fingerprint=sha256:5eed5eed5eed",
    ]
    assert not any("fingerprint" in w for w in comp.warnings)
    pooled = build(load_runs([tmp_path])[0], ignore=["data.fingerprint"])  # the user says it is the same data
    assert [g.stats["n"] for g in pooled.groups] == [4]


def test_runs_without_a_data_fingerprint_are_said_so_and_kept_apart(tmp_path: Path):
    make_run(tmp_path, "new", seed=0)
    make_run(tmp_path, "old", seed=1, fingerprint=None)
    comp = build(load_runs([tmp_path])[0])
    assert sorted(g.stats["n"] for g in comp.groups) == [1, 1]
    assert any("1 run(s) were recorded before data fingerprints" in w and "old" in w for w in comp.warnings)


def test_bookkeeping_keys_constant_and_ignore_option(tmp_path: Path):
    assert {"seed", "sparsity", "data.root", "trainer.device", "hydra"} <= set(IGNORED_KEYS)
    for seed in range(3):
        make_run(
            tmp_path,
            f"r{seed}",
            attention="nam",
            seed=seed,
            final=29.0 + seed,
            config={"trainer.run_name": f"nam-s{seed}", "hydra.job.num": seed},
        )
    runs = load_runs([tmp_path])[0]
    comp = build(runs)
    assert len(comp.groups) == 3  # a per-run name splits ...
    assert any("--ignore trainer.run_name" in w for w in comp.warnings)  # ... and is pointed out
    comp = build(runs, ignore=["trainer.run_name"])
    assert len(comp.groups) == 1 and comp.groups[0].stats["n"] == 3 and not comp.groups[0].variant


def test_unfinished_failed_diverged_listed_apart(tmp_path: Path):
    for seed, final in enumerate([30.0, 31.0]):
        make_run(tmp_path, f"ok{seed}", attention="nam", seed=seed, final=final)
    make_run(tmp_path, "failed", attention="nam", seed=2, final=99.0, status="failed", error="CUDA out of memory")
    make_run(tmp_path, "diverged", attention="nam", seed=3, final=99.0, status="diverged", error="loss is nan")
    make_run(
        tmp_path, "interrupted", attention="nam", seed=4, final=99.0, status="interrupted", error="SIGTERM", epochs=5
    )
    make_run(tmp_path, "running", attention="nam", seed=5, final=99.0, status="running")
    comp = build(load_runs([tmp_path])[0])
    assert len(comp.groups) == 1
    group = comp.groups[0]
    assert group.stats["n"] == 2 and group.stats["final_top1_mean"] == pytest.approx(30.5)
    apart = {r.folder.name: r for r in comp.apart}
    assert set(apart) == {"failed", "diverged", "interrupted", "running"}
    assert apart["interrupted"].epochs_done == 3 and apart["interrupted"].record["error"] == "SIGTERM"
    data = json.loads(render_json(comp))
    assert {r["status"] for r in data["apart"]} == {"failed", "diverged", "interrupted", "running"}
    assert next(r for r in data["apart"] if r["status"] == "failed")["error"] == "CUDA out of memory"
    md = render_markdown(comp)
    assert "Runs listed apart" in md and "CUDA out of memory" in md
    result = invoke(tmp_path)
    assert result.exit_code == 0, result.output
    assert "listed apart" in result.output and "loss is nan" in result.output


def test_corrupt_record_warned_and_skipped(tmp_path: Path):
    make_run(tmp_path, "good", attention="nam")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "record.json").write_text('{"status": "compl')
    (tmp_path / "notarecord").mkdir()
    (tmp_path / "notarecord" / "record.json").write_text("[1, 2]")
    runs, warnings = load_runs([tmp_path])
    assert len(runs) == 1 and len(warnings) == 2
    assert any("corrupt JSON" in w and "bad" in w for w in warnings)
    result = invoke(tmp_path)
    assert result.exit_code == 0 and "warning: skipping" in result.output


def test_record_file_and_run_folder_paths(sweep: Path):
    record = sweep / "0" / "record.json"
    assert len(load_runs([record])[0]) == 1
    assert len(load_runs([sweep / "1"])[0]) == 1
    assert len(load_runs([sweep, sweep / "1"])[0]) == 8  # no duplicates


# --------------------------------------------------------------------------------------------- formats


def test_every_format_parses_back(sweep: Path, tmp_path: Path):
    make_run(sweep, "failed", attention="nam", seed=9, status="failed", error="boom | with a pipe")
    comp = build(load_runs([sweep])[0])
    nam = by_attention(comp)["nam"]

    rows = list(csv.DictReader(io.StringIO(render_csv(comp))))
    assert [r["attention"] for r in rows] == ["none", "nam", "se"]
    row = next(r for r in rows if r["attention"] == "nam")
    assert float(row["final_top1_mean"]) == pytest.approx(sum(NAM_FINAL) / 3)
    assert float(row["final_top1_std"]) == pytest.approx(sample_std(NAM_FINAL))
    assert float(row["p_final_top1"]) == pytest.approx(nam.stats["p_final_top1"])
    assert int(row["params"]) == PARAMS["nam"] and int(row["n"]) == 3 and int(row["flops"]) == 1_114_000_000
    assert next(r for r in rows if r["attention"] == "none")["p_final_top1"] == ""

    data = json.loads(render_json(comp))
    jnam = next(g for g in data["groups"] if g["attention"] == "nam")
    assert jnam["final_top1_mean"] == pytest.approx(sum(NAM_FINAL) / 3)
    assert jnam["p_final_top1"] == pytest.approx(nam.stats["p_final_top1"])
    assert jnam["seeds"] == [0, 1, 2] and len(jnam["runs"]) == 3 and jnam["baseline"]["n"] == 3
    assert len(data["apart"]) == 1 and data["apart"][0]["status"] == "failed"

    md = render_markdown(comp)
    table = md_rows(md)
    assert len(table) == 2 + 3 and len({len(r) for r in table}) == 1
    assert all(set(c) <= set("-: ") for c in table[1])
    assert "FLOPs (2 per mult-add)" in table[0]

    tex = render_latex(comp)
    assert "\\begin{tabular}" in tex and "\\toprule" in tex and "\\midrule" in tex and "\\bottomrule" in tex
    body = tex[tex.index("\\midrule") + len("\\midrule") : tex.index("\\bottomrule")].strip().splitlines()
    header = tex[tex.index("\\toprule") + len("\\toprule") : tex.index("\\midrule")].strip()
    assert len(body) == 3 and all(line.endswith("\\\\") for line in body)
    assert {line.count(" & ") for line in body} == {header.count(" & ")}
    assert "$\\pm$" in tex and "±" not in tex


def test_cli_formats_stdout_and_output(sweep: Path, tmp_path: Path):
    for fmt in ("markdown", "csv", "latex", "json"):
        result = invoke(sweep, "--format", fmt)
        assert result.exit_code == 0, result.output
        if fmt == "json":
            assert len(json.loads(result.stdout)["groups"]) == 3
        if fmt == "csv":
            assert len(list(csv.DictReader(io.StringIO(result.stdout)))) == 3
    out = tmp_path / "out" / "table.csv"
    result = invoke(sweep, "--output", out)  # format from the suffix
    assert result.exit_code == 0, result.output
    assert len(list(csv.DictReader(out.open()))) == 3
    # An existing file is not overwritten without --force.
    result = invoke(sweep, "--format", "csv", "--output", out)
    assert isinstance(result.exception, UserError) and "--force" in str(result.exception)
    out.write_text("keep")
    with pytest.raises(UserError, match="already exists"):
        run_compare([sweep], format="json", output=out)
    assert out.read_text() == "keep"
    result = invoke(sweep, "--format", "json", "--output", out, "--force")
    assert result.exit_code == 0 and json.loads(out.read_text())["groups"]
    result = invoke(sweep, "--format", "html")
    assert isinstance(result.exception, UserError)


def test_masked_columns_from_analysis(tmp_path: Path):
    def analysis(nam: float, bn: float, randoms: list[float]) -> dict:
        entries = [
            {"ranking": "nam", "ratio": 0.3, "finetuned": False, "test_top1_err": nam},
            {"ranking": "nam", "ratio": 0.3, "finetuned": True, "test_top1_err": 1.0},  # ignored: finetuned
            {"ranking": "nam", "ratio": 0.5, "finetuned": False, "test_top1_err": 90.0},  # other ratio
            {"ranking": "bn", "ratio": 0.3, "finetuned": False, "test_top1_err": bn},
        ]
        entries += [
            {"ranking": "random", "ratio": 0.3, "finetuned": False, "seed": i, "test_top1_err": r}
            for i, r in enumerate(randoms)
        ]
        return {"masking": entries}

    make_run(tmp_path, "a", attention="nam", seed=0, analysis=analysis(40.0, 45.0, [50.0, 52.0]))
    make_run(tmp_path, "b", attention="nam", seed=1, analysis=analysis(42.0, 47.0, [54.0, 56.0]))
    make_run(tmp_path, "c", attention="none", seed=0)
    comp = build(load_runs([tmp_path])[0])
    assert comp.masked_rankings == ["nam", "bn", "random"]
    nam = by_attention(comp)["nam"]
    assert nam.stats["masked_nam"] == pytest.approx(41.0)
    assert nam.stats["masked_bn"] == pytest.approx(46.0)
    assert nam.stats["masked_random"] == pytest.approx(53.0)
    assert by_attention(comp)["none"].stats["masked_nam"] is None
    assert "err@30% nam" in md_rows(render_markdown(comp))[0]
    comp = build(load_runs([tmp_path])[0], masked_ratio=0.5)
    assert comp.masked_rankings == ["nam"] and by_attention(comp)["nam"].stats["masked_nam"] == pytest.approx(90.0)
    plain = tmp_path / "plain"
    make_run(plain, "x", attention="nam")
    assert build(load_runs([plain])[0]).masked_rankings == []


# ------------------------------------------------------------------------------------------------ plots


def test_plots_are_png_and_not_overwritten(sweep: Path, tmp_path: Path):
    weights = {
        "layers": {
            "layer1.0": {"channel": [0.1, 0.2, 0.3, 0.4], "spatial": [0.5, 0.5]},
            "layer2.0": {"channel": [0.05, 0.95]},
        }
    }
    make_run(sweep, "nam_w", attention="nam", seed=7, final=29.5, nam_weights=weights)
    plots = tmp_path / "plots"
    result = invoke(sweep, "--plot", plots)
    assert result.exit_code == 0, result.output
    pngs = sorted(p.name for p in plots.glob("*.png"))
    assert pngs == ["final_top1_vs_params.png", "nam_weights.png", "test_top1_curves.png"]
    for png in plots.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000
    result = invoke(sweep, "--plot", plots)
    assert isinstance(result.exception, UserError) and "--force" in str(result.exception)
    result = invoke(sweep, "--plot", plots, "--force", "--filter", "attention=none", "--format", "csv")
    assert result.exit_code == 0 and "skipped the NAM weight plot" in result.output
    # With the table on stdout, the "wrote ..." and note lines go to stderr.
    assert [r["attention"] for r in csv.DictReader(io.StringIO(result.stdout))] == ["none"]


# ------------------------------------------------------------------------------------- sort and filter


def test_sort_and_filter(sweep: Path):
    make_run(sweep, "lr", attention="nam", seed=0, final=27.0, config={"optim.lr": 0.05, "trainer.epochs": 5}, epochs=5)
    runs = load_runs([sweep])[0]

    comp = build(runs, sort="final_top1_mean")
    means = [g.stats["final_top1_mean"] for g in comp.groups]
    assert means == sorted(means)
    comp = build(runs, sort="final_top1", desc=True)
    assert [g.stats["final_top1_mean"] for g in comp.groups] == sorted(means, reverse=True)
    comp = build(runs, sort="params")
    params = [g.stats["params"] for g in comp.groups]
    assert params == sorted(params)
    comp = build(runs, sort="optim.lr")
    assert comp.groups[0].value("optim.lr") == 0.05

    comp = build(runs, filters=["attention=nam,se"])
    assert {g.attention for g in comp.groups} == {"nam", "se"}
    nam = next(g for g in comp.groups if g.attention == "nam" and g.value("optim.lr") == 0.1)
    assert nam.stats["delta_final_top1"] is not None  # the none baseline still counts
    comp = build(runs, filters=["trainer.epochs=5"])
    assert len(comp.groups) == 1 and comp.groups[0].stats["final_top1_mean"] == 27.0
    comp = build(runs, filters=["backbone=resnet18", "attention=nam"])
    assert len(comp.groups) == 2
    comp = build(runs, filters=["n>=3"])
    assert {g.attention for g in comp.groups} == {"none", "nam"}
    comp = build(runs, filters=["attention!=none"])
    assert "none" not in {g.attention for g in comp.groups}

    with pytest.raises(UserError, match="unknown filter key 'optim.lrr'.*optim.lr"):
        build(runs, filters=["optim.lrr=0.1"])
    with pytest.raises(UserError, match="unknown sort key"):
        build(runs, sort="nonsense")
    result = invoke(sweep, "--filter", "attention=se", "--format", "csv")
    assert result.exit_code == 0
    assert [r["attention"] for r in csv.DictReader(io.StringIO(result.stdout))] == ["se"]


# ----------------------------------------------------------------------------------------------- errors


def test_no_runs_is_a_user_error(tmp_path: Path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(UserError, match="no runs found below .*empty.*sweep folder"):
        load_runs([tmp_path / "empty"])
    with pytest.raises(UserError, match="does not exist"):
        load_runs([tmp_path / "missing"])
    result = invoke(tmp_path / "empty")
    assert isinstance(result.exception, UserError) and result.exit_code != 0


def test_write_sweep_table(sweep: Path):
    text = write_sweep_table(sweep)
    assert "nam" in text and "±" in text
    assert md_rows((sweep / "comparison.md").read_text())[0][0] == "data"
    assert len(list(csv.DictReader((sweep / "comparison.csv").open()))) == 3
    write_sweep_table(sweep)  # rewrites its own files


def test_plot_labels_name_p0_where_the_same_attention_also_has_a_penalty():
    from types import SimpleNamespace

    from namexp.compare.plots import _labeller

    groups = [
        SimpleNamespace(attention=a, sparsity=p, variant={}, runs=[1, 2])
        for a, p in [("none", 0.0), ("nam", 0.0), ("nam", 1e-4), ("se", 0.0)]
    ]
    label = _labeller(groups)
    assert [label(g) for g in groups] == ["none (n=2)", "nam p=0 (n=2)", "nam p=0.0001 (n=2)", "se (n=2)"]
