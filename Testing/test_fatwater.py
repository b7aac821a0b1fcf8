"""Fat-water separation: exact recovery, the water/fat ambiguity, noise, complex data, real data."""

import warnings

import numpy as np
import pytest

from IronMapping.errors import InputError
from IronMapping.fatmodel import SIX_PEAK_LIVER, fat_phasor
from IronMapping.fatwater import (
    FAT_DOMINANT_EVIDENCE,
    fit_fatwater,
    fit_fatwater_chunk,
    fit_fatwater_complex_chunk,
)
from IronMapping.phantom import make_phantom, noncentral_chi
from IronMapping.relaxometry import Status, fit

PROTOCOLS = {
    "1.5T uniform 12 echoes": (1.5, 1.0 * np.arange(1, 13)),
    "1.5T uniform 6 echoes dTE 2 ms": (1.5, 1.2 + 2.0 * np.arange(6)),
    "3T uniform 12 echoes": (3.0, 0.6 * np.arange(1, 13)),
    "3T non-uniform 7 echoes": (3.0, np.array([1.1, 2.0, 3.4, 4.1, 5.9, 7.2, 9.0])),
    "1.5T non-uniform 8 echoes": (1.5, np.array([1.2, 2.1, 3.9, 4.6, 6.8, 8.0, 10.5, 12.1])),
}
KELLMAN_LIVER_ROI = (slice(145, 175), slice(45, 85))  # rows, columns of data.images


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield


def magnitude(water, fat, r2star, te_ms, field_strength_t):
    """Noiseless |W + F c(t)| exp(-R2* t), shape [echo, voxel]."""
    c = fat_phasor(te_ms, field_strength_t)
    mix = np.asarray(water)[None] + np.asarray(fat)[None] * c[:, None]
    return np.abs(mix) * np.exp(-np.outer(np.asarray(te_ms) / 1000.0, r2star))


def complex_signal(water, fat, r2star, fieldmap_hz, phase, te_ms, field_strength_t,
                   precession_clockwise=True):
    c = fat_phasor(te_ms, field_strength_t, precession_clockwise)
    t = np.asarray(te_ms)[:, None] / 1000.0
    return ((np.asarray(water)[None] + np.asarray(fat)[None] * c[:, None])
            * np.exp(-t * np.asarray(r2star)[None])
            * np.exp(1j * (2 * np.pi * t * np.asarray(fieldmap_hz)[None] + np.asarray(phase)[None])))


# ------------------------------------------------------------------------------ noiseless exactness

@pytest.mark.parametrize("protocol", sorted(PROTOCOLS))
def test_noiseless_recovery_is_exact(protocol):
    b0, te = PROTOCOLS[protocol]
    pdff = np.array([0.0, 5.0, 20.0, 35.0, 50.0, 20.0, 10.0, 40.0])
    r2 = np.array([25.0, 60.0, 100.0, 250.0, 40.0, 500.0, 150.0, 80.0])
    s0 = np.array([1000.0, 800.0, 1200.0, 900.0, 1000.0, 1100.0, 700.0, 950.0])
    water, fat = s0 * (1 - pdff / 100), s0 * pdff / 100
    res = fit_fatwater_chunk(magnitude(water, fat, r2, te, b0), te / 1000.0, field_strength_t=b0)
    np.testing.assert_allclose(res["pdff"], pdff, atol=0.02)
    np.testing.assert_allclose(res["r2star"], r2, rtol=1e-3)
    np.testing.assert_allclose(res["water"], water, rtol=1e-3, atol=0.2)
    np.testing.assert_allclose(res["fat"], fat, rtol=1e-3, atol=0.2)
    np.testing.assert_allclose(res["s0"], s0, rtol=1e-3)
    assert res["converged"].all()
    assert np.all(res["start"] == 0)


def test_noiseless_recovery_through_the_engine_with_a_noise_level():
    b0, te = PROTOCOLS["1.5T uniform 12 echoes"]
    pdff = np.array([0.0, 10.0, 30.0, 50.0])
    r2 = np.array([30.0, 120.0, 400.0, 60.0])
    signal = magnitude(1000 * (1 - pdff / 100), 1000 * pdff / 100, r2, te, b0)
    result = fit(signal, te, method="fat-water", field_strength_t=b0, noise_sigma=1e-3, coils=1,
                 mask=np.ones(4, bool))
    assert result.method == "fat-water"
    assert np.all(result.status == Status.FITTED)
    np.testing.assert_allclose(result.maps["pdff"], pdff, atol=0.02)
    np.testing.assert_allclose(result.r2star, r2, rtol=1e-3)
    np.testing.assert_allclose(result.maps["water"] + result.maps["fat"], 1000.0, rtol=1e-3)


# ------------------------------------------------------------------------------ two-start ambiguity

@pytest.mark.parametrize("b0", [1.5, 3.0])
def test_fat_dominant_voxel_is_not_reported_as_its_water_dominant_mirror(b0):
    te = PROTOCOLS["1.5T uniform 12 echoes" if b0 == 1.5 else "3T uniform 12 echoes"][1]
    truth = magnitude([200.0], [800.0], [40.0], te, b0)
    res = fit_fatwater_chunk(truth, te / 1000.0, field_strength_t=b0, keep_both=True)
    assert res["pdff"][0] == pytest.approx(80.0, abs=0.02)
    assert res["start"][0] == 1
    assert res["alt_pdff"][0] < 50.0  # the mirror exists and was rejected
    assert res["alt_rss"][0] > 1e3 * max(res["rss"][0], 1e-12)

    rng = np.random.default_rng(7)
    sigma = 10.0  # SNR 100
    noisy = noncentral_chi(np.repeat(truth, 300, axis=1), sigma, 1, rng)
    res = fit_fatwater_chunk(noisy, te / 1000.0, field_strength_t=b0, sigma=sigma)
    assert np.mean(res["start"] == 1) > 0.97
    assert np.median(res["pdff"]) == pytest.approx(80.0, abs=1.0)
    assert np.median(res["r2star"]) == pytest.approx(40.0, rel=0.05)


def test_ambiguous_high_iron_voxels_report_the_water_dominant_solution():
    # R2* 650 1/s at 1.5 T, SNR 50: the magnitude hardly tells 20 % from its ~85 % mirror.
    # Plain maximum likelihood (fat_evidence=0) sends many voxels to the mirror.
    b0, te = PROTOCOLS["1.5T uniform 12 echoes"]
    rng = np.random.default_rng(3)
    truth = np.repeat(magnitude([800.0], [200.0], [650.0], te, b0), 400, axis=1)
    noisy = noncentral_chi(truth, 20.0, 1, rng)
    plain = fit_fatwater_chunk(noisy, te / 1000.0, field_strength_t=b0, sigma=20.0,
                               fat_evidence=0.0)
    default = fit_fatwater_chunk(noisy, te / 1000.0, field_strength_t=b0, sigma=20.0)
    assert np.mean(plain["pdff"] > 50) > 0.2
    assert np.mean(default["pdff"] > 50) < 0.05
    assert np.median(default["pdff"]) == pytest.approx(20.0, abs=1.5)
    assert np.median(default["r2star"]) == pytest.approx(650.0, rel=0.05)
    assert FAT_DOMINANT_EVIDENCE == 3.0


def test_neighbourhood_start_selection_pools_the_evidence():
    # R2* 100 1/s, SNR 30: each voxel favours its true (water-dominant) solution by ~1.6 nats
    # on average, too little for one voxel; summed over a 3x3x3 box the evidence is clear.
    b0, te = PROTOCOLS["1.5T uniform 12 echoes"]
    rng = np.random.default_rng(4)
    shape = (6, 10, 10)
    sigma = 1000.0 / 30
    truth = magnitude([800.0], [200.0], [100.0], te, b0)
    signal = noncentral_chi(np.repeat(truth, np.prod(shape), axis=1), sigma, 1, rng)
    signal = signal.reshape((len(te),) + shape)
    voxel = fit_fatwater(signal, te, b0, noise_sigma=sigma, fat_evidence=0.0)
    pooled = fit_fatwater(signal, te, b0, noise_sigma=sigma, fat_evidence=0.0,
                          start_selection="neighbourhood")
    assert np.mean(voxel.pdff > 50) > 0.1
    assert np.mean(pooled.pdff > 50) < 0.02
    assert np.median(pooled.pdff) == pytest.approx(20.0, abs=1.5)
    assert pooled.provenance()["start_selection"] == "neighbourhood"


def test_results_do_not_depend_on_how_voxels_are_chunked():
    # More voxels than one internal Levenberg-Marquardt pass: slow voxels finish in a shared pass.
    b0, te = PROTOCOLS["3T uniform 12 echoes"]
    rng = np.random.default_rng(9)
    n = 20000
    r2 = np.exp(rng.uniform(np.log(25), np.log(1000), n))
    ff = rng.uniform(0, 0.5, n)
    y = noncentral_chi(magnitude(1000 * (1 - ff), 1000 * ff, r2, te, b0), 20.0, 1, rng)
    whole = fit_fatwater_chunk(y, te / 1000.0, field_strength_t=b0, sigma=20.0)
    pieces = [fit_fatwater_chunk(y[:, i:i + 1000], te / 1000.0, field_strength_t=b0, sigma=20.0)
              for i in range(0, n, 1000)]
    for key in ("pdff", "r2star", "start"):
        joined = np.concatenate([p[key] for p in pieces])
        close = np.isclose(whole[key], joined, rtol=1e-3, atol=0.05)
        assert np.mean(close) > 0.998, key
    assert whole["converged"].mean() > 0.99


# ------------------------------------------------------------------------------ noisy phantom

@pytest.mark.parametrize("b0", [1.5, 3.0])
def test_noisy_phantom_regions_at_low_iron(b0):
    ph = make_phantom("normal", shape=(4, 48, 64), field_strength_t=b0, snr=50.0, coils=1,
                      fat_fraction=0.2, seed=11)
    result = fit(ph.image.signal, ph.image.echo_times_ms, method="fat-water", field_strength_t=b0)
    assert result.noise_source == "background"
    for name in ("liver", "spleen", "kidney", "skeletal muscle"):
        region = ph.labels == next(k for k, v in ph.label_names.items() if v == name)
        assert region.sum() > 30
        pdff_truth = 100.0 * float(ph.fat_fraction[region][0])
        assert np.nanmedian(result.maps["pdff"][region]) == pytest.approx(pdff_truth, abs=1.5), name
        r2_truth = ph.region_r2star[name]
        assert np.nanmedian(result.r2star[region]) == pytest.approx(r2_truth, rel=0.05), name


def test_transfusional_liver_pdff_is_not_overestimated():
    ph = make_phantom("transfusional", shape=(4, 48, 64), snr=50.0, fat_fraction=0.2, seed=5)
    result = fit(ph.image.signal, ph.image.echo_times_ms, method="fat-water", field_strength_t=1.5)
    liver = ph.labels == 1
    assert ph.region_r2star["liver"] == 650.0
    assert np.nanmedian(result.maps["pdff"][liver]) == pytest.approx(20.0, abs=2.0)
    assert np.nanmedian(result.r2star[liver]) == pytest.approx(650.0, rel=0.05)


def test_single_exponential_fit_shows_the_fat_bias_that_fat_water_removes():
    ph = make_phantom("normal", shape=(4, 48, 64), snr=50.0, fat_fraction=0.2, seed=2)
    liver = ph.labels == 1
    truth = ph.region_r2star["liver"]
    single = fit(ph.image.signal, ph.image.echo_times_ms)
    fatwater = fit(ph.image.signal, ph.image.echo_times_ms, method="fat-water",
                   field_strength_t=1.5)
    single_error = np.nanmedian(single.r2star[liver]) / truth - 1
    fatwater_error = np.nanmedian(fatwater.r2star[liver]) / truth - 1
    assert abs(single_error) > 0.08
    assert abs(fatwater_error) < 0.03
    assert "pdff" not in single.maps and "pdff" in fatwater.maps


# ------------------------------------------------------------------------------ bad input

def test_fat_water_without_field_strength_says_what_to_do():
    signal = magnitude([800.0], [200.0], [50.0], 1.0 * np.arange(1, 13), 1.5)
    with pytest.raises(InputError, match="field_strength_t"):
        fit(signal, 1.0 * np.arange(1, 13), method="fat-water", noise_sigma=1.0)
    with pytest.raises(InputError, match="tesla"):
        fit_fatwater_chunk(signal, np.arange(1, 13) / 1000.0, field_strength_t=None)
    with pytest.raises(InputError, match="tesla"):
        fit_fatwater_chunk(signal, np.arange(1, 13) / 1000.0, field_strength_t=-3.0)
    with pytest.raises(InputError, match="fat_evidence"):
        fit_fatwater_chunk(signal, np.arange(1, 13) / 1000.0, field_strength_t=1.5,
                           fat_evidence=-1.0)


# ------------------------------------------------------------------------------ complex fit

@pytest.mark.parametrize("protocol", ["1.5T uniform 12 echoes", "3T non-uniform 7 echoes"])
def test_complex_fit_recovers_pdff_r2star_and_field_map(protocol):
    b0, te = PROTOCOLS[protocol]
    water = np.array([800.0, 200.0, 1000.0, 500.0, 900.0])
    fat = np.array([200.0, 800.0, 0.0, 500.0, 100.0])
    r2 = np.array([40.0, 80.0, 300.0, 150.0, 600.0])
    fieldmap = np.array([50.0, -80.0, 20.0, 0.0, 35.0])
    phase = np.array([0.7, -2.0, 1.0, 3.0, -0.4])
    z = complex_signal(water, fat, r2, fieldmap, phase, te, b0)
    res = fit_fatwater_complex_chunk(z, te / 1000.0, field_strength_t=b0)
    np.testing.assert_allclose(res["pdff"], 100 * fat / (water + fat), atol=0.02)
    np.testing.assert_allclose(res["r2star"], r2, rtol=1e-3)
    np.testing.assert_allclose(res["fieldmap_hz"], fieldmap, atol=0.1)
    np.testing.assert_allclose(np.angle(np.exp(1j * (res["phase"] - phase))), 0.0, atol=1e-3)
    assert res["converged"].all()


@pytest.mark.parametrize("b0", [1.5, 3.0])
def test_precession_sign_is_honoured(b0):
    te = 1.0 * np.arange(1, 13) if b0 == 1.5 else 0.6 * np.arange(1, 13)
    water, fat = np.array([800.0, 200.0, 500.0]), np.array([200.0, 800.0, 500.0])
    r2, fieldmap, phase = np.array([40.0, 80.0, 150.0]), np.array([50.0, -80.0, 0.0]), np.ones(3)
    truth = 100 * fat / (water + fat)
    z = complex_signal(water, fat, r2, fieldmap, phase, te, b0, precession_clockwise=False)
    told = fit_fatwater_complex_chunk(z, te / 1000.0, field_strength_t=b0,
                                      precession_clockwise=False)
    np.testing.assert_allclose(told["pdff"], truth, atol=0.02)
    np.testing.assert_allclose(told["fieldmap_hz"], fieldmap, atol=0.1)
    wrong = fit_fatwater_complex_chunk(z, te / 1000.0, field_strength_t=b0,
                                       precession_clockwise=True)
    assert np.max(np.abs(wrong["pdff"] - truth)) > 10.0
    assert np.all(wrong["rss"] > 1e3 * np.maximum(told["rss"], 1e-9))
    # The magnitude does not depend on the convention.
    mag = fit_fatwater_chunk(np.abs(z), te / 1000.0, field_strength_t=b0)
    np.testing.assert_allclose(mag["pdff"], truth, atol=0.02)


def test_whole_array_fit_with_complex_data_and_provenance():
    b0, te = PROTOCOLS["1.5T uniform 12 echoes"]
    water = np.array([[700.0, 900.0], [1000.0, 0.0]])
    fat = np.array([[300.0, 100.0], [0.0, 0.0]])
    r2 = np.array([[60.0, 200.0], [30.0, 30.0]])
    z = complex_signal(water.ravel(), fat.ravel(), r2.ravel(), np.full(4, 25.0), np.zeros(4),
                       te, b0).reshape(len(te), 2, 2)
    res = fit_fatwater(np.abs(z), te, b0, complex_signal=z)
    expected = np.array([[30.0, 10.0], [0.0, np.nan]])
    np.testing.assert_allclose(res.pdff, expected, atol=0.02)
    np.testing.assert_allclose(res.complex_maps["pdff"], expected, atol=0.02)
    assert res.start[1, 1] == 255 and res.pdff.dtype == np.float32
    prov = res.provenance()
    assert prov["fat_spectrum"] == SIX_PEAK_LIVER.describe()
    assert prov["fat_dominant_evidence_nats"] == FAT_DOMINANT_EVIDENCE
    assert prov["units"]["pdff"] == "percent" and prov["complex_fit"] is True


# ------------------------------------------------------------------------------ real data

def test_kellman_liver_magnitude_and_complex_pdff_agree(shared_data):
    path = shared_data / "kellman-fatwater" / "PKdata9.mat"
    if not path.is_file():
        pytest.skip(f"{path} not found (set IRONMAPPING_TEST_DATA)")
    from scipy.io import loadmat

    data = loadmat(path, squeeze_me=True, struct_as_record=False)["data"]
    z = np.moveaxis(np.asarray(data.images), -1, 0)          # [echo, row, column]
    te_ms = np.asarray(data.TE, dtype=float) * 1000.0
    b0 = float(data.FieldStrength)
    clockwise = bool(data.PrecessionIsClockwise)
    # Magnitude: the engine as a user calls it (noise estimated). The "air" of this image is
    # not pure noise (tissue at the top edge), so the noise comes from the decay residuals; it
    # must agree with the noise of the complex data in the bottom corners (real-part SD).
    mag = fit(np.abs(z), te_ms, method="fat-water", field_strength_t=b0)
    assert mag.noise_source.startswith("echo train")
    corners = np.concatenate([z[1:, -30:, :30].ravel(), z[1:, -30:, -30:].ravel()])
    corner_sigma = np.std(corners.real)
    assert 0.8 <= mag.noise_sigma / corner_sigma <= 1.25, (mag.noise_sigma, corner_sigma)
    roi = KELLMAN_LIVER_ROI
    mag_pdff = np.nanmedian(mag.maps["pdff"][roi])
    mag_r2 = np.nanmedian(mag.r2star[roi])
    # Complex: the liver voxels only (the complex fit is slower).
    zr = z[:, roi[0], roi[1]].reshape(len(te_ms), -1)
    cx = fit_fatwater_complex_chunk(zr, te_ms / 1000.0, field_strength_t=b0,
                                    precession_clockwise=clockwise)
    cx_pdff = np.nanmedian(cx["pdff"])
    cx_r2 = np.nanmedian(cx["r2star"])
    assert abs(mag_pdff - cx_pdff) <= 2.0, (mag_pdff, cx_pdff)
    assert mag_r2 == pytest.approx(cx_r2, rel=0.05)
    assert np.isfinite([mag_pdff, mag_r2, cx_pdff, cx_r2]).all()
    assert np.mean(cx["converged"]) > 0.95


@pytest.mark.parametrize("coils", [1.0, 2.0, 3.5])
def test_noncentral_chi_terms_match_the_bessel_functions(coils):
    # The likelihood's h(z) - z = log I_nu(z) - nu log z - z and I_L(z) / I_nu(z) (nu = L - 1),
    # from its interpolation table below the asymptotic range and its series above it, against
    # scipy's scaled Bessel functions in float64.
    from scipy import special

    from IronMapping.fatwater.likelihood import _NoncentralChi

    nu = coils - 1.0
    lik = _NoncentralChi(np.ones((1, 1)), coils, np.float64)
    z = np.concatenate([[0.0, 1e-9, 1e-4], np.linspace(1e-3, 3 * lik.z_large, 20001),
                        np.geomspace(lik.z_large, 1e6, 200)])
    h, ratio = lik._h_ratio(z)
    zp = np.maximum(z, 1e-300)
    i0, i1 = special.ive(nu, zp), special.ive(nu + 1.0, zp)
    with np.errstate(divide="ignore"):
        h_ref = np.log(i0) - nu * np.log(zp)
    with np.errstate(invalid="ignore"):
        ratio_ref = i1 / i0
    tiny = z < 1e-6  # limits at z -> 0
    h_ref[tiny] = -nu * np.log(2.0) - special.gammaln(nu + 1.0)
    ratio_ref[tiny] = z[tiny] / (2.0 * (nu + 1.0))
    assert np.max(np.abs(h - h_ref)) < 3e-7
    assert np.max(np.abs(ratio - ratio_ref)) < 3e-7


def test_fused_cost_and_normal_rows_equal_the_separate_steps():
    # The Levenberg-Marquardt loop evaluates the model, the likelihood terms, the Jacobian and
    # the normal equations in one pass (_cost_and_rows); it must equal the separate steps.
    from IronMapping.fatwater.likelihood import _Gaussian, _NoncentralChi
    from IronMapping.fatwater.magnitude import (_cost_and_rows, _MagnitudeModel,
                                                _normal_rows)

    te = 1.0 * np.arange(1, 13)
    model = _MagnitudeModel(te, fat_phasor(te, 1.5), np.float32)
    rng = np.random.default_rng(3)
    n = 500
    p = np.stack([rng.uniform(0, 1, n), rng.uniform(0, 0.5, n), rng.uniform(0.02, 1.0, n)])
    p[:, :5] = 0.0  # W = F = 0 (and R = 0): finite rows
    y = rng.uniform(0, 1, (12, n)).astype(np.float32)
    for lik in (_Gaussian(), _NoncentralChi(np.full((1, n), 4e-4, np.float32), 1.0,
                                            np.float32)):
        cost, rows = _cost_and_rows(y, model, p, lik)
        e, a, q, amp = model.evaluate(*p)
        cost_ref, rho = lik.terms(y, amp)
        jw, jf, jr = model.jacobian(p[0], p[1], e, a, q, amp)
        rows_ref = _normal_rows(jw, jf, jr, rho, lik.fisher_weights(amp))
        assert np.all(np.isfinite(rows))
        np.testing.assert_allclose(cost, cost_ref, rtol=1e-5)
        np.testing.assert_allclose(rows, rows_ref, rtol=1e-4, atol=1e-6)


def test_a_voxel_whose_next_step_is_within_tolerance_is_not_evaluated_again(monkeypatch):
    # Levenberg-Marquardt declares a voxel converged when its next (Gauss-Newton) step is within
    # _XTOL, without evaluating that trial point: started at its optimum a voxel costs one
    # evaluation, and a fit from the usual start agrees with a tight fit within the tolerance.
    import IronMapping.fatwater.magnitude as magnitude_fit
    from IronMapping.fatwater.likelihood import _Gaussian

    b0, te = PROTOCOLS["1.5T uniform 12 echoes"]
    model = magnitude_fit._MagnitudeModel(te, fat_phasor(te, b0), np.float32)
    rng = np.random.default_rng(5)
    n = 2000
    w, f = rng.uniform(0.3, 0.8, n), rng.uniform(0.0, 0.3, n)
    r = np.exp(rng.uniform(np.log(0.03), np.log(0.5), n))  # R2* 30-500 1/s, in 1/ms
    y = (magnitude(w, f, r * 1e3, te, b0) + rng.normal(0, 0.01, (te.size, n))).astype(np.float32)
    # the least-squares optimum, converged far below the working tolerance
    monkeypatch.setattr(magnitude_fit, "_XTOL", 1e-7)
    wt, ft, rt = w.copy(), f.copy(), r.copy()
    magnitude_fit._lm_magnitude(y, model, wt, ft, rt, _Gaussian(), 200)
    monkeypatch.undo()

    evaluated = []
    real = magnitude_fit._cost_and_rows

    def counting(ya, *args):
        evaluated.append(ya.shape[1])
        return real(ya, *args)

    monkeypatch.setattr(magnitude_fit, "_cost_and_rows", counting)
    w0, f0, r0 = wt.copy(), ft.copy(), rt.copy()
    _, conv = magnitude_fit._lm_magnitude(y, model, w0, f0, r0, _Gaussian(), 50)
    assert conv.all()
    assert evaluated == [n]  # the start only: no trial point was needed
    np.testing.assert_array_equal(r0, rt)

    evaluated.clear()
    ws, fs, rs = np.full(n, 0.7), np.zeros(n), np.full(n, 0.1)
    _, conv = magnitude_fit._lm_magnitude(y, model, ws, fs, rs, _Gaussian(), 50)
    assert conv.mean() > 0.99
    ok = conv & (rt > 0)
    assert np.percentile(np.abs(rs[ok] - rt[ok]) / rt[ok], 99) < 1e-2
