"""Per-layer statistics of NAM's normalised weights and of the gates it computes on real images.

Weights. For every NAM layer (channel part w_i = |γ_i| / Σ_j |γ_j|, spatial part w_p = |λ_p| / Σ_q |λ_q|)
and for the backbone BatchNorm right before each block-level site (|γ| normalised the same way, so the two
can be compared): min / median / max, mean, std, quantiles, and the share of weights below thresholds.

Threshold convention: a threshold t is a fraction of the uniform weight 1/n of its layer (n = channels, or
pixels for the spatial part), so "share below 0.1" is the share of weights w_i < 0.1 / n. A layer whose
weights are all equal has share 0 below every t <= 1, whatever its width; t = 0.1 is the "small weight"
fraction the training logs use (`nam_small_share/...` in TensorBoard).

Gates. The mean of sigmoid(w ⊙ BN(F)) per channel (per pixel for the spatial part) over the test images,
with every BatchNorm in eval mode -- what the trained network computes. Forward pre-hooks on the NAM gates
recompute the gate from its input in float32 (so the recording is the same whichever gate impl runs and
leaves the evaluation it rides on unchanged); the model code is untouched.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from namexp.models.attention import NAMModule
from namexp.train import runtime

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
DEFAULT_THRESHOLDS = (0.1, 0.5)


def threshold_key(t: float) -> str:
    """The JSON key of a threshold (e.g. 0.1 -> "0.1")."""
    return f"{t:g}"


def normalise(scale: Tensor) -> Tensor:
    """|s| / Σ|s| in float64 (NAM's code form, used for the backbone BNs too)."""
    s = scale.detach().double().abs().flatten().cpu()
    total = s.sum()
    return s / total if float(total) > 0 else torch.full_like(s, 1.0 / max(s.numel(), 1))


def summarize(weights: Tensor, thresholds: Sequence[float] = DEFAULT_THRESHOLDS) -> dict:
    """Distribution of one layer's normalised weights; `relative` gives them in units of the uniform 1/n."""
    w = weights.detach().double().flatten().cpu()
    n = int(w.numel())
    uniform = 1.0 / n
    q = torch.quantile(w, torch.tensor(QUANTILES, dtype=torch.float64)).tolist()
    return {
        "n": n,
        "uniform": uniform,
        "sum": float(w.sum()),
        "min": float(w.min()),
        "median": float(w.median()),
        "max": float(w.max()),
        "mean": float(w.mean()),
        "std": float(w.std(unbiased=False)),
        "quantiles": {threshold_key(p): v for p, v in zip(QUANTILES, q)},
        "relative": {"min": float(w.min()) * n, "median": float(w.median()) * n, "max": float(w.max()) * n},
        "below": {threshold_key(t): float((w < t * uniform).double().mean()) for t in thresholds},
        "negative": int((w < 0).sum()),  # only with abs_weights=False (the paper's form)
    }


def nam_parts(module: nn.Module) -> dict[str, Tensor]:
    """A NAM module's normalised weights per part ({"channel": w_c, "spatial": w_p}); {} for other modules."""
    if isinstance(module, NAMModule):
        return {part: w.detach().float().cpu() for part, w in module.nam_weights().items()}
    return {}


def nam_gates(module: nn.Module) -> dict[str, nn.Module]:
    """The gate submodules of a NAM module ({"channel": NAMChannelGate, "spatial": NAMPixelGate})."""
    if not isinstance(module, NAMModule):
        return {}
    return {name: child for name, child in module.named_children() if name in ("channel", "spatial")}


class GateRecorder:
    """Sums of sigmoid(w ⊙ BN(F)) per channel / pixel, computed by forward pre-hooks on the NAM gates.

    The hook recomputes the gate from the gate's input with the BatchNorm's running statistics (the model is
    in eval mode), in float32, so it reads the same values whichever ``impl`` the gate runs: the evaluation it
    rides on is the model's own, bit for bit (the masking study's 0 % point equals it exactly).
    """

    def __init__(self, sites: Iterable) -> None:
        self.sums: dict[tuple[str, str], Tensor] = {}
        self.counts: dict[tuple[str, str], int] = {}
        self.targets = [(site.site, part, gate) for site in sites for part, gate in nam_gates(site.module).items()]

    def _hook(self, key: tuple[str, str], part: str, gate: nn.Module):
        def hook(module: nn.Module, inputs) -> None:
            x = inputs[0].detach().float()
            if part == "spatial":  # (B, C, H, W) -> (B, H·W, C): one feature per pixel position
                x = x.flatten(2).transpose(1, 2)
            y = _bn_eval(gate.bn, x)
            w = gate.weights().detach().float().view((1, -1) + (1,) * (x.dim() - 2))
            g = torch.sigmoid(y * w)
            dims = [d for d in range(g.dim()) if d != 1]
            total = g.sum(dim=dims).double()
            self.sums[key] = self.sums[key] + total if key in self.sums else total
            self.counts[key] = self.counts.get(key, 0) + g.numel() // g.shape[1]

        return hook

    @contextlib.contextmanager
    def attached(self):
        handles = [
            gate.register_forward_pre_hook(self._hook((site, part), part, gate)) for site, part, gate in self.targets
        ]
        try:
            yield self
        finally:
            for h in handles:
                h.remove()

    def means(self) -> dict[str, dict[str, Tensor]]:
        out: dict[str, dict[str, Tensor]] = {}
        for (site, part), total in self.sums.items():
            out.setdefault(site, {})[part] = (total / max(self.counts[(site, part)], 1)).cpu()
        return out


def _bn_eval(bn: nn.modules.batchnorm._BatchNorm, x: Tensor) -> Tensor:
    """``bn(x)`` in float32 with its running statistics (batch statistics if it has none), changing nothing."""
    use_batch = bn.training or bn.running_mean is None
    weight = None if bn.weight is None else bn.weight.detach().float()
    bias = None if bn.bias is None else bn.bias.detach().float()
    if use_batch:
        return F.batch_norm(x, None, None, weight, bias, True, 0.0, bn.eps)
    return F.batch_norm(x, bn.running_mean.float(), bn.running_var.float(), weight, bias, False, 0.0, bn.eps)


@torch.no_grad()
def gate_means(
    model: nn.Module, sites: Sequence, loader, precision: str, device: torch.device
) -> dict[str, dict[str, Tensor]]:
    """Mean gate value per channel (per pixel for the spatial part) of every NAM site over `loader`, eval mode."""
    recorder = GateRecorder(sites)
    if not recorder.targets:
        return {}
    model.eval()
    with recorder.attached():
        for images, _ in loader:
            with runtime.autocast(precision, device):
                model(images)
    return recorder.means()


def layer_stats(
    sites: Sequence, thresholds: Sequence[float], gates: dict[str, dict[str, Tensor]] | None = None
) -> list[dict]:
    """One entry per block-level site: its NAM weights (per part, with gate means) and its preceding BN's |γ|."""
    gates = gates or {}
    low = min(thresholds) if thresholds else None
    out = []
    for site in sites:
        entry: dict = {"site": site.site, "module": site.module_name, "channels": site.channels, "nam": {}, "bn": None}
        for part, w in nam_parts(site.module).items():
            stats = summarize(w, thresholds)
            g = gates.get(site.site, {}).get(part)
            if g is not None:
                stats["gate_mean"] = float(g.mean())
                stats["gate_min"] = float(g.min())
                stats["gate_max"] = float(g.max())
                if low is not None:
                    small = w.double() < low / w.numel()
                    stats["gate_mean_below_lowest_threshold"] = float(g[small].mean()) if bool(small.any()) else None
                    stats["gate_mean_above_lowest_threshold"] = (
                        float(g[~small].mean()) if bool((~small).any()) else None
                    )
                stats["gate_per_unit"] = [float(v) for v in g.tolist()]
            entry["nam"][part] = stats
        if site.preceding_bn is not None:
            entry["bn"] = summarize(normalise(site.preceding_bn.weight), thresholds)
        out.append(entry)
    return out


def nam_weights_json(sites: Sequence) -> dict:
    """`{"layers": {"<site>": {"channel": [...], "spatial": [...]}}}` as compare's weight plot reads it."""
    layers = {}
    for site in sites:
        parts = nam_parts(site.module)
        if parts:
            layers[site.site] = {part: [float(v) for v in w.tolist()] for part, w in parts.items()}
    return {"layers": layers}
