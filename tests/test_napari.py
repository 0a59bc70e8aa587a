"""The napari plugin, driven as a user would: choose the layer, press Segment, wait for the worker.

Its results must be those of ``segnet predict`` on the same file. Rendering needs an X display:
``make test`` installs Debian's Xvfb and pytest-xvfb starts it.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("napari", reason="the napari extra is not installed (pip install -e '.[napari-test]')")
pytest.importorskip("pytestqt", reason="pytest-qt is not installed (pip install -e '.[napari-test]')")
if not os.environ.get("DISPLAY") and os.environ.get("QT_QPA_PLATFORM") != "offscreen":
    pytest.skip(
        "no X display for napari's canvas: install xvfb (make test does) and pytest-xvfb", allow_module_level=True
    )

from napari.utils.notifications import notification_manager  # noqa: E402
from qtpy.QtCore import Qt  # noqa: E402

from segnet.cli import main  # noqa: E402
from segnet.data.classes import DEFAULT_CLASSES
from segnet.data.pairs import find_pairs, read_image, read_mask  # noqa: E402
from segnet.data.palette import class_palette
from segnet.data.synthetic import generate_sample  # noqa: E402
from segnet.evaluate.columns import VIEWER_COLUMNS  # noqa: E402
from segnet.evaluate.measure import read_object_labels  # noqa: E402
from segnet.model.builtin import DEFAULT_BUILTIN_MODEL  # noqa: E402
from segnet.model.checkpoint import Checkpoint  # noqa: E402
from segnet.model.networks import build_model  # noqa: E402
from segnet.napari.layers import CLASSES_SUFFIX, OBJECTS_SUFFIX  # noqa: E402
from segnet.napari.reader import get_reader  # noqa: E402
from segnet.napari.widget import MESSAGE_PREFIX, SegmentWidget  # noqa: E402
from segnet.plan.spec import ModelSpec  # noqa: E402

TILE = 64
STEM = "field"
NAPARI_DIR = Path(__file__).parents[1] / "src" / "segnet" / "napari"


@pytest.fixture(scope="module")
def predicted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny untrained checkpoint (its random weights still give objects of both classes), an image, and segnet predict's outputs."""
    root = tmp_path_factory.mktemp("napari")
    torch.manual_seed(0)
    checkpoint = root / "tiny.pt"
    model = build_model(ModelSpec("segnet-basic", len(DEFAULT_CLASSES)))
    Checkpoint.of_model(model, list(DEFAULT_CLASSES), [0.2, 0.2, 0.2], [0.2, 0.2, 0.2]).save(checkpoint)
    image = root / f"{STEM}.png"
    Image.fromarray(generate_sample(96, 128, np.random.default_rng(0))[0]).save(image)
    out = root / "predicted"
    assert (
        main(
            ["predict", str(image), "--out", str(out), "--checkpoint", str(checkpoint), "--tile", str(TILE), "--no-tta"]
        )
        == 0
    )
    return {"checkpoint": checkpoint, "image": image, "out": out}


@pytest.fixture
def notifications() -> list[str]:
    """The messages of the notifications napari shows during a test."""
    messages: list[str] = []

    def keep(event: object) -> None:
        messages.append(event.message)

    notification_manager.notification_ready.connect(keep)
    yield messages
    notification_manager.notification_ready.disconnect(keep)


def docked_widget(viewer, image: Path, model: Path) -> SegmentWidget:
    viewer.open(str(image))
    widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget)
    assert widget.model_edit.text() == DEFAULT_BUILTIN_MODEL  # the default: the built-in model
    widget.model_edit.setText(str(model))
    widget.tile_box.setValue(TILE)
    widget.tta_box.setChecked(False)
    return widget


def press_segment(qtbot, widget: SegmentWidget) -> None:
    with qtbot.waitSignal(widget.finished, timeout=300_000):
        qtbot.mouseClick(widget.segment_button, Qt.MouseButton.LeftButton)


def read_csv(path: Path) -> list[list[str]]:
    with path.open(newline="") as handle:
        return list(csv.reader(handle))


def test_segment_gives_what_segnet_predict_writes(make_napari_viewer, qtbot, predicted, tmp_path, monkeypatch) -> None:
    viewer = make_napari_viewer(show=True)
    widget = docked_widget(viewer, predicted["image"], predicted["checkpoint"])
    assert widget.layer_box.currentText() == STEM
    press_segment(qtbot, widget)

    out = predicted["out"]
    classes, objects = viewer.layers[STEM + CLASSES_SUFFIX], viewer.layers[STEM + OBJECTS_SUFFIX]
    mask = read_mask(out / f"{STEM}_mask.png", len(DEFAULT_CLASSES))
    np.testing.assert_array_equal(classes.data, mask)
    expected_objects = read_object_labels(out / f"{STEM}_objects.tif")
    np.testing.assert_array_equal(objects.data, expected_objects.labels)
    table = read_csv(out / "objects.csv")
    assert len(table) > 3 and widget.table_rows() == table[1:]
    shown_header = [widget.table.horizontalHeaderItem(column).text() for column in range(widget.table.columnCount())]
    assert (
        shown_header == list(VIEWER_COLUMNS) and shown_header[0] == "object_id"
    )  # the object first, the image path last
    for class_id, name in enumerate(DEFAULT_CLASSES[1:], start=1):
        assert f"{name}: {expected_objects.object_classes.count(class_id)}" in widget.counts_label.text()
    assert widget.progress.value() == widget.progress.maximum() > 1  # counted tiles

    # Clicking a row centres the view on that object and selects it.
    qtbot.mouseClick(
        widget.table.viewport(),
        Qt.MouseButton.LeftButton,
        pos=widget.table.visualRect(widget.table.model().index(2, 0)).center(),
    )
    row = table[3]
    assert tuple(viewer.scene.camera.center[-2:]) == pytest.approx((float(row[5]), float(row[4])))
    assert objects.selected_label == int(row[2])

    # The rendered view is no blank canvas and shows the class colours where the mask says.
    objects.visible = False
    figure = viewer.export_figure()[..., :3].astype(int)
    assert figure.shape[:2] == mask.shape and figure.std() > 10
    palette = class_palette(len(DEFAULT_CLASSES)).astype(int)
    for class_id in (1, 2):
        inside = mask == class_id
        other = figure[~inside].mean(axis=0)
        towards = (figure[inside].mean(axis=0) - other) @ (palette[class_id] - other)
        assert towards > 0, f"class {class_id} is not drawn in its colour"

    # Save the table, then correct the mask with the brush and save image + mask as a dataset.
    monkeypatch.setattr("qtpy.QtWidgets.QFileDialog.getSaveFileName", lambda *a, **k: (str(tmp_path / "table.csv"), ""))
    qtbot.mouseClick(widget.save_table_button, Qt.MouseButton.LeftButton)
    assert (tmp_path / "table.csv").read_bytes() == (out / "objects.csv").read_bytes()
    classes.paint((10, 10), 2)
    assert classes.data[10, 10] == 2
    monkeypatch.setattr("qtpy.QtWidgets.QFileDialog.getExistingDirectory", lambda *a, **k: str(tmp_path / "dataset"))
    qtbot.mouseClick(widget.save_correction_button, Qt.MouseButton.LeftButton)
    assert main(["check", str(tmp_path / "dataset")]) == 0
    (pair,) = find_pairs(tmp_path / "dataset")
    assert pair.stem == STEM
    np.testing.assert_array_equal(read_mask(pair.mask, len(DEFAULT_CLASSES)), classes.data)
    np.testing.assert_array_equal(read_image(pair.image), read_image(predicted["image"]))


def test_problems_are_one_line_notifications_and_cancel_stops(
    make_napari_viewer, qtbot, predicted, tmp_path, capsys, notifications
) -> None:
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    assert main(["predict", str(predicted["image"]), "--out", str(tmp_path / "out"), "--checkpoint", str(broken)]) == 1
    cli_line = capsys.readouterr().err.strip().splitlines()[-1]
    assert cli_line.startswith("segnet: error: ")

    viewer = make_napari_viewer()
    widget = docked_widget(viewer, predicted["image"], broken)
    press_segment(qtbot, widget)
    assert notifications[-1] == MESSAGE_PREFIX + cli_line.removeprefix("segnet: error: ")

    viewer.add_image(np.zeros((4, 32, 32), dtype=np.uint8), name="stack")
    widget.layer_box.setCurrentText("stack")
    press_segment(qtbot, widget)
    assert notifications[-1] == MESSAGE_PREFIX + "stack: expected an RGB or grayscale image, got shape (4, 32, 32)"

    # The cell-diameter field takes what --diameter takes, and says what is wrong as the CLI does.
    widget.layer_box.setCurrentText(STEM)
    widget.model_edit.setText(str(predicted["checkpoint"]))
    widget.diameter_box.setCurrentText("big")
    press_segment(qtbot, widget)
    assert notifications[-1] == (
        MESSAGE_PREFIX + "the cell diameter must be a number of pixels, 'auto' or 'none', got 'big'"
    )
    widget.diameter_box.setCurrentText("64")  # this checkpoint records no training cell size
    press_segment(qtbot, widget)
    assert "records no usable reference cell size" in notifications[-1]
    widget.diameter_box.setCurrentText("none")

    # Cancel, pressed once the first tiles are done, stops the worker before the next batch.
    widget.tile_box.setValue(32)
    widget.progressed.connect(lambda done, total: widget._cancel.set(), Qt.ConnectionType.DirectConnection)
    with qtbot.waitSignal(widget.finished, timeout=300_000):
        qtbot.mouseClick(widget.segment_button, Qt.MouseButton.LeftButton)
        assert widget.cancel_button.isEnabled() and not widget.segment_button.isEnabled()
    assert notifications[-1] == MESSAGE_PREFIX + "segmentation cancelled"
    assert STEM + CLASSES_SUFFIX not in viewer.layers and widget.segment_button.isEnabled()


def test_reader_opens_predict_outputs(predicted) -> None:
    mask_path = str(predicted["out"] / f"{STEM}_mask.png")
    assert get_reader(str(predicted["image"])) is None
    (classes, classes_kwargs, kind), (objects, objects_kwargs, _) = get_reader(mask_path)(mask_path)
    assert (
        kind == "labels"
        and classes_kwargs["name"] == STEM + CLASSES_SUFFIX
        and objects_kwargs["name"] == STEM + OBJECTS_SUFFIX
    )
    np.testing.assert_array_equal(classes, read_mask(mask_path, len(DEFAULT_CLASSES)))
    np.testing.assert_array_equal(objects, read_object_labels(predicted["out"] / f"{STEM}_objects.tif").labels)
    assert list(classes_kwargs["features"]["class"]) == list(DEFAULT_CLASSES)


@pytest.mark.slow
def test_manifest_names_importable_commands_and_nothing_loads_torch() -> None:
    import npe2

    manifest = npe2.PluginManifest.from_file(NAPARI_DIR / "napari.yaml")
    modules = sorted({command.python_name.split(":")[0] for command in manifest.contributions.commands})
    assert modules == ["segnet.napari.reader", "segnet.napari.widget"]
    probe = f"import sys, {', '.join(modules)}; print('torch' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(NAPARI_DIR.parents[1])}
    assert (
        subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True
        ).stdout.strip()
        == "False"
    )
    for command in manifest.contributions.commands:
        module, name = command.python_name.split(":")
        assert callable(getattr(sys.modules.get(module) or __import__(module, fromlist=[name]), name))
