"""What the dock widget computes, without Qt: one image's classes, objects and table rows; saving them.

Everything goes through the library the command line uses: :func:`segnet.predict.load_predictor`
and ``predict_proba`` (with a tile callback that also cancels), :func:`segnet.evaluate.measure.find_objects`
and its rows of ``objects.csv``, :func:`segnet.data.write_pair` for the dataset layout. So the
Labels layer equals ``segnet predict``'s ``STEM_mask.png`` and the table its ``objects.csv``.
Heavy modules (torch, scikit-image) are imported on the first Segment, never at napari start-up.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from segnet.core.errors import DataError, OutputError, SegnetError
from segnet.core.outputs import safe_stem
from segnet.data.pairs import MASK_FOLDERS, Pair, class_mask, image_files, read_image, write_pair
from segnet.evaluate.columns import OBJECT_COLUMNS
from segnet.evaluate.measure import find_objects, measure_objects, tiff_pixel_size
from segnet.model.options import DEFAULT_INFERENCE, InferenceOptions
from segnet.predict.loading import load_predictor
from segnet.predict.pictures import predictive_entropy
from segnet.predict.tables import ResultTables

if TYPE_CHECKING:
    from segnet.model.predictor import Ensemble, Predictor


class Cancelled(Exception):
    """Raised between two batches of tiles once Cancel was pressed."""


@dataclass(frozen=True)
class ModelOptions:
    """The model and how it runs; a predictor is loaded again only when these change.

    ``tile`` ``None`` segments the image whole (no progress and no Cancel within the image);
    ``diameter`` is :attr:`segnet.model.options.InferenceOptions.diameter`.
    """

    model: str
    tile: int | None
    tta: bool
    mc_samples: int
    device: str = "auto"
    diameter: float | str | None = DEFAULT_INFERENCE.diameter


@dataclass(frozen=True)
class Segmentation:
    """One image's result: as ``segnet predict`` writes it, but in memory.

    Attributes:
        counted: the class indices whose objects are counted (the predictor's roles: all but the background).
        mask: ``H x W`` uint8 class index per pixel (``STEM_mask.png``).
        labels: ``H x W`` uint16 object ids, 0 background (``STEM_objects.tif``).
        object_classes: the class index of object id ``i + 1``.
        rows: one row of ``objects.csv`` per object, in id order.
        entropy: predictive entropy in nats (Monte Carlo dropout or an ensemble), else ``None``.
    """

    class_names: tuple[str, ...]
    counted: tuple[int, ...]
    mask: np.ndarray
    labels: np.ndarray
    object_classes: tuple[int, ...]
    rows: list[list[str]]
    entropy: np.ndarray | None

    def counts(self) -> dict[str, int]:
        """Objects per counted class name (the counts of ``counts.csv``)."""
        return {self.class_names[class_id]: self.object_classes.count(class_id) for class_id in self.counted}


class PredictorCache:
    """The last predictor loaded, kept between presses of Segment (loading a model takes seconds)."""

    def __init__(self) -> None:
        self._options: ModelOptions | None = None
        self._predictor: Predictor | Ensemble | None = None

    def get(self, options: ModelOptions) -> Predictor | Ensemble:
        """The predictor for ``options``, loaded when they differ from the last call's.

        Raises:
            SegnetError: the model cannot be loaded, or an option is invalid (the message says which).
        """
        if options != self._options:
            self._predictor = None  # the old model's memory goes before the new one loads
            inference = InferenceOptions(
                device=options.device,
                tile=options.tile,
                tta=options.tta,
                mc_samples=options.mc_samples,
                diameter=options.diameter,
            )
            self._predictor = load_predictor(options.model, inference)
            self._options = options
        return self._predictor


def image_pixel_size(source: str | None, pixel_size: float | None) -> float | None:
    """Micrometres per pixel: ``pixel_size`` if given, else the source TIFF's calibration (as ``segnet predict``)."""
    if pixel_size is not None or source is None:
        return pixel_size

    return tiff_pixel_size(source)


def segment(
    image: np.ndarray,
    image_name: str,
    predictor: Predictor | Ensemble,
    *,
    pixel_size: float | None,
    progress: Callable[[int, int], None],
    cancel: threading.Event,
) -> Segmentation:
    """Segment an ``H x W x 3`` uint8 image and measure its objects; ``image_name`` fills the table's image column.

    ``progress(done, total)`` is told after each batch of tiles; once ``cancel`` is set the
    prediction stops at the next batch.

    Raises:
        Cancelled: ``cancel`` was set.
        SegnetError: the model failed on the image, or it holds more objects than a label image numbers.
    """

    def tile_done(done: int, total: int) -> None:
        if cancel.is_set():
            raise Cancelled
        progress(done, total)

    proba = predictor.predict_proba(image, progress=tile_done)
    if cancel.is_set():  # a whole image has no tiles to stop between
        raise Cancelled
    names = tuple(predictor.class_names)
    mask = class_mask(proba)
    try:
        objects = find_objects(mask, predictor.roles)
    except ValueError as error:
        raise SegnetError(f"{image_name}: {error}") from error
    rows = [
        measurement.row(image_name, names, pixel_size)
        for measurement in measure_objects(objects, image, predictor.roles)
    ]
    entropy = predictive_entropy(proba) if predictor.samples_uncertainty else None
    return Segmentation(
        names, tuple(predictor.roles.counted), mask, objects.labels, objects.object_classes, rows, entropy
    )


def save_objects_table(path: str | Path, rows: Sequence[Sequence[str]]) -> Path:
    """Write ``rows`` as ``objects.csv`` is written (same header and format).

    Raises:
        DataError: the file cannot be written.
    """

    path = Path(path)
    try:
        tables = ResultTables([path], [OBJECT_COLUMNS])
    except OSError as error:
        raise DataError(path, f"could not write ({error.strerror or error})") from error
    try:
        tables.add(0, [rows])
    finally:
        tables.close()
    return path


def save_correction(
    root: str | Path, name: str, image: np.ndarray, mask: np.ndarray, class_names: Sequence[str]
) -> Pair:
    """Add an image and its (corrected) class mask to the dataset ``root`` as ``images/STEM.png`` and
    ``masks/STEM.png``, STEM being the layer ``name`` made a safe file name (:func:`segnet.core.outputs.safe_stem`).

    A pair of that stem already in the dataset is replaced only where its image is this image (a
    correction saved again); another image's pair is never replaced.

    Raises:
        DataError: the mask holds a label that is no class (painted with a label above the last
            class), or the files cannot be written; :class:`~segnet.core.errors.OutputError`: the name
            gives no file name, or the dataset holds another image of that name.
    """
    root = Path(root)
    stem = safe_stem(name)
    _refuse_another_pair(root, stem, image)
    strays = np.unique(mask[(mask < 0) | (mask >= len(class_names))])
    if strays.size:
        classes = ", ".join(f"{index} {name}" for index, name in enumerate(class_names))
        raise DataError(
            root / MASK_FOLDERS[0] / f"{stem}.png",
            f"the mask holds label {int(strays[-1])}, which is no class (classes: {classes}); repaint those pixels",
        )
    return write_pair(root, stem, image, mask)


def _refuse_another_pair(root: Path, stem: str, image: np.ndarray) -> None:
    """Refuse to save ``image`` as ``STEM`` where the dataset ``root`` holds another image of that
    stem (any extension), or a mask of that stem without its image."""
    folder = root / "images"
    same_stem = [path for path in image_files(folder) if path.stem == stem] if folder.is_dir() else []
    for existing in same_stem:
        if existing.suffix != ".png" or not np.array_equal(read_image(existing), image):
            raise OutputError(
                existing, "is another image of the same name: rename the layer to save this one beside it"
            )
    masks = [root / folder_name / f"{stem}.png" for folder_name in MASK_FOLDERS]
    orphan = next((mask for mask in masks if mask.exists()), None) if not same_stem else None
    if orphan is not None:
        raise OutputError(
            orphan, "is the mask of another image of the same name: rename the layer to save this one beside it"
        )
