"""The run report: one self-contained HTML page, and the training-curve plot.

``write_report`` reads a run folder and its evaluation folder (written by
``segnet.evaluate.evaluate_run``) and writes ``RUN/report.html``: training curves, the metric
tables, the confusion matrix, the count agreement, object detection and image-level presence, and
the worst and best images. Every picture is embedded as a base64 PNG and the page loads nothing
from elsewhere, so it opens from disk, can be mailed, and stays readable offline.

Plots use matplotlib's object API (``Figure``, drawn by the Agg renderer) rather than pyplot, so
no GUI backend is touched and no figure outlives the call (training redraws the curves every epoch).
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from PIL import Image

from segnet.core.errors import DataError
from segnet.core.outputs import refuse_package_folder, write_text_atomically
from segnet.core.readback import read_csv
from segnet.core.runfiles import BEST_CHECKPOINT, CONFIG_FILE, EVALUATION_FOLDER, HISTORY_FILE, REPORT_FILE
from segnet.data.pairs import read_image, read_mask
from segnet.data.palette import class_palette, colorize
from segnet.evaluate.counting import CountAgreement
from segnet.evaluate.metrics import METRICS_FILE, EvaluationMetrics
from segnet.evaluate.run import evaluate_run
from segnet.evaluate.score import (
    IMAGE_PATH_COLUMN,
    MASK_PATH_COLUMN,
    MEAN_IOU_COLUMN,
    PER_IMAGE_COLUMNS,
    PER_IMAGE_FILE,
    PIXEL_ACCURACY_COLUMN,
    PRED_COUNT_PREFIX,
    PREDICTIONS_FOLDER,
    STEM_COLUMN,
    TRUE_COUNT_PREFIX,
    class_column,
    read_truth_mask,
)
from segnet.evaluate.tables import (
    COUNT_HEADER,
    OBJECT_HEADER,
    PER_CLASS_HEADER,
    PRESENCE_HEADER,
    count_rows,
    object_rows,
    object_rule,
    per_class_rows,
    presence_errors,
    presence_rows,
    summary_rows,
)
from segnet.plan.config import load_config
from segnet.train.curves import curves_figure, read_history

THUMBNAIL_WIDTH = 600
"""Gallery pictures wider than this are downscaled, which keeps the page a few MB."""
WORST_IMAGES, BEST_IMAGES = 6, 3
CORRECT_COLOUR = (70, 70, 70)
"""Error map: correctly classified pixels are dim gray; wrong ones take the predicted class's colour."""
IGNORED_COLOUR = (96, 96, 160)
"""Unlabelled (``ignore_index``) pixels, in the ground truth and on the error map: a slate blue
that is neither a class colour nor the dim gray of correct pixels."""
NEAR_BLACK = 100
"""A class colour whose brightest channel is below this (the black background) is drawn white on
the error map, where it would otherwise vanish against the dim gray of the correct pixels."""


# ------------------------------------------------------------------------------------------------
# Training curves
# ------------------------------------------------------------------------------------------------


# ------------------------------------------------------------------------------------------------
# Evaluation plots
# ------------------------------------------------------------------------------------------------


def _confusion_figure(confusion: np.ndarray, class_names: Sequence[str]) -> Figure:
    """Row-normalised confusion matrix: each row shows where the pixels of one true class went."""
    support = confusion.sum(axis=1, keepdims=True)
    fractions = np.divide(confusion, support, out=np.zeros(confusion.shape, dtype=float), where=support > 0)
    size = len(class_names)
    figure = Figure(figsize=(1.5 * size + 2.8, 1.2 * size + 1.8), layout="constrained")
    axes = figure.subplots()
    shown = axes.imshow(fractions * 100, cmap="Blues", vmin=0, vmax=100)
    figure.colorbar(shown, ax=axes, label="% of the true class's pixels", shrink=0.85)
    for row in range(size):
        for column in range(size):
            text = f"{100 * fractions[row, column]:.1f}%" if support[row, 0] else "-"
            colour = "white" if fractions[row, column] > 0.5 else "black"
            axes.text(
                column,
                row,
                f"{text}\n{confusion[row, column]:,} px",
                ha="center",
                va="center",
                color=colour,
                fontsize=9,
            )
    axes.set_xticks(range(size), class_names)
    axes.set_yticks(range(size), class_names)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    axes.set_title("Confusion matrix (rows sum to 100%)")
    return figure


def _count_figure(rows: Sequence[dict[str, str]], counts: Mapping[str, CountAgreement]) -> Figure:
    """Per counted class: predicted against true objects per image, with the y = x line."""
    names = list(counts)
    figure = Figure(figsize=(4.6 * len(names), 4.4), layout="constrained")
    for axes, name in zip(np.atleast_1d(figure.subplots(1, len(names))), names):
        true = np.array([float(row[class_column(TRUE_COUNT_PREFIX, name)]) for row in rows])
        pred = np.array([float(row[class_column(PRED_COUNT_PREFIX, name)]) for row in rows])
        top = max(true.max(initial=0), pred.max(initial=0), 1) * 1.08
        axes.plot([0, top], [0, top], color="gray", linestyle="--", linewidth=1, label="y = x")
        axes.scatter(true, pred, s=22, alpha=0.6, color="tab:blue", edgecolors="none", label="one image")
        axes.set_xlim(-0.04 * top, top)
        axes.set_ylim(-0.04 * top, top)
        axes.set_aspect("equal")
        axes.set_xlabel("true count")
        axes.set_ylabel("predicted count")
        agreement = counts[name]
        r = agreement.pearson_r
        axes.set_title(f"{name}\nMAE {agreement.mean_absolute_error:.2f}, r {'n/a' if r is None else f'{r:.3f}'}")
        axes.grid(alpha=0.3)
        axes.legend(loc="upper left", fontsize=8)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    return figure


def _figure_png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    return buffer.getvalue()


def _png(array: np.ndarray, nearest: bool) -> bytes:
    """PNG of an RGB array, downscaled to :data:`THUMBNAIL_WIDTH`; class maps use nearest so no
    blended colours appear between classes."""
    image = Image.fromarray(array)
    if image.width > THUMBNAIL_WIDTH:
        height = max(1, round(image.height * THUMBNAIL_WIDTH / image.width))
        image = image.resize(
            (THUMBNAIL_WIDTH, height), Image.Resampling.NEAREST if nearest else Image.Resampling.LANCZOS
        )
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _img(png: bytes, alt: str) -> str:
    return f'<img src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}" alt="{html.escape(alt)}">'


# ------------------------------------------------------------------------------------------------
# Gallery of the worst and best images
# ------------------------------------------------------------------------------------------------


def _error_colours(class_colours: np.ndarray) -> np.ndarray:
    """Colour of a wrong pixel on the error map, by predicted class."""
    near_black = class_colours.max(axis=1) < NEAR_BLACK
    return np.where(near_black[:, None], 255, class_colours).astype(np.uint8)


def _error_map(truth: np.ndarray, pred: np.ndarray, error_colours: np.ndarray, ignore_index: int | None) -> np.ndarray:
    """RGB map: correct pixels dim gray, wrong ones in the colour of the class predicted there."""
    errors = np.empty(truth.shape + (3,), dtype=np.uint8)
    errors[:] = CORRECT_COLOUR
    wrong = truth != pred
    if ignore_index is not None:
        ignored = truth == ignore_index
        wrong &= ~ignored
        errors[ignored] = IGNORED_COLOUR
    errors[wrong] = error_colours[pred[wrong]]
    return errors


def _truth_colours(truth: np.ndarray, num_classes: int, ignore_index: int | None) -> np.ndarray:
    if ignore_index is None:
        return colorize(truth, num_classes)
    ignored = truth == ignore_index
    coloured = colorize(np.where(ignored, 0, truth).astype(np.uint8), num_classes)
    coloured[ignored] = IGNORED_COLOUR
    return coloured


def _choose_gallery(rows: Sequence[dict[str, str]]) -> list[tuple[str, dict[str, str]]]:
    """The worst images by mean IoU, then the best of the rest (no image is shown twice)."""
    scored = sorted((row for row in rows if row[MEAN_IOU_COLUMN]), key=lambda row: float(row[MEAN_IOU_COLUMN]))
    worst = scored[:WORST_IMAGES]
    best = scored[WORST_IMAGES:][::-1][:BEST_IMAGES]
    return [("worst", row) for row in worst] + [("best", row) for row in best]


def _gallery_row(
    kind: str,
    row: dict[str, str],
    evaluation_dir: Path,
    class_names: Sequence[str],
    ignore_index: int | None,
    palette: dict[int, list[int]] | None,
    error_colours: np.ndarray,
) -> str:
    num_classes = len(class_names)
    stem, mask_path = row[STEM_COLUMN], Path(row[MASK_PATH_COLUMN])
    truth = read_truth_mask(mask_path, num_classes, ignore_index, palette)
    prediction_path = evaluation_dir / PREDICTIONS_FOLDER / f"{stem}.png"
    pred = read_mask(prediction_path, num_classes)
    if pred.shape != truth.shape:
        raise DataError(prediction_path, f"prediction size differs from its mask {mask_path} (evaluate again)")
    # segnet score of a folder of masks alone has no images to show
    panels = [("image", _png(read_image(row[IMAGE_PATH_COLUMN]), nearest=False))] if row[IMAGE_PATH_COLUMN] else []
    panels += [
        ("ground truth", _png(_truth_colours(truth, num_classes, ignore_index), nearest=True)),
        ("prediction", _png(colorize(pred, num_classes), nearest=True)),
        ("errors", _png(_error_map(truth, pred, error_colours, ignore_index), nearest=True)),
    ]
    counts = [
        f"{html.escape(name)} {row[class_column(TRUE_COUNT_PREFIX, name)]} true / {row[class_column(PRED_COUNT_PREFIX, name)]} predicted"
        for name in class_names
        if class_column(TRUE_COUNT_PREFIX, name) in row
    ]
    caption = " &middot; ".join(
        [
            html.escape(stem),
            f"mean IoU {float(row[MEAN_IOU_COLUMN]):.3f}",
            f"pixel accuracy {float(row[PIXEL_ACCURACY_COLUMN]):.3f}",
        ]
    )
    caption += f'<span class="counts">{" &middot; ".join(counts)}</span>' if counts else ""
    figures = "".join(
        f"<figure>{_img(png, f'{stem} {label}')}<figcaption>{label}</figcaption></figure>" for label, png in panels
    )
    return f'<div class="sample {kind}"><h3><span class="tag">{kind}</span> {caption}</h3><div class="panels">{figures}</div></div>'


def _legend(
    class_names: Sequence[str], class_colours: np.ndarray, error_colours: np.ndarray, ignore_index: int | None
) -> str:
    def swatch(colour: Sequence[int], label: str) -> str:
        r, g, b = (int(v) for v in colour)
        return f'<span class="swatch"><i style="background:rgb({r},{g},{b})"></i>{html.escape(label)}</span>'

    classes = "".join(swatch(colour, name) for colour, name in zip(class_colours, class_names))
    errors = swatch(CORRECT_COLOUR, "correct") + "".join(
        swatch(colour, f"wrong, predicted {name}") for colour, name in zip(error_colours, class_names)
    )
    ignored = swatch(IGNORED_COLOUR, f"ignored (mask value {ignore_index})") if ignore_index is not None else ""
    return (
        f'<p class="legend"><b>Classes</b> (ground truth and prediction): {classes}{ignored}</p>'
        f'<p class="legend"><b>Error map</b>: correct pixels are dim gray; wrong pixels take the colour of the class '
        f"the model predicted there (a dark class colour is drawn white): {errors}{ignored}</p>"
    )


# ------------------------------------------------------------------------------------------------
# The page
# ------------------------------------------------------------------------------------------------

_CSS = """
* { box-sizing: border-box; }
body { margin: 0; background: #f4f5f7; color: #1d2330; font: 15px/1.5 "Segoe UI", "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1280px; margin: 0 auto; padding: 24px 28px 48px; }
header { border-bottom: 3px solid #2f5d8a; margin-bottom: 8px; padding-bottom: 10px; }
h1 { margin: 0 0 4px; font-size: 26px; }
h2 { margin: 0 0 12px; font-size: 19px; color: #2f5d8a; }
h3 { margin: 0 0 8px; font-size: 15px; font-weight: 600; }
section { background: #fff; border: 1px solid #dde1e7; border-radius: 8px; padding: 18px 22px; margin: 18px 0; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 2px 18px; margin: 8px 0 0; }
dl.facts dt { color: #5b6475; }
dl.facts dd { margin: 0; overflow-wrap: anywhere; }
.tables { display: flex; flex-wrap: wrap; gap: 28px; align-items: flex-start; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; }
th, td { padding: 5px 12px; border-bottom: 1px solid #e3e6eb; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #eef1f5; font-weight: 600; }
tbody tr:nth-child(even) { background: #fafbfc; }
img { max-width: 100%; height: auto; display: block; }
.plot img { margin: 6px auto; }
.note { color: #5b6475; font-size: 13.5px; margin: 6px 0 0; }
.legend { margin: 4px 0; font-size: 13.5px; }
.swatch { display: inline-flex; align-items: center; margin: 0 12px 0 4px; white-space: nowrap; }
.swatch i { display: inline-block; width: 14px; height: 14px; margin-right: 5px; border: 1px solid #888; border-radius: 2px; }
.sample { border-top: 1px solid #e3e6eb; padding: 14px 0 6px; }
.panels { display: grid; grid-template-columns: repeat(4, 1fr); gap: 8px; }
figure { margin: 0; }
figure img { width: 100%; border-radius: 3px; }
figcaption { text-align: center; font-size: 12.5px; color: #5b6475; }
.tag { display: inline-block; padding: 0 8px; border-radius: 10px; font-size: 12px; color: #fff; margin-right: 6px; text-transform: uppercase; letter-spacing: 0.04em; }
.worst .tag { background: #b3413b; }
.best .tag { background: #2e7d4f; }
.counts { display: block; font-weight: normal; color: #5b6475; font-size: 13px; }
.subtitle { color: #5b6475; margin: 0 0 6px; }
"""


def _html_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(cell)}</th>" for cell in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _facts(items: Sequence[tuple[str, object]]) -> str:
    return (
        '<dl class="facts">'
        + "".join(
            f"<dt>{html.escape(label)}</dt><dd>{html.escape(str(value))}</dd>"
            for label, value in items
            if value not in (None, "")
        )
        + "</dl>"
    )


def _read_per_image(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise DataError(path, "no per-image scores here: run segnet evaluate first")
    return read_csv(path, "per-image score table", PER_IMAGE_COLUMNS)


def _read_metrics(path: Path) -> EvaluationMetrics:
    if not path.is_file():
        raise DataError(path, "no evaluation here: run segnet evaluate first")
    return EvaluationMetrics.read(path)


def _when(iso: str | None) -> str | None:
    """An ISO timestamp as ``2025-03-01 14:02:11 +01:00`` (readable, still unambiguous)."""
    return iso.replace("T", " ", 1)[:19] + " " + iso[19:] if iso and len(iso) > 19 else iso


def _header(run_name: str, metrics: EvaluationMetrics) -> str:
    evaluation = metrics.evaluation
    checkpoint = None
    if evaluation.get("checkpoint"):
        checkpoint = f"{evaluation['checkpoint']} (epoch {evaluation.get('epoch')}, saved {_when(evaluation.get('checkpoint_saved'))})"
    evaluated_on = None
    if evaluation.get("data"):
        evaluated_on = f"{metrics.num_images} images of {evaluation['data']} (split: {evaluation.get('split')})"
    elif evaluation.get("predictions"):  # segnet score
        evaluated_on = f"{metrics.num_images} masks of {evaluation['predictions']} against {evaluation.get('truth')}"
    prediction = [f"tiles of {evaluation['tile']} px" if evaluation.get("tile") else "whole images at full size"]
    if evaluation.get("tta"):
        prediction.append("test-time augmentation")
    offsets = {name: value for name, value in (evaluation.get("logit_offsets") or {}).items() if value}
    if offsets:
        prediction.append(
            "calibrated logit offsets " + ", ".join(f"{name} {value:+.2f}" for name, value in offsets.items())
        )
    now = datetime.now(UTC).astimezone().isoformat(timespec="seconds")
    facts = [
        ("model", evaluation.get("model")),
        ("classes", ", ".join(f"{index} {name}" for index, name in enumerate(metrics.classes))),
        ("checkpoint", checkpoint),
        ("evaluated on", evaluated_on),
        ("prediction", ", ".join(prediction)),
        ("evaluated", _when(evaluation.get("evaluated_at"))),
        ("report written", _when(now)),
    ]
    return f'<header><h1>Run {html.escape(run_name)}</h1><p class="subtitle">segnet training and evaluation report</p>{_facts(facts)}</header>'


def _gallery_section(
    rows: Sequence[dict[str, str]], evaluation_dir: Path, class_names: Sequence[str], evaluation: Mapping[str, Any]
) -> str:
    chosen = _choose_gallery(rows)
    worst = sum(kind == "worst" for kind, _ in chosen)
    best = len(chosen) - worst
    title = (
        f"Worst {worst} and best {best} images by mean IoU" if best else f"All {worst} images by mean IoU, worst first"
    )
    ignore_index = evaluation.get("ignore_index")
    palette = evaluation.get("mask_palette")
    palette = {int(index): rgb for index, rgb in palette.items()} if palette else None  # JSON keys are strings
    class_colours = class_palette(len(class_names))
    error_colours = _error_colours(class_colours)
    samples = "".join(
        _gallery_row(kind, row, evaluation_dir, class_names, ignore_index, palette, error_colours)
        for kind, row in chosen
    )
    return f"<section><h2>{title}</h2>{_legend(class_names, class_colours, error_colours, ignore_index)}{samples}</section>"


def report_run(
    run_dir: str | Path,
    evaluation_dir: str | Path | None = None,
    *,
    log: Callable[[str], None],
    **evaluate_options: Any,
) -> Path:
    """:func:`write_report`; a run without an evaluation folder is evaluated first, saying so through ``log``.

    As ``segnet evaluate`` would: ``RUN/best.pt`` on the run's validation images (split.json) of
    the dataset its ``config.yaml`` names, into ``RUN/evaluation``; ``evaluate_options`` are the
    keyword arguments of :func:`~segnet.evaluate.evaluate_run` (``options``, ``min_area``, ...).
    An ``evaluation_dir`` that was asked for is never written: it must hold an evaluation. A
    ``run_dir`` that holds ``metrics.json`` itself (``segnet score --out DIR``) is its own evaluation.
    """
    run_dir = Path(run_dir)
    if evaluation_dir is None and (run_dir / METRICS_FILE).is_file():
        evaluation_dir = run_dir
    default_dir = run_dir / EVALUATION_FOLDER
    if evaluation_dir is None and not (default_dir / METRICS_FILE).is_file():
        data = _run_data(run_dir)
        log(
            f"{run_dir}: not evaluated yet; evaluating best.pt on the run's validation images of {data} first, as segnet evaluate does"
        )
        evaluate_run(run_dir / BEST_CHECKPOINT, data, split="val", out=default_dir, **evaluate_options)
    return write_report(run_dir, evaluation_dir)


def _run_data(run_dir: Path) -> Path:
    """The dataset a run's config.yaml names; a relative path (runs of older versions) is taken
    from the run folder, never from wherever the command runs."""
    data = Path(load_config(run_dir / CONFIG_FILE).data)
    if data.is_absolute():
        return data
    if not (run_dir / data).is_dir():
        raise DataError(
            run_dir / CONFIG_FILE,
            f"data: {data} is relative and {run_dir / data} is no folder: write the dataset's full path there",
        )
    return run_dir / data


def write_report(
    run_dir: str | Path,
    evaluation_dir: str | Path | None = None,
    *,
    out_dir: str | Path | None = None,
    name: str | None = None,
) -> Path:
    """Write ``report.html`` from the run folder and its evaluation into ``out_dir``; return its path.

    ``evaluation_dir`` defaults to ``RUN/evaluation`` (where ``segnet evaluate`` writes), ``out_dir``
    to the run folder, ``name`` (the page's title) to the run folder's name. The page embeds every
    picture, so it opens from disk in any browser without a server or network.

    Raises:
        OutputError: ``out_dir`` is no place for it (segnet's built-in model folder).
    """
    run_dir = Path(run_dir)
    out_dir = Path(out_dir if out_dir is not None else run_dir)
    refuse_package_folder(out_dir)
    path = out_dir / REPORT_FILE
    run_name = name or run_dir.resolve().name
    evaluation_dir = Path(evaluation_dir) if evaluation_dir is not None else run_dir / EVALUATION_FOLDER
    metrics = _read_metrics(evaluation_dir / METRICS_FILE)
    rows = _read_per_image(evaluation_dir / PER_IMAGE_FILE)
    evaluation = metrics.evaluation
    class_names = list(metrics.classes)

    history_csv = run_dir / HISTORY_FILE
    if history_csv.is_file():
        curves = _img(_figure_png(curves_figure(read_history(history_csv))), "training curves")
    else:
        curves = f'<p class="note">No training history: {html.escape(str(history_csv))} does not exist.</p>'

    confusion = _img(_figure_png(_confusion_figure(metrics.confusion, class_names)), "confusion matrix")
    counts = '<p class="note">No object classes to count.</p>'
    if metrics.counts and rows:
        counts = (
            _html_table(COUNT_HEADER, count_rows(metrics))
            + f'<p class="note">Objects are connected regions of at least {evaluation.get("min_area")} px of one class '
            "(a larger floor on large images); touching red cells are split at their narrow necks.</p>"
            + f'<div class="plot">{_img(_figure_png(_count_figure(rows, metrics.counts)), "true against predicted counts")}</div>'
        )

    detection = '<p class="note">No object scores: evaluate again to add them.</p>'
    if metrics.objects:
        errors = "".join(f"<li>{html.escape(line)}</li>" for line in presence_errors(metrics))
        detection = (
            f'<div class="tables">{_html_table(OBJECT_HEADER, object_rows(metrics))}{_html_table(PRESENCE_HEADER, presence_rows(metrics))}</div>'
            f'<p class="note">Objects are those counted above (predicted masks cleaned first); {html.escape(object_rule(metrics))}. '
            "Recall, precision and F1 are over all objects of all evaluated images. An image holds a class when it has "
            "one of its objects; sensitivity and specificity are over images. Images where presence is wrong:</p>"
            f'<ul class="note">{errors}</ul>'
        )

    sections = [
        _header(run_name, metrics),
        f"<section><h2>Training curves</h2>{curves}</section>",
        '<section><h2>Metrics</h2><div class="tables">'
        f"{_html_table(PER_CLASS_HEADER, per_class_rows(metrics))}{_html_table(('summary', ''), summary_rows(metrics))}</div>"
        '<p class="note">Pixel scores come from one confusion matrix over all pixels of all evaluated images. '
        "Accuracy is the share of a class's pixels found (recall); dice is the per-class F1; BF1 is the boundary F1 score "
        "(tolerance 0.75% of the image diagonal), averaged over images; a dash means undefined (class absent).</p></section>",
        f'<section><h2>Confusion matrix</h2><div class="plot">{confusion}</div></section>',
        f"<section><h2>Object counts per image</h2>{counts}</section>",
        f"<section><h2>Objects found and image-level presence</h2>{detection}</section>",
        _gallery_section(rows, evaluation_dir, class_names, evaluation),
    ]
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>segnet report: {html.escape(run_name)}</title><style>{_CSS}</style></head>"
        f"<body><main>{''.join(sections)}</main></body></html>\n"
    )
    write_text_atomically(path, page, "report")
    return path
