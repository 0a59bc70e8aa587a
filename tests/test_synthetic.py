"""Tests for the procedural darkfield generator (segnet.data.synthetic)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from segnet.core.errors import SegnetError
from segnet.data import synthetic
from segnet.data.synthetic import generate_sample, write_dataset


def _samples(count: int, size: int = 96, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [generate_sample(size, size, rng) for _ in range(count)]


def _brightness(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float64).mean(axis=2)


def test_sample_shapes_and_dtypes() -> None:
    image, mask = generate_sample(48, 80, np.random.default_rng(1))
    assert image.shape == (48, 80, 3)
    assert image.dtype == np.uint8
    assert mask.shape == (48, 80)
    assert mask.dtype == np.uint8


def test_mask_values_are_classes_and_all_classes_appear() -> None:
    masks = [mask for _, mask in _samples(8)]
    seen = set(np.unique(np.stack(masks)).tolist())
    assert seen == {0, 1, 2}


def test_background_dominates_the_class_frequencies() -> None:
    counts = sum(np.bincount(mask.ravel(), minlength=3) for _, mask in _samples(20, size=128))
    background, cells, spirochetes = counts / counts.sum()
    assert 0.75 < background < 0.95
    assert 0.05 < cells < 0.25
    assert 0.002 < spirochetes < 0.04


def test_same_seed_gives_the_same_sample() -> None:
    first = generate_sample(64, 64, np.random.default_rng(7))
    second = generate_sample(64, 64, np.random.default_rng(7))
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])


def test_different_seeds_give_different_samples() -> None:
    image_a, mask_a = generate_sample(64, 64, np.random.default_rng(7))
    image_b, mask_b = generate_sample(64, 64, np.random.default_rng(8))
    assert not np.array_equal(image_a, image_b)
    assert not np.array_equal(mask_a, mask_b)


def test_spirochetes_are_brighter_than_background() -> None:
    spirochete, background = [], []
    for image, mask in _samples(12):
        brightness = _brightness(image)
        spirochete.append(brightness[mask == 2])
        background.append(brightness[mask == 0])
    assert np.concatenate(spirochete).size > 0
    assert np.concatenate(spirochete).mean() > np.concatenate(background).mean() + 20


def test_cell_rims_are_brighter_than_background() -> None:
    rims, background = [], []
    for image, mask in _samples(12):
        brightness = _brightness(image)
        cells = mask == 1
        # The outer few pixels of each labelled disc are where the rim lies.
        rim = cells & ~ndimage.binary_erosion(cells, iterations=3)
        rims.append(brightness[rim])
        background.append(brightness[mask == 0])
    assert np.concatenate(rims).size > 0
    assert np.concatenate(rims).mean() > np.concatenate(background).mean() + 20


def test_write_dataset_layout(tmp_path) -> None:
    out = write_dataset(tmp_path / "synth", count=3, size=40, seed=5)
    assert out == tmp_path / "synth"
    names = ["001.png", "002.png", "003.png"]
    assert sorted(p.name for p in (out / "images").iterdir()) == names
    assert sorted(p.name for p in (out / "masks").iterdir()) == names
    for name in names:
        image = Image.open(out / "images" / name)
        mask = Image.open(out / "masks" / name)
        assert image.mode == "RGB" and mask.mode == "RGB"
        assert image.size == mask.size == (40, 40)
        channels = np.asarray(mask)
        np.testing.assert_array_equal(channels[..., 0], channels[..., 1])
        np.testing.assert_array_equal(channels[..., 0], channels[..., 2])
        assert set(np.unique(channels).tolist()) <= {0, 1, 2}


def test_write_dataset_pads_numbers_to_the_count_width(tmp_path, monkeypatch) -> None:
    # Only the file naming is under test; a blank sample keeps 1000 files quick to write.
    def blank_sample(height: int, width: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        return np.zeros((height, width, 3), np.uint8), np.zeros((height, width), np.uint8)

    monkeypatch.setattr(synthetic, "generate_sample", blank_sample)
    out = write_dataset(tmp_path, count=1000, size=1, seed=0)
    names = sorted(p.name for p in (out / "images").iterdir())
    assert names[0] == "0001.png"
    assert names[-1] == "1000.png"


def test_write_dataset_is_deterministic_per_seed(tmp_path) -> None:
    a = write_dataset(tmp_path / "a", count=2, size=32, seed=3)
    b = write_dataset(tmp_path / "b", count=2, size=32, seed=3)
    c = write_dataset(tmp_path / "c", count=2, size=32, seed=4)
    for name in ("images/001.png", "images/002.png", "masks/001.png"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    assert (a / "images/001.png").read_bytes() != (c / "images/001.png").read_bytes()


def test_write_dataset_sample_does_not_depend_on_count(tmp_path) -> None:
    short = write_dataset(tmp_path / "short", count=1, size=32, seed=9)
    long = write_dataset(tmp_path / "long", count=3, size=32, seed=9)
    assert (short / "images/001.png").read_bytes() == (long / "images/001.png").read_bytes()


@pytest.mark.parametrize("count, size", [(-1, 32), (2, 0)])
def test_write_dataset_rejects_bad_arguments(tmp_path, count: int, size: int) -> None:
    with pytest.raises(SegnetError):
        write_dataset(tmp_path, count=count, size=size)
