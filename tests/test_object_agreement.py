"""Counts, objects.csv and STEM_objects.tif agree for every image and class: over many generated
masks (overlapping discs of every size, touching cells, thin lines, specks), every id a label image
numbers has pixels, each class's count equals its rows and its ids, and the label image reads back
the same."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from skimage.draw import disk, line

from segnet.core.errors import DataError
from segnet.data.classes import DARKFIELD_ROLES
from segnet.evaluate.counting import label_objects
from segnet.evaluate.measure import find_objects, measure_objects, read_object_labels, write_object_labels

CLASSES = ("background", "erythrocyte", "spirochete")
SIZE = 72


@st.composite
def masks(draw: st.DrawFn) -> np.ndarray:
    """A class mask of overlapping and touching discs (red cells), lines (spirochetes) and specks."""
    mask = np.zeros((SIZE, SIZE), dtype=np.uint8)
    coordinate = st.integers(0, SIZE - 1)
    for _ in range(draw(st.integers(0, 8))):
        centre = (draw(coordinate), draw(coordinate))
        mask[disk(centre, draw(st.floats(1.0, 18.0)), shape=mask.shape)] = 1
    for _ in range(draw(st.integers(0, 4))):
        rows, cols = line(draw(coordinate), draw(coordinate), draw(coordinate), draw(coordinate))
        for offset in range(draw(st.integers(1, 3))):
            mask[np.clip(rows + offset, 0, SIZE - 1), cols] = 2
    return mask


def _ids_per_class(labels: np.ndarray, object_classes: tuple[int, ...]) -> Counter:
    present = [int(object_id) for object_id in np.unique(labels) if object_id]
    return Counter(object_classes[object_id - 1] for object_id in present)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mask=masks(), core_fraction=st.floats(0.3, 0.95))
def test_every_counted_id_has_pixels(mask: np.ndarray, core_fraction: float) -> None:
    for class_id in (1, 2):
        labels, count = label_objects(mask, class_id, min_area=1, split=True, core_fraction=core_fraction)
        assert sorted(np.unique(labels[labels > 0])) == list(range(1, count + 1))


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(mask=masks())
def test_counts_rows_and_label_image_agree(tmp_path: Path, mask: np.ndarray) -> None:
    objects = find_objects(mask, DARKFIELD_ROLES, min_area=1)
    counts = objects.counts(DARKFIELD_ROLES.counted)
    rows = Counter(
        measurement.class_id for measurement in measure_objects(objects, np.zeros((*mask.shape, 3), np.uint8))
    )
    path = tmp_path / "a_objects.tif"
    write_object_labels(path, objects, CLASSES)
    back = read_object_labels(path)
    for class_id in DARKFIELD_ROLES.counted:
        assert counts[class_id] == rows[class_id] == _ids_per_class(back.labels, back.object_classes)[class_id]


def test_a_label_image_numbering_objects_without_pixels_is_refused(tmp_path: Path) -> None:
    labels = np.zeros((8, 8), np.uint16)
    labels[:2, :2], labels[5:, 5:] = 1, 3  # id 2 has no pixels
    tifffile.imwrite(
        tmp_path / "a_objects.tif", labels, metadata={"class_names": list(CLASSES), "object_classes": [1, 1, 2]}
    )
    with pytest.raises(DataError, match=r"a_objects\.tif: .*3 objects but 2 ids have pixels"):
        read_object_labels(tmp_path / "a_objects.tif")
