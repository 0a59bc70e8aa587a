"""Per-image scale: object diameters, the factor, and a predictor that segments at the reference size."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage
from skimage.draw import disk

from segnet.cli import main
from segnet.core.errors import SegnetError
from segnet.data.classes import ClassRoles
from segnet.data.fingerprint import compute_fingerprint, object_diameter
from segnet.export.formats import export_onnx
from segnet.model.checkpoint import Checkpoint
from segnet.model.networks import build_model
from segnet.model.options import AUTO_DIAMETER, DEFAULT_INFERENCE, InferenceOptions, diameter_text, parse_diameter
from segnet.model.predictor import Predictor
from segnet.model.scale import ESTIMATE_QUANTILE, Rescaled, scale_factor
from segnet.plan.spec import ModelSpec


def discs(shape: tuple[int, int], radius: int, centres: list[tuple[int, int]]) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    for centre in centres:
        mask[disk(centre, radius, shape=shape)] = 1
    return mask


def disc_image(shape: tuple[int, int], radius: int, centres: list[tuple[int, int]]) -> np.ndarray:
    return np.repeat((discs(shape, radius, centres) * 200)[..., None], 3, axis=2).astype(np.uint8)


class Thresholder:
    """A stand-in model: bright pixels are class 1; it records the sizes it was given."""

    class_names = ["background", "erythrocyte"]
    roles = ClassRoles.of(class_names)
    reference_diameters = None

    def __init__(self) -> None:
        self.shapes: list[tuple[int, ...]] = []

    def predict_proba(self, image: np.ndarray, *, progress=None) -> np.ndarray:
        self.shapes.append(image.shape)
        foreground = self.foreground(image)
        return np.stack([1 - foreground, foreground]).astype(np.float32)

    def foreground(self, image: np.ndarray) -> np.ndarray:
        return image[..., 0] > 127


class FragmentsAtFirst(Thresholder):
    """Finds only the cells' cores on its first pass, as a model shown cells at the wrong scale finds fragments."""

    def foreground(self, image: np.ndarray) -> np.ndarray:
        found = super().foreground(image)
        return ndimage.binary_erosion(found, iterations=5) if len(self.shapes) == 1 else found


class SwellsAtFirstThenFragments(Thresholder):
    """Cells look twice their size on the first pass and in pieces on the next: the estimates contradict."""

    def foreground(self, image: np.ndarray) -> np.ndarray:
        found = super().foreground(image)
        return (
            ndimage.binary_dilation(found, iterations=10)
            if len(self.shapes) == 1
            else ndimage.binary_erosion(found, iterations=4)
        )


class SmallerFragmentsWhenEnlarged(Thresholder):
    """Finds fragments on every pass, smaller (at the image's size) the more the image is enlarged."""

    def foreground(self, image: np.ndarray) -> np.ndarray:
        return ndimage.binary_erosion(super().foreground(image), iterations=5 if len(self.shapes) == 1 else 25)


class LosesCellsWhenEnlarged(Thresholder):
    def foreground(self, image: np.ndarray) -> np.ndarray:
        return super().foreground(image) if len(self.shapes) == 1 else np.zeros(image.shape[:2], bool)


def test_diameter_of_discs_counts_touching_ones_apart() -> None:
    mask = discs((120, 160), 10, [(30, 30), (30, 49), (90, 120)])  # the first two touch
    assert object_diameter(mask == 1) == pytest.approx(21, abs=1.5)
    assert object_diameter(np.zeros((50, 50), bool)) is None
    assert object_diameter(np.ones((50, 50), bool)) is None
    assert object_diameter(discs((50, 50), 2, [(25, 25)]) == 1) is None  # under MIN_AREA: not an object


def test_a_higher_quantile_reads_past_the_fragments() -> None:
    mask = discs((120, 160), 15, [(30, 30), (85, 120), (30, 130)])  # three whole 31 px cells
    mask |= discs((120, 160), 4, [(10, 80), (40, 90), (60, 60), (100, 20), (105, 50)])  # five 9 px pieces
    assert object_diameter(mask == 1) == pytest.approx(9, abs=1.5)
    assert object_diameter(mask == 1, quantile=ESTIMATE_QUANTILE) == pytest.approx(31, abs=1.5)
    uniform = discs((80, 80), 8, [(20, 20), (60, 60)]) == 1
    assert object_diameter(uniform, quantile=ESTIMATE_QUANTILE) == object_diameter(uniform)


def test_the_fingerprint_records_each_class_s_object_diameter() -> None:
    mask = discs((80, 80), 8, [(20, 20), (60, 60)])
    fingerprint = compute_fingerprint([(np.zeros((80, 80, 3), np.uint8), mask)], 3)
    assert fingerprint["class_diameter"][1] == pytest.approx(17, abs=1.5)
    assert fingerprint["class_diameter"][2] is None


@pytest.mark.parametrize(
    ("diameter", "expected"),
    [(25.0, 4.0), (10.0, 4.0), (50.0, 2.0), (110.0, 1.0), (90.0, 1.0), (400.0, 0.5), (None, 1.0)],
)
def test_scale_factor_is_clipped_and_leaves_near_reference_sizes_alone(diameter: float | None, expected: float) -> None:
    assert scale_factor(diameter, 100.0) == pytest.approx(expected)


def test_small_objects_are_segmented_enlarged_and_answered_at_the_image_size() -> None:
    mask = discs((60, 80), 5, [(20, 20), (40, 60)])
    model = Thresholder()
    rescaled = Rescaled(model, reference=44.0)
    proba = rescaled.predict_proba(disc_image((60, 80), 5, [(20, 20), (40, 60)]))
    assert [shape[:2] for shape in model.shapes] == [(60, 80), (240, 320)]  # a first pass, then 4x (11 px -> 44 px)
    assert rescaled.factors == [1.0, 4.0] and rescaled.last_factor == pytest.approx(4.0)
    assert proba.shape == (2, 60, 80) and np.allclose(proba.sum(axis=0), 1, atol=1e-5)
    assert np.mean(proba.argmax(axis=0) == mask) > 0.98


def test_an_estimate_from_fragments_is_corrected_on_the_rescaled_pass() -> None:
    model = FragmentsAtFirst()
    rescaled = Rescaled(model, reference=42.0)
    rescaled.predict(
        disc_image((80, 100), 10, [(25, 25), (55, 70)])
    )  # 21 px cells, whose 11 px cores the first pass finds
    assert len(model.shapes) == 3 and model.shapes[1][:2] == (320, 400)  # the cores read 10 px: 4x, the cap
    assert rescaled.factors[:2] == [1.0, 4.0] and rescaled.last_factor == pytest.approx(
        2.0, abs=0.15
    )  # 21 px seen there: 2x
    assert model.shapes[2][:2] == (round(80 * rescaled.last_factor), round(100 * rescaled.last_factor))


def test_a_given_diameter_skips_the_first_pass_and_no_objects_keep_it() -> None:
    model = Thresholder()
    Rescaled(model, 11.0, reference=22.0).predict(disc_image((60, 80), 5, [(30, 40)]))
    assert [shape[:2] for shape in model.shapes] == [(120, 160)]
    empty = Thresholder()
    result = Rescaled(empty, reference=22.0).predict(np.zeros((30, 30, 3), np.uint8))
    assert len(empty.shapes) == 1 and not result.any()


def test_a_correction_asking_for_more_of_the_same_is_not_followed() -> None:
    model = SmallerFragmentsWhenEnlarged()
    rescaled = Rescaled(model, reference=50.0)
    rescaled.predict(disc_image((100, 120), 15, [(30, 30), (70, 85)]))  # 31 px cells, 21 px fragments: 2.4x
    assert len(model.shapes) == 2 and rescaled.factors == [1.0, rescaled.last_factor]
    assert rescaled.last_factor == pytest.approx(2.4, abs=0.2)  # the second pass's 4x is not followed


def test_contradicting_estimates_keep_the_image_as_given() -> None:
    model = SwellsAtFirstThenFragments()
    rescaled = Rescaled(model, reference=21.0)
    rescaled.predict(disc_image((80, 100), 10, [(25, 25), (55, 70)]))
    assert len(rescaled.factors) == 2 and rescaled.factors[1] < 0.6  # the swollen first pass said: shrink
    assert len(model.shapes) == 2 and rescaled.last_factor == 1.0  # the fragments then said: enlarge


def test_cells_lost_at_the_new_scale_keep_the_first_pass() -> None:
    model = LosesCellsWhenEnlarged()
    rescaled = Rescaled(model, reference=44.0)
    image = disc_image((60, 80), 5, [(20, 20)])
    assert rescaled.predict(image).any()
    assert len(model.shapes) == 2 and rescaled.last_factor == 1.0


@pytest.mark.parametrize("recorded", [None, [None, None], [None, math.nan], [None, -3.0], [None, "big"], [None]])
def test_no_usable_reference_is_an_error(recorded: list | None) -> None:
    model = Thresholder()
    model.reference_diameters = recorded
    with pytest.raises(SegnetError, match="records no usable reference cell size"):
        Rescaled(model)
    assert Rescaled(model, reference=30.0).reference == 30.0


def checkpoint_with(tmp_path: Path, fingerprint: dict | None) -> Path:
    torch.manual_seed(0)
    model = build_model(ModelSpec("segnet-basic", 3))
    entries = {"fingerprint": fingerprint} if fingerprint is not None else {}
    path = tmp_path / "model.pt"
    classes = ["background", "erythrocyte", "spirochete"]
    Checkpoint.of_model(model, classes, [0.2] * 3, [0.2] * 3, config={}, epoch=0, **entries).save(path)
    return path


def test_a_predictor_scales_to_its_checkpoint_s_reference(tmp_path: Path) -> None:
    path = checkpoint_with(tmp_path, {"class_diameter": [None, 40.0, 9.0]})
    predictor = Predictor.from_checkpoint(path, InferenceOptions(device="cpu", tta=False, diameter=10.0))
    assert predictor.scale is not None and predictor.scale.reference == 40.0
    image = np.full((24, 30, 3), 90, np.uint8)
    proba = predictor.predict_proba(image)
    assert proba.shape == (3, 24, 30) and predictor.scale.factors == [4.0]
    plain = Predictor.from_checkpoint(path, InferenceOptions(device="cpu", tta=False, diameter=None))
    assert plain.scale is None
    np.testing.assert_allclose(predictor.scale.predictor.predict_proba(image), plain.predict_proba(image))


@pytest.mark.parametrize("fingerprint", [None, {"class_diameter": "wide"}, {"class_diameter": [None, None, None]}])
def test_a_checkpoint_without_a_reference_segments_as_given_unless_a_size_is_asked_for(
    tmp_path: Path, fingerprint: dict | None, caplog: pytest.LogCaptureFixture
) -> None:
    """``auto``, the default, falls back to the images as given (saying so); a size in pixels is an error."""
    path = checkpoint_with(tmp_path, fingerprint)
    with pytest.raises(SegnetError, match="records no usable reference cell size.*--diameter none"):
        Predictor.from_checkpoint(path, InferenceOptions(device="cpu", diameter=12.0))
    with caplog.at_level(logging.WARNING, logger="segnet.model.scale"):
        fallback = Predictor.from_checkpoint(path, DEFAULT_INFERENCE.replace(device="cpu", tta=False))
    assert DEFAULT_INFERENCE.diameter == AUTO_DIAMETER and fallback.scale is None
    assert "records no usable reference cell size" in caplog.text and "segmented as given" in caplog.text


def test_a_lone_speck_in_an_image_without_cells_sets_no_scale() -> None:
    """The scale is read off the cells counting would count: one 11-px blob in a large image (a speck of
    debris taken for a cell) is opened away, so the image is not blown up to the scale limit."""
    model = Thresholder()
    rescaled = Rescaled(model, reference=100.0)
    speck = disc_image((1000, 1000), 5, [(500, 500)])
    assert object_diameter(speck[..., 0] > 127) == pytest.approx(11, abs=1)  # what the raw argmax measured
    rescaled.predict(speck)
    assert rescaled.factors == [1.0] and len(model.shapes) == 1


@pytest.mark.parametrize(("text", "expected"), [("auto", AUTO_DIAMETER), ("None", None), (" 48 ", 48.0)])
def test_a_typed_diameter_is_a_size_auto_or_none(text: str, expected: object) -> None:
    assert parse_diameter(text) == expected
    assert parse_diameter(diameter_text(expected)) == expected  # type: ignore[arg-type]
    with pytest.raises(SegnetError, match="'auto' or 'none', got 'big'"):
        parse_diameter("big")


def test_an_onnx_export_carries_the_reference_and_scales_as_its_checkpoint(tmp_path: Path) -> None:
    path = checkpoint_with(tmp_path, {"class_diameter": [None, 40.0, 9.0]})
    export_onnx(path, tmp_path / "model.onnx")
    options = InferenceOptions(device="cpu", tta=False, diameter=10.0)
    from_onnx = Predictor.from_onnx(tmp_path / "model.onnx", options)
    assert from_onnx.reference_diameters == [None, 40.0, 9.0] and from_onnx.scale is not None
    image = np.full((24, 30, 3), 90, np.uint8)
    np.testing.assert_allclose(
        from_onnx.predict_proba(image), Predictor.from_checkpoint(path, options).predict_proba(image), atol=1e-4
    )
    assert from_onnx.scale.factors == [4.0]
    (tmp_path / "unfit").mkdir()
    unfit = checkpoint_with(tmp_path / "unfit", {"class_diameter": [None, 40.0]})
    export_onnx(unfit, tmp_path / "old.onnx")  # diameters that do not fit the classes are left out, not exported
    assert Predictor.from_onnx(tmp_path / "old.onnx", options.replace(diameter=None)).reference_diameters is None
    with pytest.raises(SegnetError, match="records no usable reference cell size"):
        Predictor.from_onnx(tmp_path / "old.onnx", options)


@pytest.mark.parametrize("diameter", [0, -5.0, "big", math.inf])
def test_bad_diameters_are_refused(diameter: object) -> None:
    with pytest.raises(SegnetError, match="cell diameter must be a positive number"):
        InferenceOptions(diameter=diameter)  # type: ignore[arg-type]


def test_predict_with_a_diameter_from_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = checkpoint_with(tmp_path, {"class_diameter": [None, 40.0, 9.0]})
    Image.fromarray(disc_image((40, 48), 6, [(20, 24)])).save(tmp_path / "cells.png")
    common = ["predict", "--checkpoint", str(path), str(tmp_path / "cells.png"), "--device", "cpu", "--no-tta"]
    assert main([*common, "--out", str(tmp_path / "auto"), "--diameter", "auto"]) == 0
    assert (tmp_path / "auto" / "counts.csv").is_file()
    with pytest.raises(SystemExit):
        main([*common, "--out", str(tmp_path / "bad"), "--diameter", "0"])
    assert "--diameter: must be a positive number of pixels or 'auto', got 0.0" in capsys.readouterr().err
    old = checkpoint_with(tmp_path / "old", None) if (tmp_path / "old").mkdir() is None else None
    assert main([*common[:2], str(old), *common[3:], "--out", str(tmp_path / "old_out"), "--diameter", "12"]) == 1
    assert "records no usable reference cell size" in capsys.readouterr().err
    assert Checkpoint.load(path).reference_diameters == [None, 40.0, 9.0]
