"""Median frequency balancing and the loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from segnet.data.pairs import IGNORE_INDEX
from segnet.model.losses import (
    build_loss,
    focal_tversky_loss,
    lovasz_softmax_loss,
    soft_dice_loss,
)
from segnet.plan.config import LOSSES
from segnet.plan.weights import class_weights, median_frequency_weights


def test_median_frequency_weights_by_hand():
    # median(0.8, 0.15, 0.02) = 0.15
    assert median_frequency_weights([0.8, 0.15, 0.02]) == pytest.approx([0.15 / 0.8, 1.0, 0.15 / 0.02])


def test_absent_class_gets_zero_weight_and_sqrt_variant():
    assert median_frequency_weights([0.5, 0.0, 0.5]) == pytest.approx([1.0, 0.0, 1.0])
    assert class_weights([0.8, 0.15, 0.02], "sqrt-median")[2] == pytest.approx(math.sqrt(7.5))
    assert class_weights([0.8, 0.15, 0.02], "none") is None


def test_loss_skips_ignored_pixels():
    logits = torch.randn(1, 3, 4, 4)
    target = torch.randint(0, 3, (1, 4, 4))
    loss = build_loss(class_weights([0.8, 0.15, 0.05], "median"))
    masked = target.clone()
    masked[0, :2] = IGNORE_INDEX
    expected = torch.nn.functional.cross_entropy(logits[..., 2:, :], target[:, 2:], weight=loss.weights)
    assert loss(logits, masked).item() == pytest.approx(expected.item(), rel=1e-6)


def test_dice_term_is_zero_for_a_perfect_prediction_and_positive_otherwise():
    target = torch.tensor([[[0, 1], [2, 2]]])
    perfect = torch.nn.functional.one_hot(target, 3).permute(0, 3, 1, 2).float() * 50
    assert soft_dice_loss(perfect, target).item() == pytest.approx(0.0, abs=1e-6)
    assert soft_dice_loss(torch.zeros(1, 3, 2, 2), target).item() > 0.3
    combined = build_loss(None, "ce+dice")
    assert combined(torch.zeros(1, 3, 2, 2), target).item() > build_loss(None)(torch.zeros(1, 3, 2, 2), target).item()


def _hard_logits(prediction: torch.Tensor, num_classes: int = 3) -> torch.Tensor:
    """Logits whose softmax is (to float precision) the one-hot of ``prediction``."""
    return torch.nn.functional.one_hot(prediction, num_classes).permute(0, 3, 1, 2).float() * 100


def test_lovasz_equals_one_minus_iou_at_hard_predictions():
    # At 0/1 probabilities the Lovász extension is the Jaccard loss itself, class by class.
    generator = torch.Generator().manual_seed(0)
    target = torch.randint(0, 3, (2, 8, 8), generator=generator)
    prediction = torch.where(
        torch.rand(2, 8, 8, generator=generator) < 0.7, target, torch.randint(0, 3, (2, 8, 8), generator=generator)
    )
    ious = []
    for c in range(3):
        intersection = ((target == c) & (prediction == c)).sum().item()
        union = ((target == c) | (prediction == c)).sum().item()
        ious.append(intersection / union)
    expected = 1 - sum(ious) / 3
    assert lovasz_softmax_loss(_hard_logits(prediction), target).item() == pytest.approx(expected, abs=1e-4)
    assert lovasz_softmax_loss(_hard_logits(target), target).item() == pytest.approx(0.0, abs=1e-4)


def test_lovasz_leaves_out_ignored_pixels_and_absent_classes():
    target = torch.tensor([[[0, 0], [1, 1]]])
    prediction = torch.tensor([[[0, 0], [1, 0]]])
    # class 1: IoU 1/2; class 0: IoU 2/3; class 2 absent from the truth is not averaged in
    assert lovasz_softmax_loss(_hard_logits(prediction), target).item() == pytest.approx(
        1 - (2 / 3 + 1 / 2) / 2, abs=1e-4
    )
    ignored = target.clone()
    ignored[0, 1, 1] = IGNORE_INDEX  # the one wrong pixel no longer counts
    assert lovasz_softmax_loss(_hard_logits(prediction), ignored).item() == pytest.approx(0.0, abs=1e-4)


def test_lovasz_term_trains_towards_the_truth():
    target = torch.tensor([[[0, 1], [2, 2]]])
    logits = torch.zeros(1, 3, 2, 2, requires_grad=True)
    loss = build_loss(None, "ce+lovasz")
    before = loss(logits, target)
    before.backward()
    with torch.no_grad():
        stepped = logits - 0.5 * logits.grad
    assert loss(stepped, target).item() < before.item()
    assert loss(stepped, target).item() > build_loss(None, "ce")(stepped, target).item()


def test_focal_tversky_weighs_a_missed_pixel_more_than_a_false_one():
    target = torch.tensor([[[0, 0, 0, 0], [0, 2, 2, 0], [0, 2, 2, 0], [0, 0, 0, 0]]])
    assert focal_tversky_loss(_hard_logits(target), target, background=0).item() == pytest.approx(0.0, abs=1e-5)
    missed_one = target.clone()
    missed_one[0, 1, 1] = 0  # 3 of 4 found: TI = (3 + 1) / (3 + 0.7 + 1)
    false_one = target.clone()
    false_one[0, 0, 0] = 2  # 4 found, one false: TI = (4 + 1) / (4 + 0.3 + 1)
    missed = focal_tversky_loss(_hard_logits(missed_one), target, background=0).item()
    false = focal_tversky_loss(_hard_logits(false_one), target, background=0).item()
    assert missed == pytest.approx((1 - 4 / 4.7) ** 0.75, abs=1e-4)
    assert false == pytest.approx((1 - 5 / 5.3) ** 0.75, abs=1e-4)
    assert missed > 2 * false
    perfect = _hard_logits(target).requires_grad_()
    focal_tversky_loss(perfect, target, background=0).backward()
    assert torch.isfinite(perfect.grad).all()


def test_focal_tversky_leaves_out_the_background_and_ignored_pixels():
    target = torch.tensor([[[0, 0], [1, 1]]])
    wrong_background = torch.tensor([[[1, 1], [1, 1]]])  # class 1 found whole, background missed
    assert focal_tversky_loss(_hard_logits(wrong_background), target, background=0).item() > 0  # class 1's false pixels
    assert (
        focal_tversky_loss(_hard_logits(wrong_background), target, background=None).item()
        > focal_tversky_loss(_hard_logits(wrong_background), target, background=0).item()
    )
    ignored = torch.full_like(target, IGNORE_INDEX)
    ignored[0, 1] = 1
    assert focal_tversky_loss(_hard_logits(wrong_background), ignored, background=0).item() == pytest.approx(
        0.0, abs=1e-5
    )
    only_background = torch.zeros_like(target)
    assert focal_tversky_loss(_hard_logits(wrong_background), only_background, background=0).item() == 0.0
    assert build_loss(None, "ce+focal-tversky", background=1)(_hard_logits(target), target).item() == pytest.approx(
        0.0, abs=1e-4
    )


def test_every_loss_choice_builds():
    for choice in LOSSES:
        assert build_loss(None, choice)(torch.zeros(1, 3, 2, 2), torch.tensor([[[0, 1], [2, 2]]])).item() > 0


def test_hard_pixel_mining_averages_the_worst_pixels_only():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 8, 8)
    target = torch.randint(0, 3, (2, 8, 8))
    target[0, :2] = IGNORE_INDEX
    per_pixel = F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX, reduction="none")[target != IGNORE_INDEX]
    everything = build_loss(hard_pixels=1.0)(logits, target)
    torch.testing.assert_close(everything, F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX))
    hardest = build_loss(hard_pixels=0.1)(logits, target)
    torch.testing.assert_close(hardest, per_pixel.sort(descending=True).values[: round(per_pixel.numel() * 0.1)].mean())
    assert hardest > everything
    assert build_loss(hard_pixels=0.5)(logits, torch.full_like(target, IGNORE_INDEX)) == 0
