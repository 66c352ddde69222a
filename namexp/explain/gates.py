"""What each attention module multiplies in, captured on real images, and whether it varies at all.

A forward hook on every attention site records the module's gate as ``output / input`` where
``|input| > 1e-6`` (elsewhere it is undefined and left out): for every gating module here (NAM, SE, CBAM,
BAM, TAM, ECA, ``half``) that is exactly the factor it applies; for non-local blocks (``x + W·y``) it is the
relative change. Per site the summary holds the gate's mean, its spread over channels, positions and images,
the 5-95 % range and the fraction of values within ±0.01 of the mean.

The constant-scale rule: a site whose gate has a 5-95 % range below 0.02 applies (up to 2 %) one
constant factor to every channel, position and image -- it scales, it does not select. Its verdict is
"constant scale"; every other site "selects".

For NAM the eval-mode gate is ``sigmoid(a·x + b)`` with ``a = w·γ/√(σ²+ε)`` (``namexp.export.fold``);
``slope_x_std`` is the median over features of ``|a|·std(x)`` on these images. Much below 1, the sigmoid
barely moves over the inputs it sees: the gate is a constant scale whatever its offset.
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
    verdict: str
    slope_x_std: float | None = None

    @property
    def range(self) -> float:
        return self.p95 - self.p05

    def to_record(self) -> dict:
        return {**asdict(self), "range_5_95": self.range}


def verdict(p05: float, p95: float) -> str:
    return "constant scale" if p95 - p05 < CONSTANT_RANGE else "selects"


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


def summarise(site: str, module: str, gate: Tensor, slope_x_std: float | None = None) -> SiteGate:
    """The summary of one site's gate values (N, C, H, W) with NaN where undefined."""
    values = gate[gate.isfinite()]
    if values.numel() == 0:
        values = torch.zeros(1, dtype=torch.float64)
    positions = gate.flatten(2)
    p05, p95 = (float(q) for q in torch.quantile(values.float(), torch.tensor([0.05, 0.95])))
    mean = float(values.mean())
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
        verdict=verdict(p05, p95),
        slope_x_std=slope_x_std,
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
            slopes = self.slopes[site.site]
            slope = float(torch.cat(slopes).median()) if slopes else None
            result.append(summarise(site.site, site.module, torch.cat(self.gates[site.site]), slope))
        return result


def record_gates(model: nn.Module, images: Tensor) -> GateRecorder:
    """Every attention site's gate on `images`, recorded in one forward pass without gradient."""
    with torch.no_grad(), GateRecorder(model) as recorder:
        model(images)
    return recorder


def diagnose(model: nn.Module, images: Tensor) -> list[SiteGate]:
    """Every attention site's gate summary on `images` (one eval forward pass, no gradient)."""
    return record_gates(model, images).summaries()
