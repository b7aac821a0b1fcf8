"""Per-region statistics of R2*/T2* maps.

    >>> stats = region_statistics(fit_result, mask, voxel_volume_ml=0.054)
    >>> stats["r2star_median"], stats["excluded_fraction"]

Units: R2* in 1/s, T2* in ms, volume in mL, echo times in ms. Everything works on boolean
masks on the map grid (k, j, i); `label_masks` turns a label array into such masks after
checking its shape. A voxel enters the statistics when its fit status is FITTED and its R^2 is
at least ``min_quality`` (measured), or when its decay is faster than the echoes can measure
(censored: ranked above every measured R2*, see `too_fast_voxels`); when more than half are
censored the median is None and ``r2star_lower_bound`` says what the protocol supports.

Why the default ``min_quality`` is 0 (only failed fits are excluded): the R^2 of a correct fit
is low wherever the decay over the echo train is shallow compared with the noise (normal tissue
at moderate SNR: R^2 ~ 0.4-0.9), so an R^2 threshold removes low-R2* voxels preferentially and
biases the region upwards. Raise it (e.g. 0.9) for iron-loaded regions if motion or fat
oscillations are suspected; the share excluded is reported either way.

The region code is split by concern; every name stays importable from here:

- :mod:`IronMapping.region_masks`: label arrays and masks on the map grid (`check_labels`,
  `check_mask`, `label_masks`);
- :mod:`IronMapping.censoring`: right-censored R2* and the protocol's limits
  (`too_fast_voxels`, `protocol_limits`, `censored_percentiles`, ...);
- :mod:`IronMapping.roi_signal`: the region's averaged signal (`roi_fit`, `roi_signal`,
  `mean_decay`, `signal_intensity_ratio`);
- :mod:`IronMapping.lesion_contrast`: lesion against background liver (`compare_lesion`).
"""

from __future__ import annotations

import numpy as np

from .censoring import (BOUND_ECHOES, FAILED_STATUSES, FITTED, IMAGE_S0_SOURCE,
                        MEASURABLE_ECHOES, OUT_OF_RANGE, censored_percentiles, decayed_to_floor,
                        detection_amplitude, image_tissue_amplitude, protocol_limits,
                        r2star_where_informative, too_fast_voxels, well_measured)
from .errors import GeometryError
from .lesion_contrast import LESION_COVERAGE_FACTOR, compare_lesion
from .region_masks import check_labels, check_mask, label_masks
from .roi_signal import (DEFAULT_ROI_METHOD, ROI_METHODS, mean_decay, roi_fit, roi_signal,
                         signal_intensity_ratio)

__all__ = [
    # region statistics (this module)
    "DEFAULT_MIN_QUALITY", "included_voxels", "region_statistics",
    # region_masks
    "check_labels", "check_mask", "label_masks",
    # censoring
    "FITTED", "MEASURABLE_ECHOES", "BOUND_ECHOES", "FAILED_STATUSES", "OUT_OF_RANGE",
    "IMAGE_S0_SOURCE", "detection_amplitude", "r2star_where_informative", "protocol_limits",
    "decayed_to_floor", "too_fast_voxels", "well_measured", "censored_percentiles",
    "image_tissue_amplitude",
    # roi_signal
    "DEFAULT_ROI_METHOD", "ROI_METHODS", "mean_decay", "roi_signal", "roi_fit",
    "signal_intensity_ratio",
    # lesion_contrast
    "LESION_COVERAGE_FACTOR", "compare_lesion",
]

DEFAULT_MIN_QUALITY = 0.0

_STAT_KEYS = ("mean", "sd", "median", "iqr", "p5", "p95", "p25", "p75")


def _describe(values: np.ndarray, prefix: str) -> dict:
    out = {f"{prefix}_{k}": None for k in _STAT_KEYS}
    values = values[np.isfinite(values)]
    if values.size == 0:
        return out
    p5, p25, p50, p75, p95 = np.percentile(values, [5, 25, 50, 75, 95])
    out.update({f"{prefix}_mean": float(values.mean()),
                f"{prefix}_sd": float(values.std(ddof=1)) if values.size > 1 else 0.0,
                f"{prefix}_median": float(p50), f"{prefix}_iqr": float(p75 - p25),
                f"{prefix}_p5": float(p5), f"{prefix}_p95": float(p95),
                f"{prefix}_p25": float(p25), f"{prefix}_p75": float(p75)})
    return out


def included_voxels(fit_result, mask, min_quality: float = DEFAULT_MIN_QUALITY) -> np.ndarray:
    """The region's voxels whose fit is FITTED with R^2 >= min_quality.

    Parameters
    ----------
    fit_result : RelaxometryFit
        ``status`` and ``quality`` maps, shape (k, j, i).
    mask : bool ndarray, shape (k, j, i)
    min_quality : float
        Least R^2 (0..1); 0 keeps every fitted voxel.

    Returns
    -------
    bool ndarray, shape (k, j, i)
    """
    ok = mask & (np.asarray(fit_result.status) == FITTED)
    if min_quality and min_quality > 0:
        q = np.asarray(fit_result.quality)
        ok &= np.nan_to_num(q, nan=-1.0) >= min_quality
    return ok


def _describe_censored(values: np.ndarray, n_censored: int, prefix: str, censored_high: bool) -> dict:
    """_describe with censored voxels ranked beyond every value; mean and SD of measured values."""
    values = values[np.isfinite(values)]
    if n_censored == 0:
        return _describe(values, prefix)
    out = {f"{prefix}_{k}": None for k in _STAT_KEYS}
    p5, p25, p50, p75, p95 = censored_percentiles(values, n_censored, [5, 25, 50, 75, 95], censored_high)
    out.update({f"{prefix}_median": p50, f"{prefix}_p5": p5, f"{prefix}_p95": p95,
                f"{prefix}_p25": p25, f"{prefix}_p75": p75,
                f"{prefix}_iqr": (p75 - p25) if p25 is not None and p75 is not None else None})
    if values.size:
        out[f"{prefix}_mean"] = float(values.mean())
        out[f"{prefix}_sd"] = float(values.std(ddof=1)) if values.size > 1 else 0.0
    return out


def _region_noise(fit_result, mask) -> float | None:
    """The noise SD of the region: the fit's sigma, or the RMS of a noise map over the region."""
    sigma = getattr(fit_result, "noise_sigma", None)
    if sigma is None:
        return None
    sigma = np.asarray(sigma, dtype=np.float64)
    if sigma.ndim == 0:
        return float(sigma) if np.isfinite(sigma) and sigma > 0 else None
    if sigma.shape == mask.shape and mask.any():
        return float(np.sqrt(np.nanmean(sigma[mask] ** 2)))
    return None


def _tissue_amplitude(fit_result, given, status, r2, s0, fitted, sigma, coils, te):
    """(typical S0 of the region's tissue, where it came from): the given value (ROI-averaged
    fit) when it is above the detectable amplitude; else the median S0 of the region's
    well-measured voxels when they are the majority (in a mostly censored region the few left
    are noise fits or the lowest-iron tissue); else the lower quartile of the image's (other
    tissues, fat, can be brighter than this organ, so the limit comes out conservative)."""
    if sigma is None or te is None:
        return None, None
    if given is not None and given >= detection_amplitude(sigma, coils):
        return float(given), "ROI-averaged fit"
    good = (fitted & ~too_fast_voxels(status, r2, s0, sigma, coils, echo_times_ms=te)
            & well_measured(r2, s0, te, sigma, coils))
    if np.count_nonzero(good) >= 0.5 * np.count_nonzero(status != 0):
        return float(np.median(s0[good])), "median S0 of the well-measured voxels"
    image = image_tissue_amplitude(fit_result.status, fit_result.r2star, fit_result.s0, te, sigma, coils)
    return (image, IMAGE_S0_SOURCE) if image is not None else (None, None)


def region_statistics(fit_result, mask, voxel_volume_ml: float | None = None,
                      min_quality: float = DEFAULT_MIN_QUALITY, signal=None,
                      reference_s0: float | None = None) -> dict:
    """Statistics of one region of a RelaxometryFit.

    Percentiles that fall among the censored voxels are None; mean and SD are those of the
    measured voxels only.

    Parameters
    ----------
    fit_result : RelaxometryFit
        Maps of shape (k, j, i).
    mask : bool ndarray, shape (k, j, i)
        The region.
    voxel_volume_ml : float, optional
        Volume of one voxel in mL.
    min_quality : float
        Least R^2 of a fitted voxel to count as measured.
    signal : ndarray, shape (n_echoes, k, j, i), optional
        Magnitudes the maps were fitted from; it tells failed fits whose signal had decayed to
        the noise floor (too fast) from other failures.
    reference_s0 : float, optional
        Typical signal amplitude of the region at TE = 0 (e.g. the S0 of its ROI-averaged
        noise-corrected fit); sets the R2* limit of the protocol. Without it (or below the
        detectable amplitude), the median S0 of the region's well-measured voxels
        (`well_measured`) when they are the majority, else the lower quartile of the whole
        image's (conservative: the bound comes out lower); the source is reported in
        "censoring".

    Returns
    -------
    dict
        JSON-able: n_voxels, volume_ml (None without voxel volume), n_included (voxels in the
        statistics: measured plus censored), n_censored, excluded_fraction (0..1; None for an
        empty region), excluded_by_status {name: count}, censored_by_status, min_quality,
        r2star_{mean, sd, median, iqr, p5, p25, p75, p95} (1/s), the same for t2star (ms),
        r2star_censored_fraction (share of the included voxels that decay faster than the echoes
        can measure), r2star_measurable_limit (1/s), r2star_lower_bound and t2star_upper_bound
        (given when the median falls among the censored voxels; r2star_median is then None),
        censoring (reference S0, noise and limits used), r2star_uncertainty_median (median
        per-voxel SD of R2* from the fit, 1/s), r2star_se_median (standard error of the median
        from the voxel spread, 1/s), quality_median (R^2), notes (list of str).

    Raises
    ------
    GeometryError
        When the mask or signal is not on the map grid.
    """
    mask = check_mask(mask, np.shape(fit_result.r2star))
    n = int(np.count_nonzero(mask))
    out = {"n_voxels": n,
           "volume_ml": (n * float(voxel_volume_ml)) if voxel_volume_ml is not None else None,
           "n_included": 0, "n_censored": 0, "excluded_fraction": None, "excluded_by_status": {},
           "censored_by_status": {}, "min_quality": float(min_quality), "notes": []}
    out.update(_describe(np.empty(0), "r2star"))
    out.update(_describe(np.empty(0), "t2star"))
    out.update({"r2star_censored_fraction": None, "r2star_measurable_limit": None,
                "r2star_lower_bound": None, "t2star_upper_bound": None, "censoring": None,
                "r2star_uncertainty_median": None, "r2star_se_median": None, "quality_median": None})
    if n == 0:
        out["notes"].append(
            "region is empty on the map grid (0 voxels): it was not painted, or it lies outside "
            "the imaged volume; no statistics")
        return out
    try:
        from .relaxometry import Status
        name = lambda c: Status(int(c)).name.lower()  # noqa: E731
    except (ImportError, ValueError):  # pragma: no cover - engine always present in the package
        name = lambda c: f"status {int(c)}"  # noqa: E731

    status = np.asarray(fit_result.status)[mask]
    r2_all = np.asarray(fit_result.r2star, dtype=np.float64)[mask]
    s0_all = np.asarray(fit_result.s0, dtype=np.float64)[mask]
    sigma = _region_noise(fit_result, mask)
    coils = getattr(fit_result, "coils", None) or 1.0
    te = getattr(fit_result, "echo_times_ms", None)
    region_signal = None
    if signal is not None:
        signal = np.asarray(signal)
        if signal.shape[1:] != mask.shape:
            raise GeometryError(f"signal has shape {signal.shape}; the maps have spatial shape {mask.shape}.")
        if np.isin(status, FAILED_STATUSES).any():  # only failed fits need their echoes read
            region_signal = signal[:, mask]

    keep_fitted = included_voxels(fit_result, mask, min_quality)[mask]
    # the protocol's limit, for tissue of this region's amplitude
    reference_s0, s0_source = _tissue_amplitude(fit_result, reference_s0, status, r2_all, s0_all,
                                                keep_fitted, sigma, coils, te)
    limits = protocol_limits(te, reference_s0, sigma, coils)
    censored = too_fast_voxels(status, r2_all, s0_all, sigma, coils, limits["measurable_r2star"],
                               region_signal, te)
    measured = keep_fitted & ~censored
    n_meas = int(np.count_nonzero(measured))
    n_cens = int(np.count_nonzero(censored))
    n_in = n_meas + n_cens
    excluded = ~measured & ~censored
    codes, counts = np.unique(status[excluded], return_counts=True)
    out["excluded_by_status"] = {name(c): int(k) for c, k in zip(codes, counts) if c != FITTED}
    low_q = int(np.count_nonzero(excluded & (status == FITTED)))
    if low_q:
        out["excluded_by_status"]["quality_below_min"] = low_q
    codes, counts = np.unique(status[censored], return_counts=True)
    out["censored_by_status"] = {name(c): int(k) for c, k in zip(codes, counts)}
    out["n_included"] = n_in
    out["n_censored"] = n_cens
    out["excluded_fraction"] = float(1.0 - n_in / n)
    out["r2star_measurable_limit"] = limits["measurable_r2star"]
    out["censoring"] = {"reference_s0": reference_s0, "reference_s0_source": s0_source,
                        "noise_sigma": sigma, "coils": float(coils) if sigma is not None else None,
                        "measurable_echoes": MEASURABLE_ECHOES, "bound_echoes": BOUND_ECHOES,
                        "lower_bound_r2star": limits["lower_bound_r2star"]}
    r2 = r2_all[measured]
    t2 = np.asarray(fit_result.t2star, dtype=np.float64)[mask][measured]
    out.update(_describe_censored(r2, n_cens, "r2star", censored_high=True))
    out.update(_describe_censored(t2, n_cens, "t2star", censored_high=False))
    if n_in:
        out["r2star_censored_fraction"] = n_cens / n_in
    if n_meas:
        unc = np.asarray(fit_result.uncertainty, dtype=np.float64)[mask][measured]
        unc = unc[np.isfinite(unc)]
        out["r2star_uncertainty_median"] = float(np.median(unc)) if unc.size else None
        if n_meas > 1:
            # SE of the median of a roughly normal sample: sqrt(pi/2) * SD / sqrt(n)
            out["r2star_se_median"] = float(np.sqrt(np.pi / 2) * out["r2star_sd"] / np.sqrt(n_meas))
        q = np.asarray(fit_result.quality, dtype=np.float64)[mask][measured]
        q = q[np.isfinite(q)]
        out["quality_median"] = float(np.median(q)) if q.size else None
    if n_in == 0:
        out["notes"].append("no voxel of this region has an accepted fit; see excluded_by_status")
    if n_cens:
        _censoring_notes(out, limits, te, getattr(fit_result, "quantity", "T2*"))
    if out["excluded_fraction"] > 0.2:
        out["notes"].append(
            f"{100 * out['excluded_fraction']:.0f}% of the region's voxels were excluded "
            "(failed or low-quality fits): check the region and the echo train")
    return out


def _censoring_notes(out: dict, limits: dict, te, quantity: str = "T2*") -> None:
    """Plain-words notes on censored voxels; sets the lower bounds when the median is censored."""
    share = 100.0 * out["r2star_censored_fraction"]
    rate = "R2" if quantity == "T2" else "R2*"
    first = f"{float(te[0]):g} ms" if te is not None else "the first echo time"
    if out["r2star_median"] is None and out["n_included"]:
        bound = limits["lower_bound_r2star"]
        if bound is not None:
            out["r2star_lower_bound"] = bound
            out["t2star_upper_bound"] = 1000.0 / bound
            out["notes"].append(
                f"{rate} above {bound:.0f} 1/s ({quantity} below {1000.0 / bound:.2f} ms): faster than the "
                f"first echo ({first}) can measure in {share:.0f}% of the voxels, so the median is "
                "not measurable; use a shorter first echo")
        else:
            out["notes"].append(
                f"{share:.0f}% of the voxels decay faster than these echoes can measure: no median; "
                "the limit cannot be stated without the noise level and tissue signal; use a "
                "shorter first echo")
    else:
        limit = limits["measurable_r2star"]
        above = f" ({rate} above about {limit:.0f} 1/s)" if limit is not None else ""
        out["notes"].append(
            f"{share:.0f}% of the voxels decay faster than the echoes can measure{above}: they are "
            "ranked above every measured value, so the median stays valid; mean and SD are of "
            "the measured voxels only")
