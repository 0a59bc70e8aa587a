"""The fingerprint of a training set: image sizes, normalisation, class frequencies and object sizes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import cv2
import numpy as np
from scipy import ndimage

from segnet.data.classes import MIN_AREA


def compute_fingerprint(samples: Iterable[tuple[np.ndarray, np.ndarray]], num_classes: int) -> dict:
    """Describe the training data: image sizes, per-channel mean/std on [0, 1], class frequencies.

    ``samples`` yields decoded (image, mask) pairs. ``class_frequencies`` are pixel fractions over
    all images; ``class_presence_frequencies`` are each class's pixels over the pixels of the images
    that contain it (the SegNet paper's median-frequency-balancing input); ``images_per_class``
    counts images containing each class; ``class_thickness`` and ``class_diameter`` are each class's
    median, over the images containing it, of :func:`mask_thickness` and :func:`object_diameter`
    (``None`` for a class in no image, or in none with a shape of ``MIN_AREA`` pixels).
    """
    channel_sum = np.zeros(3)
    channel_sq = np.zeros(3)
    class_pixels = np.zeros(num_classes, dtype=np.int64)
    presence_pixels = np.zeros(num_classes, dtype=np.int64)
    images_per_class = np.zeros(num_classes, dtype=np.int64)
    heights, widths = [], []
    thicknesses: list[list[float]] = [[] for _ in range(num_classes)]
    diameters: list[list[float]] = [[] for _ in range(num_classes)]
    for image, mask in samples:
        heights.append(image.shape[0])
        widths.append(image.shape[1])
        pixels = image.reshape(-1, 3).astype(np.float64) / 255.0
        channel_sum += pixels.sum(0)
        channel_sq += (pixels**2).sum(0)
        counts = np.bincount(mask.ravel(), minlength=num_classes)[:num_classes]
        class_pixels += counts
        present = counts > 0
        presence_pixels[present] += mask.size
        images_per_class += present
        for index in np.flatnonzero(present):
            thicknesses[index].append(mask_thickness(mask == index))
            diameter = object_diameter(mask == index)
            if diameter is not None:
                diameters[index].append(diameter)
    total = class_pixels.sum()
    mean = channel_sum / total
    std = np.sqrt(np.maximum(channel_sq / total - mean**2, 1e-12))
    return {
        "num_images": len(heights),
        "height": {"min": int(min(heights)), "median": float(np.median(heights)), "max": int(max(heights))},
        "width": {"min": int(min(widths)), "median": float(np.median(widths)), "max": int(max(widths))},
        "mean": mean.tolist(),
        "std": std.tolist(),
        "class_frequencies": (class_pixels / total).tolist(),
        "class_presence_frequencies": np.where(
            presence_pixels > 0, class_pixels / np.maximum(presence_pixels, 1), 0.0
        ).tolist(),
        "images_per_class": images_per_class.tolist(),
        "class_thickness": [float(np.median(values)) if values else None for values in thicknesses],
        "class_diameter": [float(np.median(values)) if values else None for values in diameters],
    }


def fingerprint_differences(recorded: Mapping, computed: Mapping) -> list[str]:
    """The keys, of those both fingerprints hold, whose values differ beyond rounding.

    Keys only one holds are skipped: a fingerprint from another segnet version may describe more.
    """

    def same(a: object, b: object) -> bool:
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            return a.keys() == b.keys() and all(same(a[key], b[key]) for key in a)
        if isinstance(a, list) and isinstance(b, list):
            return len(a) == len(b) and all(map(same, a, b))
        if isinstance(a, float | int) and isinstance(b, float | int):
            return bool(np.isclose(a, b, rtol=1e-9, atol=1e-12))
        return a == b

    return [key for key in recorded if key in computed and not same(recorded[key], computed[key])]


def mask_thickness(region: np.ndarray) -> float:
    """Mean thickness in pixels of the shapes in a boolean mask: twice the area over the boundary pixels.

    Exact for a long band at least 2 px wide (width w: area L*w, boundary 2L), the radius for a disc;
    what matters is that thin structures (spirochetes) score low, so the resolution a model may
    work at can be read off it. The image border is no boundary (a shape cut by it is not thinner
    for that): a region without boundary scores twice its area.
    """
    interior = region.copy()
    interior[1:] &= region[:-1]
    interior[:-1] &= region[1:]
    interior[:, 1:] &= region[:, :-1]
    interior[:, :-1] &= region[:, 1:]
    area = int(region.sum())
    return 2.0 * area / max(area - int(interior.sum()), 1)


SCALE_LIMITS = (0.5, 4.0)
"""The most an image is shrunk or enlarged to bring its objects to a reference size: beyond it a
wrong measurement would blow an image up without bound (:mod:`segnet.predict.scale` too)."""


def size_factor(diameter: float | None, reference: float, limits: tuple[float, float] = SCALE_LIMITS) -> float:
    """How much to enlarge an image whose objects measure ``diameter`` so they measure ``reference``,
    clipped to ``limits``; 1 where the diameter is unknown."""
    if diameter is None or diameter <= 0:
        return 1.0
    return min(max(reference / diameter, limits[0]), limits[1])


def reference_scale(region: np.ndarray, reference: float, limits: tuple[float, float] = SCALE_LIMITS) -> float:
    """:func:`size_factor` of the shapes in ``region`` (:func:`object_diameter`)."""
    return size_factor(object_diameter(region), reference, limits)


def object_diameter(region: np.ndarray, min_area: int = MIN_AREA, *, quantile: float = 0.5) -> float | None:
    """The median (or another ``quantile``) width in pixels of the shapes in a boolean mask: twice the
    largest distance from a pixel of the shape to its outside, over the 8-connected shapes of at
    least ``min_area`` pixels.

    The diameter of a round object (a disc's within a pixel), and two touching cells measure as one
    cell, not as one large object, without the cost of splitting them: this is how the image's scale
    is read off its red cells (:mod:`segnet.predict.scale`). As for :func:`mask_thickness` the image
    border is no boundary, so a cell cut by it keeps its width. A higher ``quantile`` reads the scale
    past the small fragments of cells that a model finds at the wrong scale (:mod:`segnet.predict.scale`
    takes 0.75; on drawn masks the 75th percentile is 1.05x the median for the median image).
    ``None`` without any shape, or when the region is the whole image.
    """
    components, count = ndimage.label(region, structure=np.ones((3, 3), dtype=bool))
    if count == 0:
        return None
    areas = np.bincount(components.ravel())[1:]
    if not (areas >= min_area).any() or region.all():
        return None
    distance = cv2.distanceTransform(
        region.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE
    )  # exact, and 5x scipy's speed
    kept = areas >= min_area
    widths = np.array(
        [
            distance[box][components[box] == label].max()
            for label, box in enumerate(ndimage.find_objects(components), 1)
        ],
        dtype=np.float64,
    )[kept]
    width = float(np.quantile(widths, quantile))
    # Rounded: OpenCV's float32 result differs in its last bits with its thread count, and a
    # resumed run compares its fingerprint exactly.
    return round(2.0 * width, 2)
