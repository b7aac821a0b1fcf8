"""Packaging: CMakeLists.txt lists what is on disk; the catalog entry follows Slicer's schema.

A file missing from MODULE_PYTHON_SCRIPTS / MODULE_PYTHON_RESOURCES is not installed with the
extension, and Slicer then fails at import time on the user's computer, not in CI.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]
CMAKE = ROOT / "CMakeLists.txt"
CATALOG = ROOT / "IronMapping.json"


def cmake_text() -> str:
    return CMAKE.read_text(encoding="utf-8")


def cmake_list(name: str) -> list[str]:
    """Entries of ``set(<name> ...)`` in the top-level CMakeLists.txt (comments removed)."""
    text = re.sub(r"#[^\n]*", "", cmake_text())
    match = re.search(r"set\(\s*" + re.escape(name) + r"\s+(.*?)\)", text, re.S)
    assert match, f"set({name} ...) not found in CMakeLists.txt"
    return [e.replace("${MODULE_NAME}", "IronMapping") for e in match.group(1).split()]


def cmake_value(name: str) -> str:
    match = re.search(r"set\(\s*" + re.escape(name) + r'\s+"([^"]*)"\s*\)', cmake_text())
    assert match, f"{name} is not set in CMakeLists.txt"
    return match.group(1)


def on_disk(folder: str, pattern: str) -> set[str]:
    return {p.relative_to(ROOT).as_posix() for p in (ROOT / folder).rglob(pattern)
            if p.is_file() and "__pycache__" not in p.parts}


def test_every_python_file_of_the_library_is_listed():
    listed = cmake_list("MODULE_PYTHON_SCRIPTS")
    assert listed[0] == "IronMapping.py"
    assert len(listed) == len(set(listed)), "duplicate entries"
    expected = on_disk("IronMapping", "*.py") | {"IronMapping.py"}
    assert not sorted(expected - set(listed)), f"not in CMakeLists.txt: {sorted(expected - set(listed))}"
    assert not sorted(set(listed) - expected), f"listed but missing on disk: {sorted(set(listed) - expected)}"


def test_every_resource_is_listed():
    listed = set(cmake_list("MODULE_PYTHON_RESOURCES"))
    expected = on_disk("Resources", "*")
    assert {"Resources/Icons/IronMapping.png", "Resources/UI/IronMapping.ui"} <= expected
    assert listed == expected, (sorted(expected - listed), sorted(listed - expected))


def test_module_build_and_self_test_registration():
    text = cmake_text()
    assert re.search(r"project\(\s*IronMapping\s*\)", text)
    assert re.search(r"set\(\s*MODULE_NAME\s+IronMapping\s*\)", text)
    assert re.search(r"slicerMacroBuildScriptedModule\(\s*NAME \$\{MODULE_NAME\}\s+SCRIPTS \$\{MODULE_PYTHON_SCRIPTS\}"
                     r"\s+RESOURCES \$\{MODULE_PYTHON_RESOURCES\}", text)
    assert "add_subdirectory(Testing/Python)" in text
    testing = (ROOT / "Testing" / "Python" / "CMakeLists.txt").read_text(encoding="utf-8")
    assert re.search(r"^slicer_add_python_unittest\(SCRIPT \$\{MODULE_NAME\}\.py\)", testing, re.M)
    assert "class IronMappingTest(ScriptedLoadableModuleTest)" in (ROOT / "IronMapping.py").read_text(encoding="utf-8")


def cmake_value_or_none(name: str):
    """The value of ``set(<name> "...")`` outside comments, None when not set."""
    text = re.sub(r"#[^\n]*", "", cmake_text())
    match = re.search(r"set\(\s*" + re.escape(name) + r'\s+"([^"]*)"\s*\)', text)
    return match.group(1) if match else None


def repository_file_of(url: str):
    """The repository path a raw.githubusercontent.com URL of this project's main branch names."""
    parts = urlsplit(url).path.strip("/").split("/")
    homepage = urlsplit(cmake_value("EXTENSION_HOMEPAGE")).path.strip("/").split("/")
    assert urlsplit(url).netloc == "raw.githubusercontent.com" and parts[:2] == homepage[:2], url
    assert parts[2] == "main", url
    return ROOT.joinpath(*parts[3:])


def test_extension_metadata():
    for name in ("EXTENSION_HOMEPAGE", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION", "EXTENSION_ICONURL"):
        assert cmake_value(name).strip(), name
    assert cmake_value("EXTENSION_DEPENDS") == "NA"
    assert "EXTENSION_CATEGORY" not in cmake_text()  # the category lives in the catalog entry now
    icon = cmake_value("EXTENSION_ICONURL")
    assert icon.endswith("Resources/Icons/IronMapping.png") and repository_file_of(icon).is_file()
    assert urlsplit(cmake_value("EXTENSION_HOMEPAGE")).scheme == "https"
    # screenshots: none until one taken in Slicer exists, and never a URL of a missing file
    for url in (cmake_value_or_none("EXTENSION_SCREENSHOTURLS") or "").split():
        assert urlsplit(url).scheme == "https" and repository_file_of(url).is_file(), url
    # "Name (Organization)", comma-separated (Slicer's extension and module conventions)
    for contributor in cmake_value("EXTENSION_CONTRIBUTORS").split(","):
        assert re.fullmatch(r"[^()]+ \([^()]+\)", contributor.strip()), contributor
    assert "research use" in cmake_value("EXTENSION_DESCRIPTION").lower()


def test_license_file_at_the_root_matches_pyproject():
    """The Extensions Index (scripts/check_description_files.py) needs a LICENSE at the root."""
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("BSD 3-Clause License")
    assert "Neither the name of the copyright holder nor the names of its" in text
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert re.search(r'^license = "BSD-3-Clause"$', pyproject, re.M)
    assert re.search(r'^license-files = \["LICENSE"\]$', pyproject, re.M)


def test_source_cites_no_unshipped_notes():
    """Sources cite published work, not notes that are not part of the project."""
    shipped = [ROOT / "IronMapping.py", ROOT / "CMakeLists.txt"] + sorted((ROOT / "IronMapping").rglob("*.py"))
    shipped += sorted(p for p in (ROOT / "Testing").rglob("*.py"))
    for path in shipped:
        text = path.read_text(encoding="utf-8")
        for note in (stem + ".md" for stem in ("DESIGN", "SCIENCE")):
            assert note not in text, f"{path.relative_to(ROOT)} cites {note}, which the project does not ship"


# slicer-extension-catalog-entry-schema-v1.0.1 (Slicer/Schemas): required keys, no others.
SCHEMA_REQUIRED = {"$schema", "category", "scm_url"}
SCHEMA_PROPERTIES = {"$schema": str, "category": str, "scm_url": str, "scm_revision": str, "scm_type": str,
                     "build_dependencies": list, "build_subdirectory": str, "enabled": bool, "tier": int}


def test_catalog_entry_follows_the_schema():
    raw = CATALOG.read_bytes()
    assert b"\r" not in raw, "the ExtensionsIndex requires LF line endings"
    entry = json.loads(raw)
    assert entry["$schema"] == ("https://raw.githubusercontent.com/Slicer/Slicer/main/Schemas/"
                                "slicer-extension-catalog-entry-schema-v1.0.1.json#")
    assert SCHEMA_REQUIRED <= set(entry)
    assert set(entry) <= set(SCHEMA_PROPERTIES), set(entry) - set(SCHEMA_PROPERTIES)
    for key, value in entry.items():
        assert isinstance(value, SCHEMA_PROPERTIES[key]), key
    assert entry.get("scm_type", "git") in ("git", "local")
    assert 1 <= entry.get("tier", 1) <= 5
    assert all(isinstance(d, str) for d in entry.get("build_dependencies", []))
    assert entry["category"] == "Quantification"
    # consistent with CMakeLists.txt (no dependencies) and the index's naming rules
    assert entry.get("build_dependencies", []) == []
    repo = Path(urlsplit(entry["scm_url"]).path).stem
    assert repo.startswith("Slicer") and not CATALOG.stem.lower().startswith("slicer")
    assert urlsplit(entry["scm_url"]).scheme in ("https", "git")


@pytest.mark.parametrize("path", ["Resources/Icons/IronMapping.png"])
def test_icon_is_a_128_pixel_png(path):
    data = (ROOT / path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (128, 128)
