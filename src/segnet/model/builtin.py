"""Built-in models: trained weights shipped inside the package, named instead of a file.

A lab can segment its first image without labelling or training: ``segnet predict IMAGES --out DIR``
uses :data:`DEFAULT_BUILTIN_MODEL`, and wherever a checkpoint is asked for (``--checkpoint``,
``train --init``, the napari plugin) a built-in model's name stands for its file. Each model is a
plain segnet checkpoint in ``segnet/weights/NAME.pt`` (the weights in float16 and no optimiser
state, so it stays a few MB; loading casts them back to float32) with its model card
``NAME.md`` beside it. The card's first paragraph is the summary ``segnet models`` prints.

:func:`segnet.export.pack.pack_checkpoint` turns a training run's ``best.pt`` into such a file
(:meth:`segnet.model.checkpoint.Checkpoint.for_shipping` says what it keeps); the recipe that built
each shipped file, its commands included, is in its card.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

from segnet.core import runfiles
from segnet.core.errors import CheckpointError

DEFAULT_BUILTIN_MODEL = "darkfield"


@dataclass(frozen=True)
class BuiltinModel:
    """A model shipped in the package: its name, weights file and model card."""

    name: str

    @property
    def path(self) -> Path:
        return runfiles.WEIGHTS_DIR / f"{self.name}.pt"

    @property
    def card_path(self) -> Path:
        return runfiles.WEIGHTS_DIR / f"{self.name}.md"

    @property
    def installed(self) -> bool:
        return self.path.is_file()

    def summary(self) -> str:
        """The card's first paragraph below its title, on one line."""
        paragraphs = self.card_path.read_text(encoding="utf-8").split("\n\n") if self.card_path.is_file() else []
        text = next((p for p in paragraphs if p.strip() and not p.lstrip().startswith("#")), "(no model card)")
        return " ".join(text.split())


BUILTIN_MODELS: dict[str, BuiltinModel] = {model.name: model for model in (BuiltinModel(DEFAULT_BUILTIN_MODEL),)}


def resolve_checkpoint(value: str | Path) -> Path:
    """The checkpoint file ``value`` names: a built-in model's name, or a path.

    A name wins only where no file or folder of that name exists, so ``./darkfield`` is still a path.

    Raises:
        CheckpointError: the name is a built-in model whose weights are not installed, or a bare
            name (no folder, no file ending) that is neither a file nor a built-in model.
    """
    model = BUILTIN_MODELS.get(str(value))
    path = Path(value)
    if model is None and not path.exists() and path.name == str(value) and not path.suffix:
        raise CheckpointError(_unknown_name_message(str(value)))
    if model is None or path.exists():
        return path
    if not model.installed:
        raise CheckpointError(
            f"built-in model '{model.name}': its weights {model.path} are not installed (reinstall segnet)"
        )
    return model.path


def _unknown_name_message(name: str) -> str:
    """``name`` is no file and no built-in model: the model probably meant, and every built-in name."""
    meant = difflib.get_close_matches(name, list(BUILTIN_MODELS), n=1)
    hint = f"; did you mean '{meant[0]}'?" if meant else ""
    return f"{name}: not found, neither a checkpoint file nor a built-in model{hint} (built-in models: {', '.join(BUILTIN_MODELS)})"


def is_builtin(path: str | Path) -> bool:
    """Whether ``path`` is the file of a built-in model (to say so, rather than print a site-packages path)."""
    return any(Path(path) == model.path for model in BUILTIN_MODELS.values())
