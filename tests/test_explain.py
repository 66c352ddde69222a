"""namexp explain: gate diagnostics tell a constant scale from a selecting gate, Grad-CAM is deterministic and
image-sized, and the command writes its outputs, logs to TensorBoard and refuses bad input in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from helpers import TINY_SYNTHETIC, one_error_line, run_inproc, train_once
from namexp.explain.gates import diagnose, gate_ratio, nam_slope_x_std, summarise
from namexp.explain.gradcam import gradcam
from namexp.explain.images import balanced_order
from namexp.models import build_model
from namexp.models.attention.baselines import HalfScale
from namexp.models.attention.nam import NAMChannel


class SteepGate(nn.Module):
    """x · sigmoid(10·x): a gate that varies strongly with its input."""

    def forward(self, x):
        return x * torch.sigmoid(10 * x)


class ChannelConstants(nn.Module):
    """x · c_k with a fixed factor per channel, from 0.3 to 0.7: channels differ, the input changes nothing."""

    def __init__(self, channels: int):
        super().__init__()
        self.register_buffer("factors", torch.linspace(0.3, 0.7, channels).view(1, -1, 1, 1))

    def forward(self, x):
        return x * self.factors


def site_summary(module: nn.Module, channels: int = 16):
    module.eval()
    x = torch.randn(8, channels, 6, 6, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return summarise("s", "m", gate_ratio(x, module(x)))


def test_constant_and_varying_gates_get_their_verdicts():
    assert site_summary(HalfScale(16)).verdict == "constant scale"
    assert site_summary(HalfScale(16)).mean == pytest.approx(0.5)
    nam = site_summary(NAMChannel(256), channels=256)  # at init: sigmoid(x̂ / C) ≈ 0.5
    assert nam.verdict == "constant scale" and abs(nam.mean - 0.5) < 0.01
    steep = site_summary(SteepGate())
    assert steep.verdict == "selects" and steep.p95 - steep.p05 > 0.5 and steep.std_positions > 0.1
    assert steep.varying_channels == 1.0 and nam.varying_channels == 0.0
    fixed = site_summary(ChannelConstants(16))
    assert fixed.verdict == "fixed per-channel scale" and fixed.varying_channels == 0.0
    assert fixed.p95 - fixed.p05 > 0.3 and fixed.std_positions < 1e-6 and fixed.std_images < 1e-6


def test_one_selecting_channel_is_found_where_the_site_wide_range_misses_it():
    """NAM after a long run: one channel's γ dominates, so w ≈ 1 there and ≈ 0 elsewhere -- fifteen
    channels at 0.5 and one real gate, which the site's 5-95 % range (over all values) leaves out."""
    nam = NAMChannel(16)
    with torch.no_grad():
        nam.channel.bn.weight.copy_(torch.tensor([1e-3] * 15 + [3.0]))
    x = torch.randn(8, 16, 6, 6, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        gate = gate_ratio(x, nam.eval()(x))
    summary = summarise("s", "nam", gate, nam_slope_x_std(nam.channel, x))
    assert summary.p95 - summary.p05 < 0.02  # the site-wide rule alone would call it a constant
    assert summary.varying_channels == pytest.approx(1 / 16) and summary.verdict == "selects"
    assert summary.slope_x_std < 0.01 and summary.slope_x_std_max > 2


def test_diagnose_reports_every_site_and_nam_slope():
    torch.manual_seed(0)
    model = build_model("resnet20", "nam", num_classes=10, image_size=32).eval()
    sites = diagnose(model, torch.randn(4, 3, 32, 32))
    assert len(sites) == 9 and all(s.slope_x_std is not None and s.slope_x_std < 0.2 for s in sites)
    half = diagnose(build_model("resnet20", "half", num_classes=10, image_size=32).eval(), torch.randn(2, 3, 32, 32))
    assert {s.verdict for s in half} == {"constant scale"} and all(s.slope_x_std is None for s in half)


def test_balanced_order_is_round_robin_and_seeded():
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2])
    order = balanced_order(labels)
    assert [int(labels[i]) for i in order[:6]] == [0, 1, 2, 0, 1, 2]
    assert order == balanced_order(labels) and sorted(order) == list(range(9))


def test_gradcam_is_deterministic_and_image_sized():
    torch.manual_seed(0)
    model = build_model("resnet20", "se", num_classes=10, image_size=32).eval()
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    targets = torch.tensor([0, 1, 2])
    first, second = gradcam(model, images, targets), gradcam(model, images, targets)
    assert first.shape == (3, 32, 32) and torch.equal(first, second)
    assert float(first.min()) >= 0 and float(first.max()) <= 1


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("explain")
    return train_once(base, base / "run", [*TINY_SYNTHETIC, "trainer.epochs=2"])


def scalar_events(run: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tb"), size_guidance={"scalars": 0})
    events.Reload()
    return events


def test_training_logs_gate_diagnostics_every_epoch(tiny_run):
    from namexp.train.gate_log import FIGURES

    epochs = json.loads((tiny_run / "record.json").read_text())["epochs"]
    gates = [e["gates"] for e in epochs]
    assert len(gates) == 2 and all(len(g) == 9 for g in gates)
    assert all(
        f["slope_x_std_max"] >= f["slope_x_std"] and 0 <= f["varying_channels"] <= 1 for g in gates for f in g.values()
    )
    assert all(f["module"] == "nam" and 0 < f["mean"] < 1 and f["slope_x_std"] >= 0 for g in gates for f in g.values())
    events = scalar_events(tiny_run)
    for site in gates[0]:
        for figure in FIGURES:
            logged = [e.value for e in events.Scalars(f"gates/{figure}/{site}")]
            assert logged == pytest.approx([g[site][figure] for g in gates], rel=1e-6)
    assert "gates" not in (tiny_run / "metrics.csv").read_text().splitlines()[0]  # the CSV keeps its columns


def test_gate_epochs_table_counts_the_selecting_sites_of_each_epoch(tiny_run):
    import subprocess
    import sys

    from namexp.explain.gates import CONSTANT_RANGE

    script = Path(__file__).resolve().parent.parent / "benchmarks" / "gate_epochs.py"
    proc = subprocess.run([sys.executable, str(script), str(tiny_run)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = [line.split(" | ") for line in proc.stdout.splitlines() if line.startswith(f"| {tiny_run.name} |")]
    rows = [row for row in rows if row[1].isdigit()]  # not the header (the run is called "run")
    epochs = json.loads((tiny_run / "record.json").read_text())["epochs"]
    assert [row[1] for row in rows] == [str(e["epoch"]) for e in epochs]
    for row, entry in zip(rows, epochs):
        wide = sum(f["range_5_95"] >= CONSTANT_RANGE for f in entry["gates"].values())
        varying = sum(f["varying_channels"] > 0 for f in entry["gates"].values())
        assert row[3] == f"{wide} / {varying} of 9" and row[2] == f"{entry['test_top1_err']:.2f}"
        assert len(row) == 7  # run, epoch, error, count, then layer1..layer3


def test_nam_gammas_table_has_a_row_per_gate(tiny_run):
    import subprocess
    import sys

    script = Path(__file__).resolve().parent.parent / "benchmarks" / "nam_gammas.py"
    proc = subprocess.run([sys.executable, str(script), str(tiny_run)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = [line.split(" | ") for line in proc.stdout.splitlines() if line.startswith("| layer")]
    assert [row[0] for row in rows] == [f"| layer{s}.{b}.channel" for s in (1, 2, 3) for b in (0, 1, 2)]
    assert all(float(row[4].rstrip(" |")) <= float(row[3]) for row in rows)  # w ≤ 1, so w·|γ| ≤ |γ|


def test_gate_logging_is_off_without_attention_or_when_asked(tmp_path):
    for name, extra in (("none", ["attention=none"]), ("off", ["trainer.log_gates=false"])):
        run = train_once(tmp_path, tmp_path / name, [*TINY_SYNTHETIC, *extra, "trainer.epochs=1"])
        assert "gates" not in json.loads((run / "record.json").read_text())["epochs"][0]
        assert not [t for t in scalar_events(run).Tags()["scalars"] if t.startswith("gates/")]


def test_explain_writes_outputs_and_tensorboard_images(tiny_run, tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = run_inproc(["explain", str(tiny_run), "--images", "4"], capsys)
    assert result.code == 0, result.err
    out = tiny_run / "explain"
    record = json.loads((out / "diagnostics.json").read_text())
    sites = record["runs"]["run"]
    assert len(sites) == 9 and all(s["verdict"] in ("constant scale", "selects") for s in sites)
    assert all(s["slope_x_std"] is not None for s in sites)
    assert "verdict" in (out / "diagnostics.md").read_text()
    assert (out / "gradcam.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    events = EventAccumulator(str(tiny_run / "tb"), size_guidance={"images": 0})
    events.Reload()
    assert "explain/gradcam" in events.Tags()["images"]

    before = (out / "diagnostics.json").read_bytes()
    refused = run_inproc(["explain", str(tiny_run), "--images", "2"], capsys)
    assert "already exists" in one_error_line(refused) and (out / "diagnostics.json").read_bytes() == before
    other = tmp_path / "two"
    both = run_inproc(["explain", str(tiny_run), str(tiny_run), "--images", "2", "-o", str(other)], capsys)
    assert both.code == 0, both.err
    assert len(json.loads((other / "diagnostics.json").read_text())["runs"]) == 2
    assert [p.name for p in other.glob("gradcam*.png")] == ["gradcam.png"]
    assert len(list(other.glob("channel_gates_*.png"))) == 2 and not list(other.glob("spatial_*"))  # one per run


def test_runs_on_other_data_or_backbones_get_a_grid_of_their_own(tiny_run, tmp_path, capsys):
    small = train_once(
        tmp_path, tmp_path / "small", [*TINY_SYNTHETIC, "attention=half", "data.image_size=16", "trainer.epochs=1"]
    )
    mobile = train_once(
        tmp_path, tmp_path / "mobile", [*TINY_SYNTHETIC, "backbone=mobilenetv2", "attention=se", "trainer.epochs=1"]
    )
    out = tmp_path / "out"
    given = [tiny_run, small, mobile, tiny_run.parent / "." / tiny_run.name]  # tiny_run twice: two columns
    result = run_inproc(["explain", *map(str, given), "--images", "2", "-o", str(out)], capsys)
    assert result.code == 0, result.err
    record = json.loads((out / "diagnostics.json").read_text())
    names = list(record["runs"])
    assert record["grids"] == {  # grouped by backbone and data, in the order given, never mixed
        "gradcam_1_resnet20_synthetic.png": [names[0], names[3]],
        "gradcam_2_resnet20_synthetic.png": [names[1]],
        "gradcam_3_mobilenetv2_synthetic.png": [names[2]],
    }
    grids = sorted(p.name for p in out.glob("gradcam*.png"))
    assert grids == sorted(record["grids"])
    widths = {name: Image.open(out / name).size[0] for name in grids}
    assert widths["gradcam_1_resnet20_synthetic.png"] > widths["gradcam_3_mobilenetv2_synthetic.png"]
    assert "gradcam_3_mobilenetv2_synthetic.png" in (out / "diagnostics.md").read_text()
    assert {s["module"] for s in record["runs"][names[2]]} == {"se"}
    sites = record["runs"][names[1]]
    assert {s["verdict"] for s in sites} == {"constant scale"} and {s["module"] for s in sites} == {"half"}
    logged = json.loads((small / "record.json").read_text())["epochs"][0]["gates"]  # per-epoch: the same verdict
    assert all(f["mean"] == pytest.approx(0.5) and f["range_5_95"] < 1e-6 for f in logged.values())


BAD_OPTIONS = {  # the options given -> what the one error line says
    "--images 0": "--images 0",
    "--images 100000": "out of range",
    "--split train": "--split train",
    "--checkpoint worst": "--checkpoint worst",
    "--indices 0,100000": "--indices 100000 is out of range",
    "--indices a,b": "--indices a,b",
    "--maps heat": "--maps heat",
}


@pytest.mark.parametrize("options", BAD_OPTIONS)
def test_bad_options_get_one_line(tiny_run, tmp_path, capsys, options):
    result = run_inproc(["explain", str(tiny_run), *options.split(), "-o", str(tmp_path / "out")], capsys)
    assert BAD_OPTIONS[options] in one_error_line(result)
    assert not (tmp_path / "out").exists()


def test_not_a_run_folder_gets_one_line(tmp_path, capsys):
    assert "not a run folder" in one_error_line(run_inproc(["explain", str(tmp_path)], capsys))


def test_missing_captum_names_the_extra(tiny_run, tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "captum.attr", None)
    result = run_inproc(["explain", str(tiny_run), "-o", str(tmp_path / "out")], capsys)
    assert "pip install 'namexp[explain]'" in one_error_line(result)


def test_channel_strip_and_spatial_map_follow_the_gate():
    from namexp.explain.maps import channel_strip, spatial_map

    gate = torch.ones(2, 4, 4, 4) * torch.arange(4.0)[None, :, None, None]  # channel c gates by c
    gate[:, :, :, :2] += 10  # left half of every image gated higher
    small = torch.full((2, 2, 4, 4), 0.5)
    strip = channel_strip({"a": gate, "b": small}, ["a", "b"])
    assert strip.shape == (2, 4) and list(strip[0]) == [5, 6, 7, 8] and list(strip[1, :2]) == [0.5, 0.5]
    assert np.isnan(strip[1, 2:]).all()
    upsampled = spatial_map(gate, (8, 8))
    assert upsampled.shape == (2, 8, 8) and float(upsampled[:, :, :3].min()) > float(upsampled[:, :, 5:].max())


def test_module_maps_are_drawn_and_logged_and_bad_requests_get_one_line(tiny_run, tmp_path, capsys):
    cbam = train_once(tmp_path, tmp_path / "cbam", [*TINY_SYNTHETIC, "attention=cbam", "trainer.epochs=1"])
    sites = "layer1.0.attention,layer3.2.attention"
    out = tmp_path / "out"
    result = run_inproc(["explain", str(cbam), "--images", "2", "--sites", sites, "-o", str(out)], capsys)
    assert result.code == 0, result.err
    for kind in ("channel", "spatial"):
        assert (out / f"{kind}_gates_cbam.png").read_bytes()[:4] == b"\x89PNG"
    events = EventAccumulator(str(cbam / "tb"), size_guidance={"images": 0})
    events.Reload()
    assert {"explain/channel_gates", "explain/spatial_gates"} <= set(events.Tags()["images"])

    refused = {  # options -> what the one error line says; nothing is written
        "--maps spatial": "has no spatial map",
        "--sites layer9.attention": "no attention site layer9.attention",
    }
    for options, said in refused.items():
        bad = run_inproc(["explain", str(tiny_run), *options.split(), "-o", str(tmp_path / "bad")], capsys)
        assert said in one_error_line(bad) and not (tmp_path / "bad").exists()


def test_indices_choose_the_images(tiny_run, tmp_path, capsys):
    out = tmp_path / "out"
    result = run_inproc(["explain", str(tiny_run), "--indices", "3,0,3", "--maps", "none", "-o", str(out)], capsys)
    assert result.code == 0, result.err
    record = json.loads((out / "diagnostics.json").read_text())
    assert record["indices"] == [3, 0, 3] and record["images"] == 3


@pytest.mark.long
def test_a_sweep_folder_stands_for_one_run_per_group(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NAMEXP_CACHE", str(tmp_path / "cache"))
        trained = run_inproc(
            ["train", "-m", *TINY_SYNTHETIC, "attention=half,se", "seed=0,1", "trainer.epochs=1",
             f"hydra.sweep.dir={sweep}"],
            capsys,
        )  # fmt: skip
    assert trained.code == 0, trained.err
    result = run_inproc(["explain", str(sweep), "--images", "2", "--seed", "1", "--maps", "none"], capsys)
    assert result.code == 0, result.err
    runs = json.loads((sweep / "explain" / "diagnostics.json").read_text())["runs"]
    seeds = {json.loads((sweep / name / "record.json").read_text())["seed"] for name in runs}
    modules = {sites[0]["module"] for sites in runs.values()}
    assert len(runs) == 2 and seeds == {1} and modules == {"half", "se"}
    missing = run_inproc(["explain", str(sweep), "--seed", "7", "-o", str(tmp_path / "o")], capsys)
    assert "no run with seed 7" in one_error_line(missing) and not (tmp_path / "o").exists()
