"""benchmarks/nam_fold_experiment.py: NAM's statistics taken from the BatchNorm before it give the same block."""

import importlib.util
from pathlib import Path

import torch

from namexp.models.backbones.resnet import BasicBlock

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "nam_fold_experiment.py"


def load_experiment():
    spec = importlib.util.spec_from_file_location("nam_fold_experiment", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_folded_statistics_give_the_reference_block_outputs_gradients_and_running_stats():
    experiment = load_experiment()
    torch.manual_seed(0)
    blocks = [BasicBlock(6, 6, attention="nam", attention_options={"impl": "reference"}).double() for _ in range(2)]
    with torch.no_grad():  # away from γ=1, β=0, where mistakes in the variance formula could hide
        for p in blocks[0].parameters():
            if p.dim() == 1:
                p.uniform_(0.5, 1.5)
    blocks[1].load_state_dict(blocks[0].state_dict())
    blocks[1].forward = experiment._folded_block_forward.__get__(blocks[1])
    x = torch.randn(4, 6, 5, 7, dtype=torch.float64)
    outputs = [block(x) for block in blocks]
    for out in outputs:
        out.pow(3).sum().backward()
    torch.testing.assert_close(outputs[1], outputs[0], rtol=1e-10, atol=1e-12)
    for (name, a), b in zip(blocks[0].named_parameters(), blocks[1].parameters()):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-9, atol=1e-12, msg=f"gradient of {name}")
    for (name, a), b in zip(blocks[0].state_dict().items(), blocks[1].state_dict().values()):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12, msg=f"state {name}")
    for block in blocks:
        block.eval()
    torch.testing.assert_close(blocks[1](x), blocks[0](x), rtol=1e-10, atol=1e-12)
