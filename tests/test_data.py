"""Pairing, decoding, splitting and the fingerprint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segnet.core.errors import DataError
from segnet.core.runfiles import SPLIT_FILE
from segnet.data.dataset import SegmentationDataset
from segnet.data.fingerprint import compute_fingerprint, mask_thickness, object_diameter, reference_scale
from segnet.data.pairs import (
    IGNORE_INDEX,
    find_pairs,
    load_pair,
    read_image,
    read_mask,
    read_split,
    split_pairs,
    write_split,
)


def write_pair(
    root: Path, stem: str, size=(10, 8), mask_value: int = 1, image_ext: str = ".png", mask_folder: str = "masks"
) -> None:
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / mask_folder).mkdir(parents=True, exist_ok=True)
    width, height = size
    Image.fromarray(np.full((height, width, 3), 40, np.uint8)).save(root / "images" / f"{stem}{image_ext}")
    mask = np.zeros((height, width), np.uint8)
    mask[: height // 2] = mask_value
    Image.fromarray(np.stack([mask] * 3, -1)).save(root / mask_folder / f"{stem}.png")


def test_pairs_by_stem_whatever_the_listing_order(tmp_path, monkeypatch):
    for stem, value in (("b", 2), ("a", 1), ("c", 0)):
        write_pair(tmp_path, stem, mask_value=value)
    original_iterdir = Path.iterdir
    # A file system that lists images and masks in different orders must not pair the wrong files.
    monkeypatch.setattr(
        Path,
        "iterdir",
        lambda self: reversed(list(original_iterdir(self))) if self.name == "masks" else original_iterdir(self),
    )
    pairs = find_pairs(tmp_path)
    assert [p.stem for p in pairs] == ["a", "b", "c"]
    for pair in pairs:
        assert pair.image.stem == pair.mask.stem
        _, mask = load_pair(pair, 3)
        assert mask.max() == {"a": 1, "b": 2, "c": 0}[pair.stem]


def test_image_without_mask_names_the_file(tmp_path):
    write_pair(tmp_path, "001")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "images" / "002.png")
    with pytest.raises(DataError, match=r"002\.png: image has no mask"):
        find_pairs(tmp_path)


def test_mask_without_image_names_the_file(tmp_path):
    write_pair(tmp_path, "001")
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "masks" / "009.png")
    with pytest.raises(DataError, match=r"009\.png: mask has no image"):
        find_pairs(tmp_path)


def test_flattened_masks_folder_and_jpg_images(tmp_path):
    write_pair(tmp_path, "001", image_ext=".jpg", mask_folder="flattened_masks")
    (pair,) = find_pairs(tmp_path)
    assert pair.image.suffix == ".jpg" and pair.mask.parent.name == "flattened_masks"


def test_size_mismatch_is_an_error(tmp_path):
    write_pair(tmp_path, "001", size=(10, 8))
    Image.fromarray(np.zeros((9, 10), np.uint8)).save(tmp_path / "masks" / "001.png")
    with pytest.raises(DataError, match=r"001\.png: mask size 10x9 differs from image size 10x8"):
        load_pair(find_pairs(tmp_path)[0], 3)


def test_rgb_and_single_channel_masks_decode_the_same(tmp_path):
    classes = np.array([[0, 1, 2], [2, 1, 0]], np.uint8)
    Image.fromarray(np.stack([classes] * 3, -1)).save(tmp_path / "rgb.png")
    Image.fromarray(classes).save(tmp_path / "gray.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "rgb.png", 3), classes)
    np.testing.assert_array_equal(read_mask(tmp_path / "gray.png", 3), classes)


def test_mask_values_outside_classes_are_listed(tmp_path):
    Image.fromarray(np.array([[0, 1, 7, 255]], np.uint8)).save(tmp_path / "m.png")
    with pytest.raises(DataError, match=r"m\.png: mask values \[7, 255\] are outside the 3 classes"):
        read_mask(tmp_path / "m.png", 3)


def test_colour_mask_without_palette_is_refused_and_decoded_with_one(tmp_path):
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[0, 0] = (255, 0, 0)
    rgb[1, 1] = (0, 255, 0)
    Image.fromarray(rgb).save(tmp_path / "colour.png")
    with pytest.raises(DataError, match="colour mask"):
        read_mask(tmp_path / "colour.png", 3)
    decoded = read_mask(tmp_path / "colour.png", 3, palette={0: (0, 0, 0), 1: (255, 0, 0), 2: (0, 255, 0)})
    np.testing.assert_array_equal(decoded, [[1, 0], [0, 2]])
    with pytest.raises(DataError, match=r"not in the palette: \(0,255,0\)"):
        read_mask(tmp_path / "colour.png", 3, palette={0: (0, 0, 0), 1: (255, 0, 0)})


def test_read_image_converts_grayscale_and_16_bit(tmp_path):
    Image.fromarray(np.full((3, 5), 9, np.uint8)).save(tmp_path / "gray.png")
    gray = read_image(tmp_path / "gray.png")
    assert gray.shape == (3, 5, 3) and gray.dtype == np.uint8 and (gray == 9).all()
    Image.fromarray(np.full((3, 5), 65535, np.uint16)).save(tmp_path / "deep.png")
    assert (read_image(tmp_path / "deep.png") == 255).all()


def test_unreadable_image_names_the_file(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"not a png at all")
    with pytest.raises(DataError, match=r"broken\.png: not an image file"):
        read_image(tmp_path / "broken.png")


def test_split_is_reproducible_disjoint_and_90_10(tmp_path):
    for index in range(1, 31):
        write_pair(tmp_path, f"{index:03d}")
    pairs = find_pairs(tmp_path)
    train, val = split_pairs(pairs, 0.1, seed=5)
    assert len(val) == 3 and len(train) == 27
    assert not {p.stem for p in train} & {p.stem for p in val}
    again_train, again_val = split_pairs(list(reversed(pairs)), 0.1, seed=5)
    assert [p.stem for p in again_val] == [p.stem for p in val]
    assert [p.stem for p in split_pairs(pairs, 0.1, seed=6)[1]] != [p.stem for p in val]
    write_split(tmp_path / SPLIT_FILE, train, val)
    assert json.loads((tmp_path / SPLIT_FILE).read_text())["val"] == [p.stem for p in val]
    assert read_split(tmp_path / SPLIT_FILE, pairs, "val") == val


def test_the_original_projects_split_sizes():
    from segnet.data.pairs import Pair

    pairs = [Pair(f"{i:03d}", Path(f"{i}.png"), Path(f"{i}.png")) for i in range(366)]
    train, val = split_pairs(pairs, 0.1, seed=0)
    assert (len(train), len(val)) == (329, 37)


def test_fingerprint_statistics_match_numpy():
    rng = np.random.default_rng(0)
    samples = [
        (rng.integers(0, 256, (6, 7, 3), dtype=np.uint8), rng.integers(0, 2, (6, 7)).astype(np.uint8)) for _ in range(3)
    ]
    samples.append((rng.integers(0, 256, (4, 9, 3), dtype=np.uint8), np.full((4, 9), 2, np.uint8)))
    fingerprint = compute_fingerprint(samples, 3)
    pixels = np.concatenate([image.reshape(-1, 3) for image, _ in samples]) / 255.0
    np.testing.assert_allclose(fingerprint["mean"], pixels.mean(0), rtol=1e-9)
    np.testing.assert_allclose(fingerprint["std"], pixels.std(0), rtol=1e-6)
    labels = np.concatenate([mask.ravel() for _, mask in samples])
    np.testing.assert_allclose(fingerprint["class_frequencies"], np.bincount(labels, minlength=3) / labels.size)
    assert fingerprint["images_per_class"] == [3, 3, 1]
    # Class 2 fills the one image it appears in: its presence frequency is 1.
    assert fingerprint["class_presence_frequencies"][2] == pytest.approx(1.0)
    assert fingerprint["height"] == {"min": 4, "median": 6.0, "max": 6}
    # Class 2 fills its image, and the image border is no boundary: as thick as it can be.
    assert fingerprint["class_thickness"][2] == 2 * 36


@pytest.mark.parametrize("width", [2, 3, 6])
def test_thickness_of_a_band_is_its_width(width):
    region = np.zeros((40, 200), bool)
    region[10 : 10 + width, 20:180] = True
    assert mask_thickness(region) == pytest.approx(width, rel=0.05)


def test_thickness_is_none_for_a_class_in_no_image():
    samples = [(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.uint8))]
    assert compute_fingerprint(samples, 3)["class_thickness"] == [2 * 64, None, None]


def test_dataset_normalises_with_given_statistics(synthetic_dataset):
    pairs = find_pairs(synthetic_dataset)[:2]
    dataset = SegmentationDataset(pairs, 3, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    image, mask = dataset[0]
    raw, raw_mask = load_pair(pairs[0], 3)
    assert image.shape == (3, 48, 48) and mask.dtype.__str__() == "torch.int64"
    np.testing.assert_allclose(image[0].numpy(), (raw[:, :, 0] / 255.0 - 0.5) / 0.25, atol=1e-5)
    np.testing.assert_array_equal(mask.numpy(), raw_mask)
    assert IGNORE_INDEX not in mask.unique().tolist()


def _discs(radius: int, side: int) -> np.ndarray:
    """Four discs of ``radius`` in a ``side`` x ``side`` mask (class 1)."""
    yy, xx = np.mgrid[:side, :side]
    mask = np.zeros((side, side), np.uint8)
    for cy, cx in (
        (side // 4, side // 4),
        (side // 4, 3 * side // 4),
        (3 * side // 4, side // 4),
        (3 * side // 4, 3 * side // 4),
    ):
        mask[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = 1
    return mask


def test_reference_scale_brings_objects_to_the_reference_diameter():
    assert reference_scale(_discs(5, 64) == 1, 22.0) == pytest.approx(2.0, rel=0.1)
    assert reference_scale(_discs(10, 64) == 1, 10.0) == pytest.approx(0.5, rel=0.1)
    assert reference_scale(_discs(5, 64) == 1, 1000.0) == 4.0  # clipped
    assert reference_scale(np.zeros((64, 64), bool), 50.0) == 1.0  # nothing to measure


def test_dataset_sees_every_image_at_the_reference_magnification(tmp_path):
    """Small and large cells come out of the rescaled dataset at one diameter, mask and image alike."""
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for stem, radius in (("small", 5), ("large", 14)):
        mask = _discs(radius, 96)
        Image.fromarray(np.stack([mask * 200] * 3, -1)).save(tmp_path / "images" / f"{stem}.png")
        Image.fromarray(np.stack([mask] * 3, -1)).save(tmp_path / "masks" / f"{stem}.png")
    pairs = find_pairs(tmp_path)
    dataset = SegmentationDataset(pairs, 2, mean=(0, 0, 0), std=(1, 1, 1), reference_diameter=(1, 20.0))
    plain = SegmentationDataset(pairs, 2, mean=(0, 0, 0), std=(1, 1, 1))
    for index in range(2):
        image, mask = dataset[index]
        assert object_diameter(mask.numpy() == 1) == pytest.approx(
            20.0, abs=3
        )  # discs of a few pixels: their drawn width is rounded
        assert ((image[0] > 0.5).numpy() == (mask.numpy() == 1)).mean() > 0.98
    assert {object_diameter(plain[i][1].numpy() == 1) for i in range(2)} != {
        object_diameter(dataset[i][1].numpy() == 1) for i in range(2)
    }
