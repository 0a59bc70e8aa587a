"""Tests for segnet.export and ONNX inference: export fidelity, torch-free prediction, bioimage.io packages."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
import yaml
from PIL import Image
from scipy.special import softmax
from torch import nn

from segnet.cli import main
from segnet.core.errors import CheckpointError, SegnetError
from segnet.data.synthetic import generate_sample
from segnet.export.formats import check_onnx_export, export_onnx, model_to_onnx, validate_bioimageio
from segnet.model.backends import OnnxModelInfo
from segnet.model.checkpoint import Checkpoint
from segnet.model.networks import DecoderStage, EncoderStage, SegNet, build_model
from segnet.model.options import InferenceOptions
from segnet.model.predictor import Predictor
from segnet.plan.spec import ModelSpec

PLAIN = InferenceOptions(device="cpu", tta=False, diameter=None)  # the network's own pass

CLASSES = ["background", "erythrocyte", "spirochete"]
MEAN, STD = [0.2, 0.25, 0.3], [0.2, 0.2, 0.2]
# (batch, height, width): odd sizes, a 1x1 image, batches of one and two. The model pads to its
# stride inside the graph, so the padding must follow the dynamic size.
SHAPES = [(1, 37, 45), (2, 37, 45), (2, 64, 96), (1, 1, 1)]


def write_checkpoint(path: Path, spec: ModelSpec) -> Path:
    """A checkpoint of a freshly initialised model whose BatchNorm statistics are not the identity."""
    torch.manual_seed(0)
    model = build_model(spec)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    Checkpoint.of_model(model, CLASSES, MEAN, STD, config={"epochs": 1}, epoch=1, best_score=0.5).save(path)
    return path


def load_model(checkpoint: Path) -> torch.nn.Module:
    return Checkpoint.load(checkpoint).load_model(checkpoint)


@pytest.fixture(scope="module")
def basic_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(checkpoint, ONNX file) of segnet-basic, exported through the command line."""
    folder = tmp_path_factory.mktemp("onnx")
    checkpoint = write_checkpoint(folder / "model.pt", ModelSpec("segnet-basic", len(CLASSES)))
    assert main(["export", "--checkpoint", str(checkpoint), "--out", str(folder / "model.onnx")]) == 0
    return checkpoint, folder / "model.onnx"


def write_png(path: Path, height: int, width: int, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(generate_sample(height, width, np.random.default_rng(seed))[0]).save(path)
    return path


def pooling_skeleton(stages: int) -> SegNet:
    """SegNet without convolutions: pad, ``stages`` max-pools with indices, as many unpools, crop.

    Its output is the input where a pixel was the maximum of its window at every level, else 0.
    Only comparisons happen, no arithmetic, so ONNX must reproduce it exactly: this isolates the
    index layout, the padding to the stride and the dynamic shapes.
    """
    encoder = [EncoderStage(3, []) for _ in range(stages)]
    decoder = [DecoderStage(3, []) for _ in range(stages)]
    return SegNet("skeleton", encoder, decoder, torch.nn.Identity(), num_classes=3, in_channels=3).eval()


def export_in_code(model: SegNet, path: Path) -> Path:
    model_to_onnx(model, OnnxModelInfo(model.name, tuple(CLASSES), tuple(MEAN), tuple(STD), model.total_stride), path)
    return path


@pytest.fixture(scope="module")
def skeleton_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[SegNet, Path]:
    """The 4-stage skeleton (stride 16) and its ONNX file."""
    model = pooling_skeleton(4)
    return model, export_in_code(model, tmp_path_factory.mktemp("skeleton") / "skeleton.onnx")


# ------------------------------------------------------------------------------ ONNX export


@pytest.mark.parametrize("stages", [4, 5])  # the strides of segnet-basic and segnet
def test_pooling_and_unpooling_export_exactly(
    stages: int, skeleton_export: tuple[SegNet, Path], tmp_path: Path
) -> None:
    model, path = skeleton_export if stages == 4 else (pooling_skeleton(stages), None)
    path = path or export_in_code(model, tmp_path / "skeleton.onnx")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(0)
    for batch, height, width in SHAPES:
        inputs = torch.randn(batch, 3, height, width, generator=generator)
        with torch.no_grad():
            expected = model(inputs).numpy()
        (got,) = session.run(None, {"input": inputs.numpy()})
        np.testing.assert_array_equal(got, expected)
        assert np.count_nonzero(expected) > 0


@pytest.mark.parametrize("model_name", ["segnet-basic", "segnet"])
def test_onnx_export_reproduces_pytorch(model_name: str, tmp_path: Path, basic_export: tuple[Path, Path]) -> None:
    if model_name == "segnet-basic":  # exported by the command line
        checkpoint, onnx_path = basic_export
        model = load_model(checkpoint)
    else:
        model = load_model(write_checkpoint(tmp_path / "model.pt", ModelSpec(model_name, len(CLASSES))))
        onnx_path = export_in_code(model, tmp_path / "model.onnx")
    check = check_onnx_export(model, onnx_path, shapes=SHAPES, seed=1)
    assert check.max_difference <= 1e-4
    # Near-ties that rounding resolves the other way are rare: about one in 10^5 windows.
    assert check.decisions > 10_000 and check.differing_decisions <= check.decisions // 10_000


@pytest.mark.parametrize("space_to_depth", [False, True])
def test_onnx_export_reproduces_a_downsampled_model(tmp_path: Path, space_to_depth: bool) -> None:
    """Block averaging or rearranging, the bilinear resize back and the sub-pixel head are in the
    graph, for every input size."""
    torch.manual_seed(0)
    model = build_model(ModelSpec("segnet-basic", len(CLASSES), downsample=2, space_to_depth=space_to_depth)).eval()
    if model.subpixel is not None:
        nn.init.normal_(model.subpixel.conv.weight, std=0.1)  # not the zero it starts at
    check = check_onnx_export(model, export_in_code(model, tmp_path / "model.onnx"), shapes=SHAPES, seed=1)
    assert check.max_difference <= 1e-4
    assert check.decisions > 10_000 and check.differing_decisions <= check.decisions // 10_000


def test_onnx_export_reproduces_a_unet(tmp_path: Path) -> None:
    """The U-Net's transposed convolutions, skip concatenations and sub-pixel head are in the graph;
    it reuses no pooling indices, so the logits agree with no pooling decision to follow."""
    torch.manual_seed(0)
    model = build_model(ModelSpec("unet", len(CLASSES), downsample=3, space_to_depth=True)).eval()
    nn.init.normal_(model.subpixel.conv.weight, std=0.1)
    check = check_onnx_export(model, export_in_code(model, tmp_path / "model.onnx"), shapes=SHAPES, seed=1)
    assert check.max_difference <= 1e-4 and check.decisions == 0


def test_export_check_catches_a_graph_of_other_weights(basic_export: tuple[Path, Path]) -> None:
    other = load_model(basic_export[0])
    with torch.no_grad():
        other.classifier.bias.add_(1e-3)
    with pytest.raises(SegnetError, match="differ from PyTorch"):
        check_onnx_export(other, basic_export[1])


def test_onnx_export_carries_calibrated_logit_offsets(tmp_path: Path) -> None:
    checkpoint = write_checkpoint(tmp_path / "model.pt", ModelSpec("segnet-basic", len(CLASSES)))
    raw = load_model(checkpoint)
    loaded = Checkpoint.load(checkpoint)
    loaded.replace(model_state={**loaded.model_state, "logit_offsets": torch.tensor([0.0, 0.75, -1.5])}).save(
        checkpoint
    )
    onnx_path = export_onnx(checkpoint, tmp_path / "model.onnx")
    inputs = torch.randn(1, 3, 37, 45, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = raw(inputs).numpy() + np.array([0.0, 0.75, -1.5], dtype=np.float32)[None, :, None, None]
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"input": inputs.numpy()})
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_onnx_file_has_dynamic_axes_and_metadata(basic_export: tuple[Path, Path]) -> None:
    proto = onnx.load(basic_export[1])
    for value in (proto.graph.input[0], proto.graph.output[0]):
        assert [dim.dim_param or dim.dim_value for dim in value.type.tensor_type.shape.dim] == [
            "batch",
            3,
            "height",
            "width",
        ]
    info = OnnxModelInfo.from_metadata({prop.key: prop.value for prop in proto.metadata_props}, basic_export[1])
    roles = {"background": "background", "erythrocyte": "solid", "spirochete": "thin"}
    assert info == OnnxModelInfo("segnet-basic", tuple(CLASSES), tuple(MEAN), tuple(STD), 16, class_roles=roles)


def test_onnx_export_keeps_the_run_s_class_roles(tmp_path: Path) -> None:
    classes, roles = ["bg", "rbc", "spiro"], {"bg": "background", "rbc": "solid", "spiro": "thin"}
    model = build_model(ModelSpec("segnet-basic", 3))
    config = {"classes": classes, "class_roles": roles}
    Checkpoint.of_model(model, classes, MEAN, STD, config=config, epoch=1).save(tmp_path / "model.pt")
    export_onnx(tmp_path / "model.pt", tmp_path / "model.onnx")
    from_onnx = Predictor.from_onnx(tmp_path / "model.onnx", PLAIN).roles
    assert from_onnx == Predictor.from_checkpoint(tmp_path / "model.pt", PLAIN).roles
    assert (from_onnx.background, from_onnx.solid, from_onnx.thin) == (
        0,
        (1,),
        (2,),
    )  # by name these classes have no roles


def test_export_needs_an_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", "--checkpoint", str(tmp_path / "model.pt")]) == 1
    assert "--out" in capsys.readouterr().err


def test_export_names_a_missing_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="missing.pt"):
        export_onnx(tmp_path / "missing.pt", tmp_path / "model.onnx")


# ------------------------------------------------------------------------------ ONNX prediction


def test_onnx_predictor_runs_the_same_pipeline(skeleton_export: tuple[SegNet, Path]) -> None:
    # The skeleton's graph is exact, so windows, TTA, normalisation and blending must agree exactly too.
    model, path = skeleton_export
    image = generate_sample(50, 70, np.random.default_rng(0))[0]
    for options in (PLAIN, PLAIN.replace(tile=32, tta=True, batch_size=3)):
        from_onnx = Predictor.from_onnx(path, options)
        in_torch = Predictor(model, CLASSES, MEAN, STD, options)
        assert from_onnx.class_names == CLASSES and from_onnx.stride == 16
        np.testing.assert_allclose(from_onnx.predict_proba(image), in_torch.predict_proba(image), atol=1e-6)


def test_onnx_and_pytorch_predictors_agree_on_a_real_model(basic_export: tuple[Path, Path]) -> None:
    checkpoint, onnx_path = basic_export
    image = generate_sample(50, 70, np.random.default_rng(0))[0]
    from_onnx = Predictor.from_onnx(onnx_path, PLAIN.replace(tile=32)).predict_proba(image)
    from_torch = Predictor.from_checkpoint(checkpoint, PLAIN.replace(tile=32)).predict_proba(image)
    # Equal up to rare near-tie poolings (see check_onnx_export), which move probabilities locally.
    assert np.mean(np.abs(from_onnx - from_torch) <= 1e-4) >= 0.95
    assert np.mean(from_onnx.argmax(0) == from_torch.argmax(0)) >= 0.99


@pytest.mark.slow
def test_predict_with_onnx_never_imports_torch(basic_export: tuple[Path, Path], tmp_path: Path) -> None:
    write_png(tmp_path / "in" / "a.png", 40, 52, seed=1)
    write_png(tmp_path / "in" / "b.png", 33, 47, seed=2)
    out = tmp_path / "out"
    args = [
        "predict",
        "--onnx",
        str(basic_export[1]),
        str(tmp_path / "in"),
        "--out",
        str(out),
        "--tile",
        "32",
        "--tta",
        "--device",
        "cpu",
    ]
    script = (
        "import sys\n"
        "from segnet.cli import main\n"
        f"assert main({args!r}) == 0\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "a_mask.png",
        "a_objects.tif",
        "a_overlay.png",
        "b_mask.png",
        "b_objects.tif",
        "b_overlay.png",
        "counts.csv",
        "objects.csv",
    ]
    assert np.asarray(Image.open(out / "b_mask.png")).shape == (33, 47)


def test_onnx_predictor_refuses_monte_carlo_dropout(basic_export: tuple[Path, Path]) -> None:
    with pytest.raises(SegnetError, match="Monte Carlo"):
        Predictor.from_onnx(basic_export[1], PLAIN.replace(mc_samples=2))


def test_onnx_files_without_segnet_metadata_are_refused(basic_export: tuple[Path, Path], tmp_path: Path) -> None:
    proto = onnx.load(basic_export[1])
    del proto.metadata_props[:]
    onnx.save(proto, tmp_path / "bare.onnx")
    with pytest.raises(CheckpointError, match=r"bare.onnx.*segnet export"):
        Predictor.from_onnx(tmp_path / "bare.onnx", PLAIN)
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(CheckpointError, match="junk.onnx"):
        Predictor.from_onnx(tmp_path / "junk.onnx", PLAIN)
    with pytest.raises(CheckpointError, match="missing.onnx"):
        Predictor.from_onnx(tmp_path / "missing.onnx", PLAIN)


def with_metadata(source: Path, out: Path, **changes: str) -> Path:
    """A copy of the ONNX file ``source`` whose metadata entries ``changes`` (key: JSON text) are replaced."""
    proto = onnx.load(source)
    metadata = {prop.key: prop.value for prop in proto.metadata_props}
    metadata.update(changes)
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, metadata)
    onnx.save(proto, out)
    return out


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        # A fourth name for three outputs: counts.csv would get shifted columns.
        (
            "segnet.class_names",
            '["background", "erythrocyte", "spirochete", "leukocyte"]',
            "output has shape ['batch', 3, 'height', 'width']",
        ),
        (
            "segnet.class_names",
            '["background", "erythrocyte"]',
            "C = 2 classes, as the metadata names ['background', 'erythrocyte']",
        ),
        ("segnet.class_names", '"abc"', "'segnet.class_names' is wrong: Input should be a valid list"),
        ("segnet.class_names", '["a", "a", "b"]', "names a class twice"),
        (
            "segnet.normalization.mean",
            "[0.5, 0.5]",
            "'segnet.normalization.mean' is wrong: List should have at least 3 items",
        ),
        ("segnet.normalization.std", '"0.2"', "'segnet.normalization.std' is wrong: Input should be a valid list"),
        (
            "segnet.normalization.std",
            "[0.2, 0, 0.2]",
            "'segnet.normalization.std' is wrong: Input should be greater than 0",
        ),
        (
            "segnet.normalization.mean",
            "[NaN, 0.5, 0.5]",
            "'segnet.normalization.mean' is wrong: Input should be a finite number",
        ),
        ("segnet.total_stride", '"16"', "'segnet.total_stride' is wrong: Input should be a valid integer"),
        ("segnet.total_stride", "0", "'segnet.total_stride' is wrong: Input should be greater than or equal to 1"),
        ("segnet.model", "{}", "'segnet.model' is wrong: Input should be a valid string"),
        (
            "segnet.class_diameter",
            "[null, -3, 9.5]",
            "'segnet.class_diameter' is wrong: Input should be greater than 0",
        ),
        (
            "segnet.class_diameter",
            '[null, "40", 9.5]',
            "'segnet.class_diameter' is wrong: Value error, Input should be a number",
        ),
        ("segnet.class_diameter", "[null, 40]", "'segnet.class_diameter' gives 2 diameters for 3 classes"),
        (
            "segnet.class_roles",
            '{"erythrocyte": "round"}',
            "'segnet.class_roles' is wrong: class_roles gives unknown roles ['round']",
        ),
        (
            "segnet.class_roles",
            '{"leukocyte": "solid"}',
            "'segnet.class_roles' is wrong: class_roles names classes that are not in classes",
        ),
        ("segnet.class_roles", '["solid"]', "'segnet.class_roles' is wrong: Input should be a valid dictionary"),
    ],
)
def test_onnx_metadata_that_does_not_fit_is_refused_naming_the_file(
    key: str,
    value: str,
    problem: str,
    skeleton_export: tuple[SegNet, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = with_metadata(skeleton_export[1], tmp_path / "forged.onnx", **{key: value})
    with pytest.raises(CheckpointError, match=rf"^{re.escape(str(path))}: ") as error:
        Predictor.from_onnx(path, PLAIN)
    assert problem in str(error.value)
    write_png(tmp_path / "in" / "a.png", 20, 20, seed=1)
    assert (
        main(["predict", "--onnx", str(path), str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--device", "cpu"])
        == 1
    )
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == f"segnet: error: {error.value}"
    assert not (tmp_path / "out" / "counts.csv").exists()


# ------------------------------------------------------------------------------ bioimage.io


def export_package(folder: Path, spec: ModelSpec, sample: Path | None = None) -> Path:
    """A bioimage.io package of a checkpoint of ``spec``, written through the command line."""
    checkpoint = write_checkpoint(folder / "model.pt", spec)
    args = ["export", "--checkpoint", str(checkpoint), "--bioimageio", str(folder / "package"), "--author", "A. Tester"]
    assert main(args + (["--sample", str(sample)] if sample else [])) == 0
    return folder / "package"


@pytest.fixture(scope="module")
def bioimageio_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A package of a segnet-basic checkpoint with a 70x90 sample image."""
    folder = tmp_path_factory.mktemp("bioimageio")
    return export_package(
        folder, ModelSpec("segnet-basic", len(CLASSES)), write_png(folder / "sample.png", 70, 90, seed=3)
    )


def preprocess(rdf: dict, test_input: np.ndarray) -> np.ndarray:
    """The package's declared preprocessing (fixed_zero_mean_unit_variance per channel) of its test input."""
    (preprocessing,) = rdf["inputs"][0]["preprocessing"]
    assert preprocessing["id"] == "fixed_zero_mean_unit_variance"
    mean = np.asarray(preprocessing["kwargs"]["mean"], dtype=np.float32)[:, None, None]
    std = np.asarray(preprocessing["kwargs"]["std"], dtype=np.float32)[:, None, None]
    return (test_input - mean) / std


def test_bioimageio_package_validates_and_its_test_tensors_reproduce(bioimageio_package: Path) -> None:
    package = bioimageio_package
    rdf = yaml.safe_load((package / "rdf.yaml").read_text())
    assert rdf["type"] == "model" and str(rdf["format_version"]).startswith("0.5.")
    assert rdf["authors"] == [{"name": "A. Tester"}]
    assert set(rdf["weights"]) == {"onnx", "pytorch_state_dict"}
    from bioimageio.spec import load_description

    description = load_description(package / "rdf.yaml", perform_io_checks=True)
    assert description.validation_summary.status in ("valid-format", "passed"), description.validation_summary.format()

    # The test input (image values 0..255, a stride-aligned crop of the sample, at most 32 px at the
    # network's resolution) through the declared preprocessing, onnxruntime and the declared softmax
    # gives the test output, within the declared tolerance at every element.
    test_input = np.load(package / rdf["inputs"][0]["test_tensor"]["source"])
    test_output = np.load(package / rdf["outputs"][0]["test_tensor"]["source"])
    assert (
        test_input.shape == (1, 3, 32, 32)
        and test_input.dtype == np.float32
        and 0 <= test_input.min()
        and test_input.max() <= 255
    )
    assert rdf["outputs"][0]["postprocessing"] == [{"id": "softmax", "kwargs": {"axis": "channel"}}]
    session = onnxruntime.InferenceSession(
        str(package / rdf["weights"]["onnx"]["source"]), providers=["CPUExecutionProvider"]
    )
    (logits,) = session.run(None, {"input": preprocess(rdf, test_input)})
    (tolerance,) = rdf["config"]["bioimageio"]["reproducibility_tolerance"]
    assert tolerance["mismatched_elements_per_million"] <= 100
    np.testing.assert_allclose(
        softmax(logits, axis=1), test_output, rtol=tolerance["relative_tolerance"], atol=tolerance["absolute_tolerance"]
    )

    # The cover: the 64x80 sample and its colour prediction side by side, scaled to 256 rows.
    cover = Image.open(package / rdf["covers"][0]["source"])
    assert cover.format == "PNG" and cover.size == (2 * 80 * 256 // 64, 256)
    assert "## Validation" in (package / rdf["documentation"]["source"]).read_text()


@pytest.mark.parametrize(("model_name", "architecture", "doi"), [
    ("segnet-basic", "SegNet", "10.1109/TPAMI.2016.2644615"), ("unet", "U-Net", "10.1007/978-3-319-24574-4_28")
])  # fmt: skip
def test_bioimageio_package_rebuilds_a_downsampled_model_from_its_own_kwargs(
    tmp_path: Path, model_name: str, architecture: str, doi: str
) -> None:
    """A consumer builds the model from rdf.yaml alone: the architecture callable with its kwargs,
    the state dict, the declared preprocessing and softmax reproduce the test output (K=3 here, so
    a package that dropped downsample would run the network at the wrong resolution and fail)."""
    import importlib

    spec = ModelSpec(model_name, len(CLASSES), downsample=3)
    package = export_package(tmp_path, spec)
    rdf = yaml.safe_load((package / "rdf.yaml").read_text())
    assert rdf["config"]["bioimageio"]["architecture_type"] == architecture and rdf["cite"][0]["doi"] == doi
    weights = rdf["weights"]["pytorch_state_dict"]
    architecture = weights["architecture"]
    assert architecture["kwargs"] == spec.to_dict()
    model = getattr(importlib.import_module(architecture["import_from"]), architecture["callable"])(
        **architecture["kwargs"]
    )
    model.load_state_dict(torch.load(package / weights["source"], weights_only=True))
    test_input = np.load(package / rdf["inputs"][0]["test_tensor"]["source"])
    assert test_input.shape == (1, 3, 96, 96)  # 32 network pixels a side at 1/3 resolution
    with torch.no_grad():
        probabilities = torch.softmax(model.eval()(torch.from_numpy(preprocess(rdf, test_input))), dim=1).numpy()
    np.testing.assert_allclose(
        probabilities, np.load(package / rdf["outputs"][0]["test_tensor"]["source"]), rtol=1e-5, atol=1e-6
    )


def test_validation_reports_a_broken_package(bioimageio_package: Path, tmp_path: Path) -> None:
    package = shutil.copytree(bioimageio_package, tmp_path / "package")
    np.save(package / "test_output.npy", np.zeros((1, 3, 8, 8), dtype=np.float32))  # no longer its sha256
    with pytest.raises(SegnetError, match="test_output"):
        validate_bioimageio(package / "rdf.yaml")


def test_bioimageio_core_reproduces_the_package(tmp_path: Path) -> None:
    """bioimage.io's own model test (each weights format on the test tensors), where it installs:
    bioimageio.core 0.11 pins bioimageio.spec 0.5.12, which the export extra's newer spec replaces."""
    core = pytest.importorskip("bioimageio.core", reason="bioimageio.core is not installed beside this bioimageio.spec")
    package = export_package(tmp_path, ModelSpec("segnet-basic", len(CLASSES), downsample=3))
    summary = core.test_model(package / "rdf.yaml")
    assert summary.status == "passed", summary.format()
