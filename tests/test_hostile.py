"""Hostile input, generated: options at and beyond their edges, config values of every kind,
damaged run files and napari layer names. Each case ends in a correct result or one line naming
the option or file, and nothing outside the output is changed. About 1,300 cases a run (run with
``--hypothesis-show-statistics`` to see them)."""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from segnet.cli import bounded
from segnet.core.errors import DataError, OutputError, SegnetError
from segnet.core.readback import read_csv
from segnet.core.runfiles import BEST_METRICS_FILE, HISTORY_FIELDS, HISTORY_FILE, SPLIT_FILE
from segnet.data.pairs import read_split_stems
from segnet.napari.segmentation import save_correction
from segnet.plan.config import PixelSize, Seed, SyntheticSide, TrainConfig, load_config
from segnet.train.folds import FOLDS_FILE, fold_checkpoints
from segnet.train.metrics import ValidationMetrics
from segnet.workflow.crossval import read_best_metrics

CLASSES = ("background", "erythrocyte", "spirochete")
NUMBERS = st.one_of(
    st.integers().map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(
        [
            "0",
            "-0",
            "1e-320",
            "1e308",
            "inf",
            "-inf",
            "nan",
            "2**63",
            str(2**63),
            str(2**32),
            "0x10",
            "1_000",
            " 5 ",
            "",
        ]
    ),
    st.text(max_size=12),
)


def _one_line(error: BaseException) -> str:
    text = str(error)
    assert text and "\n" not in text, repr(text)
    return text


# ------------------------------------------------------------------ options


@settings(max_examples=400, deadline=None)
@given(kind=st.sampled_from([Seed, SyntheticSide, PixelSize]), text=NUMBERS)
def test_a_bounded_option_takes_a_number_in_its_range_or_refuses_it_in_one_line(kind: Any, text: str) -> None:
    try:
        value = bounded(kind)(text)
    except argparse.ArgumentTypeError as error:
        assert "is refused" in _one_line(error)
        return
    TypeAdapter(kind).validate_python(value, strict=True)  # what was taken is in range
    assert np.isfinite(value)


# ------------------------------------------------------------------ config values

_NUMERIC_OPTIONS = (
    "seed",
    "epochs",
    "batch_size",
    "image_size",
    "lr",
    "weight_decay",
    "warmup_epochs",
    "val_fraction",
    "focus_probability",
    "num_workers",
    "calibration_images",
    "patience",
    "val_every",
    "grad_clip",
    "time_budget",
    "folds",
    "downsample",
)
VALUES = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.text(max_size=5),
    st.lists(st.floats(allow_nan=False, allow_infinity=False), max_size=3),
)


@settings(max_examples=300, deadline=None)
@given(values=st.dictionaries(st.sampled_from([*_NUMERIC_OPTIONS, "scale_range"]), VALUES, min_size=1, max_size=3))
def test_config_values_are_taken_in_range_or_refused_naming_the_option(values: dict[str, Any]) -> None:
    try:
        config = load_config(None, values)
    except SegnetError as error:
        text = _one_line(error)
        assert any(name in text for name in values), text
        return
    assert isinstance(config, TrainConfig)
    for name in values:
        value = getattr(config, name)
        for number in value if isinstance(value, list) else [value]:
            assert number is None or (isinstance(number, int | float) and np.isfinite(number))
            assert not isinstance(number, int) or abs(number) <= 2**32  # every count and seed is bounded


# ------------------------------------------------------------------ run files read back

GOOD_FILES = {
    SPLIT_FILE: '{"train": ["a", "b"], "val": ["c"]}',
    FOLDS_FILE: '{"folds": 2, "seed": 0, "stems": [["a"], ["b"]]}',
    BEST_METRICS_FILE: json.dumps(
        ValidationMetrics.from_confusion(np.array([[3, 1], [0, 2]]), ["a", "b"], loss=0.5, epoch=1).to_dict()
    ),
    HISTORY_FILE: ",".join(HISTORY_FIELDS) + "\n1,1.0,1.0,0.5,0.3,0.001,2.0\n",
}
READERS = {
    SPLIT_FILE: lambda run: read_split_stems(run / SPLIT_FILE),
    FOLDS_FILE: fold_checkpoints,
    BEST_METRICS_FILE: read_best_metrics,
    HISTORY_FILE: lambda run: read_csv(run / HISTORY_FILE, "training history", HISTORY_FIELDS),
}


@st.composite
def damaged(draw: st.DrawFn) -> tuple[str, bytes]:
    """A run file's name and content: random bytes, random JSON, or its good content cut, spliced or flipped."""
    name = draw(st.sampled_from(sorted(GOOD_FILES)))
    good = GOOD_FILES[name].encode()
    how = draw(st.sampled_from(["bytes", "json", "cut", "flip", "splice"]))
    if how == "bytes":
        return name, draw(st.binary(max_size=64))
    if how == "json":
        content = draw(
            st.recursive(
                st.none() | st.booleans() | st.integers() | st.text(max_size=4),
                lambda inner: st.lists(inner) | st.dictionaries(st.text(max_size=5), inner),
                max_leaves=8,
            )
        )
        return name, json.dumps(content).encode()
    at = draw(st.integers(0, len(good) - 1))
    if how == "cut":
        return name, good[:at]
    if how == "flip":
        return name, good[:at] + bytes([good[at] ^ draw(st.integers(1, 255))]) + good[at + 1 :]
    return name, good[:at] + draw(st.binary(min_size=1, max_size=8)) + good[at:]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=damaged())
def test_a_damaged_run_file_is_read_or_refused_naming_it(case: tuple[str, bytes]) -> None:
    name, content = case
    with tempfile.TemporaryDirectory() as folder:
        run = Path(folder)
        (run / name).write_bytes(content)
        try:
            READERS[name](run)
        except DataError as error:
            assert _one_line(error).startswith(str(run)), str(error)
        # Anything else (a KeyError, a UnicodeDecodeError) fails the test as a traceback would reach the user.


# ------------------------------------------------------------------ napari: layer names


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.text(max_size=24)
    | st.sampled_from(["..", "../x", "/etc/passwd", "C:\\x", "a/../../b", ".", "...", " ", "images", "x.png"])
)
def test_a_layer_name_never_writes_outside_the_dataset_nor_over_another_pair(name: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        dataset = root / "inside" / "dataset"
        image, mask = np.full((6, 6, 3), 7, np.uint8), np.zeros((6, 6), np.uint8)
        save_correction(dataset, "existing", np.full((6, 6, 3), 99, np.uint8), mask, CLASSES)
        before = {path: path.read_bytes() for path in root.rglob("*") if path.is_file()}
        try:
            pair = save_correction(dataset, name, image, mask, CLASSES)
        except OutputError as error:
            _one_line(error)
            assert {path: path.read_bytes() for path in root.rglob("*") if path.is_file()} == before
            return
        assert pair.image.parent == dataset / "images" and pair.mask.parent == dataset / "masks"
        after = {path: path.read_bytes() for path in root.rglob("*") if path.is_file()}
        assert set(after) - set(before) <= {pair.image, pair.mask}
        assert all(after[path] == content for path, content in before.items())  # nothing replaced
