"""Readout and phase of loaded images for the fat-water fit; the fit's hand-over to relaxometry.

The readers record the multi-echo readout (``metadata["readout"]``) where the DICOM (Siemens
protocol ``ucReadOutMode``) or the JSON sidecar states it, and ``fit_inputs_from_image`` turns
an image's phase/real/imaginary components and readout into ``fit_fatwater`` arguments.
"""

import json
import os
import warnings

import numpy as np
import pytest

from IronMapping.fatwater import fit_fatwater, fit_inputs_from_image
from IronMapping.image import MultiEchoImage
from IronMapping.io import load_multiecho
from IronMapping.io.dicom_writer import write_multiecho_dicom
from IronMapping.io.nifti import sidecar_readout
from IronMapping.phantom import make_phantom

from test_fatwater_protocols import FATTY, LIVER, SOFT_TISSUE, complex_scan


@pytest.fixture(scope="module")
def small():
    ph = make_phantom("normal", shape=(2, 10, 12), echo_times_ms=[1.2, 2.6, 4.1, 5.5], seed=4)
    return MultiEchoImage(ph.image.signal, ph.image.echo_times_ms, np.eye(4), "T2*", 1.5, {})


def _add_siemens_protocol(folder, text):
    import pydicom

    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        ds = pydicom.dcmread(path)
        ds.add_new((0x0029, 0x0010), "LO", "SIEMENS CSA HEADER")
        ds.add_new((0x0029, 0x1020), "OB",
                   b"SV10\x04\x03\x02\x01MrPhoenixProtocol\x00### ASCCONV BEGIN ###\n" + text
                   + b"\n### ASCCONV END ###\x00")
        ds.save_as(path)


@pytest.mark.parametrize("value, expected", [(b"0x2", "bipolar"), (b"0x1", "monopolar"),
                                             (b"2", "bipolar"), (None, None)])
def test_dicom_siemens_readout_mode_is_recorded(tmp_path, small, value, expected):
    write_multiecho_dicom(small, str(tmp_path), manufacturer="SIEMENS")
    if value is not None:
        _add_siemens_protocol(str(tmp_path), b"lContrasts = 4\nucReadOutMode\t = \t" + value)
    img = load_multiecho(str(tmp_path))
    assert img.metadata.get("readout") == expected
    assert fit_inputs_from_image(img).get("readout") == expected
    if expected:
        assert "ucReadOutMode" in img.metadata["readout_source"]


def test_dicom_readout_mode_of_another_vendor_is_not_read(tmp_path, small):
    write_multiecho_dicom(small, str(tmp_path), manufacturer="GE MEDICAL SYSTEMS")
    _add_siemens_protocol(str(tmp_path), b"ucReadOutMode = 0x2")
    assert "readout" not in load_multiecho(str(tmp_path)).metadata


@pytest.mark.parametrize("sidecar, expected", [
    ({"ReadoutPolarity": "bipolar"}, "bipolar"), ({"MultiEchoReadout": "flyback"}, "monopolar"),
    ({"ucReadOutMode": "0x2"}, "bipolar"), ({"ucReadOutMode": 1}, "monopolar"),
    ({"ReadoutMode": "alternating"}, "bipolar"), ({}, None), ({"ReadoutPolarity": 3}, None)])
def test_sidecar_readout(sidecar, expected):
    assert sidecar_readout(sidecar) == expected


def test_nifti_sidecar_readout_is_recorded(tmp_path, small):
    import SimpleITK as sitk

    for n, te in enumerate(small.echo_times_ms):
        path = os.path.join(str(tmp_path), f"gre_e{n + 1}.nii.gz")
        sitk.WriteImage(sitk.GetImageFromArray(small.signal[n]), path)
        with open(path.replace(".nii.gz", ".json"), "w") as fh:
            json.dump({"EchoTime": te / 1000.0, "MagneticFieldStrength": 1.5,
                       "ReadoutPolarity": "BIPOLAR"}, fh)
    img = load_multiecho(str(tmp_path))
    assert img.metadata["readout"] == "bipolar"
    assert img.metadata["readout_source"] == "from the JSON sidecar"


def test_fit_inputs_from_image_give_the_phase_and_the_readout():
    z, te, ph, _, sigma = complex_scan(te_ms=[1.2, 3.2, 5.2, 7.2], shape=(2, 32, 40))
    comps = {"real": z.real.astype(np.float32), "imaginary": z.imag.astype(np.float32)}
    image = MultiEchoImage(np.abs(z).astype(np.float32), te, np.eye(4), "T2*", 1.5,
                           {"complex_components": comps, "readout": "monopolar"})
    inputs = fit_inputs_from_image(image)
    assert inputs["readout"] == "monopolar"
    np.testing.assert_allclose(inputs["complex_signal"], z, rtol=1e-5, atol=1e-3)
    # Phase in Siemens stored units (-4096..4095 for -pi..pi) with the magnitude works too.
    stored = np.round(np.angle(z) / np.pi * 4096).clip(-4096, 4095)
    image.metadata["complex_components"] = {"phase": stored}
    phase_z = fit_inputs_from_image(image)["complex_signal"]
    assert np.median(np.abs(np.angle(phase_z * np.conj(z)))) < 0.01
    res = fit_fatwater(image.signal, te, 1.5, mask=ph.labels > 0, **fit_inputs_from_image(image))
    assert float(np.nanmedian(res.pdff[ph.labels == SOFT_TISSUE])) == pytest.approx(90.0, abs=2)
    # Nothing to add: no keys (magnitude only, readout detected).
    assert fit_inputs_from_image(MultiEchoImage(image.signal, te, np.eye(4), "T2*", 1.5, {})) == {}


def test_block_fit_hands_the_spatial_fit_to_relaxometry():
    ph = make_phantom("normal", shape=(2, 32, 40), echo_times_ms=[1.2, 3.2, 5.2, 7.2], snr=50.0,
                      fat_fraction=FATTY, seed=5)
    mask = ph.labels > 0
    res = fit_fatwater(ph.image.signal, ph.image.echo_times_ms, 1.5, mask=mask,
                       noise_sigma=ph.noise_sigma, warn=False)
    index = np.flatnonzero(mask.ravel())[::7]
    scale = np.full(index.size, 2.0)
    bf = res.block_fit(index, scale)
    np.testing.assert_allclose(bf.r2star, res.r2star.ravel()[index], rtol=1e-6)
    np.testing.assert_allclose(bf.s0 * 2.0, res.s0.ravel()[index], rtol=1e-6)
    np.testing.assert_allclose(bf.rss * 4.0, res.rss.ravel()[index], rtol=1e-6)
    np.testing.assert_array_equal(bf.maps["fat_water_ambiguous"], res.ambiguous.ravel()[index])
    assert np.all(bf.echoes_used == 4)
    np.testing.assert_array_equal(bf.maps["pdff"], res.pdff.ravel()[index])
    np.testing.assert_array_equal(bf.converged, res.converged.ravel()[index])


def test_noise_map_matches_a_single_noise_level_and_warn_false_is_silent():
    z, te, ph, _, sigma = complex_scan(te_ms=[1.2, 3.2, 5.2, 7.2], shape=(2, 24, 30))
    mask = ph.labels > 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        one = fit_fatwater(np.abs(z), te, 1.5, mask=mask, noise_sigma=sigma, warn=False)
        mapped = fit_fatwater(np.abs(z), te, 1.5, mask=mask, warn=False,
                              noise_sigma=np.full(mask.shape, sigma))
    assert one.warnings
    np.testing.assert_array_equal(one.pdff, mapped.pdff)
    np.testing.assert_array_equal(one.ambiguous, mapped.ambiguous)
    with pytest.raises(Exception, match="noise map"):
        fit_fatwater(np.abs(z), te, 1.5, mask=mask, noise_sigma=np.ones((3, 3)))
    assert region_pdff(one, ph, LIVER) == pytest.approx(20.0, abs=2)


def region_pdff(res, ph, label):
    return float(np.nanmedian(res.pdff[ph.labels == label]))
