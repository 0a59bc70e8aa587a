"""Options segnet had and retired (issue 34), and how files that still name them are read.

Each was measured on the real darkfield images and lost; docs/decisions.md keeps the
measurements, and commit :data:`LAST_COMMIT` is the last that has them. Files written before
still name them: a checkpoint's ``config`` and ``model`` spec, a run's config.yaml (resumed with
``--config``), a bioimage.io package's architecture kwargs. A retired option at its neutral
value (the one at which it did nothing) is dropped and the file reads as before; any other value
is refused in one line naming the file, since those weights or that run need what segnet no
longer has. :func:`without_retired` is that rule, and each reader calls it once:
:meth:`segnet.plan.spec.ModelSpec.from_dict` (checkpoints and bioimage.io kwargs),
:func:`segnet.plan.config.read_config_file` and :meth:`segnet.model.checkpoint.Checkpoint.load`
(a checkpoint's ``config``).

This module imports nothing heavy: the command line and the torch-free paths read through it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from segnet.core.errors import SegnetError

LAST_COMMIT = "2f4be69"
"""The last segnet commit that has the retired options: the one to read their files with."""
_WHERE = f"retired after commit {LAST_COMMIT}: see docs/decisions.md"

RETIRED_OPTIONS: dict[str, tuple[Any, ...]] = {
    "detail_width": (0, None),  # a full-resolution branch correcting the upsampled logits (DetailRefiner)
    "skeleton_recall": (None, 0),  # a loss term along the thin classes' drawn centrelines
    "ema_decay": (None,),  # validated and saved a moving average of the weights
}
"""Each retired option (a config field or model-spec key) and the values at which it did nothing."""
RETIRED_LOSSES = ("ce+lovasz", "ce+focal-tversky")
"""The retired choices of ``loss`` (an option that stays): Lovász-softmax and focal Tversky beside cross-entropy."""


def _neutral(value: Any, neutral: tuple[Any, ...]) -> bool:
    # Plain numbers only: a forged file's tensor or list never counts as neutral (nor breaks ==).
    return any(value is None if n is None else type(value) in (int, float) and value == n for n in neutral)


def retired_setting(values: Mapping[str, Any]) -> str | None:
    """The first setting in ``values`` (a config or a model spec as a file holds it) that segnet no
    longer has, as its flag and value (``--ema-decay 0.999``); ``None`` where there is none."""
    for name, neutral in RETIRED_OPTIONS.items():
        if name in values and not _neutral(values[name], neutral):
            value = values[name]
            shown = str(value) if type(value) in (int, float) else repr(value)[:60]
            return f"--{name.replace('_', '-')} {shown}"
    loss = values.get("loss")
    if isinstance(loss, str) and loss in RETIRED_LOSSES:
        return f"--loss {loss}"
    return None


def without_retired(
    values: Mapping[str, Any], path: str | Path, error: type[SegnetError] = SegnetError
) -> dict[str, Any]:
    """``values`` (a config or a model spec as a file holds it) without the retired options, which
    hold their neutral values.

    Raises:
        error: a retired setting (:func:`retired_setting`), in one line naming ``path``.
    """
    setting = retired_setting(values)
    if setting is not None:
        raise error(
            f"{path}: trained with {setting}, which segnet no longer has ({_WHERE}); use an earlier segnet to read it"
        )
    return {key: value for key, value in values.items() if key not in RETIRED_OPTIONS}


def retired_flag(flag: str) -> str | None:
    """Why the command line does not know ``flag`` (``--ema-decay``) where it is a retired option's, else ``None``."""
    if flag.removeprefix("--").replace("-", "_") not in RETIRED_OPTIONS:
        return None
    return f"segnet no longer has it ({_WHERE})"
