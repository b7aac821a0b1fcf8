"""Resources/UI/IronMapping.ui against IronMapping.py.

The .ui must be well-formed Qt Designer XML, every widget the code names must exist, and every
``SlicerParameterName`` must be a field of IronMappingParameterNode whose type the widget can
show (the parameterNodeWrapper's GUI connectors match on the exact widget class). The parameter
node class needs Slicer's Qt to be instantiated, so its fields are read from the source with ast.
"""

from __future__ import annotations

import ast
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UI_FILE = ROOT / "Resources" / "UI" / "IronMapping.ui"
MODULE_FILE = ROOT / "IronMapping.py"

# Widget classes the parameterNodeWrapper GUI connectors accept for each field type, per Slicer
# version (Base/Python/slicer/parameterNodeWrapper/guiConnectors.py, the canRepresent methods,
# at v5.8.1 and v5.10.0; they match on the exact widget class). Combo boxes take int, float,
# str and bool (with a Choice annotation) in both.
_FLOAT_WIDGETS = {"QDoubleSpinBox", "ctkSliderWidget", "qMRMLSliderWidget", "ctkDoubleSlider",
                  "ctkDoubleSpinBox", "qMRMLSpinBox"}
_COMBO_BOXES = {"QComboBox", "ctkComboBox"}
CONNECTABLE_5_8 = {
    "bool": {"QCheckBox", "ctkCheckBox", "QPushButton"} | _COMBO_BOXES,
    "int": {"QSpinBox", "QSlider"} | _COMBO_BOXES,
    "float": _FLOAT_WIDGETS | _COMBO_BOXES,
    "str": {"QLineEdit", "QLabel", "QTextEdit"} | _COMBO_BOXES,
    "node": {"qMRMLNodeComboBox"},
}
# 5.10 adds ctkCheckablePushButtonToBoolConnector, lets the float widgets show int
# (QDoubleSpinBoxCtkSliderWidgetToFloatIntConnector) and adds ctkColorPickerButton for QColor.
ADDED_IN_5_10 = {"bool": {"ctkCheckablePushButton"}, "int": set(_FLOAT_WIDGETS)}
CONNECTABLE = {
    "5.8": CONNECTABLE_5_8,
    "5.10": {kind: widgets | ADDED_IN_5_10.get(kind, set()) for kind, widgets in CONNECTABLE_5_8.items()},
}


@pytest.fixture(scope="module")
def ui():
    return ET.parse(UI_FILE).getroot()


@pytest.fixture(scope="module")
def module_ast():
    return ast.parse(MODULE_FILE.read_text(encoding="utf-8"))


def widgets(root):
    return {w.get("name"): w for w in root.iter("widget")}


def parameter_fields(tree) -> dict:
    """{field: (type kind, default source or None, annotation source)} of IronMappingParameterNode."""
    cls = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == "IronMappingParameterNode")
    assert any(getattr(d, "id", None) == "parameterNodeWrapper" for d in cls.decorator_list)
    fields = {}
    for stmt in cls.body:
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
            annotation = ast.unparse(stmt.annotation)
            if "vtkMRML" in annotation and not annotation.startswith("list"):
                kind = "node"
            elif annotation.startswith("list"):
                kind = "list"
            else:
                match = re.search(r"\b(bool|int|float|str)\b", annotation)
                kind = match.group(1) if match else annotation
            fields[stmt.target.id] = (kind, ast.unparse(stmt.value) if stmt.value else None, annotation)
    return fields


def test_ui_is_well_formed_designer_xml(ui):
    assert ui.tag == "ui" and ui.get("version") == "4.0"
    assert ui.findtext("class") == "IronMapping"
    top = ui.find("widget")
    assert top.get("class") == "qMRMLWidget" and top.get("name") == "IronMapping"
    names = [w.get("name") for w in ui.iter("widget")]
    assert len(names) == len(set(names)), "widget names must be unique"
    custom = {c.findtext("class") for c in ui.iter("customwidget")}
    qt_builtin = {"QLabel", "QLineEdit", "QComboBox", "QCheckBox", "QPushButton", "QSpinBox", "QWidget"}
    for w in ui.iter("widget"):
        assert w.get("class") in custom | qt_builtin, f"{w.get('name')}: {w.get('class')} is not declared"


def test_every_widget_the_code_names_exists(ui):
    source = MODULE_FILE.read_text(encoding="utf-8")
    named = set(re.findall(r"\bui\.([A-Za-z_][A-Za-z0-9_]*)", source))
    assert named, "IronMapping.py names no widgets"
    missing = sorted(named - set(widgets(ui)))
    assert not missing, f"IronMapping.py uses widgets that are not in the .ui: {missing}"


def test_every_parameter_name_is_a_field_with_a_connectable_widget(ui, module_ast):
    fields = parameter_fields(module_ast)
    bound = {}
    for w in ui.iter("widget"):
        for prop in w.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                assert prop.get("stdset") == "0", "dynamic properties need stdset=0"
                bound[prop.findtext("string")] = w.get("class")
    assert bound, "no widget is bound to the parameter node"
    for name, widget_class in bound.items():
        assert name in fields, f"SlicerParameterName {name!r} is not a field of IronMappingParameterNode"
        kind = fields[name][0]
        for version, table in CONNECTABLE.items():  # the extension supports both
            assert widget_class in table.get(kind, set()), f"{name}: in Slicer {version} a {widget_class} cannot show {kind}"
        if widget_class in ("QComboBox", "ctkComboBox") and kind != "node":
            assert "Choice(" in fields[name][2], f"{name}: a combo box needs a Choice annotation"
    # fields not bound in the .ui are synchronised by the widget code
    source = MODULE_FILE.read_text(encoding="utf-8")
    for name in set(fields) - set(bound):
        assert f"_parameterNode.{name}" in source, f"field {name!r} is neither bound nor used"


def test_version_tables_differ_only_where_slicer_changed():
    """Guards the table itself: what only 5.10 accepts is not accepted for 5.8."""
    assert CONNECTABLE["5.10"]["int"] - CONNECTABLE["5.8"]["int"] == {"QDoubleSpinBox", "ctkSliderWidget",
                                                                        "qMRMLSliderWidget", "ctkDoubleSlider",
                                                                        "ctkDoubleSpinBox", "qMRMLSpinBox"}
    assert "ctkCheckablePushButton" not in CONNECTABLE["5.8"]["bool"]
    assert "ctkCheckablePushButton" in CONNECTABLE["5.10"]["bool"]
    for kind in CONNECTABLE["5.8"]:
        assert CONNECTABLE["5.8"][kind] <= CONNECTABLE["5.10"][kind]


def test_method_default_preselected_and_other_choices_under_advanced(ui, module_ast):
    fields = parameter_fields(module_ast)
    assert fields["method"][1] == "'auto'"
    advanced = next(w for w in ui.iter("widget") if w.get("name") == "advancedCollapsibleButton")
    assert advanced.get("class") == "ctkCollapsibleButton"
    collapsed = [p for p in advanced.findall("property") if p.get("name") == "collapsed"]
    assert collapsed and collapsed[0].findtext("bool") == "true"
    inside = {w.get("name") for w in advanced.iter("widget")}
    assert "methodComboBox" in inside
    inputs = next(w for w in ui.iter("widget") if w.get("name") == "inputsCollapsibleButton")
    for name in ("inputSelector", "echoTimesLineEdit", "fieldStrengthSpinBox", "segmentationSelector",
                 "segmentsSelector", "calibrationComboBox"):
        assert name in {w.get("name") for w in inputs.iter("widget")}, name


def test_mrml_widgets_receive_the_scene(ui):
    receivers = {c.findtext("receiver") for c in ui.iter("connection")
                 if c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"
                 and c.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"}
    mrml_widgets = {w.get("name") for w in ui.iter("widget") if w.get("class", "").startswith("qMRML")
                    and w.get("name") != "IronMapping"}
    assert mrml_widgets and mrml_widgets <= receivers


def test_choice_defaults_are_valid_choices(module_ast):
    from IronMapping.calibration import CALIBRATIONS, DEFAULT_CALIBRATION
    from IronMapping.relaxometry import METHODS

    fields = parameter_fields(module_ast)
    assert "Choice(list(CALIBRATIONS))" in fields["calibration"][2]
    assert fields["calibration"][1] == "DEFAULT_CALIBRATION" and DEFAULT_CALIBRATION in CALIBRATIONS
    assert "Choice(list(METHODS))" in fields["method"][2] and "auto" in METHODS


def test_slicer_util_functions_used_exist():
    """Every slicer.util function IronMapping.py (panel and self-test) calls exists in Slicer's
    slicer/util.py (shipped by slicer-core), with the keyword arguments used."""
    slicer = pytest.importorskip("slicer", reason="slicer-core is needed")
    import inspect

    source = MODULE_FILE.read_text(encoding="utf-8")
    used = set(re.findall(r"slicer\.util\.([A-Za-z_]+)\(", source))
    assert {"createProgressDialog", "tryWithErrorDisplay", "loadUI"} <= used
    for name in sorted(used):
        assert hasattr(slicer.util, name), f"slicer.util.{name} does not exist"
    for call in re.finditer(r"slicer\.util\.([A-Za-z_]+)\(([^()]*)", source):
        parameters = inspect.signature(getattr(slicer.util, call.group(1))).parameters
        accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
        for keyword in re.findall(r"\b([A-Za-z_]+)=", call.group(2)):
            assert accepts_any or keyword in parameters, f"slicer.util.{call.group(1)} has no argument {keyword!r}"
