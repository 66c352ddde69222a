"""ResNet-20 / ResNet-56 for CIFAR (He, Zhang, Ren, Sun 2016, section 4.2).

A 3x3 conv with 16 channels, then three stages of n BasicBlocks with 16, 32 and 64 channels on 32x32, 16x16
and 8x8 maps (depth 6n + 2: n = 3 for ResNet-20, n = 9 for ResNet-56), global average pool, Linear head.
The paper uses "option A" shortcuts when the dimensions grow: a parameter-free identity that subsamples
with stride 2 and pads the new channels with zeros, the only kind built here. So ResNet-20 has 269,722
parameters for 10 classes (the paper's "0.27M") and ResNet-56 853,018 ("0.85M").

The blocks are the torchvision-style BasicBlock of ``resnet.py``, so block attention sits at the same place
(after bn2, before the identity add and the final ReLU). bam goes after stages 1 and 2 (before each
resolution change); nonlocal after the last block of stage 2 (the middle stage). Only a CIFAR stem exists.
``sites`` takes ``all``, ``stage1``..``stage3`` and ``last_block_of_stage``, as ResNet-18/34/50's.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from namexp.models.attention import AttentionLayer, NoAttention
from namexp.models.sites import SiteSpec

from ._common import build_config, conv_out, init_backbone_weights, sited, stage_slots
from .resnet import BasicBlock, conv3x3, describe_stage_slot


class ShortcutA(nn.Module):
    """Option A shortcut: take every ``stride``-th pixel and zero-pad the extra channels. No parameters."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.extra_channels = out_channels - in_channels
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra_channels))  # zeros appended after the existing channels

    def extra_repr(self) -> str:
        return f"stride={self.stride}, extra_channels={self.extra_channels}"


class CifarResNet(nn.Module):
    NUM_STAGES = 3
    STAGE_SLOTS = {"stage": ("layer1", "layer2"), "middle": ("layer2",)}

    def __init__(
        self,
        blocks_per_stage: int,
        *,
        num_classes: int,
        image_size: int = 32,
        attn_layer: AttentionLayer = NoAttention,
        sites: str = "all",
    ):
        super().__init__()
        self.build_config = build_config(
            attn_layer, stem="cifar", image_size=image_size, num_classes=num_classes, sites=sites
        )
        self.conv1 = conv3x3(3, 16)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)

        self.attention_site_specs: list[SiteSpec] = []
        stage_attention: dict[str, nn.Module] = {}
        inplanes, size = 16, image_size
        for index, (planes, stride) in enumerate(zip((16, 32, 64), (1, 2, 2)), start=1):
            name = f"layer{index}"
            size = conv_out(size, stride)
            layer_sites = [sited(attn_layer, sites, index, i == blocks_per_stage - 1) for i in range(blocks_per_stage)]
            downsample = ShortcutA(inplanes, planes, stride) if stride != 1 or inplanes != planes else None
            layers = [
                BasicBlock(
                    inplanes if i == 0 else planes,
                    planes,
                    stride if i == 0 else 1,
                    downsample if i == 0 else None,
                    attn_layer=layer,
                    spatial_size=(size, size),
                )
                for i, layer in enumerate(layer_sites)
            ]
            setattr(self, name, nn.Sequential(*layers))
            inplanes = planes
            modules, specs = stage_slots(
                self.STAGE_SLOTS, name, planes, (size, size), layer_sites[-1], describe=describe_stage_slot
            )
            stage_attention.update(modules)
            self.attention_site_specs += specs
        self.stage_attention = nn.ModuleDict(stage_attention)  # applied after the stage named by its key

        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)
        init_backbone_weights(self)  # the paper's init is He et al. 2015 as well

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        for name in ("layer1", "layer2", "layer3"):
            x = getattr(self, name)(x)
            if name in self.stage_attention:
                x = self.stage_attention[name](x)
        x = self.avgpool(x).flatten(1)
        return self.fc(x)


def _check_cifar_stem(name: str, stem: str, image_size: int) -> None:
    if stem not in ("auto", "cifar"):
        raise ValueError(
            f"{name} is a CIFAR network and has no {stem!r} stem (asked for {image_size}x{image_size} inputs): "
            f"use the cifar stem, or resnet18/34/50 for an ImageNet stem"
        )


def resnet20(*, image_size: int = 32, stem: str = "cifar", **kwargs) -> CifarResNet:
    """Keywords: num_classes, image_size, stem (cifar only), attn_layer, sites (see ``CifarResNet``)."""
    _check_cifar_stem("resnet20", stem, image_size)
    return CifarResNet(3, image_size=image_size, **kwargs)


def resnet56(*, image_size: int = 32, stem: str = "cifar", **kwargs) -> CifarResNet:
    """Keywords: num_classes, image_size, stem (cifar only), attn_layer, sites (see ``CifarResNet``)."""
    _check_cifar_stem("resnet56", stem, image_size)
    return CifarResNet(9, image_size=image_size, **kwargs)
