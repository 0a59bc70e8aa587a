"""Training pairs as tensors: the dataset the loop draws crops from, and normalisation."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import cv2
import numpy as np

from segnet.data.fingerprint import reference_scale
from segnet.data.pairs import Pair, load_pair

if TYPE_CHECKING:  # torch is imported where tensors are made, so ONNX inference (normalize_array) never loads it
    import torch


class SegmentationDataset:
    """Image/mask pairs as normalised ``(3, H, W)`` float tensors and ``(H, W)`` int64 masks.

    A map-style dataset (``__len__`` and ``__getitem__``) for ``torch.utils.data.DataLoader``; it does
    not subclass ``torch.utils.data.Dataset`` so that this module loads without torch (ONNX inference).

    Decoded arrays are cached in memory after the first read, so no epoch decodes a file twice
    (with ``preload=True`` they are decoded up front, before DataLoader workers fork and share them).
    ``decoded`` (stem -> (uint8 image, uint8 mask), as :func:`load_pair` reads them) fills the
    cache with pairs decoded before, e.g. by the data check. ``transform`` is an albumentations
    pipeline taking ``image=`` and ``mask=`` numpy arrays. ``reference_diameter`` ``(class, px)``:
    each pair is first rescaled so the objects of that class in its mask measure ``px`` across
    (:func:`reference_scale`), so every image is seen at one magnification before the transform's
    own random scale.
    """

    def __init__(
        self,
        pairs: Sequence[Pair],
        num_classes: int,
        mean: Sequence[float],
        std: Sequence[float],
        transform: Callable | None = None,
        preload: bool = False,
        palette: Mapping[int, Sequence[int]] | None = None,
        decoded: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
        reference_diameter: tuple[int, float] | None = None,
    ) -> None:
        self.pairs = list(pairs)
        self.reference_diameter = reference_diameter
        self._rescaled: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.num_classes = num_classes
        self.set_normalization(mean, std)
        self.transform = transform
        self.palette = palette
        decoded = decoded or {}
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {
            index: decoded[pair.stem] for index, pair in enumerate(self.pairs) if pair.stem in decoded
        }
        if preload:
            for index in range(len(self.pairs)):
                self.load(index)

    def __len__(self) -> int:
        return len(self.pairs)

    def set_normalization(self, mean: Sequence[float], std: Sequence[float]) -> None:
        """Standardise with ``mean``/``std`` given per channel on [0, 1] images."""
        self.mean = np.asarray(mean, dtype=np.float32) * 255.0
        self.std = np.asarray(std, dtype=np.float32) * 255.0

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The decoded (uint8 image, uint8 mask) of pair ``index``, cached."""
        if index not in self._cache:
            self._cache[index] = load_pair(self.pairs[index], self.num_classes, self.palette)
        return self._cache[index]

    def load_rescaled(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Pair ``index`` at the reference magnification, cached (a resize per crop would cost more than the crop)."""
        if index not in self._rescaled:
            image, mask = self.load(index)
            class_index, diameter = self.reference_diameter
            factor = reference_scale(mask == class_index, diameter)
            if factor != 1.0:
                size = (max(1, round(image.shape[1] * factor)), max(1, round(image.shape[0] * factor)))
                image = cv2.resize(image, size, interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR)
                mask = cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST)
            self._rescaled[index] = (image, mask)
        return self._rescaled[index]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        # torch only where tensors are made: ONNX inference reads images without it
        import torch

        image, mask = self.load(index) if self.reference_diameter is None else self.load_rescaled(index)
        if self.transform is not None:
            out = self.transform(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
        return normalize(image, self.mean, self.std), torch.from_numpy(np.ascontiguousarray(mask)).long()


def normalize_array(image: np.ndarray, mean_255: np.ndarray, std_255: np.ndarray) -> np.ndarray:
    """uint8 ``H x W x 3`` -> contiguous float32 ``(3, H, W)`` numpy array, standardised with mean/std on 0..255."""
    array = (image.astype(np.float32) - mean_255) / std_255
    return np.ascontiguousarray(array.transpose(2, 0, 1))


def normalize(image: np.ndarray, mean_255: np.ndarray, std_255: np.ndarray) -> torch.Tensor:
    """:func:`normalize_array` as a torch tensor (sharing its memory)."""
    # torch only where tensors are made: ONNX inference reads images without it
    import torch

    return torch.from_numpy(normalize_array(image, mean_255, std_255))
