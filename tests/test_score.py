"""Tests for segnet.evaluate.score and ``segnet score``: hand-made masks, and the masks evaluate and predict write."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segnet.cli import main
from segnet.core.errors import DataError, SegnetError
from segnet.core.runfiles import BEST_CHECKPOINT
from segnet.data.classes import DEFAULT_CLASSES
from segnet.evaluate.metrics import EvaluationMetrics
from segnet.evaluate.run import evaluate_run
from segnet.evaluate.score import (
    METRICS_FILE,
    PER_IMAGE_FILE,
    PREDICTION_SUFFIX,
    PREDICTIONS_FOLDER,
    ScoreSettings,
    pair_masks,
    score_masks,
)
from segnet.model.options import InferenceOptions
from segnet.model.predictor import Predictor
from segnet.predict.files import predict_paths
from segnet.report.page import report_run

torch.set_num_threads(1)

SETTINGS = ScoreSettings(min_area=4)
PLAIN = InferenceOptions(device="cpu", tta=False, diameter=None)  # the network's own pass


def truth_mask() -> np.ndarray:
    """A 32x32 mask: a 10x10 red cell and a 2x12 spirochete on background."""
    mask = np.zeros((32, 32), np.uint8)
    mask[3:13, 3:13] = 1
    mask[20:22, 10:22] = 2
    return mask


def write_masks(folder: Path, masks: dict[str, np.ndarray], suffix: str = "", ext: str = ".png") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for stem, mask in masks.items():
        Image.fromarray(mask).save(folder / f"{stem}{suffix}{ext}")
    return folder


def score(
    tmp_path: Path, truth: dict[str, np.ndarray], predicted: dict[str, np.ndarray], **kwargs
) -> EvaluationMetrics:
    truth_dir = write_masks(tmp_path / "truth", truth)
    predicted_dir = write_masks(tmp_path / "predicted", predicted, **kwargs)
    return score_masks(truth_dir, predicted_dir, tmp_path / "out", SETTINGS, progress=False)


def test_perfect_prediction_scores_one_everywhere(tmp_path: Path) -> None:
    metrics = score(
        tmp_path,
        {"a": truth_mask(), "b": truth_mask()},
        {"a": truth_mask(), "b": truth_mask()},
        suffix=PREDICTION_SUFFIX,
    )
    assert metrics.mean_iou == metrics.global_accuracy == 1.0
    assert all(metrics.per_class[name].iou == 1.0 for name in DEFAULT_CLASSES)
    assert metrics.boundary_f1.mean == 1.0
    for name in ("erythrocyte", "spirochete"):
        assert metrics.objects[name].f1 == 1.0
        assert metrics.objects[name].true_objects == 2
        assert metrics.presence[name].sensitivity == 1.0
        assert metrics.counts[name].mean_absolute_error == 0.0
    out = tmp_path / "out"
    assert json.loads((out / METRICS_FILE).read_text()) == metrics.to_dict()
    assert EvaluationMetrics.read(out / METRICS_FILE) == metrics
    assert sorted(path.name for path in (out / PREDICTIONS_FOLDER).iterdir()) == ["a.png", "b.png"]
    rows = list(csv.DictReader((out / PER_IMAGE_FILE).open()))
    assert [row["image"] for row in rows] == ["a", "b"] and rows[0]["mean_iou"] == "1.000000"
    assert rows[0]["image_path"] == ""  # a folder of masks alone: no images


def test_empty_prediction_finds_nothing(tmp_path: Path) -> None:
    empty = np.zeros((32, 32), np.uint8)
    metrics = score(tmp_path, {"a": truth_mask()}, {"a": empty})
    for name in ("erythrocyte", "spirochete"):
        per_class = metrics.per_class[name]
        assert per_class.iou == per_class.accuracy == 0.0 and per_class.precision is None
        assert metrics.objects[name].recall == 0.0 and metrics.objects[name].precision is None
        assert metrics.presence[name].sensitivity == 0.0
    assert metrics.per_class["background"].accuracy == 1.0


def test_a_class_missing_in_truth_or_prediction(tmp_path: Path) -> None:
    no_spirochete = truth_mask()
    no_spirochete[no_spirochete == 2] = 0
    # truth without spirochetes, prediction with them: a false alarm; and the other way round.
    metrics = score(tmp_path, {"a": no_spirochete, "b": truth_mask()}, {"a": truth_mask(), "b": no_spirochete})
    spirochete = metrics.presence["spirochete"]
    assert spirochete.missed_images == ("b",) and spirochete.false_alarm_images == ("a",)
    assert spirochete.sensitivity == 0.0 and spirochete.specificity == 0.0
    assert metrics.objects["spirochete"].found == 0 and metrics.objects["spirochete"].correct == 0
    rows = {row["image"]: row for row in csv.DictReader((tmp_path / "out" / PER_IMAGE_FILE).open())}
    assert rows["a"]["iou_spirochete"] == "0.000000" and rows["a"]["iou_erythrocyte"] == "1.000000"
    # A class absent from both truth and prediction is undefined, not 0.
    metrics = score(tmp_path / "both", {"a": no_spirochete}, {"a": no_spirochete})
    assert metrics.per_class["spirochete"].iou is None and metrics.mean_iou == 1.0
    assert metrics.objects["spirochete"].f1 is None


def test_size_mismatch_is_refused_naming_both_files(tmp_path: Path) -> None:
    with pytest.raises(SegnetError) as error:
        score(tmp_path, {"a": truth_mask()}, {"a": np.zeros((32, 30), np.uint8)})
    message = str(error.value)
    assert "\n" not in message
    assert str(tmp_path / "truth" / "a.png") in message and str(tmp_path / "predicted" / "a.png") in message
    assert "30x32" in message and "32x32" in message


def test_unknown_class_index_is_refused_naming_both_files(tmp_path: Path) -> None:
    wrong = truth_mask()
    wrong[0, 0] = 3
    with pytest.raises(SegnetError) as error:
        score(tmp_path, {"a": truth_mask()}, {"a": wrong}, ext=".tif")
    message = str(error.value)
    assert "\n" not in message and "[3]" in message
    assert str(tmp_path / "truth" / "a.png") in message and str(tmp_path / "predicted" / "a.tif") in message


def test_unpaired_masks_are_listed_and_left_out(tmp_path: Path) -> None:
    truth_dir = write_masks(tmp_path / "truth", {"a": truth_mask(), "lonely": truth_mask()})
    predicted_dir = write_masks(
        tmp_path / "predicted", {"a": truth_mask(), "stray": truth_mask()}, suffix=PREDICTION_SUFFIX
    )
    said: list[str] = []
    metrics = score_masks(truth_dir, predicted_dir, tmp_path / "out", SETTINGS, log=said.append, progress=False)
    assert metrics.num_images == 1
    assert metrics.evaluation["unpaired_truth"] == [str(truth_dir / "lonely.png")]
    assert metrics.evaluation["unpaired_predictions"] == [str(predicted_dir / "stray_mask.png")]
    assert len(said) == 2 and "lonely.png" in said[0] and "stray_mask.png" in said[1]
    with pytest.raises(DataError, match="no predicted mask has the stem"):
        pair_masks(truth_dir, write_masks(tmp_path / "other", {"x": truth_mask()}))


def test_cli_scores_prints_the_table_and_refuses_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    truth_dir = write_masks(tmp_path / "truth", {"a": truth_mask()})
    predicted_dir = write_masks(tmp_path / "predicted", {"a": truth_mask()})
    assert main(["score", str(truth_dir), str(predicted_dir), "--out", str(tmp_path / "out"), "--min-area", "4"]) == 0
    printed = capsys.readouterr().out
    assert "mean IoU" in printed and "sensitivity" in printed
    assert (
        main(
            [
                "score",
                str(truth_dir),
                str(predicted_dir),
                "--out",
                str(tmp_path / "out"),
                "--classes",
                "background",
                "cell",
            ]
        )
        == 1
    )
    error = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar
    assert error.startswith("segnet: error:") and "a.png" in error


def _numbers(metrics: EvaluationMetrics) -> dict:
    """Every score of metrics.json but what says where the masks came from."""
    return {key: value for key, value in metrics.to_dict().items() if key != "evaluation"}


def _assert_same(ours: object, theirs: object) -> None:
    if isinstance(ours, dict):
        assert ours.keys() == theirs.keys()
        for key in ours:
            _assert_same(ours[key], theirs[key])
    elif isinstance(ours, list):
        assert len(ours) == len(theirs)
        for a, b in zip(ours, theirs):
            _assert_same(a, b)
    elif isinstance(ours, float) and isinstance(theirs, float):
        assert math.isclose(ours, theirs, rel_tol=0, abs_tol=1e-9)
    else:
        assert ours == theirs


def test_score_of_evaluate_and_predict_masks_gives_evaluate_numbers(tmp_path: Path, make_run) -> None:
    run, data = make_run(tmp_path)
    evaluated = evaluate_run(
        run / BEST_CHECKPOINT, data, split="all", out=tmp_path / "evaluation", options=PLAIN, min_area=4, progress=False
    )
    predictor = Predictor.from_checkpoint(run / BEST_CHECKPOINT, PLAIN)
    predict_paths(predictor, [str(data / "images")], tmp_path / "predict", min_area=4, progress=False, log=None)
    for predictions in (tmp_path / "evaluation" / PREDICTIONS_FOLDER, tmp_path / "predict"):
        scored = score_masks(data, predictions, tmp_path / "scored", SETTINGS, progress=False)
        _assert_same(_numbers(scored), _numbers(evaluated))
        assert scored.num_images == 4
        # the dataset's images are recorded, so the report can show them
        rows = list(csv.DictReader((tmp_path / "scored" / PER_IMAGE_FILE).open()))
        assert rows == list(csv.DictReader((tmp_path / "evaluation" / PER_IMAGE_FILE).open()))


def test_report_draws_a_score_folder(tmp_path: Path) -> None:
    score(tmp_path, {"a": truth_mask()}, {"a": truth_mask()})
    said: list[str] = []
    page = report_run(tmp_path / "out", log=said.append).read_text()
    assert not said  # nothing evaluated first: the folder is its own evaluation
    assert f"1 masks of {tmp_path / 'predicted'} against {tmp_path / 'truth'}" in page
    assert "a ground truth" in page and "a image" not in page  # no images to show beside masks alone
