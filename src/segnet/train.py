"""The training loop: a plain PyTorch loop that runs unchanged on one CPU, one GPU, or under torchrun.

One process (one GPU, or the CPU)::

    segnet train --data DIR --out RUN

Several GPUs of one machine (DistributedDataParallel, one process per GPU, NCCL)::

    torchrun --standalone --nproc_per_node=4 -m segnet train --data DIR --out RUN

Several machines (run the same command on every machine; HOST is the first machine's address, and
DIR and RUN must be the same shared folders everywhere)::

    torchrun --nnodes=2 --nproc_per_node=4 --rdzv-backend=c10d --rdzv-endpoint=HOST:29500 \\
        --rdzv-id=segnet-run -m segnet train --data DIR --out RUN

CPU processes talk over gloo instead of NCCL (``--device cpu``; useful to try the set-up). The
batch size is the global one: each of N processes takes ``batch_size / N`` images per step, so the
optimisation is the same as on one device. Only rank 0 logs and writes the run folder.

Before training, the dataset gets the checks of ``segnet check`` (every file decoded, pairs and
sizes matched): a broken dataset is refused with a list of its problems, or with ``--skip-bad`` the
pairs with problems are left out. Each epoch: random crops of the training images (one per image),
then validation on the held-out images at their own size, each process scoring every N-th image;
the metrics come from one confusion matrix summed over all processes, so they equal a
single-process evaluation.
``RUN/last.pt`` is written every epoch and ``RUN/best.pt`` (with ``RUN/best_metrics.json``) whenever
the validation mean IoU improves, all atomically: a crash, ``kill -9`` or a full disk leaves each
file as it was or fully written. ``last.pt`` is written after the epoch's ``history.csv`` row, so
``--resume`` redoes exactly the epochs that it does not hold. Every epoch's randomness is derived
from (seed, epoch), so a resumed run draws the same crops as an uninterrupted one, and with
``--deterministic`` two runs with the same seed end with the same weights bit for bit (tested on
the CPU; on a GPU, torch warns about each operator that has no deterministic kernel).

Speed switches (measured by ``benchmarks/train_speed.py``): ``--amp`` (bfloat16 autocast, on by
default where the CPU or GPU computes bf16 natively), ``--channels-last`` (default on),
``--num-workers`` (default 2; the decoded images are cached in memory before the workers start),
``--compile`` (torch.compile; off by default: it compiles for a minute or more before the first
step). ``--patience N`` stops after N epochs without a better validation mean IoU,
``--grad-clip`` clips the gradient norm, ``--tensorboard`` logs to ``RUN/tensorboard``.
``--time-budget MINUTES`` replaces the epoch count by a wall-clock budget: the count and the
learning-rate schedule are refitted after every epoch's steps (``segnet.budget``).
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler
from tqdm import tqdm

from segnet import distributed as dist
from segnet.budget import TimeBudget
from segnet.builtin import resolve_checkpoint
from segnet.check import check_dataset, format_problems
from segnet.calibration import CALIBRATION_FILE, calibrate_checkpoint, format_calibration
from segnet.checkpoint import (
    atomic_write,
    check_compatible,
    describe_write_error,
    load_checkpoint,
    model_spec,
    new_checkpoint,
    remove_stale_temporaries,
    save_checkpoint,
    write_text_atomically,
)
from segnet.config import TrainConfig, save_config
from segnet.data import Pair, SegmentationDataset, compute_fingerprint, fingerprint_differences, read_split, split_pairs, write_split
from segnet.errors import DataError, SegnetError
from segnet.losses import build_loss
from segnet.metrics import ConfusionMatrix, metrics_from_confusion
from segnet.model import build_model, load_pretrained_encoder
from segnet.spec import ModelSpec
from segnet.transforms import train_transform

HISTORY_FIELDS = ("epoch", "train_loss", "val_loss", "val_global_accuracy", "val_mean_iou", "lr", "epoch_seconds")
BEST_METRICS_FILE = "best_metrics.json"
TENSORBOARD_FOLDER = "tensorboard"
RUN_FILES = (
    "last.pt", "best.pt", "history.csv", "curves.png", BEST_METRICS_FILE, CALIBRATION_FILE,
    "config.yaml", "fingerprint.json", "split.json", TENSORBOARD_FOLDER,
)
"""What training writes into a run folder. A folder holding any of them holds a run (a kept best.pt
whose last.pt was pruned is one), which only ``--overwrite`` replaces; it then deletes them all."""
# Pixels of thickness the thinnest class keeps at model resolution when downsample is automatic.
# Real spirochetes are about 11 px thick (downsample 3: measured best per CPU minute, see
# docs/decisions.md), the synthetic ones 3.5 px (downsample 1).
MIN_MODEL_THICKNESS = 3
TENSORBOARD_EXAMPLES = 3
"""Validation images drawn with their predictions in TensorBoard each validated epoch."""
TENSORBOARD_PANEL_SIDE = 512
"""Example panels larger than this are subsampled, to keep the event files small."""


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


def check_run_folder(out: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to resume nothing or to clobber an earlier run (checked by every process)."""
    if resume:
        if not (out / "last.pt").is_file():
            raise SegnetError(f"{out}: nothing to resume (no last.pt: no epoch finished); start again with --overwrite")
    elif not overwrite and (held := [name for name in RUN_FILES if (out / name).exists()]):
        raise SegnetError(f"{out}: already holds a run ({', '.join(held)}); pass --resume to continue it or --overwrite to replace it")


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
        raise SegnetError(f"{out}: cannot prepare the run folder ({error.strerror or error}): choose a writable folder") from error


def resolve_data_defaults(config: TrainConfig, fingerprint: dict) -> dict[str, Any]:
    """Derive what the data decides: resolution, crop size, the rare class to oversample (nnU-Net-style plan).

    The model works at 1/downsample of the image resolution, the largest factor (up to 4) that keeps
    the thinnest foreground class at least ``MIN_MODEL_THICKNESS`` pixels thick at model resolution:
    thin structures need the pixels, thick ones gain field of view. The crop is the largest multiple
    of 32 x downsample up to 256 x downsample that fits the median image, so small images are not
    padded and the model sees crops of at most 256 pixels, the size the throughput budget allows.
    """
    downsample = config.downsample
    if downsample is None:
        thickness = [t for t in fingerprint.get("class_thickness", [])[1:] if t is not None]
        downsample = int(min(4, max(1, min(thickness) // MIN_MODEL_THICKNESS))) if thickness else 1
    median_side = min(fingerprint["height"]["median"], fingerprint["width"]["median"])
    unit = 32 * downsample
    largest = max(fingerprint["height"]["max"], fingerprint["width"]["max"])
    # A crop beyond the largest image (padded to the model's grid) would only be padding, and a huge
    # one fails allocating inside OpenCV: refused before anything is written to the run folder.
    if config.image_size is not None and config.image_size > -(-largest // unit) * unit:
        raise SegnetError(
            f"--image-size {config.image_size} is larger than the largest training image ({largest} px a side; "
            f"at most {-(-largest // unit) * unit} at downsample {downsample}): choose a smaller crop or leave it to the data"
        )
    crop = config.image_size or int(max(unit, min(256 * downsample, median_side // unit * unit)))
    frequencies = np.asarray(fingerprint["class_frequencies"])
    present = np.flatnonzero(frequencies > 0)
    rarest = int(present[np.argmin(frequencies[present])]) if present.size else None
    return {"image_size": crop, "downsample": downsample, "focus_class": rarest}


def lr_lambda(total_steps: int, warmup_steps: int, schedule: str):
    """Per-step multiplier of the base learning rate: linear warm-up, then cosine or poly decay."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        if schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * progress))
        if schedule == "poly":
            return (1 - progress) ** 0.9
        return 1.0

    return factor


def build_optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=config.learning_rate, momentum=config.momentum, weight_decay=config.weight_decay)
    return torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)


def compile_model(model: nn.Module, device: torch.device) -> nn.Module:
    """``torch.compile`` the model; on the CPU, Inductor builds C++ kernels and needs a compiler."""
    if device.type == "cpu" and not (os.environ.get("CXX") or shutil.which("g++") or shutil.which("clang++")):
        raise SegnetError("--compile on the CPU needs a C++ compiler (g++ or clang++) on PATH; install one or train without --compile")
    return torch.compile(model)


def seed_worker(worker_id: int) -> None:
    """Give each DataLoader worker its own albumentations stream, derived from the epoch's seed."""
    info = torch.utils.data.get_worker_info()
    info.dataset.transform.set_random_seed(torch.initial_seed() % 2**32)


def make_train_loader(dataset: SegmentationDataset, config: TrainConfig, epoch: int, pin_memory: bool) -> DataLoader:
    """The epoch's loader; its shuffling and augmentation are functions of (seed, epoch) only.

    Under torch.distributed a DistributedSampler gives each process its own share of the images.
    """
    epoch_seed = config.seed * 100_003 + epoch
    generator = torch.Generator().manual_seed(epoch_seed)
    if dist.world_size() > 1:
        sampler = DistributedSampler(dataset, shuffle=True, seed=config.seed, drop_last=True)
        sampler.set_epoch(epoch)
    else:
        sampler = RandomSampler(dataset, generator=generator)
    if config.num_workers == 0:
        dataset.transform.set_random_seed(epoch_seed * 1000 + dist.rank())
    per_process_batch = max(1, config.batch_size // dist.world_size())
    return DataLoader(
        dataset,
        batch_size=per_process_batch,
        sampler=sampler,
        num_workers=config.num_workers,
        worker_init_fn=seed_worker if config.num_workers > 0 else None,
        generator=generator,
        pin_memory=pin_memory,
        drop_last=len(dataset) >= per_process_batch * dist.world_size() * 2,
    )


def train_one_epoch(
    model: nn.Module,
    loader: DataLoader,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    device: torch.device,
    epoch: int,
    epochs: int,
    grad_clip: float | None = None,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
) -> EpochStats:
    """One pass over ``loader``; returns the mean training loss (over all processes) and the timings.

    With ``amp_dtype`` the forward pass runs under autocast; float16 needs a gradient scaler,
    bfloat16 (the same exponent range as float32) does not.
    """
    model.train()
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    # loss x images, images, seconds spent waiting for data: summed over steps, then over processes
    totals = torch.zeros(3, dtype=torch.float64, device=device)
    data_seconds = 0.0
    bar = tqdm(loader, desc=f"epoch {epoch}/{epochs}", unit="batch", leave=False, disable=not dist.is_main_process(), dynamic_ncols=True)
    started = step_done = time.perf_counter()
    for images, masks in bar:
        data_seconds += time.perf_counter() - step_done
        images = images.to(device, non_blocking=True, memory_format=memory_format)
        masks = masks.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            loss = loss_fn(model(images), masks)
        if not torch.isfinite(loss):
            raise SegnetError(
                f"training loss became {loss.item()} at epoch {epoch}: lower the learning rate (--lr) "
                "or check the data (segnet check); the last good checkpoint is kept"
            )
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if grad_clip:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        loss_value = loss.item()  # waits for the step to finish, so the timings below are true
        totals[0] += loss_value * len(images)
        totals[1] += len(images)
        bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
        step_done = time.perf_counter()
    seconds = time.perf_counter() - started
    totals[2] = data_seconds
    dist.all_reduce_sum(totals)
    return EpochStats(
        loss=(totals[0] / totals[1].clamp(min=1)).item(),
        images=int(totals[1].item()),
        seconds=seconds,
        data_seconds=totals[2].item() / dist.world_size(),
    )


def predict_logits(model: nn.Module, image: torch.Tensor, device: torch.device, amp_dtype: torch.dtype | None) -> torch.Tensor:
    """Float32 logits ``(1, C, H, W)`` of one normalised ``(3, H, W)`` image."""
    with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
        return model(image[None].to(device)).float()


@torch.inference_mode()
def validate(
    model: nn.Module,
    dataset: SegmentationDataset,
    loss_fn: nn.Module,
    device: torch.device,
    class_names: Sequence[str],
    amp_dtype: torch.dtype | None = None,
) -> dict[str, Any]:
    """Score whole validation images at their own size; each process takes every N-th image.

    The confusion matrix and the loss are summed over processes, so the result equals a
    single-process evaluation of the same images (no image is padded in or counted twice).
    """
    model.eval()
    confusion = ConfusionMatrix(len(class_names), device=device)
    loss_sum = torch.zeros(2, dtype=torch.float64, device=device)
    indices = range(dist.rank(), len(dataset), dist.world_size())
    for index in tqdm(indices, desc="validation", unit="image", leave=False, disable=not dist.is_main_process(), dynamic_ncols=True):
        image, mask = dataset[index]
        mask = mask[None].to(device)
        logits = predict_logits(model, image, device, amp_dtype)
        loss_sum += torch.tensor([loss_fn(logits, mask).item(), 1.0], dtype=torch.float64, device=device)
        confusion.update(mask, logits.argmax(1))
    confusion.reduce_from_all_processes()
    dist.all_reduce_sum(loss_sum)
    metrics = metrics_from_confusion(confusion.mat, class_names)
    metrics["loss"] = (loss_sum[0] / loss_sum[1].clamp(min=1)).item()
    return metrics


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
    with path.open(newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if (row.get("epoch") or "").isdigit() and int(row["epoch"]) <= epochs_done]
    with atomic_write(path, "training history") as temporary, temporary.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=HISTORY_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    return sum(float(row.get("epoch_seconds") or 0) for row in rows)


def fit_schedule_to_budget(
    config: TrainConfig,
    epochs: int,
    scheduler: torch.optim.lr_scheduler.LambdaLR,
    steps_per_epoch: int,
    budget: TimeBudget,
    run_dir: Path,
    log: Callable[..., None],
) -> None:
    """Set the run's epoch count to ``epochs`` (segnet.budget): the learning-rate schedule now ends
    there, and RUN/config.yaml says so."""
    config.epochs = epochs
    factor = lr_lambda(epochs * steps_per_epoch, config.warmup_epochs * steps_per_epoch, config.schedule)
    scheduler.lr_lambdas = [factor] * len(scheduler.lr_lambdas)
    # The scheduler has already set the next step's rate from the old count: set it from the new one.
    for group, base_lr in zip(scheduler.optimizer.param_groups, scheduler.base_lrs):
        group["lr"] = base_lr * factor(scheduler.last_epoch)
    if dist.is_main_process():
        with atomic_write(run_dir / "config.yaml", "run config") as temporary:
            save_config(config, temporary)
    log(
        f"time budget {config.time_budget:g} min: {epochs} epoch{'' if epochs == 1 else 's'} fit ({budget.epoch_time:.0f}s per epoch, "
        f"{max(0.0, budget.seconds_left()) / 60:.1f} min left, {budget.reserve / 60:.1f} min kept for the last validation "
        "and calibration); "
        f"the {config.schedule} learning-rate schedule ends at epoch {epochs}"
    )


def write_curves(run_dir: Path) -> None:
    from segnet.report import plot_training_curves  # matplotlib is slow to import; only rank 0 needs it

    try:
        plot_training_curves(run_dir / "history.csv", run_dir / "curves.png")
    except OSError as error:
        raise SegnetError(describe_write_error(run_dir / "curves.png", error, "training curves")) from error


def open_tensorboard(run_dir: Path, first_epoch: int):
    """A SummaryWriter on ``RUN/tensorboard``; on resume, events of epochs to be redone are dropped."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as error:
        raise SegnetError("--tensorboard needs the tensorboard package (pip install tensorboard)") from error
    return SummaryWriter(str(run_dir / TENSORBOARD_FOLDER), purge_step=first_epoch)


def log_tensorboard(writer, epoch: int, stats: EpochStats, metrics: dict[str, Any] | None, lr: float, seconds: float) -> None:
    """The epoch's scalars: losses, accuracy, IoUs, learning rate and speed."""
    writer.add_scalar("loss/train", stats.loss, epoch)
    writer.add_scalar("learning_rate", lr, epoch)
    writer.add_scalar("speed/epoch_seconds", seconds, epoch)
    writer.add_scalar("speed/images_per_second", stats.images_per_second, epoch)
    writer.add_scalar("speed/data_wait_fraction", stats.data_wait_fraction, epoch)
    if metrics is None:
        return
    writer.add_scalar("loss/val", metrics["loss"], epoch)
    for key in ("global_accuracy", "class_average_accuracy", "mean_iou", "frequency_weighted_iou"):
        if metrics[key] is not None:
            writer.add_scalar(f"val/{key}", metrics[key], epoch)
    for name, scores in metrics["per_class"].items():
        if scores["iou"] is not None:
            writer.add_scalar(f"val_iou/{name}", scores["iou"], epoch)


@torch.inference_mode()
def log_tensorboard_examples(
    writer, model: nn.Module, dataset: SegmentationDataset, device: torch.device, amp_dtype: torch.dtype | None, epoch: int
) -> None:
    """The first validation images as image | true mask | predicted mask, in class colours."""
    from segnet.predict import colorize  # imports matplotlib; only needed with --tensorboard

    model.eval()
    for index in range(min(TENSORBOARD_EXAMPLES, len(dataset))):
        raw_image, truth = dataset.load(index)
        prediction = predict_logits(model, dataset[index][0], device, amp_dtype).argmax(1)[0].cpu().numpy().astype(np.uint8)
        num_classes = dataset.num_classes
        panel = np.concatenate([raw_image, colorize(truth, num_classes), colorize(prediction, num_classes)], axis=1)
        step = math.ceil(max(raw_image.shape[:2]) / TENSORBOARD_PANEL_SIDE)
        writer.add_image(f"validation/{dataset.pairs[index].stem}", panel[::step, ::step], epoch, dataformats="HWC")


def checked_pairs(config: TrainConfig, log: Callable[..., None] = print) -> list[Pair]:
    """The dataset's image/mask pairs, sorted by stem, after the checks of ``segnet check``.

    Any problem (unreadable file, missing partner, size mismatch, mask values outside the classes,
    colours outside ``mask_palette``) stops with the list of problems, unless ``config.skip_bad``:
    then the pairs with problems are left out and listed through ``log``. Every process runs the
    same check on the same files, so all train on the same pairs, or all stop together.
    """
    result = check_dataset(config.data, config.classes, config.palette_by_index(), progress=dist.is_main_process())
    problems, good_pairs, root = result.problems, result.good_pairs, Path(config.data)
    if not problems:
        return good_pairs
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
    log(f"--skip-bad: training on the {len(good_pairs)} pairs without problems; left out because of {count}:\n{format_problems(problems, root)}")
    return good_pairs


def load_training_data(config: TrainConfig, run_dir: Path, resume: bool, log: Callable[..., None] = print) -> tuple[list[Pair], list[Pair]]:
    """Check the dataset and split it, reusing the run's split.json when resuming."""
    pairs = checked_pairs(config, log)
    if resume and (run_dir / "split.json").is_file():
        return read_split(run_dir / "split.json", pairs, "train"), read_split(run_dir / "split.json", pairs, "val")
    return split_pairs(pairs, config.val_fraction, config.seed)


def check_resumed_data(resumed: dict[str, Any], fingerprint: dict, config: TrainConfig, run_dir: Path, log: Callable[..., None]) -> None:
    """Refuse to resume a run on other images than its own, which would train on and score them silently.

    The training images are compared by their fingerprint with the one in the run's checkpoint. A
    dataset moved to another folder matches; one changed in its own folder is trained on as asked.
    """
    recorded = resumed.get("fingerprint")
    differences = fingerprint_differences(recorded, fingerprint) if isinstance(recorded, dict) else []
    if not differences:
        return
    trained_on = (resumed.get("config") or {}).get("data")
    if trained_on and Path(trained_on).resolve() == Path(config.data).resolve():
        log(f"{config.data}: the training images changed since the run began ({', '.join(differences)} differ); resuming on them as asked")
        return
    raise SegnetError(
        f"{config.data}: not the data the run in {run_dir} was trained on{f' ({trained_on})' if trained_on else ''}: "
        f"the training images differ ({', '.join(differences)}); resume with the run's --data, or start a new run"
    )


def load_initial_weights(config: TrainConfig, class_names: list[str], log: Callable[..., None]) -> dict[str, torch.Tensor]:
    """The weights ``config.init`` names (a checkpoint or a built-in model), checked to fit the run.

    Sets ``config.downsample`` to the checkpoint's where none is asked for: the weights learnt the
    structures at that scale. Raises :class:`~segnet.errors.CheckpointError` for another model or class list.
    """
    path = resolve_checkpoint(config.init)
    state = load_checkpoint(path)
    check_compatible(state, config.model, list(class_names), path)
    spec = model_spec(state)
    if config.downsample is None:
        config.downsample = spec.downsample
    log(f"fine-tuning from {config.init} ({spec.name}, trained {state.get('epoch', '?')} epochs at downsample {spec.downsample})")
    return state["model_state"]


def out_of_memory(device: torch.device, advice: str) -> SegnetError:
    """The error for a failed allocation: what ran out and which option to lower."""
    memory = "GPU memory" if device.type == "cuda" else "memory"
    return SegnetError(f"out of {memory} {advice}; the last checkpoint is kept")


def train(
    config: TrainConfig,
    resume: bool = False,
    overwrite: bool = False,
    progress_log=print,
    *,
    split: tuple[Sequence[Pair], Sequence[Pair]] | None = None,
) -> Path:
    """Train a model as ``config`` says; returns the run folder. See the module docstring.

    Args:
        config: the resolved training config (``segnet.config.load_config``).
        resume: continue the run in ``config.out`` from its ``last.pt``.
        overwrite: replace a run already in ``config.out``.
        progress_log: where the per-epoch lines go (rank 0 only).
        split: (training pairs, validation pairs) to use instead of a random split by
            ``config.val_fraction`` (cross-validation passes each fold this way); the caller has
            checked them (see :func:`checked_pairs`).

    Raises:
        SegnetError: the dataset has problems (without ``config.skip_bad``), the run folder holds
            a run (without ``resume``/``overwrite``), a file cannot be written, the checkpoint to
            resume does not fit, the loss diverges, or the GPU runs out of memory. Files written
            before the error are kept.
    """
    dist.configure_determinism(config.deterministic)  # before any CUDA work (cuBLAS reads its env once)
    owns_process_group = not dist.is_distributed()  # cross-validation keeps one group over all folds
    device = dist.init_distributed(config.device)
    run_dir = Path(config.out)
    check_run_folder(run_dir, resume, overwrite)  # on every process, so all stop together
    if dist.is_main_process():
        prepare_run_folder(run_dir, resume, overwrite)
    dist.barrier()
    main_process = dist.is_main_process()
    log = progress_log if main_process else (lambda *a, **k: None)
    torch.manual_seed(config.seed)
    class_names = list(config.classes)
    num_classes = len(class_names)
    palette = config.palette_by_index()
    resumed = None  # checked before anything is written: a resume with the wrong model or classes changes nothing
    if resume:
        resumed = load_checkpoint(run_dir / "last.pt", map_location=device)
        check_compatible(resumed, config.model, class_names, run_dir / "last.pt", config.downsample)
        # An automatic resolution resumes at the run's own, even where today's rule would pick another.
        config.downsample = model_spec(resumed).downsample
        if config.time_budget:  # the epoch count fitted so far, refitted after the next epoch
            config.epochs = (resumed.get("config") or {}).get("epochs", config.epochs)

    initial_weights = load_initial_weights(config, class_names, log) if config.init and not resume else None
    train_pairs, val_pairs = (list(split[0]), list(split[1])) if split is not None else load_training_data(config, run_dir, resume, log)
    if config.patience and not val_pairs:
        raise SegnetError("--patience stops on the validation mean IoU, but no images are held out for validation (val_fraction is 0)")
    log(f"data: {len(train_pairs)} training and {len(val_pairs)} validation images from {config.data}")
    # Decode everything once, before DataLoader workers fork and share the arrays.
    train_set = SegmentationDataset(train_pairs, num_classes, (0, 0, 0), (1, 1, 1), palette=palette, preload=True)
    val_set = SegmentationDataset(val_pairs, num_classes, (0, 0, 0), (1, 1, 1), palette=palette, preload=True)
    fingerprint = compute_fingerprint((train_set.load(i) for i in range(len(train_set))), num_classes)
    if resumed is not None:  # before config.yaml is rewritten to name the data given now
        check_resumed_data(resumed, fingerprint, config, run_dir, log)
    plan = resolve_data_defaults(config, fingerprint)
    config.image_size, config.downsample = plan["image_size"], plan["downsample"]
    # The model's input convention: a resumed run keeps its own, even on changed images.
    normalization = resumed["normalization"] if resumed is not None else {"mean": fingerprint["mean"], "std": fingerprint["std"]}
    for dataset in (train_set, val_set):
        dataset.set_normalization(normalization["mean"], normalization["std"])
    train_set.transform = train_transform(
        config.image_size, config.scale_range, num_classes, plan["focus_class"], config.focus_probability
    )
    if main_process:  # atomically: a run killed while starting must still resume
        with atomic_write(run_dir / "config.yaml", "run config") as temporary:
            save_config(config, temporary)
        write_text_atomically(run_dir / "fingerprint.json", json.dumps(fingerprint, indent=1), "data fingerprint")
        with atomic_write(run_dir / "split.json", "train/validation split") as temporary:
            write_split(temporary, train_pairs, val_pairs)

    model = build_model(ModelSpec(config.model, num_classes, downsample=config.downsample))
    if config.pretrained and not resume:
        load_pretrained_encoder(model, config.pretrained)
    if initial_weights is not None:
        model.load_state_dict(initial_weights)
        model.logit_offsets.zero_()  # the offsets are refitted for this run's data after training
    model = model.to(device, memory_format=torch.channels_last if config.channels_last else torch.contiguous_format)
    amp_dtype = dist.autocast_dtype(device, config.amp)
    if dist.world_size() > 1 and device.type == "cuda":
        # BatchNorm statistics over the global batch. SyncBatchNorm works only on GPUs: CPU processes
        # keep per-process statistics, and rank 0's are copied to the others after every epoch.
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model_without_ddp = model
    if dist.world_size() > 1:
        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    # The training steps run compiled; validation (whole images of varying sizes) runs eagerly.
    training_model = compile_model(model, device) if config.compile else model
    loss_fn = build_loss(fingerprint["class_presence_frequencies"], config.class_weights, config.loss).to(device)
    optimizer = build_optimizer(config, model_without_ddp)
    steps_per_epoch = len(make_train_loader(train_set, config, 0, pin_memory=False))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(config.epochs * steps_per_epoch, config.warmup_epochs * steps_per_epoch, config.schedule)
    )

    start_epoch, best_score, best_epoch, spent_before = 0, None, None, 0.0
    if resumed is not None:
        model_without_ddp.load_state_dict(resumed["model_state"])
        optimizer.load_state_dict(resumed["optimizer_state"])
        scheduler.load_state_dict(resumed["scheduler_state"])
        start_epoch, best_score = resumed["epoch"], resumed["best_score"]
        # Checkpoints from before early stopping existed lack best_epoch: count patience from now.
        best_epoch = resumed.get("best_epoch", start_epoch if best_score is not None else None)
        del resumed  # the weights now live in the model and optimizer
        if main_process:
            spent_before = truncate_history(run_dir / "history.csv", start_epoch)
        log(f"resuming after epoch {start_epoch} (best validation mean IoU so far: {best_score})")
    per_process_batch = max(1, config.batch_size // dist.world_size())
    log(
        f"model {config.model} ({sum(p.numel() for p in model_without_ddp.parameters()):,} parameters) on {device}, "
        f"{dist.world_size()} process(es) x batch {per_process_batch}; crops {config.image_size}px"
        f"{f' seen at 1/{config.downsample} resolution' if config.downsample > 1 else ''}, "
        f"{config.optimizer} lr {config.learning_rate:g}, "
        f"{f'a time budget of {config.time_budget:g} min' if config.time_budget else f'{config.epochs} epochs'}, "
        f"{'mixed precision ' + str(amp_dtype).removeprefix('torch.') if amp_dtype else 'float32'}"
        f"{', channels-last' if config.channels_last else ''}{', compiled' if config.compile else ''}"
        f"{', deterministic' if config.deterministic else ''}"
    )
    writer = open_tensorboard(run_dir, start_epoch + 1) if config.tensorboard and main_process else None

    def checkpoint_state(epoch: int) -> dict[str, Any]:
        return new_checkpoint(
            model_without_ddp,
            class_names,
            normalization,
            config=config.to_dict(),
            fingerprint=fingerprint,
            epoch=epoch,
            best_score=best_score,
            best_epoch=best_epoch,
            optimizer_state=optimizer.state_dict(),
            scheduler_state=scheduler.state_dict(),
        )

    budget = None
    if config.time_budget:
        calibration_images = min(config.calibration_images, len(train_pairs))
        budget = TimeBudget(config.time_budget, config.val_every, len(val_pairs), calibration_images, spent_before)
    digest = None
    epoch = start_epoch
    while epoch < config.epochs:  # a time budget refits config.epochs after every epoch
        epoch += 1
        if config.patience and best_epoch is not None and epoch - 1 - best_epoch >= config.patience:
            log(
                f"early stopping after epoch {epoch - 1}: the validation mean IoU has not improved for "
                f"{epoch - 1 - best_epoch} epochs (patience {config.patience}); best {best_score:.4f} at epoch {best_epoch}"
            )
            break
        started = time.perf_counter()
        torch.manual_seed(config.seed * 100_003 + epoch)  # dropout and any other torch randomness
        loader = make_train_loader(train_set, config, epoch, pin_memory=device.type == "cuda")
        try:
            stats = train_one_epoch(
                training_model, loader, loss_fn, optimizer, scheduler, device, epoch, config.epochs, config.grad_clip, amp_dtype, config.channels_last
            )
        except torch.OutOfMemoryError as error:
            raise out_of_memory(
                device,
                f"training at batch size {config.batch_size} ({per_process_batch} per process) on {config.image_size}x{config.image_size} crops: "
                "lower --batch-size or --image-size",
            ) from error
        dist.broadcast_buffers(model_without_ddp)
        if dist.world_size() > 1:
            digest = dist.check_replicas_in_sync(model_without_ddp)
        if budget is not None:  # before validation: an epoch the fit makes the last one is validated
            budget.record_training(time.perf_counter() - started)
            # Rank 0's clock decides for every process, so all train the same epochs.
            fitted = dist.all_gather_object(budget.fit(epoch))[0]
            if fitted != config.epochs:
                fit_schedule_to_budget(config, fitted, scheduler, steps_per_epoch, budget, run_dir, log)
        metrics = None
        if val_pairs and (epoch % config.val_every == 0 or epoch == config.epochs):
            validation_started = time.perf_counter()
            try:
                metrics = validate(model_without_ddp, val_set, loss_fn, device, class_names, amp_dtype)
            except torch.OutOfMemoryError as error:
                largest = max((val_set.load(i)[0].shape[:2] for i in range(len(val_set))), key=lambda shape: shape[0] * shape[1])
                raise out_of_memory(
                    device,
                    f"validating whole held-out images (up to {largest[1]}x{largest[0]} px; validation does not crop): "
                    "use --amp, a smaller --model, or smaller images",
                ) from error
            if budget is not None:
                budget.record_validation(time.perf_counter() - validation_started)
        seconds = time.perf_counter() - started
        improved = metrics is not None and metrics["mean_iou"] is not None and (best_score is None or metrics["mean_iou"] > best_score)
        if improved:
            best_score, best_epoch = metrics["mean_iou"], epoch
        lr = scheduler.get_last_lr()[0]
        if main_process:
            # The history row and best.pt go before last.pt: resuming from last.pt redoes any epoch a crash cut short.
            append_history(
                run_dir / "history.csv",
                {
                    "epoch": epoch,
                    "train_loss": f"{stats.loss:.5f}",
                    "val_loss": f"{metrics['loss']:.5f}" if metrics else None,
                    "val_global_accuracy": f"{metrics['global_accuracy']:.5f}" if metrics else None,
                    "val_mean_iou": f"{metrics['mean_iou']:.5f}" if metrics and metrics["mean_iou"] is not None else None,
                    "lr": f"{lr:.3e}",
                    "epoch_seconds": f"{seconds:.1f}",
                },
            )
            state = checkpoint_state(epoch)
            if improved or not val_pairs:
                save_checkpoint(state, run_dir / "best.pt")
            if improved:
                write_text_atomically(run_dir / BEST_METRICS_FILE, json.dumps({"epoch": epoch, **metrics}, indent=1), "best metrics")
            save_checkpoint(state, run_dir / "last.pt")
            write_curves(run_dir)
            if writer is not None:
                log_tensorboard(writer, epoch, stats, metrics, lr, seconds)
                if metrics is not None:
                    log_tensorboard_examples(writer, model_without_ddp, val_set, device, amp_dtype, epoch)
                writer.flush()
        summary = f"epoch {epoch}/{config.epochs}: train loss {stats.loss:.4f}"
        if metrics:
            summary += f", val loss {metrics['loss']:.4f}, pixel accuracy {metrics['global_accuracy']:.4f}, mean IoU {metrics['mean_iou']:.4f}"
        log(
            f"{summary}; lr {lr:.2e}, {seconds:.0f}s ({stats.images_per_second:.1f} images/s, "
            f"{100 * stats.data_wait_fraction:.0f}% waiting for data){' *best*' if improved else ''}"
        )
    if digest is not None:
        log(f"model weights identical on all {dist.world_size()} processes (sha256 {digest})")
    if writer is not None:
        writer.close()
    if main_process and config.calibration_images and (run_dir / "best.pt").is_file():
        summary = calibrate_checkpoint(run_dir / "best.pt", train_pairs, max_images=config.calibration_images, device=device, seed=config.seed)
        log(format_calibration(summary))
    dist.barrier()
    if owns_process_group:
        dist.cleanup()
    return run_dir
