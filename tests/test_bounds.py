"""Every number has a range, and no class or calibration is silently wrong: flags and YAML refuse
out-of-range numbers in one line, from one definition; masks of more than 256 classes keep their
class indices (16-bit); a TIFF with non-square pixels is refused rather than measured by x alone."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from segnet.cli import main
from segnet.core.errors import DataError, SegnetError
from segnet.data.classes import ClassRoles
from segnet.data.pairs import read_mask
from segnet.evaluate.measure import tiff_pixel_size
from segnet.plan.config import load_config, yaml_only_options
from segnet.predict.files import predict_paths


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["synth", "X", "--size", "1000000"], "--size"),
        (["synth", "X", "--size", "0"], "--size"),
        (["synth", "X", "--seed", "-1"], "--seed"),
        (["synth", "X", "--seed", str(2**63)], "--seed"),
        (["predict", "a.png", "--out", "X", "--pixel-size", "inf"], "--pixel-size"),
        (["predict", "a.png", "--out", "X", "--pixel-size", "nan"], "--pixel-size"),
        (["predict", "a.png", "--out", "X", "--pixel-size", "1e-320"], "--pixel-size"),
        (["predict", "a.png", "--out", "X", "--pixel-size", "1e308"], "--pixel-size"),
        (["predict", "a.png", "--out", "X", "--pixel-size", "-0.5"], "--pixel-size"),
    ],
)
def test_out_of_range_numbers_are_refused_when_parsed(tmp_path: Path, capsys, argv: list[str], option: str) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([str(tmp_path / word) if word == "X" else word for word in argv])
    assert exit_.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"argument {option}: " in error and "is refused" in error
    assert not list(tmp_path.iterdir())  # nothing written


@pytest.mark.slow
@pytest.mark.parametrize(
    ("option", "values"),
    [
        ("seed", ["-1"]),
        ("seed", [str(2**63)]),
        ("scale-range", ["1e4", "1e4"]),
        ("scale-range", ["1e-9", "1e-9"]),
        ("scale-range", ["1.2", "0.8"]),
    ],
)
def test_training_numbers_are_refused_from_flags_and_yaml_alike(
    synthetic_dataset: Path, tmp_path: Path, capsys, option: str, values: list[str]
) -> None:
    out = tmp_path / "run"
    key = option.replace("-", "_")
    given = f"[{', '.join(values)}]" if len(values) > 1 else values[0]
    flag = ["--set", f"{key}={given}"] if key in yaml_only_options() else [f"--{option}", *values]
    assert main(["train", "--data", str(synthetic_dataset), "--out", str(out), *flag]) == 1
    from_flag = capsys.readouterr().err.strip()
    config = tmp_path / "config.yaml"
    config.write_text(f"{key}: [{', '.join(values)}]\n" if len(values) > 1 else f"{key}: {values[0]}\n")
    assert main(["train", "--data", str(synthetic_dataset), "--out", str(out), "--config", str(config)]) == 1
    from_yaml = capsys.readouterr().err.strip()
    for error in (from_flag, from_yaml):
        assert len(error.splitlines()) == 1 and error.startswith("segnet: error: ") and key in error
    assert not out.exists()


class OneClassEverywhere:
    """Stands in for a Predictor of ``num_classes`` classes that finds class ``winner`` at every pixel."""

    samples_uncertainty = False

    def __init__(self, num_classes: int, winner: int) -> None:
        self.class_names = [f"class{index}" for index in range(num_classes)]
        self.roles = ClassRoles.of(["background", *self.class_names[1:]])
        self.winner = winner

    def predict_proba(self, image: np.ndarray, progress=None) -> np.ndarray:
        proba = np.zeros((len(self.class_names), *image.shape[:2]), np.float32)
        proba[self.winner] = 1.0
        return proba


def test_masks_of_more_than_256_classes_keep_their_class(tmp_path: Path) -> None:
    Image.fromarray(np.full((16, 16, 3), 50, np.uint8)).save(tmp_path / "a.png")
    predictor = OneClassEverywhere(300, winner=258)  # 258 % 256 = 2 in an 8-bit mask
    predict_paths(predictor, [str(tmp_path / "a.png")], tmp_path / "out", min_area=1, progress=False)
    mask = read_mask(tmp_path / "out" / "a_mask.png", 300)
    assert mask.dtype == np.uint16 and (mask == 258).all()


def test_non_square_tiff_pixels_are_refused_and_the_other_images_go_on(tmp_path: Path) -> None:
    image = np.full((16, 16, 3), 50, np.uint8)
    tifffile.imwrite(tmp_path / "wide.tif", image, resolution=(40000, 20000), resolutionunit="CENTIMETER")
    tifffile.imwrite(tmp_path / "square.tif", image, resolution=(40000, 40000), resolutionunit="CENTIMETER")
    with pytest.raises(DataError, match=r"wide\.tif: its pixels are not square \(0\.25 x 0\.5 um\)"):
        tiff_pixel_size(tmp_path / "wide.tif")
    assert tiff_pixel_size(tmp_path / "square.tif") == pytest.approx(0.25)
    messages: list[str] = []
    inputs = [str(tmp_path / "wide.tif"), str(tmp_path / "square.tif")]
    summary = predict_paths(OneClassEverywhere(3, 1), inputs, tmp_path / "out", progress=False, log=messages.append)
    assert summary.images == 1 and len(summary.failed) == 1 and "not square" in summary.failed[0]
    assert messages == [f"skipped {summary.failed[0]}"]
    assert not (tmp_path / "out" / "wide_mask.png").exists()


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        ({"epochs": 10**40}, f"epochs = {10**40} is refused"),
        ({"warmup_epochs": -1}, "warmup_epochs = -1 is refused"),
        ({"num_workers": 10**6}, "num_workers = 1000000 is refused"),
        ({"lr": float("inf")}, "lr = inf is refused"),  # a finite absurd rate diverges into a clear NaN message
        (
            {"mask_palette": {"background": [0, 0, 0], "erythrocyte": [9, 9, 9], "spirochete": [9, 9, 9]}},
            "erythrocyte, spirochete the same colour",
        ),
    ],
)
def test_config_values_beyond_any_run_are_one_line(values: dict, problem: str) -> None:
    with pytest.raises(SegnetError, match=re.escape(problem)) as error:
        load_config(None, values)
    assert "\n" not in str(error.value)
