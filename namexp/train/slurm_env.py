"""A DDP process's place read from Slurm's environment: `srun -n N namexp train ...`, or each task of a
submitit job with `tasks_per_node > 1` (submitit starts its tasks with srun, so both look the same here).

Slurm gives every task SLURM_PROCID (its rank), SLURM_NTASKS (the world size) and SLURM_LOCALID (its rank on
its node); the rendezvous is the first host of the job's node list, on a port derived from the job id so
every task of a step computes the same one without talking to the others.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Mapping

PORT_BASE, PORT_SPAN = 10000, 20000  # unprivileged, below Linux's ephemeral range (32768-60999)


def in_slurm_step(env: Mapping[str, str]) -> bool:
    """A task of a Slurm step with several tasks (a batch script itself has no SLURM_STEP_ID: it runs once)."""
    return int(env.get("SLURM_NTASKS", "1") or 1) > 1 and "SLURM_PROCID" in env and "SLURM_STEP_ID" in env


def rendezvous(env: Mapping[str, str]) -> tuple[str, int]:
    """MASTER_ADDR and MASTER_PORT when set, else the node list's first host and a port from the job id."""
    addr = env.get("MASTER_ADDR") or first_host(env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST", ""))
    if env.get("MASTER_PORT"):
        return addr, int(env["MASTER_PORT"])
    # Two steps of one allocation running at once (their job ids are equal) get different ports.
    job, step = int(env.get("SLURM_JOB_ID", "0") or 0), int(env.get("SLURM_STEP_ID", "0") or 0)
    return addr, PORT_BASE + (job * 31 + step) % PORT_SPAN


def first_host(nodelist: str) -> str:
    """The first host of a Slurm node list: `scontrol show hostnames` where Slurm is installed, else parsed."""
    if not nodelist:
        return "localhost"
    if shutil.which("scontrol"):
        try:
            out = subprocess.run(
                ["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, timeout=30, check=True
            ).stdout.split()
            if out:
                return out[0]
        except (OSError, subprocess.SubprocessError):
            pass  # fall back to the parser
    return parse_first_host(nodelist)


def parse_first_host(nodelist: str) -> str:
    """`node[01-03,07],gpu5` -> `node01`; every bracket group contributes its first value (zero padding kept)."""
    first, depth = nodelist, 0
    for i, ch in enumerate(nodelist):
        depth += {"[": 1, "]": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            first = nodelist[:i]
            break
    return re.sub(r"\[([^\]]*)\]", lambda m: m.group(1).split(",")[0].split("-")[0], first.strip())
