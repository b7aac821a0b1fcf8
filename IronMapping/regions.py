"""Per-region statistics of R2*/T2* maps, ROI-averaged fits, lesion contrast and signal ratios.

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
"""

from __future__ import annotations

import numpy as np

from .errors import GeometryError, InputError

DEFAULT_MIN_QUALITY = 0.0
DEFAULT_ROI_METHOD = "noise-corrected"
ROI_METHODS = ("truncation", "noise-corrected")
LESION_COVERAGE_FACTOR = 2.0
FITTED = 1  # relaxometry.Status.FITTED

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


def check_labels(labels, spatial_shape) -> np.ndarray:
    """The label array as integers, after checking it lies on the map grid.

    Parameters
    ----------
    labels : ndarray, shape (k, j, i)
        Integer, boolean or whole-number float labels; 0 is background.
    spatial_shape : tuple of int
        The maps' spatial shape (k, j, i).

    Returns
    -------
    int ndarray, shape (k, j, i)

    Raises
    ------
    GeometryError
        When its shape differs from the maps' spatial shape.
    InputError
        When float labels are not whole numbers.
    """
    labels = np.asarray(labels)
    spatial_shape = tuple(int(s) for s in spatial_shape)
    if labels.shape != spatial_shape:
        raise GeometryError(
            f"The label map has shape {labels.shape} but the R2* maps have shape {spatial_shape} "
            "(k, j, i). Regions must lie on the map grid: resample the label map or segmentation "
            "onto the multi-echo volume first (e.g. IronMapping.maps_io.resample_labels, or "
            "export the segments with the multi-echo volume as reference in Slicer).")
    if labels.dtype == bool:
        return labels.astype(np.int64)
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.all(np.isfinite(labels)) or np.any(labels != np.round(labels)):
            raise InputError(
                "Label values must be whole numbers (0 = background). Convert the label map "
                "with np.rint(labels).astype(int) if it was stored as floating point.")
        labels = labels.astype(np.int64)
    return labels


def check_mask(mask, spatial_shape) -> np.ndarray:
    """A region mask as booleans, after checking it lies on the map grid.

    Parameters
    ----------
    mask : ndarray, shape (k, j, i)
    spatial_shape : tuple of int
        The maps' spatial shape (k, j, i).

    Returns
    -------
    bool ndarray, shape (k, j, i)

    Raises
    ------
    GeometryError
        When its shape differs from ``spatial_shape``.
    """
    mask = np.asarray(mask)
    if mask.shape != tuple(spatial_shape):
        raise GeometryError(
            f"The region mask has shape {mask.shape} but the maps have shape {tuple(spatial_shape)} "
            "(k, j, i). Resample the region onto the map grid first.")
    return mask.astype(bool)


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


# ------------------------------------------------------------------ right-censored R2* values
#
# A voxel whose signal has decayed to the noise floor by the first or second echo carries a
# lower limit on R2*, not a value. Such voxels are ranked above every measured value, which keeps
# the median and percentiles valid while fewer than half of the voxels are that fast
# (right-censored rank statistics). The limit a protocol can measure is where the echoes stop
# carrying information about the decay: with A_n = S0 exp(-R2* TE_n) the squared signal of echo n
# carries the share A_n^2 / (A_n^2 + L sigma^2) of an echo's information (Var(S^2) =
# 4 sigma^2 (A^2 + L sigma^2), Feng et al. MRM 2013;70:1765). Two echoes are the least that
# define a decay, so:
#   measurable limit = the R2* at which the echoes carry 1.5 echoes' worth (the second echo is
#                      half buried in the floor); fitted values above it are censored there;
#   stated lower bound = the R2* at which two echoes still stand clear, lower than the
#                      measurable limit because estimates near the limit are biased upwards.

MEASURABLE_ECHOES = 1.5
BOUND_ECHOES = 2.0
FAILED_STATUSES = (2, 3, 4)  # TOO_FEW_ECHOES, NOT_CONVERGED, OUT_OF_RANGE (relaxometry.Status)
OUT_OF_RANGE = 4


def detection_amplitude(noise_sigma: float, coils: float = 1.0) -> float:
    """Smallest signal amplitude A distinguishable from the noise floor.

    The squared magnitude of pure noise from L coils has mean 2 L sigma^2 and SD 2 sigma^2
    sqrt(L); a signal shows when its power A^2 exceeds two such SDs: A = 2 sigma L^(1/4).

    Parameters
    ----------
    noise_sigma : float
        Noise SD per real channel (signal units).
    coils : float
        Effective coil count L.

    Returns
    -------
    float
        A in signal units.
    """
    return 2.0 * float(noise_sigma) * float(coils or 1.0) ** 0.25


def r2star_where_informative(echo_times_ms, s0: float, noise_sigma: float, coils: float,
                             echoes: float) -> float | None:
    """R2* at which a voxel's echo train carries a given number of echoes' worth of information.

    Information is sum A_n^2 / (A_n^2 + L sigma^2) over the echoes, A_n = s0 exp(-R2* TE_n).

    Parameters
    ----------
    echo_times_ms : ndarray, shape (n_echoes,)
        Echo times in ms.
    s0 : float
        Amplitude at TE = 0 (signal units).
    noise_sigma : float
        Noise SD per real channel (signal units).
    coils : float
        Effective coil count L.
    echoes : float
        Echoes' worth of information wanted.

    Returns
    -------
    float or None
        R2* in 1/s; None if not even at R2* = 0, or when s0 or the noise is unknown.
    """
    from scipy.optimize import brentq

    from .estimators import informative_echoes

    t = np.asarray(echo_times_ms, dtype=np.float64) / 1000.0
    if not (s0 and noise_sigma and np.isfinite(s0) and s0 > 0 and noise_sigma > 0):
        return None
    coils = float(coils or 1.0)

    def excess(r2):
        return float(informative_echoes(t, np.array([r2]), np.array([s0]), noise_sigma, coils)[0]) - echoes

    if excess(0.0) <= 0:
        return None
    high = 100.0 / t[0] if t[0] > 0 else 1e6
    if excess(high) > 0:
        return float(high)
    return float(brentq(excess, 0.0, high, xtol=0.1))


def protocol_limits(echo_times_ms, s0: float | None, noise_sigma, coils) -> dict:
    """The R2* range these echoes can measure for tissue of amplitude s0 (see module notes).

    Parameters
    ----------
    echo_times_ms : ndarray, shape (n_echoes,)
        Echo times in ms.
    s0 : float or None
        Tissue amplitude at TE = 0 (signal units).
    noise_sigma : float or None
        Noise SD per real channel (signal units).
    coils : float
        Effective coil count L.

    Returns
    -------
    dict
        "measurable_r2star" and "lower_bound_r2star" in 1/s (None when the noise level or s0 is
        unknown, or s0 is not above the noise).
    """
    out = {"measurable_r2star": None, "lower_bound_r2star": None}
    if s0 is None or noise_sigma is None:
        return out
    out["measurable_r2star"] = r2star_where_informative(echo_times_ms, s0, noise_sigma, coils,
                                                        MEASURABLE_ECHOES)
    out["lower_bound_r2star"] = r2star_where_informative(echo_times_ms, s0, noise_sigma, coils,
                                                         BOUND_ECHOES)
    return out


def decayed_to_floor(signal, noise_sigma: float, coils: float = 1.0) -> np.ndarray:
    """Where a voxel's signal lies on the noise floor from the third echo on.

    The mean power of echoes 3.. (echo 2.. with fewer than three echoes) minus the floor
    2 L sigma^2 is compared with three SDs of that mean for pure noise
    (3 x 2 sigma^2 sqrt(L) / sqrt(m)). A fit that failed on such a voxel failed because the
    decay was over before the echoes sampled it; a failed fit with signal left in the late
    echoes failed for another reason (rising signal, motion, fat) and is excluded instead.

    Parameters
    ----------
    signal : ndarray, shape (n_echoes, n)
        Magnitudes (signal units).
    noise_sigma : float
        Noise SD per real channel (signal units).
    coils : float
        Effective coil count L.

    Returns
    -------
    bool ndarray, shape (n,)
    """
    y = np.asarray(signal, dtype=np.float64)
    late = y[2:] if y.shape[0] >= 3 else y[1:]
    coils = float(coils or 1.0)
    sigma2 = float(noise_sigma) ** 2
    excess = np.mean(late * late, axis=0) - 2.0 * coils * sigma2
    return excess < 3.0 * 2.0 * sigma2 * np.sqrt(coils) / np.sqrt(late.shape[0])


def too_fast_voxels(status, r2star, s0, noise_sigma=None, coils=None, measurable_r2star=None,
                    signal=None, echo_times_ms=None) -> np.ndarray:
    """Voxels whose R2* is above what the echoes can measure (right-censored).

    A voxel is censored when

    - its fit failed (status 2, 3 or 4) and its signal is on the noise floor from the third
      echo on (`decayed_to_floor`); without the signal or noise level, only status 4 (out of
      range: T2* shorter than a third of the first echo time) counts;
    - it was fitted, but its fitted signal at the first echo is below the detection amplitude
      (the fit described the noise floor: an organ voxel with no signal left at the first
      echo), or its R2* is above the protocol's measurable limit.

    Parameters
    ----------
    status : uint8 ndarray, shape (n,)
        Fit status codes of one region's voxels.
    r2star : ndarray, shape (n,)
        R2* in 1/s.
    s0 : ndarray, shape (n,)
        Fitted signal at TE = 0 (signal units).
    noise_sigma : float, optional
        Noise SD per real channel (signal units).
    coils : float, optional
        Effective coil count L.
    measurable_r2star : float, optional
        The protocol's measurable limit in 1/s (`protocol_limits`).
    signal : ndarray, shape (n_echoes, n), optional
        The voxels' magnitudes.
    echo_times_ms : ndarray, shape (n_echoes,), optional
        The protocol's echo times in ms.

    Returns
    -------
    bool ndarray, shape (n,)
    """
    status = np.asarray(status)
    r2star = np.asarray(r2star, dtype=np.float64)
    s0 = np.asarray(s0, dtype=np.float64)
    failed = np.isin(status, FAILED_STATUSES)
    known_noise = noise_sigma is not None and np.isfinite(noise_sigma) and noise_sigma > 0
    if signal is not None and known_noise and failed.any():
        fast = np.zeros(status.shape, bool)
        fast[failed] = decayed_to_floor(np.asarray(signal)[:, failed], noise_sigma, coils)
    else:
        fast = status == OUT_OF_RANGE
    fitted = status == FITTED
    if known_noise:
        te1 = float(np.ravel(echo_times_ms)[0]) / 1000.0 if echo_times_ms is not None else 0.0
        with np.errstate(over="ignore", invalid="ignore"):
            first = np.nan_to_num(s0 * np.exp(-np.clip(r2star, 0.0, None) * te1), nan=0.0)
        fast |= fitted & (first < detection_amplitude(noise_sigma, coils))
    if measurable_r2star is not None:
        fast |= fitted & (np.nan_to_num(r2star, nan=0.0) > measurable_r2star)
    return fast


def well_measured(r2star, s0, echo_times_ms, noise_sigma, coils) -> np.ndarray:
    """Fitted voxels whose decay two or more echoes resolve (sum A^2/(A^2 + L sigma^2) >= 2).

    Their S0 is a measurement of the tissue amplitude, not an extrapolation from the floor.

    Parameters
    ----------
    r2star : ndarray
        R2* in 1/s, any shape.
    s0 : ndarray
        Signal at TE = 0 (signal units), same shape.
    echo_times_ms : ndarray, shape (n_echoes,)
        Echo times in ms.
    noise_sigma : float
        Noise SD per real channel (signal units).
    coils : float
        Effective coil count L.

    Returns
    -------
    bool ndarray, same shape as ``r2star``
    """
    from .estimators import informative_echoes

    r2star = np.nan_to_num(np.asarray(r2star, dtype=np.float64), nan=np.inf)
    s0 = np.nan_to_num(np.asarray(s0, dtype=np.float64), nan=0.0)
    ok = np.isfinite(r2star) & (s0 > 0)
    out = np.zeros(r2star.shape, bool)
    if ok.any():
        t = np.asarray(echo_times_ms, dtype=np.float64) / 1000.0
        out[ok] = informative_echoes(t, r2star[ok], s0[ok], noise_sigma, float(coils or 1.0)) >= BOUND_ECHOES
    return out


def censored_percentiles(values, n_censored: int, q, censored_high: bool = True) -> list:
    """Percentiles of values plus censored values known to lie beyond every one of them.

    Linear interpolation as ``np.percentile``.

    Parameters
    ----------
    values : ndarray
        Measured values, any shape.
    n_censored : int
        Number of censored values.
    q : float or sequence of float
        Percentiles, 0-100.
    censored_high : bool
        Censored values lie above (True) or below (False) every measured one.

    Returns
    -------
    list of float or None
        One per percentile; None where a percentile falls among the censored ones.
    """
    v = np.sort(np.asarray(values, dtype=np.float64))
    n = v.size + int(n_censored)
    out = []
    for p in np.atleast_1d(q):
        if n == 0:
            out.append(None)
            continue
        h = (n - 1) * float(p) / 100.0
        lo, hi = int(np.floor(h)), int(np.ceil(h))
        if not censored_high:
            lo, hi = lo - int(n_censored), hi - int(n_censored)
        if lo < 0 or hi >= v.size:
            out.append(None)
            continue
        out.append(float(v[lo] + (h - np.floor(h)) * (v[hi] - v[lo])))
    return out


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


IMAGE_S0_SOURCE = "lower quartile of S0 of the image's well-measured voxels"


def image_tissue_amplitude(status, r2star, s0, echo_times_ms, noise_sigma, coils) -> float | None:
    """Tissue amplitude for a region that has none of its own left.

    The lower quartile of S0 over the image's well-measured fitted voxels.

    Parameters
    ----------
    status : uint8 ndarray
        Fit status map, any shape.
    r2star : ndarray
        R2* map in 1/s, same shape.
    s0 : ndarray
        S0 map (signal units), same shape.
    echo_times_ms : ndarray, shape (n_echoes,)
        Echo times in ms.
    noise_sigma : float
        Noise SD per real channel (signal units).
    coils : float
        Effective coil count L.

    Returns
    -------
    float or None
        Signal units; None without well-measured voxels.
    """
    index = np.flatnonzero(np.asarray(status).ravel() == FITTED)
    index = index[::max(1, index.size // 200000)]  # a sample is enough for a quartile
    r2_map = np.asarray(r2star, dtype=np.float64).ravel()[index]
    s0_map = np.asarray(s0, dtype=np.float64).ravel()[index]
    good = (~too_fast_voxels(np.full(index.size, FITTED), r2_map, s0_map, noise_sigma, coils,
                             echo_times_ms=echo_times_ms)
            & well_measured(r2_map, s0_map, echo_times_ms, noise_sigma, coils))
    return float(np.percentile(s0_map[good], 25)) if good.any() else None


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


def label_masks(labels, label_names: dict, spatial_shape) -> list[tuple[int, str, np.ndarray]]:
    """A mask for every named label and every unnamed non-zero label present.

    Named labels with no voxels are kept (their statistics then say the region is empty).

    Parameters
    ----------
    labels : int ndarray, shape (k, j, i)
    label_names : dict of int to str
        Keys convertible to int; unnamed labels are called "label <value>".
    spatial_shape : tuple of int
        The maps' spatial shape (k, j, i).

    Returns
    -------
    list of (int, str, bool ndarray of shape (k, j, i))
        (value, name, mask), by value.

    Raises
    ------
    GeometryError, InputError
        As `check_labels`, and for label_names keys that are not integers.
    """
    labels = check_labels(labels, spatial_shape)
    present = np.unique(labels)
    present = [int(v) for v in present if v != 0]
    names = {}
    for key, name in (label_names or {}).items():
        try:
            value = int(key)
        except (TypeError, ValueError):
            raise InputError(
                f"label_names must map integer label values to names; got key {key!r}.") from None
        names[value] = str(name)
    values = sorted(set(names) | set(present))
    return [(v, names.get(v, f"label {v}"), labels == v) for v in values if v != 0]


def mean_decay(signal, labels, values, average: str = "mean") -> np.ndarray:
    """Each label's signal per echo: mean magnitude, or root mean square ("rms").

    Non-finite samples count as 0. The RMS keeps E[S^2] = A^2 + 2 L sigma^2 exact (the noise
    floor of root-sum-of-squares magnitude), which the noise-corrected fit needs.

    Parameters
    ----------
    signal : ndarray, shape (n_echoes, k, j, i)
        Magnitudes (signal units).
    labels : int ndarray, shape (k, j, i)
    values : sequence of int
        The labels wanted.
    average : str
        "mean" or "rms".

    Returns
    -------
    float64 ndarray, shape (len(values), n_echoes)
        Signal units; NaN for a label with no voxels.

    Raises
    ------
    InputError
        For another ``average``.
    """
    if average not in ("mean", "rms"):
        raise InputError(f"average must be 'mean' or 'rms'; got {average!r}.")
    signal = np.asarray(signal)
    flat = np.asarray(labels).ravel().astype(np.int64)
    values = [int(v) for v in values]
    size = max([int(flat.max()) if flat.size else 0] + values) + 1
    counts = np.bincount(flat, minlength=size).astype(np.float64)[values]
    out = np.empty((len(values), signal.shape[0]))
    for e in range(signal.shape[0]):
        echo = np.nan_to_num(signal[e].ravel().astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        weights = echo * echo if average == "rms" else echo
        with np.errstate(invalid="ignore", divide="ignore"):
            out[:, e] = np.bincount(flat, weights=weights, minlength=size)[values] / counts
    return np.sqrt(out) if average == "rms" else out


def roi_signal(signal, mask, average: str = "mean") -> np.ndarray:
    """The region's signal per echo: mean magnitude, or root mean square ("rms").

    One row of `mean_decay` (the same treatment of non-finite samples), for a single mask.
    The RMS keeps E[S^2] = A^2 + 2 L sigma^2 exact, which the noise-corrected fit needs.

    Parameters
    ----------
    signal : ndarray, shape (n_echoes, k, j, i)
        Magnitudes (signal units).
    mask : bool ndarray, shape (k, j, i)
    average : str
        "mean" or "rms".

    Returns
    -------
    float64 ndarray, shape (n_echoes,)

    Raises
    ------
    InputError
        For another ``average``.
    GeometryError
        When the mask is not on the signal's grid.
    """
    if average not in ("mean", "rms"):
        raise InputError(f"average must be 'mean' or 'rms'; got {average!r}.")
    signal = np.asarray(signal)
    mask = check_mask(mask, signal.shape[1:])
    values = np.nan_to_num(signal[:, mask].astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    if average == "rms":
        return np.sqrt(np.mean(values * values, axis=1))
    return values.mean(axis=1)


def roi_fit(signal, mask, echo_times_ms, method: str = DEFAULT_ROI_METHOD,
            noise_sigma=None, coils: float | None = None,
            quantity: str = "T2*") -> dict:
    """Fit the region's averaged signal decay with `IronMapping.relaxometry.fit`.

    The cardiac T2* standard is an ROI-averaged fit. Method "noise-corrected" (the default)
    fits the mean of the squared magnitudes, whose noise floor is exactly 2 L sigma^2 whatever
    the decay, with the squared-signal model S^2 = S0^2 exp(-2 R2* t) + 2 L sigma^2 (Feng et
    al. MRM 2013;70:1765, doi:10.1002/mrm.24607): unbiased at high iron, where the mean
    magnitude keeps the floor. "truncation" (mean magnitude, late echoes below SNR 2 dropped;
    He et al. MRM 2008;60:1082, CMRtools practice) is kept by name. Both need the noise sigma;
    without it the fit falls back to "nlls" and says so.

    Parameters
    ----------
    signal : ndarray, shape (n_echoes, k, j, i)
        Magnitudes (signal units).
    mask : bool ndarray, shape (k, j, i)
    echo_times_ms : ndarray, shape (n_echoes,)
        Echo times in ms.
    method : str
        "noise-corrected" or "truncation".
    noise_sigma : float or ndarray, shape (k, j, i), optional
        Noise SD per real channel (signal units); of a noise map, the RMS over the region is
        used.
    coils : float, optional
        Effective coil count L.
    quantity : str
        "T2*", or "T2" for spin echo.

    Returns
    -------
    dict
        JSON-able: method, signal_average, r2star (1/s), t2star (ms), s0 (signal units),
        quality (R^2), echoes_used, status, n_voxels, r2star_measurable_limit (1/s,
        noise-corrected only), echoes_above_floor (noise-corrected only), notes. Values are
        None when the fit failed or R2* is beyond what the averaged echoes measure.

    Raises
    ------
    InputError
        For an unknown method.
    """
    from .relaxometry import Status, fit

    if method not in ROI_METHODS:
        raise InputError(f"ROI fit method must be one of {ROI_METHODS}; got {method!r}.")
    signal = np.asarray(signal)
    mask = check_mask(mask, signal.shape[1:])
    out = {"method": method, "signal_average": None, "r2star": None, "t2star": None, "s0": None,
           "quality": None, "echoes_used": None, "status": None, "n_voxels": int(mask.sum()),
           "r2star_measurable_limit": None, "notes": []}
    if not mask.any():
        out["notes"].append("empty region: no ROI fit")
        return out
    notes = out["notes"]
    if noise_sigma is not None and np.ndim(noise_sigma) > 0:
        sigma_map = np.asarray(noise_sigma, dtype=np.float64)
        noise_sigma = (float(np.sqrt(np.nanmean(sigma_map[mask] ** 2)))
                       if sigma_map.shape == mask.shape else None)
    used_method = method
    if noise_sigma is None or not np.isfinite(noise_sigma) or noise_sigma <= 0:
        used_method = "nlls"
        notes.append(f"noise level unknown: ROI fit used 'nlls' instead of {method!r}")
    average = "rms" if used_method == "noise-corrected" else "mean"
    y = roi_signal(signal, mask, average)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = fit(y[:, None], echo_times_ms, method=used_method, mask=np.ones(1, bool),
                  noise_sigma=noise_sigma if used_method != "nlls" else None,
                  coils=coils, quantity=quantity)
    status = int(res.status[0])
    out.update(method=used_method, signal_average="root mean square" if average == "rms" else "mean",
               status=Status(status).name.lower(), echoes_used=int(res.echoes_used[0]),
               quality=float(res.quality[0]) if np.isfinite(res.quality[0]) else None,
               s0=float(res.s0[0]) if np.isfinite(res.s0[0]) else None)
    # Near the floor the mean power of N voxels is as informative as one voxel with noise
    # sigma N^(-1/4) (Var of mean S^2 = 4 sigma^2 (A^2 + L sigma^2) / N), so the voxel rules apply
    # with that noise: amplitude detectable, and R2* within what the averaged echoes measure.
    limit = None
    averaged_sigma = None if used_method != "noise-corrected" else noise_sigma * out["n_voxels"] ** -0.25
    floor_only = (status == FITTED and averaged_sigma is not None
                  and not res.s0[0] >= detection_amplitude(averaged_sigma, coils))
    if status == FITTED and averaged_sigma is not None and not floor_only:
        limit = r2star_where_informative(echo_times_ms, float(res.s0[0]), averaged_sigma, coils or 1.0,
                                         MEASURABLE_ECHOES)
    out["r2star_measurable_limit"] = limit
    if averaged_sigma is not None:
        # echoes whose mean power stands 3 SDs above the exact floor 2 L sigma^2
        floor = 2.0 * (coils or 1.0) * noise_sigma * noise_sigma
        sd = 2.0 * noise_sigma * noise_sigma * np.sqrt(coils or 1.0) / np.sqrt(out["n_voxels"])
        out["echoes_above_floor"] = int(np.count_nonzero(y * y - floor > 3.0 * sd))
    if status == FITTED and out.get("echoes_above_floor", 2) < 2 and not floor_only:
        notes.append(f"ROI fit: the region's mean signal is above the noise floor in "
                     f"{out['echoes_above_floor']} echo only: the decay is faster than the echoes "
                     "can measure; no R2*; use a shorter first echo")
    elif floor_only:
        notes.append("ROI fit: the region's mean signal is at the noise floor from the first echo "
                     "on (decay faster than the first echo, or no tissue signal): no R2*")
    elif limit is not None and res.r2star[0] > limit:
        notes.append(f"ROI fit: R2* {float(res.r2star[0]):.0f} 1/s is beyond what the averaged echoes "
                     f"can measure (above about {limit:.0f} 1/s): not reported; use a shorter first echo")
    elif status == FITTED:
        out["r2star"] = float(res.r2star[0])
        out["t2star"] = float(res.t2star[0])
    else:
        notes.append(f"ROI fit failed: {Status.describe(status)}")
    return out


def compare_lesion(lesion: dict, background: dict, coverage_factor: float = LESION_COVERAGE_FACTOR
                   ) -> dict:
    """Lesion vs background liver R2*, from two `region_statistics` dicts.

    difference = lesion - background median R2* (1/s); ratio = lesion / background.
    The combined uncertainty is sqrt(u_l^2 + u_b^2) with u the median per-voxel SD of R2* from
    the fit (the measurement uncertainty of a voxel; the voxel SD when the fit gives none).
    The difference "exceeds" it when |difference| > coverage_factor x combined. The reading:
    not exceeding -> isointense to liver on T2*; lower R2* -> hyperintense (less iron, e.g.
    adenoma, HCC, metastasis); higher -> hypointense (Belay 2018, J Med Case Reports).
    A liver known only to be above a lower bound gives "hyperintense" when the lesion is
    clearly below the bound, else no reading.

    Parameters
    ----------
    lesion, background : dict
        `region_statistics` of the lesion and of the background liver.
    coverage_factor : float
        k in |difference| > k x combined uncertainty.

    Returns
    -------
    dict
        lesion_r2star_median, background_r2star_median, difference_r2star, ratio_r2star,
        combined_uncertainty_r2star (all 1/s but the ratio), uncertainty_basis,
        coverage_factor, standard_error_difference_r2star (1/s), exceeds_uncertainty, reading,
        text; background_r2star_lower_bound when the liver is censored.
    """
    out = {"lesion_r2star_median": lesion.get("r2star_median"),
           "background_r2star_median": background.get("r2star_median"),
           "difference_r2star": None, "ratio_r2star": None, "combined_uncertainty_r2star": None,
           "uncertainty_basis": None, "coverage_factor": float(coverage_factor),
           "standard_error_difference_r2star": None, "exceeds_uncertainty": None,
           "reading": None, "text": None}
    a, b = out["lesion_r2star_median"], out["background_r2star_median"]
    bound = background.get("r2star_lower_bound")
    if a is not None and b is None and bound is not None:
        return _compare_with_censored_background(out, lesion, a, bound, coverage_factor)
    if a is None or b is None:
        out["text"] = "lesion or background liver has no valid R2*: no comparison"
        return out

    def unc(stats):
        u = stats.get("r2star_uncertainty_median")
        if u is not None and np.isfinite(u):
            return u, "per-voxel fit uncertainty"
        return stats.get("r2star_sd") or 0.0, "voxel standard deviation"

    ua, basis_a = unc(lesion)
    ub, basis_b = unc(background)
    combined = float(np.hypot(ua, ub))
    diff = float(a - b)
    out.update(difference_r2star=diff, ratio_r2star=float(a / b) if b else None,
               combined_uncertainty_r2star=combined,
               uncertainty_basis=basis_a if basis_a == basis_b else f"{basis_a} / {basis_b}")
    se = [s.get("r2star_se_median") for s in (lesion, background)]
    if all(v is not None for v in se):
        out["standard_error_difference_r2star"] = float(np.hypot(*se))
    exceeds = abs(diff) > coverage_factor * combined
    out["exceeds_uncertainty"] = bool(exceeds)
    if not exceeds:
        reading = "isointense to liver on T2*"
        meaning = ("holds iron like the background liver (e.g. extramedullary haematopoiesis or "
                   "regenerative tissue)")
    elif diff < 0:
        reading = "hyperintense to liver on T2*"
        meaning = "holds less iron than the background liver (iron-excluding lesions such as adenoma, HCC or metastasis)"
    else:
        reading = "hypointense to liver on T2*"
        meaning = "holds more iron than the background liver"
    out["reading"] = reading
    out["text"] = (f"Lesion R2* {a:.1f} vs liver {b:.1f} 1/s (difference {diff:+.1f} 1/s, ratio "
                   f"{a / b:.2f}; {coverage_factor:g} x combined uncertainty = "
                   f"{coverage_factor * combined:.1f} 1/s): {reading}; the lesion {meaning}. "
                   "Reference: Belay 2018, J Med Case Reports.")
    return out


def _compare_with_censored_background(out: dict, lesion: dict, a: float, bound: float,
                                      coverage_factor: float) -> dict:
    """Lesion against a liver known only to be above `bound` (1/s): hyperintense when the lesion
    is clearly below the bound, otherwise no reading (the liver's value is not measurable)."""
    u = lesion.get("r2star_uncertainty_median") or lesion.get("r2star_sd") or 0.0
    out["background_r2star_lower_bound"] = float(bound)
    if bound - a > coverage_factor * u:
        out.update(exceeds_uncertainty=True, reading="hyperintense to liver on T2*",
                   uncertainty_basis="per-voxel fit uncertainty of the lesion",
                   combined_uncertainty_r2star=float(u))
        out["text"] = (f"Lesion R2* {a:.1f} vs liver above {bound:.0f} 1/s (the liver decays faster "
                       "than the echoes can measure): hyperintense to liver on T2*; the lesion holds "
                       "less iron than the background liver (iron-excluding lesions such as "
                       "adenoma, HCC or metastasis). Reference: Belay 2018, J Med Case Reports.")
    else:
        out["text"] = (f"Lesion R2* {a:.1f} 1/s, liver above {bound:.0f} 1/s (faster than the echoes "
                       "can measure): no comparison; use a shorter first echo")
    return out


def signal_intensity_ratio(signal, mask, reference_mask, echo_times_ms=None) -> dict:
    """Mean signal of a region over the mean signal of a reference region, per echo.

    For SIR-style (Gandon 2004) and single-echo protocols.

    Parameters
    ----------
    signal : ndarray, shape (n_echoes, k, j, i) or (k, j, i)
        Magnitudes (signal units).
    mask, reference_mask : bool ndarray, shape (k, j, i)
    echo_times_ms : ndarray, shape (n_echoes,), optional
        Echo times in ms, copied to the result.

    Returns
    -------
    dict
        "echo_times_ms", "ratio", "region_mean_signal", "reference_mean_signal": lists, one
        entry per echo; ratios are None where the reference signal is zero or a region is
        empty.

    Raises
    ------
    InputError
        When the number of echo times differs from the echoes.
    """
    signal = np.asarray(signal)
    if signal.ndim == 3:
        signal = signal[None]
    mask = check_mask(mask, signal.shape[1:])
    reference_mask = check_mask(reference_mask, signal.shape[1:])
    n_echo = signal.shape[0]
    te = [None] * n_echo if echo_times_ms is None else [float(t) for t in np.ravel(echo_times_ms)]
    if len(te) != n_echo:
        raise InputError(f"{n_echo} echoes but {len(te)} echo times were given.")
    if not mask.any() or not reference_mask.any():
        return {"echo_times_ms": te, "ratio": [None] * n_echo, "region_mean_signal": [None] * n_echo,
                "reference_mean_signal": [None] * n_echo}
    region = roi_signal(signal, mask)
    reference = roi_signal(signal, reference_mask)
    ratio = [float(r / s) if s > 0 else None for r, s in zip(region, reference)]
    return {"echo_times_ms": te, "ratio": ratio,
            "region_mean_signal": [float(v) for v in region],
            "reference_mean_signal": [float(v) for v in reference]}
