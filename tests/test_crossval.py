"""Cross-validation: the fold split, K runs and their summary, and scoring each fold on its own images."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from segnet.cli import main
from segnet.core.errors import SegnetError
from segnet.core.runfiles import BEST_CHECKPOINT, EVALUATION_FOLDER, SPLIT_FILE
from segnet.data.pairs import find_pairs, read_image
from segnet.evaluate.counting import CountAgreement
from segnet.evaluate.detection import ObjectTally, PresenceTally
from segnet.evaluate.metrics import EvaluationMetrics
from segnet.model.options import InferenceOptions
from segnet.model.predictor import Ensemble, Predictor
from segnet.plan.config import load_config
from segnet.train.folds import fold_checkpoints
from segnet.train.metrics import BoundaryScores, ValidationMetrics
from segnet.workflow.crossval import (
    evaluate_cross_validation,
    format_cv_table,
    k_fold_split,
    summarize_folds,
    train_cross_validation,
)

PLAIN = InferenceOptions(device="cpu", tta=False, diameter=None)  # the network's own pass


def test_folds_partition_the_images_reproducibly(synthetic_dataset):
    pairs = find_pairs(synthetic_dataset)
    folds = k_fold_split(pairs, 5, seed=1)
    stems = [p.stem for fold in folds for p in fold]
    assert sorted(stems) == sorted(p.stem for p in pairs)  # every image in exactly one fold
    assert sorted(len(fold) for fold in folds) == [2, 2, 2, 3, 3]
    assert [[p.stem for p in fold] for fold in k_fold_split(list(reversed(pairs)), 5, seed=1)] == [
        [p.stem for p in fold] for fold in folds
    ]
    assert k_fold_split(pairs, 5, seed=2) != folds
    with pytest.raises(SegnetError, match="at least 2 folds"):
        k_fold_split(pairs, 1, seed=0)
    with pytest.raises(SegnetError, match="too few for 13 folds"):
        k_fold_split(pairs, 13, seed=0)


def test_summary_mean_std_and_pooled():
    def fold(confusion):
        return ValidationMetrics.from_confusion(np.asarray(confusion), ["background", "cell"], loss=1.0)

    summary = summarize_folds([fold([[8, 0], [0, 2]]), fold([[6, 2], [2, 0]])])
    iou = summary["scores"]["IoU cell"]
    assert iou["per_fold"] == [1.0, 0.0] and iou["mean"] == 0.5 and iou["std"] == pytest.approx(np.sqrt(0.5))
    assert summary["pooled_metrics"]["confusion_matrix"] == [[14, 2], [2, 2]]
    assert summary["pooled"]["global accuracy"] == pytest.approx(16 / 20)
    table = format_cv_table(summary)
    assert "fold 1" in table and "pooled" in table and "IoU cell" in table
    assert "object F1 cell" not in summary["pooled"]  # training-time validations have no object scores


def test_pooled_object_scores_sum_the_folds_tallies():
    def fold(confusion, tally, image):
        return EvaluationMetrics.from_confusion(
            np.asarray(confusion),
            ["background", "cell"],
            num_images=1,
            boundary_f1=BoundaryScores(None, {"background": None, "cell": None}),
            counts={"cell": CountAgreement(0.0, None, 1.0, 1.0)},
            objects={"cell": tally},
            presence={"cell": PresenceTally.of_image(image, tally)},
        )

    summary = summarize_folds(
        [fold([[8, 0], [0, 2]], ObjectTally(4, 4, 4, 4), "a"), fold([[6, 2], [2, 0]], ObjectTally(1, 0, 0, 0), "b")]
    )
    assert summary["scores"]["object F1 cell"]["per_fold"] == [1.0, 0.0]
    # Pooled from the summed tallies (recall 4/5, precision 4/4), not the mean of the folds' F1.
    assert summary["pooled"]["object F1 cell"] == pytest.approx(2 * 0.8 / 1.8)
    assert summary["pooled"]["sensitivity cell"] == 0.5
    assert summary["pooled_metrics"]["presence"]["cell"]["missed_images"] == ["b"]
    assert summary["scores"]["count MAE cell"]["per_fold"] == [0.0, 0.0]
    # The pooled metrics are metrics.json's pixel, object and presence sections (no counts: they do not add up).
    assert list(summary["pooled_metrics"])[7:] == ["objects", "presence"]


@pytest.fixture(scope="module")
def cross_validation_run(synthetic_dataset, tmp_path_factory):
    run = tmp_path_factory.mktemp("cv") / "run"
    status = main(
        [
            "train",
            "--data",
            str(synthetic_dataset),
            "--out",
            str(run),
            "--folds",
            "3",
            "--epochs",
            "1",
            "--batch-size",
            "4",
            "--image-size",
            "32",
            "--num-workers",
            "0",
        ]
    )
    assert status == 0
    return run


@pytest.mark.slow
def test_cross_validation_writes_folds_runs_and_summary(cross_validation_run, synthetic_dataset):
    run = cross_validation_run
    folds = json.loads((run / "folds.json").read_text())
    assert folds["folds"] == 3 and sorted(sum(folds["stems"], [])) == sorted(
        p.stem for p in find_pairs(synthetic_dataset)
    )
    for k, stems in enumerate(folds["stems"], start=1):
        assert json.loads((run / f"fold_{k}" / SPLIT_FILE).read_text())["val"] == stems
        assert (run / f"fold_{k}" / BEST_CHECKPOINT).is_file()
    summary = json.loads((run / "cv_summary.json").read_text())
    assert summary["folds"] == 3
    for label in ("global accuracy", "mean IoU", "IoU background", "IoU erythrocyte", "IoU spirochete"):
        entry = summary["scores"][label]
        assert len(entry["per_fold"]) == 3 and entry["mean"] is not None and entry["std"] is not None
    # Pooled over the folds, every pixel of every image is scored exactly once.
    assert np.sum(summary["pooled_metrics"]["confusion_matrix"]) == 12 * 48 * 48
    with pytest.raises(SegnetError, match="already holds a run"):
        train_cross_validation(load_config(None, {"data": str(synthetic_dataset), "out": str(run)}), 3)


@pytest.mark.slow
def test_evaluate_scores_each_fold_on_its_own_images(cross_validation_run, synthetic_dataset, capsys):
    run = cross_validation_run
    assert main(["evaluate", "--checkpoint", str(run), "--data", str(synthetic_dataset), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "mean IoU" in printed and "fold 3" in printed and "count MAE" in printed
    folds = json.loads((run / "folds.json").read_text())["stems"]
    for k, stems in enumerate(folds, start=1):
        metrics = json.loads((run / EVALUATION_FOLDER / f"fold_{k}" / "metrics.json").read_text())
        assert metrics["num_images"] == len(stems)
        assert metrics["evaluation"]["checkpoint"] == str(run / f"fold_{k}" / BEST_CHECKPOINT)
    summary = json.loads((run / EVALUATION_FOLDER / "cv_summary.json").read_text())
    assert np.sum(summary["pooled_metrics"]["confusion_matrix"]) == 12 * 48 * 48
    assert "mean boundary F1" in summary["scores"] and "object F1 spirochete" in printed
    fold_objects = [
        json.loads((run / EVALUATION_FOLDER / f"fold_{k}" / "metrics.json").read_text())["objects"] for k in (1, 2, 3)
    ]
    pooled = summary["pooled_metrics"]["objects"]["spirochete"]
    assert pooled["true_objects"] == sum(objects["spirochete"]["true_objects"] for objects in fold_objects)


def test_evaluate_refuses_a_folder_that_is_not_a_cross_validation_run(synthetic_dataset, tmp_path):
    with pytest.raises(SegnetError, match="not a cross-validation run"):
        evaluate_cross_validation(tmp_path, synthetic_dataset)


@pytest.mark.slow
def test_predict_with_a_cross_validation_run_averages_the_folds(cross_validation_run, synthetic_dataset, tmp_path):
    run = cross_validation_run
    image_path = find_pairs(synthetic_dataset)[0].image
    checkpoints = fold_checkpoints(run)
    assert checkpoints == [run / f"fold_{k}" / BEST_CHECKPOINT for k in (1, 2, 3)]
    image = read_image(image_path)
    members = [Predictor.from_checkpoint(path, PLAIN) for path in checkpoints]
    expected = np.mean([member.predict_proba(image) for member in members], axis=0)
    ensemble = Ensemble.from_checkpoints(checkpoints, PLAIN)
    np.testing.assert_allclose(ensemble.predict_proba(image), expected, atol=1e-6)
    # Each fold normalises with its own training images' statistics.
    assert len({tuple(member.mean_255) for member in members}) == 3

    out = tmp_path / "predicted"
    assert (
        main(["predict", "--checkpoint", str(run), str(image_path), "--out", str(out), "--device", "cpu", "--no-tta"])
        == 0
    )
    mask = np.asarray(Image.open(out / f"{image_path.stem}_mask.png"))
    np.testing.assert_array_equal(mask, expected.argmax(0))
    assert (out / f"{image_path.stem}_uncertainty.png").is_file()  # the folds' disagreement


@pytest.mark.slow
def test_predict_refuses_an_unfinished_or_unknown_run_folder(cross_validation_run, synthetic_dataset, tmp_path, capsys):
    image = str(find_pairs(synthetic_dataset)[0].image)
    assert main(["predict", "--checkpoint", str(tmp_path), image, "--out", str(tmp_path / "out")]) == 1
    assert "must be a cross-validation run" in capsys.readouterr().err
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "folds.json").write_text((cross_validation_run / "folds.json").read_text())
    assert main(["predict", "--checkpoint", str(unfinished), image, "--out", str(tmp_path / "out")]) == 1
    assert "unfinished" in capsys.readouterr().err
