"""The original notebook's model, the baseline benchmarks/real_darkfield.py and benchmarks/peers.py train.

It is no model of segnet's, only a baseline: :func:`register_notebook_segnet` makes it the model
``notebook-segnet`` of the process that runs a benchmark (:func:`segnet.model.register_model`, as
peers.py registers MONAI's U-Net), so it is no ``segnet train --model`` choice, and a checkpoint of it
loads only where this module registered it.

The network: 3 VGG-style stages of 2 convs (64, 128, 256), the mirrored SegNet decoder (max-unpooling
by the pooling indices), and a head conv -> BatchNorm -> ReLU *on the logits*: 2,293,641 parameters
for 3 classes, total stride 8. That ReLU is the notebook's mistake, kept on purpose: it clips every
logit at zero, so a class can never be pushed below another by a negative score, and softmax/argmax
ties at 0 are common.
"""

from __future__ import annotations

from segnet.model.networks import DecoderStage, EncoderStage, SegNet, conv_bn, register_model

NOTEBOOK_MODEL = "notebook-segnet"
NOTEBOOK_POOLINGS = 3


def notebook_segnet(in_channels: int, num_classes: int) -> SegNet:
    """The notebook's network, freshly initialised as segnet's own models are."""
    encoder = [
        EncoderStage(in_channels, [64, 64]),
        EncoderStage(64, [128, 128]),
        EncoderStage(128, [256, 256]),
    ]
    decoder = [
        DecoderStage(256, [256, 128]),
        DecoderStage(128, [128, 64]),
        DecoderStage(64, [64]),
    ]
    # The notebook's mistake, kept on purpose for the baseline: BN + ReLU on the logits.
    classifier = conv_bn(64, num_classes, kernel_size=3, relu=True)
    return SegNet(NOTEBOOK_MODEL, encoder, decoder, classifier, num_classes, in_channels)


def register_notebook_segnet() -> None:
    """Make the notebook's network the segnet model :data:`NOTEBOOK_MODEL` of this process (again: no change)."""
    register_model(NOTEBOOK_MODEL, NOTEBOOK_POOLINGS, notebook_segnet)
