"""SIGINT/SIGTERM/SIGUSR2: finish the current step, save a checkpoint, then stop.

A cluster sends SIGTERM some time before SIGKILL; Ctrl-C sends SIGINT; submitit's preemption and time-out
signal is SIGUSR2 (its own handler, restored when training ends, then requeues the job). Each one only sets
a flag that the training loop reads between steps, so the checkpoint it then writes is consistent.
"""

from __future__ import annotations

import signal
import threading

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2)


class Interrupted(BaseException):
    """Training stopped on a signal after saving a checkpoint.

    A BaseException, like KeyboardInterrupt: Hydra records ordinary exceptions of a sweep job and goes
    on with the next job, but a Ctrl-C or a cluster's SIGTERM must stop the whole sweep.
    """

    def __init__(self, signum: int, run_dir: str):
        self.signum = signum
        self.exit_code = 128 + signum
        name = signal.Signals(signum).name
        super().__init__(f"stopped by {name}: checkpoint saved; continue with namexp train --resume {run_dir}")


class StopFlag:
    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous = {}

    def __enter__(self) -> StopFlag:
        if threading.current_thread() is threading.main_thread():  # handlers can only be set there
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C stops at once
        if self.signum is None:  # the first signal says why (SIGUSR2 then the time limit's SIGTERM: a requeue)
            self.signum = signum

    @property
    def requested(self) -> bool:
        return self.signum is not None
