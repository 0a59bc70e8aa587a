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

The report (``segnet.report``) is drawn from these files alone, without running the model again.
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

from segnet.checkpoint import load_checkpoint, model_spec, write_text_atomically
from segnet.config import TrainConfig
from segnet.counting import count_agreement
from segnet.data import Pair, find_pairs, load_pair, read_split
from segnet.detection import MATCH_SHARE, DetectionScores, ObjectTally
from segnet.errors import DataError, SegnetError
from segnet.metrics import BoundaryF1, ConfusionMatrix, metrics_from_confusion
from segnet.predict import Predictor
from segnet.runfiles import EVALUATION_FOLDER, SPLIT_FILE

METRICS_FILE = "metrics.json"
PER_IMAGE_FILE = "per_image.csv"
PREDICTIONS_FOLDER = "predictions"
SPLITS = ("val", "train", "all")
BACKGROUND = 0
"""Class index of the background: every other class is counted as objects."""


def evaluate_run(
    checkpoint: str | Path,
    data: str | Path,
    *,
    split: str = "val",
    out: str | Path | None = None,
    device: str = "auto",
    ignore_index: int | None = None,
    tile: int | None = None,
    tta: bool = False,
    min_area: int = 30,
    report: bool = False,
    progress: bool = True,
) -> dict:
    """Evaluate ``checkpoint`` on the labelled images in ``data`` and write the evaluation folder.

    Args:
        checkpoint: a checkpoint inside its run folder (``RUN/best.pt``); ``RUN`` holds split.json.
        data: a dataset folder (``images/`` and ``masks/``).
        split: ``"val"`` or ``"train"``: the images listed under that name in ``RUN/split.json``;
            ``"all"``: every image in ``data``.
        out: the evaluation folder; default ``RUN/evaluation``.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        ignore_index: a mask value whose pixels are left out of every score (unlabelled pixels).
        tile: predict in tiles of this side (large images on a small GPU); ``None``: whole images.
        tta: average the predictions over the 8 flips and rotations of each image.
        min_area: objects smaller than this many pixels are not counted.
        report: also write ``RUN/report.html`` (segnet.report.write_report).
        progress: show a progress bar over the images.

    Returns:
        The dict written to ``metrics.json``.
    """
    checkpoint = Path(checkpoint)
    run_dir = checkpoint.parent
    out_dir = Path(out) if out is not None else run_dir / EVALUATION_FOLDER
    if ignore_index is not None and not 0 <= ignore_index <= 255:
        raise SegnetError(f"ignore_index must be a mask value in 0..255, got {ignore_index}")
    pairs = select_pairs(data, split, run_dir)

    # The Predictor keeps only what inference needs; the model name, epoch and mask palette are
    # read from the checkpoint here (its weights are dropped at once).
    state = load_checkpoint(checkpoint)
    del state["model_state"]
    predictor = Predictor.from_checkpoint(checkpoint, device=device, tile=tile, tta=tta)
    class_names = list(predictor.class_names)
    num_classes = len(class_names)
    palette = mask_palette(state.get("config") or {}, class_names)
    counted = [c for c in range(num_classes) if c != BACKGROUND]

    prediction_dir = out_dir / PREDICTIONS_FOLDER
    try:
        prediction_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataError(prediction_dir, f"cannot create the output folder ({error.strerror or error})") from error
    total = ConfusionMatrix(num_classes, ignore_index)
    boundary = BoundaryF1(class_names, ignore_index=ignore_index)
    true_counts: dict[int, list[int]] = {c: [] for c in counted}
    pred_counts: dict[int, list[int]] = {c: [] for c in counted}
    detection = DetectionScores(counted, min_area=min_area, ignore_index=ignore_index)
    rows = []
    for pair in tqdm(pairs, desc="evaluating", unit="image", disable=not progress):
        image, truth = load_labelled_pair(pair, num_classes, ignore_index, palette)
        try:
            pred = predictor.predict(image)
        except SegnetError as error:
            raise SegnetError(f"{pair.image}: {error}") from error
        _save_prediction(pred, prediction_dir / f"{pair.stem}.png")

        image_confusion = ConfusionMatrix(num_classes, ignore_index)
        image_confusion.update(torch.from_numpy(truth), torch.from_numpy(pred))
        total.mat += image_confusion.mat
        boundary.update(truth, pred)
        image_objects = detection.add(pair.stem, truth, pred)
        for c, tally in image_objects.items():
            true_counts[c].append(tally.true_objects)
            pred_counts[c].append(tally.predicted_objects)
        rows.append(_per_image_row(pair, metrics_from_confusion(image_confusion.mat, class_names), image_objects, class_names))

    metrics = metrics_from_confusion(total.mat, class_names)
    metrics["num_images"] = len(pairs)
    metrics["boundary_f1"] = boundary.compute()
    metrics["counts"] = {
        class_names[c]: {
            **count_agreement(true_counts[c], pred_counts[c]),
            "mean_true": float(np.mean(true_counts[c])),
            "mean_predicted": float(np.mean(pred_counts[c])),
        }
        for c in counted
    }
    metrics.update(detection.sections(class_names))
    metrics["evaluation"] = {
        "checkpoint": str(checkpoint),
        "model": model_spec(state).name,
        "epoch": state.get("epoch"),
        "checkpoint_saved": _file_time(checkpoint),
        "data": str(data),
        "split": split,
        "device": str(predictor.device),
        "tile": tile,
        "tta": tta,
        "logit_offsets": (state.get("calibration") or {}).get("offsets"),  # segnet.calibration; None: uncalibrated
        "ignore_index": ignore_index,
        "mask_palette": palette,
        "min_area": min_area,
        "object_match_share": MATCH_SHARE,
        "evaluated_at": datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds"),
    }
    write_text_atomically(out_dir / METRICS_FILE, json.dumps(metrics, indent=2), "metrics")
    _write_per_image(out_dir / PER_IMAGE_FILE, rows, class_names, counted)

    if report:
        # Imported here, not at the top: segnet.report imports this module's tables and readers.
        from segnet.report import write_report

        write_report(run_dir, out_dir)
    return metrics


def select_pairs(data: str | Path, split: str, run_dir: Path) -> list[Pair]:
    """The image/mask pairs of ``data`` to evaluate: all of them, or one side of RUN/split.json."""
    if split not in SPLITS:
        raise SegnetError(f"unknown split '{split}' (use {', '.join(SPLITS)})")
    pairs = find_pairs(data)
    if split == "all":
        return pairs
    split_file = run_dir / SPLIT_FILE
    selected = read_split(split_file, pairs, split)
    if not selected:
        raise DataError(split_file, f"the split lists no '{split}' images (evaluate with split 'all')")
    return selected


def mask_palette(config: dict, class_names: Sequence[str]) -> dict[int, list[int]] | None:
    """The colour-mask palette a run was trained with (config ``mask_palette``), keyed by class index."""
    return TrainConfig(classes=list(class_names), mask_palette=config.get("mask_palette")).palette_by_index()


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
    try:
        Image.fromarray(pred).save(path)
    except OSError as error:
        raise DataError(path, f"could not write ({error.strerror or error})") from error


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
    columns = ["image", "image_path", "mask_path", "pixel_accuracy", "mean_iou"]
    columns += [f"iou_{name}" for name in class_names]
    for c in counted:
        columns += [f"{column}_{class_names[c]}" for column in ("true_count", "pred_count", "found", "correct")]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            # An undefined score (class absent from truth and prediction) is an empty cell.
            writer.writerow({key: "" if value is None else (f"{value:.6f}" if isinstance(value, float) else value) for key, value in row.items()})


# ------------------------------------------------------------------------------------------------
# Tables: the rows are shared by the plain-text table below and the HTML report.
# ------------------------------------------------------------------------------------------------

PER_CLASS_HEADER = ("class", "IoU", "accuracy", "precision", "dice", "BF1", "support (px)")
COUNT_HEADER = ("class", "count MAE", "count r", "mean true", "mean predicted")
OBJECT_HEADER = ("class", "true objects", "predicted", "found", "correct", "recall", "precision", "F1")
PRESENCE_HEADER = ("class", "images with", "sensitivity", "images without", "specificity")


def format_score(value: float | None, digits: int = 3) -> str:
    """A score with ``digits`` decimals; an undefined score (``None``) is a dash."""
    return "-" if value is None else f"{value:.{digits}f}"


def per_class_rows(metrics: dict) -> list[list[str]]:
    """One row per class, in the columns of :data:`PER_CLASS_HEADER`."""
    boundary = metrics.get("boundary_f1", {}).get("per_class", {})
    rows = []
    for name in metrics["classes"]:
        scores = metrics["per_class"][name]
        rows.append(
            [
                name,
                *(format_score(scores[key]) for key in ("iou", "accuracy", "precision", "dice")),
                format_score(boundary.get(name)),
                f"{scores['support']:,}",
            ]
        )
    return rows


def summary_rows(metrics: dict) -> list[list[str]]:
    """The whole-dataset scores as (label, value) rows."""
    return [
        ["global accuracy", format_score(metrics["global_accuracy"])],
        ["class-average accuracy", format_score(metrics["class_average_accuracy"])],
        ["mean IoU", format_score(metrics["mean_iou"])],
        ["frequency-weighted IoU", format_score(metrics["frequency_weighted_iou"])],
        ["mean boundary F1", format_score(metrics.get("boundary_f1", {}).get("mean"))],
        ["images", str(metrics.get("num_images", "-"))],
    ]


def count_rows(metrics: dict) -> list[list[str]]:
    """One row per counted class, in the columns of :data:`COUNT_HEADER`."""
    return [
        [
            name,
            format_score(agreement["mean_absolute_error"], 2),
            format_score(agreement["pearson_r"]),
            format_score(agreement["mean_true"], 1),
            format_score(agreement["mean_predicted"], 1),
        ]
        for name, agreement in metrics.get("counts", {}).items()
    ]


def object_rows(metrics: dict) -> list[list[str]]:
    """One row per counted class, in the columns of :data:`OBJECT_HEADER` (segnet.detection)."""
    return [
        [
            name,
            *(str(tally[key]) for key in ("true_objects", "predicted_objects", "found", "correct")),
            *(format_score(tally[key]) for key in ("recall", "precision", "f1")),
        ]
        for name, tally in metrics.get("objects", {}).items()
    ]


def presence_rows(metrics: dict) -> list[list[str]]:
    """One row per counted class, in the columns of :data:`PRESENCE_HEADER`."""
    return [
        [
            name,
            str(presence["images_with"]),
            format_score(presence["sensitivity"]),
            str(presence["images_without"]),
            format_score(presence["specificity"]),
        ]
        for name, presence in metrics.get("presence", {}).items()
    ]


def presence_errors(metrics: dict) -> list[str]:
    """Per counted class, the images its presence is wrong on, by name (one line per class)."""
    return [
        f"{name}: missed in {', '.join(presence['missed_images']) or 'none'}; "
        f"said present in {', '.join(presence['false_alarm_images']) or 'none'}"
        for name, presence in metrics.get("presence", {}).items()
    ]


def object_rule(metrics: dict) -> str:
    """The matching rule of the object table in one sentence, with the share it was scored at."""
    share = metrics.get("evaluation", {}).get("object_match_share", MATCH_SHARE)
    return (
        f"a true object is found when predicted objects of its class cover at least {share:.0%} of it, or at least "
        f"{share:.0%} of one of them lies inside it; a predicted object is correct when at least {share:.0%} of it "
        "lies on true objects of its class"
    )


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table with a rule under ``header``, columns padded to their widest cell."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    # First column (names) left-aligned, numbers right-aligned.
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths))) for line in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def format_metrics_table(metrics: dict) -> str:
    """The metrics of ``metrics.json`` as readable plain-text tables (per class, summary, counts,
    objects, image-level presence)."""
    parts = [text_table(PER_CLASS_HEADER, per_class_rows(metrics))]
    summary = summary_rows(metrics)
    label_width = max(len(label) for label, _ in summary)
    parts.append("\n".join(f"{label.ljust(label_width)}  {value}" for label, value in summary))
    counts = count_rows(metrics)
    if counts:
        min_area = metrics.get("evaluation", {}).get("min_area")
        title = "object counts per image" + (f" (objects of at least {min_area} px; predicted masks cleaned first)" if min_area is not None else "")
        parts.append(title + "\n" + text_table(COUNT_HEADER, counts))
    objects = object_rows(metrics)
    if objects:
        parts.append(f"objects ({object_rule(metrics)})\n" + text_table(OBJECT_HEADER, objects))
    presence = presence_rows(metrics)
    if presence:
        title = "image-level presence (an image holds a class when it has one of its objects)"
        parts.append("\n".join([title, text_table(PRESENCE_HEADER, presence), *presence_errors(metrics)]))
    return "\n\n".join(parts) + "\n"
