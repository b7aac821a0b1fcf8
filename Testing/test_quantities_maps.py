"""One table of maps (quantities.MAPS): files, Slicer nodes, sidecars and node attributes all
follow it, so the same maps reach the output folder and the Slicer scene (real fits, a real
MRML scene from slicer-core, real files)."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest

from mrml_fixtures import mrml_scene, slicer  # noqa: F401

from IronMapping import maps_io, pipeline, quantities
from IronMapping import scene as mrml
from IronMapping.logic import IronMappingLogic
from IronMapping.phantom import make_phantom
from IronMapping.quantities import MAP_BY_KEY, MAPS, map_arrays
from IronMapping.relaxometry import RelaxometryFit, fit
from IronMapping.segment_statistics import MEASUREMENTS

SHAPE = (3, 20, 24)


@pytest.fixture(scope="module")
def phantom():
    return make_phantom("neonatal-haemochromatosis", shape=SHAPE, snr=60.0, coils=4, seed=5)


def test_files_and_slicer_get_the_same_maps(mrml_scene, phantom, tmp_path):
    """The bug this table fixes: files had r2star_sd and Slicer did not (two hand-written lists)."""
    sequence, _ = mrml.add_multiecho_sequence(phantom.image, "liver GRE", scene=mrml_scene)
    result = IronMappingLogic().process(sequence)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run = pipeline.run(phantom.image, tmp_path / "out", report=False)
    in_files = {k for k in run.files if k in MAP_BY_KEY}
    in_scene = {k for k in result if k in MAP_BY_KEY}
    assert "r2star_sd" in in_files and "r2star_sd" in in_scene
    assert in_scene == {k for k in in_files if MAP_BY_KEY[k].scene}

    node = result["r2star_sd"]
    assert node.GetName() == "liver GRE R2* SD" and node.IsA("vtkMRMLScalarVolumeNode")
    attrs = mrml.output_attributes(node)
    assert attrs["Unit"] == "1/s" and attrs["Quantity"] == "SD of R2*" and attrs["Map"] == "r2star_sd"
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(node),
                                  result.fit.uncertainty.astype(np.float32))
    # the file holds the same numbers (the same engine on the same data)
    on_disk = maps_io.read_volume(run.files["r2star_sd"])
    np.testing.assert_allclose(on_disk.array, run.fit.uncertainty, rtol=1e-6, equal_nan=True)
    # its sidecar and the node say the same about it
    sidecar = maps_io.map_metadata("r2star_sd", run.fit.provenance())
    assert (sidecar["quantity"], sidecar["unit"], sidecar["description"]) == (
        attrs["Quantity"], attrs["Unit"], attrs["Description"])
    # a grey window from its own values, not the R2* colour table
    display = node.GetDisplayNode()
    finite = result.fit.uncertainty[np.isfinite(result.fit.uncertainty)]
    assert display.GetWindowLevelMin() == pytest.approx(max(0.0, np.percentile(finite, 0.5)), rel=1e-5)
    assert display.GetWindowLevelMax() == pytest.approx(np.percentile(finite, 99.5), rel=1e-5)


@pytest.fixture(scope="module")
def spin_echo_fit(phantom):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fit(phantom.image.signal, phantom.image.echo_times_ms, quantity="T2")


def test_spin_echo_sd_map_is_named_r2_in_files_and_nodes(mrml_scene, phantom, spin_echo_fit,
                                                         tmp_path):
    result = spin_echo_fit
    sequence = mrml.add_multiecho_sequence(phantom.image, "knee MESE", scene=mrml_scene)[0]
    nodes = mrml.write_maps(mrml.describe_input(sequence, mrml_scene), phantom.image, result,
                            scene=mrml_scene)
    assert nodes["r2star_sd"].GetName() == "knee MESE R2 SD"
    assert mrml.output_attributes(nodes["r2star_sd"])["Quantity"] == "SD of R2"
    written = maps_io.write_maps(tmp_path, maps_io.maps_of_fit(result), phantom.image.ijk_to_ras,
                                 quantity="T2")
    assert written["r2star_sd"].name == "r2_sd.nrrd" and written["r2star"].name == "r2.nrrd"
    assert set(written) == set(nodes)


def test_every_list_of_maps_is_the_table():
    file_maps = [m.key for m in MAPS if m.files]
    assert list(maps_io.MAP_SPECS) == file_maps
    assert list(mrml.MAP_OUTPUTS) == [m.key for m in MAPS if m.scene]
    planned = pipeline.planned_outputs("nrrd")
    for m in MAPS:
        for relaxation in ("T2*", "T2"):
            assert (f"{m.file_stem(relaxation)}.nrrd" in planned) == m.files, m.key
    assert set(pipeline.BASE_MAPS) == {m.key for m in MAPS if m.files and m.source and not m.optional}
    assert mrml.MAP_OUTPUTS["status"] == ("fit status", "vtkMRMLLabelMapVolumeNode")


def test_every_map_names_a_real_field_of_the_fit_and_a_known_display():
    fields = {f.name for f in dataclasses.fields(RelaxometryFit)}
    for m in MAPS:
        if m.source.startswith("maps."):
            assert m.optional, m.key  # extra maps exist only for some methods
        elif m.source:
            assert m.source in fields, m.key
        assert m.colour_map in ("iron", "iron-reversed", "grey", "status"), m.key
        assert m.ucum in quantities.UCUM_MEANINGS, m.key
        lo, hi = m.window
        assert lo is None or hi is None or lo < hi, m.key
        assert np.dtype(m.dtype).kind in "fu", m.key
        if m.relaxation:
            assert "*" in m.quantity and m.name_for("T2") == m.node_name.replace("*", "")


def test_map_arrays_leaves_out_what_the_fit_lacks(phantom):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = fit(phantom.image.signal, phantom.image.echo_times_ms)
    arrays = map_arrays(result, "scene")
    assert "pdff" not in arrays and "lic" not in arrays
    assert arrays["r2star_sd"] is result.uncertainty and arrays["status"] is result.status
    assert set(map_arrays(result, "files")) == set(arrays)  # LIC is added by the pipeline


def test_segment_statistics_units_come_from_the_quantities_table():
    for key, (name, description, unit, (code, meaning)) in MEASUREMENTS.items():
        assert name and description and unit, key
        assert meaning == quantities.UCUM_MEANINGS[code], key
    assert MEASUREMENTS["r2star_median"][2:] == ("1/s", ("s-1", "per second"))
    assert MEASUREMENTS["lic"][2] == quantities.BY_KEY["lic_mg_per_g"].unit
    assert MEASUREMENTS["t2star_median"][3][0] == quantities.BY_KEY["t2star_median"].ucum


def test_an_optional_map_a_later_fit_lacks_is_removed_from_the_scene(mrml_scene):
    ph = make_phantom("normal", shape=(2, 12, 14), snr=80.0, coils=4, fat_fraction=0.2, seed=3)
    sequence, _ = mrml.add_multiecho_sequence(ph.image, "fatty", scene=mrml_scene)
    desc = mrml.describe_input(sequence, mrml_scene)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fat_water = fit(ph.image.signal, ph.image.echo_times_ms, method="fat-water",
                        field_strength_t=ph.image.field_strength_t)
        plain = fit(ph.image.signal, ph.image.echo_times_ms, method="nlls")
    first = mrml.write_maps(desc, ph.image, fat_water, scene=mrml_scene)
    assert "pdff" in first and mrml.find_output(sequence, "pdff", mrml_scene) is first["pdff"]
    kept = mrml.write_maps(desc, ph.image, plain, reuse=False, scene=mrml_scene)
    assert "pdff" not in kept and mrml.find_output(sequence, "pdff", mrml_scene) is not None
    again = mrml.write_maps(desc, ph.image, plain, scene=mrml_scene)
    assert "pdff" not in again and mrml.find_output(sequence, "pdff", mrml_scene) is None
    assert again["r2star"] is kept["r2star"]  # the others are updated in place
