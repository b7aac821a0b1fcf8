"""IronMapping.scene and the logic on a real MRML scene (slicer-core), no mocks.

A volume sequence with MultiVolume attributes (as MultiVolumeImporter loads multi-echo DICOM)
plus a segmentation on a DIFFERENT grid must give maps identical to the library's fit, a table
identical to the quantification's, labelled attributes; the saved and reloaded scene keeps them;
re-running updates in place; bad input leaves the scene untouched.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from mrml_fixtures import count_nodes, mrml_scene, save_and_reload, slicer, volume_node_from_array  # noqa: F401

from IronMapping import scene as mrml
from IronMapping.errors import EchoTimeError, GeometryError, InputError, IronMappingError
from IronMapping.logic import IronMappingLogic
from IronMapping.phantom import make_phantom
from IronMapping.quantification import regions_table, summarize
from IronMapping.relaxometry import Status, fit

SHAPE = (6, 36, 48)


@pytest.fixture(scope="module")
def phantom():
    return make_phantom("neonatal-haemochromatosis", shape=SHAPE, snr=60.0, coils=4, seed=11)


def fine_segmentation(scene, phantom, factor=3, name="organs (fine grid)"):
    """The phantom's organs drawn on a grid 3x finer in i and j, shifted so that every third
    fine voxel centre sits on an echo voxel centre (nearest-neighbour resampling is exact)."""
    labels = np.repeat(np.repeat(phantom.labels, factor, axis=1), factor, axis=2)
    m = phantom.image.ijk_to_ras.copy()
    fine = m.copy()
    fine[:3, 0] = m[:3, 0] / factor
    fine[:3, 1] = m[:3, 1] / factor
    fine[:3, 3] = m[:3, 3] - (factor - 1) / (2.0 * factor) * (m[:3, 0] + m[:3, 1])
    return mrml.add_label_segmentation(labels, phantom.label_names, fine, name, scene=scene)


def test_sequence_and_finer_segmentation_give_the_library_results(mrml_scene, phantom):
    sequence, proxy = mrml.add_multiecho_sequence(phantom.image, "Study 7 mGRE", scene=mrml_scene)
    segmentation = fine_segmentation(mrml_scene, phantom)
    seg_image = segmentation.GetSegmentation().GetNthSegment(0)
    assert seg_image is not None
    # the segmentation really lives on another grid
    labelmap = slicer.vtkOrientedImageData()
    segmentation.GetBinaryLabelmapRepresentation(segmentation.GetSegmentation().GetNthSegmentID(0), labelmap)
    assert labelmap.GetSpacing()[0] == pytest.approx(phantom.image.spacing_mm[0] / 3)

    result = IronMappingLogic().process(sequence, segmentationNode=segmentation)

    # maps equal to the library's fit on the same signal and echo times
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the engine's notes (estimated coil count) are not under test
        expected = fit(phantom.image.signal, phantom.image.echo_times_ms,
                       field_strength_t=phantom.image.field_strength_t)
    for key in ("r2star", "t2star", "s0", "quality", "status"):
        node = result[key]
        array = slicer.util.arrayFromVolume(node)
        np.testing.assert_array_equal(array, getattr(expected, key), err_msg=key)
        np.testing.assert_allclose(mrml.volume_geometry(node)[1], phantom.image.ijk_to_ras, atol=1e-9)
    assert result["status"].IsA("vtkMRMLLabelMapVolumeNode")

    # labelled attributes
    attrs = mrml.output_attributes(result["r2star"])
    assert result["r2star"].GetName() == "Study 7 mGRE R2*"
    assert attrs["Quantity"] == "R2*" and attrs["Unit"] == "1/s"
    assert mrml.output_attributes(result["t2star"])["Unit"] == "ms"
    assert attrs["Method"] == expected.method
    assert [float(t) for t in attrs["EchoTimesMs"].split(",")] == list(phantom.image.echo_times_ms)
    assert attrs["EchoTimeSource"] == "MultiVolume.FrameLabels"
    from IronMapping import __version__

    assert attrs["Version"] == __version__ and __version__ in attrs["Software"]
    assert attrs["FieldStrengthT"] == "1.5"
    codes = mrml.output_attributes(result["status"])["StatusCodes"]
    assert "FITTED" in codes and "MASKED" in codes

    # regions resampled from the finer grid equal the phantom's labels
    regions = mrml.region_labels(segmentation, None, result.image, mrml_scene)
    np.testing.assert_array_equal(regions.labels, phantom.labels)

    # the table holds exactly the quantification's numbers
    summary = summarize(expected, phantom.labels, phantom.label_names, phantom.image.field_strength_t,
                        signal=phantom.image.signal, echo_times_ms=phantom.image.echo_times_ms,
                        voxel_volume_ml=phantom.image.voxel_volume_ml)
    want = regions_table(summary)
    got = mrml.table_rows(result["table"])
    assert len(got) == len(want) == len(phantom.label_names)
    for row_want, row_got in zip(want, got):
        for column, value in row_want.items():
            if value is None:  # empty cell: "" in a text column, NaN in a numeric one
                got_value = row_got[column]
                assert got_value == "" or (isinstance(got_value, float) and np.isnan(got_value)), column
            elif isinstance(value, str):
                assert row_got[column] == value, column
            else:
                assert row_got[column] == pytest.approx(float(value), rel=1e-9), (row_want["Region"], column)
    assert result["table"].GetColumnUnitLabel("R2* median (1/s)") == "1/s"
    assert result["table"].GetAttribute("IronMapping.Pattern") == summary["pattern"]["text"]

    # the numbers are right, not just consistent: median R2* near the truth in every organ
    for region in result.summary["regions"]:
        truth = phantom.region_r2star[region["name"]]
        assert region["r2star_median"] == pytest.approx(truth, rel=0.08), region["name"]

    # one plot series pair (mean points + fitted curve) per segment, on a data table
    chart = result["plot"]
    assert chart.GetNumberOfPlotSeriesNodes() == 2 * len(phantom.label_names)
    data = mrml.find_output(sequence, "plot-data", mrml_scene)
    liver_mean = slicer.util.arrayFromTableColumn(data, "liver mean signal (a.u.)")[:phantom.image.n_echoes]
    # the ROI fit (noise-corrected) works on the root mean square signal: the points are that
    liver_signal = phantom.image.signal[:, phantom.labels == 1].astype(np.float64)
    np.testing.assert_allclose(liver_mean, np.sqrt((liver_signal**2).mean(axis=1)), rtol=1e-5)


def test_saved_scene_reloads_with_maps_attributes_units_and_table(mrml_scene, phantom, tmp_path):
    sequence, _ = mrml.add_multiecho_sequence(phantom.image, "echoes", scene=mrml_scene)
    segmentation = fine_segmentation(mrml_scene, phantom)
    result = IronMappingLogic().process(sequence, segmentationNode=segmentation)
    r2 = np.array(slicer.util.arrayFromVolume(result["r2star"]))
    attrs = mrml.output_attributes(result["r2star"])
    rows = mrml.table_rows(result["table"])

    setup, _path = save_and_reload(mrml_scene, tmp_path / "bundle")
    try:
        loaded = setup.scene
        new_sequence = loaded.GetFirstNodeByName("echoes")
        assert new_sequence is not None and new_sequence.GetNumberOfDataNodes() == phantom.image.n_echoes
        outputs = mrml.outputs_of(new_sequence, loaded)
        assert {"r2star", "t2star", "s0", "quality", "status", "table", "plot"} <= set(outputs)
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(outputs["r2star"]), r2)
        assert mrml.output_attributes(outputs["r2star"]) == attrs
        assert outputs["status"].IsA("vtkMRMLLabelMapVolumeNode")
        table = outputs["table"]
        assert table.GetColumnUnitLabel("R2* median (1/s)") == "1/s"
        assert table.GetColumnUnitLabel("T2* median (ms)") == "ms"
        reloaded_rows = mrml.table_rows(table)
        assert [r["Region"] for r in reloaded_rows] == [r["Region"] for r in rows]
        for before, after in zip(rows, reloaded_rows):
            # Slicer writes table cells with 6 significant digits
            assert after["R2* median (1/s)"] == pytest.approx(before["R2* median (1/s)"], rel=1e-5)
            assert after["Grade"] == before["Grade"]
        # ... and the full-precision summary travels with the table
        import json

        saved = json.loads(table.GetAttribute("IronMapping.Summary"))
        assert saved["regions"] == result.summary["regions"]
        assert table.GetAttribute("IronMapping.Pattern") == result.pattern_text
        # the reloaded scene is usable: re-running updates the reloaded outputs in place
        count = loaded.GetNumberOfNodes()
        again = IronMappingLogic().process(new_sequence, segmentationNode=loaded.GetFirstNodeByName(
            segmentation.GetName()), scene=loaded)
        assert loaded.GetNumberOfNodes() == count
        assert again["r2star"].GetID() == outputs["r2star"].GetID()
    finally:
        setup.close()


def test_rerun_updates_outputs_in_place(mrml_scene, phantom):
    sequence, _ = mrml.add_multiecho_sequence(phantom.image, "echoes", scene=mrml_scene)
    segmentation = fine_segmentation(mrml_scene, phantom)
    logic = IronMappingLogic()
    first = logic.process(sequence, segmentationNode=segmentation)
    count = count_nodes(mrml_scene)
    first["r2star"].SetName("renamed by the user")
    second = logic.process(sequence, segmentationNode=segmentation, method="nlls")
    assert count_nodes(mrml_scene) == count
    assert {k: n.GetID() for k, n in first.items()} == {k: n.GetID() for k, n in second.items()}
    assert second["r2star"].GetAttribute("IronMapping.Method") == "nlls"
    # fewer segments: stale plot series are removed, nothing piles up
    ids = mrml.segment_ids_of(segmentation)[:2]
    third = logic.process(sequence, segmentationNode=segmentation, segmentIds=ids)
    assert third["plot"].GetNumberOfPlotSeriesNodes() == 4
    assert len(mrml.table_rows(third["table"])) == 2
    assert count_nodes(mrml_scene) == count - 2 * (len(phantom.label_names) - 2)
    # asked for new nodes: they are added
    fourth = logic.process(sequence, reuseOutputs=False)
    assert fourth["r2star"].GetID() != first["r2star"].GetID()


def _single_echo_sequence(scene, phantom):
    sequence = scene.AddNewNodeByClass("vtkMRMLSequenceNode", "one echo")
    frame = slicer.vtkMRMLScalarVolumeNode()
    slicer.util.updateVolumeFromArray(frame, phantom.image.signal[0])
    sequence.SetDataNodeAtValue(frame, "0")
    sequence.SetAttribute("MultiVolume.FrameLabels", "1.0")
    sequence.SetAttribute("MultiVolume.FrameIdentifyingDICOMTagName", "EchoTime")
    return sequence


@pytest.mark.parametrize("case", ["no echo times", "one echo", "mismatched geometry", "empty segment",
                                  "segment outside", "frames are not echoes", "too few echo times"])
def test_bad_input_leaves_the_scene_unchanged(mrml_scene, phantom, case):
    sequence, _ = mrml.add_multiecho_sequence(phantom.image, "echoes", scene=mrml_scene)
    segmentation = mrml.add_label_segmentation(phantom.labels, phantom.label_names,
                                               phantom.image.ijk_to_ras, "organs", scene=mrml_scene)
    kwargs = {"segmentationNode": segmentation}
    target = sequence
    expected_error, words = InputError, ""
    if case == "no echo times":
        sequence.RemoveAttribute("MultiVolume.FrameLabels")
        expected_error, words = EchoTimeError, "echo time"
    elif case == "one echo":
        target = _single_echo_sequence(mrml_scene, phantom)
        kwargs = {}
        expected_error, words = EchoTimeError, "at least two"
    elif case == "mismatched geometry":
        m = phantom.image.ijk_to_ras
        shifted = m.copy()
        shifted[0, 3] += 5.0
        target = [volume_node_from_array(mrml_scene, phantom.image.signal[e], m if e != 2 else shifted, f"echo {e + 1}")
                  for e in range(4)]
        kwargs = {"echoTimesMs": list(phantom.image.echo_times_ms[:4])}
        expected_error, words = GeometryError, "grid"
    elif case == "empty segment":
        segmentation.GetSegmentation().AddEmptySegment("empty_id", "nothing drawn")
        expected_error, words = InputError, "nothing drawn"
    elif case == "segment outside":
        far = phantom.image.ijk_to_ras.copy()
        far[:3, 3] += 5000.0
        outside = mrml.add_label_segmentation(np.ones((2, 2, 2), np.uint8), {1: "far away"}, far,
                                              "outside", scene=mrml_scene)
        kwargs = {"segmentationNode": outside}
        expected_error, words = InputError, "outside the imaged volume"
    elif case == "frames are not echoes":
        sequence.SetAttribute("MultiVolume.FrameIdentifyingDICOMTagName", "TriggerTime")
        expected_error, words = EchoTimeError, "TriggerTime"
    elif case == "too few echo times":
        kwargs["echoTimesMs"] = [1.0, 2.0, 3.0]
        expected_error, words = EchoTimeError, "one echo time"

    before = count_nodes(mrml_scene)
    ids_before = {mrml_scene.GetNthNode(i).GetID() for i in range(before)}
    with pytest.raises(expected_error) as info:
        IronMappingLogic().process(target, **kwargs)
    assert isinstance(info.value, IronMappingError)
    assert words.lower() in str(info.value).lower()
    assert count_nodes(mrml_scene) == before
    assert {mrml_scene.GetNthNode(i).GetID() for i in range(before)} == ids_before


def test_failure_while_writing_rolls_back(mrml_scene, phantom):
    """A failure after some outputs were created removes them again (transaction)."""
    sequence, _ = mrml.add_multiecho_sequence(phantom.image, "echoes", scene=mrml_scene)
    before = count_nodes(mrml_scene)
    with pytest.raises(IronMappingError):
        # the fit is cancelled after the input was read and checked
        IronMappingLogic().process(sequence, cancel=lambda: True)
    assert count_nodes(mrml_scene) == before


def test_multivolume_node_and_list_of_volumes(mrml_scene, phantom):
    image = phantom.image
    frames = np.moveaxis(image.signal, 0, -1).copy()  # [k, j, i, frame] as a MultiVolume stores it
    multivolume = volume_node_from_array(mrml_scene, frames, image.ijk_to_ras, "MV", "vtkMRMLVectorVolumeNode")
    multivolume.SetAttribute("MultiVolume.FrameLabels", ",".join(f"{t / 1000:g}" for t in image.echo_times_ms))
    multivolume.SetAttribute("MultiVolume.FrameIdentifyingDICOMTagName", "EchoTime")
    multivolume.SetAttribute("MultiVolume.FrameIdentifyingDICOMTagUnits", "s")
    from_mv, desc = mrml.read_multiecho(multivolume)
    assert desc.kind == "multivolume"
    np.testing.assert_allclose(from_mv.echo_times_ms, image.echo_times_ms)
    np.testing.assert_array_equal(from_mv.signal, image.signal)

    # echoes as separate volumes, given out of order, echo times typed in: sorted together
    order = [3, 0, 2, 1, 4, 5, 6, 7, 8, 9, 10, 11][:image.n_echoes]
    volumes = [volume_node_from_array(mrml_scene, image.signal[e], image.ijk_to_ras, f"TE{e}") for e in order]
    from_list, desc = mrml.read_multiecho(volumes, echo_times_ms=[image.echo_times_ms[e] for e in order])
    assert desc.kind == "volumes"
    np.testing.assert_array_equal(from_list.signal, image.signal)
    np.testing.assert_array_equal(from_list.echo_times_ms, image.echo_times_ms)
    assert any("sorted" in w for w in from_list.metadata["warnings"])


def test_proxy_volume_resolves_to_its_sequence(mrml_scene, phantom):
    sequence, proxy = mrml.add_multiecho_sequence(phantom.image, "echoes", scene=mrml_scene)
    assert proxy is not None
    desc = mrml.describe_input(proxy)
    assert desc.primary is sequence and desc.display is proxy and desc.n_echoes == phantom.image.n_echoes


def test_typed_echo_times_override_metadata(mrml_scene, phantom):
    sequence, _ = mrml.add_multiecho_sequence(phantom.image, "echoes", scene=mrml_scene)
    typed = list(2.0 * phantom.image.echo_times_ms)
    image, _ = mrml.read_multiecho(sequence, echo_times_ms=typed)
    np.testing.assert_array_equal(image.echo_times_ms, typed)
    assert image.metadata["echo_time_source"] == "given"
    assert any("replace" in w for w in image.metadata["warnings"])


def test_fat_water_fit_adds_a_pdff_map(mrml_scene):
    ph = make_phantom("normal", shape=(2, 16, 20), snr=80.0, coils=4, fat_fraction=0.2, seed=2)
    sequence, _ = mrml.add_multiecho_sequence(ph.image, "fatty", scene=mrml_scene)
    result = IronMappingLogic().process(sequence, method="fat-water")
    assert "pdff" in result and result["pdff"].GetName() == "fatty PDFF"
    assert result["pdff"].GetAttribute("IronMapping.Unit") == "%"
    pdff = slicer.util.arrayFromVolume(result["pdff"])
    np.testing.assert_array_equal(pdff, result.fit.maps["pdff"])
    # a later fit without fat-water removes the now stale PDFF map
    count = count_nodes(mrml_scene)
    again = IronMappingLogic().process(sequence, method="nlls")
    assert "pdff" not in again and mrml.find_output(sequence, "pdff", mrml_scene) is None
    assert count_nodes(mrml_scene) < count


def test_segment_statistics_numbers(mrml_scene, phantom):
    """What the Segment Statistics plugin reports, computed through the same scene helpers."""
    from IronMapping import segment_statistics

    sequence, _ = mrml.add_multiecho_sequence(phantom.image, "echoes", scene=mrml_scene)
    segmentation = fine_segmentation(mrml_scene, phantom)
    result = IronMappingLogic().process(sequence, segmentationNode=segmentation)
    summary = {r["name"]: r for r in result.summary["regions"]}
    liver_id = mrml.segment_ids_of(segmentation)[0]
    before = count_nodes(mrml_scene)
    # any output of the run, or its input, finds the R2* map
    for volume in (result["t2star"], result["r2star"], sequence):
        stats = segment_statistics.compute_for_segment(segmentation, liver_id, volume)
        assert stats["r2star_median"] == pytest.approx(summary["liver"]["r2star_median"], rel=1e-6)
        assert stats["lic"] == pytest.approx(summary["liver"]["lic_mg_per_g"], rel=1e-6)
    assert count_nodes(mrml_scene) == before
    spleen = segment_statistics.compute_for_segment(segmentation, mrml.segment_ids_of(segmentation)[1],
                                                    result["r2star"])
    assert "lic" not in spleen  # liver calibrations are not applied to the spleen
    assert segment_statistics.plugin_class.__doc__
    values = np.array([10.0, 20.0, np.nan, 40.0])
    stats = segment_statistics.statistics(values, organ="liver", field_strength_t=1.5)
    assert stats["fitted_percent"] == 75.0 and stats["r2star_median"] == 20.0
    assert stats["lic"] == pytest.approx(0.0254 * 20.0 + 0.202)
    assert "lic" not in segment_statistics.statistics(values, organ="liver", field_strength_t=3.0)


def test_status_colour_table_names_every_code(mrml_scene, phantom):
    sequence, _ = mrml.add_multiecho_sequence(phantom.image, "echoes", scene=mrml_scene)
    result = IronMappingLogic().process(sequence)
    table = result["status"].GetDisplayNode().GetColorNode()
    for status in Status:
        assert status.name.lower().replace("_", " ") in table.GetColorName(int(status))
    legends = [result["r2star"].GetNthDisplayNode(i) for i in range(result["r2star"].GetNumberOfDisplayNodes())]
    legends = [d for d in legends if d is not None and d.IsA("vtkMRMLColorLegendDisplayNode")]
    assert len(legends) == 1 and legends[0].GetTitleText() == "R2* (1/s)"
    IronMappingLogic().process(sequence)  # no second legend on re-run
    assert sum(result["r2star"].GetNthDisplayNode(i).IsA("vtkMRMLColorLegendDisplayNode")
               for i in range(result["r2star"].GetNumberOfDisplayNodes())) == 1
    r2_display = result["r2star"].GetDisplayNode()
    assert not r2_display.GetAutoWindowLevel()
    lo, hi = r2_display.GetWindowLevelMin(), r2_display.GetWindowLevelMax()
    assert 0 <= lo < hi <= np.nanmax(slicer.util.arrayFromVolume(result["r2star"])) + 1e-3


class FileBackedDicomDatabase:
    """The one ctkDICOMDatabase call IronMapping makes (instanceValue), answered from real DICOM
    files with pydicom, so the DICOM path of scene.describe_input runs outside the application."""

    def __init__(self, paths):
        import pydicom

        self._datasets, self._paths = {}, {}
        for path in paths:
            ds = pydicom.dcmread(str(path), stop_before_pixels=True)
            self._datasets[str(ds.SOPInstanceUID)] = ds
            self._paths[str(path)] = str(ds.SOPInstanceUID)

    def fileValue(self, path, tag):  # noqa: N802 - Slicer's method name
        return self.instanceValue(self._paths.get(str(path), ""), tag)

    def instanceValue(self, uid, tag):  # noqa: N802 - Slicer's method name
        from pydicom.multival import MultiValue
        from pydicom.tag import Tag

        group, element = (int(part, 16) for part in tag.split(","))
        ds = self._datasets.get(uid)
        if ds is None or Tag(group, element) not in ds:
            return ""
        value = ds[Tag(group, element)].value
        return "\\".join(str(v) for v in value) if isinstance(value, MultiValue) else str(value)

    def uids_by_echo_number(self):
        groups = {}
        for uid, ds in self._datasets.items():
            groups.setdefault(int(ds.EchoNumbers), []).append(uid)
        return [groups[k] for k in sorted(groups)]


def test_echo_times_field_and_spin_echo_from_the_dicom_database(mrml_scene, shared_data):
    """Scalar volumes loaded from DICOM carry DICOM.instanceUIDs; echo time (0018,0081), field
    strength (0018,0087) and ScanningSequence (0018,0020) come from Slicer's DICOM database."""
    from IronMapping.io import load_multiecho

    folder = shared_data / "ge-knee-t2-mese"
    if not folder.is_dir():
        pytest.skip(f"{folder} not found")
    reference = load_multiecho(folder)
    database = FileBackedDicomDatabase(sorted(folder.glob("*.dcm")))
    volumes, small = [], []
    crop = reference.ijk_to_ras.copy()
    crop[:3, 3] += 12 * crop[:3, 2] + 64 * crop[:3, 1] + 64 * crop[:3, 0]  # slices 12-13, central 128x128
    for e, uids in enumerate(database.uids_by_echo_number()):
        node = volume_node_from_array(mrml_scene, reference.signal[e], reference.ijk_to_ras, f"knee echo {e + 1}")
        node.SetAttribute("DICOM.instanceUIDs", " ".join(uids))
        volumes.append(node)
        part = volume_node_from_array(mrml_scene, reference.signal[e, 12:14, 64:192, 64:192], crop, f"knee {e + 1}")
        part.SetAttribute("DICOM.instanceUIDs", " ".join(uids))
        small.append(part)

    had = hasattr(slicer, "dicomDatabase")
    previous = getattr(slicer, "dicomDatabase", None)
    slicer.dicomDatabase = database
    try:
        info = IronMappingLogic.inspectInput(volumes)
        image, desc = mrml.read_multiecho(volumes)
        spin_echo = IronMappingLogic().process(small)
        # a volume sequence from MultiVolumeImporter keeps the file list, not the instance UIDs
        from IronMapping.image import MultiEchoImage

        unknown_field = MultiEchoImage(reference.signal[:, 12:14], reference.echo_times_ms, crop)
        sequence, _ = mrml.add_multiecho_sequence(unknown_field, "knee sequence", scene=mrml_scene)
        sequence.SetAttribute("MultiVolume.FrameFileList", ",".join(str(p) for p in sorted(folder.glob("*.dcm"))))
        sequence_info = IronMappingLogic.inspectInput(sequence)
    finally:
        if had:
            slicer.dicomDatabase = previous
        else:
            del slicer.dicomDatabase
    assert info["echoTimeSource"].startswith("DICOM database")
    np.testing.assert_allclose(info["echoTimesMs"], reference.echo_times_ms)
    assert info["fieldStrengthT"] == pytest.approx(3.0)
    assert info["quantity"] == desc.quantity == image.quantity == "T2"
    np.testing.assert_array_equal(image.signal, reference.signal)
    assert sequence_info["fieldStrengthT"] == pytest.approx(3.0) and sequence_info["quantity"] == "T2"
    assert sequence_info["echoTimeSource"] == "MultiVolume.FrameLabels"
    # spin echo: the outputs say T2 / R2, not T2* / R2*
    assert spin_echo["t2star"].GetName() == "knee 1 T2" and spin_echo["r2star"].GetName() == "knee 1 R2"
    assert spin_echo["r2star"].GetAttribute("IronMapping.Quantity") == "R2"
    assert spin_echo["t2star"].GetAttribute("IronMapping.FieldStrengthT") == "3"
    # outside the application (no database) the same volumes have no echo times: a clear error
    with pytest.raises(EchoTimeError, match="Type in the echo times"):
        mrml.read_multiecho(volumes)


def test_frame_labels_follow_frame_numbers_not_storage_order(mrml_scene, phantom):
    """Data nodes stored out of frame order (a text index keeps insertion order): echo times
    must follow the frame number in the index value, not the position of the data node."""
    image = phantom.image
    sequence = mrml_scene.AddNewNodeByClass("vtkMRMLSequenceNode", "text index")
    sequence.SetIndexType(slicer.vtkMRMLSequenceNode.TextIndex)
    order = list(np.random.default_rng(4).permutation(image.n_echoes))
    for e in order:
        frame = slicer.vtkMRMLScalarVolumeNode()
        slicer.util.updateVolumeFromArray(frame, image.signal[e])
        frame.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(image.ijk_to_ras))
        sequence.SetDataNodeAtValue(frame, str(e))
    sequence.SetAttribute("MultiVolume.FrameLabels", ",".join(f"{t:g}" for t in image.echo_times_ms))
    sequence.SetAttribute("MultiVolume.FrameIdentifyingDICOMTagName", "EchoTime")
    assert [sequence.GetNthIndexValue(i) for i in range(image.n_echoes)] == [str(e) for e in order]
    loaded, _ = mrml.read_multiecho(sequence)
    np.testing.assert_array_equal(loaded.echo_times_ms, image.echo_times_ms)
    np.testing.assert_array_equal(loaded.signal, image.signal)


def test_statistics_table_shows_display_precision_with_ucum_units(mrml_scene, phantom):
    sequence, _ = mrml.add_multiecho_sequence(phantom.image, "echoes", scene=mrml_scene)
    segmentation = fine_segmentation(mrml_scene, phantom)
    result = IronMappingLogic().process(sequence, segmentationNode=segmentation)
    table = result["table"]
    rows = {r["Region"]: r for r in mrml.table_rows(table)}
    regions = {r["name"]: r for r in result.summary["regions"]}
    for name, row in rows.items():
        full = regions[name]
        assert row["R2* median (1/s)"] == round(full["r2star_median"], 1), name
        assert row["T2* median (ms)"] == round(full["t2star_median"], 2), name
        assert row["Volume (mL)"] == round(full["volume_ml"], 1), name
        assert row["R2* median (1/s)"] != full["r2star_median"] or full["r2star_median"] == round(
            full["r2star_median"], 1)
    liver = rows["liver"]
    assert liver["LIC (mg Fe/g dw)"] == round(regions["liver"]["lic_mg_per_g"], 2)
    assert table.GetColumnProperty("R2* median (1/s)", "unitCode") == "s-1"
    assert table.GetColumnProperty("LIC (mg Fe/g dw)", "unitCode") == "mg/g"
    assert table.GetColumnProperty("Volume (mL)", "unitCodingScheme") == "UCUM"
    assert "median" in table.GetColumnDescription("R2* median (1/s)")


def test_spin_echo_nodes_are_named_after_the_quantity(mrml_scene, phantom):
    sequence, _ = mrml.add_multiecho_sequence(phantom.image, "knee MESE", scene=mrml_scene)
    desc = mrml.describe_input(sequence, mrml_scene)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = fit(phantom.image.signal, phantom.image.echo_times_ms, quantity="T2")
    nodes = mrml.write_maps(desc, phantom.image, result, scene=mrml_scene)
    assert nodes["r2star"].GetName() == "knee MESE R2" and nodes["t2star"].GetName() == "knee MESE T2"
    assert mrml.output_attributes(nodes["r2star"])["Quantity"] == "R2"
