"""IronMapping.py loaded the way Slicer 5.8 and 5.10 load a scripted module still reaches the
library, and Reload picks up edits to the library.

Slicer 5.10 (Base/QTCore/qSlicerScriptedUtils.cxx, loadSourceAsModule, at v5.10.0) runs::

    spec = importlib.util.spec_from_file_location("IronMapping", ".../IronMapping.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["IronMapping"] = module
    spec.loader.exec_module(module)

Slicer 5.8 (same file at v5.8.1, and Base/QTGUI/qSlicerScriptedLoadableModule.cxx,
setPythonSource) first calls ``PyImport_AddModule("IronMapping")``, which puts an empty module
object into sys.modules, then runs ``imp.load_source("IronMapping", path)``, which executes the
file into that existing object. Both hide the package folder IronMapping/, so the module must
make itself package-like for ``from IronMapping.logic import IronMappingLogic`` to work.

Reload (Base/Python/slicer/util.py, reloadScriptedModule): 5.10 loads the file again with the
importlib steps above into a new module object; 5.8 with ``imp.load_module`` into the existing
one. Neither forgets the library's submodules.
"""

from __future__ import annotations

import ctypes
import importlib.machinery
import importlib.util
import shutil
import sys
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULE_FILE = ROOT / "IronMapping.py"
SLICER_VERSIONS = ("5.8", "5.10")


def _py_import_add_module(name: str):
    """CPython's PyImport_AddModule, as Slicer 5.8 calls it (the module object in sys.modules,
    created empty when missing)."""
    add_module = ctypes.pythonapi.PyImport_AddModule
    add_module.restype = ctypes.py_object  # borrowed reference: ctypes takes its own
    add_module.argtypes = [ctypes.c_char_p]
    return add_module(name.encode())


def _imp_load_source(name: str, path: str):
    """``imp.load_source`` (Python 3.9-3.11, as in Slicer 5.8's Python 3.9); where ``imp`` is
    gone (3.12+), the same steps: a source loader's spec executed into the module already in
    sys.modules (importlib._bootstrap._exec), else loaded anew."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import imp
    except ImportError:
        imp = None
    if imp is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return imp.load_source(name, path)
    import importlib._bootstrap as bootstrap

    loader = importlib.machinery.SourceFileLoader(name, path)
    spec = importlib.util.spec_from_file_location(name, path, loader=loader)
    if name in sys.modules:
        return bootstrap._exec(spec, sys.modules[name])
    return bootstrap._load(spec)


def load_like_slicer(version: str, path: Path, name: str = "IronMapping"):
    """Load a scripted module file as Slicer ``version`` does at start-up (see the docstring)."""
    if version == "5.8":
        module = _py_import_add_module(name)
        if not hasattr(module, name):  # setPythonSource: class not there yet -> load the source
            _imp_load_source(name, str(path))
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, str(path))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def reload_like_slicer(version: str, path: Path, name: str = "IronMapping"):
    """The source-loading step of slicer.util.reloadScriptedModule in Slicer ``version``."""
    if version == "5.8":  # imp.load_module(name, fp, path, (".py", "r", PY_SOURCE)) -> load_source
        return _imp_load_source(name, str(path))
    spec = importlib.util.spec_from_file_location(name, str(path))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def clean_modules():
    """Take IronMapping* out of sys.modules for the test and put the originals back after it."""
    saved = {name: mod for name, mod in sys.modules.items()
             if name == "IronMapping" or name.startswith("IronMapping.")}
    for name in saved:
        del sys.modules[name]
    try:
        yield
    finally:
        for name in [n for n in sys.modules if n == "IronMapping" or n.startswith("IronMapping.")]:
            del sys.modules[name]
        sys.modules.update(saved)


@pytest.fixture(params=SLICER_VERSIONS)
def slicer_loaded_module(request, clean_modules):
    """IronMapping.py loaded exactly like Slicer 5.8 or 5.10 at start-up."""
    module = load_like_slicer(request.param, MODULE_FILE)
    module.loaded_like = request.param
    yield module


def test_module_is_registered_under_the_package_name(slicer_loaded_module):
    module = slicer_loaded_module
    assert sys.modules["IronMapping"] is module
    assert module.__file__ == str(MODULE_FILE)
    assert module.__path__ == [str(ROOT / "IronMapping")]


def test_library_imports_through_the_module(slicer_loaded_module):
    from IronMapping.logic import IronMappingLogic
    from IronMapping.relaxometry import fit
    from IronMapping.quantification import summarize
    from IronMapping import scene, sample_data, segment_statistics  # noqa: F401

    import IronMapping

    assert IronMapping is slicer_loaded_module
    assert IronMappingLogic.__module__ == "IronMapping.logic"
    assert sys.modules["IronMapping.logic"].__file__ == str(ROOT / "IronMapping" / "logic.py")
    assert callable(fit) and callable(summarize)
    # what the package __init__ defines is available on the module too
    assert isinstance(IronMapping.__version__, str) and IronMapping.__version__
    assert "research" in IronMapping.RESEARCH_USE_STATEMENT.lower()
    # relative imports inside the library resolve against the module
    assert sys.modules["IronMapping.relaxometry"].__package__ == "IronMapping"


def test_module_defines_the_slicer_classes(slicer_loaded_module):
    module = slicer_loaded_module
    for name in ("IronMapping", "IronMappingWidget", "IronMappingParameterNode", "IronMappingTest"):
        assert hasattr(module, name), name
    # the module's own docstring survives executing the package __init__
    assert "Slicer" in module.__doc__ and "name clash" not in (module.IronMappingLogic.__doc__ or "")
    assert module.IronMappingLogic.__module__ == "IronMapping.logic"
    assert module.parseEchoTimes("1.2, 2.4 3.6") == [1.2, 2.4, 3.6]
    assert module.parseEchoTimes("  ") is None
    from IronMapping.errors import EchoTimeError

    with pytest.raises(EchoTimeError):
        module.parseEchoTimes("1.2, two")


def test_help_text_names_methods_calibrations_and_research_use(slicer_loaded_module):
    text = slicer_loaded_module._help_text()
    from IronMapping.calibration import CALIBRATIONS
    from IronMapping.relaxometry import METHODS

    for method in METHODS:
        if method != "auto":
            assert f"<b>{method}</b>" in text, method
    for cal in CALIBRATIONS.values():
        assert cal.label in text and cal.equation in text
    assert slicer_loaded_module.RESEARCH_USE_STATEMENT in text


def test_5_8_loader_executes_into_the_module_object_it_created(clean_modules):
    """The 5.8 path really differs: the module object exists before the file runs."""
    created = _py_import_add_module("IronMapping")
    assert sys.modules["IronMapping"] is created and created.__spec__ is None
    module = load_like_slicer("5.8", MODULE_FILE)
    assert module is created
    assert module.__path__ == [str(ROOT / "IronMapping")] and module.__package__ == "IronMapping"
    from IronMapping.logic import IronMappingLogic

    assert IronMappingLogic is module.IronMappingLogic


def _project_copy(tmp_path: Path) -> Path:
    """IronMapping.py and the library in a scratch folder, to be edited by the test."""
    shutil.copy2(MODULE_FILE, tmp_path / "IronMapping.py")
    shutil.copytree(ROOT / "IronMapping", tmp_path / "IronMapping",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return tmp_path / "IronMapping.py"


@pytest.mark.parametrize("version", SLICER_VERSIONS)
@pytest.mark.parametrize("override", [True, False], ids=["onReload", "Slicer's reload alone"])
def test_reload_picks_up_edited_library_modules(version, override, tmp_path, clean_modules):
    path = _project_copy(tmp_path)
    module = load_like_slicer(version, path)
    old_logic = sys.modules["IronMapping.logic"]
    with open(tmp_path / "IronMapping" / "errors.py", "a", encoding="utf-8") as f:
        f.write("\nEDITED_AFTER_START = True\n")
    calls = []

    def slicer_reload(widget):  # ScriptedLoadableModuleWidget.onReload -> reloadScriptedModule
        calls.append(widget)
        reload_like_slicer(version, path)

    module.ScriptedLoadableModuleWidget.onReload = slicer_reload
    widget = object.__new__(module.IronMappingWidget)  # the panel itself needs the application
    if override:
        module.IronMappingWidget.onReload(widget)
    else:
        slicer_reload(widget)
    assert calls == [widget]
    reloaded = sys.modules["IronMapping"]
    assert (reloaded is module) == (version == "5.8")  # 5.8 reuses the module object
    edited = getattr(sys.modules["IronMapping.errors"], "EDITED_AFTER_START", False)
    fresh_logic = sys.modules["IronMapping.logic"] is not old_logic
    assert edited == override and fresh_logic == override
    if override:  # the reloaded module uses the new library, and relative imports resolve to it
        assert reloaded.IronMappingLogic.__module__ == "IronMapping.logic"
        assert reloaded.IronMappingLogic is sys.modules["IronMapping.logic"].IronMappingLogic
        assert sys.modules["IronMapping.logic"].__file__ == str(tmp_path / "IronMapping" / "logic.py")


def test_forget_library_modules_names_only_the_library(slicer_loaded_module):
    names = slicer_loaded_module.forgetLibraryModules()
    assert "IronMapping.logic" in names and "IronMapping" not in names
    assert not [n for n in sys.modules if n.startswith("IronMapping.")]
    assert sys.modules["IronMapping"] is slicer_loaded_module


def test_module_metadata_for_slicer(slicer_loaded_module):
    """Dependencies and contributors as the Slicer module class sets them (read from source:
    the class needs the application to be instantiated)."""
    import ast
    import re

    tree = ast.parse(MODULE_FILE.read_text(encoding="utf-8"))
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "IronMapping")
    assigned = {}
    for node in ast.walk(cls):
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Attribute):
            assigned[node.targets[0].attr] = node.value
    dependencies = ast.literal_eval(assigned["dependencies"])
    # the Slicer modules whose classes or nodes IronMapping uses
    assert set(dependencies) == {"Sequences", "Segmentations", "SegmentStatistics", "SampleData"}
    contributors = ast.literal_eval(assigned["contributors"])
    assert contributors and all(re.fullmatch(r"[^()]+ \([^()]+\)", c) for c in contributors), contributors


def test_plain_import_still_finds_the_package():
    """Outside Slicer, `import IronMapping` is the package folder (checked in a fresh process)."""
    import subprocess

    code = ("import IronMapping, os; print(os.path.basename(os.path.dirname(IronMapping.__file__)), "
            "os.path.basename(IronMapping.__file__))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["IronMapping", "__init__.py"]


def test_self_test_parts_without_qt_run_on_slicer_core(slicer_loaded_module):
    """The in-Slicer self-test's bad-input case runs here on a real scene (the click-path cases
    need the application; their non-Qt parts are in test_sample_data.py and
    test_segment_statistics_plugin.py)."""
    import unittest

    from mrml_fixtures import install_scene

    setup, restore = install_scene()
    try:
        test = slicer_loaded_module.IronMappingTest("test_IronMapping_bad_input_leaves_scene")
        test.delayDisplay = lambda message, *args, **kwargs: None
        outcome = unittest.TestResult()
        test.run(outcome)
    finally:
        restore()
    assert outcome.wasSuccessful(), outcome.errors + outcome.failures
    names = [n for n in dir(slicer_loaded_module.IronMappingTest) if n.startswith("test_IronMapping_")]
    assert set(names) == {"test_IronMapping_sample_data_click_path", "test_IronMapping_echo_volumes_click_path",
                          "test_IronMapping_cancel_through_progress_dialog", "test_IronMapping_bad_input_leaves_scene"}
