"""Iron Mapping: 3D Slicer module for R2*/T2* maps, organ iron statistics and liver iron.

Slicer loads this file by path and registers it as ``sys.modules["IronMapping"]``, which hides
the library package folder ``IronMapping/`` of the same name. The first lines below make this
module behave as that package (``__path__``, ``__package__`` and the package's ``__init__``),
so ``from IronMapping.logic import IronMappingLogic`` works inside Slicer exactly as it does in
plain Python. Only this file uses Qt; the library never does.
"""

import os

_MODULE_DOC = __doc__
_LIBRARY_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "IronMapping")

# ---- make this module package-like ----------------------------------------------------------
# Slicer 5.10 loads this file with importlib (spec_from_file_location, module_from_spec,
# sys.modules[name] = module, exec_module); Slicer 5.8 with PyImport_AddModule + imp.load_source,
# which executes it into an existing module object (Base/QTCore/qSlicerScriptedUtils.cxx,
# Base/QTGUI/qSlicerScriptedLoadableModule.cxx). Either way the module is sys.modules["IronMapping"].
__path__ = [_LIBRARY_DIR]
__package__ = __name__
if globals().get("__spec__") is not None:
    __spec__.submodule_search_locations = __path__
with open(os.path.join(_LIBRARY_DIR, "__init__.py"), encoding="utf-8") as _init_file:
    exec(compile(_init_file.read(), os.path.join(_LIBRARY_DIR, "__init__.py"), "exec"), globals())
__doc__ = _MODULE_DOC
# ---------------------------------------------------------------------------------------------

import logging  # noqa: E402
import unittest  # noqa: E402
from typing import Annotated, Optional, Union  # noqa: E402

from IronMapping.calibration import CALIBRATIONS, DEFAULT_CALIBRATION  # noqa: E402
from IronMapping.errors import FitCancelled  # noqa: E402
from IronMapping.logic import IronMappingLogic  # noqa: E402
from IronMapping.relaxometry import DEFAULT_METHOD, METHODS, method_reference  # noqa: E402

try:  # the Slicer application (Qt, CTK, module base classes)
    import qt
    import vtk

    import slicer
    from slicer.i18n import tr as _
    from slicer.i18n import translate
    from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
    from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleTest,
                                               ScriptedLoadableModuleWidget)
    from slicer.util import VTKObservationMixin

    IN_SLICER_APP = True
except ImportError:  # plain Python (tests, scripts): the library works, the panel does not exist
    IN_SLICER_APP = False
    import slicer  # slicer-core provides the MRML classes used in the annotations below

    def _(text):
        return text

    def translate(context, text):
        return text

    def parameterNodeWrapper(cls):
        return cls

    class _Validator:
        def __init__(self, *args):
            self.args = args

    Choice = WithinRange = _Validator
    class _NeedsSlicerApplication:
        """Base of the module and widget classes outside Slicer: defined, but not constructible."""

        def __init__(self, *args, **kwargs):
            raise RuntimeError("The Iron Mapping panel needs the 3D Slicer application; in plain "
                               "Python use IronMapping.logic.IronMappingLogic.")

    ScriptedLoadableModule = ScriptedLoadableModuleWidget = _NeedsSlicerApplication
    ScriptedLoadableModuleTest = unittest.TestCase
    from slicer.util import VTKObservationMixin

from slicer import (vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode,  # noqa: E402
                    vtkMRMLSequenceNode)

log = logging.getLogger("IronMapping")


def _help_text() -> str:
    methods = "".join(f"<li><b>{name}</b>: {method_reference(name)}</li>" for name in METHODS if name != "auto")
    calibrations = "".join(
        f"<li><b>{cal.label}</b> ({cal.field_strength_t:g} T): {cal.equation}. {cal.citation}"
        f"{' doi:' + cal.doi if cal.doi else ''}</li>" for cal in CALIBRATIONS.values())
    return _(
        "Maps R2* (1/s) and T2* (ms) from multi-echo gradient-echo MRI (R2/T2 for spin echo), "
        "summarises them per segment (median, ROI-averaged fit, grades), converts liver R2* to "
        "liver iron concentration (LIC, mg Fe/g dry weight) and describes the iron distribution "
        "pattern (parenchymal vs reticuloendothelial; extrahepatic siderosis with spleen sparing "
        "as seen in neonatal haemochromatosis).<br><br>"
        "<b>Input</b>: the multi-echo series as a volume sequence or MultiVolume (echo times are "
        "read from MultiVolume.FrameLabels / DICOM EchoTime), or several echo volumes with the "
        "echo times typed in (ms). <b>Segmentation</b>: organs from the Segment Editor, "
        "resampled onto the echo grid; where segments overlap the smaller one wins.<br>"
        "<b>Outputs</b>: volumes '&lt;input&gt; R2*', 'T2*', 'S0', 'fit quality R^2', 'fit "
        "status' (and 'PDFF' for the fat-water method), a statistics table and a plot of each "
        "segment's mean signal with its fitted curve. Every output carries its method, echo "
        "times, units and software version as node attributes (IronMapping.*).<br><br>"
        f"<b>Fitting methods</b> (default 'auto' = {DEFAULT_METHOD}):<ul>{methods}</ul>"
        f"<b>LIC calibrations</b> (default {CALIBRATIONS[DEFAULT_CALIBRATION].label}); a 1.5 T "
        f"calibration is refused on 3 T data unless a published conversion is requested:<ul>{calibrations}</ul>"
        "Grading cut-offs and their sources are listed in the statistics table notes and the "
        "README. See <a href=\"https://github.com/ironmapping/SlicerIronMapping\">the project page</a>."
        f"<br><br><b>{RESEARCH_USE_STATEMENT}</b>")  # noqa: F821 (set by the package __init__ run above)


#
# IronMapping
#


class IronMapping(ScriptedLoadableModule):
    """Module description (title, category, help). Uses ScriptedLoadableModule."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Iron Mapping")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Quantification")]
        # Sequences and Segmentations hold the inputs; SegmentStatistics and SampleData get
        # our plugin and phantom (all are Slicer core modules)
        self.parent.dependencies = ["Sequences", "Segmentations", "SegmentStatistics", "SampleData"]
        self.parent.contributors = ["IronMapping contributors (SlicerIronMapping project)"]
        self.parent.helpText = _help_text()
        self.parent.acknowledgementText = _(
            "Built on 3D Slicer, numpy, scipy, SimpleITK and pydicom. Signal models and "
            "calibrations follow the publications cited in the help text (Feng 2013, He 2008, "
            "Ghugre 2006, Pei 2015, Triay Bagur 2019, Bray 2023; Wood 2005, Hankins 2009, "
            "Garbowski 2014, Hernando 2022). Example scanner data used in tests come from the "
            "public repositories named in the README.")
        slicer.app.connect("startupCompleted()", _registerWithOtherModules)


def _registerWithOtherModules():
    """Phantom in Sample Data and R2*/T2*/LIC in Segment Statistics (when those modules exist).
    Called at start-up and again after Reload (it then replaces the plugin by the new code's)."""
    from IronMapping import sample_data, segment_statistics

    try:
        sample_data.register()
    except Exception as exc:  # a missing SampleData module must not break this module
        log.warning("IronMapping: sample data not registered: %s", exc)
    try:
        segment_statistics.register()
    except Exception as exc:
        log.warning("IronMapping: Segment Statistics plugin not registered: %s", exc)


def libraryModuleNames() -> list:
    """Names of the loaded modules of the library package (IronMapping.*), deepest first."""
    import sys

    return sorted((name for name in sys.modules if name.startswith(__name__ + ".")), reverse=True)


def forgetLibraryModules() -> list:
    """Remove the library's modules from ``sys.modules`` so the next import reads the files again.

    Slicer's Reload re-executes only this file; without this the ``from IronMapping.x import``
    lines above would get the cached modules and a developer would keep running old code.
    Returns the names removed.
    """
    import sys

    names = libraryModuleNames()
    for name in names:
        del sys.modules[name]
    return names


#
# IronMappingFileReader (phantom recipes: Sample Data and Add Data)
#


class IronMappingFileReader:
    """Slicer IO reader of phantom recipes (``*.ironphantom``, Resources/SampleData).

    Slicer registers it because of its name (<module>FileReader, qSlicerScriptedFileReader).
    Sample Data copies the recipe into its cache and opens it with this file type; ``load``
    generates the phantom (volume sequence and organ segmentation) from the recipe.
    """

    def __init__(self, parent):
        self.parent = parent

    def description(self):
        return _("Iron Mapping phantom")

    def fileType(self):
        from IronMapping.sample_data import FILE_TYPE

        return FILE_TYPE

    def extensions(self):
        from IronMapping.sample_data import RECIPE_EXTENSION

        return [_("Iron Mapping phantom recipe") + f" (*{RECIPE_EXTENSION})"]

    def canLoadFileConfidence(self, filePath):
        from IronMapping.sample_data import RECIPE_EXTENSION

        return 0.6 if str(filePath).lower().endswith(RECIPE_EXTENSION) else 0.0

    def load(self, properties):
        from IronMapping import sample_data

        try:
            sequence, segmentation, _phantom = sample_data.load_recipe(properties["fileName"],
                                                                       name=properties.get("name"))
        except Exception as exc:
            log.error("IronMapping: phantom not generated: %s", exc)
            messages = getattr(self.parent, "userMessages", None)
            if messages is not None:
                import vtk as _vtk

                messages().AddMessage(_vtk.vtkCommand.ErrorEvent, str(exc))
            return False
        self.parent.loadedNodes = [sequence.GetID(), segmentation.GetID()]
        return True


#
# IronMappingParameterNode
#


@parameterNodeWrapper
class IronMappingParameterNode:
    """The panel's settings, saved with the scene.

    inputNode - multi-echo series: volume sequence, MultiVolume or the proxy volume of a sequence.
    echoVolumes - alternatively, one scalar volume per echo (used when two or more are checked).
    echoTimesText - echo times in ms, comma-separated; filled from the metadata, editable.
    fieldStrength - tesla; filled from DICOM when known, 0 = unknown.
    segmentationNode, segmentIds - regions (comma-separated segment IDs; empty = all).
    calibration - LIC calibration name.
    method - fitting method ("auto" = the engine's default).
    maskThreshold - first-echo signal below which voxels are not fitted (0 = automatic).
    noiseSigma, coils - noise SD per coil channel and receive coil count (0 = estimate).
    convertField - allow a 1.5 T LIC calibration on 3 T data through a published conversion.
    createNewOutputs - keep earlier results and add new output nodes.
    patternText - the distribution pattern sentence of the last run (shown in the panel).
    """

    inputNode: Optional[Union[vtkMRMLSequenceNode, vtkMRMLScalarVolumeNode]]
    echoVolumes: list[vtkMRMLScalarVolumeNode]
    echoTimesText: str = ""
    fieldStrength: Annotated[float, WithinRange(0.0, 21.0)] = 0.0
    segmentationNode: vtkMRMLSegmentationNode
    segmentIds: str = ""
    calibration: Annotated[str, Choice(list(CALIBRATIONS))] = DEFAULT_CALIBRATION
    method: Annotated[str, Choice(list(METHODS))] = "auto"
    maskThreshold: Annotated[float, WithinRange(0.0, 1e9)] = 0.0
    noiseSigma: Annotated[float, WithinRange(0.0, 1e9)] = 0.0
    coils: Annotated[int, WithinRange(0, 128)] = 0
    convertField: bool = False
    createNewOutputs: bool = False
    patternText: str = ""


def parseEchoTimes(text: str):
    """'1.2, 2.4 3.6' -> [1.2, 2.4, 3.6] (ms); '' -> None. Raises EchoTimeError on bad text."""
    from IronMapping.errors import EchoTimeError

    parts = [p for p in text.replace(";", ",").replace(" ", ",").split(",") if p.strip()]
    if not parts:
        return None
    try:
        return [float(p) for p in parts]
    except ValueError:
        raise EchoTimeError(f"Echo times '{text}' are not numbers. Type them in milliseconds, "
                            "separated by commas (e.g. 1.2, 2.4, 3.6).") from None


#
# IronMappingWidget
#


class IronMappingWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The panel: reads the parameter node, calls IronMappingLogic.process, shows the results."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self.lastResult = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/IronMapping.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = IronMappingLogic()

        self.ui.segmentsSelector.segmentationNodeSelectorVisible = False
        self.ui.segmentsSelector.multiSelection = True

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.inputSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onInputChanged)
        self.ui.echoVolumesSelector.connect("checkedNodesChanged()", self.onEchoVolumesChanged)
        self.ui.segmentationSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onSegmentationChanged)
        self.ui.segmentsSelector.connect("segmentSelectionChanged(QStringList)", self.onSegmentsChanged)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)

        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.removeObservers()

    def onReload(self) -> None:
        """Reload this file and the library (Slicer's own Reload re-runs this file only), then
        register the new Segment Statistics plugin and sample data."""
        import sys

        forgetLibraryModules()
        ScriptedLoadableModuleWidget.onReload(self)
        sys.modules[__name__]._registerWithOtherModules()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(IronMappingParameterNode(self.logic.getParameterNode()))
        if not self._parameterNode.inputNode:
            first = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLSequenceNode")
            if first:
                self._parameterNode.inputNode = first
        if not self._parameterNode.segmentationNode:
            first = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLSegmentationNode")
            if first:
                self._parameterNode.segmentationNode = first

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            # Widgets carry a "SlicerParameterName" dynamic property in the .ui file.
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            # connectGui fills the combo boxes from the Choice lists; name each calibration
            for index, name in enumerate(CALIBRATIONS):
                self.ui.calibrationComboBox.setItemData(index, CALIBRATIONS[name].label, qt.Qt.ToolTipRole)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
            self.ui.echoVolumesSelector.blockSignals(True)
            for node in self._parameterNode.echoVolumes:
                self.ui.echoVolumesSelector.setCheckState(node, qt.Qt.Checked)
            self.ui.echoVolumesSelector.blockSignals(False)
            self.ui.segmentsSelector.setCurrentNode(self._parameterNode.segmentationNode)
            ids = [i for i in self._parameterNode.segmentIds.split(",") if i]
            if ids:
                self.ui.segmentsSelector.setSelectedSegmentIDs(ids)
            self._checkCanApply()

    def _inputs(self):
        """The list of checked echo volumes when two or more are checked, else the input node."""
        volumes = list(self._parameterNode.echoVolumes) if self._parameterNode else []
        if len(volumes) >= 2:
            return volumes
        return self._parameterNode.inputNode if self._parameterNode else None

    def _checkCanApply(self, caller=None, event=None) -> None:
        if self._parameterNode and self._inputs():
            self.ui.applyButton.toolTip = _("Fit the maps and compute the statistics")
            self.ui.applyButton.enabled = True
        else:
            self.ui.applyButton.toolTip = _("Select the multi-echo series (or two or more echo volumes)")
            self.ui.applyButton.enabled = False

    def _fillFromMetadata(self, inputs) -> None:
        """Echo times and field strength from the input's metadata, when it has them."""
        if not inputs or not self._parameterNode:
            return
        try:
            found = self.logic.inspectInput(inputs)
        except Exception as exc:  # shown when Apply is pressed; here just say what is missing
            self.ui.inputInfoLabel.text = str(exc)
            return
        te = found["echoTimesMs"]
        if te:
            self._parameterNode.echoTimesText = ", ".join(f"{t:g}" for t in te)
        if found["fieldStrengthT"]:
            self._parameterNode.fieldStrength = float(found["fieldStrengthT"])
        where = found["echoTimeSource"] or _("not found: type them in")
        self.ui.inputInfoLabel.text = _("{n} echoes ({quantity}); echo times: {where}").format(
            n=found["numberOfEchoes"], quantity=found["quantity"], where=where)

    def onInputChanged(self, node) -> None:
        if node is not None:
            self._fillFromMetadata(node)

    def onEchoVolumesChanged(self) -> None:
        if not self._parameterNode:
            return
        self._parameterNode.echoVolumes = list(self.ui.echoVolumesSelector.checkedNodes())
        if len(self._parameterNode.echoVolumes) >= 2:
            self._fillFromMetadata(self._parameterNode.echoVolumes)

    def onSegmentationChanged(self, node) -> None:
        self.ui.segmentsSelector.setCurrentNode(node)

    def onSegmentsChanged(self, segmentIds) -> None:
        if self._parameterNode:
            self._parameterNode.segmentIds = ",".join(segmentIds)

    def onApplyButton(self) -> None:
        """Fit with a progress dialog (cancel supported) and show the results."""
        with slicer.util.tryWithErrorDisplay(_("Iron mapping failed."), waitCursor=True):
            p = self._parameterNode
            progress = slicer.util.createProgressDialog(
                labelText=_("Fitting R2* maps..."), windowTitle=_("Iron Mapping"), maximum=100)

            def onProgress(fraction):
                progress.value = int(round(100 * fraction))
                slicer.app.processEvents()

            try:
                result = self.logic.process(
                    self._inputs(), echoTimesMs=parseEchoTimes(p.echoTimesText),
                    segmentationNode=p.segmentationNode,
                    segmentIds=[i for i in p.segmentIds.split(",") if i] or None,
                    method=p.method, fieldStrengthT=p.fieldStrength or None,
                    # the preselected default is not an explicit choice: on data from another
                    # field it gives "LIC not computed" with the reason, instead of an error
                    calibration=None if p.calibration == DEFAULT_CALIBRATION else p.calibration,
                    maskThreshold=p.maskThreshold or None,
                    noiseSigma=p.noiseSigma or None, coils=p.coils or None,
                    convertField=p.convertField, progress=onProgress,
                    cancel=lambda: progress.wasCanceled, reuseOutputs=not p.createNewOutputs)
            except FitCancelled:
                slicer.util.showStatusMessage(_("Iron mapping cancelled; the scene is unchanged."), 5000)
                return
            finally:
                progress.close()
            self.lastResult = result
            self.showResult(result)

    def showResult(self, result) -> None:
        """R2* over the first echo with its colour legend; table and plot in the layout."""
        from IronMapping.headline import headline_html

        self.ui.patternLabel.textFormat = qt.Qt.RichText
        footer = _("Method {method}; {seconds:.1f} s.").format(method=result.fit.method, seconds=result.seconds)
        self._parameterNode.patternText = headline_html(result.summary, flavour="qt",
                                                        warnings=result.warnings[:6], footer=footer)
        inputs = self._inputs()
        background = self.logic.inspectInput(inputs)["displayNode"]
        if background is None and not isinstance(inputs, list):
            background = inputs if isinstance(inputs, vtkMRMLScalarVolumeNode) else None
        if isinstance(inputs, list):
            background = inputs[0]
        slicer.util.setSliceViewerLayers(background=background or "keep-current",
                                         foreground=result["r2star"], foregroundOpacity=0.6, fit=True)
        layoutManager = slicer.app.layoutManager()
        if layoutManager is not None:
            layoutManager.setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpPlotTableView)
        appLogic = slicer.app.applicationLogic()
        selection = appLogic.GetSelectionNode()
        selection.SetActiveTableID(result["table"].GetID())
        appLogic.PropagateTableSelection()
        if "plot" in result:
            selection.SetActivePlotChartID(result["plot"].GetID())
            appLogic.PropagatePlotChartSelection()


#
# IronMappingTest
#


class IronMappingTest(ScriptedLoadableModuleTest):
    """The panel's click path in Slicer, on the phantom from Sample Data, checked against its truth.

    Sample Data -> the widget's selectors -> Apply button -> maps, table, pattern text; Segment
    Statistics with the Iron Mapping plugin; the echo-volume path; cancelling through the progress
    dialog; bad input. Written against Slicer 5.8/5.10 (SampleData.downloadSample,
    SegmentStatisticsLogic, slicer.util.createProgressDialog). The parts that need no Qt are also
    in the pytest suite (Testing/test_sample_data.py, test_segment_statistics_plugin.py).
    """

    SAMPLE = "IronPhantomNeonatalHaemochromatosis"

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        for test in (self.test_IronMapping_sample_data_click_path, self.test_IronMapping_echo_volumes_click_path,
                     self.test_IronMapping_cancel_through_progress_dialog, self.test_IronMapping_bad_input_leaves_scene):
            self.setUp()
            test()

    # ---- helpers ---------------------------------------------------------------------------

    def _loadSample(self):
        """The phantom through Sample Data, as a tutorial or script loads it; with its truth."""
        import SampleData

        from IronMapping.phantom import make_phantom
        from IronMapping.sample_data import read_recipe, recipe_path

        _registerWithOtherModules()  # done at start-up; again is harmless
        sequence = SampleData.downloadSample(self.SAMPLE)
        self.assertIsNotNone(sequence, "SampleData.downloadSample returned nothing")
        self.assertTrue(sequence.IsA("vtkMRMLSequenceNode"))
        self.assertEqual(sequence.GetName(), self.SAMPLE)
        segmentation = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLSegmentationNode")
        self.assertIsNotNone(segmentation, "the phantom's organ segmentation was not loaded")
        recipe = read_recipe(recipe_path(self.SAMPLE))
        return sequence, segmentation, make_phantom(recipe["preset"], **recipe["options"])

    def _widget(self):
        slicer.util.selectModule("IronMapping")
        widget = slicer.modules.IronMappingWidget
        widget.lastResult = None
        return widget

    def _select(self, widget, inputNode, segmentation):
        """Choose the series and the segmentation in the panel's selectors."""
        widget.ui.inputSelector.setCurrentNode(inputNode)
        widget.ui.segmentationSelector.setCurrentNode(segmentation)
        slicer.app.processEvents()
        parameters = widget._parameterNode
        if inputNode is not None:
            self.assertEqual(parameters.inputNode.GetID(), inputNode.GetID())
        self.assertEqual(parameters.segmentationNode.GetID(), segmentation.GetID())

    def _checkOrgans(self, summary, truth, tolerance=0.1):
        regions = {r["name"]: r for r in summary["regions"]}
        self.assertEqual(set(regions), set(truth.region_r2star))
        for name, r2star in truth.region_r2star.items():
            median = regions[name]["r2star_median"]
            self.assertLess(abs(median - r2star) / r2star, tolerance,
                            f"{name}: R2* {median:.1f} 1/s, truth {r2star:.1f} 1/s")
        return regions

    # ---- tests -----------------------------------------------------------------------------

    def test_IronMapping_sample_data_click_path(self):
        from IronMapping import segment_statistics
        from IronMapping.scene import table_rows

        self.delayDisplay("Loading the phantom from Sample Data")
        sequence, segmentation, truth = self._loadSample()
        widget = self._widget()

        self.delayDisplay("Selecting the series and the segmentation")
        self._select(widget, sequence, segmentation)
        self.assertEqual(parseEchoTimes(widget.ui.echoTimesLineEdit.text), [float(t) for t in truth.image.echo_times_ms])
        self.assertAlmostEqual(widget._parameterNode.fieldStrength, truth.image.field_strength_t)
        self.assertTrue(widget.ui.applyButton.enabled)

        self.delayDisplay("Apply")
        widget.ui.applyButton.click()
        result = widget.lastResult
        self.assertIsNotNone(result, "Apply did not produce a result")
        for key in ("r2star", "t2star", "s0", "quality", "status", "table", "plot"):
            self.assertIn(key, result)
        self.assertEqual(result["r2star"].GetAttribute("IronMapping.Unit"), "1/s")
        self.assertEqual(result["t2star"].GetAttribute("IronMapping.Unit"), "ms")
        r2star = slicer.util.arrayFromVolume(result["r2star"])
        self.assertEqual(r2star.shape, truth.r2star.shape)
        regions = self._checkOrgans(result.summary, truth)

        # the table shown in the layout: one row per segment, the summary's numbers
        selection = slicer.app.applicationLogic().GetSelectionNode()
        self.assertEqual(selection.GetActiveTableID(), result["table"].GetID())
        rows = {row["Region"]: row for row in table_rows(result["table"])}
        self.assertEqual(set(rows), set(regions))
        self.assertEqual(rows["liver"]["R2* median (1/s)"], round(regions["liver"]["r2star_median"], 1))
        self.assertIsNotNone(regions["liver"]["lic_mg_per_g"])

        # the pattern sentence in the panel: extrahepatic siderosis with the spleen spared
        self.assertEqual(result.summary["pattern"]["kind"], "parenchymal")
        self.assertIn(result.pattern_text, widget.ui.patternLabel.text)
        self.assertIn("spleen", widget.ui.patternLabel.text.lower())

        self.delayDisplay("Segment Statistics with the Iron Mapping plugin")
        import SegmentStatistics

        self.assertIn(segment_statistics.plugin_class(), SegmentStatistics.SegmentStatisticsLogic.registeredPlugins)
        statisticsLogic = SegmentStatistics.SegmentStatisticsLogic()  # every plugin's measurement info is built here
        values = segment_statistics.run_segment_statistics(statisticsLogic, segmentation, result["r2star"])
        self.assertEqual(set(values), set(regions))
        for name, organ in values.items():
            self.assertAlmostEqual(organ["r2star_median"], regions[name]["r2star_median"], delta=0.01 * regions[name]["r2star_median"])
        self.assertAlmostEqual(values["liver"]["lic"], regions["liver"]["lic_mg_per_g"], delta=0.05 * regions["liver"]["lic_mg_per_g"])
        exported = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTableNode", "Iron Mapping segment statistics")
        statisticsLogic.exportToTable(exported)
        self.assertEqual(exported.GetNumberOfRows(), len(values))
        self.assertGreaterEqual(exported.GetColumnIndex(segment_statistics.PLUGIN_CLASS_NAME + ".r2star_median"), 0)

        self.delayDisplay("Apply again: outputs are updated, not duplicated")
        count = slicer.mrmlScene.GetNumberOfNodes()
        widget.ui.applyButton.click()
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), count)
        self.delayDisplay("Click path passed")

    def test_IronMapping_echo_volumes_click_path(self):
        from IronMapping.sample_data import echo_volumes

        self.delayDisplay("Echo volumes loaded one by one")
        sequence, segmentation, truth = self._loadSample()
        volumes = echo_volumes(sequence)
        widget = self._widget()
        self._select(widget, None, segmentation)
        for volume in volumes:
            widget.ui.echoVolumesSelector.setCheckState(volume, qt.Qt.Checked)
        slicer.app.processEvents()
        self.assertEqual([v.GetID() for v in widget._parameterNode.echoVolumes], [v.GetID() for v in volumes])
        widget.ui.echoTimesLineEdit.text = ", ".join(f"{t:g}" for t in truth.image.echo_times_ms)
        widget.ui.fieldStrengthSpinBox.value = truth.image.field_strength_t
        slicer.app.processEvents()
        self.assertEqual(parseEchoTimes(widget._parameterNode.echoTimesText), [float(t) for t in truth.image.echo_times_ms])

        widget.ui.applyButton.click()
        result = widget.lastResult
        self.assertIsNotNone(result, "Apply on echo volumes did not produce a result")
        self._checkOrgans(result.summary, truth)
        for volume in volumes:  # uncheck, so later runs use the series again
            widget.ui.echoVolumesSelector.setCheckState(volume, qt.Qt.Unchecked)
        self.delayDisplay("Echo-volume path passed")

    def test_IronMapping_cancel_through_progress_dialog(self):
        self.delayDisplay("Cancel in the progress dialog")
        sequence, segmentation, _truth = self._loadSample()
        widget = self._widget()
        self._select(widget, sequence, segmentation)
        count = slicer.mrmlScene.GetNumberOfNodes()
        dialogs = []
        createProgressDialog = slicer.util.createProgressDialog

        def pressCancel(dialog):
            buttons = slicer.util.findChildren(dialog, className="QPushButton")
            if buttons:
                buttons[0].click()  # the dialog's Cancel button
            else:
                dialog.cancel()

        def createDialogAndPressCancel(*args, **kwargs):
            dialog = createProgressDialog(*args, **kwargs)
            dialogs.append(dialog)
            qt.QTimer.singleShot(0, lambda: pressCancel(dialog))  # on the first progress update
            return dialog

        slicer.util.createProgressDialog = createDialogAndPressCancel
        try:
            widget.ui.applyButton.click()
        finally:
            slicer.util.createProgressDialog = createProgressDialog
        self.assertEqual(len(dialogs), 1, "Apply did not open a progress dialog")
        self.assertTrue(dialogs[0].wasCanceled)
        self.assertIsNone(widget.lastResult, "a cancelled run must not produce a result")
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), count, "a cancelled run must leave the scene unchanged")
        self.delayDisplay("Cancel passed")

    def test_IronMapping_bad_input_leaves_scene(self):
        from IronMapping import sample_data
        from IronMapping.errors import EchoTimeError

        sequence, segmentation, _phantom = sample_data.load_phantom(shape=(8, 48, 64), snr=50.0, coils=4, seed=3)
        sequence.RemoveAttribute("MultiVolume.FrameLabels")
        count = slicer.mrmlScene.GetNumberOfNodes()
        with self.assertRaises(EchoTimeError):
            IronMappingLogic().process(sequence, segmentationNode=segmentation)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), count)
        self.delayDisplay("Bad input refused, scene unchanged")
