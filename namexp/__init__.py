"""namexp: an experiment runner for the Normalization-based Attention Module (NAM) and its peers."""

__version__ = "0.1.0"
