"""Training for a wall-clock budget (``segnet train --time-budget MINUTES``) instead of an epoch count.

A CPU user says "an hour" and gets the model an hour buys: the epoch count, and with it the
learning-rate schedule (cosine or poly decay over all epochs), is fitted to the budget from the
measured times. The fit is redone after the training steps of every epoch, before its
validation, so the epoch the fit makes the last one is validated (and can become best.pt)::

    epoch time = training time + validation time / val_every
    left       = budget - time since training started - time of a resumed run's earlier epochs
                 - reserve (one validation, for the last epoch, and calibration)
    epochs     = epochs done + floor(left / epoch time), at least the epochs done and at least 1,
                 and at most the ceiling (the run's --epochs)

The training time is the mean of this session's epochs after its first (the first also pays for
start-up: worker processes, caches, a compile), or the first while it is alone; the validation
time is the mean of the validations so far (0 before the first). Calibration predicts up to
``calibration_images`` training images at full size after the last epoch, estimated at the
validation's time per image. Refitting every epoch keeps the end of the schedule at the end of
the budget when a shared machine slows down or speeds up; the learning rate moves smoothly, since
the schedule's progress changes only by the ratio of the old and new epoch counts. The warm-up
does not depend on the epoch count, so the first epoch, which measures, trains as it would with
a fixed count. The budget is timed from the start of training: reading and checking the images
beforehand is not in it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field


@dataclass
class TimeBudget:
    """The wall-clock budget of one training run and the times measured so far (module docstring)."""

    minutes: float
    val_every: int = 1
    validation_images: int = 0
    calibration_images: int = 0
    spent_before: float = 0.0
    """Seconds of the epochs a resumed run had already trained (from its history)."""
    ceiling: int | None = None
    """The most epochs the fit may give (the run's --epochs); ``None``: no limit."""
    started: float = field(default_factory=time.perf_counter)
    training_seconds: list[float] = field(default_factory=list)
    validation_seconds: list[float] = field(default_factory=list)

    def record_training(self, seconds: float) -> None:
        """Note the time of one epoch's training steps."""
        self.training_seconds.append(seconds)

    def record_validation(self, seconds: float) -> None:
        """Note the time of one validation of the held-out images."""
        self.validation_seconds.append(seconds)

    @property
    def validation_time(self) -> float:
        """The expected seconds of one validation; 0 before one is measured."""
        return sum(self.validation_seconds) / len(self.validation_seconds) if self.validation_seconds else 0.0

    @property
    def epoch_time(self) -> float:
        """The expected seconds of one more epoch, its share of validation included."""
        if not self.training_seconds:
            raise ValueError("no epoch measured yet")
        later = self.training_seconds[1:]
        training = sum(later) / len(later) if later else self.training_seconds[0]
        return training + self.validation_time / self.val_every

    @property
    def reserve(self) -> float:
        """Seconds kept for the last epoch's validation and for calibration."""
        calibration = (
            self.calibration_images * self.validation_time / self.validation_images if self.validation_images else 0.0
        )
        return self.validation_time + calibration

    def seconds_left(self, now: float | None = None) -> float:
        """Budget seconds left for more epochs, the reserve set aside."""
        elapsed = (time.perf_counter() if now is None else now) - self.started + self.spent_before
        return 60.0 * self.minutes - elapsed - self.reserve

    def fit(self, epochs_done: int, now: float | None = None) -> int:
        """The epoch count that fills the budget, given ``epochs_done`` finished epochs."""
        more = math.floor(max(0.0, self.seconds_left(now)) / max(self.epoch_time, 1e-9))
        fitted = max(1, epochs_done + more)
        return fitted if self.ceiling is None else max(epochs_done, min(fitted, self.ceiling))
