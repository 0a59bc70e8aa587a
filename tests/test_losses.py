"""Median frequency balancing and the loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from segnet.data.pairs import IGNORE_INDEX
from segnet.model.losses import (
    build_loss,
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
