"""Channel masking at the block-level attention sites: rankings, masks by forward hooks, the study, fine-tuning.

Every block-level attention site (the end of each residual branch; an identity module when the run has no
block attention) gets a 0/1 channel mask on its module's output through a forward hook. For NAM, whose
output is sigmoid(w ⊙ BN(F)) ⊙ F, zeroing a channel of the output is exactly setting that channel's gate to
zero. The model code is never changed, and hooks are removed when a context ends.

Rankings (lowest score = least important = masked first), computed per layer:
- ``nam``: NAM's own channel weight |w_i| = |γ_i| / Σ|γ_j| of the site's NAM module (only where every site
  has a NAM channel submodule: nam, nam_full);
- ``bn``: |γ_i| of the backbone BatchNorm right before the site (the network-slimming criterion);
- ``random``: a random permutation per layer from ``torch.Generator().manual_seed(seed)`` (sites in forward
  order), so a seed always gives the same masks.
Ties keep the lower channel index first (stable sort).

A ratio r masks k = floor(r · C + 1e-9) channels of a layer with C channels (r in [0, 1), so at least one
channel always stays); ratio 0 masks nothing, with the hooks still in place (multiplying by 1 is exact).
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from namexp.errors import UserError
from namexp.evaluation.metrics import split_metrics
from namexp.models.attention import NAMModule
from namexp.models.sites import SITE_SPECS_ATTR, AttentionSite, _attention_name, _join
from namexp.train import runtime
from namexp.train.step import training_step

RANKINGS = ("nam", "bn", "random")
DEFAULT_RATIOS = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7)
SITE_RECORD_KEYS = ("site", "module", "channels", "where")  # of AttentionSite.to_record, in analysis.json


@dataclass(frozen=True)
class BlockSite:
    """A block-level site as `models/sites.py` describes it, with the module the rankings and hooks read."""

    place: AttentionSite
    module: nn.Module

    @property
    def site(self) -> str:  # qualified module name, e.g. "layer1.0.attention"
        return self.place.site

    @property
    def module_name(self) -> str:  # attention name ("none" for an identity slot)
        return self.place.module

    @property
    def channels(self) -> int:
        return self.place.channels

    @property
    def preceding_bn(self) -> nn.BatchNorm2d | None:
        return self.place.preceding_bn

    @property
    def nam_channel(self) -> bool:
        return isinstance(self.module, NAMModule) and "channel" in self.module.nam_weights()

    def to_record(self) -> dict:
        """The analysis record's `sites` entry."""
        return {key: value for key, value in self.place.to_record().items() if key in SITE_RECORD_KEYS}


def every_site(model: nn.Module) -> list[AttentionSite]:
    """Every attention slot of `model` in forward order, occupied or not.

    `attention_sites` leaves the empty block-level slots out when the attention sits elsewhere (bam between
    stages, nonlocal in the middle stages); analyze masks them all the same. Belongs in models/sites.py.
    """
    found = []
    for owner_name, owner in model.named_modules():
        for spec in getattr(owner, SITE_SPECS_ATTR, ()):
            site = _join(owner_name, spec.attr)
            bn = _join(owner_name, spec.preceding_bn) if spec.preceding_bn else None
            found.append(
                AttentionSite(
                    site,
                    _attention_name(model.get_submodule(site)),
                    spec.channels,
                    spec.spatial_size,
                    spec.where,
                    model.get_submodule(bn) if bn else None,
                    spec.kind,
                    bn,
                )
            )
    return found


def block_sites(model: nn.Module) -> list[BlockSite]:
    """Every block-level site in forward order, occupied or not (bam/nonlocal runs keep identity slots there)."""
    return [BlockSite(place, model.get_submodule(place.site)) for place in every_site(model) if place.kind == "block"]


def available_rankings(sites: Sequence[BlockSite]) -> list[str]:
    out = []
    if sites and all(s.nam_channel for s in sites):
        out.append("nam")
    if sites and all(s.preceding_bn is not None for s in sites):
        out.append("bn")
    out.append("random")
    return out


def channel_scores(sites: Sequence[BlockSite], ranking: str, seed: int | None = None) -> dict[str, Tensor]:
    """Per site, one importance score per channel (lower = masked first)."""
    if ranking == "nam":
        missing = [s.site for s in sites if not s.nam_channel]
        if missing:
            raise UserError(
                f"ranking nam needs a NAM channel submodule at every block-level site ({missing[0]} has none): "
                "use --rankings bn,random"
            )
        return {s.site: s.module.nam_weights()["channel"].detach().double().abs().cpu() for s in sites}
    if ranking == "bn":
        missing = [s.site for s in sites if s.preceding_bn is None]
        if missing:
            raise UserError(
                f"ranking bn needs a BatchNorm right before every site ({missing[0]} has none): use --rankings nam,random"
            )
        return {s.site: s.preceding_bn.weight.detach().double().abs().cpu() for s in sites}
    if ranking == "random":
        if seed is None:
            raise ValueError("the random ranking needs a seed")
        g = torch.Generator().manual_seed(int(seed))
        return {s.site: torch.randperm(s.channels, generator=g).double() for s in sites}
    raise UserError(f"unknown ranking {ranking!r}: use {', '.join(RANKINGS)}")


def channel_order(scores: dict[str, Tensor]) -> dict[str, Tensor]:
    """Channels per site from least to most important (stable: ties keep the lower index first)."""
    return {site: torch.sort(s, stable=True).indices for site, s in scores.items()}


def masked_count(ratio: float, channels: int) -> int:
    """How many of a layer's channels a ratio masks: floor(ratio · C), guarded against float round-off."""
    return int(math.floor(ratio * channels + 1e-9))


def make_masks(order: dict[str, Tensor], ratio: float) -> dict[str, Tensor]:
    """Per site, a float 0/1 keep-mask with the floor(ratio·C) lowest-ranked channels at 0."""
    masks = {}
    for site, idx in order.items():
        keep = torch.ones(idx.numel())
        keep[idx[: masked_count(ratio, idx.numel())]] = 0.0
        masks[site] = keep
    return masks


def mask_signature(masks: dict[str, Tensor]) -> tuple:
    """A hashable form of a set of masks (equal masks evaluate once)."""
    return tuple((site, tuple(torch.nonzero(m == 0).flatten().tolist())) for site, m in sorted(masks.items()))


def _mask_hook(keep: Tensor):
    shaped = keep.view(1, -1, 1, 1)

    def hook(module: nn.Module, inputs, output: Tensor) -> Tensor:
        return output * shaped.to(dtype=output.dtype)

    return hook


@contextlib.contextmanager
def masks_applied(model: nn.Module, masks: dict[str, Tensor]):
    """Multiply each site module's output by its channel mask while the context is open."""
    handles = []
    device = next(model.parameters()).device
    try:
        for site, keep in masks.items():
            module = model.get_submodule(site)
            handles.append(module.register_forward_hook(_mask_hook(keep.to(device))))
        yield
    finally:
        for h in handles:
            h.remove()


def evaluate_masked(model: nn.Module, masks: dict[str, Tensor], loader, precision: str, device: torch.device) -> dict:
    with masks_applied(model, masks):
        return split_metrics(model, loader, precision, device)


@dataclass
class FinetuneRecipe:
    epochs: int
    lr: float
    optim: object  # the run's OptimConfig (name, momentum, weight decay, nesterov); lr replaced
    precision: str
    seed: int


def finetune(
    model: nn.Module, masks: dict[str, Tensor], train_loader, recipe: FinetuneRecipe, device: torch.device
) -> nn.Module:
    """A fine-tuned copy of `model` with the masks held in place; `model` itself is not touched.

    The run's optimizer type, momentum and weight decay with lr `recipe.lr`, decayed by half a cosine to 0
    over the fine-tune steps; plain cross-entropy (no sparsity penalty); BatchNorms in train mode.
    """
    from dataclasses import replace

    from namexp.config.schema import SchedConfig
    from namexp.train.build import LRSchedule, make_optimizer

    if any(m._forward_hooks for m in model.modules()):
        raise RuntimeError("fine-tune a model without hooks (deepcopy would copy them)")
    net = copy.deepcopy(model)
    torch.manual_seed(recipe.seed)
    optimizer = make_optimizer(net, replace(recipe.optim, lr=recipe.lr))
    steps = len(train_loader)
    schedule = LRSchedule(SchedConfig(name="cosine", milestones=[], warmup_epochs=0), recipe.lr, recipe.epochs, steps)
    scaler = runtime.grad_scaler(recipe.precision, device)
    loss = None
    with masks_applied(net, masks):
        net.train()
        for epoch in range(recipe.epochs):
            for step, (images, labels) in enumerate(train_loader.epoch(epoch)):
                LRSchedule.apply(optimizer, schedule.lr_at(epoch, step))
                loss = training_step(net, images, labels, optimizer, scaler, recipe.precision, device)[1]
            if loss is not None and not math.isfinite(float(loss.detach())):
                raise UserError(f"fine-tuning diverged (loss {float(loss)}): lower --finetune-lr")
    net.eval()
    return net


@dataclass
class StudyPlan:
    ratios: Sequence[float] = DEFAULT_RATIOS
    rankings: Sequence[str] = RANKINGS
    random_seeds: Sequence[int] = (0, 1, 2)
    finetune_ratios: Sequence[float] = (0.3,)
    finetune_epochs: int = 1
    finetune_lr: float = 0.01
    finetune_all_seeds: bool = False

    def orders(self, sites: Sequence[BlockSite]) -> list[tuple[str, int | None, dict[str, Tensor]]]:
        """(ranking, seed, channel order per site) for every ranking and random seed of the plan."""
        out = []
        for ranking in self.rankings:
            for seed in self.random_seeds if ranking == "random" else (None,):
                out.append((ranking, seed, channel_order(channel_scores(sites, ranking, seed))))
        return out


@dataclass
class StudyResult:
    entries: list = field(default_factory=list)
    evaluations: int = 0  # distinct evaluations run (equal masks are evaluated once)
    finetunes: int = 0


def run_study(
    model: nn.Module,
    sites: Sequence[BlockSite],
    test_loader,
    precision: str,
    device: torch.device,
    plan: StudyPlan,
    *,
    train_loader=None,
    recipe: FinetuneRecipe | None = None,
    report: Callable[[dict], None] = lambda entry: None,
) -> StudyResult:
    """The masking study: the `masking` entries of analysis.json, in plan order (fine-tuned ones last)."""
    result = StudyResult()
    cache: dict[tuple, dict] = {}
    total = sum(s.channels for s in sites)
    orders = plan.orders(sites)

    def entry(ranking, seed, ratio, finetuned, metrics, masks):
        masked = sum(int((m == 0).sum()) for m in masks.values())
        e = {
            "ranking": ranking,
            "ratio": float(ratio),
            "finetuned": finetuned,
            "seed": seed,
            "test_top1_err": metrics["top1_err"],
            "test_top5_err": metrics["top5_err"],
            "test_loss": metrics["loss"],
            "images": int(metrics["images"]),
            "masked_channels": masked,
            "total_channels": total,
        }
        if finetuned:
            e.update({"finetune_epochs": recipe.epochs, "finetune_lr": recipe.lr})
        result.entries.append(e)
        report(e)

    for ranking, seed, order in orders:
        for ratio in plan.ratios:
            masks = make_masks(order, ratio)
            key = (False, mask_signature(masks))
            if key not in cache:
                cache[key] = evaluate_masked(model, masks, test_loader, precision, device)
                result.evaluations += 1
            entry(ranking, seed, ratio, False, cache[key], masks)

    if recipe is not None and recipe.epochs > 0 and plan.finetune_ratios:
        if train_loader is None:
            raise ValueError("fine-tuning needs a train loader")
        first_seed = plan.random_seeds[0] if plan.random_seeds else None
        for ranking, seed, order in orders:
            if ranking == "random" and seed != first_seed and not plan.finetune_all_seeds:
                continue
            for ratio in plan.finetune_ratios:
                masks = make_masks(order, ratio)
                key = (True, mask_signature(masks))
                if key not in cache:
                    tuned = finetune(model, masks, train_loader, recipe, device)
                    cache[key] = evaluate_masked(tuned, masks, test_loader, precision, device)
                    del tuned
                    result.finetunes += 1
                entry(ranking, seed, ratio, True, cache[key], masks)
    return result


def check_rankings(requested: Iterable[str], sites: Sequence[BlockSite], attention: str) -> list[str]:
    """The rankings to run, in canonical order; UserError for unknown or unavailable ones."""
    requested = list(requested)
    unknown = [r for r in requested if r not in RANKINGS]
    if unknown:
        raise UserError(
            f"unknown ranking {unknown[0]!r}: use a comma list of {', '.join(RANKINGS)} (e.g. --rankings nam,bn,random)"
        )
    available = available_rankings(sites)
    missing = [r for r in requested if r not in available]
    if missing:
        why = {
            "nam": f"attention={attention} has no NAM channel weights at its block-level sites",
            "bn": "not every site has a BatchNorm right before it",
        }.get(missing[0], "")
        raise UserError(
            f"ranking {missing[0]} is not available for this run ({why}): use --rankings {','.join(available)}"
        )
    return [r for r in RANKINGS if r in requested]
