"""The ``segnet`` command line: it parses arguments and calls the typed functions of each module.

Errors the user can fix (:class:`~segnet.core.errors.SegnetError`) print as one line, without a
traceback unless ``--debug`` is given. Heavy modules are imported inside each command so that
``segnet --help`` answers at once.
"""

from __future__ import annotations

import argparse
import difflib
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from segnet import __version__
from segnet.core.errors import SegnetError
from segnet.data.classes import DEFAULT_CLASSES, MIN_AREA
from segnet.model.builtin import BUILTIN_MODELS, DEFAULT_BUILTIN_MODEL, is_builtin, resolve_checkpoint
from segnet.model.options import (
    AS_GIVEN_DIAMETER,
    AUTO_DIAMETER,
    DEFAULT_INFERENCE,
    InferenceOptions,
    diameter_text,
    parse_diameter,
)
from segnet.plan.config import (
    MAX_IMAGE_SIDE,
    MAX_PIXEL_SIZE_UM,
    MAX_SEED,
    MIN_PIXEL_SIZE_UM,
    PixelSize,
    Seed,
    SyntheticSide,
    yaml_only_options,
)
from segnet.plan.retired import retired_flag
from segnet.plan.spec import DEFAULT_MODEL
from segnet.workflow.demo import DEMO_TIME_BUDGET

if TYPE_CHECKING:
    from segnet.predict.tables import Shard


class _Parser(argparse.ArgumentParser):
    """An argument parser that answers a mistyped option with the option meant.

    argparse reports an unknown option only after the required ones, and from the top-level
    parser, which knows no subcommand's options: so each (sub)parser checks its own arguments.
    """

    def parse_known_args(
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        self._given = list(sys.argv[1:] if args is None else args)
        parsed, extras = super().parse_known_args(args, namespace)
        unknown = self._unknown_options(extras)
        if unknown:
            self._fail(self._typo_message(unknown))
        return parsed, extras

    def error(self, message: str) -> NoReturn:
        # "--checkpoint is required" hides the cause when --checkpoint was given, mistyped.
        unknown = self._unknown_options(getattr(self, "_given", []))
        if unknown and message.startswith("the following arguments are required"):
            self._fail(self._typo_message(unknown))
        super().error(message)

    def _option_strings(self) -> list[str]:
        return [option for option in self._option_string_actions if option.startswith("--")]

    def _unknown_options(self, arguments: Sequence[str]) -> list[str]:
        """The ``--options`` in ``arguments`` (up to a bare ``--``) that are none of this parser's, nor an abbreviation of one."""
        options = self._option_strings()
        unknown = []
        for argument in arguments:
            if argument == "--":
                break
            name = argument.split("=", 1)[0]
            if name.startswith("--") and not any(option.startswith(name) for option in options):
                unknown.append(name)
        return unknown

    def _typo_message(self, unknown: Sequence[str]) -> str:
        first = unknown[0]
        retired = retired_flag(first)  # not "did you mean --weight-decay?" for --ema-decay
        if retired is not None:
            return f"unknown option {first}: {retired}"
        meant = difflib.get_close_matches(first, self._option_strings(), n=1)
        hint = f"; did you mean {meant[0]}?" if meant else f"; see '{self.prog} --help'"
        return f"unknown option {first}{hint}"

    def _fail(self, message: str) -> NoReturn:
        # One line, without the usage: the message already names what to type.
        self.exit(2, f"{self.prog}: error: {message}\n")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def bounded(kind: Any) -> Callable[[str], Any]:
    """An argparse type for a number type of :mod:`segnet.plan.config` (``Seed``, ``PixelSize``, ...):
    the flag's text is parsed and checked against that type's range, so the flag and the YAML
    config refuse the same values."""
    from pydantic import TypeAdapter, ValidationError

    adapter = TypeAdapter(kind)

    def parse(text: str) -> Any:
        try:
            return adapter.validate_python(text)
        except ValidationError as error:
            expected = error.errors()[0]["msg"]
            raise argparse.ArgumentTypeError(f"{text!r} is refused: {expected[0].lower()}{expected[1:]}") from None

    return parse


def _diameter(text: str) -> float | str | None:
    try:
        return parse_diameter(text)
    except SegnetError as error:
        raise argparse.ArgumentTypeError(str(error).removeprefix("the cell diameter ")) from None


def _add_inference_options(parser: argparse.ArgumentParser) -> None:
    """The flags of :class:`~segnet.model.options.InferenceOptions`, with its defaults (read back by :func:`_inference_options`)."""
    parser.add_argument(
        "--device",
        default=DEFAULT_INFERENCE.device,
        help="auto (CUDA if available), cpu or cuda (default: %(default)s)",
    )
    parser.add_argument(
        "--tile",
        type=_positive_int,
        default=DEFAULT_INFERENCE.tile,
        help="segment in tiles of this many pixels, blended with a Gaussian weight (default: whole image)",
    )
    parser.add_argument(
        "--overlap", type=float, default=DEFAULT_INFERENCE.overlap, help="tile overlap fraction (default: %(default)s)"
    )
    parser.add_argument(
        "--batch-size",
        type=_positive_int,
        default=DEFAULT_INFERENCE.batch_size,
        help="tiles per forward pass (default: %(default)s)",
    )
    parser.add_argument(
        "--tta",
        action=argparse.BooleanOptionalAction,
        default=DEFAULT_INFERENCE.tta,
        help="test-time augmentation: average the probabilities over the 8 flips and 90-degree rotations, "
        f"8x the compute (default: {'on; --no-tta for one plain pass' if DEFAULT_INFERENCE.tta else 'off'})",
    )
    parser.add_argument(
        "--mc-samples",
        type=int,
        default=DEFAULT_INFERENCE.mc_samples,
        help="Monte Carlo dropout samples for bayesian models; predict writes uncertainty maps (default: off)",
    )
    parser.add_argument(
        "--diameter",
        type=_diameter,
        default=DEFAULT_INFERENCE.diameter,
        metavar="PX|auto|none",
        help="the red cells' diameter in the images, in pixels: each image is resized so they come to the size the model "
        f"was trained at (images of another magnification); '{AUTO_DIAMETER}': estimated per image from a first pass "
        f"(up to 3x the compute; a model that records no cell size segments as given); '{AS_GIVEN_DIAMETER}': each "
        f"image as given (default: {diameter_text(DEFAULT_INFERENCE.diameter)})",
    )


def _inference_options(args: argparse.Namespace, device: str | None = None) -> InferenceOptions:
    """The inference options the flags of :func:`_add_inference_options` give (``device`` overrides ``--device``)."""
    return InferenceOptions(
        device=device or args.device,
        tile=args.tile,
        overlap=args.overlap,
        batch_size=args.batch_size,
        tta=args.tta,
        mc_samples=args.mc_samples,
        diameter=args.diameter,
    )


def _add_ignore_index(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ignore-index", type=int, help="mask value of unlabelled pixels, skipped by the metrics")


def _add_classes(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--classes",
        nargs="+",
        help=f"class names in index order (default: from --config, else {' '.join(DEFAULT_CLASSES)})",
    )


def _add_min_area(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--min-area",
        type=int,
        default=MIN_AREA,
        help="objects smaller than this many pixels are not counted (default: %(default)s)",
    )


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    """One flag per option of :class:`~segnet.plan.config.TrainConfig`, in its argument groups.

    Every flag defaults to ``None`` (not given), so the YAML file and then the config's own
    default apply; the help shows that default, and the config checks every value.
    """
    from segnet.plan.config import GROUPS, config_options

    groups = {name: parser.add_argument_group(f"{name} options") for name in GROUPS}
    for option in config_options():
        flag = "--" + option.name.replace("_", "-")
        default = " ".join(map(str, option.default)) if option.many else option.default
        shown = (
            ""
            if option.default in (None, "")
            else f" (default: {'on' if default is True else 'off' if default is False else default})"
        )
        help_text = (option.help + shown).replace("%", "%%")
        group = groups[option.group]
        if option.kind is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            group.add_argument(
                flag, type=option.kind, nargs="+" if option.many else None, choices=option.choices, help=help_text
            )


def _builtin_names() -> str:
    return ", ".join(BUILTIN_MODELS)


def build_parser() -> argparse.ArgumentParser:
    """The ``segnet`` parser: global flags, then one subcommand per ``_add_*_command``."""
    parser = _Parser(
        prog="segnet",
        description="Train and run SegNet to segment darkfield microscopy images into background, "
        "red blood cells and spirochetes, and count them.",
    )
    parser.add_argument("--version", action="version", version=f"segnet {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_command in (
        _add_synth_command,
        _add_train_command,
        _add_evaluate_command,
        _add_score_command,
        _add_calibrate_command,
        _add_predict_command,
        _add_export_command,
        _add_report_command,
        _add_check_command,
        _add_models_command,
        _add_demo_command,
    ):
        add_command(commands)
    return parser


def _add_synth_command(commands: argparse._SubParsersAction) -> None:
    synth = commands.add_parser("synth", help="write a synthetic darkfield dataset (images/ and masks/)")
    synth.add_argument("dir", type=Path, help="output folder")
    synth.add_argument("--count", type=_positive_int, default=40, help="number of images (default: %(default)s)")
    synth.add_argument(
        "--size",
        type=bounded(SyntheticSide),
        default=256,
        help=f"image side in pixels, 8 to {MAX_IMAGE_SIDE} (default: %(default)s)",
    )
    synth.add_argument(
        "--seed", type=bounded(Seed), default=0, help=f"random seed, 0 to {MAX_SEED} (default: %(default)s)"
    )


def _add_train_command(commands: argparse._SubParsersAction) -> None:
    train = commands.add_parser(
        "train",
        help="train a model on a folder of labelled images",
        description="Train a model. Options not given come from --config, then from defaults; data-dependent "
        "defaults (crop size, normalisation, class weights) come from the dataset fingerprint. "
        "Under torchrun the same command trains on several processes.",
    )
    train.add_argument(
        "--config", type=Path, help="YAML file of options (flags win over it; every option below can go in it)"
    )
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    train.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    train.add_argument(
        "--set",
        nargs="+",
        metavar="KEY=VALUE",
        help="any option as the YAML config writes it, e.g. --set momentum=0.95 channels_last=false; the options "
        f"without a flag: {', '.join(yaml_only_options())}",
    )
    _add_config_options(train)


def _add_evaluate_command(commands: argparse._SubParsersAction) -> None:
    evaluate = commands.add_parser("evaluate", help="score a checkpoint on labelled images at full size")
    evaluate.add_argument(
        "--checkpoint",
        required=True,
        type=Path,
        help="RUN/best.pt or RUN/last.pt; a cross-validation RUN folder to score every fold on its own held-out images; "
        f"or a built-in model ({_builtin_names()}: scored on every image, so name --out)",
    )
    evaluate.add_argument("--data", required=True, type=Path, help="dataset folder")
    evaluate.add_argument(
        "--split",
        choices=("val", "all"),
        help="val: the run's held-out images (split.json); all: every image (default: val; all for a built-in model)",
    )
    evaluate.add_argument("--out", type=Path, help="output folder (default: RUN/evaluation)")
    _add_ignore_index(evaluate)
    evaluate.add_argument(
        "--report", action="store_true", help="also write report.html into --out (default: RUN/report.html)"
    )
    _add_inference_options(evaluate)
    _add_min_area(evaluate)


def _add_score_command(commands: argparse._SubParsersAction) -> None:
    score = commands.add_parser(
        "score",
        help="score any tool's predicted class masks against truth masks, with the metrics of evaluate",
        description="Pair two folders of class masks (PNG or TIFF) by file stem (a predicted STEM_mask.png pairs with "
        "STEM.png) and score them as 'segnet evaluate' does, into OUT/metrics.json and OUT/per_image.csv; "
        "'segnet report OUT' draws them. Masks without a partner are listed and left out.",
    )
    score.add_argument("truth", type=Path, help="folder of truth masks, or a dataset folder (images/ and masks/)")
    score.add_argument("predictions", type=Path, help="folder of predicted masks (one class index per pixel)")
    score.add_argument("--out", required=True, type=Path, help="output folder")
    score.add_argument(
        "--config", type=Path, help="training YAML file: its classes, class_roles and mask_palette (colour truth masks)"
    )
    _add_classes(score)
    _add_ignore_index(score)
    _add_min_area(score)


def _add_calibrate_command(commands: argparse._SubParsersAction) -> None:
    calibrate = commands.add_parser(
        "calibrate",
        help="set a checkpoint's per-class logit offsets on its training images (done by train)",
        description="Undo the bias that class weighting puts on the decisions: predict up to N of the run's training "
        "images (split.json), find per-class logit offsets that maximise the mean IoU there, and store them in the "
        "checkpoint. 'segnet train' does this at the end; use this command for older runs or another N.",
    )
    calibrate.add_argument(
        "--checkpoint", required=True, type=Path, help="RUN/best.pt (rewritten in place, atomically)"
    )
    calibrate.add_argument("--data", required=True, type=Path, help="the dataset folder the run was trained on")
    calibrate.add_argument(
        "--images",
        type=_positive_int,
        default=32,
        help="training images to use, chosen at random (default: %(default)s)",
    )
    calibrate.add_argument(
        "--device",
        default=DEFAULT_INFERENCE.device,
        help="auto (CUDA if available), cpu or cuda (default: %(default)s)",
    )


def _add_predict_command(commands: argparse._SubParsersAction) -> None:
    predict = commands.add_parser("predict", help="segment and count cells in new images")
    predict.add_argument(
        "--checkpoint",
        type=Path,
        help="RUN/best.pt; a cross-validation RUN folder to average its folds' models (an ensemble); or a built-in model "
        f"({_builtin_names()}; default: {DEFAULT_BUILTIN_MODEL}, see 'segnet models')",
    )
    predict.add_argument(
        "--onnx",
        type=Path,
        help="model.onnx from 'segnet export', run on onnxruntime without PyTorch (instead of --checkpoint)",
    )
    predict.add_argument("inputs", nargs="+", help="image files, folders or glob patterns")
    predict.add_argument("--out", required=True, type=Path, help="output folder for masks, overlays and counts.csv")
    predict.add_argument(
        "--skip-existing",
        action="store_true",
        help="continue an interrupted run: images whose outputs in --out are complete are not segmented again (their rows are rebuilt)",
    )
    predict.add_argument(
        "--overwrite", action="store_true", help="replace another run's results in --out (they are removed first)"
    )
    predict.add_argument(
        "--pixel-size",
        type=bounded(PixelSize),
        metavar="UM",
        help=f"micrometres per pixel, {MIN_PIXEL_SIZE_UM:g} to {MAX_PIXEL_SIZE_UM:g}: objects.csv gives areas and lengths in um too "
        "(default: from a TIFF's resolution tags, else pixels only)",
    )
    _add_inference_options(predict)
    _add_min_area(predict)


def _add_export_command(commands: argparse._SubParsersAction) -> None:
    export = commands.add_parser(
        "export",
        help="export a checkpoint to ONNX and/or a bioimage.io model package",
        description="Export a checkpoint. The ONNX graph takes the normalised image and returns logits; classes and their "
        "roles, normalisation and the training cells' size (for --diameter) are stored in its metadata, which 'segnet predict --onnx' reads.",
    )
    export.add_argument(
        "--checkpoint", required=True, type=Path, help=f"RUN/best.pt, or a built-in model ({_builtin_names()})"
    )
    export.add_argument("--out", type=Path, help="ONNX file to write (dynamic batch, height and width)")
    export.add_argument(
        "--bioimageio",
        type=Path,
        metavar="DIR",
        help="folder for a bioimage.io model package (rdf.yaml, ONNX and PyTorch weights, test tensors, cover, README)",
    )
    export.add_argument(
        "--pack",
        type=Path,
        metavar="FILE",
        help="a compact copy of the checkpoint to share or ship as a built-in model: float16 weights, no optimiser state (a few MB)",
    )
    export.add_argument(
        "--sample", type=Path, help="image for the package's test tensors and cover (default: a synthetic image)"
    )
    export.add_argument(
        "--author",
        action="append",
        dest="authors",
        metavar="NAME",
        help="package author, repeatable (default: your login name)",
    )
    export.add_argument(
        "--license", default="CC-BY-4.0", help="SPDX licence of the exported weights (default: %(default)s)"
    )


def _add_report_command(commands: argparse._SubParsersAction) -> None:
    report = commands.add_parser(
        "report",
        help="write RUN/report.html from a run and its evaluation",
        description="Write RUN/report.html. A run without RUN/evaluation is first evaluated as 'segnet evaluate' does "
        "(best.pt on the run's validation images, with the options below).",
    )
    report.add_argument("run", type=Path, help="run folder")
    report.add_argument(
        "--evaluation", type=Path, help="evaluation folder (default: RUN/evaluation, evaluated first if missing)"
    )
    _add_inference_options(report)
    _add_min_area(report)


def _add_check_command(commands: argparse._SubParsersAction) -> None:
    check = commands.add_parser("check", help="scan a dataset folder and report every problem")
    check.add_argument("dir", type=Path, nargs="?", help="dataset folder (default: data: in --config)")
    check.add_argument(
        "--config",
        type=Path,
        help="training YAML file: check with its classes and mask_palette (colour masks), as training would",
    )
    _add_classes(check)


def _add_models_command(commands: argparse._SubParsersAction) -> None:
    commands.add_parser(
        "models",
        help="list the built-in models (trained weights shipped with segnet, usable without training)",
        description="List the built-in models. Each name works wherever a checkpoint is asked for: predict (the default "
        f"model is {DEFAULT_BUILTIN_MODEL}), evaluate, export, and 'train --init NAME' to fine-tune it on your own images.",
    )


def _add_demo_command(commands: argparse._SubParsersAction) -> None:
    demo = commands.add_parser(
        "demo",
        help=f"synthesise data, train {DEFAULT_MODEL} for {DEMO_TIME_BUDGET:g} minutes, evaluate and predict (about 5 minutes in all)",
    )
    demo.add_argument("--out", type=Path, default=Path("demo_output"), help="output folder (default: %(default)s)")
    demo.add_argument("--device", default="auto", help="auto, cpu or cuda (default: %(default)s)")
    demo.add_argument(
        "--time-budget",
        type=float,
        default=DEMO_TIME_BUDGET,
        metavar="MIN",
        help="minutes of training; the accuracy reached depends on the hardware, the time does not (default: %(default)s)",
    )


def run_command(args: argparse.Namespace) -> int:
    """Dispatch a parsed command; returns the exit status."""
    if args.command == "synth":
        from segnet.data.synthetic import write_dataset

        out = write_dataset(args.dir, count=args.count, size=args.size, seed=args.seed)
        print(f"wrote {args.count} synthetic images and masks to {out}")
        return 0
    if args.command == "train":
        return _train(args)
    if args.command == "models":
        print(_format_models())
        return 0
    if args.command in ("evaluate", "export"):
        args.checkpoint = resolve_checkpoint(args.checkpoint)
    if args.command == "evaluate" and args.checkpoint.is_dir():
        return _evaluate_cross_validation(args)
    if args.command == "evaluate":
        from segnet.evaluate.run import evaluate_run
        from segnet.evaluate.tables import format_metrics_table

        metrics = evaluate_run(
            args.checkpoint,
            args.data,
            split=args.split,
            out=args.out,
            options=_inference_options(args),
            ignore_index=args.ignore_index,
            min_area=args.min_area,
        )
        print(format_metrics_table(metrics))
        if args.report:
            from segnet.report.page import write_report

            # Into --out where it was named: a built-in model's folder is the installed package.
            name = args.checkpoint.stem if is_builtin(args.checkpoint) else None
            print(f"report: {write_report(args.checkpoint.parent, args.out, out_dir=args.out, name=name)}")
        return 0
    if args.command == "score":
        return _score(args)
    if args.command == "calibrate":
        from segnet.train.calibration import CALIBRATION_INFERENCE, calibrate_run, format_calibration

        options = CALIBRATION_INFERENCE.replace(device=args.device)
        print(format_calibration(calibrate_run(args.checkpoint, args.data, max_images=args.images, options=options)))
        return 0
    if args.command == "predict":
        return _predict(args)
    if args.command == "export":
        return _export(args)
    if args.command == "report":
        from segnet.report.page import report_run

        path = report_run(
            args.run, args.evaluation, log=print, options=_inference_options(args), min_area=args.min_area
        )
        print(f"report: {path}")
        return 0
    if args.command == "check":
        return _check(args)
    if args.command == "demo":
        from segnet.workflow.demo import run_demo

        run_demo(args.out, device=args.device, time_budget=args.time_budget, log=print)
        return 0
    raise AssertionError(f"unhandled command {args.command}")


def _train(args: argparse.Namespace) -> int:
    from segnet.core.distributed import is_main_process
    from segnet.core.runfiles import BEST_CHECKPOINT, CONFIG_FILE, HISTORY_FILE, LAST_CHECKPOINT, PLAN_FILE
    from segnet.plan.config import config_options, load_config, parse_setting
    from segnet.train.loop import train

    overrides = {option.name: getattr(args, option.name) for option in config_options()}
    config = load_config(args.config, overrides, dict(map(parse_setting, args.set or [])))
    if not config.data or not config.out:
        raise SegnetError("train needs --data and --out (or data: and out: in --config)")
    main_process = is_main_process()  # under torchrun only rank 0 prints
    if config.folds:
        from segnet.workflow.crossval import format_cv_table, train_cross_validation

        summary = train_cross_validation(config, config.folds, resume=args.resume, overwrite=args.overwrite)
        if main_process:
            print(format_cv_table(summary))
            print(
                f"cross-validation run folder: {config.out} (folds.json, cv_summary.json, fold_1 .. fold_{config.folds})"
            )
        return 0
    run_dir = train(config, resume=args.resume, overwrite=args.overwrite)
    if main_process:
        print(
            f"run folder: {run_dir} ({', '.join((BEST_CHECKPOINT, LAST_CHECKPOINT, HISTORY_FILE, CONFIG_FILE, PLAN_FILE))})"
        )
    return 0


def _format_models() -> str:
    """``segnet models``: one block per built-in model, its card's summary and where its card is."""
    blocks = []
    for model in BUILTIN_MODELS.values():
        state = "" if model.installed else " (weights not installed)"
        default = " (default)" if model.name == DEFAULT_BUILTIN_MODEL else ""
        blocks.append(f"{model.name}{default}{state}\n  {model.summary()}\n  model card: {model.card_path}")
    return "\n\n".join(blocks)


def _score(args: argparse.Namespace) -> int:
    """``segnet score``: the classes, roles and palette from --classes or --config, else the darkfield ones."""
    from segnet.evaluate.score import METRICS_FILE, PER_IMAGE_FILE, ScoreSettings, score_masks
    from segnet.evaluate.tables import format_metrics_table
    from segnet.plan.config import load_config

    settings = ScoreSettings.from_config(
        load_config(args.config, {"classes": args.classes}), args.ignore_index, args.min_area
    )
    metrics = score_masks(args.truth, args.predictions, args.out, settings, log=print)
    print(format_metrics_table(metrics))
    print(f"scores: {args.out} ({METRICS_FILE}, {PER_IMAGE_FILE}); 'segnet report {args.out}' draws them")
    return 0


def _check(args: argparse.Namespace) -> int:
    """``segnet check``: with --config, the classes, colour palette and data folder of a training config."""
    from segnet.plan.check import check_dataset, format_check_report
    from segnet.plan.config import load_config

    config = load_config(args.config, {"classes": args.classes, "data": args.dir and str(args.dir)})
    if not config.data:
        raise SegnetError("check needs a dataset folder: segnet check DIR (or data: in --config)")
    result = check_dataset(config.data, config.classes, config.palette_by_index())
    print(format_check_report(result, config.class_weights))
    return 1 if result.problems else 0


def _evaluate_cross_validation(args: argparse.Namespace) -> int:
    """``evaluate --checkpoint RUN`` on a cross-validation run: each fold's model on its own fold."""
    from segnet.workflow.crossval import evaluate_cross_validation, format_cv_table

    if args.split not in (None, "val"):
        raise SegnetError(
            f"{args.checkpoint}: a cross-validation run is scored on each fold's held-out images only (--split val)"
        )
    summary = evaluate_cross_validation(
        args.checkpoint,
        args.data,
        out=args.out,
        options=_inference_options(args),
        ignore_index=args.ignore_index,
        min_area=args.min_area,
        report=args.report,
    )
    print(format_cv_table(summary))
    return 0


def _predict_shard(device: str) -> tuple[str, Shard]:
    """Under torchrun, join the process group: this process's device and its share of the inputs."""
    from segnet.predict.tables import SINGLE_PROCESS, Shard

    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return device, SINGLE_PROCESS
    from segnet.core import distributed

    joined = distributed.init_distributed(device)
    return str(joined), Shard(distributed.rank(), distributed.world_size(), distributed.all_gather_object)


def _predict(args: argparse.Namespace) -> int:
    # Imports only segnet.predict: with --onnx in one process, torch is never loaded.
    from segnet.model.predictor import Ensemble
    from segnet.predict.files import predict_paths
    from segnet.predict.loading import chosen_model, load_predictor

    model = chosen_model(args.checkpoint, args.onnx)
    device, shard = _predict_shard(args.device)
    main_process = shard.rank == 0
    if main_process and args.checkpoint is None and args.onnx is None:
        print(f"using the built-in {model} model (see 'segnet models'; --checkpoint RUN/best.pt for your own)")
    options = _inference_options(args, device)
    if args.onnx is not None:  # onnxruntime picks its own device; torchrun's per-process device is torch's
        options = options.replace(device=args.device)
    predictor = load_predictor(model, options)
    if isinstance(predictor, Ensemble) and main_process:
        print(f"ensemble of {len(predictor.members)} fold models from {model}")
    try:
        summary = predict_paths(
            predictor,
            args.inputs,
            args.out,
            min_area=args.min_area,
            pixel_size=args.pixel_size,
            skip_existing=args.skip_existing,
            overwrite=args.overwrite,
            shard=shard,
        )
    finally:
        if shard.world_size > 1:
            from segnet.core.distributed import cleanup

            cleanup()
    if main_process:
        earlier = f", {summary.skipped} of them finished by an earlier run" if summary.skipped else ""
        print(
            f"{summary.images} image(s) in {args.out}{earlier}: masks, overlays, object labels, counts.csv, objects.csv"
        )
    if summary.failed:
        if main_process:
            total = summary.images + len(summary.failed)
            print(
                f"{len(summary.failed)} of {total} input(s) failed and are not in the tables (listed above)",
                file=sys.stderr,
            )
        return 1
    return 0


def _export(args: argparse.Namespace) -> int:
    from segnet.core.outputs import refuse_shared_targets
    from segnet.export.formats import export_bioimageio, export_onnx

    if args.out is None and args.bioimageio is None and args.pack is None:
        raise SegnetError("export needs --out model.onnx, --bioimageio DIR and/or --pack FILE")
    refuse_shared_targets({"--out": args.out, "--pack": args.pack})
    if args.pack is not None:
        from segnet.export.pack import pack_checkpoint

        packed = pack_checkpoint(args.checkpoint, args.pack)
        print(f"packed checkpoint: {packed} ({packed.stat().st_size / 2**20:.1f} MB, float16 weights)")
    if args.out is not None:
        print(f"ONNX model: {export_onnx(args.checkpoint, args.out)} (checked against PyTorch)")
    if args.bioimageio is not None:
        rdf = export_bioimageio(
            args.checkpoint, args.bioimageio, sample=args.sample, authors=args.authors, license_id=args.license
        )
        print(f"bioimage.io package: {rdf} (validated with bioimageio.spec)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``segnet`` and ``python -m segnet``."""
    args = build_parser().parse_args(argv)
    try:
        return run_command(args)
    except SegnetError as error:
        if args.debug:
            traceback.print_exc()
        print(f"segnet: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        message = "segnet: interrupted"
        if args.command == "train":
            message += "; the checkpoints written so far are intact: run the same command with --resume to continue"
        print(message, file=sys.stderr)
        return 130
