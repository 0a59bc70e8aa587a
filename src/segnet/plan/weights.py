"""Class weights of the loss, from how often each class is present in the training masks."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from segnet.plan.config import CLASS_WEIGHTINGS


def median_frequency_weights(presence_frequencies: Sequence[float]) -> list[float]:
    """``median(f) / f_c`` per class; a class never seen (f_c = 0) gets weight 0."""
    freqs = np.asarray(presence_frequencies, dtype=np.float64)
    seen = freqs > 0
    if not seen.any():
        return [1.0] * len(freqs)
    median = np.median(freqs[seen])
    return np.where(seen, median / np.where(seen, freqs, 1.0), 0.0).tolist()


def class_weights(presence_frequencies: Sequence[float], scheme: str) -> list[float] | None:
    """The weights for ``scheme`` (one of ``CLASS_WEIGHTINGS``), or None for an unweighted loss."""
    if scheme == "none":
        return None
    weights = median_frequency_weights(presence_frequencies)
    if scheme == "sqrt-median":
        return np.sqrt(weights).tolist()
    if scheme == "median":
        return weights
    raise ValueError(f"unknown class weighting '{scheme}' (choose from {', '.join(CLASS_WEIGHTINGS)})")
