"""benchmarks/notebook_segnet.py: the notebook's baseline model, a model of segnet only where it is registered."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
import torch
from helpers import conv_parameters

import segnet.model.networks as model_module
import segnet.plan.spec as spec_module
from segnet.core.errors import CheckpointError
from segnet.model.checkpoint import Checkpoint
from segnet.model.networks import RegisteredNetwork, build_model, count_parameters
from segnet.plan.spec import MODEL_NAMES, ModelSpec

NOTEBOOK_SCRIPT = Path(__file__).parents[1] / "benchmarks" / "notebook_segnet.py"


@pytest.fixture
def notebook(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """benchmarks/notebook_segnet.py, its model registered for one test only."""
    monkeypatch.setattr(spec_module, "_REGISTERED_STAGES", {})
    monkeypatch.setattr(model_module, "_REGISTERED_BUILDERS", {})
    spec = importlib.util.spec_from_file_location("notebook_segnet", NOTEBOOK_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.register_notebook_segnet()
    return module


def test_the_baseline_is_no_builtin_model() -> None:
    assert "notebook-segnet" not in MODEL_NAMES


def test_the_notebook_model_has_its_layers_and_stride(notebook: ModuleType) -> None:
    torch.manual_seed(0)
    model = build_model(ModelSpec(notebook.NOTEBOOK_MODEL, num_classes=3))
    assert isinstance(model, RegisteredNetwork) and model.total_stride == 8
    layers = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256),
              (256, 256), (256, 128), (128, 128), (128, 64), (64, 64), (64, 3)]  # fmt: skip
    expected = sum(conv_parameters(a, b, 3) for a, b in layers)
    assert expected == 2_293_641
    assert count_parameters(model) == expected


def test_the_notebook_logits_are_clipped_at_zero(notebook: ModuleType) -> None:
    torch.manual_seed(2)
    model = build_model(ModelSpec(notebook.NOTEBOOK_MODEL, num_classes=3)).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 21, 27))
    assert out.shape == (1, 3, 21, 27)
    assert (out >= 0).all()
    assert (out == 0).any()


def test_a_notebook_checkpoint_loads_only_where_it_is_registered(
    notebook: ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    model = build_model(ModelSpec(notebook.NOTEBOOK_MODEL, num_classes=3))
    path = tmp_path / "notebook.pt"
    Checkpoint.of_model(model, ["a", "b", "c"], [0.5] * 3, [0.25] * 3, config={}, epoch=0).save(path)
    assert Checkpoint.load(path).spec.name == notebook.NOTEBOOK_MODEL
    monkeypatch.setattr(spec_module, "_REGISTERED_STAGES", {})  # a process that never registered it
    with pytest.raises(CheckpointError) as refused:
        Checkpoint.load(path)
    assert str(refused.value) == (
        f"{path}: checkpoint of an unknown model 'notebook-segnet'; segnet builds segnet, segnet-basic, "
        "bayesian-segnet, bayesian-segnet-basic, unet (a model a benchmark registers, such as its notebook baseline, "
        "loads only in that benchmark)"
    )
