"""Tests for segnet.report: the self-contained HTML page, the training curves, the gallery pieces,
and (when Chromium is installed) that the page renders in a headless browser."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segnet.cli import main
from segnet.core.errors import DataError
from segnet.core.runfiles import BEST_CHECKPOINT, CONFIG_FILE, CURVES_FILE, EVALUATION_FOLDER, HISTORY_FILE, REPORT_FILE
from segnet.data.classes import DEFAULT_CLASSES
from segnet.data.palette import class_palette
from segnet.evaluate.run import evaluate_run
from segnet.model.options import InferenceOptions
from segnet.plan.config import TrainConfig, save_config
from segnet.report.page import (
    CORRECT_COLOUR,
    IGNORED_COLOUR,
    THUMBNAIL_WIDTH,
    _choose_gallery,
    _error_colours,
    _error_map,
    _png,
    write_report,
)
from segnet.train.curves import plot_training_curves

PLAIN = InferenceOptions(device="cpu", tta=False, diameter=None)  # the network's own pass

ACCENT = (0x2F, 0x5D, 0x8A)  # the report's heading colour, to recognise the page in a screenshot


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory, make_run) -> Path:
    """A hand-built run, evaluated on all four images, with its report written."""
    run, data = make_run(tmp_path_factory.mktemp("report"))
    evaluate_run(run / BEST_CHECKPOINT, data, split="all", options=PLAIN, min_area=10, progress=False)
    return write_report(run)


def test_report_is_one_self_contained_page(report: Path) -> None:
    assert report == report.parent / REPORT_FILE
    page = report.read_text(encoding="utf-8")
    images = re.findall(r'<img src="([^"]*)"', page)
    # Curves, confusion matrix, count scatter, and 4 panels for each of the 4 images.
    assert len(images) == 3 + 4 * 4
    for source in images:
        assert source.startswith("data:image/png;base64,")
        png = Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1])))
        assert png.format == "PNG" and png.width <= 1600
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page and "<link" not in page
    for text in (*DEFAULT_CLASSES, "segnet-basic", "mean IoU", "Confusion matrix", "Training curves", "Error map"):
        assert text in page
    assert "All 4 images by mean IoU, worst first" in page
    metrics = json.loads((report.parent / EVALUATION_FOLDER / "metrics.json").read_text())
    assert "Objects found and image-level presence" in page and "sensitivity" in page
    spirochete = metrics["objects"]["spirochete"]
    cells = [spirochete[key] for key in ("true_objects", "predicted_objects", "found", "correct")]
    assert "<td>spirochete</td>" + "".join(f"<td>{value}</td>" for value in cells) in page
    for name in metrics["presence"]["spirochete"]["false_alarm_images"]:
        assert name in page.split("said present in", 1)[1]


def test_report_without_history_or_evaluation(report: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(report.parent, run)
    (run / HISTORY_FILE).unlink()
    page = write_report(run).read_text(encoding="utf-8")
    assert "No training history" in page
    with pytest.raises(DataError, match="metrics.json.*segnet evaluate"):
        write_report(run, tmp_path / "nowhere")


def test_report_right_after_training_evaluates_the_validation_images_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make_run
) -> None:
    run, data = make_run(tmp_path)
    save_config(TrainConfig(data=str(data), out=str(run)), run / CONFIG_FILE)
    assert main(["report", str(run), "--device", "cpu", "--no-tta"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert (
        out[0]
        == f"{run}: not evaluated yet; evaluating best.pt on the run's validation images of {data} first, as segnet evaluate does"
    )
    assert out[-1] == f"report: {run / 'report.html'}"
    metrics = json.loads((run / EVALUATION_FOLDER / "metrics.json").read_text())
    assert (
        metrics["num_images"] == 2 and metrics["evaluation"]["split"] == "val" and metrics["evaluation"]["tta"] is False
    )
    assert "All 2 images by mean IoU, worst first" in (run / REPORT_FILE).read_text(encoding="utf-8")
    # A second report reads that evaluation instead of evaluating again.
    assert main(["report", str(run)]) == 0
    assert capsys.readouterr().out.splitlines() == [f"report: {run / 'report.html'}"]


def test_report_shows_unlabelled_pixels(tmp_path: Path, make_run) -> None:
    run, data = make_run(tmp_path)
    mask_path = data / "masks" / "003.png"
    mask = np.asarray(Image.open(mask_path)).copy()
    mask[:8, :] = 255
    Image.fromarray(mask).save(mask_path)
    evaluate_run(run / BEST_CHECKPOINT, data, options=PLAIN, ignore_index=255, progress=False)
    write_report(run)
    page = (run / REPORT_FILE).read_text(encoding="utf-8")
    assert "ignored (mask value 255)" in page


def test_training_curves_with_sparse_validation(tmp_path: Path) -> None:
    history = tmp_path / HISTORY_FILE
    history.write_text(
        "epoch,train_loss,val_loss,val_global_accuracy,val_mean_iou,lr,epoch_seconds\n1,1.0,,,,0.001,3.0\n"
    )
    out = tmp_path / CURVES_FILE
    plot_training_curves(history, out)  # one epoch, no validation yet: what training draws first
    with history.open("a") as handle:
        handle.write("2,0.8,0.9,0.7,0.4,0.0008,3.1\n3,0.7,,,,0.0005,3.0\n4,0.6,0.7,0.8,0.5,0.0002,3.0\n")
    plot_training_curves(history, out)
    assert Image.open(out).size[0] > 800
    assert {p.name for p in tmp_path.iterdir()} == {HISTORY_FILE, CURVES_FILE}  # no temporary file left

    history.write_text("epoch,loss\n1,0.5\n")
    with pytest.raises(DataError, match="history.csv"):
        plot_training_curves(history, out)


def test_gallery_shows_worst_then_best_without_repeats() -> None:
    rows = [{"image": f"{i:03d}", "mean_iou": f"{i / 20:.3f}"} for i in range(12)] + [
        {"image": "empty", "mean_iou": ""}
    ]
    chosen = _choose_gallery(rows)
    assert [(kind, row["image"]) for kind, row in chosen] == [
        *(("worst", f"{i:03d}") for i in range(6)),
        *(("best", f"{i:03d}") for i in (11, 10, 9)),
    ]
    assert [kind for kind, _ in _choose_gallery(rows[:4])] == ["worst"] * 4


def test_error_map_colours() -> None:
    truth = np.array([[0, 1, 2, 255]], dtype=np.uint8)
    pred = np.array([[0, 2, 0, 1]], dtype=np.uint8)
    colours = _error_colours(class_palette(3))
    errors = _error_map(truth, pred, colours, ignore_index=255)
    assert tuple(errors[0, 0]) == CORRECT_COLOUR
    assert tuple(errors[0, 1]) == tuple(class_palette(3)[2])  # wrong: the predicted class's colour
    assert tuple(errors[0, 2]) == (255, 255, 255)  # predicted background (black) is drawn white
    assert tuple(errors[0, 3]) == IGNORED_COLOUR
    assert len({tuple(c) for c in colours} | {CORRECT_COLOUR, IGNORED_COLOUR}) == 5  # all distinguishable


def test_large_pictures_are_downscaled() -> None:
    picture = Image.open(io.BytesIO(_png(np.zeros((800, 1500, 3), dtype=np.uint8), nearest=True)))
    assert picture.size == (THUMBNAIL_WIDTH, 320)


@pytest.mark.slow
def test_report_renders_in_headless_chromium(report: Path, tmp_path: Path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("no chromium on PATH (Debian: apt-get install chromium); the page was not rendered")
    screenshot = tmp_path / "report.png"
    command = [
        browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={screenshot}", "--window-size=1280,2400",
        report.resolve().as_uri(),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert screenshot.is_file(), f"chromium wrote no screenshot (exit {result.returncode}): {result.stderr[-2000:]}"
    pixels = np.asarray(Image.open(screenshot).convert("RGB"))
    assert pixels.std() > 10, "the screenshot is blank"
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50, "the screenshot has almost no colours"
    # The page itself rendered (not a browser error page): its heading colour is there.
    assert np.count_nonzero(np.all(np.abs(pixels.astype(int) - ACCENT) <= 8, axis=2)) > 1000
