"""Tests for segnet.model: shapes, pooling indices, parameter counts, pretrained loading, MC dropout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import conv_parameters
from PIL import Image
from torch import nn

import segnet.model.networks as model_module
import segnet.plan.spec as spec_module
from segnet.cli import main as cli_main
from segnet.core.errors import CheckpointError, SegnetError
from segnet.core.runfiles import BEST_CHECKPOINT
from segnet.evaluate.run import evaluate_run
from segnet.model.checkpoint import Checkpoint
from segnet.model.networks import (
    DecoderStage,
    EncoderStage,
    RegisteredNetwork,
    build_model,
    count_parameters,
    enable_mc_dropout,
    load_pretrained_encoder,
    register_model,
)
from segnet.model.options import InferenceOptions
from segnet.plan.config import load_config
from segnet.plan.spec import MODEL_NAMES, ModelSpec, model_names
from segnet.train.loop import train

torch.set_num_threads(1)

STRIDES = {
    "segnet": 32,
    "bayesian-segnet": 32,
    "segnet-basic": 16,
    "bayesian-segnet-basic": 16,
    "unet": 16,
}


@pytest.fixture(scope="module")
def models() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    return {name: build_model(ModelSpec(name, num_classes=3)).eval() for name in MODEL_NAMES}


# ------------------------------------------------------------------------------------ shapes


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("size", [(37, 45), (1, 1), (32, 16)])
def test_output_shape_any_size(models: dict[str, nn.Module], name: str, size: tuple[int, int]) -> None:
    model = models[name]
    with torch.no_grad():
        out = model(torch.randn(1, 3, *size))
    assert out.shape == (1, 3, *size)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_total_stride(models: dict[str, nn.Module], name: str) -> None:
    assert models[name].total_stride == STRIDES[name]
    # The spec knows the stride without building the network (the ONNX metadata is written from it).
    for downsample in (1, 3):
        spec = ModelSpec(name, 3, downsample=downsample)
        assert spec.total_stride == build_model(spec).total_stride == STRIDES[name] * downsample


def test_spec_travels_as_a_plain_dict(tmp_path: Path) -> None:
    spec = ModelSpec("segnet-basic", 4, downsample=3)
    assert build_model(spec).spec == spec
    assert ModelSpec.from_dict(spec.to_dict(), "model.pt") == spec
    # A field left out takes its default, as in ModelSpec("segnet", 3).
    short = ModelSpec.from_dict({"name": "segnet", "num_classes": 3}, "short.pt")
    assert short == ModelSpec("segnet", 3, in_channels=3, downsample=1, space_to_depth=False)
    with pytest.raises(CheckpointError, match=r"odd.pt: the model spec has unknown keys \['depth'\]"):
        ModelSpec.from_dict({**spec.to_dict(), "depth": 5}, "odd.pt")
    with pytest.raises(CheckpointError, match="bad.pt: the model spec has no num_classes"):
        ModelSpec.from_dict({"name": "segnet"}, "bad.pt")
    with pytest.raises(CheckpointError, match="bad.pt: downsample must be a positive integer, got '3'"):
        ModelSpec.from_dict({**spec.to_dict(), "downsample": "3"}, "bad.pt")
    # A forged factor is refused when read, not met later as an out-of-memory error.
    with pytest.raises(CheckpointError, match="forged.pt: downsample must be at most 16, got 100000"):
        ModelSpec.from_dict({**spec.to_dict(), "downsample": 100_000}, "forged.pt")


def test_other_channels_and_classes() -> None:
    model = build_model(ModelSpec("segnet-basic", num_classes=5, in_channels=1)).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 1, 19, 23))
    assert out.shape == (2, 5, 19, 23)


def test_padding_is_zeros_at_bottom_right(models: dict[str, nn.Module]) -> None:
    model = models["segnet-basic"]
    x = torch.randn(1, 3, 13, 21)
    with torch.no_grad():
        out = model(x)
        padded = model(F.pad(x, (0, 11, 0, 3)))  # 16 x 32: already a multiple of 16
    assert padded.shape[-2:] == (16, 32)
    torch.testing.assert_close(out, padded[:, :, :13, :21])


# ------------------------------------------------------------------------- pool / unpool


def test_unpool_restores_values_at_pooled_positions() -> None:
    torch.manual_seed(1)
    enc = EncoderStage(2, [4])
    dec = DecoderStage(4, [4])
    x = torch.randn(2, 2, 6, 8)
    with torch.no_grad():
        features = enc.convs(x)
        pooled, indices = enc(x)
        restored = dec.unpool(pooled, indices)
    assert pooled.shape == (2, 4, 3, 4)
    assert restored.shape == features.shape
    # Independently find each 2x2 block's maximum position.
    blocks = features.reshape(2, 4, 3, 2, 4, 2).permute(0, 1, 2, 4, 3, 5).reshape(2, 4, 3, 4, 4)
    winner = blocks.argmax(dim=-1)
    mask = F.one_hot(winner, 4).bool().reshape(2, 4, 3, 4, 2, 2).permute(0, 1, 2, 4, 3, 5)
    mask = mask.reshape(features.shape)
    torch.testing.assert_close(restored[mask], features[mask])
    assert (restored[~mask] == 0).all()
    assert mask.sum() == pooled.numel()


# ---------------------------------------------------------------------- parameter counts


def test_segnet_parameter_count(models: dict[str, nn.Module]) -> None:
    encoder = [
        (3, 64),
        (64, 64),
        (64, 128),
        (128, 128),
        (128, 256),
        (256, 256),
        (256, 256),
        (256, 512),
        (512, 512),
        (512, 512),
        (512, 512),
        (512, 512),
        (512, 512),
    ]
    decoder = [
        (512, 512),
        (512, 512),
        (512, 512),
        (512, 512),
        (512, 512),
        (512, 256),
        (256, 256),
        (256, 256),
        (256, 128),
        (128, 128),
        (128, 64),
        (64, 64),
    ]
    expected = sum(conv_parameters(a, b, 3) for a, b in encoder + decoder) + conv_parameters(64, 3, 3, bn=False)
    assert expected == 29_444_739
    assert count_parameters(models["segnet"]) == expected
    assert 29.4e6 <= expected <= 29.5e6  # the paper's 29.5M-ish figure
    # Dropout adds no parameters.
    assert count_parameters(models["bayesian-segnet"]) == expected


def test_segnet_basic_parameter_count(models: dict[str, nn.Module]) -> None:
    expected = conv_parameters(3, 64, 7) + 7 * conv_parameters(64, 64, 7) + conv_parameters(64, 3, 1, bn=False)
    assert expected == 1_416_067
    assert count_parameters(models["segnet-basic"]) == expected
    assert count_parameters(models["bayesian-segnet-basic"]) == expected


def test_count_parameters_skips_frozen() -> None:
    model = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 1))
    model[0].requires_grad_(False)
    assert count_parameters(model) == 3


# ----------------------------------------------------------------------------- logits


@pytest.mark.parametrize("name", ["segnet", "segnet-basic", "bayesian-segnet-basic"])
def test_logits_can_be_negative(models: dict[str, nn.Module], name: str) -> None:
    torch.manual_seed(2)
    with torch.no_grad():
        out = models[name](torch.randn(1, 3, 24, 24))
    assert (out < 0).any()
    assert (out > 0).any()


# ---------------------------------------------------------------------------- downsample


def test_downsampled_model_runs_the_same_network_on_block_averages() -> None:
    torch.manual_seed(0)
    full = build_model(ModelSpec("segnet-basic", num_classes=3)).eval()
    half = build_model(ModelSpec("segnet-basic", num_classes=3, downsample=2)).eval()
    half.load_state_dict(full.state_dict())  # same weights: downsampling adds no parameters
    half.logit_offsets.copy_(torch.tensor([0.0, 0.5, -1.0]))
    assert half.total_stride == 32
    image = torch.randn(1, 3, 70, 101)
    padded = F.pad(image, (0, 128 - 101, 0, 96 - 70))  # to the stride of 32
    with torch.no_grad():
        low = full(F.avg_pool2d(padded, 2))
        expected = F.interpolate(low, scale_factor=2, mode="bilinear", align_corners=False)[..., :70, :101]
        got = half(image)
    assert got.shape == (1, 3, 70, 101)
    offsets = torch.tensor([0.0, 0.5, -1.0]).view(1, 3, 1, 1)
    torch.testing.assert_close(got, expected + offsets, atol=1e-5, rtol=1e-5)


def _stripe_fit_loss(**spec: object) -> float:
    """The loss after 40 Adam steps of a segnet-basic at 1/4 resolution on one-pixel stripes."""
    image = torch.zeros(4, 3, 32, 32)
    image[:, :, :, ::2] = 1.0  # every other column bright
    target = (image[:, 0] > 0).long()
    torch.manual_seed(0)
    model = build_model(ModelSpec("segnet-basic", num_classes=2, downsample=4, **spec))
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(40):
        optimiser.zero_grad()
        loss = F.cross_entropy(model(image), target)
        loss.backward()
        optimiser.step()
    return loss.item()


def test_space_to_depth_draws_lines_thinner_than_the_network_resolution() -> None:
    """Stripes one pixel wide vanish in 4 x 4 block averages (chance loss); the rearranged input
    with its sub-pixel head fits them."""
    assert _stripe_fit_loss() > 0.6
    assert _stripe_fit_loss(space_to_depth=True) < 0.1


def test_space_to_depth_starts_as_its_upsampled_logits_and_sees_every_pixel() -> None:
    """Its sub-pixel head starts at zero; block averages are blind to pixels moved within a block,
    the rearranged input is not; 91k parameters more for segnet-basic at K=3 (issue 30's figure)."""
    torch.manual_seed(0)
    pooled = build_model(ModelSpec("segnet-basic", num_classes=3, downsample=3)).eval()
    lossless = build_model(ModelSpec("segnet-basic", num_classes=3, downsample=3, space_to_depth=True)).eval()
    assert count_parameters(lossless) - count_parameters(pooled) == 24 * 64 * 49 + (64 * 9 + 1) * 27
    image = torch.randn(1, 3, 48, 48)
    moved = image.clone()
    moved[..., 0:3, 0:3] = image[..., 0:3, 0:3].flip(-1).flip(-2)  # the same block mean
    with torch.no_grad():
        head, lossless.subpixel = lossless.subpixel, None
        without_head = lossless(image)
        lossless.subpixel = head
        torch.testing.assert_close(lossless(image), without_head)
        torch.testing.assert_close(pooled(moved), pooled(image))
        assert (lossless(moved) - lossless(image)).abs().max() > 1e-3


def test_space_to_depth_at_full_resolution_is_the_plain_model() -> None:
    torch.manual_seed(0)
    plain = build_model(ModelSpec("segnet-basic", num_classes=3))
    torch.manual_seed(0)
    lossless = build_model(ModelSpec("segnet-basic", num_classes=3, space_to_depth=True))
    assert lossless.subpixel is None and not lossless.space_to_depth
    assert plain.state_dict().keys() == lossless.state_dict().keys()


# ---------------------------------------------------------------------------- errors


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(SegnetError) as info:
        build_model(ModelSpec("resnet", num_classes=3))
    message = str(info.value)
    assert "resnet" in message
    for name in MODEL_NAMES:
        assert name in message


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_classes": 0},
        {"num_classes": 3, "in_channels": 0},
        {"num_classes": 3, "downsample": 0},
        {"num_classes": 3, "downsample": True},
        {"num_classes": 3, "space_to_depth": 1},
    ],
)
def test_bad_sizes_rejected(kwargs: dict[str, int]) -> None:
    with pytest.raises(SegnetError):
        build_model(ModelSpec("segnet-basic", **kwargs))


# ------------------------------------------------------------------ pretrained encoder


def _fake_vgg16_bn_state(in_channels: int = 3) -> dict[str, torch.Tensor]:
    """A state dict laid out like torchvision's vgg16_bn, built here independently of segnet.model."""
    cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
    layers: list[nn.Module] = []
    channels = in_channels
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(channels, v, 3, padding=1), nn.BatchNorm2d(v), nn.ReLU()]
            channels = v
    features = nn.Sequential(*layers)
    generator = torch.Generator().manual_seed(3)
    state = {}
    for key, value in features.state_dict().items():
        if value.is_floating_point():
            value = torch.rand(value.shape, generator=generator) + 0.1  # positive: valid running_var
        else:
            value = torch.tensor(7)
        state[f"features.{key}"] = value
    state["classifier.0.weight"] = torch.randn(4096, 25088 // 64)  # any shape: ignored
    state["classifier.6.bias"] = torch.randn(1000)
    return state


def _encoder_layers(model: nn.Module) -> list[tuple[nn.Conv2d, nn.BatchNorm2d]]:
    return [(block[0], block[1]) for stage in model.encoder for block in stage.convs]


@pytest.mark.parametrize("name", ["segnet", "bayesian-segnet"])
def test_load_pretrained_encoder_round_trip(tmp_path: Path, name: str) -> None:
    state = _fake_vgg16_bn_state()
    path = tmp_path / "vgg16_bn.pth"
    torch.save(state, path)
    model = build_model(ModelSpec(name, num_classes=3))
    decoder_before = {k: v.clone() for k, v in model.decoder.state_dict().items()}
    load_pretrained_encoder(model, path)

    conv_indices = [0, 3, 7, 10, 14, 17, 20, 24, 27, 30, 34, 37, 40]
    layers = _encoder_layers(model)
    assert len(layers) == len(conv_indices) == 13
    for i, (conv, bn) in zip(conv_indices, layers):
        assert torch.equal(conv.weight, state[f"features.{i}.weight"])
        assert torch.equal(conv.bias, state[f"features.{i}.bias"])
        assert torch.equal(bn.weight, state[f"features.{i + 1}.weight"])
        assert torch.equal(bn.bias, state[f"features.{i + 1}.bias"])
        assert torch.equal(bn.running_mean, state[f"features.{i + 1}.running_mean"])
        assert torch.equal(bn.running_var, state[f"features.{i + 1}.running_var"])
        assert int(bn.num_batches_tracked) == 7
    for key, value in model.decoder.state_dict().items():
        assert torch.equal(value, decoder_before[key])


def test_load_pretrained_without_num_batches_tracked(tmp_path: Path) -> None:
    state = {k: v for k, v in _fake_vgg16_bn_state().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "old.pth"
    torch.save(state, path)
    model = build_model(ModelSpec("segnet", num_classes=3))
    load_pretrained_encoder(model, path)
    assert torch.equal(model.encoder[4].convs[2][0].weight, state["features.40.weight"])


def test_load_pretrained_wrong_shape_names_key(tmp_path: Path) -> None:
    state = _fake_vgg16_bn_state()
    state["features.10.weight"] = torch.zeros(128, 64, 3, 3)  # should be (128, 128, 3, 3)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    model = build_model(ModelSpec("segnet", num_classes=3))
    before = model.encoder[0].convs[0][0].weight.clone()
    with pytest.raises(SegnetError) as info:
        load_pretrained_encoder(model, path)
    assert "features.10.weight" in str(info.value)
    assert "bad.pth" in str(info.value)
    assert torch.equal(model.encoder[0].convs[0][0].weight, before)  # nothing half-loaded


def test_load_pretrained_other_in_channels_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "rgb.pth"
    torch.save(_fake_vgg16_bn_state(in_channels=3), path)
    model = build_model(ModelSpec("segnet", num_classes=3, in_channels=1))
    with pytest.raises(SegnetError, match="features.0.weight"):
        load_pretrained_encoder(model, path)


def test_load_pretrained_missing_key(tmp_path: Path) -> None:
    state = _fake_vgg16_bn_state()
    del state["features.41.running_var"]
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    with pytest.raises(SegnetError, match="features.41.running_var"):
        load_pretrained_encoder(build_model(ModelSpec("segnet", num_classes=3)), path)


def test_load_pretrained_missing_and_unreadable_file(tmp_path: Path) -> None:
    model = build_model(ModelSpec("segnet", num_classes=3))
    missing = tmp_path / "nope.pth"
    with pytest.raises(SegnetError, match="nope.pth"):
        load_pretrained_encoder(model, missing)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"this is not a torch file")
    with pytest.raises(SegnetError, match="garbage.pth"):
        load_pretrained_encoder(model, garbage)


def test_load_pretrained_rejects_basic(tmp_path: Path) -> None:
    path = tmp_path / "vgg.pth"
    torch.save(_fake_vgg16_bn_state(), path)
    with pytest.raises(SegnetError, match="only fit segnet"):
        load_pretrained_encoder(build_model(ModelSpec("segnet-basic", num_classes=3)), path)


# ------------------------------------------------------------------------- MC dropout


def test_enable_mc_dropout_samples_differ_bn_stays_eval() -> None:
    torch.manual_seed(4)
    model = build_model(ModelSpec("bayesian-segnet-basic", num_classes=3))
    model.train()
    enable_mc_dropout(model)
    dropouts = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(dropouts) == 4
    assert all(m.training for m in dropouts)
    assert norms and not any(m.training for m in norms)
    running_mean = norms[0].running_mean.clone()
    x = torch.randn(1, 3, 20, 20)
    with torch.no_grad():
        a, b = model(x), model(x)
    assert not torch.equal(a, b)
    assert torch.equal(norms[0].running_mean, running_mean)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))


def test_bayesian_segnet_has_six_dropouts(models: dict[str, nn.Module]) -> None:
    dropouts = [m for m in models["bayesian-segnet"].modules() if isinstance(m, nn.Dropout)]
    assert len(dropouts) == 6
    assert all(m.p == 0.5 for m in dropouts)
    assert not any(isinstance(m, nn.Dropout) for m in models["segnet"].modules())


def test_enable_mc_dropout_without_dropout_raises(models: dict[str, nn.Module]) -> None:
    with pytest.raises(SegnetError, match="bayesian"):
        enable_mc_dropout(models["segnet-basic"])


# --------------------------------------------------------------------------- training


@pytest.mark.parametrize("name", ["segnet-basic", "bayesian-segnet-basic"])
def test_forward_backward(name: str) -> None:
    torch.manual_seed(5)
    model = build_model(ModelSpec(name, num_classes=3)).train()
    x = torch.randn(2, 3, 21, 27)
    target = torch.randint(0, 3, (2, 21, 27))
    loss = F.cross_entropy(model(x), target)
    loss.backward()
    assert torch.isfinite(loss)
    first, last = model.encoder[0].convs[0][0].weight.grad, model.classifier.weight.grad
    assert first is not None and first.abs().sum() > 0
    assert last is not None and last.abs().sum() > 0


def test_segnet_forward_backward(models: dict[str, nn.Module]) -> None:
    torch.manual_seed(6)
    model = build_model(ModelSpec("segnet", num_classes=3)).train()
    x = torch.randn(2, 3, 33, 35)  # padded to 64x64, 2x2 at the bottleneck
    target = torch.randint(0, 3, (2, 33, 35))
    out = model(x)
    assert out.shape == (2, 3, 33, 35)
    F.cross_entropy(out, target).backward()
    assert model.encoder[0].convs[0][0].weight.grad.abs().sum() > 0
    assert model.classifier.weight.grad.abs().sum() > 0


def _tiny_core(in_channels: int, num_classes: int) -> nn.Module:
    """A network of two poolings' depth for register_model (a U-Net stand-in)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, 8, 3, padding=1),
        nn.MaxPool2d(2),
        nn.MaxPool2d(2),
        nn.Conv2d(8, num_classes, 1),
        nn.Upsample(scale_factor=4),
    )


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> str:
    """``tiny-unet`` registered for one test only."""
    monkeypatch.setattr(spec_module, "_REGISTERED_STAGES", {})
    monkeypatch.setattr(model_module, "_REGISTERED_BUILDERS", {})
    register_model("tiny-unet", 2, _tiny_core)
    return "tiny-unet"


@pytest.mark.slow
def test_the_unet_trains_exports_and_predicts_from_the_command_line(synthetic_dataset: Path, tmp_path: Path) -> None:
    """``--model unet`` with the lossless input: trained, calibrated, exported to ONNX (the export
    checks itself against PyTorch), and ``predict --onnx`` draws what ``predict`` draws."""
    run = tmp_path / "run"
    assert cli_main(["train", "--data", str(synthetic_dataset), "--out", str(run), "--model", "unet", "--space-to-depth",
                     "--downsample", "2", "--epochs", "1", "--image-size", "32", "--num-workers", "0",
                     "--val-fraction", "0.25", "--calibration-images", "2"]) == 0  # fmt: skip
    best = Checkpoint.load(run / BEST_CHECKPOINT)
    assert best.spec == ModelSpec("unet", 3, downsample=2, space_to_depth=True) and best.calibration is not None
    assert cli_main(["export", "--checkpoint", str(run / BEST_CHECKPOINT), "--out", str(tmp_path / "unet.onnx")]) == 0
    masks = {}
    for source in ("--checkpoint", "--onnx"):
        model = run / BEST_CHECKPOINT if source == "--checkpoint" else tmp_path / "unet.onnx"
        out = tmp_path / source.strip("-")
        assert cli_main(["predict", str(synthetic_dataset / "images"), source, str(model), "--out", str(out),
                         "--device", "cpu", "--no-tta"]) == 0  # fmt: skip
        masks[source] = {path.name: np.array(Image.open(path)) for path in sorted(out.glob("*_mask.png"))}
    assert masks["--checkpoint"].keys() == masks["--onnx"].keys() and masks["--onnx"]
    for name, mask in masks["--checkpoint"].items():
        assert (masks["--onnx"][name] == mask).mean() > 0.999


@pytest.mark.slow
def test_a_registered_model_trains_saves_calibrates_and_evaluates(
    registered: str, synthetic_dataset: Path, tmp_path: Path
) -> None:
    assert registered in model_names() and registered not in MODEL_NAMES
    model = build_model(ModelSpec(registered, 3, downsample=3))
    assert isinstance(model, RegisteredNetwork) and model.total_stride == 12 == model.spec.total_stride
    assert model(torch.zeros(1, 3, 25, 31)).shape == (1, 3, 25, 31)  # any size: padded, then cropped
    with pytest.raises(SegnetError, match="segnet's own models only"):
        build_model(ModelSpec(registered, 3, space_to_depth=True))
    with pytest.raises(SegnetError, match="built-in model"):
        register_model("segnet-basic", 2, _tiny_core)

    config = load_config(None, {"data": str(synthetic_dataset), "out": str(tmp_path / "run"), "model": registered, "epochs": 1,
                                "image_size": 32, "num_workers": 0, "val_fraction": 0.25, "calibration_images": 2})  # fmt: skip
    run = train(config, progress_log=lambda *args: None)
    best = Checkpoint.load(run / BEST_CHECKPOINT)
    assert best.spec.name == registered and best.calibration is not None
    metrics = evaluate_run(
        run / BEST_CHECKPOINT,
        synthetic_dataset,
        options=InferenceOptions(device="cpu", tta=False, diameter=None),
        progress=False,
    )
    assert metrics.evaluation["model"] == registered and metrics.num_images == 3
