"""MobileNetV2 (Sandler, Howard, Zhu, Zhmoginov, Chen, "MobileNetV2: Inverted Residuals and Linear
Bottlenecks", CVPR 2018), in torchvision's layout (same module names and parameter shapes as
``torchvision.models.mobilenet_v2``).

Stem 3x3 conv with 32 channels, 17 inverted-residual blocks in seven stages (t, c, n, s) = (1,16,1,1),
(6,24,2,2), (6,32,3,2), (6,64,4,2), (6,96,3,1), (6,160,3,2), (6,320,1,1), a 1x1 conv to 1280, global average
pool, dropout 0.2 and a Linear head (torchvision's ``classifier``). The width multiplier scales every channel
count, rounded to a multiple of 8 as torchvision (the last conv is never narrowed below 1280). A block has a
residual connection only when its stride is 1 and its input and output widths agree, as in the paper.

Two variants:

* ``"imagenet"``: torchvision's, stem stride 2, total stride 32 (224 -> 7).
* ``"cifar"``: stem stride 1 and the 24-channel stage at stride 1 (total stride 8, 32 -> 4), as
  kuangliu/pytorch-cifar. Unlike kuangliu's, blocks with stride 1 and a width change get no 1x1 conv
  shortcut: they have no residual, as in the paper.

Attention placement (no official NAM code exists for MobileNetV2): block attention at the end of every
inverted-residual block, after the projection 1x1 conv's BN, before the residual add (also in blocks without
a residual), where the official ECA and triplet-attention MobileNetV2s put theirs. bam goes after each stage
that precedes a resolution change: after the 16-, 24-, 32- and 96-channel stages in the ImageNet variant,
after the 24-, 32- and 96-channel stages in the CIFAR variant (whose 24-channel stage no longer downsamples).
nonlocal goes after the last block of the 32- and of the 96-channel stage.

``sites`` (``attention.sites``) counts four stages, as ResNet's, by output stride in the ImageNet variant:
stage1 = the 16- and 24-channel blocks (stride 2-4), stage2 = the 32-channel blocks (8), stage3 = the 64- and
96-channel blocks (16), stage4 = the 160- and 320-channel blocks (32); the CIFAR variant uses the same
grouping. ``last_block_of_stage`` keeps the last block of each (the 24-, 32-, 96- and 320-channel stages' last
blocks); a between-stage module belongs to the stage of the block it follows.
"""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor, nn

from namexp.models.attention import AttentionLayer, NoAttention
from namexp.models.sites import SiteSpec

from ._common import block_attention, build_config, conv_out, init_backbone_weights, resolve_stem, sited, stage_slots

# (expansion t, base channels c, blocks n, first-block stride s), from the paper's Table 2.
INVERTED_RESIDUAL_SETTINGS = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]
NONLOCAL_AFTER_STAGES = (32, 96)  # base channel counts of the stages whose last block gets a non-local block
# The four stages `sites` names, by the base channel counts of their rows (ResNet-like output strides 4/8/16/32).
SITE_STAGES = {16: 1, 24: 1, 32: 2, 64: 3, 96: 3, 160: 4, 320: 4}
LAST_ROW_OF_SITE_STAGE = (24, 32, 96, 320)


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``value`` to the nearest multiple of ``divisor``, never going more than 10% below it."""
    min_value = min_value or divisor
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


class _StageEnd(NamedTuple):
    index: int  # position in `features` of the stage's last block
    base_channels: int  # c in the settings table (before the width multiplier)
    channels: int
    size: int
    stride: int  # the stage's first-block stride


class ConvBNReLU6(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, groups: int = 1):
        super().__init__(
            nn.Conv2d(
                in_channels, out_channels, kernel_size, stride, (kernel_size - 1) // 2, groups=groups, bias=False
            ),
            nn.BatchNorm2d(out_channels),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    def __init__(
        self,
        inp: int,
        oup: int,
        stride: int,
        expand_ratio: int,
        *,
        attn_layer: AttentionLayer = NoAttention,
        spatial_size: tuple[int, int] | None = None,
    ):
        super().__init__()
        hidden = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNReLU6(inp, hidden, kernel_size=1))
        layers += [
            ConvBNReLU6(hidden, hidden, stride=stride, groups=hidden),  # depthwise
            nn.Conv2d(hidden, oup, 1, bias=False),  # linear projection
            nn.BatchNorm2d(oup),
        ]
        self.conv = nn.Sequential(*layers)
        self.attention = block_attention(attn_layer, oup, spatial_size)
        where = "end of inverted-residual block: after the projection 1x1 conv's BN, " + (
            "before the residual add" if self.use_res_connect else "no residual here (stride 2 or width change)"
        )
        self.attention_site_specs = [
            SiteSpec("attention", "block", oup, spatial_size, where, preceding_bn=f"conv.{len(layers) - 1}")
        ]

    def forward(self, x: Tensor) -> Tensor:
        out = self.attention(self.conv(x))
        return x + out if self.use_res_connect else out


class MobileNetV2(nn.Module):
    NUM_STAGES = 4

    def __init__(
        self,
        *,
        num_classes: int,
        image_size: int,
        stem: str = "auto",
        attn_layer: AttentionLayer = NoAttention,
        width_mult: float = 1.0,
        dropout: float = 0.2,
        sites: str = "all",
    ):
        super().__init__()
        stem = resolve_stem(stem, image_size)
        self.build_config = build_config(
            attn_layer, stem=stem, image_size=image_size, num_classes=num_classes, width_mult=width_mult, sites=sites
        )
        cifar = stem == "cifar"
        input_channel = make_divisible(32 * width_mult)
        self.last_channel = make_divisible(1280 * max(1.0, width_mult))

        stem_stride = 1 if cifar else 2
        size = conv_out(image_size, stem_stride)
        features: list[nn.Module] = [ConvBNReLU6(3, input_channel, stride=stem_stride)]
        stage_ends: list[_StageEnd] = []
        for t, c, n, s in INVERTED_RESIDUAL_SETTINGS:
            if cifar and c == 24:
                s = 1  # CIFAR variant: keep 32x32 through the 24-channel stage
            output_channel = make_divisible(c * width_mult)
            for i in range(n):
                stride = s if i == 0 else 1
                size = conv_out(size, stride)
                last = c in LAST_ROW_OF_SITE_STAGE and i == n - 1
                layer = sited(attn_layer, sites, SITE_STAGES[c], last)
                features.append(
                    InvertedResidual(
                        input_channel, output_channel, stride, t, attn_layer=layer, spatial_size=(size, size)
                    )
                )
                input_channel = output_channel
            stage_ends.append(_StageEnd(len(features) - 1, c, output_channel, size, s))
        features.append(ConvBNReLU6(input_channel, self.last_channel, kernel_size=1))
        self.features = nn.Sequential(*features)

        # Between-stage slots, keyed by the index in `features` of the block they follow.
        self.attention_site_specs: list[SiteSpec] = []
        stage_attention: dict[str, nn.Module] = {}
        for k, end in enumerate(stage_ends):
            key = str(end.index)
            next_downsamples = k + 1 < len(stage_ends) and stage_ends[k + 1].stride == 2
            slots = {
                "stage": (key,) if next_downsamples else (),
                "middle": (key,) if end.base_channels in NONLOCAL_AFTER_STAGES else (),
            }
            layer = sited(
                attn_layer, sites, SITE_STAGES[end.base_channels], end.base_channels in LAST_ROW_OF_SITE_STAGE
            )
            modules, specs = stage_slots(
                slots,
                key,
                end.channels,
                (end.size, end.size),
                layer,
                describe=lambda kind, key, c=end.base_channels: _describe_stage_slot(kind, key, c),
            )
            stage_attention.update(modules)
            self.attention_site_specs += specs
        self.stage_attention = nn.ModuleDict(stage_attention)  # applied after features[int(key)]

        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout), nn.Linear(self.last_channel, num_classes))
        init_backbone_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        for index, layer in enumerate(self.features):
            x = layer(x)
            key = str(index)
            if key in self.stage_attention:
                x = self.stage_attention[key](x)
        x = self.avgpool(x).flatten(1)
        return self.classifier(x)


def _describe_stage_slot(kind: str, key: str, base_channels: int) -> str:
    if kind == "stage":
        return (
            f"between stages: after features.{key} (last block of the {base_channels}-channel stage), "
            f"before the next stride-2 stage"
        )
    return f"after features.{key}, the last block of the {base_channels}-channel stage"
