"""Every file segnet reads back goes through one reader that refuses damage in one line naming the
file: run files (split.json, folds.json, best_metrics.json, history.csv), an evaluation
(metrics.json, per_image.csv) and configs, each damaged every way: not UTF-8, cut short, too deep,
too large, of another shape, edited columns; and YAML alias bombs."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from segnet.cli import main
from segnet.core import readback
from segnet.core.errors import DataError, SegnetError
from segnet.core.runfiles import BEST_METRICS_FILE, CONFIG_FILE, EVALUATION_FOLDER, HISTORY_FILE, SPLIT_FILE
from segnet.data.pairs import read_split_stems
from segnet.data.synthetic import write_dataset
from segnet.evaluate.counting import CountAgreement
from segnet.evaluate.metrics import EvaluationMetrics
from segnet.evaluate.score import METRICS_FILE, PER_IMAGE_FILE
from segnet.plan.config import TrainConfig, load_config, save_config
from segnet.report.page import write_report
from segnet.train.folds import FOLDS_FILE, fold_checkpoints
from segnet.train.metrics import BoundaryScores, ValidationMetrics
from segnet.workflow.crossval import read_best_metrics, read_folds

CONFUSION, CLASSES = np.array([[5, 1], [1, 5]]), ["background", "cell"]
GOOD_METRICS = EvaluationMetrics.from_confusion(
    CONFUSION,
    CLASSES,
    num_images=2,
    boundary_f1=BoundaryScores(0.5, {"background": 0.75, "cell": 0.25}),
    counts={"cell": CountAgreement(0.5, None, 1.0, 1.5)},
).to_dict()
"""An evaluation's metrics.json as segnet evaluate writes it (of a version before objects and presence were scored)."""
GOOD = {
    SPLIT_FILE: '{"train": ["a"], "val": ["b"]}',
    FOLDS_FILE: '{"folds": 2, "seed": 0, "stems": [["a"], ["b"]]}',
    BEST_METRICS_FILE: json.dumps(ValidationMetrics.from_confusion(CONFUSION, CLASSES, loss=0.5, epoch=3).to_dict()),
    HISTORY_FILE: "epoch,train_loss,val_loss,val_global_accuracy,val_mean_iou,lr,epoch_seconds\n1,1.0,1.0,0.5,0.3,0.001,2.0\n",
}
DAMAGE: dict[str, Callable[[str], bytes]] = {
    "not UTF-8": lambda good: b"\xff\xfe" + good.encode(),
    "cut short": lambda good: good.encode()[: len(good) // 2],
    "nested too deeply": lambda good: b"[" * 100_000 + b"]" * 100_000,
    "empty": lambda good: b"",
    "another shape": lambda good: b'["a", "b"]',
}


def _readers(run: Path) -> dict[str, Callable[[], object]]:
    """Each run file's reader, reading it from ``run``."""
    return {
        SPLIT_FILE: lambda: read_split_stems(run / SPLIT_FILE),
        FOLDS_FILE: lambda: fold_checkpoints(run),
        BEST_METRICS_FILE: lambda: read_best_metrics(run),
        HISTORY_FILE: lambda: write_report(run, run / "evaluation"),
    }


@pytest.mark.parametrize("damage", sorted(DAMAGE))
@pytest.mark.parametrize("name", sorted(GOOD))
def test_a_damaged_run_file_is_one_error_naming_it(tmp_path: Path, name: str, damage: str) -> None:
    (tmp_path / name).write_bytes(DAMAGE[damage](GOOD[name]))
    if name == HISTORY_FILE:  # read for the report, beside an evaluation that is fine
        _write_evaluation(tmp_path / "evaluation")
    with pytest.raises(DataError) as error:
        _readers(tmp_path)[name]()
    assert str(error.value).startswith(f"{tmp_path / name}: ") and "\n" not in str(error.value)


def _write_evaluation(folder: Path, metrics: str | None = None, per_image: str | None = None) -> None:
    """An evaluation folder as segnet evaluate writes it, but for the ``metrics`` and ``per_image`` given (latin-1 text)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / METRICS_FILE).write_bytes(
        (metrics if metrics is not None else json.dumps(GOOD_METRICS)).encode("latin-1")
    )
    (folder / PER_IMAGE_FILE).write_bytes(
        (per_image if per_image is not None else "image,image_path,mask_path,pixel_accuracy,mean_iou\n").encode(
            "latin-1"
        )
    )


@pytest.mark.parametrize(
    ("metrics", "per_image", "problem"),
    [
        (json.dumps({**GOOD_METRICS, "confusion_matrix": None}), None, "at confusion_matrix, input should be a valid"),
        (json.dumps({key: value for key, value in GOOD_METRICS.items() if key != "num_images"}), None, "at num_images"),
        (json.dumps({**GOOD_METRICS, "per_class": {}}), None, "at the top level, per_class names"),
        ("\xff", None, "not UTF-8"),
        ("[" * 100_000, None, "nested too deeply"),
        (None, "image,mean_iou\n", "no column image_path"),
        (None, "image,image_path,mask_path,pixel_accuracy,mean_iou\na.png,a.png,a.png,0.5\n", "line 2"),
        (None, 'image,image_path,mask_path,pixel_accuracy,mean_iou\n"a.png,\n', "line 2"),
    ],
)
def test_a_damaged_evaluation_is_one_error_naming_its_file(
    tmp_path: Path, metrics: str | None, per_image: str | None, problem: str
) -> None:
    _write_evaluation(tmp_path / "evaluation", metrics, per_image)
    with pytest.raises(DataError, match=problem) as error:
        write_report(tmp_path, tmp_path / "evaluation")
    assert "\n" not in str(error.value) and str(error.value).startswith(str(tmp_path / "evaluation"))


def test_good_metrics_files_are_read_back_as_written(tmp_path: Path) -> None:
    (tmp_path / BEST_METRICS_FILE).write_text(GOOD[BEST_METRICS_FILE])
    best = read_best_metrics(tmp_path)
    assert best.epoch == 3 and best.loss == 0.5 and best.to_dict() == json.loads(GOOD[BEST_METRICS_FILE])
    _write_evaluation(tmp_path / "evaluation")
    evaluation = EvaluationMetrics.read(tmp_path / "evaluation" / METRICS_FILE)
    assert evaluation.to_dict() == GOOD_METRICS and evaluation.objects is None and evaluation.detection is None
    page = write_report(tmp_path, tmp_path / "evaluation").read_text()  # drawn without object scores
    assert "No object scores: evaluate again to add them." in page


def test_folds_read_back_name_the_images(tmp_path: Path) -> None:
    (tmp_path / FOLDS_FILE).write_text(GOOD[FOLDS_FILE])
    with pytest.raises(DataError, match="not in the data folder"):
        read_folds(tmp_path, [])


def test_files_larger_than_the_bound_are_refused_unread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(readback, "MAX_READ_BYTES", 100)
    (tmp_path / SPLIT_FILE).write_text(json.dumps({"train": ["a" * 200], "val": []}))
    with pytest.raises(DataError, match="larger than"):
        read_split_stems(tmp_path / SPLIT_FILE)


def test_a_config_that_never_ends_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(readback, "MAX_READ_BYTES", 2**20)
    with pytest.raises(SegnetError, match="/dev/zero: larger than"):
        load_config("/dev/zero")


BILLION_LAUGHS = (
    "a: &a [x, x, x, x, x, x, x, x, x]\n"
    + "".join(
        f"{chr(98 + level)}: &{chr(98 + level)} [{', '.join(['*' + chr(97 + level)] * 9)}]\n" for level in range(8)
    )
    + "classes: *i\n"
)


@pytest.mark.parametrize("text", [BILLION_LAUGHS, "base: &base 5\nepochs: *base\n"])
def test_yaml_aliases_are_refused(tmp_path: Path, text: str) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(text)
    with pytest.raises(
        SegnetError, match=r"config\.yaml: not a valid YAML config at line \d+, column \d+: aliases"
    ) as error:
        load_config(config)
    assert "\n" not in str(error.value)


def test_a_relative_data_path_in_a_run_config_is_taken_from_the_run_folder(
    tmp_path: Path, make_run, monkeypatch, capsys
) -> None:
    run, data = make_run(tmp_path)
    save_config(TrainConfig(data="../data", out=str(run)), run / CONFIG_FILE)
    elsewhere = tmp_path / "elsewhere" / "cwd"
    elsewhere.mkdir(parents=True)
    write_dataset(tmp_path / "elsewhere" / "data", count=3, size=32)  # what ../data means from there
    monkeypatch.chdir(elsewhere)
    assert main(["report", str(run), "--device", "cpu", "--no-tta"]) == 0
    assert f"validation images of {run / '..' / 'data'} first" in capsys.readouterr().out
    assert json.loads((run / EVALUATION_FOLDER / METRICS_FILE).read_text())["num_images"] == 2

    (run / EVALUATION_FOLDER / METRICS_FILE).unlink()
    save_config(TrainConfig(data="data", out=str(run)), run / CONFIG_FILE)
    assert main(["report", str(run)]) == 1
    assert capsys.readouterr().err.strip() == (
        f"segnet: error: {run / CONFIG_FILE}: data: data is relative and {run / 'data'} is no folder: write the dataset's full path there"
    )
