"""Reading back the files segnet wrote (run files, evaluations, configs): each goes through one of
these readers, which refuse with one line naming the file: more than :data:`MAX_READ_BYTES` (or a
device such as ``/dev/zero`` that never ends), not UTF-8, not JSON or CSV, JSON nested deeper than
Python can parse, or without the keys and columns segnet writes. An edited or damaged file is such
an error, never a traceback, a hang or a silent wrong result.
"""

from __future__ import annotations

import csv
import functools
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import TypeAdapter, ValidationError

from segnet.core.errors import DataError

T = TypeVar("T")

MAX_READ_BYTES = 64 * 2**20
"""The largest file segnet reads back: a run's per-image table of 100,000 images is a few MB."""


def read_bounded_text(path: str | Path, what: str) -> str:
    """The UTF-8 text of ``path``, a ``what`` (named in errors), read up to :data:`MAX_READ_BYTES`.

    Raises:
        DataError: the file cannot be read, is larger, or is not UTF-8 text.
    """
    path = Path(path)
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_READ_BYTES + 1)
    except OSError as error:
        raise DataError(path, f"cannot read the {what} ({error.strerror or error})") from error
    if len(data) > MAX_READ_BYTES:
        raise DataError(path, f"larger than {MAX_READ_BYTES // 2**20} MB: not a {what} segnet wrote")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DataError(path, f"not UTF-8 text (byte {error.start}): a damaged {what}") from error


def read_json(path: str | Path, what: str, shape: Any = Any) -> Any:
    """The JSON content of ``path``, a ``what``, as written, once checked against ``shape`` (a type
    pydantic checks strictly: a TypedDict of the keys read, ``dict[str, Any]``, ...; other keys are
    kept); :func:`read_bounded_text` reads it.

    Raises:
        DataError: unreadable (as :func:`read_bounded_text`), not JSON, or not of ``shape`` (naming
            the first key that is wrong).
    """
    path = Path(path)
    content = _parse_json(path, read_bounded_text(path, what), what)
    try:
        TypeAdapter(shape).validate_python(content, strict=True)
    except ValidationError as error:
        raise _shape_error(path, what, error) from None
    return content


def read_json_as(path: str | Path, what: str, shape: type[T]) -> T:
    """The JSON content of ``path``, a ``what``, as an object of ``shape``: a dataclass whose fields
    pydantic checks strictly, nested dataclasses included (JSON arrays fill tuples; keys that are no
    field are dropped), and whose ``__post_init__`` may refuse what the types cannot say with a
    ``ValueError``. Read as :func:`read_json` reads.

    Raises:
        DataError: unreadable, not JSON, or not of ``shape`` (naming the first key that is wrong).
    """
    path = Path(path)
    text = read_bounded_text(path, what)
    _parse_json(path, text, what)  # its errors say where the JSON is broken
    try:
        return _adapter(shape).validate_json(text, strict=True)
    except ValidationError as error:
        raise _shape_error(path, what, error) from None


@functools.cache
def _adapter(shape: type) -> TypeAdapter:
    """The validator of ``shape``, built once (a dataclass's takes milliseconds to build)."""
    return TypeAdapter(shape)


def _parse_json(path: Path, text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise DataError(
            path, f"not valid JSON ({error.msg} at line {error.lineno}, column {error.colno}): a damaged {what}"
        ) from error
    except RecursionError as error:
        raise DataError(path, f"not a {what}: JSON nested too deeply") from error


def _shape_error(path: Path, what: str, error: ValidationError) -> DataError:
    """The first problem pydantic found, in one line: where (the keys down to it) and what."""
    first = error.errors()[0]
    where = ".".join(map(str, first["loc"])) or "the top level"
    cause = first.get("ctx", {}).get("error")
    message = (str(cause) if first["type"] == "value_error" and cause is not None else "") or first["msg"]
    return DataError(path, f"not a {what}: at {where}, {message[0].lower()}{message[1:]}")


def read_csv(path: str | Path, what: str, columns: Sequence[str]) -> list[dict[str, str]]:
    """The rows of the CSV table ``path``, a ``what``, as dicts; its header must hold ``columns``
    and every row as many cells as the header.

    Raises:
        DataError: unreadable (as :func:`read_bounded_text`), not CSV, a column missing, or a row
            of another length (naming its line).
    """
    path = Path(path)
    reader = csv.DictReader(io.StringIO(read_bounded_text(path, what), newline=""))
    try:
        rows = list(reader)
    except csv.Error as error:
        raise DataError(path, f"not a CSV table ({error}): a damaged {what}") from error
    missing = [column for column in columns if column not in (reader.fieldnames or ())]
    if missing:
        raise DataError(path, f"not a {what}: no column {', '.join(missing)}")
    for line, row in enumerate(rows, start=2):
        if None in row or None in row.values():
            raise DataError(
                path, f"line {line} does not have the header's {len(reader.fieldnames or ())} cells: a damaged {what}"
            )
    return rows
