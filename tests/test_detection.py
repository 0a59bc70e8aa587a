"""Tests for segnet.evaluate.detection: the object matching rule and image-level presence on hand-made masks."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import count_objects

from segnet.evaluate.detection import (
    Detection,
    ObjectTally,
    PresenceTally,
    found_objects,
    match_objects,
    pooled_detection,
    score_objects,
)

BACKGROUND, CELL, SPIROCHETE = 0, 1, 2
SHAPE = (64, 96)
MIN_AREA = 10


def blank() -> np.ndarray:
    return np.zeros(SHAPE, dtype=np.uint8)


def spirochetes(truth: np.ndarray, pred: np.ndarray) -> ObjectTally:
    return score_objects(truth, pred, [CELL, SPIROCHETE], min_area=MIN_AREA)[SPIROCHETE]


def test_filament_predicted_in_two_pieces_is_found_once_and_both_pieces_are_correct() -> None:
    truth, pred = blank(), blank()
    truth[30:35, 10:80] = SPIROCHETE
    pred[30:35, 10:43] = SPIROCHETE
    pred[30:35, 47:80] = SPIROCHETE  # a 4-pixel gap splits the prediction
    tally = spirochetes(truth, pred)
    assert tally == ObjectTally(true_objects=1, found=1, predicted_objects=2, correct=2)
    assert tally.recall == tally.precision == tally.f1 == 1.0


def test_merged_pair_finds_both_objects_with_one_correct_prediction() -> None:
    truth, pred = blank(), blank()
    truth[30:35, 10:44] = SPIROCHETE
    truth[30:35, 46:80] = SPIROCHETE  # two filaments end to end, 2 pixels apart
    pred[30:35, 10:80] = SPIROCHETE  # predicted as one, bridging the gap
    assert spirochetes(truth, pred) == ObjectTally(true_objects=2, found=2, predicted_objects=1, correct=1)


def test_false_speck_lowers_precision_and_specks_below_the_threshold_are_ignored() -> None:
    truth, pred = blank(), blank()
    truth[30:35, 10:80] = SPIROCHETE
    pred[30:35, 10:80] = SPIROCHETE
    pred[5:11, 5:11] = SPIROCHETE  # a 36-pixel false object
    truth[55:57, 88:90] = SPIROCHETE  # 4-pixel specks, below MIN_AREA on both sides
    pred[50:52, 60:62] = SPIROCHETE
    tally = spirochetes(truth, pred)
    assert tally == ObjectTally(true_objects=1, found=1, predicted_objects=2, correct=1)
    assert tally.precision == 0.5
    assert tally.f1 == pytest.approx(2 / 3)


def test_empty_image_is_undefined_not_zero() -> None:
    tallies = score_objects(blank(), blank(), [CELL, SPIROCHETE], min_area=MIN_AREA)
    for tally in tallies.values():
        assert tally == ObjectTally()
        assert tally.recall is None and tally.precision is None and tally.f1 is None


def test_nothing_predicted_or_nothing_true_scores_zero() -> None:
    truth = blank()
    truth[30:35, 10:80] = SPIROCHETE
    missed = spirochetes(truth, blank())
    assert (missed.recall, missed.precision, missed.f1) == (0.0, None, 0.0)
    invented = spirochetes(blank(), truth)
    assert (invented.recall, invented.precision, invented.f1) == (None, 0.0, 0.0)


def test_thin_prediction_inside_a_wide_stroke_is_found() -> None:
    truth, pred = blank(), blank()
    truth[26:38, 10:80] = SPIROCHETE  # drawn 12 px wide
    pred[31:34, 10:80] = SPIROCHETE  # predicted 3 px wide: a quarter of the stroke
    assert spirochetes(truth, pred) == ObjectTally(true_objects=1, found=1, predicted_objects=1, correct=1)


def test_blob_covering_the_image_finds_objects_but_is_not_correct() -> None:
    truth = blank()
    truth[30:35, 10:80] = SPIROCHETE
    pred = np.full(SHAPE, SPIROCHETE, dtype=np.uint8)
    assert spirochetes(truth, pred) == ObjectTally(true_objects=1, found=1, predicted_objects=1, correct=0)


def test_small_overlap_is_no_match() -> None:
    truth, pred = blank(), blank()
    truth[30:35, 10:50] = SPIROCHETE
    pred[30:35, 40:90] = SPIROCHETE  # a different filament touching the end of the true one
    assert spirochetes(truth, pred) == ObjectTally(true_objects=1, found=0, predicted_objects=1, correct=0)


def test_touching_red_cells_are_matched_one_by_one_as_counting_splits_them() -> None:
    y, x = np.ogrid[: SHAPE[0], : SHAPE[1]]
    truth = blank()
    for cx in (30, 51):  # two discs of radius 12, touching
        truth[(y - 32) ** 2 + (x - cx) ** 2 <= 144] = CELL
    pred = truth.copy()
    pred[(y - 32) ** 2 + (x - 51) ** 2 <= 144] = BACKGROUND  # one of them missed
    tally = score_objects(truth, pred, [CELL], min_area=MIN_AREA)[CELL]
    assert tally.true_objects == count_objects(truth, [CELL], min_area=MIN_AREA)[CELL] == 2
    assert (tally.found, tally.predicted_objects, tally.correct) == (1, 1, 1)


def test_ignored_pixels_hold_no_predicted_object() -> None:
    truth, pred = blank(), blank()
    truth[:20, :] = 255
    pred[5:11, 5:40] = SPIROCHETE
    tally = score_objects(truth, pred, [SPIROCHETE], min_area=MIN_AREA, ignore_index=255)[SPIROCHETE]
    assert tally == ObjectTally()
    assert score_objects(truth, pred, [SPIROCHETE], min_area=MIN_AREA)[SPIROCHETE].predicted_objects == 1


def test_match_objects_refuses_different_shapes() -> None:
    with pytest.raises(ValueError, match="shape"):
        match_objects(np.zeros((4, 4), np.int32), np.zeros((4, 5), np.int32))


def test_tallies_sum_counts_and_score_the_sums() -> None:
    images = [ObjectTally(4, 4, 4, 4), ObjectTally(1, 0, 3, 0)]
    total = sum(images, ObjectTally())
    assert total == ObjectTally(5, 4, 7, 4)
    # Micro-averaged: every object counts once (the per-image mean recall would be 0.5).
    assert total.recall == pytest.approx(0.8)
    assert total.precision == pytest.approx(4 / 7)
    assert total.to_dict() == {
        "true_objects": 5, "found": 4, "predicted_objects": 7, "correct": 4,
        "recall": total.recall, "precision": total.precision, "f1": total.f1,
    }  # fmt: skip


def test_presence_over_images_with_and_without_the_class() -> None:
    per_image = {
        "both": ObjectTally(2, 2, 2, 2),  # holds it, said so
        "missed": ObjectTally(1, 0, 0, 0),  # holds it, said not
        "false_alarm": ObjectTally(0, 0, 1, 0),  # lacks it, said it holds it
        "clear_1": ObjectTally(),  # lacks it, said so
        "clear_2": ObjectTally(),
    }
    presence = sum((PresenceTally.of_image(name, tally) for name, tally in per_image.items()), PresenceTally())
    assert (presence.images_with, presence.detected, presence.images_without, presence.ruled_out) == (2, 1, 3, 2)
    assert presence.sensitivity == 0.5
    assert presence.specificity == pytest.approx(2 / 3)
    assert presence.missed_images == ("missed",)
    assert presence.false_alarm_images == ("false_alarm",)
    assert presence.to_dict()["missed_images"] == ["missed"] and presence.to_dict()["sensitivity"] == 0.5
    assert PresenceTally.of_image("x", ObjectTally()).sensitivity is None  # no image holds the class


def test_pooled_detection_sums_evaluations() -> None:
    def evaluation(tally: ObjectTally, image: str) -> Detection:
        return Detection({"spirochete": tally}, {"spirochete": PresenceTally.of_image(image, tally)})

    pooled = pooled_detection([evaluation(ObjectTally(3, 3, 3, 2), "a"), evaluation(ObjectTally(1, 0, 0, 0), "b")])
    assert pooled is not None
    assert pooled.objects["spirochete"] == ObjectTally(4, 3, 3, 2)
    assert pooled.presence["spirochete"].missed_images == ("b",)
    assert pooled.presence["spirochete"].sensitivity == 0.5
    assert pooled.to_dict()["objects"]["spirochete"] == ObjectTally(4, 3, 3, 2).to_dict()
    assert pooled_detection([evaluation(ObjectTally(), "a"), None]) is None  # a training-time validation has none
    assert pooled_detection([]) is None


def test_found_objects_says_which_true_objects_the_tally_counts_as_found():
    true_labels = np.zeros((20, 20), np.int32)
    true_labels[2:4, 2:18], true_labels[10:12, 2:18], true_labels[16:18, 2:18] = 1, 2, 3
    pred_labels = np.zeros_like(true_labels)
    pred_labels[2:4, 2:12] = 1  # covers most of object 1
    pred_labels[10, 2:5] = 2  # a piece lying inside object 2
    pred_labels[15:20, 0:20] = 3  # a blob around object 3, mostly outside it, yet covering it
    found = found_objects(true_labels, pred_labels)
    assert found.tolist() == [True, True, True]
    pred_labels[2:4, 2:12] = 0
    assert found_objects(true_labels, pred_labels).tolist() == [False, True, True]
    assert match_objects(true_labels, pred_labels).found == int(found_objects(true_labels, pred_labels).sum())
