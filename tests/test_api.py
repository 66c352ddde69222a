"""The public Python API: `from namexp import create_attention, build_model, list_attentions, list_backbones`.

The README's example runs as written; every attention type built through `create_attention` is the module a
config builds; `build_model` is the network `namexp train` builds; mistakes are ValueErrors that say what is
valid; `import namexp` alone does not import torch.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import namexp
from helpers import compose_run
from namexp import build_model, create_attention, list_attentions, list_backbones
from namexp.models import attention_names, attention_sites, backbone_names
from namexp.train.build import make_model

README = Path(__file__).resolve().parents[1] / "README.md"
API_SECTION = "## Use the modules in your own code"


def readme_api_example() -> str:
    """The first python block of the README's API section, exactly as written there."""
    text = README.read_text(encoding="utf-8")
    assert API_SECTION in text, f"the README lost its section {API_SECTION!r}"
    section = text.split(API_SECTION, 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match, f"no python example in the README's section {API_SECTION!r}"
    return match.group(1)


def test_readme_api_example_runs_as_written(capsys):
    exec(compile(readme_api_example(), str(README), "exec"), {"__name__": "readme_example"})
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == str(list_attentions()) and lines[1] == str(list_backbones())
    assert lines[2] == "unknown option 'ratio' for attention 'se': valid options are reduction"


def test_import_namexp_does_not_import_torch():
    code = (
        "import sys, namexp\n"
        "assert 'torch' not in sys.modules, 'import namexp imported torch'\n"
        "assert {'build_model', 'create_attention', 'list_attentions', 'list_backbones'} <= set(dir(namexp))\n"
        "namexp.list_attentions\n"
        "assert 'torch' in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_public_names_are_the_models_functions():
    from namexp import models

    assert namexp.create_attention is models.create_attention and namexp.build_model is models.build_model
    assert list_attentions() == attention_names() and list_backbones() == backbone_names()
    with pytest.raises(AttributeError, match="no attribute 'create_model'"):
        namexp.create_model  # noqa: B018


@pytest.mark.parametrize("name", attention_names())
def test_create_attention_is_the_module_the_config_builds(name):
    """Same class, options, parameters and outputs as the module at the first site of the config's model."""
    run = compose_run(["backbone=resnet20", "data=synthetic", f"attention={name}"])
    torch.manual_seed(0)
    model = make_model(run, run.data.num_classes, run.data.image_size)
    # With the same seed, the public build_model is the model `namexp train` builds, weight for weight.
    torch.manual_seed(0)
    public = build_model("resnet20", name, num_classes=run.data.num_classes, image_size=run.data.image_size)
    for (key, a), b in zip(model.state_dict().items(), public.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=0, atol=0, msg=lambda m, key=key: f"{key}: {m}")

    site = attention_sites(model)[0]
    built, channels, size = model.get_submodule(site.site), site.channels, site.spatial_size
    api = create_attention(name, channels, spatial_size=size)  # no options: the defaults are the config's
    assert type(api) is type(built) and api.extra_repr() == built.extra_repr()
    shapes = lambda m: {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert shapes(api) == shapes(built)
    api.load_state_dict(built.state_dict())  # strict: the same parameters and buffers, by name
    x = torch.randn(2, channels, *(size or (8, 8)), generator=torch.Generator().manual_seed(1))
    for train in (True, False):
        torch.testing.assert_close(api.train(train)(x), built.train(train)(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", attention_names())
def test_create_attention_with_a_seed_is_reproducible_with_the_config_options(name):
    run = compose_run(["data=synthetic", f"attention={name}"])
    x = torch.randn(2, 16, 8, 8, generator=torch.Generator().manual_seed(2))
    outputs = []
    for options in ({}, dict(run.attention.options)):
        torch.manual_seed(3)
        module = create_attention(name, 16, spatial_size=(8, 8), **options).eval()
        outputs.append((module.state_dict(), module(x)))
    (state_a, out_a), (state_b, out_b) = outputs
    assert list(state_a) == list(state_b)
    for key in state_a:
        torch.testing.assert_close(state_b[key], state_a[key], rtol=0, atol=0)
    torch.testing.assert_close(out_b, out_a, rtol=0, atol=0)


BAD_CALLS = [
    (lambda: create_attention("nma", 64), "unknown attention 'nma': choose one of none, nam"),
    (lambda: create_attention("nam", 64, abs=True), "unknown option 'abs' for attention 'nam': valid options are"),
    (lambda: create_attention("half", 64, reduction=4), "unknown option 'reduction' for attention 'half': it takes"),
    (lambda: create_attention("nam", 64, impl="fast"), "impl='fast' is not one of reference, fused, compiled"),
    (lambda: create_attention("cbam", 64, kernel_size=4), r"kernel_size=4 must be odd .*\(use 3 or 5\)"),
    (lambda: create_attention("se", 64, reduction=0), r"reduction=0 must be a positive integer"),
    (lambda: create_attention("nam", 0), "needs a positive integer channel count, got 0"),
    (lambda: create_attention("se", "64"), "needs a positive integer channel count, got '64'"),
    (lambda: create_attention("nam_spatial", 64), "needs the feature-map size"),
    (lambda: build_model("resnet19", "nam", num_classes=10), "unknown backbone 'resnet19': choose one of"),
    (lambda: build_model("resnet20", "nam", num_classes=0), "num_classes must be a positive integer, got 0"),
    (lambda: build_model("resnet20", "se", num_classes=10, attention_options={"r": 4}), "unknown option 'r'"),
]


@pytest.mark.parametrize("call, message", BAD_CALLS)
def test_mistakes_are_value_errors_that_say_what_is_valid(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_readme_switch_table_names_real_options_with_their_defaults():
    """Each `attention.options.X (name)` row of the README's switch table is an option of that module whose
    constructor default is the table's namexp default."""
    import inspect

    from namexp.models.attention import attention_option_names, get_attention_class

    text = README.read_text(encoding="utf-8").split("### Every paper/code difference is a switch", 1)[1]
    rows = re.findall(
        r"(?m)^\| `attention\.options\.(\w+)` \((\w+)[^)]*\) \|.*\| `([^`]+)` \((?:code|paper)\) \|$", text
    )
    assert {option for option, _, _ in rows} == {
        "abs_weights",
        "detach_weights",
        "combine",
        "bn_position",
        "kernel_size",
    }
    for option, name, default in rows:
        assert option in attention_option_names(name), (option, name)
        actual = inspect.signature(get_attention_class(name).__init__).parameters[option].default
        assert str(actual).lower().replace("none", "null") == default, (option, actual, default)


def test_ci_runs_the_readme_test_command_verbatim():
    command = re.search(r"(?m)^python3 -m venv \.venv && .*pip install -e .*pytest.*$", README.read_text())
    assert command and '".[test,export,timm,explain,tune]"' in command.group(0)  # optional features' tests run in CI
    assert command.group(0).endswith('pytest -m "not slow and not cluster and not long"')  # those run on their own
    ci = (README.parent / ".ci" / "run").read_text().splitlines()
    assert command.group(0) in ci
    assert ci.index(".venv/bin/python -m pytest -m long") > ci.index(command.group(0))
    assert ci.index(".venv/bin/python -m pytest -m cluster") > ci.index(command.group(0))
