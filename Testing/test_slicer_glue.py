"""Only the Slicer glue touches Slicer: the library stays plain Python (numpy, scipy, SimpleITK,
pydicom, vtk) so that the command line, batch runs and tests need no Slicer.

Imports are read with ``ast`` (also those inside functions, and ``importlib.import_module`` /
``__import__`` with a literal name), and so are code references to MRML classes
(``vtkMRML...`` / ``vtkSlicer...`` names or attributes). Class names in strings are data
(``quantities.MAPS`` names the node class of each map) and are not counted.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: The modules that may use Slicer, Qt and MRML (paths relative to the repository root).
GLUE = (
    "IronMapping.py",           # the scripted module: widget, parameter node, self-test
    "IronMapping/scene/",       # MRML nodes in and out
    "IronMapping/logic.py",     # IronMappingLogic derives from ScriptedLoadableModuleLogic in Slicer
    "IronMapping/segment_statistics.py",  # the Segment Statistics plugin
    "IronMapping/sample_data.py",         # the Sample Data module's entries
)

#: Top-level modules that exist only in Slicer (or slicer-core).
SLICER_MODULES = {"slicer", "qt", "ctk", "ctkqt", "mrml", "MRMLCorePython", "vtkMRMLCorePython",
                  "vtkSlicerSegmentationsModuleMRMLPython", "SegmentStatistics",
                  "SegmentStatisticsPlugins", "SampleData", "SegmentEditorEffects",
                  "DICOMLib", "MultiVolumeImporter", "qSlicerBaseQTCorePython"}
MRML_PREFIXES = ("vtkMRML", "vtkSlicer", "qMRML", "qSlicer")


def slicer_uses(source: str, filename: str = "<source>") -> list[str]:
    """What in ``source`` needs Slicer: "line N: import slicer", "line N: vtkMRMLScalarVolumeNode"."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        modules, names = [], []
        if isinstance(node, ast.Import):
            modules = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules = [node.module]
            names = [a.name for a in node.names]
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and ((isinstance(node.func, ast.Name) and node.func.id == "__import__")
                   or (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module"))):
            modules = [node.args[0].value]
        elif isinstance(node, ast.Name):
            names = [node.id]
        elif isinstance(node, ast.Attribute):
            names = [node.attr]
        for module in modules:
            if module.split(".")[0] in SLICER_MODULES:
                found.append(f"line {node.lineno}: import {module}")
        for name in names:
            if name.startswith(MRML_PREFIXES):
                found.append(f"line {node.lineno}: {name}")
    return found


def library_files() -> list[Path]:
    return [ROOT / "IronMapping.py"] + sorted((ROOT / "IronMapping").rglob("*.py"))


def is_glue(path: Path) -> bool:
    relative = path.relative_to(ROOT).as_posix()
    return any(relative == g or (g.endswith("/") and relative.startswith(g)) for g in GLUE)


def test_only_the_glue_modules_use_slicer_qt_or_mrml():
    offenders = {}
    for path in library_files():
        if is_glue(path):
            continue
        uses = slicer_uses(path.read_text(encoding="utf-8"), str(path))
        if uses:
            offenders[path.relative_to(ROOT).as_posix()] = uses
    assert not offenders, ("Slicer, Qt or MRML used outside the glue modules (move the code into "
                           f"scene/ or another glue module, or list it in GLUE): {offenders}")


def test_every_glue_entry_exists_and_really_needs_slicer():
    """An entry no longer needing Slicer is taken off the list, so the list stays the truth."""
    for entry in GLUE:
        target = ROOT / entry
        files = sorted(target.rglob("*.py")) if entry.endswith("/") else [target]
        assert files and all(f.is_file() for f in files), entry
        uses = [u for f in files for u in slicer_uses(f.read_text(encoding="utf-8"), str(f))]
        assert uses, f"{entry} uses nothing of Slicer; remove it from GLUE"


@pytest.mark.parametrize("code, expected", [
    ("import slicer", ["line 1: import slicer"]),
    ("def f():\n    import qt\n", ["line 2: import qt"]),
    ("from slicer.util import arrayFromVolume", ["line 1: import slicer.util"]),
    ("from SegmentStatisticsPlugins import SegmentStatisticsPluginBase",
     ["line 1: import SegmentStatisticsPlugins"]),
    ("import importlib\nimportlib.import_module('slicer')", ["line 2: import slicer"]),
    ("node = scene.vtkMRMLScalarVolumeNode()", ["line 1: vtkMRMLScalarVolumeNode"]),
    ("from vtk import vtkMRMLScene", ["line 1: vtkMRMLScene"]),
    ("import vtk\nimport numpy\nkind = 'vtkMRMLScalarVolumeNode'", []),
])
def test_the_checker_finds_slicer_in_any_form(code, expected):
    assert slicer_uses(code) == expected
