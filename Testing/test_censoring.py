"""Honest statistics for the most iron-loaded organs: right-censored R2*, lower bounds, ROI fit.

The phantoms are the digital reference object with the liver's R2* set to severe iron; the fit
is given the true noise (sigma, coils) so that these tests do not depend on noise estimation.
"""

import warnings

import numpy as np
import pytest

from IronMapping.calibration import liver_iron_concentration, liver_iron_lower_bound
from IronMapping.phantom import S0, make_phantom, noncentral_chi
from IronMapping.quantification import regions_table, summarize
from IronMapping.regions import (censored_percentiles, decayed_to_floor, mean_decay,
                                 protocol_limits, region_statistics, roi_fit, too_fast_voxels)
from IronMapping.relaxometry import Status, fit
from IronMapping.segment_statistics import statistics

LIVER = 1


def severe_liver(r2star, echo_times_ms, snr, coils=1, seed=0, shape=(8, 64, 80)):
    """The transfusional phantom with the liver at `r2star` (1/s): (phantom, liver mask)."""
    ph = make_phantom("transfusional", shape=shape, echo_times_ms=echo_times_ms, snr=snr,
                      coils=coils, seed=seed)
    liver = ph.labels == LIVER
    te_s = np.asarray(echo_times_ms, dtype=np.float64) / 1000.0
    amplitude = S0["liver"] * np.exp(-np.multiply.outer(te_s, np.full(int(liver.sum()), float(r2star))))
    rng = np.random.default_rng(seed + 1)
    ph.image.signal[:, liver] = noncentral_chi(amplitude, ph.noise_sigma, coils, rng)
    ph.r2star[liver] = r2star
    ph.region_r2star["liver"] = float(r2star)
    return ph, liver


def fit_and_summarize(ph):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = fit(ph.image.signal, ph.image.echo_times_ms, mask=ph.labels > 0,
                     noise_sigma=ph.noise_sigma, coils=ph.coils)
        summary = summarize(result, ph.labels, ph.label_names, 1.5, signal=ph.image)
    liver = next(r for r in summary["regions"] if r["name"] == "liver")
    return result, summary, liver


def test_severe_liver_1300_median_within_8_percent():
    truth = 1300.0
    ph, mask = severe_liver(truth, 1.0 * np.arange(1, 13), snr=25)
    result, _, liver = fit_and_summarize(ph)
    fitted_only = np.nanmedian(result.r2star[mask & (result.status == Status.FITTED)])
    assert fitted_only < 0.92 * truth            # dropping the fast voxels biases the median low
    assert 0.1 < liver["r2star_censored_fraction"] < 0.5
    assert liver["r2star_median"] == pytest.approx(truth, rel=0.08)
    assert liver["r2star_lower_bound"] is None and liver["lic_lower_bound"] is None
    assert liver["grade"] == "severe"
    assert liver["lic_mg_per_g"] == pytest.approx(liver_iron_concentration(truth, 1.5)[0], rel=0.08)
    assert any("ranked above every measured value" in n for n in liver["notes"])
    spleen = next(r for r in liver_and_others(ph, result) if r["name"] == "spleen")
    assert spleen["r2star_censored_fraction"] == 0.0


def liver_and_others(ph, result):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return summarize(result, ph.labels, ph.label_names, 1.5, signal=ph.image)["regions"]


@pytest.mark.parametrize("snr, coils", [(25, 1), (50, 8), (67, 1)])
def test_severe_liver_2000_with_te1_0p9_median_or_true_lower_bound(snr, coils, tmp_path):
    truth = 2000.0
    ph, _ = severe_liver(truth, 0.9 * np.arange(1, 13), snr=snr, coils=coils)
    _, summary, liver = fit_and_summarize(ph)
    assert liver["grade"] == "severe"
    if liver["r2star_median"] is not None:
        assert liver["r2star_median"] == pytest.approx(truth, rel=0.15)
        assert liver["r2star_censored_fraction"] < 0.5
    else:
        bound = liver["r2star_lower_bound"]
        assert 0.4 * truth <= bound <= truth
        assert liver["r2star_censored_fraction"] > 0.5
        assert liver["t2star_median"] is None and liver["t2star_upper_bound"] == pytest.approx(1000 / bound)
        assert liver["lic_mg_per_g"] is None
        assert liver["lic_lower_bound"] == pytest.approx(liver_iron_concentration(bound, 1.5)[0])
        assert liver["lic_lower_bound"] < liver_iron_concentration(truth, 1.5)[0]
        assert any(f"R2* above {bound:.0f} 1/s" in n and "faster than the first echo" in n
                   and "shorter first echo" in n for n in liver["notes"])
        assert "LIC above" in liver["lic_note"]
        # the phantom's lesion (R2* 650 1/s) is clearly below the liver's bound
        lesion = summary["lesions"][0]
        assert lesion["reading"] == "hyperintense to liver on T2*"
        assert lesion["background_r2star_lower_bound"] == pytest.approx(bound)
        row = next(r for r in regions_table(summary) if r["Region"] == "liver")
        # the table shows display precision (R2* bound 1 1/s, LIC 0.01 mg/g, share 0.1 %)
        assert row["R2* lower bound (1/s)"] == pytest.approx(bound, abs=0.5)
        assert row["LIC lower bound (mg Fe/g dw)"] == pytest.approx(liver["lic_lower_bound"], abs=0.005)
        assert row["Censored voxels (%)"] == pytest.approx(100 * liver["r2star_censored_fraction"], abs=0.05)
        import csv

        from IronMapping.quantification import write_regions_csv

        with open(write_regions_csv(summary, tmp_path / "regions.csv"), encoding="utf-8") as f:
            csv_liver = next(r for r in csv.DictReader(f) if r["Region"] == "liver")
        assert csv_liver["R2* median (1/s)"] == "" and float(csv_liver["R2* lower bound (1/s)"]) == pytest.approx(bound, abs=0.5)
        assert float(csv_liver["LIC lower bound (mg Fe/g dw)"]) == pytest.approx(liver["lic_lower_bound"], abs=0.005)
        assert "use a shorter first echo" in csv_liver["Notes"]


@pytest.mark.parametrize("truth, te1, snr", [(2000.0, 1.0, 25), (3000.0, 2.0, 50), (1300.0, 2.0, 67)])
def test_stated_lower_bound_is_below_the_truth(truth, te1, snr):
    ph, _ = severe_liver(truth, te1 * np.arange(1, 13), snr=snr, shape=(6, 48, 64))
    _, _, liver = fit_and_summarize(ph)
    assert liver["r2star_median"] is None
    assert 0 < liver["r2star_lower_bound"] <= truth
    assert liver["grade"] is None or liver["grade"] == "severe"
    assert liver["iron_loaded"] is True


def test_roi_fit_of_the_mean_squared_signal_is_unbiased_at_high_iron():
    truth = 1300.0
    ph, mask = severe_liver(truth, 1.0 * np.arange(1, 13), snr=67, coils=4)
    signal, te = ph.image.signal, ph.image.echo_times_ms
    nc = roi_fit(signal, mask, te, noise_sigma=ph.noise_sigma, coils=ph.coils)
    assert nc["method"] == "noise-corrected" and nc["signal_average"] == "root mean square"
    assert nc["r2star"] == pytest.approx(truth, rel=0.10)
    assert nc["s0"] == pytest.approx(S0["liver"], rel=0.10)
    # truncation stays available by name; on the mean magnitude it keeps the floor (biased low)
    tr = roi_fit(signal, mask, te, method="truncation", noise_sigma=ph.noise_sigma, coils=ph.coils)
    assert tr["method"] == "truncation" and tr["r2star"] < 0.9 * truth


def test_mean_squared_signal_of_pure_noise_is_the_exact_floor():
    rng = np.random.default_rng(5)
    sigma, coils = 7.0, 4
    noise = noncentral_chi(np.zeros((3, 40, 50, 50)), sigma, coils, rng)
    labels = np.zeros((40, 50, 50), np.int64)
    labels[:20] = 1
    labels[20:] = 2
    rms = mean_decay(noise, labels, [1, 2], "rms")
    assert rms.shape == (2, 3)
    np.testing.assert_allclose(rms**2, 2 * coils * sigma**2, rtol=0.01)
    mean = mean_decay(noise, labels, [1, 2])
    np.testing.assert_allclose(mean[0], noise[:, :20].reshape(3, -1).mean(1), rtol=1e-9)


def test_roi_fit_on_a_mean_decay_with_a_noise_map():
    truth, te = 900.0, 1.0 * np.arange(1, 13)
    rng = np.random.default_rng(2)
    sigma_map = np.where(np.arange(20)[:, None, None] < 10, 15.0, 30.0) * np.ones((20, 20, 20))
    amplitude = 1000.0 * np.exp(-np.multiply.outer(te / 1000.0, np.full((20, 20, 20), truth)))
    signal = noncentral_chi(amplitude, sigma_map[None], 1, rng)
    out = roi_fit(signal, np.ones((20, 20, 20), bool), te, noise_sigma=sigma_map, coils=1)
    assert out["r2star"] == pytest.approx(truth, rel=0.05)


def test_censored_percentiles_match_numpy_with_values_above_all():
    rng = np.random.default_rng(0)
    values = rng.normal(100, 20, 57)
    q = [5, 25, 50, 75, 95]
    ranked = np.append(values, [np.inf] * 13)
    with np.errstate(invalid="ignore"):
        expected = [np.percentile(ranked, p) if np.isfinite(np.percentile(ranked, p)) else None for p in q]
    got = censored_percentiles(values, 13, q)
    for g, e in zip(got, expected):
        assert (g is None and e is None) or g == pytest.approx(e)
    assert got[-1] is None                               # the 95th percentile is censored
    low = censored_percentiles(values, 13, q, censored_high=False)
    assert low[0] is None and low[2] == pytest.approx(np.percentile(np.append(values, [-np.inf] * 13), 50))
    assert censored_percentiles(values, 60, [50]) == [None]
    assert censored_percentiles(values, 0, q) == pytest.approx(list(np.percentile(values, q)))


def test_failed_fits_are_censored_only_when_the_signal_is_on_the_floor():
    sigma, te = 10.0, np.arange(1.0, 9.0)
    rng = np.random.default_rng(1)
    fast = noncentral_chi(1000 * np.exp(-np.outer(te / 1000, np.full(200, 4000.0))), sigma, 1, rng)
    rising = noncentral_chi(np.outer(np.linspace(200, 600, te.size), np.ones(200)), sigma, 1, rng)
    assert decayed_to_floor(fast, sigma).mean() > 0.98
    assert not decayed_to_floor(rising, sigma).any()
    signal = np.concatenate([fast, rising], axis=1)
    status = np.full(400, Status.OUT_OF_RANGE, np.uint8)
    nan = np.full(400, np.nan)
    cens = too_fast_voxels(status, nan, nan, sigma, 1, None, signal)
    assert cens[:200].mean() > 0.98 and not cens[200:].any()
    # without the signal, out-of-range counts, other failures do not
    status[:5] = Status.NOT_CONVERGED
    cens = too_fast_voxels(status, nan, nan, sigma, 1)
    assert not cens[:5].any() and cens[5:].all()
    # a fitted voxel whose S0 is below the detectable amplitude described the noise floor
    fitted = np.full(3, Status.FITTED, np.uint8)
    cens = too_fast_voxels(fitted, np.array([20.0, 20.0, 900.0]), np.array([5.0, 500.0, 500.0]),
                           sigma, 1, measurable_r2star=800.0, echo_times_ms=te)
    assert cens.tolist() == [True, False, True]
    # ... also when a large R2* extrapolates the first echo's floor-level signal to a large S0
    cens = too_fast_voxels(fitted[:1], np.array([700.0]), np.array([30.0]), sigma, 1,
                           measurable_r2star=800.0, echo_times_ms=te)
    assert cens.tolist() == [True]


def test_protocol_limits_grow_with_snr_and_shorter_echoes():
    te = 1.0 * np.arange(1, 13)
    base = protocol_limits(te, 1000.0, 40.0, 1)
    assert base["lower_bound_r2star"] < base["measurable_r2star"]
    assert protocol_limits(te, 1000.0, 15.0, 1)["measurable_r2star"] > base["measurable_r2star"]
    assert protocol_limits(0.5 * te, 1000.0, 40.0, 1)["measurable_r2star"] > base["measurable_r2star"]
    assert protocol_limits(te, 1000.0, 40.0, 8)["measurable_r2star"] < base["measurable_r2star"]
    assert protocol_limits(te, None, 40.0, 1)["measurable_r2star"] is None
    assert protocol_limits(te, 1000.0, None, 1)["lower_bound_r2star"] is None


def test_region_entirely_beyond_the_protocol_without_signal_uses_measured_s0():
    truth = 2500.0
    ph, mask = severe_liver(truth, 1.0 * np.arange(1, 13), snr=40, shape=(6, 48, 64))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = fit(ph.image.signal, ph.image.echo_times_ms, mask=ph.labels > 0,
                     noise_sigma=ph.noise_sigma, coils=ph.coils)
    s = region_statistics(result, mask)
    assert s["r2star_median"] is None and 0 < s["r2star_lower_bound"] <= truth
    assert s["censoring"]["reference_s0_source"] == "lower quartile of S0 of the image's well-measured voxels"


def test_lic_lower_bound_is_the_calibration_at_the_bound():
    lic, info = liver_iron_lower_bound(1500.0, 1.5)
    assert lic == pytest.approx(0.0254 * 1500 + 0.202)
    assert any("extrapolation" in w for w in info["warnings"])
    lic3, info3 = liver_iron_lower_bound(1500.0, 3.0, convert_field=True)
    assert 0 < lic3 < lic and info3["conversion"]


def test_segment_statistics_reports_the_bound_when_the_median_is_censored():
    rng = np.random.default_rng(4)
    r2 = rng.normal(1200, 100, 100)
    status = np.full(100, Status.FITTED, np.uint8)
    status[:70] = Status.OUT_OF_RANGE
    r2[:70] = np.nan
    s0 = np.full(100, 1000.0)
    kwargs = dict(status_values=status, s0_values=s0, echo_times_ms=0.9 * np.arange(1, 13),
                  noise_sigma=40.0, coils=1)
    # a mostly censored segment has no tissue amplitude of its own: no limit without the image's
    assert "r2star_lower_bound" not in statistics(r2, "liver", 1.5, **kwargs)
    out = statistics(r2, "liver", 1.5, reference_s0=1000.0, **kwargs)
    bound = out["r2star_lower_bound"]
    assert "r2star_median" not in out and out["r2star_median_text"] == f"> {bound:.0f}"
    assert out["censored_percent"] == pytest.approx(70.0)
    assert out["lic_lower_bound"] == pytest.approx(liver_iron_concentration(bound, 1.5)[0])
    assert "lic" not in out
    # few censored voxels: the median stays a number, ranked with the censored ones on top
    status[:70] = Status.FITTED
    status[:10] = Status.OUT_OF_RANGE
    r2[10:70] = rng.normal(1200, 100, 60)
    out = statistics(r2, "liver", 1.5, status_values=status, s0_values=s0,
                     echo_times_ms=0.9 * np.arange(1, 13), noise_sigma=40.0, coils=1)
    ranked = np.append(r2[10:], [np.inf] * 10)
    assert out["r2star_median"] == pytest.approx(np.median(ranked))
    assert out["r2star_median_text"] == f"{np.median(ranked):.1f}"
    assert out["censored_percent"] == pytest.approx(10.0)


def test_table_and_segment_statistics_plugin_show_the_bound_on_a_real_scene():
    pytest.importorskip("slicer", reason="slicer-core is needed for MRML tests")
    from mrml_fixtures import install_scene

    from IronMapping import scene as mrml
    from IronMapping.logic import IronMappingLogic
    from IronMapping.segment_statistics import compute_for_segment

    ph, _ = severe_liver(2000.0, 0.9 * np.arange(1, 13), snr=25, shape=(6, 48, 64))
    setup, restore = install_scene()
    try:
        scene = setup.scene
        sequence, _ = mrml.add_multiecho_sequence(ph.image, "severe", scene=scene)
        segmentation = mrml.add_label_segmentation(ph.labels, ph.label_names, ph.image.ijk_to_ras,
                                                   "organs", scene=scene)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = IronMappingLogic().process(sequence, segmentationNode=segmentation,
                                                fieldStrengthT=1.5, noiseSigma=ph.noise_sigma,
                                                coils=ph.coils, scene=scene)
        liver = next(r for r in result.summary["regions"] if r["name"] == "liver")
        bound = liver["r2star_lower_bound"]
        assert liver["r2star_median"] is None and 0.4 * 2000 <= bound <= 2000
        rows = {r["Region"]: r for r in mrml.table_rows(result["table"])}
        assert rows["liver"]["R2* lower bound (1/s)"] == pytest.approx(bound, abs=0.5)  # display precision
        assert np.isnan(rows["liver"]["R2* median (1/s)"])
        assert "faster than the first echo" in rows["liver"]["Notes"]
        liver_id = mrml.segment_ids_of(segmentation)[0]
        stats = compute_for_segment(segmentation, liver_id, result["r2star"], scene=scene)
        assert "r2star_median" not in stats and stats["r2star_median_text"].startswith("> ")
        assert 0.4 * 2000 <= stats["r2star_lower_bound"] <= 2000
        assert stats["lic_lower_bound"] > 15.0 and stats["censored_percent"] > 50
    finally:
        restore()


def test_lesion_against_a_censored_liver():
    from IronMapping.regions import compare_lesion

    liver = {"r2star_median": None, "r2star_lower_bound": 1400.0}
    clear = compare_lesion({"r2star_median": 600.0, "r2star_uncertainty_median": 60.0}, liver)
    assert clear["reading"] == "hyperintense to liver on T2*" and clear["exceeds_uncertainty"] is True
    assert clear["difference_r2star"] is None and "above 1400 1/s" in clear["text"]
    close = compare_lesion({"r2star_median": 1300.0, "r2star_uncertainty_median": 200.0}, liver)
    assert close["reading"] is None and "no comparison" in close["text"]


def test_real_liver_pkdata9_is_not_censored_and_roi_fit_agrees(shared_data):
    path = shared_data / "kellman-fatwater" / "PKdata9.mat"
    if not path.is_file():
        pytest.skip(f"{path} not found (set IRONMAPPING_TEST_DATA)")
    from scipy.io import loadmat

    data = loadmat(path, squeeze_me=True, struct_as_record=False)["data"]
    mag = np.abs(np.moveaxis(np.asarray(data.images), -1, 0)).astype(np.float64)
    te_ms = np.asarray(data.TE, dtype=float) * 1000.0
    # noise from an air corner checked by hand: E[M]^2/E[M^2] = 0.76 there (Rayleigh: 0.785)
    corner = mag[:, -30:, :30]
    assert 0.7 < corner.mean() ** 2 / np.mean(corner**2) < 0.85
    sigma = float(np.sqrt(np.mean(corner**2) / 2))
    liver = np.zeros(mag.shape[1:], bool)
    liver[145:175, 45:85] = True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = fit(mag, te_ms, mask=liver, noise_sigma=sigma, coils=1)
    roi = roi_fit(mag, liver, te_ms, noise_sigma=sigma, coils=1)
    stats = region_statistics(result, liver, signal=mag, reference_s0=roi["s0"])
    assert stats["r2star_censored_fraction"] == 0.0 and stats["excluded_fraction"] == 0.0
    assert stats["r2star_measurable_limit"] > 20 * stats["r2star_median"]
    assert roi["method"] == "noise-corrected"
    assert roi["r2star"] == pytest.approx(stats["r2star_median"], rel=0.05)


def test_pattern_counts_a_liver_beyond_the_echoes_as_loaded():
    ph, _ = severe_liver(2000.0, 0.9 * np.arange(1, 13), snr=25)
    _, summary, liver = fit_and_summarize(ph)
    assert liver["r2star_median"] is None
    assert summary["pattern"]["organ_states"]["liver"]["loaded"] is True
    assert "liver has no valid R2*" not in summary["pattern"]["text"]


def test_roi_fit_is_not_reported_when_the_mean_signal_decays_before_the_second_echo():
    ph, mask = severe_liver(3000.0, 1.0 * np.arange(1, 13), snr=25, shape=(6, 48, 64))
    out = roi_fit(ph.image.signal, mask, ph.image.echo_times_ms, noise_sigma=ph.noise_sigma, coils=1)
    assert out["r2star"] is None and out["echoes_above_floor"] < 2
    assert any("faster than the echoes can measure" in n for n in out["notes"])
    ph, mask = severe_liver(1300.0, 1.0 * np.arange(1, 13), snr=25, shape=(6, 48, 64))
    out = roi_fit(ph.image.signal, mask, ph.image.echo_times_ms, noise_sigma=ph.noise_sigma, coils=1)
    assert out["echoes_above_floor"] >= 2 and out["r2star"] == pytest.approx(1300.0, rel=0.05)
    assert out["r2star_measurable_limit"] > 1300.0


def test_roi_signal_is_a_row_of_mean_decay():
    from IronMapping.regions import roi_signal

    rng = np.random.default_rng(8)
    signal = rng.random((4, 5, 6, 7))
    signal[1, 0, 0, 0] = np.nan
    labels = rng.integers(0, 3, (5, 6, 7))
    for average in ("mean", "rms"):
        np.testing.assert_allclose(roi_signal(signal, labels == 2, average),
                                   mean_decay(signal, labels, [2], average)[0], rtol=1e-12)
