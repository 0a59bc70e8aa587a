"""Pictures of a prediction: class colours, overlays, and predictive entropy as a heatmap."""

from __future__ import annotations

import matplotlib
import numpy as np
from scipy.special import entr

# Fixed colours of the first classes: background black, erythrocytes red, spirochetes green.
_BASE_PALETTE = ((0, 0, 0), (255, 0, 0), (0, 255, 0))
# Further classes cycle through this qualitative colormap.
_EXTRA_CLASS_COLORMAP = "tab10"
UNCERTAINTY_COLORMAP = "inferno"  # black when certain, so a confident darkfield field stays dark
_UNCERTAINTY_ALPHA = 0.5


def predictive_entropy(proba: np.ndarray) -> np.ndarray:
    """Entropy ``-sum_c p log p`` in nats of ``(C, H, W)`` probabilities: ``(H, W)`` float32.

    0 where one class has all the probability, ``log(C)`` where all classes are equally likely.
    """
    return np.maximum(entr(proba.astype(np.float64)).sum(axis=0), 0.0).astype(np.float32)


def class_palette(num_classes: int) -> np.ndarray:
    """``(num_classes, 3)`` uint8 RGB colours: black, red, green, then a matplotlib colormap."""
    extra = matplotlib.colormaps[_EXTRA_CLASS_COLORMAP]
    colours = list(_BASE_PALETTE[:num_classes])
    for index in range(len(colours), num_classes):
        rgb = extra((index - len(_BASE_PALETTE)) % extra.N)[:3]
        colours.append(tuple(round(255 * channel) for channel in rgb))
    return np.array(colours, dtype=np.uint8).reshape(num_classes, 3)


def colorize(mask: np.ndarray, num_classes: int) -> np.ndarray:
    """Colour a ``H x W`` class-index mask: ``H x W x 3`` uint8 (see :func:`class_palette`)."""
    if mask.size and int(mask.max()) >= num_classes:
        raise ValueError(f"mask holds class {int(mask.max())}, but there are only {num_classes} classes")
    return class_palette(num_classes)[mask]


def _blend(image: np.ndarray, colours: np.ndarray, alpha: np.ndarray | float) -> np.ndarray:
    """``(1 - alpha) * image + alpha * colours`` as uint8; ``alpha`` may be an ``H x W`` map."""
    if np.ndim(alpha) == 2:
        alpha = alpha[..., None]
    blended = (1 - alpha) * image.astype(np.float32) + alpha * colours.astype(np.float32)
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def overlay(image: np.ndarray, mask: np.ndarray, num_classes: int, alpha: float = 0.45) -> np.ndarray:
    """The image with each non-background pixel blended with its class colour (``alpha`` of it)."""
    if image.shape[:2] != mask.shape:
        raise ValueError(f"image size {image.shape[:2]} differs from mask size {mask.shape}")
    return _blend(image, colorize(mask, num_classes), np.where(mask > 0, np.float32(alpha), np.float32(0)))


def _uncertainty_overlay(image: np.ndarray, scaled_entropy: np.ndarray) -> np.ndarray:
    """Heatmap of entropy (scaled to 0..1) blended over the image."""
    heat = matplotlib.colormaps[UNCERTAINTY_COLORMAP](scaled_entropy)[..., :3] * 255
    return _blend(image, heat, _UNCERTAINTY_ALPHA)
