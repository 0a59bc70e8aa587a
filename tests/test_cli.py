"""The command line end to end, as a user types it: synth, train, evaluate, predict, report."""

from __future__ import annotations

import csv
import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from segnet.cli import build_parser, main
from segnet.core.errors import SegnetError
from segnet.core.runfiles import BEST_CHECKPOINT, REPORT_FILE, SPLIT_FILE
from segnet.model.options import InferenceOptions
from segnet.plan.config import load_config, parse_setting, yaml_only_options

SUBCOMMANDS = ("synth", "train", "calibrate", "evaluate", "predict", "export", "report", "check", "demo")


def segnet(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "segnet", *args], capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_explains_its_options(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    subparser = build_parser()._subparsers._group_actions[0].choices[command]
    for action in subparser._actions:
        if action.option_strings and action.dest != "help":
            assert action.help, f"{command} {action.option_strings} has no help text"
            assert action.option_strings[-1] in text


@pytest.mark.slow
def test_bad_input_is_one_line_without_traceback(tmp_path):
    result = segnet("train", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "run"))
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0
    assert "missing: dataset folder not found" in result.stderr and "Traceback" not in result.stderr
    debug = segnet("--debug", "train", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "run"))
    assert "Traceback" in debug.stderr


@pytest.mark.slow
def test_synth_train_evaluate_predict_end_to_end(tmp_path):
    data, run, evaluation, predictions = (
        tmp_path / "data",
        tmp_path / "run",
        tmp_path / "evaluation",
        tmp_path / "predictions",
    )
    assert segnet("synth", str(data), "--count", "10", "--size", "40", "--seed", "1").returncode == 0
    assert len(list((data / "images").glob("*.png"))) == 10

    trained = segnet(
        "train",
        "--data",
        str(data),
        "--out",
        str(run),
        "--epochs",
        "2",
        "--batch-size",
        "4",
        "--image-size",
        "32",
        "--num-workers",
        "0",
        "--val-fraction",
        "0.2",
        "--seed",
        "4",
    )
    assert trained.returncode == 0, trained.stderr
    assert "epoch 2/2" in trained.stdout
    split = json.loads((run / SPLIT_FILE).read_text())
    assert len(split["val"]) == 2 and len(split["train"]) == 8

    evaluated = segnet(
        "evaluate",
        "--checkpoint",
        str(run / BEST_CHECKPOINT),
        "--data",
        str(data),
        "--out",
        str(evaluation),
        "--report",
    )
    assert evaluated.returncode == 0, evaluated.stderr
    metrics = json.loads((evaluation / "metrics.json").read_text())
    assert metrics["num_images"] == 2
    assert sum(map(sum, metrics["confusion_matrix"])) == 2 * 40 * 40
    for key in ("classes", "global_accuracy", "class_average_accuracy", "mean_iou", "per_class", "confusion_matrix"):
        assert key in metrics
    assert "mean IoU" in evaluated.stdout
    assert metrics["evaluation"]["tta"] is True  # on unless --no-tta
    with (evaluation / "per_image.csv").open() as handle:
        assert sorted(row["image"] for row in csv.DictReader(handle)) == sorted(split["val"])
    assert (evaluation / REPORT_FILE).is_file() and not (run / REPORT_FILE).exists()  # into --out, as asked
    assert f"report: {evaluation / REPORT_FILE}" in evaluated.stdout

    predicted = segnet(
        "predict",
        "--checkpoint",
        str(run / BEST_CHECKPOINT),
        str(data / "images" / "001.png"),
        str(data / "images" / "00[23].png"),
        "--out",
        str(predictions),
    )
    assert predicted.returncode == 0, predicted.stderr
    for stem in ("001", "002", "003"):
        mask = np.asarray(Image.open(predictions / f"{stem}_mask.png"))
        assert mask.shape == (40, 40) and mask.dtype == np.uint8 and mask.max() <= 2
        assert np.asarray(Image.open(predictions / f"{stem}_overlay.png")).shape == (40, 40, 3)
    with (predictions / "counts.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3 and "erythrocyte_count" in rows[0] and "spirochete_area_fraction" in rows[0]


COMMAND_ARGUMENTS = {
    "evaluate": ["--checkpoint", "best.pt", "--data", "DIR"],
    "predict": ["--checkpoint", "best.pt", "IMAGE", "--out", "DIR"],
    "report": ["RUN"],
}


@pytest.mark.parametrize("command", sorted(COMMAND_ARGUMENTS))
def test_every_command_runs_the_model_with_the_python_api_defaults(command):
    # One default everywhere: TTA on, as the CLI always had it, and each image's scale estimated;
    # --no-tta and --diameter none switch them off.
    def parsed_options(*flags: str) -> InferenceOptions:
        args = build_parser().parse_args([command, *COMMAND_ARGUMENTS[command], *flags])
        return InferenceOptions(
            **{field.name: getattr(args, field.name) for field in dataclasses.fields(InferenceOptions)}
        )

    assert parsed_options() == InferenceOptions()
    flags = [
        "--no-tta",
        "--tile",
        "64",
        "--overlap",
        "0.5",
        "--batch-size",
        "2",
        "--mc-samples",
        "3",
        "--device",
        "cpu",
        "--diameter",
        "none",
    ]
    assert parsed_options(*flags) == InferenceOptions(
        device="cpu", tile=64, overlap=0.5, batch_size=2, tta=False, mc_samples=3, diameter=None
    )


@pytest.mark.parametrize(
    "value", [{"tile": 0}, {"overlap": 1.0}, {"overlap": -0.1}, {"batch_size": 0}, {"mc_samples": -1}]
)
def test_inference_options_refuse_values_out_of_range(value):
    with pytest.raises(SegnetError, match=str(next(iter(value.values())))):
        InferenceOptions(**value)


@pytest.mark.slow
def test_python_dash_m_is_the_same_command():
    result = segnet("--version")
    assert result.returncode == 0 and result.stdout.startswith("segnet ")


@pytest.mark.parametrize(
    ("arguments", "typo", "meant"),
    [
        (["predict", "image.png", "--out", "DIR", "--diamter", "40"], "--diamter", "--diameter"),
        (
            ["evaluate", "--chekpoint", "darkfield", "--data", "DIR"],
            "--chekpoint",
            "--checkpoint",
        ),  # not "--checkpoint is required"
        (["predict", "--chekpoint", "darkfield", "image.png", "--out", "DIR"], "--chekpoint", "--checkpoint"),
    ],
)
def test_a_mistyped_option_is_named_with_the_option_meant(arguments, typo, meant, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(arguments)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip()
    assert error == f"segnet {arguments[0]}: error: unknown option {typo}; did you mean {meant}?"


def test_an_unknown_option_like_no_other_points_to_the_help(capsys):
    with pytest.raises(SystemExit):
        main(["predict", "image.png", "--out", "DIR", "--zzzzzz"])
    assert (
        capsys.readouterr().err.strip() == "segnet predict: error: unknown option --zzzzzz; see 'segnet predict --help'"
    )


def test_an_abbreviated_option_is_no_typo():
    assert build_parser().parse_args(["predict", "image.png", "--out", "DIR", "--diam", "40"]).diameter == 40


def test_a_mistyped_model_name_suggests_the_built_in_model_and_lists_them(tmp_path, capsys, monkeypatch):
    from segnet.model.builtin import BUILTIN_MODELS

    monkeypatch.chdir(tmp_path)
    assert main(["predict", "--checkpoint", "darkfeld", "image.png", "--out", "DIR"]) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("segnet: error: darkfeld: not found") and "did you mean 'darkfield'?" in error
    assert f"(built-in models: {', '.join(BUILTIN_MODELS)})" in error


@pytest.mark.slow
def test_the_demo_starts_with_its_hardware_and_trains_for_its_time_budget(tmp_path):
    from segnet.core.hardware import describe_hardware
    from segnet.workflow.demo import DEMO_TIME_BUDGET, run_demo

    assert build_parser().parse_args(["demo"]).time_budget == DEMO_TIME_BUDGET
    lines = []
    metrics = run_demo(
        tmp_path / "demo", device="cpu", images=12, size=48, epochs=50, time_budget=0.01, log=lines.append
    )
    assert lines[0] == describe_hardware("cpu").line()  # device, dtype and why, before anything runs
    assert lines.count(lines[0]) == 1  # and once: the training inside says nothing new
    assert any("time budget 0.01 min:" in line for line in lines), (
        lines
    )  # the budget, not the 50 epochs, ended training
    history = (tmp_path / "demo" / "run" / "history.csv").read_text().splitlines()
    assert 2 <= len(history) < 1 + 50 and 0 <= metrics.mean_iou <= 1
    assert (tmp_path / "demo" / "predictions" / "counts.csv").is_file()


def test_train_help_lists_at_most_about_thirty_options_and_set_reaches_the_rest(capsys):
    train = build_parser()._subparsers._group_actions[0].choices["train"]
    flags = [action for action in train._actions if action.option_strings and action.dest != "help"]
    assert len(flags) <= 32
    hidden = yaml_only_options()
    assert "momentum" in hidden and all(
        f"--{name.replace('_', '-')}" not in train._option_string_actions for name in hidden
    )
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert ", ".join(hidden) in " ".join(capsys.readouterr().out.split())
    config = load_config(
        settings=dict(map(parse_setting, ["momentum=0.95", "scale_range=[0.5, 2.0]", "compile=false"]))
    )
    assert (config.momentum, config.scale_range, config.compile) == (0.95, [0.5, 2.0], False)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            ["--set", "momentom=0.9"],
            "segnet: error: --set momentom=0.9: there is no option momentom (did you mean momentum?)",
        ),
        (
            ["--set", "momentum=3"],
            "segnet: error: --set momentum: momentum = 3 is refused: input should be less than 1",
        ),
        (["--set", "lr"], "segnet: error: --set lr: expected KEY=VALUE, e.g. --set momentum=0.95"),
        (["--set", "lr=0.1", "--lr", "0.2"], "segnet: error: --set lr: given as --lr too; give it once"),
    ],
)
def test_a_bad_setting_is_one_line_naming_it(arguments, message, tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "run"), *arguments]) == 1
    assert capsys.readouterr().err.strip() == message
