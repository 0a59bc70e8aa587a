"""How a model is run on whole images: the one set of inference options every caller takes.

``segnet predict``, ``evaluate``, ``report`` and ``calibrate``, :func:`segnet.evaluate.evaluate_run`,
cross-validation, decision calibration, training-time validation, the napari plugin and the Python
API (:class:`~segnet.predict.Predictor`) all take an :class:`InferenceOptions`, so a default is
defined here once. Test-time augmentation is on by default everywhere: on the real darkfield images
it raised the held-out mean IoU from 0.740 to 0.755 for 8x the compute (docs/decisions.md).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

from segnet.core.errors import SegnetError

AUTO_DIAMETER: Literal["auto"] = "auto"
"""The ``diameter`` that asks for a per-image estimate of the cells' size (``--diameter auto``, the default)."""
AS_GIVEN_DIAMETER = "none"
"""What a user types for no rescaling (``--diameter none``, the napari field): each image as given."""


@dataclass(frozen=True)
class InferenceOptions:
    """How a :class:`~segnet.predict.Predictor` runs its model.

    Attributes:
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda[:N]``; for an ONNX file ``auto``,
            ``cpu`` or ``cuda`` (an onnxruntime provider).
        tile: window side for sliding-window inference, rounded down to a multiple of the model's
            total stride; ``None`` runs each image whole.
        overlap: share of a window that its neighbour overlaps (the step is at most ``tile * (1 - overlap)``).
        batch_size: windows per forward pass.
        tta: average the softmax over the 8 flips and 90-degree rotations of the input (8x compute).
        mc_samples: with ``N > 0``, keep dropout sampling and average ``N`` stochastic passes (a
            PyTorch checkpoint of a bayesian model); the spread shows as an uncertainty map.
        diameter: segment each image enlarged or shrunk so its red cells come to the size the
            model was trained at (:mod:`segnet.predict.scale`): their diameter in the images in
            pixels, or :data:`AUTO_DIAMETER` to estimate it per image; ``None``: each image as given.
            ``auto`` by default (measured on both held-out splits: docs/decisions.md); code that
            measures the network as trained (validation, calibration, benchmarks) asks for ``None``.
    """

    device: str = "auto"
    tile: int | None = None
    overlap: float = 0.25
    batch_size: int = 4
    tta: bool = True
    mc_samples: int = 0
    diameter: float | Literal["auto"] | None = AUTO_DIAMETER

    def __post_init__(self) -> None:
        if self.tile is not None and self.tile < 1:
            raise SegnetError(f"tile size must be a positive number of pixels, got {self.tile}")
        if not 0 <= self.overlap < 1:
            raise SegnetError(f"tile overlap must be at least 0 and below 1, got {self.overlap}")
        if self.batch_size < 1:
            raise SegnetError(f"batch size must be at least 1, got {self.batch_size}")
        if self.mc_samples < 0:
            raise SegnetError(f"Monte Carlo samples must be 0 (off) or more, got {self.mc_samples}")
        if (
            self.diameter is not None
            and self.diameter != AUTO_DIAMETER
            and not (isinstance(self.diameter, int | float) and 0 < self.diameter < math.inf)
        ):
            raise SegnetError(
                f"the cell diameter must be a positive number of pixels or '{AUTO_DIAMETER}', got {self.diameter!r}"
            )

    def replace(self, **changes: Any) -> InferenceOptions:
        """A copy with ``changes`` (checked as a new object is)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The options, JSON-ready (recorded in an evaluation's ``metrics.json``)."""
        return dataclasses.asdict(self)


DEFAULT_INFERENCE = InferenceOptions()
"""The options ``segnet predict``, ``segnet evaluate`` and the napari plugin run with unless told otherwise."""


def parse_diameter(text: str) -> float | Literal["auto"] | None:
    """A cell diameter as a user types it (``--diameter``, the napari field): pixels,
    :data:`AUTO_DIAMETER`, or :data:`AS_GIVEN_DIAMETER` (``None``: each image as given).

    Raises:
        SegnetError: neither a positive finite number nor one of those words.
    """
    text = text.strip()
    if text.lower() == AUTO_DIAMETER:
        return AUTO_DIAMETER
    if text.lower() == AS_GIVEN_DIAMETER:
        return None
    try:
        value = float(text)
    except ValueError:
        raise SegnetError(
            f"the cell diameter must be a number of pixels, '{AUTO_DIAMETER}' or '{AS_GIVEN_DIAMETER}', got {text!r}"
        ) from None
    return InferenceOptions(diameter=value).diameter  # checked where every caller's options are


def diameter_text(diameter: float | Literal["auto"] | None) -> str:
    """A diameter as a user types it: what :func:`parse_diameter` reads back as ``diameter``."""
    return AS_GIVEN_DIAMETER if diameter is None else str(diameter)
