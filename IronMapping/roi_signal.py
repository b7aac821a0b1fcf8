"""A region's averaged signal: its decay per echo, the ROI-averaged fit, signal intensity ratios.

    >>> roi = roi_fit(image.signal, mask, image.echo_times_ms, noise_sigma=12.0)
    >>> roi["r2star"], roi["notes"]

Units: R2* in 1/s, T2* in ms, echo times in ms, signal in signal units. The cardiac T2*
standard is an ROI-averaged fit (`roi_fit`); `mean_decay` gives every label's mean decay (the
report's decay plots), `signal_intensity_ratio` the SIR-style ratio of two regions.
"""

from __future__ import annotations

import numpy as np

from .censoring import FITTED, MEASURABLE_ECHOES, detection_amplitude, r2star_where_informative
from .errors import InputError
from .region_masks import check_mask

DEFAULT_ROI_METHOD = "noise-corrected"
ROI_METHODS = ("truncation", "noise-corrected")


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
