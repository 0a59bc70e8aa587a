"""The dock widget (Plugins -> segnet -> Segment): segment an image layer, show counts and objects, save.

Segment runs :func:`segnet.napari.segmentation.segment` in a napari thread worker, so the viewer
stays responsive; the progress bar counts tiles, Cancel stops between two batches of tiles. A
problem the user can fix (a broken checkpoint, an image that is no RGB, out of memory) is a
napari notification with the command line's one-line message, not a traceback.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from napari.layers import Image
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from segnet.core.errors import OutOfMemory, SegnetError
from segnet.data.pairs import array_to_rgb
from segnet.evaluate.columns import (
    CENTROID_X_COLUMN,
    CENTROID_Y_COLUMN,
    OBJECT_COLUMNS,
    OBJECT_ID_COLUMN,
    VIEWER_COLUMNS,
    from_viewer_order,
    to_viewer_order,
)
from segnet.model.builtin import BUILTIN_MODELS, DEFAULT_BUILTIN_MODEL
from segnet.model.options import AS_GIVEN_DIAMETER, AUTO_DIAMETER, DEFAULT_INFERENCE, diameter_text, parse_diameter
from segnet.napari.layers import (
    CLASSES_SUFFIX,
    OBJECT_CONTOUR_PX,
    OBJECTS_SUFFIX,
    UNCERTAINTY_SUFFIX,
    classes_layer,
    objects_layer,
    uncertainty_layer,
)
from segnet.napari.segmentation import (
    Cancelled,
    ModelOptions,
    PredictorCache,
    Segmentation,
    image_pixel_size,
    save_correction,
    save_objects_table,
    segment,
)
from segnet.plan.config import MAX_PIXEL_SIZE_UM, MIN_PIXEL_SIZE_UM

if TYPE_CHECKING:
    import napari

MESSAGE_PREFIX = "segnet: "
DEFAULT_TILE = 512  # tiles give the progress bar something to count and Cancel a place to stop
MAX_MC_SAMPLES = 64
CANCELLED = "segmentation cancelled"
MODEL_FILES = "segnet models (*.pt *.onnx);;All files (*)"
# objects.csv columns click-to-centre reads.
_OBJECT_ID, _CENTROID_X, _CENTROID_Y = map(
    OBJECT_COLUMNS.index, (OBJECT_ID_COLUMN, CENTROID_X_COLUMN, CENTROID_Y_COLUMN)
)


@dataclass(frozen=True)
class _Job:
    """What one press of Segment works on (read from the widgets on the main thread)."""

    layer_name: str
    image: np.ndarray
    source: str | None
    pixel_size: float | None
    options: ModelOptions


class SegmentWidget(QWidget):
    """Segment, count and measure the chosen image layer with a segnet model; save the table or a correction."""

    progressed = Signal(int, int)
    finished = Signal()  # after each Segment, whatever its outcome

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.predictors = PredictorCache()
        self.result: Segmentation | None = None
        self.result_image: str | None = None
        self.worker = None
        self._cancel = threading.Event()
        self._build()
        self.viewer.layers.events.inserted.connect(self._refresh_layers)
        self.viewer.layers.events.removed.connect(self._refresh_layers)
        self.progressed.connect(self._show_progress)
        self._refresh_layers()

    # ------------------------------------------------------------------ layout

    def _build(self) -> None:
        self.segment_button = QPushButton("Segment")
        self.segment_button.clicked.connect(self.start)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self._cancel.set)
        buttons = QHBoxLayout()
        buttons.addWidget(self.segment_button)
        buttons.addWidget(self.cancel_button)
        self.progress = QProgressBar()
        self.progress.setFormat("%v / %m tiles")
        self.progress.setValue(0)
        self.counts_label = QLabel("")
        self.counts_label.setWordWrap(True)
        self.table = QTableWidget(0, len(VIEWER_COLUMNS))
        self.table.setHorizontalHeaderLabels(list(VIEWER_COLUMNS))
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.currentCellChanged.connect(self._centre_on_row)
        self.save_table_button = QPushButton("Save table…")
        self.save_table_button.clicked.connect(self._ask_save_table)
        self.save_correction_button = QPushButton("Save image + mask to dataset…")
        self.save_correction_button.setToolTip(
            "after correcting the classes layer with the brush: adds DIR/images/NAME.png and DIR/masks/NAME.png, "
            f"ready for segnet train --data DIR --init {DEFAULT_BUILTIN_MODEL}"
        )
        self.save_correction_button.clicked.connect(self._ask_save_correction)
        saves = QHBoxLayout()
        saves.addWidget(self.save_table_button)
        saves.addWidget(self.save_correction_button)
        self._enable_saving(False)

        layout = QVBoxLayout(self)
        layout.addLayout(self._options_form())
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.counts_label)
        layout.addWidget(self.table)
        layout.addLayout(saves)

    def _options_form(self) -> QFormLayout:
        """The image layer, the model and how it runs."""
        self.layer_box = QComboBox()
        self.model_edit = QLineEdit(DEFAULT_BUILTIN_MODEL)
        self.model_edit.setToolTip(
            "a built-in model (" + ", ".join(BUILTIN_MODELS) + "), a checkpoint (RUN/best.pt), "
            "an ONNX file from 'segnet export', or a cross-validation run folder (its folds' ensemble)"
        )
        browse = QPushButton("…")
        browse.setToolTip("choose a checkpoint or ONNX file")
        browse.clicked.connect(self._browse_model)
        model_row = QHBoxLayout()
        model_row.addWidget(self.model_edit)
        model_row.addWidget(browse)
        self.tta_box = QCheckBox("test-time augmentation (8 views)")
        self.tta_box.setChecked(True)
        self.tile_box = QSpinBox()
        self.tile_box.setRange(0, 8192)
        self.tile_box.setSingleStep(64)
        self.tile_box.setValue(DEFAULT_TILE)
        self.tile_box.setSpecialValueText("whole image")
        self.tile_box.setSuffix(" px")
        self.mc_box = QSpinBox()
        self.mc_box.setRange(0, MAX_MC_SAMPLES)
        self.mc_box.setSpecialValueText("off")
        self.mc_box.setToolTip("Monte Carlo dropout samples (bayesian models): adds an uncertainty layer")
        self.diameter_box = QComboBox()
        self.diameter_box.setEditable(True)
        self.diameter_box.addItems([AUTO_DIAMETER, AS_GIVEN_DIAMETER])
        self.diameter_box.setCurrentText(diameter_text(DEFAULT_INFERENCE.diameter))
        self.diameter_box.setToolTip(
            "the red cells' diameter in pixels (type a number): the image is resized so they come to the size the model "
            f"was trained at, for images of another magnification; '{AUTO_DIAMETER}': estimated from a first pass "
            f"(up to 3x the time; a model that records no cell size segments the image as given); "
            f"'{AS_GIVEN_DIAMETER}': the image as given"
        )
        self.pixel_box = QDoubleSpinBox()
        self.pixel_box.setRange(0.0, MAX_PIXEL_SIZE_UM)  # 0: the special value below
        self.pixel_box.setDecimals(-math.floor(math.log10(MIN_PIXEL_SIZE_UM)))  # the smallest size is one step
        self.pixel_box.setSingleStep(0.01)
        self.pixel_box.setSpecialValueText("from the TIFF, else pixels only")
        self.pixel_box.setSuffix(" µm/px")
        form = QFormLayout()
        form.addRow("image", self.layer_box)
        form.addRow("model", model_row)
        form.addRow("", self.tta_box)
        form.addRow("tile size", self.tile_box)
        form.addRow("MC samples", self.mc_box)
        form.addRow("cell diameter", self.diameter_box)
        form.addRow("pixel size", self.pixel_box)
        return form

    def _enable_saving(self, enabled: bool) -> None:
        self.save_table_button.setEnabled(enabled)
        self.save_correction_button.setEnabled(enabled)

    def _refresh_layers(self, event: object = None) -> None:
        """List the image layers, keeping the chosen one while it exists."""
        chosen = self.layer_box.currentText()
        names = [
            layer.name
            for layer in self.viewer.layers
            if isinstance(layer, Image) and not layer.name.endswith(UNCERTAINTY_SUFFIX)
        ]
        self.layer_box.clear()
        self.layer_box.addItems(names)
        if chosen in names:
            self.layer_box.setCurrentText(chosen)

    def _browse_model(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Choose a segnet model", "", MODEL_FILES)
        if path:
            self.model_edit.setText(path)

    # ------------------------------------------------------------------ segmenting

    def start(self) -> None:
        """Segment the chosen layer in a thread worker (the Segment button)."""
        try:
            job = self._job()
        except SegnetError as error:
            show_error(MESSAGE_PREFIX + str(error))
            self.finished.emit()
            return
        self._cancel.clear()
        self.segment_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress.setRange(0, 0 if job.options.tile is None else 1)  # busy until the first tiles are done
        self.progress.setValue(0)
        self.worker = create_worker(self._run, job)
        self.worker.returned.connect(lambda outcome: self._done(job, outcome))
        self.worker.start()

    def _job(self) -> _Job:
        name = self.layer_box.currentText()
        if not name or name not in self.viewer.layers:
            raise SegnetError("open an image first (File -> Open), then choose it as the image to segment")
        layer = self.viewer.layers[name]
        data = layer.data[0] if layer.multiscale else layer.data
        image = array_to_rgb(np.asarray(data), name)
        options = ModelOptions(
            self.model_edit.text().strip() or DEFAULT_BUILTIN_MODEL,
            self.tile_box.value() or None,
            self.tta_box.isChecked(),
            self.mc_box.value(),
            diameter=self._diameter(),
        )
        return _Job(name, image, layer.source.path, self.pixel_box.value() or None, options)

    def _diameter(self) -> float | str | None:
        text = self.diameter_box.currentText().strip()
        return DEFAULT_INFERENCE.diameter if not text else parse_diameter(text)

    def _run(self, job: _Job) -> Segmentation | str:
        """In the worker thread: the result, or the one-line message of what went wrong."""
        try:
            predictor = self.predictors.get(job.options)
            pixel_size = image_pixel_size(job.source, job.pixel_size)
            return segment(
                job.image,
                job.source or job.layer_name,
                predictor,
                pixel_size=pixel_size,
                progress=self.progressed.emit,
                cancel=self._cancel,
            )
        except Cancelled:
            return CANCELLED
        except OutOfMemory as error:  # the predictor's message, which names no layer
            return f"{job.layer_name}: {error}"
        except SegnetError as error:
            return str(error)

    def _show_progress(self, done: int, total: int) -> None:
        self.progress.setRange(0, total)
        self.progress.setValue(done)

    def _done(self, job: _Job, outcome: Segmentation | str) -> None:
        self.segment_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.worker = None
        if outcome == CANCELLED:
            self.progress.setRange(0, 1)
            self.progress.setValue(0)
            show_info(MESSAGE_PREFIX + CANCELLED)
        elif isinstance(outcome, str):
            self.progress.setRange(0, 1)
            self.progress.setValue(0)
            show_error(MESSAGE_PREFIX + outcome)
        else:
            self._show(job.layer_name, outcome)
        self.finished.emit()

    # ------------------------------------------------------------------ results

    def _show(self, image_name: str, result: Segmentation) -> None:
        self.result, self.result_image = result, image_name
        if self.progress.maximum() == 0:  # a whole image: busy until now
            self.progress.setRange(0, 1)
        self.progress.setValue(self.progress.maximum())
        layers = [
            classes_layer(result.mask, result.class_names, image_name),
            objects_layer(result.labels, result.object_classes, result.class_names, image_name),
        ]
        if result.entropy is not None:
            layers.append(uncertainty_layer(result.entropy, len(result.class_names), image_name))
        for data, kwargs, kind in layers:
            self._put_layer(data, kwargs, kind)
        self.viewer.layers[image_name + OBJECTS_SUFFIX].contour = OBJECT_CONTOUR_PX
        self.counts_label.setText("   ".join(f"{name}: {count}" for name, count in result.counts().items()))
        self.table.setRowCount(0)
        self.table.setRowCount(len(result.rows))
        for row, cells in enumerate(result.rows):
            for column, cell in enumerate(to_viewer_order(cells)):
                self.table.setItem(row, column, QTableWidgetItem(cell))
        self._enable_saving(True)

    def _put_layer(self, data: np.ndarray, kwargs: dict, kind: str) -> None:
        """Add the layer, or replace it where an earlier Segment of this image made it."""
        name = kwargs["name"]
        if name in self.viewer.layers:
            self.viewer.layers.remove(name)
        getattr(self.viewer, f"add_{kind}")(data, **kwargs)

    def table_rows(self) -> list[list[str]]:
        """The table's cells, row by row, as shown, in ``objects.csv``'s column order (as saved)."""
        return [
            from_viewer_order([self.table.item(row, column).text() for column in range(self.table.columnCount())])
            for row in range(self.table.rowCount())
        ]

    def _centre_on_row(self, row: int, *_: int) -> None:
        """Centre the view on the object of the clicked row and select it in the objects layer."""
        if self.result is None or not 0 <= row < len(self.result.rows):
            return
        cells = self.result.rows[row]
        centre = (float(cells[_CENTROID_Y]), float(cells[_CENTROID_X]))
        objects_name = self.result_image + OBJECTS_SUFFIX
        if objects_name in self.viewer.layers:  # unless the user deleted it
            objects = self.viewer.layers[objects_name]
            centre = tuple(objects.data_to_world(centre))
            objects.selected_label = int(cells[_OBJECT_ID])
        self.viewer.scene.camera.center = centre

    # ------------------------------------------------------------------ saving

    def _ask_save_table(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save the objects table", "objects.csv", "CSV (*.csv)")
        if path:
            self.save_table(path)

    def save_table(self, path: str) -> None:
        """Write the table as objects.csv is written; a failure is a notification."""
        try:
            show_info(MESSAGE_PREFIX + f"saved {save_objects_table(path, self.table_rows())}")
        except SegnetError as error:
            show_error(MESSAGE_PREFIX + str(error))

    def _ask_save_correction(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Dataset folder (images/ and masks/ are added)")
        if folder:
            self.save_correction(folder)

    def save_correction(self, folder: str) -> None:
        """Save the segmented image and its classes layer (as corrected) into the dataset ``folder``."""
        name = self.result_image
        if name is None or name not in self.viewer.layers or name + CLASSES_SUFFIX not in self.viewer.layers:
            show_error(MESSAGE_PREFIX + "segment an image first: its classes layer is what gets saved")
            return
        layer = self.viewer.layers[name]
        mask = np.asarray(self.viewer.layers[name + CLASSES_SUFFIX].data)
        try:
            image = array_to_rgb(np.asarray(layer.data[0] if layer.multiscale else layer.data), name)
            pair = save_correction(folder, name, image, mask, self.result.class_names)
        except SegnetError as error:
            show_error(MESSAGE_PREFIX + str(error))
            return
        show_info(
            MESSAGE_PREFIX
            + f"saved {pair.image} and {pair.mask}; fine-tune with segnet train --data {folder} --init {DEFAULT_BUILTIN_MODEL}"
        )
