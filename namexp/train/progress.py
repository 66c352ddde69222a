"""The live view of a training run: epoch, step, loss, images per second and ETA.

On a terminal it is a rich progress bar; elsewhere (a log file, a Slurm job, a test) a plain log line
now and then. It is updated only at the loop's logging intervals, when the loss has been read back
anyway, so it adds no host synchronisation.
"""

from __future__ import annotations

import logging
import sys
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

log = logging.getLogger("namexp")


class TrainingProgress:
    def __init__(self, mode: str, epochs: int, steps_per_epoch: int, enabled: bool = True):
        if mode == "auto":
            mode = "rich" if sys.stderr.isatty() else "plain"
        self.mode = mode if enabled else "none"
        self.enabled = enabled
        self.epochs, self.steps = epochs, steps_per_epoch
        self._progress: Progress | None = None
        self._task = None
        self._last_plain = 0.0

    def __enter__(self) -> TrainingProgress:
        if self.mode == "rich":
            self._progress = Progress(
                TextColumn("[bold]epoch {task.fields[epoch]}/{task.fields[epochs]}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"),
                TextColumn("{task.fields[speed]} img/s"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self._progress.__enter__()
            self._task = self._progress.add_task(
                "train", total=self.steps, epoch=0, epochs=self.epochs, loss="-", speed="-"
            )
        return self

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)

    def start_epoch(self, epoch: int, start_step: int = 0) -> None:
        if self._progress is not None:
            self._progress.reset(self._task, total=self.steps, completed=start_step, epoch=epoch, loss="-", speed="-")

    def update(self, epoch: int, step: int, loss: float, img_s: float) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=step, loss=f"{loss:.3f}", speed=f"{img_s:,.0f}")
        elif self.mode == "plain" and time.monotonic() - self._last_plain > 30:
            self._last_plain = time.monotonic()
            log.info("epoch %d/%d step %d/%d loss %.4f %.0f img/s", epoch, self.epochs, step, self.steps, loss, img_s)

    def epoch_done(self, summary: str) -> None:
        """The epoch's summary line goes to the log (and train.log) whatever the display mode."""
        if self.enabled:
            log.info(summary)
