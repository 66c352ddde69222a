"""The lease on a run folder: while a process trains it, the folder holds a lease file naming that process.

Safe on a shared filesystem (NFS, Lustre) without flock: the lease is created with O_CREAT|O_EXCL (atomic
there too), and kept alive by a heartbeat, a daemon thread that rewrites the file's mtime every
HEARTBEAT_S. A second writer -- another `namexp train --resume`, a requeued or resumed sweep job, here or
on another host -- is refused with the holder's host, pid and heartbeat age. A lease is stale, and taken
over with a message, when its process is gone (same host, dead pid) or its heartbeat is older than
STALE_AFTER_S (a host that died; clocks of the hosts are assumed to agree within that).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from namexp.errors import UserError
from namexp.run.layout import RunFolder

log = logging.getLogger("namexp")

HEARTBEAT_S = 5.0
STALE_AFTER_S = 10 * HEARTBEAT_S


@dataclass(frozen=True)
class LeaseInfo:
    """Who holds a run folder's lease, and how long ago its heartbeat was seen."""

    host: str
    pid: int
    started: float  # epoch seconds
    token: str
    age_s: float  # seconds since the last heartbeat (the file's mtime)

    @property
    def stale(self) -> bool:
        if self.age_s > STALE_AFTER_S:
            return True
        return self.host == socket.gethostname() and not pid_alive(self.pid)

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host} (last heartbeat {self.age_s:.0f} s ago)"


def holder(folder: Path) -> LeaseInfo | None:
    """The lease on `folder`, live or stale; None when nobody holds one."""
    path = RunFolder(folder).lease
    try:
        age = time.time() - path.stat().st_mtime
        data = json.loads(path.read_text() or "{}")
    except FileNotFoundError:
        return None
    except (OSError, ValueError):  # created a moment ago, not yet written: live until its mtime says otherwise
        data = {}
    return LeaseInfo(
        str(data.get("host", "?")), int(data.get("pid", -1)), float(data.get("started", 0)), str(data.get("token", "")),
        max(age, 0.0),
    )  # fmt: skip


def is_live(folder: Path) -> bool:
    """A process is training `folder` now (here or on another host): leave it alone."""
    info = holder(folder)
    return info is not None and not info.stale


def refuse_if_live(folder: Path) -> None:
    """The one-line error for a second writer, said before it touches anything."""
    info = holder(folder)
    if info is not None and not info.stale:
        raise UserError(
            f"{folder} is being trained by {info.describe()}: wait for it to end (or stop it), then "
            f"namexp train --resume {folder}"
        )


def pid_alive(pid) -> bool:
    """Whether process `pid` of this host is alive; True when unknown (not a positive int)."""
    if not isinstance(pid, int) or pid <= 0:
        return True  # unknown: only a heartbeat's age can tell
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Lease:
    """`with Lease(folder):` holds the folder's lease for the block, on every exit path released."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = RunFolder(folder).lease
        self.token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Lease:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        """Take the lease, or the one-line error naming the live holder."""
        while not self.try_acquire():
            refuse_if_live(self.folder)  # returns only if the holder went stale meanwhile: try again

    def wait_and_acquire(self, on_wait: Callable[[LeaseInfo], None]) -> None:
        """Take the lease, waiting as long as a live process holds it; `on_wait(holder)` is told once."""
        told = False
        while not self.try_acquire():
            info = holder(self.folder)
            if info is not None and not told:
                on_wait(info)
                told = True
            time.sleep(HEARTBEAT_S)

    def try_acquire(self) -> bool:
        """Take the lease unless a live process holds it (a stale lease is taken over); False when one does."""
        while True:
            if self._create():
                break
            info = holder(self.folder)
            if info is None:
                continue  # released between our try and our look
            if not info.stale:
                return False
            self._take_over(info)
        self._thread = threading.Thread(target=self._beat, name="namexp-lease", daemon=True)
        self._thread.start()
        return True

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._ours():
            self.path.unlink(missing_ok=True)

    def _create(self) -> bool:
        content = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time(), "token": self.token}
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            json.dump(content, f)
        return True

    def _take_over(self, stale: LeaseInfo) -> None:
        """Move the stale lease aside under a name of our own; if what moved was not the stale one (another
        process took over first), put it back. Either way the caller tries to create the lease again."""
        aside = self.path.with_name(f"{self.path.name}.stale-{self.token}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        try:
            moved = json.loads(aside.read_text() or "{}").get("token", "")
        except (OSError, ValueError):
            moved = ""
        if moved != stale.token:
            try:
                os.link(aside, self.path)  # fails if a lease is there again: then that one stands
            except OSError:
                pass
        else:
            log.warning("%s: taking over the stale lease of %s", self.folder, stale.describe())
        aside.unlink(missing_ok=True)

    def _ours(self) -> bool:
        try:
            return json.loads(self.path.read_text()).get("token") == self.token
        except (OSError, ValueError):
            return False

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            if not self._ours():
                log.error("%s: the run folder's lease was taken by another process", self.folder)
                return
            try:
                os.utime(self.path)
            except OSError as exc:  # a full or unreachable disk: training goes on, the lease may go stale
                log.warning("%s: lease heartbeat failed: %s", self.folder, exc)
