"""Outputs never destroy inputs and go where the user said (segnet.core.outputs): export and pack refuse
their checkpoint as output, files are replaced and never written through links, predict refuses a
folder of another run's results unless --overwrite and one run at a time writes a folder,
evaluate --report writes into --out, and the napari correction saver names files safely."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from segnet.cli import main
from segnet.core import runfiles
from segnet.core.errors import DataError, OutputError
from segnet.core.outputs import open_replacing, output_lock, refuse_package_folder, safe_stem, write_text_atomically
from segnet.core.runfiles import BEST_CHECKPOINT
from segnet.data.classes import DARKFIELD_ROLES
from segnet.data.pairs import array_to_rgb, find_pairs, read_image, read_mask, write_pair
from segnet.evaluate.measure import find_objects, write_object_labels
from segnet.export.pack import pack_checkpoint
from segnet.model.builtin import DEFAULT_BUILTIN_MODEL
from segnet.napari.segmentation import save_correction
from segnet.predict.files import COUNTS_FILE, OBJECTS_FILE, predict_paths
from segnet.report.page import write_report

CLASSES = ("background", "erythrocyte", "spirochete")
PREDICT = ["--device", "cpu", "--no-tta"]


def _snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (links as what they point to) and its bytes."""
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def _one_line_error(capsys: pytest.CaptureFixture[str], *words: str) -> None:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("segnet: error: "), err
    for word in words:
        assert word in err, err


@pytest.fixture()
def run(make_run, tmp_path: Path) -> tuple[Path, Path]:
    return make_run(tmp_path)


# ------------------------------------------------------------------ export and pack


def _link(kind: str, target: Path, link: Path) -> Path:
    if kind == "symlink":
        link.symlink_to(target)
    elif kind == "hard link":
        os.link(target, link)
    return link if kind != "same path" else target


@pytest.mark.parametrize("option", ["--out", "--pack"])
@pytest.mark.parametrize("kind", ["same path", "symlink", "hard link"])
def test_export_refuses_to_write_over_its_checkpoint(run, tmp_path: Path, capsys, option: str, kind: str) -> None:
    checkpoint = run[0] / BEST_CHECKPOINT
    target = _link(kind, checkpoint, tmp_path / "model.file")
    before = _snapshot(run[0])
    assert main(["export", "--checkpoint", str(checkpoint), option, str(target)]) == 1
    _one_line_error(capsys, str(target), "is the input")
    assert _snapshot(run[0]) == before


def test_export_refuses_two_outputs_at_one_path(run, tmp_path: Path, capsys) -> None:
    target = tmp_path / "model.file"
    assert (
        main(
            [
                "export",
                "--checkpoint",
                str(run[0] / BEST_CHECKPOINT),
                "--out",
                str(target),
                "--pack",
                str(tmp_path / "." / "model.file"),
            ]
        )
        == 1
    )
    _one_line_error(capsys, str(target), "is named by both --out and --pack")
    assert not target.exists()


def test_pack_refuses_its_source_through_the_api(run) -> None:
    checkpoint = run[0] / BEST_CHECKPOINT
    with pytest.raises(OutputError, match="is the input"):
        pack_checkpoint(checkpoint, checkpoint.parent / "." / checkpoint.name)


# ------------------------------------------------------------------ writing by replacing


@pytest.mark.parametrize("kind", ["symlink", "hard link"])
def test_files_are_replaced_never_written_through_a_link(tmp_path: Path, kind: str) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    (tmp_path / "out").mkdir()
    link = _link(kind, outside, tmp_path / "out" / "report.html")
    write_text_atomically(link, "new")
    assert outside.read_text() == "precious" and link.read_text() == "new" and not link.is_symlink()
    link.unlink()
    _link(kind, outside, link)
    with open_replacing(link) as handle:
        handle.write("row\n")
    assert outside.read_text() == "precious" and link.read_text() == "row\n"


# ------------------------------------------------------------------ predict's output folder


def _predict(run: tuple[Path, Path], inputs: list[Path], out: Path, *flags: str) -> int:
    return main(
        [
            "predict",
            "--checkpoint",
            str(run[0] / BEST_CHECKPOINT),
            *map(str, inputs),
            "--out",
            str(out),
            *PREDICT,
            *flags,
        ]
    )


def _rows(table: Path) -> list[str]:
    return table.read_text().splitlines()[1:]


def test_predict_refuses_a_folder_of_another_run_unless_overwrite(run, tmp_path: Path, capsys) -> None:
    images = sorted((run[1] / "images").iterdir())
    out = tmp_path / "out"
    assert _predict(run, images[:2], out) == 0
    before = _snapshot(out)
    capsys.readouterr()
    assert _predict(run, images[2:3], out) == 1
    _one_line_error(capsys, str(out), "another run's results", "--overwrite")
    assert _snapshot(out) == before

    assert _predict(run, images[2:3], out, "--overwrite") == 0
    masks = sorted(path.name for path in out.glob("*_mask.png"))
    assert masks == [f"{images[2].stem}_mask.png"]  # the earlier run's masks went with its rows
    assert [row.split(",")[0] for row in _rows(out / COUNTS_FILE)] == [str(images[2])]
    assert {row.split(",")[0] for row in _rows(out / OBJECTS_FILE)} <= {str(images[2])}

    assert _predict(run, images[2:4], out, "--skip-existing") == 0  # continuing a run is no other run
    assert len(_rows(out / COUNTS_FILE)) == 2


def test_two_predicts_into_one_folder_cannot_interleave(run, tmp_path: Path, capsys) -> None:
    images = sorted((run[1] / "images").iterdir())
    out = tmp_path / "out"
    with output_lock(out):  # a run writing there now
        assert _predict(run, images[:1], out) == 1
    _one_line_error(capsys, str(out), "another segnet run is writing")
    assert not (out / COUNTS_FILE).exists()
    assert _predict(run, images[:1], out) == 0  # the lock went with the run


# ------------------------------------------------------------------ evaluate --report


def test_evaluate_report_of_a_built_in_model_goes_into_out(run, tmp_path: Path, capsys, monkeypatch) -> None:
    weights = tmp_path / "weights"
    weights.mkdir()
    monkeypatch.setattr(runfiles, "WEIGHTS_DIR", weights)
    shutil.copy(run[0] / BEST_CHECKPOINT, weights / f"{DEFAULT_BUILTIN_MODEL}.pt")
    before = _snapshot(weights)
    evaluation = tmp_path / "EVAL"
    argv = [
        "evaluate",
        "--checkpoint",
        DEFAULT_BUILTIN_MODEL,
        "--data",
        str(run[1]),
        "--split",
        "all",
        "--out",
        str(evaluation),
        "--report",
    ]
    assert main([*argv, *PREDICT]) == 0
    assert f"report: {evaluation / 'report.html'}" in capsys.readouterr().out
    assert f"segnet report: {DEFAULT_BUILTIN_MODEL}</title>" in (evaluation / "report.html").read_text(encoding="utf-8")
    assert _snapshot(weights) == before
    with pytest.raises(OutputError, match="built-in model folder"):
        write_report(weights, evaluation)
    with pytest.raises(OutputError, match="built-in model folder"):
        refuse_package_folder(weights / "evaluation")
    for command in (
        ["predict", str(run[1] / "images")],
        ["evaluate", "--checkpoint", DEFAULT_BUILTIN_MODEL, "--data", str(run[1]), "--split", "all"],
    ):
        assert main([*command, "--out", str(weights / "out"), *PREDICT]) == 1
        _one_line_error(capsys, "built-in model folder")
    assert _snapshot(weights) == before


# ------------------------------------------------------------------ napari: saving a correction


@pytest.mark.parametrize(
    ("name", "stem"),
    [
        ("../../x", "x"),
        ("a/b\\c", "a_b_c"),
        ("..", None),
        (".hidden", "hidden"),
        ("C:\\temp\\x", "C_temp_x"),
        ("", None),
        ("/", None),
        ("cells 1.2", "cells 1.2"),
    ],
)
def test_layer_names_become_safe_stems(name: str, stem: str | None) -> None:
    if stem is None:
        with pytest.raises(OutputError, match="no usable file name"):
            safe_stem(name)
    else:
        assert safe_stem(name) == stem


def _picture(value: int) -> tuple[np.ndarray, np.ndarray]:
    image = np.full((8, 8, 3), value, np.uint8)
    mask = np.zeros((8, 8), np.uint8)
    mask[:4] = 1
    return image, mask


def test_a_correction_saved_under_a_hostile_name_stays_in_the_dataset(tmp_path: Path) -> None:
    dataset = tmp_path / "deep" / "dataset"
    pair = save_correction(dataset, "../../x", *_picture(10), CLASSES)
    assert pair.image.parent == dataset / "images" and pair.mask.parent == dataset / "masks"
    assert sorted(path.name for path in tmp_path.rglob("*") if path.is_file()) == [pair.image.name, pair.mask.name]


def test_a_correction_never_replaces_another_image_s_pair(tmp_path: Path) -> None:
    dataset = tmp_path / "dataset"
    save_correction(dataset, "cells", *_picture(10), CLASSES)
    before = _snapshot(dataset)
    with pytest.raises(OutputError, match=r"cells\.png: is another image of the same name"):
        save_correction(dataset, "cells", *_picture(200), CLASSES)
    assert _snapshot(dataset) == before

    image, mask = _picture(10)  # the same image, corrected again: its mask is replaced
    mask[:] = 2
    (pair,) = [save_correction(dataset, "cells", image, mask, CLASSES)]
    assert (read_mask(pair.mask, 3) == 2).all() and (read_image(pair.image) == 10).all()
    assert [found.stem for found in find_pairs(dataset)] == ["cells"]


@pytest.mark.parametrize("existing", ["images/cells.jpg", "masks/cells.png"])
def test_a_correction_refuses_a_stem_the_dataset_holds_otherwise(tmp_path: Path, existing: str) -> None:
    dataset = tmp_path / "dataset"
    (dataset / existing).parent.mkdir(parents=True)
    shutil.copy(save_correction(tmp_path / "other", "cells", *_picture(10), CLASSES).image, dataset / existing)
    with pytest.raises(OutputError, match="of the same name"):
        save_correction(dataset, "cells", *_picture(10), CLASSES)


def test_predict_refuses_an_input_that_an_output_would_replace(run, tmp_path: Path, capsys) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("a.png", "a_mask.png"):  # a_mask.png named, so taken as an input
        shutil.copy(sorted((run[1] / "images").iterdir())[0], folder / name)
    before = _snapshot(folder)
    for flags in ([], ["--overwrite"]):
        assert _predict(run, [folder / "a.png", folder / "a_mask.png"], folder, *flags) == 1
        _one_line_error(capsys, str(folder / "a_mask.png"), "is the input")
        assert _snapshot(folder) == before


class _ThreeClassModel:
    """Stands in for a Predictor of the darkfield classes (--skip-existing segments nothing)."""

    samples_uncertainty, class_names, roles = False, list(CLASSES), DARKFIELD_ROLES


def test_skip_existing_refuses_outputs_of_a_model_with_other_classes(tmp_path: Path) -> None:
    pair = write_pair(tmp_path / "data", "a", np.full((8, 8, 3), 40, np.uint8), np.zeros((8, 8), np.uint8))
    out = tmp_path / "out"
    out.mkdir()
    for picture in ("mask", "overlay"):
        shutil.copy(pair.mask, out / f"a_{picture}.png")
    write_object_labels(
        out / "a_objects.tif", find_objects(np.zeros((8, 8), np.uint8)), ("background", "nucleus", "fibre")
    )
    with pytest.raises(DataError, match=r"a_objects\.tif: written by a model of other classes"):
        predict_paths(_ThreeClassModel(), [str(pair.image)], out, skip_existing=True, progress=False)


def test_an_empty_layer_is_one_error() -> None:
    with pytest.raises(DataError, match=r"layer: empty image \(0x0 pixels\)"):
        array_to_rgb(np.zeros((0, 0), np.uint8), "layer")
