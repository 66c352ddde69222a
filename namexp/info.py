"""`namexp info`: what a composed config builds, and every valid choice of every config group."""

from __future__ import annotations

from omegaconf import OmegaConf
from rich.console import Console
from rich.table import Table

from namexp.config import launch
from namexp.config.validate import to_run_config
from namexp.costs import FLOPS_NOTE, count_flops, count_params


def show_info(overrides: list[str], print_config: bool = False) -> int:
    from namexp.models import attention_sites
    from namexp.models.backbones import backbone_site_choices
    from namexp.train.build import make_model

    console = Console()
    with launch.hydra_app("info") as app:
        cfg = launch.job_config(launch.compose(app, overrides))
        run = to_run_config(cfg)
        groups = {g: launch.group_options(app, g) for g in launch.USER_GROUPS}
        groups["backbone"] += [f"timm/{name}" for name in launch.group_options(app, "backbone/timm")]
    model = make_model(run, run.data.num_classes, run.data.image_size)
    params, flops = count_params(model), count_flops(model, run.data.image_size)

    summary = Table(title=f"{run.backbone.name} + {run.attention.name} on {run.data.name}", show_header=False)
    summary.add_row("input", f"3 x {run.data.image_size} x {run.data.image_size}, {run.data.num_classes} classes")
    summary.add_row("parameters", f"{params:,}")
    summary.add_row("FLOPs / image", f"{flops:,} ({flops / 1e9:.3f} GFLOPs = {flops / 2e9:.3f} GMACs)")
    summary.add_row("sparsity", f"{run.sparsity:g} ({run.sparsity_mode})")
    console.print(summary)
    console.print(f"[dim]{FLOPS_NOTE}[/dim]")

    sites = attention_sites(model)
    placement = Table(title=f"attention placement ({len(sites)} sites, attention.sites={run.attention.sites})")
    for column in ("site", "module", "channels", "feature map", "where"):
        placement.add_column(column)
    for s in sites:
        size = "x".join(map(str, s.spatial_size)) if s.spatial_size else "-"
        placement.add_row(s.site, s.module, str(s.channels), size, s.where)
    console.print(placement)

    choices = Table(title="config groups (choose with group=option)")
    choices.add_column("group")
    choices.add_column("valid options")
    for group, options in groups.items():
        choices.add_row(group, ", ".join(options))
    choices.add_row(f"attention.sites ({run.backbone.name})", ", ".join(backbone_site_choices(run.backbone.name)))
    console.print(choices)
    if print_config:
        console.print(OmegaConf.to_yaml(cfg), markup=False, highlight=False)
    return 0
