"""The headless pipeline (load -> fit -> statistics -> files) on phantom studies written to disk.

Helpers here (write_nifti_echoes, make_study) are also used by test_cli.py and test_batch.py.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from IronMapping import RESEARCH_USE_STATEMENT, maps_io, pipeline
from IronMapping.errors import CalibrationError, FitCancelled, InputError
from IronMapping.image import MultiEchoImage
from IronMapping.phantom import make_phantom

SMALL = (6, 40, 52)  # k, j, i: small and all different, so axis mix-ups show


def oblique(spacing=(3.0, 2.5, 6.0), angle=0.3, origin=(-80.0, 95.5, -30.25)):
    """An oblique (rotated about two axes), anisotropic ijk_to_ras."""
    a, b = angle, 0.6 * angle
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    m = np.eye(4)
    m[:3, :3] = rz @ rx @ np.diag(spacing)
    m[:3, 3] = origin
    return m


def phantom_image(preset="neonatal-haemochromatosis", shape=SMALL, ijk_to_ras=None, seed=0):
    ph = make_phantom(preset, shape=shape, seed=seed)
    if ijk_to_ras is not None:
        ph.image = MultiEchoImage(ph.image.signal, ph.image.echo_times_ms, ijk_to_ras,
                                  ph.image.quantity, ph.image.field_strength_t,
                                  dict(ph.image.metadata))
    return ph


def write_nifti_echoes(image, folder, stem="gre", field_strength_t=1.5):
    """One NIfTI per echo with a dcm2niix-style JSON sidecar (EchoTime in seconds)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for n, te in enumerate(image.echo_times_ms, 1):
        maps_io.write_volume(folder / f"{stem}_e{n}.nii", image.signal[n - 1], image.ijk_to_ras,
                             sidecar=False, compress=False)
        sidecar = {"EchoTime": te / 1000.0, "Manufacturer": "Synthetic", "EchoNumber": n,
                   "ImageType": ["ORIGINAL", "PRIMARY", "M"]}
        if field_strength_t is not None:
            sidecar["MagneticFieldStrength"] = field_strength_t
        (folder / f"{stem}_e{n}.json").write_text(json.dumps(sidecar))
    return folder


def make_study(root, name="study", preset="neonatal-haemochromatosis", shape=SMALL,
               ijk_to_ras=None, seed=0, names_csv=True):
    """A study on disk: NIfTI echoes folder, label map (NRRD) and label names CSV beside it."""
    root = Path(root)
    ph = phantom_image(preset, shape, ijk_to_ras, seed)
    echoes = write_nifti_echoes(ph.image, root / name / "echoes")
    labels = maps_io.write_volume(root / name / "labels.nrrd", ph.labels, ph.image.ijk_to_ras,
                                  sidecar=False)
    if names_csv:
        (root / name / "labels.csv").write_text(
            "value,name\n" + "".join(f"{v},{n}\n" for v, n in ph.label_names.items()))
    return echoes, labels, ph


# --------------------------------------------------------------------------- demo

def test_demo_writes_every_output(tmp_path):
    result = pipeline.run_demo(tmp_path / "demo", shape=SMALL)
    out = tmp_path / "demo"
    for name in ("r2star", "t2star", "s0", "quality", "status", "r2star_sd", "lic"):
        assert (out / f"{name}.nrrd").is_file() and (out / f"{name}.json").is_file(), name
    for name in ("regions.csv", "summary.json", "report.html", "run.json"):
        assert (out / name).is_file(), name

    summary = json.loads((out / "summary.json").read_text())
    names = [r["name"] for r in summary["regions"]]
    assert {"liver", "spleen", "pancreas", "myocardium", "thyroid"} <= set(names)
    assert summary["pattern"]["kind"] == "parenchymal"
    assert summary["pattern"]["spleen_spared"] is True
    liver = summary["regions"][names.index("liver")]
    assert liver["r2star_median"] == pytest.approx(450.0, rel=0.05)  # phantom truth
    assert liver["lic_mg_per_g"] == pytest.approx(0.0254 * liver["r2star_median"] + 0.202,
                                                  rel=1e-6)  # Wood 2005, the default
    rows = (out / "regions.csv").read_text().splitlines()
    assert len(rows) == 1 + len(names) and "R2* median (1/s)" in rows[0]

    record = json.loads((out / "run.json").read_text())
    assert record["complete"] is True and record["method"]["method"] == "noise-corrected-ml"
    assert set(record["files"]) >= {"r2star", "regions_csv", "summary_json", "report"}

    report = (out / "report.html").read_text()
    assert RESEARCH_USE_STATEMENT in report
    assert summary["pattern"]["text"].split(":")[0] in report
    assert "Wood" in report
    assert result.summary["pattern"]["kind"] == "parenchymal"


def test_lic_map_is_the_calibration_on_liver_voxels_only(tmp_path):
    result = pipeline.run_demo(tmp_path / "demo", shape=SMALL, report=False)
    lic = maps_io.read_volume(result.files["lic"]).array
    r2 = maps_io.read_volume(result.files["r2star"]).array
    liver = result.label_map.labels == 1
    fitted = liver & np.isfinite(r2)
    np.testing.assert_allclose(lic[fitted], 0.0254 * r2[fitted] + 0.202, rtol=1e-5)
    assert np.all(np.isnan(lic[~liver]))  # not the lesion, not the spleen
    sidecar = json.loads(maps_io.sidecar_path(result.files["lic"]).read_text())
    assert sidecar["unit"] == "mg Fe/g dry weight"
    assert "Wood" in sidecar["calibration"]["citation"]


# --------------------------------------------------------------------------- geometry

def test_maps_from_oblique_dicom_have_exactly_the_input_geometry(tmp_path):
    pytest.importorskip("pydicom")
    from IronMapping.io.dicom_writer import write_multiecho_dicom

    m = oblique()
    ph = phantom_image(ijk_to_ras=m, shape=(5, 32, 40))
    write_multiecho_dicom(ph.image, str(tmp_path / "dicom"), enhanced=True)
    labels = maps_io.write_volume(tmp_path / "labels.nrrd", ph.labels, m, sidecar=False)
    (tmp_path / "labels.csv").write_text("1,liver\n2,spleen\n")
    loaded = pipeline.load_image([tmp_path / "dicom"])
    np.testing.assert_allclose(loaded.ijk_to_ras, m, atol=1e-4)  # DICOM text precision
    result = pipeline.run_files([tmp_path / "dicom"], tmp_path / "out", labels=labels,
                                report=False)
    for name in ("r2star", "t2star", "s0", "quality", "status", "r2star_sd", "lic"):
        volume = maps_io.read_volume(result.files[name])
        assert volume.array.shape == ph.labels.shape, name
        np.testing.assert_allclose(volume.ijk_to_ras, loaded.ijk_to_ras, rtol=0, atol=1e-9)
    # the liver of the map sits where the liver label is
    r2 = maps_io.read_volume(result.files["r2star"]).array
    assert np.nanmedian(r2[ph.labels == 1]) == pytest.approx(450.0, rel=0.05)


@pytest.mark.parametrize("fmt", ["nrrd", "nifti"])
def test_maps_from_oblique_nifti_echoes_keep_the_geometry(tmp_path, fmt):
    m = oblique()
    echoes, labels, ph = make_study(tmp_path, ijk_to_ras=m, shape=(4, 24, 30))
    result = pipeline.run_files([echoes], tmp_path / "out", labels=labels, fmt=fmt,
                                report=False)
    loaded = result.image
    np.testing.assert_allclose(loaded.ijk_to_ras, m, atol=1e-4)  # NIfTI stores float32
    for name in ("r2star", "status"):
        path = result.files[name]
        assert path.name.endswith(".nrrd" if fmt == "nrrd" else ".nii.gz")
        volume = maps_io.read_volume(path)
        np.testing.assert_allclose(volume.ijk_to_ras, loaded.ijk_to_ras, rtol=0,
                                   atol=1e-9 if fmt == "nrrd" else 1e-4)


# --------------------------------------------------------------------------- inputs & folders

def test_labels_with_names_beside_them_and_on_another_grid(tmp_path):
    echoes, _, ph = make_study(tmp_path, shape=(4, 24, 30))
    # The same labels cropped to the liver's bounding box (as Slicer crops segmentations).
    k, j, i = np.nonzero(ph.labels == 1)
    crop = ph.labels[k.min():k.max() + 1, j.min():j.max() + 1, i.min():i.max() + 1]
    m = ph.image.ijk_to_ras.copy()
    m[:3, 3] = (m @ [i.min(), j.min(), k.min(), 1.0])[:3]
    maps_io.write_volume(tmp_path / "crop.nrrd", crop, m, sidecar=False)
    (tmp_path / "crop.csv").write_text("1,Liver\n8,liver lesion\n2,spleen\n")
    result = pipeline.run_files([echoes], tmp_path / "out", labels=tmp_path / "crop.nrrd",
                                report=False)
    assert result.label_map.labels.shape == ph.labels.shape
    np.testing.assert_array_equal(result.label_map.labels == 1, ph.labels == 1)
    assert "Liver" in [r["name"] for r in result.summary["regions"]]


def test_maps_only_without_labels(tmp_path):
    echoes, _, _ = make_study(tmp_path, shape=(4, 24, 30))
    result = pipeline.run_files([echoes], tmp_path / "out", figures=False)
    assert result.summary["regions"] == []
    assert any("No label map" in w for w in result.warnings)
    assert "lic" not in result.files
    assert (tmp_path / "out" / "regions.csv").is_file()
    assert "No regions were given" in (tmp_path / "out" / "report.html").read_text()


def test_output_folder_is_protected(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "r2star.nrrd").write_text("someone else's file")
    with pytest.raises(InputError, match="--overwrite"):
        pipeline.run_demo(out, shape=SMALL, report=False)
    assert (out / "r2star.nrrd").read_text() == "someone else's file"
    pipeline.run_demo(out, shape=SMALL, report=False, overwrite=True)
    # A folder IronMapping wrote may be written again without --overwrite.
    pipeline.run_demo(out, shape=SMALL, report=False)
    assert json.loads((out / "run.json").read_text())["complete"] is True


def test_an_input_is_never_overwritten(tmp_path):
    echoes, _, ph = make_study(tmp_path, shape=(4, 24, 30))
    maps_io.write_volume(echoes / "status.nrrd", ph.labels, ph.image.ijk_to_ras, sidecar=False)
    with pytest.raises(InputError, match="overwrite the input"):
        pipeline.run_files([echoes / "status.nrrd"], echoes, overwrite=True)


def test_missing_input_and_wrong_echo_times(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        pipeline.run_files([tmp_path / "nothing"], tmp_path / "out")
    echoes, _, _ = make_study(tmp_path, shape=(4, 24, 30))
    with pytest.raises(InputError):
        pipeline.run_files([echoes], tmp_path / "out", echo_times_ms=[1.0, 2.0, 3.0])


def test_field_strength_override_and_explicit_calibration_mismatch(tmp_path):
    echoes, labels, _ = make_study(tmp_path, shape=(4, 24, 30))
    with pytest.raises(CalibrationError):
        pipeline.run_files([echoes], tmp_path / "a", labels=labels, field_strength_t=3.0,
                           confirm_field_strength=True, calibration="wood2005", report=False)
    result = pipeline.run_files([echoes], tmp_path / "b", labels=labels, field_strength_t=3.0,
                                confirm_field_strength=True, calibration="wood2005",
                                convert_field=True, report=False)
    assert result.image.field_strength_t == 3.0
    assert result.image.metadata["field_strength_t_from_files"] == 1.5
    assert any("converted" in w for w in result.warnings)


def test_cancelled_run_leaves_an_incomplete_record(tmp_path):
    with pytest.raises(FitCancelled):
        pipeline.run_demo(tmp_path / "out", shape=SMALL, cancel=lambda: True)
    assert json.loads((tmp_path / "out" / "run.json").read_text())["complete"] is False


def test_progress_reports_each_stage(tmp_path):
    seen = []
    pipeline.run_demo(tmp_path / "out", shape=SMALL, figures=False,
                      progress=lambda stage, fraction: seen.append((stage, fraction)))
    stages = list(dict.fromkeys(s for s, _ in seen))
    assert stages == ["fit", "statistics", "write", "report"]
    assert ("fit", 1.0) in seen


def test_fat_water_method_writes_a_pdff_map(tmp_path):
    ph = make_phantom("normal", shape=(3, 24, 30), fat_fraction=0.2, seed=0)
    label_map = maps_io.LabelMap(ph.labels.astype(np.int32), ph.image.ijk_to_ras, ph.label_names)
    result = pipeline.run(ph.image, tmp_path / "fw", label_map, method="fat-water", report=False)
    pdff = maps_io.read_volume(result.files["pdff"]).array
    assert np.nanmedian(pdff[ph.labels == 1]) == pytest.approx(20.0, abs=2.0)  # percent
    assert np.nanmedian(pdff[ph.labels == 2]) < 2.0
    sidecar = json.loads(maps_io.sidecar_path(result.files["pdff"]).read_text())
    assert sidecar["unit"] == "%" and sidecar["method"] == "fat-water"


def test_field_strength_contradicting_the_files_needs_confirmation(tmp_path):
    """A sidecar says 3 T; --field-strength 1.5 would grade the kidneys with 1.5 T cut-offs."""
    ph = phantom_image(shape=(4, 24, 30))
    echoes = pipeline_echoes = write_nifti_echoes(ph.image, tmp_path / "e", field_strength_t=3.0)
    with pytest.raises(InputError, match="--confirm-field-strength") as err:
        pipeline.run_files([echoes], tmp_path / "a", field_strength_t=1.5, report=False)
    assert "3 T" in str(err.value) and "sidecar" in str(err.value)
    assert not (tmp_path / "a").exists()
    result = pipeline.run_files([pipeline_echoes], tmp_path / "b", field_strength_t=1.5,
                                confirm_field_strength=True, report=False)
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    run = json.loads((tmp_path / "b" / "run.json").read_text())
    assert summary["field_strength_t"] == 1.5
    for source in (summary["field_strength_source"], run["inputs"]["field_strength_source"]):
        assert "given on the command line" in source and "3 T" in source
    assert any("replaces the 3 T" in w for w in result.warnings)
    # the files' own value, and a value for files that record none
    result = pipeline.run_files([echoes], tmp_path / "c", report=False)
    assert "sidecar" in result.summary["field_strength_source"]
    assert "sidecar" in result.summary["echo_time_source"]
    bare = write_nifti_echoes(ph.image, tmp_path / "bare", field_strength_t=None)
    result = pipeline.run_files([bare], tmp_path / "d", field_strength_t=1.5, report=False)
    assert result.summary["field_strength_source"] == "given on the command line (--field-strength)"
    result = pipeline.run_files([bare], tmp_path / "f", report=False)
    assert "unknown" in result.summary["field_strength_source"]


def test_spin_echo_maps_are_named_after_their_quantity(tmp_path):
    ph = phantom_image(shape=(4, 24, 30))
    image = MultiEchoImage(ph.image.signal, ph.image.echo_times_ms, ph.image.ijk_to_ras, "T2",
                           1.5, {})
    result = pipeline.run(image, tmp_path / "o", report=False)
    out = tmp_path / "o"
    for stem in ("r2", "t2", "r2_sd"):
        assert (out / f"{stem}.nrrd").is_file() and (out / f"{stem}.json").is_file(), stem
    assert not list(out.glob("*star*"))
    assert result.files["r2star"].name == "r2.nrrd"  # keys stay for scripts
    assert json.loads((out / "t2.json").read_text())["quantity"] == "T2"
    # a second run into the same folder replaces them without --overwrite
    pipeline.run(image, out, report=False)


def test_any_file_ironmapping_did_not_write_is_refused_unless_overwrite(tmp_path):
    """As the README says: not only same-named files, anything in a folder that is not ours."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="notes.txt.*not written by IronMapping.*--overwrite"):
        pipeline.run_demo(out, shape=SMALL, report=False)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    pipeline.run_demo(out, shape=SMALL, report=False, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine"  # left alone even then
    # a folder with only OS litter or a batch error record counts as empty
    other = tmp_path / "other"
    other.mkdir()
    (other / ".DS_Store").write_text("")
    (other / "error.json").write_text("{}")
    pipeline.run_demo(other, shape=SMALL, report=False)
    # a run.json someone else wrote does not make the folder IronMapping's
    third = tmp_path / "third"
    third.mkdir()
    (third / "run.json").write_text('{"software": "other tool"}')
    with pytest.raises(InputError, match="--overwrite"):
        pipeline.run_demo(third, shape=SMALL, report=False)
