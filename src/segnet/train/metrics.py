"""Segmentation metrics: one confusion matrix for the pixel scores, plus the boundary F1 score.

Pixel metrics
-------------
Every pixel score is derived from a single ``(C, C)`` confusion matrix ``M`` accumulated on the
device (``bincount(C * target + pred)``, as in torchvision's segmentation references); rows are the
true class, columns the predicted class. For class ``c``::

    TP = M[c, c]    support = sum(M[c, :]) (true pixels)    predicted = sum(M[:, c])
    iou       = TP / (support + predicted - TP)
    dice      = 2 TP / (support + predicted)        (the per-class F1 score)
    accuracy  = TP / support                        (recall, as in the SegNet paper's "class accuracy")
    precision = TP / predicted

    global_accuracy        = trace(M) / sum(M)
    class_average_accuracy = mean of the defined per-class accuracies
    mean_iou               = mean of the defined per-class IoUs
    frequency_weighted_iou = sum over classes with a defined IoU of (support / sum(M)) * iou

Absent-class policy (a 0/0 is never reported as 0 or NaN; it is ``None``, JSON ``null``):

* a class absent from both truth and prediction: iou, dice, accuracy and precision are all ``None``;
* true pixels but none predicted: iou = dice = accuracy = 0, precision ``None`` (nothing predicted);
* predicted but no true pixels: iou = dice = precision = 0, accuracy ``None`` (nothing to recall);
* the means (``mean_iou``, ``class_average_accuracy``) average only the defined values, and are
  ``None`` when no value is defined (e.g. an empty matrix). So a class hallucinated in an image that
  lacks it pulls ``mean_iou`` down (its IoU is 0) but not ``class_average_accuracy``.

This matches torchmetrics' ``MulticlassJaccardIndex(average="macro")``, which also drops classes
absent from both sides; torchmetrics' per-class outputs write such 0/0 values as 0 (or NaN), and its
``MulticlassAccuracy(average="macro")`` counts a predicted-only class as recall 0 — ours leaves it out.

The scores are typed objects, never dicts with keys retyped by each reader:
:meth:`PixelMetrics.from_confusion` builds a :class:`PixelMetrics` (the whole-image scores,
``per_class`` name -> :class:`ClassScores`, the matrix), and :class:`ValidationMetrics` adds
training's validation loss and epoch; it is ``best_metrics.json``, written by
:meth:`ValidationMetrics.write` and read back, checked, by :meth:`ValidationMetrics.read`.
``metrics.json`` (``segnet.evaluate.metrics``) extends :class:`PixelMetrics` the same way. Their
``to_dict`` gives the JSON layout, whose keys are the attribute names.

Boundary F1 (the SegNet paper's BF score)
-----------------------------------------
Per image and class: the boundary of a binary class mask is the set of class pixels with at least
one 4-neighbour of another class. The image border is *not* a boundary (a cell cut off by the frame
has no drawn contour there). The tolerance is ``tolerance_fraction`` times the image diagonal, in
pixels (0.75% as in the SegNet paper). Precision is the fraction of predicted boundary pixels within
the tolerance (Euclidean distance, ``<=``) of a true boundary pixel, recall the fraction of true
boundary pixels within the tolerance of a predicted one; BF is their harmonic mean. A class absent
from both truth and prediction scores ``None``; present in only one of them scores 0. When a class
is present in both but neither has a boundary (it fills the whole image in both) the score is 1; if
only one of them has a boundary the score is 0. With ``ignore_index``, ignored pixels are never
boundary pixels, and a pixel is not a boundary pixel just because its neighbour is ignored.
``BoundaryF1`` averages per-image scores over the images where they are defined, per class.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import numpy as np
import torch
from scipy import ndimage

from segnet.core.distributed import all_reduce_sum
from segnet.core.outputs import write_text_atomically
from segnet.core.readback import read_json_as

_FOUR_CONNECTED = ndimage.generate_binary_structure(2, 1)


class ConfusionMatrix:
    """Pixel confusion matrix accumulated on ``device``; rows = true class, columns = predicted."""

    def __init__(self, num_classes: int, ignore_index: int | None = None, device: torch.device | str = "cpu") -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.mat = torch.zeros((num_classes, num_classes), dtype=torch.int64, device=device)

    def update(self, target: torch.Tensor, pred: torch.Tensor) -> None:
        """Add a batch of integer class maps of any (equal) shape; ``ignore_index`` pixels are skipped.

        Raises ``ValueError`` for a shape mismatch, or for a class id outside ``[0, num_classes)``
        (other than ``ignore_index`` in ``target``).
        """
        if target.shape != pred.shape:
            raise ValueError(f"target shape {tuple(target.shape)} != pred shape {tuple(pred.shape)}")
        n = self.num_classes
        target = target.reshape(-1).to(self.mat.device, torch.int64)
        pred = pred.reshape(-1).to(self.mat.device, torch.int64)
        if self.ignore_index is not None:
            kept = target != self.ignore_index
            target, pred = target[kept], pred[kept]
        if target.numel() == 0:
            return
        # One device->host sync for both checks.
        bad_target, bad_pred = torch.stack(
            [((target < 0) | (target >= n)).any(), ((pred < 0) | (pred >= n)).any()]
        ).tolist()
        if bad_target:
            raise ValueError(f"target holds class ids outside [0, {n}) that are not ignore_index={self.ignore_index}")
        if bad_pred:
            raise ValueError(f"pred holds class ids outside [0, {n})")
        self.mat += torch.bincount(n * target + pred, minlength=n * n).reshape(n, n)

    def reset(self) -> None:
        """Zero the matrix."""
        self.mat.zero_()

    def reduce_from_all_processes(self) -> None:
        """Sum the matrix over all ranks (a no-op outside torch.distributed)."""
        all_reduce_sum(self.mat)


def _ratio(numerator: int, denominator: int) -> float | None:
    return None if denominator == 0 else float(numerator) / float(denominator)


def _mean_defined(values: Sequence[float | None]) -> float | None:
    defined = [v for v in values if v is not None]
    return float(np.mean(defined)) if defined else None


SCORE_LABELS = {
    "global_accuracy": "global accuracy",
    "class_average_accuracy": "class-average accuracy",
    "mean_iou": "mean IoU",
    "frequency_weighted_iou": "frequency-weighted IoU",
}
"""The whole-image scores of :class:`PixelMetrics`: attribute (the key in the JSON files) -> its name in tables."""


def _plain(value: Any) -> Any:
    """A value as JSON holds it: a typed object by its ``to_dict``, mappings as dicts, tuples as lists."""
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(item) for item in value]
    return value


@dataclass(frozen=True)
class ClassScores:
    """The pixel scores of one class (module docstring); ``None`` where a score is 0/0."""

    iou: float | None
    accuracy: float | None
    precision: float | None
    dice: float | None
    support: int
    """The class's true pixels."""

    def to_dict(self) -> dict[str, Any]:
        """The scores, JSON-ready."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class PixelMetrics:
    """The pixel scores of one confusion matrix (module docstring); ``None`` where undefined.

    Attributes:
        classes: the class names, in index order.
        global_accuracy: correct pixels / all pixels.
        class_average_accuracy: the mean of the defined per-class accuracies.
        mean_iou: the mean of the defined per-class IoUs.
        frequency_weighted_iou: the per-class IoUs weighted by the classes' true pixels.
        per_class: class name -> its scores, in class order.
        confusion_matrix: pixels by true class (rows) and predicted class (columns).
    """

    classes: tuple[str, ...]
    global_accuracy: float | None
    class_average_accuracy: float | None
    mean_iou: float | None
    frequency_weighted_iou: float | None
    per_class: Mapping[str, ClassScores]
    confusion_matrix: tuple[tuple[int, ...], ...]

    def __post_init__(self) -> None:
        names = list(self.classes)
        if list(self.per_class) != names:
            raise ValueError(f"per_class names {list(self.per_class)} are not the classes {names}")
        if len(self.confusion_matrix) != len(names) or any(len(row) != len(names) for row in self.confusion_matrix):
            raise ValueError(f"confusion_matrix is not {len(names)} x {len(names)}: one row and column per class")

    @classmethod
    def from_confusion(cls, confusion: np.ndarray | torch.Tensor, class_names: Sequence[str], **more: Any) -> Self:
        """The pixel scores of a ``(C, C)`` confusion matrix (rows true, columns predicted).

        ``more`` are the fields of a subclass (``ValidationMetrics``' loss, ...).

        Raises:
            ValueError: the matrix is not ``C x C`` for the ``C`` class names.
        """
        if isinstance(confusion, torch.Tensor):
            confusion = confusion.detach().cpu().numpy()
        matrix = np.asarray(confusion, dtype=np.int64)
        num_classes = len(class_names)
        if matrix.shape != (num_classes, num_classes):
            raise ValueError(f"confusion matrix shape {matrix.shape} does not match {num_classes} class names")

        true_positives = np.diag(matrix)
        support = matrix.sum(axis=1)
        predicted = matrix.sum(axis=0)
        total = int(matrix.sum())

        per_class: dict[str, ClassScores] = {}
        for c, name in enumerate(class_names):
            tp, true_count, pred_count = int(true_positives[c]), int(support[c]), int(predicted[c])
            per_class[name] = ClassScores(
                iou=_ratio(tp, true_count + pred_count - tp),
                accuracy=_ratio(tp, true_count),
                precision=_ratio(tp, pred_count),
                dice=_ratio(2 * tp, true_count + pred_count),
                support=true_count,
            )
        ious = [scores.iou for scores in per_class.values()]
        frequency_weighted_iou = None
        if total > 0:
            frequency_weighted_iou = float(
                sum(int(support[c]) / total * iou for c, iou in enumerate(ious) if iou is not None)
            )
        return cls(
            classes=tuple(class_names),
            global_accuracy=_ratio(int(true_positives.sum()), total),
            class_average_accuracy=_mean_defined([scores.accuracy for scores in per_class.values()]),
            mean_iou=_mean_defined(ious),
            frequency_weighted_iou=frequency_weighted_iou,
            per_class=per_class,
            confusion_matrix=tuple(tuple(int(count) for count in row) for row in matrix),
            **more,
        )

    @property
    def confusion(self) -> np.ndarray:
        """The confusion matrix as a ``(C, C)`` int64 array."""
        return np.array(self.confusion_matrix, dtype=np.int64).reshape(len(self.classes), len(self.classes))

    def whole_image_scores(self) -> dict[str, float | None]:
        """The four whole-image scores by attribute name, in the order of :data:`SCORE_LABELS`."""
        return {name: getattr(self, name) for name in SCORE_LABELS}

    def to_dict(self) -> dict[str, Any]:
        """The pixel scores, JSON-ready, keyed by attribute name in field order."""
        return {field.name: _plain(getattr(self, field.name)) for field in dataclasses.fields(PixelMetrics)}


@dataclass(frozen=True)
class ValidationMetrics(PixelMetrics):
    """The pixel scores of a training-time validation, its mean loss and, once recorded, its epoch:
    what ``best_metrics.json`` holds (the epoch first, then the pixel scores, then the loss)."""

    loss: float
    epoch: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The metrics, JSON-ready, in the layout of ``best_metrics.json``."""
        return dict(epoch=self.epoch, **super().to_dict(), loss=self.loss)

    def write(self, path: str | Path) -> None:
        """Write ``best_metrics.json`` (atomically)."""
        write_text_atomically(Path(path), json.dumps(self.to_dict(), indent=1), "best metrics")

    @classmethod
    def read(cls, path: str | Path) -> ValidationMetrics:
        """A ``best_metrics.json``, checked.

        Raises:
            DataError: damaged or not of this layout, in one line naming the file and the key.
        """
        return read_json_as(path, "best-metrics file", cls)


@dataclass(frozen=True)
class BoundaryScores:
    """Boundary F1 scores averaged over images (module docstring); ``None`` where undefined.

    Attributes:
        mean: the mean of the defined per-class scores.
        per_class: class name -> its score, in class order.
    """

    mean: float | None
    per_class: Mapping[str, float | None]

    def to_dict(self) -> dict[str, Any]:
        """The scores, JSON-ready."""
        return {field.name: _plain(getattr(self, field.name)) for field in dataclasses.fields(self)}


def _boundary(mask: np.ndarray, wildcard: np.ndarray | None) -> np.ndarray:
    """Pixels of ``mask`` with a 4-neighbour outside it; the image border and ``wildcard`` pixels
    count as inside (so they create no boundary), and wildcard pixels are never boundary pixels."""
    solid = mask if wildcard is None else mask | wildcard
    interior = ndimage.binary_erosion(solid, structure=_FOUR_CONNECTED, border_value=1)
    edge = mask & ~interior
    return edge if wildcard is None else edge & ~wildcard


def _boundary_f1(true_edge: np.ndarray, pred_edge: np.ndarray, tolerance: float) -> float:
    if not true_edge.any() or not pred_edge.any():
        return 1.0 if true_edge.any() == pred_edge.any() else 0.0
    distance_to_true = ndimage.distance_transform_edt(~true_edge)
    distance_to_pred = ndimage.distance_transform_edt(~pred_edge)
    precision = float(np.mean(distance_to_true[pred_edge] <= tolerance))
    recall = float(np.mean(distance_to_pred[true_edge] <= tolerance))
    if precision + recall == 0.0:
        return 0.0
    return 2.0 * precision * recall / (precision + recall)


def boundary_f1_per_image(
    target: np.ndarray,
    pred: np.ndarray,
    num_classes: int,
    tolerance_fraction: float = 0.0075,
    ignore_index: int | None = None,
) -> list[float | None]:
    """Boundary F1 score of each class for one ``(H, W)`` image; ``None`` where a class is absent
    from both target and prediction (definitions in the module docstring)."""
    target = np.asarray(target)
    pred = np.asarray(pred)
    if target.shape != pred.shape or target.ndim != 2:
        raise ValueError(f"expected two equal (H, W) maps, got {target.shape} and {pred.shape}")
    height, width = target.shape
    tolerance = tolerance_fraction * float(np.hypot(height, width))
    ignored = None if ignore_index is None else target == ignore_index

    scores: list[float | None] = []
    for c in range(num_classes):
        true_mask = target == c
        pred_mask = pred == c
        if ignored is not None:
            pred_mask &= ~ignored
        in_truth, in_pred = bool(true_mask.any()), bool(pred_mask.any())
        if not in_truth and not in_pred:
            scores.append(None)
        elif in_truth != in_pred:
            scores.append(0.0)
        else:
            true_edge = _boundary(true_mask, ignored)
            pred_edge = _boundary(pred_mask, ignored)
            scores.append(_boundary_f1(true_edge, pred_edge, tolerance))
    return scores


class BoundaryF1:
    """Accumulates per-image boundary F1 scores and averages them over images, per class."""

    def __init__(
        self,
        class_names: Sequence[str],
        tolerance_fraction: float = 0.0075,
        ignore_index: int | None = None,
    ) -> None:
        self.class_names = list(class_names)
        self.tolerance_fraction = tolerance_fraction
        self.ignore_index = ignore_index
        self.scores: list[list[float]] = [[] for _ in self.class_names]

    def update(self, target: np.ndarray, pred: np.ndarray) -> list[float | None]:
        """Score one ``(H, W)`` image, remember its defined scores, and return its per-class scores."""
        image_scores = boundary_f1_per_image(
            target, pred, len(self.class_names), self.tolerance_fraction, self.ignore_index
        )
        for class_scores, score in zip(self.scores, image_scores):
            if score is not None:
                class_scores.append(score)
        return image_scores

    def compute(self) -> BoundaryScores:
        """Per class, the mean of its defined per-image scores; and the mean of those (``None`` where none is defined)."""
        per_class = {
            name: (float(np.mean(scores)) if scores else None) for name, scores in zip(self.class_names, self.scores)
        }
        return BoundaryScores(_mean_defined(list(per_class.values())), per_class)
