"""Packing a finished run's checkpoint as a shippable built-in model file."""

from __future__ import annotations

from pathlib import Path

from segnet.core.errors import CheckpointError
from segnet.core.outputs import refuse_overwriting
from segnet.model.builtin import SHIPPED_KEYS
from segnet.model.checkpoint import load_checkpoint, save_checkpoint


def pack_checkpoint(source: str | Path, destination: str | Path) -> Path:
    """Write the checkpoint ``source`` as a shippable file: the keys in :data:`SHIPPED_KEYS`, float weights in float16.

    float16 keeps about three significant digits: the packed model's masks match the original's but
    for pixels whose classes are within float16 rounding of a tie (tested).

    Raises:
        OutputError: ``destination`` is ``source`` (or a link to it).
    """

    refuse_overwriting([destination], [source])
    state = load_checkpoint(source)
    missing = [key for key in ("calibration", "config") if key not in state]
    if missing:
        raise CheckpointError(
            f"{source}: a shipped model needs a finished, calibrated run (missing {', '.join(missing)})"
        )
    packed = {key: state[key] for key in SHIPPED_KEYS if key in state}
    packed["model_state"] = {
        name: tensor.half() if tensor.is_floating_point() and name != "logit_offsets" else tensor
        for name, tensor in state["model_state"].items()
    }
    save_checkpoint(packed, destination)
    return Path(destination)
