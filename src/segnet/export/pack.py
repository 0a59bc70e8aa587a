"""Packing a finished run's checkpoint as a shippable built-in model file."""

from __future__ import annotations

from pathlib import Path

from segnet.core.errors import CheckpointError
from segnet.core.outputs import refuse_overwriting
from segnet.model.checkpoint import Checkpoint


def pack_checkpoint(source: str | Path, destination: str | Path) -> Path:
    """Write the checkpoint ``source`` as a shippable file (:meth:`Checkpoint.for_shipping`: no
    optimiser state, float weights in float16).

    float16 keeps about three significant digits: the packed model's masks match the original's but
    for pixels whose classes are within float16 rounding of a tie (tested).

    Raises:
        CheckpointError: ``source`` is not a finished, calibrated run's checkpoint.
        OutputError: ``destination`` is ``source`` (or a link to it).
    """

    refuse_overwriting([destination], [source])
    checkpoint = Checkpoint.load(source)
    recorded = (("its calibration", checkpoint.calibration), ("its training config", checkpoint.config))
    missing = [what for what, value in recorded if value is None]
    if missing:
        raise CheckpointError(
            f"{source}: a shipped model needs a finished, calibrated run ({' and '.join(missing)} missing)"
        )
    checkpoint.for_shipping().save(destination)
    return Path(destination)
