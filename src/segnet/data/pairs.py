"""Finding image/mask pairs, decoding images and masks, the train/validation split, the fingerprint.

The default layout is the public darkfield dataset's::

    DIR/images/NNN.png    RGB images (.png, .jpg, .jpeg, .tif, .tiff)
    DIR/masks/NNN.png     class index per pixel: an RGB PNG with three identical channels, or one channel

``DIR/flattened_masks/`` is accepted instead of ``DIR/masks/``. Images and masks are paired by file
stem, never by listing order. Every problem raises :class:`~segnet.core.errors.DataError` naming the file.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
import tifffile
from PIL import Image, ImageOps, UnidentifiedImageError
from pydantic import AllowInfNan, BeforeValidator, Field

from segnet.core.errors import DataError, SegnetError
from segnet.core.outputs import write_atomically, write_text_atomically
from segnet.core.readback import read_json
from segnet.core.runfiles import SPLIT_FILE

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
MASK_FOLDERS = ("masks", "flattened_masks")
IGNORE_INDEX = 255
"""Mask value for pixels that carry no label (crop padding); the loss and the metrics skip them."""


def _plain_number(value: object) -> object:
    """Refuse what is no int or float: pydantic's strict float still takes anything with __float__ (a tensor)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"Input should be a number, not {type(value).__name__}")
    return value


FiniteNumber = Annotated[float, BeforeValidator(_plain_number), AllowInfNan(False)]
ChannelMeans = Annotated[list[FiniteNumber], Field(min_length=3, max_length=3)]
ChannelStds = Annotated[list[Annotated[FiniteNumber, Field(gt=0)]], Field(min_length=3, max_length=3)]
"""Types (for pydantic) of a model's normalisation as checkpoints and ONNX files store it: per RGB channel on [0, 1]."""
ClassDiameters = list[Annotated[FiniteNumber, Field(gt=0)] | None]
"""Type (for pydantic) of the per-class median object diameters (px) a fingerprint's ``class_diameter`` holds."""


@dataclass(frozen=True)
class Pair:
    """One labelled example: an image file and its mask file, sharing a stem."""

    stem: str
    image: Path
    mask: Path


def image_files(folder: Path) -> list[Path]:
    """The files in ``folder`` with an image extension, sorted; hidden files and subfolders are skipped."""
    return [
        path
        for path in sorted(folder.iterdir())
        if not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()
    ]


def _files_by_stem(folder: Path) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for path in image_files(folder):
        if path.stem in files:
            raise DataError(path, f"two files share the stem '{path.stem}' ({files[path.stem].name} and {path.name})")
        files[path.stem] = path
    return files


def find_mask_folder(root: Path) -> Path:
    """Return ``root/masks`` or ``root/flattened_masks``, whichever exists."""
    for name in MASK_FOLDERS:
        if (root / name).is_dir():
            return root / name
    raise DataError(root, "no masks/ (or flattened_masks/) folder beside images/")


def find_pairs(root: str | Path) -> list[Pair]:
    """Pair ``root/images/*`` with ``root/masks/*`` by file stem, sorted by stem.

    An image without a mask, or a mask without an image, is an error naming the file.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(root, "dataset folder not found")
    image_folder = root / "images"
    if not image_folder.is_dir():
        raise DataError(root, "no images/ folder (expected DIR/images/ and DIR/masks/)")
    images = _files_by_stem(image_folder)
    masks = _files_by_stem(find_mask_folder(root))
    for stem, path in images.items():
        if stem not in masks:
            raise DataError(path, "image has no mask with the same name")
    for stem, path in masks.items():
        if stem not in images:
            raise DataError(path, "mask has no image with the same name")
    if not images:
        raise DataError(image_folder, "no images found (.png, .jpg, .tif)")
    return [Pair(stem, images[stem], masks[stem]) for stem in sorted(images)]


# What Pillow's format plugins raise on malformed files and metadata (tests/test_data_fuzz.py finds them).
_MALFORMED_FILE_ERRORS = (OSError, SyntaxError, ValueError, struct.error)
EXIF_ORIENTATION_TAG = 0x0112


def _open(path: Path) -> Image.Image:
    """Open and fully decode an image file, turning every failure into a DataError naming it."""
    try:
        image = Image.open(path)
        # Checked here rather than by turning Pillow's warning into an error: warnings.catch_warnings
        # is not thread-safe, and images are read from thread pools (check, predict).
        if Image.MAX_IMAGE_PIXELS is not None and image.width * image.height > Image.MAX_IMAGE_PIXELS:
            raise DataError(path, f"image too large to decode safely ({image.width}x{image.height} pixels)")
        image.load()
    except FileNotFoundError as error:
        raise DataError(path, "file not found") from error
    except UnidentifiedImageError as error:
        problem = "empty file (0 bytes)" if path.stat().st_size == 0 else "not an image file (or an unsupported format)"
        raise DataError(path, problem) from error
    except Image.DecompressionBombError as error:
        raise DataError(path, f"image too large to decode safely ({error})") from error
    except _MALFORMED_FILE_ERRORS as error:
        raise DataError(path, f"unreadable or truncated image ({error})") from error
    return image


def exif_orientation(image: Image.Image) -> int:
    """The image's EXIF orientation tag: 2-8 for flips and rotations, else 1 (pixels as stored).

    An absent tag, an invalid value or an unreadable EXIF block count as 1, as image viewers treat them.
    """
    try:
        orientation = image.getexif().get(EXIF_ORIENTATION_TAG, 1)
    except _MALFORMED_FILE_ERRORS:
        return 1
    return orientation if orientation in range(2, 9) else 1


def _upright(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation tag, so that pixels are laid out as viewers show the photo."""
    return image if exif_orientation(image) == 1 else ImageOps.exif_transpose(image)


CAMERA_BIT_DEPTHS = (8, 10, 12, 14, 16)
"""The depths cameras write integer data in. Data in a deeper container than its values need (a
12-bit camera's 16-bit TIFF) is scaled by the smallest of these that holds its largest value, as
microscopy tools treat it, so that a 12-bit picture is not read almost black."""
BITS_PER_SAMPLE_TAG = 258
# The EXIF orientations (2-8) as numpy moves: what ImageOps.exif_transpose does to a Pillow image.
_ORIENTATION_MOVES: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    2: lambda array: array[:, ::-1],
    3: lambda array: array[::-1, ::-1],
    4: lambda array: array[::-1],
    5: lambda array: array.swapaxes(0, 1),
    6: lambda array: np.rot90(array, -1),
    7: lambda array: np.rot90(array, 2).swapaxes(0, 1),
    8: lambda array: np.rot90(array, 1),
}


def _tiff_bits(image: Image.Image) -> tuple[int, ...]:
    """A TIFF's BitsPerSample, one per channel; empty for other files or an unreadable tag."""
    tags = getattr(image, "tag_v2", None)
    try:
        bits = tags.get(BITS_PER_SAMPLE_TAG) if tags is not None else None
    except _MALFORMED_FILE_ERRORS:
        return ()
    bits = bits if isinstance(bits, tuple) else (bits,)
    return tuple(value for value in bits if isinstance(value, int))


def declared_bits(image: Image.Image) -> int | None:
    """A TIFF's BitsPerSample where it says fewer bits than its pixels are decoded into (a packed
    10- or 12-bit file); ``None`` otherwise (not a TIFF, or the tag only repeats the container's depth)."""
    bits = _tiff_bits(image)
    return bits[0] if bits and 8 <= bits[0] < 16 else None


def _depth_lost(image: Image.Image) -> bool:
    """Whether Pillow decoded a TIFF's deeper-than-8-bit samples to 8 bits: it keeps the high byte of
    16-bit RGB, which leaves a 12-bit camera's picture almost black."""
    return not image.mode.startswith(("I", "F")) and max(_tiff_bits(image), default=8) > 8


def _tiff_samples(path: Path) -> np.ndarray:
    """The first page of a TIFF at its own depth (``H x W`` or ``H x W x C``), laid out upright
    (by its Orientation tag, which Pillow drops from the tags once it has loaded the pixels)."""
    try:
        with tifffile.TiffFile(path) as tiff:
            page = tiff.pages[0]
            array, axes = page.asarray(), page.axes
            orientation = page.tags.valueof(EXIF_ORIENTATION_TAG, 1)
    except (tifffile.TiffFileError, *_MALFORMED_FILE_ERRORS) as error:
        raise DataError(path, f"unreadable TIFF ({error})") from error
    if axes.startswith("S"):  # planar RGB: one plane per channel
        array = np.moveaxis(array, 0, -1)
    move = _ORIENTATION_MOVES.get(orientation)
    return move(array) if move is not None else array


def pixel_range(array: np.ndarray, bits: int | None = None) -> tuple[float, float]:
    """The values that read as black and as full brightness, for integer or float pixel data.

    Integer data: ``0 .. 2**bits - 1`` where ``bits`` (a file's declared depth) holds every value,
    else the smallest of :data:`CAMERA_BIT_DEPTHS` that does. Float data: ``0 .. 1`` where every
    value lies there, else like integers. Data with negative values, or deeper than 16 bits, is
    taken by its own range, lowest to highest.
    """
    top = float(array.max(initial=0))
    bottom = float(array.min(initial=0))
    if bottom < 0:
        return bottom, top
    if bits is not None and top < 2**bits:
        return 0.0, float(2**bits - 1)
    if np.issubdtype(array.dtype, np.floating) and top <= 1.0:
        return 0.0, 1.0
    depth = next((depth for depth in CAMERA_BIT_DEPTHS if top < 2**depth), None)
    return (0.0, float(2**depth - 1)) if depth is not None else (0.0, top)


def _to_uint8(array: np.ndarray, path: Path, bits: int | None = None) -> np.ndarray:
    """Scale integer or float pixel data to 8 bit by :func:`pixel_range` (images only; masks must
    be integer already); ``bits`` is the file's declared depth, if any."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == bool:
        return array.astype(np.uint8) * 255
    if not np.issubdtype(array.dtype, np.integer) and not np.issubdtype(array.dtype, np.floating):
        raise DataError(path, f"unsupported pixel type {array.dtype}")
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        raise DataError(path, "image holds NaN or infinite values")
    low, high = pixel_range(array, bits)
    scaled = (array.astype(np.float64) - low) * (255 / (high - low)) if high > low else np.zeros(array.shape)
    return np.clip(scaled, 0, 255).round().astype(np.uint8)


def read_image(path: str | Path) -> np.ndarray:
    """Read an image as an ``H x W x 3`` uint8 RGB array.

    Grayscale is repeated to three channels, alpha is dropped, deeper integer and float data are
    scaled to 8 bit by their real depth (:func:`pixel_range`), and an EXIF orientation tag is
    applied (as viewers show the image).
    """
    path = Path(path)
    return image_to_rgb(_open(path), path)


def image_to_rgb(image: Image.Image, path: Path) -> np.ndarray:
    """The conversion behind :func:`read_image`, for an image already opened; ``path`` names it in errors."""
    if _depth_lost(image):
        return array_to_rgb(_tiff_samples(path), path)
    image = _upright(image)
    if image.mode in ("RGB", "L"):
        array = np.asarray(image)
    elif image.mode.startswith(("I", "F")):  # 16-bit, 32-bit and float: keep the range, then scale
        array = _to_uint8(np.asarray(image), path, declared_bits(image))
    else:  # RGBA, LA, P, PA, 1, CMYK, YCbCr, ...
        try:
            array = np.asarray(image.convert("RGB"))
        except ValueError as error:
            raise DataError(path, f"unsupported pixel mode {image.mode} ({error})") from error
    return array_to_rgb(array, path)


def array_to_rgb(array: np.ndarray, path: str | Path) -> np.ndarray:
    """Pixel data already decoded (a viewer's layer) as :func:`read_image` gives it: ``H x W x 3`` uint8.

    Grayscale ``H x W`` is repeated to three channels, a fourth (alpha) channel is dropped, deeper
    integer and float data are scaled to 8 bit by :func:`pixel_range`; ``path`` names the data in errors.

    Raises:
        DataError: any other shape (a stack, more channels) or pixel type.
    """
    path = Path(path)
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[2] == 4:
        array = array[:, :, :3]
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] != 3:
        raise DataError(path, f"expected an RGB or grayscale image, got shape {array.shape}")
    if array.size == 0:
        raise DataError(path, f"empty image ({array.shape[1]}x{array.shape[0]} pixels)")
    return np.ascontiguousarray(_to_uint8(array, path))


def mask_dtype(num_classes: int) -> type[np.unsignedinteger]:
    """The type a class mask of ``num_classes`` is held and written in: 8-bit up to 256 classes,
    16-bit beyond, so that no class index wraps around."""
    return np.uint8 if num_classes <= 2**8 else np.uint16


def class_mask(proba: np.ndarray) -> np.ndarray:
    """Class index per pixel of ``(C, H, W)`` scores (the argmax), in :func:`mask_dtype` of ``C``."""
    return proba.argmax(axis=0).astype(mask_dtype(proba.shape[0]))


def read_mask(path: str | Path, num_classes: int, palette: Mapping[int, Sequence[int]] | None = None) -> np.ndarray:
    """Read a mask as an ``H x W`` array of class indices (uint8, or uint16 beyond 256 classes: :func:`mask_dtype`).

    Accepted: one channel of class indices, or RGB with three identical channels (the public
    dataset's format), or, with ``palette`` (class index -> RGB colour), a colour mask. Values
    outside ``0..num_classes-1`` are an error listing the values found. Alpha is ignored, a 1-bit
    mask holds classes 0 and 1, and an EXIF orientation tag is applied as for the image.
    """
    path = Path(path)
    return image_to_mask(_open(path), path, num_classes, palette)


def image_to_mask(
    image: Image.Image, path: Path, num_classes: int, palette: Mapping[int, Sequence[int]] | None = None
) -> np.ndarray:
    """The conversion behind :func:`read_mask`, for an image already opened; ``path`` names it in errors."""
    image = _upright(image)
    if palette is not None:
        try:
            rgb = image.convert("RGB")
        except ValueError as error:
            raise DataError(path, f"cannot read a {image.mode} mask as colours ({error})") from error
        return _decode_palette(np.asarray(rgb), palette, path)
    array = np.asarray(image)  # a "P" image gives its palette indices, which are the classes
    if array.ndim == 3 and array.shape[2] == 2:  # LA or PA: the value and its alpha
        array = array[:, :, 0]
    elif array.ndim == 3:
        channels = array[:, :, :3]
        if not (
            np.array_equal(channels[:, :, 0], channels[:, :, 1])
            and np.array_equal(channels[:, :, 0], channels[:, :, 2])
        ):
            raise DataError(
                path,
                "colour mask: its RGB channels differ; map colours to classes with the mask_palette config option (class name: [R, G, B])",
            )
        array = channels[:, :, 0]
    if array.dtype == bool:
        array = array.astype(np.uint8)
    if not np.issubdtype(array.dtype, np.integer):
        raise DataError(path, f"mask must hold integer class indices, got {array.dtype}")
    values = (
        np.flatnonzero(np.bincount(array.ravel())) if array.dtype == np.uint8 else np.unique(array)
    )  # bincount: 10x faster
    bad = values[(values < 0) | (values >= num_classes)]
    if bad.size:
        raise DataError(
            path, f"mask values {bad.tolist()[:10]} are outside the {num_classes} classes (0..{num_classes - 1})"
        )
    return array.astype(mask_dtype(num_classes))


def _decode_palette(rgb: np.ndarray, palette: Mapping[int, Sequence[int]], path: Path) -> np.ndarray:
    packed = (rgb[:, :, 0].astype(np.int64) << 16) | (rgb[:, :, 1].astype(np.int64) << 8) | rgb[:, :, 2]
    colour_to_class = {(r << 16) | (g << 8) | b: index for index, (r, g, b) in palette.items()}
    colours, inverse = np.unique(packed, return_inverse=True)
    unmapped = [c for c in colours.tolist() if c not in colour_to_class]
    if unmapped:
        found = ", ".join(f"({c >> 16},{(c >> 8) & 255},{c & 255})" for c in unmapped[:8])
        raise DataError(path, f"mask colours not in the palette: {found}")
    lookup = np.array([colour_to_class[c] for c in colours.tolist()], dtype=np.uint8)
    return lookup[inverse].reshape(packed.shape)


def load_pair(
    pair: Pair, num_classes: int, palette: Mapping[int, Sequence[int]] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Read an image and its mask, checking that their sizes match."""
    image = read_image(pair.image)
    mask = read_mask(pair.mask, num_classes, palette)
    if image.shape[:2] != mask.shape:
        raise DataError(
            pair.mask,
            f"mask size {mask.shape[1]}x{mask.shape[0]} differs from image size {image.shape[1]}x{image.shape[0]} ({pair.image.name})",
        )
    return image, mask


def write_pair(root: str | Path, stem: str, image: np.ndarray, mask: np.ndarray) -> Pair:
    """Write an ``H x W x 3`` uint8 image and its ``H x W`` class mask as ``root/images/STEM.png`` and
    ``root/masks/STEM.png`` (three identical channels, as the public dataset), replacing those files
    (atomically, never writing through a link).

    Raises:
        DataError: the sizes differ, or a file cannot be written (the message names it).
    """
    if image.shape[:2] != mask.shape:
        raise DataError(
            Path(root) / "masks" / f"{stem}.png", f"mask size {mask.shape} differs from image size {image.shape[:2]}"
        )
    pair = Pair(stem, Path(root) / "images" / f"{stem}.png", Path(root) / MASK_FOLDERS[0] / f"{stem}.png")
    for target, array in ((pair.image, image), (pair.mask, np.repeat(mask.astype(np.uint8)[:, :, None], 3, axis=2))):
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise DataError(target, f"could not write ({error.strerror or error})") from error
        picture = Image.fromarray(np.ascontiguousarray(array), mode="RGB")
        write_atomically(target, lambda temporary, picture=picture: picture.save(temporary, format="PNG"), "image")
    return pair


def split_pairs(pairs: Sequence[Pair], val_fraction: float, seed: int) -> tuple[list[Pair], list[Pair]]:
    """Shuffle by ``seed`` and hold out ``round(n * val_fraction)`` pairs (at least one when > 0).

    Reproducible: the order is taken from the sorted stems, so it does not depend on the file system.
    """
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    ordered = sorted(pairs, key=lambda p: p.stem)
    n_val = max(1, round(len(ordered) * val_fraction)) if val_fraction > 0 else 0
    if n_val >= len(ordered):
        raise DataError(
            ordered[0].image.parent if ordered else Path("."),
            f"{len(ordered)} images are too few to hold out {n_val} for validation",
        )
    order = np.random.default_rng(seed).permutation(len(ordered))
    val = sorted((ordered[i] for i in order[:n_val]), key=lambda p: p.stem)
    train = sorted((ordered[i] for i in order[n_val:]), key=lambda p: p.stem)
    return train, val


def write_split(path: str | Path, train: Sequence[Pair], val: Sequence[Pair]) -> None:
    """Record which stems were used for training and validation."""
    write_text_atomically(
        path, json.dumps({"train": [p.stem for p in train], "val": [p.stem for p in val]}, indent=1), "split file"
    )


SPLIT_NAMES = ("train", "val")
SELECTIONS = (*SPLIT_NAMES, "all")
"""What a stage that reads a run can be asked to take: one side of its split, or every pair."""


def read_split_stems(path: str | Path) -> dict[str, list[str]]:
    """The stems a ``split.json`` lists under "train" and "val", checked to be what :func:`write_split` writes.

    Raises:
        DataError: the file is missing, not JSON, not of that layout, or lists a stem twice (in one
            list, or for both training and validation, which would score the model on its training images).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "split file not found (evaluate --split val needs the run's split.json)")
    split = read_json(path, "split file")
    if not isinstance(split, dict) or not all(
        isinstance(split.get(name), list) and all(isinstance(stem, str) for stem in split[name]) for name in SPLIT_NAMES
    ):
        raise DataError(path, 'not a split file: expected {"train": [stems], "val": [stems]}')
    listed = split["train"] + split["val"]
    repeated = sorted({stem for stem in listed if listed.count(stem) > 1})
    if repeated:
        both = set(split["train"]) & set(split["val"])
        where = "for both training and validation" if both else "twice"
        raise DataError(path, f"lists {', '.join(sorted(both) or repeated)[:200]} {where}")
    return {name: split[name] for name in SPLIT_NAMES}


def read_split(path: str | Path, pairs: Sequence[Pair], name: str) -> list[Pair]:
    """Select the pairs listed under ``name`` ("train" or "val") in a ``split.json``."""
    path = Path(path)
    stems = read_split_stems(path)[name]
    by_stem = {p.stem: p for p in pairs}
    missing = [s for s in stems if s not in by_stem]
    if missing:
        raise DataError(path, f"the split names images that are not in the data folder: {missing[:5]}")
    return [by_stem[s] for s in stems]


def select_pairs(data: str | Path, split: str, run_dir: Path) -> list[Pair]:
    """The image/mask pairs of ``data`` to evaluate: all of them, or one side of RUN/split.json."""
    if split not in SELECTIONS:
        raise SegnetError(f"unknown split '{split}' (use {', '.join(SELECTIONS)})")
    pairs = find_pairs(data)
    if split == "all":
        return pairs
    split_file = run_dir / SPLIT_FILE
    selected = read_split(split_file, pairs, split)
    if not selected:
        raise DataError(split_file, f"the split lists no '{split}' images (evaluate with split 'all')")
    return selected
