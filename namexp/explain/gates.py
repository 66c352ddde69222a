"""What each attention module multiplies in, captured on real images, and whether it varies at all.

A forward hook on every attention site records the module's gate as ``output / input`` where
``|input| > 1e-6`` (elsewhere it is undefined and left out): for every gating module here (NAM, SE, CBAM,
BAM, TAM, ECA, ``half``) that is exactly the factor it applies; for non-local blocks (``x + W·y``) it is the
relative change. Per site the summary holds the gate's mean, its spread over channels, positions and images,
the 5-95 % range and the fraction of values within ±0.01 of the mean.

Whether a gate depends on the input is asked per channel too: ``varying_channels`` is the share of channels
whose own gate (over images and positions) has a 5-95 % range of at least 0.02. The verdicts:
- "constant scale": the site's 5-95 % range is below 0.02 and no channel varies -- up to 2 %, one factor for
  every channel, position and image, like ``half``;
- "fixed per-channel scale": channels get different factors, but none varies with the input (a learned
  per-channel constant, not attention);
- "selects": at least one channel's gate varies with the image or position (``varying_channels`` says how
  many: a wide range can hide in a few channels that the site-wide 5-95 % range leaves out).

For NAM the eval-mode gate is ``sigmoid(a·x + b)`` with ``a = w·γ/√(σ²+ε)`` (``namexp.export.fold``);
``slope_x_std`` is the median over features of ``|a|·std(x)`` on these images, ``slope_x_std_max`` the
largest. Much below 1, the sigmoid barely moves over the inputs it sees: that feature's gate is a constant.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

INPUT_FLOOR = 1e-6
CONSTANT_RANGE = 0.02  # 5-95 % range below this: "constant scale"
NEAR_MEAN = 0.01


@dataclass
class SiteGate:
    site: str
    module: str
    mean: float
    std_channels: float
    std_positions: float
    std_images: float
    p05: float
    p95: float
    near_mean: float
    varying_channels: float
    verdict: str
    slope_x_std: float | None = None
    slope_x_std_max: float | None = None

    @property
    def range(self) -> float:
        return self.p95 - self.p05

    def to_record(self) -> dict:
        return {**asdict(self), "range_5_95": self.range}


def verdict(p05: float, p95: float, varying_channels: float) -> str:
    if varying_channels > 0:
        return "selects"
    return "constant scale" if p95 - p05 < CONSTANT_RANGE else "fixed per-channel scale"


def channel_ranges(gate: Tensor) -> Tensor:
    """Each channel's 5-95 % gate range over images and positions (C,); NaN for a channel with no value."""
    per_channel = gate.transpose(0, 1).reshape(gate.shape[1], -1).float()
    quantiles = torch.nanquantile(per_channel, torch.tensor([0.05, 0.95]), dim=1)
    return quantiles[1] - quantiles[0]


def _nanstd(t: Tensor, dim: int) -> Tensor:
    """The std of `t` along `dim` ignoring NaN, averaged over everything else (NaN-free)."""
    mean = t.nanmean(dim=dim, keepdim=True)
    std = ((t - mean) ** 2).nanmean(dim=dim).sqrt()
    return std.nanmean() if std.isfinite().any() else torch.tensor(0.0)


def gate_ratio(inputs: Tensor, output: Tensor) -> Tensor:
    """output / input where |input| > INPUT_FLOOR, NaN elsewhere, in float64, shape (N, C, H, W)."""
    x, y = inputs.double(), output.double()
    mask = x.abs() > INPUT_FLOOR
    return torch.where(mask, y / torch.where(mask, x, torch.ones_like(x)), torch.full_like(x, float("nan")))


def summarise(site: str, module: str, gate: Tensor, slopes: Tensor | None = None) -> SiteGate:
    """The summary of one site's gate values (N, C, H, W) with NaN where undefined; `slopes`: NAM's
    |a|·std(x) per feature, if the site has a NAM gate."""
    values = gate[gate.isfinite()]
    if values.numel() == 0:
        values = torch.zeros(1, dtype=torch.float64)
    positions = gate.flatten(2)
    p05, p95 = (float(q) for q in torch.quantile(values.float(), torch.tensor([0.05, 0.95])))
    mean = float(values.mean())
    ranges = channel_ranges(gate)
    varying = float((ranges[ranges.isfinite()] >= CONSTANT_RANGE).double().sum() / max(len(ranges), 1))
    return SiteGate(
        site=site,
        module=module,
        mean=mean,
        std_channels=float(_nanstd(gate, 1)),
        std_positions=float(_nanstd(positions, 2)),
        std_images=float(_nanstd(gate, 0)),
        p05=p05,
        p95=p95,
        near_mean=float(((values - mean).abs() <= NEAR_MEAN).double().mean()),
        varying_channels=varying,
        verdict=verdict(p05, p95, varying),
        slope_x_std=None if slopes is None else float(slopes.median()),
        slope_x_std_max=None if slopes is None else float(slopes.max()),
    )


def nam_slope_x_std(gate: nn.Module, x: Tensor) -> Tensor:
    """|a|·std(x) per feature of a NAM gate (channel: per channel over images and positions; pixel: per
    position over images and channels), for its input x of shape (N, C, H, W)."""
    from namexp.export.fold import gate_slope_offset
    from namexp.models.attention.nam import NAMPixelGate

    slope, _ = gate_slope_offset(gate)
    x = x.double()
    per_feature = x.flatten(2).transpose(0, 2) if isinstance(gate, NAMPixelGate) else x.transpose(0, 1)
    std = per_feature.reshape(per_feature.shape[0], -1).std(dim=1)
    return slope.abs().cpu() * std.cpu()


class GateRecorder(contextlib.AbstractContextManager):
    """Forward hooks on every attention site (and on NAM's own gates) while in the `with` block."""

    def __init__(self, model: nn.Module):
        from namexp.models import attention_sites

        self.sites = [s for s in attention_sites(model) if s.module != "none"]
        self.gates: dict[str, list[Tensor]] = {s.site: [] for s in self.sites}
        self.slopes: dict[str, list[Tensor]] = {s.site: [] for s in self.sites}
        self._model = model
        self._handles: list = []

    def __enter__(self) -> GateRecorder:
        from namexp.models.attention.nam import NAMChannelGate, NAMPixelGate

        for site in self.sites:
            module = self._model.get_submodule(site.site)
            self._handles.append(module.register_forward_hook(self._site_hook(site.site)))
            for sub in module.modules():
                if isinstance(sub, (NAMChannelGate, NAMPixelGate)):
                    self._handles.append(sub.register_forward_pre_hook(self._nam_hook(site.site, sub)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _site_hook(self, name: str):
        def hook(module, inputs, output):
            if isinstance(output, Tensor) and output.shape == inputs[0].shape:
                self.gates[name].append(gate_ratio(inputs[0].detach(), output.detach()).cpu())

        return hook

    def _nam_hook(self, name: str, gate: nn.Module):
        def hook(module, inputs):
            self.slopes[name].append(nam_slope_x_std(gate, inputs[0].detach()))

        return hook

    def summaries(self) -> list[SiteGate]:
        result = []
        for site in self.sites:
            if not self.gates[site.site]:
                continue
            slopes = torch.cat(self.slopes[site.site]) if self.slopes[site.site] else None
            result.append(summarise(site.site, site.module, torch.cat(self.gates[site.site]), slopes))
        return result


def record_gates(model: nn.Module, images: Tensor) -> GateRecorder:
    """Every attention site's gate on `images`, recorded in one forward pass without gradient."""
    with torch.no_grad(), GateRecorder(model) as recorder:
        model(images)
    return recorder


def diagnose(model: nn.Module, images: Tensor) -> list[SiteGate]:
    """Every attention site's gate summary on `images` (one eval forward pass, no gradient)."""
    return record_gates(model, images).summaries()
