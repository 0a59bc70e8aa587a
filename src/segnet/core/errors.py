"""The project's own error type: raised for bad input, printed as one line by the CLI."""

from __future__ import annotations

import sys
from pathlib import Path


class SegnetError(Exception):
    """A problem the user can fix (bad file, bad option, mismatched checkpoint).

    The CLI prints ``str(error)`` as a single line without a traceback (``--debug`` shows it).
    """


class DataError(SegnetError):
    """A dataset file is missing, unreadable or inconsistent; the message names the file."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class CheckpointError(SegnetError):
    """A checkpoint cannot be used: wrong model, class list, format version, or a broken file."""


class OutputError(DataError):
    """An output cannot be written where asked: it would destroy an input or another run's results,
    another run is writing there, or the name is unusable; the message names the path."""


class OutOfMemory(SegnetError):
    """Memory ran out; the message says doing what, and which setting to lower (:func:`out_of_memory`)."""


def out_of_memory(device_type: str, doing: str, advice: str) -> OutOfMemory:
    """The one out-of-memory message, for training, prediction and the napari plugin alike:
    ``out of [GPU] memory <doing>: <advice>``."""
    memory = "GPU memory" if device_type == "cuda" else "memory"
    return OutOfMemory(f"out of {memory} {doing}: {advice}")


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is a failed allocation: torch's (CUDA) out-of-memory error, a CPU allocator's
    ``RuntimeError``, or Python's ``MemoryError``."""
    torch = sys.modules.get("torch")  # loaded with a PyTorch model; an ONNX model never loads it
    if isinstance(error, MemoryError) or (torch is not None and isinstance(error, torch.OutOfMemoryError)):
        return True
    return isinstance(error, RuntimeError) and "can't allocate memory" in str(error)  # DefaultCPUAllocator
