"""Synthetic images for smoke tests: no files, but learnable.

Each class gets its own colour and a coarse spatial pattern; every image adds noise and a random
shift, so a small network can learn the classes in a few steps while the augmentation still matters.
"""

from __future__ import annotations

import torch

from namexp.data.cifar import ImageSplits
from namexp.data.identity import tensors_fingerprint


def make_synthetic(num_classes: int, image_size: int, train_size: int, test_size: int, seed: int = 0) -> ImageSplits:
    g = torch.Generator().manual_seed(seed)
    colours = torch.rand(num_classes, 3, 1, 1, generator=g) * 160 + 48
    patterns = torch.randn(num_classes, 1, 4, 4, generator=g)
    patterns = torch.nn.functional.interpolate(
        patterns, size=(image_size, image_size), mode="bilinear", align_corners=False
    )

    def split(n: int):
        labels = torch.arange(n) % num_classes
        labels = labels[torch.randperm(n, generator=g)]
        noise = torch.randn(n, 3, image_size, image_size, generator=g) * 24
        images = colours[labels] + 40 * patterns[labels] + noise
        return images.clamp(0, 255).to(torch.uint8), labels

    train_images, train_labels = split(train_size)
    test_images, test_labels = split(test_size)
    classes = [f"class_{i}" for i in range(num_classes)]
    fingerprint = tensors_fingerprint(train_images, train_labels, test_images, test_labels)
    return ImageSplits(train_images, train_labels, test_images, test_labels, classes, fingerprint, "synthetic")
