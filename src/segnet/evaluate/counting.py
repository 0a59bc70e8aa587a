"""Count objects (red blood cells, spirochetes) in a predicted class mask.

Objects
    The objects of a class are the 8-connected components of its pixels. Components smaller than
    ``max(min_area, min_area_fraction * H * W)`` pixels are dropped as speckle. The threshold scales
    with the image because the darkfield images come at very different sizes (309x214 to 1805x1324)
    with the same field of view: a red cell's radius is about 4% of the image diagonal at every
    size (26 px in the smallest images, 64 px in the largest), so a fixed pixel count would be far
    too strict on small images or too lax on large ones. ``min_area`` is an absolute floor for tiny
    images. With the defaults (30 px, 5e-5 of the image) one of the ~4000 objects drawn in the 293
    real masks falls below the threshold (a 28 px spirochete fragment); the smallest drawn cells
    and spirochete pieces are 0.8e-4 to 1.5e-4 of the image.

Splitting touching objects (``split_touching``, red cells by default)
    Touching discs merge into one component. Each component is split at the necks of its
    Euclidean distance transform (EDT), a marker-counting watershed done with scipy.ndimage alone
    (``watershed_ift`` needs integer costs and floods the background too). The EDT level is swept
    down in 0.5 px steps; a peak of height h (the radius of the disc it sits in) that first joins a
    taller peak at level s (the half-width of the neck between them) is an object of its own when
    s < ``core_fraction`` * h, else it is absorbed. Being relative to each peak's own height, this
    also separates a small cell touching a big one. Two discs of radius R whose centres are d apart
    meet in a neck of half-width sqrt(R^2 - d^2/4): with the default 0.8 they are split once
    d > 1.2 R. A convex object is never split, however elongated: the superlevel sets of the EDT
    of a convex set are convex, hence connected, so its peaks never meet another. Each kept peak's
    core is the part of ``EDT >= core_fraction * h`` around it, and every pixel of the component
    joins its nearest core. Spirochetes are thin curved lines whose width varies along their
    length, so their EDT has many weak maxima; they are not split by default.

    Tuning on the real masks (cells there are drawn one by one, so touching cells show up as merged
    components): over every sixth mask (49 images), the red cell count is 548 without splitting,
    699 / 755 / 796 / 818 with core_fraction 0.6 / 0.7 / 0.8 / 0.85. Pairs and chains of touching
    cells are split at 0.6; cells drawn overlapping by a third of their width (neck about
    0.75-0.87 R) need 0.8-0.85; no single cell was seen shattered at 0.85 in the inspected label
    images. The default 0.8 sits just below that.

Predicted masks are cleaned before they are counted (:func:`segnet.data.cleaning.clean_prediction`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.segmentation import relabel_sequential

from segnet.data.classes import DARKFIELD_ROLES, MIN_AREA
from segnet.data.cleaning import EIGHT_CONNECTED

_LEVEL_STEP = 0.5  # pixels of EDT between two levels of the splitting sweep


def area_threshold(shape: tuple[int, ...], min_area: int = MIN_AREA, min_area_fraction: float = 5e-5) -> int:
    """Smallest object area (pixels) kept for an image of ``shape``: ``max(min_area, fraction * H * W)``."""
    return max(int(min_area), int(np.ceil(min_area_fraction * float(np.prod(shape)))))


def label_objects(
    mask: np.ndarray,
    class_id: int,
    *,
    min_area: int = MIN_AREA,
    min_area_fraction: float = 5e-5,
    split: bool = False,
    core_fraction: float = 0.8,
) -> tuple[np.ndarray, int]:
    """Label the objects of ``class_id`` in an ``(H, W)`` class mask.

    Returns ``(labels, count)``: an int32 image with 0 outside the counted objects and 1..count on
    them, every id of 1..count on at least one pixel. ``split`` separates touching objects at EDT necks (module docstring).
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"expected an (H, W) class mask, got shape {mask.shape}")
    if not 0.0 < core_fraction < 1.0:
        raise ValueError(f"core_fraction must be in (0, 1), got {core_fraction}")
    components, num_components = ndimage.label(mask == class_id, structure=EIGHT_CONNECTED)
    if num_components == 0:
        return components.astype(np.int32), 0
    areas = np.bincount(components.ravel(), minlength=num_components + 1)
    kept = areas >= area_threshold(mask.shape, min_area, min_area_fraction)
    kept[0] = False
    components[~kept[components]] = 0
    if not split:
        labels, count = ndimage.label(components > 0, structure=EIGHT_CONNECTED)
        return labels.astype(np.int32), count

    labels = np.zeros(mask.shape, dtype=np.int32)
    count = 0
    for component_id, box in enumerate(ndimage.find_objects(components), start=1):
        if box is None or not kept[component_id]:
            continue
        # Pad the crop so the EDT sees background around objects not touching the image border.
        inside = np.pad(components[box] == component_id, 1)
        distance = ndimage.distance_transform_edt(inside)
        cores = _split_cores(distance, core_fraction)
        num_cores = int(cores.max())
        if num_cores > 1:
            # Each pixel joins its nearest core.
            nearest = ndimage.distance_transform_edt(cores == 0, return_distances=False, return_indices=True)
            cores = cores[tuple(nearest)]
        else:
            cores = inside.astype(np.int32)
        pieces = np.where(inside, cores + count, 0)[1:-1, 1:-1]
        labels[box] = np.where(pieces > 0, pieces, labels[box])
        count += num_cores
    # A core whose pixels all went to other cores would leave an id that is counted but has no
    # pixels, so no row in objects.csv: the ids are renumbered over the pixels they really hold.
    labels, _, _ = relabel_sequential(labels)
    return labels.astype(np.int32), int(labels.max(initial=0))


def _split_cores(distance: np.ndarray, core_fraction: float) -> np.ndarray:
    """Label the cores of one component from its EDT ``distance`` (0 outside the component).

    Sweeps the EDT level down in steps of ``_LEVEL_STEP`` pixels. A peak of height h that first
    meets a taller peak at level s (the neck half-width) stands for an object of its own when
    s < core_fraction * h; otherwise it is absorbed. Each surviving peak's core is the connected
    part of ``distance >= core_fraction * h`` around it; cores of distinct peaks are disjoint.
    """
    heights: list[float] = []  # per peak: its EDT maximum
    seeds: list[tuple[int, int]] = []  # per peak: a pixel at that maximum
    alive: list[bool] = []
    decided: list[bool] = []  # met a taller peak already (kept for good, or absorbed)
    top = float(distance.max())
    for level in np.arange(top, 0.0, -_LEVEL_STEP):
        superlevel, num_regions = ndimage.label(distance >= level, structure=EIGHT_CONNECTED)
        peaks_in_region: dict[int, list[int]] = {}
        for peak, seed in enumerate(seeds):
            if alive[peak]:
                peaks_in_region.setdefault(int(superlevel[seed]), []).append(peak)
        for region in range(1, num_regions + 1):
            peaks = peaks_in_region.get(region)
            if not peaks:  # a new peak appears
                in_region = superlevel == region
                seed = np.unravel_index(np.argmax(np.where(in_region, distance, -1.0)), distance.shape)
                heights.append(float(distance[seed]))
                seeds.append((int(seed[0]), int(seed[1])))
                alive.append(True)
                decided.append(False)
            elif len(peaks) > 1:
                tallest = max(peaks, key=heights.__getitem__)
                for peak in peaks:
                    if peak == tallest or decided[peak]:
                        continue
                    decided[peak] = True
                    alive[peak] = level < core_fraction * heights[peak]
    cores = np.zeros(distance.shape, dtype=np.int32)
    survivors = [peak for peak in range(len(seeds)) if alive[peak]]
    for core_id, peak in enumerate(survivors, start=1):
        regions, _ = ndimage.label(distance >= core_fraction * heights[peak], structure=EIGHT_CONNECTED)
        # The sweep's 0.5 px steps can keep a peak whose core reaches a taller one's: the taller keeps its own.
        cores[(regions == regions[seeds[peak]]) & (cores == 0)] = core_id
    return cores


def label_classes(
    mask: np.ndarray,
    class_ids: Sequence[int],
    *,
    min_area: int = MIN_AREA,
    min_area_fraction: float = 5e-5,
    split_touching: Collection[int] = DARKFIELD_ROLES.solid,
    core_fraction: float = 0.8,
) -> dict[int, tuple[np.ndarray, int]]:
    """The counted objects of each class in an ``(H, W)`` class mask: ``{class: (labels, count)}``.

    Objects are 8-connected components of at least ``max(min_area, min_area_fraction * H * W)``
    pixels; classes in ``split_touching`` have touching objects split at EDT necks (module
    docstring). ``labels`` is as :func:`label_objects` returns it.
    """
    return {
        class_id: label_objects(
            mask,
            class_id,
            min_area=min_area,
            min_area_fraction=min_area_fraction,
            split=class_id in split_touching,
            core_fraction=core_fraction,
        )
        for class_id in class_ids
    }


def coverage(mask: np.ndarray, class_ids: Sequence[int]) -> dict[int, float]:
    """Fraction of the image's pixels that belong to each class."""
    mask = np.asarray(mask)
    if mask.size == 0:
        raise ValueError("empty mask")
    return {class_id: float(np.count_nonzero(mask == class_id)) / mask.size for class_id in class_ids}


@dataclass(frozen=True)
class CountAgreement:
    """How per-image object counts of one class agree with the true ones (``counts`` in ``metrics.json``).

    Attributes:
        mean_absolute_error: the mean of ``|predicted - true|`` over the images.
        pearson_r: the correlation of predicted and true counts; ``None`` with fewer than two images
            or when either side is constant (undefined there).
        mean_true: the mean true count per image.
        mean_predicted: the mean predicted count per image.
    """

    mean_absolute_error: float
    pearson_r: float | None
    mean_true: float
    mean_predicted: float

    def to_dict(self) -> dict[str, float | None]:
        """The numbers, JSON-ready."""
        return dataclasses.asdict(self)


def count_agreement(true_counts: Sequence[int], pred_counts: Sequence[int]) -> CountAgreement:
    """Agreement of per-image counts: mean absolute error, Pearson correlation and the mean counts."""
    true = np.asarray(true_counts, dtype=np.float64)
    pred = np.asarray(pred_counts, dtype=np.float64)
    if true.shape != pred.shape or true.ndim != 1:
        raise ValueError(f"expected two equal-length count lists, got {true.shape} and {pred.shape}")
    if true.size == 0:
        raise ValueError("no counts to compare")
    pearson_r = None
    if true.size >= 2 and np.ptp(true) > 0 and np.ptp(pred) > 0:
        pearson_r = float(np.corrcoef(true, pred)[0, 1])
    return CountAgreement(float(np.mean(np.abs(true - pred))), pearson_r, float(np.mean(true)), float(np.mean(pred)))
