"""Writing output files: atomically (a reader or a crash never sees half of one), never over a user's file
without --force, in the format --format names or the file's suffix implies."""

from __future__ import annotations

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


def write_atomic(path: Path, write: Callable[[IO], None], *, binary: bool = False, sync: bool = False) -> None:
    """Call ``write(file)`` on a temporary file in the same folder, then rename it over `path` (atomic on POSIX)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as f:
            os.fchmod(f.fileno(), new_file_mode())
            write(f)
            if sync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
