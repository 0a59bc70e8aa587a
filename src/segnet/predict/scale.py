"""Per-image scale: segment each image at the object size the model learnt (cellpose's size model, simply).

The darkfield images come from several magnifications (the median red-cell diameter per image runs
from 18 to 290 px in the public dataset), and a network finds structures at the sizes it was
trained on: at low magnification spirochetes are a few pixels thick and vanish at the model's
resolution. :class:`Rescaled` wraps any predictor. A first pass on the image as given finds the
objects of a solid reference class (the red cells: the objects counting uses), whose median
equivalent diameter measures the image's scale; the image is resized so that diameter comes to
the model's reference diameter (the median over its training images) and segmented again, and the
probabilities are resized back to the image. A user who knows the size gives ``diameter`` and
skips the first pass. Images where the first pass finds no reference object, or whose scale is
already within ``tolerance`` of the reference, keep the first pass.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import numpy as np
from PIL import Image
from skimage.measure import regionprops
from skimage.transform import resize

from segnet import MIN_AREA
from segnet.config import ClassRoles
from segnet.counting import label_objects
from segnet.errors import SegnetError
from segnet.predict.windows import TileProgress


class _Segmenter(Protocol):
    class_names: list[str]
    roles: ClassRoles

    def predict_proba(self, image: np.ndarray, *, progress: TileProgress | None = None) -> np.ndarray: ...


def median_object_diameter(mask: np.ndarray, class_id: int, min_area: int = MIN_AREA) -> float | None:
    """The median equivalent diameter (px) of the objects of ``class_id`` in a class mask; ``None`` without any.

    The objects are those counting finds (touching cells split), so two cells in contact do not
    read as one large one.
    """
    labels, count = label_objects(mask, class_id, min_area=min_area, split=True)
    if count == 0:
        return None
    return float(np.median([region.equivalent_diameter_area for region in regionprops(labels)]))


def scale_factor(diameter: float | None, reference: float, limits: tuple[float, float] = (0.5, 4.0), tolerance: float = 1.25) -> float:
    """How much to enlarge an image whose objects measure ``diameter`` so they measure ``reference``.

    Clipped to ``limits`` (a wrong first-pass estimate cannot blow an image up without bound); 1
    where the diameter is unknown or already within a factor ``tolerance`` of the reference (the
    training crops' scale jitter covers that much).
    """
    if diameter is None or diameter <= 0:
        return 1.0
    factor = min(max(reference / diameter, limits[0]), limits[1])
    return 1.0 if abs(math.log(factor)) <= math.log(tolerance) else factor


class Rescaled:
    """A predictor that segments each image at the model's reference object size (module docstring).

    Args:
        predictor: a :class:`~segnet.predict.Predictor` or :class:`~segnet.predict.Ensemble`.
        reference: the object diameter in pixels the model was trained at.
        class_id: the solid class whose objects measure the scale; ``None``: the predictor's first
            solid class (``roles``; the erythrocytes in the darkfield classes).
        diameter: the objects' diameter in the images, if known (no first pass); ``None``: estimated per image.
        limits, tolerance: as for :func:`scale_factor`.
    """

    def __init__(
        self,
        predictor: _Segmenter,
        reference: float,
        *,
        class_id: int | None = None,
        diameter: float | None = None,
        limits: tuple[float, float] = (0.5, 4.0),
        tolerance: float = 1.25,
    ) -> None:
        self.predictor = predictor
        self.reference = reference
        if class_id is None and not predictor.roles.solid:
            raise SegnetError(f"per-image scale needs a solid class to measure (class_roles); {predictor.class_names} has none")
        self.class_id = class_id if class_id is not None else predictor.roles.solid[0]
        self.diameter = diameter
        self.limits = limits
        self.tolerance = tolerance
        self.class_names = predictor.class_names
        self.last_factor = 1.0
        """The factor the latest image was segmented at (1: as given)."""

    def __getattr__(self, name: str) -> Any:  # num_classes, device, samples_uncertainty: the wrapped predictor's
        return getattr(self.predictor, name)

    def predict_proba(self, image: np.ndarray, *, progress: TileProgress | None = None) -> np.ndarray:
        """Softmax probabilities ``(C, H, W)`` at the image's own size, segmented at the reference scale."""
        first = None
        diameter = self.diameter
        if diameter is None:
            first = self.predictor.predict_proba(image, progress=progress)
            diameter = median_object_diameter(first.argmax(axis=0), self.class_id)
        self.last_factor = scale_factor(diameter, self.reference, self.limits, self.tolerance)
        if self.last_factor == 1.0:
            return first if first is not None else self.predictor.predict_proba(image, progress=progress)
        height, width = image.shape[:2]
        size = (max(1, round(width * self.last_factor)), max(1, round(height * self.last_factor)))
        resized = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))
        proba = self.predictor.predict_proba(resized, progress=progress)
        back = resize(proba.transpose(1, 2, 0), (height, width), order=1, mode="edge", anti_aliasing=self.last_factor > 1)
        back = back.transpose(2, 0, 1).astype(np.float32)
        return back / back.sum(axis=0, keepdims=True)

    def predict(self, image: np.ndarray) -> np.ndarray:
        """Class index per pixel: ``H x W`` uint8 (the argmax of :meth:`predict_proba`)."""
        return self.predict_proba(image).argmax(axis=0).astype(np.uint8)
