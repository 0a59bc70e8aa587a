"""Tests for segnet.predict: sliding windows, TTA, MC dropout, pictures, inputs and predict_paths."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from scipy.ndimage import minimum_filter
from torch import nn

from segnet.core.errors import CheckpointError, DataError, SegnetError
from segnet.data.classes import DARKFIELD_ROLES
from segnet.data.palette import class_palette, colorize
from segnet.data.synthetic import generate_sample
from segnet.evaluate.measure import ObjectLabels, find_objects, measure_objects, read_object_labels
from segnet.model.checkpoint import Checkpoint
from segnet.model.networks import DecoderStage, EncoderStage, SegNet, SubPixelHead, build_model
from segnet.model.options import InferenceOptions
from segnet.model.predictor import Ensemble, Predictor
from segnet.model.windows import gaussian_importance_weights, sliding_window_starts
from segnet.plan.spec import ModelSpec
from segnet.predict.files import is_own_output, iter_inputs, predict_paths
from segnet.predict.loading import load_predictor
from segnet.predict.pictures import (
    TEXT_COLOUR,
    UNSURE_COLOUR,
    annotated_overlay,
    object_tags,
    outline,
    overlay,
    predictive_entropy,
    text_size,
)

PLAIN = InferenceOptions(device="cpu", tta=False, diameter=None)  # the network's own pass

torch.set_num_threads(1)

CLASSES = ["background", "erythrocyte", "spirochete"]
MEAN, STD = [0.2, 0.25, 0.3], [0.2, 0.2, 0.2]


def sample_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return generate_sample(height, width, np.random.default_rng(seed))[0]


def local_model(seed: int = 0) -> nn.Module:
    """A deterministic net with a 5x5 receptive field: tiles see all the context a pixel needs."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1))


class PoolingModel(nn.Module):
    """A two-level SegNet in miniature (pool with indices, unpool), small receptive field, stride 4."""

    total_stride = 4

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.encoder = nn.ModuleList([nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)])
        self.decoder = nn.ModuleList([nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 3, 3, padding=1)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        x = F.pad(x, (0, -width % self.total_stride, 0, -height % self.total_stride))
        indices = []
        for conv in self.encoder:
            x, pooled_at = F.max_pool2d(torch.relu(conv(x)), 2, return_indices=True)
            indices.append(pooled_at)
        for conv, pooled_at in zip(self.decoder, reversed(indices)):
            x = conv(F.max_unpool2d(x, pooled_at, 2))
        return x[..., :height, :width]


def pointwise_model(seed: int = 0) -> nn.Module:
    """Each output pixel depends on its input pixel only, so it commutes with flips and rotations."""
    torch.manual_seed(seed)
    return nn.Conv2d(3, 3, 1)


def predictor(model: nn.Module, **options) -> Predictor:
    return Predictor(model, CLASSES, MEAN, STD, PLAIN.replace(**options))


# ------------------------------------------------------------------------------ sliding windows


@settings(max_examples=300, deadline=None)
@given(
    length=st.integers(1, 3000),
    tile_in_strides=st.integers(1, 300),
    stride=st.sampled_from([1, 2, 16, 32]),
    overlap=st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.9]),
)
def test_window_starts_cover_the_axis_and_end_at_the_edge(
    length: int, tile_in_strides: int, stride: int, overlap: float
) -> None:
    tile = tile_in_strides * stride
    starts = sliding_window_starts(length, tile, overlap, stride)
    edge = -(-length // stride) * stride  # the model pads its input up to a multiple of its stride
    if edge <= tile:
        assert starts == [0]
        return
    assert starts[0] == 0
    assert starts[-1] + tile == edge
    assert all(start % stride == 0 for start in starts)
    steps = np.diff(starts) // stride
    assert (steps > 0).all()
    target_step = max(tile_in_strides * (1 - overlap), 1)
    # Rounding the evenly spread starts moves each by at most half a stride.
    assert (steps <= math.ceil(target_step)).all()
    # The fewest windows: one window fewer could not keep the step within the target.
    assert (len(starts) - 2) * target_step < (edge - tile) // stride


def test_window_starts_examples() -> None:
    assert sliding_window_starts(150, 64, 0.25) == [0, 43, 86]
    assert sliding_window_starts(128, 64, 0.0) == [0, 64]
    assert sliding_window_starts(150, 64, 0.25, stride=16) == [0, 48, 96]  # 150 pads to 160
    with pytest.raises(ValueError, match="multiple"):
        sliding_window_starts(150, 60, 0.25, stride=16)


def test_gaussian_importance_weights_are_symmetric_positive_and_peaks_at_one() -> None:
    weights = gaussian_importance_weights(64, 48)
    assert weights.shape == (64, 48) and weights.dtype == np.float32
    assert weights.max() == pytest.approx(1.0)
    assert weights.min() > 0
    assert np.array_equal(weights, weights[::-1]) and np.array_equal(weights, weights[:, ::-1])


# ------------------------------------------------------------------------------ predict_proba


def test_whole_image_probabilities_sum_to_one() -> None:
    image = sample_image(50, 70)
    proba = predictor(build_model(ModelSpec("segnet-basic", 3))).predict_proba(image)
    assert proba.shape == (3, 50, 70) and proba.dtype == np.float32
    np.testing.assert_allclose(proba.sum(0), 1.0, atol=1e-5)
    mask = predictor(build_model(ModelSpec("segnet-basic", 3))).predict(image)
    assert mask.shape == (50, 70) and mask.dtype == np.uint8


def test_tiling_reproduces_whole_image_inference() -> None:
    image = sample_image(150, 130)
    model = local_model()
    whole = predictor(model).predict(image)
    tiled_proba = predictor(model, tile=64, batch_size=3).predict_proba(image)
    np.testing.assert_allclose(tiled_proba.sum(0), 1.0, atol=1e-5)
    assert (tiled_proba.argmax(0) == whole).mean() >= 0.99


def test_tiling_a_space_to_depth_model_keeps_its_block_grid() -> None:
    # One small stage, so that a tile holds all the context a pixel needs.
    torch.manual_seed(0)
    model = SegNet(
        "segnet-basic", [EncoderStage(27, [8])], [DecoderStage(8, [8])], nn.Conv2d(8, 3, 1), 3, 27, downsample=3
    )
    model.space_to_depth, model.subpixel = True, SubPixelHead(8, 3, 3)
    torch.nn.init.normal_(model.subpixel.conv.weight, std=0.1)
    model.eval()
    image = sample_image(150, 130)
    whole = predictor(model).predict(image)
    assert (predictor(model, tile=96).predict(image) == whole).mean() >= 0.99


def test_tiling_a_unet_reproduces_whole_image_inference() -> None:
    """Its BatchNorm normalises every window alike; an InstanceNorm U-Net (MONAI's BasicUNet) would
    normalise each window by its own statistics."""
    torch.manual_seed(0)
    model = build_model(ModelSpec("unet", 3, downsample=2, space_to_depth=True)).eval()
    torch.nn.init.normal_(model.subpixel.conv.weight, std=0.1)
    image = sample_image(150, 130)
    whole = predictor(model).predict(image)
    assert (predictor(model, tile=96).predict(image) == whole).mean() >= 0.99


def test_tiling_a_pooling_model_keeps_its_pooling_grid() -> None:
    # Windows off the stride grid would unpool to other positions (about 72% agreement here).
    image = sample_image(150, 130)
    model = PoolingModel()
    whole = predictor(model).predict(image)
    assert (predictor(model, tile=64).predict(image) == whole).mean() >= 0.99


def test_tiling_a_pointwise_model_is_exact() -> None:
    image = sample_image(150, 130)
    model = pointwise_model()
    whole = predictor(model).predict_proba(image)
    np.testing.assert_allclose(predictor(model, tile=64, overlap=0.5).predict_proba(image), whole, atol=1e-5)


def test_tile_batch_size_does_not_change_the_result() -> None:
    image = sample_image(100, 90)
    model = local_model()
    one = predictor(model, tile=48, batch_size=1).predict_proba(image)
    many = predictor(model, tile=48, batch_size=5).predict_proba(image)
    np.testing.assert_allclose(one, many, atol=1e-6)


def test_tiling_reports_window_progress() -> None:
    calls: list[tuple[int, int]] = []
    predictor(local_model(), tile=48, batch_size=2).predict_proba(
        sample_image(100, 90), progress=lambda *a: calls.append(a)
    )
    assert calls == [(2, 9), (4, 9), (6, 9), (8, 9), (9, 9)]


def test_images_smaller_than_a_tile() -> None:
    model = build_model(ModelSpec("segnet-basic", 3))
    for shape in [(40, 30), (7, 5)]:
        image = sample_image(*shape)
        tiled = predictor(model, tile=64).predict_proba(image)
        np.testing.assert_allclose(tiled, predictor(model).predict_proba(image), atol=1e-5)
    # With TTA too, on an image that is not square (its turned views are padded on other sides than
    # a padded window's): the viewer's tiles and the CLI's whole image give the same probabilities.
    image, calls = sample_image(40, 56), []
    tiled = predictor(model, tile=64, tta=True).predict_proba(image, progress=lambda *a: calls.append(a))
    np.testing.assert_array_equal(tiled, predictor(model, tta=True).predict_proba(image))
    assert calls == [(1, 1)]
    # Smaller than a tile in one direction only: one row of windows.
    tiled = predictor(model, tile=64).predict_proba(sample_image(40, 100))
    assert tiled.shape == (3, 40, 100)
    np.testing.assert_allclose(tiled.sum(0), 1.0, atol=1e-5)


def test_tta_averages_the_eight_flips_and_rotations() -> None:
    model = build_model(ModelSpec("segnet-basic", 3))
    image = sample_image(48, 40)  # not square: rotated views have another shape
    plain = predictor(model)
    manual = np.zeros((3, 48, 40), dtype=np.float64)
    for flip in (False, True):
        for turns in range(4):
            view = np.rot90(image[:, ::-1] if flip else image, turns)
            proba = np.rot90(plain.predict_proba(np.ascontiguousarray(view)), -turns, axes=(1, 2))
            manual += proba[:, :, ::-1] if flip else proba
    manual /= 8
    np.testing.assert_allclose(predictor(model, tta=True).predict_proba(image), manual, atol=1e-5)


def test_tta_with_tiles_undoes_each_view() -> None:
    image = sample_image(100, 70)
    model = pointwise_model()
    expected = predictor(model).predict_proba(image)
    np.testing.assert_allclose(predictor(model, tile=48, tta=True).predict_proba(image), expected, atol=1e-5)


@pytest.mark.parametrize("shape", [(1, 1), (1, 50), (50, 1)])
@pytest.mark.parametrize("tile", [None, 48])
def test_tta_on_an_image_one_pixel_thin(shape: tuple[int, int], tile: int | None) -> None:
    # Flipping a side of 1 pixel gives a view numpy calls contiguous despite its negative strides.
    image = sample_image(*shape)
    model = pointwise_model()  # commutes with the views, so TTA must change nothing
    expected = predictor(model).predict_proba(image)
    np.testing.assert_allclose(predictor(model, tile=tile, tta=True).predict_proba(image), expected, atol=1e-5)
    assert predictor(build_model(ModelSpec("segnet-basic", 3)), tile=tile, tta=True).predict(image).shape == shape


def test_ensemble_averages_members_and_counts_all_their_windows() -> None:
    image = sample_image(100, 70)
    members = [predictor(PoolingModel(seed), tile=32) for seed in (0, 1)]
    expected = (members[0].predict_proba(image) + members[1].predict_proba(image)) / 2
    seen: list[tuple[int, int]] = []
    np.testing.assert_allclose(
        Ensemble(members).predict_proba(image, progress=lambda done, total: seen.append((done, total))),
        expected,
        atol=1e-6,
    )
    windows = seen[0][1] // 2
    assert seen[-1] == (2 * windows, 2 * windows) and [done for done, _ in seen] == sorted(done for done, _ in seen)
    other = Predictor(local_model(), ["background", "cell", "other"], MEAN, STD, PLAIN)
    with pytest.raises(SegnetError, match="different classes"):
        Ensemble([members[0], other])


def test_a_progress_callback_that_raises_stops_between_batches() -> None:
    class Stop(Exception):
        pass

    batches: list[int] = []

    def cancel_after_the_first(done: int, total: int) -> None:
        batches.append(done)
        raise Stop

    with pytest.raises(Stop):
        predictor(PoolingModel(), tile=32, batch_size=2).predict_proba(
            sample_image(100, 70), progress=cancel_after_the_first
        )
    assert batches == [2]


def test_mc_dropout_samples_vary_and_give_entropy() -> None:
    torch.manual_seed(0)
    model = build_model(ModelSpec("bayesian-segnet-basic", 3))
    sampler = predictor(model, mc_samples=3)
    assert not any(m.training for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    assert all(m.training for m in model.modules() if isinstance(m, nn.Dropout))
    image = sample_image(48, 48)
    first, second = sampler.predict_proba(image), sampler.predict_proba(image)
    assert not np.allclose(first, second)
    np.testing.assert_allclose(first.sum(0), 1.0, atol=1e-5)
    entropy = predictive_entropy(first)
    assert entropy.shape == (48, 48) and entropy.dtype == np.float32
    assert (entropy >= 0).all() and (entropy <= math.log(3) + 1e-5).all()
    assert entropy.max() > 0


def test_mc_dropout_is_more_uncertain_on_noise_than_on_training_like_images() -> None:
    """Bayesian SegNet's promise: inputs unlike the training data get higher predictive entropy.

    A bayesian-segnet-basic is trained briefly on synthetic darkfield images; uniform noise must
    then get a clearly higher mean entropy than the images it learned from. (Measured over four
    seeds: noise 0.60-0.79 nats against 0.45-0.56 on the training images.)
    """
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    samples = [generate_sample(48, 48, rng) for _ in range(16)]
    images = np.stack([image for image, _ in samples])
    masks = torch.from_numpy(np.stack([mask for _, mask in samples])).long()
    mean, std = images.reshape(-1, 3).mean(0) / 255, images.reshape(-1, 3).std(0) / 255
    inputs = torch.from_numpy(((images / 255 - mean) / std).transpose(0, 3, 1, 2)).float()
    model = build_model(ModelSpec("bayesian-segnet-basic", 3))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(150):
        batch = torch.randint(0, len(images), (4,))
        loss = F.cross_entropy(model(inputs[batch]), masks[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    sampler = Predictor(model, CLASSES, mean.tolist(), std.tolist(), PLAIN.replace(mc_samples=8))
    noise = np.random.default_rng(1).integers(0, 256, size=(48, 48, 3), dtype=np.uint8)
    familiar = np.mean([predictive_entropy(sampler.predict_proba(image)).mean() for image in images[:4]])
    unfamiliar = predictive_entropy(sampler.predict_proba(noise)).mean()
    assert unfamiliar > 1.15 * familiar


def test_mc_dropout_needs_dropout_layers() -> None:
    with pytest.raises(SegnetError, match="dropout"):
        predictor(build_model(ModelSpec("segnet-basic", 3)), mc_samples=2)


class NanModel(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((x.shape[0], 3, *x.shape[2:]), float("nan"))


@pytest.mark.parametrize("tile", [None, 32])
def test_non_finite_output_is_an_error(tile: int | None) -> None:
    with pytest.raises(SegnetError, match="NaN"):
        predictor(NanModel(), tile=tile).predict_proba(sample_image(40, 40))


def test_bad_options_and_images_are_errors() -> None:
    model = local_model()
    for options in [{"tile": 0}, {"overlap": 1.0}, {"batch_size": 0}, {"mc_samples": -1}]:
        with pytest.raises(SegnetError):
            predictor(model, **options)
    with pytest.raises(SegnetError, match="class names"):
        Predictor(build_model(ModelSpec("segnet-basic", 4)), CLASSES, MEAN, STD, PLAIN)
    with pytest.raises(SegnetError, match="uint8"):
        predictor(model).predict_proba(np.zeros((10, 10), dtype=np.uint8))


# ------------------------------------------------------------------------------ pictures


def test_predictive_entropy_limits() -> None:
    uniform = np.full((4, 2, 3), 0.25, dtype=np.float32)
    np.testing.assert_allclose(predictive_entropy(uniform), math.log(4), rtol=1e-6)
    certain = np.zeros((4, 2, 3), dtype=np.float32)
    certain[2] = 1
    assert (predictive_entropy(certain) == 0).all()


def test_colorize_uses_the_fixed_palette() -> None:
    mask = np.array([[0, 1], [2, 3]], dtype=np.uint8)
    colours = colorize(mask, 4)
    assert colours.dtype == np.uint8 and colours.shape == (2, 2, 3)
    assert colours[0, 0].tolist() == [0, 0, 0]
    assert colours[0, 1].tolist() == [255, 0, 0]
    assert colours[1, 0].tolist() == [0, 255, 0]
    assert len({tuple(c) for c in class_palette(6).tolist()}) == 6
    with pytest.raises(ValueError):
        colorize(mask, 3)


def test_overlay_keeps_background_and_blends_classes() -> None:
    image = np.full((2, 2, 3), 100, dtype=np.uint8)
    mask = np.array([[0, 1], [2, 0]], dtype=np.uint8)
    blended = overlay(image, mask, 3, alpha=0.5)
    assert blended.dtype == np.uint8
    assert blended[0, 0].tolist() == [100, 100, 100] and blended[1, 1].tolist() == [100, 100, 100]
    assert blended[0, 1].tolist() == [178, 50, 50]  # halfway to red (rounded half to even)
    assert blended[1, 0].tolist() == [50, 178, 50]


def drawn_scene() -> tuple[np.ndarray, np.ndarray]:
    """A 240 x 300 dark field with two red cells (discs) and a spirochete (a thin bar): the image and its true mask."""
    rows, cols = np.mgrid[:240, :300]
    mask = np.zeros((240, 300), dtype=np.uint8)
    for row, col in ((70, 70), (90, 170)):
        mask[(rows - row) ** 2 + (cols - col) ** 2 <= 30**2] = 1
    mask[180:184, 80:200] = 2
    image = class_palette(3)[mask] // 2  # red cells dark red, the spirochete dark green, the field black
    return image, mask


def colour_model() -> nn.Module:
    """Reads :func:`drawn_scene` back: red pixels are erythrocytes, green ones spirochetes, dark ones background."""
    model = nn.Conv2d(3, 3, 1)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.0, 0, 0], [8, 0, 0], [0, 8, 0]]).view(3, 3, 1, 1))
        model.bias.copy_(torch.tensor([2.0, 0, 0]))
    return model


def scene_objects() -> tuple[np.ndarray, np.ndarray, ObjectLabels, list]:
    image, mask = drawn_scene()
    objects = find_objects(mask, DARKFIELD_ROLES)
    return image, mask, objects, measure_objects(objects, image, DARKFIELD_ROLES)


def swatch_present(picture: np.ndarray, colour: tuple[int, ...], side: int = 5) -> bool:
    """Whether a filled ``side x side`` square of ``colour`` is in the picture (a legend swatch, not a 1-pixel outline)."""
    return bool(minimum_filter((picture == colour).all(axis=2), side).any())


def white_near(picture: np.ndarray, xy: tuple[float, float], reach: int) -> bool:
    """Whether text is written within ``reach`` of ``xy`` (near-white: small type is anti-aliased)."""
    x, y = round(xy[0]), round(xy[1])
    window = picture[max(y - reach, 0) : y + reach, max(x - reach, 0) : x + reach]
    return bool((window >= 0.8 * np.array(TEXT_COLOUR)).all(axis=2).any())


def test_the_overlay_outlines_numbers_and_counts_the_objects() -> None:
    image, mask, objects, measurements = scene_objects()
    assert objects.object_classes == (1, 1, 2)
    unsure = np.zeros(mask.shape, dtype=bool)
    unsure[10:30, 230:290] = True
    picture = annotated_overlay(image, mask, objects, measurements, CLASSES, DARKFIELD_ROLES.counted, unsure)
    assert picture.shape == image.shape and picture.dtype == np.uint8
    palette = class_palette(3)
    edges = outline(objects.labels)
    classes = np.array([0, *objects.object_classes])[objects.labels]
    in_class_colour = (picture[edges] == palette[classes[edges]]).all(axis=1)
    assert in_class_colour.mean() > 0.9  # every border in its class's colour, but where an id is written over it
    interior = (objects.labels > 0) & ~outline(objects.labels, 3)
    assert (
        not (picture[interior] == palette[classes[interior]]).all(axis=1).any()
    )  # inside: blended, not the outline's colour
    for colour in (*map(tuple, palette[1:].tolist()), UNSURE_COLOUR):
        assert swatch_present(picture, colour), f"no legend swatch of {colour}"
    size = text_size(image.shape)
    tags = object_tags(measurements, size, image.shape[1])
    assert [tag.text for tag in tags] == [str(measurement.object_id) for measurement in measurements] == ["1", "2", "3"]
    assert all(white_near(picture, tag.xy, size) for tag in tags)
    assert tags[0].anchor == "mm" and tags[2].anchor != "mm"  # a cell holds its id; the thin spirochete's is beside it


def test_a_small_image_gets_outlines_but_no_text() -> None:
    image, mask, _, _ = scene_objects()
    small = annotated_overlay(
        image[:80, :80], mask[:80, :80], find_objects(mask[:80, :80]), [], CLASSES, DARKFIELD_ROLES.counted
    )
    assert (small == (255, 0, 0)).all(axis=2).any()  # the red cell's outline
    assert not (small == TEXT_COLOUR).all(axis=2).any()


def test_predict_writes_overlays_whose_ids_are_those_of_objects_csv(tmp_path: Path) -> None:
    image, _ = drawn_scene()
    source = write_png(tmp_path / "scene.png", image)
    scene_predictor = Predictor(colour_model(), CLASSES, [0.0] * 3, [1.0] * 3, PLAIN)
    predict_paths(scene_predictor, [str(source)], tmp_path / "out", progress=False)
    picture = np.asarray(Image.open(tmp_path / "out" / "scene_overlay.png"))
    objects = read_object_labels(tmp_path / "out" / "scene_objects.tif")
    size = text_size(image.shape)
    tags = object_tags(measure_objects(objects, image, DARKFIELD_ROLES), size, image.shape[1])
    rows = read_rows(tmp_path / "out" / "objects.csv")
    assert [tag.text for tag in tags] == [row["object_id"] for row in rows] == ["1", "2", "3"]
    assert [row["class"] for row in rows] == ["erythrocyte", "erythrocyte", "spirochete"]
    assert all(white_near(picture, tag.xy, size) for tag in tags)
    assert swatch_present(picture, (255, 0, 0)) and swatch_present(picture, (0, 255, 0))


# ------------------------------------------------------------------------------ files


def write_png(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return path


def test_expand_inputs_takes_files_folders_and_patterns(tmp_path: Path) -> None:
    image = sample_image(8, 8)
    b, a = write_png(tmp_path / "in" / "b.png", image), write_png(tmp_path / "in" / "a.png", image)
    (tmp_path / "in" / "notes.txt").write_text("not an image")
    c = write_png(tmp_path / "other" / "c.jpg", image)
    assert list(iter_inputs([str(tmp_path / "in")])) == [a, b]
    assert list(iter_inputs([str(tmp_path / "*" / "*.*")])) == [a, b, c]
    assert list(iter_inputs([str(c), str(tmp_path / "in"), str(a)])) == [c, a, b]


@pytest.mark.parametrize("entry", ["missing.png", "nothing_*.png", "empty"])
def test_expand_inputs_names_an_input_that_matches_nothing(tmp_path: Path, entry: str) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=entry.replace("*", r"\*")):
        list(iter_inputs([str(tmp_path / entry)]))


def write_checkpoint(path: Path, model_name: str) -> Path:
    model = build_model(ModelSpec(model_name, len(CLASSES)))
    Checkpoint.of_model(model, CLASSES, MEAN, STD, config={}, epoch=0).save(path)
    return path


def test_from_checkpoint_builds_the_model(tmp_path: Path) -> None:
    loaded = Predictor.from_checkpoint(write_checkpoint(tmp_path / "model.pt", "segnet-basic"), PLAIN.replace(tile=32))
    assert loaded.class_names == CLASSES and loaded.options.tile == 32
    assert loaded.predict(sample_image(40, 40)).shape == (40, 40)


def test_load_predictor_takes_a_checkpoint_an_onnx_file_or_a_run_folder(tmp_path: Path) -> None:
    loaded = load_predictor(write_checkpoint(tmp_path / "model.pt", "segnet-basic"), PLAIN.replace(tile=32, tta=True))
    assert isinstance(loaded, Predictor) and loaded.options == PLAIN.replace(tile=32, tta=True)
    with pytest.raises(CheckpointError, match="missing.onnx: ONNX model not found"):
        load_predictor(tmp_path / "missing.onnx", PLAIN)
    with pytest.raises(SegnetError, match="not a cross-validation run"):
        load_predictor(tmp_path, PLAIN)


def test_from_checkpoint_rejects_weights_of_another_model(tmp_path: Path) -> None:
    path = write_checkpoint(tmp_path / "model.pt", "segnet-basic")
    state = torch.load(path, weights_only=True)  # a forged file: its weights are another model's
    state["model"]["name"] = "segnet"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="model.pt"):
        Predictor.from_checkpoint(path, PLAIN)


def test_predict_paths_writes_masks_overlays_uncertainty_and_counts(tmp_path: Path) -> None:
    first = write_png(tmp_path / "in" / "first.png", sample_image(48, 40, seed=1))
    second = write_png(tmp_path / "in" / "second.png", sample_image(36, 52, seed=2))
    checkpoint = write_checkpoint(tmp_path / "model.pt", "bayesian-segnet-basic")
    loaded = Predictor.from_checkpoint(checkpoint, PLAIN.replace(tile=32, mc_samples=2))
    out = tmp_path / "out"
    written = predict_paths(loaded, [str(tmp_path / "in")], out, progress=False).written

    suffixes = ["mask", "overlay", "uncertainty", "uncertainty_overlay"]
    expected = [
        out / name
        for stem in ("first", "second")
        for name in [f"{stem}_{s}.png" for s in suffixes] + [f"{stem}_objects.tif"]
    ]
    assert written == expected + [out / "counts.csv", out / "objects.csv"]
    for path, (height, width) in [(first, (48, 40)), (second, (36, 52))]:
        mask = np.asarray(Image.open(out / f"{path.stem}_mask.png"))
        assert mask.shape == (height, width) and mask.dtype == np.uint8 and mask.max() < 3
        assert np.asarray(Image.open(out / f"{path.stem}_overlay.png")).shape == (height, width, 3)
        uncertainty = Image.open(out / f"{path.stem}_uncertainty.png")
        assert uncertainty.mode.startswith("I") and uncertainty.size == (width, height)
        assert np.asarray(Image.open(out / f"{path.stem}_uncertainty_overlay.png")).shape == (height, width, 3)

    with (out / "counts.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == [
        "image",
        "erythrocyte_count",
        "erythrocyte_area_fraction",
        "spirochete_count",
        "spirochete_area_fraction",
    ]
    assert [Path(row["image"]).name for row in rows] == ["first.png", "second.png"]
    for row in rows:
        assert int(row["erythrocyte_count"]) >= 0 and 0 <= float(row["spirochete_area_fraction"]) <= 1


def test_predict_paths_without_mc_writes_no_uncertainty(tmp_path: Path) -> None:
    write_png(tmp_path / "one.png", sample_image(32, 32))
    written = predict_paths(
        predictor(local_model()), [str(tmp_path / "one.png")], tmp_path / "out", progress=False
    ).written
    assert [p.name for p in written] == [
        "one_mask.png",
        "one_overlay.png",
        "one_objects.tif",
        "counts.csv",
        "objects.csv",
    ]


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_predict_paths_reports_a_bad_input_and_goes_on(tmp_path: Path) -> None:
    write_png(tmp_path / "a_good.png", sample_image(32, 32))
    (tmp_path / "broken.png").write_bytes(b"not a png")
    write_png(tmp_path / "c_good.png", sample_image(32, 32, seed=1))
    notes: list[str] = []
    summary = predict_paths(
        predictor(local_model()), [str(tmp_path)], tmp_path / "out", progress=False, log=notes.append
    )
    assert summary.images == 2 and len(summary.failed) == 1 and "broken.png" in summary.failed[0]
    assert [line for line in notes if "broken.png" in line] == [f"skipped {summary.failed[0]}"]
    assert "\n" not in summary.failed[0]
    assert [Path(row["image"]).name for row in read_rows(tmp_path / "out" / "counts.csv")] == [
        "a_good.png",
        "c_good.png",
    ]


def test_cli_exits_1_after_predicting_the_readable_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from segnet.cli import main

    write_png(tmp_path / "in" / "good.png", sample_image(32, 32))
    (tmp_path / "in" / "junk.tif").write_bytes(b"\x00" * 10)
    checkpoint = write_checkpoint(tmp_path / "model.pt", "segnet-basic")
    out = tmp_path / "out"
    assert (
        main(
            [
                "predict",
                "--checkpoint",
                str(checkpoint),
                str(tmp_path / "in"),
                "--out",
                str(out),
                "--device",
                "cpu",
                "--no-tta",
            ]
        )
        == 1
    )
    captured = capsys.readouterr()
    assert "1 of 2 input(s) failed" in captured.err and "junk.tif" in captured.out
    assert len(read_rows(out / "counts.csv")) == 1 and (out / "good_mask.png").is_file()


def test_predicting_into_the_input_folder_again_skips_its_own_outputs(tmp_path: Path) -> None:
    folder = tmp_path / "images"
    write_png(folder / "first.png", sample_image(32, 32))
    write_png(folder / "second.png", sample_image(40, 36, seed=1))
    checkpoint = write_checkpoint(tmp_path / "model.pt", "bayesian-segnet-basic")
    loaded = Predictor.from_checkpoint(checkpoint, PLAIN.replace(mc_samples=2))
    for _ in range(2):
        notes: list[str] = []
        # The second run continues the first (--skip-existing): its outputs are no other run's.
        summary = predict_paths(loaded, [str(folder)], folder, skip_existing=True, progress=False, log=notes.append)
        assert summary.images == 2 and not summary.failed
        assert [Path(row["image"]).name for row in read_rows(folder / "counts.csv")] == ["first.png", "second.png"]
    # The second run saw 5 outputs per image (4 pictures, the label image) and said so once.
    (note,) = notes
    assert "skipped 10 file(s)" in note and str(folder) in note
    assert all(is_own_output(path) for path in summary.written if path.suffix != ".csv")
    assert list(iter_inputs([str(folder / "*.png")])) == [folder / "first.png", folder / "second.png"]
    assert list(iter_inputs([str(folder / "first_mask.png")])) == [folder / "first_mask.png"]  # named, so taken


def test_predict_paths_refuses_inputs_whose_outputs_collide(tmp_path: Path) -> None:
    write_png(tmp_path / "a" / "same.png", sample_image(16, 16))
    write_png(tmp_path / "b" / "same.png", sample_image(16, 16))
    with pytest.raises(DataError, match="same"):
        predict_paths(
            predictor(local_model()), [str(tmp_path / "a"), str(tmp_path / "b")], tmp_path / "out", progress=False
        )
