"""The plan of a training run: what the data decides, resolved once and written to ``RUN/plan.json``.

As in nnU-Net, the stages run one way: the training images' fingerprint
(:func:`segnet.data.compute_fingerprint`, ``RUN/fingerprint.json``) -> the plan (:func:`make_plan`,
``RUN/plan.json``) -> the data loaders and the model -> the loop. The plan holds every value
derived from the data or from the process layout: the crop side, the model's resolution
(downsample), the class the crops are centred on, the input normalisation, the loss's class
weights and the batch per process. ``segnet train --resume`` reads it back, so a resumed run
trains with its own plan, even on images changed since (:func:`read_plan`).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from pydantic import ConfigDict, Field, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass as pydantic_dataclass

from segnet.core.errors import DataError, SegnetError
from segnet.core.readback import read_bounded_text
from segnet.data.classes import ClassRoles
from segnet.data.pairs import ChannelMeans, ChannelStds, FiniteNumber
from segnet.plan.config import TrainConfig
from segnet.plan.weights import class_weights

MIN_MODEL_THICKNESS = 3
"""Pixels of thickness the thinnest class keeps at model resolution when downsample is automatic.
Real spirochetes are about 11 px thick (downsample 3: measured best per CPU minute, see
docs/decisions.md), the synthetic ones 3.5 px (downsample 1)."""
MAX_DOWNSAMPLE = 4
GRID = 32
"""Crops are multiples of this many model pixels (the deepest model's total stride)."""
MAX_MODEL_CROP = 256
"""The largest crop side in model pixels: the size the throughput budget allows."""

_Positive = Annotated[int, Field(ge=1)]


@pydantic_dataclass(frozen=True, config=ConfigDict(strict=True))
class TrainPlan:
    """What one run trains with, beyond its config (``RUN/plan.json``).

    Attributes:
        image_size: side of the square training crops, in image pixels.
        downsample: the model runs at 1/downsample of the image resolution.
        focus_class: the rarest class present, which crops are centred on with the config's
            ``focus_probability`` (``None``: no class is present).
        mean, std: the model's input normalisation, per RGB channel on [0, 1].
        class_weights: the loss's weight per class (``None``: unweighted).
        batch_size: images per optimisation step over all processes.
        per_process_batch: images per step in each process.
        reference_diameter: with ``scale_to_reference``, the red cells' diameter (px) each training
            image is rescaled to, and the class measured: ``(class index, diameter)``; else ``None``.
    """

    image_size: _Positive
    downsample: _Positive
    focus_class: Annotated[int, Field(ge=0)] | None
    mean: ChannelMeans
    std: ChannelStds
    class_weights: list[Annotated[FiniteNumber, Field(ge=0)]] | None
    batch_size: _Positive
    per_process_batch: _Positive
    reference_diameter: tuple[Annotated[int, Field(ge=0)], Annotated[FiniteNumber, Field(gt=0)]] | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_PLAN = TypeAdapter(TrainPlan)


def automatic_downsample(fingerprint: dict) -> int:
    """The largest factor (up to ``MAX_DOWNSAMPLE``) that keeps the thinnest foreground class at
    least ``MIN_MODEL_THICKNESS`` pixels thick at model resolution: thin structures need the
    pixels, thick ones gain field of view."""
    thickness = [t for t in fingerprint.get("class_thickness", [])[1:] if t is not None]
    return int(min(MAX_DOWNSAMPLE, max(1, min(thickness) // MIN_MODEL_THICKNESS))) if thickness else 1


def crop_size(requested: int | None, downsample: int, fingerprint: dict) -> int:
    """The crop side: ``requested``, or the largest multiple of 32 x downsample up to
    256 x downsample that fits the median image, so small images are not padded.

    Raises:
        SegnetError: ``requested`` is larger than the largest image (padded to the model's grid):
            a crop of padding only, which at a huge size fails allocating inside OpenCV.
    """
    unit = GRID * downsample
    largest = max(fingerprint["height"]["max"], fingerprint["width"]["max"])
    if requested is not None and requested > -(-largest // unit) * unit:
        raise SegnetError(
            f"--image-size {requested} is larger than the largest training image ({largest} px a side; "
            f"at most {-(-largest // unit) * unit} at downsample {downsample}): choose a smaller crop or leave it to the data"
        )
    median_side = min(fingerprint["height"]["median"], fingerprint["width"]["median"])
    return requested or int(max(unit, min(MAX_MODEL_CROP * downsample, median_side // unit * unit)))


def rarest_class(fingerprint: dict) -> int | None:
    """The class with the fewest pixels among those present."""
    frequencies = np.asarray(fingerprint["class_frequencies"])
    present = np.flatnonzero(frequencies > 0)
    return int(present[np.argmin(frequencies[present])]) if present.size else None


def reference_diameter(config: TrainConfig, fingerprint: dict) -> tuple[int, float]:
    """The first solid class and its median object diameter over the training masks.

    Raises:
        SegnetError: no class has the solid role, or the training masks hold none of its objects.
    """
    roles = ClassRoles.of(config.classes, config.class_roles)
    if not roles.solid:
        raise SegnetError("scale_to_reference needs a solid class (class_roles) whose size sets each image's scale")
    solid = roles.solid[0]
    diameter = fingerprint["class_diameter"][solid]
    if diameter is None:
        raise SegnetError(f"scale_to_reference: no {config.classes[solid]} object in the training masks to measure")
    return solid, diameter


def make_plan(
    config: TrainConfig, fingerprint: dict, world_size: int = 1, recorded: TrainPlan | None = None
) -> TrainPlan:
    """Resolve the run's plan from its config and the training images' fingerprint.

    Values the config sets (``image_size``, ``downsample``) are kept; the others are derived from
    the data. With ``recorded`` (the plan of a run being resumed), the data-derived values are the
    recorded ones: a resumed run keeps its resolution, crops, normalisation and class weights.
    """
    if recorded is not None:
        downsample = config.downsample or recorded.downsample
        image_size = crop_size(config.image_size or recorded.image_size, downsample, fingerprint)
        derived = {
            key: getattr(recorded, key) for key in ("focus_class", "mean", "std", "class_weights", "reference_diameter")
        }
    else:
        downsample = config.downsample or automatic_downsample(fingerprint)
        image_size = crop_size(config.image_size, downsample, fingerprint)
        derived = {
            "focus_class": rarest_class(fingerprint),
            "mean": list(fingerprint["mean"]),
            "std": list(fingerprint["std"]),
            "class_weights": class_weights(fingerprint["class_presence_frequencies"], config.class_weights),
            "reference_diameter": reference_diameter(config, fingerprint) if config.scale_to_reference else None,
        }
    return TrainPlan(
        image_size=image_size,
        downsample=downsample,
        batch_size=config.batch_size,
        per_process_batch=max(1, config.batch_size // world_size),
        **derived,
    )


def plan_json(plan: TrainPlan) -> str:
    """The text of ``RUN/plan.json``."""
    return json.dumps(plan.to_dict(), indent=1)


def read_plan(path: str | Path) -> TrainPlan:
    """Read ``RUN/plan.json`` back, checked against :class:`TrainPlan`.

    Raises:
        DataError: the file cannot be read, is not JSON, or is not a plan (the key named).
    """
    path = Path(path)
    try:
        return _PLAN.validate_json(read_bounded_text(path, "training plan"))
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "the file"
        raise DataError(
            path, f"not a training plan: {where}: {first['msg'].lower()}; train the run again with --overwrite"
        ) from error
