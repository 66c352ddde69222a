"""benchmarks/nam_floor.py runs end to end and measures the sites the model really has (no timing asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "nam_floor.py"


def test_floor_script_reports_every_row_for_the_models_nam_sites():
    proc = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--backbone",
            "resnet20",
            "--batch",
            "4",
            "--repeats",
            "1",
            "--impls",
            "reference,fused",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    # ResNet-20: 9 basic blocks, each with NAM at the end of its residual branch; 4 x (16·32² + 32·16² + 64·8²) x 3
    # floats per pass over all of them.
    assert lines[0].startswith("resnet20, batch 4: 9 NAM sites, 1 MB of activation"), lines[0]
    rows = {line[:44].strip(): line[44:].split() for line in lines[2:]}
    assert set(rows) == {
        "traffic floor (no sigmoid, no allocation)",
        "floor + the sigmoid's arithmetic",
        "gate, impl=reference",
        "gate, impl=fused",
    }, rows
    assert rows["traffic floor (no sigmoid, no allocation)"][3] == "1.00"
