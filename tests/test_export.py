"""namexp export: folding is exact, every format runs back equal to PyTorch, and bad input changes nothing.

The cross product of every attention type, backbone family and format is a slow test (about 100 exports);
the default suite exports every attention type to torch.export and TorchScript on ResNet-20, five of them
(covering every kind of op the modules add) to ONNX, and each backbone family with nam_full in every format.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from helpers import read_record, run_inproc
from namexp.export.check import RELATIVE_TOLERANCE
from namexp.export.fold import GATE_FORMS, fold_for_inference
from namexp.export.formats import FORMATS, ExportOptions
from namexp.models import attention_names, build_model

FAMILIES = {
    "cifar_resnet": ("resnet20", {}),
    "resnet": ("resnet18", {}),
    "mobilenetv2": ("mobilenetv2", {"width_mult": 0.5}),
}


def has_onnx() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) for m in ("onnx", "onnxscript", "onnxruntime"))


needs_onnx = pytest.mark.skipif(not has_onnx(), reason="ONNX export needs the export extra: pip install -e '.[export]'")


def random_statistics(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every BatchNorm non-trivial running statistics and affine parameters, as training would."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) * 2 - 1)
            m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) - 0.5)
    return model.eval()


def model_of(family: str, attention: str) -> torch.nn.Module:
    backbone, kwargs = FAMILIES[family]
    torch.manual_seed(0)
    return random_statistics(build_model(backbone, attention, num_classes=10, image_size=32, **kwargs))


# The gate form only changes NAM's gates: the other types are folded once.
FOLDINGS = [(a, form) for a in attention_names() for form in (GATE_FORMS if a.startswith("nam") else ("affine",))]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(("attention", "gate_form"), FOLDINGS)
def test_folding_changes_logits_by_float_rounding_only(family, attention, gate_form):
    model = model_of(family, attention).double()
    folded = fold_for_inference(model, gate_form)
    x = torch.randn(4, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = model(x), folded(x)
    assert (got - expected).abs().max().item() <= 1e-10 * max(1.0, expected.abs().max().item())
    assert folded.folding["batchnorms_left"] == 0  # every BatchNorm in namexp's models sits after a conv/linear
    nam_gates = {"nam": 1, "nam_spatial": 1, "nam_full": 2}.get(attention, 0)
    assert folded.folding["nam_gates"] == nam_gates * sum(
        1 for n, _ in model.named_modules() if n.endswith(".attention")
    )


def exported_equals_pytorch(model: torch.nn.Module, fmt: str, tmp_path: Path) -> None:
    folded = fold_for_inference(model, gate_form="conv")  # as namexp export writes it
    path = tmp_path / f"model{FORMATS[fmt].suffix}"
    FORMATS[fmt].write(folded, torch.zeros(2, 3, 32, 32), path, ExportOptions(batch=2, dynamic_batch=True))
    runner = FORMATS[fmt].load(path)
    x = torch.randn(5, 3, 32, 32, generator=torch.Generator().manual_seed(2))  # another batch size than traced
    with torch.no_grad():
        expected, got = model(x), torch.as_tensor(runner(x))
    assert (got - expected).abs().max().item() <= RELATIVE_TOLERANCE * max(1.0, expected.abs().max().item())


def ort_ops(attention: str, gate_form: str, tmp_path: Path) -> dict[str, int]:
    """benchmarks/ort_nodes.py's op counts of ONNX Runtime's optimised graph of a folded ResNet-18."""
    import importlib.util

    script = Path(__file__).resolve().parent.parent / "benchmarks" / "ort_nodes.py"
    spec = importlib.util.spec_from_file_location("ort_nodes", script)
    ort_nodes = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ort_nodes)
    torch.manual_seed(0)
    return ort_nodes.optimised_ops("resnet18", attention, tmp_path, gate_form)


@needs_onnx
def test_onnx_runtime_keeps_the_conv_form_of_nam_in_its_blocked_layout(tmp_path):
    """The conv gate form stays in ONNX Runtime's NCHWc layout (as many layout conversions as `none`, sigmoid
    fused into the convolution); the affine form drops out of it at every gate. On a CPU where ONNX Runtime
    uses no blocked layout, both count no conversions and the test still holds."""
    none, conv, affine = (ort_ops(a, f, tmp_path) for a, f in (("none", "affine"), ("nam", "conv"), ("nam", "affine")))
    assert conv["ReorderOutput"] + conv["ReorderInput"] == none["ReorderOutput"] + none["ReorderInput"]
    assert conv["Sigmoid"] == 0 and affine["Sigmoid"] == 8  # fused into the gate's convolution
    if none["ReorderOutput"]:  # the blocked layout is in use on this CPU
        assert affine["ReorderOutput"] + affine["ReorderInput"] > none["ReorderOutput"] + none["ReorderInput"]


def format_params():
    return [pytest.param(f, marks=needs_onnx) if f == "onnx" else f for f in FORMATS]


# ONNX export takes ~5 s a model here: the default suite exports to ONNX the attention types whose ops differ
# most (gates, pooling + concat, permutes); the others go to ONNX in the slow tests.
ONNX_IN_DEFAULT_SUITE = {"none", "nam", "nam_full", "cbam", "tam"}


def attention_format_params():
    params = []
    for attention in attention_names():
        for fmt in FORMATS:
            marks = [needs_onnx] if fmt == "onnx" else []
            if fmt == "onnx" and attention not in ONNX_IN_DEFAULT_SUITE:
                marks.append(pytest.mark.slow)
            params.append(pytest.param(attention, fmt, marks=marks, id=f"{attention}-{fmt}"))
    return params


@pytest.mark.parametrize(("attention", "fmt"), attention_format_params())
def test_every_attention_type_exports_equal_to_pytorch(attention, fmt, tmp_path):
    exported_equals_pytorch(model_of("cifar_resnet", attention), fmt, tmp_path)


@pytest.mark.parametrize("fmt", format_params())
@pytest.mark.parametrize("family", ["resnet", "mobilenetv2"])
def test_every_backbone_family_exports_equal_to_pytorch(family, fmt, tmp_path):
    exported_equals_pytorch(model_of(family, "nam_full"), fmt, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", format_params())
@pytest.mark.parametrize("family", ["resnet", "mobilenetv2"])
@pytest.mark.parametrize("attention", attention_names())
def test_every_attention_on_every_family_in_every_format(attention, family, fmt, tmp_path):
    exported_equals_pytorch(model_of(family, attention), fmt, tmp_path)


# --- the command, on a real tiny run -----------------------------------------------------------------------

TINY_RUN = [
    "data=synthetic",
    "backbone=resnet20",
    "attention=nam",
    "trainer.epochs=1",
    "trainer.progress=none",
    "data.synthetic_train_size=128",
    "data.synthetic_test_size=64",
    "trainer.batch_size=32",
]


@pytest.fixture
def run_dir(capsys, tmp_path) -> Path:
    result = run_inproc(["train", *TINY_RUN, f"hydra.run.dir={tmp_path / 'run'}"], capsys)
    assert result.code == 0, result.err
    assert read_record(tmp_path / "run")["status"] == "completed"
    return tmp_path / "run"


def test_export_writes_a_checked_file_for_each_format(capsys, run_dir, tmp_path):
    formats = ["exported", "torchscript"] + (["onnx"] if has_onnx() else [])
    for fmt in formats:
        # Dynamic batch traced from the default --batch 1 (torch.export would specialise a traced size of 1).
        args = ["export", str(run_dir), "--format", fmt, "--check-images", "64", "--dynamic-batch"]
        result = run_inproc(args, capsys)
        assert result.code == 0, result.err
        out = run_dir / "exports" / f"last{FORMATS[fmt].suffix}"
        assert f"wrote {out.resolve()}" in result.out
        record = json.loads(out.with_name(out.name + ".check.json").read_text())
        assert record["check"]["passed"] and record["format"] == fmt and record["folding"]["nam_gates"] == 9
        assert record["folding"]["gate_form"] == "conv"
        assert record["input"]["mean"] == [0.5, 0.5, 0.5] and record["input"]["image_size"] == 32
        runner = FORMATS[fmt].load(out)
        assert torch.as_tensor(runner(torch.zeros(3, 3, 32, 32))).shape == (3, 10)  # any batch size
        images = record["check"]["inputs"]["test images"]
        assert images["images"] == 64 and images["top1_agreement"] == 1.0
        assert images["max_abs_diff"] <= images["tolerance"]
    assert not [p for p in (run_dir / "exports").iterdir() if p.name.startswith(".")]  # no temporary files left


def test_eval_times_the_folded_form_when_asked(capsys, run_dir):
    result = run_inproc(["eval", str(run_dir), "--folded"], capsys)
    assert result.code == 0, result.err
    (report,) = [json.loads(p.read_text()) for p in (run_dir / "evals").glob("*.json")]
    assert report["latency_form"] == "folded" and report["latency_ms_per_batch"] > 0


def assert_one_line_error(result, *words: str) -> None:
    assert result.code == 2, result.out + result.err
    assert "Traceback" not in result.err and result.err.count("\n") == 1, result.err
    for word in words:
        assert word in result.err, result.err


def test_bad_input_gets_one_line_and_changes_nothing(capsys, run_dir, tmp_path, monkeypatch):
    existing = tmp_path / "mine.pt2"
    existing.write_bytes(b"the user's file")
    result = run_inproc(["export", str(run_dir), "--format", "exported", "-o", str(existing)], capsys)
    assert_one_line_error(result, "already exists", "--force")
    best = run_dir / "checkpoints" / "best.pt"
    best_bytes = best.read_bytes()
    result = run_inproc(["export", str(run_dir), "--format", "torchscript", "-o", str(best), "--force"], capsys)
    assert_one_line_error(result, "run's own file")
    assert best.read_bytes() == best_bytes
    result = run_inproc(["export", str(run_dir), "--format", "exported", "-o", str(tmp_path / "m.onnx")], capsys)
    assert_one_line_error(result, "writes a .pt2 file")
    result = run_inproc(["export", str(run_dir), "--format", "tflite"], capsys)
    assert_one_line_error(result, "not an export format", "onnx, exported, torchscript")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes((run_dir / "checkpoints" / "last.pt").read_bytes()[:2000])
    assert_one_line_error(run_inproc(["export", str(corrupt), "--format", "exported"], capsys), "corrupt")
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    assert_one_line_error(
        run_inproc(["export", str(foreign), "--format", "exported"], capsys), "not a namexp checkpoint"
    )
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    result = run_inproc(["export", str(run_dir), "--format", "exported", "-o", str(blocked / "m.pt2")], capsys)
    assert_one_line_error(result, "cannot create the folder")
    # A check that fails (here: a tolerance nothing meets) deletes nothing, even with --force.
    monkeypatch.setattr("namexp.export.check.RELATIVE_TOLERANCE", -1.0)
    result = run_inproc(["export", str(run_dir), "--format", "exported", "-o", str(existing), "--force"], capsys)
    assert_one_line_error(result, "differs from the PyTorch model", "nothing was written")
    assert existing.read_bytes() == b"the user's file"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["a-file", "corrupt.pt", "foreign.pt", "mine.pt2", "run"]
    )


@needs_onnx
def test_deploy_bench_times_every_form_against_none(capsys, tmp_path):
    out = tmp_path / "deploy.json"
    args = ["bench", "--deploy", "data=synthetic", "backbone=resnet20", "--attentions", "nam"]
    result = run_inproc([*args, "--repeats", "1", "--steps", "2", "--batches", "1,4", "--output", str(out)], capsys)
    assert result.code == 0, result.err
    record = json.loads(out.read_text())
    assert [r["attention"] for r in record["rows"]] == ["none", "nam"]  # none added: the baseline
    for row in record["rows"]:
        assert set(row["forms"]) == {f"{f}@{b}" for f in ("eager", "folded", "onnxruntime") for b in (1, 4)}
        assert all(v["ms_per_batch"] > 0 for v in row["forms"].values())
    assert all(v["overhead_pct"] == 0 for v in record["rows"][0]["forms"].values())
    result = run_inproc([*args, "--batches", "0"], capsys)
    assert_one_line_error(result, "--batches")
