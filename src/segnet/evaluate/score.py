"""Score predicted class masks against truth masks: the numbers of ``segnet evaluate``, for any tool.

``segnet score TRUTH PREDICTED --out DIR`` pairs the masks of two folders by file stem (a predicted
``STEM_mask.png``, as ``segnet predict`` writes it, pairs with the truth ``STEM.png``; PNG or TIFF)
and writes to ``DIR``::

    metrics.json        an :class:`~segnet.evaluate.metrics.EvaluationMetrics` (its layout there): the
                        pixel metrics of one confusion matrix over all pixels of all images
                        (segnet.train.metrics.PixelMetrics), plus num_images, boundary_f1,
                        counts (per counted class: mean_absolute_error, pearson_r, mean_true,
                        mean_predicted), objects (per counted class: true and predicted objects,
                        found, correct, object recall, precision and F1; segnet.evaluate.detection),
                        presence (per counted class: image-level sensitivity, specificity and the
                        images missed or falsely said to hold it) and evaluation (what was scored
                        and how; ``segnet evaluate`` adds the checkpoint and the inference options)
    per_image.csv       one row per image: pixel accuracy, mean IoU, per-class IoU, object counts,
                        objects found and predicted objects correct
    predictions/STEM.png  the predicted class index of every pixel (one-channel PNG)

``segnet evaluate`` is "predict, then :func:`score_pairs`", so the two give the same numbers from the
same masks, and ``segnet report`` draws either folder. TRUTH may be a dataset folder (``images/`` and
``masks/``): its masks are the truth and the report shows its images too.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from segnet.core.errors import DataError, SegnetError
from segnet.core.outputs import open_replacing, write_atomically
from segnet.core.runfiles import PICTURES
from segnet.data.classes import DARKFIELD_ROLES, DEFAULT_CLASSES, MIN_AREA, ClassRoles
from segnet.data.pairs import find_pairs, image_files, read_mask
from segnet.evaluate.counting import count_agreement
from segnet.evaluate.detection import MATCH_SHARE, DetectionScores, ObjectTally
from segnet.evaluate.metrics import METRICS_FILE, EvaluationMetrics
from segnet.plan.config import TrainConfig
from segnet.train.metrics import BoundaryF1, ConfusionMatrix, PixelMetrics

PER_IMAGE_FILE = "per_image.csv"
PER_IMAGE_COLUMNS = ("image", "image_path", "mask_path", "pixel_accuracy", "mean_iou")
"""The first columns of per_image.csv; per-class and count columns follow."""
STEM_COLUMN, IMAGE_PATH_COLUMN, MASK_PATH_COLUMN, PIXEL_ACCURACY_COLUMN, MEAN_IOU_COLUMN = PER_IMAGE_COLUMNS
IOU_PREFIX = "iou"
COUNT_PREFIXES = ("true_count", "pred_count", "found", "correct")
"""per_image.csv's columns per counted class C: ``true_count_C``, ``pred_count_C``, ``found_C``, ``correct_C``."""
TRUE_COUNT_PREFIX, PRED_COUNT_PREFIX, FOUND_PREFIX, CORRECT_PREFIX = COUNT_PREFIXES


def class_column(prefix: str, class_name: str) -> str:
    """The per_image.csv column of ``prefix`` (:data:`IOU_PREFIX`, :data:`COUNT_PREFIXES`) for a class."""
    return f"{prefix}_{class_name}"


PREDICTIONS_FOLDER = "predictions"
PREDICTION_SUFFIX = f"_{PICTURES[0]}"
"""The suffix of ``segnet predict``'s class masks (``STEM_mask.png``), dropped when pairing by stem."""
MASK_VALUES = 256
"""Reading a mask as this many classes lets every 8-bit value through the reader's class check
(an ignore index is checked by :func:`check_truth_values` instead)."""


@dataclass(frozen=True)
class ScoredPair:
    """One image to score: its truth mask, the predicted class mask and, where known, the image."""

    stem: str
    truth: Path
    prediction: Path
    image: Path | None = None


@dataclass(frozen=True)
class ScoreSettings:
    """How masks are read and scored.

    Attributes:
        class_names: one name per class index, in index order.
        roles: which class is the background and how the others are counted (``segnet.plan.config``).
        ignore_index: a truth mask value whose pixels are left out of every score (unlabelled pixels).
        min_area: objects smaller than this many pixels are not counted.
        palette: class index -> RGB colour of colour truth masks (a config's ``mask_palette``).
    """

    class_names: tuple[str, ...] = DEFAULT_CLASSES
    roles: ClassRoles = DARKFIELD_ROLES
    ignore_index: int | None = None
    min_area: int = MIN_AREA
    palette: Mapping[int, Sequence[int]] | None = field(default=None, hash=False)

    def __post_init__(self) -> None:
        if self.ignore_index is not None and not 0 <= self.ignore_index <= 255:
            raise SegnetError(f"ignore_index must be a mask value in 0..255, got {self.ignore_index}")
        if self.roles.num_classes != len(self.class_names):
            raise SegnetError(
                f"the class roles are for {self.roles.num_classes} classes, not the {len(self.class_names)} of {list(self.class_names)}"
            )

    @classmethod
    def from_config(
        cls, config: TrainConfig, ignore_index: int | None = None, min_area: int = MIN_AREA
    ) -> ScoreSettings:
        """The classes, their roles and the colour palette of a training config."""
        return cls(tuple(config.classes), config.roles(), ignore_index, min_area, config.palette_by_index())

    def provenance(self) -> dict:
        """The ``evaluation`` entries every score records: how masks were read and objects matched."""
        return {
            "ignore_index": self.ignore_index,
            "mask_palette": dict(self.palette) if self.palette else None,
            "min_area": self.min_area,
            "object_match_share": MATCH_SHARE,
            "evaluated_at": datetime.now(UTC).astimezone().isoformat(timespec="seconds"),
        }


@dataclass(frozen=True)
class MaskPairing:
    """The masks of a truth and a prediction folder matched by stem, and those left without a partner."""

    pairs: list[ScoredPair]
    unpaired_truth: list[Path]
    unpaired_predictions: list[Path]

    def unpaired_lines(self) -> list[str]:
        """One line per side that has masks without a partner (nothing when every mask is paired)."""
        lines = []
        for files, what in (
            (self.unpaired_truth, "truth masks without a prediction"),
            (self.unpaired_predictions, "predictions without a truth mask"),
        ):
            if files:
                lines.append(
                    f"{len(files)} {what}, not scored: {', '.join(path.name for path in files[:10])}{' ...' if len(files) > 10 else ''}"
                )
        return lines


def _masks_by_stem(folder: Path, drop_suffix: str | None) -> dict[str, Path]:
    """The mask files of ``folder`` by stem (``drop_suffix`` removed); two files of one stem are refused."""
    if not folder.is_dir():
        raise DataError(folder, "folder of masks not found")
    masks: dict[str, Path] = {}
    for path in image_files(folder):
        stem = path.stem.removesuffix(drop_suffix) if drop_suffix else path.stem
        if stem in masks:
            raise DataError(path, f"two masks share the stem '{stem}' ({masks[stem].name} and {path.name})")
        masks[stem] = path
    return masks


def pair_masks(truth: str | Path, predictions: str | Path) -> MaskPairing:
    """Pair truth and predicted masks by file stem; a predicted ``STEM_mask`` pairs with ``STEM``.

    ``truth`` is a folder of masks, or a dataset folder (``images/`` and ``masks/``), whose images
    are then recorded for the report.

    Raises:
        DataError: a folder is missing, two masks of one folder share a stem, or no mask is paired.
    """
    truth, predictions = Path(truth), Path(predictions)
    images: dict[str, Path] = {}
    if (truth / "images").is_dir():  # a dataset folder: its pairs, checked as training checks them
        dataset = find_pairs(truth)
        images, truth_masks = {pair.stem: pair.image for pair in dataset}, {pair.stem: pair.mask for pair in dataset}
    else:
        truth_masks = _masks_by_stem(truth, None)
    predicted = _masks_by_stem(predictions, None)
    # STEM_mask pairs with STEM unless the truth itself holds a STEM_mask (then names are kept whole).
    if not set(predicted) & set(truth_masks):
        predicted = _masks_by_stem(predictions, PREDICTION_SUFFIX)
    paired = sorted(set(truth_masks) & set(predicted))
    if not paired:
        raise DataError(
            predictions,
            f"no predicted mask has the stem of a truth mask in {truth} (names such as STEM.png or STEM{PREDICTION_SUFFIX}.png)",
        )
    return MaskPairing(
        [ScoredPair(stem, truth_masks[stem], predicted[stem], images.get(stem)) for stem in paired],
        [path for stem, path in sorted(truth_masks.items()) if stem not in predicted],
        [path for stem, path in sorted(predicted.items()) if stem not in truth_masks],
    )


def read_truth_mask(
    path: Path, num_classes: int, ignore_index: int | None = None, palette: Mapping[int, Sequence[int]] | None = None
) -> np.ndarray:
    """Read a truth mask, whose values must be class ids or ``ignore_index``."""
    if ignore_index is None:
        return read_mask(path, num_classes, palette)
    return check_truth_values(read_mask(path, MASK_VALUES, palette), path, num_classes, ignore_index)


def check_truth_values(mask: np.ndarray, path: Path, num_classes: int, ignore_index: int) -> np.ndarray:
    """``mask`` (read as :data:`MASK_VALUES` classes), refused unless each value is a class id or ``ignore_index``."""
    values = np.unique(mask)
    bad = values[(values >= num_classes) & (values != ignore_index)]
    if bad.size:
        raise DataError(
            path,
            f"mask values {bad.tolist()[:10]} are neither classes (0..{num_classes - 1}) nor the ignore index {ignore_index}",
        )
    return mask


def read_scored_pair(pair: ScoredPair, settings: ScoreSettings) -> tuple[np.ndarray, np.ndarray]:
    """The truth and the predicted class masks of ``pair``; every problem is one line naming both files."""
    num_classes = len(settings.class_names)
    truth = read_truth_mask(pair.truth, num_classes, settings.ignore_index, settings.palette)
    try:
        prediction = read_mask(pair.prediction, num_classes)
    except DataError as error:
        raise SegnetError(
            f"{error} (the prediction of {pair.truth}; classes: {', '.join(settings.class_names)})"
        ) from error
    if prediction.shape != truth.shape:
        raise SegnetError(
            f"{pair.prediction}: prediction size {prediction.shape[1]}x{prediction.shape[0]} differs from "
            f"its truth mask {pair.truth} ({truth.shape[1]}x{truth.shape[0]})"
        )
    return truth, prediction


class _Scores:
    """Every score, accumulated image by image: pixels, boundaries, counts and objects."""

    def __init__(self, settings: ScoreSettings) -> None:
        self.class_names = list(settings.class_names)
        self.ignore_index = settings.ignore_index
        self.counted = settings.roles.counted
        self.confusion = ConfusionMatrix(len(self.class_names), settings.ignore_index)
        self.boundary = BoundaryF1(self.class_names, ignore_index=settings.ignore_index)
        self.detection = DetectionScores(settings.roles, min_area=settings.min_area, ignore_index=settings.ignore_index)
        self.true_counts: dict[int, list[int]] = {c: [] for c in self.counted}
        self.pred_counts: dict[int, list[int]] = {c: [] for c in self.counted}
        self.rows: list[dict[str, object]] = []

    def add(self, pair: ScoredPair, truth: np.ndarray, pred: np.ndarray) -> None:
        """Score one image's prediction against its mask, and keep its ``per_image.csv`` row."""
        image_confusion = ConfusionMatrix(len(self.class_names), self.ignore_index)
        image_confusion.update(torch.from_numpy(truth), torch.from_numpy(pred))
        self.confusion.mat += image_confusion.mat
        self.boundary.update(truth, pred)
        image_objects = self.detection.add(pair.stem, truth, pred)
        for c, tally in image_objects.items():
            self.true_counts[c].append(tally.true_objects)
            self.pred_counts[c].append(tally.predicted_objects)
        image_metrics = PixelMetrics.from_confusion(image_confusion.mat, self.class_names)
        self.rows.append(_per_image_row(pair, image_metrics, image_objects, self.class_names))

    def metrics(self, evaluation: Mapping[str, object]) -> EvaluationMetrics:
        """``metrics.json``, with ``evaluation`` as its record of what was scored and how."""
        names = self.class_names
        detection = self.detection.sections(names)
        return EvaluationMetrics.from_confusion(
            self.confusion.mat,
            names,
            num_images=len(self.rows),
            boundary_f1=self.boundary.compute(),
            counts={names[c]: count_agreement(self.true_counts[c], self.pred_counts[c]) for c in self.counted},
            objects=detection.objects,
            presence=detection.presence,
            evaluation=evaluation,
        )


def score_pairs(
    pairs: Sequence[ScoredPair],
    settings: ScoreSettings,
    out: str | Path,
    evaluation: Mapping[str, object],
    *,
    progress: bool = True,
) -> EvaluationMetrics:
    """Score every pair, write ``metrics.json``, ``per_image.csv`` and ``predictions/`` into ``out``.

    Args:
        pairs: the masks to score, in the order of ``per_image.csv``.
        settings: classes, roles, ignore index, object size floor and truth palette.
        out: the output folder (created).
        evaluation: what was scored, recorded in ``metrics.json``'s ``evaluation`` with the settings.
        progress: show a progress bar over the images.

    Returns:
        The metrics written to ``metrics.json``.
    """
    out_dir = Path(out)
    prediction_dir = make_folder(out_dir / PREDICTIONS_FOLDER)
    scores = _Scores(settings)
    for pair in tqdm(pairs, desc="scoring", unit="image", disable=not progress):
        truth, prediction = read_scored_pair(pair, settings)
        kept = prediction_dir / f"{pair.stem}.png"
        if pair.prediction.resolve() != kept.resolve():  # segnet evaluate predicted into it already
            save_prediction(prediction, kept)
        scores.add(pair, truth, prediction)
    metrics = scores.metrics({**evaluation, **settings.provenance()})
    metrics.write(out_dir / METRICS_FILE)
    _write_per_image(out_dir / PER_IMAGE_FILE, scores.rows, scores.class_names, scores.counted)
    return metrics


def score_masks(
    truth: str | Path,
    predictions: str | Path,
    out: str | Path,
    settings: ScoreSettings = ScoreSettings(),
    *,
    log: Callable[[str], None] | None = None,
    progress: bool = True,
) -> EvaluationMetrics:
    """``segnet score``: pair two folders of masks by stem (:func:`pair_masks`) and :func:`score_pairs` them.

    Masks without a partner are left out, said through ``log`` and listed in the ``evaluation``
    section (``unpaired_truth``, ``unpaired_predictions``).

    Returns:
        The metrics written to ``OUT/metrics.json``.
    """
    pairing = pair_masks(truth, predictions)
    for line in pairing.unpaired_lines():
        if log is not None:
            log(line)
    evaluation = {
        "truth": str(truth),
        "predictions": str(predictions),
        "unpaired_truth": [str(path) for path in pairing.unpaired_truth],
        "unpaired_predictions": [str(path) for path in pairing.unpaired_predictions],
    }
    return score_pairs(pairing.pairs, settings, out, evaluation, progress=progress)


def make_folder(folder: Path) -> Path:
    """Create ``folder`` (and its parents); a failure is one line naming it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataError(folder, f"cannot create the output folder ({error.strerror or error})") from error
    return folder


def save_prediction(pred: np.ndarray, path: Path) -> None:
    """Write a class mask as a one-channel PNG, by replacing (never through a link)."""
    write_atomically(path, lambda temporary: Image.fromarray(pred).save(temporary, format="PNG"), "prediction")


def _per_image_row(
    pair: ScoredPair, image_metrics: PixelMetrics, objects: dict[int, ObjectTally], class_names: Sequence[str]
) -> dict[str, object]:
    row: dict[str, object] = dict(
        zip(
            PER_IMAGE_COLUMNS,
            (
                pair.stem,
                "" if pair.image is None else str(pair.image),
                str(pair.truth),
                image_metrics.global_accuracy,
                image_metrics.mean_iou,
            ),
        )
    )
    for name, scores in image_metrics.per_class.items():
        row[class_column(IOU_PREFIX, name)] = scores.iou
    for c, tally in objects.items():
        counts = (tally.true_objects, tally.predicted_objects, tally.found, tally.correct)
        row.update({class_column(prefix, class_names[c]): count for prefix, count in zip(COUNT_PREFIXES, counts)})
    return row


def _write_per_image(
    path: Path, rows: list[dict[str, object]], class_names: Sequence[str], counted: Sequence[int]
) -> None:
    columns = list(PER_IMAGE_COLUMNS)
    columns += [class_column(IOU_PREFIX, name) for name in class_names]
    for c in counted:
        columns += [class_column(prefix, class_names[c]) for prefix in COUNT_PREFIXES]
    with open_replacing(path) as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            # An undefined score (class absent from truth and prediction) is an empty cell.
            writer.writerow(
                {
                    key: "" if value is None else (f"{value:.6f}" if isinstance(value, float) else value)
                    for key, value in row.items()
                }
            )
