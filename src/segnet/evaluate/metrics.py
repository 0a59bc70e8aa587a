"""What ``metrics.json`` holds, as one typed object: :class:`EvaluationMetrics`, written by
:meth:`EvaluationMetrics.write` and read back, checked, by :meth:`EvaluationMetrics.read`.

``segnet evaluate`` and ``segnet score`` write it (:func:`segnet.evaluate.score.score_pairs`); the
report, cross-validation and the tables read its attributes, never its keys. The layout::

    classes, global_accuracy, class_average_accuracy, mean_iou, frequency_weighted_iou,
    per_class, confusion_matrix     the pixel scores of one confusion matrix over all pixels of
                                    all images (segnet.train.metrics.PixelMetrics)
    num_images                      the images scored
    boundary_f1                     mean and per_class boundary F1 (segnet.train.metrics.BoundaryScores)
    counts                          per counted class: mean_absolute_error, pearson_r, mean_true,
                                    mean_predicted (segnet.evaluate.counting.CountAgreement)
    objects, presence               per counted class: the object and the image-level presence
                                    tallies with their scores (segnet.evaluate.detection); absent
                                    from evaluations written before they were scored
    evaluation                      what was scored and how (checkpoint, data, inference options,
                                    ignore index, ...), as the scorer recorded it
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segnet.core.outputs import write_text_atomically
from segnet.core.readback import read_json_as
from segnet.evaluate.counting import CountAgreement
from segnet.evaluate.detection import Detection, ObjectTally, PresenceTally
from segnet.train.metrics import BoundaryScores, PixelMetrics

METRICS_FILE = "metrics.json"


@dataclass(frozen=True)
class EvaluationMetrics(PixelMetrics):
    """An evaluation's scores: the pixel scores (:class:`~segnet.train.metrics.PixelMetrics`) and
    what ``metrics.json`` adds to them (module docstring).

    Attributes:
        num_images: the images scored.
        boundary_f1: boundary F1 per class, averaged over images, and their mean.
        counts: counted class name -> how its per-image counts agree.
        objects: counted class name -> its object tally; ``None`` in an evaluation from before.
        presence: counted class name -> its image-level presence tally; ``None`` likewise.
        evaluation: what was scored and how (the provenance the scorer recorded).
    """

    num_images: int
    boundary_f1: BoundaryScores
    counts: Mapping[str, CountAgreement]
    objects: Mapping[str, ObjectTally] | None = None
    presence: Mapping[str, PresenceTally] | None = None
    evaluation: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        if list(self.boundary_f1.per_class) != list(self.classes):
            raise ValueError(
                f"boundary_f1 names {list(self.boundary_f1.per_class)} are not the classes {list(self.classes)}"
            )
        sections = {"counts": self.counts, "objects": self.objects or {}, "presence": self.presence or {}}
        for name, section in sections.items():
            if unknown := [class_name for class_name in section if class_name not in self.classes]:
                raise ValueError(f"{name} names {unknown}, which are not among the classes {list(self.classes)}")
        if (self.objects is None) != (self.presence is None):
            raise ValueError("objects and presence come together: one of them is missing")

    @property
    def detection(self) -> Detection | None:
        """The object and presence tallies together; ``None`` in an evaluation from before they were scored."""
        if self.objects is None or self.presence is None:
            return None
        return Detection(self.objects, self.presence)

    def to_dict(self) -> dict[str, Any]:
        """The metrics, JSON-ready, in the layout of ``metrics.json`` (module docstring)."""
        entry = super().to_dict()
        entry.update(
            num_images=self.num_images,
            boundary_f1=self.boundary_f1.to_dict(),
            counts={name: agreement.to_dict() for name, agreement in self.counts.items()},
        )
        if self.detection is not None:
            entry.update(self.detection.to_dict())
        entry.update(evaluation=dict(self.evaluation))
        return entry

    def write(self, path: str | Path) -> None:
        """Write ``metrics.json`` (atomically)."""
        write_text_atomically(Path(path), json.dumps(self.to_dict(), indent=2), "metrics")

    @classmethod
    def read(cls, path: str | Path) -> EvaluationMetrics:
        """A ``metrics.json``, checked.

        Raises:
            DataError: damaged or not of this layout, in one line naming the file and the key.
        """
        return read_json_as(path, "metrics file", cls)
