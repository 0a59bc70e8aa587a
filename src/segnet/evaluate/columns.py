"""The column names of the tables a prediction gives: ``counts.csv``, ``objects.csv`` and the napari plugin's table.

Defined here once, so the three name the image alike (:data:`IMAGE_COLUMN`, holding the path as the
input was named) and a lab can join them on it.
"""

from __future__ import annotations

from collections.abc import Sequence

IMAGE_COLUMN = "image"
OBJECT_ID_COLUMN, CLASS_COLUMN = "object_id", "class"
CENTROID_X_COLUMN, CENTROID_Y_COLUMN = "centroid_x_px", "centroid_y_px"
OBJECT_COLUMNS = (
    IMAGE_COLUMN,
    CLASS_COLUMN,
    OBJECT_ID_COLUMN,
    "area_px",
    CENTROID_X_COLUMN,
    CENTROID_Y_COLUMN,
    "bbox_left_px",
    "bbox_top_px",
    "bbox_width_px",
    "bbox_height_px",
    "mean_intensity",
    "length_px",
    "width_px",
    "pixel_size_um",
    "area_um2",
    "length_um",
    "width_um",
)
"""``objects.csv``: one row per counted object, grouped by image."""
VIEWER_COLUMNS = (
    OBJECT_ID_COLUMN,
    CLASS_COLUMN,
    *(c for c in OBJECT_COLUMNS if c not in (IMAGE_COLUMN, OBJECT_ID_COLUMN, CLASS_COLUMN)),
    IMAGE_COLUMN,
)
"""The napari table's columns: the object first, then its measurements; the image (one for the whole table, often a long path) last."""
COUNT_COLUMN_SUFFIXES = ("count", "area_fraction")


def counts_columns(class_names: Sequence[str]) -> list[str]:
    """``counts.csv``: the image, then ``<class>_count`` and ``<class>_area_fraction`` per counted class in ``class_names``."""
    return [IMAGE_COLUMN] + [f"{name}_{suffix}" for name in class_names for suffix in COUNT_COLUMN_SUFFIXES]


def to_viewer_order(row: Sequence[str]) -> list[str]:
    """An ``objects.csv`` row's cells in :data:`VIEWER_COLUMNS` order."""
    return [row[OBJECT_COLUMNS.index(column)] for column in VIEWER_COLUMNS]


def from_viewer_order(cells: Sequence[str]) -> list[str]:
    """The inverse of :func:`to_viewer_order`: cells shown in :data:`VIEWER_COLUMNS` order as an ``objects.csv`` row."""
    return [cells[VIEWER_COLUMNS.index(column)] for column in OBJECT_COLUMNS]
