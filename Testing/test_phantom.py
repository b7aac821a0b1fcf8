"""The digital reference object: geometry, truth, presets, noise statistics."""

import numpy as np
import pytest

from IronMapping.errors import InputError
from IronMapping.fatmodel import fat_phasor
from IronMapping.noise import estimate_noise_background, noise_floor_mean
from IronMapping.phantom import LABELS, PRESETS, make_phantom, noncentral_chi, region_r2star


def test_every_region_present_and_named():
    ph = make_phantom("normal")
    assert ph.image.signal.shape == (12, 16, 96, 128)
    assert ph.label_names == LABELS
    counts = {name: int((ph.labels == v).sum()) for v, name in LABELS.items()}
    assert all(n > 30 for n in counts.values()), counts
    assert counts["thyroid"] < counts["pancreas"] < counts["liver"]  # a small structure
    assert (ph.labels == 0).sum() > 0.2 * ph.labels.size              # air around the body


def test_noiseless_signal_is_the_model():
    ph = make_phantom("transfusional", snr=None)
    te = ph.image.echo_times_ms
    liver = ph.labels == 1
    expected = 1000.0 * np.exp(-650.0 * te / 1000.0)
    np.testing.assert_allclose(ph.image.signal[:, liver], expected[:, None] * np.ones((1, liver.sum())), rtol=2e-6)
    assert np.all(ph.image.signal[:, ph.labels == 0] == 0)


def test_presets_encode_their_patterns():
    nh = region_r2star("neonatal-haemochromatosis")
    assert nh["pancreas"] > 100 and nh["thyroid"] > 100 and nh["myocardium"] > 50
    assert nh["spleen"] < 40 and nh["liver"] > 200
    tr = region_r2star("transfusional")
    assert tr["liver"] > 200 and tr["spleen"] > 200 and tr["pancreas"] < 50 and tr["myocardium"] < 50
    assert set(PRESETS) >= {"normal", "neonatal-haemochromatosis", "transfusional"}


def test_3t_scales_r2star_and_echo_times():
    ph = make_phantom("normal", field_strength_t=3.0, snr=None)
    assert ph.region_r2star["liver"] == pytest.approx(60.0)
    assert ph.image.field_strength_t == 3.0
    assert ph.image.echo_times_ms[0] == pytest.approx(0.6)


@pytest.mark.parametrize("coils", [1, 4, 8])
def test_noise_is_noncentral_chi(coils):
    rng = np.random.default_rng(0)
    a, sigma = 30.0, 10.0
    m = noncentral_chi(np.full(400_000, a), sigma, coils, rng)
    assert np.mean(m**2) == pytest.approx(a * a + 2 * coils * sigma**2, rel=0.01)
    m0 = noncentral_chi(np.zeros(400_000), sigma, coils, rng)
    assert np.mean(m0) == pytest.approx(noise_floor_mean(sigma, coils), rel=0.01)
    est = estimate_noise_background(m0)
    assert est.sigma == pytest.approx(sigma, rel=0.03)
    assert est.coils == pytest.approx(coils, rel=0.1)


def test_fat_makes_the_decay_oscillate():
    ph = make_phantom("normal", snr=None, fat_fraction=0.3)
    liver = ph.labels == 1
    s = ph.image.signal[:, liver][:, 0]
    c = fat_phasor(ph.image.echo_times_ms, 1.5)
    expected = 1000 * np.abs(0.7 + 0.3 * c) * np.exp(-30.0 * ph.image.echo_times_ms / 1000)
    np.testing.assert_allclose(s, expected, rtol=1e-5)
    assert np.all(ph.fat_fraction[liver] == pytest.approx(0.3))
    assert np.all(ph.fat_fraction[ph.labels == 2] == 0)


def test_seed_reproducible_and_geometry_ras():
    a = make_phantom("normal", seed=3, shape=(4, 32, 32))
    b = make_phantom("normal", seed=3, shape=(4, 32, 32))
    np.testing.assert_array_equal(a.image.signal, b.image.signal)
    assert a.image.ijk_to_ras[0, 0] < 0 and a.image.ijk_to_ras[1, 1] < 0   # LPS axial in RAS
    np.testing.assert_allclose(a.image.spacing_mm, [3.0, 3.0, 6.0])


def test_bad_phantom_arguments():
    with pytest.raises(InputError, match="preset"):
        make_phantom("unknown")
    with pytest.raises(InputError, match="coils"):
        make_phantom(coils=0)
    with pytest.raises(InputError, match="fat fraction"):
        make_phantom(fat_fraction=1.5)


def test_package_version_matches_pyproject():
    import re
    from pathlib import Path

    import IronMapping

    text = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert re.search(r'^version = "([^"]+)"', text, re.M).group(1) == IronMapping.__version__
