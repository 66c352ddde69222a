"""Where and how a run computes: device, precision, determinism, seeds, and the DDP process group.

Everything here is chosen from the config; nothing assumes a CPU. `device=auto` takes CUDA when there
is one (in a sweep, jobs share the GPUs round-robin by job number) and the CPU otherwise.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from namexp.errors import UserError
from namexp.train import cpu_memory, slurm_env

log = logging.getLogger(__name__)

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Dist:
    """This process's place in a DDP job (rank 0 of 1 without torchrun or a multi-task Slurm step)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    init_method: str = "env://"  # torchrun sets MASTER_ADDR/PORT; under Slurm: tcp://FIRST_HOST:PORT
    launched: bool = False  # started by torchrun (or trainer.devices): DDP even with one process

    @property
    def enabled(self) -> bool:
        return self.world_size > 1 or self.launched

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_from_env(env: Mapping[str, str] | None = None) -> Dist:
    """torchrun's variables (RANK, LOCAL_RANK, WORLD_SIZE) first, else a multi-task Slurm step's (slurm_env.py)."""
    env = os.environ if env is None else env
    if "WORLD_SIZE" in env:
        world, launched = int(env["WORLD_SIZE"]), "TORCHELASTIC_RUN_ID" in env  # set by torchrun's agent
        if world <= 1 and not launched:
            return Dist()
        return Dist(int(env.get("RANK", "0")), int(env.get("LOCAL_RANK", "0")), world, launched=launched)
    if slurm_env.in_slurm_step(env):
        addr, port = slurm_env.rendezvous(env)
        rank, local_rank = int(env["SLURM_PROCID"]), int(env.get("SLURM_LOCALID", "0"))
        return Dist(rank, local_rank, int(env["SLURM_NTASKS"]), f"tcp://{addr}:{port}")
    return Dist()


def init_process_group(d: Dist) -> bool:
    """NCCL on GPUs, gloo on the CPU; True when this call created the group (a no-op outside DDP or when
    already initialised)."""
    if not d.enabled or dist.is_initialized():
        return False
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_cuda_index(d))
    dist.init_process_group(backend=backend, init_method=d.init_method, rank=d.rank, world_size=d.world_size)
    return True


def local_cuda_index(d: Dist) -> int:
    """This process's GPU: its local rank, wrapped when Slurm shows each task fewer GPUs (--gpus-per-task)."""
    return d.local_rank % max(torch.cuda.device_count(), 1)


def resolve_device(requested: str, d: Dist = Dist(), job_num: int | None = None) -> torch.device:
    if requested == "cpu":
        return torch.device("cpu")
    available = torch.cuda.is_available()
    if requested.startswith("cuda") and not available:
        raise UserError(
            f"trainer.device={requested} but no CUDA device is available here: use trainer.device=auto or trainer.device=cpu"
        )
    if requested.startswith("cuda:"):
        index = int(requested.split(":")[1])
        if index >= torch.cuda.device_count():
            raise UserError(
                f"trainer.device={requested} but this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
        return torch.device(requested)
    if not available:  # auto
        return torch.device("cpu")
    if d.enabled:
        return torch.device("cuda", local_cuda_index(d))
    # A sweep's parallel jobs share the GPUs round-robin.
    return torch.device("cuda", (job_num or 0) % torch.cuda.device_count())


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} {torch.cuda.get_device_name(device)}"
    kept = ", freed memory kept" if cpu_memory.freed_memory_kept() else ""
    return f"cpu ({torch.get_num_threads()} threads{kept})"


def device_for(trainer, d: Dist = Dist(), job_num: int | None = None) -> torch.device:
    """The device a command computes on, from its ``trainer`` config: resolved, its precision checked, and on
    the CPU the allocator tuned (train, eval, analyze and bench all start here)."""
    device = resolve_device(trainer.device, d, job_num)
    check_precision(trainer.precision, device)
    tune_cpu_memory(trainer.keep_cpu_memory, device)
    return device


def tune_cpu_memory(keep_cpu_memory: bool, device: torch.device) -> None:
    """On the CPU, keep freed activations for reuse instead of faulting them in every step (cpu_memory.py)."""
    if keep_cpu_memory and device.type == "cpu" and not cpu_memory.keep_freed_memory():
        log.info("trainer.keep_cpu_memory: not a glibc system, the C library's allocator is left as it is")


def check_precision(precision: str, device: torch.device) -> None:
    if precision == "fp16" and device.type == "cpu":
        raise UserError("trainer.precision=fp16 needs a CUDA device: use bf16 (or fp32) on the CPU")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UserError(
            f"trainer.precision=bf16 is not supported by {torch.cuda.get_device_name(device)}: use fp16 or fp32"
        )


def autocast(precision: str, device: torch.device):
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=AUTOCAST_DTYPES[precision])


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler | None:
    """fp16 needs loss scaling; bf16 has fp32's range and does not."""
    return torch.amp.GradScaler(device.type) if precision == "fp16" else None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_deterministic(enabled: bool, device: torch.device) -> None:
    """Deterministic kernels when asked; otherwise let cuDNN pick the fastest (benchmark mode)."""
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.benchmark = device.type == "cuda"
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = not enabled
        torch.backends.cudnn.allow_tf32 = not enabled
