"""Retired options (issue 34): files that name them read where they did nothing, else one line says why not."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from segnet.cli import main
from segnet.core.errors import CheckpointError, SegnetError
from segnet.data.synthetic import generate_sample
from segnet.model.checkpoint import Checkpoint
from segnet.model.networks import build_model, build_model_from_kwargs
from segnet.model.predictor import Predictor
from segnet.plan.config import load_config
from segnet.plan.spec import ModelSpec

CLASSES = ["background", "erythrocyte", "spirochete"]
NEUTRAL_CONFIG = {"detail_width": 0, "loss": "ce+dice", "skeleton_recall": None, "ema_decay": None}
"""The retired options as a checkpoint's config held them when they were off."""
RETIRED = [
    ({"config": {"detail_width": 8}, "model": {"detail_width": 8}}, "--detail-width 8"),
    ({"config": {"loss": "ce+lovasz"}}, "--loss ce+lovasz"),
    ({"config": {"loss": "ce+focal-tversky"}}, "--loss ce+focal-tversky"),
    ({"config": {"skeleton_recall": 0.2}}, "--skeleton-recall 0.2"),
    ({"config": {"ema_decay": 0.999}}, "--ema-decay 0.999"),
]
"""A checkpoint's edits to a retired setting, and the setting as the refusal names it."""


def refusal(path: Path | str, setting: str) -> str:
    return (
        f"{path}: trained with {setting}, which segnet no longer has (retired after commit 2f4be69: "
        "see docs/decisions.md); use an earlier segnet to read it"
    )


def old_checkpoint(path: Path, config: dict[str, Any], model: dict[str, Any] | None = None) -> Path:
    """A checkpoint as an earlier segnet wrote it: its config and model spec dict edited to hold
    ``config`` and ``model``."""
    torch.manual_seed(0)
    model_of_today = build_model(ModelSpec("segnet-basic", len(CLASSES)))
    state = Checkpoint.of_model(
        model_of_today, CLASSES, [0.2, 0.25, 0.3], [0.2, 0.2, 0.2], config={"epochs": 1, **config}, epoch=1
    ).to_dict()
    state["model"].update(model or {})
    torch.save(state, path)
    return path


def test_an_old_checkpoint_with_retired_options_off_loads_and_predicts(tmp_path: Path) -> None:
    path = old_checkpoint(tmp_path / "old.pt", NEUTRAL_CONFIG, {"detail_width": 0})
    loaded = Checkpoint.load(path)
    assert loaded.config == {"epochs": 1, "loss": "ce+dice"}
    assert loaded.spec == ModelSpec("segnet-basic", len(CLASSES))
    # The shipped model's config holds None for them, as do checkpoints that predate them.
    unset = old_checkpoint(
        tmp_path / "unset.pt", {"detail_width": None, "skeleton_recall": 0.0}, {"detail_width": None}
    )
    assert Checkpoint.load(unset).config == {"epochs": 1}
    image = generate_sample(48, 40, np.random.default_rng(0))[0]
    assert Predictor.from_checkpoint(path).predict(image).shape == (48, 40)


@pytest.mark.parametrize(("edits", "setting"), RETIRED, ids=[setting for _, setting in RETIRED])
def test_a_checkpoint_trained_with_a_retired_option_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], edits: dict[str, dict[str, Any]], setting: str
) -> None:
    path = old_checkpoint(tmp_path / "best.pt", {**NEUTRAL_CONFIG, **edits.get("config", {})}, edits.get("model"))
    with pytest.raises(CheckpointError) as refused:
        Checkpoint.load(path)
    assert str(refused.value) == refusal(path, setting)
    image = tmp_path / "in.png"
    Image.fromarray(generate_sample(32, 32, np.random.default_rng(0))[0]).save(image)
    assert main(["predict", "--checkpoint", str(path), str(image), "--out", str(tmp_path / "out")]) == 1
    assert capsys.readouterr().err == f"segnet: error: {refusal(path, setting)}\n"


def test_a_run_config_with_retired_options_is_read_only_where_they_are_off(tmp_path: Path) -> None:
    """A run's config.yaml, as ``train --resume --config RUN/config.yaml`` reads it."""
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"epochs": 3, **NEUTRAL_CONFIG}))
    assert load_config(path).epochs == 3
    for edits, setting in RETIRED:
        path.write_text(yaml.safe_dump({"epochs": 3, **NEUTRAL_CONFIG, **edits.get("config", {})}))
        with pytest.raises(SegnetError) as refused:
            load_config(path)
        assert str(refused.value) == refusal(path, setting)


def test_a_bioimageio_package_with_a_retired_option_builds_only_where_it_is_off() -> None:
    """Its architecture kwargs are the spec a checkpoint stored, read as a checkpoint's."""
    kwargs = {**ModelSpec("segnet-basic", len(CLASSES), downsample=2).to_dict(), "detail_width": 0}
    assert build_model_from_kwargs(**kwargs).spec == ModelSpec("segnet-basic", len(CLASSES), downsample=2)
    with pytest.raises(CheckpointError) as refused:
        build_model_from_kwargs(**{**kwargs, "detail_width": 16})
    assert str(refused.value) == refusal("the bioimage.io architecture kwargs", "--detail-width 16")


@pytest.mark.parametrize("flag", ["--detail-width", "--skeleton-recall", "--ema-decay"])
def test_a_retired_flag_is_named_as_retired(capsys: pytest.CaptureFixture[str], flag: str) -> None:
    with pytest.raises(SystemExit):
        main(["train", "--data", "DIR", "--out", "RUN", flag, "1"])
    assert capsys.readouterr().err == (
        f"segnet train: error: unknown option {flag}: segnet no longer has it "
        "(retired after commit 2f4be69: see docs/decisions.md)\n"
    )
