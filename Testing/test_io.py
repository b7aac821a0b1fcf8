"""Readers of IronMapping.io on synthetic files: DICOM (classic, enhanced, per-echo series),
NIfTI with sidecars, NRRD volume sequences, and the shared echo checks."""

import gzip
import json
import os

import numpy as np
import pytest

from IronMapping.errors import EchoTimeError, GeometryError, InputError
from IronMapping.image import MultiEchoImage
from IronMapping.io import (EchoOrderWarning, json_safe, list_series, load_multiecho,
                            quantity_from_sequence, stack_echoes, validate_echoes)
from IronMapping.io.dicom_writer import write_multiecho_dicom
from IronMapping.phantom import make_phantom


def rotation(ax, ay, az):
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def oblique(spacing=(1.7, 2.1, 5.0), origin=(-41.3, 22.7, -13.9), angles=(0.31, -0.22, 0.47)):
    m = np.eye(4)
    m[:3, :3] = rotation(*angles) @ np.diag(spacing)
    m[:3, 3] = origin
    return m


@pytest.fixture(scope="module")
def phantom_image():
    ph = make_phantom("neonatal-haemochromatosis", shape=(4, 20, 24), snr=80, seed=3)
    img = ph.image
    return MultiEchoImage(img.signal, img.echo_times_ms, oblique(), img.quantity,
                          img.field_strength_t, {})


# --------------------------------------------------------------------------- checks

def test_validate_sorts_unsorted_echoes_and_says_so():
    vols = [np.full((2, 3, 4), v, np.float32) for v in (30.0, 10.0, 20.0)]
    with pytest.warns(EchoOrderWarning, match="sorted"):
        stack = validate_echoes(vols, [3.0, 1.0, 2.0], np.eye(4), names=["a", "b", "c"])
    np.testing.assert_array_equal(stack.echo_times_ms, [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(stack.signal[:, 0, 0, 0], [10.0, 20.0, 30.0])
    assert stack.names[0].startswith("b") and stack.warnings
    img = stack_echoes(vols, [3.0, 1.0, 2.0], np.eye(4), warn=False,
                       metadata={"complex_components": {"phase": np.arange(3.0)[:, None, None, None]
                                                        * np.ones((3, 2, 3, 4))}})
    assert any("sorted" in w for w in img.metadata["warnings"])
    np.testing.assert_array_equal(img.metadata["complex_components"]["phase"][:, 0, 0, 0], [1, 2, 0])


@pytest.mark.parametrize("tes, match", [
    ([1.0], "at least 2"),
    ([1.0, 2.0, 2.0], "same echo time"),
    ([1.0, None, 3.0], "looked in: the sidecar"),
    ([1.0, float("nan"), 3.0], "No echo time known"),
    ([1.0, 2.0], "3 echoes but 2 echo times"),
    ([-1.0, 2.0, 3.0], "negative echo time"),
])
def test_validate_echo_time_problems(tes, match):
    n = 1 if len(tes) == 1 else 3
    vols = [np.ones((2, 2, 2), np.float32)] * n
    with pytest.raises(EchoTimeError, match=match):
        validate_echoes(vols, tes, np.eye(4), looked_in="the sidecar x.json")


def test_validate_geometry_names_the_echo():
    vols = [np.ones((2, 3, 4), np.float32)] * 3
    mats = np.stack([np.eye(4)] * 3)
    mats[2, 0, 3] = 0.5
    with pytest.raises(GeometryError, match=r"echo_c \(TE 3 ms\).*different voxel grid"):
        validate_echoes(vols, [1, 2, 3], mats, names=["echo_a", "echo_b", "echo_c"])
    vols2 = [np.ones((2, 3, 4), np.float32), np.ones((2, 3, 5), np.float32)]
    with pytest.raises(GeometryError, match="echo 2"):
        validate_echoes(vols2, [1, 2], np.eye(4))


@pytest.mark.parametrize("value, match", [(np.nan, "non-finite"), (np.inf, "non-finite"),
                                          (-5.0, "negative values")])
def test_validate_refuses_invalid_magnitude(value, match):
    vols = [np.ones((2, 3, 4), np.float32) for _ in range(3)]
    vols[1][1, 1, 1] = value
    with pytest.raises(InputError, match=match + ".*") as err:
        validate_echoes(vols, [1, 2, 3], np.eye(4), names=["e1", "e2", "e3"])
    assert "e2" in str(err.value)


@pytest.mark.parametrize("seq, pulse, expected", [
    ("SE", None, "T2"), (["SE", "EP"], None, "T2"), ("GR", None, "T2*"), ("RM", None, "T2*"),
    (["GR", "SE"], None, "T2*"), (None, "SPIN", "T2"), (None, "GRADIENT", "T2*"), (None, None, "T2*"),
])
def test_quantity_from_sequence(seq, pulse, expected):
    assert quantity_from_sequence(seq, pulse) == expected


# --------------------------------------------------------------------------- DICOM

@pytest.mark.parametrize("enhanced", [False, True])
def test_dicom_roundtrip_oblique(tmp_path, phantom_image, enhanced):
    written = write_multiecho_dicom(phantom_image, str(tmp_path), enhanced=enhanced)
    img = load_multiecho(str(tmp_path))
    np.testing.assert_array_equal(img.echo_times_ms, phantom_image.echo_times_ms)
    np.testing.assert_allclose(img.ijk_to_ras, phantom_image.ijk_to_ras, rtol=0, atol=1e-4)
    assert img.signal.dtype == np.float32 and img.signal.shape == phantom_image.signal.shape
    np.testing.assert_allclose(img.signal, written.expected["magnitude"], rtol=1e-6, atol=1e-4)
    # quantisation to 16 bits only: the values are those of the phantom
    np.testing.assert_allclose(img.signal, phantom_image.signal,
                               atol=float(phantom_image.signal.max()) / 65535 + 1e-4)
    assert img.quantity == "T2*" and img.field_strength_t == pytest.approx(1.5)
    assert img.metadata["source_format"] == ("dicom-enhanced" if enhanced else "dicom")
    assert img.metadata["warnings"] == []


def test_dicom_classic_applies_per_image_rescale(tmp_path, phantom_image):
    import pydicom
    written = write_multiecho_dicom(phantom_image, str(tmp_path))
    slopes = {float(pydicom.dcmread(p, stop_before_pixels=True).RescaleSlope)
              for p in written.paths[:12]}
    assert len(slopes) > 1
    img = load_multiecho(str(tmp_path))
    np.testing.assert_allclose(img.signal, written.expected["magnitude"], rtol=1e-6, atol=1e-4)


def test_dicom_series_per_echo_is_merged(tmp_path, phantom_image):
    written = write_multiecho_dicom(phantom_image, str(tmp_path), series_per_echo=True)
    assert len(written.series_uids) == phantom_image.n_echoes
    img = load_multiecho(str(tmp_path))
    np.testing.assert_array_equal(img.echo_times_ms, phantom_image.echo_times_ms)
    np.testing.assert_allclose(img.signal, written.expected["magnitude"], rtol=1e-6, atol=1e-4)
    assert len(img.metadata["series_instance_uids"]) == phantom_image.n_echoes
    # any one of the merged series numbers selects the whole set
    again = load_multiecho(str(tmp_path), series=103)
    assert again.n_echoes == phantom_image.n_echoes


def test_dicom_spin_echo_is_t2(tmp_path):
    ph = make_phantom("normal", shape=(3, 8, 10), echo_times_ms=[10, 20, 30, 40], seed=1)
    se = MultiEchoImage(ph.image.signal, ph.image.echo_times_ms, ph.image.ijk_to_ras, "T2", 3.0, {})
    write_multiecho_dicom(se, str(tmp_path / "c"))
    write_multiecho_dicom(se, str(tmp_path / "e"), enhanced=True)
    assert load_multiecho(str(tmp_path / "c")).quantity == "T2"
    enh = load_multiecho(str(tmp_path / "e"))
    assert enh.quantity == "T2" and enh.field_strength_t == pytest.approx(3.0)


@pytest.mark.parametrize("enhanced", [False, True])
def test_dicom_phase_is_set_aside_and_kept(tmp_path, phantom_image, enhanced):
    phase = np.random.default_rng(0).uniform(-3.1, 3.1, phantom_image.signal.shape).astype(np.float32)
    written = write_multiecho_dicom(phantom_image, str(tmp_path), enhanced=enhanced,
                                    components={"phase": phase})
    img = load_multiecho(str(tmp_path))
    assert img.n_echoes == phantom_image.n_echoes  # phase images are not echoes
    np.testing.assert_allclose(img.signal, written.expected["magnitude"], rtol=1e-6, atol=1e-4)
    kept = img.metadata["complex_components"]["phase"]
    np.testing.assert_allclose(kept, written.expected["phase"], rtol=1e-6, atol=1e-4)
    assert img.metadata["set_aside"][0]["component"] == "phase"
    json.dumps(json_safe(img.metadata))


def test_dicom_left_handed_grid_comes_back_sorted_along_normal(tmp_path):
    ph = make_phantom("normal", shape=(3, 8, 10), echo_times_ms=[2, 4, 6], seed=2)
    m = oblique()
    m[:3, 2] *= -1  # k runs against the slice normal (left-handed IJK)
    img_in = MultiEchoImage(ph.image.signal, ph.image.echo_times_ms, m)
    written = write_multiecho_dicom(img_in, str(tmp_path))
    img = load_multiecho(str(tmp_path))
    assert np.linalg.det(img.ijk_to_ras[:3, :3]) > 0
    np.testing.assert_allclose(img.ijk_to_ras[:3, 2], -m[:3, 2], atol=1e-4)
    # voxel (i, j, k) read back is voxel (i, j, nk - 1 - k) written: same place, same value
    nk = img.shape[0]
    np.testing.assert_allclose(img.ijk_to_ras @ [2, 3, 0, 1], m @ [2, 3, nk - 1, 1], atol=1e-4)
    np.testing.assert_allclose(img.signal, written.expected["magnitude"][:, ::-1], rtol=1e-6, atol=1e-4)


def test_dicom_several_series_listed_then_chosen(tmp_path, phantom_image):
    a = write_multiecho_dicom(phantom_image, str(tmp_path), series_number=7,
                              series_description="GRE liver")
    short = MultiEchoImage(phantom_image.signal[:4], phantom_image.echo_times_ms[:4],
                           phantom_image.ijk_to_ras, "T2*", 1.5, {})
    b = write_multiecho_dicom(short, str(tmp_path), series_number=9,
                              series_description="GRE pancreas", enhanced=True)
    with pytest.raises(InputError) as err:
        load_multiecho(str(tmp_path))
    msg = str(err.value)
    assert "2 multi-echo series" in msg and "series=" in msg
    assert "7" in msg and "9" in msg and "GRE liver" in msg and "GRE pancreas" in msg
    assert load_multiecho(str(tmp_path), series=7).n_echoes == phantom_image.n_echoes
    assert load_multiecho(str(tmp_path), series="9").n_echoes == 4
    assert load_multiecho(str(tmp_path), series=b.series_uids[0]).n_echoes == 4
    assert load_multiecho(str(tmp_path), series="gre liver").metadata["series_instance_uids"] == a.series_uids
    with pytest.raises(InputError, match="No series matching series=42"):
        load_multiecho(str(tmp_path), series=42)
    listed = list_series(str(tmp_path))
    assert sum(c["usable"] for c in listed) == 2


def test_dicom_no_usable_series(tmp_path, phantom_image):
    with pytest.raises(InputError, match="No usable multi-echo series"):
        load_multiecho(str(tmp_path))
    single = MultiEchoImage(phantom_image.signal[:2], [1.0, 2.0], phantom_image.ijk_to_ras)
    write_multiecho_dicom(single, str(tmp_path), series_per_echo=True)
    # make the two single-echo series unrelated (different protocol): nothing to merge
    import pydicom
    for p in sorted(os.listdir(tmp_path)):
        ds = pydicom.dcmread(tmp_path / p)
        ds.ProtocolName = f"protocol {ds.SeriesNumber}"
        ds.save_as(tmp_path / p)
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(InputError, match="(?s)No usable.*single echo time"):
        load_multiecho(str(tmp_path))


def test_dicom_missing_echo_times_asks_for_them(tmp_path, phantom_image):
    import pydicom
    write_multiecho_dicom(phantom_image, str(tmp_path))
    for p in os.listdir(tmp_path):
        ds = pydicom.dcmread(tmp_path / p)
        del ds.EchoTime
        ds.save_as(tmp_path / p)
    with pytest.raises(EchoTimeError, match=r"\(0018,0081\).*echo_times_ms"):
        load_multiecho(str(tmp_path))
    img = load_multiecho(str(tmp_path), echo_times_ms=list(phantom_image.echo_times_ms))
    np.testing.assert_array_equal(img.echo_times_ms, phantom_image.echo_times_ms)
    assert img.metadata["echo_time_source"] == "given by the caller"


def test_dicom_given_echo_times_must_agree(tmp_path, phantom_image):
    write_multiecho_dicom(phantom_image, str(tmp_path))
    with pytest.raises(EchoTimeError, match="differ"):
        load_multiecho(str(tmp_path), echo_times_ms=np.arange(1, 13) * 1.5)


def test_dicom_echo_on_another_grid_is_refused_by_name(tmp_path, phantom_image):
    import pydicom
    write_multiecho_dicom(phantom_image, str(tmp_path), series_per_echo=True)
    for p in os.listdir(tmp_path):
        ds = pydicom.dcmread(tmp_path / p)
        if int(ds.EchoNumbers) == 3:
            ds.ImagePositionPatient = [float(v) + 2.0 for v in ds.ImagePositionPatient]
            ds.save_as(tmp_path / p)
    with pytest.raises(GeometryError, match=r"echo 3 \(TE 3 ms"):
        load_multiecho(str(tmp_path))


def test_dicom_incomplete_echo_is_refused(tmp_path, phantom_image):
    import pydicom
    write_multiecho_dicom(phantom_image, str(tmp_path))
    for p in sorted(os.listdir(tmp_path)):
        ds = pydicom.dcmread(tmp_path / p, stop_before_pixels=True)
        if int(ds.EchoNumbers) == 5:
            os.remove(tmp_path / p)
            break
    with pytest.raises(GeometryError, match=r"echo 5 \(TE 5 ms.*3 slices"):
        load_multiecho(str(tmp_path))


def test_dicom_file_list(tmp_path, phantom_image):
    written = write_multiecho_dicom(phantom_image, str(tmp_path))
    img = load_multiecho(written.paths)
    assert img.n_echoes == phantom_image.n_echoes


# --------------------------------------------------------------------------- NIfTI

def sitk_image(vol, ijk_to_ras):
    import SimpleITK as sitk
    img = sitk.GetImageFromArray(np.asarray(vol))
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ ijk_to_ras
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    img.SetSpacing(spacing.tolist())
    img.SetDirection((lps[:3, :3] / spacing).ravel().tolist())
    img.SetOrigin(lps[:3, 3].tolist())
    return img


def nifti_affine(path):
    """sform (or qform-free) affine parsed from the NIfTI-1 header, no library."""
    import struct
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as fh:
        h = fh.read(348)
    sform_code = struct.unpack("<h", h[254:256])[0]
    assert sform_code > 0
    m = np.eye(4)
    m[:3] = np.array(struct.unpack("<12f", h[280:328])).reshape(3, 4)
    return m


def write_nifti_echoes(folder, image, numbers, tes_ms=None, sidecar_extra=None, stem="gre"):
    import SimpleITK as sitk
    paths = []
    for n, number in enumerate(numbers):
        p = os.path.join(folder, f"{stem}_e{number}.nii.gz")
        sitk.WriteImage(sitk_image(image.signal[n], image.ijk_to_ras), p)
        if tes_ms is not None:
            side = {"EchoTime": tes_ms[n] / 1000.0, "MagneticFieldStrength": 3,
                    "Manufacturer": "Philips", "SeriesNumber": 1401,
                    "SeriesDescription": "T2star", "ScanningSequence": "GR"}
            side.update(sidecar_extra or {})
            with open(p.replace(".nii.gz", ".json"), "w") as fh:
                json.dump(side, fh)
        paths.append(p)
    return paths


@pytest.fixture(scope="module")
def small_image():
    ph = make_phantom("normal", shape=(3, 12, 14), echo_times_ms=[1.2, 2.6, 4.1, 5.5], seed=4)
    return MultiEchoImage(ph.image.signal, ph.image.echo_times_ms, oblique(), "T2*", 3.0, {})


def test_nifti_echoes_with_sidecars_and_gap(tmp_path, small_image):
    paths = write_nifti_echoes(str(tmp_path), small_image, [1, 3, 4, 5],
                               tes_ms=small_image.echo_times_ms)
    img = load_multiecho(str(tmp_path))
    np.testing.assert_allclose(img.echo_times_ms, small_image.echo_times_ms, rtol=0, atol=1e-9)
    np.testing.assert_allclose(img.ijk_to_ras, nifti_affine(paths[0]), rtol=0, atol=1e-4)
    np.testing.assert_allclose(img.ijk_to_ras, small_image.ijk_to_ras, rtol=0, atol=1e-4)
    np.testing.assert_array_equal(img.signal, small_image.signal)
    assert img.field_strength_t == 3 and img.metadata["manufacturer"] == "Philips"
    assert img.metadata["echo_numbers"] == [1, 3, 4, 5]
    assert load_multiecho(paths[::-1]).n_echoes == 4  # listed in any order: sidecars decide


def test_nifti_4d_with_echo_time_list(tmp_path, small_image):
    import SimpleITK as sitk
    order = [2, 0, 3, 1]
    vols = [sitk_image(small_image.signal[n], small_image.ijk_to_ras) for n in order]
    p = str(tmp_path / "multiecho.nii.gz")
    sitk.WriteImage(sitk.JoinSeries(vols), p)
    with open(tmp_path / "multiecho.json", "w") as fh:
        json.dump({"EchoTime": [small_image.echo_times_ms[n] / 1000 for n in order],
                   "ScanningSequence": "SE"}, fh)
    with pytest.warns(EchoOrderWarning):
        img = load_multiecho(p)
    np.testing.assert_allclose(img.echo_times_ms, small_image.echo_times_ms, atol=1e-9)
    np.testing.assert_array_equal(img.signal, small_image.signal)
    np.testing.assert_allclose(img.ijk_to_ras, small_image.ijk_to_ras, atol=1e-4)
    assert img.quantity == "T2" and any("sorted" in w for w in img.metadata["warnings"])


def test_nifti_magnitude_real_imaginary_per_echo(tmp_path, small_image):
    import SimpleITK as sitk
    rng = np.random.default_rng(1)
    phase = rng.uniform(-np.pi, np.pi, small_image.signal.shape)
    real = small_image.signal * np.cos(phase)
    imag = small_image.signal * np.sin(phase)
    for n in range(small_image.n_echoes):
        vols = [sitk_image(a[n].astype(np.float32), small_image.ijk_to_ras)
                for a in (small_image.signal, real, imag)]
        sitk.WriteImage(sitk.JoinSeries(vols), str(tmp_path / f"ge_e{n + 1}.nii.gz"))
        with open(tmp_path / f"ge_e{n + 1}.json", "w") as fh:
            json.dump({"EchoTime": small_image.echo_times_ms[n] / 1000, "SeriesNumber": 16,
                       "ScanningSequence": "RM"}, fh)
    img = load_multiecho(str(tmp_path))
    np.testing.assert_array_equal(img.signal, small_image.signal)
    np.testing.assert_allclose(img.metadata["complex_components"]["real"], real, rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(img.metadata["complex_components"]["imaginary"], imag, rtol=1e-6, atol=1e-4)
    assert any("magnitude" in w for w in img.metadata["warnings"])


def test_nifti_without_sidecars_asks_for_echo_times(tmp_path, small_image):
    paths = write_nifti_echoes(str(tmp_path), small_image, [1, 2, 3, 4])
    with pytest.raises(EchoTimeError, match=r"sidecar.*gre_e1\.json.*echo_times_ms"):
        load_multiecho(str(tmp_path))
    given = [5.5, 1.2, 4.1, 2.6]
    with pytest.warns(EchoOrderWarning):
        img = load_multiecho([paths[3], paths[0], paths[2], paths[1]], echo_times_ms=given)
    np.testing.assert_array_equal(img.signal, small_image.signal)
    np.testing.assert_allclose(img.echo_times_ms, small_image.echo_times_ms)


def test_nifti_sidecar_disagreeing_with_given_times(tmp_path, small_image):
    write_nifti_echoes(str(tmp_path), small_image, [1, 2, 3, 4], tes_ms=small_image.echo_times_ms)
    with pytest.raises(EchoTimeError, match="differ"):
        load_multiecho(str(tmp_path), echo_times_ms=[1, 2, 3, 4])


def test_nifti_echo_on_another_grid(tmp_path, small_image):
    import SimpleITK as sitk
    paths = write_nifti_echoes(str(tmp_path), small_image, [1, 2, 3, 4], tes_ms=small_image.echo_times_ms)
    shifted = small_image.ijk_to_ras.copy()
    shifted[:3, 3] += 1.0
    sitk.WriteImage(sitk_image(small_image.signal[2], shifted), paths[2])
    with pytest.raises(GeometryError, match=r"gre_e3\.nii\.gz \(TE 4\.1 ms\)"):
        load_multiecho(str(tmp_path))


def test_nifti_two_series_in_folder(tmp_path, small_image):
    write_nifti_echoes(str(tmp_path), small_image, [1, 2, 3, 4], tes_ms=small_image.echo_times_ms)
    write_nifti_echoes(str(tmp_path), small_image, [1, 2, 3, 4], tes_ms=small_image.echo_times_ms,
                       sidecar_extra={"SeriesNumber": 25, "SeriesDescription": "other"},
                       stem="other")
    with pytest.raises(InputError, match="2 multi-echo series"):
        load_multiecho(str(tmp_path))
    assert load_multiecho(str(tmp_path), series=25).metadata["series_description"] == "other"


# --------------------------------------------------------------------------- NRRD sequences

def write_seq_nrrd(path, frames, ijk_to_ras, keys, list_first=False, space="left-posterior-superior",
                   label="frame", unit=None, encoding="raw", index_values=None):
    """A .seq.nrrd built by hand after Slicer's vtkMRMLVolumeSequenceStorageNode layout."""
    frames = np.asarray(frames, dtype=np.float32)
    n, nk, nj, ni = frames.shape
    flip = np.array({"left-posterior-superior": (-1, -1, 1),
                     "right-anterior-superior": (1, 1, 1)}[space])
    dirs = [flip * ijk_to_ras[:3, c] for c in range(3)]
    vec = lambda v: "(" + ",".join(repr(float(x)) for x in v) + ")"
    origin = vec(flip * ijk_to_ras[:3, 3])
    index_values = index_values if index_values is not None else [str(x) for x in range(n)]
    if list_first:
        data = np.moveaxis(frames, 0, -1)  # C order (k, j, i, n): n fastest
        sizes, kinds = f"{n} {ni} {nj} {nk}", "list domain domain domain"
        sdirs = "none " + " ".join(vec(d) for d in dirs)
        labels = f'"{label}" "" "" ""'
        units = f'"{unit}" "" "" ""' if unit else None
        axis = 0
    else:
        data = frames
        sizes, kinds = f"{ni} {nj} {nk} {n}", "domain domain domain list"
        sdirs = " ".join(vec(d) for d in dirs) + " none"
        labels = f'"" "" "" "{label}"'
        units = f'"" "" "" "{unit}"' if unit else None
        axis = 3
    lines = ["NRRD0004", "# Complete NRRD file format specification at:", "type: float",
             "dimension: 4", f"space: {space}", f"sizes: {sizes}", f"space directions: {sdirs}",
             f"kinds: {kinds}", f"labels: {labels}"] + ([f"units: {units}"] if units else []) + [
             "endian: little", f"encoding: {encoding}", f"space origin: {origin}",
             "DataNodeClassName:=vtkMRMLScalarVolumeNode"]
    lines += [f"{k}:={v}" for k, v in keys.items()]
    lines += [f"axis {axis} index type:=numeric",
              f"axis {axis} index values:=" + " ".join(index_values), ""]
    blob = np.ascontiguousarray(data).astype("<f4").tobytes()
    if encoding == "gzip":
        blob = gzip.compress(blob)
    with open(path, "wb") as fh:
        fh.write(("\n".join(lines) + "\n").encode("latin-1"))
        fh.write(blob)


def test_seq_nrrd_with_multivolume_labels(tmp_path, small_image):
    p = str(tmp_path / "echoes.seq.nrrd")
    keys = {"MultiVolume.FrameLabels": ",".join(f"{t:g}" for t in small_image.echo_times_ms),
            "MultiVolume.FrameIdentifyingDICOMTagName": "EchoTime",
            "MultiVolume.FrameIdentifyingDICOMTagUnits": "ms"}
    write_seq_nrrd(p, small_image.signal, small_image.ijk_to_ras, keys)
    img = load_multiecho(p)
    np.testing.assert_allclose(img.echo_times_ms, small_image.echo_times_ms)
    np.testing.assert_allclose(img.ijk_to_ras, small_image.ijk_to_ras, atol=1e-9)
    np.testing.assert_array_equal(img.signal, small_image.signal)
    assert "FrameLabels" in img.metadata["echo_time_source"]


def test_seq_nrrd_legacy_layout_with_echo_time_index_in_seconds(tmp_path, small_image):
    p = str(tmp_path / "legacy.seq.nrrd")
    write_seq_nrrd(p, small_image.signal, small_image.ijk_to_ras, {}, list_first=True,
                   space="right-anterior-superior", label="echo time", unit="s", encoding="gzip",
                   index_values=[f"{t / 1000:.6g}" for t in small_image.echo_times_ms])
    img = load_multiecho(p)
    np.testing.assert_allclose(img.echo_times_ms, small_image.echo_times_ms, atol=1e-9)
    np.testing.assert_allclose(img.ijk_to_ras, small_image.ijk_to_ras, atol=1e-9)
    np.testing.assert_array_equal(img.signal, small_image.signal)


def test_seq_nrrd_frame_numbers_are_not_echo_times(tmp_path, small_image):
    p = str(tmp_path / "frames.seq.nrrd")
    write_seq_nrrd(p, small_image.signal, small_image.ijk_to_ras, {}, label="frame")
    with pytest.raises(EchoTimeError, match="FrameLabels.*index values.*frame numbers|FrameLabels.*'frame'"):
        load_multiecho(p)
    img = load_multiecho(p, echo_times_ms=small_image.echo_times_ms)
    np.testing.assert_allclose(img.echo_times_ms, small_image.echo_times_ms)
    # a MultiVolume of another tag (e.g. trigger time) does not give echo times either
    p2 = str(tmp_path / "trigger.seq.nrrd")
    write_seq_nrrd(p2, small_image.signal, small_image.ijk_to_ras,
                   {"MultiVolume.FrameLabels": "0,100,200,300",
                    "MultiVolume.FrameIdentifyingDICOMTagName": "TriggerTime"})
    with pytest.raises(EchoTimeError):
        load_multiecho(p2)


def test_seq_nrrd_written_by_slicer_core(tmp_path, small_image):
    slicer = pytest.importorskip("slicer", reason="slicer-core (Slicer's MRML) is not installed")
    import vtk
    from vtk.util import numpy_support
    scene = slicer.vtkMRMLScene()
    seq = scene.AddNewNodeByClass("vtkMRMLSequenceNode", "echoes")
    seq.SetIndexName("frame")
    seq.SetAttribute("MultiVolume.FrameLabels", ",".join(f"{t:g}" for t in small_image.echo_times_ms))
    seq.SetAttribute("MultiVolume.FrameIdentifyingDICOMTagName", "EchoTime")
    seq.SetAttribute("MultiVolume.FrameIdentifyingDICOMTagUnits", "ms")
    m = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            m.SetElement(r, c, small_image.ijk_to_ras[r, c])
    for n in range(small_image.n_echoes):
        vol = slicer.vtkMRMLScalarVolumeNode()
        data = vtk.vtkImageData()
        nk, nj, ni = small_image.shape
        data.SetDimensions(ni, nj, nk)
        data.AllocateScalars(vtk.VTK_FLOAT, 1)
        numpy_support.vtk_to_numpy(data.GetPointData().GetScalars())[:] = small_image.signal[n].ravel()
        vol.SetAndObserveImageData(data)
        vol.SetIJKToRASMatrix(m)
        seq.SetDataNodeAtValue(vol, str(n))
    storage = slicer.vtkMRMLVolumeSequenceStorageNode()
    scene.AddNode(storage)
    p = str(tmp_path / "slicer.seq.nrrd")
    storage.SetFileName(p)
    assert storage.WriteData(seq)
    img = load_multiecho(p)
    np.testing.assert_allclose(img.echo_times_ms, small_image.echo_times_ms)
    np.testing.assert_allclose(img.ijk_to_ras, small_image.ijk_to_ras, atol=1e-6)
    np.testing.assert_array_equal(img.signal, small_image.signal)


def test_plain_nrrd_files_with_typed_echo_times(tmp_path, small_image):
    import SimpleITK as sitk
    paths = []
    for n in range(small_image.n_echoes):
        p = str(tmp_path / f"echo{n}.nrrd")
        sitk.WriteImage(sitk_image(small_image.signal[n], small_image.ijk_to_ras), p)
        paths.append(p)
    with pytest.raises(EchoTimeError, match="echo_times_ms"):
        load_multiecho(paths)
    img = load_multiecho(paths, echo_times_ms=small_image.echo_times_ms)
    np.testing.assert_array_equal(img.signal, small_image.signal)
    np.testing.assert_allclose(img.ijk_to_ras, small_image.ijk_to_ras, atol=1e-4)
    with pytest.raises(InputError, match="No usable"):
        load_multiecho(str(tmp_path))


def test_missing_path_and_empty_list():
    with pytest.raises(InputError, match="does not exist"):
        load_multiecho("/nonexistent/folder/for/ironmapping")
    with pytest.raises(InputError, match="empty list"):
        load_multiecho([])


def test_quantity_override_is_recorded(tmp_path, small_image):
    write_nifti_echoes(str(tmp_path), small_image, [1, 2, 3, 4], tes_ms=small_image.echo_times_ms)
    img = load_multiecho(str(tmp_path), quantity="T2")
    assert img.quantity == "T2" and any("caller" in w for w in img.metadata["warnings"])


def test_dicom_derived_map_in_series_is_ignored(tmp_path, phantom_image):
    import pydicom
    from pydicom.uid import generate_uid
    written = write_multiecho_dicom(phantom_image, str(tmp_path))
    ds = pydicom.dcmread(written.paths[0])
    ds.ImageType = ["DERIVED", "SECONDARY", "R2STAR"]
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    del ds.EchoTime
    ds.save_as(tmp_path / "map.dcm")
    img = load_multiecho(str(tmp_path))
    assert img.n_echoes == phantom_image.n_echoes
    np.testing.assert_allclose(img.signal, written.expected["magnitude"], rtol=1e-6, atol=1e-4)


# --------------------------------------------------------------------------- damaged files, units

def _nifti_echoes(image, folder, suffix=".nii", te_scale=1e-3):
    import SimpleITK as sitk

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n, te in enumerate(image.echo_times_ms, 1):
        path = folder / f"gre_e{n}{suffix}"
        sitk.WriteImage(sitk.GetImageFromArray(np.ascontiguousarray(image.signal[n - 1])), str(path))
        (folder / f"gre_e{n}.json").write_text(json.dumps({"EchoTime": te * te_scale,
                                                          "MagneticFieldStrength": 1.5}))
        paths.append(path)
    return paths


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_truncated_nifti_echo_is_refused_naming_the_file(phantom_image, tmp_path, suffix):
    paths = _nifti_echoes(phantom_image, tmp_path / "e", suffix)
    data = paths[2].read_bytes()
    paths[2].write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated") as err:
        load_multiecho(tmp_path / "e")
    assert paths[2].name in str(err.value)


def test_truncated_nifti_label_map_is_refused(phantom_image, tmp_path):
    from IronMapping import maps_io

    path = maps_io.write_volume(tmp_path / "labels.nii", np.ones((4, 20, 24), np.int16),
                                np.eye(4), sidecar=False, compress=False)
    path.write_bytes(path.read_bytes()[:-500])
    with pytest.raises(InputError, match="labels.nii is truncated"):
        maps_io.read_labels(path)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_values_in_nifti_are_found_and_refused(phantom_image, tmp_path, suffix, value):
    """ITK reads NaN in a NIfTI as 0; the raw data must still be seen as invalid."""
    signal = phantom_image.signal.copy()
    signal[3, 1, 5, 7] = value
    img = MultiEchoImage(signal, phantom_image.echo_times_ms, np.eye(4), "T2*", 1.5, {})
    paths = _nifti_echoes(img, tmp_path / "e", suffix)
    from IronMapping.io.nifti import check_nifti_file, read_volumes

    assert check_nifti_file(paths[3]).tolist() == [np.ravel_multi_index((1, 5, 7), signal.shape[1:])]
    vols, _ = read_volumes(paths[3])
    assert not np.isfinite(vols[0, 1, 5, 7]) and np.isfinite(np.delete(vols.ravel(), 0)).sum() > 0
    with pytest.raises(InputError, match="non-finite") as err:
        load_multiecho(tmp_path / "e")
    assert paths[3].name in str(err.value)


def test_echo_times_in_seconds_with_1ms_spacing_get_the_units_diagnosis():
    vols = [np.ones((2, 2, 2), np.float32)] * 12
    te_s = [0.001 * n for n in range(1, 13)]
    with pytest.raises(EchoTimeError, match="look like seconds") as err:
        validate_echoes(vols, te_s, np.eye(4))
    assert "same echo time" not in str(err.value) and "1000" in str(err.value)


def test_echo_times_in_microseconds_are_recognised(phantom_image, tmp_path):
    te_us = [1000.0 * n for n in range(1, 13)]
    vols = [np.ones((2, 2, 2), np.float32)] * 12
    with pytest.raises(EchoTimeError, match="microseconds") as err:
        validate_echoes(vols, te_us, np.eye(4))
    assert "Divide them by 1000" in str(err.value) and "--te-ms" in str(err.value)
    # the same from a sidecar holding microseconds, and from fit() itself
    _nifti_echoes(phantom_image, tmp_path / "e", te_scale=1000.0)
    with pytest.raises(EchoTimeError, match="microseconds"):
        load_multiecho(tmp_path / "e")
    from IronMapping.relaxometry import fit

    with pytest.raises(EchoTimeError, match="microseconds"):
        fit(phantom_image.signal, phantom_image.echo_times_ms * 1000.0)
    with pytest.raises(EchoTimeError, match="seconds"):
        fit(phantom_image.signal, phantom_image.echo_times_ms / 1000.0)


def test_missing_echo_times_message_names_the_real_option():
    vols = [np.ones((2, 2, 2), np.float32)] * 3
    with pytest.raises(EchoTimeError) as err:
        validate_echoes(vols, None, np.eye(4))
    assert "--te-ms" in str(err.value) and "--echo-times" not in str(err.value)


def test_help_of_fit_after_import_package():
    import subprocess
    import sys

    code = ("import IronMapping, pydoc; text = pydoc.render_doc(IronMapping.relaxometry.fit); "
            "assert 'Returns' in text and 'RelaxometryFit' in text, text")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("cut", [0.5, 0.97])
def test_truncated_integer_nifti_gz_is_refused(tmp_path, cut):
    """int16 .nii.gz (as dcm2niix writes): checked by the gzip trailer, then the stream."""
    import SimpleITK as sitk

    from IronMapping.io.nifti import check_nifti_file

    rng = np.random.default_rng(0)
    path = tmp_path / "e1.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(rng.integers(0, 3000, (6, 40, 50)).astype(np.int16)),
                    str(path), True)
    assert check_nifti_file(path) is None
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(InputError, match="e1.nii.gz is truncated"):
        check_nifti_file(path)
