"""Export: a trained model folded for inference, written as ONNX, torch.export or TorchScript, and checked."""

from __future__ import annotations
