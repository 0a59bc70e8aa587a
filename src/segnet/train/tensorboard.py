"""TensorBoard logging of a run (--tensorboard): scalars per epoch and a few validation examples."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from segnet.core.errors import SegnetError
from segnet.core.runfiles import TENSORBOARD_FOLDER
from segnet.data.dataset import SegmentationDataset
from segnet.data.palette import colorize
from segnet.model.predictor import Predictor
from segnet.train.runfolder import EpochResult

TENSORBOARD_EXAMPLES = 3
"""Validation images drawn with their predictions in TensorBoard each validated epoch."""


TENSORBOARD_PANEL_SIDE = 512
"""Example panels larger than this are subsampled, to keep the event files small."""


def open_tensorboard(run_dir: Path, first_epoch: int):
    """A SummaryWriter on ``RUN/tensorboard``; on resume, events of epochs to be redone are dropped."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as error:
        raise SegnetError("--tensorboard needs the tensorboard package (pip install tensorboard)") from error
    return SummaryWriter(str(run_dir / TENSORBOARD_FOLDER), purge_step=first_epoch)


def log_tensorboard(writer: Any, result: EpochResult) -> None:
    """The epoch's scalars: losses, accuracy, IoUs, learning rate and speed."""
    epoch, stats, metrics = result.epoch, result.stats, result.metrics
    writer.add_scalar("loss/train", stats.loss, epoch)
    writer.add_scalar("learning_rate", result.lr, epoch)
    writer.add_scalar("speed/epoch_seconds", result.seconds, epoch)
    writer.add_scalar("speed/images_per_second", stats.images_per_second, epoch)
    writer.add_scalar("speed/data_wait_fraction", stats.data_wait_fraction, epoch)
    if metrics is None:
        return
    writer.add_scalar("loss/val", metrics.loss, epoch)
    for key, value in metrics.whole_image_scores().items():
        if value is not None:
            writer.add_scalar(f"val/{key}", value, epoch)
    for name, scores in metrics.per_class.items():
        if scores.iou is not None:
            writer.add_scalar(f"val_iou/{name}", scores.iou, epoch)


def log_tensorboard_examples(writer: Any, predictor: Predictor, dataset: SegmentationDataset, epoch: int) -> None:
    """The first validation images as image | true mask | predicted mask, in class colours."""

    for index in range(min(TENSORBOARD_EXAMPLES, len(dataset))):
        raw_image, truth = dataset.load(index)
        num_classes = dataset.num_classes
        panel = np.concatenate(
            [raw_image, colorize(truth, num_classes), colorize(predictor.predict(raw_image), num_classes)], axis=1
        )
        step = math.ceil(max(raw_image.shape[:2]) / TENSORBOARD_PANEL_SIDE)
        writer.add_image(f"validation/{dataset.pairs[index].stem}", panel[::step, ::step], epoch, dataformats="HWC")
