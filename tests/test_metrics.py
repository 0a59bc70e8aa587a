"""Tests for segnet.train.metrics: hand-computed cases, the absent-class policy, and agreement with
torchmetrics / scikit-learn.

torchmetrics writes a 0/0 per-class score as 0 (or NaN) where we write None, and its macro accuracy
counts a predicted-only class as recall 0 where we leave it out; so per-class values are compared
only on classes we define, and macro accuracy only when every class has true pixels.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from sklearn.metrics import confusion_matrix as sk_confusion_matrix
from sklearn.metrics import jaccard_score
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassJaccardIndex,
)

from segnet.core.errors import DataError
from segnet.train.metrics import (
    BoundaryF1,
    BoundaryScores,
    ClassScores,
    ConfusionMatrix,
    PixelMetrics,
    ValidationMetrics,
    boundary_f1_per_image,
)

IGNORE = 255


def confusion_of(target, pred, num_classes, ignore_index=None) -> torch.Tensor:
    matrix = ConfusionMatrix(num_classes, ignore_index=ignore_index)
    matrix.update(torch.as_tensor(target), torch.as_tensor(pred))
    return matrix.mat


# --- confusion matrix ---------------------------------------------------------------------------


def test_confusion_matrix_hand_computed():
    target = torch.tensor([[0, 0, 1], [1, 2, 2]])
    pred = torch.tensor([[0, 1, 1], [1, 2, 0]])
    assert confusion_of(target, pred, 3).tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]


def test_confusion_matrix_accumulates_and_resets():
    matrix = ConfusionMatrix(2)
    matrix.update(torch.tensor([0, 1]), torch.tensor([0, 0]))
    matrix.update(torch.tensor([[1]]), torch.tensor([[1]]))
    assert matrix.mat.dtype == torch.int64
    assert matrix.mat.tolist() == [[1, 0], [1, 1]]
    matrix.reset()
    assert matrix.mat.tolist() == [[0, 0], [0, 0]]


def test_confusion_matrix_skips_ignore_index():
    target = torch.tensor([[0, IGNORE, 1], [IGNORE, 2, 2]])
    pred = torch.tensor([[0, 2, 1], [0, 2, 1]])
    assert confusion_of(target, pred, 3, IGNORE).tolist() == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]


def test_confusion_matrix_ignore_index_inside_class_range():
    target = torch.tensor([0, 0, 1, 2])
    pred = torch.tensor([1, 2, 1, 0])
    assert confusion_of(target, pred, 3, ignore_index=0).tolist() == [[0, 0, 0], [0, 1, 0], [1, 0, 0]]


def test_confusion_matrix_all_ignored_is_empty():
    matrix = confusion_of(torch.full((2, 2), IGNORE), torch.zeros(2, 2, dtype=torch.long), 3, IGNORE)
    assert matrix.sum().item() == 0


@pytest.mark.parametrize("bad", [3, -1, IGNORE])
def test_confusion_matrix_rejects_target_out_of_range(bad):
    matrix = ConfusionMatrix(3)  # no ignore_index, so 255 is an error too
    with pytest.raises(ValueError, match="target"):
        matrix.update(torch.tensor([0, bad]), torch.tensor([0, 0]))


def test_confusion_matrix_rejects_pred_out_of_range_and_shape_mismatch():
    matrix = ConfusionMatrix(3, ignore_index=IGNORE)
    with pytest.raises(ValueError, match="pred"):
        matrix.update(torch.tensor([0, 1]), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="shape"):
        matrix.update(torch.tensor([0, 1]), torch.tensor([[0, 1]]))


def _sum_over_two_ranks(rank: int, init_file: str, results) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        matrix = ConfusionMatrix(2)
        matrix.update(torch.tensor([rank]), torch.tensor([0]))
        matrix.reduce_from_all_processes()
        results[rank] = matrix.mat.tolist()
    finally:
        dist.destroy_process_group()


def test_reduce_from_all_processes_single_process_is_noop():
    matrix = ConfusionMatrix(2)
    matrix.update(torch.tensor([1]), torch.tensor([0]))
    matrix.reduce_from_all_processes()
    assert matrix.mat.tolist() == [[0, 0], [1, 0]]


def test_reduce_from_all_processes_sums_ranks(tmp_path):
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_sum_over_two_ranks, args=(str(tmp_path / "init"), results), nprocs=2)
        assert results[0] == results[1] == [[1, 0], [1, 0]]


# --- PixelMetrics.from_confusion: hand-computed --------------------------------------------------------


def test_metrics_hand_computed():
    matrix = confusion_of([[0, 0, 1], [1, 2, 2]], [[0, 1, 1], [1, 2, 0]], 3)
    m = PixelMetrics.from_confusion(matrix, ["bg", "rbc", "spiro"])
    assert list(m.to_dict()) == [
        "classes", "global_accuracy", "class_average_accuracy", "mean_iou",
        "frequency_weighted_iou", "per_class", "confusion_matrix",
    ]  # fmt: skip
    assert m.classes == ("bg", "rbc", "spiro")
    assert m.to_dict()["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert m.confusion.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    expected = {
        "bg": {"iou": 1 / 3, "accuracy": 1 / 2, "precision": 1 / 2, "dice": 1 / 2, "support": 2},
        "rbc": {"iou": 2 / 3, "accuracy": 1.0, "precision": 2 / 3, "dice": 4 / 5, "support": 2},
        "spiro": {"iou": 1 / 2, "accuracy": 1 / 2, "precision": 1.0, "dice": 2 / 3, "support": 2},
    }
    for name, values in expected.items():
        assert m.per_class[name].to_dict() == pytest.approx(values)
        assert type(m.per_class[name].support) is int
    assert m.global_accuracy == pytest.approx(4 / 6)
    assert m.class_average_accuracy == pytest.approx(2 / 3)
    assert m.mean_iou == pytest.approx(0.5)
    assert m.frequency_weighted_iou == pytest.approx(0.5)
    assert m.whole_image_scores() == {
        "global_accuracy": m.global_accuracy,
        "class_average_accuracy": m.class_average_accuracy,
        "mean_iou": m.mean_iou,
        "frequency_weighted_iou": m.frequency_weighted_iou,
    }


def test_metrics_absent_class_policy():
    # class 2 absent from both; class 3 predicted only; class 4 true only.
    target = [[0, 0, 1, 4], [1, 1, 0, 4]]
    pred = [[0, 3, 1, 0], [0, 0, 0, 0]]
    names = ["c0", "c1", "c2", "c3", "c4"]
    m = PixelMetrics.from_confusion(confusion_of(target, pred, 5).numpy(), names)
    pc = m.per_class
    assert pc["c0"].to_dict() == pytest.approx(
        {"iou": 2 / 7, "accuracy": 2 / 3, "precision": 1 / 3, "dice": 4 / 9, "support": 3}
    )
    assert pc["c1"].to_dict() == pytest.approx(
        {"iou": 1 / 3, "accuracy": 1 / 3, "precision": 1.0, "dice": 1 / 2, "support": 3}
    )
    assert pc["c2"] == ClassScores(iou=None, accuracy=None, precision=None, dice=None, support=0)
    assert pc["c3"] == ClassScores(iou=0.0, accuracy=None, precision=0.0, dice=0.0, support=0)
    assert pc["c4"] == ClassScores(iou=0.0, accuracy=0.0, precision=None, dice=0.0, support=2)
    assert m.mean_iou == pytest.approx((2 / 7 + 1 / 3 + 0 + 0) / 4)  # c2 left out
    assert m.class_average_accuracy == pytest.approx((2 / 3 + 1 / 3 + 0) / 3)  # c2, c3 left out
    assert m.frequency_weighted_iou == pytest.approx(3 / 8 * 2 / 7 + 3 / 8 * 1 / 3)
    assert m.global_accuracy == pytest.approx(3 / 8)


def test_metrics_are_plain_json_without_nan():
    m = PixelMetrics.from_confusion(confusion_of([0, 0, 1], [0, 1, 1], 3), ["a", "b", "c"])
    text = json.dumps(m.to_dict(), allow_nan=False)  # raises on NaN / inf
    assert json.loads(text) == m.to_dict()
    for value in (m.global_accuracy, m.mean_iou, *m.per_class["a"].to_dict().values()):
        assert type(value) in (float, int)


def test_metrics_empty_matrix_all_none():
    m = PixelMetrics.from_confusion(np.zeros((2, 2), dtype=np.int64), ["a", "b"])
    assert m.global_accuracy is None
    assert m.mean_iou is None
    assert m.class_average_accuracy is None
    assert m.frequency_weighted_iou is None
    assert m.per_class["a"].iou is None


def test_metrics_rejects_wrong_number_of_names():
    with pytest.raises(ValueError):
        PixelMetrics.from_confusion(np.zeros((3, 3), dtype=np.int64), ["a", "b"])


def test_validation_metrics_are_best_metrics_json_written_and_read_back(tmp_path):
    m = ValidationMetrics.from_confusion(np.array([[5, 1], [0, 4]]), ["a", "b"], loss=0.25, epoch=7)
    path = tmp_path / "best_metrics.json"
    m.write(path)
    content = json.loads(path.read_text())
    assert list(content) == ["epoch", *PixelMetrics.from_confusion(m.confusion, m.classes).to_dict(), "loss"]
    assert content["epoch"] == 7 and content["loss"] == 0.25 and content["confusion_matrix"] == [[5, 1], [0, 4]]
    assert ValidationMetrics.read(path) == m


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda c: c.pop("loss"), "at loss, field required"),
        (lambda c: c["per_class"]["a"].update(iou="0.5"), "at per_class.a.iou, input should be a valid number"),
        (lambda c: c["per_class"].pop("b"), "per_class names ['a'] are not the classes ['a', 'b']"),
        (lambda c: c.update(confusion_matrix=[[5, 1]]), "confusion_matrix is not 2 x 2"),
    ],
)
def test_a_damaged_best_metrics_json_is_one_line_naming_file_and_key(tmp_path, change, problem):
    path = tmp_path / "best_metrics.json"
    content = ValidationMetrics.from_confusion(np.array([[5, 1], [0, 4]]), ["a", "b"], loss=0.25, epoch=7).to_dict()
    change(content)
    path.write_text(json.dumps(content))
    with pytest.raises(DataError) as error:
        ValidationMetrics.read(path)
    assert str(error.value).startswith(f"{path}: not a best-metrics file: ") and problem in str(error.value)
    assert "\n" not in str(error.value)


# --- agreement with torchmetrics and scikit-learn -------------------------------------------------


def _random_case(seed: int, num_classes: int, shape=(4, 17, 23)):
    rng = np.random.default_rng(seed)
    target = rng.integers(0, num_classes, size=shape)
    # A prediction that is right about half the time, so scores are not all near chance.
    pred = np.where(rng.random(shape) < 0.5, target, rng.integers(0, num_classes, size=shape))
    target[rng.random(shape) < 0.1] = IGNORE
    return target, pred


def _adversarial_cases():
    rng = np.random.default_rng(123)
    shape = (2, 9, 11)
    # class 1 absent from both truth and prediction
    t = rng.choice([0, 2, 3], size=shape)
    yield "class-absent", t, rng.choice([0, 2, 3], size=shape)
    # class 3 only in the prediction, class 2 only in the truth
    yield "one-sided", rng.choice([0, 1, 2], size=shape), rng.choice([0, 1, 3], size=shape)
    # a single class everywhere, predicted perfectly
    yield "one-class", np.ones(shape, dtype=np.int64), np.ones(shape, dtype=np.int64)
    # a single true class, random prediction
    yield "one-true-class", np.full(shape, 2), rng.integers(0, 4, size=shape)
    # every pixel ignored but one
    t = np.full(shape, IGNORE)
    t[1, 4, 5] = 3
    yield "one-pixel", t, rng.integers(0, 4, size=shape)


CASES = [(f"seed{s}", *_random_case(s, 4)) for s in range(5)] + list(_adversarial_cases())


@pytest.mark.parametrize("name,target,pred", CASES, ids=[c[0] for c in CASES])
def test_agrees_with_torchmetrics_and_sklearn(name, target, pred):
    num_classes = 4
    t, p = torch.as_tensor(target), torch.as_tensor(pred)
    ours_matrix = confusion_of(t, p, num_classes, IGNORE)
    m = PixelMetrics.from_confusion(ours_matrix, [str(c) for c in range(num_classes)])
    per_class = [m.per_class[str(c)].to_dict() for c in range(num_classes)]

    def tm(metric_cls, **kwargs):
        return metric_cls(num_classes=num_classes, ignore_index=IGNORE, **kwargs)(p, t)

    assert torch.equal(ours_matrix, tm(MulticlassConfusionMatrix).long())

    def assert_close_on_defined(key, reference):
        for c, values in enumerate(per_class):
            if values[key] is not None:
                assert values[key] == pytest.approx(float(reference[c]), abs=1e-6), (key, c)

    assert_close_on_defined("iou", tm(MulticlassJaccardIndex, average=None))
    assert_close_on_defined("accuracy", tm(MulticlassAccuracy, average=None))
    assert_close_on_defined("dice", tm(MulticlassF1Score, average=None))
    assert m.mean_iou == pytest.approx(tm(MulticlassJaccardIndex, average="macro").item(), abs=1e-6)
    assert m.global_accuracy == pytest.approx(tm(MulticlassAccuracy, average="micro").item(), abs=1e-6)
    if all(values["support"] > 0 for values in per_class):
        macro = tm(MulticlassAccuracy, average="macro").item()
        assert m.class_average_accuracy == pytest.approx(macro, abs=1e-6)

    kept = target.reshape(-1) != IGNORE
    t_kept, p_kept = target.reshape(-1)[kept], pred.reshape(-1)[kept]
    labels = list(range(num_classes))
    assert m.confusion.tolist() == sk_confusion_matrix(t_kept, p_kept, labels=labels).tolist()
    sk_iou = jaccard_score(t_kept, p_kept, labels=labels, average=None, zero_division=0)
    assert_close_on_defined("iou", sk_iou)


# --- boundary F1 ----------------------------------------------------------------------------------


def disc_mask(shape, center, radius, value=1) -> np.ndarray:
    rows, cols = np.indices(shape)
    mask = np.zeros(shape, dtype=np.int64)
    mask[(rows - center[0]) ** 2 + (cols - center[1]) ** 2 <= radius**2] = value
    return mask


def test_boundary_f1_hand_computed():
    # 3x3 true square vs 3x4 predicted square; tolerance 0 (exact matches only).
    target = np.zeros((6, 6), dtype=np.int64)
    target[1:4, 1:4] = 1
    pred = np.zeros((6, 6), dtype=np.int64)
    pred[1:4, 1:5] = 1
    # true edge: 8-pixel ring; predicted edge: 10-pixel ring; 7 shared pixels.
    scores = boundary_f1_per_image(target, pred, num_classes=2, tolerance_fraction=0.0)
    precision, recall = 7 / 10, 7 / 8
    assert scores[1] == pytest.approx(2 * precision * recall / (precision + recall))
    assert scores[1] == pytest.approx(7 / 9)


def test_boundary_f1_perfect_prediction_and_absent_class():
    target = disc_mask((80, 90), (40, 45), 15)
    assert boundary_f1_per_image(target, target.copy(), num_classes=3) == [1.0, 1.0, None]


def test_boundary_f1_present_on_one_side_only_is_zero():
    target = disc_mask((50, 50), (25, 25), 8)
    pred = disc_mask((50, 50), (25, 25), 8, value=2)
    assert boundary_f1_per_image(target, pred, num_classes=3) == [1.0, 0.0, 0.0]


def test_boundary_f1_shift_beyond_tolerance_scores_below_one():
    target = disc_mask((100, 100), (50, 50), 20)  # tolerance = 0.0075 * 141 = 1.06 px
    pred = np.roll(target, 5, axis=1)
    score = boundary_f1_per_image(target, pred, num_classes=2)[1]
    assert 0.0 < score < 1.0


def test_boundary_f1_one_pixel_shift_within_tolerance_is_perfect():
    target = disc_mask((400, 400), (200, 200), 60)  # tolerance = 4.2 px
    pred = np.roll(target, 1, axis=0)
    assert boundary_f1_per_image(target, pred, num_classes=2) == [1.0, 1.0]


def test_boundary_f1_image_border_is_not_a_boundary():
    # Left half vs left half plus one column, tolerance 0: the only edges are the inner columns
    # 19 and 20, which never coincide; counting the frame as edge would score well above 0.
    target = np.zeros((40, 40), dtype=np.int64)
    target[:, :20] = 1
    pred = np.zeros((40, 40), dtype=np.int64)
    pred[:, :21] = 1
    assert boundary_f1_per_image(target, pred, num_classes=2, tolerance_fraction=0.0) == [0.0, 0.0]
    # a class filling the whole image has no edge: perfect when both fill it, 0 when one has an edge
    whole = np.ones((10, 10), dtype=np.int64)
    assert boundary_f1_per_image(whole, whole, num_classes=2) == [None, 1.0]
    assert boundary_f1_per_image(whole, disc_mask((10, 10), (5, 5), 3), num_classes=2) == [0.0, 0.0]


def test_boundary_f1_ignores_ignored_pixels():
    target = disc_mask((60, 60), (30, 30), 12)
    target[:, 40:] = IGNORE
    pred = disc_mask((60, 60), (30, 30), 12)
    pred[:, 40:] = np.random.default_rng(0).integers(0, 3, size=(60, 20))  # noise where ignored
    assert boundary_f1_per_image(target, pred, num_classes=3, ignore_index=IGNORE) == [1.0, 1.0, None]


def test_boundary_f1_accumulates_means_over_images():
    names = ["bg", "rbc", "spiro"]
    metric = BoundaryF1(names)
    a = disc_mask((50, 50), (25, 25), 10)
    b = disc_mask((50, 50), (25, 25), 10, value=2)
    assert metric.update(a, a) == [1.0, 1.0, None]
    assert metric.update(a, b) == [1.0, 0.0, 0.0]
    result = metric.compute()
    assert result.per_class == {"bg": 1.0, "rbc": 0.5, "spiro": 0.0}
    assert result.mean == pytest.approx(0.5)
    assert BoundaryF1(names).compute() == BoundaryScores(mean=None, per_class=dict.fromkeys(names))
    assert BoundaryF1(names).compute().to_dict() == {"mean": None, "per_class": dict.fromkeys(names)}
    assert not any(isinstance(v, float) and math.isnan(v) for v in result.per_class.values())
