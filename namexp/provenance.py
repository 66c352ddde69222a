"""What ran a run: Python, torch and namexp versions, the device, the host and the git commit of the source."""

from __future__ import annotations

import platform
import socket
import subprocess
from pathlib import Path

import torch

import namexp


def git_commit() -> str | None:
    """The commit of the namexp source that ran (with '-dirty' if it had local changes), if any."""
    source = Path(namexp.__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", str(source), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        )
        return commit.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def environment(device_description: str) -> dict[str, object]:
    import torchvision

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "namexp": namexp.__version__,
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "device": device_description,
        "hostname": socket.gethostname(),
        "git_commit": git_commit(),
    }
