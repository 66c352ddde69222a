"""Weight init of a whole model (``backbone.init``): torchvision's, or the one of an official repository.

* ``"torchvision"`` (default; what every backbone does when built): convs He-normal with fan_out (std =
  sqrt(2 / (C_out·k²))), conv biases 0, BatchNorm weight 1 / bias 0, Linear layers at PyTorch's default.
  Attention modules keep the init they give themselves.
* ``"official_nam"``: the official NAM repository's loop (github.com/Christian-lyc/NAM,
  ``MODELS/model_resnet.py``, over ``self.modules()``): every Conv2d gets ``kaiming_uniform_`` with its
  defaults (a = 0, fan_in: uniform, std = sqrt(2 / (C_in·k²))) and keeps PyTorch's default bias; every
  BatchNorm1d/2d weight 1 and bias 0, so CBAM's spatial-gate BN starts at weight 1 (the CBAM rule that zeroes
  it is commented out there); Linear layers keep PyTorch's default. It covers the backbone and the module
  families that repository holds (NAM, CBAM, BAM).
* ``"official_cbam"``: the CBAM/BAM authors' loop (github.com/Jongchan/attention-module,
  ``MODELS/model_resnet.py``, over the state-dict keys): the head Linear ``kaiming_normal_`` (fan_in: std =
  sqrt(2 / C_in)); every weight whose key holds "conv" He-normal with fan_out; every key holding "bn" weight
  1, except the CBAM spatial gate's BN weight 0; every bias 0, the MLP's and the head's included. As there,
  the projection shortcut's conv (key ``downsample.0.weight``, no "conv" in it) keeps PyTorch's default
  (kaiming_uniform with a = sqrt(5): std = 1 / sqrt(3·C_in)), and the MLP weights keep theirs. It covers the
  backbone and the CBAM and BAM modules.

Attention modules outside an init's families (se, eca, tam, nonlocal, ...) keep the init their own authors
give them (e.g. non-local's zero output BN) under every choice.
"""

from __future__ import annotations

from torch import nn

from .attention import CBAM, is_attention_module

INITS = ("torchvision", "official_nam", "official_cbam")
DEFAULT_INIT = "torchvision"
# The attention families each official repository holds, which its init loop therefore reaches.
FAMILIES = {
    "official_nam": ("nam", "nam_spatial", "nam_full", "cbam", "bam"),
    "official_cbam": ("cbam", "bam"),
}
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


def check_init(init: object) -> str:
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}: choose one of {', '.join(INITS)}")
    return init  # type: ignore[return-value]


def apply_init(model: nn.Module, init: str) -> None:
    """Re-initialise ``model`` as ``init`` says (``torchvision`` is how backbones are built: nothing to do)."""
    check_init(init)
    if init == "official_nam":
        _official_nam(model)
    elif init == "official_cbam":
        _official_cbam(model)


def _covered(model: nn.Module, init: str) -> list[tuple[str, nn.Module]]:
    """(name, module) of every module the init reaches: all but those inside attention of other families."""
    families = FAMILIES[init]
    skipped = {
        id(sub)
        for module in model.modules()
        if is_attention_module(module) and module.attention_name not in families
        for sub in module.modules()
    }
    return [(name, module) for name, module in model.named_modules() if id(module) not in skipped]


def _norm_to(module: nn.Module, weight: float) -> None:
    nn.init.constant_(module.weight, weight)
    nn.init.zeros_(module.bias)


def _official_nam(model: nn.Module) -> None:
    for _, module in _covered(model, "official_nam"):
        if isinstance(module, nn.Conv2d):
            module.reset_parameters()  # the bias as PyTorch makes it (the official loop leaves it alone)
            nn.init.kaiming_uniform_(module.weight)
        elif isinstance(module, _NORMS) and module.affine:
            _norm_to(module, 1.0)


def _official_cbam(model: nn.Module) -> None:
    spatial_bns = {id(m.spatial_gate.bn) for m in model.modules() if isinstance(m, CBAM)}
    covered = _covered(model, "official_cbam")
    linears = [m for name, m in covered if isinstance(m, nn.Linear) and not _in_attention(model, name)]
    head = linears[-1] if linears else None
    for name, module in covered:
        if isinstance(module, nn.Conv2d):
            if "downsample" in name.split("."):
                module.reset_parameters()
            else:
                nn.init.kaiming_normal_(module.weight, mode="fan_out")
        elif isinstance(module, _NORMS) and module.affine:
            _norm_to(module, 0.0 if id(module) in spatial_bns else 1.0)
            continue
        elif module is head:
            nn.init.kaiming_normal_(module.weight)
        if isinstance(module, (nn.Conv2d, nn.Linear)) and module.bias is not None:
            nn.init.zeros_(module.bias)


def _in_attention(model: nn.Module, name: str) -> bool:
    """Whether the module called ``name`` lies inside an attention module."""
    parts = name.split(".")
    return any(is_attention_module(model.get_submodule(".".join(parts[:i]))) for i in range(1, len(parts)))
