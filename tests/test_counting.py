"""Tests for segnet.evaluate.counting (and segnet.data.cleaning, which it counts after) on synthetic masks drawn with numpy."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import count_objects

from segnet.data.cleaning import clean_prediction
from segnet.evaluate.counting import (
    area_threshold,
    count_agreement,
    coverage,
    label_objects,
)

SHAPE = (200, 240)


def draw_disc(mask: np.ndarray, center, radius, value=1) -> np.ndarray:
    rows, cols = np.indices(mask.shape)
    mask[(rows - center[0]) ** 2 + (cols - center[1]) ** 2 <= radius**2] = value
    return mask


def blank() -> np.ndarray:
    return np.zeros(SHAPE, dtype=np.uint8)


def test_separate_discs_are_counted():
    mask = blank()
    for center in [(30, 30), (30, 120), (100, 70), (160, 200), (150, 40)]:
        draw_disc(mask, center, 15)
    assert count_objects(mask, [1, 2]) == {1: 5, 2: 0}
    assert count_objects(mask, [1], split_touching=()) == {1: 5}


@pytest.mark.parametrize("separation", [26, 30, 38])  # centre distance for radius 20: 1.3 R .. 1.9 R
def test_touching_discs_split_only_when_asked(separation):
    mask = draw_disc(draw_disc(blank(), (100, 100), 20), (100, 100 + separation), 20)
    assert count_objects(mask, [1], split_touching=()) == {1: 1}
    assert count_objects(mask, [1]) == {1: 2}
    labels, count = label_objects(mask, 1, split=True)
    assert count == 2
    assert set(np.unique(labels)) == {0, 1, 2}
    assert np.array_equal(labels > 0, mask == 1)  # every object pixel goes to one of the two
    sizes = np.bincount(labels.ravel())[1:]
    assert sizes.min() > 0.4 * sizes.sum()


def test_small_disc_touching_big_one_is_split():
    mask = draw_disc(draw_disc(blank(), (100, 90), 30), (100, 134), 16)
    assert count_objects(mask, [1]) == {1: 2}


def test_heavily_overlapping_discs_stay_one():
    mask = draw_disc(draw_disc(blank(), (100, 100), 20), (100, 110), 20)  # d = 0.5 R
    assert count_objects(mask, [1]) == {1: 1}


def test_ellipse_is_one_object():
    rows, cols = np.indices(SHAPE)
    mask = blank()
    mask[((rows - 100) / 25.0) ** 2 + ((cols - 120) / 90.0) ** 2 <= 1] = 1
    assert count_objects(mask, [1]) == {1: 1}


def test_specks_below_min_area_are_dropped():
    mask = draw_disc(blank(), (100, 100), 15)
    mask[10:13, 10:13] = 1  # 9 px
    mask[180:185, 10:15] = 2  # 25 px
    mask[150:160, 200:206] = 2  # 60 px
    assert count_objects(mask, [1, 2]) == {1: 1, 2: 1}
    assert count_objects(mask, [1, 2], min_area=5) == {1: 2, 2: 2}


def test_area_threshold_scales_with_image_area():
    assert area_threshold((100, 100)) == 30  # the absolute floor
    assert area_threshold((1000, 2000)) == 100  # 5e-5 of the image
    assert area_threshold((1000, 2000), min_area_fraction=0.0) == 30
    big = np.zeros((1000, 2000), dtype=np.uint8)
    big[10:18, 10:18] = 1  # 64 px: above the floor, below 5e-5 of this image
    assert count_objects(big, [1]) == {1: 0}
    assert count_objects(big, [1], min_area_fraction=0.0) == {1: 1}


def test_thin_wavy_line_is_one_spirochete():
    mask = blank()
    cols = np.arange(20, 220)
    centre_rows = (100 + 25 * np.sin(cols / 12.0)).astype(int)
    for col, row in zip(cols, centre_rows):
        half_width = 1 + (col // 15) % 2  # width varies along the line
        mask[row - half_width : row + half_width + 1, col] = 2
    assert count_objects(mask, [2]) == {2: 1}


def test_diagonal_pixels_connect():
    mask = np.zeros((60, 60), dtype=np.uint8)
    mask[np.arange(60), np.arange(60)] = 2  # 8-connected diagonal line, 60 px
    assert count_objects(mask, [2], min_area=30) == {2: 1}


def test_coverage_fractions_sum_to_one():
    mask = draw_disc(blank(), (100, 100), 15)
    mask[0, :10] = 2
    fractions = coverage(mask, [0, 1, 2])
    assert sum(fractions.values()) == pytest.approx(1.0)
    assert fractions[2] == pytest.approx(10 / mask.size)
    assert fractions[1] == pytest.approx(np.count_nonzero(mask == 1) / mask.size)
    assert coverage(mask, [3]) == {3: 0.0}


def test_count_agreement_known_values():
    true, pred = [3, 5, 2, 8], [4, 5, 1, 6]
    result = count_agreement(true, pred)
    assert result.mean_absolute_error == pytest.approx((1 + 0 + 1 + 2) / 4)
    assert result.pearson_r == pytest.approx(np.corrcoef(true, pred)[0, 1])
    assert (result.mean_true, result.mean_predicted) == (4.5, 4.0)
    assert count_agreement([1, 2, 3], [2, 4, 6]).pearson_r == pytest.approx(1.0)
    assert type(result.mean_absolute_error) is float


def test_count_agreement_undefined_correlation_is_none():
    assert count_agreement([4], [5]).to_dict() == {
        "mean_absolute_error": 1.0,
        "pearson_r": None,
        "mean_true": 4.0,
        "mean_predicted": 5.0,
    }
    assert count_agreement([2, 2, 2], [1, 2, 3]).pearson_r is None
    assert count_agreement([1, 2, 3], [0, 0, 0]).pearson_r is None
    with pytest.raises(ValueError):
        count_agreement([1, 2], [1])


def test_cleaning_fills_a_hollow_cell_and_keeps_a_spirochete_inside_it():
    mask = draw_disc(blank(), (100, 120), 25)
    draw_disc(mask, (100, 120), 15, value=0)  # a dark centre predicted as background
    mask[98:102, 114:126] = 2  # a piece of spirochete inside the hole
    cleaned = clean_prediction(mask, thin_min_area_fraction=0)
    inside = draw_disc(blank(), (100, 120), 25).astype(bool)
    # The hole is red cell now (but for a pixel or two where the opening meets the spirochete).
    assert np.mean(cleaned[inside & (mask != 2)] == 1) > 0.99
    assert np.array_equal(cleaned == 2, mask == 2)  # the spirochete is untouched
    assert count_objects(cleaned, [1, 2]) == {1: 1, 2: 1}


def test_cleaning_removes_rim_fragments_and_specks_but_not_cells_or_long_filaments():
    mask = blank()
    draw_disc(mask, (60, 60), 22)
    mask[20:24, 120:200] = 1  # a thin bright-rim fragment taken for a red cell: counted as a cell raw
    rows = np.arange(30, 190)
    for row, col in zip(rows, (150 + 10 * np.sin(rows / 8)).astype(int)):
        mask[row, col - 1 : col + 2] = 2  # a long wavy spirochete, 3 px wide
    mask[150:154, 30:34] = 2  # a 16 px speck
    assert count_objects(mask, [1, 2], min_area=10) == {1: 2, 2: 2}
    cleaned = clean_prediction(mask)
    assert count_objects(cleaned, [1, 2], min_area=10) == {1: 1, 2: 1}
    disc = draw_disc(blank(), (60, 60), 22).astype(bool)
    assert np.mean(cleaned[disc] == 1) > 0.99  # the cell survives the opening (but for corner pixels of its outline)
    assert set(np.unique(cleaned)) <= {0, 1, 2}


def test_cleaning_leaves_ignored_pixels_alone():
    mask = blank()
    mask[:10] = 255
    draw_disc(mask, (100, 100), 20)
    assert np.all(clean_prediction(mask)[:10] == 255)
