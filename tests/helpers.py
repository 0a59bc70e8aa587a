"""Small helpers several test files share (importable: pytest puts this folder on sys.path)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from segnet.evaluate.counting import label_classes
from segnet.plan.config import TrainConfig, load_config


def count_objects(mask: np.ndarray, class_ids: Sequence[int], **label_options: Any) -> dict[int, int]:
    """Objects per class in a class mask, as segnet counts them (the objects of ``label_classes``)."""
    return {class_id: count for class_id, (_, count) in label_classes(mask, class_ids, **label_options).items()}


def conv_parameters(in_channels: int, out_channels: int, kernel_size: int, bn: bool = True) -> int:
    """Trainable parameters of a conv with bias, and of the BatchNorm after it (``bn``)."""
    return kernel_size**2 * in_channels * out_channels + out_channels + (2 * out_channels if bn else 0)


def tiny_config(data: Path, out: Path, **overrides: Any) -> TrainConfig:
    """A training config for a run of seconds on the CPU: 1 epoch of 32 px crops, a quarter held out."""
    values = {
        "data": str(data),
        "out": str(out),
        "epochs": 1,
        "batch_size": 4,
        "image_size": 32,
        "num_workers": 0,
        "val_fraction": 0.25,
        "device": "cpu",
    }
    return load_config(None, {**values, **overrides})


def train_args(data: Path, out: Path, *extra: str) -> list[str]:
    """``segnet train`` arguments for the same tiny CPU run (the epochs as the command's default unless in ``extra``)."""
    return [
        "train",
        "--data",
        str(data),
        "--out",
        str(out),
        "--image-size",
        "32",
        "--batch-size",
        "4",
        "--num-workers",
        "0",
        "--val-fraction",
        "0.25",
        "--device",
        "cpu",
        *extra,
    ]
