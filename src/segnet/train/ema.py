"""An exponential moving average of the weights (``--ema-decay``), as the run validates and saves them.

The average follows the weights the optimiser steps, one update per step, with a warm-up:
the decay of update n is ``min(decay, (1 + n) / (10 + n))``, so the first updates follow the
weights closely instead of dragging the random initial weights along for thousands of steps.
BatchNorm statistics are averaged with the weights (they belong to them); integer buffers
(``num_batches_tracked``) are copied. torch's :class:`~torch.optim.swa_utils.AveragedModel`
keeps the copy and its update count.

With an average, validation scores it and checkpoints store it as their ``model_state`` (so
best.pt, calibration, evaluation and prediction use the averaged weights, unchanged); the
stepped weights and the update count go under the keys ``segnet.model.checkpoint`` names for them,
for ``--resume``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from segnet.model.checkpoint import AVERAGED_UPDATES_KEY, TRAINED_STATE_KEY

WARMUP_UPDATES = 10
"""The decay of update n is at most (1 + n) / (WARMUP_UPDATES + n)."""


class WeightAverage:
    """The moving average of ``module``'s weights and buffers, updated after each optimiser step."""

    def __init__(self, module: nn.Module, decay: float) -> None:
        if not 0 < decay < 1:
            raise ValueError(f"EMA decay must lie between 0 and 1, got {decay}")
        self.source = module
        self.decay = decay
        self._averaged = AveragedModel(module, avg_fn=self._average, use_buffers=True)

    @property
    def module(self) -> nn.Module:
        """The averaged copy of the model (the same class as the source, in its own memory)."""
        return self._averaged.module

    @property
    def updates(self) -> int:
        """How many steps the average has taken in."""
        return int(self._averaged.n_averaged.item())

    def update(self) -> None:
        """Take in the source's weights as they are after a step."""
        self._averaged.update_parameters(self.source)

    def _average(self, averaged: torch.Tensor, current: torch.Tensor, updates: torch.Tensor) -> torch.Tensor:
        if not averaged.is_floating_point():
            return current
        decay = torch.clamp((1 + updates) / (WARMUP_UPDATES + updates), max=self.decay)
        return averaged.lerp(current, (1 - decay).to(averaged.dtype))

    def checkpoint_entries(self) -> dict[str, Any]:
        """What a checkpoint holds besides the averaged weights, to resume the average."""
        return {TRAINED_STATE_KEY: self.source.state_dict(), AVERAGED_UPDATES_KEY: self.updates}

    def load(self, checkpoint: dict[str, Any]) -> None:
        """Resume the average from a checkpoint :meth:`checkpoint_entries` wrote (its ``model_state``);
        from one written without an average, restart it at the source's next update."""
        if TRAINED_STATE_KEY in checkpoint:
            self.module.load_state_dict(checkpoint["model_state"])
            self._averaged.n_averaged.fill_(checkpoint.get(AVERAGED_UPDATES_KEY, 0))
        else:
            self._averaged.n_averaged.zero_()
