"""Class weights and the training loss.

Median frequency balancing (Eigen & Fergus, used by the SegNet paper): each class is weighted by
``median(f) / f_c``, where ``f_c`` is the class's pixel count divided by the pixel count of the
training images that contain it. ``sqrt-median`` takes the square root of those weights: on the
darkfield data full weights over-predict the rare spirochete class at bright cell rims (see
docs/decisions.md for the measurements).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from segnet.data.pairs import IGNORE_INDEX
from segnet.plan.config import LOSSES

RegionTerm = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""A loss over whole classes of a batch, from its logits and target (e.g. :func:`soft_dice_loss`)."""


class SegmentationLoss(nn.Module):
    """Weighted cross-entropy, optionally plus a ``region_term`` over the classes (one of
    :data:`REGION_TERMS`, as :func:`build_loss` picks it).

    With ``hard_fraction``, the cross-entropy is :func:`hardest_pixels_cross_entropy`.
    Pixels labelled ``IGNORE_INDEX`` (crop padding, unlabelled pixels) count in no term.
    """

    def __init__(
        self,
        weights: Sequence[float] | None = None,
        region_term: RegionTerm | None = None,
        hard_fraction: float | None = None,
    ) -> None:
        super().__init__()
        self.hard_fraction = hard_fraction
        self.register_buffer("weights", torch.tensor(weights, dtype=torch.float32) if weights is not None else None)
        self.region_term = region_term

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.hard_fraction is None:
            loss = F.cross_entropy(logits.float(), target, weight=self.weights, ignore_index=IGNORE_INDEX)
        else:
            loss = hardest_pixels_cross_entropy(logits, target, self.weights, self.hard_fraction)
        if self.region_term is not None:
            loss = loss + self.region_term(logits, target)
        return loss


def hardest_pixels_cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None, fraction: float
) -> torch.Tensor:
    """Online hard-example mining (Shrivastava et al. 2016, per pixel): the mean (class-weighted)
    cross-entropy of the ``fraction`` of labelled pixels with the highest loss in the batch."""
    per_pixel = F.cross_entropy(logits.float(), target, weight=weights, ignore_index=IGNORE_INDEX, reduction="none")
    labelled = per_pixel[target != IGNORE_INDEX]
    if labelled.numel() == 0:
        return logits.sum() * 0.0
    return labelled.topk(max(1, round(labelled.numel() * fraction))).values.mean()


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - mean soft Dice over classes present in the batch, ignoring ``IGNORE_INDEX`` pixels."""
    num_classes = logits.shape[1]
    valid = (target != IGNORE_INDEX).unsqueeze(1)
    proba = logits.float().softmax(1) * valid
    one_hot = F.one_hot(target.clamp(0, num_classes - 1), num_classes).permute(0, 3, 1, 2) * valid
    dims = (0, 2, 3)
    intersection = (proba * one_hot).sum(dims)
    total = proba.sum(dims) + one_hot.sum(dims)
    present = one_hot.sum(dims) > 0
    dice = (2 * intersection + 1.0) / (total + 1.0)
    return 1.0 - dice[present].mean() if present.any() else logits.sum() * 0.0


REGION_TERMS = {"dice": soft_dice_loss}
"""The region terms a ``loss`` choice may add to cross-entropy, by the name after its ``+``."""


def build_loss(
    weights: Sequence[float] | None = None,
    loss: str = "ce",
    hard_pixels: float | None = None,
) -> SegmentationLoss:
    """The training loss for a config's ``loss`` choice, with per-class ``weights``
    (:func:`class_weights`); with ``hard_pixels``, the cross-entropy of that share of the hardest
    pixels only (:func:`hardest_pixels_cross_entropy`)."""
    if loss not in LOSSES:
        raise ValueError(f"unknown loss '{loss}' (choose from {', '.join(LOSSES)})")
    region = loss.partition("+")[2]  # "ce+dice" -> "dice"
    region_term = REGION_TERMS[region] if region else None
    return SegmentationLoss(weights, region_term, hard_fraction=hard_pixels)
