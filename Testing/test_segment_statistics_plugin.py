"""The Segment Statistics plugin against Slicer's plugin contract, on a real MRML scene.

Slicer's SegmentStatisticsPluginBase (Modules/Scripted/SegmentStatistics/SegmentStatisticsPlugins/
SegmentStatisticsPluginBase.py, identical in this respect in 5.8 and 5.10) needs Qt, so it cannot
be imported here. This file provides a base class with the same public contract, written from
that source: ``createMeasurementInfo(name, title, description, units, quantityDicomCode=None,
unitsDicomCode=None, measurementMethodDicomCode=None, derivationDicomCode=None,
componentNames=None)`` (title is required), ``createCodedEntry``, ``getRequestedKeys`` reading
"<ClassName>.<key>.enabled" parameters, and the ``name``/``title``/``keys``/``defaultKeys``
attributes. SegmentStatisticsLogic calls getMeasurementInfo for every key when it builds its
options (reset -> setParameterNode -> createDefaultOptionsWidget), so one failing key breaks the
whole Segment Statistics module.
"""

from __future__ import annotations

import inspect
import sys
import types

import numpy as np
import pytest
import vtk

from mrml_fixtures import mrml_scene, slicer  # noqa: F401  (skips without slicer-core)
from test_scene import fine_segmentation, phantom  # noqa: F401


class ContractPluginBase:
    """Slicer's SegmentStatisticsPluginBase contract, without the Qt widgets."""

    @staticmethod
    def createCodedEntry(codeValue, codingScheme, codeMeaning, returnAsString=False):
        entry = slicer.vtkCodedEntry()
        entry.SetValueSchemeMeaning(codeValue, codingScheme, codeMeaning)
        return entry if not returnAsString else entry.GetAsString()

    @staticmethod
    def createMeasurementInfo(name, title, description, units, quantityDicomCode=None, unitsDicomCode=None,
                              measurementMethodDicomCode=None, derivationDicomCode=None, componentNames=None):
        info = {"name": name, "title": title, "description": description, "units": units}
        if unitsDicomCode:
            info["DICOM.UnitsCode"] = unitsDicomCode
        if quantityDicomCode:
            info["DICOM.QuantityCode"] = quantityDicomCode
        return info

    def __init__(self):
        self.name = ""
        self.title = ""
        self.keys = []
        self.defaultKeys = []
        self.parameterNode = None

    def toLongKey(self, key):
        return self.__class__.__name__ + "." + key

    def toShortKey(self, key):
        prefix = self.__class__.__name__ + "."
        return key[len(prefix):] if key.startswith(prefix) else ""

    def setDefaultParameters(self, parameterNode, overwriteExisting=False):
        if not parameterNode.GetParameter(self.__class__.__name__ + ".enabled"):
            parameterNode.SetParameter(self.__class__.__name__ + ".enabled", "True")
        for key in self.keys:
            if not parameterNode.GetParameter(self.toLongKey(key) + ".enabled") or overwriteExisting:
                parameterNode.SetParameter(self.toLongKey(key) + ".enabled", str(key in self.defaultKeys))

    def setParameterNode(self, parameterNode):
        if self.parameterNode == parameterNode:
            return
        self.parameterNode = parameterNode
        if parameterNode:
            self.setDefaultParameters(parameterNode)
        for key in self.keys:  # what createDefaultOptionsWidget does for every key
            self.getMeasurementInfo(key)

    def getParameterNode(self):
        return self.parameterNode

    def getRequestedKeys(self):
        if not self.parameterNode:
            return ()
        return [k for k in self.keys if self.parameterNode.GetParameter(self.toLongKey(k) + ".enabled") == "True"]


@pytest.fixture()
def plugin_cls(monkeypatch):
    from IronMapping import segment_statistics

    module = types.ModuleType("SegmentStatisticsPlugins")
    module.SegmentStatisticsPluginBase = ContractPluginBase
    monkeypatch.setitem(sys.modules, "SegmentStatisticsPlugins", module)
    monkeypatch.setattr(segment_statistics, "_PLUGIN_CLASS", None)
    yield segment_statistics.plugin_class()
    segment_statistics._PLUGIN_CLASS = None


def test_contract_base_matches_slicer_signature():
    params = list(inspect.signature(ContractPluginBase.createMeasurementInfo).parameters)
    assert params[:4] == ["name", "title", "description", "units"]


def test_measurement_info_fits_the_contract(plugin_cls):
    plugin = plugin_cls()
    assert plugin.name and plugin.title
    assert plugin.keys and set(plugin.defaultKeys) <= set(plugin.keys)
    assert len(set(plugin.keys)) == len(plugin.keys)
    for key in plugin.keys:
        info = plugin.getMeasurementInfo(key)
        assert {"name", "title", "description", "units"} <= set(info), key
        assert all(isinstance(info[k], str) and info[k] for k in ("name", "title", "description", "units"))
        entry = slicer.vtkCodedEntry()
        entry.SetFromString(info["DICOM.UnitsCode"])
        assert entry.GetCodingSchemeDesignator() == "UCUM" and entry.GetCodeValue()
    assert plugin.getMeasurementInfo("no-such-key") is None


def test_plugin_computes_its_keys_through_the_parameter_node(plugin_cls, mrml_scene, phantom):
    from IronMapping import scene as mrml
    from IronMapping.logic import IronMappingLogic

    sequence, _ = mrml.add_multiecho_sequence(phantom.image, "echoes", scene=mrml_scene)
    segmentation = fine_segmentation(mrml_scene, phantom)
    result = IronMappingLogic().process(sequence, segmentationNode=segmentation)
    parameters = mrml_scene.AddNewNodeByClass("vtkMRMLScriptedModuleNode")
    parameters.SetParameter("Segmentation", segmentation.GetID())
    parameters.SetParameter("ScalarVolume", result["r2star"].GetID())
    plugin = plugin_cls()
    plugin.setParameterNode(parameters)
    liver_id = mrml.segment_ids_of(segmentation)[0]
    stats = plugin.computeStatistics(liver_id)
    assert set(stats) <= set(plugin.defaultKeys) and "t2star_median" in stats
    for key in plugin.keys:
        parameters.SetParameter(plugin.toLongKey(key) + ".enabled", "True")
    stats = plugin.computeStatistics(liver_id)
    assert set(stats) <= set(plugin.keys) and {"r2star_median", "lic", "fitted_percent"} <= set(stats)
    assert all(np.isfinite(v) for v in stats.values() if not isinstance(v, str))


# ---- organ from the segment's terminology, in Slicer 5.8 and 5.10 ----------------------------

LIVER_TERMINOLOGY = ("Segmentation category and type - 3D Slicer General Anatomy list"
                     "~SCT^123037004^Anatomical Structure~SCT^10200004^Liver~^^"
                     "~Anatomic codes - DICOM master list~^^~^^")


class Slicer58Segment:
    """A real vtkSegment seen through Slicer 5.8's API, which has no GetTerminology /
    SetTerminology / HasTerminology (added to vtkSegment in March 2025, Slicer 5.9); 5.8 keeps
    the entry in the tag named vtkSegment.GetTerminologyEntryTagName()."""

    _NOT_IN_5_8 = ("GetTerminology", "SetTerminology", "HasTerminology")

    def __init__(self, segment):
        self._segment = segment

    def __getattr__(self, name):
        if name in self._NOT_IN_5_8:
            raise AttributeError(f"vtkSegment has no {name} in Slicer 5.8")
        return getattr(self._segment, name)


def test_segment_terminology_on_5_8_and_5_10_segments():
    from IronMapping.organs import recognise_organ
    from IronMapping.scene import segment_terminology

    segment = slicer.vtkSegment()
    segment.SetName("Segment_1")
    old = Slicer58Segment(segment)
    assert not hasattr(old, "GetTerminology")
    # a new segment has the default entry ("Tissue"): the same through both APIs, no organ
    assert segment_terminology(old) == segment_terminology(segment)
    assert recognise_organ("Segment_1", segment_terminology(old) or None).organ is None
    # written as Slicer 5.8 writes it (a tag), read through both APIs
    segment.SetTag(slicer.vtkSegment.GetTerminologyEntryTagName(), LIVER_TERMINOLOGY)
    assert segment_terminology(old) == LIVER_TERMINOLOGY
    assert segment_terminology(segment) == LIVER_TERMINOLOGY
    assert recognise_organ(old.GetName(), segment_terminology(old) or None).organ == "liver"
    assert recognise_organ(old.GetName(), None).organ is None  # the name alone says nothing


def test_plugin_recognises_the_liver_from_its_terminology(plugin_cls, mrml_scene, phantom):
    """A liver segment named "Segment_1" gets LIC only because its terminology says liver."""
    from IronMapping import scene as mrml
    from IronMapping.logic import IronMappingLogic

    sequence, _ = mrml.add_multiecho_sequence(phantom.image, "echoes", scene=mrml_scene)
    segmentation = fine_segmentation(mrml_scene, phantom)
    result = IronMappingLogic().process(sequence, segmentationNode=segmentation)
    liver_id = mrml.segment_ids_of(segmentation)[0]
    liver = segmentation.GetSegmentation().GetSegment(liver_id)
    assert liver.GetName() == "liver"
    liver.SetName("Segment_1")
    parameters = mrml_scene.AddNewNodeByClass("vtkMRMLScriptedModuleNode")
    parameters.SetParameter("Segmentation", segmentation.GetID())
    parameters.SetParameter("ScalarVolume", result["r2star"].GetID())
    plugin = plugin_cls()
    plugin.setParameterNode(parameters)
    assert "lic" not in plugin.computeStatistics(liver_id)
    liver.SetTag(slicer.vtkSegment.GetTerminologyEntryTagName(), LIVER_TERMINOLOGY)
    assert np.isfinite(plugin.computeStatistics(liver_id)["lic"])


# ---- SegmentStatisticsLogic with our plugin registered ----------------------------------------

class ContractSegmentStatisticsLogic:
    """Slicer's SegmentStatisticsLogic (SegmentStatistics.py, identical in this respect at v5.8.1
    and v5.10.0) without Qt: class-level ``registeredPlugins`` instantiated by every logic;
    getParameterNode -> setParameterNode -> setDefaultParameters and plugin.setParameterNode;
    computeStatistics over the segments (visible only unless ``visibleSegmentsOnly`` is
    "False"), storing ``statistics[segmentID, "<PluginClass>.<key>"]`` and the measurement info
    of every value for each enabled plugin."""

    registeredPlugins = []
    segmentColumnName = "Segment"

    @staticmethod
    def registerPlugin(plugin):
        if not isinstance(plugin, ContractPluginBase):
            return
        if plugin.__class__ not in ContractSegmentStatisticsLogic.registeredPlugins:
            ContractSegmentStatisticsLogic.registeredPlugins.append(plugin.__class__)

    def __init__(self):
        self.plugins = [x() for x in ContractSegmentStatisticsLogic.registeredPlugins]
        self.parameterNode = None
        self.statistics = None
        self.reset()

    def getParameterNode(self):
        if not self.parameterNode:
            self.setParameterNode(slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScriptedModuleNode"))
        return self.parameterNode

    def setParameterNode(self, parameterNode):
        if self.parameterNode == parameterNode:
            return
        for plugin in self.plugins:
            plugin.setDefaultParameters(parameterNode)
        if not parameterNode.GetParameter("visibleSegmentsOnly"):
            parameterNode.SetParameter("visibleSegmentsOnly", "True")
        self.parameterNode = parameterNode
        for plugin in self.plugins:
            plugin.setParameterNode(parameterNode)

    def getStatistics(self):
        return self.statistics

    def reset(self):
        self.keys = [self.segmentColumnName] + [p.toLongKey(k) for p in self.plugins for k in p.keys]
        self.getParameterNode()
        self.statistics = {"SegmentIDs": [], "MeasurementInfo": {}}

    def computeStatistics(self):
        self.reset()
        segmentation = slicer.mrmlScene.GetNodeByID(self.getParameterNode().GetParameter("Segmentation"))
        ids = vtk.vtkStringArray()
        if self.getParameterNode().GetParameter("visibleSegmentsOnly") == "True":
            segmentation.GetDisplayNode().GetVisibleSegmentIDs(ids)
        else:
            segmentation.GetSegmentation().GetSegmentIDs(ids)
        for i in range(ids.GetNumberOfValues()):
            self.updateStatisticsForSegment(ids.GetValue(i))

    def updateStatisticsForSegment(self, segmentID):
        segmentation = slicer.mrmlScene.GetNodeByID(self.getParameterNode().GetParameter("Segmentation"))
        segment = segmentation.GetSegmentation().GetSegment(segmentID)
        if not segment:
            return
        statistics = self.getStatistics()
        if segmentID not in statistics["SegmentIDs"]:
            statistics["SegmentIDs"].append(segmentID)
        statistics[segmentID, self.segmentColumnName] = segment.GetName()
        for plugin in self.plugins:
            name = plugin.__class__.__name__
            if self.getParameterNode().GetParameter(name + ".enabled") == "True":
                stats = plugin.computeStatistics(segmentID)
                for key in stats:
                    statistics[segmentID, name + "." + key] = stats[key]
                    statistics["MeasurementInfo"][name + "." + key] = plugin.getMeasurementInfo(key)


@pytest.fixture
def segment_statistics_logic(monkeypatch, plugin_cls):
    """The SegmentStatistics module as the plugin's register() sees it, with no other plugins."""
    from IronMapping import segment_statistics

    module = types.ModuleType("SegmentStatistics")
    module.SegmentStatisticsLogic = ContractSegmentStatisticsLogic
    monkeypatch.setitem(sys.modules, "SegmentStatistics", module)
    monkeypatch.setattr(ContractSegmentStatisticsLogic, "registeredPlugins", [])
    assert segment_statistics.register() is True
    return ContractSegmentStatisticsLogic


def test_segment_statistics_logic_computes_our_keys(segment_statistics_logic, plugin_cls, mrml_scene, phantom):
    """register() + SegmentStatisticsLogic() + computeStatistics on the R2* map and on the input."""
    from IronMapping import scene as mrml
    from IronMapping import segment_statistics
    from IronMapping.logic import IronMappingLogic
    from IronMapping.segment_statistics import MEASUREMENTS, run_segment_statistics

    assert segment_statistics_logic.registeredPlugins == [plugin_cls]
    assert plugin_cls.__name__ == segment_statistics.PLUGIN_CLASS_NAME
    sequence, _ = mrml.add_multiecho_sequence(phantom.image, "echoes", scene=mrml_scene)
    segmentation = fine_segmentation(mrml_scene, phantom)
    result = IronMappingLogic().process(sequence, segmentationNode=segmentation)
    regions = {r["name"]: r for r in result.summary["regions"]}
    table = run_segment_statistics(segment_statistics_logic(), segmentation, result["r2star"])
    assert set(table) == set(regions)
    for name, values in table.items():
        assert set(values) <= set(MEASUREMENTS) and {"r2star_median", "fitted_percent"} <= set(values), name
        assert values["r2star_median"] == pytest.approx(phantom.region_r2star[name], rel=0.1), name
    assert "lic" in table["liver"] and "lic" not in table["spleen"]
    assert table["liver"]["lic"] == pytest.approx(regions["liver"]["lic_mg_per_g"], rel=0.05)
    # every stored value has its measurement info, as exportToTable needs
    logic = segment_statistics_logic()
    run_segment_statistics(logic, segmentation, result["t2star"])  # a sibling output: same R2* map
    info = logic.getStatistics()["MeasurementInfo"]
    assert info and all(v["units"] for v in info.values())


def test_register_again_replaces_the_plugin_of_an_earlier_load(segment_statistics_logic, plugin_cls, monkeypatch):
    """After Reload a new plugin class of the same name replaces the old one, once."""
    from IronMapping import segment_statistics

    monkeypatch.setattr(segment_statistics, "_PLUGIN_CLASS", None)
    new_cls = segment_statistics.plugin_class()
    assert new_cls is not plugin_cls and new_cls.__name__ == plugin_cls.__name__
    assert segment_statistics.register() and segment_statistics.register()
    assert segment_statistics_logic.registeredPlugins == [new_cls]
