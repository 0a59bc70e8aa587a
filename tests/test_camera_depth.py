"""Camera data read as the camera wrote it: one picture written in each format a microscope gives
(8-bit PNG, 10-, 12- and 16-bit TIFF, packed 12-bit, grey, float) reads as its 8-bit version and
segments the same."""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from segnet.data.classes import DEFAULT_CLASSES
from segnet.data.pairs import read_image
from segnet.data.synthetic import generate_sample
from segnet.model.networks import build_model
from segnet.model.predictor import Predictor
from segnet.plan.spec import ModelSpec


def _packed_tiff(path: Path, values: np.ndarray, bits: int) -> None:
    """A grey TIFF with samples packed at ``bits`` bits (most significant first, rows padded to a
    byte) and BitsPerSample saying so, as 12-bit cameras write; tifffile cannot write these."""
    height, width = values.shape
    rows = []
    for row in values:
        bitstring = "".join(format(int(value), f"0{bits}b") for value in row)
        bitstring += "0" * (-len(bitstring) % 8)
        rows.append(int(bitstring, 2).to_bytes(len(bitstring) // 8, "big"))
    data = b"".join(rows)
    short, long = 3, 4
    tags = [(256, short, width), (257, short, height), (258, short, bits), (259, short, 1), (262, short, 1),
            (273, long, 8), (277, short, 1), (278, short, height), (279, long, len(data))]  # fmt: skip
    entries = b"".join(
        struct.pack("<HHII", tag, kind, 1, value) if kind == long else struct.pack("<HHIHH", tag, kind, 1, value, 0)
        for tag, kind, value in tags
    )
    path.write_bytes(
        b"II*\0" + struct.pack("<I", 8 + len(data)) + data + struct.pack("<H", len(tags)) + entries + b"\0" * 4
    )


def _deeper(picture: np.ndarray, bits: int) -> np.ndarray:
    """The 8-bit picture as a ``bits``-bit camera would record it, in 16-bit words."""
    return np.round(picture.astype(np.float64) * ((2**bits - 1) / 255)).astype(np.uint16)


def _pil(array: np.ndarray, suffix: str) -> Callable[[Path], Path]:
    def write(folder: Path) -> Path:
        Image.fromarray(array).save(folder / f"picture{suffix}")
        return folder / f"picture{suffix}"

    return write


def _tifffile(array: np.ndarray, **options: object) -> Callable[[Path], Path]:
    def write(folder: Path) -> Path:
        tifffile.imwrite(folder / "picture.tif", array, **options)
        return folder / "picture.tif"

    return write


def _packed(array: np.ndarray, bits: int) -> Callable[[Path], Path]:
    def write(folder: Path) -> Path:
        _packed_tiff(folder / "picture.tif", array, bits)
        return folder / "picture.tif"

    return write


PICTURE, _ = generate_sample(64, 64, np.random.default_rng(7))
GREY = np.round(PICTURE.mean(axis=2)).astype(np.uint8)

# format: (how it is written, the 8-bit picture it shows)
FORMATS = {
    "rgb-png-8": (_pil(PICTURE, ".png"), PICTURE),
    "rgb-tiff-16-holding-12": (_tifffile(_deeper(PICTURE, 12), photometric="rgb"), PICTURE),
    "rgb-tiff-16-holding-10": (_tifffile(_deeper(PICTURE, 10), photometric="rgb"), PICTURE),
    "rgb-tiff-16": (_tifffile(_deeper(PICTURE, 16), photometric="rgb"), PICTURE),
    "rgb-tiff-16-planar": (
        _tifffile(np.moveaxis(_deeper(PICTURE, 12), -1, 0), photometric="rgb", planarconfig="separate"),
        PICTURE,
    ),
    "grey-png-8": (_pil(GREY, ".png"), GREY),
    "grey-tiff-16-holding-10": (_pil(_deeper(GREY, 10), ".tif"), GREY),
    "grey-tiff-16-holding-12": (_pil(_deeper(GREY, 12), ".tif"), GREY),
    "grey-tiff-16-holding-14": (_pil(_deeper(GREY, 14), ".tif"), GREY),
    "grey-tiff-16": (_pil(_deeper(GREY, 16), ".tif"), GREY),
    "grey-png-16-holding-12": (_pil(_deeper(GREY, 12), ".png"), GREY),
    "grey-tiff-packed-12": (_packed(_deeper(GREY, 12), 12), GREY),
    "grey-tiff-float-0-1": (_pil((GREY / 255).astype(np.float32), ".tif"), GREY),
    "grey-tiff-float-0-255": (_pil(GREY.astype(np.float32), ".tif"), GREY),
    "grey-tiff-float-0-4095": (_pil((GREY * (4095 / 255)).astype(np.float32), ".tif"), GREY),
}


@pytest.fixture(scope="module")
def segment() -> Callable[[np.ndarray], np.ndarray]:
    """An untrained segnet-basic's segmentation: it depends on every input level, so pictures read
    darker or brighter than their 8-bit version segment differently."""
    torch.manual_seed(0)
    model = build_model(ModelSpec("segnet-basic", len(DEFAULT_CLASSES)))
    return Predictor(model, list(DEFAULT_CLASSES), mean=[0.1, 0.1, 0.1], std=[0.1, 0.1, 0.1]).predict


def test_the_picture_is_bright_enough_to_tell_depths_apart() -> None:
    # Its 12-bit version reaches the top half of 12 bits, so read by any other depth it is wrong.
    assert _deeper(GREY, 12).max() >= 2**11 and _deeper(PICTURE, 10).max() >= 2**9


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_every_format_reads_and_segments_as_its_8_bit_version(tmp_path: Path, segment, name: str) -> None:
    write, picture = FORMATS[name]
    read = read_image(write(tmp_path))
    expected = np.repeat(picture[:, :, None], 3, axis=2) if picture.ndim == 2 else picture
    assert np.abs(read.astype(int) - expected).max() <= 1
    agreement = (segment(read) == segment(expected)).mean()
    assert agreement >= 0.99


def test_the_segmentation_tells_a_darker_picture_apart(segment) -> None:
    # What the check above rules out: the picture read at 1/16 of its brightness (a 12-bit picture
    # scaled as 16-bit) segments differently.
    assert (segment(PICTURE // 16) == segment(PICTURE)).mean() < 0.99


@pytest.mark.parametrize("orientation", range(1, 9))
def test_a_16_bit_rgb_tiff_is_laid_out_as_its_orientation_tag_says(tmp_path: Path, orientation: int) -> None:
    tifffile.imwrite(
        tmp_path / "deep.tif", _deeper(PICTURE, 12), photometric="rgb", extratags=[(274, 3, 1, orientation, False)]
    )
    Image.fromarray(PICTURE).save(tmp_path / "flat.tif", exif=_orientation_exif(orientation))
    np.testing.assert_array_equal(read_image(tmp_path / "deep.tif"), read_image(tmp_path / "flat.tif"))


def _orientation_exif(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif
