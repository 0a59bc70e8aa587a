"""Decision calibration: the offset search, the model's offsets, and calibration inside a run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import tiny_config
from PIL import Image

from segnet.cli import main
from segnet.core.errors import CheckpointError, SegnetError
from segnet.core.runfiles import BEST_CHECKPOINT, CALIBRATION_FILE, LAST_CHECKPOINT, SPLIT_FILE
from segnet.evaluate.run import evaluate_run
from segnet.model.checkpoint import Checkpoint
from segnet.model.networks import build_model
from segnet.model.options import InferenceOptions
from segnet.model.predictor import Predictor
from segnet.plan.spec import ModelSpec
from segnet.train.calibration import OFFSET_GRID, calibrate_checkpoint, fit_logit_offsets, mean_iou_with_offsets
from segnet.train.loop import train

PLAIN = InferenceOptions(device="cpu", tta=False, diameter=None)  # the network's own pass

CLASSES = ["background", "erythrocyte", "spirochete"]


def biased_log_proba(pixels: int, bias: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Noisy posteriors of a rare-class problem, with ``bias`` nats added to the rarest class."""
    rng = np.random.default_rng(seed)
    truth = rng.choice(3, size=pixels, p=[0.85, 0.12, 0.03])
    logits = rng.normal(0.0, 1.0, size=(pixels, 3)) + np.log([0.85, 0.12, 0.03])
    logits[np.arange(pixels), truth] += 2.5
    logits[:, 2] += bias
    log_proba = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return log_proba.astype(np.float32), truth


def test_offsets_take_back_a_bias_added_to_one_class():
    unbiased = fit_logit_offsets(*biased_log_proba(60_000, bias=0.0), CLASSES)
    log_proba, truth = biased_log_proba(60_000, bias=-2.0)
    offsets, before, after = fit_logit_offsets(log_proba, truth, CLASSES)
    assert offsets[0] == 0
    # The search lands where it would have without the bias: the 2 nats come back, to a grid step.
    assert offsets[2] - 2.0 == pytest.approx(unbiased[0][2], abs=0.25)
    assert after == pytest.approx(unbiased[2], abs=0.005)
    assert after > before + 0.05
    assert after == pytest.approx(mean_iou_with_offsets(log_proba, truth, offsets, CLASSES))


def test_decisions_that_cannot_improve_keep_zero_offsets():
    truth = np.repeat(np.arange(3), 100)
    log_proba = np.full((300, 3), -30.0, dtype=np.float32)
    log_proba[np.arange(300), truth] = 0.0  # every pixel right by a margin no grid offset overturns
    offsets, before, after = fit_logit_offsets(log_proba, truth, CLASSES)
    assert np.all(offsets == 0) and before == after == 1.0
    assert abs(OFFSET_GRID).max() < 30


def test_model_offsets_shift_the_logits_and_travel_in_the_state_dict(tmp_path):
    torch.manual_seed(0)
    model = build_model(ModelSpec("segnet-basic", 3)).eval()
    inputs = torch.randn(1, 3, 37, 45)
    with torch.no_grad():
        raw = model(inputs)
        model.logit_offsets.copy_(torch.tensor([0.0, 1.5, -2.0]))
        shifted = model(inputs)
    torch.testing.assert_close(shifted - raw, torch.tensor([0.0, 1.5, -2.0]).view(1, 3, 1, 1).expand_as(raw))
    checkpoint = Checkpoint.of_model(model, CLASSES, [0.2] * 3, [0.2] * 3)
    checkpoint.save(tmp_path / "calibrated.pt")
    reloaded = Checkpoint.load(tmp_path / "calibrated.pt").load_model(tmp_path / "calibrated.pt")
    assert reloaded.logit_offsets.tolist() == [0.0, 1.5, -2.0]

    # The offsets are part of the weights: a state dict without them does not fit the model.
    without = {name: tensor for name, tensor in checkpoint.model_state.items() if name != "logit_offsets"}
    checkpoint.replace(model_state=without).save(tmp_path / "offsetless.pt")
    with pytest.raises(
        CheckpointError,
        match=r'offsetless.pt: weights do not fit model segnet-basic \(Missing key\(s\) in state_dict: "logit_offsets"',
    ):
        Checkpoint.load(tmp_path / "offsetless.pt").load_model(tmp_path / "offsetless.pt")

    # Prediction, calibration and export all feed RGB: a model of other inputs is refused by name.
    one_channel = checkpoint.replace(spec=ModelSpec("segnet-basic", 3, in_channels=1))
    with pytest.raises(CheckpointError, match="other.pt: model expects 1 input channels"):
        one_channel.load_model(tmp_path / "other.pt")


@pytest.fixture(scope="module")
def calibrated_run(synthetic_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("calibrated")
    config = tiny_config(synthetic_dataset, out, epochs=2, calibration_images=5)
    train(config, progress_log=lambda *a: None)
    return synthetic_dataset, out


@pytest.mark.slow
def test_training_calibrates_best_on_training_images_only(calibrated_run):
    data, run = calibrated_run
    summary = json.loads((run / CALIBRATION_FILE).read_text())
    split = json.loads((run / SPLIT_FILE).read_text())
    assert len(summary["images"]) == 5 and set(summary["images"]) <= set(split["train"])
    best = Checkpoint.load(run / BEST_CHECKPOINT)
    assert best.calibration == summary
    assert best.model_state["logit_offsets"].tolist() == list(summary["offsets"].values())
    assert Checkpoint.load(run / LAST_CHECKPOINT).calibration is None  # training resumes from raw weights

    # The stored offsets are what prediction applies: raw probabilities times e^offset, renormalised.
    image = np.asarray(Image.open(data / "images" / f"{split['val'][0]}.png").convert("RGB"))
    calibrated = Predictor.from_checkpoint(run / BEST_CHECKPOINT, PLAIN).predict_proba(image)
    raw_model = best.load_model(run / BEST_CHECKPOINT)
    raw_model.logit_offsets.zero_()
    raw = Predictor(raw_model, CLASSES, best.mean, best.std, PLAIN).predict_proba(image)
    expected = raw * np.exp(np.array(list(summary["offsets"].values()), dtype=np.float32))[:, None, None]
    np.testing.assert_allclose(calibrated, expected / expected.sum(axis=0), atol=1e-4)


@pytest.mark.slow
def test_calibrate_command_refits_from_the_raw_model(calibrated_run, capsys):
    data, run = calibrated_run
    first = json.loads((run / CALIBRATION_FILE).read_text())
    assert (
        main(
            [
                "calibrate",
                "--checkpoint",
                str(run / BEST_CHECKPOINT),
                "--data",
                str(data),
                "--images",
                "5",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    assert "logit offsets" in capsys.readouterr().out
    again = json.loads((run / CALIBRATION_FILE).read_text())
    # Same images, same pixels: stacking the old offsets onto the new fit would change the result.
    assert again == first


@pytest.mark.slow
def test_calibration_refuses_an_empty_training_list(calibrated_run):
    _, run = calibrated_run
    with pytest.raises(SegnetError, match="no training images"):
        calibrate_checkpoint(run / BEST_CHECKPOINT, [])


@pytest.mark.slow
def test_evaluation_records_the_offsets_it_predicted_with(calibrated_run, tmp_path):
    data, run = calibrated_run
    metrics = evaluate_run(run / BEST_CHECKPOINT, data, out=tmp_path / "evaluation", options=PLAIN, progress=False)
    assert metrics.evaluation["logit_offsets"] == json.loads((run / CALIBRATION_FILE).read_text())["offsets"]
