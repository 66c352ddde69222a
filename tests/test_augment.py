"""The on-device batch augmentation draws the same crops and flips as the reference per-image transforms."""

from __future__ import annotations

from collections import Counter

import torch
from PIL import Image
from torchvision import transforms as T

from namexp.data.augment import BatchAugment, Normalizer

MEAN, STD = [0.5071, 0.4865, 0.4409], [0.2673, 0.2564, 0.2762]
PAD, SIZE, DRAWS = 4, 32, 4000


def _image() -> torch.Tensor:
    """A uint8 CHW image with no zero pixel, so padding is recognisable."""
    return torch.randint(1, 256, (3, SIZE, SIZE), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)


def _identify(out: torch.Tensor, candidates: dict) -> tuple:
    """Which (dy, dx, flipped) crop of the padded image produced `out`."""
    for key, crop in candidates.items():
        if torch.allclose(out, crop, atol=1e-5):
            return key
    raise AssertionError("output is not a crop of the padded image")


def _candidates(image: torch.Tensor) -> dict:
    scale = torch.tensor(STD)[:, None, None]
    shift = torch.tensor(MEAN)[:, None, None]
    padded = torch.nn.functional.pad(image.float() / 255, (PAD, PAD, PAD, PAD))
    out = {}
    for dy in range(2 * PAD + 1):
        for dx in range(2 * PAD + 1):
            crop = (padded[:, dy : dy + SIZE, dx : dx + SIZE] - shift) / scale
            out[(dy, dx, False)] = crop
            out[(dy, dx, True)] = crop.flip(-1)
    return out


def _on_device(image: torch.Tensor) -> torch.Tensor:
    augment = BatchAugment(SIZE, PAD, crop=True, flip=True)
    store = augment.pad(image.permute(1, 2, 0)[None].contiguous())
    draws = augment.draw(DRAWS, torch.Generator().manual_seed(1))
    crops = augment(store, torch.zeros(DRAWS, dtype=torch.long), draws)
    return Normalizer(MEAN, STD, torch.device("cpu"), channels_last=False)(crops)


def _reference(image: torch.Tensor) -> torch.Tensor:
    torch.manual_seed(2)
    tf = T.Compose([T.RandomCrop(SIZE, padding=PAD), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(MEAN, STD)])
    pil = Image.fromarray(image.permute(1, 2, 0).numpy())
    return torch.stack([tf(pil) for _ in range(DRAWS)])


def test_on_device_augmentation_matches_the_reference_distribution():
    image = _image()
    ours, ref = _on_device(image), _reference(image)
    assert ours.shape == ref.shape == (DRAWS, 3, SIZE, SIZE) and ours.dtype == ref.dtype == torch.float32
    low = (0 - torch.tensor(MEAN)) / torch.tensor(STD)
    high = (1 - torch.tensor(MEAN)) / torch.tensor(STD)
    for batch in (ours, ref):
        assert (batch >= low[None, :, None, None] - 1e-5).all() and (batch <= high[None, :, None, None] + 1e-5).all()

    candidates = _candidates(image)
    seen = {
        name: Counter(_identify(x, candidates) for x in batch[:1500]) for name, batch in (("ours", ours), ("ref", ref))
    }
    for name, counts in seen.items():
        offsets = Counter((dy, dx) for dy, dx, _ in counts.elements())
        flips = sum(n for (_, _, f), n in counts.items() if f)
        assert len(offsets) == 81, (name, len(offsets))  # every offset of the 9x9 range is drawn
        assert 0.45 < flips / 1500 < 0.55, (name, flips)  # both flips, about half each
        assert max(offsets.values()) < 3 * 1500 / 81, name  # no offset strongly favoured
    # the two draw the same distribution: per-axis offset frequencies agree within sampling noise
    for axis in (0, 1):
        ours_axis = Counter(k[axis] for k in seen["ours"].elements())
        ref_axis = Counter(k[axis] for k in seen["ref"].elements())
        for value in range(2 * PAD + 1):
            assert abs(ours_axis[value] - ref_axis[value]) < 80, (axis, value, ours_axis, ref_axis)


def test_padding_appears_only_at_the_borders():
    ours = _on_device(_image())
    padding = torch.isclose(ours, ((0 - torch.tensor(MEAN)) / torch.tensor(STD))[None, :, None, None], atol=1e-5).all(1)
    rows, cols = padding.all(2), padding.all(1)  # a padded row/column is padding across its whole width
    assert padding.any(), "some crops reach into the padding"
    for b in range(ours.shape[0]):
        mask = rows[b][:, None] | cols[b][None, :]
        assert torch.equal(padding[b], mask), b  # every padded pixel lies in a whole border row or column
        for line in (rows[b], cols[b]):
            idx = line.nonzero().flatten().tolist()
            top = [i for i in idx if i < PAD]
            bottom = [i for i in idx if i >= SIZE - PAD]
            assert top == list(range(len(top))) and bottom == list(range(SIZE - len(bottom), SIZE))
            assert len(top) + len(bottom) == len(idx) and (not top or not bottom)
