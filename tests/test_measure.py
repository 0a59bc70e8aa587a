"""Tests for segnet.evaluate.measure: object geometry on drawn shapes, label images, and objects.csv from predict."""

from __future__ import annotations

import csv
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import tifffile
from helpers import count_objects
from PIL import Image
from skimage.draw import disk, polygon

from segnet.core.errors import DataError, SegnetError
from segnet.data.classes import DARKFIELD_ROLES, ClassRoles
from segnet.data.cleaning import clean_prediction
from segnet.evaluate.columns import IMAGE_COLUMN, OBJECT_COLUMNS, VIEWER_COLUMNS, from_viewer_order, to_viewer_order
from segnet.evaluate.measure import (
    centreline_length_and_width,
    find_objects,
    measure_objects,
    read_object_labels,
    tiff_pixel_size,
    write_object_labels,
)
from segnet.plan.config import load_config
from segnet.predict.files import predict_paths

CLASSES = ["background", "erythrocyte", "spirochete"]
# Stated tolerance for thin shapes 3-7 px wide: length within 6%, mean width within 0.5 px.
LENGTH_TOLERANCE, WIDTH_TOLERANCE = 0.06, 0.5


def bar(length: float, width: float, degrees: float, size: int = 200) -> np.ndarray:
    """A filled rectangle of ``length x width`` pixels centred in the image, turned by ``degrees``."""
    angle = math.radians(degrees)
    along = np.array([math.sin(angle), math.cos(angle)])
    across = np.array([along[1], -along[0]])
    centre = np.array([size / 2, size / 2])
    corners = [
        centre + a * along * length / 2 + b * across * width / 2 for a, b in ((-1, -1), (1, -1), (1, 1), (-1, 1))
    ]
    shape = np.zeros((size, size), dtype=bool)
    rows, cols = polygon([c[0] for c in corners], [c[1] for c in corners], shape.shape)
    shape[rows, cols] = True
    return shape


def arc(radius: float, width: float, span_degrees: float, size: int = 200) -> np.ndarray:
    """A band of ``width`` pixels along a circle of ``radius``, over ``span_degrees`` from angle 0."""
    y, x = np.mgrid[:size, :size] - size / 2
    angle = np.degrees(np.arctan2(y, x)) % 360
    return (np.abs(np.hypot(y, x) - radius) <= width / 2) & (angle <= span_degrees)


@pytest.mark.parametrize(
    ("length", "width", "degrees"), [(100, 5, 0), (100, 5, 30), (100, 5, 45), (60, 3, 17), (120, 7, 70)]
)
def test_straight_bar_length_and_width(length: float, width: float, degrees: float) -> None:
    measured_length, measured_width = centreline_length_and_width(bar(length, width, degrees))
    assert measured_length == pytest.approx(length, rel=LENGTH_TOLERANCE)
    assert measured_width == pytest.approx(width, abs=WIDTH_TOLERANCE)


@pytest.mark.parametrize(("radius", "width", "span"), [(40, 5, 180), (30, 4, 270), (50, 6, 90)])
def test_arc_length_follows_the_curve_not_the_chord(radius: float, width: float, span: float) -> None:
    measured_length, measured_width = centreline_length_and_width(arc(radius, width, span))
    assert measured_length == pytest.approx(math.radians(span) * radius, rel=LENGTH_TOLERANCE)
    assert measured_width == pytest.approx(width, abs=WIDTH_TOLERANCE)


def test_disc_area_centroid_box_and_intensity() -> None:
    mask = np.zeros((120, 160), dtype=np.uint8)
    mask[disk((50, 70), 20, shape=mask.shape)] = 1
    image = np.zeros((120, 160, 3), dtype=np.uint8)
    image[mask == 1] = (90, 120, 150)
    objects = find_objects(mask, min_area=1)
    assert objects.object_classes == (1,)
    (disc,) = measure_objects(objects, image)
    assert disc.area == pytest.approx(math.pi * 20**2, rel=0.02)
    assert (disc.centroid_x, disc.centroid_y) == pytest.approx((70, 50), abs=0.5)
    rows, cols = np.nonzero(mask)
    assert disc.bbox == (cols.min(), rows.min(), np.ptp(cols) + 1, np.ptp(rows) + 1)  # left, top, width, height
    assert disc.bbox[2] == pytest.approx(40, abs=1)
    assert disc.mean_intensity == pytest.approx(120.0)
    assert disc.length is None and disc.width is None  # red cells are not thin


def test_objects_are_the_counted_objects_one_id_each() -> None:
    mask = np.zeros((160, 160), dtype=np.uint8)
    for centre in ((40, 40), (40, 66), (120, 120)):  # two touching cells and one apart
        mask[disk(centre, 15, shape=mask.shape)] = 1
    mask[bar(80, 5, 60, size=160)] = 2
    mask[5:7, 150:152] = 2  # a speck that cleaning drops
    objects = find_objects(mask)
    assert Counter(objects.object_classes) == count_objects(clean_prediction(mask), [1, 2])
    assert objects.object_classes == (1, 1, 1, 2)
    assert objects.labels.dtype == np.uint16
    assert sorted(np.unique(objects.labels)) == [0, 1, 2, 3, 4]
    for object_id, class_id in enumerate(objects.object_classes, start=1):
        assert (clean_prediction(mask)[objects.labels == object_id] == class_id).all()


def test_label_image_round_trip(tmp_path: Path) -> None:
    mask = np.zeros((64, 64), dtype=np.uint8)
    mask[disk((30, 30), 10)] = 1
    objects = find_objects(mask, min_area=1)
    path = tmp_path / "a_objects.tif"
    write_object_labels(path, objects, CLASSES)
    assert [file.name for file in tmp_path.iterdir()] == ["a_objects.tif"]  # no temporary left
    back = read_object_labels(path)
    assert np.array_equal(back.labels, objects.labels) and back.object_classes == objects.object_classes
    tifffile.imwrite(tmp_path / "plain.tif", objects.labels)
    with pytest.raises(DataError, match="plain.tif"):
        read_object_labels(tmp_path / "plain.tif")


def test_pixel_size_from_tiff_resolution_tags(tmp_path: Path) -> None:
    image = np.zeros((8, 8, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "cm.tif", image, resolution=(40000, 40000), resolutionunit="CENTIMETER")
    tifffile.imwrite(
        tmp_path / "imagej.tif", image[..., 0], imagej=True, resolution=(4, 4), metadata={"unit": "micron"}
    )
    tifffile.imwrite(tmp_path / "print.tif", image, resolution=(72, 72), resolutionunit="INCH")
    tifffile.imwrite(tmp_path / "none.tif", image)
    assert tiff_pixel_size(tmp_path / "cm.tif") == pytest.approx(0.25)
    assert tiff_pixel_size(tmp_path / "imagej.tif") == pytest.approx(0.25)
    assert tiff_pixel_size(tmp_path / "print.tif") is None  # 72 dpi is a print setting, 353 um per pixel
    assert tiff_pixel_size(tmp_path / "none.tif") is None
    Image.fromarray(image).save(tmp_path / "a.png")
    assert tiff_pixel_size(tmp_path / "a.png") is None


class DrawnPredictor:
    """Stands in for a Predictor: 'predicts' a fixed drawn mask for every image."""

    samples_uncertainty = False

    def __init__(self, mask: np.ndarray, class_names: list[str] = CLASSES, roles: ClassRoles = DARKFIELD_ROLES) -> None:
        self.mask, self.class_names, self.roles = mask, class_names, roles

    def predict_proba(self, image: np.ndarray, progress=None) -> np.ndarray:
        return np.eye(len(self.class_names), dtype=np.float32)[self.mask].transpose(2, 0, 1)


def drawn_scene() -> np.ndarray:
    mask = np.zeros((200, 200), dtype=np.uint8)
    for centre in ((40, 40), (40, 150), (150, 60)):
        mask[disk(centre, 18, shape=mask.shape)] = 1
    mask[bar(100, 5, 30)] = 2
    return mask


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_predict_writes_label_images_and_objects_matching_counts(tmp_path: Path) -> None:
    image = np.full((200, 200, 3), 60, dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "one.png")
    tifffile.imwrite(tmp_path / "two.tif", image, resolution=(20000, 20000), resolutionunit="CENTIMETER")  # 0.5 um
    out = tmp_path / "out"
    written = predict_paths(
        DrawnPredictor(drawn_scene()), [str(tmp_path / "one.png"), str(tmp_path / "two.tif")], out, progress=False
    ).written
    assert out / "one_objects.tif" in written and out / "objects.csv" in written

    objects = read_csv(out / "objects.csv")
    assert tuple(objects[0]) == OBJECT_COLUMNS
    assert (
        next(iter(read_csv(out / "counts.csv")[0])) == IMAGE_COLUMN == OBJECT_COLUMNS[0]
    )  # both tables name the image alike
    for row in read_csv(out / "counts.csv"):
        per_class = Counter(o["class"] for o in objects if o["image"] == row["image"])
        assert per_class == {"erythrocyte": int(row["erythrocyte_count"]), "spirochete": int(row["spirochete_count"])}
    labels = tifffile.imread(out / "one_objects.tif")
    assert labels.dtype == np.uint16 and labels.max() == 4

    spirochetes = [o for o in objects if o["class"] == "spirochete"]
    assert [Path(o["image"]).name for o in spirochetes] == ["one.png", "two.tif"]
    in_pixels, in_microns = spirochetes
    assert float(in_pixels["length_px"]) == pytest.approx(100, rel=LENGTH_TOLERANCE)
    assert in_pixels["length_um"] == in_pixels["pixel_size_um"] == ""  # no calibration: pixels only
    assert float(in_microns["pixel_size_um"]) == 0.5
    assert float(in_microns["length_um"]) == pytest.approx(float(in_microns["length_px"]) * 0.5, abs=1e-3)
    assert float(in_microns["area_um2"]) == pytest.approx(int(in_microns["area_px"]) * 0.25, abs=1e-3)

    predict_paths(
        DrawnPredictor(drawn_scene()), [str(tmp_path / "one.png")], out, pixel_size=2.0, overwrite=True, progress=False
    )
    assert not (out / "two_objects.tif").exists()  # the earlier run's outputs went with its tables
    (calibrated,) = [o for o in read_csv(out / "objects.csv") if o["class"] == "spirochete"]
    assert float(calibrated["width_um"]) == pytest.approx(float(calibrated["width_px"]) * 2.0, abs=1e-3)


def test_a_dataset_with_other_classes_counts_them_by_the_roles_its_config_gives(tmp_path: Path) -> None:
    # Background is not class 0 here, and the solid and thin classes sit at other indices than
    # the darkfield ones: counting must follow the roles, not the indices.
    classes = ["fibre", "background", "nucleus"]
    roles = ClassRoles.of(classes, {"fibre": "thin", "background": "background", "nucleus": "solid"})
    assert (roles.background, roles.solid, roles.thin, roles.counted) == (1, (2,), (0,), [0, 2])
    mask = np.ones((400, 400), dtype=np.uint8)
    for centre in ((100, 100), (100, 145)):  # two touching nuclei (centres 1.5 radii apart): split in two
        mask[disk(centre, 30, shape=mask.shape)] = 2
    mask[100:300, 300:305] = 0  # one fibre 200 px long
    mask[350:356, 50:56] = 0  # a 36 px fibre speck: over the area floor, dropped by the thin-class cleaning
    image = np.full((400, 400, 3), 60, dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "lab.png")
    out = tmp_path / "out"
    predict_paths(DrawnPredictor(mask, classes, roles), [str(tmp_path / "lab.png")], out, progress=False)
    (counts,) = read_csv(out / "counts.csv")
    assert list(counts) == ["image", "fibre_count", "fibre_area_fraction", "nucleus_count", "nucleus_area_fraction"]
    assert (counts["fibre_count"], counts["nucleus_count"]) == ("1", "2")
    (fibre,) = [row for row in read_csv(out / "objects.csv") if row["class"] == "fibre"]
    assert float(fibre["length_px"]) == pytest.approx(200, rel=LENGTH_TOLERANCE)
    # By index (the darkfield roles: class 1 solid), the two touching nuclei would count as one.
    darkfield = find_objects(mask, DARKFIELD_ROLES)
    assert Counter(darkfield.object_classes)[2] == 1


def test_class_roles_come_from_the_config_by_name() -> None:
    assert load_config(overrides={"classes": ["background", "erythrocyte", "spirochete"]}).roles() == DARKFIELD_ROLES
    other = load_config(overrides={"classes": ["background", "cell", "thread"]}).roles()
    assert (other.solid, other.thin, other.counted) == ((), (), [1, 2])  # no darkfield names: plain components
    with pytest.raises(SegnetError, match="not in classes"):
        ClassRoles.of(["background", "cell"], {"nucleus": "solid"})
    with pytest.raises(SegnetError, match="unknown roles"):
        ClassRoles.of(["background", "cell"], {"cell": "round"})


def test_the_viewer_table_leads_with_the_object_and_saves_as_objects_csv() -> None:
    row = [f"cell {column}" for column in OBJECT_COLUMNS]
    shown = to_viewer_order(row)
    assert VIEWER_COLUMNS[:2] == ("object_id", "class") and VIEWER_COLUMNS[-1] == IMAGE_COLUMN
    assert shown[0] == "cell object_id" and shown[-1] == f"cell {IMAGE_COLUMN}"
    assert sorted(VIEWER_COLUMNS) == sorted(OBJECT_COLUMNS) and from_viewer_order(shown) == row
