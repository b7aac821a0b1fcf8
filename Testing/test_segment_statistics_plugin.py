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

    def setParameterNode(self, parameterNode):
        self.parameterNode = parameterNode
        parameterNode.SetParameter(self.__class__.__name__ + ".enabled", "True")
        for key in self.keys:
            parameterNode.SetParameter(self.toLongKey(key) + ".enabled", str(key in self.defaultKeys))
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
