"""Open ``segnet predict`` outputs in napari: ``napari OUT/STEM_mask.png`` gives the classes and objects layers.

The class mask opens with the project's colours and class names; the object label image
``STEM_objects.tif`` beside it (which names the classes in its metadata) opens as the objects
layer. Without it the classes are segnet's defaults. napari imports this module only for files
matching the manifest's pattern (``*_mask.png``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from segnet.core.runfiles import OBJECTS_SUFFIX, PICTURES
from segnet.data.classes import DEFAULT_CLASSES
from segnet.data.pairs import read_mask
from segnet.evaluate.measure import read_object_labels
from segnet.napari.layers import classes_layer, objects_layer

LayerData = tuple[Any, dict[str, Any], str]
MASK_SUFFIX = f"_{PICTURES[0]}.png"


def get_reader(path: str | list[str]) -> Callable[[str | list[str]], list[LayerData]] | None:
    """napari's reader hook: :func:`read_prediction` for a ``STEM_mask.png``, else ``None`` (another reader's file)."""
    if isinstance(path, str) and path.endswith(MASK_SUFFIX):
        return read_prediction
    return None


def read_prediction(path: str | list[str]) -> list[LayerData]:
    """The classes layer of ``STEM_mask.png`` and, where it exists, the objects layer of ``STEM_objects.tif``.

    Raises:
        DataError: a file is unreadable (the message names it).
    """

    mask_path = Path(path if isinstance(path, str) else path[0])
    stem = mask_path.name[: -len(MASK_SUFFIX)]
    objects_path = mask_path.with_name(stem + OBJECTS_SUFFIX)
    objects = read_object_labels(objects_path) if objects_path.is_file() else None
    class_names = list(objects.class_names if objects is not None and objects.class_names else DEFAULT_CLASSES)
    layers = [classes_layer(read_mask(mask_path, len(class_names)), class_names, stem)]
    if objects is not None:
        layers.append(objects_layer(objects.labels, objects.object_classes, class_names, stem))
    return layers
