"""Score a trained model on labelled images: pixel metrics, boundary F1 and object counts.

``evaluate_run`` predicts every image of a dataset (or of the run's validation split) at its own
full size, never resized, and writes to the evaluation folder (default ``RUN/evaluation/``)::

    metrics.json        the pixel metrics of one confusion matrix over all pixels of all images
                        (segnet.metrics.metrics_from_confusion), plus num_images, boundary_f1,
                        counts (per counted class: mean_absolute_error, pearson_r, mean_true,
                        mean_predicted) and evaluation (what was evaluated, how and when)
                        objects (per counted class: true and predicted objects, found, correct,
                        object recall, precision and F1; segnet.detection) and presence (per
                        counted class: image-level sensitivity, specificity and the images missed
                        or falsely said to hold it)
    per_image.csv       one row per image: pixel accuracy, mean IoU, per-class IoU, object counts,
                        objects found and predicted objects correct
    predictions/STEM.png  the predicted class index of every pixel (one-channel PNG)

The report (``segnet.report``) is drawn from these files alone, without running the model again;
the tables of scores are laid out by ``segnet.score_tables``.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from segnet import MIN_AREA
from segnet.checkpoint import load_checkpoint, model_spec
from segnet.config import ClassRoles, saved_palette
from segnet.counting import count_agreement
from segnet.data import Pair, load_pair, select_pairs
from segnet.detection import MATCH_SHARE, DetectionScores, ObjectTally
from segnet.errors import DataError, SegnetError
from segnet.metrics import BoundaryF1, ConfusionMatrix, metrics_from_confusion
from segnet.outputs import open_replacing, refuse_package_folder, write_atomically, write_text_atomically
from segnet.predict import DEFAULT_INFERENCE, InferenceOptions, Predictor
from segnet.runfiles import EVALUATION_FOLDER

METRICS_FILE = "metrics.json"
PER_IMAGE_FILE = "per_image.csv"
PER_IMAGE_COLUMNS = ("image", "image_path", "mask_path", "pixel_accuracy", "mean_iou")
"""The first columns of per_image.csv; per-class and count columns follow."""
PREDICTIONS_FOLDER = "predictions"


def evaluate_run(
    checkpoint: str | Path,
    data: str | Path,
    *,
    split: str = "val",
    out: str | Path | None = None,
    options: InferenceOptions = DEFAULT_INFERENCE,
    ignore_index: int | None = None,
    min_area: int = MIN_AREA,
    progress: bool = True,
) -> dict:
    """Evaluate ``checkpoint`` on the labelled images in ``data`` and write the evaluation folder.

    Args:
        checkpoint: a checkpoint inside its run folder (``RUN/best.pt``); ``RUN`` holds split.json.
        data: a dataset folder (``images/`` and ``masks/``).
        split: ``"val"`` or ``"train"``: the images listed under that name in ``RUN/split.json``;
            ``"all"``: every image in ``data``.
        out: the evaluation folder; default ``RUN/evaluation``.
        options: how the model is run (device, tiles, TTA, ...; :class:`~segnet.predict.InferenceOptions`).
        ignore_index: a mask value whose pixels are left out of every score (unlabelled pixels).
        min_area: objects smaller than this many pixels are not counted.
        progress: show a progress bar over the images.

    Returns:
        The dict written to ``metrics.json``.
    """
    checkpoint = Path(checkpoint)
    run_dir = checkpoint.parent
    out_dir = Path(out) if out is not None else run_dir / EVALUATION_FOLDER
    refuse_package_folder(out_dir)  # a built-in model's "run folder" is the installed package
    if ignore_index is not None and not 0 <= ignore_index <= 255:
        raise SegnetError(f"ignore_index must be a mask value in 0..255, got {ignore_index}")
    pairs = select_pairs(data, split, run_dir)
    state = load_checkpoint(checkpoint)
    predictor = Predictor.from_state(state, checkpoint, options)
    del state["model_state"]  # the model name, epoch and mask palette are read from the rest below
    class_names = list(predictor.class_names)
    palette = saved_palette(state.get("config"), class_names)

    prediction_dir = out_dir / PREDICTIONS_FOLDER
    try:
        prediction_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataError(prediction_dir, f"cannot create the output folder ({error.strerror or error})") from error
    scores = _Scores(class_names, predictor.roles, ignore_index, min_area)
    for pair in tqdm(pairs, desc="evaluating", unit="image", disable=not progress):
        image, truth = load_labelled_pair(pair, len(class_names), ignore_index, palette)
        try:
            pred = predictor.predict(image)
        except SegnetError as error:
            raise SegnetError(f"{pair.image}: {error}") from error
        _save_prediction(pred, prediction_dir / f"{pair.stem}.png")
        scores.add(pair, truth, pred)

    metrics = scores.metrics()
    metrics["evaluation"] = {
        **_provenance(checkpoint, state),
        "data": str(data),
        "split": split,
        **options.to_dict(),
        "device": str(predictor.device),
        "ignore_index": ignore_index,
        "mask_palette": palette,
        "min_area": min_area,
        "object_match_share": MATCH_SHARE,
        "evaluated_at": datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds"),
    }
    write_text_atomically(out_dir / METRICS_FILE, json.dumps(metrics, indent=2), "metrics")
    _write_per_image(out_dir / PER_IMAGE_FILE, scores.rows, class_names, scores.counted)
    return metrics


def _provenance(checkpoint: Path, state: dict) -> dict:
    """What was evaluated: the checkpoint, its model, epoch, save time and logit offsets."""
    return {
        "checkpoint": str(checkpoint),
        "model": model_spec(state).name,
        "epoch": state.get("epoch"),
        "checkpoint_saved": _file_time(checkpoint),
        "logit_offsets": (state.get("calibration") or {}).get("offsets"),  # segnet.calibration; None: uncalibrated
    }


class _Scores:
    """Every score of an evaluation, accumulated image by image: pixels, boundaries, counts and objects."""

    def __init__(self, class_names: Sequence[str], roles: ClassRoles, ignore_index: int | None, min_area: int) -> None:
        self.class_names = list(class_names)
        self.ignore_index = ignore_index
        self.counted = roles.counted
        self.confusion = ConfusionMatrix(len(class_names), ignore_index)
        self.boundary = BoundaryF1(class_names, ignore_index=ignore_index)
        self.detection = DetectionScores(roles, min_area=min_area, ignore_index=ignore_index)
        self.true_counts: dict[int, list[int]] = {c: [] for c in self.counted}
        self.pred_counts: dict[int, list[int]] = {c: [] for c in self.counted}
        self.rows: list[dict[str, object]] = []

    def add(self, pair: Pair, truth: np.ndarray, pred: np.ndarray) -> None:
        """Score one image's prediction against its mask, and keep its ``per_image.csv`` row."""
        image_confusion = ConfusionMatrix(len(self.class_names), self.ignore_index)
        image_confusion.update(torch.from_numpy(truth), torch.from_numpy(pred))
        self.confusion.mat += image_confusion.mat
        self.boundary.update(truth, pred)
        image_objects = self.detection.add(pair.stem, truth, pred)
        for c, tally in image_objects.items():
            self.true_counts[c].append(tally.true_objects)
            self.pred_counts[c].append(tally.predicted_objects)
        image_metrics = metrics_from_confusion(image_confusion.mat, self.class_names)
        self.rows.append(_per_image_row(pair, image_metrics, image_objects, self.class_names))

    def metrics(self) -> dict:
        """``metrics.json`` but its ``evaluation`` section."""
        names = self.class_names
        metrics = metrics_from_confusion(self.confusion.mat, names)
        metrics["num_images"] = len(self.rows)
        metrics["boundary_f1"] = self.boundary.compute()
        metrics["counts"] = {
            names[c]: {
                **count_agreement(self.true_counts[c], self.pred_counts[c]),
                "mean_true": float(np.mean(self.true_counts[c])),
                "mean_predicted": float(np.mean(self.pred_counts[c])),
            }
            for c in self.counted
        }
        metrics.update(self.detection.sections(names))
        return metrics


def load_labelled_pair(
    pair: Pair,
    num_classes: int,
    ignore_index: int | None = None,
    palette: dict[int, list[int]] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Read an image and its mask, whose values must be class ids or ``ignore_index``."""
    if ignore_index is None:
        return load_pair(pair, num_classes, palette)
    # 256 lets every 8-bit value through the reader's class check; the check is done here instead.
    image, mask = load_pair(pair, 256, palette)
    values = np.unique(mask)
    bad = values[(values >= num_classes) & (values != ignore_index)]
    if bad.size:
        raise DataError(
            pair.mask,
            f"mask values {bad.tolist()[:10]} are neither classes (0..{num_classes - 1}) nor the ignore index {ignore_index}",
        )
    return image, mask


def _save_prediction(pred: np.ndarray, path: Path) -> None:
    write_atomically(path, lambda temporary: Image.fromarray(pred).save(temporary, format="PNG"), "prediction")


def _file_time(path: Path) -> str:
    return datetime.fromtimestamp(path.stat().st_mtime, timezone.utc).astimezone().isoformat(timespec="seconds")


def _per_image_row(pair: Pair, image_metrics: dict, objects: dict[int, ObjectTally], class_names: Sequence[str]) -> dict[str, object]:
    row: dict[str, object] = {
        "image": pair.stem,
        "image_path": str(pair.image),
        "mask_path": str(pair.mask),
        "pixel_accuracy": image_metrics["global_accuracy"],
        "mean_iou": image_metrics["mean_iou"],
    }
    for name in class_names:
        row[f"iou_{name}"] = image_metrics["per_class"][name]["iou"]
    for c, tally in objects.items():
        row[f"true_count_{class_names[c]}"] = tally.true_objects
        row[f"pred_count_{class_names[c]}"] = tally.predicted_objects
        row[f"found_{class_names[c]}"] = tally.found
        row[f"correct_{class_names[c]}"] = tally.correct
    return row


def _write_per_image(path: Path, rows: list[dict[str, object]], class_names: Sequence[str], counted: Sequence[int]) -> None:
    columns = list(PER_IMAGE_COLUMNS)
    columns += [f"iou_{name}" for name in class_names]
    for c in counted:
        columns += [f"{column}_{class_names[c]}" for column in ("true_count", "pred_count", "found", "correct")]
    with open_replacing(path) as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            # An undefined score (class absent from truth and prediction) is an empty cell.
            writer.writerow({key: "" if value is None else (f"{value:.6f}" if isinstance(value, float) else value) for key, value in row.items()})
