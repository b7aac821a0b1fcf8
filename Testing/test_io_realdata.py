"""IronMapping.io on real scanner data (GE knee DICOM, UKRIN-MAPS kidney NIfTI from three vendors).

The data live outside the repository: set IRONMAPPING_TEST_DATA to the folder holding
ge-knee-t2-mese/ and ukat-kidney-r2star/ (default: ../shared/data beside the repository).
Tests are skipped, saying so, when a data set is absent.
"""

import gzip
import json
import os
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest

from IronMapping.io import load_multiecho

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("IRONMAPPING_TEST_DATA", REPO.parent / "shared" / "data"))
KNEE = DATA / "ge-knee-t2-mese"
KIDNEY = DATA / "ukat-kidney-r2star"
VENDORS = ["ge", "philips", "siemens"]


def need(path):
    if not path.is_dir():
        pytest.skip(f"real test data {path} not found; set IRONMAPPING_TEST_DATA to the folder "
                    "holding ge-knee-t2-mese/ and ukat-kidney-r2star/")


@pytest.fixture(scope="module")
def knee():
    need(KNEE)
    return load_multiecho(str(KNEE))


@pytest.fixture(scope="module")
def kidneys():
    need(KIDNEY)
    return {v: load_multiecho(str(KIDNEY / v)) for v in VENDORS}


def nifti_sform(path):
    """The sform affine (RAS, mm) parsed straight from a NIfTI-1 header."""
    with gzip.open(path, "rb") as fh:
        h = fh.read(348)
    assert struct.unpack("<i", h[:4])[0] == 348
    assert struct.unpack("<h", h[254:256])[0] > 0, "no sform in file"
    m = np.eye(4)
    m[:3] = np.array(struct.unpack("<12f", h[280:328]), dtype=np.float64).reshape(3, 4)
    return m


def fit_clean(image, slices=None):
    """Fit with the default method; fail on any numerical warning."""
    from IronMapping.relaxometry import Status, fit

    signal = image.signal if slices is None else image.signal[:, slices]
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        result = fit(signal, image.echo_times_ms, quantity=image.quantity,
                     field_strength_t=image.field_strength_t)
    fitted = result.status == Status.FITTED
    in_mask = result.status != Status.MASKED
    assert in_mask.sum() > 1000
    assert fitted.sum() >= 0.8 * in_mask.sum(), result.status_counts()
    assert np.all(np.isfinite(result.r2star[fitted]))
    # long-T2 voxels (fluid) may fit an R2* a little below zero within noise; never many
    assert (result.r2star[fitted] <= 0).mean() < 0.01
    return result, fitted


# --------------------------------------------------------------------------- GE knee (DICOM)

def test_ge_knee_interleaved_echoes(knee):
    assert knee.signal.shape == (8, 25, 256, 256) and knee.signal.dtype == np.float32
    np.testing.assert_allclose(knee.echo_times_ms, 6.104 * np.arange(1, 9), rtol=0, atol=1e-9)
    assert knee.quantity == "T2"
    assert knee.field_strength_t == pytest.approx(3.0)
    assert knee.metadata["manufacturer"] == "GE MEDICAL SYSTEMS"
    assert np.allclose(knee.spacing_mm, [0.625, 0.625, 4.0], atol=1e-3)


def test_ge_knee_every_file_lands_in_its_echo_and_slice(knee):
    """Each of the 200 files must be exactly one (echo, slice) of the image, at its position."""
    import pydicom

    lps_to_ras = np.array([-1.0, -1.0, 1.0])
    ras_to_ijk = np.linalg.inv(knee.ijk_to_ras)
    seen = set()
    files = sorted(KNEE.glob("*.dcm"))
    assert len(files) == 200
    for path in files:
        ds = pydicom.dcmread(path)
        e = int(np.argmin(np.abs(knee.echo_times_ms - float(ds.EchoTime))))
        ras = lps_to_ras * np.array([float(v) for v in ds.ImagePositionPatient])
        i, j, k = (ras_to_ijk @ np.append(ras, 1.0))[:3]
        assert abs(i) < 1e-3 and abs(j) < 1e-3 and abs(k - round(k)) < 1e-3, path.name
        k = int(round(k))
        seen.add((e, k))
        np.testing.assert_array_equal(knee.signal[e, k], ds.pixel_array.astype(np.float32))
    assert len(seen) == 200


def test_ge_knee_fit_runs_clean(knee):
    result, fitted = fit_clean(knee, slices=slice(11, 14))
    t2 = 1000.0 / float(np.median(result.r2star[fitted]))  # ms (median of R2*, then invert)
    assert result.quantity == "T2" and 10.0 < t2 < 300.0


# --------------------------------------------------------------------------- kidney (NIfTI)

def sidecar_echo_times_ms(folder):
    tes = []
    for j in folder.glob("*.json"):
        tes.append(json.loads(j.read_text())["EchoTime"] * 1000.0)
    return np.sort(tes)


@pytest.mark.parametrize("vendor", VENDORS)
def test_kidney_echo_times_and_geometry(kidneys, vendor):
    img = kidneys[vendor]
    folder = KIDNEY / vendor
    assert img.n_echoes == 12 and img.signal.shape[1] == 5
    np.testing.assert_allclose(img.echo_times_ms, sidecar_echo_times_ms(folder), rtol=0, atol=1e-9)
    assert img.quantity == "T2*" and img.field_strength_t == pytest.approx(3.0)
    for nii in folder.glob("*.nii.gz"):
        np.testing.assert_allclose(img.ijk_to_ras, nifti_sform(nii), rtol=0, atol=1e-4)
    assert not np.any(img.signal < 0) and np.isfinite(img.signal).all()


def test_kidney_philips_gap_in_echo_numbers(kidneys):
    img = kidneys["philips"]
    assert img.metadata["echo_numbers"] == [1] + list(range(3, 14))
    assert img.metadata["manufacturer"] == "Philips"


def test_kidney_ge_magnitude_taken_from_three_volume_files(kidneys):
    import SimpleITK as sitk

    img = kidneys["ge"]
    first = sorted((KIDNEY / "ge").glob("*_e1.nii.gz"))[0]
    raw = sitk.GetArrayFromImage(sitk.ReadImage(str(first)))  # [volume, k, j, i]
    np.testing.assert_array_equal(img.signal[0], raw[0].astype(np.float32))
    assert set(img.metadata["complex_components"]) == {"real", "imaginary"}
    np.testing.assert_array_equal(img.metadata["complex_components"]["real"][0], raw[1])


@pytest.mark.parametrize("vendor", VENDORS)
def test_kidney_fit_runs_clean(kidneys, vendor):
    img = kidneys[vendor]
    result, fitted = fit_clean(img)
    r2 = float(np.median(result.r2star[fitted]))
    assert 5.0 < r2 < 200.0
