"""The abdominal digital reference object: anatomy, truth, noise statistics, acquisition variants."""

import warnings

import numpy as np
import pytest
from scipy import ndimage, special

from IronMapping.errors import InputError
from IronMapping.fatmodel import fat_phasor
from IronMapping.image import MultiEchoImage
from IronMapping.phantom import Phantom
from IronMapping.phantom_abdomen import (ABDOMEN_LABELS, ACQUISITIONS, AbdomenPhantom, crop,
                                         crop_to_body, echo_times, g_factor_map, largest_box,
                                         make_abdomen_phantom, make_acquisition, quantise,
                                         zero_fill_background)

def central_chi_ratio(coils):
    """E[M]^2 / E[M^2] of a central chi with 2L degrees of freedom (Constantinides et al. 1997)."""
    return np.exp(2.0 * (special.gammaln(coils + 0.5) - special.gammaln(coils))) / coils


QUICK = dict(voxel_size_mm=(5.0, 5.0, 10.0), n_slices=4)


@pytest.fixture(scope="module")
def noiseless():
    return make_abdomen_phantom(liver_r2star=150.0, snr=None)


def count(ph, name):
    return int(ph.mask(name).sum())


def test_every_region_and_an_outline_that_is_not_a_box(noiseless):
    ph = noiseless
    assert isinstance(ph, Phantom) and isinstance(ph.image, MultiEchoImage)
    assert ph.label_names == ABDOMEN_LABELS
    assert all(count(ph, n) > 100 for n in ABDOMEN_LABELS.values()), \
        {n: count(ph, n) for n in ABDOMEN_LABELS.values()}
    assert count(ph, "liver") > 3 * count(ph, "spleen")
    assert 0.3 < ph.air_fraction < 0.7
    assert np.all((ph.labels == 0) == ~ph.body)
    for body in ph.body:                      # an ellipse fills pi/4 of its bounding box
        rows, cols = np.nonzero(body)
        fill = body.sum() / ((np.ptp(rows) + 1) * (np.ptp(cols) + 1))
        assert 0.72 < fill < 0.9
    # the whole skin line is subcutaneous fat
    edge = ph.body & ~ndimage.binary_erosion(ph.body, np.ones((1, 3, 3), bool))
    assert np.all(ph.labels[edge] == 7)


def test_lungs_and_heart_above_kidneys_below(noiseless):
    ph = noiseless
    per_slice = lambda name: ph.mask(name).sum(axis=(1, 2))  # noqa: E731
    assert per_slice("lung")[0] == 0 and per_slice("lung")[-1] > 500
    assert per_slice("myocardium")[0] == 0 and per_slice("myocardium")[-1] > 100
    assert per_slice("kidney")[0] > 500 and per_slice("kidney")[-1] == 0
    assert not np.any(make_abdomen_phantom(snr=None, include_heart=False, **QUICK).mask("myocardium"))


def test_noiseless_signal_is_the_model_of_the_truth_maps(noiseless):
    ph = noiseless
    te = ph.image.echo_times_ms
    c = fat_phasor(te, 1.5)
    mix = np.abs((1 - ph.fat_fraction)[None] + ph.fat_fraction[None] * c[:, None, None, None])
    model = ph.s0[None] * mix * np.exp(-np.multiply.outer(te / 1000.0, ph.r2star))
    np.testing.assert_allclose(ph.image.signal, model, rtol=2e-5, atol=1e-3)
    assert np.all(ph.image.signal[:, ~ph.body] == 0)
    assert np.all(ph.image.signal[:, ph.mask("bowel gas")] == 0)
    # adipose tissue is ~90 % fat: its signal goes up and down across echoes
    fat = ph.image.signal[:, ph.mask("subcutaneous fat")].mean(axis=1)
    assert np.sum(np.diff(np.sign(np.diff(fat))) != 0) >= 3
    liver = ph.image.signal[:, ph.mask("liver")].mean(axis=1)
    assert np.all(np.diff(liver) < 0)
    # lung: proton density a few % of liver, decayed to almost nothing by the second echo
    lung = ph.image.signal[:, ph.mask("lung")].mean(axis=1)
    assert lung[0] < 0.05 * liver[0] and lung[1] < 0.02 * liver[0]


def test_texture_is_a_few_percent_and_truth_matches_the_nominal_values(noiseless):
    ph = noiseless
    for name in ("liver", "spleen", "kidney", "pancreas"):
        r2 = ph.r2star[ph.mask(name)]
        s0 = ph.s0[ph.mask(name)]
        assert 0.01 < r2.std() / r2.mean() < 0.06, name
        assert 0.01 < s0.std() / s0.mean() < 0.12, name
        assert ph.truth_median(name) == pytest.approx(ph.region_r2star[name], rel=0.02)
    assert ph.region_r2star["liver"] == 150.0
    assert ph.region_fat_fraction["subcutaneous fat"] == pytest.approx(0.9)


@pytest.mark.parametrize("coils", [1, 4, 8])
def test_air_noise_is_central_chi_with_the_stated_sigma_and_coils(coils):
    ph = make_abdomen_phantom(snr=50.0, coils=coils, seed=coils, **QUICK)
    air = ph.image.signal[:, ~ph.body].astype(np.float64).ravel()
    assert air.size > 50_000
    sigma = 1000.0 / 50.0
    assert ph.noise_sigma == pytest.approx(sigma)
    assert np.sqrt(np.mean(air**2) / (2 * coils)) == pytest.approx(sigma, rel=0.01)
    assert np.mean(air) ** 2 / np.mean(air**2) == pytest.approx(central_chi_ratio(coils), abs=0.004)
    np.testing.assert_allclose(ph.noise_sigma_map, sigma)


def test_tissue_noise_has_sd_sigma_for_any_coil_count():
    truth = make_abdomen_phantom(liver_r2star=30.0, snr=None, **QUICK)
    for coils in (1, 8):
        ph = make_abdomen_phantom(liver_r2star=30.0, snr=40.0, coils=coils, seed=3, **QUICK)
        np.testing.assert_array_equal(ph.r2star, truth.r2star)     # same anatomy, new noise
        liver = ph.mask("liver")
        diff = ph.image.signal[0][liver].astype(np.float64) - truth.image.signal[0][liver]
        # high SNR: Gaussian with SD sigma, mean shifted by the floor's (2L-1) sigma^2 / (2A)
        assert diff.std() == pytest.approx(25.0, rel=0.05)


def test_parallel_imaging_noise_map():
    g = g_factor_map((2, 40, 60), 2.2)
    assert g.max() == pytest.approx(2.2) and g.min() == pytest.approx(1.0)
    assert g[0, 20, 30] > 2.1 and g[0, 0, 0] == pytest.approx(1.0) and g[0, 20, 0] < 1.1
    ph = make_abdomen_phantom(liver_r2star=30.0, snr=40.0, coils=8, g_factor_ratio=2.2, seed=5, **QUICK)
    truth = make_abdomen_phantom(liver_r2star=30.0, snr=None, **QUICK)
    smap = ph.noise_sigma_map
    assert smap.max() / smap.min() == pytest.approx(2.2, rel=1e-5)
    assert ph.noise_sigma == pytest.approx(smap.min())
    # the noise measured in the data follows the map: air at the edge and tissue in the centre
    nj, ni = smap.shape[1:]
    edge = np.zeros(smap.shape, bool)
    edge[:, :8, :] = True
    edge &= ~ph.body
    air = ph.image.signal[:, edge].astype(np.float64)
    assert np.sqrt(np.mean(air**2) / 16) == pytest.approx(np.sqrt(np.mean(smap[edge] ** 2)), rel=0.03)
    centre = np.zeros(smap.shape, bool)
    centre[:, nj // 2 - 6:nj // 2 + 6, ni // 2 - 6:ni // 2 + 6] = True
    centre &= truth.image.signal[0] > 400
    diff = (ph.image.signal[0] - truth.image.signal[0])[centre]
    assert diff.std() == pytest.approx(np.median(smap[centre]), rel=0.08)
    assert np.median(smap[centre]) / np.median(smap[edge]) > 1.9


def test_crop_to_body_leaves_no_air_and_keeps_ras_positions(noiseless):
    ph = noiseless
    c = crop_to_body(ph)
    assert c.acquisition == "cropped" and c.air_fraction == 0.0 and np.all(c.labels > 0)
    assert count(c, "liver") > 0.8 * count(ph, "liver") and count(c, "spleen") > 0.5 * count(ph, "spleen")
    # find the offset of the crop and check arrays and geometry against the original
    r0, r1, c0, c1 = largest_box(ph.body.all(axis=0))
    np.testing.assert_array_equal(c.image.signal, ph.image.signal[:, :, r0:r1, c0:c1])
    np.testing.assert_array_equal(c.r2star, ph.r2star[:, r0:r1, c0:c1])
    ijk = np.array([3, 5, 2, 1.0])                      # (i, j, k) in the cropped grid
    original = np.array([3 + c0, 5 + r0, 2, 1.0])
    np.testing.assert_allclose(c.image.ijk_to_ras @ ijk, ph.image.ijk_to_ras @ original)
    sub = crop(ph, slice(1, 3), slice(10, 20), slice(5, 9))
    assert sub.labels.shape == (2, 10, 4) and sub.noise_sigma_map.shape == (2, 10, 4)
    with pytest.raises(InputError):
        crop(ph, slice(0, 0))


def test_largest_box_of_a_known_mask():
    m = np.zeros((6, 8), bool)
    m[1:5, 2:7] = True
    m[0, 0] = True
    assert largest_box(m) == (1, 5, 2, 7)
    with pytest.raises(InputError):
        largest_box(np.zeros((3, 3), bool))


def test_zero_filled_background_and_integer_magnitudes():
    ph = make_abdomen_phantom(snr=30.0, s0_liver=60.0, **QUICK)
    z = zero_fill_background(ph, margin_mm=5.0)
    grown = ndimage.binary_dilation(ph.body, np.array([[[0, 1, 0], [1, 1, 1], [0, 1, 0]]], bool))
    assert np.all(z.image.signal[:, ~grown] == 0)
    np.testing.assert_array_equal(z.image.signal[:, grown], ph.image.signal[:, grown])
    q = quantise(ph)
    s = q.image.signal
    assert np.all(s == np.round(s)) and np.all(s[:, ~ph.body] == 0)
    assert np.max(np.abs(s[:, ph.body] - ph.image.signal[:, ph.body])) <= 0.5
    assert q.quantisation_step == 1.0 and q.noise_sigma == pytest.approx(2.0)
    assert "integers" in q.image.metadata["description"]


def test_geometry_is_axial_in_ras(noiseless):
    ph = noiseless
    m = ph.image.ijk_to_ras
    np.testing.assert_allclose(ph.image.spacing_mm, [2.5, 2.5, 8.0])

    def centroid(name):
        k, j, i = np.nonzero(ph.mask(name))
        return (m @ np.array([i.mean(), j.mean(), k.mean(), 1.0]))[:3]

    liver, spleen, spine = centroid("liver"), centroid("spleen"), centroid("vertebral marrow")
    assert liver[0] > 0 > spleen[0]              # liver on the patient's right (+x in RAS)
    assert spine[1] < liver[1]                   # spine posterior (-y)
    assert centroid("myocardium")[2] > centroid("kidney")[2]   # heart superior (+z)


def test_protocols_and_named_acquisitions():
    assert echo_times("short-te")[0] == pytest.approx(0.9)
    assert np.diff(echo_times("short-te")) == pytest.approx(0.8)
    assert len(echo_times("kellman-3")) == 3 and len(echo_times("kellman-4")) == 4
    assert echo_times("standard", 3.0)[0] == pytest.approx(0.6)
    for name in ACQUISITIONS:
        ph = make_acquisition(name, quick=True)
        assert isinstance(ph, AbdomenPhantom) and ph.acquisition == name and ph.description
        assert ph.image.signal.shape[1:] == ph.labels.shape == ph.noise_sigma_map.shape
        assert count(ph, "liver") > 200 and count(ph, "spleen") > 30
    assert make_acquisition("cropped", quick=True).air_fraction == 0.0
    below = make_acquisition("cropped-below-lungs", quick=True)
    assert below.air_fraction == 0.0 and not below.mask("lung").any() and not below.mask("myocardium").any()
    assert below.labels.shape[0] == 2 and below.mask("kidney").any()
    severe = make_acquisition("severe-2000", quick=True)
    assert severe.truth_median("liver") == pytest.approx(2000.0, rel=0.02) and severe.image.echo_times_ms[0] == 0.9
    zf = make_acquisition("zero-filled", quick=True)
    assert np.mean(zf.image.signal[:, ~zf.body] == 0) > 0.9
    pi = make_acquisition("parallel-imaging", quick=True)
    assert pi.noise_sigma_map.max() / pi.noise_sigma_map.min() == pytest.approx(2.2, rel=1e-5)
    q = make_acquisition("quantised", quick=True)
    assert q.image.field_strength_t == 3.0 and np.all(q.image.signal == np.round(q.image.signal))
    assert make_acquisition("four-echo", quick=True).coils == 1


def test_plugs_into_fit_and_summarize():
    from IronMapping.quantification import summarize
    from IronMapping.relaxometry import Status, fit

    ph = make_acquisition("air", quick=True, liver_r2star=300.0, spleen_r2star=40.0)
    img = ph.image
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = fit(img.signal, img.echo_times_ms, noise_sigma=ph.noise_sigma, coils=ph.coils)
        summary = summarize(res, ph.labels, ph.label_names, img.field_strength_t, signal=img)
    for organ in ("liver", "spleen"):
        ok = ph.mask(organ) & (res.status == Status.FITTED)
        assert np.median(res.r2star[ok]) == pytest.approx(ph.truth_median(organ), rel=0.03)
    organs = {r["name"]: r["organ"] for r in summary["regions"]}
    assert organs["liver"] == "liver" and organs["spleen"] == "spleen" and organs["kidney"] == "kidney"
    assert organs["myocardium"] == "heart" and organs["lung"] == "lung"
    assert organs["vertebral marrow"] == "bone marrow" and organs["skeletal muscle"] == "skeletal muscle"
    liver = next(r for r in summary["regions"] if r["name"] == "liver")
    assert liver["grade"] == "moderate" and liver["volume_ml"] > 100


def test_reproducible_and_bad_arguments():
    a = make_abdomen_phantom(seed=2, **QUICK)
    b = make_abdomen_phantom(seed=2, **QUICK)
    c = make_abdomen_phantom(seed=3, **QUICK)
    np.testing.assert_array_equal(a.image.signal, b.image.signal)
    assert not np.array_equal(a.image.signal, c.image.signal)
    np.testing.assert_array_equal(a.s0, c.s0)
    for kwargs, match in [(dict(coils=0), "coils"), (dict(snr=-1.0), "snr"),
                          (dict(g_factor_ratio=0.5), "g_factor"), (dict(r2star={"brain": 20.0}), "region"),
                          (dict(liver_r2star=-5.0), "R2"), (dict(liver_fat_fraction=2.0), "fat"),
                          (dict(n_slices=0), "n_slices")]:
        with pytest.raises(InputError, match=match):
            make_abdomen_phantom(**{**QUICK, **kwargs})
    with pytest.raises(InputError, match="acquisition"):
        make_acquisition("mri of the moon")
    with pytest.raises(InputError, match="protocol"):
        echo_times("ultrafast")
    with pytest.raises(InputError, match="region"):
        a.mask("brain")
