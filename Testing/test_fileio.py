"""IronMapping.fileio: atomic writes (never half a file, no temporary left behind, the cause of a
failure named) and JSON-safe values, on real files."""

from __future__ import annotations

import errno
import json
import math
from enum import IntEnum
from pathlib import Path

import numpy as np
import pytest

from IronMapping import fileio
from IronMapping.errors import InputError, OutputError


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if "tmp" in p.name)


def test_json_safe_converts_numpy_nan_paths_and_nesting():
    class Code(IntEnum):
        FITTED = 1

    value = {1: np.float32(2.5), "n": np.int64(3), "ok": np.bool_(True), "nan": float("nan"),
             "inf": np.float64(-np.inf), "array": np.array([[1.0, np.nan]]), "tuple": (1, (2,)),
             "path": Path("a") / "b.nrrd", "code": Code.FITTED, "none": None, "text": "R2*",
             "set": {4}}
    out = fileio.json_safe(value)
    assert out == {"1": 2.5, "n": 3, "ok": True, "nan": None, "inf": None,
                   "array": [[1.0, None]], "tuple": [1, [2]], "path": str(Path("a") / "b.nrrd"),
                   "code": 1, "none": None, "text": "R2*", "set": [4]}
    assert type(out["n"]) is int and type(out["ok"]) is bool and type(out["1"]) is float
    json.dumps(out, allow_nan=False)  # strict JSON


def test_json_safe_cuts_long_lists_when_asked():
    assert fileio.json_safe(list(range(5)), max_list=2) == [0, 1, "... 3 more"]
    assert fileio.json_safe(np.arange(3), max_list=5) == [0, 1, 2]


def test_write_json_is_strict_and_ends_with_a_newline(tmp_path):
    path = fileio.write_json(tmp_path / "summary.json", {"sd": np.float32("nan"), "r2": 45.25})
    text = path.read_text(encoding="utf-8")
    assert text.endswith("}\n") and "NaN" not in text
    assert json.loads(text) == {"sd": None, "r2": 45.25}
    assert leftovers(tmp_path) == []


def test_write_csv_keeps_line_endings_and_leaves_none_empty(tmp_path):
    rows = [{"Region": "liver", "R2* median (1/s)": 45.2, "Notes": None}, {"Region": "spleen"}]
    path = fileio.write_csv(tmp_path / "regions.csv", ["Region", "R2* median (1/s)", "Notes"], rows)
    assert path.read_bytes() == b"Region,R2* median (1/s),Notes\nliver,45.2,\nspleen,,\n"
    crlf = fileio.write_csv(tmp_path / "status.csv", ["a"], [{"a": 1}], lineterminator="\r\n")
    assert crlf.read_bytes() == b"a\r\n1\r\n"


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = fileio.write_text(tmp_path / "report.html", "old report")

    def half_then_fail(tmp: Path):
        tmp.write_text("half a new rep", encoding="utf-8")
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp))

    with pytest.raises(OutputError, match="no space left") as caught:
        fileio.replace_atomically(target, half_then_fail)
    assert caught.value.errno == errno.ENOSPC and str(tmp_path) in str(caught.value)
    assert target.read_text(encoding="utf-8") == "old report"
    assert leftovers(tmp_path) == []


def test_an_interrupted_write_leaves_no_temporary(tmp_path):
    def interrupted(tmp: Path):
        tmp.write_bytes(b"\0" * 10)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fileio.replace_atomically(tmp_path / "r2star.nrrd", interrupted, keep_extension=True)
    assert list(tmp_path.iterdir()) == []


def test_keep_extension_shows_the_real_ending_to_the_writer(tmp_path):
    seen = []
    fileio.replace_atomically(tmp_path / "r2star.nii.gz", lambda tmp: (seen.append(tmp.name),
                                                                        tmp.write_bytes(b"x")),
                              keep_extension=True)
    assert seen[0].endswith(".r2star.nii.gz") and seen[0] != "r2star.nii.gz"
    assert (tmp_path / "r2star.nii.gz").read_bytes() == b"x" and leftovers(tmp_path) == []


def test_a_missing_folder_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        fileio.write_text(tmp_path / "nowhere" / "regions.csv", "x")


@pytest.mark.parametrize("code, words", [(errno.EACCES, "permission denied"),
                                         (errno.EROFS, "read-only"),
                                         (errno.EIO, "Input/output error")])
def test_output_failure_names_the_cause_and_folder(tmp_path, code, words):
    error = fileio.output_failure(OSError(code, errno.errorcode[code] if code != errno.EIO
                                          else "Input/output error"), tmp_path / "run.json")
    assert isinstance(error, OutputError) and error.errno == code
    assert words in str(error) and str(tmp_path) in str(error)


def test_every_writer_of_the_library_goes_through_fileio():
    """No module writes a file by itself with a temporary + os.replace of its own."""
    root = Path(fileio.__file__).parent
    own = []
    for path in sorted(root.rglob("*.py")):
        if path.name == "fileio.py":
            continue
        text = path.read_text(encoding="utf-8")
        if "os.replace(" in text or '".tmp"' in text:
            own.append(path.relative_to(root).as_posix())
    assert own == []


def test_json_text_round_trips_floats_exactly():
    values = [0.1, 1e-300, 12345.678901234567, -0.0]
    assert json.loads(fileio.json_text(values)) == values
    assert math.copysign(1.0, json.loads(fileio.json_text(values))[3]) == -1.0
