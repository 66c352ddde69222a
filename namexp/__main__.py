"""`python -m namexp ...` (what `torchrun -m namexp train ...` runs on every rank)."""

from namexp.cli import main

main()
