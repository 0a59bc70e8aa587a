"""Joint image/mask augmentation for training, built from albumentations.

Geometry (scale, crop, flips, 90-degree rotations) is applied to image and mask together; the mask
is always resampled with nearest neighbour so no label value is invented at edges. Photometric
jitter (brightness, contrast, gamma, noise, blur) touches the image alone. Crops larger than the
(rescaled) image are padded, the mask padding set to ``IGNORE_INDEX`` so the loss skips it.
Validation and evaluation use no transform at all: whole images at their own size.
"""

from __future__ import annotations

from collections.abc import Sequence

import albumentations as A
import cv2

from segnet.data.pairs import IGNORE_INDEX


def train_transform(
    crop_size: int,
    scale_range: Sequence[float] = (0.75, 1.25),
    num_classes: int = 3,
    focus_class: int | None = None,
    focus_probability: float = 0.0,
) -> A.Compose:
    """Random scale, crop to ``crop_size``, flips, rotations, and image-only photometric jitter.

    With ``focus_class`` set, a fraction ``focus_probability`` of the crops is centred on pixels of
    that class when the image has any (nnU-Net's foreground oversampling): a rare class such as
    spirochetes (about 1% of pixels) is then seen in most batches instead of a few.
    """
    low, high = scale_range
    crop: A.BasicTransform = A.RandomCrop(crop_size, crop_size)
    if focus_class is not None and 0 < focus_probability:
        # CropNonEmptyMaskIfExists centres on pixels whose value is not ignored: ignore every other label.
        others = [value for value in range(num_classes) if value != focus_class] + [IGNORE_INDEX]
        crop = A.OneOf(
            [
                A.CropNonEmptyMaskIfExists(crop_size, crop_size, ignore_values=others, p=focus_probability),
                A.RandomCrop(crop_size, crop_size, p=1.0 - focus_probability),
            ],
            p=1.0,
        )
    return A.Compose(
        [
            A.RandomScale(
                scale_limit=(low - 1.0, high - 1.0),
                interpolation=cv2.INTER_LINEAR,
                mask_interpolation=cv2.INTER_NEAREST,
                p=1.0,
            ),
            A.PadIfNeeded(crop_size, crop_size, border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=IGNORE_INDEX),
            crop,
            A.HorizontalFlip(p=0.5),
            A.VerticalFlip(p=0.5),
            A.RandomRotate90(p=0.5),
            A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=0.5),
            A.RandomGamma(gamma_limit=(80, 120), p=0.3),
            A.GaussNoise(std_range=(0.01, 0.04), p=0.2),
            A.GaussianBlur(blur_limit=(3, 5), p=0.1),
        ]
    )
