"""One training config: defaults here, overridden by a YAML file, overridden by command-line flags.

The fully resolved config (data-derived values filled in) is written to ``RUN/config.yaml`` and
stored in every checkpoint. Fields left ``None`` are derived from the dataset fingerprint at the
start of training (see ``segnet.train.resolve_data_defaults``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from segnet import DEFAULT_CLASSES
from segnet.errors import SegnetError
from segnet.spec import DEFAULT_MODEL


@dataclass
class TrainConfig:
    """Every hyperparameter of a training run. ``None`` means "derive from the data"."""

    data: str = ""
    out: str = ""
    model: str = DEFAULT_MODEL
    classes: list[str] = field(default_factory=lambda: list(DEFAULT_CLASSES))
    mask_palette: dict[str, list[int]] | None = None  # class name -> RGB, for colour masks
    pretrained: str | None = None  # local VGG16-BN state dict for the segnet encoder

    epochs: int = 60  # segnet-basic at downsample 3 on the real images: about 50 minutes on 2 CPU cores
    time_budget: float | None = None  # minutes of training; the epoch count is fitted to it (segnet.budget); None: train `epochs`
    batch_size: int = 4  # measured on the real images: twice the steps of 8 at the same images/s, +0.05 mean IoU in 26 epochs
    image_size: int | None = None  # training crop side; None: from the fingerprint
    downsample: int | None = None  # the model works at 1/downsample resolution; None: from the thinnest class's thickness
    scale_range: list[float] = field(default_factory=lambda: [0.75, 1.25])
    focus_probability: float = 0.33  # share of crops centred on the rarest class

    optimizer: str = "adamw"  # adamw | sgd
    lr: float | None = None  # None: 1e-3 for adamw, 0.05 for sgd
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "cosine"  # cosine | poly | none
    warmup_epochs: int = 1
    class_weights: str = "sqrt-median"  # median | sqrt-median | none
    loss: str = "ce+dice"  # ce | ce+dice (measured: benchmarks/loss_choices.py)
    grad_clip: float | None = None  # clip the gradient norm to this value; None: no clipping
    calibration_images: int = 32  # training images that set the logit offsets after training (segnet.calibration); 0: off

    amp: bool | None = None  # mixed precision; None: on where the device computes bf16 natively
    channels_last: bool = True  # NHWC memory layout: faster convolutions on CPU (oneDNN) and GPU
    compile: bool = False  # torch.compile the training step: faster steps after a compile of a minute or more
    deterministic: bool = False  # bit-for-bit repeatable runs (deterministic kernels, slower on GPU)

    val_fraction: float = 0.1
    val_every: int = 1
    patience: int | None = None  # stop after this many epochs without a better validation mean IoU
    seed: int = 0
    device: str = "auto"
    num_workers: int = 2
    skip_bad: bool = False  # leave out the image/mask pairs that segnet check finds problems with
    tensorboard: bool = False  # also write TensorBoard scalars and example predictions to RUN/tensorboard

    @property
    def learning_rate(self) -> float:
        """The configured learning rate, or the optimiser's default."""
        if self.lr is not None:
            return self.lr
        return 0.05 if self.optimizer == "sgd" else 1e-3

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def palette_by_index(self) -> dict[int, list[int]] | None:
        """``mask_palette`` keyed by class index, as the mask readers take it."""
        if not self.mask_palette:
            return None
        unknown = [name for name in self.mask_palette if name not in self.classes]
        if unknown:
            raise SegnetError(f"mask_palette names classes that are not in classes: {unknown}")
        return {self.classes.index(name): list(rgb) for name, rgb in self.mask_palette.items()}


FIELD_NAMES = {f.name for f in dataclasses.fields(TrainConfig)}
CHOICES = {
    "optimizer": ("adamw", "sgd"),
    "schedule": ("cosine", "poly", "none"),
    "class_weights": ("median", "sqrt-median", "none"),
    "loss": ("ce", "ce+dice"),
}


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader (no tags that build Python objects), refusing a key given twice.

    PyYAML keeps the last of repeated keys, so ``epochs: 2`` above ``epochs: 60`` would be lost silently.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Hashable] = set()
        # A tag such as !!set on a scalar gets here with no pairs: PyYAML refuses that below.
        for key_node, _ in node.value if isinstance(node, yaml.MappingNode) else []:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, Hashable):
                continue  # PyYAML refuses it below
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"the key {key!r} is given twice", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def read_config_file(path: Path) -> dict[str, Any]:
    """The option: value mapping of a YAML config file; any problem is one line naming the file.

    Raises:
        SegnetError: the file cannot be read, is not YAML, is not a mapping, or names unknown options.
    """
    try:
        loaded = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise SegnetError(f"{path}: cannot read config ({reason})") from error
    except yaml.MarkedYAMLError as error:  # PyYAML's message spans lines: keep the problem and where
        mark = error.problem_mark or error.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SegnetError(f"{path}: not a valid YAML config{where}: {error.problem or error.context}") from error
    except yaml.YAMLError as error:
        raise SegnetError(f"{path}: not a valid YAML config ({' '.join(str(error).split())})") from error
    if loaded is None:  # an empty file
        return {}
    if not isinstance(loaded, dict):
        raise SegnetError(f"{path}: a config must be a mapping of option: value")
    unknown = sorted((key for key in loaded if key not in FIELD_NAMES), key=str)
    if unknown:
        raise SegnetError(f"{path}: unknown config keys {unknown}; valid keys: {', '.join(sorted(FIELD_NAMES))}")
    return loaded


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Defaults, then the YAML file at ``path``, then ``overrides`` (flags; ``None`` values skipped)."""
    values: dict[str, Any] = {}
    if path is not None:
        values.update(read_config_file(Path(path)))
    values.update({key: value for key, value in (overrides or {}).items() if value is not None})
    config = TrainConfig(**values)
    validate(config)
    return config


def validate(config: TrainConfig) -> None:
    """Reject values that would fail later, naming the option and the valid choices."""
    for name, allowed in CHOICES.items():
        if getattr(config, name) not in allowed:
            raise SegnetError(f"{name} must be one of {', '.join(allowed)}, got '{getattr(config, name)}'")
    if len(config.classes) < 2 or len(set(config.classes)) != len(config.classes):
        raise SegnetError(f"classes must list at least two distinct names, got {config.classes}")
    if not 0 <= config.val_fraction < 1:
        raise SegnetError(f"val_fraction must be in [0, 1), got {config.val_fraction}")
    for name in ("epochs", "batch_size", "val_every"):
        if getattr(config, name) < 1:
            raise SegnetError(f"{name} must be at least 1, got {getattr(config, name)}")
    if config.image_size is not None and config.image_size < 16:
        raise SegnetError(f"image_size must be at least 16, got {config.image_size}")
    if config.downsample is not None and config.downsample < 1:
        raise SegnetError(f"downsample must be at least 1, got {config.downsample}")
    if config.time_budget is not None and not config.time_budget > 0:
        raise SegnetError(f"time_budget must be a positive number of minutes, got {config.time_budget}")
    if config.patience is not None and config.patience < 1:
        raise SegnetError(f"patience must be at least 1 epoch, got {config.patience}")
    if config.grad_clip is not None and not config.grad_clip > 0:
        raise SegnetError(f"grad_clip must be a positive gradient norm, got {config.grad_clip}")
    if config.calibration_images < 0:
        raise SegnetError(f"calibration_images must be 0 (off) or more, got {config.calibration_images}")
    if config.num_workers < 0:
        raise SegnetError(f"num_workers must be 0 or more, got {config.num_workers}")


def save_config(config: TrainConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
