"""Fuzzing the run files and predict: every input either works or raises the project's own error naming the file.

Checkpoints (random mutations of a valid one), split.json (random JSON and mutations of a valid
one), ONNX metadata (random values for each key, and graphs whose outputs do not fit the class
names) and images of every size down to 1x1 through ``segnet predict`` with and without TTA. Any
other exception would reach the user as a traceback, so each test lets it propagate and fail.
Run with ``pytest tests/test_run_files_fuzz.py --hypothesis-show-statistics`` to see the cases.
"""

from __future__ import annotations

import csv
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from segnet.cli import main
from segnet.core.errors import SegnetError
from segnet.core.runfiles import BEST_CHECKPOINT, CONFIG_FILE, SPLIT_FILE
from segnet.data.classes import ClassRoles
from segnet.data.pairs import Pair, read_split, write_split
from segnet.evaluate.columns import IMAGE_COLUMN
from segnet.model.backends import OnnxModelInfo
from segnet.model.checkpoint import Checkpoint
from segnet.model.networks import build_model
from segnet.model.options import InferenceOptions
from segnet.model.predictor import Predictor
from segnet.plan.config import load_config
from segnet.plan.spec import ModelSpec

PLAIN = InferenceOptions(device="cpu", tta=False, diameter=None)  # the network's own pass

CLASSES = ["background", "erythrocyte", "spirochete"]
MEAN, STD = [0.2, 0.25, 0.3], [0.2, 0.2, 0.2]
# Small counts: the whole suite runs on two cores. SEGNET_FUZZ_EXAMPLES=N searches longer (N per
# property; a fifth of it for the ones that run the CLI or onnxruntime).
EXAMPLES = int(os.environ.get("SEGNET_FUZZ_EXAMPLES", "60"))
FEW = max(1, EXAMPLES // 5)
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("run_files_fuzz")


def works_or_names(path: Path, action) -> Any:
    """What ``action`` returns, or None when it raised a SegnetError naming ``path``."""
    try:
        return action()
    except SegnetError as error:
        assert str(path) in str(error), f"error does not name {path}: {error}"
        assert "weights_only" not in str(error) and "\n" not in str(error), str(error)
        return None


# Values a forger or a damaged file might put anywhere: wrong types, odd numbers, nesting, tensors.
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 6),
    st.sampled_from([0.0, -1.0, 0.5, 1e-30, math.nan, math.inf, -math.inf]),
    st.text(max_size=8),
    st.builds(torch.tensor, st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), max_size=4)),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)


@pytest.fixture(scope="module")
def valid_state() -> dict[str, Any]:
    torch.manual_seed(0)
    model = build_model(ModelSpec("segnet-basic", len(CLASSES)))
    return {
        "format_version": 1,
        "model": {"name": "segnet-basic", "num_classes": 3, "in_channels": 3, "downsample": 1},
        "model_state": model.state_dict(),
        "class_names": list(CLASSES),
        "normalization": {"mean": list(MEAN), "std": list(STD)},
        "config": {"model": "segnet-basic", "classes": list(CLASSES), "mask_palette": None},
        "calibration": {"offsets": dict.fromkeys(CLASSES, 0.0), "images": ["001"]},
        "epoch": 3,
        "best_score": 0.5,
        "best_epoch": 2,
    }


def containers(state: dict[str, Any]) -> list[tuple[Any, Any]]:
    """(container, key) of every place in the checkpoint a mutation can touch (weights: a sample)."""
    places: list[tuple[Any, Any]] = []

    def walk(node: Any) -> None:
        keys = list(node) if isinstance(node, dict) else range(len(node)) if isinstance(node, list) else []
        for key in keys:
            places.append((node, key))
            if not (isinstance(node, dict) and key == "model_state"):
                walk(node[key])

    walk(state)
    weights = state.get("model_state")
    if isinstance(weights, dict):
        places += [(weights, key) for key in list(weights)[:3] + ["logit_offsets"] if key in weights]
    return places


def copy_state(state: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of the plain parts; weight tensors are shared (mutations replace them, never write into them)."""
    copied = json.loads(json.dumps({k: v for k, v in state.items() if k != "model_state"}, allow_nan=True))
    return {**copied, "model_state": dict(state["model_state"])}


mutations = st.lists(
    st.tuples(
        st.sampled_from(["delete", "replace", "add", "nan weights", "wrong shape"]), st.integers(0, 10**6), values
    ),
    min_size=1,
    max_size=3,
)


@FUZZ
@given(changes=mutations)
def test_mutated_checkpoints_load_and_predict_or_are_refused_naming_the_file(
    folder: Path, valid_state, changes
) -> None:
    state = copy_state(valid_state)
    for kind, index, value in changes:
        places = containers(state)
        container, key = places[index % len(places)]
        if kind == "delete" and isinstance(container, dict):
            del container[key]
        elif kind == "add" and isinstance(container, dict):
            container[f"extra{index % 7}"] = value
        elif kind == "nan weights" and isinstance(container[key], torch.Tensor):
            container[key] = torch.full_like(container[key], math.nan)
        elif kind == "wrong shape" and isinstance(container[key], torch.Tensor):
            container[key] = torch.zeros(container[key].numel() + 1)
        else:
            container[key] = value
    path = folder / "mutated.pt"
    torch.save(state, path)

    def load_and_predict() -> np.ndarray:
        loaded = Checkpoint.load(path)
        predictor = Predictor(loaded.load_model(path), loaded.class_names, loaded.mean, loaded.std, PLAIN)
        return predictor.predict(np.zeros((9, 7, 3), dtype=np.uint8))

    mask = works_or_names(path, load_and_predict)
    assert mask is None or (mask.shape == (9, 7) and mask.max() < len(state["class_names"]))


@FUZZ
@given(
    content=st.one_of(values, st.fixed_dictionaries({"train": values, "val": values})),
    name=st.sampled_from(["train", "val"]),
)
def test_random_split_files_select_pairs_or_are_refused_naming_the_file(folder: Path, content: Any, name: str) -> None:
    pairs = [Pair(f"{i:03d}", Path(f"{i:03d}.png"), Path(f"{i:03d}.png")) for i in range(1, 5)]
    path = folder / SPLIT_FILE
    path.write_text(json.dumps(content, default=lambda tensor: tensor.tolist(), allow_nan=True))
    selected = works_or_names(path, lambda: read_split(path, pairs, name))
    assert selected is None or all(pair in pairs for pair in selected)


@FUZZ
@given(
    stems=st.lists(st.sampled_from(["001", "002", "003", "004", "005", ""]), max_size=6),
    cut=st.integers(0, 80),
)
def test_valid_split_files_mutated_or_cut_short(folder: Path, stems: list[str], cut: int) -> None:
    pairs = [Pair(f"{i:03d}", Path(f"{i:03d}.png"), Path(f"{i:03d}.png")) for i in range(1, 5)]
    path = folder / SPLIT_FILE
    write_split(path, pairs[:2], [Pair(stem, Path(stem), Path(stem)) for stem in stems])
    text = path.read_text()
    path.write_text(text[: len(text) - cut] if cut else text)
    train = works_or_names(path, lambda: read_split(path, pairs, "train"))
    val = works_or_names(path, lambda: read_split(path, pairs, "val"))
    if train is not None and val is not None:  # accepted: no image is both trained and scored on
        assert not {p.stem for p in train} & {p.stem for p in val}


REQUIRED_METADATA = OnnxModelInfo("segnet-basic", tuple(CLASSES), tuple(MEAN), tuple(STD), 16).to_metadata()
METADATA = OnnxModelInfo(
    "segnet-basic",
    tuple(CLASSES),
    tuple(MEAN),
    tuple(STD),
    16,
    (None, 96.0, 14.0),
    {"background": "background", "erythrocyte": "solid"},
).to_metadata()
metadata_values = st.one_of(
    st.text(max_size=12),
    values.map(lambda value: json.dumps(value, default=lambda tensor: tensor.tolist(), allow_nan=True)),
)


@FUZZ
@given(changes=st.dictionaries(st.sampled_from(sorted(METADATA)), metadata_values | st.none(), min_size=1, max_size=3))
def test_random_onnx_metadata_is_read_or_refused_naming_the_file(folder: Path, changes: dict[str, str | None]) -> None:
    metadata = {key: value for key, value in {**METADATA, **changes}.items() if value is not None}
    path = folder / "model.onnx"
    info = works_or_names(path, lambda: OnnxModelInfo.from_metadata(metadata, path))
    if info is not None:
        assert len(info.mean) == len(info.std) == 3 and all(s > 0 and math.isfinite(s) for s in info.std)
        assert len(set(info.class_names)) == len(info.class_names) >= 1 and info.total_stride >= 1
        assert info.class_diameter is None or len(info.class_diameter) == len(info.class_names)
        ClassRoles.of(info.class_names, info.class_roles)  # refused on reading if it would raise here


def identity_onnx(path: Path, output_channels: int, metadata: dict[str, str]) -> Path:
    """A graph returning its input's first ``output_channels`` channels as logits: a stand-in model."""
    graph = onnx.helper.make_graph(
        [
            onnx.helper.make_node(
                "Constant", [], ["starts"], value=onnx.helper.make_tensor("s", onnx.TensorProto.INT64, [1], [0])
            ),
            onnx.helper.make_node(
                "Constant",
                [],
                ["ends"],
                value=onnx.helper.make_tensor("e", onnx.TensorProto.INT64, [1], [output_channels]),
            ),
            onnx.helper.make_node(
                "Constant", [], ["axes"], value=onnx.helper.make_tensor("a", onnx.TensorProto.INT64, [1], [1])
            ),
            onnx.helper.make_node("Slice", ["input", "starts", "ends", "axes"], ["logits"]),
        ],
        "stand_in",
        [onnx.helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, ["batch", 3, "height", "width"])],
        [
            onnx.helper.make_tensor_value_info(
                "logits", onnx.TensorProto.FLOAT, ["batch", output_channels, "height", "width"]
            )
        ],
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.helper.set_model_props(model, metadata)
    onnx.save(model, path)
    return path


@settings(max_examples=FEW, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    output_channels=st.integers(1, 3),
    class_names=st.lists(
        st.sampled_from(["background", "erythrocyte", "spirochete", "leukocyte"]), min_size=1, max_size=4
    ),
    stride=st.integers(1, 5),
)
def test_onnx_graphs_whose_outputs_may_not_fit_the_class_names(
    folder: Path, output_channels: int, class_names: list[str], stride: int
) -> None:
    metadata = {
        **REQUIRED_METADATA,
        "segnet.class_names": json.dumps(class_names),
        "segnet.total_stride": json.dumps(stride),
    }
    path = identity_onnx(folder / "stand_in.onnx", output_channels, metadata)
    predictor = works_or_names(path, lambda: Predictor.from_onnx(path, PLAIN.replace(tta=True)))
    fits = output_channels == len(class_names) and len(set(class_names)) == len(class_names)
    assert (predictor is not None) == fits
    if predictor is not None:
        assert predictor.predict(np.zeros((5, 3, 3), dtype=np.uint8)).shape == (5, 3)


@pytest.fixture(scope="module")
def checkpoint(folder: Path, valid_state) -> Path:
    torch.save(valid_state, folder / BEST_CHECKPOINT)
    return folder / BEST_CHECKPOINT


@settings(max_examples=FEW, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    height=st.integers(1, 40) | st.just(1),
    width=st.integers(1, 40) | st.just(1),
    tta=st.booleans(),
    tile=st.sampled_from([None, 32]),
    seed=st.integers(0, 2**16),
)
def test_predict_takes_images_of_every_size_down_to_one_pixel(
    folder: Path, checkpoint: Path, height: int, width: int, tta: bool, tile: int | None, seed: int
) -> None:
    inputs = Path(tempfile.mkdtemp(dir=folder))
    image = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(image).save(inputs / "image.png")
    out = inputs / "out"
    args = [
        "predict",
        "--checkpoint",
        str(checkpoint),
        str(inputs / "image.png"),
        "--out",
        str(out),
        "--device",
        "cpu",
        "--min-area",
        "1",
    ]
    args += ["--tta" if tta else "--no-tta", *(["--tile", str(tile)] if tile else [])]
    assert main(args) == 0
    assert np.asarray(Image.open(out / "image_mask.png")).shape == (height, width)
    with (out / "counts.csv").open(newline="") as handle:
        assert [Path(row[IMAGE_COLUMN]).name for row in csv.DictReader(handle)] == ["image.png"]


# YAML configs: the file's syntax, tags, keys and layout. (The types of known options' values are
# validated by the typed config, issue 15 item 2; their fuzzing joins here when it lands.)
YAML_PIECES = [
    "option:",
    "1:",
    "null:",
    " ",
    "  ",
    "\n",
    "- ",
    "[",
    "]",
    "{",
    "}",
    ",",
    ": ",
    "? ",
    "'",
    '"',
    "#",
    "---\n",
    "...\n",
    "%YAML 1.1\n",
    "\t",
    "2",
    "-1.5e3",
    ".nan",
    "abc",
    "\x00",
    "é",
    "&anchor ",
    "*anchor",
    "!!python/object/apply:os.system ",
    "!!binary ",
    "!!set ",
    "!!str ",
    "!custom ",
    "<<: ",
    "|\n",
    ">\n",
]


@FUZZ
@given(
    content=st.lists(st.sampled_from(YAML_PIECES), max_size=30).map(lambda pieces: "".join(pieces).encode())
    | st.binary(max_size=200)
)
def test_random_yaml_files_are_read_or_refused_naming_the_file(folder: Path, content: bytes) -> None:
    path = folder / CONFIG_FILE
    path.write_bytes(content)
    config = works_or_names(path, lambda: load_config(path))
    assert config is None or config == load_config(None)  # nothing here names a known option


option_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40) | st.integers(-2, 4),
    st.sampled_from([0.0, -1.0, 0.5, 1.5, 1e-30, 1e30, math.nan, math.inf]),
    st.text(max_size=8) | st.sampled_from(["no", "yes", "off", "1", "1e-3", "abc"]),
    st.lists(st.integers(-1, 300) | st.text(max_size=4), max_size=4),
    st.dictionaries(st.text(max_size=6), st.integers(-1, 300) | st.lists(st.integers(-1, 300), max_size=4), max_size=3),
)


def same_kind(value: Any, default: Any) -> bool:
    """Whether an accepted ``value`` has the type of the option's default (bool is no int, int is a float)."""
    if isinstance(default, bool) or isinstance(value, bool):
        return type(value) is type(default)
    if isinstance(default, float):
        return isinstance(value, int | float)
    return isinstance(value, type(default))


@FUZZ
@given(
    options=st.dictionaries(st.sampled_from(sorted(load_config(None).to_dict())), option_values, min_size=1, max_size=4)
)
def test_random_option_values_are_taken_as_declared_or_refused_naming_the_file(
    folder: Path, options: dict[str, Any]
) -> None:
    path = folder / "options.yaml"
    path.write_text(yaml.safe_dump(options))
    config = works_or_names(path, lambda: load_config(path))
    if config is not None:  # accepted: each value has its option's type, so nothing is silently reinterpreted
        defaults = load_config(None)
        for key in options:
            default = getattr(defaults, key)
            assert default is None or same_kind(getattr(config, key), default), (
                key,
                options[key],
                getattr(config, key),
            )
