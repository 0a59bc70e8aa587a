"""Per-image scale: object diameters, the factor, and a predictor that segments at the reference size."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.draw import disk

from segnet.config import ClassRoles
from segnet.predict.scale import Rescaled, median_object_diameter, scale_factor


def discs(shape: tuple[int, int], radius: int, centres: list[tuple[int, int]]) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    for centre in centres:
        mask[disk(centre, radius, shape=shape)] = 1
    return mask


class Thresholder:
    """A stand-in model: bright pixels are class 1; it records the sizes it was given."""

    class_names = ["background", "erythrocyte"]
    roles = ClassRoles.of(class_names)

    def __init__(self) -> None:
        self.shapes: list[tuple[int, ...]] = []

    def predict_proba(self, image: np.ndarray, *, progress=None) -> np.ndarray:
        self.shapes.append(image.shape)
        foreground = (image[..., 0] > 127).astype(np.float32)
        return np.stack([1 - foreground, foreground])


def test_median_diameter_of_discs_counts_touching_ones_apart() -> None:
    mask = discs((120, 160), 10, [(30, 30), (30, 49), (90, 120)])  # the first two touch
    assert median_object_diameter(mask, 1) == pytest.approx(21, abs=1.5)
    assert median_object_diameter(np.zeros((50, 50), np.uint8), 1) is None


@pytest.mark.parametrize(
    ("diameter", "expected"), [(25.0, 4.0), (10.0, 4.0), (50.0, 2.0), (110.0, 1.0), (90.0, 1.0), (400.0, 0.5), (None, 1.0)]
)
def test_scale_factor_is_clipped_and_leaves_near_reference_sizes_alone(diameter: float | None, expected: float) -> None:
    assert scale_factor(diameter, 100.0) == pytest.approx(expected)


def test_small_objects_are_segmented_enlarged_and_answered_at_the_image_size() -> None:
    mask = discs((60, 80), 5, [(20, 20), (40, 60)])
    image = np.repeat((mask * 200)[..., None], 3, axis=2).astype(np.uint8)
    model = Thresholder()
    rescaled = Rescaled(model, reference=44.0)
    proba = rescaled.predict_proba(image)
    assert [shape[:2] for shape in model.shapes] == [(60, 80), (240, 320)]  # a first pass, then 4x (11 px -> 44 px)
    assert rescaled.last_factor == pytest.approx(4.0)
    assert proba.shape == (2, 60, 80) and np.allclose(proba.sum(axis=0), 1, atol=1e-5)
    assert np.mean(proba.argmax(axis=0) == mask) > 0.98


def test_a_given_diameter_skips_the_first_pass_and_no_objects_keep_it() -> None:
    image = np.repeat((discs((60, 80), 5, [(30, 40)]) * 200)[..., None], 3, axis=2).astype(np.uint8)
    model = Thresholder()
    Rescaled(model, reference=22.0, diameter=11.0).predict(image)
    assert [shape[:2] for shape in model.shapes] == [(120, 160)]
    empty = Thresholder()
    result = Rescaled(empty, reference=22.0).predict(np.zeros((30, 30, 3), np.uint8))
    assert len(empty.shapes) == 1 and not result.any()
