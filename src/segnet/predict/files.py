"""Predict files, folders and glob patterns; write masks, overlays, uncertainty maps, object labels, counts.csv and objects.csv."""

from __future__ import annotations

import contextlib
import glob
import math
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from segnet.core.errors import DataError, OutOfMemory, SegnetError
from segnet.core.outputs import (
    clear_earlier_results,
    output_lock,
    refuse_overwriting,
    refuse_package_folder,
    write_atomically,
)
from segnet.core.runfiles import OBJECTS_SUFFIX, PICTURES
from segnet.data.classes import MIN_AREA, ClassRoles
from segnet.data.pairs import IMAGE_EXTENSIONS, class_mask, read_image
from segnet.evaluate.columns import OBJECT_COLUMNS, counts_columns
from segnet.evaluate.counting import coverage
from segnet.evaluate.measure import (
    ObjectLabels,
    ObjectMeasurement,
    find_objects,
    measure_objects,
    read_object_labels,
    tiff_pixel_size,
    write_object_labels,
)
from segnet.model.predictor import Ensemble, Predictor
from segnet.predict.pictures import UNSURE_ENTROPY, _uncertainty_overlay, annotated_overlay, predictive_entropy
from segnet.predict.tables import SINGLE_PROCESS, ResultTables, Shard

# Results waiting to be written; more would only hold (C, H, W) arrays in memory.
_MAX_PENDING_WRITES = 2


# What predict writes per input STEM: STEM_<picture>.png for each picture (the last two with
# uncertainty only), then STEM_objects.tif.
COUNTS_FILE, OBJECTS_FILE = "counts.csv", "objects.csv"


def is_own_output(path: Path) -> bool:
    """Whether ``path`` is named like a file ``segnet predict`` writes (``*_mask.png``, ``*_objects.tif``, ...)."""
    name = path.name.lower()
    return name.endswith(OBJECTS_SUFFIX) or any(name.endswith(f"_{picture}.png") for picture in PICTURES)


@dataclass
class PredictionSummary:
    """What :func:`predict_paths` did: files this process wrote; images done and failed (over all processes)."""

    written: list[Path] = field(default_factory=list)
    images: int = 0  # put in the tables (segmented now, or rebuilt from an earlier run's outputs)
    skipped: int = 0  # of those, finished by an earlier run (``skip_existing``)
    failed: list[str] = field(default_factory=list)


def _is_image_file(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS


def iter_inputs(inputs: Sequence[str], log: Callable[[str], None] | None = None) -> Iterator[Path]:
    """Yield the image files named by files, folders and glob patterns, one at a time.

    A file is taken as it is; a folder gives its images (``.png``, ``.jpg``, ``.jpeg``, ``.tif``,
    ``.tiff``; not recursive), sorted by name; anything else is a glob pattern (``**`` recurses)
    giving its matching images, sorted. A file reached twice is given once. In folders and
    patterns, files named like this tool's own outputs (:func:`is_own_output`) are skipped, with a
    note to ``log``, so predicting into the input folder does not segment its own masks.

    Raises:
        DataError: an input names no existing file or folder, or matches no image.
    """
    seen: set[Path] = set()
    for entry in inputs:
        path = Path(entry)
        if path.is_file():
            matches = [path]
        elif path.is_dir():
            matches = sorted(p for p in path.iterdir() if _is_image_file(p))
            if not matches:
                raise DataError(path, f"folder holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        else:
            matches = sorted(p for p in map(Path, glob.glob(entry, recursive=True)) if _is_image_file(p))
            if not matches:
                problem = "no images match this pattern" if glob.has_magic(entry) else "no such file or folder"
                raise DataError(path, problem)
        if not path.is_file():
            outputs = [p for p in matches if is_own_output(p)]
            if outputs and log is not None:
                log(
                    f"{path}: skipped {len(outputs)} file(s) named like segnet predict outputs (*_mask.png, *_overlay.png, *{OBJECTS_SUFFIX}, ...)"
                )
            matches = [p for p in matches if not is_own_output(p)]
        for match in matches:
            if match not in seen:
                seen.add(match)
                yield match


def _check_inputs(inputs: Sequence[str], out_dir: Path, log: Callable[[str], None] | None) -> list[Path]:
    """The inputs (a pass over their names, no image read), refusing two with one stem and an
    input that an output would replace (``a.png a_mask.png`` predicted into their own folder).

    Outputs are named by stem, so two inputs with one stem would overwrite each other.
    """
    seen: dict[str, Path] = {}
    for path in iter_inputs(inputs, log):
        if path.stem in seen:
            raise DataError(
                path, f"has the same name stem as {seen[path.stem]}; their outputs would overwrite each other"
            )
        seen[path.stem] = path
    outputs = [
        output
        for stem in seen
        for output in _picture_paths(out_dir, stem, PICTURES) + [out_dir / f"{stem}{OBJECTS_SUFFIX}"]
    ]
    refuse_overwriting(outputs, seen.values())
    return list(seen.values())


def _write_outputs(
    path: Path,
    image: np.ndarray,
    proba: np.ndarray,
    out_dir: Path,
    predictor: Predictor | Ensemble,
    min_area: int,
    pixel_size: float | None,
) -> tuple[list[Path], list[Any], list[list[str]]]:
    """Write one image's pictures and label image; return the written paths, its ``counts.csv`` row and its ``objects.csv`` rows."""
    mask = class_mask(proba)  # 8 bit, or 16 beyond 256 classes
    try:
        objects = find_objects(mask, predictor.roles, min_area=min_area)
    except ValueError as error:
        raise DataError(path, str(error)) from error
    measurements = measure_objects(objects, image, predictor.roles)
    written = []
    for target, picture in zip(
        _picture_paths(out_dir, path.stem, PICTURES), _pictures(image, mask, proba, objects, measurements, predictor)
    ):
        written.append(
            write_atomically(
                target, lambda temporary, picture=picture: picture.save(temporary, format="PNG"), "picture"
            )
        )
    labels_path = out_dir / f"{path.stem}{OBJECTS_SUFFIX}"
    write_object_labels(labels_path, objects, predictor.class_names)  # last: its presence marks a finished image
    written.append(labels_path)
    counts_row, object_rows = _table_rows(
        path, mask, objects, measurements, predictor.class_names, predictor.roles, pixel_size
    )
    return written, counts_row, object_rows


def _pictures(
    image: np.ndarray,
    mask: np.ndarray,
    proba: np.ndarray,
    objects: ObjectLabels,
    measurements: Sequence[ObjectMeasurement],
    predictor: Predictor | Ensemble,
) -> list[Image.Image]:
    """The :data:`PICTURES` of one image: its mask and annotated overlay, and with uncertainty the entropy and its heatmap."""
    class_names, counted = predictor.class_names, predictor.roles.counted
    scaled = None
    if predictor.samples_uncertainty:
        # 65535 is the largest possible entropy, log(C): the same grey means the same
        # uncertainty in every image.
        max_entropy = math.log(len(class_names)) if len(class_names) > 1 else 1.0
        scaled = np.clip(predictive_entropy(proba) / max_entropy, 0.0, 1.0)
    unsure = None if scaled is None else scaled >= UNSURE_ENTROPY
    annotated = annotated_overlay(image, mask, objects, measurements, class_names, counted, unsure)
    pictures = [Image.fromarray(mask), Image.fromarray(annotated, mode="RGB")]  # 8 or 16 bit
    if scaled is not None:
        pictures.append(Image.fromarray(np.rint(scaled * 65535).astype(np.uint16)))
        pictures.append(Image.fromarray(_uncertainty_overlay(image, scaled), mode="RGB"))
    return pictures


def _table_rows(
    path: Path,
    mask: np.ndarray,
    objects: ObjectLabels,
    measurements: Sequence[ObjectMeasurement],
    class_names: Sequence[str],
    roles: ClassRoles,
    pixel_size: float | None,
) -> tuple[list[Any], list[list[str]]]:
    """One image's ``counts.csv`` row and ``objects.csv`` rows, both from the same ``objects``."""
    counts = objects.counts(roles.counted)
    fractions = coverage(mask, roles.counted)
    row: list[Any] = [str(path)]
    for class_id in roles.counted:
        row += [counts[class_id], f"{fractions[class_id]:.6f}"]
    object_rows = [measurement.row(str(path), class_names, pixel_size) for measurement in measurements]
    return row, object_rows


def _read_ahead(
    paths: Iterator[Path], reader: ThreadPoolExecutor, pixel_size: float | None
) -> Iterator[tuple[Path, np.ndarray | DataError, float | None]]:
    """Yield decoded images and their pixel sizes (``pixel_size``, else from the TIFF's tags) in
    order, or the error reading one, while the next is read in the background."""

    def read(path: Path) -> tuple[Path, np.ndarray | DataError, float | None]:
        try:
            return path, read_image(path), pixel_size if pixel_size is not None else tiff_pixel_size(path)
        except DataError as error:
            return path, error, None

    upcoming: Future | None = None
    for path in paths:
        following = reader.submit(read, path)
        if upcoming is not None:
            yield upcoming.result()
        upcoming = following
    if upcoming is not None:
        yield upcoming.result()


def predict_paths(
    predictor: Predictor | Ensemble,
    inputs: Sequence[str],
    out_dir: str | Path,
    *,
    min_area: int = MIN_AREA,
    pixel_size: float | None = None,
    skip_existing: bool = False,
    overwrite: bool = False,
    shard: Shard = SINGLE_PROCESS,
    progress: bool = True,
    log: Callable[[str], None] | None = print,
) -> PredictionSummary:
    """Segment every image named by ``inputs`` (see :func:`iter_inputs`); say what was written.

    For each input ``STEM.ext`` this writes into ``out_dir``:

    * ``STEM_mask.png``: class index per pixel (8-bit, one channel, the input's size);
    * ``STEM_overlay.png``: the image with each class blended in its colour, each counted object
      outlined and numbered with its ``object_id`` in ``objects.csv``, and a legend of the counts
      (:func:`~segnet.predict.pictures.annotated_overlay`; with uncertainty, the unsure region outlined);
    * with Monte Carlo dropout or an :class:`Ensemble`, ``STEM_uncertainty.png``: predictive entropy as a 16-bit PNG where
      65535 is ``log(C)``, the largest possible entropy; and ``STEM_uncertainty_overlay.png``:
      that entropy as a heatmap over the image;
    * ``STEM_objects.tif``: the counted objects as a 16-bit instance label image (each object its
      own id, background 0; see :mod:`segnet.evaluate.measure`), written last.

    ``counts.csv`` gets one row per image: ``image`` (the path, as in ``objects.csv``), then per counted class
    (all but the background of ``predictor.roles``) ``<name>_count`` (objects of at least ``min_area`` pixels in
    the mask after :func:`segnet.data.cleaning.clean_prediction`) and ``<name>_area_fraction`` (of the mask
    as written). ``objects.csv`` gets one row per object of those counts (:data:`OBJECT_COLUMNS`), in
    micrometres too where ``pixel_size`` (um per pixel) is given or the input TIFF's resolution tags state it.
    Inputs are streamed: images are read one ahead and results written in background threads while the model
    runs; a progress bar counts images (and windows).

    An ``out_dir`` that holds another run's outputs is refused, unless ``skip_existing`` (continue it) or
    ``overwrite`` (its outputs are removed first, so the tables describe the files beside them); one run at a
    time writes a folder (:func:`segnet.core.outputs.output_lock`); no output may be one of the inputs. Every
    file is written by replacing, never through a link.

    With ``skip_existing``, an image whose outputs are all there (its label image is written last, atomically)
    is not segmented again: its rows are rebuilt from its mask and label image (refused if written by a model of
    other classes). Under several processes (``shard``) each takes its own inputs, the tables merged in input
    order; only rank 0 shows progress and notes.

    An input that cannot be read or segmented is reported to ``log`` in one line and left out; the others go
    on (:attr:`PredictionSummary.failed` lists them, over all processes on rank 0). Running out of memory stops.

    Raises:
        DataError: an input names nothing, two inputs share a stem, or an output cannot be written (the message
            names the file); ``OutputError``: ``out_dir`` holds another run's outputs, or another run writes there.
    """
    main_log = log if shard.rank == 0 else None
    out_dir = Path(out_dir)
    refuse_package_folder(out_dir)
    paths = _check_inputs(inputs, out_dir, main_log)
    # Rank 0 holds the folder for every process of this run; the others wait until it is claimed.
    with output_lock(out_dir) if shard.rank == 0 else contextlib.nullcontext():
        if shard.rank == 0 and not skip_existing:
            _clear_for_a_new_run(out_dir, paths, overwrite)
        shard.gather(None)
        tables = _open_tables(predictor, out_dir, shard)
        summary = PredictionSummary()
        own_inputs = ((position, path) for position, path in enumerate(paths) if shard.takes(position))
        _segment_inputs(
            predictor,
            own_inputs,
            out_dir,
            tables,
            summary,
            share=shard.share_of(len(paths)),
            min_area=min_area,
            pixel_size=pixel_size,
            skip_existing=skip_existing,
            progress=progress,
            show_bar=shard.rank == 0,
            log=log,
        )
        _combine_processes(summary, tables, shard)
    return summary


def _clear_for_a_new_run(out_dir: Path, inputs: Sequence[Path], overwrite: bool) -> None:
    """Refuse, or with ``overwrite`` remove, another run's outputs in ``out_dir`` (an input named like
    an output is no earlier result)."""
    named = {path.resolve() for path in inputs}
    earlier = [path for path in earlier_outputs(out_dir) if path.resolve() not in named]
    clear_earlier_results(out_dir, earlier, overwrite=overwrite)


def earlier_outputs(out_dir: Path) -> list[Path]:
    """The files in ``out_dir`` that a ``segnet predict`` run wrote (its tables, pictures and label images), sorted."""
    if not out_dir.is_dir():
        return []
    return sorted(path for path in out_dir.iterdir() if path.name in (COUNTS_FILE, OBJECTS_FILE) or is_own_output(path))


def _segment_inputs(
    predictor: Predictor | Ensemble,
    own_inputs: Iterator[tuple[int, Path]],
    out_dir: Path,
    tables: ResultTables,
    summary: PredictionSummary,
    *,
    share: int,
    min_area: int,
    pixel_size: float | None,
    skip_existing: bool,
    progress: bool,
    show_bar: bool,
    log: Callable[[str], None] | None,
) -> None:
    """Segment this process's ``(position, path)`` inputs, streaming: read one ahead, write in the background.

    Adds each image's rows to ``tables`` in input order and counts it in ``summary``; closes the tables.
    """
    pictures = PICTURES if predictor.samples_uncertainty else PICTURES[:2]
    pending: deque[tuple[int, Future]] = deque()

    def finish_oldest() -> None:
        position, future = pending.popleft()
        paths_written, row, object_rows = future.result()
        tables.add(position, [[row], object_rows])
        summary.written.extend(paths_written)
        summary.images += 1

    def fail(message: str) -> None:
        summary.failed.append(message)
        if log is not None:
            log(f"skipped {message}")

    positions: deque[int] = deque()
    with (
        ThreadPoolExecutor(1, thread_name_prefix="segnet-read") as reader,
        ThreadPoolExecutor(1, thread_name_prefix="segnet-write") as writer,
        tqdm(total=share, unit="image", desc="predict", disable=not progress or not show_bar) as bar,
    ):

        def show_windows(done: int, total: int) -> None:
            bar.set_postfix_str(f"tiles {done}/{total}" if total > 1 else "")

        def remember(items: Iterator[tuple[int, Path]]) -> Iterator[Path]:
            for position, path in items:
                positions.append(position)
                yield path

        try:
            for path, image, image_pixel_size in _read_ahead(remember(own_inputs), reader, pixel_size):
                position = positions.popleft()
                bar.update(1)
                if isinstance(image, DataError):
                    fail(str(image))
                    continue
                if skip_existing and _outputs_complete(out_dir, path.stem, pictures):
                    summary.skipped += 1
                    job = writer.submit(
                        _rebuild_rows, path, image, out_dir, predictor.class_names, predictor.roles, image_pixel_size
                    )
                else:
                    try:
                        proba = predictor.predict_proba(image, progress=show_windows if progress else None)
                    except OutOfMemory as error:  # the next images would run out too: stop, naming the setting
                        raise OutOfMemory(f"{path}: {error}") from error
                    except SegnetError as error:
                        fail(f"{path}: {error}")
                        continue
                    job = writer.submit(
                        _write_outputs, path, image, proba, out_dir, predictor, min_area, image_pixel_size
                    )
                pending.append((position, job))
                while len(pending) > _MAX_PENDING_WRITES:
                    finish_oldest()
            while pending:
                finish_oldest()
        finally:
            tables.close()


def _open_tables(predictor: Predictor | Ensemble, out_dir: Path, shard: Shard) -> ResultTables:
    """Create ``out_dir`` and open counts.csv (a count and area column per counted class) and objects.csv."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataError(out_dir, f"cannot create the output folder ({error.strerror or error})") from error
    counts_header = counts_columns([predictor.class_names[c] for c in predictor.roles.counted])
    return ResultTables([out_dir / COUNTS_FILE, out_dir / OBJECTS_FILE], [counts_header, OBJECT_COLUMNS], shard)


def _combine_processes(summary: PredictionSummary, tables: ResultTables, shard: Shard) -> None:
    """Merge the tables over the processes and make ``summary`` count every process's images."""
    everyone = shard.gather((summary.images, summary.skipped, summary.failed))
    tables.merge()
    summary.images = sum(images for images, _, _ in everyone)
    summary.skipped = sum(skipped for _, skipped, _ in everyone)
    summary.failed = [message for _, _, failed in everyone for message in failed]
    summary.written += tables.paths


def _picture_paths(out_dir: Path, stem: str, pictures: Sequence[str]) -> list[Path]:
    return [out_dir / f"{stem}_{picture}.png" for picture in pictures]


def _outputs_complete(out_dir: Path, stem: str, pictures: Sequence[str]) -> bool:
    """Whether an earlier run wrote all of this image's outputs (the label image comes last)."""
    paths = _picture_paths(out_dir, stem, pictures) + [out_dir / f"{stem}{OBJECTS_SUFFIX}"]
    return all(path.is_file() for path in paths)


def _rebuild_rows(
    path: Path,
    image: np.ndarray,
    out_dir: Path,
    class_names: Sequence[str],
    roles: ClassRoles,
    pixel_size: float | None,
) -> tuple[list[Path], list[Any], list[list[str]]]:
    """The table rows of an image finished by an earlier run, from its mask and label image."""
    (mask_path,) = _picture_paths(out_dir, path.stem, PICTURES[:1])
    try:
        with Image.open(mask_path) as picture:
            mask = np.asarray(picture)
    except OSError as error:
        raise DataError(
            mask_path, f"cannot read this earlier output ({error}); delete it or run without --skip-existing"
        ) from error
    labels_path = out_dir / f"{path.stem}{OBJECTS_SUFFIX}"
    objects = read_object_labels(labels_path)
    if objects.class_names and objects.class_names != tuple(class_names):
        raise DataError(
            labels_path,
            f"written by a model of other classes ({', '.join(objects.class_names)}); predict again with --overwrite",
        )
    if mask.shape != image.shape[:2] or objects.labels.shape != mask.shape:
        raise DataError(
            mask_path, "does not fit its image (another image of that name?); predict again with --overwrite"
        )
    measurements = measure_objects(objects, image, roles)
    counts_row, object_rows = _table_rows(path, mask, objects, measurements, class_names, roles, pixel_size)
    return [], counts_row, object_rows
