"""Tests for segnet.train.budget: fitting the epoch count to a wall-clock budget (clock given, not read)."""

from __future__ import annotations

import pytest

from segnet.train.budget import TimeBudget


def test_fit_fills_the_budget_from_measured_times() -> None:
    budget = TimeBudget(10, val_every=1, validation_images=10, calibration_images=5, started=0.0)
    budget.record_training(60.0)  # the first epoch, start-up included
    # Before any validation: 540 s left at 60 s per epoch.
    assert budget.fit(1, now=60.0) == 1 + 9
    budget.record_validation(20.0)  # 2 s per image: calibration of 5 images costs 10 s
    budget.record_training(40.0)
    assert budget.epoch_time == pytest.approx(40.0 + 20.0)  # the first epoch's start-up is left out
    assert budget.reserve == pytest.approx(20.0 + 10.0)  # the last validation and calibration
    # 600 - 120 elapsed - 30 reserve = 450 s: 7 more epochs of 60 s.
    assert budget.fit(2, now=120.0) == 2 + 7


def test_validation_every_n_epochs_is_averaged_in_and_a_resumed_run_counts_its_past() -> None:
    budget = TimeBudget(10, val_every=4, started=0.0, spent_before=300.0)
    budget.record_training(30.0)
    budget.record_validation(40.0)
    assert budget.epoch_time == pytest.approx(30.0 + 10.0)
    # 600 - 300 before - 30 now - 40 reserve = 230 s: 5 more epochs of 40 s.
    assert budget.fit(1, now=30.0) == 6


def test_an_exhausted_budget_ends_after_the_epochs_done() -> None:
    budget = TimeBudget(0.001, started=0.0)
    budget.record_training(5.0)
    assert budget.fit(1, now=5.0) == 1
    assert budget.fit(3, now=5.0) == 3
    assert budget.fit(0, now=5.0) == 1
    with pytest.raises(ValueError, match="no epoch measured"):
        TimeBudget(1).fit(0)
