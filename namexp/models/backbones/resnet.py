"""ResNet-18/34/50 (He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition", CVPR 2016).

The torchvision layout (same module names and parameter shapes as ``torchvision.models.resnet``): BasicBlock
for 18/34, Bottleneck with the stride on the 3x3 conv for 50 (torchvision's "ResNet v1.5"), 1x1 conv + BN
projection shortcuts, global average pool and a Linear head. Two stems:

* ``"imagenet"``: 7x7 stride-2 conv + 3x3 stride-2 max-pool (total stride 32);
* ``"cifar"``: 3x3 stride-1 conv, no max-pool (total stride 8), as the official NAM, CBAM and triplet-attention
  CIFAR models and kuangliu/pytorch-cifar. The official code ends with ``avg_pool2d(x, 4)``; the global
  average pool here is the same at 32x32 and also works at other sizes.

Attention placement:

* block attention (nam, se, cbam, tam, eca, half, ...): ``block.attention``, at the end of the residual branch,
  after bn2 (BasicBlock) / bn3 (Bottleneck, on planes·4 channels), before the identity add and the final ReLU,
  in every block, as the official NAM/CBAM code;
* bam: ``stage_attention.layer1..3``, after layer1, layer2 and layer3 (between stages), as the official BAM code;
* nonlocal: ``stage_attention.layer2/3``, after the last block of layer2 and of layer3.

``sites`` (``attention.sites``) keeps a subset of these places: ``all`` (the default), ``stage1``..``stage4``
(the blocks of layer1..layer4, and a between-stage module after that layer) or ``last_block_of_stage`` (the
last block of each layer, and every between-stage module, since each follows a layer's last block).

Every backbone and block takes the attention as ``attn_layer``, a constructor ``attn_layer(channels,
spatial_size=...)`` (see ``namexp.models.attention.attention_layer``), and calls it at the slots its class's
``placement`` names. Every block tells its attention the feature-map size it produces (from image size, stem
and strides), which NAM's spatial submodule needs.
"""

from __future__ import annotations

from torch import Tensor, nn

from namexp.models.attention import AttentionLayer, NoAttention
from namexp.models.sites import SiteSpec

from ._common import block_attention, build_config, conv_out, init_backbone_weights, resolve_stem, sited, stage_slots


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class ResidualBlock(nn.Module):
    """What BasicBlock and Bottleneck share: the signature, and the attention at the end of the residual branch.

    A block builds its branch in ``build_branch``; the attention then sits after ``last_bn``, before the identity
    add and the final ReLU (module order as torchvision's blocks, with ``attention`` before ``downsample``).
    """

    expansion: int
    last_bn: str

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        *,
        attn_layer: AttentionLayer = NoAttention,
        spatial_size: tuple[int, int] | None = None,
    ):
        super().__init__()
        self.build_branch(inplanes, planes, stride)
        channels = planes * self.expansion
        self.attention = block_attention(attn_layer, channels, spatial_size)
        self.downsample = downsample
        where = f"end of residual branch: after {self.last_bn}, before the identity add and final ReLU"
        self.attention_site_specs = [
            SiteSpec("attention", "block", channels, spatial_size, where, preceding_bn=self.last_bn)
        ]

    def build_branch(self, inplanes: int, planes: int, stride: int) -> None:
        raise NotImplementedError


class BasicBlock(ResidualBlock):
    expansion = 1
    last_bn = "bn2"

    def build_branch(self, inplanes: int, planes: int, stride: int) -> None:
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = self.attention(out)
        return self.relu(out + identity)


class Bottleneck(ResidualBlock):
    expansion = 4
    last_bn = "bn3"

    def build_branch(self, inplanes: int, planes: int, stride: int) -> None:
        width = planes
        self.conv1 = conv1x1(inplanes, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, stride)  # stride on the 3x3 conv, as torchvision
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out = self.attention(out)
        return self.relu(out + identity)


def describe_stage_slot(kind: str, layer: str) -> str:
    if kind == "stage":
        return f"between stages: after {layer} (its last block's final ReLU), before the next stage"
    return f"after the last block of {layer}"


class ResNet(nn.Module):
    NUM_STAGES = 4
    # Between-stage slots: bam after layer1-3 (official BAM); nonlocal after the last block of layer2 and layer3.
    STAGE_SLOTS = {"stage": ("layer1", "layer2", "layer3"), "middle": ("layer2", "layer3")}

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: list[int],
        *,
        num_classes: int,
        image_size: int,
        stem: str = "auto",
        attn_layer: AttentionLayer = NoAttention,
        sites: str = "all",
    ):
        super().__init__()
        stem = resolve_stem(stem, image_size)
        self.build_config = build_config(
            attn_layer, stem=stem, image_size=image_size, num_classes=num_classes, sites=sites
        )
        self.inplanes = 64
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
            self.maxpool: nn.Module = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
            size = conv_out(conv_out(image_size, 2), 2)
        else:
            self.conv1 = conv3x3(3, 64)
            self.maxpool = nn.Identity()
            size = image_size
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)

        self.attention_site_specs: list[SiteSpec] = []
        stage_attention: dict[str, nn.Module] = {}
        for index, (planes, count, stride) in enumerate(zip((64, 128, 256, 512), layers, (1, 2, 2, 2)), start=1):
            name = f"layer{index}"
            size = conv_out(size, stride)
            layer_sites = [sited(attn_layer, sites, index, i == count - 1) for i in range(count)]
            setattr(self, name, self._make_layer(block, planes, stride, (size, size), layer_sites))
            modules, specs = stage_slots(
                self.STAGE_SLOTS, name, self.inplanes, (size, size), layer_sites[-1], describe=describe_stage_slot
            )
            stage_attention.update(modules)
            self.attention_site_specs += specs
        self.stage_attention = nn.ModuleDict(stage_attention)  # applied after the stage named by its key

        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        init_backbone_weights(self)

    def _make_layer(self, block, planes, stride, spatial_size, attn_layers: list[AttentionLayer]) -> nn.Sequential:
        """One stage: a block per entry of ``attn_layers``, the attention constructor of that block."""
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * block.expansion, stride), nn.BatchNorm2d(planes * block.expansion)
            )
        first, *rest = attn_layers
        layers = [block(self.inplanes, planes, stride, downsample, attn_layer=first, spatial_size=spatial_size)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, attn_layer=layer, spatial_size=spatial_size) for layer in rest]
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for name in ("layer1", "layer2", "layer3", "layer4"):
            x = getattr(self, name)(x)
            if name in self.stage_attention:
                x = self.stage_attention[name](x)
        x = self.avgpool(x).flatten(1)
        return self.fc(x)


def resnet18(**kwargs) -> ResNet:
    """Keywords: num_classes, image_size, stem, attn_layer, sites (see ``ResNet``)."""
    return ResNet(BasicBlock, [2, 2, 2, 2], **kwargs)


def resnet34(**kwargs) -> ResNet:
    """Keywords: num_classes, image_size, stem, attn_layer, sites (see ``ResNet``)."""
    return ResNet(BasicBlock, [3, 4, 6, 3], **kwargs)


def resnet50(**kwargs) -> ResNet:
    """Keywords: num_classes, image_size, stem, attn_layer, sites (see ``ResNet``)."""
    return ResNet(Bottleneck, [3, 4, 6, 3], **kwargs)
