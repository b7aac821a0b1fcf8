"""Per-region statistics, ROI-averaged fits, lesion contrast and signal intensity ratios."""

import numpy as np
import pytest

from IronMapping.errors import GeometryError, InputError
from IronMapping.regions import (check_labels, compare_lesion, label_masks, region_statistics,
                                 roi_fit, roi_signal, signal_intensity_ratio)
from IronMapping.relaxometry import RelaxometryFit, Status, fit


def make_fit(r2star, status=None, quality=None, uncertainty=None):
    r2 = np.asarray(r2star, np.float32)
    status = np.full(r2.shape, Status.FITTED, np.uint8) if status is None else np.asarray(status, np.uint8)
    r2 = np.where(status == Status.FITTED, r2, np.nan).astype(np.float32)
    with np.errstate(divide="ignore"):
        t2 = (1000.0 / r2).astype(np.float32)
    q = np.full(r2.shape, 0.99, np.float32) if quality is None else np.asarray(quality, np.float32)
    u = np.full(r2.shape, 2.0, np.float32) if uncertainty is None else np.asarray(uncertainty, np.float32)
    return RelaxometryFit(r2star=r2, t2star=t2, s0=np.ones_like(r2), quality=q, uncertainty=u,
                          status=status, echoes_used=np.full(r2.shape, 8, np.uint8),
                          method="nlls", echo_times_ms=np.arange(1.0, 9.0), noise_sigma=None,
                          coils=None, noise_source="none")


def test_statistics_match_numpy_and_exclusions_are_counted():
    rng = np.random.default_rng(3)
    r2 = rng.normal(100.0, 10.0, (4, 5, 6))
    status = np.full(r2.shape, Status.FITTED, np.uint8)
    status[0, 0, :3] = Status.NOT_CONVERGED
    status[1, 1, 1] = Status.OUT_OF_RANGE
    quality = np.full(r2.shape, 0.95)
    quality[2, 2, :2] = 0.3
    f = make_fit(r2, status, quality)
    mask = np.zeros(r2.shape, bool)
    mask[:3] = True                                         # 90 voxels
    s = region_statistics(f, mask, voxel_volume_ml=0.05, min_quality=0.5)
    keep = mask & (status == Status.FITTED) & (quality >= 0.5)
    vals = r2[keep].astype(np.float32).astype(np.float64)
    # the out-of-range voxel (decay faster than the echoes) is ranked above every value
    ranked = np.append(vals, np.inf)
    assert s["n_voxels"] == 90 and s["n_included"] == keep.sum() + 1 == 85 and s["n_censored"] == 1
    assert s["volume_ml"] == pytest.approx(4.5)
    assert s["excluded_fraction"] == pytest.approx(5 / 90)
    assert s["excluded_by_status"] == {"not_converged": 3, "quality_below_min": 2}
    assert s["censored_by_status"] == {"out_of_range": 1}
    assert s["r2star_censored_fraction"] == pytest.approx(1 / 85)
    assert s["r2star_median"] == pytest.approx(np.median(ranked), rel=1e-6)
    assert s["r2star_mean"] == pytest.approx(vals.mean(), rel=1e-6)
    assert s["r2star_sd"] == pytest.approx(vals.std(ddof=1), rel=1e-5)
    p5, p25, p75, p95 = np.percentile(ranked, [5, 25, 75, 95])
    assert s["r2star_iqr"] == pytest.approx(p75 - p25, rel=1e-5)
    assert (s["r2star_p5"], s["r2star_p95"]) == (pytest.approx(p5, rel=1e-6), pytest.approx(p95, rel=1e-6))
    assert s["t2star_median"] == pytest.approx(np.median(np.append(1000.0 / vals, 0.0)), rel=1e-5)
    assert s["r2star_lower_bound"] is None
    # without a quality threshold only failed fits are excluded
    assert region_statistics(f, mask)["n_included"] == 87


def test_empty_region_reports_zero_without_crashing():
    f = make_fit(np.full((2, 3, 4), 50.0))
    s = region_statistics(f, np.zeros((2, 3, 4), bool), voxel_volume_ml=0.1)
    assert s["n_voxels"] == 0 and s["volume_ml"] == 0.0 and s["r2star_median"] is None
    assert s["excluded_fraction"] is None and "empty" in s["notes"][0]


def test_region_with_only_failed_fits():
    f = make_fit(np.full((2, 2, 2), 50.0), status=np.full((2, 2, 2), Status.TOO_FEW_ECHOES))
    s = region_statistics(f, np.ones((2, 2, 2), bool))
    assert s["n_included"] == 0 and s["excluded_fraction"] == 1.0 and s["r2star_median"] is None
    assert s["excluded_by_status"] == {"too_few_echoes": 8}


def test_labels_on_another_grid_raise_geometry_error():
    with pytest.raises(GeometryError, match="resample"):
        check_labels(np.zeros((3, 4, 5), np.uint8), (3, 4, 6))
    with pytest.raises(GeometryError):
        region_statistics(make_fit(np.ones((2, 2, 2))), np.ones((2, 2), bool))
    with pytest.raises(InputError, match="whole numbers"):
        check_labels(np.full((2, 2), 1.5), (2, 2))
    assert check_labels(np.ones((2, 2), np.float32), (2, 2)).dtype.kind == "i"


def test_label_masks_keep_named_empty_labels_and_unnamed_present_ones():
    labels = np.zeros((2, 3, 4), np.uint8)
    labels[0, 0, 0] = 1
    labels[1, 2, 3] = 7
    masks = label_masks(labels, {1: "liver", 2: "spleen"}, labels.shape)
    assert [(v, n, int(m.sum())) for v, n, m in masks] == [(1, "liver", 1), (2, "spleen", 0), (7, "label 7", 1)]
    with pytest.raises(InputError):
        label_masks(labels, {"liver": 1}, labels.shape)


def _decay(shape, r2star, te_ms, s0=1000.0, sigma=0.0, coils=1, seed=0):
    amp = s0 * np.exp(-np.multiply.outer(te_ms / 1000.0, np.broadcast_to(r2star, shape)))
    if not sigma:
        return amp
    rng = np.random.default_rng(seed)
    real = amp + sigma * rng.standard_normal(amp.shape)
    return np.sqrt(real ** 2 + sigma ** 2 * rng.chisquare(2 * coils - 1, amp.shape))


def test_roi_fit_noiseless_is_exact():
    te = np.arange(1.0, 13.0)
    signal = _decay((3, 4, 5), 150.0, te)
    mask = np.ones((3, 4, 5), bool)
    out = roi_fit(signal, mask, te, method="truncation", noise_sigma=1.0)
    assert out["r2star"] == pytest.approx(150.0, rel=1e-4) and out["t2star"] == pytest.approx(1000 / 150, rel=1e-4)
    assert out["method"] == "truncation" and out["signal_average"] == "mean" and out["status"] == "fitted"


@pytest.mark.parametrize("method", ["truncation", "noise-corrected"])
def test_roi_fit_with_noise_is_close_to_truth(method):
    te = np.arange(1.0, 13.0)
    signal = _decay((4, 10, 10), 300.0, te, sigma=20.0, seed=5)
    out = roi_fit(signal, np.ones((4, 10, 10), bool), te, method=method, noise_sigma=20.0, coils=1)
    assert out["r2star"] == pytest.approx(300.0, rel=0.05)
    assert out["signal_average"] == ("root mean square" if method == "noise-corrected" else "mean")


def test_roi_fit_without_noise_level_falls_back_and_says_so():
    te = np.arange(1.0, 9.0)
    out = roi_fit(_decay((2, 2, 2), 80.0, te), np.ones((2, 2, 2), bool), te, noise_sigma=None)
    assert out["method"] == "nlls" and "noise level unknown" in out["notes"][0]
    assert out["r2star"] == pytest.approx(80.0, rel=1e-4)
    with pytest.raises(InputError):
        roi_fit(_decay((2, 2, 2), 80.0, te), np.ones((2, 2, 2), bool), te, method="ml")
    empty = roi_fit(_decay((2, 2, 2), 80.0, te), np.zeros((2, 2, 2), bool), te, noise_sigma=1.0)
    assert empty["r2star"] is None and empty["notes"]


def test_roi_fit_agrees_with_voxelwise_median_on_noisy_region():
    te = np.arange(1.0, 13.0)
    signal = _decay((4, 12, 12), 130.0, te, sigma=10.0, seed=2)
    voxel = fit(signal, te, method="noise-corrected", mask=np.ones((4, 12, 12), bool), noise_sigma=10.0)
    roi = roi_fit(signal, np.ones((4, 12, 12), bool), te, noise_sigma=10.0)
    assert roi["r2star"] == pytest.approx(np.nanmedian(voxel.r2star), rel=0.03)


def _stats(median, unc, sd=5.0, n=200):
    return {"r2star_median": median, "r2star_uncertainty_median": unc, "r2star_sd": sd,
            "r2star_se_median": 1.2533 * sd / np.sqrt(n)}


def test_lesion_iso_hyper_hypo():
    iso = compare_lesion(_stats(640.0, 40.0), _stats(650.0, 45.0))
    assert iso["exceeds_uncertainty"] is False and iso["reading"] == "isointense to liver on T2*"
    assert iso["difference_r2star"] == pytest.approx(-10.0) and iso["ratio_r2star"] == pytest.approx(640 / 650)
    assert iso["combined_uncertainty_r2star"] == pytest.approx(np.hypot(40.0, 45.0))
    hyper = compare_lesion(_stats(60.0, 2.0), _stats(450.0, 20.0))
    assert hyper["exceeds_uncertainty"] is True and hyper["reading"].startswith("hyperintense")
    hypo = compare_lesion(_stats(300.0, 5.0), _stats(100.0, 3.0))
    assert hypo["reading"].startswith("hypointense") and "Belay" in hypo["text"]
    # without fit uncertainty the voxel SD is used
    no_unc = compare_lesion(_stats(100.0, None, sd=30.0), _stats(120.0, None, sd=30.0))
    assert no_unc["uncertainty_basis"] == "voxel standard deviation" and no_unc["exceeds_uncertainty"] is False
    missing = compare_lesion({"r2star_median": None}, _stats(100.0, 3.0))
    assert missing["reading"] is None and "no comparison" in missing["text"]


def test_signal_intensity_ratio_per_echo():
    te = np.array([2.0, 4.0, 8.0])
    signal = np.ones((3, 2, 2, 2))
    signal[:, 0] = np.array([50.0, 25.0, 10.0])[:, None, None]
    signal[:, 1] = 100.0
    region = np.zeros((2, 2, 2), bool); region[0] = True
    ref = np.zeros((2, 2, 2), bool); ref[1] = True
    out = signal_intensity_ratio(signal, region, ref, te)
    assert out["ratio"] == pytest.approx([0.5, 0.25, 0.1]) and out["echo_times_ms"] == [2.0, 4.0, 8.0]
    assert signal_intensity_ratio(signal, region, np.zeros((2, 2, 2), bool), te)["ratio"] == [None] * 3
    assert roi_signal(signal, ref, "rms") == pytest.approx([100.0] * 3)
    with pytest.raises(GeometryError):
        signal_intensity_ratio(signal, region[0], ref, te)
