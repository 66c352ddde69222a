"""TensorBoard logging for one run, hparams included in the same run.

`SummaryWriter.add_hparams` writes into a new sub-run (pytorch#32651), which splits a run in two on
the dashboard. Instead the hparams protos go to the run's own file writer (the pattern Lightning
uses), and the metrics they name are ordinary scalars of the same run.
All events use the global step (optimizer steps), so a resumed run can hide the killed run's
events after its checkpoint with `purge_step`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams as hparams_summary

from namexp.nested import flatten

HPARAM_METRICS = ("hparam/best_top1_err", "hparam/final_top1_err", "hparam/final_top5_err")
# A NAM weight counts as "small" below this fraction of the uniform weight 1/C.
SMALL_WEIGHT_FRACTION = 0.1


def hparam_values(config: Mapping, choices: Mapping[str, str]) -> dict[str, object]:
    """One fixed key set for every run; lists become strings (the hparams plugin takes scalars)."""
    values: dict[str, object] = {}
    for key, value in flatten(config).items():
        if value is None:
            value = "null"
        values[key] = value if isinstance(value, (bool, int, float, str)) else str(value)
    values.update({f"choice.{k}": str(v) for k, v in choices.items()})
    return values


class RunLogger:
    def __init__(self, log_dir: Path, purge_step: int | None = None):
        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step, flush_secs=30)

    def hparams(self, values: dict[str, object]) -> None:
        exp, ssi, sei = hparams_summary(values, {name: 0.0 for name in HPARAM_METRICS})
        file_writer = self.writer._get_file_writer()
        for summary in (exp, ssi, sei):
            file_writer.add_summary(summary)

    def scalars(self, values: Mapping[str, float | None], step: int) -> None:
        for tag, value in values.items():
            if value is not None:
                self.writer.add_scalar(tag, value, step)

    def nam(self, layers: Iterable, step: int) -> None:
        """Per NAM layer: L1 of its scales, share of small normalised weights, histograms of γ and w."""
        for site, module in layers:
            scales = module.nam_scales()
            for part, weights in module.nam_weights().items():
                scale = scales[part].detach()
                tag = f"{site}/{part}"
                self.writer.add_scalar(f"nam_l1/{tag}", float(scale.abs().sum()), step)
                small = (weights < SMALL_WEIGHT_FRACTION / weights.numel()).float().mean()
                self.writer.add_scalar(f"nam_small_share/{tag}", float(small), step)
                self.writer.add_histogram(f"nam_gamma/{tag}", scale.float().cpu(), step)
                self.writer.add_histogram(f"nam_weight/{tag}", weights.float().cpu(), step)

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()
