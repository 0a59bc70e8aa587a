"""A run folder: refusing to clobber or to resume the wrong run, the files a run starts with, its history.

Everything here runs before the first epoch or between epochs; the loop itself is in ``segnet.train.loop``.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segnet.core import distributed as dist
from segnet.core.errors import CheckpointError, DataError, SegnetError
from segnet.core.outputs import atomic_write, describe_write_error, remove_stale_temporaries, write_text_atomically
from segnet.core.readback import read_bounded_text
from segnet.core.runfiles import (
    BEST_CHECKPOINT,
    CONFIG_FILE,
    CURVES_FILE,
    FINGERPRINT_FILE,
    HISTORY_FIELDS,
    HISTORY_FILE,
    LAST_CHECKPOINT,
    PLAN_FILE,
    RUN_FILES,
    SPLIT_FILE,
)
from segnet.data.fingerprint import fingerprint_differences
from segnet.data.pairs import Pair, load_pair, read_split, split_pairs, write_split
from segnet.model.checkpoint import Checkpoint
from segnet.plan.check import check_dataset, format_problems
from segnet.plan.config import TrainConfig, save_config
from segnet.plan.plan import TrainPlan, make_plan, plan_json, read_plan
from segnet.train.curves import plot_training_curves
from segnet.train.metrics import ValidationMetrics

Decoded = Mapping[str, tuple[np.ndarray, np.ndarray]]
"""Decoded pairs by stem: (uint8 ``H x W x 3`` image, uint8 ``H x W`` mask), as segnet.data.load_pair reads them."""


@dataclass
class EpochStats:
    """What one training epoch did, over all processes."""

    loss: float  # mean training loss per image
    images: int  # training images seen by all processes
    seconds: float  # wall time of the epoch's steps
    data_seconds: float  # of which spent waiting for the data loader (mean over processes)

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    @property
    def data_wait_fraction(self) -> float:
        return self.data_seconds / self.seconds if self.seconds > 0 else 0.0


@dataclass
class EpochResult:
    """One epoch's numbers, as history.csv, the log and TensorBoard report them."""

    epoch: int
    stats: EpochStats
    metrics: ValidationMetrics | None  # None: not validated
    seconds: float
    lr: float
    improved: bool


def history_row(result: EpochResult) -> dict[str, Any]:
    """The epoch's row of history.csv. Validation scores keep 7 decimals, so they can be compared
    with segnet evaluate's to 1e-6."""
    metrics = result.metrics
    return {
        "epoch": result.epoch,
        "train_loss": f"{result.stats.loss:.5f}",
        "val_loss": f"{metrics.loss:.5f}" if metrics else None,
        "val_global_accuracy": f"{metrics.global_accuracy:.7f}" if metrics else None,
        "val_mean_iou": f"{metrics.mean_iou:.7f}" if metrics and metrics.mean_iou is not None else None,
        "lr": f"{result.lr:.3e}",
        "epoch_seconds": f"{result.seconds:.1f}",
    }


@dataclass
class TrainingData:
    """The run's checked image/mask pairs, split, and every one of them decoded (once)."""

    train_pairs: list[Pair]
    val_pairs: list[Pair]
    decoded: Decoded


def check_run_folder(out: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to resume nothing or to clobber an earlier run (checked by every process)."""
    if resume:
        if not (out / LAST_CHECKPOINT).is_file() and (out / BEST_CHECKPOINT).is_file():
            raise SegnetError(
                f"{out}: nothing to resume: {LAST_CHECKPOINT} is gone but {BEST_CHECKPOINT} is kept; start again with --overwrite, "
                f"or train a new run from it with --init {out / BEST_CHECKPOINT} --out NEW_RUN"
            )
        if not (out / LAST_CHECKPOINT).is_file():
            raise SegnetError(
                f"{out}: nothing to resume (no {LAST_CHECKPOINT}: no epoch finished); start again with --overwrite"
            )
    elif not overwrite and (held := [name for name in RUN_FILES if (out / name).exists()]):
        raise SegnetError(
            f"{out}: already holds a run ({', '.join(held)}); pass --resume to continue it or --overwrite to replace it"
        )


def prepare_run_folder(out: Path, resume: bool, overwrite: bool) -> None:
    """Create ``out``; refuse to clobber an earlier run unless resuming or overwriting."""
    check_run_folder(out, resume, overwrite)
    remove_stale_temporaries(out)  # of writes a killed run left unfinished; never read as checkpoints
    if resume:
        return
    try:
        for name in RUN_FILES:
            if (out / name).is_dir():
                shutil.rmtree(out / name)
            else:
                (out / name).unlink(missing_ok=True)
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise SegnetError(
            f"{out}: cannot prepare the run folder ({error.strerror or error}): choose a writable folder"
        ) from error


def start_run(
    config: TrainConfig, run_dir: Path, resume: bool, overwrite: bool, device: torch.device
) -> tuple[Checkpoint | None, TrainConfig]:
    """Prepare the run folder; when resuming, return its last checkpoint, checked to fit ``config``,
    and the config with the resolution, input path and fitted epoch count the run was trained with.

    The checks come before anything is written: a resume with the wrong model or classes changes nothing.
    """
    check_run_folder(run_dir, resume, overwrite)  # on every process, so all stop together
    if dist.is_main_process():
        prepare_run_folder(run_dir, resume, overwrite)
    dist.barrier()
    if not resume:
        return None, config
    path = run_dir / LAST_CHECKPOINT
    resumed = Checkpoint.load(path, map_location=device)
    resumed.check_compatible(config.model, list(config.classes), path, config.downsample)
    if resumed.epoch is None or resumed.optimizer_state is None or resumed.scheduler_state is None:
        raise CheckpointError(f"{path}: holds no training state (epoch, optimiser, schedule) to resume from")
    # An automatic resolution resumes at the run's own, even where today's rule would pick another.
    config = dataclasses.replace(config, downsample=resumed.spec.downsample, space_to_depth=resumed.spec.space_to_depth)
    fitted = resumed.setting("epochs", config.epochs)
    if config.time_budget and resumed.epoch < fitted:
        # An interrupted run goes on with its fitted count, refitted after the next epoch.
        config = dataclasses.replace(config, epochs=fitted)
    return resumed, config


def load_training_data(
    config: TrainConfig,
    run_dir: Path,
    resume: bool,
    log: Callable[..., None],
    split: tuple[Sequence[Pair], Sequence[Pair]] | None = None,
    decoded: Decoded | None = None,
) -> TrainingData:
    """Check the dataset (decoding every file once) and split it, reusing the run's split.json when resuming."""
    if split is not None:
        train_pairs, val_pairs = list(split[0]), list(split[1])
    else:
        pairs, decoded = check_training_data(config, log)
        if resume and (run_dir / SPLIT_FILE).is_file():
            train_pairs, val_pairs = (
                read_split(run_dir / SPLIT_FILE, pairs, "train"),
                read_split(run_dir / SPLIT_FILE, pairs, "val"),
            )
        else:
            train_pairs, val_pairs = split_pairs(pairs, config.val_fraction, config.seed)
    if config.patience and not val_pairs:
        raise SegnetError(
            "--patience stops on the validation mean IoU, but no images are held out for validation (val_fraction is 0)"
        )
    log(f"data: {len(train_pairs)} training and {len(val_pairs)} validation images from {config.data}")
    decoded = dict(decoded or {})
    for pair in train_pairs + val_pairs:  # a caller's split may come without its pixels
        if pair.stem not in decoded:
            decoded[pair.stem] = load_pair(pair, len(config.classes), config.palette_by_index())
    return TrainingData(train_pairs, val_pairs, decoded)


def check_training_data(
    config: TrainConfig, log: Callable[..., None] = print
) -> tuple[list[Pair], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """The dataset's image/mask pairs, sorted by stem, after the checks of ``segnet check``, and
    their decoded pixels by stem (the check decodes every file; training uses what it read).

    Any problem (unreadable file, missing partner, size mismatch, mask values outside the classes,
    colours outside ``mask_palette``) stops with the list of problems, unless ``config.skip_bad``:
    then the pairs with problems are left out and listed through ``log``. Every process runs the
    same check on the same files, so all train on the same pairs, or all stop together.
    """
    result = check_dataset(
        config.data, config.classes, config.palette_by_index(), progress=dist.is_main_process(), keep_decoded=True
    )
    problems, good_pairs, root = result.problems, result.good_pairs, Path(config.data)
    if not problems:
        return good_pairs, result.decoded
    count = f"{len(problems)} problem{'s' if len(problems) > 1 else ''}"
    if not good_pairs:
        if len(problems) == 1:
            raise DataError(problems[0].path, problems[0].message)
        raise SegnetError(f"{root}: {count} and no usable image/mask pair:\n{format_problems(problems, root)}")
    if not config.skip_bad:
        raise SegnetError(
            f"{root}: {count} in the dataset; fix them, or pass --skip-bad to train without those pairs:\n"
            f"{format_problems(problems, root)}"
        )
    log(
        f"--skip-bad: training on the {len(good_pairs)} pairs without problems; left out because of {count}:\n{format_problems(problems, root)}"
    )
    return good_pairs, result.decoded


def plan_run(
    config: TrainConfig, fingerprint: dict, run_dir: Path, resumed: Checkpoint | None, log: Callable[..., None]
) -> tuple[TrainPlan, TrainConfig]:
    """The run's plan (segnet.plan); a resumed run's is its own ``plan.json``. With it, the config as
    config.yaml records it: the plan's crop and resolution filled in, and the data folder made
    absolute (a relative one would name other data from another working folder)."""
    recorded = None
    if resumed is not None:
        check_resumed_data(resumed, fingerprint, config, run_dir, log)  # before config.yaml is rewritten
        if (run_dir / PLAN_FILE).is_file():
            recorded = read_plan(run_dir / PLAN_FILE)
            _check_plan_normalization(recorded, resumed, run_dir / PLAN_FILE)
        else:  # a run from before plan.json: its checkpoint holds the normalisation it trains with
            recorded = dataclasses.replace(make_plan(config, fingerprint), mean=resumed.mean, std=resumed.std)
    plan = make_plan(config, fingerprint, dist.world_size(), recorded)
    resolved = dataclasses.replace(
        config, image_size=plan.image_size, downsample=plan.downsample, data=str(Path(config.data).absolute())
    )
    return plan, resolved


def _check_plan_normalization(plan: TrainPlan, checkpoint: Checkpoint, path: Path) -> None:
    """Refuse a plan.json whose normalisation is not the one the checkpoint was trained with (an
    edited file): resumed on it, the model would see its images shifted and go on training on that."""
    recorded = [*plan.mean, *plan.std]
    trained = [*checkpoint.mean, *checkpoint.std]
    if not all(math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9) for a, b in zip(recorded, trained)):
        raise DataError(
            path,
            f"its normalisation (mean {list(plan.mean)}, std {list(plan.std)}) is not the checkpoint's "
            f"(mean {checkpoint.mean}, std {checkpoint.std}): restore the run's plan.json",
        )


def write_run_files(config: TrainConfig, run_dir: Path, fingerprint: dict, plan: TrainPlan, data: TrainingData) -> None:
    """config.yaml, fingerprint.json, plan.json and split.json, each atomically: a run killed while
    starting must still resume."""
    with atomic_write(run_dir / CONFIG_FILE, "run config") as temporary:
        save_config(config, temporary)
    write_text_atomically(run_dir / FINGERPRINT_FILE, json.dumps(fingerprint, indent=1), "data fingerprint")
    write_text_atomically(run_dir / PLAN_FILE, plan_json(plan), "training plan")
    with atomic_write(run_dir / SPLIT_FILE, "train/validation split") as temporary:
        write_split(temporary, data.train_pairs, data.val_pairs)


def append_history(path: Path, row: dict[str, Any]) -> None:
    """Append one epoch's row (the header first, in a new file); a failed write names the file."""
    new_file = not path.exists()
    try:
        with path.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=HISTORY_FIELDS)
            if new_file:
                writer.writeheader()
            writer.writerow({key: ("" if row.get(key) is None else row[key]) for key in HISTORY_FIELDS})
    except OSError as error:
        raise SegnetError(describe_write_error(path, error, "training history")) from error


def truncate_history(path: Path, epochs_done: int) -> float:
    """On resume, drop rows of epochs after the checkpoint (they will be trained again); returns
    the seconds the kept epochs took (what a time budget has spent).

    Rewritten atomically: a run killed while resuming keeps its history. Rows that do not parse
    (a write cut short by a crash) are dropped with the epochs to redo.
    """
    if not path.exists():
        return 0.0
    history = csv.DictReader(io.StringIO(read_bounded_text(path, "training history"), newline=""))
    rows = [row for row in history if (row.get("epoch") or "").isdigit() and int(row["epoch"]) <= epochs_done]
    with atomic_write(path, "training history") as temporary, temporary.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=HISTORY_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    return sum(float(row.get("epoch_seconds") or 0) for row in rows)


def write_curves(run_dir: Path) -> None:

    try:
        plot_training_curves(run_dir / HISTORY_FILE, run_dir / CURVES_FILE)
    except OSError as error:
        raise SegnetError(describe_write_error(run_dir / CURVES_FILE, error, "training curves")) from error


def check_resumed_data(
    resumed: Checkpoint, fingerprint: dict, config: TrainConfig, run_dir: Path, log: Callable[..., None]
) -> None:
    """Refuse to resume a run on other images than its own, which would train on and score them silently.

    The training images are compared by their fingerprint with the one in the run's checkpoint. A
    dataset moved to another folder matches; one changed in its own folder is trained on as asked.
    """
    recorded = resumed.fingerprint
    differences = fingerprint_differences(recorded, fingerprint) if recorded is not None else []
    if not differences:
        return
    trained_on = resumed.setting("data")
    if trained_on and Path(trained_on).resolve() == Path(config.data).resolve():
        log(
            f"{config.data}: the training images changed since the run began ({', '.join(differences)} differ); resuming on them as asked"
        )
        return
    raise SegnetError(
        f"{config.data}: not the data the run in {run_dir} was trained on{f' ({trained_on})' if trained_on else ''}: "
        f"the training images differ ({', '.join(differences)}); resume with the run's --data, or start a new run"
    )
