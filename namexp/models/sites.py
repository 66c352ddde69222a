"""Where attention modules sit in a network, as data.

Backbones record every attention slot they create as a ``SiteSpec`` in a plain list attribute
``attention_site_specs`` on the module that owns the slot (a block, or the backbone for slots between stages).
``attention_sites(model)`` turns those records into ``AttentionSite``s with qualified names; it walks
``named_modules()``, so it works through DataParallel/DDP (``module.``) and torch.compile (``_orig_mod.``).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

SITE_SPECS_ATTR = "attention_site_specs"


@dataclass(frozen=True)
class SiteSpec:
    """What a backbone records about one attention slot, relative to the module that owns it."""

    attr: str  # path of the attention module below the owner, e.g. "attention" or "stage_attention.layer1"
    kind: str  # "block", "stage" or "middle": the placement this slot serves
    channels: int
    spatial_size: tuple[int, int] | None
    where: str
    preceding_bn: str | None = None  # path of the BatchNorm right before the slot, below the owner


@dataclass
class AttentionSite:
    """One place an attention module sits, for ``namexp info`` and the run record."""

    site: str  # qualified module name, e.g. "layer1.0.attention"
    module: str  # attention name ("none" for an empty block-level slot)
    channels: int
    spatial_size: tuple[int, int] | None
    where: str  # human-readable placement
    preceding_bn: nn.BatchNorm2d | None  # backbone BN right before the site (None between stages)
    kind: str = "block"  # "block", "stage" or "middle"
    preceding_bn_name: str | None = None  # qualified name of preceding_bn

    def to_record(self) -> dict:
        """JSON-friendly form (the BatchNorm by name)."""
        return {
            "site": self.site,
            "module": self.module,
            "kind": self.kind,
            "channels": self.channels,
            "spatial_size": list(self.spatial_size) if self.spatial_size is not None else None,
            "where": self.where,
            "preceding_bn": self.preceding_bn_name,
        }


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _attention_name(module: nn.Module) -> str:
    name = getattr(type(module), "attention_name", None)
    if name is None and isinstance(module, nn.Identity):
        return "none"
    return name or type(module).__name__


def attention_sites(model: nn.Module) -> list[AttentionSite]:
    """One entry per place an attention module sits, in forward order within each kind.

    Block-level slots always exist; when the model's attention lives elsewhere (bam between stages,
    nonlocal in the middle stages) they hold an identity and are left out. For ``attention="none"`` only
    those identity block slots exist, and they are returned (module "none") so analysis code can hook them.
    """
    found: list[AttentionSite] = []
    for owner_name, owner in model.named_modules():
        for spec in getattr(owner, SITE_SPECS_ATTR, ()):
            module = owner.get_submodule(spec.attr)
            bn = owner.get_submodule(spec.preceding_bn) if spec.preceding_bn else None
            found.append(
                AttentionSite(
                    site=_join(owner_name, spec.attr),
                    module=_attention_name(module),
                    channels=spec.channels,
                    spatial_size=spec.spatial_size,
                    where=spec.where,
                    preceding_bn=bn,
                    kind=spec.kind,
                    preceding_bn_name=_join(owner_name, spec.preceding_bn) if spec.preceding_bn else None,
                )
            )
    occupied = [site for site in found if site.module != "none"]
    return occupied or found


PLACEMENT_KEYS = ("site", "module", "channels", "spatial_size", "where")  # what run records have always held


def placement_record(sites: list[AttentionSite]) -> list[dict]:
    """The run record's `placement` list: where each attention module sits."""
    return [{key: record[key] for key in PLACEMENT_KEYS} for record in (s.to_record() for s in sites)]
