"""Tests for segnet.evaluate: a hand-built run folder evaluated end to end on the CPU.

The run holds an untrained segnet-basic checkpoint (its predictions are arbitrary, which is all
these tests need: they check that the files and the numbers agree with each other and with the
data, not that the model is good) and four 48x48 synthetic images split 2 train / 2 val.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import count_objects
from PIL import Image

from segnet.core.errors import DataError, SegnetError
from segnet.core.outputs import output_lock
from segnet.core.runfiles import BEST_CHECKPOINT, EVALUATION_FOLDER, SPLIT_FILE
from segnet.data.classes import DEFAULT_CLASSES
from segnet.data.cleaning import clean_prediction
from segnet.data.pairs import find_pairs, read_mask, write_split
from segnet.evaluate.counting import CountAgreement
from segnet.evaluate.detection import ObjectTally, PresenceTally, score_objects
from segnet.evaluate.metrics import EvaluationMetrics
from segnet.evaluate.run import evaluate_run
from segnet.evaluate.tables import format_metrics_table
from segnet.model.checkpoint import Checkpoint
from segnet.model.options import InferenceOptions
from segnet.train.metrics import BoundaryScores

PLAIN = InferenceOptions(device="cpu", tta=False, diameter=None)  # the network's own pass

torch.set_num_threads(1)

SIZE = 48  # the side of the images of the make_run fixture (conftest)
CLASSES = list(DEFAULT_CLASSES)
MIN_AREA = 10  # synthetic cells at 48 px are small; the default 30 px would count almost none


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory, make_run) -> tuple[Path, Path, EvaluationMetrics]:
    """The run evaluated once on its validation split (shared by the tests that only read it)."""
    run, data = make_run(tmp_path_factory.mktemp("evaluate"))
    metrics = evaluate_run(run / BEST_CHECKPOINT, data, options=PLAIN, min_area=MIN_AREA, progress=False)
    return run, data, metrics


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_writes_metrics_per_image_table_and_predictions(evaluated: tuple[Path, Path, EvaluationMetrics]) -> None:
    run, data, metrics = evaluated
    out = run / EVALUATION_FOLDER
    content = json.loads((out / "metrics.json").read_text())
    assert content == metrics.to_dict()
    assert EvaluationMetrics.read(out / "metrics.json") == metrics
    # The layout of metrics.json, as every earlier version wrote it (objects and presence since issue 16).
    assert list(content) == [
        "classes", "global_accuracy", "class_average_accuracy", "mean_iou", "frequency_weighted_iou",
        "per_class", "confusion_matrix", "num_images", "boundary_f1", "counts", "objects", "presence", "evaluation",
    ]  # fmt: skip
    assert list(content["per_class"]["background"]) == ["iou", "accuracy", "precision", "dice", "support"]
    assert content["classes"] == CLASSES
    assert content["num_images"] == 2
    assert list(content["boundary_f1"]) == ["mean", "per_class"]
    assert list(content["boundary_f1"]["per_class"]) == CLASSES
    assert list(content["counts"]) == ["erythrocyte", "spirochete"]
    for agreement in content["counts"].values():
        assert list(agreement) == ["mean_absolute_error", "pearson_r", "mean_true", "mean_predicted"]
    assert list(content["objects"]["spirochete"]) == [
        "true_objects", "found", "predicted_objects", "correct", "recall", "precision", "f1",
    ]  # fmt: skip
    assert list(content["presence"]["spirochete"]) == [
        "images_with", "detected", "images_without", "ruled_out", "missed_images", "false_alarm_images",
        "sensitivity", "specificity",
    ]  # fmt: skip
    assert metrics.classes == tuple(CLASSES)
    assert set(metrics.objects) == set(metrics.presence) == {"erythrocyte", "spirochete"}
    assert metrics.evaluation["model"] == "segnet-basic"
    assert metrics.evaluation["split"] == "val"

    val_stems = json.loads((run / SPLIT_FILE).read_text())["val"]
    rows = read_rows(out / "per_image.csv")
    assert [row["image"] for row in rows] == val_stems
    assert list(rows[0]) == [
        "image", "image_path", "mask_path", "pixel_accuracy", "mean_iou",
        "iou_background", "iou_erythrocyte", "iou_spirochete",
        "true_count_erythrocyte", "pred_count_erythrocyte", "found_erythrocyte", "correct_erythrocyte",
        "true_count_spirochete", "pred_count_spirochete", "found_spirochete", "correct_spirochete",
    ]  # fmt: skip
    for stem in val_stems:
        prediction = np.asarray(Image.open(out / "predictions" / f"{stem}.png"))
        assert prediction.shape == (SIZE, SIZE) and prediction.dtype == np.uint8
        assert prediction.max() < len(CLASSES)
    assert sorted(p.stem for p in (out / "predictions").iterdir()) == sorted(val_stems)


def test_numbers_agree_with_each_other_and_the_data(evaluated: tuple[Path, Path, EvaluationMetrics]) -> None:
    run, data, metrics = evaluated
    out = run / EVALUATION_FOLDER
    rows = read_rows(out / "per_image.csv")
    confusion = metrics.confusion
    assert confusion.sum() == len(rows) * SIZE * SIZE
    assert confusion.trace() / confusion.sum() == pytest.approx(metrics.global_accuracy)
    # Images of one size: the mean per-image pixel accuracy is the global accuracy.
    assert np.mean([float(row["pixel_accuracy"]) for row in rows]) == pytest.approx(metrics.global_accuracy, abs=1e-5)

    # Recompute from the files: truth from the masks, prediction from predictions/.
    recomputed = np.zeros_like(confusion)
    for row in rows:
        truth = read_mask(row["mask_path"], len(CLASSES))
        pred = read_mask(out / "predictions" / f"{row['image']}.png", len(CLASSES))
        recomputed += np.bincount(
            len(CLASSES) * truth.ravel().astype(int) + pred.ravel(), minlength=len(CLASSES) ** 2
        ).reshape(3, 3)
        assert float(row["pixel_accuracy"]) == pytest.approx(np.mean(truth == pred), abs=1e-5)
        true_counts = count_objects(truth, [1, 2], min_area=MIN_AREA)
        pred_counts = count_objects(clean_prediction(pred), [1, 2], min_area=MIN_AREA)
        objects = score_objects(truth, pred, [1, 2], min_area=MIN_AREA)
        for class_id, name in ((1, "erythrocyte"), (2, "spirochete")):
            assert int(row[f"true_count_{name}"]) == true_counts[class_id]
            assert int(row[f"pred_count_{name}"]) == pred_counts[class_id]
            assert int(row[f"found_{name}"]) == objects[class_id].found
            assert int(row[f"correct_{name}"]) == objects[class_id].correct
        for c, name in enumerate(CLASSES):
            union = np.count_nonzero((truth == c) | (pred == c))
            cell = row[f"iou_{name}"]
            if union == 0:
                assert cell == ""
            else:
                assert float(cell) == pytest.approx(np.count_nonzero((truth == c) & (pred == c)) / union, abs=1e-5)
    np.testing.assert_array_equal(recomputed, confusion)
    for name, agreement in metrics.counts.items():
        assert agreement.mean_true == pytest.approx(np.mean([int(row[f"true_count_{name}"]) for row in rows]))
        assert agreement.mean_predicted == pytest.approx(np.mean([int(row[f"pred_count_{name}"]) for row in rows]))
    for name, entry in metrics.objects.items():
        # The whole-set object scores are the sums of the per-image rows.
        total = ObjectTally(
            *(
                sum(int(row[f"{column}_{name}"]) for row in rows)
                for column in ("true_count", "found", "pred_count", "correct")
            )
        )
        assert entry == total
        presence = metrics.presence[name]
        holds = [row["image"] for row in rows if int(row[f"true_count_{name}"]) > 0]
        said = [row["image"] for row in rows if int(row[f"pred_count_{name}"]) > 0]
        assert presence.images_with + presence.images_without == len(rows)
        assert presence.missed_images == tuple(image for image in holds if image not in said)
        assert presence.false_alarm_images == tuple(image for image in said if image not in holds)
    supports = [metrics.per_class[name].support for name in CLASSES]
    assert supports == confusion.sum(axis=1).tolist()


def test_format_metrics_table_lists_every_score(evaluated: tuple[Path, Path, EvaluationMetrics]) -> None:
    table = format_metrics_table(evaluated[2])
    for text in (
        "IoU",
        "precision",
        "dice",
        "BF1",
        "support",
        "global accuracy",
        "class-average accuracy",
        "mean IoU",
        "frequency-weighted IoU",
        "mean boundary F1",
        "count MAE",
        "count r",
        "true objects",
        "found",
        "recall",
        "F1",
        "sensitivity",
        "specificity",
        "missed in",
        "said present in",
        *CLASSES,
    ):
        assert text in table
    assert f"{evaluated[2].mean_iou:.3f}" in table
    assert "None" not in table and "nan" not in table


def test_split_all_and_custom_out(tmp_path: Path, make_run) -> None:
    run, data = make_run(tmp_path)
    out = tmp_path / "elsewhere"
    metrics = evaluate_run(run / BEST_CHECKPOINT, data, split="all", out=out, options=PLAIN, progress=False)
    assert metrics.num_images == 4
    assert metrics.confusion.sum() == 4 * SIZE * SIZE
    assert len(read_rows(out / "per_image.csv")) == 4
    assert not (run / EVALUATION_FOLDER).exists()


def test_ignore_index_leaves_pixels_out(tmp_path: Path, make_run) -> None:
    run, data = make_run(tmp_path)
    mask_path = data / "masks" / "003.png"  # a validation image
    mask = np.asarray(Image.open(mask_path)).copy()
    mask[:10, :] = 255  # ten unlabelled rows
    Image.fromarray(mask).save(mask_path)

    with pytest.raises(DataError, match="003.png"):
        evaluate_run(run / BEST_CHECKPOINT, data, options=PLAIN, progress=False)
    metrics = evaluate_run(run / BEST_CHECKPOINT, data, options=PLAIN, ignore_index=255, progress=False)
    assert metrics.confusion.sum() == 2 * SIZE * SIZE - 10 * SIZE
    rows = read_rows(run / EVALUATION_FOLDER / "per_image.csv")
    assert all(0 <= float(row["pixel_accuracy"]) <= 1 for row in rows)


def test_bad_split_and_missing_split_file(tmp_path: Path, make_run) -> None:
    run, data = make_run(tmp_path)
    with pytest.raises(SegnetError, match="unknown split 'test'"):
        evaluate_run(run / BEST_CHECKPOINT, data, split="test", options=PLAIN, progress=False)
    (run / SPLIT_FILE).unlink()
    with pytest.raises(DataError, match="split.json"):
        evaluate_run(run / BEST_CHECKPOINT, data, options=PLAIN, progress=False)


def test_a_split_edited_to_hold_out_training_images_is_refused(tmp_path: Path, make_run) -> None:
    run, data = make_run(tmp_path)
    trained = Checkpoint.load(run / BEST_CHECKPOINT).replace(training_images=["001", "002"])
    trained.save(run / BEST_CHECKPOINT)  # what split.json says: 003 and 004 are held out
    assert evaluate_run(run / BEST_CHECKPOINT, data, options=PLAIN, progress=False).num_images == 2
    pairs = find_pairs(data)
    write_split(run / SPLIT_FILE, pairs[1:3], [pairs[0], pairs[3]])  # 001, trained on, now "held out"
    with pytest.raises(
        DataError, match=r"split.json: lists 1 image\(s\) the checkpoint was trained on as held out \(001\)"
    ):
        evaluate_run(run / BEST_CHECKPOINT, data, options=PLAIN, progress=False)
    assert evaluate_run(run / BEST_CHECKPOINT, data, split="all", options=PLAIN, progress=False).num_images == 4


def test_two_evaluations_into_one_folder_are_refused(tmp_path: Path, make_run) -> None:
    run, data = make_run(tmp_path)
    out = tmp_path / "eval"
    with output_lock(out), pytest.raises(SegnetError, match="another segnet run is writing into this folder"):
        evaluate_run(run / BEST_CHECKPOINT, data, out=out, options=PLAIN, progress=False)
    assert not (out / "metrics.json").exists()


def test_undefined_scores_are_dashes() -> None:
    metrics = EvaluationMetrics.from_confusion(
        np.array([[2304, 0], [0, 0]]),
        ["background", "cell"],
        num_images=1,
        boundary_f1=BoundaryScores(1.0, {"background": 1.0, "cell": None}),
        counts={"cell": CountAgreement(0.0, None, 0.0, 0.0)},
        objects={"cell": ObjectTally()},
        presence={"cell": PresenceTally.of_image("001", ObjectTally())},
    )
    table = format_metrics_table(metrics)
    per_class_line, count_line, object_line, presence_line = [
        line.split() for line in table.splitlines() if line.startswith("cell ")
    ]
    assert per_class_line == ["cell", "-", "-", "-", "-", "-", "0"]
    assert count_line == ["cell", "0.00", "-", "0.0", "0.0"]
    assert object_line == ["cell", "0", "0", "0", "0", "-", "-", "-"]
    assert presence_line == ["cell", "0", "-", "1", "1.000"]
    assert "cell: missed in none; said present in none" in table
    assert "2,304" in table
