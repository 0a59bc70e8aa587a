"""Fuzzing the image and mask readers: every input either loads correctly or raises DataError naming the file.

Any other exception (a Pillow plugin's struct.error, a numpy TypeError, ...) would reach the user as a
traceback instead of a one-line message, so each test lets it propagate and fail. Run with
``pytest tests/test_data_fuzz.py --hypothesis-show-statistics`` to see how many cases ran.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from segnet.core.errors import DataError
from segnet.data.pairs import Pair, load_pair, read_image, read_mask

# Pillow warns about the broken files it is fed here (corrupt EXIF, truncated reads, huge sizes): expected.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::PIL.Image.DecompressionBombWarning")
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
EXTENSIONS = (".png", ".jpg", ".tif")
MAGIC_PREFIXES = (
    b"\x89PNG\r\n\x1a\n",
    b"\xff\xd8\xff\xe0",  # JPEG/JFIF
    b"\xff\xd8\xff\xe1",  # JPEG/EXIF
    b"II*\x00",  # little-endian TIFF
    b"MM\x00*",  # big-endian TIFF
    b"GIF89a",
    b"BM",
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def loads_or_names_file(read: Callable[[], np.ndarray], *paths: Path) -> np.ndarray | None:
    """The array ``read`` returns, or None when it raised a DataError naming one of ``paths``."""
    try:
        return read()
    except DataError as error:
        assert any(path.name in str(error) for path in paths), f"error does not name the file: {error}"
        return None


def check_image_and_mask_readers(path: Path) -> None:
    """Both readers accept or reject ``path`` cleanly; what they accept has the documented type."""
    image = loads_or_names_file(lambda: read_image(path), path)
    if image is not None:
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    mask = loads_or_names_file(lambda: read_mask(path, 3), path)
    if mask is not None:
        assert mask.dtype == np.uint8 and mask.ndim == 2 and mask.max(initial=0) < 3


def encode(image: Image.Image, extension: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format={".png": "PNG", ".jpg": "JPEG", ".tif": "TIFF"}[extension], **options)
    return buffer.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


@FUZZ
@given(data=st.binary(max_size=2048), extension=st.sampled_from(EXTENSIONS))
def test_random_bytes(folder: Path, data: bytes, extension: str) -> None:
    path = folder / f"random{extension}"
    path.write_bytes(data)
    check_image_and_mask_readers(path)


@FUZZ
@given(prefix=st.sampled_from(MAGIC_PREFIXES), data=st.binary(max_size=1024))
def test_random_bytes_after_a_format_signature(folder: Path, prefix: bytes, data: bytes) -> None:
    """Past the signature, each Pillow plugin parses headers of its own, with its own exceptions."""
    path = folder / "signature.png"
    path.write_bytes(prefix + data)
    check_image_and_mask_readers(path)


small_images = st.builds(
    lambda height, width, seed: np.random.default_rng(seed).integers(0, 3, (height, width, 3), dtype=np.uint8),
    st.integers(1, 24),
    st.integers(1, 24),
    st.integers(0, 2**32 - 1),
)


@FUZZ
@given(
    pixels=small_images,
    extension=st.sampled_from(EXTENSIONS),
    cut=st.floats(0, 1, exclude_max=True),
    flip=st.booleans(),
)
def test_truncated_or_corrupted_files(folder: Path, pixels: np.ndarray, extension: str, cut: float, flip: bool) -> None:
    """A valid file cut short at a random offset, or with one byte inverted there."""
    data = bytearray(encode(Image.fromarray(pixels), extension))
    offset = int(cut * len(data))
    if flip:
        data[offset] ^= 0xFF
    else:
        del data[offset:]
    path = folder / f"damaged{extension}"
    path.write_bytes(bytes(data))
    check_image_and_mask_readers(path)


@FUZZ
@given(
    width=st.integers(0, 2**31 - 1) | st.integers(0, 70000),
    height=st.integers(0, 2**31 - 1) | st.integers(0, 70000),
    bit_depth=st.sampled_from([1, 2, 4, 8, 16, 3, 0]),
    colour_type=st.sampled_from([0, 2, 3, 4, 6, 1, 7]),
    idat=st.binary(max_size=64),
)
# Found by this test: Pillow raises DecompressionBombError (not an OSError) past twice its pixel limit.
@example(width=13355, height=13400, bit_depth=1, colour_type=0, idat=b"")
@example(width=10000, height=10000, bit_depth=8, colour_type=0, idat=b"")  # between once and twice the limit
def test_png_headers(folder: Path, width: int, height: int, bit_depth: int, colour_type: int, idat: bytes) -> None:
    """Well-formed PNG chunks describing any size (huge ones included) and any pixel format."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    path = folder / "header.png"
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(idat))
        + png_chunk(b"IEND", b"")
    )
    check_image_and_mask_readers(path)


# (mode, formats that can hold it, numpy dtype and channel count of the pixel data)
MODES = {
    "L": ((".png", ".jpg", ".tif"), np.uint8, 1),
    "RGB": ((".png", ".jpg", ".tif"), np.uint8, 3),
    "RGBA": ((".png", ".tif"), np.uint8, 4),
    "LA": ((".png",), np.uint8, 2),
    "P": ((".png", ".tif"), np.uint8, 1),
    "1": ((".png", ".tif"), bool, 1),
    "I;16": ((".png", ".tif"), np.uint16, 1),
    "F": ((".tif",), np.float32, 1),
}


def make_image(mode: str, pixels: np.ndarray) -> Image.Image:
    """An image of ``mode`` holding ``pixels`` (H x W x channels); a P image gets a grey palette, index v = (v, v, v)."""
    if mode == "P":
        image = Image.fromarray(pixels[:, :, 0], "P")
        image.putpalette(bytes(np.repeat(np.arange(256, dtype=np.uint8), 3)))
        return image
    return Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels, None if mode != "LA" else "LA")


@st.composite
def valid_images(draw: st.DrawFn) -> tuple[str, str, np.ndarray]:
    mode = draw(st.sampled_from(sorted(MODES)))
    formats, dtype, channels = MODES[mode]
    extension = draw(st.sampled_from(formats))
    height = draw(st.sampled_from([1, 2, 3]) | st.integers(1, 40))
    width = draw(st.sampled_from([1, 2, 3]) | st.integers(1, 40))
    if dtype == np.float32:
        elements = (
            st.floats(-10, 1e5, width=32) | st.floats(0, 1, width=32) | st.sampled_from([float("nan"), float("inf")])
        )
    else:
        elements = None
    pixels = draw(arrays(dtype, (height, width, channels), elements=elements))
    return mode, extension, pixels


@FUZZ
@given(case=valid_images())
def test_valid_images_of_any_size_and_pixel_type(folder: Path, case: tuple[str, str, np.ndarray]) -> None:
    """Every mode segnet reads gives ``H x W x 3`` uint8 of the same size; lossless 8-bit data is kept exactly."""
    mode, extension, pixels = case
    path = folder / f"valid{extension}"
    path.write_bytes(encode(make_image(mode, pixels), extension))
    image = loads_or_names_file(lambda: read_image(path), path)
    if image is None:  # only non-finite float data may be refused
        assert mode == "F" and not np.isfinite(pixels).all()
        return
    height, width = pixels.shape[:2]
    assert image.shape == (height, width, 3) and image.dtype == np.uint8
    if extension == ".jpg":
        return  # lossy: only the size and the type are exact
    if mode in ("L", "P"):
        assert np.array_equal(image, np.repeat(pixels, 3, axis=2))
    elif mode in ("RGB", "RGBA"):
        assert np.array_equal(image, pixels[:, :, :3])
    elif mode == "LA":
        assert np.array_equal(image, np.repeat(pixels[:, :, :1], 3, axis=2))
    elif mode == "1":
        assert np.array_equal(image, np.repeat(pixels.astype(np.uint8) * 255, 3, axis=2))
    else:  # 16-bit and float: scaled, so brighter input never comes out darker
        values = pixels[:, :, 0].ravel().astype(np.float64)
        order = np.argsort(values, kind="stable")
        assert (np.diff(image[:, :, 0].ravel()[order].astype(int)) >= 0).all()
        assert (image[:, :, 0] == image[:, :, 1]).all() and (image[:, :, 0] == image[:, :, 2]).all()


@st.composite
def masks(draw: st.DrawFn) -> tuple[str, np.ndarray, int]:
    """A mask file's mode, its class values, and the class count to read it with."""
    mode = draw(st.sampled_from(["L", "RGB", "RGBA", "P", "I;16", "1"]))
    num_classes = draw(st.integers(1, 6))
    shape = (draw(st.integers(1, 20)), draw(st.integers(1, 20)))
    top = {"1": 1, "I;16": 70000}.get(mode, 255)
    values = st.integers(0, min(top, num_classes - 1)) | st.integers(0, min(top, 65535))
    return mode, draw(arrays(np.int64, shape, elements=values)), num_classes


def mask_image(mode: str, values: np.ndarray) -> Image.Image:
    if mode == "1":
        return Image.fromarray(values.astype(bool))
    if mode == "I;16":
        return Image.fromarray(values.astype(np.uint16))
    grey = values.astype(np.uint8)
    if mode == "P":
        image = Image.fromarray(grey, "P")
        image.putpalette(np.random.default_rng(0).integers(0, 256, 768, dtype=np.uint8).tobytes())
        return image
    if mode == "RGB":
        return Image.fromarray(np.repeat(grey[:, :, None], 3, axis=2))
    if mode == "RGBA":
        return Image.fromarray(
            np.concatenate([np.repeat(grey[:, :, None], 3, axis=2), np.full_like(grey[:, :, None], 200)], axis=2)
        )
    return Image.fromarray(grey)


@FUZZ
@given(case=masks())
@example(case=("1", np.array([[0, 1]]), 2))  # found by this test: 1-bit masks were refused as "got bool"
def test_random_mask_values(folder: Path, case: tuple[str, np.ndarray, int]) -> None:
    """Values inside the classes load unchanged (a P mask's indices are its classes); others are listed in the error."""
    mode, values, num_classes = case
    path = folder / "mask.png"
    mask_image(mode, values).save(path)
    try:
        mask = read_mask(path, num_classes)
    except DataError as error:
        assert path.name in str(error)
        assert values.max() >= num_classes, f"valid mask refused: {error}"
        assert str(int(values[values >= num_classes].min())) in str(error)
        return
    assert values.max() < num_classes, "values outside the classes were accepted"
    assert mask.dtype == np.uint8 and np.array_equal(mask, values)


@FUZZ
@given(
    colours=arrays(np.uint8, (8, 8, 3)),
    num_classes=st.integers(1, 4),
)
def test_colour_masks(folder: Path, colours: np.ndarray, num_classes: int) -> None:
    """Without a palette, differing channels are refused as a colour mask; with one, every colour maps or is named."""
    path = folder / "colour.png"
    Image.fromarray(colours).save(path)
    grey = (colours[:, :, 0] == colours[:, :, 1]).all() and (colours[:, :, 0] == colours[:, :, 2]).all()
    mask = loads_or_names_file(lambda: read_mask(path, num_classes), path)
    if not grey:
        assert mask is None
    elif colours.max() < num_classes:
        assert mask is not None
    present = np.unique(colours.reshape(-1, 3), axis=0)
    palette = {index: tuple(int(c) for c in colour) for index, colour in enumerate(present[:num_classes])}
    decoded = loads_or_names_file(lambda: read_mask(path, num_classes, palette), path)
    if decoded is None:
        assert len(present) > num_classes
    else:
        rebuilt = np.array([palette[i] for i in range(len(palette))], dtype=np.uint8)[decoded]
        assert np.array_equal(rebuilt, colours)


@FUZZ
@given(
    image_size=st.tuples(st.integers(1, 12), st.integers(1, 12)),
    mask_size=st.tuples(st.integers(1, 12), st.integers(1, 12)),
    image_ext=st.sampled_from(EXTENSIONS),
)
def test_load_pair_sizes(folder: Path, image_size: tuple[int, int], mask_size: tuple[int, int], image_ext: str) -> None:
    """A pair loads when the sizes match; otherwise the error names the mask and its image."""
    pair = Pair("pair", folder / f"pair{image_ext}", folder / "pair_mask.png")
    pair.image.write_bytes(encode(Image.new("RGB", image_size[::-1], (10, 20, 30)), image_ext))
    Image.new("L", mask_size[::-1], 1).save(pair.mask)
    try:
        image, mask = load_pair(pair, num_classes=2)
    except DataError as error:
        assert image_size != mask_size
        assert pair.mask.name in str(error) and pair.image.name in str(error)
        return
    assert image_size == mask_size
    assert image.shape == (*image_size, 3) and mask.shape == image_size and (mask == 1).all()


@FUZZ
@given(
    orientation=st.integers(0, 9) | st.integers(0, 2**16 - 1),
    height=st.integers(1, 12),
    width=st.integers(1, 12),
    extension=st.sampled_from([".jpg", ".png", ".tif"]),
)
def test_exif_orientation(folder: Path, orientation: int, height: int, width: int, extension: str) -> None:
    """Orientations 5-8 swap height and width (as viewers show the photo); any other value leaves the image as stored."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = folder / f"oriented{extension}"
    path.write_bytes(encode(Image.new("RGB", (width, height), (50, 60, 70)), extension, exif=exif))
    image = read_image(path)
    assert image.shape == ((width, height, 3) if orientation in (5, 6, 7, 8) else (height, width, 3))


@FUZZ
@given(exif=st.binary(max_size=200), extension=st.sampled_from([".jpg", ".png"]))
@example(exif=b"\x00", extension=".png")  # found by this test: SyntaxError escaped from EXIF parsing
def test_corrupt_exif(folder: Path, exif: bytes, extension: str) -> None:
    """Garbage in the EXIF block: the pixels are still fine, so the image loads or is refused with a message."""
    path = folder / f"exif{extension}"
    path.write_bytes(encode(Image.new("RGB", (5, 3), (1, 2, 3)), extension, exif=b"Exif\x00\x00" + exif))
    image = loads_or_names_file(lambda: read_image(path), path)
    assert image is None or image.shape in ((3, 5, 3), (5, 3, 3))
