"""Class weights and the training loss.

Median frequency balancing (Eigen & Fergus, used by the SegNet paper): each class is weighted by
``median(f) / f_c``, where ``f_c`` is the class's pixel count divided by the pixel count of the
training images that contain it. ``sqrt-median`` takes the square root of those weights: on the
darkfield data full weights over-predict the rare spirochete class at bright cell rims (see
docs/decisions.md for the measurements).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

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


def soft_class_counts(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per class, over the batch's pixels but ``IGNORE_INDEX`` ones: the soft true positives (the
    probability of the true class), the predicted total (summed probabilities) and the true total."""
    num_classes = logits.shape[1]
    valid = (target != IGNORE_INDEX).unsqueeze(1)
    proba = logits.float().softmax(1) * valid
    one_hot = F.one_hot(target.clamp(0, num_classes - 1), num_classes).permute(0, 3, 1, 2) * valid
    dims = (0, 2, 3)
    return (proba * one_hot).sum(dims), proba.sum(dims), one_hot.sum(dims).float()


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - mean soft Dice over classes present in the batch, ignoring ``IGNORE_INDEX`` pixels."""
    intersection, predicted, true = soft_class_counts(logits, target)
    present = true > 0
    dice = (2 * intersection + 1.0) / (predicted + true + 1.0)
    return 1.0 - dice[present].mean() if present.any() else logits.sum() * 0.0


TVERSKY_FN_WEIGHT, TVERSKY_FP_WEIGHT, TVERSKY_EXPONENT = 0.7, 0.3, 0.75
"""Focal Tversky's published setting (Abraham & Khan 2019): missed pixels weigh 0.7, false ones
0.3, and each class's ``1 - TI`` is raised to 1/γ = 0.75."""


def focal_tversky_loss(logits: torch.Tensor, target: torch.Tensor, background: int | None = None) -> torch.Tensor:
    """Mean over the classes present in the batch (but ``background``) of ``(1 - TI_c) ** 0.75``,
    with the Tversky index ``TI = TP / (TP + 0.7 FN + 0.3 FP)`` of soft counts (Abraham & Khan,
    ISBI 2019); ``IGNORE_INDEX`` pixels are left out.

    At 0.5 / 0.5 and exponent 1 it is soft Dice; here a missed pixel weighs more than a false one,
    for the objects' recall (the thin class's weak point). The background is left out: its missed
    pixels are the objects' false ones, so weighing them up would undo the asymmetry.
    """
    true_positive, predicted, true = soft_class_counts(logits, target)
    missed, false = true - true_positive, predicted - true_positive
    tversky = (true_positive + 1.0) / (true_positive + TVERSKY_FN_WEIGHT * missed + TVERSKY_FP_WEIGHT * false + 1.0)
    counted = true > 0
    if background is not None:
        counted[background] = False
    # The power's slope is infinite at 0 (a class found exactly): clamped, so it never makes NaN.
    return (
        ((1.0 - tversky[counted]).clamp_min(1e-8) ** TVERSKY_EXPONENT).mean() if counted.any() else logits.sum() * 0.0
    )


def lovasz_softmax_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Lovász-softmax (Berman et al., CVPR 2018), averaged over the classes present in the batch.

    For each class the pixels' errors ``|is_c - p_c|`` are sorted, largest first, and weighted by
    how much each one, in that order, adds to ``1 - IoU`` of the class: the tight convex extension
    of the Jaccard loss, so gradients follow what IoU rewards (a thin class's lost edge pixels
    weigh as much as its share of the union says, not as little as its share of all pixels).
    ``IGNORE_INDEX`` pixels are left out.
    """
    num_classes = logits.shape[1]
    proba = logits.float().softmax(1).permute(0, 2, 3, 1).reshape(-1, num_classes)
    labels = target.reshape(-1)
    valid = labels != IGNORE_INDEX
    proba, labels = proba[valid], labels[valid]
    losses = []
    for c in range(num_classes):
        truth = (labels == c).float()
        if truth.sum() == 0:
            continue
        errors, order = (truth - proba[:, c]).abs().sort(descending=True)
        losses.append(torch.dot(errors, _jaccard_increments(truth[order])))
    return torch.stack(losses).mean() if losses else logits.sum() * 0.0


def _jaccard_increments(sorted_truth: torch.Tensor) -> torch.Tensor:
    """The gradient of the Lovász extension of ``1 - IoU`` at errors sorted largest first: entry i
    is how much the Jaccard loss grows when the i-th pixel joins the i-1 before it as a mistake."""
    true_total = sorted_truth.sum()
    intersection = true_total - sorted_truth.cumsum(0)
    union = true_total + (1.0 - sorted_truth).cumsum(0)
    jaccard = 1.0 - intersection / union
    return torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])


REGION_TERMS = {"dice": soft_dice_loss, "lovasz": lovasz_softmax_loss, "focal-tversky": focal_tversky_loss}
"""The region terms a ``loss`` choice may add to cross-entropy, by the name after its ``+``."""


def build_loss(
    weights: Sequence[float] | None = None,
    loss: str = "ce",
    background: int = 0,
    hard_pixels: float | None = None,
) -> SegmentationLoss:
    """The training loss for a config's ``loss`` choice, with per-class ``weights``
    (:func:`class_weights`); focal Tversky leaves out the ``background`` class; with ``hard_pixels``, the
    cross-entropy of that share of the hardest pixels only (:func:`hardest_pixels_cross_entropy`)."""
    if loss not in LOSSES:
        raise ValueError(f"unknown loss '{loss}' (choose from {', '.join(LOSSES)})")
    region = loss.partition("+")[2]  # "ce+dice" -> "dice"
    region_term = REGION_TERMS[region] if region else None
    if region_term is focal_tversky_loss:
        region_term = partial(focal_tversky_loss, background=background)
    return SegmentationLoss(weights, region_term, hard_fraction=hard_pixels)
