"""Grad-CAM points at what decides the class: a tiny model trained (namexp train, data=imagefolder) on images
whose class is the colour of one patch at a random, recorded place; its Grad-CAM peak must fall on the patch
far more often than the patch's share of the image.

A fourth class has no patch at all: without it a model may recognise one colour as "neither of the others",
and Grad-CAM (which keeps positive evidence only) would then have nothing to show for that class."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import train_once
from namexp.explain.gradcam import gradcam
from namexp.run.load import load_run

SIZE, PATCH = 32, 8  # the patch covers 1/16 of the image: a peak lands on it by chance 6 % of the time
COLOURS = {"blue": (20, 20, 230), "green": (20, 200, 20), "none": None, "red": (230, 20, 20)}  # ImageFolder's order
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def patch_image(rng: np.random.Generator, colour) -> tuple[np.ndarray, tuple[int, int]]:
    pixels = np.clip(rng.normal(128, 20, size=(SIZE, SIZE, 3)), 0, 255)
    top, left = (int(v) for v in rng.integers(0, SIZE - PATCH + 1, size=2))
    if colour is not None:
        pixels[top : top + PATCH, left : left + PATCH] = colour
    return pixels.astype(np.uint8), (top, left)


def write_folders(root, per_class: dict[str, int]) -> list[tuple[np.ndarray, int, tuple[int, int]]]:
    """train/ and val/ in ImageFolder's layout; returns the val images with their class and patch place."""
    rng = np.random.default_rng(0)
    val = []
    for split, count in per_class.items():
        for label, (name, colour) in enumerate(COLOURS.items()):
            (root / split / name).mkdir(parents=True)
            for j in range(count):
                pixels, place = patch_image(rng, colour)
                Image.fromarray(pixels).save(root / split / name / f"{j}.png")
                if split == "val" and colour is not None:  # the patch classes are the ones measured
                    val.append((pixels, label, place))
    return val


@pytest.mark.long
def test_gradcam_peaks_on_the_patch_that_decides_the_class(tmp_path):
    val = write_folders(tmp_path / "folders", {"train": 24, "val": 10})
    data = [
        "data=imagefolder", f"data.root={tmp_path / 'folders'}", "data.num_classes=4", f"data.image_size={SIZE}",
        f"data.eval_resize={SIZE}", "data.augment=none", f"data.mean={list(MEAN)}", f"data.std={list(STD)}",
    ]  # fmt: skip
    trainer = ["trainer.epochs=4", "trainer.batch_size=16", "trainer.num_workers=0", "trainer.progress=none"]
    recipe = ["backbone=resnet20", "attention=se", "sched=cosine", "optim.lr=0.05", "trainer.device=cpu", "seed=0"]
    run = train_once(tmp_path, tmp_path / "run", [*data, *trainer, *recipe])
    model = load_run(run).model.eval()

    pixels = torch.tensor(np.stack([p for p, _, _ in val]), dtype=torch.float32).permute(0, 3, 1, 2) / 255
    images = (pixels - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]
    labels = torch.tensor([label for _, label, _ in val])
    with torch.no_grad():
        accuracy = float((model(images).argmax(1) == labels).float().mean())
    assert accuracy > 0.9, f"the model did not learn the patch colours (val accuracy {accuracy:.2f})"

    cams = gradcam(model, images, labels)
    peaks = [divmod(int(cam.flatten().argmax()), SIZE) for cam in cams]
    on_patch = [top <= y < top + PATCH and left <= x < left + PATCH for (y, x), (_, _, (top, left)) in zip(peaks, val)]
    chance = PATCH**2 / SIZE**2
    assert np.mean(on_patch) > max(0.5, 8 * chance), f"peak on the patch in {np.mean(on_patch):.0%} of images"
