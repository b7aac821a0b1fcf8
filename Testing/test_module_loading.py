"""IronMapping.py loaded the way Slicer loads a scripted module still reaches the library.

Slicer (Base/QTCore/qSlicerScriptedUtils.cxx, loadSourceAsModule) runs::

    spec = importlib.util.spec_from_file_location("IronMapping", ".../IronMapping.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["IronMapping"] = module
    spec.loader.exec_module(module)

which hides the package folder IronMapping/. The module must make itself package-like so that
``from IronMapping.logic import IronMappingLogic`` keeps working (DESIGN.md, "the name clash").
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULE_FILE = ROOT / "IronMapping.py"


@pytest.fixture
def slicer_loaded_module():
    """Load IronMapping.py exactly like Slicer; restore sys.modules afterwards."""
    saved = {name: mod for name, mod in sys.modules.items()
             if name == "IronMapping" or name.startswith("IronMapping.")}
    for name in saved:
        del sys.modules[name]
    try:
        spec = importlib.util.spec_from_file_location("IronMapping", str(MODULE_FILE))
        module = importlib.util.module_from_spec(spec)
        sys.modules["IronMapping"] = module
        spec.loader.exec_module(module)
        yield module
    finally:
        for name in [n for n in sys.modules if n == "IronMapping" or n.startswith("IronMapping.")]:
            del sys.modules[name]
        sys.modules.update(saved)


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


def test_plain_import_still_finds_the_package():
    """Outside Slicer, `import IronMapping` is the package folder (checked in a fresh process)."""
    import subprocess

    code = ("import IronMapping, os; print(os.path.basename(os.path.dirname(IronMapping.__file__)), "
            "os.path.basename(IronMapping.__file__))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["IronMapping", "__init__.py"]
