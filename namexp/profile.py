"""What a model costs (parameters, FLOPs, latency) and what ran it (versions, device, git commit)."""

import platform
import socket
import subprocess
import time
from pathlib import Path
from statistics import median
from typing import Dict, Optional

import torch
from torch.utils.flop_counter import FlopCounterMode

import namexp

PLACEMENT_KEYS = ("site", "module", "channels", "spatial_size", "where")
FLOPS_NOTE = "FLOPs from torch.utils.flop_counter: 2 per multiply-add (MACs = FLOPs / 2); ops it does not count (pooling, sigmoid, elementwise products) add 0"


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_flops(model: torch.nn.Module, image_size: int, device: Optional[torch.device] = None) -> int:
    """Forward FLOPs for one image, in eval mode (BatchNorm then needs no batch statistics)."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, 3, image_size, image_size, device=device))
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


@torch.no_grad()
def inference_latency_ms(model: torch.nn.Module, batch: torch.Tensor, warmup: int = 3, repeats: int = 10) -> float:
    """Median wall time of one forward pass over `batch`, synchronised on CUDA."""
    model.eval()
    for _ in range(warmup):
        model(batch)
    times = []
    for _ in range(repeats):
        _sync(batch.device)
        start = time.perf_counter()
        model(batch)
        _sync(batch.device)
        times.append((time.perf_counter() - start) * 1000)
    return median(times)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def git_commit() -> Optional[str]:
    """The commit of the namexp source that ran (with '-dirty' if it had local changes), if any."""
    source = Path(namexp.__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(source), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5)
        return commit.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def environment(device_description: str) -> Dict[str, object]:
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


def describe_placement(sites) -> list:
    """The record's `placement` list: where each attention module sits (`AttentionSite.to_record`, in the keys
    that run records have always held)."""
    return [{key: record[key] for key in PLACEMENT_KEYS} for record in (s.to_record() for s in sites)]
