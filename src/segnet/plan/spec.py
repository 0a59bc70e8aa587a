"""The model spec: the few values that build a network, as one typed value.

:class:`ModelSpec` is what :func:`segnet.model.build_model` takes, what a checkpoint stores under
``model`` (as a plain dict, :meth:`ModelSpec.to_dict`), what an ONNX file's metadata and a
bioimage.io package's architecture kwargs are written from, and what every reader rebuilds the
model from. :meth:`ModelSpec.from_dict` reads such a dict: a field left out takes its default, and
a retired one (:mod:`segnet.plan.retired`) is dropped where it did nothing.

This module imports nothing heavy, so the command line and the torch-free ONNX path can use it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segnet.core.errors import CheckpointError, SegnetError
from segnet.plan.retired import without_retired

# Encoder stages (2x2 max-pools) of each model: the total stride is 2 ** stages x downsample.
_ENCODER_STAGES = {
    "segnet": 5,
    "segnet-basic": 4,
    "bayesian-segnet": 5,
    "bayesian-segnet-basic": 4,
    "unet": 4,
}
MODEL_NAMES: tuple[str, ...] = tuple(_ENCODER_STAGES)
"""Every model :func:`segnet.model.build_model` builds (module docs of :mod:`segnet.model`)."""
_REGISTERED_STAGES: dict[str, int] = {}
"""Architectures added in this process by :func:`segnet.model.register_model`: name -> 2x2 poolings."""
DEFAULT_MODEL = "unet"
LARGEST_DOWNSAMPLE = 16
"""The most a model may shrink its input: at 1/16 a typical 694x528 image is 43x33 model pixels;
beyond it nothing is left to segment, and a forged checkpoint's huge factor would pad every
image to a huge grid and run out of memory instead of being refused."""


def register_model_name(name: str, poolings: int) -> None:
    """Let a :class:`ModelSpec` name an architecture built outside segnet, in this process only
    (:func:`segnet.model.register_model` calls this); its total stride is ``2 ** poolings x downsample``.

    Raises:
        SegnetError: ``name`` is a built-in model, or ``poolings`` is negative.
    """
    if name in _ENCODER_STAGES:
        raise SegnetError(f"{name!r} is a built-in model; register another name")
    if isinstance(poolings, bool) or not isinstance(poolings, int) or poolings < 0:
        raise SegnetError(f"poolings must be a whole number from 0, got {poolings!r}")
    _REGISTERED_STAGES[name] = poolings


def model_names() -> tuple[str, ...]:
    """The models this process builds: :data:`MODEL_NAMES`, then those registered (:func:`register_model_name`)."""
    return MODEL_NAMES + tuple(_REGISTERED_STAGES)


def _positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SegnetError(f"{name} must be a positive integer, got {value!r}")


@dataclass(frozen=True)
class ModelSpec:
    """Everything that builds a network; two equal specs build the same architecture.

    Attributes:
        name: one of :data:`MODEL_NAMES`, or a name registered in this process (:func:`register_model_name`).
        num_classes: output channels, one per class.
        in_channels: input channels (3: segnet reads RGB images).
        downsample: the network runs at 1/downsample of the input resolution (:mod:`segnet.model`).
        space_to_depth: reach 1/downsample by ``pixel_unshuffle`` and draw full-resolution logits
            with a sub-pixel head (:mod:`segnet.model`), instead of averaging and upsampling alone.

    Raises:
        SegnetError: an unknown name (the message lists the valid ones), a count below 1 or a
            downsample above :data:`LARGEST_DOWNSAMPLE`.
    """

    name: str
    num_classes: int
    in_channels: int = 3
    downsample: int = 1
    space_to_depth: bool = False

    def __post_init__(self) -> None:
        if self.name not in model_names():
            raise SegnetError(f"unknown model {self.name!r}; valid models: {', '.join(model_names())}")
        for field in ("num_classes", "in_channels", "downsample"):
            _positive_int(field, getattr(self, field))
        if self.downsample > LARGEST_DOWNSAMPLE:
            raise SegnetError(f"downsample must be at most {LARGEST_DOWNSAMPLE}, got {self.downsample}")
        if not isinstance(self.space_to_depth, bool):
            raise SegnetError(f"space_to_depth must be true or false, got {self.space_to_depth!r}")

    @property
    def poolings(self) -> int:
        """How many times the network halves its input (2x2 max-pools)."""
        return {**_ENCODER_STAGES, **_REGISTERED_STAGES}[self.name]

    @property
    def total_stride(self) -> int:
        """Inputs are zero-padded to a multiple of this; tiles aligned to it see one pooling grid."""
        return self.downsample * 2**self.poolings

    @property
    def bayesian(self) -> bool:
        """Whether the model has dropout layers (Monte Carlo dropout works)."""
        return self.name.startswith("bayesian")

    def to_dict(self) -> dict[str, Any]:
        """The plain dict a checkpoint stores (and bioimage.io's architecture kwargs)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], path: str | Path) -> ModelSpec:
        """The spec stored at ``path`` (a checkpoint's model, a bioimage.io package's kwargs).

        A field left out takes its default (the checkpoint layout requires all but
        ``space_to_depth``, which the shipped ``darkfield.pt`` predates: :mod:`segnet.model.checkpoint`).
        Files from before ``detail_width`` was retired hold it, 0 where the model has no detail branch.

        Raises:
            CheckpointError: not a mapping, a retired setting (:func:`segnet.plan.retired.without_retired`),
                an unknown key, a missing name or class count, or a value :class:`ModelSpec`
                refuses; the message names ``path``.
        """
        if not isinstance(values, Mapping):
            raise CheckpointError(
                f"{path}: the model spec is {type(values).__name__}, not a mapping of name, num_classes, ..."
            )
        values = without_retired(values, path, CheckpointError)
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        missing = [key for key in ("name", "num_classes") if key not in values]
        if unknown or missing:
            problem = f"unknown keys {unknown}" if unknown else f"no {', '.join(missing)}"
            raise CheckpointError(f"{path}: the model spec has {problem}; it holds {', '.join(sorted(known))}")
        try:
            return cls(**values)
        except SegnetError as error:
            raise CheckpointError(f"{path}: {error}") from None
