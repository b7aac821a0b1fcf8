"""Docstrings of the public API: present, numpydoc ``Parameters`` sections, no issue numbers.

The source is read with ``ast`` (nothing is imported, so the Slicer glue modules are checked
too). Public means a module-level function or class, or a method or property of a public class,
whose name does not start with "_"; functions nested in functions are not API.

- every public definition of every module has a docstring (``KNOWN_UNDOCUMENTED`` lists the
  gaps left in modules this test does not convert);
- in the converted modules (``NUMPYDOC_MODULES``, which include every module the README's
  "Scripting API" section names) a public function or method taking parameters documents them
  in a numpydoc ``Parameters`` section;
- no docstring refers to an issue number ("issue 16", "issue #3"): the project's issue tracker
  is not shipped, so such a reference means nothing to a reader.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "IronMapping"
README = ROOT / "README.md"

#: Modules whose public functions must have a numpydoc Parameters section (paths relative to
#: IronMapping/). The README's Scripting API modules are added by `scripting_api_modules`.
NUMPYDOC_MODULES = (
    "__init__.py", "analysis.py", "batch.py", "blocks.py", "calibration.py", "cli.py",
    "crlb.py", "display.py", "echo_noise.py", "errors.py", "estimators.py", "fatmodel.py",
    "fatwater/__init__.py", "fatwater/bipolar.py", "fatwater/checks.py",
    "fatwater/complex_fit.py", "fatwater/fieldmap.py", "fatwater/inputs.py",
    "fatwater/likelihood.py", "fatwater/magnitude.py", "fatwater/maps.py",
    "fatwater/neighbourhood.py", "fileio.py", "fit_result.py", "focal.py", "focal_phase.py", "grading.py",
    "headline.py", "image.py", "io/__init__.py", "io/checks.py", "io/dicom.py",
    "io/dicom_writer.py", "io/geometry.py", "io/loader.py", "io/metadata.py", "io/nifti.py",
    "io/nrrd_sequence.py", "logic.py", "maps_io.py", "noise.py", "noise_floor.py", "noise_map.py", "noise_source.py", "organs.py",
    "patterns.py", "phantom.py", "phantom_abdomen.py", "pipeline.py", "quantification.py",
    "quantities.py", "reference_fit.py", "regions.py", "relaxometry.py", "report.py",
    "report_figures.py", "sample_data.py", "scene/__init__.py", "scene/core.py",
    "scene/findings.py", "scene/inputs.py", "scene/outputs.py", "scene/segments.py",
    "segment_statistics.py", "tissue_mask.py",
    "censoring.py", "lesion_contrast.py", "region_masks.py", "roi_signal.py",
    "region_comparisons.py", "region_summary.py", "summary_outputs.py", "summary_schema.py",
    "label_maps.py", "volume_io.py",
    "focal_detection.py", "focal_outputs.py", "focal_reading.py", "focal_settings.py",
)

#: Scripting API modules not converted yet: only their docstrings' presence is checked.
NUMPYDOC_PENDING = ()

#: Public definitions without a docstring in modules not converted here ("module:qualname").
#: Remove an entry when its docstring is written; do not add new ones.
KNOWN_UNDOCUMENTED = frozenset()

PARAMETERS_SECTION = re.compile(r"^\s*Parameters\s*\n\s*-{3,}\s*$", re.M)
ISSUE_NUMBER = re.compile(r"\bissues?\s*(?:no\.?|number)?\s*#?\s*\d+", re.I)


def all_modules() -> list[str]:
    return sorted(p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py"))


def public_definitions(source: str):
    """(qualname, node) of every public function, class, method and property of ``source``."""
    found = []

    def walk(body, prefix):
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) \
                    and not node.name.startswith("_"):
                found.append((prefix + node.name, node))
                if isinstance(node, ast.ClassDef):
                    walk(node.body, f"{prefix}{node.name}.")

    walk(ast.parse(source).body, "")
    return found


def parameter_names(node) -> list[str]:
    """The parameters a caller passes (self / cls left out)."""
    args = node.args
    names = [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs]
    names += [a.arg for a in (args.vararg, args.kwarg) if a is not None]
    return [n for n in names if n not in ("self", "cls")]


def docstring_problems(source: str, numpydoc: bool = True, known=frozenset(), prefix: str = ""):
    """What is wrong with the docstrings of ``source``, one sentence per problem."""
    problems = []
    for qualname, node in public_definitions(source):
        doc = ast.get_docstring(node) or ""
        if not doc:
            if prefix + qualname not in known:
                problems.append(f"{qualname} (line {node.lineno}) has no docstring")
            continue
        if numpydoc and not isinstance(node, ast.ClassDef) and parameter_names(node) \
                and not PARAMETERS_SECTION.search(doc):
            problems.append(f"{qualname} (line {node.lineno}) takes "
                            f"{', '.join(parameter_names(node))} but has no numpydoc "
                            "Parameters section")
    return problems


def issue_references(source: str) -> list[str]:
    """Docstrings (of anything, private too, and the module) that cite an issue number."""
    out = []
    tree = ast.parse(source)
    for node in [tree] + [n for n in ast.walk(tree) if isinstance(
            n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]:
        match = ISSUE_NUMBER.search(ast.get_docstring(node) or "")
        if match:
            name = getattr(node, "name", "module docstring")
            out.append(f"{name}: {match.group(0)!r}")
    return out


def scripting_api_modules() -> list[str]:
    """Modules the README's "Scripting API" section names (``IronMapping.x.y`` references)."""
    text = README.read_text(encoding="utf-8")
    start = text.index("## Scripting API")
    end = text.find("\n## ", start + 1)
    section = text[start:end if end > 0 else len(text)]
    modules = set()
    for dotted in re.findall(r"IronMapping((?:\.[A-Za-z_][A-Za-z0-9_]*)+)", section):
        parts = dotted.strip(".").split(".")
        for n in range(len(parts), 0, -1):  # the longest prefix that is a module or package
            path = PACKAGE.joinpath(*parts[:n])
            if path.with_suffix(".py").is_file():
                modules.add(path.with_suffix(".py").relative_to(PACKAGE).as_posix())
                break
            if (path / "__init__.py").is_file():
                modules.update(p.relative_to(PACKAGE).as_posix() for p in path.rglob("*.py"))
                break
    return sorted(modules)


def read(module: str) -> str:
    return (PACKAGE / module).read_text(encoding="utf-8")


def test_scripting_api_modules_are_found_and_converted():
    modules = scripting_api_modules()
    assert {"relaxometry.py", "phantom.py", "errors.py"} <= set(modules), modules
    unconverted = set(modules) - set(NUMPYDOC_MODULES) - set(NUMPYDOC_PENDING)
    assert not unconverted, f"Scripting API modules without the Parameters check: {unconverted}"
    missing = set(NUMPYDOC_MODULES) - set(all_modules())
    assert not missing, f"NUMPYDOC_MODULES lists files that do not exist: {missing}"


@pytest.mark.parametrize("module", all_modules())
def test_public_definitions_have_docstrings(module):
    problems = docstring_problems(read(module), numpydoc=False, known=KNOWN_UNDOCUMENTED,
                                  prefix=f"{module}:")
    assert not problems, f"IronMapping/{module}: " + "; ".join(problems)


@pytest.mark.parametrize("module", NUMPYDOC_MODULES)
def test_public_functions_document_their_parameters(module):
    problems = docstring_problems(read(module), numpydoc=True)
    assert not problems, f"IronMapping/{module}: " + "; ".join(problems)


@pytest.mark.parametrize("module", all_modules())
def test_no_docstring_cites_an_issue_number(module):
    found = issue_references(read(module))
    assert not found, f"IronMapping/{module} refers to issue numbers: {found}"


def test_the_checks_find_what_they_look_for():
    source = '''
def documented(a):
    """Add one.

    Parameters
    ----------
    a : float
    """

def bare(a):
    return a

def no_section(a, *, b=1):
    """Add b."""

def no_arguments():
    """Nothing to document."""

class Thing:
    """A thing."""

    def method(self):
        """No parameters besides self."""

    def takes(self, x):
        """Fixes issue 16."""

    @property
    def size(self):
        return 1

    def _private(self, y):
        pass

def _helper(z):
    pass
'''
    problems = docstring_problems(source)
    assert any(p.startswith("bare ") and "no docstring" in p for p in problems)
    assert any(p.startswith("no_section ") and "a, b" in p for p in problems)
    assert any(p.startswith("Thing.takes ") and "Parameters" in p for p in problems)
    assert any(p.startswith("Thing.size ") and "no docstring" in p for p in problems)
    assert len(problems) == 4, problems
    assert docstring_problems(source, numpydoc=False, known={"m:bare", "m:Thing.size"},
                              prefix="m:") == []
    assert issue_references(source) == ["takes: 'issue 16'"]
    assert issue_references('"""See issue #3."""') == ["module docstring: 'issue #3'"]
    assert issue_references('"""Known issues with 3 coils."""') == []
