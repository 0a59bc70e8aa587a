"""The moving average of the weights (--ema-decay): its arithmetic, and what a run validates and saves."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from segnet.core.errors import SegnetError
from segnet.core.runfiles import BEST_CHECKPOINT, BEST_METRICS_FILE, LAST_CHECKPOINT
from segnet.evaluate.run import evaluate_run
from segnet.model.checkpoint import AVERAGED_UPDATES_KEY, TRAINED_STATE_KEY, load_checkpoint
from segnet.model.options import InferenceOptions
from segnet.plan.config import load_config
from segnet.train.ema import WARMUP_UPDATES, WeightAverage
from segnet.train.loop import train


def small_module() -> nn.Module:
    return nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))


def test_the_average_warms_up_then_decays_at_the_given_rate():
    module = small_module()
    average = WeightAverage(module, decay=0.5)
    weight = module[0].weight
    expected = None
    for update in range(WARMUP_UPDATES + 5):
        with torch.no_grad():
            weight.fill_(float(update))
        module[1].num_batches_tracked.fill_(update)
        average.update()
        if expected is None:
            expected = 0.0  # the first update copies the weights
        else:
            decay = min(0.5, (1 + update) / (WARMUP_UPDATES + update))
            expected = decay * expected + (1 - decay) * update
        assert average.module[0].weight.flatten().tolist() == pytest.approx([expected] * 4)
    assert average.updates == WARMUP_UPDATES + 5
    assert average.module[1].num_batches_tracked.item() == WARMUP_UPDATES + 4  # integers are copied, not averaged
    assert weight is module[0].weight and not torch.equal(average.module[0].weight, weight)


def test_a_decay_outside_zero_to_one_is_refused():
    with pytest.raises(ValueError, match="between 0 and 1"):
        WeightAverage(small_module(), decay=1.0)
    with pytest.raises(SegnetError, match="--ema-decay: ema_decay = 1.5 is refused"):
        load_config(None, {"ema_decay": 1.5})


@pytest.mark.slow
def test_a_run_validates_and_saves_the_average(synthetic_dataset, tmp_path):
    run = tmp_path / "run"
    values = {
        "data": str(synthetic_dataset),
        "out": str(run),
        "epochs": 2,
        "batch_size": 4,
        "image_size": 32,
        "num_workers": 0,
        "val_fraction": 0.25,
        "ema_decay": 0.9,
        "calibration_images": 0,
    }
    train(load_config(None, values), progress_log=lambda *a: None)
    last = load_checkpoint(run / LAST_CHECKPOINT)
    assert last[AVERAGED_UPDATES_KEY] > 0
    differs = [
        key
        for key, value in last["model_state"].items()
        if value.is_floating_point() and not torch.equal(value, last[TRAINED_STATE_KEY][key])
    ]
    assert differs, "the saved weights are the stepped ones, not their average"
    # best.pt holds the weights validation scored: evaluating them gives the recorded score.
    recorded = json.loads((run / BEST_METRICS_FILE).read_text())
    scored = evaluate_run(
        run / BEST_CHECKPOINT,
        synthetic_dataset,
        split="val",
        out=tmp_path / "evaluation",
        options=InferenceOptions(tta=False),
        progress=False,
    )
    assert scored["mean_iou"] == pytest.approx(recorded["mean_iou"], abs=1e-6)
