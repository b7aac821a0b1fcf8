"""Focal findings in the scene: the "<input> focal findings" segmentation and its table,
written by IronMapping.scene on a real MRML scene (slicer-core) and by IronMappingLogic."""

from __future__ import annotations

import numpy as np
import pytest

from mrml_fixtures import mrml_scene, slicer  # noqa: F401

from IronMapping import scene as mrml
from IronMapping.focal import mask_from_runs
from IronMapping.logic import IronMappingLogic
from IronMapping.phantom import make_focal_phantom


@pytest.fixture(scope="module")
def phantom():
    return make_focal_phantom("normal", with_phase=False, snr=30, coils=4, seed=21)


def _segments(node):
    seg = node.GetSegmentation()
    return [seg.GetNthSegment(n) for n in range(seg.GetNumberOfSegments())]


def test_logic_process_makes_the_findings_segmentation_and_table(mrml_scene, phantom):
    sequence, _ = mrml.add_multiecho_sequence(phantom.image, "patient 2 mGRE", scene=mrml_scene)
    organs = mrml.add_label_segmentation(phantom.labels, phantom.label_names,
                                         phantom.image.ijk_to_ras, "organs", scene=mrml_scene)
    logic = IronMappingLogic()
    result = logic.process(sequence, segmentationNode=organs, fieldStrengthT=1.5, scene=mrml_scene)
    findings = result.summary["focal_findings"]
    assert len(findings) == len(phantom.focal_truth) == 3
    node = result["focal_segmentation"]
    assert node.GetName() == "patient 2 mGRE focal findings"
    segments = _segments(node)
    assert len(segments) == 3
    by_id = {f["id"]: f for f in findings}
    for segment in segments:
        finding = by_id[_tag(segment, "IronMapping.FocalFinding")]
        assert segment.GetName() == mrml.focal_segment_name(finding)
        assert "iron-dense" in segment.GetName() and "mL" in segment.GetName()
        assert tuple(round(c, 3) for c in segment.GetColor()) == \
            tuple(round(c, 3) for c in mrml.FOCAL_COLOURS["iron-dense"])
        assert _tag(segment, "IronMapping.FocalKind") == "iron-dense"
    # segment voxels are the finding's voxels on the input grid
    labelmap = mrml_scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "check")
    reference = result["r2star"]
    ids = [node.GetSegmentation().GetNthSegmentID(n) for n in range(3)]
    import vtk

    id_list = vtk.vtkStringArray()
    for sid in ids:
        id_list.InsertNextValue(sid)
    assert slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
        node, id_list, labelmap, reference)
    exported = slicer.util.arrayFromVolume(labelmap)
    union = np.zeros(phantom.labels.shape, bool)
    for f in findings:
        union |= mask_from_runs(f["mask_runs"], phantom.labels.shape)
    assert np.array_equal(exported > 0, union)
    table = result["focal_table"]
    rows = mrml.table_rows(table)
    assert len(rows) == 3 and {"Volume (mL)", "Reading", "Centroid R (mm)"} <= set(rows[0])
    assert table.GetName() == "patient 2 mGRE focal findings table"

    # re-running updates the same nodes (no copies), with the same segments
    n_nodes = mrml_scene.GetNumberOfNodes()
    again = logic.process(sequence, segmentationNode=organs, fieldStrengthT=1.5, scene=mrml_scene)
    assert again["focal_segmentation"] is node and again["focal_table"] is table
    assert len(_segments(node)) == 3
    assert mrml_scene.GetNumberOfNodes() == n_nodes


def _tag(segment, name):
    import vtk

    text = vtk.reference("")
    assert segment.GetTag(name, text), name
    return str(text)


def test_write_focal_findings_replaces_old_segments_and_colours_by_kind(mrml_scene, phantom):
    sequence, _ = mrml.add_multiecho_sequence(phantom.image, "study", scene=mrml_scene)
    desc = mrml.describe_input(sequence, mrml_scene)
    shape = phantom.labels.shape
    a = np.zeros(shape, bool)
    a[7, 40:44, 40:44] = True
    b = np.zeros(shape, bool)
    b[7, 60:63, 60:63] = True
    from IronMapping.focal import mask_runs

    findings = [
        {"id": "F1", "label_value": 1, "kind": "iron-sparing", "region": "liver", "volume_ml": 0.9,
         "n_voxels": 16, "mask_runs": mask_runs(a), "reading": "sparing"},
        {"id": "F2", "label_value": 2, "kind": "iron-dense", "region": "liver", "volume_ml": 0.5,
         "n_voxels": 9, "mask_runs": mask_runs(b), "reading": "dense",
         "field_shift": {"sign": "diamagnetic"}},
    ]
    out = mrml.write_focal_findings(desc, phantom.image, findings, scene=mrml_scene)
    segments = {s.GetName(): s for s in _segments(out["focal_segmentation"])}
    assert set(segments) == {"F1 iron-sparing liver 0.9 mL", "F2 iron-dense liver 0.5 mL"}
    colour = lambda s: tuple(round(c, 3) for c in s.GetColor())  # noqa: E731
    assert colour(segments["F1 iron-sparing liver 0.9 mL"]) == mrml.FOCAL_COLOURS["iron-sparing"]
    assert colour(segments["F2 iron-dense liver 0.5 mL"]) == mrml.FOCAL_COLOURS["iron-dense diamagnetic"]
    # a later run without findings empties the same node and says so
    again = mrml.write_focal_findings(desc, phantom.image, [], scene=mrml_scene)
    assert again["focal_segmentation"] is out["focal_segmentation"]
    assert _segments(again["focal_segmentation"]) == []
    assert "No focal finding" in again["focal_segmentation"].GetAttribute("IronMapping.Text")
    assert mrml.table_rows(again["focal_table"]) == []
