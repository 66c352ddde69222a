"""`namexp eval`: re-evaluate a checkpoint with the config it was trained with.

The checkpoint carries its resolved config, so a run folder copied from elsewhere evaluates the same;
overrides may change where and how it runs (data.root, trainer.device, trainer.eval_batch_size, ...),
not what it is. The result goes to `<run>/evals/<time>-<checkpoint>.json` beside the run's record.
"""

import json
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import List

from omegaconf import OmegaConf
from rich.console import Console
from rich.table import Table

from namexp.config.launch import translate_errors
from namexp.config.schema import RunConfig
from namexp.config.validate import validate
from namexp.errors import UserError


def resolve_checkpoint(target: Path, which: str) -> Path:
    if which not in ("last", "best"):
        raise UserError(f"--checkpoint {which} is not valid: use last or best")
    target = target.expanduser()
    if target.is_dir():
        return target / "checkpoints" / f"{which}.pt"
    return target


def eval_folder(checkpoint: Path) -> Path:
    parent = checkpoint.resolve().parent
    return (parent.parent if parent.name == "checkpoints" else parent) / "evals"


def config_from_checkpoint(state: dict, overrides: List[str]) -> RunConfig:
    with translate_errors():
        cfg = OmegaConf.merge(OmegaConf.structured(RunConfig), state["config"], OmegaConf.from_dotlist(list(overrides)))
        run = OmegaConf.to_object(cfg)
    validate(run)
    return run


def run_eval(target: Path, overrides: List[str], which: str = "last", split: str = "test") -> int:
    import torch

    from namexp.data import build_data
    from namexp.profile import count_flops, count_params, inference_latency_ms
    from namexp.train import runtime
    from namexp.train.build import make_model
    from namexp.train.checkpoint import load_checkpoint, load_model_state
    from namexp.train.loop import evaluate

    if any("=" not in o for o in overrides):
        raise UserError(f"cannot read the overrides {' '.join(overrides)}: give them as key=value")
    path = resolve_checkpoint(target, which)
    state = load_checkpoint(path)
    cfg = config_from_checkpoint(state, overrides)
    device = runtime.device_for(cfg.trainer)
    data = build_data(cfg.data, batch_size=cfg.trainer.batch_size, eval_batch_size=cfg.trainer.eval_batch_size, device=device,
                      seed=cfg.seed, channels_last=cfg.trainer.channels_last, num_workers=cfg.trainer.num_workers,
                      limit_eval_batches=cfg.trainer.limit_eval_batches, with_train=False)
    loader = {"test": data.test, "val": data.val}.get(split)
    if loader is None:
        raise UserError(f"--split {split} is not available: use test{', or val' if data.val else ' (the run held out no validation split)'}")
    model = make_model(cfg, data.num_classes, data.image_size).to(device)
    load_model_state(model, state["model"], path, f"{cfg.backbone.name}+{cfg.attention.name}")
    if cfg.trainer.channels_last:
        model = model.to(memory_format=torch.channels_last)
    metrics = evaluate(model, loader, cfg.trainer.precision, device)
    first_batch = next(iter(loader))[0]
    with runtime.autocast(cfg.trainer.precision, device):
        latency = inference_latency_ms(model, first_batch)
    result = {
        "checkpoint": str(path.resolve()), "which": which, "split": split, "epoch": state["epoch"],
        "backbone": cfg.backbone.name, "attention": cfg.attention.name, "data": cfg.data.name,
        "loss": metrics["loss"], "top1_err": metrics["top1_err"], "top5_err": metrics["top5_err"], "images": int(metrics["images"]),
        "params": count_params(model), "flops": count_flops(model, data.image_size),
        "latency_ms_per_batch": latency, "latency_batch_size": int(first_batch.shape[0]),
        "device": runtime.describe_device(device), "precision": cfg.trainer.precision, "overrides": list(overrides),
        "config": asdict(cfg), "time": datetime.now().isoformat(timespec="seconds"),
    }
    out_dir = eval_folder(path)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{datetime.now().strftime('%Y-%m-%d_%H-%M-%S.%f')}-{path.stem}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    _show(result, out)
    return 0


def _show(r: dict, out: Path) -> None:
    table = Table(title=f"{r['backbone']} + {r['attention']} on {r['data']} {r['split']} ({r['images']:,} images, epoch {r['epoch']})",
                  show_header=False)
    table.add_row("loss", f"{r['loss']:.4f}")
    table.add_row("top-1 / top-5 error", f"{r['top1_err']:.2f}% / {r['top5_err']:.2f}%")
    table.add_row("params / FLOPs", f"{r['params']:,} / {r['flops'] / 1e9:.3f} G (2 per multiply-add)")
    table.add_row("latency", f"{r['latency_ms_per_batch']:.2f} ms per batch of {r['latency_batch_size']} ({r['device']}, {r['precision']})")
    table.add_row("eval record", str(out))
    Console().print(table)
