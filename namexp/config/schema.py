"""The typed schema of a run config.

Hydra composes `conf/` on top of `base_config` (registered below), so every YAML file and every
command-line override is type-checked against these dataclasses, and an unknown key is an error.
Range checks that types cannot express live in `namexp.config.validate`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class DataConfig:
    name: str = MISSING  # cifar10 | cifar100 | imagefolder | synthetic
    # Where the dataset lives; null -> $NAMEXP_DATA -> ~/.cache/namexp/data (downloaded there when online).
    root: str | None = None
    download: bool = True  # download when missing and online (cifar10/cifar100 only)
    # Where archives (.tar.gz/.tar.xz) are unpacked once; null -> $NAMEXP_CACHE -> ~/.cache/namexp.
    cache_dir: str | None = None
    num_classes: int = MISSING
    image_size: int = 32
    mean: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    std: list[float] = field(default_factory=lambda: [0.25, 0.25, 0.25])
    # Images held out of the training set for model selection (0 = none: "best" is then picked on test).
    val_split: int = 0
    # Train on the first N training images only (0 = all); for quick studies on a CPU.
    train_subset: int = 0
    augment: str = "crop_flip"  # crop_flip (random crop with padding + horizontal flip) | flip | none
    crop_padding: int = 4
    # In-memory datasets (CIFAR, synthetic) are held as uint8 tensors on the training device and
    # augmented there in whole batches; false falls back to a host DataLoader with PIL transforms.
    on_device: bool = True
    # synthetic only: images per split
    synthetic_train_size: int = 1024
    synthetic_test_size: int = 256
    # imagefolder only: resize before the center crop at evaluation
    eval_resize: int = 256


@dataclass
class BackboneConfig:
    # resnet18 | resnet34 | resnet50 | resnet20 | resnet56 | mobilenetv2 | timm/<name> (timm's ResNet family,
    # with the namexp[timm] extra; conf/backbone/timm/ holds a few, backbone.name=timm/<name> takes any)
    name: str = MISSING
    stem: str = "auto"  # auto (by image size) | cifar | imagenet
    width_mult: float = 1.0  # mobilenetv2 only
    # Weight init: torchvision (He-normal fan_out convs, PyTorch's default Linear) | official_nam (the NAM
    # repository's: He-uniform fan_in convs, every BN weight 1) | official_cbam (the CBAM/BAM authors': every
    # bias 0, He-normal head); see namexp/models/init.py and the backbone yaml files.
    init: str = "torchvision"
    pretrained: bool = False  # timm/<name> only: timm's ImageNet weights (downloaded: needs the network)


@dataclass
class AttentionConfig:
    name: str = MISSING  # none | nam | nam_spatial | nam_full | se | cbam | bam | tam | eca | nonlocal | half
    # Keyword options of the module (e.g. NAM's abs_weights/detach_weights); names and values are checked
    # against the module's option_checks in config/validate.py before a run starts.
    options: dict[str, Any] = field(default_factory=dict)
    # Which of the documented places get a module: all | stage1..stage4 (ResNet-20/56: stage1..stage3; the
    # blocks of that stage, and a between-stage module after it) | last_block_of_stage (each stage's last
    # block, and the between-stage modules). MobileNetV2's four stages: the 16+24-, 32-, 64+96- and
    # 160+320-channel blocks. `namexp info` lists the choices and where the modules then sit.
    sites: str = "all"


@dataclass
class OptimConfig:
    name: str = "sgd"  # sgd | adamw
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False


@dataclass
class SchedConfig:
    name: str = "multistep"  # multistep | cosine | constant
    milestones: list[int] = field(default_factory=lambda: [60, 120, 160])
    gamma: float = 0.2
    warmup_epochs: int = 0  # linear warm-up, stepped per iteration


@dataclass
class TrainerConfig:
    epochs: int = 200
    batch_size: int = 128  # global batch (split across processes under DDP)
    eval_batch_size: int = 512
    device: str = "auto"  # auto (CUDA, then CPU) | cpu | cuda | cuda:N
    devices: int = 1  # processes (one device each) of one DDP run, started locally by namexp (train/devices.py)
    precision: str = "fp32"  # fp32 | bf16 | fp16 (AMP; fp16 with a gradient scaler)
    channels_last: bool = False
    compile: bool = False  # torch.compile the model
    keep_cpu_memory: bool = True  # CPU runs: glibc keeps freed activations for reuse (namexp/train/cpu_memory.py)
    deterministic: bool = False  # deterministic algorithms (and no cuDNN autotuning)
    log_interval: int = 50  # steps between loss read-backs (the only host syncs in the step loop)
    progress: str = "auto"  # auto (live display on a terminal, log lines otherwise) | rich | plain | none
    num_workers: int = 4  # host DataLoader workers (imagefolder, on_device=false)
    sync_bn: bool = False  # SyncBatchNorm under DDP
    # Stop each epoch after this many batches (0 = all); for smoke tests.
    limit_train_batches: int = 0
    limit_eval_batches: int = 0
    # Per-epoch attention gate diagnostics on this many fixed test images (0 = off; no-op without attention).
    log_gates: bool = True
    gate_images: int = 16


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    attention: AttentionConfig = field(default_factory=AttentionConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    sched: SchedConfig = field(default_factory=SchedConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    seed: int = 0
    # Weight p of the sparsity penalty on NAM's scale factors (γ, and λ for the spatial part); 0 = off.
    sparsity: float = 1e-4
    sparsity_mode: str = "loss"  # loss (paper: p·Σ|γ| added to the loss) | subgradient (official code)


def register_schema() -> None:
    """Make `base_config` available to the defaults list of `conf/config.yaml`."""
    ConfigStore.instance().store(name="base_config", node=RunConfig)
