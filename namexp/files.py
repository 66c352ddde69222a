"""Writing output files: atomically (a reader or a crash never sees half of one), never over a user's file
without --force, in the format --format names or the file's suffix implies.

A write that fails (disk full, I/O error, read-only folder) leaves the file as it was and raises `WriteFailed`:
a one-line UserError naming the file and the OS error.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

from namexp.errors import UserError


def _umask() -> int:
    try:  # Linux says it without changing it
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0)  # elsewhere the only way to read it is to set it; put it back at once
    os.umask(mask)
    return mask


def new_file_mode() -> int:
    """The permissions an ordinary new file gets (0o666 less the umask).

    mkstemp creates files readable by their owner only; a run folder, a table or a checkpoint must be
    readable as any other new file is (colleagues on a shared cluster read each other's runs).
    """
    return 0o666 & ~_umask()


class WriteFailed(UserError):
    """A file could not be written; the file as it was (if any) is still in place, no temporary is left."""

    def __init__(self, path: Path, error: OSError, then: str = "run the command again (the file as it was is kept)"):
        self.path, self.error, self.then = Path(path), error, then
        super().__init__(f"could not write {path}: {os_reason(error)} -- {_fix(error)} and {then}")

    def __reduce__(self):  # sweep launchers pickle a job's exception
        return type(self), (self.path, self.error, self.then)

    def next_step(self, then: str) -> WriteFailed:
        """The same failure, ending with what the user does next (e.g. the command that resumes a run)."""
        return WriteFailed(self.path, self.error, then)


def os_reason(error: OSError) -> str:
    """`[Errno 28] No space left on device` (without the temporary file's name an OSError may carry)."""
    return f"[Errno {error.errno}] {error.strerror}" if error.errno else str(error)


def _fix(error: OSError) -> str:
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return "free space"
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "make the folder writable"
    return "check the disk"


def write_atomic(
    path: Path,
    write: Callable[[IO], None],
    *,
    binary: bool = False,
    sync: bool = False,
    install: Callable[[Path], None] | None = None,
) -> None:
    """Call ``write(file)`` on a temporary file in the same folder, then rename it over `path` (atomic on POSIX).

    `sync` flushes the file to disk before the rename (and the folder after it). `install(temporary)` replaces
    the rename when the new file must go in another way (a checkpoint rotates the old one first); it runs only
    once the file is complete. An OSError anywhere is a `WriteFailed`, with `path` as it was.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as f:
            os.fchmod(f.fileno(), new_file_mode())
            write(f)
            if sync:
                f.flush()
                os.fsync(f.fileno())
        if install is not None:
            install(Path(tmp))
        else:
            os.replace(tmp, path)
        tmp = None
        if sync:
            sync_folder(path.parent)
    except OSError as exc:
        raise WriteFailed(path, exc) from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                Path(tmp).unlink(missing_ok=True)


def sync_folder(folder: Path) -> None:
    """Make renames in `folder` durable (best effort: not every system can open a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` atomically."""
    write_atomic(path, lambda f: f.write(text))


def output_format(
    fmt: str | None, output: Path | None, formats: Sequence[str], suffixes: Mapping[str, str]
) -> str | None:
    """The table format a command writes: ``--format`` (``md``/``tex`` accepted), else ``--output``'s suffix."""
    aliases = {"md": "markdown", "tex": "latex", **{f: f for f in formats}}
    if fmt is not None:
        resolved = aliases.get(fmt.strip().lower())
        if resolved not in formats:
            raise UserError(f"unknown --format {fmt!r}: use one of {', '.join(formats)}")
        return resolved
    if output is not None:
        resolved = suffixes.get(output.suffix.lower())
        if resolved is None:
            raise UserError(
                f"cannot tell the format of --output {output} from its suffix: pass --format "
                f"{'|'.join(formats)} or use {', '.join(sorted(set(suffixes) - {'.markdown'}))}"
            )
        return resolved
    return None


def check_output(output: Path, force: bool, example_name: str) -> None:
    """Refuse an --output that is a folder, or an existing file without --force (nothing is overwritten)."""
    if output.is_dir():
        raise UserError(f"--output {output} is a folder: give a file name (e.g. {output / example_name})")
    if output.exists() and not force:
        raise UserError(f"{output} already exists: pass --force to overwrite it, or choose another --output")
