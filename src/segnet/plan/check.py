"""``segnet check DIR``: scan a dataset folder, report every problem at once, and summarise the data.

:func:`segnet.data.find_pairs` and the readers stop at the first bad file, which is right for
training but slow for cleaning up a folder one error at a time. The check decodes every file with
the same readers (so it refuses exactly what training would refuse), keeps going past each
:class:`~segnet.core.errors.DataError`, and adds what the readers cannot see one file at a time: missing
partners (with the name probably meant), duplicate stems, size and EXIF orientation mismatches
between an image and its mask.

Conversions the readers make silently (alpha dropped, grey repeated, 16-bit scaled by its real depth) are reported as
notes, not problems: the data trains, but the user may not know what segnet did with it.
"""

from __future__ import annotations

import difflib
import os
import re
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from segnet.core.errors import DataError
from segnet.data.pairs import (
    IMAGE_EXTENSIONS,
    Pair,
    _open,
    declared_bits,
    exif_orientation,
    find_mask_folder,
    image_files,
    image_to_mask,
    image_to_rgb,
    pixel_range,
)
from segnet.plan.config import CLASS_WEIGHTING_NAMES, DEFAULT_CLASS_WEIGHTING
from segnet.plan.weights import class_weights, median_frequency_weights

# What read_image does with each non-RGB mode, for the notes (16-bit and float modes are described by bit depth).
_IMAGE_MODE_NOTES = {
    "L": "grayscale image: repeated to three channels",
    "LA": "grayscale image with alpha: alpha dropped, grey repeated to three channels",
    "RGBA": "RGBA image: alpha dropped",
    "P": "palette image: converted to RGB",
    "PA": "palette image with alpha: converted to RGB, alpha dropped",
    "1": "1-bit image: converted to 8-bit RGB",
    "CMYK": "CMYK image: converted to RGB",
    "YCbCr": "YCbCr image: converted to RGB",
}
_MASK_MODE_NOTES = {
    "LA": "mask with alpha: alpha ignored",
    "PA": "mask with alpha: alpha ignored",
    "RGBA": "mask with alpha: alpha ignored",
}
_ORIENTATIONS = {
    2: "mirrored",
    3: "rotated 180°",
    4: "flipped upside down",
    5: "mirrored and rotated 90°",
    6: "rotated 90°",
    7: "mirrored and rotated 270°",
    8: "rotated 270°",
}


@dataclass
class Problem:
    """A file and what is wrong with it (among notes: what segnet does about it)."""

    path: Path
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass
class CheckResult:
    """Everything :func:`check_dataset` found.

    ``problems`` stop training; ``notes`` are conversions segnet handles. ``good_pairs`` are the
    pairs with no problem in either file (what ``train --skip-bad`` trains on); the class statistics
    in ``summary`` are computed over them. ``decoded`` holds their (uint8 image, uint8 mask) by
    stem, as :func:`segnet.data.load_pair` reads them, when the check was asked to keep them.
    """

    problems: list[Problem]
    notes: list[Problem]
    summary: dict
    good_pairs: list[Pair]
    decoded: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


@dataclass
class _FileReport:
    """What decoding one file found."""

    path: Path
    problem: str | None = None
    notes: list[str] = field(default_factory=list)
    mode: str | None = None
    bit_depth: int | None = None
    size: tuple[int, int] | None = None  # (width, height), upright
    orientation: int = 1
    class_pixels: np.ndarray | None = None  # masks only
    array: np.ndarray | None = None  # the decoded pixels, when kept


def _bit_depth(mode: str) -> int:
    if mode == "1":
        return 1
    if mode.startswith("I;16"):
        return 16
    if mode in ("I", "F"):
        return 32
    return 8


def _inspect_image(path: Path, keep: bool) -> _FileReport:
    try:
        image = _open(path)
        report = _FileReport(
            path, mode=image.mode, bit_depth=_bit_depth(image.mode), orientation=exif_orientation(image)
        )
        array = image_to_rgb(image, path)
        scaled_from = pixel_range(np.asarray(image), declared_bits(image)) if report.bit_depth > 8 else None
    except DataError as error:
        return _FileReport(path, problem=error.problem)
    report.size = (array.shape[1], array.shape[0])
    report.array = array if keep else None
    if report.mode in _IMAGE_MODE_NOTES:
        report.notes.append(_IMAGE_MODE_NOTES[report.mode])
    elif scaled_from is not None:
        kind = "float" if report.mode == "F" else "integer"
        low, high = scaled_from
        report.notes.append(f"{report.bit_depth}-bit {kind} image: {low:g}-{high:g} scaled to 8 bit")
    return report


def _inspect_mask(path: Path, num_classes: int, palette: Mapping[int, Sequence[int]] | None, keep: bool) -> _FileReport:
    try:
        image = _open(path)
        report = _FileReport(
            path, mode=image.mode, bit_depth=_bit_depth(image.mode), orientation=exif_orientation(image)
        )
        mask = image_to_mask(image, path, num_classes, palette)
    except DataError as error:
        return _FileReport(path, problem=error.problem)
    report.size = (mask.shape[1], mask.shape[0])
    report.class_pixels = np.bincount(mask.ravel(), minlength=num_classes)
    report.array = mask if keep else None
    if palette is None and report.mode in _MASK_MODE_NOTES:
        report.notes.append(_MASK_MODE_NOTES[report.mode])
    return report


def _scan_folder(folder: Path) -> tuple[dict[str, list[Path]], list[Path]]:
    """The folder's image files grouped by stem, and the other (ignored) entries."""
    files = image_files(folder)
    by_stem: dict[str, list[Path]] = defaultdict(list)
    for path in files:
        by_stem[path.stem].append(path)
    listed = set(files)
    ignored = [path for path in sorted(folder.iterdir()) if not path.name.startswith(".") and path not in listed]
    return dict(by_stem), ignored


def _numbers(stem: str) -> list[int]:
    return [int(digits) for digits in re.findall(r"\d+", stem)]


def _near_miss(stem: str, candidates: Sequence[str]) -> str | None:
    """The candidate stem most likely meant for ``stem``, or None.

    A candidate must hold the same numbers (``001`` never suggests ``002``) and, ignoring case,
    contain ``stem`` or be contained in it (``001`` / ``001_mask``), or be spelled alike.
    """
    wanted, numbers = stem.casefold(), _numbers(stem)
    best, best_ratio = None, 0.0
    for candidate in candidates:
        if _numbers(candidate) != numbers:
            continue
        other = candidate.casefold()
        ratio = difflib.SequenceMatcher(None, wanted, other).ratio()
        if (wanted in other or other in wanted or ratio >= 0.6) and ratio > best_ratio:
            best, best_ratio = candidate, ratio
    return best


def _missing_partner_problems(
    kind: str,
    files: Mapping[str, list[Path]],
    partner_kind: str,
    partner_folder: Path,
    partner_files: Mapping[str, list[Path]],
    partner_ignored: Sequence[Path],
) -> list[Problem]:
    """One problem per file of ``kind`` whose stem has no file in the partner folder, with a hint."""
    unmatched_partners = [stem for stem in partner_files if stem not in files]
    ignored_by_stem = {path.stem: path for path in partner_ignored}
    problems = []
    for stem in sorted(set(files) - set(partner_files)):
        message = f"{kind} has no {partner_kind} (no {partner_folder.name}/{stem}.*)"
        if stem in ignored_by_stem:
            message += f"; {partner_folder.name}/{ignored_by_stem[stem].name} has a file type segnet does not read ({', '.join(IMAGE_EXTENSIONS)})"
        elif (near := _near_miss(stem, unmatched_partners)) is not None:
            message += f"; did you mean {partner_folder.name}/{partner_files[near][0].name}?"
        problems.extend(Problem(path, message) for path in files[stem])
    return problems


def _pair_problem(image: _FileReport, mask: _FileReport) -> Problem | None:
    """What is wrong between a decodable image and its decodable mask, if anything."""
    if image.orientation != mask.orientation:
        stated = (
            f"EXIF orientation {image.orientation} ({_ORIENTATIONS[image.orientation]})"
            if image.orientation != 1
            else "no EXIF orientation"
        )
        partner = (
            f"orientation {mask.orientation} ({_ORIENTATIONS[mask.orientation]})" if mask.orientation != 1 else "none"
        )
        return Problem(
            image.path,
            f"image has {stated} but its mask {mask.path.name} has {partner}: reading turns each upright as viewers show it, "
            "so they would no longer line up; save both upright, without the tag",
        )
    if image.size != mask.size:
        return Problem(
            mask.path,
            f"mask size {mask.size[0]}x{mask.size[1]} differs from its image's {image.size[0]}x{image.size[1]} ({image.path.name})",
        )
    return None


def _min_median_max(values: Sequence[int]) -> dict[str, float]:
    return {"min": int(min(values)), "median": float(np.median(values)), "max": int(max(values))}


def _summarise(
    image_reports: Sequence[_FileReport],
    mask_reports: Sequence[_FileReport],
    num_pairs: int,
    good_masks: Sequence[_FileReport],
    class_names: Sequence[str],
) -> dict:
    readable_images = [report for report in image_reports if report.problem is None]
    readable_masks = [report for report in mask_reports if report.problem is None]
    class_pixels = np.zeros(len(class_names), dtype=np.int64)
    presence_pixels = np.zeros(len(class_names), dtype=np.int64)  # pixels of the images containing each class
    images_per_class = np.zeros(len(class_names), dtype=np.int64)
    for report in good_masks:
        present = report.class_pixels > 0
        class_pixels += report.class_pixels
        presence_pixels[present] += report.class_pixels.sum()
        images_per_class += present
    total = max(int(class_pixels.sum()), 1)
    presence = np.where(presence_pixels > 0, class_pixels / np.maximum(presence_pixels, 1), 0.0)
    weights = median_frequency_weights(presence.tolist())
    return {
        "images": len(image_reports),
        "masks": len(mask_reports),
        "pairs": num_pairs,
        "good_pairs": len(good_masks),
        "width": _min_median_max([r.size[0] for r in readable_images]) if readable_images else None,
        "height": _min_median_max([r.size[1] for r in readable_images]) if readable_images else None,
        "image_modes": dict(Counter(r.mode for r in readable_images)),
        "image_bit_depths": dict(Counter(r.bit_depth for r in readable_images)),
        "mask_modes": dict(Counter(r.mode for r in readable_masks)),
        "mask_bit_depths": dict(Counter(r.bit_depth for r in readable_masks)),
        "class_pixel_frequencies": {name: float(class_pixels[c] / total) for c, name in enumerate(class_names)},
        "images_per_class": {name: int(images_per_class[c]) for c, name in enumerate(class_names)},
        "class_presence_frequencies": {name: float(presence[c]) for c, name in enumerate(class_names)},
        "median_frequency_weights": dict(zip(class_names, weights, strict=True)),
    }


def _inspect_files(
    image_paths: Sequence[Path],
    mask_paths: Sequence[Path],
    num_classes: int,
    palette: Mapping[int, Sequence[int]] | None,
    keep_decoded: bool,
    progress: bool,
) -> dict:
    """Decode and inspect every file in a thread pool (Pillow releases the GIL): report by path."""
    with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
        futures = [pool.submit(_inspect_image, path, keep_decoded) for path in image_paths]
        futures += [pool.submit(_inspect_mask, path, num_classes, palette, keep_decoded) for path in mask_paths]
        for _ in tqdm(as_completed(futures), total=len(futures), desc="check", unit="file", disable=not progress):
            pass
    return {report.path: report for report in (future.result() for future in futures)}


def _shared_stem_problems(files: Mapping[str, Sequence[Path]]) -> list[Problem]:
    """A problem for each stem that more than one file of a folder shares (pairs are made by stem)."""
    return [
        Problem(
            paths[0],
            f"{len(paths)} files share the stem '{stem}' ({', '.join(path.name for path in paths)}): "
            "images and masks are paired by name, keep one",
        )
        for stem, paths in files.items()
        if len(paths) > 1
    ]


def _good_pairs(
    stems: Sequence[str],
    images: Mapping[str, Sequence[Path]],
    masks: Mapping[str, Sequence[Path]],
    reports: Mapping[Path, _FileReport],
    keep_decoded: bool,
    problems: list[Problem],
    notes: list[Problem],
) -> tuple[list[Pair], list[_FileReport], dict]:
    """The pairs whose image and mask both read and fit each other (their pixels with ``keep_decoded``);
    the problems and notes of the others are appended to ``problems`` and ``notes``."""
    good_pairs, good_masks, decoded = [], [], {}
    for stem in stems:
        if len(images[stem]) > 1 or len(masks[stem]) > 1:
            continue
        image, mask = reports[images[stem][0]], reports[masks[stem][0]]
        if image.problem is not None or mask.problem is not None:
            continue
        problem = _pair_problem(image, mask)
        if problem is not None:
            problems.append(problem)
            continue
        if image.orientation != 1:
            orientation = f"image and mask both have EXIF orientation {image.orientation}: both turned upright"
            notes.append(Problem(image.path, orientation))
        good_pairs.append(Pair(stem, image.path, mask.path))
        good_masks.append(mask)
        if keep_decoded:
            decoded[stem] = (image.array, mask.array)
    return good_pairs, good_masks, decoded


def check_dataset(
    root: str | Path,
    class_names: Sequence[str],
    palette: Mapping[int, Sequence[int]] | None = None,
    progress: bool = True,
    keep_decoded: bool = False,
) -> CheckResult:
    """Scan ``root/images`` and ``root/masks`` (or ``flattened_masks``) and report every problem.

    Each file is decoded with segnet's own readers in a thread pool (Pillow releases the GIL while
    decoding). ``palette`` (class index -> RGB) reads colour masks, as the ``mask_palette`` option
    does in training. With ``keep_decoded`` the good pairs' pixels are kept (``CheckResult.decoded``),
    so training decodes no file twice. Raises DataError only when ``root`` is not a folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(root, "dataset folder not found")
    image_folder = root / "images"
    folder_problems = []
    if not image_folder.is_dir():
        folder_problems.append(Problem(root, "no images/ folder (expected DIR/images/ and DIR/masks/)"))
    try:
        mask_folder = find_mask_folder(root)
    except DataError as error:
        folder_problems.append(Problem(error.path, error.problem))
    if folder_problems:
        return CheckResult(folder_problems, [], _summarise([], [], 0, [], class_names), [])

    images, ignored_images = _scan_folder(image_folder)
    masks, ignored_masks = _scan_folder(mask_folder)
    problems: list[Problem] = []
    notes = [Problem(path, "ignored: not an image file segnet reads") for path in ignored_images + ignored_masks]
    if not images:
        problems.append(Problem(image_folder, f"no images found ({', '.join(IMAGE_EXTENSIONS)})"))
    problems += _shared_stem_problems(images) + _shared_stem_problems(masks)
    problems += _missing_partner_problems("image", images, "mask", mask_folder, masks, ignored_masks)
    problems += _missing_partner_problems("mask", masks, "image", image_folder, images, ignored_images)

    image_paths = [path for paths in images.values() for path in paths]
    mask_paths = [path for paths in masks.values() for path in paths]
    reports = _inspect_files(image_paths, mask_paths, len(class_names), palette, keep_decoded, progress)

    for report in reports.values():
        if report.problem is not None:
            problems.append(Problem(report.path, report.problem))
        notes += [Problem(report.path, note) for note in report.notes]

    paired_stems = sorted(stem for stem in images if stem in masks)
    good_pairs, good_masks, decoded = _good_pairs(paired_stems, images, masks, reports, keep_decoded, problems, notes)
    problems.sort(key=lambda problem: str(problem.path))
    notes.sort(key=lambda note: str(note.path))
    summary = _summarise(
        [reports[path] for path in image_paths],
        [reports[path] for path in mask_paths],
        len(paired_stems),
        good_masks,
        class_names,
    )
    return CheckResult(problems, notes, summary, good_pairs, decoded)


PROBLEMS_LISTED = 10
"""How many problems :func:`format_problems` lists before pointing to ``segnet check``."""


def format_problems(problems: Sequence[Problem], root: str | Path, limit: int = PROBLEMS_LISTED) -> str:
    """The first ``limit`` problems, one indented line each, then how many more and how to see them."""
    lines = [f"  {problem}" for problem in problems[:limit]]
    if len(problems) > limit:
        lines.append(f"  and {len(problems) - limit} more; run segnet check {root} to list them all")
    return "\n".join(lines)


def format_check_report(result: CheckResult, weighting: str = DEFAULT_CLASS_WEIGHTING) -> str:
    """The check's findings for the terminal: every problem, notes grouped by kind, then the summary.

    The class weights shown are those training would use with ``weighting`` (``--class-weights``).
    """
    summary = result.summary
    lines = [
        f"{summary['images']} images, {summary['masks']} masks, {summary['pairs']} pairs by name, "
        f"{summary['good_pairs']} without problems"
    ]
    if result.problems:
        lines += ["", f"Problems ({len(result.problems)}):"]
        lines += [f"  {problem}" for problem in result.problems]
    if result.notes:
        by_message: dict[str, list[Path]] = defaultdict(list)
        for note in result.notes:
            by_message[note.message].append(note.path)
        lines += ["", "Notes (handled, no action needed):"]
        for message, paths in by_message.items():
            shown = ", ".join(str(path) for path in paths[:3]) + (
                f" and {len(paths) - 3} more" if len(paths) > 3 else ""
            )
            lines.append(f"  {message}: {shown}")
    if summary["width"] is not None:
        width, height = summary["width"], summary["height"]
        lines += [
            "",
            f"Image sizes (WxH): min {width['min']}x{height['min']}, median {width['median']:g}x{height['median']:g}, max {width['max']}x{height['max']}",
            "Image modes: "
            + _format_counts(summary["image_modes"])
            + "; bit depths: "
            + _format_counts(summary["image_bit_depths"]),
            "Mask modes: "
            + _format_counts(summary["mask_modes"])
            + "; bit depths: "
            + _format_counts(summary["mask_bit_depths"]),
        ]
    if summary["good_pairs"]:
        lines += _class_table(summary, weighting)
    lines.append("")
    if result.problems:
        count = len(result.problems)
        lines.append(
            f"{count} problem{'s' if count > 1 else ''}: fix them, or train with --skip-bad to leave those pairs out"
        )
    else:
        lines.append("No problems found.")
    return "\n".join(lines)


def _class_table(summary: Mapping, weighting: str) -> list[str]:
    """Pixels, images and the loss weight per class, the weighting named as in ``--class-weights``."""
    names = list(summary["class_pixel_frequencies"])
    weights = class_weights(list(summary["class_presence_frequencies"].values()), weighting) or [1.0] * len(names)
    name_width = max(len(name) for name in names)
    lines = [
        "",
        f"  {'class':<{name_width}}  pixels   images  weight ({weighting}: {CLASS_WEIGHTING_NAMES[weighting]})",
    ]
    for name, weight in zip(names, weights, strict=True):
        frequency, images = summary["class_pixel_frequencies"][name], summary["images_per_class"][name]
        lines.append(f"  {name:<{name_width}}  {frequency:6.2%}  {images:7d}  {weight:.3f}")
    return lines


def _format_counts(counts: Mapping) -> str:
    return ", ".join(f"{key} x{count}" for key, count in sorted(counts.items(), key=lambda item: -item[1]))
