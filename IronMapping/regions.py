"""Per-region statistics of R2*/T2* maps, ROI-averaged fits, lesion contrast and signal ratios.

    >>> stats = region_statistics(fit_result, mask, voxel_volume_ml=0.054)
    >>> stats["r2star_median"], stats["excluded_fraction"]

Units: R2* in 1/s, T2* in ms, volume in mL, echo times in ms. Everything works on boolean
masks on the map grid (k, j, i); `label_masks` turns a label array into such masks after
checking its shape. A voxel enters the statistics when its fit status is FITTED and its R^2 is
at least ``min_quality``.

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
DEFAULT_ROI_METHOD = "truncation"
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

    Raises GeometryError when its shape differs from the maps' spatial shape (k, j, i).
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
    mask = np.asarray(mask)
    if mask.shape != tuple(spatial_shape):
        raise GeometryError(
            f"The region mask has shape {mask.shape} but the maps have shape {tuple(spatial_shape)} "
            "(k, j, i). Resample the region onto the map grid first.")
    return mask.astype(bool)


def included_voxels(fit_result, mask, min_quality: float = DEFAULT_MIN_QUALITY) -> np.ndarray:
    """Boolean mask of the region's voxels whose fit is FITTED with R^2 >= min_quality."""
    ok = mask & (np.asarray(fit_result.status) == FITTED)
    if min_quality and min_quality > 0:
        q = np.asarray(fit_result.quality)
        ok &= np.nan_to_num(q, nan=-1.0) >= min_quality
    return ok


def region_statistics(fit_result, mask, voxel_volume_ml: float | None = None,
                      min_quality: float = DEFAULT_MIN_QUALITY) -> dict:
    """Statistics of one region of a RelaxometryFit.

    Returns a JSON-able dict: n_voxels, volume_ml (None without voxel volume), n_included,
    excluded_fraction (0..1; None for an empty region), excluded_by_status {name: count},
    r2star_{mean, sd, median, iqr, p5, p25, p75, p95} (1/s), the same for t2star (ms),
    r2star_uncertainty_median (median per-voxel SD of R2* from the fit, 1/s),
    r2star_se_median (standard error of the median from the voxel spread, 1/s),
    quality_median (R^2), notes (list of str).
    """
    mask = check_mask(mask, np.shape(fit_result.r2star))
    n = int(np.count_nonzero(mask))
    out = {"n_voxels": n,
           "volume_ml": (n * float(voxel_volume_ml)) if voxel_volume_ml is not None else None,
           "n_included": 0, "excluded_fraction": None, "excluded_by_status": {},
           "min_quality": float(min_quality), "notes": []}
    out.update(_describe(np.empty(0), "r2star"))
    out.update(_describe(np.empty(0), "t2star"))
    out.update({"r2star_uncertainty_median": None, "r2star_se_median": None, "quality_median": None})
    if n == 0:
        out["notes"].append(
            "region is empty on the map grid (0 voxels): it was not painted, or it lies outside "
            "the imaged volume; no statistics")
        return out
    keep = included_voxels(fit_result, mask, min_quality)
    n_in = int(np.count_nonzero(keep))
    status = np.asarray(fit_result.status)[mask]
    codes, counts = np.unique(status, return_counts=True)
    try:
        from .relaxometry import Status
        name = lambda c: Status(int(c)).name.lower()  # noqa: E731
    except (ImportError, ValueError):  # pragma: no cover - engine always present in the package
        name = lambda c: f"status {int(c)}"  # noqa: E731
    out["excluded_by_status"] = {name(c): int(k) for c, k in zip(codes, counts) if c != FITTED}
    low_q = int(np.count_nonzero(mask & (np.asarray(fit_result.status) == FITTED) & ~keep))
    if low_q:
        out["excluded_by_status"]["quality_below_min"] = low_q
    out["n_included"] = n_in
    out["excluded_fraction"] = float(1.0 - n_in / n)
    r2 = np.asarray(fit_result.r2star, dtype=np.float64)[keep]
    t2 = np.asarray(fit_result.t2star, dtype=np.float64)[keep]
    out.update(_describe(r2, "r2star"))
    out.update(_describe(t2, "t2star"))
    if n_in:
        unc = np.asarray(fit_result.uncertainty, dtype=np.float64)[keep]
        unc = unc[np.isfinite(unc)]
        out["r2star_uncertainty_median"] = float(np.median(unc)) if unc.size else None
        if n_in > 1:
            # SE of the median of a roughly normal sample: sqrt(pi/2) * SD / sqrt(n)
            out["r2star_se_median"] = float(np.sqrt(np.pi / 2) * out["r2star_sd"] / np.sqrt(n_in))
        q = np.asarray(fit_result.quality, dtype=np.float64)[keep]
        q = q[np.isfinite(q)]
        out["quality_median"] = float(np.median(q)) if q.size else None
    else:
        out["notes"].append("no voxel of this region has an accepted fit; see excluded_by_status")
    if out["excluded_fraction"] > 0.2:
        out["notes"].append(
            f"{100 * out['excluded_fraction']:.0f}% of the region's voxels were excluded "
            "(failed or low-quality fits): check the region and the echo train")
    return out


def label_masks(labels, label_names: dict, spatial_shape) -> list[tuple[int, str, np.ndarray]]:
    """(value, name, mask) for every named label and every unnamed non-zero label present.

    Named labels with no voxels are kept (their statistics then say the region is empty).
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


def roi_signal(signal, mask, average: str = "mean") -> np.ndarray:
    """The region's signal per echo: mean magnitude, or root mean square ("rms").

    signal : (n_echoes, k, j, i); mask : (k, j, i) bool. Returns (n_echoes,) float64.
    The RMS keeps E[S^2] = A^2 + 2 L sigma^2 exact, which the noise-corrected fit needs.
    """
    signal = np.asarray(signal)
    mask = check_mask(mask, signal.shape[1:])
    values = signal[:, mask].astype(np.float64)
    if average == "rms":
        return np.sqrt(np.mean(values * values, axis=1))
    return values.mean(axis=1)


def roi_fit(signal, mask, echo_times_ms, method: str = DEFAULT_ROI_METHOD,
            noise_sigma: float | None = None, coils: float | None = None,
            quantity: str = "T2*") -> dict:
    """Fit the region's averaged signal decay with `IronMapping.relaxometry.fit`.

    The standard for cardiac T2* (ROI-averaged, truncation; CMRtools practice). method is
    "truncation" (mean magnitude, late echoes below SNR 2 dropped) or "noise-corrected"
    (root-mean-square magnitude, squared-signal model with the noise floor). Both need the
    per-voxel noise sigma (the noise floor of the averaged magnitude is that of one voxel);
    without it the fit falls back to "nlls" and says so.

    Returns a JSON-able dict: method, signal_average, r2star (1/s), t2star (ms), s0, quality
    (R^2), echoes_used, status, notes. Values are None when the fit failed.
    """
    from .relaxometry import Status, fit

    if method not in ROI_METHODS:
        raise InputError(f"ROI fit method must be one of {ROI_METHODS}; got {method!r}.")
    signal = np.asarray(signal)
    mask = check_mask(mask, signal.shape[1:])
    out = {"method": method, "signal_average": None, "r2star": None, "t2star": None, "s0": None,
           "quality": None, "echoes_used": None, "status": None, "n_voxels": int(mask.sum()),
           "notes": []}
    if not mask.any():
        out["notes"].append("empty region: no ROI fit")
        return out
    notes = out["notes"]
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
    if status == FITTED:
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
    """
    out = {"lesion_r2star_median": lesion.get("r2star_median"),
           "background_r2star_median": background.get("r2star_median"),
           "difference_r2star": None, "ratio_r2star": None, "combined_uncertainty_r2star": None,
           "uncertainty_basis": None, "coverage_factor": float(coverage_factor),
           "standard_error_difference_r2star": None, "exceeds_uncertainty": None,
           "reading": None, "text": None}
    a, b = out["lesion_r2star_median"], out["background_r2star_median"]
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


def signal_intensity_ratio(signal, mask, reference_mask, echo_times_ms=None) -> dict:
    """Mean signal of a region over the mean signal of a reference region, per echo.

    For SIR-style (Gandon 2004) and single-echo protocols. Returns {"echo_times_ms": [...],
    "ratio": [...], "region_mean_signal": [...], "reference_mean_signal": [...]}; ratios are
    None where the reference signal is zero or a region is empty.
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
