"""The networks: the paper's SegNet and SegNet-Basic, their Bayesian variants, and a U-Net.

Every model is a :class:`SegmentationNetwork` (the padding, resolution change and logit offsets
below, shared). A :class:`SegNet` is a list of :class:`EncoderStage` (convs, then a 2x2 max-pool that
keeps its indices), a mirrored list of :class:`DecoderStage` (max-unpool with those indices, then
convs) and a per-pixel classifier head; the SegNet variants differ only in the stage widths, the
kernel size, where dropout sits and what the head is. The :class:`UNet` passes the encoder's
features themselves to the decoder:

==========================  ======================================================================
``segnet``                  Badrinarayanan et al., TPAMI 2017. VGG16 encoder (13 convs 3x3 + BN +
                            ReLU in 5 stages of 2,2,3,3,3 convs, widths 64,128,256,512,512) and a
                            mirrored decoder of 12 convs + a 3x3 classifier conv (the paper's
                            Caffe model uses 3x3 for ``conv1_1_D``). Total stride 32.
``segnet-basic``            The paper's SegNet-Basic: 4 encoder layers (7x7 conv, 64 channels, BN,
                            ReLU, pool) and 4 decoder layers (unpool, 7x7 conv, 64 channels, BN,
                            *no* ReLU, as in the paper), then a 1x1 classifier. Total stride 16.
``bayesian-segnet``         Kendall et al. 2015: ``segnet`` with dropout p=0.5 after encoder stages
                            3, 4, 5 (after their pooling) and after decoder stages 5, 4, 3 (after
                            their last conv), i.e. the Caffe model's encdrop3-5 / decdrop5-3.
``bayesian-segnet-basic``   ``segnet-basic`` with dropout p=0.5 after the central two encoder
                            layers (3 and 4, after pooling) and after the central two decoder
                            layers (decoder 4 and 3, the first two the signal passes through).
``unet``                    Ronneberger et al. 2015 at the size of MONAI's BasicUNet: 5 levels of
                            two 3x3 convs (BN, ReLU), widths 32,32,64,128,256; transposed-conv
                            upsampling, skip concatenation, 1x1 classifier. Total stride 16.
==========================  ======================================================================

All models return RAW logits of shape ``(N, num_classes, H, W)`` for any ``H`` and ``W``: the input
is zero-padded at the bottom and right to a multiple of ``model.total_stride`` and the output is
cropped back. Zero padding (not reflect) is used because it works for every size, including
inputs smaller than the padding (reflect needs ``pad < size``, which fails for e.g. a 1x1 input
and a stride of 32), and it is what the convolutions already do at the borders.

``downsample`` (an integer k, 1 by default) makes a model work at 1/k of the image's resolution:
the padded input is averaged over k x k blocks, the network runs on that, and its logits are
resized back bilinearly, so inputs, outputs and the loss stay at full resolution. On the real
darkfield images (spirochetes about 11 px thick, red cells up to 300 px across) k = 3 gives the
same network three times the field of view for a ninth of the computation per image; training
picks k from the thinnest class in the dataset fingerprint (``segnet.train``).

``space_to_depth`` (off by default; on in the training recipe) makes that resolution change lossless:
the input reaches the network by ``pixel_unshuffle`` (each k x k block becomes k*k channels of one
model pixel, so every image pixel reaches the first convolution at the same 1/k cost) instead of
being averaged, and a :class:`SubPixelHead` draws k x k logits per model pixel from the last
decoder features (``pixel_shuffle``), added to the upsampled logits. A faint filament 2-4 px wide
survives into the network at its own contrast, and the network can draw a line thinner than k.
The head starts at zero, so the model starts as the upsampled one.

Dropout is ``nn.Dropout`` (element-wise), as in the Caffe Bayesian SegNet, not ``nn.Dropout2d``
(whole channels): dropping whole 512-channel feature maps at p=0.5 after pooling is a much
stronger, different regulariser than the one the paper's uncertainty estimates were made with.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from segnet.core.errors import SegnetError
from segnet.plan.spec import MODEL_NAMES, ModelSpec, register_model_name

__all__ = [
    "MODEL_NAMES",
    "DecoderStage",
    "EncoderStage",
    "ModelSpec",
    "RegisteredNetwork",
    "SegNet",
    "SegmentationNetwork",
    "SubPixelHead",
    "UNet",
    "build_model",
    "build_model_from_kwargs",
    "conv_bn",
    "count_parameters",
    "enable_mc_dropout",
    "load_pretrained_encoder",
    "register_model",
    "vgg16_bn_key_map",
]

#: Models whose encoder has exactly the layout of torchvision's ``vgg16_bn().features``.
VGG_ENCODER_MODELS: tuple[str, ...] = ("segnet", "bayesian-segnet")

# VGG16: convs per encoder stage and their widths.
_VGG16_DEPTHS = (2, 2, 3, 3, 3)
_VGG16_WIDTHS = (64, 128, 256, 512, 512)
# The mirrored SegNet decoder, deepest stage first (decoder stage 5, 4, 3, 2, 1); the classifier
# follows decoder stage 1.
_SEGNET_DECODER_WIDTHS = ((512, 512, 512), (512, 512, 256), (256, 256, 128), (128, 64), (64,))

_DROPOUT_P = 0.5
# The U-Net's widths by level, full resolution first: those of MONAI's BasicUNet, the peer that
# beat SegNet-Basic in segnet's own recipe (docs/decisions.md).
_UNET_WIDTHS = (32, 32, 64, 128, 256)


# --------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------


def conv_bn(in_channels: int, out_channels: int, kernel_size: int = 3, relu: bool = True) -> nn.Sequential:
    """``Conv2d`` ('same' padding, with bias as in VGG16-BN) -> ``BatchNorm2d`` -> optional ``ReLU``.

    Index 0 is the conv and index 1 the BatchNorm, which :func:`load_pretrained_encoder` relies on.
    """
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2),
        nn.BatchNorm2d(out_channels),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class EncoderStage(nn.Module):
    """Convs (each conv -> BN -> ReLU), then a 2x2/2 max-pool that returns its indices, then dropout.

    ``forward(x)`` returns ``(pooled, indices)``; ``indices`` feed the mirrored :class:`DecoderStage`.
    """

    def __init__(self, in_channels: int, widths: Sequence[int], kernel_size: int = 3, dropout: float = 0.0) -> None:
        super().__init__()
        layers = []
        for width in widths:
            layers.append(conv_bn(in_channels, width, kernel_size))
            in_channels = width
        self.convs = nn.Sequential(*layers)
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2, return_indices=True)
        self.dropout: nn.Module = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.out_channels = in_channels

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.convs(x)
        x, indices = self.pool(x)
        return self.dropout(x), indices


class DecoderStage(nn.Module):
    """Max-unpool 2x2/2 with the encoder's indices, then convs (conv -> BN [-> ReLU]), then dropout.

    Unpooling writes each value back at the position its max came from and zeros elsewhere; the
    convs then densify that sparse map. ``relu=False`` gives SegNet-Basic's decoder (no ReLU).
    """

    def __init__(
        self,
        in_channels: int,
        widths: Sequence[int],
        kernel_size: int = 3,
        relu: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.unpool = nn.MaxUnpool2d(kernel_size=2, stride=2)
        layers = []
        for width in widths:
            layers.append(conv_bn(in_channels, width, kernel_size, relu=relu))
            in_channels = width
        self.convs = nn.Sequential(*layers)
        self.dropout: nn.Module = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.out_channels = in_channels

    def forward(self, x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        # The input is padded to a multiple of the total stride, so every pooling was exact and the
        # default unpool output size (2x) is the pre-pooling size: no output_size is needed.
        x = self.unpool(x, indices)
        return self.dropout(self.convs(x))


class SubPixelHead(nn.Module):
    """Full-resolution logits from model-resolution features: a 3x3 conv to ``factor ** 2`` values per
    class, rearranged by ``pixel_shuffle`` into a ``factor`` x ``factor`` block; zero-initialised."""

    def __init__(self, in_channels: int, num_classes: int, factor: int) -> None:
        super().__init__()
        self.factor = factor
        self.conv = nn.Conv2d(in_channels, num_classes * factor * factor, kernel_size=3, padding=1)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(self.conv(features), self.factor)


class SegmentationNetwork(nn.Module):
    """What every segnet model does around its network: zero-pad the input to the total stride, bring
    it to 1/downsample (averaged, or rearranged by ``pixel_unshuffle`` where ``space_to_depth``), run
    :meth:`segment`, resize the logits back (plus the :class:`SubPixelHead`'s, where there is one),
    add the logit offsets and crop the padding (module docs).

    Attributes:
        name: the model name (:func:`segnet.plan.spec.model_names`).
        num_classes, in_channels: as built (``in_channels`` of the image, before any rearrangement).
        downsample: the network runs at 1/downsample of the input resolution.
        total_stride: ``downsample * 2 ** poolings``; inputs are zero-padded to a multiple of it.
        spec: the :class:`~segnet.plan.spec.ModelSpec` it was built from by :func:`build_model`
            (``None`` for a network assembled in code).
        space_to_depth: the input is rearranged (``pixel_unshuffle``), not averaged, to 1/downsample.
        subpixel: the :class:`SubPixelHead` of a ``space_to_depth`` model, else ``None``.
        logit_offsets: a buffer of one constant per class added to the logits; zero while training,
            set afterwards by :mod:`segnet.train.calibration` to undo the bias that class weighting
            puts on the decisions. Part of the state dict, so checkpoints and exports carry it.
    """

    def __init__(self, name: str, num_classes: int, in_channels: int, downsample: int, poolings: int) -> None:
        super().__init__()
        self.name = name
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.downsample = downsample
        self.total_stride: int = downsample * 2**poolings
        self.spec: ModelSpec | None = None
        self.space_to_depth = False
        self.subpixel: SubPixelHead | None = None
        self.register_buffer("logit_offsets", torch.zeros(num_classes))

    def segment(self, x: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        """``(last features, logits)`` of the network at its own resolution (features: what a
        :class:`SubPixelHead` reads)."""
        raise NotImplementedError

    def unpooled_pools(self) -> list[nn.Module]:
        """The max-pools whose indices the decoder reuses (SegNet's); where two near-equal values tie,
        which one such a pool picks moves a value by a pixel (:mod:`segnet.export.formats`)."""
        return []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return raw logits ``(N, num_classes, H, W)`` for an input ``(N, in_channels, H, W)``."""
        height, width = x.shape[-2], x.shape[-1]
        x = _pad_to_stride(x, self.total_stride)
        if self.downsample > 1:
            x = F.pixel_unshuffle(x, self.downsample) if self.space_to_depth else F.avg_pool2d(x, self.downsample)
        features, x = self.segment(x)
        if self.downsample > 1:
            x = F.interpolate(x, scale_factor=self.downsample, mode="bilinear", align_corners=False)
        if self.subpixel is not None:
            x = x + self.subpixel(features)
        x = x + self.logit_offsets.to(x.dtype).view(1, -1, 1, 1)
        return x[:, :, :height, :width]


class SegNet(SegmentationNetwork):
    """Encoder stages -> mirrored decoder stages (unpooling with the encoder's indices) -> head.

    Attributes: as :class:`SegmentationNetwork`'s, and ``encoder``, ``decoder``, ``classifier``.
    """

    def __init__(
        self,
        name: str,
        encoder: Sequence[EncoderStage],
        decoder: Sequence[DecoderStage],
        classifier: nn.Module,
        num_classes: int,
        in_channels: int,
        downsample: int = 1,
    ) -> None:
        super().__init__(name, num_classes, in_channels, downsample, len(encoder))
        if len(encoder) != len(decoder):
            raise ValueError("encoder and decoder need the same number of stages")
        self.encoder = nn.ModuleList(encoder)
        self.decoder = nn.ModuleList(decoder)
        self.classifier = classifier
        self.feature_channels = decoder[-1].out_channels
        _init_weights(self)

    def segment(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        indices = []
        for stage in self.encoder:
            x, idx = stage(x)
            indices.append(idx)
        for stage, idx in zip(self.decoder, reversed(indices)):
            x = stage(x, idx)
        return x, self.classifier(x)

    def unpooled_pools(self) -> list[nn.Module]:
        return [stage.pool for stage in self.encoder]


class UNet(SegmentationNetwork):
    """Ronneberger et al. 2015, at the size of MONAI's ``BasicUNet``: per level two 3x3 convs (BN,
    ReLU), 2x2 max-pools down, 2x2 transposed convs up, each concatenated with the encoder's features
    of its level (what SegNet passes only as pooling indices), then a 1x1 classifier.

    BatchNorm, not BasicUNet's InstanceNorm: instance statistics depend on the window a tile shows,
    so tiled and whole-image inference would differ (docs/decisions.md).

    Attributes: as :class:`SegmentationNetwork`'s, and ``encoder`` (one two-conv block per level,
    the first at full resolution), ``upsample``, ``decoder`` (deepest first) and ``classifier``.
    """

    def __init__(
        self, name: str, widths: Sequence[int], num_classes: int, in_channels: int, downsample: int = 1
    ) -> None:
        super().__init__(name, num_classes, in_channels, downsample, len(widths) - 1)
        self.encoder = nn.ModuleList(
            _two_convs(before, width) for before, width in zip((in_channels, *widths[:-1]), widths)
        )
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        deeper = list(zip(widths[1:], widths[:-1]))[::-1]
        self.upsample = nn.ModuleList(nn.ConvTranspose2d(deep, width, 2, stride=2) for deep, width in deeper)
        self.decoder = nn.ModuleList(_two_convs(2 * width, width) for _, width in deeper)
        self.classifier = nn.Conv2d(widths[0], num_classes, kernel_size=1)
        self.feature_channels = widths[0]
        _init_weights(self)

    def segment(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        skips = []
        for level, block in enumerate(self.encoder):
            x = block(self.pool(x) if level else x)
            skips.append(x)
        for upsample, block, skip in zip(self.upsample, self.decoder, reversed(skips[:-1])):
            x = block(torch.cat([skip, upsample(x)], dim=1))
        return x, self.classifier(x)


def _two_convs(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(conv_bn(in_channels, out_channels), conv_bn(out_channels, out_channels))


def _pad_to_stride(x: torch.Tensor, stride: int) -> torch.Tensor:
    """``x`` with zeros at the right and bottom up to a multiple of ``stride`` (module docs: why zeros)."""
    height, width = x.shape[-2], x.shape[-1]
    return F.pad(x, (0, (stride - width % stride) % stride, 0, (stride - height % stride) % stride))


def _init_weights(model: nn.Module) -> None:
    """Kaiming-normal convs (fan_out, ReLU gain), zero biases; BatchNorm weight 1, bias 0."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


# --------------------------------------------------------------------------------------------
# The variants
# --------------------------------------------------------------------------------------------


def _segnet(name: str, num_classes: int, in_channels: int, bayesian: bool, downsample: int) -> SegNet:
    drop = _DROPOUT_P if bayesian else 0.0
    encoder = []
    channels = in_channels
    for stage, (depth, width) in enumerate(zip(_VGG16_DEPTHS, _VGG16_WIDTHS), start=1):
        encoder.append(EncoderStage(channels, [width] * depth, dropout=drop if stage >= 3 else 0.0))
        channels = width
    decoder = []
    for stage, widths in zip((5, 4, 3, 2, 1), _SEGNET_DECODER_WIDTHS):
        decoder.append(DecoderStage(channels, widths, dropout=drop if stage >= 3 else 0.0))
        channels = widths[-1]
    classifier = nn.Conv2d(channels, num_classes, kernel_size=3, padding=1)
    return SegNet(name, encoder, decoder, classifier, num_classes, in_channels, downsample)


def _segnet_basic(name: str, num_classes: int, in_channels: int, bayesian: bool, downsample: int) -> SegNet:
    drop = _DROPOUT_P if bayesian else 0.0
    width, kernel = 64, 7
    encoder = [
        EncoderStage(in_channels if layer == 1 else width, [width], kernel, dropout=drop if layer >= 3 else 0.0)
        for layer in (1, 2, 3, 4)
    ]
    # Decoder layers 4, 3, 2, 1 (deepest first); the central two are decoder 4 and 3.
    decoder = [
        DecoderStage(width, [width], kernel, relu=False, dropout=drop if layer >= 3 else 0.0) for layer in (4, 3, 2, 1)
    ]
    classifier = nn.Conv2d(width, num_classes, kernel_size=1)
    return SegNet(name, encoder, decoder, classifier, num_classes, in_channels, downsample)


_REGISTERED_BUILDERS: dict[str, Callable[[int, int], nn.Module]] = {}


def register_model(name: str, poolings: int, builder: Callable[[int, int], nn.Module]) -> None:
    """Make ``name`` a model of this process: training, checkpoints, calibration, evaluation and
    prediction then take it as a built-in one (benchmarks/peers.py trains a MONAI U-Net so, and the
    benchmarks their notebook baseline, benchmarks/notebook_segnet.py). It is no
    ``--model`` choice of the command line, and a checkpoint of it loads only where it is registered.

    ``builder(in_channels, num_classes)`` returns a fresh network mapping ``(N, in_channels, h, w)``
    to logits ``(N, num_classes, h, w)`` where ``h`` and ``w`` are multiples of ``2 ** poolings``;
    :func:`build_model` runs it in a :class:`RegisteredNetwork` at the spec's resolution.

    Raises:
        SegnetError: ``name`` is a built-in model (:func:`segnet.plan.spec.register_model_name`).
    """
    register_model_name(name, poolings)
    _REGISTERED_BUILDERS[name] = builder


class RegisteredNetwork(SegmentationNetwork):
    """A network of :func:`register_model`, run as segnet runs its own (:class:`SegmentationNetwork`,
    averaged to 1/downsample). Attributes as :class:`SegmentationNetwork`'s, and ``core``, the network."""

    def __init__(self, core: nn.Module, spec: ModelSpec) -> None:
        if spec.space_to_depth:
            raise SegnetError(f"{spec.name}: space_to_depth is a part of segnet's own models only")
        super().__init__(spec.name, spec.num_classes, spec.in_channels, spec.downsample, spec.poolings)
        self.core = core
        self.spec = spec

    def segment(self, x: torch.Tensor) -> tuple[None, torch.Tensor]:
        return None, self.core(x)


def build_model(spec: ModelSpec) -> SegmentationNetwork:
    """Build the model ``spec`` describes, with freshly initialised weights (a registered model:
    by its builder, :func:`register_model`).

    ``spec.downsample``: the model runs at 1/downsample of the input resolution, reached losslessly
    where ``spec.space_to_depth`` (module docs).
    The model's ``spec`` attribute is ``spec``, and its ``total_stride`` equals ``spec.total_stride``.
    """
    if spec.name in _REGISTERED_BUILDERS:
        return RegisteredNetwork(_REGISTERED_BUILDERS[spec.name](spec.in_channels, spec.num_classes), spec)
    unshuffled = spec.space_to_depth and spec.downsample > 1
    # The first convolution sees every pixel of a downsample x downsample block as its own channel.
    network_in = spec.in_channels * spec.downsample**2 if unshuffled else spec.in_channels
    model: SegNet | UNet
    if spec.name == "unet":
        model = UNet(spec.name, _UNET_WIDTHS, spec.num_classes, network_in, spec.downsample)
    elif spec.name in ("segnet", "bayesian-segnet"):
        model = _segnet(spec.name, spec.num_classes, network_in, spec.bayesian, spec.downsample)
    else:
        model = _segnet_basic(spec.name, spec.num_classes, network_in, spec.bayesian, spec.downsample)
    model.in_channels = spec.in_channels
    if unshuffled:
        model.space_to_depth = True
        model.subpixel = SubPixelHead(model.feature_channels, spec.num_classes, spec.downsample)
    model.spec = spec
    return model


def build_model_from_kwargs(**spec: Any) -> SegmentationNetwork:
    """:func:`build_model` of the spec ``spec`` holds: the architecture callable of bioimage.io
    packages, whose kwargs are a checkpoint's stored spec (:meth:`ModelSpec.to_dict`), read as a
    checkpoint's is (:meth:`ModelSpec.from_dict`: the kwargs of older packages may name retired options).

    Raises:
        CheckpointError: kwargs :meth:`ModelSpec.from_dict` refuses.
    """
    return build_model(ModelSpec.from_dict(spec, "the bioimage.io architecture kwargs"))


# --------------------------------------------------------------------------------------------
# Pretrained VGG16-BN encoder
# --------------------------------------------------------------------------------------------

_CONV_KEYS = ("weight", "bias")
_BN_KEYS = ("weight", "bias", "running_mean", "running_var")
_BN_OPTIONAL_KEYS = ("num_batches_tracked",)  # absent from the old official vgg16_bn file


def vgg16_bn_key_map(model: nn.Module) -> dict[str, str]:
    """Map torchvision ``vgg16_bn`` state-dict keys to this model's keys (required keys only).

    torchvision's ``features`` is a flat Sequential: per conv ``Conv2d`` (i), ``BatchNorm2d`` (i+1),
    ``ReLU`` (i+2), and one ``MaxPool2d`` after each stage. So with stages ``s`` = 0..4 and conv
    ``c`` within a stage, this gives e.g.::

        features.0.*   -> encoder.0.convs.0.0.*   (conv)    features.1.*  -> encoder.0.convs.0.1.* (BN)
        features.3.*   -> encoder.0.convs.1.0.*             features.4.*  -> encoder.0.convs.1.1.*
        features.7.*   -> encoder.1.convs.0.0.*   (6 is pool1)  ...
        features.40.*  -> encoder.4.convs.2.0.*             features.41.* -> encoder.4.convs.2.1.*

    The optional ``num_batches_tracked`` buffers are handled by :func:`load_pretrained_encoder`.
    """
    if not isinstance(model, SegNet) or model.name not in VGG_ENCODER_MODELS:
        name = getattr(model, "name", type(model).__name__)
        raise SegnetError(f"pretrained VGG16-BN weights only fit {' and '.join(VGG_ENCODER_MODELS)}, not {name}")
    mapping: dict[str, str] = {}
    index = 0
    for s, stage in enumerate(model.encoder):
        for c in range(len(stage.convs)):
            ours = f"encoder.{s}.convs.{c}"
            for key in _CONV_KEYS:
                mapping[f"features.{index}.{key}"] = f"{ours}.0.{key}"
            for key in _BN_KEYS:
                mapping[f"features.{index + 1}.{key}"] = f"{ours}.1.{key}"
            index += 3  # conv, bn, relu
        index += 1  # max-pool
    return mapping


def load_pretrained_encoder(model: nn.Module, path: str | Path) -> None:
    """Initialise the encoder of ``segnet`` / ``bayesian-segnet`` from a local VGG16-BN state dict.

    The file holds a state dict with torchvision's ``vgg16_bn`` key layout (``features.0.weight``,
    ``features.1.running_mean``, ...; see :func:`vgg16_bn_key_map`). ``classifier.*`` keys are
    ignored; any other key must map onto the encoder with the same shape. It is read with
    ``torch.load(weights_only=True)`` (no code runs) and nothing is downloaded. The model is only
    changed once every key has been checked, so a bad file leaves it untouched.

    Raises:
        SegnetError: the model has no VGG encoder; the file is missing or unreadable; or a key is
            missing, unexpected or has the wrong shape (the message names the file and the key).
    """
    mapping = vgg16_bn_key_map(model)
    path = Path(path)
    if not path.is_file():
        raise SegnetError(f"{path}: pretrained encoder file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any failure to read means an unusable file
        raise SegnetError(f"{path}: cannot read pretrained encoder weights ({error})") from error
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise SegnetError(f"{path}: not a state dict of tensors (expected torchvision vgg16_bn keys)")

    ours = model.state_dict()
    optional = {}
    for theirs, mine in mapping.items():
        prefix, _, key = theirs.rpartition(".")
        if key == "running_var":
            for extra in _BN_OPTIONAL_KEYS:
                optional[f"{prefix}.{extra}"] = mine.rpartition(".")[0] + f".{extra}"

    updates: dict[str, torch.Tensor] = {}
    for theirs, mine in mapping.items():
        if theirs not in state:
            raise SegnetError(f"{path}: missing key {theirs!r} (expected for {mine})")
    for theirs, tensor in state.items():
        if theirs.startswith("classifier."):
            continue
        mine = mapping.get(theirs) or optional.get(theirs)
        if mine is None:
            raise SegnetError(f"{path}: unexpected key {theirs!r} for a VGG16-BN encoder")
        expected = ours[mine].shape
        if tensor.shape != expected:
            raise SegnetError(
                f"{path}: key {theirs!r} has shape {tuple(tensor.shape)}, expected {tuple(expected)} for {mine}"
            )
        updates[mine] = tensor
    with torch.no_grad():
        for mine, tensor in updates.items():
            ours[mine].copy_(tensor)


# --------------------------------------------------------------------------------------------
# Utilities
# --------------------------------------------------------------------------------------------


def enable_mc_dropout(model: nn.Module) -> None:
    """Prepare ``model`` for Monte Carlo dropout sampling.

    Puts the whole model in eval mode (BatchNorm uses its running statistics) and then only the
    dropout layers back in train mode, so repeated forward passes sample different dropout masks.

    Raises:
        SegnetError: the model has no dropout layers (only the bayesian-* models have them), so
            every sample would be identical.
    """
    model.eval()
    found = False
    for module in model.modules():
        if isinstance(module, nn.modules.dropout._DropoutNd):
            module.train()
            found = True
    if not found:
        name = getattr(model, "name", type(model).__name__)
        raise SegnetError(
            f"model {name} has no dropout layers; Monte Carlo dropout needs bayesian-segnet or bayesian-segnet-basic"
        )


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (``requires_grad``); BatchNorm running stats are buffers."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
