"""The tables of an evaluation's scores: rows shared by the plain-text tables and the HTML report.

Each ``*_rows`` function turns ``metrics.json`` (:class:`~segnet.evaluate.metrics.EvaluationMetrics`) into rows of strings in the columns
of its ``*_HEADER``; :func:`format_metrics_table` lays them out as text for the terminal and
``segnet.report`` as HTML. Cross-validation summaries use :func:`text_table` and :func:`format_score` too.
"""

from __future__ import annotations

from collections.abc import Sequence

from segnet.evaluate.detection import MATCH_SHARE
from segnet.evaluate.metrics import EvaluationMetrics
from segnet.train.metrics import SCORE_LABELS

PER_CLASS_HEADER = ("class", "IoU", "accuracy", "precision", "dice", "BF1", "support (px)")
COUNT_HEADER = ("class", "count MAE", "count r", "mean true", "mean predicted")
OBJECT_HEADER = ("class", "true objects", "predicted", "found", "correct", "recall", "precision", "F1")
PRESENCE_HEADER = ("class", "images with", "sensitivity", "images without", "specificity")


def format_score(value: float | None, digits: int = 3) -> str:
    """A score with ``digits`` decimals; an undefined score (``None``) is a dash."""
    return "-" if value is None else f"{value:.{digits}f}"


def per_class_rows(metrics: EvaluationMetrics) -> list[list[str]]:
    """One row per class, in the columns of :data:`PER_CLASS_HEADER`."""
    return [
        [
            name,
            *map(format_score, (scores.iou, scores.accuracy, scores.precision, scores.dice)),
            format_score(metrics.boundary_f1.per_class.get(name)),
            f"{scores.support:,}",
        ]
        for name, scores in metrics.per_class.items()
    ]


def summary_rows(metrics: EvaluationMetrics) -> list[list[str]]:
    """The whole-dataset scores as (label, value) rows."""
    return [
        *([SCORE_LABELS[key], format_score(value)] for key, value in metrics.whole_image_scores().items()),
        ["mean boundary F1", format_score(metrics.boundary_f1.mean)],
        ["images", str(metrics.num_images)],
    ]


def count_rows(metrics: EvaluationMetrics) -> list[list[str]]:
    """One row per counted class, in the columns of :data:`COUNT_HEADER`."""
    return [
        [
            name,
            format_score(agreement.mean_absolute_error, 2),
            format_score(agreement.pearson_r),
            format_score(agreement.mean_true, 1),
            format_score(agreement.mean_predicted, 1),
        ]
        for name, agreement in metrics.counts.items()
    ]


def object_rows(metrics: EvaluationMetrics) -> list[list[str]]:
    """One row per counted class, in the columns of :data:`OBJECT_HEADER` (segnet.evaluate.detection)."""
    return [
        [
            name,
            *map(str, (tally.true_objects, tally.predicted_objects, tally.found, tally.correct)),
            *map(format_score, (tally.recall, tally.precision, tally.f1)),
        ]
        for name, tally in (metrics.objects or {}).items()
    ]


def presence_rows(metrics: EvaluationMetrics) -> list[list[str]]:
    """One row per counted class, in the columns of :data:`PRESENCE_HEADER`."""
    return [
        [
            name,
            str(presence.images_with),
            format_score(presence.sensitivity),
            str(presence.images_without),
            format_score(presence.specificity),
        ]
        for name, presence in (metrics.presence or {}).items()
    ]


def presence_errors(metrics: EvaluationMetrics) -> list[str]:
    """Per counted class, the images its presence is wrong on, by name (one line per class)."""
    return [
        f"{name}: missed in {', '.join(presence.missed_images) or 'none'}; "
        f"said present in {', '.join(presence.false_alarm_images) or 'none'}"
        for name, presence in (metrics.presence or {}).items()
    ]


def object_rule(metrics: EvaluationMetrics) -> str:
    """The matching rule of the object table in one sentence, with the share it was scored at."""
    share = metrics.evaluation.get("object_match_share", MATCH_SHARE)
    return (
        f"a true object is found when predicted objects of its class cover at least {share:.0%} of it, or at least "
        f"{share:.0%} of one of them lies inside it; a predicted object is correct when at least {share:.0%} of it "
        "lies on true objects of its class"
    )


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table with a rule under ``header``, columns padded to their widest cell."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    # First column (names) left-aligned, numbers right-aligned.
    lines = [
        "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths)))
        for line in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def format_metrics_table(metrics: EvaluationMetrics) -> str:
    """The metrics of ``metrics.json`` as readable plain-text tables (per class, summary, counts,
    objects, image-level presence)."""
    parts = [text_table(PER_CLASS_HEADER, per_class_rows(metrics))]
    summary = summary_rows(metrics)
    label_width = max(len(label) for label, _ in summary)
    parts.append("\n".join(f"{label.ljust(label_width)}  {value}" for label, value in summary))
    counts = count_rows(metrics)
    if counts:
        min_area = metrics.evaluation.get("min_area")
        title = "object counts per image" + (
            f" (objects of at least {min_area} px; predicted masks cleaned first)" if min_area is not None else ""
        )
        parts.append(title + "\n" + text_table(COUNT_HEADER, counts))
    objects = object_rows(metrics)
    if objects:
        parts.append(f"objects ({object_rule(metrics)})\n" + text_table(OBJECT_HEADER, objects))
    presence = presence_rows(metrics)
    if presence:
        title = "image-level presence (an image holds a class when it has one of its objects)"
        parts.append("\n".join([title, text_table(PRESENCE_HEADER, presence), *presence_errors(metrics)]))
    return "\n\n".join(parts) + "\n"
