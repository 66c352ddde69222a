"""namexp: an experiment runner for the Normalization-based Attention Module (NAM) and its peers."""

from __future__ import annotations

__version__ = "0.1.0"
