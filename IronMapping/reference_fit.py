"""Exact per-voxel noncentral-chi maximum likelihood with scipy (slow; for validation only).

The benchmark and tests compare the fast vectorised estimators against this: it is the
statistical optimum for magnitude data with known noise sigma and coil count L.
"""

from __future__ import annotations

import numpy as np
from scipy import optimize, special


def negative_log_likelihood(params, y, t, sigma, coils):
    """Negative log-likelihood of one voxel's decay and its gradient (noncentral chi, 2L dof).

    Parameters
    ----------
    params : (float, float)
        (log S0, R2* in 1/s).
    y : ndarray, shape (n_echoes,)
        Magnitudes (signal units).
    t : ndarray, shape (n_echoes,)
        Echo times in s.
    sigma : float
        Noise SD per real channel (signal units).
    coils : float
        Effective coil count L.

    Returns
    -------
    nll : float
        -log p(y | S0 = exp(params[0]), R2* = params[1]), constant terms dropped; 1e300 for
        steps far outside any plausible decay.
    grad : ndarray, shape (2,)
        Gradient with respect to (log S0, R2*).
    """
    log_s0, r2 = params
    if not (np.isfinite(log_s0) and np.isfinite(r2)) or abs(log_s0) > 200 or abs(r2) > 1e6:
        return 1e300, np.zeros(2)  # far outside any plausible decay: reject the step
    e = np.exp(-r2 * t)
    a = np.maximum(np.exp(log_s0) * e, 1e-12 * sigma)
    s2 = sigma * sigma
    z = y * a / s2
    order = coils - 1.0
    log_i = np.log(special.ive(order, z)) + z
    nll = -np.sum(-(a * a) / (2 * s2) - order * np.log(a) + log_i)
    ratio = special.ive(coils, z) / special.ive(order, z)
    ratio = np.where(np.isfinite(ratio), ratio, 1.0)
    d_a = (y * ratio - a) / s2            # d log-likelihood / dA
    grad = -np.array([np.sum(d_a * a), np.sum(d_a * (-t) * a)])
    if not (np.isfinite(nll) and np.all(np.isfinite(grad))):
        return 1e300, np.zeros(2)
    return nll, grad


def _scaled_nll(x, y, t, sigma, coils):
    # R2* enters in 1/ms so both parameters have gradients of similar size
    nll, grad = negative_log_likelihood((x[0], 1000.0 * x[1]), y, t, sigma, coils)
    return nll, grad * np.array([1.0, 1000.0])


def fit_voxel_ml(y, echo_times_ms, sigma, coils=1, starts=(), r2_bounds=(-100.0, 20000.0)):
    """Maximum-likelihood (S0, R2*) of one voxel; the best of several starting points.

    Parameters
    ----------
    y : ndarray, shape (n_echoes,)
        Magnitudes (signal units).
    echo_times_ms : ndarray, shape (n_echoes,)
        Echo times in ms.
    sigma : float
        Noise SD per real channel (signal units).
    coils : float
        Effective coil count L.
    starts : iterable of (float, float)
        (S0, R2* in 1/s) guesses; a two-echo start is always added.
    r2_bounds : (float, float)
        R2* range in 1/s the starts and the result are clipped to.

    Returns
    -------
    s0 : float
        Signal at TE = 0 (signal units).
    r2star : float
        R2* in 1/s.
    """
    t = np.asarray(echo_times_ms, dtype=np.float64) / 1000.0
    y = np.asarray(y, dtype=np.float64)
    guesses = list(starts)
    a0 = max(y[0], sigma)
    a1 = max(y[1], 0.1 * sigma)
    r_guess = float(np.clip(np.log(a0 / a1) / (t[1] - t[0]), 1.0, 5000.0))
    guesses.append((a0 * np.exp(r_guess * t[0]), r_guess))
    best = None
    for s0, r2 in guesses:
        if not (np.isfinite(s0) and s0 > 0 and np.isfinite(r2)):
            continue
        x0 = [np.log(s0), float(np.clip(r2, *r2_bounds)) / 1000.0]
        res = optimize.minimize(_scaled_nll, x0=x0, args=(y, t, sigma, coils), jac=True,
                                method="BFGS", options={"gtol": 1e-8, "maxiter": 400})
        if not res.success:  # line-search trouble on a flat likelihood: polish without gradients
            res = optimize.minimize(lambda x: _scaled_nll(x, y, t, sigma, coils)[0], res.x,
                                    method="Nelder-Mead",
                                    options={"xatol": 1e-9, "fatol": 1e-12, "maxiter": 4000})
        if best is None or res.fun < best.fun:
            best = res
    r2 = float(np.clip(1000.0 * best.x[1], *r2_bounds))
    return float(np.exp(best.x[0])), r2
