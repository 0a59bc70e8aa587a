"""Where the windows go and how they are weighted; the flips and rotations of test-time augmentation.

Sliding-window inference (as in nnU-Net) keeps memory bounded on large images: the image is cut
into overlapping ``tile x tile`` windows whose starts are spread evenly so that the last window
ends exactly at the image edge; each window's softmax is weighted by a Gaussian importance map
(pixels near a window's centre saw more context than those at its border, so they count more).
Test-time augmentation uses the 8 dihedral views of the input (4 rotations x an optional flip).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    pass

# Weight of a window's outermost pixels relative to its centre. The Gaussian falls to ~1e-7 in the
# corners; a floor keeps every pixel covered by some weight without letting borders matter.
_MIN_IMPORTANCE = 1e-4

TileProgress = Callable[[int, int], None]
"""Called as ``progress(windows_done, windows_total)`` after each batch of windows.

It may raise to stop the prediction between batches (a viewer's Cancel button): the exception
propagates out of ``predict_proba``."""


def sliding_window_starts(length: int, tile: int, overlap: float, stride: int = 1) -> list[int]:
    """Start offsets of windows of size ``tile`` covering ``0..length`` along one axis.

    As nnU-Net's ``compute_steps_for_sliding_window``: the fewest windows whose step is at most
    ``tile * (1 - overlap)``, spread evenly so the first starts at 0 and the last ends exactly at
    the edge. With ``stride > 1`` everything is counted in whole strides: starts are multiples of
    ``stride`` (``tile`` must be one) and the edge is ``length`` rounded up to a multiple of it.
    A ``length`` no longer than ``tile`` gives one window at 0.
    """
    if length < 1 or tile < 1 or stride < 1:
        raise ValueError(f"length, tile and stride must be positive, got {length}, {tile} and {stride}")
    if tile % stride:
        raise ValueError(f"tile {tile} is not a multiple of the stride {stride}")
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    length_in_strides, tile_in_strides = -(-length // stride), tile // stride
    if length_in_strides <= tile_in_strides:
        return [0]
    span = length_in_strides - tile_in_strides
    target_step = max(tile_in_strides * (1 - overlap), 1.0)  # below one stride would repeat windows
    count = math.ceil(span / target_step) + 1
    actual_step = span / (count - 1)
    return [round(actual_step * index) * stride for index in range(count)]


def gaussian_importance_weights(height: int, width: int) -> np.ndarray:
    """``(height, width)`` float32 Gaussian weights, sigma = size / 8 per axis, peak 1.

    Values are clamped below at a small positive minimum, so a pixel covered only by window
    borders still gets a (tiny, but non-zero) weight and the final division is always defined.
    """

    def axis(size: int) -> np.ndarray:
        # Centred between the middle pixels, so the map is symmetric (flips and rotations of a
        # square window see the same weights, which keeps TTA consistent).
        offsets = np.arange(size, dtype=np.float64) - (size - 1) / 2
        return np.exp(-0.5 * (offsets / (size / 8)) ** 2)

    weights = axis(height)[:, None] * axis(width)[None, :]
    weights /= weights.max()
    return np.maximum(weights, _MIN_IMPORTANCE).astype(np.float32)


def _dihedral_views(tta: bool) -> list[tuple[int, bool]]:
    """``(quarter_turns, flip)`` pairs: all 8 symmetries of the square with TTA, else the identity."""
    if not tta:
        return [(0, False)]
    return [(turns, flip) for flip in (False, True) for turns in range(4)]


def _apply_view(batch: np.ndarray, turns: int, flip: bool) -> np.ndarray:
    """The ``(N, C, H, W)`` batch flipped left-right (if ``flip``), then turned ``turns`` quarters."""
    if flip:
        batch = batch[..., ::-1]
    return np.rot90(batch, turns, axes=(-2, -1))


def _undo_view(batch: np.ndarray, turns: int, flip: bool) -> np.ndarray:
    batch = np.rot90(batch, -turns, axes=(-2, -1))
    return batch[..., ::-1] if flip else batch
