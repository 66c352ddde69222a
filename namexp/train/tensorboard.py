"""TensorBoard logging for one run, hparams included in the same run.

`SummaryWriter.add_hparams` writes into a new sub-run (pytorch#32651), which splits a run in two on
the dashboard. Instead the hparams protos go to the run's own file writer (the pattern Lightning
uses), and the metrics they name are ordinary scalars of the same run.
All events use the global step (optimizer steps), so a resumed run can hide the killed run's
events after its checkpoint with `purge_step`.
The events are a view of what the record and metrics.csv hold: a disk that fails them (full, I/O error) stops
them with one warning and never stops the run.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams as hparams_summary

from namexp.files import os_reason
from namexp.nested import flatten

log = logging.getLogger("namexp")

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


def _unless_failed(method: Callable) -> Callable:
    """Run `method` until the event writer has failed once (its background thread re-raises the OSError on
    every later call); the first failure is a warning."""

    @functools.wraps(method)
    def guarded(self: RunLogger, *args, **kwargs) -> None:
        if self.failed is not None:
            return
        try:
            method(self, *args, **kwargs)
        except OSError as exc:
            self.failed = exc
            log.warning(
                "TensorBoard events in %s stopped (%s): record.json and metrics.csv still hold every epoch",
                self.log_dir, os_reason(exc),
            )  # fmt: skip

    return guarded


class RunLogger:
    def __init__(self, log_dir: Path, purge_step: int | None = None):
        self.log_dir, self.failed = log_dir, None
        self.writer = None
        self._open(purge_step)

    @_unless_failed
    def _open(self, purge_step: int | None) -> None:
        self.writer = SummaryWriter(log_dir=str(self.log_dir), purge_step=purge_step, flush_secs=30)

    @_unless_failed
    def hparams(self, values: dict[str, object]) -> None:
        exp, ssi, sei = hparams_summary(values, {name: 0.0 for name in HPARAM_METRICS})
        file_writer = self.writer._get_file_writer()
        for summary in (exp, ssi, sei):
            file_writer.add_summary(summary)

    @_unless_failed
    def scalars(self, values: Mapping[str, float | None], step: int) -> None:
        for tag, value in values.items():
            if value is not None:
                self.writer.add_scalar(tag, value, step)

    @_unless_failed
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
        self._flush()
        if self.writer is not None:
            try:
                self.writer.close()
            except OSError:
                pass  # said when it first failed

    @_unless_failed
    def _flush(self) -> None:
        self.writer.flush()
