"""One training config: defaults here, overridden by a YAML file, overridden by command-line flags.

The fully resolved config (data-derived values filled in) is written to ``RUN/config.yaml`` and
stored in every checkpoint. Fields left ``None`` are derived from the dataset fingerprint at the
start of training (see :func:`segnet.plan.make_plan`; RUN/plan.json records them).
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic.dataclasses import dataclass as pydantic_dataclass

from segnet.core.errors import SegnetError
from segnet.core.readback import read_bounded_text
from segnet.data.classes import DEFAULT_CLASSES, ROLES, ClassRoles
from segnet.plan.retired import without_retired
from segnet.plan.spec import DEFAULT_MODEL, LARGEST_DOWNSAMPLE, MODEL_NAMES, model_names

OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine", "poly", "none")
CLASS_WEIGHTING_NAMES: dict[str, str] = {
    "median": "median frequency",
    "sqrt-median": "square-root median frequency",
    "none": "unweighted",
}
"""Each class weighting (``--class-weights``) and what it is, in words (``segnet check`` labels its weights so)."""
CLASS_WEIGHTINGS = tuple(CLASS_WEIGHTING_NAMES)
DEFAULT_CLASS_WEIGHTING = "sqrt-median"
LOSSES = ("ce", "ce+dice")
GROUPS = ("data", "model", "optimisation", "hardware", "output")
"""The argument groups of ``segnet train --help``, in order; every option belongs to one."""


def option(
    default: Any = None,
    help: str = "",
    group: str = "data",
    *,
    flag: bool = True,
    factory: Any = None,
    choices: tuple[str, ...] | None = None,
    **limits: Any,
) -> Any:
    """A config field: its default, its ``--help`` text and group, and its limits (pydantic ``Field``).

    ``flag=False``: YAML only (no command-line flag). The help of a field whose default is ``None``
    says what ``None`` means; other defaults are appended to the help by the flag generator.
    ``choices``: the flag's choices where the field's type is no ``Literal`` (a value checked by a validator).
    """
    extra = {"group": group, "flag": flag, "choices": choices}
    if factory is not None:
        return Field(default_factory=factory, description=help, json_schema_extra=extra, **limits)
    return Field(default=default, description=help, json_schema_extra=extra, **limits)


MAX_COUNT = 1_000_000
"""The most of anything counted in a config (epochs, images per step, folds, ...): far beyond any
run, and small enough that no loop over it hangs or overflows."""
_Positive = Annotated[int, Field(ge=1, le=MAX_COUNT)]
_Count = Annotated[int, Field(ge=0, le=MAX_COUNT)]

# The ranges of numbers given outside a TrainConfig too (synth, predict, the napari widget): each is
# checked where it is parsed, from these definitions (segnet.cli.bounded, load_config).
MAX_SEED = 2**32 - 1
Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]
"""A random seed: one that numpy's and torch's generators both take."""
MIN_PIXEL_SIZE_UM, MAX_PIXEL_SIZE_UM = 1e-4, 100.0
PixelSize = Annotated[float, Field(ge=MIN_PIXEL_SIZE_UM, le=MAX_PIXEL_SIZE_UM, allow_inf_nan=False)]
"""Micrometres per pixel: 0.1 nm to 0.1 mm, beyond any light microscope either way (darkfield: 0.05-2)."""
ScaleFactor = Annotated[float, Field(ge=0.25, le=4.0, allow_inf_nan=False)]
"""A training crop's random rescaling factor: beyond 4x either way a crop is mostly padding or a few pixels."""
MAX_IMAGE_SIDE = 4096
SyntheticSide = Annotated[int, Field(ge=8, le=MAX_IMAGE_SIDE)]
"""The side of a synthetic image (``segnet synth --size``): a 4096-pixel image takes a few GB to draw."""


def _known_model(name: str) -> str:
    """A built-in model, or one registered in this process (:func:`segnet.model.register_model`)."""
    if name not in model_names():
        raise ValueError(f"should be one of {', '.join(model_names())}")
    return name


def _no_budget_as_zero(value: Any) -> Any:
    """``time_budget: null``, as runs from before the budget default wrote it, is no budget: 0."""
    return 0.0 if value is None else value


# Strict: YAML's true is no batch size, "no" no boolean and 1.5 no epoch count; NaN and infinity no
# number. YAML values and flags go through the same checks (load_config).
@pydantic_dataclass(config=ConfigDict(strict=True, allow_inf_nan=False), frozen=True)
class TrainConfig:
    """Every hyperparameter of a training run. ``None`` means "derive from the data"."""

    data: str = option("", "dataset folder with images/ and masks/ (or flattened_masks/)")
    classes: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=2)] = option(
        help="class names, index order", factory=lambda: list(DEFAULT_CLASSES)
    )
    mask_palette: (
        dict[str, Annotated[list[Annotated[int, Field(ge=0, le=255)]], Field(min_length=3, max_length=3)]] | None
    ) = option(None, "class name -> RGB, for colour masks", flag=False)
    class_roles: dict[str, Literal[ROLES]] | None = option(
        None,
        "class name -> background, solid or thin (segnet.plan.config.ROLES; default: the darkfield roles by name)",
        flag=False,
    )
    val_fraction: float = option(0.1, "share of images held out for validation", ge=0, lt=1)
    folds: _Positive | None = option(
        None,
        "K-fold cross-validation: train K models into RUN/fold_1 .. RUN/fold_K and summarise them (default: one split)",
        ge=2,
    )
    skip_bad: bool = option(
        False, "train without the image/mask pairs that 'segnet check' finds problems with, listing them"
    )
    seed: Seed = option(0, "seed for the split, the weights and augmentation")
    image_size: int | None = option(
        None,
        "training crop side in image pixels (default: from the data, at most 256 x downsample)",
        ge=16,
        le=MAX_IMAGE_SIDE,
    )
    scale_range: Annotated[list[ScaleFactor], Field(min_length=2, max_length=2)] = option(
        help="random rescaling of the training crops, lowest and highest factor",
        factory=lambda: [0.75, 1.25],
        flag=False,
    )
    focus_probability: float = option(0.33, "share of crops centred on the rarest class", ge=0, le=1, flag=False)
    scale_to_reference: bool = option(
        False,
        "rescale each training image so its red cells (the first solid class) come to the training masks' median "
        "diameter, measured on its own mask, before the random scale: low-magnification filaments are learnt at a "
        "thickness the network resolves (predict with --diameter auto)",
    )

    model: Annotated[str, AfterValidator(_known_model)] = option(
        DEFAULT_MODEL, "architecture", "model", choices=MODEL_NAMES
    )
    downsample: _Positive | None = option(
        None,
        "the model works at 1/K of the image resolution, outputs at full size (default: from the data: "
        "the thinnest class's median thickness / 3, at most 4, so 3 on the real darkfield images)",
        "model",
        le=LARGEST_DOWNSAMPLE,
    )
    space_to_depth: bool = option(
        False,
        "reach 1/K by rearranging each K x K block into channels (pixel_unshuffle) instead of averaging it, and draw "
        "full-resolution logits with a sub-pixel head, so faint filaments thinner than K pixels reach the network",
        "model",
    )
    init: str | None = option(
        None,
        "fine-tune: start from the weights of this checkpoint (RUN/best.pt) or built-in model (see 'segnet models', e.g. "
        "darkfield); same model and classes; the downsample still comes from your data (default: random weights)",
        "model",
        min_length=1,
    )
    pretrained: str | None = option(
        None, "local VGG16-BN state dict (torchvision key layout) to initialise the segnet encoder", "model"
    )

    # the U-Net at downsample 3 on the real images: 60 epochs of 264 images take 34 minutes on one core with native bf16
    epochs: _Positive = option(60, "training epochs: the most a time budget trains", "optimisation")
    # The user's recipe ends within about an hour on any 2-core CPU; where it computes in float32
    # (no native bf16) the budget, not the epoch count, ends it (issue "The first hour").
    time_budget: Annotated[float, BeforeValidator(_no_budget_as_zero)] = option(
        60.0,
        "minutes of wall-clock training: the epoch count (at most --epochs) and the learning-rate schedule are fitted to "
        "it from the measured epoch time (logged, and written to config.yaml); 0: exactly --epochs; per fold with --folds",
        "optimisation",
        ge=0,
        le=MAX_COUNT,
    )
    # measured on the real images: twice the steps of 8 at the same images/s, +0.05 mean IoU in 26 epochs
    batch_size: _Positive = option(4, "images per step, over all processes", "optimisation")
    optimizer: Literal[OPTIMIZERS] = option(
        "adamw", "optimiser (sgd uses momentum as in the paper)", "optimisation", flag=False
    )
    lr: float | None = option(None, "learning rate (default: 1e-3 for adamw, 0.05 for sgd)", "optimisation", gt=0)
    momentum: float = option(0.9, "sgd momentum", "optimisation", ge=0, lt=1, flag=False)
    weight_decay: float = option(1e-4, "weight decay", "optimisation", ge=0, le=1, flag=False)
    schedule: Literal[SCHEDULES] = option("cosine", "learning-rate schedule after warm-up", "optimisation", flag=False)
    warmup_epochs: _Count = option(1, "epochs of linear learning-rate warm-up", "optimisation", flag=False)
    class_weights: Literal[CLASS_WEIGHTINGS] = option(
        DEFAULT_CLASS_WEIGHTING,
        "loss class weights: " + "; ".join(f"{key}: {name}" for key, name in CLASS_WEIGHTING_NAMES.items()),
        "optimisation",
    )
    # measured: benchmarks/loss_choices.py
    loss: Literal[LOSSES] = option(
        "ce+dice",
        "cross-entropy, alone or plus soft Dice",
        "optimisation",
    )
    hard_pixels: float | None = option(
        None,
        "online hard-example mining: the cross-entropy averages only this share of each batch's labelled pixels, "
        "those predicted worst (e.g. 0.25), so faint filaments outweigh the easy background (default: all pixels)",
        "optimisation",
        gt=0,
        le=1,
    )
    grad_clip: float | None = option(
        None,
        "clip the gradient norm to this value (default: no clipping)",
        "optimisation",
        gt=0,
        le=1e6,
        flag=False,
    )
    patience: _Positive | None = option(
        None,
        "stop early after this many epochs without a better validation mean IoU (default: train all epochs)",
        "optimisation",
    )
    calibration_images: int = option(
        32,
        "after training, set per-class logit offsets for the best mean IoU on up to this many training images; 0: off",
        "optimisation",
        ge=0,
        le=MAX_COUNT,
    )

    amp: bool | None = option(
        None,
        "mixed precision (default: bfloat16 where the CPU/GPU computes it natively; --amp on a CPU without native bf16 "
        "emulates it, tens of times slower, and warns)",
        "hardware",
    )
    channels_last: bool | None = option(
        None,
        "NHWC memory layout (default: on GPUs and AVX-512 CPUs, where it is faster; off on AVX2 CPUs, where it is "
        "slower)",
        "hardware",
        flag=False,
    )
    compile: bool = option(
        False,
        "torch.compile the training step: faster steps after a compile of a minute or more",
        "hardware",
        flag=False,
    )
    deterministic: bool = option(
        False,
        "bit-for-bit repeatable training: deterministic kernels, slower on GPUs",
        "hardware",
        flag=False,
    )
    device: str = option("auto", "auto, cpu or cuda", "hardware", min_length=1)
    num_workers: int = option(2, "data loading worker processes", "hardware", ge=0, le=1024)

    out: str = option("", "run folder for checkpoints, history and config", "output")
    val_every: _Positive = option(1, "validate every N epochs", "output")
    tensorboard: bool = option(
        False, "also write TensorBoard scalars and example predictions to RUN/tensorboard", "output"
    )

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
        shared = [name for name, rgb in self.mask_palette.items() if list(self.mask_palette.values()).count(rgb) > 1]
        if shared:  # a colour of two classes would read all of one as the other
            raise SegnetError(f"mask_palette gives {', '.join(shared)} the same colour; each class needs its own")
        return {self.classes.index(name): list(rgb) for name, rgb in self.mask_palette.items()}

    def roles(self) -> ClassRoles:
        """The classes' roles in counting (``class_roles``, else the darkfield roles by name)."""
        return ClassRoles.of(self.classes, self.class_roles)


def saved_palette(saved_config: Mapping[str, Any] | None, class_names: Sequence[str]) -> dict[int, list[int]] | None:
    """The colour-mask palette a run was trained with (its saved config's ``mask_palette``), keyed by class index."""
    return TrainConfig(
        classes=list(class_names), mask_palette=(saved_config or {}).get("mask_palette")
    ).palette_by_index()


def saved_roles(saved_config: Mapping[str, Any] | None, class_names: Sequence[str]) -> ClassRoles:
    """The class roles of a run (its saved config's ``class_roles``; older runs: the darkfield roles by name)."""
    return ClassRoles.of(class_names, (saved_config or {}).get("class_roles"))


FIELD_NAMES = {f.name for f in dataclasses.fields(TrainConfig)}


@dataclass(frozen=True)
class OptionInfo:
    """One config option as a command-line flag (``segnet.cli`` builds ``train``'s flags from these).

    Attributes:
        name, group, help, default: the field's name, argument group, help text and default value.
        kind: ``bool``, ``int``, ``float`` or ``str``: the type of one value.
        many: a list of values (``nargs="+"``).
        choices: the allowed values of a choice option, else ``None``.
    """

    name: str
    group: str
    help: str
    default: Any
    kind: type
    many: bool
    choices: tuple[str, ...] | None


def _scalar(annotation: Any) -> Any:
    """The annotation without ``None``, ``Annotated`` limits and (for lists) the list."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        (annotation,) = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
    if typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def config_options() -> list[OptionInfo]:
    """Every option that has a command-line flag, in the order of :class:`TrainConfig`."""
    options = []
    for name, info in TrainConfig.__pydantic_fields__.items():
        if not info.json_schema_extra["flag"]:
            continue
        annotation = _scalar(info.annotation)
        many = typing.get_origin(annotation) is list
        value_type = _scalar(typing.get_args(annotation)[0]) if many else annotation
        literal = typing.get_origin(value_type) is Literal
        default = info.default_factory() if info.default_factory is not None else info.default
        options.append(
            OptionInfo(
                name=name,
                group=info.json_schema_extra["group"],
                help=info.description,
                default=default,
                kind=str if literal else value_type,
                many=many,
                choices=typing.get_args(value_type) if literal else info.json_schema_extra["choices"],
            )
        )
    return options


def yaml_only_options() -> list[str]:
    """The options without a command-line flag (set them in the YAML config or with ``--set``)."""
    return [name for name, info in TrainConfig.__pydantic_fields__.items() if not info.json_schema_extra["flag"]]


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader (no tags that build Python objects), refusing a key given twice.

    PyYAML keeps the last of repeated keys, so ``epochs: 2`` above ``epochs: 60`` would be lost silently.
    Aliases (``*name``) are refused: a config needs none, and nested ones ("billion laughs") expand
    to more values than memory holds once the config is checked.
    """

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not accepted in a config", mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Hashable] = set()
        # A tag such as !!set on a scalar gets here with no pairs: PyYAML refuses that below.
        for key_node, _ in node.value if isinstance(node, yaml.MappingNode) else []:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, Hashable):
                continue  # PyYAML refuses it below
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key!r} is given twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def read_config_file(path: Path) -> dict[str, Any]:
    """The option: value mapping of a YAML config file; any problem is one line naming the file.

    A retired option (a run's config.yaml from before :mod:`segnet.plan.retired`) is left out where
    it holds its neutral value.

    Raises:
        SegnetError: the file cannot be read, is not YAML, is not a mapping, names unknown options
            or sets a retired one.
    """
    text = read_bounded_text(path, "config")
    try:
        loaded = yaml.load(text, Loader=_UniqueKeyLoader)
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
    loaded = without_retired(loaded, path)
    unknown = sorted((key for key in loaded if key not in FIELD_NAMES), key=str)
    if unknown:
        raise SegnetError(f"{path}: unknown config keys {unknown}; valid keys: {', '.join(sorted(FIELD_NAMES))}")
    return loaded


def parse_setting(text: str) -> tuple[str, Any]:
    """One ``--set KEY=VALUE``: an option's name and its value, read as in a YAML config (``true``,
    ``0.95``, ``[0.5, 2.0]``); it is checked with the others by :func:`load_config`.

    Raises:
        SegnetError: no ``=``, an unknown option (the nearest names suggested), or a value YAML cannot read.
    """
    key, sep, value = text.partition("=")
    key = key.strip().replace("-", "_")
    if not sep or not key:
        raise SegnetError(f"--set {text}: expected KEY=VALUE, e.g. --set momentum=0.95")
    if key not in FIELD_NAMES:
        near = difflib.get_close_matches(key, sorted(FIELD_NAMES), n=1)
        hint = f" (did you mean {near[0]}?)" if near else ""
        raise SegnetError(f"--set {text}: there is no option {key}{hint}")
    try:
        return key, _numbers_as_numbers(yaml.safe_load(value))
    except yaml.YAMLError as error:
        raise SegnetError(f"--set {text}: the value is no YAML value ({error.problem or error})") from None


def _numbers_as_numbers(value: Any) -> Any:
    """``1e-3`` as a float: PyYAML (YAML 1.1) reads exponents without a dot as strings."""
    if isinstance(value, list):
        return [_numbers_as_numbers(item) for item in value]
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def load_config(
    path: str | Path | None = None, overrides: dict[str, Any] | None = None, settings: dict[str, Any] | None = None
) -> TrainConfig:
    """Defaults, then the YAML file at ``path``, then ``overrides`` (flags; ``None`` values skipped)
    and ``settings`` (``--set``, any option; one given both ways is refused).

    Every value is checked against its option's type and limits, YAML and flags alike.

    Raises:
        SegnetError: one line naming where the value came from (the file, the flag or --set), the
            option, the value and what is expected.
    """
    from_file = read_config_file(Path(path)) if path is not None else {}
    flags = {key: value for key, value in (overrides or {}).items() if value is not None}
    settings = settings or {}
    if twice := sorted(set(flags) & set(settings)):
        raise SegnetError(f"--set {twice[0]}: given as --{twice[0].replace('_', '-')} too; give it once")
    flags.update(settings)
    values = {**from_file, **flags}
    try:
        config = TrainConfig(**values)
    except ValidationError as error:
        first = error.errors()[0]
        key = str(first["loc"][0])
        flag = f"--set {key}" if key in settings else f"--{key.replace('_', '-')}"
        where = flag if key in flags else (str(path) if path is not None else "config")
        expected = (
            first["msg"].replace(" after validation", "").removeprefix("Value error, ")
        )  # a validator's own words
        raise SegnetError(
            f"{where}: {key} = {values.get(key)!r} is refused: {expected[0].lower()}{expected[1:]}"
        ) from None
    validate(config)
    return config


def validate(config: TrainConfig) -> None:
    """What one option's type cannot say: class names are distinct, the palette and the roles name
    classes, the scale range runs from low to high."""
    if len(set(config.classes)) != len(config.classes):
        raise SegnetError(f"classes must list at least two distinct names, got {config.classes}")
    if config.scale_range[0] > config.scale_range[1]:
        raise SegnetError(f"scale_range must give the lowest factor first, got {config.scale_range}")
    config.palette_by_index()
    config.roles()


def save_config(config: TrainConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
