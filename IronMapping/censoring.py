"""Right-censored R2*: voxels that decay faster than the echoes can measure, and the protocol's limits.

A voxel whose signal has decayed to the noise floor by the first or second echo carries a
lower limit on R2*, not a value. Such voxels are ranked above every measured value, which keeps
the median and percentiles valid while fewer than half of the voxels are that fast
(right-censored rank statistics, `censored_percentiles`). The limit a protocol can measure is
where the echoes stop carrying information about the decay: with A_n = S0 exp(-R2* TE_n) the
squared signal of echo n carries the share A_n^2 / (A_n^2 + L sigma^2) of an echo's
information (Var(S^2) = 4 sigma^2 (A^2 + L sigma^2), Feng et al. MRM 2013;70:1765). Two echoes
are the least that define a decay, so:

- measurable limit = the R2* at which the echoes carry 1.5 echoes' worth (the second echo is
  half buried in the floor); fitted values above it are censored there;
- stated lower bound = the R2* at which two echoes still stand clear, lower than the
  measurable limit because estimates near the limit are biased upwards.

Units: R2* in 1/s, echo times in ms, amplitudes and noise SD in signal units. The region
statistics that use these rules are in :mod:`IronMapping.regions`.
"""

from __future__ import annotations

import numpy as np

FITTED = 1  # relaxometry.Status.FITTED
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
