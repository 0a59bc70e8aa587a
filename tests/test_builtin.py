"""Built-in models: packing a run into a shippable file, names for files, predict without a checkpoint, --init."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import tiny_config
from PIL import Image

from segnet.cli import main
from segnet.core import runfiles
from segnet.core.errors import CheckpointError
from segnet.core.runfiles import BEST_CHECKPOINT, LAST_CHECKPOINT
from segnet.data.synthetic import generate_sample
from segnet.export.pack import pack_checkpoint
from segnet.model.builtin import BUILTIN_MODELS, DEFAULT_BUILTIN_MODEL, resolve_checkpoint
from segnet.model.checkpoint import Checkpoint
from segnet.model.options import InferenceOptions
from segnet.model.predictor import Predictor
from segnet.plan.spec import DEFAULT_MODEL, ModelSpec
from segnet.train.loop import train


@pytest.fixture(scope="module")
def tiny_run(synthetic_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run")
    train(tiny_config(synthetic_dataset, out, epochs=2, downsample=2, image_size=64), progress_log=lambda *a: None)
    return out


@pytest.fixture()
def installed_tiny_model(tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The tiny run packed as the built-in default model, in a weights folder of its own."""
    weights = tmp_path / "weights"
    weights.mkdir()
    monkeypatch.setattr(runfiles, "WEIGHTS_DIR", weights)
    (weights / f"{DEFAULT_BUILTIN_MODEL}.md").write_text(
        "# Tiny\n\nA tiny test model of two epochs.\n\n## More\n\ntext\n"
    )
    return pack_checkpoint(tiny_run / BEST_CHECKPOINT, weights / f"{DEFAULT_BUILTIN_MODEL}.pt")


@pytest.mark.slow
def test_packed_model_is_small_float16_and_predicts_as_the_original(
    tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    packed = tmp_path / "packed.pt"
    assert main(["export", "--checkpoint", str(tiny_run / BEST_CHECKPOINT), "--pack", str(packed)]) == 0
    assert f"packed checkpoint: {packed}" in capsys.readouterr().out
    assert (
        packed.stat().st_size < 0.4 * (tiny_run / BEST_CHECKPOINT).stat().st_size
    )  # no optimiser state, half the bytes per weight
    shipping = Checkpoint.load(packed)  # weights_only
    assert shipping.optimizer_state is None and shipping.calibration is not None
    conv = next(t for name, t in shipping.model_state.items() if name.endswith("weight") and t.ndim == 4)
    assert conv.dtype == torch.float16
    image = generate_sample(64, 64, np.random.default_rng(1))[0]
    original = Predictor.from_checkpoint(tiny_run / BEST_CHECKPOINT).predict(image)
    shipped = Predictor.from_checkpoint(packed).predict(image)
    assert np.mean(original == shipped) > 0.99


@pytest.mark.slow
def test_packing_refuses_an_uncalibrated_checkpoint(tiny_run: Path, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="calibrated"):
        pack_checkpoint(tiny_run / LAST_CHECKPOINT, tmp_path / "packed.pt")


@pytest.mark.slow
def test_a_name_stands_for_its_file_unless_a_path_of_that_name_exists(
    installed_tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert resolve_checkpoint(DEFAULT_BUILTIN_MODEL) == installed_tiny_model
    assert resolve_checkpoint("runs/best.pt") == Path("runs/best.pt")
    monkeypatch.chdir(tmp_path)
    (tmp_path / DEFAULT_BUILTIN_MODEL).mkdir()
    assert resolve_checkpoint(DEFAULT_BUILTIN_MODEL) == Path(DEFAULT_BUILTIN_MODEL)


def test_a_missing_builtin_file_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runfiles, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(CheckpointError, match=f"built-in model '{DEFAULT_BUILTIN_MODEL}'.*not installed"):
        resolve_checkpoint(DEFAULT_BUILTIN_MODEL)


@pytest.mark.slow
def test_models_lists_each_builtin_model_with_its_card_summary(
    installed_tiny_model: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert (
        f"{DEFAULT_BUILTIN_MODEL} (default)" in out and "A tiny test model of two epochs." in out and "text" not in out
    )


@pytest.mark.slow
def test_predict_without_a_checkpoint_uses_the_builtin_model(
    installed_tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    image = generate_sample(64, 64, np.random.default_rng(2))[0]
    Image.fromarray(image).save(tmp_path / "a.png")
    assert main(["predict", str(tmp_path / "a.png"), "--out", str(tmp_path / "out"), "--no-tta"]) == 0
    assert f"using the built-in {DEFAULT_BUILTIN_MODEL} model" in capsys.readouterr().out
    mask = np.asarray(Image.open(tmp_path / "out" / "a_mask.png"))
    expected = Predictor.from_checkpoint(installed_tiny_model, InferenceOptions(tta=False)).predict(image)
    assert np.array_equal(mask, expected)


@pytest.mark.slow
def test_evaluate_a_builtin_model_needs_an_output_folder_and_scores_every_image(
    installed_tiny_model: Path, synthetic_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(["evaluate", "--checkpoint", DEFAULT_BUILTIN_MODEL, "--data", str(synthetic_dataset), "--no-tta"]) == 1
    assert "--out" in capsys.readouterr().err
    out = tmp_path / "evaluation"
    args = [
        "evaluate",
        "--checkpoint",
        DEFAULT_BUILTIN_MODEL,
        "--data",
        str(synthetic_dataset),
        "--no-tta",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    per_image = (out / "per_image.csv").read_text().strip().splitlines()
    assert len(per_image) - 1 == len(os.listdir(synthetic_dataset / "images"))


@pytest.mark.slow
def test_init_starts_training_from_the_named_weights(tiny_run: Path, synthetic_dataset: Path, tmp_path: Path) -> None:
    lines: list[str] = []
    # A learning rate too small to move the weights: what the run saves is what it started from.
    run = train(
        tiny_config(
            synthetic_dataset, tmp_path / "tuned", init=str(tiny_run / BEST_CHECKPOINT), lr=1e-12, calibration_images=0
        ),
        progress_log=lines.append,
    )
    start = Checkpoint.load(tiny_run / BEST_CHECKPOINT).model_state
    tuned_checkpoint = Checkpoint.load(run / LAST_CHECKPOINT)
    tuned = tuned_checkpoint.model_state
    # The resolution comes from the new data (1 on the synthetic images), not from the checkpoint's 2.
    assert tuned_checkpoint.spec.downsample == 1
    weights = [name for name, tensor in start.items() if name.endswith("weight") and tensor.ndim == 4]
    assert all(torch.allclose(start[name], tuned[name], atol=1e-6) for name in weights)
    assert not torch.any(tuned["logit_offsets"])  # refitted for the new data, not carried over
    assert any(line.startswith("fine-tuning from") for line in lines)
    scratch = Checkpoint.load(
        train(
            tiny_config(synthetic_dataset, tmp_path / "scratch", lr=1e-12, calibration_images=0),
            progress_log=lambda *a: None,
        )
        / LAST_CHECKPOINT
    )
    assert not torch.allclose(start[weights[0]], scratch.model_state[weights[0]], atol=1e-3)


@pytest.mark.slow
def test_init_refuses_weights_of_other_classes(tiny_run: Path, synthetic_dataset: Path, tmp_path: Path) -> None:
    config = tiny_config(
        synthetic_dataset,
        tmp_path / "run",
        init=str(tiny_run / BEST_CHECKPOINT),
        classes=["background", "cell", "rod", "other"],
    )
    with pytest.raises(CheckpointError, match="classes"):
        train(config, progress_log=lambda *a: None)
    assert not (tmp_path / "run" / LAST_CHECKPOINT).exists()


def test_the_shipped_model_loads_predicts_and_exports(tmp_path: Path) -> None:
    path = BUILTIN_MODELS[DEFAULT_BUILTIN_MODEL].path
    assert path.stat().st_size < 5 * 2**20
    shipped = Checkpoint.load(path)
    assert shipped.class_names == ["background", "erythrocyte", "spirochete"]
    # Trained with the defaults (the card's recipe), shipped without the optimiser's state.
    assert shipped.spec == ModelSpec(DEFAULT_MODEL, 3, downsample=3) and shipped.optimizer_state is None
    assert shipped.reference_diameters is not None and shipped.logit_offsets is not None
    image = generate_sample(96, 96, np.random.default_rng(0))[0]
    mask = Predictor.from_checkpoint(path).predict(image)
    assert mask.shape == image.shape[:2] and set(np.unique(mask)) <= {0, 1, 2}
    assert (
        main(
            [
                "export",
                "--checkpoint",
                DEFAULT_BUILTIN_MODEL,
                "--out",
                str(tmp_path / "model.onnx"),
                "--bioimageio",
                str(tmp_path / "package"),
            ]
        )
        == 0
    )
    assert (tmp_path / "package" / "rdf.yaml").is_file()
