"""Small helpers several test files share (importable: pytest puts this folder on sys.path)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from segnet.evaluate.counting import label_classes


def count_objects(mask: np.ndarray, class_ids: Sequence[int], **label_options: Any) -> dict[int, int]:
    """Objects per class in a class mask, as segnet counts them (the objects of ``label_classes``)."""
    return {class_id: count for class_id, (_, count) in label_classes(mask, class_ids, **label_options).items()}


def conv_parameters(in_channels: int, out_channels: int, kernel_size: int, bn: bool = True) -> int:
    """Trainable parameters of a conv with bias, and of the BatchNorm after it (``bn``)."""
    return kernel_size**2 * in_channels * out_channels + out_channels + (2 * out_channels if bn else 0)
