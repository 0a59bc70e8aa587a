"""Object detection and image-level presence: was each object found, and does the image hold any?

Objects
    The objects are the ones ``segnet.evaluate.counting`` counts: on the truth, the drawn mask as it is; on
    the prediction, the mask cleaned by :func:`segnet.data.cleaning.clean_prediction` (red-cell holes
    filled, rim fragments opened away, spirochete specks dropped); both labelled by
    :func:`segnet.evaluate.counting.label_classes` (8-connected components of at least the counting area
    threshold, touching red cells split at their necks). Specks below the counting threshold are
    therefore ignored on both sides, and the numbers of true and predicted objects are the counts.
    Where the truth is unlabelled (an ignore index) the prediction is blanked first, so no object
    can be predicted where the truth has no chance to hold one.

Matching rule (share ``s`` = :data:`MATCH_SHARE` = 0.5), per class and image
    * A true object T is **found** when the predicted objects of its class together cover at least
      ``s`` of its pixels, or when at least ``s`` of one predicted object's pixels lie inside T.
    * A predicted object P is **correct** when at least ``s`` of its pixels lie on true objects of
      its class (all of them together).
    * object recall = found / true objects, object precision = correct / predicted objects,
      F1 = their harmonic mean.

    What this does with the cases that matter for thin filaments and touching cells:

    * a filament predicted in two pieces: the pieces together cover it (found, once) and each lies
      on it (both correct); the count (2 against 1) shows the split, the detection scores do not
      punish it a second time;
    * two objects joined into one predicted blob (a bridge between two spirochetes): the blob
      covers both (both found) and lies on them (correct);
    * a false speck above the threshold: not correct, so precision drops; an image with neither
      true nor predicted objects adds nothing;
    * a prediction thinner than the drawn brush stroke, or a piece of the object: found through the
      second clause. That clause is one-sided on purpose: a blob that swallows true objects and much
      background covers them (found) but is not correct; if "holds most of a true object" made a
      prediction correct, one image-wide blob would score precision 1;
    * a one-pixel shift along both edges of an 11-pixel filament leaves 9/11 of it covered and
      11/13 of the prediction on it, far above ``s``.

    One-to-one matching at IoU >= 0.5 (instance-segmentation benchmarks) would call a filament
    missed whenever its prediction is thinner than drawn or broken, which on the real images'
    wide strokes (pixel IoU 0.44) says more about the brush than about detection.

Reduction
    :class:`ObjectTally` holds the four counts; tallies add (over images, folds, seeds) and the
    scores come from the sums, so every object counts once wherever it is. A ratio with nothing to
    divide by is ``None``; F1 is ``None`` when both recall and precision are, and 0 when only one
    is defined (objects on one side only: nothing found, or nothing correct). A :class:`Detection`
    holds the tallies of the counted classes by name (``objects`` and ``presence`` in
    ``metrics.json``); :func:`pooled_detection` sums several (folds, seeds).

Image-level presence
    An image holds class C when its truth has a counted object of C; the model says it does when
    the cleaned prediction has one. Sensitivity = images said to hold C / images holding C;
    specificity = images said not to hold C / images without C. :class:`PresenceTally` keeps the
    names of the images it gets wrong (missed, and false alarms).
"""

from __future__ import annotations

import dataclasses
import functools
import operator
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from segnet.data.classes import DARKFIELD_ROLES, MIN_AREA, ClassRoles
from segnet.data.cleaning import clean_prediction
from segnet.evaluate.counting import label_classes

MATCH_SHARE = 0.5
"""The share of an object's pixels that decides a match (module docstring)."""


def _ratio(numerator: int, denominator: int) -> float | None:
    return None if denominator == 0 else numerator / denominator


def _field_sum(first: Any, second: Any) -> Any:
    """Two tallies of one dataclass type added field by field (counts add, name tuples join)."""
    return type(first)(*(a + b for a, b in zip(dataclasses.astuple(first), dataclasses.astuple(second))))


@dataclass(frozen=True)
class ObjectTally:
    """Object counts of one class over some images; ``+`` sums them (module docstring)."""

    true_objects: int = 0
    found: int = 0
    predicted_objects: int = 0
    correct: int = 0

    def __add__(self, other: ObjectTally) -> ObjectTally:
        return _field_sum(self, other)

    @property
    def recall(self) -> float | None:
        """Found true objects / true objects; ``None`` without true objects."""
        return _ratio(self.found, self.true_objects)

    @property
    def precision(self) -> float | None:
        """Correct predicted objects / predicted objects; ``None`` without predicted objects."""
        return _ratio(self.correct, self.predicted_objects)

    @property
    def f1(self) -> float | None:
        """Harmonic mean of recall and precision; an undefined one counts as 0 unless both are."""
        recall, precision = self.recall, self.precision
        if recall is None and precision is None:
            return None
        recall, precision = recall or 0.0, precision or 0.0
        return 0.0 if recall + precision == 0 else 2 * recall * precision / (recall + precision)

    def to_dict(self) -> dict[str, Any]:
        """The counts and the scores, JSON-ready."""
        return {**dataclasses.asdict(self), "recall": self.recall, "precision": self.precision, "f1": self.f1}


@dataclass(frozen=True)
class PresenceTally:
    """Image-level presence of one class over some images; ``+`` sums them (module docstring)."""

    images_with: int = 0
    detected: int = 0
    images_without: int = 0
    ruled_out: int = 0
    missed_images: tuple[str, ...] = ()
    false_alarm_images: tuple[str, ...] = ()

    @classmethod
    def of_image(cls, image: str, objects: ObjectTally) -> PresenceTally:
        """The presence tally of one image named ``image`` from its object tally."""
        holds, said = objects.true_objects > 0, objects.predicted_objects > 0
        return cls(
            images_with=int(holds),
            detected=int(holds and said),
            images_without=int(not holds),
            ruled_out=int(not holds and not said),
            missed_images=(image,) if holds and not said else (),
            false_alarm_images=(image,) if said and not holds else (),
        )

    def __add__(self, other: PresenceTally) -> PresenceTally:
        return _field_sum(self, other)

    @property
    def sensitivity(self) -> float | None:
        """Images said to hold the class / images holding it; ``None`` if no image holds it."""
        return _ratio(self.detected, self.images_with)

    @property
    def specificity(self) -> float | None:
        """Images said not to hold the class / images without it; ``None`` if every image holds it."""
        return _ratio(self.ruled_out, self.images_without)

    def to_dict(self) -> dict[str, Any]:
        """The counts, the scores and the wrong images' names, JSON-ready."""
        entry = dataclasses.asdict(self)
        entry.update(
            missed_images=list(self.missed_images),
            false_alarm_images=list(self.false_alarm_images),
            sensitivity=self.sensitivity,
            specificity=self.specificity,
        )
        return entry


def _overlaps(true_labels: np.ndarray, pred_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``overlap[t, p]`` (pixels shared by true object t + 1 and predicted object p + 1) and both objects' areas."""
    if true_labels.shape != pred_labels.shape:
        raise ValueError(f"label images differ in shape: {true_labels.shape} and {pred_labels.shape}")
    num_true, num_pred = int(true_labels.max(initial=0)), int(pred_labels.max(initial=0))
    true_area = np.bincount(true_labels.ravel(), minlength=num_true + 1)[1:]
    pred_area = np.bincount(pred_labels.ravel(), minlength=num_pred + 1)[1:]
    both = (true_labels > 0) & (pred_labels > 0)
    pairs = (true_labels[both].astype(np.int64) - 1) * num_pred + (pred_labels[both] - 1)
    overlap = np.bincount(pairs, minlength=num_true * num_pred).reshape(num_true, num_pred)
    return overlap, true_area, pred_area


def _found(overlap: np.ndarray, true_area: np.ndarray, pred_area: np.ndarray, share: float) -> np.ndarray:
    covered = overlap.sum(axis=1) >= share * true_area
    # An empty label (an id whose object lost its pixels) holds nothing of any object.
    holds_most_of_a_prediction = ((overlap >= share * pred_area[None, :]) & (pred_area[None, :] > 0)).any(axis=1)
    return covered | holds_most_of_a_prediction


def found_objects(true_labels: np.ndarray, pred_labels: np.ndarray, share: float = MATCH_SHARE) -> np.ndarray:
    """Whether each true object (labels 1..n, index 0..n-1) is found, by the module's matching rule."""
    return _found(*_overlaps(true_labels, pred_labels), share)


def match_objects(true_labels: np.ndarray, pred_labels: np.ndarray, share: float = MATCH_SHARE) -> ObjectTally:
    """Match the objects of one class: two label images (0 outside, objects 1..n) of one shape."""
    overlap, true_area, pred_area = _overlaps(true_labels, pred_labels)
    correct = overlap.sum(axis=0) >= share * pred_area
    return ObjectTally(
        true_objects=len(true_area),
        found=int(np.count_nonzero(_found(overlap, true_area, pred_area, share))),
        predicted_objects=len(pred_area),
        correct=int(np.count_nonzero(correct)),
    )


def score_objects(
    truth: np.ndarray,
    pred: np.ndarray,
    class_ids: Collection[int],
    *,
    roles: ClassRoles = DARKFIELD_ROLES,
    min_area: int = MIN_AREA,
    ignore_index: int | None = None,
) -> dict[int, ObjectTally]:
    """Object tallies of one image: ``truth`` as drawn against the cleaned raw prediction ``pred``.

    Both are ``(H, W)`` class masks; objects are counted as ``segnet.evaluate.counting`` counts them, with
    ``min_area`` its area floor and ``roles`` saying which classes are cleaned and split. The
    tallies' object numbers are the image's counts.
    """
    if ignore_index is not None:
        pred = np.where(truth == ignore_index, ignore_index, pred).astype(pred.dtype)
    true_labels = label_classes(truth, list(class_ids), min_area=min_area, split_touching=roles.solid)
    pred_labels = label_classes(
        clean_prediction(pred, roles), list(class_ids), min_area=min_area, split_touching=roles.solid
    )
    return {c: match_objects(true_labels[c][0], pred_labels[c][0]) for c in class_ids}


class DetectionScores:
    """Object and presence tallies of the counted classes (all but the background of ``roles``), accumulated image by image."""

    def __init__(
        self, roles: ClassRoles = DARKFIELD_ROLES, *, min_area: int = MIN_AREA, ignore_index: int | None = None
    ) -> None:
        self.objects = {c: ObjectTally() for c in roles.counted}
        self.presence = {c: PresenceTally() for c in roles.counted}
        self.roles = roles
        self.min_area = min_area
        self.ignore_index = ignore_index

    def add(self, image: str, truth: np.ndarray, pred: np.ndarray) -> dict[int, ObjectTally]:
        """Score the image named ``image`` (:func:`score_objects`), add it, and return its tallies."""
        tallies = score_objects(
            truth, pred, list(self.objects), roles=self.roles, min_area=self.min_area, ignore_index=self.ignore_index
        )
        for c, tally in tallies.items():
            self.objects[c] += tally
            self.presence[c] += PresenceTally.of_image(image, tally)
        return tallies

    def sections(self, class_names: Sequence[str]) -> Detection:
        """The ``objects`` and ``presence`` sections of ``metrics.json``: the tallies by class name."""
        return Detection(
            {class_names[c]: tally for c, tally in self.objects.items()},
            {class_names[c]: tally for c, tally in self.presence.items()},
        )


@dataclass(frozen=True)
class Detection:
    """The object and the image-level presence tallies of the counted classes, by class name: the
    ``objects`` and ``presence`` sections of ``metrics.json``. ``+`` sums two class by class (folds, seeds)."""

    objects: Mapping[str, ObjectTally]
    presence: Mapping[str, PresenceTally]

    def __add__(self, other: Detection) -> Detection:
        return Detection(
            {name: tally + other.objects[name] for name, tally in self.objects.items()},
            {name: tally + other.presence[name] for name, tally in self.presence.items()},
        )

    def to_dict(self) -> dict[str, Any]:
        """Both sections, JSON-ready (each tally with its scores)."""
        return {
            field.name: {name: tally.to_dict() for name, tally in getattr(self, field.name).items()}
            for field in dataclasses.fields(self)
        }


def pooled_detection(per_evaluation: Sequence[Detection | None]) -> Detection | None:
    """The tallies of several evaluations (folds, seeds) summed into one, so every object counts once;
    ``None`` if any evaluation has none (a training-time validation, a metrics.json from before them)."""
    if not per_evaluation or any(detection is None for detection in per_evaluation):
        return None
    return functools.reduce(operator.add, per_evaluation)
