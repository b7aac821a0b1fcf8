"""Cramer-Rao lower bound of R2* for a mono-exponential decay in Gaussian noise.

F = (1/sigma^2) sum_n g_n g_n^T,  g_n = [exp(-R2* t_n), -S0 t_n exp(-R2* t_n)],
SD(R2*) >= sqrt((F^-1)_22). Used to judge an estimator's efficiency (SD / CRLB).
"""

from __future__ import annotations

import numpy as np


def r2star_crlb(s0, r2star, echo_times_ms, sigma):
    """Lower bound of the SD of R2* (1/s); arrays broadcast, echo times in ms.

    Parameters
    ----------
    s0 : array_like
        Signal at TE = 0 (signal units), any shape.
    r2star : array_like
        R2* in 1/s, broadcastable with ``s0``.
    echo_times_ms : array_like, (n_echoes,)
        Echo times in ms.
    sigma : float or array_like
        Gaussian noise SD (signal units), broadcastable with the result.

    Returns
    -------
    ndarray
        The bound in 1/s, of the broadcast shape of ``s0`` and ``r2star``.
    """
    t = np.asarray(echo_times_ms, dtype=np.float64) / 1000.0
    s0 = np.asarray(s0, dtype=np.float64)[..., None]
    r2 = np.asarray(r2star, dtype=np.float64)[..., None]
    e = np.exp(-r2 * t)
    f11 = (e * e).sum(-1)
    f12 = -(s0[..., 0]) * (t * e * e).sum(-1)
    f22 = (s0[..., 0] ** 2) * (t * t * e * e).sum(-1)
    return sigma * np.sqrt(f11 / (f11 * f22 - f12 * f12))
