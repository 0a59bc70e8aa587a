"""Training augmentation keeps image and mask aligned and never invents labels."""

from __future__ import annotations

import albumentations as A
import numpy as np

from segnet.data.pairs import IGNORE_INDEX
from segnet.data.transforms import train_transform


def striped_pair(height: int = 60, width: int = 44) -> tuple[np.ndarray, np.ndarray]:
    """An image whose red channel encodes the class of each pixel, so alignment can be checked."""
    mask = np.zeros((height, width), np.uint8)
    mask[:, width // 3 : 2 * width // 3] = 1
    mask[height // 2 :, :] = 2
    image = np.zeros((height, width, 3), np.uint8)
    image[..., 0] = mask * 100
    return image, mask


def test_image_and_mask_stay_aligned_and_labels_stay_valid():
    transform = train_transform(32, scale_range=(0.6, 1.6))
    # Photometric jitter (the image-only transforms) would blur the red-channel code: check geometry without it.
    geometric = [t for t in transform.transforms if not isinstance(t, A.ImageOnlyTransform)]
    assert 0 < len(geometric) < len(transform.transforms)
    transform.transforms = geometric
    image, mask = striped_pair()
    transform.set_random_seed(0)
    for _ in range(40):
        out = transform(image=image, mask=mask)
        assert out["image"].shape == (32, 32, 3) and out["mask"].shape == (32, 32)
        assert set(np.unique(out["mask"])) <= {0, 1, 2, IGNORE_INDEX}
        labelled = out["mask"] != IGNORE_INDEX
        decoded = np.round(out["image"][..., 0].astype(float) / 100)
        # Bilinear image resampling blurs edges by a pixel: most labelled pixels must agree exactly.
        assert (decoded[labelled] == out["mask"][labelled]).mean() > 0.9


def test_small_images_are_padded_with_the_ignore_label():
    transform = train_transform(64, scale_range=(1.0, 1.0))
    image, mask = striped_pair(20, 24)
    out = transform(image=image, mask=mask)
    assert out["mask"].shape == (64, 64)
    assert (out["mask"] == IGNORE_INDEX).sum() == 64 * 64 - 20 * 24


def test_focus_crop_finds_the_rare_class():
    image = np.zeros((200, 200, 3), np.uint8)
    mask = np.zeros((200, 200), np.uint8)
    mask[150:153, 20:30] = 2
    focused = train_transform(32, scale_range=(1.0, 1.0), num_classes=3, focus_class=2, focus_probability=1.0)
    plain = train_transform(32, scale_range=(1.0, 1.0))
    focused.set_random_seed(1)
    plain.set_random_seed(1)
    hits_focused = sum((focused(image=image, mask=mask)["mask"] == 2).any() for _ in range(30))
    hits_plain = sum((plain(image=image, mask=mask)["mask"] == 2).any() for _ in range(30))
    assert hits_focused == 30
    assert hits_plain < 10
