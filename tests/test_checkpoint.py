"""The typed checkpoint: what it writes is what it reads, and the file stays the plain dict it was."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from segnet.model.builtin import BUILTIN_MODELS, DEFAULT_BUILTIN_MODEL
from segnet.model.checkpoint import Checkpoint
from segnet.model.networks import build_model
from segnet.plan.spec import ModelSpec

CLASSES = ["background", "erythrocyte", "spirochete"]


def test_a_checkpoint_reads_back_as_written_and_leaves_out_what_is_not_recorded(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model(ModelSpec("segnet-basic", 3, downsample=2))
    written = Checkpoint.of_model(
        model,
        CLASSES,
        [0.1, 0.2, 0.3],
        [0.2, 0.2, 0.25],
        config={"epochs": 3, "optimizer": "sgd"},
        epoch=3,
        best_score=0.5,
        best_epoch=2,
        training_images=["001", "002"],
    )
    written.save(tmp_path / "model.pt")
    read = Checkpoint.load(tmp_path / "model.pt")
    for field in ("spec", "class_names", "mean", "std", "config", "epoch", "best_score", "best_epoch"):
        assert getattr(read, field) == getattr(written, field), field
    assert read.training_images == ["001", "002"] and read.setting("optimizer") == "sgd"
    assert read.setting("lr", "not recorded") == "not recorded"
    assert all(torch.equal(read.model_state[name], tensor) for name, tensor in written.model_state.items())
    assert read.calibration is None and read.logit_offsets is None and read.reference_diameters is None
    on_disk = torch.load(tmp_path / "model.pt", weights_only=True)
    assert set(on_disk) == {
        "format_version", "model", "model_state", "class_names", "normalization", "config", "epoch",
        "best_score", "best_epoch", "training_images",
    }  # fmt: skip
    assert on_disk["model"] == ModelSpec("segnet-basic", 3, downsample=2).to_dict()


@pytest.mark.parametrize("written_before_space_to_depth", [False, True])
def test_the_shipped_model_is_read_as_its_file_holds_it(written_before_space_to_depth: bool, tmp_path: Path) -> None:
    path = BUILTIN_MODELS[DEFAULT_BUILTIN_MODEL].path
    on_disk = torch.load(path, weights_only=True)
    if written_before_space_to_depth:  # the one key a checkpoint may lack: files written before it existed
        del on_disk["model"]["space_to_depth"]
        path = tmp_path / "older.pt"
        torch.save(on_disk, path)
    shipped = Checkpoint.load(path)
    again = shipped.for_shipping().to_dict()
    assert again.keys() == on_disk.keys()
    assert again["model"] == {**on_disk["model"], "space_to_depth": False}
    assert all(again[key] == on_disk[key] for key in on_disk if key not in ("model", "model_state"))
    assert again["model_state"].keys() == on_disk["model_state"].keys()
    for name, tensor in on_disk["model_state"].items():
        assert again["model_state"][name].dtype == tensor.dtype and torch.equal(again["model_state"][name], tensor)
    assert shipped.logit_offsets == on_disk["calibration"]["offsets"]
    assert shipped.reference_diameters == on_disk["fingerprint"]["class_diameter"]
