"""Per-object measurements: an instance label image and one table row per object.

The objects are exactly those that :mod:`segnet.evaluate.counting` counts: the predicted mask is cleaned
with :func:`~segnet.data.cleaning.clean_prediction`, each class is labelled with
:func:`~segnet.evaluate.counting.label_objects` (touching red cells split), and the classes' labels are
stacked into one image where every object has its own id (1..N, class by class, background 0).
``counts.csv`` is tallied from the same objects, so its counts always equal the rows of
``objects.csv`` per image and class.

Geometry comes from scikit-image's ``regionprops``: area, centroid, bounding box, and the mean of
the image's grey value (the mean of its three channels, 0..255) over the object.

Length and width of thin objects (spirochetes)
    The centreline is the longest path through the object's skeleton (``skeletonize``): a
    double-sweep shortest-path search on the skeleton's 8-connected pixel graph (steps 1 or
    sqrt(2)), so short side branches of the skeleton are not added. The skeleton stops about half
    a width short of each end, so with ``S`` the skeleton path, ``A`` the area, ``L`` the length
    and ``W`` the mean width: ``L = S + W`` and ``A = L * W``, solved for ``W``. This is exact for
    a straight bar and for a bent band of even width; a branched object reports its longest
    branch-to-branch path.

Micrometres
    With a pixel size (micrometres per pixel, from ``--pixel-size`` or the TIFF's resolution tags,
    :func:`tiff_pixel_size`), areas and lengths are also given in micrometres; otherwise those
    columns stay empty and only the ``_px`` columns are filled.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile
from scipy.ndimage import gaussian_filter1d
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import dijkstra
from skimage.measure import regionprops
from skimage.morphology import skeletonize

from segnet.core.errors import DataError
from segnet.core.outputs import write_atomically
from segnet.data.classes import DARKFIELD_ROLES, MIN_AREA, ClassRoles
from segnet.data.cleaning import clean_prediction
from segnet.evaluate.counting import label_objects

# Resolution tags above this many micrometres per pixel are a print or screen setting (72 dpi is
# 353 um), not a microscope's calibration; darkfield images have pixels of 0.05 to 2 um.
_MAX_TAG_PIXEL_SIZE_UM = 10.0
_SQUARE_TOLERANCE = 1e-3  # x and y pixel sizes this close (relative) are one size: tags are rounded fractions
_UM_PER_UNIT = {2: 25400.0, 3: 10000.0}  # TIFF ResolutionUnit: 2 inch, 3 centimetre
_IMAGEJ_MICRON_UNITS = {"micron", "microns", "um", "µm", "\u03bcm", "\\u00B5m"}
# Pixel-graph steps of the skeleton: right, down, and the two diagonals below.
_PATH_SMOOTHING = 2.0
_STEPS = ((0, 1, 1.0), (1, 0, 1.0), (1, 1, math.sqrt(2.0)), (1, -1, math.sqrt(2.0)))


@dataclass(frozen=True)
class ObjectLabels:
    """One image's objects: ``labels`` (uint16, 0 background, 1..N) and each id's class index.

    ``class_names`` is filled where the objects were read back from a label image (its metadata).
    """

    labels: np.ndarray
    object_classes: tuple[int, ...]
    class_names: tuple[str, ...] = ()

    def counts(self, class_ids: Sequence[int]) -> dict[int, int]:
        """Objects per class, for ``counts.csv``."""
        return {class_id: self.object_classes.count(class_id) for class_id in class_ids}


@dataclass(frozen=True)
class ObjectMeasurement:
    """One object's row of ``objects.csv`` (pixel units; ``length``/``width`` only for thin classes)."""

    class_id: int
    object_id: int
    area: int
    centroid_x: float
    centroid_y: float
    bbox: tuple[int, int, int, int]  # left, top, width, height
    mean_intensity: float
    length: float | None = None
    width: float | None = None

    def row(self, image: str, class_names: Sequence[str], pixel_size: float | None) -> list[str]:
        """The CSV cells, in :data:`OBJECT_COLUMNS` order; micrometre cells empty without ``pixel_size``."""

        def number(value: float | None, scale: float | None = 1.0) -> str:
            return "" if value is None or scale is None else f"{value * scale:.3f}"

        area_scale = None if pixel_size is None else pixel_size**2
        return [
            image,
            class_names[self.class_id],
            str(self.object_id),
            str(self.area),
            f"{self.centroid_x:.2f}",
            f"{self.centroid_y:.2f}",
            *map(str, self.bbox),
            f"{self.mean_intensity:.2f}",
            number(self.length),
            number(self.width),
            "" if pixel_size is None else f"{pixel_size:g}",
            number(self.area, area_scale),
            number(self.length, pixel_size),
            number(self.width, pixel_size),
        ]


def find_objects(mask: np.ndarray, roles: ClassRoles = DARKFIELD_ROLES, *, min_area: int = MIN_AREA) -> ObjectLabels:
    """The counted objects of a *predicted* ``(H, W)`` class mask (cleaned first), in one label image.

    Every class but the background of ``roles`` is counted, its solid classes split where objects touch.

    Raises:
        ValueError: more objects than a 16-bit label image can number.
    """
    cleaned = clean_prediction(mask, roles)
    labels = np.zeros(cleaned.shape, dtype=np.int32)
    object_classes: list[int] = []
    for class_id in roles.counted:
        class_labels, count = label_objects(cleaned, class_id, min_area=min_area, split=class_id in roles.solid)
        labels = np.where(class_labels > 0, class_labels + len(object_classes), labels)
        object_classes += [class_id] * count
    if len(object_classes) > np.iinfo(np.uint16).max:
        raise ValueError(f"{len(object_classes)} objects do not fit a 16-bit label image")
    return ObjectLabels(labels.astype(np.uint16), tuple(object_classes))


def measure_objects(
    objects: ObjectLabels, image: np.ndarray, roles: ClassRoles = DARKFIELD_ROLES
) -> list[ObjectMeasurement]:
    """Measure every object of ``objects`` on the ``H x W x 3`` uint8 ``image``, in id order (the thin classes of ``roles`` along their centreline)."""
    grey = np.asarray(image, dtype=np.float64).mean(axis=2)
    measurements = []
    for region in regionprops(objects.labels, intensity_image=grey):
        class_id = objects.object_classes[region.label - 1]
        top, left, bottom, right = region.bbox
        length, width = centreline_length_and_width(region.image) if class_id in roles.thin else (None, None)
        measurements.append(
            ObjectMeasurement(
                class_id,
                region.label,
                int(region.area),
                float(region.centroid[1]),
                float(region.centroid[0]),
                (left, top, right - left, bottom - top),
                float(region.intensity_mean),
                length,
                width,
            )
        )
    return measurements


def centreline_length_and_width(shape: np.ndarray) -> tuple[float, float]:
    """Length along the centreline and mean width, in pixels, of one object (a boolean image).

    See the module docstring: ``L = S + W`` and ``A = L * W`` with ``S`` the longest skeleton path.
    """
    shape = np.pad(np.asarray(shape, dtype=bool), 1)
    area = float(shape.sum())
    skeleton_path = _longest_path(skeletonize(shape))
    width = (math.sqrt(skeleton_path**2 + 4 * area) - skeleton_path) / 2
    return skeleton_path + width, width


def _longest_path(skeleton: np.ndarray) -> float:
    """Length of the longest shortest path through a skeleton's pixel graph (exact on a tree).

    The path's pixel coordinates are smoothed (Gaussian, sigma ``_PATH_SMOOTHING`` pixels) before
    summing its steps: a digital line's staircase of straight and diagonal steps is up to 8% longer
    than the line it draws.
    """
    points = np.argwhere(skeleton)
    if len(points) < 2:
        return 0.0
    graph = _pixel_graph(skeleton, points)
    distances = dijkstra(graph, directed=False, indices=0)
    start = int(np.argmax(np.where(np.isfinite(distances), distances, -1.0)))
    distances, predecessors = dijkstra(graph, directed=False, indices=start, return_predecessors=True)
    node = int(np.argmax(np.where(np.isfinite(distances), distances, -1.0)))
    path = [node]
    while node != start:
        node = int(predecessors[node])
        path.append(node)
    smooth = gaussian_filter1d(points[path].astype(np.float64), _PATH_SMOOTHING, axis=0, mode="nearest")
    return float(np.hypot(*np.diff(smooth, axis=0).T).sum())


def _pixel_graph(skeleton: np.ndarray, points: np.ndarray) -> coo_matrix:
    """The skeleton's 8-connected pixels as a graph: node i is ``points[i]``, steps weigh 1 or sqrt(2)."""
    index = np.full(skeleton.shape, -1, dtype=np.int64)
    index[tuple(points.T)] = np.arange(len(points))
    rows, cols, weights = [], [], []
    height, width = skeleton.shape
    for d_row, d_col, step in _STEPS:
        neighbour = points + (d_row, d_col)
        inside = (neighbour[:, 0] < height) & (neighbour[:, 1] >= 0) & (neighbour[:, 1] < width)
        targets = np.full(len(points), -1, dtype=np.int64)
        targets[inside] = index[tuple(neighbour[inside].T)]
        linked = targets >= 0
        rows.append(np.flatnonzero(linked))
        cols.append(targets[linked])
        weights.append(np.full(int(linked.sum()), step))
    return coo_matrix((np.concatenate(weights), (np.concatenate(rows), np.concatenate(cols))), shape=(len(points),) * 2)


def tiff_pixel_size(path: str | Path) -> float | None:
    """Micrometres per pixel from a TIFF's resolution tags, or ``None`` (not a TIFF, or no usable tags).

    Read: ``XResolution`` and ``YResolution`` in pixels per centimetre or inch, or pixels per
    micrometre in an ImageJ TIFF (``unit=micron`` in its description). Values above 10 um per pixel
    are ignored: they are print or screen settings such as 72 dpi, not a microscope calibration.

    Raises:
        DataError: the pixels are not square (x and y sizes differ): one size cannot give its
            areas and lengths in micrometres.
    """
    path = Path(path)
    if path.suffix.lower() not in (".tif", ".tiff"):
        return None
    try:
        with tifffile.TiffFile(path) as tiff:
            tags = tiff.pages[0].tags
            resolutions = [tags.get(name) for name in ("XResolution", "YResolution")]
            unit_tag = tags.get("ResolutionUnit")
            imagej_unit = (tiff.imagej_metadata or {}).get("unit")
    except (tifffile.TiffFileError, OSError, ValueError, IndexError):
        return None  # read_image reports an unreadable file; a missing calibration is not an error
    unit = int(unit_tag.value) if unit_tag is not None else 2  # the TIFF default unit is the inch
    if imagej_unit in _IMAGEJ_MICRON_UNITS:
        um_per_unit = 1.0
    elif unit in _UM_PER_UNIT:
        um_per_unit = _UM_PER_UNIT[unit]
    else:
        return None
    sizes = [_size_um(tag.value, um_per_unit) if tag is not None else None for tag in resolutions]
    width, height = (sizes[0], sizes[1] if sizes[1] is not None else sizes[0])
    if width is None or height is None:
        return None
    if not math.isclose(width, height, rel_tol=_SQUARE_TOLERANCE):
        raise DataError(
            path, f"its pixels are not square ({width:g} x {height:g} um): resample it to square pixels for areas in um"
        )
    return width if width <= _MAX_TAG_PIXEL_SIZE_UM else None


def _size_um(resolution: object, um_per_unit: float) -> float | None:
    """Micrometres per pixel from a resolution tag's (numerator, denominator) pixels per unit, or ``None``."""
    if not isinstance(resolution, tuple) or len(resolution) != 2:
        return None
    numerator, denominator = resolution
    return um_per_unit * denominator / numerator if numerator > 0 and denominator > 0 else None


def write_object_labels(path: Path, objects: ObjectLabels, class_names: Sequence[str]) -> None:
    """Write ``STEM_objects.tif`` (16-bit labels, zlib) atomically; its metadata holds each id's class.

    The file appears only once complete, so its presence marks an image whose outputs are all
    written (``--skip-existing``).
    """
    metadata = {"class_names": list(class_names), "object_classes": list(objects.object_classes)}
    write_atomically(
        path,
        lambda temporary: tifffile.imwrite(temporary, objects.labels, compression="zlib", metadata=metadata),
        "object labels",
    )


def read_object_labels(path: Path) -> ObjectLabels:
    """Read back a label image written by :func:`write_object_labels`.

    Raises:
        DataError: the file is unreadable, lacks segnet's metadata, or numbers objects that have no pixels.
    """
    try:
        with tifffile.TiffFile(path) as tiff:
            labels = tiff.asarray()
            metadata = tiff.shaped_metadata[0] if tiff.shaped_metadata else {}
    except (tifffile.TiffFileError, OSError, ValueError, json.JSONDecodeError) as error:
        raise DataError(path, f"not a readable label image ({error})") from error
    classes = metadata.get("object_classes")
    if not isinstance(classes, list) or labels.dtype != np.uint16 or int(labels.max(initial=0)) > len(classes):
        raise DataError(path, "not an object label image written by segnet predict")
    present = np.unique(labels)
    if len(present[present > 0]) != len(classes):  # an id with no pixels: counted, but never a row of objects.csv
        raise DataError(
            path, f"its metadata lists {len(classes)} objects but {len(present[present > 0])} ids have pixels"
        )
    names = metadata.get("class_names")
    class_names = tuple(map(str, names)) if isinstance(names, list) else ()
    return ObjectLabels(labels, tuple(int(class_id) for class_id in classes), class_names)
