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

A run goes through plain steps, each a function below: the run folder (and the checkpoint to
resume), the data (the checks of ``segnet check``, which decode every file once: a broken dataset
is refused with a list of its problems, or with ``--skip-bad`` the pairs with problems are left
out; the decoded pairs are what training and validation use), the fingerprint of the training
images, the plan (``segnet.plan``: crop, resolution, normalisation, class weights, batch; written
to ``RUN/plan.json`` and read back by ``--resume``), the model and its optimiser, then the loop.
Each epoch: random crops of the training images (one per image),
then validation on the held-out images at their own size, each process scoring every N-th image
through the predictor ``segnet evaluate`` uses (``segnet.predict.Predictor``: float32, whole
images, no test-time augmentation, on a plain copy of the weights as a checkpoint stores them);
the metrics come from one confusion matrix summed over all processes, so history.csv's validation
scores equal ``segnet evaluate --no-tta`` of that epoch's checkpoint before calibration.
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
learning-rate schedule are refitted after every epoch's steps (``segnet.train.budget``).
"""

from __future__ import annotations

import contextlib
import dataclasses
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

from segnet.core import distributed as dist
from segnet.core.errors import CheckpointError, OutOfMemory, SegnetError, is_out_of_memory, out_of_memory
from segnet.core.hardware import describe_hardware
from segnet.core.outputs import atomic_write, output_lock
from segnet.core.runfiles import BEST_CHECKPOINT, BEST_METRICS_FILE, CONFIG_FILE, HISTORY_FILE, LAST_CHECKPOINT
from segnet.data.dataset import SegmentationDataset
from segnet.data.fingerprint import compute_fingerprint
from segnet.data.pairs import Pair
from segnet.data.transforms import train_transform
from segnet.model.builtin import resolve_checkpoint
from segnet.model.checkpoint import Checkpoint
from segnet.model.losses import build_loss
from segnet.model.networks import build_model, load_pretrained_encoder
from segnet.model.options import InferenceOptions
from segnet.model.predictor import Predictor
from segnet.plan.config import TrainConfig, save_config
from segnet.plan.plan import TrainPlan
from segnet.plan.spec import ModelSpec
from segnet.train.budget import TimeBudget
from segnet.train.calibration import CALIBRATION_INFERENCE, calibrate_checkpoint, format_calibration
from segnet.train.metrics import ConfusionMatrix, ValidationMetrics
from segnet.train.runfolder import (
    Decoded,
    EpochResult,
    EpochStats,
    TrainingData,
    append_history,
    history_row,
    load_training_data,
    plan_run,
    start_run,
    truncate_history,
    write_curves,
    write_run_files,
)
from segnet.train.tensorboard import log_tensorboard, log_tensorboard_examples, open_tensorboard

CHECKPOINT_KEPT = "the last checkpoint is kept"
"""How a training error ends: the run can go on with --resume from the last finished epoch."""


@dataclass
class TrainingStep:
    """The model and what trains it: everything an optimisation step needs besides the batch."""

    model: nn.Module  # as the steps run it: wrapped in DistributedDataParallel, compiled, where asked
    loss_fn: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    device: torch.device
    amp_dtype: torch.dtype | None = None  # autocast dtype of the forward pass; None: float32
    channels_last: bool = False
    grad_clip: float | None = None


@dataclass
class Progress:
    """Where a run stands: the last finished epoch and the best validated one."""

    epoch: int = 0
    best_score: float | None = None
    best_epoch: int | None = None
    seconds_before: float = 0.0  # what the epochs before a resume took (a time budget counts them)
    digest: str | None = None  # of the weights, checked equal on every process


@dataclass
class TrainingRun:
    """One run as :func:`train` builds it, step by step; the loop reads everything from here."""

    config: TrainConfig
    run_dir: Path
    log: Callable[..., None]
    fingerprint: dict
    plan: TrainPlan
    data: TrainingData
    train_set: SegmentationDataset
    val_set: SegmentationDataset
    module: nn.Module  # the bare model, as checkpoints store it
    step: TrainingStep
    steps_per_epoch: int
    progress: Progress
    validation_model: nn.Module | None = None  # built at the first validation (validation_predictor)


def _silent(*args: Any, **kwargs: Any) -> None:
    """The log of every process but rank 0."""


def train(
    config: TrainConfig,
    resume: bool = False,
    overwrite: bool = False,
    progress_log: Callable[..., None] = print,
    *,
    split: tuple[Sequence[Pair], Sequence[Pair]] | None = None,
    decoded: Decoded | None = None,
) -> Path:
    """Train a model as ``config`` says; returns the run folder. See the module docstring.

    Args:
        config: the resolved training config (``segnet.plan.config.load_config``).
        resume: continue the run in ``config.out`` from its ``last.pt``.
        overwrite: replace a run already in ``config.out``.
        progress_log: where the per-epoch lines go (rank 0 only).
        split: (training pairs, validation pairs) to use instead of a random split by
            ``config.val_fraction`` (cross-validation passes each fold this way); the caller has
            checked them (see :func:`check_training_data`).
        decoded: pairs of ``split`` already decoded, by stem (from :func:`check_training_data`);
            the others are decoded here.

    Raises:
        SegnetError: the dataset has problems (without ``config.skip_bad``), the run folder holds
            a run (without ``resume``/``overwrite``), a file cannot be written, the checkpoint to
            resume does not fit, the loss diverges, or the GPU runs out of memory. Files written
            before the error are kept.
    """
    # Before any CUDA work (cuBLAS reads its env once); one run at a time writes a run folder.
    with (
        dist.determinism(config.deterministic),
        output_lock(config.out) if dist.is_main_process() else contextlib.nullcontext(),
    ):
        owns_process_group = not dist.is_distributed()  # cross-validation keeps one group over all folds
        device = dist.init_distributed(config.device)
        run_dir = Path(config.out)
        log = progress_log if dist.is_main_process() else _silent
        log(describe_hardware(device, config.amp).line())  # every time a run reports is this machine's
        most_epochs = config.epochs  # as asked; a resumed budgeted run's count is its last fit (start_run)
        resumed, config = start_run(config, run_dir, resume, overwrite, device)
        config = resolve_memory_layout(config, device)
        initial_weights = None
        if config.init and not resume:
            initial_weights, config = load_initial_weights(config, list(config.classes), log)
        data = load_training_data(config, run_dir, resume, log, split, decoded)
        fingerprint = compute_fingerprint((data.decoded[pair.stem] for pair in data.train_pairs), len(config.classes))
        plan, config = plan_run(config, fingerprint, run_dir, resumed, log)
        if dist.is_main_process():
            write_run_files(config, run_dir, fingerprint, plan, data)
        run = build_run(config, run_dir, log, fingerprint, plan, data, device, resumed, initial_weights)
        del resumed, initial_weights  # the weights now live in the model and optimizer
        run_epochs(run, most_epochs)
        finish_run(run)
    if owns_process_group:
        dist.cleanup()
    return run_dir


# ------------------------------------------------------------------------------------------------
# The steps of a run, in order
# ------------------------------------------------------------------------------------------------


def load_initial_weights(
    config: TrainConfig, class_names: list[str], log: Callable[..., None]
) -> tuple[dict[str, torch.Tensor], TrainConfig]:
    """The weights ``config.init`` names (a checkpoint or a built-in model), checked to fit the run,
    and the config with the input path (and its downsample) the weights were trained with.

    The run's downsample comes from its own data, as for a run from scratch, not from the
    checkpoint: the rule keeps the thinnest class about 3 model pixels thick, so on images at
    another magnification the weights see structures at the size they learnt (measured in
    docs/decisions.md: on low-magnification images the checkpoint's K=4 scored 0.60 mean IoU, the
    data's K=1 0.74). Raises :class:`~segnet.core.errors.CheckpointError` for another model or class list.
    """
    path = resolve_checkpoint(config.init)
    checkpoint = Checkpoint.load(path)
    checkpoint.check_compatible(config.model, list(class_names), path)
    spec = checkpoint.spec
    if spec.space_to_depth != config.space_to_depth:
        # The first convolution's shape is the input path's: the weights fit only the same path.
        config = dataclasses.replace(config, space_to_depth=spec.space_to_depth)
        log(f"{'with' if spec.space_to_depth else 'without'} space-to-depth input, as {config.init} was trained")
    if spec.space_to_depth and spec.downsample > 1:
        if config.downsample not in (None, spec.downsample):
            raise CheckpointError(
                f"{path}: its space-to-depth input is fixed at downsample {spec.downsample}; pass --downsample {spec.downsample}"
            )
        config = dataclasses.replace(config, downsample=spec.downsample)
    epochs = "?" if checkpoint.epoch is None else checkpoint.epoch
    log(f"fine-tuning from {config.init} ({spec.name}, trained {epochs} epochs at downsample {spec.downsample})")
    return checkpoint.model_state, config


def resolve_memory_layout(config: TrainConfig, device: torch.device) -> TrainConfig:
    """The config with ``channels_last`` decided: as given, or the faster layout on this device."""
    if config.channels_last is not None:
        return config
    return dataclasses.replace(config, channels_last=dist.prefers_channels_last(device))


def build_datasets(
    config: TrainConfig, plan: TrainPlan, data: TrainingData
) -> tuple[SegmentationDataset, SegmentationDataset]:
    """The training set (random crops as the plan says) and the validation set (whole images)."""
    num_classes, palette = len(config.classes), config.palette_by_index()
    crops = train_transform(
        plan.image_size, config.scale_range, num_classes, plan.focus_class, config.focus_probability
    )
    train_set = SegmentationDataset(
        data.train_pairs,
        num_classes,
        plan.mean,
        plan.std,
        crops,
        palette=palette,
        decoded=data.decoded,
        reference_diameter=plan.reference_diameter,
    )
    val_set = SegmentationDataset(
        data.val_pairs, num_classes, plan.mean, plan.std, palette=palette, decoded=data.decoded
    )
    return train_set, val_set


def build_network(
    config: TrainConfig,
    plan: TrainPlan,
    device: torch.device,
    resuming: bool,
    initial_weights: dict[str, torch.Tensor] | None = None,
) -> tuple[nn.Module, nn.Module]:
    """The model: bare (as checkpoints store it), and as the training steps run it; a new run
    starts from ``initial_weights`` (``--init``) or a pretrained encoder where the config says so."""
    torch.manual_seed(config.seed)
    spec = ModelSpec(
        config.model,
        len(config.classes),
        downsample=plan.downsample,
        space_to_depth=config.space_to_depth,
    )
    module = build_model(spec)
    if config.pretrained and not resuming:
        load_pretrained_encoder(module, config.pretrained)
    if initial_weights is not None:
        module.load_state_dict(initial_weights)
        module.logit_offsets.zero_()  # the offsets are refitted for this run's data after training
    module = module.to(device, memory_format=torch.channels_last if config.channels_last else torch.contiguous_format)
    if dist.world_size() > 1 and device.type == "cuda":
        # BatchNorm statistics over the global batch. SyncBatchNorm works only on GPUs: CPU processes
        # keep per-process statistics, and rank 0's are copied to the others after every epoch.
        module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
    model = module
    if dist.world_size() > 1:
        model = DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)
    # The training steps run compiled; validation (whole images of varying sizes) runs eagerly.
    return module, compile_model(model, device) if config.compile else model


def build_run(
    config: TrainConfig,
    run_dir: Path,
    log: Callable[..., None],
    fingerprint: dict,
    plan: TrainPlan,
    data: TrainingData,
    device: torch.device,
    resumed: Checkpoint | None,
    initial_weights: dict[str, torch.Tensor] | None = None,
) -> TrainingRun:
    """The datasets, the model, its loss, optimiser and schedule; a resumed run's state loaded into them."""
    train_set, val_set = build_datasets(config, plan, data)
    module, model = build_network(config, plan, device, resumed is not None, initial_weights)
    optimizer = build_optimizer(config, module)
    steps_per_epoch = len(make_train_loader(train_set, config, plan, 0, pin_memory=False))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(config.epochs * steps_per_epoch, config.warmup_epochs * steps_per_epoch, config.schedule)
    )
    loss = build_loss(plan.class_weights, config.loss, hard_pixels=config.hard_pixels)
    precision = dist.compute_dtype(device, config.amp)
    if precision.emulated:
        log(f"warning: {precision.describe()}; without --amp this CPU trains in float32")
    step = TrainingStep(
        model,
        loss.to(device),
        optimizer,
        scheduler,
        device,
        precision.dtype,
        config.channels_last,
        config.grad_clip,
    )
    progress = Progress()
    if resumed is not None:
        module.load_state_dict(resumed.model_state)
        optimizer.load_state_dict(resumed.optimizer_state)
        scheduler.load_state_dict(resumed.scheduler_state)
        progress = Progress(resumed.epoch, resumed.best_score, resumed.best_epoch)
        if dist.is_main_process():
            progress.seconds_before = truncate_history(run_dir / HISTORY_FILE, progress.epoch)
        log(f"resuming after epoch {progress.epoch} (best validation mean IoU so far: {progress.best_score})")
    run = TrainingRun(
        config, run_dir, log, fingerprint, plan, data, train_set, val_set, module, step, steps_per_epoch, progress
    )
    log(describe_run(run))
    return run


def describe_run(run: TrainingRun) -> str:
    """The line that says what is trained, where and how."""
    config, step = run.config, run.step
    return (
        f"model {config.model} ({sum(p.numel() for p in run.module.parameters()):,} parameters) on {step.device}, "
        f"{dist.world_size()} process(es) x batch {run.plan.per_process_batch}; crops {config.image_size}px"
        f"{f' seen at 1/{config.downsample} resolution' if config.downsample > 1 else ''}"
        f"{' by space-to-depth' if config.space_to_depth and config.downsample > 1 else ''}"
        f"{f', every image rescaled to red cells of {run.plan.reference_diameter[1]:g} px' if run.plan.reference_diameter else ''}"
        f", {config.optimizer} lr {config.learning_rate:g}, "
        f"{f'a time budget of {config.time_budget:g} min' if config.time_budget else f'{config.epochs} epochs'}, "
        f"{'mixed precision ' + str(step.amp_dtype).removeprefix('torch.') if step.amp_dtype else 'float32'}"
        f"{', channels-last' if config.channels_last else ''}{', compiled' if config.compile else ''}"
        f"{', deterministic' if config.deterministic else ''}"
    )


def run_epochs(run: TrainingRun, most_epochs: int) -> None:
    """The loop: train, validate and record epochs until the epoch count (a time budget refits it
    after every epoch, to at most ``most_epochs``) or early stopping ends it."""
    config, progress = run.config, run.progress
    budget = None
    if config.time_budget:
        calibration_images = min(config.calibration_images, len(run.data.train_pairs))
        budget = TimeBudget(
            config.time_budget,
            config.val_every,
            len(run.data.val_pairs),
            calibration_images,
            progress.seconds_before,
            ceiling=most_epochs,
        )
    writer = (
        open_tensorboard(run.run_dir, progress.epoch + 1) if config.tensorboard and dist.is_main_process() else None
    )
    while progress.epoch < run.config.epochs:  # run.config: a time budget refits the epoch count
        if stops_early(run):
            break
        result = run_epoch(run, progress.epoch + 1, budget)
        progress.epoch = result.epoch
        if result.improved:
            progress.best_score, progress.best_epoch = result.metrics.mean_iou, result.epoch
        if dist.is_main_process():
            record_epoch(run, result, writer)
        run.log(epoch_line(result, run.config.epochs))
    if writer is not None:
        writer.close()


def stops_early(run: TrainingRun) -> bool:
    """Whether ``patience`` epochs have passed without a better validation mean IoU (and say so)."""
    config, progress = run.config, run.progress
    if not (
        config.patience and progress.best_epoch is not None and progress.epoch - progress.best_epoch >= config.patience
    ):
        return False
    run.log(
        f"early stopping after epoch {progress.epoch}: the validation mean IoU has not improved for "
        f"{progress.epoch - progress.best_epoch} epochs (patience {config.patience}); best {progress.best_score:.4f} at epoch {progress.best_epoch}"
    )
    return True


def run_epoch(run: TrainingRun, epoch: int, budget: TimeBudget | None) -> EpochResult:
    """Train one epoch (then refit a time budget), and validate it when it is due."""
    config, step = run.config, run.step
    started = time.perf_counter()
    torch.manual_seed(config.seed * 100_003 + epoch)  # dropout and any other torch randomness
    loader = make_train_loader(run.train_set, config, run.plan, epoch, pin_memory=step.device.type == "cuda")
    try:
        stats = train_one_epoch(step, loader, epoch, config.epochs)
    except (MemoryError, RuntimeError) as error:
        if not is_out_of_memory(error):
            raise
        raise out_of_memory(
            step.device.type,
            f"training at batch size {config.batch_size} ({run.plan.per_process_batch} per process) on "
            f"{config.image_size}x{config.image_size} crops",
            f"lower --batch-size or --image-size; {CHECKPOINT_KEPT}",
        ) from error
    dist.broadcast_buffers(run.module)
    if dist.world_size() > 1:
        run.progress.digest = dist.check_replicas_in_sync(run.module)
    if budget is not None:  # before validation: an epoch the fit makes the last one is validated
        budget.record_training(time.perf_counter() - started)
        # Rank 0's clock decides for every process, so all train the same epochs.
        fitted = dist.all_gather_object(budget.fit(epoch))[0]
        if (
            fitted != config.epochs or len(budget.training_seconds) == 1
        ):  # and said once, after the first measured epoch
            fit_schedule_to_budget(run, fitted, budget)
            config = run.config
    metrics = None
    if run.data.val_pairs and (epoch % config.val_every == 0 or epoch == config.epochs):
        validation_started = time.perf_counter()
        metrics = dataclasses.replace(validate_epoch(run), epoch=epoch)
        if budget is not None:
            budget.record_validation(time.perf_counter() - validation_started)
    best = run.progress.best_score
    improved = metrics is not None and metrics.mean_iou is not None and (best is None or metrics.mean_iou > best)
    return EpochResult(epoch, stats, metrics, time.perf_counter() - started, step.scheduler.get_last_lr()[0], improved)


def validation_predictor(run: TrainingRun) -> Predictor:
    """The model's current weights in the predictor ``segnet evaluate`` uses (no TTA, whole images).

    The weights are copied into a plain model built from the spec, as a checkpoint's model is
    rebuilt (float32, contiguous, never wrapped or compiled), so validation computes what
    ``segnet evaluate --no-tta --diameter none`` computes on the checkpoint written from them.
    """
    if run.validation_model is None:
        run.validation_model = build_model(run.module.spec).to(run.step.device)
    run.validation_model.load_state_dict(run.module.state_dict())
    options = InferenceOptions(device=str(run.step.device), tta=False, diameter=None)
    return Predictor(
        run.validation_model, list(run.config.classes), run.plan.mean, run.plan.std, options, run.config.roles()
    )


def validate_epoch(run: TrainingRun) -> ValidationMetrics:
    """:func:`validate` the model as it is now; running out of memory names what to change."""
    try:
        return validate(validation_predictor(run), run.val_set, run.step.loss_fn)
    except (OutOfMemory, MemoryError, RuntimeError) as error:  # OutOfMemory: the predictor's, which knows no training
        if not isinstance(error, OutOfMemory) and not is_out_of_memory(error):
            raise
        height, width = max(
            (image.shape[:2] for image, _ in map(run.val_set.load, range(len(run.val_set)))),
            key=lambda shape: shape[0] * shape[1],
        )
        raise out_of_memory(
            run.step.device.type,
            f"validating whole held-out images (up to {width}x{height} px; validation does not crop)",
            f"use --amp, a smaller --model, or smaller images; {CHECKPOINT_KEPT}",
        ) from error


def record_epoch(run: TrainingRun, result: EpochResult, writer: Any) -> None:
    """Rank 0 writes the epoch: its history row and best.pt go before last.pt, so resuming from
    last.pt redoes any epoch a crash cut short."""
    metrics, run_dir = result.metrics, run.run_dir
    append_history(run_dir / HISTORY_FILE, history_row(result))
    checkpoint = run_checkpoint(run)
    if result.improved or not run.data.val_pairs:
        checkpoint.save(run_dir / BEST_CHECKPOINT)
    if result.improved:
        metrics.write(run_dir / BEST_METRICS_FILE)
    checkpoint.save(run_dir / LAST_CHECKPOINT)
    write_curves(run_dir)
    if writer is not None:
        log_tensorboard(writer, result)
        if metrics is not None:
            log_tensorboard_examples(writer, validation_predictor(run), run.val_set, result.epoch)
        writer.flush()


def run_checkpoint(run: TrainingRun) -> Checkpoint:
    """The checkpoint of the run as it stands."""
    progress, step = run.progress, run.step
    return Checkpoint.of_model(
        run.module,
        list(run.config.classes),
        list(run.plan.mean),
        list(run.plan.std),
        config=run.config.to_dict(),
        fingerprint=run.fingerprint,
        epoch=progress.epoch,
        best_score=progress.best_score,
        best_epoch=progress.best_epoch,
        optimizer_state=step.optimizer.state_dict(),
        scheduler_state=step.scheduler.state_dict(),
        training_images=sorted(pair.stem for pair in run.data.train_pairs),
    )


def epoch_line(result: EpochResult, epochs: int) -> str:
    """The epoch's line in the log."""
    stats, metrics = result.stats, result.metrics
    summary = f"epoch {result.epoch}/{epochs}: train loss {stats.loss:.4f}"
    if metrics:
        accuracy, iou = (
            f"{score:.4f}" if score is not None else "undefined"
            for score in (metrics.global_accuracy, metrics.mean_iou)
        )
        summary += f", val loss {metrics.loss:.4f}, pixel accuracy {accuracy}, mean IoU {iou}"
    return (
        f"{summary}; lr {result.lr:.2e}, {result.seconds:.0f}s ({stats.images_per_second:.1f} images/s, "
        f"{100 * stats.data_wait_fraction:.0f}% waiting for data){' *best*' if result.improved else ''}"
    )


def finish_run(run: TrainingRun) -> None:
    """Say the processes agree, and calibrate best.pt's decisions on training images (segnet.train.calibration)."""
    if run.progress.digest is not None:
        run.log(f"model weights identical on all {dist.world_size()} processes (sha256 {run.progress.digest})")
    config, best = run.config, run.run_dir / BEST_CHECKPOINT
    if dist.is_main_process() and config.calibration_images and best.is_file():
        summary = calibrate_checkpoint(
            best,
            run.data.train_pairs,
            max_images=config.calibration_images,
            options=CALIBRATION_INFERENCE.replace(device=str(run.step.device)),
            seed=config.seed,
            decoded=run.data.decoded,
        )
        run.log(format_calibration(summary))
    dist.barrier()


# ------------------------------------------------------------------------------------------------
# What the steps use
# ------------------------------------------------------------------------------------------------


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
        return torch.optim.SGD(
            model.parameters(), lr=config.learning_rate, momentum=config.momentum, weight_decay=config.weight_decay
        )
    return torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)


def compile_model(model: nn.Module, device: torch.device) -> nn.Module:
    """``torch.compile`` the model; on the CPU, Inductor builds C++ kernels and needs a compiler."""
    if device.type == "cpu" and not (os.environ.get("CXX") or shutil.which("g++") or shutil.which("clang++")):
        raise SegnetError(
            "--compile on the CPU needs a C++ compiler (g++ or clang++) on PATH; install one or train without --compile"
        )
    return torch.compile(model)


def seed_worker(worker_id: int) -> None:
    """Give each DataLoader worker its own albumentations stream, derived from the epoch's seed."""
    info = torch.utils.data.get_worker_info()
    info.dataset.transform.set_random_seed(torch.initial_seed() % 2**32)


def make_train_loader(
    dataset: SegmentationDataset, config: TrainConfig, plan: TrainPlan, epoch: int, pin_memory: bool
) -> DataLoader:
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
    per_process_batch = plan.per_process_batch
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


def train_one_epoch(step: TrainingStep, loader: DataLoader, epoch: int, epochs: int) -> EpochStats:
    """One pass over ``loader``; returns the mean training loss (over all processes) and the timings.

    With ``step.amp_dtype`` the forward pass runs under autocast; float16 needs a gradient scaler,
    bfloat16 (the same exponent range as float32) does not.
    """
    model, device, optimizer, scheduler = step.model, step.device, step.optimizer, step.scheduler
    model.train()
    scaler = torch.amp.GradScaler(device.type, enabled=step.amp_dtype == torch.float16)
    memory_format = torch.channels_last if step.channels_last else torch.contiguous_format
    # loss x images, images, seconds spent waiting for data: summed over steps, then over processes
    totals = torch.zeros(3, dtype=torch.float64, device=device)
    data_seconds = 0.0
    bar = tqdm(
        loader,
        desc=f"epoch {epoch}/{epochs}",
        unit="batch",
        leave=False,
        disable=not dist.is_main_process(),
        dynamic_ncols=True,
    )
    started = step_done = time.perf_counter()
    for images, masks in bar:
        data_seconds += time.perf_counter() - step_done
        images = images.to(device, non_blocking=True, memory_format=memory_format)
        masks = masks.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=step.amp_dtype or torch.float32, enabled=step.amp_dtype is not None):
            loss = step.loss_fn(model(images), masks)
        if not torch.isfinite(loss):
            raise SegnetError(
                f"training loss became {loss.item()} at epoch {epoch}: lower the learning rate (--lr) "
                "or check the data (segnet check); the last good checkpoint is kept"
            )
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if step.grad_clip:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), step.grad_clip)
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


@torch.inference_mode()
def validate(predictor: Predictor, dataset: SegmentationDataset, loss_fn: nn.Module) -> ValidationMetrics:
    """Score whole validation images with ``predictor``; each process takes every N-th image.

    The confusion matrix and the loss are summed over processes, so the result equals a
    single-process evaluation of the same images (no image is padded in or counted twice). The
    loss is computed from the predicted probabilities (``log p`` as logits gives the same
    cross-entropy and Dice terms as the logits).
    """
    device = predictor.device
    confusion = ConfusionMatrix(predictor.num_classes, device=device)
    loss_sum = torch.zeros(2, dtype=torch.float64, device=device)
    indices = range(dist.rank(), len(dataset), dist.world_size())
    for index in tqdm(
        indices, desc="validation", unit="image", leave=False, disable=not dist.is_main_process(), dynamic_ncols=True
    ):
        image, mask = dataset.load(index)
        proba = predictor.predict_proba(image)
        truth = torch.from_numpy(mask).to(device, torch.int64)[None]
        log_proba = torch.from_numpy(np.log(np.maximum(proba, np.finfo(np.float32).tiny)))[None].to(device)
        loss_sum += torch.tensor([loss_fn(log_proba, truth).item(), 1.0], dtype=torch.float64, device=device)
        confusion.update(truth[0], torch.from_numpy(proba.argmax(axis=0)).to(device))
    confusion.reduce_from_all_processes()
    dist.all_reduce_sum(loss_sum)
    loss = (loss_sum[0] / loss_sum[1].clamp(min=1)).item()
    return ValidationMetrics.from_confusion(confusion.mat, predictor.class_names, loss=loss)


def fit_schedule_to_budget(run: TrainingRun, epochs: int, budget: TimeBudget) -> None:
    """Set the run's epoch count to ``epochs`` (segnet.train.budget): the run's config is replaced by
    one that says so, the learning-rate schedule now ends there, and RUN/config.yaml records it."""
    config = run.config = dataclasses.replace(run.config, epochs=epochs)
    scheduler, steps_per_epoch, run_dir, log = run.step.scheduler, run.steps_per_epoch, run.run_dir, run.log
    factor = lr_lambda(epochs * steps_per_epoch, config.warmup_epochs * steps_per_epoch, config.schedule)
    scheduler.lr_lambdas = [factor] * len(scheduler.lr_lambdas)
    # The scheduler has already set the next step's rate from the old count: set it from the new one.
    for group, base_lr in zip(scheduler.optimizer.param_groups, scheduler.base_lrs):
        group["lr"] = base_lr * factor(scheduler.last_epoch)
    if dist.is_main_process():
        with atomic_write(run_dir / CONFIG_FILE, "run config") as temporary:
            save_config(config, temporary)
    capped = " (the most --epochs allows)" if epochs == budget.ceiling else ""
    log(
        f"time budget {config.time_budget:g} min: {epochs} epoch{'' if epochs == 1 else 's'} fit{capped} ({budget.epoch_time:.0f}s per epoch, "
        f"{max(0.0, budget.seconds_left()) / 60:.1f} min left, {budget.reserve / 60:.1f} min kept for the last validation "
        "and calibration); "
        f"the {config.schedule} learning-rate schedule ends at epoch {epochs}"
    )
