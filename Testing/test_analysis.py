"""The one analysis path (IronMapping.analysis.analyse): the Slicer logic, the command line and
batch give the same summary and warnings, each warning once, and no engine warning escapes."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from IronMapping import cli, pipeline
from IronMapping.analysis import NO_LABELS_WARNING, analyse
from IronMapping.errors import InputError
from IronMapping.maps_io import LabelMap
from IronMapping.phantom import make_phantom

COIL_NOTE = "effective coil count"  # the engine's note: warned, stored in the fit and the summary
# Where a value came from is said in each caller's words (panel field, command line, metadata).
SOURCE_KEYS = {"field_strength_source", "echo_time_source"}


@pytest.fixture(scope="module")
def phantom():
    return make_phantom("transfusional", shape=(4, 32, 40), snr=60.0, coils=4, seed=5)


def _without_sources(summary):
    return {k: v for k, v in summary.items() if k not in SOURCE_KEYS}


def _json(value):
    return json.loads(json.dumps(value, default=str))


def test_each_warning_once_and_none_escapes(phantom):
    with warnings.catch_warnings(record=True) as escaped:
        warnings.simplefilter("always")
        result = analyse(phantom.image, labels=phantom.labels, label_names=phantom.label_names)
    assert not [w for w in escaped if issubclass(w.category, UserWarning)]
    # The engine both warns and stores its note; the summary repeats it: the channel has it once.
    assert any(COIL_NOTE in w for w in result.fit.warnings)
    assert any(COIL_NOTE in w for w in result.summary["warnings"])
    assert sum(COIL_NOTE in w for w in result.warnings) == 1
    assert len(result.warnings) == len(set(result.warnings))


def test_input_notes_come_first_in_order(phantom):
    result = analyse(phantom.image, labels=phantom.labels, label_names=phantom.label_names,
                     notes=["second note", "first note", "second note"])
    assert result.warnings[:2] == ["second note", "first note"]
    assert any(COIL_NOTE in w for w in result.warnings[2:])


def test_an_array_and_its_image_give_the_same_analysis(phantom):
    image = phantom.image
    from_image = analyse(image, labels=phantom.labels, label_names=phantom.label_names)
    from_array = analyse(image.signal, image.echo_times_ms, phantom.labels, phantom.label_names,
                         field_strength_t=image.field_strength_t, ijk_to_ras=image.ijk_to_ras)
    np.testing.assert_array_equal(from_array.fit.r2star, from_image.fit.r2star)
    # A bare array carries no voxel size, so only the volumes may differ.
    strip = lambda s: [{k: v for k, v in r.items() if k != "volume_ml"} for r in s["regions"]]  # noqa: E731
    assert strip(from_array.summary) == strip(from_image.summary)
    assert from_array.provenance["echo_times_ms"] == [float(t) for t in image.echo_times_ms]
    with pytest.raises(InputError, match="has its own"):
        analyse(image, image.echo_times_ms)
    with pytest.raises(InputError, match="echo_times_ms"):
        analyse(image.signal)


def test_without_labels_maps_only_or_one_region_of_fitted_voxels(phantom):
    maps_only = analyse(phantom.image)
    assert maps_only.summary["regions"] == [] and not maps_only.labels.any()
    assert maps_only.warnings[-1] == NO_LABELS_WARNING
    assert maps_only.summary["whole_image"]["fitted_voxels"] == int(maps_only.fit.fitted.sum())
    whole = analyse(phantom.image, whole_image_region="everything fitted")
    (row,) = whole.summary["regions"]
    assert row["name"] == "everything fitted" and row["n_voxels"] == int(whole.fit.fitted.sum())
    assert NO_LABELS_WARNING not in whole.warnings


def test_mask_threshold_limits_the_fit_and_refuses_an_empty_mask(phantom):
    first = phantom.image.signal[0]
    threshold = float(np.percentile(first, 70))
    result = analyse(phantom.image, mask_threshold=threshold)
    assert not result.fit.fitted[first <= threshold].any()
    with pytest.raises(InputError, match="mask threshold"):
        analyse(phantom.image, mask_threshold=float(first.max()) * 2)


def test_progress_has_the_fit_then_the_statistics(phantom):
    seen = []
    result = analyse(phantom.image, labels=phantom.labels, label_names=phantom.label_names,
                     progress=lambda stage, fraction: seen.append((stage, fraction)))
    assert list(dict.fromkeys(s for s, _ in seen)) == ["fit", "statistics"]
    assert ("fit", 1.0) in seen and set(result.timings) == {"fit", "statistics"}


def test_pipeline_run_is_the_analysis(phantom, tmp_path):
    """What the command line and batch write (pipeline.run) is the analysis of the same input."""
    label_map = LabelMap(phantom.labels.astype(np.int32), phantom.image.ijk_to_ras,
                         dict(phantom.label_names), "phantom")
    run = pipeline.run(phantom.image, tmp_path / "out", label_map, report=False)
    direct = analyse(phantom.image, labels=label_map.labels, label_names=label_map.names)
    assert _json(run.summary) == _json(direct.summary)
    assert run.warnings == direct.warnings
    written = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert written["regions"] == _json(direct.summary["regions"])
    record = json.loads((tmp_path / "out" / "run.json").read_text())
    assert record["warnings"] == direct.warnings
    assert record["method"] == _json(direct.provenance["method"])


def test_command_line_fit_writes_the_analysis_of_its_input(tmp_path):
    from test_pipeline import make_study

    echoes, labels, _ = make_study(tmp_path, shape=(4, 24, 30))
    out = tmp_path / "out"
    code = cli.main(["fit", str(echoes), "--labels", str(labels), "--out", str(out),
                     "--no-report", "--quiet"])
    assert code == 0
    image = pipeline.load_image([echoes])
    label_map = pipeline.load_labels(labels, image, None)
    label_map = pipeline.resample_labels(label_map, image.shape, image.ijk_to_ras)
    direct = analyse(image, labels=label_map.labels, label_names=label_map.names,
                     terminology=label_map.terminology, notes=label_map.warnings)
    written = json.loads((out / "summary.json").read_text())
    assert _without_sources(written) == _json(_without_sources(direct.summary))
    assert json.loads((out / "run.json").read_text())["warnings"] == direct.warnings


def test_batch_study_records_the_analysis_warnings(tmp_path):
    from IronMapping.batch import DONE_MARKER, Study, run_study
    from test_pipeline import make_study

    echoes, labels, _ = make_study(tmp_path, shape=(4, 24, 30))
    outcome = run_study(Study("s1", [str(echoes)], str(labels)), tmp_path / "cohort",
                        {"report": False})
    assert outcome["status"] == "done", outcome
    image = pipeline.load_image([echoes])
    label_map = pipeline.load_labels(labels, image, None)
    direct = analyse(image, labels=label_map.labels, label_names=label_map.names,
                     terminology=label_map.terminology, notes=label_map.warnings)
    done = json.loads((tmp_path / "cohort" / "s1" / DONE_MARKER).read_text())
    assert done["warnings"] == direct.warnings
    written = json.loads((tmp_path / "cohort" / "s1" / "summary.json").read_text())
    assert written["regions"] == _json(direct.summary["regions"])


def test_slicer_logic_and_pipeline_give_the_same_summary_and_warnings(phantom, tmp_path):
    mrml_fixtures = pytest.importorskip("mrml_fixtures")
    from IronMapping import scene as mrml
    from IronMapping.logic import IronMappingLogic

    setup = mrml_fixtures.SceneSetup()
    try:
        scene = setup.scene
        sequence, _ = mrml.add_multiecho_sequence(phantom.image, "patient 1 mGRE", scene=scene)
        segmentation = mrml.add_label_segmentation(phantom.labels, phantom.label_names,
                                                   phantom.image.ijk_to_ras, "organs", scene=scene)
        with warnings.catch_warnings(record=True) as escaped:
            warnings.simplefilter("always")
            slicer_result = IronMappingLogic().process(sequence, segmentationNode=segmentation,
                                                       scene=scene)
        assert not [w for w in escaped if issubclass(w.category, UserWarning)]
    finally:
        setup.close()
    label_map = LabelMap(phantom.labels.astype(np.int32), phantom.image.ijk_to_ras,
                         dict(phantom.label_names), "phantom")
    files_result = pipeline.run(phantom.image, tmp_path / "out", label_map, report=False)

    logic_summary = _json(_without_sources(slicer_result.summary))
    files_summary = _json(_without_sources(files_result.summary))
    for a, b in zip(logic_summary["regions"], files_summary["regions"]):
        a.pop("organ_source"), b.pop("organ_source")  # segment terminology vs region name
        a.pop("organ_matched"), b.pop("organ_matched")
    assert logic_summary == files_summary
    # The panel adds the summary's notes after the warnings; the warnings are the same, once.
    notes = slicer_result.summary["notes"]
    assert [w for w in slicer_result.warnings if w not in notes] == files_result.warnings
    assert sum(COIL_NOTE in w for w in slicer_result.warnings) == 1
