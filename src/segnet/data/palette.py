"""The colours of the classes: in masks, overlays, the report and napari."""

from __future__ import annotations

import matplotlib
import numpy as np

_BASE_PALETTE = ((0, 0, 0), (255, 0, 0), (0, 255, 0))


_EXTRA_CLASS_COLORMAP = "tab10"


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
