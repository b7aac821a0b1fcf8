"""Writing output files: atomically, with a clear error, and JSON that any reader accepts.

Every text, JSON, CSV or binary output of IronMapping is written through this module:

- into a temporary file in the target's folder, then moved over the target with
  ``os.replace`` (atomic on one file system), so a reader never sees half a file and an
  interrupted or failed write leaves the previous file, or none, and no temporary file;
- a failed write raises :class:`~IronMapping.errors.OutputError` naming the cause (no space
  left, read-only file system, permission denied) and the folder (:func:`output_failure`); a
  folder that does not exist raises :class:`~IronMapping.errors.InputError`.

:func:`json_safe` makes values ``json.dumps(..., allow_nan=False)`` accepts: numpy scalars and
arrays become Python numbers and lists, NaN and infinity become None (``null``), paths and
other objects become text.

    >>> import numpy as np
    >>> from IronMapping.fileio import json_safe
    >>> json_safe({"r2star": np.float32(45.5), "sd": float("nan")})
    {'r2star': 45.5, 'sd': None}
"""

from __future__ import annotations

import csv
import errno
import io
import json
import math
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from .errors import InputError, OutputError

# --------------------------------------------------------------------------- JSON-safe values


def json_safe(value: Any, max_list: int | None = None) -> Any:
    """A copy of ``value`` that ``json.dumps(..., allow_nan=False)`` accepts.

    Parameters
    ----------
    value : any
        Dicts (keys become text), lists, tuples, sets and arrays of any shape are copied item
        by item; numpy scalars become Python numbers; NaN and +-infinity become None; None,
        text, bools and ints pass; anything else (paths, ...) becomes its text.
    max_list : int, optional
        Longer sequences keep their first ``max_list`` items plus a "... N more" entry.

    Returns
    -------
    The JSON-safe copy (dict, list, str, int, float, bool or None).
    """
    if isinstance(value, Mapping):
        return {str(k): json_safe(v, max_list) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (list, tuple, set, frozenset)):
        items = list(value)
        kept = items if max_list is None else items[:max_list]
        out = [json_safe(v, max_list) for v in kept]
        if len(items) > len(kept):
            out.append(f"... {len(items) - len(kept)} more")
        return out
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        number = float(value)
        return number if math.isfinite(number) else None
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, np.generic):
        return json_safe(value.item(), max_list)
    return str(value)


def json_default(value):
    """``default=`` for ``json.dumps``: numpy scalars and arrays as Python values, else text.

    Parameters
    ----------
    value : any
        An object ``json`` cannot encode itself.

    Returns
    -------
    int, float, bool, list or str
    """
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def json_text(value: Any, indent: int | None = 2) -> str:
    """``value`` as strict JSON (see :func:`json_safe`), ending in a newline when indented.

    Parameters
    ----------
    value : any
    indent : int or None
        Indent of ``json.dumps``; None for one line without the newline.

    Returns
    -------
    str
    """
    text = json.dumps(json_safe(value), indent=indent, allow_nan=False)
    return text + "\n" if indent is not None else text


# --------------------------------------------------------------------------- atomic writes


def replace_atomically(path, produce: Callable[[Path], Any], keep_extension: bool = False
                       ) -> Path:
    """Call ``produce(temporary_path)`` to write the file, then move it onto ``path``.

    Parameters
    ----------
    path : str or Path
        The file to (re)place; its folder must exist (else InputError).
    produce : callable
        ``produce(tmp)`` writes the whole file at ``tmp`` (same folder as ``path``).
    keep_extension : bool
        Name the temporary file ``.<pid>.tmp.<name>`` so that writers choosing the format by
        the file ending (ITK, matplotlib) see the real one; otherwise ``<name>.<pid>.tmp``.

    Returns
    -------
    Path
        ``path``. On any failure the temporary file is removed and ``path`` is left as it was;
        an OSError becomes the :class:`OutputError` of :func:`output_failure`.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise InputError(f"Cannot write {str(path)!r}: the folder {str(path.parent)!r} does not "
                         "exist.")
    pid = os.getpid()
    name = f".{pid}.tmp.{path.name}" if keep_extension else f"{path.name}.{pid}.tmp"
    tmp = path.with_name(name)
    try:
        produce(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            tmp.unlink()
        except OSError:
            pass
        if isinstance(exc, OSError) and not isinstance(exc, OutputError):
            raise output_failure(exc, path) from None
        raise
    return path


def write_text(path, text: str) -> Path:
    """Write text as UTF-8 (line endings as given) atomically.

    Parameters
    ----------
    path : str or Path
        Target file; its folder must exist.
    text : str

    Returns
    -------
    Path

    Raises
    ------
    InputError
        When the folder does not exist.
    OutputError
        When the write fails (see :func:`output_failure`).
    """
    if sys.version_info >= (3, 10):
        return replace_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8",
                                                                   newline=""))
    return replace_atomically(path, lambda tmp: tmp.write_bytes(text.encode("utf-8")))


def write_bytes(path, data: bytes) -> Path:
    """Write bytes atomically.

    Parameters
    ----------
    path : str or Path
        Target file; its folder must exist.
    data : bytes

    Returns
    -------
    Path

    Raises
    ------
    InputError, OutputError
        As :func:`write_text`.
    """
    return replace_atomically(path, lambda tmp: tmp.write_bytes(bytes(data)))


def write_json(path, payload: Any, indent: int = 2) -> Path:
    """Write a value as strict JSON (:func:`json_text`) atomically.

    Parameters
    ----------
    path : str or Path
        Target file; its folder must exist.
    payload : any
    indent : int

    Returns
    -------
    Path

    Raises
    ------
    InputError, OutputError
        As :func:`write_text`.
    """
    return write_text(path, json_text(payload, indent))


def csv_text(columns: Sequence[str], rows: Iterable[Mapping[str, Any]],
             lineterminator: str = "\n") -> str:
    """CSV with a header row of ``columns``; None and missing cells are empty.

    Parameters
    ----------
    columns : sequence of str
        Header row, in order.
    rows : iterable of mapping
        Dicts keyed by column.
    lineterminator : str

    Returns
    -------
    str
    """
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), restval="",
                            lineterminator=lineterminator)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return buffer.getvalue()


def write_csv(path, columns: Sequence[str], rows: Iterable[Mapping[str, Any]],
              lineterminator: str = "\n") -> Path:
    r"""Write rows as UTF-8 CSV atomically.

    Parameters
    ----------
    path : str or Path
        Target file; its folder must exist.
    columns : sequence of str
        Header row, in order.
    rows : iterable of mapping
        Dicts keyed by column; missing keys and None are empty cells.
    lineterminator : str
        "\n" (regions.csv, focal_findings.csv) or "\r\n" (batch tables).

    Returns
    -------
    Path

    Raises
    ------
    InputError, OutputError
        As :func:`write_text`.
    """
    return write_text(path, csv_text(columns, rows, lineterminator))


# --------------------------------------------------------------------------- failures

_NO_SPACE = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
_NO_PERMISSION = {errno.EACCES, errno.EPERM}


def first_line(exc: BaseException) -> str:
    """The last non-empty line of an exception's text (ITK puts the reason there).

    Parameters
    ----------
    exc : BaseException

    Returns
    -------
    str
        The line, or the exception's class name when its text is empty.
    """
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[-1] if lines else type(exc).__name__


def _folder_of(path) -> Path:
    p = Path(path)
    return p if p.is_dir() else p.parent


def _bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000.0
    return f"{n:.1f} GB"


def output_failure(exc: BaseException, path, needed_bytes: int | None = None) -> OutputError:
    """An :class:`OutputError` naming the real cause of a failed write and the folder.

    Parameters
    ----------
    exc : BaseException
        The OSError of a Python write, or the RuntimeError of an ITK writer (which carries no
        errno: the folder is then examined for the usual causes).
    path : str or Path
        The file that could not be written.
    needed_bytes : int, optional
        Size of the write, to judge whether the disk is full.

    Returns
    -------
    OutputError
        To be raised by the caller.
    """
    path = Path(path)
    folder = _folder_of(path)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    code = getattr(exc, "errno", None)
    if code is None:
        code = _diagnose(folder, needed_bytes)
    where = f"the output folder {str(_folder_of(path))!r}"
    if code in _NO_SPACE:
        try:
            free = f" ({_bytes(shutil.disk_usage(folder).free)} free)"
        except OSError:
            free = ""
        text = (f"Cannot write {path.name} in {where}: no space left on the device{free}. Free "
                "some space or choose another --out folder on a disk with room.")
    elif code == errno.EROFS:
        text = (f"Cannot write in {where}: it is on a read-only file system. Choose a writable "
                "--out folder.")
    elif code in _NO_PERMISSION:
        text = (f"Cannot write in {where}: permission denied. Choose a folder you may write in "
                "(--out), or ask for write permission.")
    elif code == errno.ENOENT:
        text = f"Cannot write {path.name}: {where} does not exist and could not be created."
    else:
        reason = getattr(exc, "strerror", None) or first_line(exc)
        text = (f"Cannot write {path.name} in {where} ({reason}). Check that the folder is "
                "writable and the disk has room.")
    error = OutputError(text)
    error.errno = code
    return error


def _diagnose(folder: Path, needed_bytes: int | None) -> int | None:
    """Best guess of the errno behind a write that failed without one (ITK writers)."""
    if not folder.exists():
        return errno.ENOENT
    try:
        if os.statvfs(folder).f_flag & getattr(os, "ST_RDONLY", 1):
            return errno.EROFS
    except (OSError, AttributeError):
        pass
    if not os.access(folder, os.W_OK):
        return errno.EACCES
    try:
        if shutil.disk_usage(folder).free < max(int(needed_bytes or 0), 1 << 16):
            return errno.ENOSPC
    except OSError:
        pass
    probe = folder / ".ironmapping-write-test"
    try:
        with open(probe, "wb") as fh:
            fh.write(b"\0" * min(max(int(needed_bytes or 0), 1 << 16), 1 << 24))
    except OSError as exc:
        return exc.errno
    finally:
        try:
            probe.unlink()
        except OSError:
            pass
    return None
