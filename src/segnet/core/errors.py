"""The project's own error type: raised for bad input, printed as one line by the CLI."""

from __future__ import annotations

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
