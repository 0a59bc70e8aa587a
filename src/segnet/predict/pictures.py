"""Pictures of a prediction: class colours, overlays a lab can read, and predictive entropy as a heatmap.

The overlay ``segnet predict`` writes (:func:`annotated_overlay`) outlines every counted object
in its class colour, numbers it with its ``object_id`` in ``objects.csv`` and adds a legend of
the counts per class; with uncertainty, the region where the model is unsure is outlined too.
Fragments that are coloured but not outlined were not counted (smaller than ``--min-area``, or
removed by the clean-up before counting).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy.ndimage import maximum_filter, minimum_filter
from scipy.special import entr

from segnet.data.palette import class_palette, colorize
from segnet.evaluate.measure import ObjectLabels, ObjectMeasurement

# Fixed colours of the first classes: background black, erythrocytes red, spirochetes green.
# Further classes cycle through this qualitative colormap.
UNCERTAINTY_COLORMAP = "inferno"  # black when certain, so a confident darkfield field stays dark
_UNCERTAINTY_ALPHA = 0.5
UNSURE_ENTROPY = 0.5
"""A pixel is unsure where its predictive entropy is at least this fraction of the largest, ``log(C)``."""
UNSURE_COLOUR = (0, 191, 255)  # sky blue: apart from the red and green classes on a dark field
TEXT_COLOUR, TEXT_STROKE = (255, 255, 255), (0, 0, 0)  # white ids with a black rim: readable on any class and field
_FILL_ALPHA = 0.35  # lighter than a plain overlay, so the outlines stand out
_LEGEND_SHADE = 0.3  # the legend's box keeps this much of the picture below it
# Text and line sizes follow the image's short side: about 15 px type on a 528 px high darkfield
# image, never under 10 px (unreadable) nor over 28 px (hiding the cells of a large image).
_PIXELS_PER_TEXT_PIXEL = 36
_TEXT_SIZE_RANGE = (10, 28)
_PIXELS_PER_LINE_PIXEL = 300
# An object filling this much of its box (a disc fills 0.79) holds its id at its centre; a thinner
# or bent one (a spirochete) gets it beside its box, where the id hides none of it.
_COMPACT_FILL = 0.65


def predictive_entropy(proba: np.ndarray) -> np.ndarray:
    """Entropy ``-sum_c p log p`` in nats of ``(C, H, W)`` probabilities: ``(H, W)`` float32.

    0 where one class has all the probability, ``log(C)`` where all classes are equally likely.
    """
    return np.maximum(entr(proba.astype(np.float64)).sum(axis=0), 0.0).astype(np.float32)


def _blend(image: np.ndarray, colours: np.ndarray, alpha: np.ndarray | float) -> np.ndarray:
    """``(1 - alpha) * image + alpha * colours`` as uint8; ``alpha`` may be an ``H x W`` map."""
    if np.ndim(alpha) == 2:
        alpha = alpha[..., None]
    blended = (1 - alpha) * image.astype(np.float32) + alpha * colours.astype(np.float32)
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def overlay(image: np.ndarray, mask: np.ndarray, num_classes: int, alpha: float = 0.45) -> np.ndarray:
    """The image with each non-background pixel blended with its class colour (``alpha`` of it)."""
    if image.shape[:2] != mask.shape:
        raise ValueError(f"image size {image.shape[:2]} differs from mask size {mask.shape}")
    return _blend(image, colorize(mask, num_classes), np.where(mask > 0, np.float32(alpha), np.float32(0)))


def _uncertainty_overlay(image: np.ndarray, scaled_entropy: np.ndarray) -> np.ndarray:
    """Heatmap of entropy (scaled to 0..1) blended over the image."""
    heat = matplotlib.colormaps[UNCERTAINTY_COLORMAP](scaled_entropy)[..., :3] * 255
    return _blend(image, heat, _UNCERTAINTY_ALPHA)


@dataclass(frozen=True)
class ObjectTag:
    """Where an object's id is written: ``text`` at ``xy`` with PIL's ``anchor`` (``mm`` centred on it, ``lm``/``rm`` beside it)."""

    text: str
    xy: tuple[float, float]
    anchor: str


def text_size(shape: tuple[int, ...]) -> int:
    """The type size, in pixels, of ids and legend on an image of ``shape`` (H, W, ...)."""
    low, high = _TEXT_SIZE_RANGE
    return int(np.clip(round(min(shape[:2]) / _PIXELS_PER_TEXT_PIXEL), low, high))


def outline(labels: np.ndarray, width: int = 1) -> np.ndarray:
    """``(H, W)`` bool: the pixels of each non-zero label within ``width`` pixels of another label or the image edge."""
    size = 2 * width + 1
    inside = labels > 0
    near_other = (minimum_filter(labels, size, mode="constant", cval=0) != labels) | (
        maximum_filter(labels, size, mode="constant", cval=0) != labels
    )
    return inside & near_other


def object_tags(measurements: Sequence[ObjectMeasurement], size: int, image_width: int) -> list[ObjectTag]:
    """One tag per object: on a compact object large enough to hold its id, centred; else beside its box (a thin spirochete stays visible).

    Beside means right of the box, or left of it where the id would leave the image.
    """
    tags = []
    for measurement in measurements:
        text = str(measurement.object_id)
        text_width = size * (len(text) * 0.6 + 0.5)  # the default font's digits are about 0.6 em wide
        left, top, width, height = measurement.bbox
        compact = measurement.area >= _COMPACT_FILL * width * height
        if compact and min(width, height) >= text_width:
            tags.append(ObjectTag(text, (measurement.centroid_x, measurement.centroid_y), "mm"))
        elif left + width + 2 + text_width <= image_width:
            tags.append(ObjectTag(text, (left + width + 2, top + height / 2), "lm"))
        else:
            tags.append(ObjectTag(text, (left - 2, top + height / 2), "rm"))
    return tags


def annotated_overlay(
    image: np.ndarray,
    mask: np.ndarray,
    objects: ObjectLabels,
    measurements: Sequence[ObjectMeasurement],
    class_names: Sequence[str],
    counted: Sequence[int],
    unsure: np.ndarray | None = None,
) -> np.ndarray:
    """The overlay ``segnet predict`` writes: classes blended, counted objects outlined and numbered, a legend.

    ``objects`` and ``measurements`` are those of ``objects.csv`` (the ids drawn are its
    ``object_id``); ``counted`` the class indices the legend counts; ``unsure`` an optional
    ``(H, W)`` bool map outlined in :data:`UNSURE_COLOUR`. On an image too small to hold the
    legend (under about 100 pixels a side) only the colours and outlines are drawn.
    """
    palette = class_palette(len(class_names))
    picture = overlay(image, mask, len(class_names), alpha=_FILL_ALPHA)
    line = max(1, round(min(mask.shape) / _PIXELS_PER_LINE_PIXEL))
    if unsure is not None:
        picture[outline(unsure.astype(np.uint8), line)] = UNSURE_COLOUR
    edges = outline(objects.labels.astype(np.int32), line)
    object_class = np.array([0, *objects.object_classes], dtype=np.intp)
    picture[edges] = palette[object_class[objects.labels[edges]]]
    entries = [(tuple(palette[c].tolist()), f"{class_names[c]}: {objects.object_classes.count(c)}") for c in counted]
    if unsure is not None:
        entries.append((UNSURE_COLOUR, f"unsure: {unsure.mean():.1%} of pixels"))
    return _draw_text(picture, objects.labels > 0, measurements, entries)


def _draw_text(
    picture: np.ndarray,
    occupied: np.ndarray,
    measurements: Sequence[ObjectMeasurement],
    entries: Sequence[tuple[tuple[int, ...], str]],
) -> np.ndarray:
    """Write the objects' ids and the legend of ``entries`` (swatch colour, text) in the corner with fewest object pixels."""
    size = text_size(picture.shape)
    font = ImageFont.load_default(size=size)
    stroke = max(1, size // 8)
    canvas = Image.fromarray(picture)
    draw = ImageDraw.Draw(canvas)
    line_height = round(size * 1.3)
    text_width = max((draw.textlength(text, font=font) for _, text in entries), default=0.0)
    box_width, box_height = round(text_width + 2.2 * size), line_height * len(entries) + size // 2
    height, width = occupied.shape
    if box_width > width / 2 or box_height > height / 2:
        return picture
    for tag in object_tags(measurements, size, width):
        draw.text(
            tag.xy,
            tag.text,
            fill=TEXT_COLOUR,
            font=font,
            anchor=tag.anchor,
            stroke_width=stroke,
            stroke_fill=TEXT_STROKE,
        )
    corners = [(0, 0), (width - box_width, 0), (0, height - box_height), (width - box_width, height - box_height)]
    left, top = min(
        corners,
        key=lambda corner: occupied[corner[1] : corner[1] + box_height, corner[0] : corner[0] + box_width].sum(),
    )
    shaded = np.asarray(canvas).copy()
    shaded[top : top + box_height, left : left + box_width] = (
        shaded[top : top + box_height, left : left + box_width] * _LEGEND_SHADE
    )
    canvas = Image.fromarray(shaded)
    draw = ImageDraw.Draw(canvas)
    for row, (colour, text) in enumerate(entries):
        y = top + size // 4 + row * line_height + line_height / 2
        draw.rectangle((left + size * 0.4, y - size * 0.4, left + size * 1.2, y + size * 0.4), fill=colour)
        draw.text((left + size * 1.6, y), text, fill=TEXT_COLOUR, font=font, anchor="lm")
    return np.asarray(canvas)
