"""`python -m namexp ...` (what `torchrun -m namexp train ...` runs on every rank)."""

from __future__ import annotations

from namexp.cli import main

main()
