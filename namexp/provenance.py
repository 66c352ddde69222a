"""What ran a run: Python, torch and namexp versions, the device, the host and the git commit of the source."""

from __future__ import annotations

import platform
import socket
import subprocess
from pathlib import Path

import torch

import namexp


def git_state() -> tuple[str | None, bool | None]:
    """(commit, dirty) of the namexp source that ran when it is a git checkout; (None, None) otherwise."""
    source = Path(namexp.__file__).resolve().parent.parent

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", str(source), *args], capture_output=True, text=True, timeout=5)

    try:
        commit = git("rev-parse", "HEAD")
        if commit.returncode != 0:
            return None, None
        dirty = git("status", "--porcelain", "--untracked-files=no")
        return commit.stdout.strip(), bool(dirty.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return None, None


def environment(device_description: str) -> dict[str, object]:
    """What ran: versions, device, host, and the code: namexp's version, plus its git commit and whether
    the checkout had uncommitted changes (`git_dirty`) when it runs from one."""
    import torchvision

    from namexp.models.backbones import timm_version

    commit, dirty = git_state()
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "timm": timm_version(),  # the optional extra namexp[timm] (null when not installed)
        "namexp": namexp.__version__,
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "device": device_description,
        "hostname": socket.gethostname(),
        "git_commit": commit,
        "git_dirty": dirty,
    }
