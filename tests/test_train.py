"""Training: run folder files, checkpoints, resume, refusal to overwrite, NaN detection."""

from __future__ import annotations

import csv

import pytest
import torch
import yaml

from segnet.checkpoint import load_checkpoint, save_checkpoint
from segnet.config import load_config
from segnet.errors import CheckpointError, SegnetError
from segnet.train import resolve_data_defaults, train


def tiny_config(data, out, **overrides):
    values = {"data": str(data), "out": str(out), "epochs": 2, "batch_size": 4, "image_size": 32, "num_workers": 0, "val_fraction": 0.25}
    values.update(overrides)
    return load_config(None, values)


@pytest.fixture(scope="module")
def finished_run(synthetic_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    train(tiny_config(synthetic_dataset, out), progress_log=lambda *a: None)
    return out


def test_run_folder_holds_everything(finished_run):
    for name in ("best.pt", "last.pt", "history.csv", "config.yaml", "split.json", "fingerprint.json", "curves.png"):
        assert (finished_run / name).is_file(), name
    with (finished_run / "history.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [row["epoch"] for row in rows] == ["1", "2"]
    assert 0 <= float(rows[-1]["val_mean_iou"]) <= 1
    config = yaml.safe_load((finished_run / "config.yaml").read_text())
    assert config["image_size"] == 32 and config["model"] == "segnet-basic"


def test_checkpoint_is_self_describing(finished_run):
    state = load_checkpoint(finished_run / "last.pt")
    assert state["epoch"] == 2
    assert state["class_names"] == ["background", "erythrocyte", "spirochete"]
    assert len(state["normalization"]["mean"]) == 3 and all(s > 0 for s in state["normalization"]["std"])
    assert state["model"] == {"name": "segnet-basic", "num_classes": 3, "in_channels": 3}
    assert "optimizer_state" in state and "scheduler_state" in state


def test_refuses_to_overwrite_a_run(finished_run, synthetic_dataset):
    with pytest.raises(SegnetError, match="already holds a run"):
        train(tiny_config(synthetic_dataset, finished_run), progress_log=lambda *a: None)


def test_interrupted_then_resumed_run_ends_with_the_same_weights(synthetic_dataset, tmp_path, monkeypatch):
    straight = tmp_path / "straight"
    train(tiny_config(synthetic_dataset, straight, epochs=3), progress_log=lambda *a: None)

    import segnet.train as training

    real_epoch = training.train_one_epoch

    def interrupt_in_epoch_two(*args, **kwargs):
        if args[6] == 2:  # the epoch argument
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)

    resumed = tmp_path / "resumed"
    monkeypatch.setattr(training, "train_one_epoch", interrupt_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(synthetic_dataset, resumed, epochs=3), progress_log=lambda *a: None)
    assert load_checkpoint(resumed / "last.pt")["epoch"] == 1
    monkeypatch.setattr(training, "train_one_epoch", real_epoch)
    train(tiny_config(synthetic_dataset, resumed, epochs=3), resume=True, progress_log=lambda *a: None)

    with (resumed / "history.csv").open() as handle:
        assert [row["epoch"] for row in csv.DictReader(handle)] == ["1", "2", "3"]
    expected = load_checkpoint(straight / "last.pt")["model_state"]
    actual = load_checkpoint(resumed / "last.pt")["model_state"]
    for key, value in expected.items():
        assert torch.equal(value, actual[key]), key


def test_resume_refuses_another_model(finished_run, synthetic_dataset, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    state = load_checkpoint(finished_run / "last.pt")
    save_checkpoint(state, run / "last.pt")
    with pytest.raises(CheckpointError, match="holds model 'segnet-basic', but 'notebook-segnet'"):
        train(tiny_config(synthetic_dataset, run, model="notebook-segnet", epochs=3), resume=True, progress_log=lambda *a: None)


def test_nan_loss_stops_with_a_clear_message(synthetic_dataset, tmp_path):
    with pytest.raises(SegnetError, match="training loss became nan"):
        train(tiny_config(synthetic_dataset, tmp_path / "run", lr=float("inf")), progress_log=lambda *a: None)


def test_data_defaults_follow_the_fingerprint():
    fingerprint = {"height": {"median": 530.0}, "width": {"median": 700.0}, "class_frequencies": [0.86, 0.13, 0.01]}
    plan = resolve_data_defaults(load_config(), fingerprint)
    assert plan == {"image_size": 256, "focus_class": 2}
    small = dict(fingerprint, height={"median": 100.0})
    assert resolve_data_defaults(load_config(), small)["image_size"] == 96
