"""Training: run folder files, checkpoints, resume, refusal to overwrite, NaN detection."""

from __future__ import annotations

import csv
import dataclasses
import inspect
import json
import re
from types import SimpleNamespace

import helpers
import pytest
import torch
import yaml

from segnet.core.errors import CheckpointError, SegnetError
from segnet.core.runfiles import (
    BEST_CHECKPOINT,
    BEST_METRICS_FILE,
    CONFIG_FILE,
    CURVES_FILE,
    FINGERPRINT_FILE,
    HISTORY_FILE,
    LAST_CHECKPOINT,
    PLAN_FILE,
    SPLIT_FILE,
    TENSORBOARD_FOLDER,
)
from segnet.model.checkpoint import Checkpoint
from segnet.plan.config import load_config
from segnet.plan.plan import make_plan, read_plan
from segnet.plan.spec import DEFAULT_MODEL, ModelSpec
from segnet.train.loop import train


def tiny_config(data, out, **overrides):
    """The shared tiny config, for 2 epochs unless told otherwise (resume and budget tests need a second)."""
    return helpers.tiny_config(data, out, **{"epochs": 2, **overrides})


@pytest.fixture(scope="module")
def finished_run(synthetic_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    train(tiny_config(synthetic_dataset, out), progress_log=lambda *a: None)
    return out


@pytest.mark.slow
def test_run_folder_holds_everything(finished_run):
    for name in (
        BEST_CHECKPOINT,
        LAST_CHECKPOINT,
        HISTORY_FILE,
        CONFIG_FILE,
        SPLIT_FILE,
        FINGERPRINT_FILE,
        PLAN_FILE,
        CURVES_FILE,
    ):
        assert (finished_run / name).is_file(), name
    plan = read_plan(finished_run / PLAN_FILE)
    assert (
        plan.image_size == 32
        and plan.batch_size == 4
        and [plan.mean, plan.std] == [(last := Checkpoint.load(finished_run / LAST_CHECKPOINT)).mean, last.std]
    )
    with (finished_run / HISTORY_FILE).open() as handle:
        rows = list(csv.DictReader(handle))
    assert [row["epoch"] for row in rows] == ["1", "2"]
    assert 0 <= float(rows[-1]["val_mean_iou"]) <= 1
    config = yaml.safe_load((finished_run / CONFIG_FILE).read_text())
    assert config["image_size"] == 32 and config["model"] == DEFAULT_MODEL


@pytest.mark.slow
def test_checkpoint_is_self_describing(finished_run):
    checkpoint = Checkpoint.load(finished_run / LAST_CHECKPOINT)
    assert checkpoint.epoch == 2
    assert checkpoint.class_names == ["background", "erythrocyte", "spirochete"]
    assert len(checkpoint.mean) == 3 and all(s > 0 for s in checkpoint.std)
    assert checkpoint.spec == ModelSpec(DEFAULT_MODEL, 3, in_channels=3, downsample=1, space_to_depth=False)
    assert checkpoint.optimizer_state is not None and checkpoint.scheduler_state is not None
    assert checkpoint.training_images == sorted(json.loads((finished_run / SPLIT_FILE).read_text())["train"])
    # On disk: a plain dict, every key of the layout a training run writes.
    assert set(torch.load(finished_run / LAST_CHECKPOINT, weights_only=True)) == {
        "format_version", "model", "model_state", "class_names", "normalization", "config", "fingerprint",
        "epoch", "best_score", "best_epoch", "optimizer_state", "scheduler_state", "training_images",
    }  # fmt: skip


@pytest.mark.slow
def test_a_second_training_into_a_run_folder_in_use_is_refused(synthetic_dataset, tmp_path):
    from segnet.core.outputs import output_lock

    run = tmp_path / "run"
    with output_lock(run), pytest.raises(SegnetError, match="another segnet run is writing into this folder"):
        train(tiny_config(synthetic_dataset, run), progress_log=lambda *a: None)
    assert not any(run.iterdir())


@pytest.mark.slow
def test_refuses_to_overwrite_a_run(finished_run, synthetic_dataset):
    with pytest.raises(SegnetError, match="already holds a run"):
        train(tiny_config(synthetic_dataset, finished_run), progress_log=lambda *a: None)


@pytest.mark.slow
def test_interrupted_then_resumed_run_ends_with_the_same_weights(synthetic_dataset, tmp_path, monkeypatch):
    straight = tmp_path / "straight"
    train(tiny_config(synthetic_dataset, straight, epochs=3), progress_log=lambda *a: None)

    import segnet.train.loop as training

    real_epoch = training.train_one_epoch

    def interrupt_in_epoch_two(*args, **kwargs):
        if inspect.signature(real_epoch).bind(*args, **kwargs).arguments["epoch"] == 2:
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)

    resumed = tmp_path / "resumed"
    monkeypatch.setattr(training, "train_one_epoch", interrupt_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(synthetic_dataset, resumed, epochs=3), progress_log=lambda *a: None)
    assert Checkpoint.load(resumed / LAST_CHECKPOINT).epoch == 1
    monkeypatch.setattr(training, "train_one_epoch", real_epoch)
    train(tiny_config(synthetic_dataset, resumed, epochs=3), resume=True, progress_log=lambda *a: None)

    with (resumed / HISTORY_FILE).open() as handle:
        assert [row["epoch"] for row in csv.DictReader(handle)] == ["1", "2", "3"]
    expected, actual = Checkpoint.load(straight / LAST_CHECKPOINT), Checkpoint.load(resumed / LAST_CHECKPOINT)
    for key, value in expected.model_state.items():
        assert torch.equal(value, actual.model_state[key]), key


@pytest.mark.slow
def test_resume_refuses_another_model(finished_run, synthetic_dataset, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    Checkpoint.load(finished_run / LAST_CHECKPOINT).save(run / LAST_CHECKPOINT)
    with pytest.raises(CheckpointError, match=f"holds model '{DEFAULT_MODEL}', but 'bayesian-segnet-basic'"):
        train(
            tiny_config(synthetic_dataset, run, model="bayesian-segnet-basic", epochs=3),
            resume=True,
            progress_log=lambda *a: None,
        )


@pytest.mark.slow
def test_nan_loss_stops_with_a_clear_message(synthetic_dataset, tmp_path):
    # An infinite rate is refused by the config now; an absurd finite one still diverges.
    with pytest.raises(SegnetError, match="training loss became nan"):
        train(tiny_config(synthetic_dataset, tmp_path / "run", lr=1e30), progress_log=lambda *a: None)


def fingerprint_of(height: float, width: float, thickness=None) -> dict:
    """A fingerprint of images of one size, with the darkfield data's class frequencies."""
    return {
        "height": {"median": height, "max": int(height)},
        "width": {"median": width, "max": int(width)},
        "class_frequencies": [0.86, 0.13, 0.01],
        "class_presence_frequencies": [0.86, 0.2, 0.05],
        "mean": [0.1, 0.2, 0.3],
        "std": [0.2, 0.2, 0.2],
        **({"class_thickness": thickness} if thickness else {}),
    }


def test_data_defaults_follow_the_fingerprint():
    plan = make_plan(load_config(), fingerprint_of(530.0, 700.0))
    assert (plan.image_size, plan.downsample, plan.focus_class) == (256, 1, 2)
    assert plan.mean == [0.1, 0.2, 0.3] and plan.class_weights == pytest.approx(
        [(0.2 / 0.86) ** 0.5, 1.0, 2.0]
    )  # sqrt-median
    assert make_plan(load_config(), fingerprint_of(100.0, 700.0)).image_size == 96
    assert (
        make_plan(load_config(None, {"batch_size": 8}), fingerprint_of(530.0, 700.0), world_size=3).per_process_batch
        == 2
    )


@pytest.mark.parametrize(
    "thickness, downsample, crop",
    [
        ([300.0, 61.0, 10.9], 3, 480),  # the real darkfield images: spirochetes about 11 px thick
        ([300.0, 23.0, 3.5], 1, 256),  # the synthetic ones: 3.5 px
        ([300.0, 200.0, None], 4, 512),  # at most 4; crops still fit the median image
    ],
)
def test_resolution_follows_the_thinnest_class(thickness, downsample, crop):
    fingerprint = fingerprint_of(530.0, 700.0, thickness)
    plan = make_plan(load_config(), fingerprint)
    assert (plan.downsample, plan.image_size) == (downsample, crop)
    assert make_plan(load_config(None, {"downsample": 1}), fingerprint).downsample == 1


def test_a_resumed_plan_keeps_what_the_data_decided():
    recorded = make_plan(load_config(), fingerprint_of(530.0, 700.0, [300.0, 61.0, 10.9]))
    changed = dict(
        fingerprint_of(530.0, 700.0, [300.0, 20.0, 3.0]), mean=[0.5, 0.5, 0.5], class_frequencies=[0.5, 0.01, 0.49]
    )
    assert make_plan(load_config(), changed).downsample == 1  # what these images alone would give
    resumed = make_plan(load_config(), changed, recorded=recorded)
    assert (resumed.downsample, resumed.image_size, resumed.focus_class) == (3, 480, 2)
    assert resumed.mean == [0.1, 0.2, 0.3] and resumed.class_weights == recorded.class_weights
    # The recorded crop is checked against the images given now: 100 px allow at most 192 at downsample 3.
    with pytest.raises(SegnetError, match="--image-size 480 is larger than the largest training image"):
        make_plan(load_config(), fingerprint_of(100.0, 100.0), recorded=recorded)


@pytest.mark.slow
def test_downsampled_run_is_stored_and_resumed_only_as_such(synthetic_dataset, tmp_path):
    run = tmp_path / "run"
    train(
        tiny_config(synthetic_dataset, run, epochs=1, image_size=64, downsample=2, space_to_depth=True),
        progress_log=lambda *a: None,
    )
    checkpoint = Checkpoint.load(run / LAST_CHECKPOINT)
    assert checkpoint.spec.downsample == 2 and checkpoint.spec.space_to_depth
    assert checkpoint.load_model(run / LAST_CHECKPOINT).total_stride == 32
    assert yaml.safe_load((run / CONFIG_FILE).read_text())["downsample"] == 2
    with pytest.raises(SegnetError, match="trained with downsample 2, not 1"):
        train(
            tiny_config(synthetic_dataset, run, epochs=2, image_size=64, downsample=1),
            resume=True,
            progress_log=lambda *a: None,
        )
    # Without --downsample the run resumes at its own, although these images alone would give 1,
    # and with its own input path.
    train(tiny_config(synthetic_dataset, run, epochs=2, image_size=64), resume=True, progress_log=lambda *a: None)
    assert Checkpoint.load(run / LAST_CHECKPOINT).spec == checkpoint.spec  # downsample 2, space-to-depth


@pytest.mark.slow
def test_a_run_rescaled_to_the_reference_diameter_plans_and_resumes_with_it(synthetic_dataset, tmp_path):
    run = tmp_path / "run"
    train(tiny_config(synthetic_dataset, run, epochs=1, scale_to_reference=True), progress_log=lambda *a: None)
    plan = read_plan(run / PLAN_FILE)
    fingerprint = json.loads((run / FINGERPRINT_FILE).read_text())
    assert plan.reference_diameter == (1, fingerprint["class_diameter"][1])
    train(tiny_config(synthetic_dataset, run, epochs=2), resume=True, progress_log=lambda *a: None)
    assert read_plan(run / PLAN_FILE).reference_diameter == plan.reference_diameter


@pytest.mark.slow
def test_deterministic_runs_repeat_bit_for_bit_and_leave_the_setting_as_they_found_it(
    synthetic_dataset, tmp_path, monkeypatch
):
    import segnet.train.loop as training

    real_epoch = training.train_one_epoch
    deterministic_during_epochs = []

    def recording_epoch(*args, **kwargs):
        deterministic_during_epochs.append(torch.are_deterministic_algorithms_enabled())
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(training, "train_one_epoch", recording_epoch)
    assert not torch.are_deterministic_algorithms_enabled()
    # One DataLoader worker, so the per-worker augmentation seeding is part of what must repeat.
    runs = [tmp_path / "first", tmp_path / "second"]
    for run in runs:
        train(
            tiny_config(synthetic_dataset, run, epochs=1, deterministic=True, num_workers=1),
            progress_log=lambda *a: None,
        )
        assert not torch.are_deterministic_algorithms_enabled()  # restored: the next run is free to be fast again
    assert deterministic_during_epochs == [True, True]
    first, second = (Checkpoint.load(run / LAST_CHECKPOINT).model_state for run in runs)
    assert all(torch.equal(first[key], second[key]) for key in first)
    with pytest.raises(SegnetError, match="already holds a run"):  # restored after a failed run too
        train(tiny_config(synthetic_dataset, runs[0], epochs=1, deterministic=True), progress_log=lambda *a: None)
    assert not torch.are_deterministic_algorithms_enabled()


@pytest.mark.slow
def test_early_stopping_after_patience_epochs_without_improvement(synthetic_dataset, tmp_path, monkeypatch):
    import segnet.train.loop as training

    scripted_iou = {1: 0.5, 2: 0.4, 3: 0.45, 4: 0.9}
    real_validate = training.validate
    epochs_validated = []

    def scripted_validate(*args, **kwargs):
        metrics = real_validate(*args, **kwargs)
        epochs_validated.append(len(epochs_validated) + 1)
        return dataclasses.replace(metrics, mean_iou=scripted_iou[epochs_validated[-1]])

    monkeypatch.setattr(training, "validate", scripted_validate)
    lines = []
    run = tmp_path / "run"
    train(tiny_config(synthetic_dataset, run, epochs=4, patience=2), progress_log=lines.append)
    assert epochs_validated == [1, 2, 3]
    assert any("early stopping after epoch 3" in line and "best 0.5000 at epoch 1" in line for line in lines), lines
    assert json.loads((run / BEST_METRICS_FILE).read_text())["epoch"] == 1
    assert Checkpoint.load(run / BEST_CHECKPOINT).epoch == 1 and Checkpoint.load(run / LAST_CHECKPOINT).best_epoch == 1


@pytest.mark.slow
def test_patience_needs_validation_images(synthetic_dataset, tmp_path):
    with pytest.raises(SegnetError, match="no images are held out"):
        train(
            tiny_config(synthetic_dataset, tmp_path / "run", patience=2, val_fraction=0), progress_log=lambda *a: None
        )


@pytest.mark.slow
def test_gradient_clipping_tensorboard_and_epoch_line(synthetic_dataset, tmp_path, monkeypatch):
    clipped_norms = []
    real_clip = torch.nn.utils.clip_grad_norm_

    def recording_clip(parameters, max_norm, *args, **kwargs):
        parameters = list(parameters)
        real_clip(parameters, max_norm, *args, **kwargs)
        clipped_norms.append(
            (
                max_norm,
                torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in parameters if p.grad is not None])).item(),
            )
        )

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", recording_clip)
    lines = []
    run = tmp_path / "run"
    train(tiny_config(synthetic_dataset, run, epochs=1, grad_clip=0.25, tensorboard=True), progress_log=lines.append)
    assert clipped_norms and all(max_norm == 0.25 and norm <= 0.25 + 1e-4 for max_norm, norm in clipped_norms)
    epoch_line = next(line for line in lines if line.startswith("epoch 1/1"))
    assert re.search(r"lr \d\.\d\de[-+]\d+, \d+s \([\d.]+ images/s, \d+% waiting for data\)", epoch_line), epoch_line

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / TENSORBOARD_FOLDER)).Reload()
    scalars = set(events.Tags()["scalars"])
    assert {
        "loss/train",
        "loss/val",
        "val/global_accuracy",
        "val/mean_iou",
        "learning_rate",
        "val_iou/spirochete",
    } <= scalars
    images = events.Tags()["images"]
    assert len(images) == 3 and all(tag.startswith("validation/") for tag in images)
    example = events.Images(images[0])[0]
    assert (example.width, example.height) == (3 * 48, 48)  # image | truth | prediction


def test_grad_clip_and_patience_are_validated():
    with pytest.raises(SegnetError, match="grad_clip = 0 is refused: input should be greater than 0"):
        load_config(None, {"grad_clip": 0})
    with pytest.raises(SegnetError, match="patience = 0 is refused: input should be greater than or equal to 1"):
        load_config(None, {"patience": 0})


@pytest.mark.slow
def test_tiny_time_budget_trains_one_validated_epoch_and_says_so(synthetic_dataset, tmp_path):
    lines = []
    run = tmp_path / "run"
    train(tiny_config(synthetic_dataset, run, epochs=5, time_budget=0.001), progress_log=lines.append)
    assert any("time budget 0.001 min: 1 epoch fit" in line and "schedule ends at epoch 1" in line for line in lines), (
        lines
    )
    config = yaml.safe_load((run / CONFIG_FILE).read_text())
    assert config["epochs"] == 1 and config["time_budget"] == 0.001
    assert len((run / HISTORY_FILE).read_text().splitlines()) == 1 + 1
    # The epoch the budget made the last one was validated, so it is best.pt.
    assert (
        Checkpoint.load(run / BEST_CHECKPOINT).epoch == 1
        and json.loads((run / BEST_METRICS_FILE).read_text())["epoch"] == 1
    )


@pytest.mark.slow
def test_time_budget_fits_the_learning_rate_schedule_to_the_fitted_epochs(synthetic_dataset, tmp_path, monkeypatch):
    import segnet.train.budget

    monkeypatch.setattr(segnet.train.budget.TimeBudget, "fit", lambda self, epochs_done, now=None: 3)
    budgeted, fixed = tmp_path / "budgeted", tmp_path / "fixed"
    common = {"val_every": 3, "deterministic": True, "calibration_images": 0}
    train(tiny_config(synthetic_dataset, budgeted, epochs=9, time_budget=60, **common), progress_log=lambda *a: None)
    train(tiny_config(synthetic_dataset, fixed, epochs=3, **common), progress_log=lambda *a: None)

    def learning_rates(run):
        with (run / HISTORY_FILE).open(newline="") as handle:
            return [row["lr"] for row in csv.DictReader(handle)]

    assert learning_rates(budgeted) == learning_rates(fixed) and len(learning_rates(fixed)) == 3
    # Every step's learning rate matched, the first after the refit included: the same weights.
    ours, theirs = (
        Checkpoint.load(budgeted / LAST_CHECKPOINT).model_state,
        Checkpoint.load(fixed / LAST_CHECKPOINT).model_state,
    )
    assert all(torch.equal(ours[key], theirs[key]) for key in theirs)


def test_time_budget_is_validated():
    with pytest.raises(SegnetError, match="time_budget = -1 is refused: input should be greater than or equal to 0"):
        load_config(None, {"time_budget": -1})


@pytest.mark.slow
def test_the_default_budget_ends_at_the_epoch_count_on_a_fast_machine_and_says_why(synthetic_dataset, tmp_path):
    lines = []
    assert load_config(None, {}).time_budget == 60
    train(tiny_config(synthetic_dataset, tmp_path / "run", epochs=2), progress_log=lines.append)
    assert any("time budget 60 min: 2 epochs fit (the most --epochs allows)" in line for line in lines), lines
    assert len((tmp_path / "run" / HISTORY_FILE).read_text().splitlines()) == 1 + 2


def test_a_budget_never_fits_more_than_the_ceiling_nor_fewer_than_done():
    from segnet.train.budget import TimeBudget

    budget = TimeBudget(60, ceiling=5, started=0.0)
    budget.record_training(1.0)
    assert budget.fit(1, now=1.0) == 5
    assert TimeBudget(60, started=0.0, training_seconds=[1.0]).fit(1, now=1.0) > 5
    assert TimeBudget(0.001, ceiling=5, started=0.0, training_seconds=[100.0]).fit(3, now=100.0) == 3


def test_refitting_the_epoch_count_resets_the_next_step_learning_rate(tmp_path):
    from segnet.train.budget import TimeBudget
    from segnet.train.loop import fit_schedule_to_budget, lr_lambda

    config = load_config(None, {"epochs": 9, "time_budget": 1, "warmup_epochs": 0})
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(9 * 4, 0, "cosine"))
    for _ in range(8):  # two epochs of 4 steps
        optimizer.step()
        scheduler.step()
    budget = TimeBudget(1)
    budget.record_training(1.0)
    run = SimpleNamespace(
        config=config, step=SimpleNamespace(scheduler=scheduler), steps_per_epoch=4, run_dir=tmp_path, log=print
    )
    fit_schedule_to_budget(run, 3, budget)
    assert config.epochs == 9  # the config as parsed stays as it was; the run's is replaced
    assert run.config.epochs == 3 and yaml.safe_load((tmp_path / CONFIG_FILE).read_text())["epochs"] == 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.epochs = 3
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * lr_lambda(3 * 4, 0, "cosine")(8))
    optimizer.step()
    scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * lr_lambda(3 * 4, 0, "cosine")(9))


@pytest.mark.slow
def test_a_crop_larger_than_every_image_is_refused_before_anything_is_written(synthetic_dataset, tmp_path):
    # The images are 48 px a side: at downsample 1 the crop may reach 64 (48 padded to the model's grid).
    run = tmp_path / "run"
    with pytest.raises(
        SegnetError, match=r"--image-size 1000 is larger than the largest training image \(48 px a side; at most 64"
    ):
        train(tiny_config(synthetic_dataset, run, image_size=1000, downsample=1), progress_log=lambda *a: None)
    assert not run.exists() or not any(run.iterdir())


def test_an_invalid_flag_writes_nothing_so_the_retry_is_not_refused(synthetic_dataset, tmp_path, capsys):
    from segnet.cli import main

    run = tmp_path / "run"
    args = [
        "train",
        "--data",
        str(synthetic_dataset),
        "--out",
        str(run),
        "--epochs",
        "1",
        "--image-size",
        "32",
        "--num-workers",
        "0",
    ]
    for bad in (["--lr", "-1"], ["--lr", "nan"]):
        assert main(args + bad) == 1
        assert capsys.readouterr().err.startswith(
            f"segnet: error: --lr: lr = {float(bad[1])!r} is refused: input should be"
        )
        assert not run.exists()


@pytest.mark.slow
def test_history_validation_scores_are_what_evaluate_without_tta_gives(synthetic_dataset, tmp_path, capsys):
    """Training validates through segnet evaluate's predictor: the number in history.csv is evaluate's.

    Training runs under bfloat16 autocast (validation and evaluation in float32), and best.pt is
    calibrated afterwards: its offsets change its decisions, so it is compared as it was scored,
    with the offsets it had then (none); last.pt is never calibrated.
    """
    from segnet.cli import main

    run = tmp_path / "run"
    train(tiny_config(synthetic_dataset, run, epochs=2, amp=True, calibration_images=2), progress_log=lambda *a: None)
    with (run / HISTORY_FILE).open(newline="") as handle:
        history = {int(row["epoch"]): row for row in csv.DictReader(handle)}
    best = Checkpoint.load(run / BEST_CHECKPOINT)
    assert best.logit_offsets  # calibrated after training
    best.model_state["logit_offsets"].zero_()
    best.replace(calibration=None).save(run / "best_as_scored.pt")

    def evaluate(checkpoint: str) -> dict:
        out = tmp_path / f"evaluation-{checkpoint}"
        assert (
            main(
                [
                    "evaluate",
                    "--checkpoint",
                    str(run / checkpoint),
                    "--data",
                    str(synthetic_dataset),
                    "--no-tta",
                    "--diameter",
                    "none",
                    "--device",
                    "cpu",
                    "--out",
                    str(out),
                ]
            )
            == 0
        )
        capsys.readouterr()
        return json.loads((out / "metrics.json").read_text())

    last, scored = evaluate("last.pt"), evaluate("best_as_scored.pt")
    assert abs(float(history[2]["val_mean_iou"]) - last["mean_iou"]) <= 1e-6
    assert abs(float(history[2]["val_global_accuracy"]) - last["global_accuracy"]) <= 1e-6
    best_metrics = json.loads((run / BEST_METRICS_FILE).read_text())
    assert best_metrics["confusion_matrix"] == scored["confusion_matrix"]
    assert abs(float(history[best.epoch]["val_mean_iou"]) - scored["mean_iou"]) <= 1e-6


@pytest.mark.slow
def test_a_run_names_its_hardware_and_warns_of_emulated_bf16(synthetic_dataset, tmp_path, monkeypatch):
    from segnet.core import distributed

    monkeypatch.setattr(distributed, "native_cpu_bf16", lambda: False)  # a CPU without native bf16, as most laptops
    lines = []
    train(tiny_config(synthetic_dataset, tmp_path / "run", epochs=1, amp=True, device="cpu"), progress_log=lines.append)
    hardware = lines[0]
    assert (
        hardware.startswith("hardware: ")
        and f"torch CPU capability {torch.backends.cpu.get_cpu_capability()}" in hardware
    )
    assert hardware.endswith(
        "--amp on a CPU without native bf16 (emulated there: tens of times slower than float32): bfloat16"
    )
    assert any(line.startswith("warning: --amp on a CPU without native bf16") for line in lines), lines
    lines.clear()
    train(tiny_config(synthetic_dataset, tmp_path / "default", epochs=1, device="cpu"), progress_log=lines.append)
    assert lines[0].endswith("CPU without native bf16: float32") and not any(
        line.startswith("warning:") for line in lines
    )
