"""Tests for ``segnet check`` (segnet.plan.check): one test per kind of problem, notes versus problems, the summary."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segnet.core.errors import DataError
from segnet.data.synthetic import write_dataset
from segnet.plan.check import CheckResult, check_dataset, format_check_report
from segnet.plan.config import CLASS_WEIGHTING_NAMES, load_config

CLASSES = ["background", "erythrocyte", "spirochete"]


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """A clean synthetic dataset of four 32x32 pairs, 001..004."""
    return write_dataset(tmp_path / "data", count=4, size=32, seed=0)


def check(root: Path, **options) -> CheckResult:
    return check_dataset(root, CLASSES, progress=False, **options)


def messages(found: list, name: str) -> list[str]:
    """The messages about the file called ``name``."""
    return [item.message for item in found if item.path.name == name]


def good_stems(result: CheckResult) -> list[str]:
    return [pair.stem for pair in result.good_pairs]


def grey_mask(values: np.ndarray) -> Image.Image:
    """A mask in the public dataset's format: RGB with three identical channels."""
    return Image.fromarray(np.repeat(values.astype(np.uint8)[:, :, None], 3, axis=2))


def test_clean_dataset_has_no_problems(dataset: Path) -> None:
    result = check(dataset)
    assert result.problems == [] and result.notes == []
    assert good_stems(result) == ["001", "002", "003", "004"]
    summary = result.summary
    assert (summary["images"], summary["masks"], summary["pairs"], summary["good_pairs"]) == (4, 4, 4, 4)
    assert summary["width"] == {"min": 32, "median": 32.0, "max": 32} and summary["height"]["max"] == 32
    assert summary["image_modes"] == {"RGB": 4} and summary["image_bit_depths"] == {8: 4}
    assert summary["mask_modes"] == {"RGB": 4}
    assert sum(summary["class_pixel_frequencies"].values()) == pytest.approx(1.0)
    assert summary["images_per_class"]["background"] == 4
    assert "No problems found." in format_check_report(result)


def test_truncated_image(dataset: Path) -> None:
    path = dataset / "images" / "002.png"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    result = check(dataset)
    [message] = messages(result.problems, "002.png")
    assert "truncated" in message
    assert "002" not in good_stems(result) and len(result.good_pairs) == 3


def test_zero_byte_file(dataset: Path) -> None:
    (dataset / "masks" / "003.png").write_bytes(b"")
    result = check(dataset)
    assert messages(result.problems, "003.png") == ["empty file (0 bytes)"]
    assert result.problems[0].path == dataset / "masks" / "003.png"


def test_text_file_named_png_is_a_problem_but_a_txt_file_is_only_ignored(dataset: Path) -> None:
    (dataset / "images" / "001.png").write_text("not really a picture\n")
    (dataset / "images" / "README.txt").write_text("notes about the data\n")
    result = check(dataset)
    [message] = messages(result.problems, "001.png")
    assert "not an image file" in message
    assert messages(result.problems, "README.txt") == []
    assert "ignored" in messages(result.notes, "README.txt")[0]


def test_missing_partners_suggest_near_misses(dataset: Path) -> None:
    masks = dataset / "masks"
    (masks / "001.png").rename(masks / "001_mask.png")  # suffixed name
    (masks / "002.png").rename(masks / "IMG_002.png")
    (dataset / "images" / "002.png").rename(dataset / "images" / "img_002.png")  # case differs
    (masks / "003.png").rename(masks / "007.png")  # a different number: no suggestion
    result = check(dataset)
    [image_001] = messages(result.problems, "001.png")
    assert "image has no mask" in image_001 and "did you mean masks/001_mask.png" in image_001
    [mask_001] = messages(result.problems, "001_mask.png")
    assert "mask has no image" in mask_001 and "did you mean images/001.png" in mask_001
    assert "did you mean masks/IMG_002.png" in messages(result.problems, "img_002.png")[0]
    [image_003] = messages(result.problems, "003.png")
    assert "has no mask" in image_003 and "did you mean" not in image_003
    assert "did you mean" not in messages(result.problems, "007.png")[0]
    assert good_stems(result) == ["004"]


def test_mask_in_a_format_segnet_does_not_read_is_named(dataset: Path) -> None:
    mask = dataset / "masks" / "004.png"
    mask.rename(mask.with_suffix(".bmp"))
    [message] = messages(check(dataset).problems, "004.png")
    assert "masks/004.bmp" in message and "file type segnet does not read" in message


def test_size_mismatch(dataset: Path) -> None:
    grey_mask(np.zeros((20, 32))).save(dataset / "masks" / "001.png")
    result = check(dataset)
    [message] = messages(result.problems, "001.png")
    assert result.problems[0].path.parent.name == "masks"
    assert "32x20" in message and "32x32" in message
    assert "001" not in good_stems(result)


def test_mask_values_outside_the_classes_are_listed(dataset: Path) -> None:
    values = np.zeros((32, 32))
    values[0, :3] = [1, 5, 7]
    grey_mask(values).save(dataset / "masks" / "002.png")
    [message] = messages(check(dataset).problems, "002.png")
    assert "[5, 7]" in message and "outside the 3 classes" in message


def test_colour_mask_points_to_the_palette_option(dataset: Path) -> None:
    colours = np.zeros((32, 32, 3), dtype=np.uint8)
    colours[:16] = (255, 0, 0)
    Image.fromarray(colours).save(dataset / "masks" / "003.png")
    [message] = messages(check(dataset).problems, "003.png")
    assert "colour mask" in message and "mask_palette" in message


def test_colour_masks_read_with_a_palette(tmp_path: Path) -> None:
    for folder in ("images", "masks"):
        (tmp_path / folder).mkdir()
    Image.new("RGB", (8, 8), (40, 40, 90)).save(tmp_path / "images" / "001.png")
    colours = np.zeros((8, 8, 3), dtype=np.uint8)
    colours[:4] = (255, 0, 0)
    Image.fromarray(colours).save(tmp_path / "masks" / "001.png")
    result = check(tmp_path, palette={0: (0, 0, 0), 1: (255, 0, 0), 2: (0, 255, 0)})
    assert result.problems == []
    assert result.summary["class_pixel_frequencies"]["erythrocyte"] == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("name", "image", "expected"),
    [
        (
            "001.png",
            Image.fromarray(np.full((32, 32), 40000, dtype=np.uint16)),
            "16-bit integer image: 0-65535 scaled to 8 bit",
        ),
        (
            "001.tif",
            Image.fromarray(np.full((32, 32), 4000, dtype=np.uint16)),
            "16-bit integer image: 0-4095 scaled to 8 bit",
        ),
        (
            "001.tif",
            Image.fromarray(np.full((32, 32), 0.5, dtype=np.float32)),
            "32-bit float image: 0-1 scaled to 8 bit",
        ),
        ("001.png", Image.new("RGBA", (32, 32), (10, 20, 30, 128)), "RGBA image: alpha dropped"),
        ("001.png", Image.new("L", (32, 32), 80), "grayscale image: repeated to three channels"),
    ],
    ids=["uint16", "uint16-holding-12-bit", "float", "rgba", "grayscale"],
)
def test_handled_conversions_are_notes_not_problems(
    dataset: Path, name: str, image: Image.Image, expected: str
) -> None:
    (dataset / "images" / "001.png").unlink()
    image.save(dataset / "images" / name)
    result = check(dataset)
    assert result.problems == []
    assert messages(result.notes, name) == [expected]
    assert good_stems(result) == ["001", "002", "003", "004"]
    assert sum(result.summary["image_bit_depths"].values()) == 4
    assert expected in format_check_report(result)


def test_duplicate_stems(dataset: Path) -> None:
    Image.new("RGB", (32, 32)).save(dataset / "images" / "001.jpg")
    result = check(dataset)
    [message] = [problem.message for problem in result.problems]
    assert "001.jpg" in message and "001.png" in message and "share the stem '001'" in message
    assert good_stems(result) == ["002", "003", "004"]


def save_with_orientation(image: Image.Image, path: Path, orientation: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    image.save(path, exif=exif)


def test_exif_orientation_on_the_image_only(dataset: Path) -> None:
    (dataset / "images" / "004.png").unlink()
    save_with_orientation(Image.new("RGB", (32, 32), (60, 70, 80)), dataset / "images" / "004.jpg", 6)
    result = check(dataset)
    [message] = messages(result.problems, "004.jpg")
    assert "EXIF orientation 6" in message and "004.png" in message
    assert "004" not in good_stems(result)


def test_exif_orientation_on_image_and_mask_alike(dataset: Path) -> None:
    """Both files turn upright the same way, so they still line up: a note, not a problem."""
    (dataset / "images" / "004.png").unlink()
    save_with_orientation(Image.new("RGB", (32, 24)), dataset / "images" / "004.jpg", 6)
    save_with_orientation(grey_mask(np.ones((24, 32))), dataset / "masks" / "004.png", 6)
    result = check(dataset)
    assert result.problems == []
    assert "both turned upright" in messages(result.notes, "004.jpg")[0]
    assert "004" in good_stems(result)


def test_every_problem_is_reported_at_once(dataset: Path) -> None:
    (dataset / "images" / "001.png").write_bytes(b"")
    (dataset / "masks" / "002.png").write_text("text")
    (dataset / "masks" / "003.png").unlink()
    result = check(dataset)
    assert sorted(problem.path.name for problem in result.problems) == ["001.png", "002.png", "003.png"]
    assert good_stems(result) == ["004"]
    report = format_check_report(result)
    assert "Problems (3):" in report and "3 problems" in report and "--skip-bad" in report


def test_class_statistics_and_median_frequency_weights(tmp_path: Path) -> None:
    """Two 4x4 masks: A has 4 erythrocyte pixels, B has 8 spirochete pixels."""
    for folder in ("images", "masks"):
        (tmp_path / folder).mkdir()
    mask_a = np.zeros((4, 4))
    mask_a[0] = 1
    mask_b = np.zeros((4, 4))
    mask_b[:2] = 2
    for stem, mask in (("a", mask_a), ("b", mask_b)):
        Image.new("RGB", (4, 4)).save(tmp_path / "images" / f"{stem}.png")
        grey_mask(mask).save(tmp_path / "masks" / f"{stem}.png")
    summary = check(tmp_path).summary
    assert summary["class_pixel_frequencies"] == pytest.approx(
        {"background": 20 / 32, "erythrocyte": 4 / 32, "spirochete": 8 / 32}
    )
    assert summary["images_per_class"] == {"background": 2, "erythrocyte": 1, "spirochete": 1}
    # f_c = class pixels / pixels of the images containing c: 20/32, 4/16, 8/16; median 0.5
    assert summary["class_presence_frequencies"] == pytest.approx(
        {"background": 0.625, "erythrocyte": 0.25, "spirochete": 0.5}
    )
    assert summary["median_frequency_weights"] == pytest.approx(
        {"background": 0.8, "erythrocyte": 2.0, "spirochete": 1.0}
    )


def test_the_report_labels_the_class_weights_training_uses(tmp_path: Path) -> None:
    """The default weighting is the square root of median frequency: the report says so and shows those weights."""
    test_class_statistics_and_median_frequency_weights(tmp_path)
    result = check(tmp_path)
    default = load_config(None).class_weights  # what training uses unless told otherwise
    report = format_check_report(result).splitlines()
    header = next(line for line in report if "weight (" in line)
    assert f"weight ({default}: {CLASS_WEIGHTING_NAMES[default]})" in header and "square-root" in header
    assert next(line for line in report if line.strip().startswith("erythrocyte")).endswith(f"{2.0**0.5:.3f}")
    full = format_check_report(result, "median").splitlines()
    assert next(line for line in full if line.strip().startswith("erythrocyte")).endswith("2.000")


def test_missing_folders(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="dataset folder not found"):
        check(tmp_path / "nowhere")
    (tmp_path / "images").mkdir()
    result = check(tmp_path)
    assert len(result.problems) == 1 and "no masks/" in result.problems[0].message
    assert result.good_pairs == [] and "1 problem:" in format_check_report(result)


def test_check_command_reads_classes_and_palette_from_a_training_config(tmp_path: Path, capsys) -> None:
    from segnet.cli import main

    for folder in ("images", "masks"):
        (tmp_path / "data" / folder).mkdir(parents=True)
    Image.new("RGB", (8, 8), (40, 40, 90)).save(tmp_path / "data" / "images" / "001.png")
    colours = np.zeros((8, 8, 3), dtype=np.uint8)
    colours[:4] = (255, 0, 0)
    colours[0, 0] = (7, 8, 9)  # a colour the palette does not map
    Image.fromarray(colours).save(tmp_path / "data" / "masks" / "001.png")
    config = tmp_path / "train.yaml"
    config.write_text(
        f"data: {tmp_path / 'data'}\nclasses: [background, cell]\nmask_palette: {{background: [0, 0, 0], cell: [255, 0, 0]}}\n"
    )

    assert main(["check", "--config", str(config)]) == 1
    out = capsys.readouterr().out
    assert "001.png: mask colours not in the palette: (7,8,9)" in out

    colours[0, 0] = (0, 0, 0)
    Image.fromarray(colours).save(tmp_path / "data" / "masks" / "001.png")
    assert main(["check", str(tmp_path / "data"), "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "No problems found." in out and "cell" in out and "spirochete" not in out
    # Without the palette, the colour mask is refused with a pointer to the option.
    assert main(["check", str(tmp_path / "data")]) == 1
    assert "mask_palette" in capsys.readouterr().out
