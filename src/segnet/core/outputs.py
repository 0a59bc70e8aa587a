"""Where a command may write, and how: the one place that keeps outputs from destroying inputs.

* An output path that is, or resolves to (through a symbolic or hard link), one of the command's
  inputs is refused (:func:`refuse_overwriting`); so is a run's output folder inside the package's
  built-in model folder (:func:`refuse_package_folder`).
* Files are written by replacing (:func:`atomic_write`): a temporary file beside the target is
  renamed over it, so a crash leaves the old file or the new one, and an existing symbolic link at
  the target is replaced by the file, never written through. Tables written row by row are opened
  afresh the same way (:func:`open_replacing`).
* An output folder that holds another run's results is refused unless the user asked to replace
  them, and then they are removed first, so the folder's files all come from one run
  (:func:`clear_earlier_results`).
* One run at a time writes a folder (:func:`output_lock`): a second is refused, not interleaved.
* File names made from a name the user typed (a napari layer) are sanitised (:func:`safe_stem`).

Nothing here imports torch: ``predict --onnx`` writes through it without loading PyTorch.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from segnet.core import runfiles
from segnet.core.errors import OutputError

try:
    import fcntl as _fcntl
except ImportError:  # Windows: msvcrt locks files only
    _fcntl = None

LOCK_FILE = ".segnet.lock"
"""Where locks cannot be taken on a folder (Windows): the file in it that a run holds locked."""
TEMPORARY_NAME = re.compile(r"^\..+\.[A-Za-z0-9_]{6,}\.tmp$")
"""Temporary files of atomic writes, ``.NAME.RANDOM.tmp``: hidden, and never mistaken for ``*.pt``."""
_UNSAFE_IN_STEM = re.compile(r"[^\w\-. ]+|\.{2,}")  # runs of anything but letters, digits, -, _, . and space; and ..
_LISTED = 3  # earlier results named in a refusal


def _write_problem(error: OSError, what: str) -> str:
    return f"could not write {what} ({error.strerror or error}): free some space or choose a writable folder"


def describe_write_error(path: str | Path, error: OSError, what: str = "file") -> str:
    """One line for a failed write (disk full, read-only folder), naming the file and what to do."""
    return f"{path}: {_write_problem(error, what)}"


def _file_identity(path: Path) -> tuple[int, int] | None:
    """The device and inode of the file ``path`` names (through links), or ``None`` where there is none."""
    try:
        status = path.stat()
    except OSError:
        return None
    return status.st_dev, status.st_ino


def refuse_overwriting(targets: Iterable[str | Path], inputs: Iterable[str | Path | None]) -> None:
    """Refuse to write any of ``targets`` that is one of ``inputs``: the same file by any path to
    it (a symbolic or hard link, ``..``). One pass over each list, so predict checks every output
    of thousands of inputs at once.

    Raises:
        OutputError: naming the target and the input it would replace.
    """
    sources = {
        identity: Path(path)
        for path in inputs
        if path is not None and (identity := _file_identity(Path(path))) is not None
    }
    for target in map(Path, targets):
        identity = _file_identity(target)
        clash = sources.get(identity) if identity is not None else None
        if clash is not None:
            raise OutputError(target, f"is the input {clash}: writing it would destroy it; choose another output path")


def refuse_shared_targets(targets: Mapping[str, str | Path | None]) -> None:
    """Refuse two outputs of one command at one path (``export --out X --pack X``), by option name:
    the second would replace the first.

    Raises:
        OutputError: naming the path and both options.
    """
    seen: dict[Path, str] = {}
    for option, path in targets.items():
        if path is None:
            continue
        key = Path(path).resolve()
        if key in seen:
            raise OutputError(
                path,
                f"is named by both {seen[key]} and {option}: the second would replace the first; give each its own path",
            )
        seen[key] = option


def refuse_package_folder(folder: str | Path) -> None:
    """Refuse an output folder in segnet's built-in model folder (the installed package: a run's
    outputs, such as a built-in model's report, belong where the user said, not beside the weights).

    Raises:
        OutputError: naming the folder.
    """
    if Path(folder).resolve().is_relative_to(runfiles.WEIGHTS_DIR.resolve()):
        raise OutputError(
            folder,
            f"lies in segnet's built-in model folder {runfiles.WEIGHTS_DIR}; name an output folder of your own (--out)",
        )


@contextmanager
def atomic_write(path: str | Path, what: str = "file") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block ends it replaces ``path`` atomically.

    The temporary file is flushed to disk and renamed over ``path`` (a rename within one file system
    is atomic), so readers and crashes see the old file or the new one; a link at ``path`` is
    replaced, not followed. On any failure the temporary file is removed and ``path`` is left as it
    was; an ``OSError`` becomes an :class:`~segnet.core.errors.OutputError` naming ``path`` and ``what`` it holds.
    """
    path = Path(path)
    # Named here rather than by tempfile.mkstemp, which creates files readable by their owner only.
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    try:
        yield temporary
        with temporary.open("r+b") as written:  # r+: Windows flushes only handles open for writing
            os.fsync(written.fileno())
        os.replace(temporary, path)
    except OSError as error:
        kept = f"; the previous {what} is kept" if path.exists() else ""
        raise OutputError(path, _write_problem(error, what) + kept) from error
    finally:
        temporary.unlink(missing_ok=True)


def write_atomically(path: str | Path, write: Callable[[Path], object], what: str = "file") -> Path:
    """Call ``write`` on a temporary path and put the result at ``path`` as :func:`atomic_write` does; returns ``path``."""
    with atomic_write(path, what) as temporary:
        write(temporary)
    return Path(path)


def write_text_atomically(path: str | Path, text: str, what: str = "file") -> None:
    """Replace ``path`` with ``text`` (UTF-8); readers and crashes see the old file or the new one."""
    write_atomically(path, lambda temporary: temporary.write_text(text, encoding="utf-8"), what)


def open_replacing(path: str | Path) -> IO[str]:
    """Open a new text file at ``path`` for a table written row by row: whatever was there (a file,
    a link to another file, a hard link) is unlinked first, so nothing is written through it."""
    path = Path(path)
    try:
        path.unlink(missing_ok=True)
        return path.open("x", newline="", encoding="utf-8")
    except OSError as error:
        raise OutputError(path, f"could not write ({error.strerror or error})") from error


def clear_earlier_results(folder: str | Path, earlier: Sequence[Path], *, overwrite: bool) -> None:
    """Refuse a ``folder`` holding ``earlier`` results of another run unless ``overwrite``; with it,
    remove them (those files only), so that the folder's tables describe the files beside them.

    Raises:
        OutputError: ``earlier`` is not empty and ``overwrite`` is off, or a file cannot be removed.
    """
    if not earlier:
        return
    if not overwrite:
        names = ", ".join(path.name for path in earlier[:_LISTED]) + (
            f" and {len(earlier) - _LISTED} more" if len(earlier) > _LISTED else ""
        )
        raise OutputError(
            folder,
            f"holds another run's results ({names}): pass --overwrite to replace them, --skip-existing to continue that run, or choose another output folder",
        )
    for path in earlier:
        try:
            path.unlink(missing_ok=True)
        except OSError as error:
            raise OutputError(path, f"cannot remove this earlier result ({error.strerror or error})") from error


@contextmanager
def output_lock(folder: str | Path) -> Iterator[None]:
    """Hold a lock on ``folder`` while the block runs (the folder is created): a second run into the
    same folder is refused. The lock is the operating system's, so a killed run leaves none; it is
    taken on the folder itself, so it leaves no file either (on Windows, on ``.segnet.lock`` in it)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        descriptor = _open_for_locking(folder)
    except OSError as error:
        raise OutputError(folder, f"cannot write into this output folder ({error.strerror or error})") from error
    try:
        if not _try_lock(descriptor):
            raise OutputError(
                folder,
                "another segnet run is writing into this folder; wait for it to finish or choose another output folder",
            )
        yield
    finally:
        os.close(descriptor)  # closing releases the lock


def _open_for_locking(folder: Path) -> int:
    if _fcntl is not None:
        return os.open(folder, os.O_RDONLY)
    return os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)


def _try_lock(descriptor: int) -> bool:
    """Take an exclusive lock on an open file or folder without waiting; whether it was free."""
    if _fcntl is None:
        import msvcrt

        try:
            msvcrt.locking(descriptor, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    try:
        _fcntl.flock(descriptor, _fcntl.LOCK_EX | _fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete temporary files that a killed process left behind in ``folder``; returns them.

    Only one process writes a run folder, so when it starts, no write of its files is in progress.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = [path for path in folder.iterdir() if TEMPORARY_NAME.match(path.name) and path.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def safe_stem(name: str) -> str:
    """A file stem from a name the user typed (a layer's name): each run of other characters than
    letters, digits, ``-``, ``_``, ``.`` and spaces (folder separators), and each ``..``, becomes
    ``_``; no leading or trailing ``_``, ``.`` or space.

    Raises:
        OutputError: nothing usable is left of ``name``.
    """
    stem = _UNSAFE_IN_STEM.sub("_", name).strip("_ .")
    if not stem:
        raise OutputError(
            repr(name), "is no usable file name: rename it with letters or digits"
        )  # repr: one line, whatever it holds
    return stem
