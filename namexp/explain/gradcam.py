"""Grad-CAM with captum (``LayerGradCam``) on a model's last convolutional stage, at the image's size.

The layer is chosen generically: of the modules whose output is a 4-D feature map with more than one
position, the one that finishes last in a forward pass (the last stage of a namexp backbone, before global
pooling). captum is an optional extra; without it the command stops with one line naming the install.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from namexp.errors import UserError

INSTALL = "pip install 'namexp[explain]'"


def require_captum():
    try:
        import captum.attr
    except ImportError:
        raise UserError(f"namexp explain needs captum, which is not installed: {INSTALL}") from None
    return captum.attr


def cam_layer(model: nn.Module, image: Tensor) -> nn.Module:
    """The module whose 4-D, more-than-one-position output is produced last in a forward pass of `image`."""
    finished: list[nn.Module] = []

    def hook(module, inputs, output):
        if isinstance(output, Tensor) and output.dim() == 4 and output.shape[-1] * output.shape[-2] > 1:
            finished.append(module)

    handles = [m.register_forward_hook(hook) for m in model.modules() if m is not model]
    try:
        with torch.no_grad():
            model(image[:1])
    finally:
        for handle in handles:
            handle.remove()
    if not finished:
        raise UserError("this model has no 4-D feature map to compute Grad-CAM on")
    return finished[-1]


def predictions(model: nn.Module, images: Tensor) -> tuple[Tensor, Tensor]:
    """(predicted class, its softmax probability) per image."""
    with torch.no_grad():
        probs = model(images).float().softmax(dim=1)
    confidence, predicted = probs.max(dim=1)
    return predicted.cpu(), confidence.cpu()


def gradcam(model: nn.Module, images: Tensor, targets: Tensor) -> Tensor:
    """Grad-CAM maps (N, H, W) for `targets`, upsampled bilinearly to the images' size, each scaled to [0, 1]."""
    attr = require_captum()
    layer = cam_layer(model, images)
    cam = attr.LayerGradCam(model, layer).attribute(images, target=targets.tolist(), relu_attributions=True)
    cam = attr.LayerAttribution.interpolate(cam.detach(), tuple(images.shape[-2:]), "bilinear")
    cam = cam[:, 0].float().cpu()
    peak = cam.flatten(1).amax(dim=1).clamp_min(1e-12)
    return cam / peak[:, None, None]
