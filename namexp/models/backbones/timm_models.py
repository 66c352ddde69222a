"""timm backbones (``backbone=timm/<name>``, the optional extra ``namexp[timm]``) with namexp's attention.

timm's ResNet family (``timm.models.resnet``: resnet*, resnext*, wide_resnet*, seresnet*, ecaresnet*, ...)
builds its BasicBlock/Bottleneck with ``block_args=dict(attn_layer=...)``: each block calls
``create_attn(attn_layer, channels)`` and applies the module after its last BatchNorm, before the shortcut add
and the final activation -- the place namexp's own ResNets use. namexp passes its attention constructor there
(in place of the model's own ``se``/``eca`` in seresnet*/ecaresnet*), so only block attention fits: not bam or
nonlocal (between stages), nor the NAM variants with a spatial gate (timm's blocks do not tell their feature
map size). The model keeps timm's stem (7x7/2 + max-pool, or the deep stems of the *d variants), its
``attention.sites=all`` and timm's own init (He-normal fan_out convs and, with timm's ``zero_init_last``,
each residual branch's last BN weight 0, so attention sees zeros at the start); ``backbone.init=official_*``
re-initialises it as for namexp's backbones. Other timm families are refused.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import os
import socket

from torch import nn

from namexp.models.attention import AttentionLayer, NoAttention, layer_class, per_stage_options
from namexp.models.sites import SiteSpec

TIMM_PREFIX = "timm/"
# timm model families (the module defining the model) whose blocks take an attention layer.
SUPPORTED_FAMILIES = {"timm.models.resnet": "resnet (resnet*, resnext*, wide_resnet*, seresnet*, ecaresnet*, ...)"}
INSTALL_HINT = "pip install 'namexp[timm]'"


def is_timm(backbone: object) -> bool:
    return isinstance(backbone, str) and backbone.startswith(TIMM_PREFIX)


def timm_installed() -> bool:
    return importlib.util.find_spec("timm") is not None


def timm_version() -> str | None:
    """The installed timm's version, without importing it; None when it is not installed."""
    try:
        return importlib.metadata.version("timm")
    except importlib.metadata.PackageNotFoundError:
        return None


def check_timm_backbone(backbone: str) -> str:
    """The timm model name of ``backbone`` (``timm/<name>``); ValueError when timm or the model does not fit."""
    name = backbone.removeprefix(TIMM_PREFIX)
    if not timm_installed():
        raise ValueError(f"backbone {backbone} needs timm, which is not installed: {INSTALL_HINT}")
    from timm.models import is_model, model_entrypoint

    if not is_model(name):
        raise ValueError(f"timm has no model {name!r}: list them with timm.list_models('resnet*')")
    family = model_entrypoint(name).__module__
    if family not in SUPPORTED_FAMILIES:
        raise ValueError(
            f"{backbone} belongs to timm's {family.rsplit('.', 1)[-1]} family, whose blocks take no attention layer: "
            f"supported timm families: {'; '.join(SUPPORTED_FAMILIES.values())}"
        )
    return name


def check_timm_attention(backbone: str, attn_layer: AttentionLayer, sites: str) -> None:
    """ValueError for what timm's blocks cannot take: non-block attention, a spatial gate, sites, per-stage."""
    cls = layer_class(attn_layer)
    fits = cls.placement in ("block", "none") and not getattr(cls, "needs_spatial_size", False)
    if not fits:
        raise ValueError(
            f"attention {cls.attention_name} does not fit {backbone}: timm's blocks take only block attention "
            f"that needs no feature-map size (none, nam, se, cbam, tam, eca, half)"
        )
    if sites != "all":
        raise ValueError(f"attention.sites={sites} needs a namexp backbone: {backbone} takes sites=all only")
    if per_stage_options(attn_layer):
        raise ValueError(f"per-stage options {sorted(per_stage_options(attn_layer))} need a namexp backbone")


def _block_attention(attn_layer: AttentionLayer, channels: int, device=None, dtype=None) -> nn.Module:
    """What timm's ``create_attn(attn_layer, channels, device=..., dtype=...)`` calls at each block."""
    return attn_layer(channels).to(device=device, dtype=dtype)


def build_timm(
    backbone: str, *, num_classes: int, stem: str, attn_layer: AttentionLayer, sites: str, pretrained: bool
) -> nn.Module:
    """``timm.create_model`` of a ResNet-family model with ``attn_layer`` in every block (checked first)."""
    name = check_timm_backbone(backbone)
    check_timm_attention(backbone, attn_layer, sites)
    if stem == "cifar":
        raise ValueError(f"{backbone} keeps timm's stem: leave stem at auto (or imagenet)")
    import timm

    block = attn_layer if layer_class(attn_layer).placement == "block" else NoAttention
    kwargs = dict(num_classes=num_classes, block_args=dict(attn_layer=functools.partial(_block_attention, block)))
    if pretrained:
        _check_online(backbone)
    try:
        # Not strict: the checkpoint has no weights for namexp's attention modules (they keep their init).
        model = timm.create_model(name, pretrained=pretrained, pretrained_strict=False, **kwargs)
    except OSError as exc:  # the hub's errors for a missing connection or an uncached file are OSErrors
        reason = " ".join(str(exc).split())[:160]
        raise ValueError(f"cannot fetch the pretrained weights of {backbone}: {reason}") from None
    _record_sites(model)
    return model


HUB_HOST = ("huggingface.co", 443)


def _check_online(backbone: str) -> None:
    """Pretrained weights come from the Hugging Face hub: fail at once when it cannot be reached.

    With HF_HUB_OFFLINE set, timm reads weights already in the local cache instead (no check here).
    """
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return
    try:
        socket.create_connection(HUB_HOST, timeout=5).close()
    except OSError:
        raise ValueError(
            f"backbone.pretrained=true needs the network: {backbone}'s weights download from "
            f"{HUB_HOST[0]}, which cannot be reached (offline?); set pretrained=false, or HF_HUB_OFFLINE=1 "
            f"to use weights already in the local cache"
        ) from None


def _record_sites(model: nn.Module) -> None:
    """Site records on timm's blocks (their attention is ``se``, after ``bn2``/``bn3``), for attention_sites."""
    from timm.models.resnet import BasicBlock, Bottleneck

    where = "end of residual branch: after {bn}, before the shortcut add and final activation (timm's `se` slot)"
    for block in model.modules():
        if isinstance(block, (BasicBlock, Bottleneck)) and block.se is not None:
            bn = "bn2" if isinstance(block, BasicBlock) else "bn3"
            channels = getattr(block, bn).num_features
            block.attention_site_specs = [SiteSpec("se", "block", channels, None, where.format(bn=bn), bn)]
