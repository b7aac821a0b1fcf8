"""The scripting contract of IronMappingLogic (README; used by checks outside the project).

``from IronMapping.logic import IronMappingLogic`` works without Qt, and
``IronMappingLogic().process(inputNode, echoTimesMs=None, segmentationNode=None, method="auto",
fieldStrengthT=None, calibration=None)`` gives the output nodes by key.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest

from mrml_fixtures import count_nodes, mrml_scene, slicer  # noqa: F401

from IronMapping import scene as mrml
from IronMapping.errors import CalibrationError, FitCancelled, InputError
from IronMapping.logic import WHOLE_IMAGE_REGION, IronMappingLogic, model_curve
from IronMapping.phantom import PRESETS, make_phantom

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def phantom():
    return make_phantom("transfusional", shape=(4, 32, 40), snr=60.0, coils=4, seed=5)


@pytest.fixture
def loaded(mrml_scene, phantom):
    sequence, _ = mrml.add_multiecho_sequence(phantom.image, "patient 1 mGRE", scene=mrml_scene)
    segmentation = mrml.add_label_segmentation(phantom.labels, phantom.label_names,
                                               phantom.image.ijk_to_ras, "organs", scene=mrml_scene)
    return sequence, segmentation


def test_logic_imports_without_qt_and_without_slicer():
    code = ("import sys; sys.modules['qt'] = None; sys.modules['ctk'] = None; sys.modules['slicer'] = None\n"
            "from IronMapping.logic import IronMappingLogic\n"
            "logic = IronMappingLogic()\n"
            "assert callable(logic.process)\n"
            "print('ok')")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_process_contract(loaded, phantom):
    sequence, segmentation = loaded
    result = IronMappingLogic().process(sequence, echoTimesMs=None, segmentationNode=segmentation,
                                        method="auto", fieldStrengthT=None, calibration=None)
    assert isinstance(result, Mapping)
    for key in ("r2star", "t2star", "s0", "quality", "status"):
        assert result[key].IsA("vtkMRMLVolumeNode"), key
        assert result[key].GetScene() is slicer.mrmlScene
    assert result["table"].IsA("vtkMRMLTableNode")
    assert result["plot"].IsA("vtkMRMLPlotChartNode")
    regions = result.summary["regions"]
    assert {"name", "organ", "n_voxels", "volume_ml", "r2star_median", "r2star_mean", "r2star_sd",
            "t2star_median", "r2star_roi_fit", "lic_mg_per_g", "grade"} <= set(regions[0])
    assert {"kind", "extrahepatic_siderosis", "spleen_spared", "text"} <= set(result.summary["pattern"])
    assert result.pattern_text == result.summary["pattern"]["text"]
    assert result.fit.method != "auto"  # resolved to a concrete method
    liver = next(r for r in regions if r["organ"] == "liver")
    assert liver["r2star_median"] == pytest.approx(phantom.region_r2star["liver"], rel=0.08)
    assert liver["lic_mg_per_g"] is not None


def test_without_segmentation_the_table_summarises_all_fitted_voxels(loaded):
    sequence, _ = loaded
    result = IronMappingLogic().process(sequence)
    rows = mrml.table_rows(result["table"])
    assert [r["Region"] for r in rows] == [WHOLE_IMAGE_REGION]
    n_fitted = int(np.count_nonzero(result.fit.fitted))
    assert rows[0]["Voxels (n)"] == n_fitted


def test_progress_and_cancel(loaded):
    sequence, _ = loaded
    seen = []
    IronMappingLogic().process(sequence, progress=seen.append)
    assert seen and seen[-1] == 1.0 and all(b >= a for a, b in zip(seen, seen[1:]))
    before = count_nodes(slicer.mrmlScene)
    with pytest.raises(FitCancelled):
        IronMappingLogic().process(sequence, cancel=lambda: True)
    assert count_nodes(slicer.mrmlScene) == before


def test_calibration_field_strength_rules(mrml_scene):
    ph3 = make_phantom("transfusional", shape=(3, 28, 36), field_strength_t=3.0, snr=60.0, coils=4, seed=8)
    sequence, _ = mrml.add_multiecho_sequence(ph3.image, "3T", scene=mrml_scene)
    segmentation = mrml.add_label_segmentation(ph3.labels, ph3.label_names, ph3.image.ijk_to_ras,
                                               "organs", scene=mrml_scene)
    before = count_nodes(mrml_scene)
    with pytest.raises(CalibrationError):  # a 1.5 T calibration asked for explicitly on 3 T data
        IronMappingLogic().process(sequence, segmentationNode=segmentation, calibration="wood2005")
    assert count_nodes(mrml_scene) == before
    converted = IronMappingLogic().process(sequence, segmentationNode=segmentation, calibration="wood2005",
                                           convertField=True)
    liver = next(r for r in converted.summary["regions"] if r["organ"] == "liver")
    assert liver["lic_mg_per_g"] is not None
    calibration = json.loads(converted["table"].GetAttribute("IronMapping.Calibration"))
    assert calibration["conversion"] and calibration["warnings"]


def test_field_strength_given_overrides_metadata(loaded):
    sequence, segmentation = loaded
    info = IronMappingLogic.inspectInput(sequence)
    assert info["fieldStrengthT"] == 1.5 and info["numberOfEchoes"] == 12
    assert info["echoTimeSource"] == "MultiVolume.FrameLabels"
    result = IronMappingLogic().process(sequence, fieldStrengthT=3.0, segmentationNode=segmentation)
    assert result["r2star"].GetAttribute("IronMapping.FieldStrengthT") == "3"
    assert result.summary["field_strength_t"] == 3.0


def test_mask_threshold(loaded, phantom):
    sequence, _ = loaded
    result = IronMappingLogic().process(sequence, maskThreshold=300.0)
    masked = result.fit.status == 0
    assert np.array_equal(masked, ~(phantom.image.signal[0] > 300.0))
    before = count_nodes(slicer.mrmlScene)
    with pytest.raises(InputError, match="mask threshold"):
        IronMappingLogic().process(sequence, maskThreshold=1e9)
    assert count_nodes(slicer.mrmlScene) == before


def test_no_scene_is_a_clear_error(phantom):
    had = hasattr(slicer, "mrmlScene")
    saved = getattr(slicer, "mrmlScene", None)
    if had:
        del slicer.mrmlScene
    try:
        with pytest.raises(InputError, match="No MRML scene"):
            IronMappingLogic().process(None)
    finally:
        if had:
            slicer.mrmlScene = saved


def test_missing_input_is_a_clear_error(mrml_scene):
    with pytest.raises(InputError, match="No input selected"):
        IronMappingLogic().process(None)


def test_model_curve():
    t = np.array([0.0, 10.0])
    np.testing.assert_allclose(model_curve(t, 100.0, 100.0), [100.0, 100.0 * np.exp(-1.0)])
    floor = model_curve(np.array([1e6]), 100.0, 100.0, "noise-corrected", noise_sigma=2.0, coils=4)
    assert floor[0] == pytest.approx(np.sqrt(2 * 4 * 4.0))


def test_methods_and_calibrations_lists():
    assert "auto" in IronMappingLogic.methods() and "fat-water" in IronMappingLogic.methods()
    calibrations = IronMappingLogic.calibrations()
    from IronMapping.calibration import DEFAULT_CALIBRATION

    assert next(iter(calibrations)) == DEFAULT_CALIBRATION


def test_sample_data_phantom_loads_like_a_multivolume_import(mrml_scene):
    from IronMapping import sample_data

    before = count_nodes(mrml_scene)
    sequence, segmentation, truth = sample_data.load_phantom("normal", shape=(3, 24, 32), seed=1)
    assert count_nodes(mrml_scene) > before
    assert sequence.GetAttribute("MultiVolume.FrameIdentifyingDICOMTagName") == "EchoTime"
    assert sequence.GetIndexName() == "frame"  # index values are frame numbers, as in Slicer
    info = IronMappingLogic.inspectInput(sequence)
    assert info["echoTimesMs"] == [float(t) for t in truth.image.echo_times_ms]
    assert info["fieldStrengthT"] == truth.image.field_strength_t
    names = [segmentation.GetSegmentation().GetNthSegment(i).GetName()
             for i in range(segmentation.GetSegmentation().GetNumberOfSegments())]
    assert names == [truth.label_names[v] for v in sorted(truth.label_names)]
    assert set(sample_data.SAMPLES.values()) <= set(PRESETS)
    # outside the application there is no Sample Data module to register with
    assert sample_data.register() is False
    from IronMapping import segment_statistics

    assert segment_statistics.register() is False


def test_label_map_node_as_segmentation_is_refused_with_advice(mrml_scene, loaded, phantom):
    from mrml_fixtures import volume_node_from_array

    sequence, _ = loaded
    labelmap = volume_node_from_array(mrml_scene, phantom.labels.astype(np.int16),
                                      phantom.image.ijk_to_ras, "organ labels",
                                      class_name="vtkMRMLLabelMapVolumeNode")
    before = count_nodes(mrml_scene)
    with pytest.raises(InputError, match="label map volume, not a segmentation") as err:
        IronMappingLogic().process(sequence, segmentationNode=labelmap)
    assert "convert the label map" in str(err.value) and "organ labels" in str(err.value)
    with pytest.raises(InputError, match="not a segmentation"):
        IronMappingLogic().process(sequence, segmentationNode=sequence)
    assert count_nodes(mrml_scene) == before


def test_summary_says_where_the_field_strength_came_from(loaded):
    sequence, segmentation = loaded
    result = IronMappingLogic().process(sequence, segmentationNode=segmentation, fieldStrengthT=1.5)
    assert "given by the user" in result.summary["field_strength_source"]
    assert "given by the user" in result["table"].GetAttribute("IronMapping.FieldStrengthSource")
