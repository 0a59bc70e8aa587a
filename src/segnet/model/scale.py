"""Per-image scale: segment each image at the object size the model learnt (cellpose's size model, simply).

The darkfield images come from several magnifications (the median red-cell diameter per image runs
from 18 to 290 px in the public dataset), and a network finds structures at the sizes it was
trained on: at low magnification spirochetes are a few pixels thick and vanish at the model's
resolution. :class:`Rescaled` wraps any predictor. The image is resized so that its red cells (the
first solid class) come to the model's reference diameter, the median over its training masks
(``class_diameter`` in the checkpoint's fingerprint, measured by :func:`segnet.data.object_diameter`),
segmented, and the probabilities are resized back to the image.

A user who knows the cells' size gives it (``diameter``, in pixels; one pass). Otherwise it is
estimated per image: a first pass on the image as given measures the predicted cells, cleaned as
counting cleans them (:mod:`segnet.data.cleaning`: a lone speck sets no scale; their 75th
percentile diameter, which reads past the fragments of cells a pass at the wrong scale finds).
The estimate is checked on the rescaled pass: if the cells found there say the first factor went
too far (a smaller enlargement or shrinkage, beyond ``tolerance``), the image is segmented once
more at that corrected factor (at most three passes; cellpose also refines its size estimate
from a first set of masks). A correction that asks for more of the same is not followed:
fragments found at every scale would blow the image up to the limit (measured:
docs/decisions.md). Images whose first pass finds no cell, or whose scale is already within
``tolerance`` of the reference, keep the first pass; so does an image whose rescaled pass finds
no cell at all, or finds cells that say the factor should go the other way (enlarge where the
first pass said shrink, or the reverse: the estimates contradict each other).
"""

from __future__ import annotations

import logging
import math
from typing import Any, Literal, Protocol

import numpy as np
from PIL import Image
from skimage.transform import resize

from segnet.core.errors import SegnetError
from segnet.data.classes import ClassRoles
from segnet.data.cleaning import clean_prediction
from segnet.data.fingerprint import SCALE_LIMITS, object_diameter, size_factor
from segnet.data.pairs import class_mask
from segnet.model.options import AS_GIVEN_DIAMETER, AUTO_DIAMETER
from segnet.model.windows import TileProgress

logger = logging.getLogger(__name__)

ESTIMATE_QUANTILE = 0.75
"""Which quantile of the predicted cells' diameters estimates an image's scale (measured against
the median, the area-weighted median and others: docs/decisions.md)."""


class _Segmenter(Protocol):
    class_names: list[str]
    roles: ClassRoles
    reference_diameters: list[float | None] | None

    def predict_proba(self, image: np.ndarray, *, progress: TileProgress | None = None) -> np.ndarray: ...


def scale_factor(
    diameter: float | None, reference: float, limits: tuple[float, float] = SCALE_LIMITS, tolerance: float = 1.25
) -> float:
    """How much to enlarge an image whose objects measure ``diameter`` so they measure ``reference``.

    Clipped to ``limits`` (a wrong first-pass estimate cannot blow an image up without bound); 1
    where the diameter is unknown or already within a factor ``tolerance`` of the reference (the
    training crops' scale jitter covers that much).
    """
    factor = size_factor(diameter, reference, limits)
    return 1.0 if abs(math.log(factor)) <= math.log(tolerance) else factor


def _recorded_reference(predictor: _Segmenter) -> float | None:
    """The reference diameter of the predictor's first solid class, as its model records it."""
    recorded = predictor.reference_diameters
    solid = predictor.roles.solid
    return recorded[solid[0]] if solid and recorded is not None and len(recorded) > solid[0] else None


def _why_not_rescalable(predictor: _Segmenter, reference: float | None) -> str | None:
    """Why ``predictor``'s images cannot be segmented at a reference cell size; ``None`` if they can."""
    if not predictor.roles.solid:
        return f"per-image scale needs a solid class to measure (class_roles); {predictor.class_names} has none"
    if not (isinstance(reference, int | float) and 0 < reference < math.inf):
        return (
            f"the model records no usable reference cell size ({reference!r}; "
            "a checkpoint, or an ONNX file exported from one, of an older segnet)"
        )
    return None


def rescaler(predictor: _Segmenter, diameter: float | Literal["auto"] | None) -> Rescaled | None:
    """What segments ``predictor``'s images at ``diameter`` (:attr:`InferenceOptions.diameter`); ``None``: as given.

    ``auto``, the default, falls back to each image as given for a model that cannot be rescaled (no
    solid class, or no reference size: a model of an older segnet), saying so in the log; a
    diameter in pixels for such a model is an error.
    """
    if diameter is None:
        return None
    if diameter == AUTO_DIAMETER and (reason := _why_not_rescalable(predictor, _recorded_reference(predictor))):
        logger.warning("%s: each image is segmented as given", reason)
        return None
    return Rescaled(predictor, diameter)


class Rescaled:
    """A predictor that segments each image at the model's reference object size (module docstring).

    Args:
        predictor: a :class:`~segnet.predict.Predictor` or :class:`~segnet.predict.Ensemble`.
        diameter: the red cells' diameter in the images, in pixels, or :data:`~segnet.model.options.AUTO_DIAMETER` to estimate it per image.
        reference: the diameter the model was trained at; ``None``: the one its checkpoint records.
        limits, tolerance: as for :func:`scale_factor`.
        refine: check an estimated factor on the rescaled pass and correct it (module docstring);
            ``False``: the first pass's estimate is final (two passes at most).

    Raises:
        SegnetError: the predictor has no solid class to measure, or no reference diameter is
            given or recorded (:func:`rescaler` lets ``auto`` fall back to the images as given).
    """

    def __init__(
        self,
        predictor: _Segmenter,
        diameter: float | Literal["auto"] = AUTO_DIAMETER,
        *,
        reference: float | None = None,
        limits: tuple[float, float] = SCALE_LIMITS,
        tolerance: float = 1.25,
        refine: bool = True,
    ) -> None:
        reference = _recorded_reference(predictor) if reference is None else reference
        if reason := _why_not_rescalable(predictor, reference):
            raise SegnetError(f"{reason}: segment each image as given (--diameter {AS_GIVEN_DIAMETER})")
        self.class_id = predictor.roles.solid[0]
        self.roles = predictor.roles
        self.predictor = predictor
        self.reference = reference
        self.diameter = diameter
        self.limits = limits
        self.tolerance = tolerance
        self.refine = refine
        self.class_names = predictor.class_names
        self.factors: list[float] = []
        """The factors the latest image was segmented at, pass by pass (1: as given)."""
        self.last_factor = 1.0
        """The factor of the pass the latest image's answer comes from."""

    def __getattr__(self, name: str) -> Any:  # num_classes, device, samples_uncertainty: the wrapped predictor's
        return getattr(self.predictor, name)

    def predict_proba(self, image: np.ndarray, *, progress: TileProgress | None = None) -> np.ndarray:
        """Softmax probabilities ``(C, H, W)`` at the image's own size, segmented at the reference scale."""
        self.factors = []
        if self.diameter != AUTO_DIAMETER:
            return self._at(
                image, scale_factor(float(self.diameter), self.reference, self.limits, self.tolerance), progress
            )
        first = self._at(image, 1.0, progress)
        factor = scale_factor(self._cell_diameter(first), self.reference, self.limits, self.tolerance)
        if factor == 1.0:
            return first
        second = self._at(image, factor, progress)
        if not self.refine:
            return second
        measured = self._cell_diameter(second)  # at the image's size, whatever scale it was segmented at
        corrected = scale_factor(measured, self.reference, self.limits, self.tolerance)
        if measured is None or math.log(corrected) * math.log(factor) <= 0:  # no cell, or the passes contradict
            self.last_factor = 1.0
            return first
        if abs(math.log(corrected / factor)) <= math.log(self.tolerance) or abs(math.log(corrected)) > abs(
            math.log(factor)
        ):
            return second  # confirmed; or it asks for more of the same, as fragments found at every scale do
        return self._at(image, corrected, progress)

    def predict(self, image: np.ndarray) -> np.ndarray:
        """Class index per pixel: ``H x W`` (the argmax of :meth:`predict_proba`; uint8, uint16 beyond 256 classes)."""
        return class_mask(self.predict_proba(image))

    def _cell_diameter(self, proba: np.ndarray) -> float | None:
        """The cells' diameter in ``proba`` (at the image's size, whatever scale it was segmented at):
        the 75th percentile over the cells counting would count (the prediction cleaned as for
        counting, so a lone speck taken for a cell in an image without cells sets no scale), which
        reads past the fragments found at the wrong scale."""
        cells = clean_prediction(class_mask(proba), self.roles) == self.class_id
        return object_diameter(cells, quantile=ESTIMATE_QUANTILE)

    def _at(self, image: np.ndarray, factor: float, progress: TileProgress | None) -> np.ndarray:
        """The wrapped predictor's probabilities for ``image`` enlarged by ``factor``, at the image's size."""
        self.factors.append(factor)
        self.last_factor = factor
        if factor == 1.0:
            return self.predictor.predict_proba(image, progress=progress)
        height, width = image.shape[:2]
        size = (max(1, round(width * factor)), max(1, round(height * factor)))
        resized = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))
        proba = self.predictor.predict_proba(resized, progress=progress)
        back = resize(proba.transpose(1, 2, 0), (height, width), order=1, mode="edge", anti_aliasing=factor > 1)
        back = back.transpose(2, 0, 1).astype(np.float32)
        return back / back.sum(axis=0, keepdims=True)
