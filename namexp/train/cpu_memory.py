"""Keep freed CPU memory in the process, so that each training step does not fault its activations in anew.

glibc's malloc serves a block larger than its mmap threshold (which it adjusts between 128 KiB and at most
32 MiB) with a fresh ``mmap`` and gives it back to the OS on ``free``; it also trims the top of its heap
once more than twice that threshold is free there. A CIFAR ResNet-18 at batch 128 has 32 MiB activations
(128 x 64 x 32 x 32 floats), so on the CPU every step maps them again and pays a page fault for every 4 KiB
touched: about 8 ms for each fresh 32 MiB tensor on the development machine, where filling it costs 2 ms.

Raising the mmap threshold to 1 GiB and the trim threshold to its maximum makes glibc serve those blocks
from its heap and keep them there once freed, so after the first step the same memory is reused without
faults. On the 2-core development CPU this made a ResNet-18 training step 5-16 % faster and an eval
forward of 512 images 34-44 % faster (docs/benchmarks.md, "CPU memory"). The price: the process holds on
to its peak heap until it exits (its resident size no longer shrinks after a spike), which suits a
training or evaluation process.

This is the same fix as preloading jemalloc or tcmalloc, which PyTorch's CPU tuning guides recommend, done
with glibc's own ``mallopt`` so that it needs nothing installed. It is applied only to CPU runs
(``trainer.keep_cpu_memory``, default true), only once per process, and only where the C library is glibc;
elsewhere it does nothing but log so, and the run's device description ("freed memory kept") leaves it out.
"""

from __future__ import annotations

import ctypes
import sys

# mallopt parameters from glibc's <malloc.h>.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 1 << 30  # blocks up to 1 GiB come from the heap
TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int: the largest, i.e. never trim in practice

_state = {"kept": False}


def glibc():
    """The process's C library when it is glibc (which has ``mallopt``), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return None
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return None  # musl and others: no glibc tunables
    return libc


def keep_freed_memory() -> bool:
    """Make glibc keep freed large blocks for reuse; True when it is in effect (now or from an earlier call)."""
    if _state["kept"]:
        return True
    libc = glibc()
    if libc is None:
        return False
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    _state["kept"] = ok
    return ok


def freed_memory_kept() -> bool:
    """Whether this process has applied ``keep_freed_memory``."""
    return _state["kept"]
