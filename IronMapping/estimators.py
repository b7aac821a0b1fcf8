"""Vectorised R2* estimators working on blocks of voxels.

Every estimator takes
    y : float64 array (n_echoes, n_voxels), magnitude signal
    t : float64 array (n_echoes,), echo times in SECONDS
and returns a `BlockFit` whose arrays have length n_voxels, R2* in 1/s.
Noise-aware estimators also take sigma (noise SD per real channel) and coils (effective L).

There are no per-voxel Python loops: iterative estimators run Gauss-Newton steps on the whole
block at once and shrink the block to the voxels still moving.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .noise import bessel_ratio, noise_floor_mean


@dataclass
class BlockFit:
    """One estimator's answer for a block of voxels; every array has shape (n_voxels,).

    Attributes
    ----------
    r2star : ndarray, float64
        R2* in 1/s.
    s0 : ndarray, float64
        Signal extrapolated to TE = 0 (units of the block's signal).
    converged : ndarray, bool
        The iteration (if any) converged.
    echoes_used : ndarray, int
        Echoes that entered the fit.
    uncertainty : ndarray, float64, or None
        SD of R2* (1/s) from the estimator's own Fisher information, or None: then the caller
        derives it from the magnitude residuals (Gaussian information).
    rss : ndarray, float64, or None
        Residual sum of squares the estimator minimised (signal units^2), or None: then the
        caller sums the squared magnitude residuals.
    offset : ndarray, float64, or None
        Constant C of the offset model S0 exp(-R2* t) + C (signal units), or None.
    polish : ndarray, bool, or None
        Voxels the squared-signal pass flags for the maximum-likelihood polish (first pass of
        "noise-corrected-ml"), or None.
    maps : dict of str to ndarray (n_voxels,)
        Extra maps for the user (e.g. "pdff" in %, "water", "fat").
    """

    r2star: np.ndarray
    s0: np.ndarray
    converged: np.ndarray
    echoes_used: np.ndarray
    uncertainty: np.ndarray | None = None
    rss: np.ndarray | None = None
    offset: np.ndarray | None = None
    polish: np.ndarray | None = None
    maps: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Closed forms

def weighted_loglinear(y, t, weights):
    """Weighted least squares of ln(y) = ln(S0) - R2* t.

    Parameters
    ----------
    y : ndarray, (n_echoes, n_voxels)
        Magnitude signal (positive where weighted).
    t : ndarray, (n_echoes,)
        Echo times in s.
    weights : ndarray, (n_echoes, n_voxels)
        Weight of each echo; zero for echoes to leave out.

    Returns
    -------
    r2star : ndarray, (n_voxels,)
        R2* in 1/s; NaN where fewer than two echoes carry weight.
    ln_s0 : ndarray, (n_voxels,)
        ln S0 (S0 in signal units); NaN where R2* is.
    """
    usable = weights > 0
    ly = np.log(np.where(usable, y, 1.0))
    sw = weights.sum(0)
    st = t @ weights
    stt = (t * t) @ weights
    wly = weights * ly
    sy = wly.sum(0)
    sty = t @ wly
    det = sw * stt - st * st
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = (sw * sty - st * sy) / det
        intercept = (stt * sy - st * sty) / det
    bad = ~(det > 1e-12 * np.maximum(sw * stt, 1e-300))
    slope[bad] = np.nan
    intercept[bad] = np.nan
    return -slope, intercept


def loglinear(y, t, **_):
    """Log-linear fit weighted by S^2 (the inverse variance of ln S at high SNR).

    Parameters
    ----------
    y : ndarray, (n_echoes, n_voxels)
        Magnitude signal; echoes at or below zero are left out.
    t : ndarray, (n_echoes,)
        Echo times in s.
    **_
        Other estimator options, ignored.

    Returns
    -------
    BlockFit
    """
    usable = y > 0
    w = np.where(usable, y * y, 0.0)
    r2, ln_s0 = weighted_loglinear(y, t, w)
    return BlockFit(r2, np.exp(ln_s0), np.isfinite(r2), usable.sum(0))


def arlo(y, t, **_):
    """Auto-regression on linear operations (Pei et al. 2015, MRM 73:843).

    Needs at least three uniformly spaced echoes (checked by the caller). Integrates the decay
    with Simpson's rule: s_i = dTE/3 (S_i + 4 S_i+1 + S_i+2), d_i = S_i - S_i+2,
    R2* = (dTE/3 sum d^2 + sum s d) / (sum s^2 + dTE/3 sum s d).

    Parameters
    ----------
    y : ndarray, (n_echoes, n_voxels)
        Magnitude signal.
    t : ndarray, (n_echoes,)
        Echo times in s, uniformly spaced.
    **_
        Other estimator options, ignored.

    Returns
    -------
    BlockFit
        S0 is the least-squares amplitude for the ARLO R2* (:func:`linear_s0`).
    """
    dte = float(np.mean(np.diff(t)))
    s = dte / 3.0 * (y[:-2] + 4.0 * y[1:-1] + y[2:])
    d = y[:-2] - y[2:]
    sd = (s * d).sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = (dte / 3.0 * (d * d).sum(0) + sd) / ((s * s).sum(0) + dte / 3.0 * sd)
    s0 = linear_s0(y, t, r2, np.ones_like(y))
    return BlockFit(r2, s0, np.isfinite(r2), np.full(y.shape[1], y.shape[0]))


def linear_s0(y, t, r2, weights):
    """Least-squares S0 for a fixed R2*: sum(w y e) / sum(w e^2), e = exp(-R2* t).

    Parameters
    ----------
    y : ndarray, (n_echoes, n_voxels)
        Magnitude signal.
    t : ndarray, (n_echoes,)
        Echo times in s.
    r2 : ndarray, (n_voxels,)
        R2* in 1/s (NaN taken as 0).
    weights : ndarray, (n_echoes, n_voxels)
        Echo weights.

    Returns
    -------
    ndarray, (n_voxels,)
        S0 in signal units.
    """
    e = np.exp(-np.outer(t, np.nan_to_num(r2)))
    we = weights * e
    with np.errstate(divide="ignore", invalid="ignore"):
        return (we * y).sum(0) / (we * e).sum(0)


# ---------------------------------------------------------------------------------------------
# Shared Gauss-Newton machinery for two-parameter (S0, R2*) models

def _solve2(h11, h12, h22, g1, g2):
    det = h11 * h22 - h12 * h12
    with np.errstate(divide="ignore", invalid="ignore"):  # singular systems are caught by `ok`
        d1 = (h22 * g1 - h12 * g2) / det
        d2 = (h11 * g2 - h12 * g1) / det
    ok = np.isfinite(d1) & np.isfinite(d2) & (det > 0)
    return np.where(ok, d1, 0.0), np.where(ok, d2, 0.0), ok


def _damp(p, d_s0, d_r2):
    """Halve a voxel's steps each time its R2* step reverses direction (stops 2-cycles)."""
    flip = d_r2 * p["last_step"] < 0
    p["scale"] = np.where(flip, 0.5 * p["scale"], np.minimum(1.0, 1.5 * p["scale"]))
    d_r2 = d_r2 * p["scale"]
    p["last_step"] = d_r2
    return d_s0 * p["scale"], d_r2


def _limit_step(r2, d_r2):
    """Trust region on R2*: down by at most half, up by at most double (and 100 1/s)."""
    return np.clip(d_r2, -np.maximum(0.5 * np.abs(r2), 50.0), np.maximum(np.abs(r2), 100.0))


class _Block:
    """Voxels still iterating: their data, parameters and original column index."""

    def __init__(self, arrays: dict, params: dict, n: int):
        self.arrays = arrays
        self.params = params
        self.index = np.arange(n)

    def keep(self, still):
        self.arrays = {k: v[:, still] if v.ndim == 2 else v[still] for k, v in self.arrays.items()}
        self.params = {k: v[still] for k, v in self.params.items()}
        self.index = self.index[still]


MOVING, CONVERGED, FAILED = 0, 1, 2


def _state(d_r2, r2_old, r2_new, ok):
    """Per-voxel iteration state after a step: MOVING, CONVERGED or FAILED."""
    state = np.where(_converged(d_r2, r2_old), CONVERGED, MOVING)
    state[~ok | ~np.isfinite(r2_new) | (np.abs(r2_new) > R2STAR_GIVE_UP)] = FAILED
    return state


def _damping_state(n):
    return {"scale": np.ones(n), "last_step": np.zeros(n)}


def _iterate(step, arrays, params, n, max_iter, out):
    """Run `step(arrays, params) -> state` until no voxel is MOVING; write params into `out`.

    `out` holds full-length arrays for every parameter plus "converged". The block is
    compacted whenever fewer than 80 % of its voxels are still moving.
    """
    block = _Block(arrays, params, n)
    for _ in range(max_iter):
        state = step(block.arrays, block.params)
        moving = state == MOVING
        done = ~moving
        if done.any():
            idx = block.index[done]
            for k, v in block.params.items():
                if k in out:
                    out[k][idx] = v[done]
            out["converged"][idx] = state[done] == CONVERGED
        if not moving.any():
            return out
        if moving.mean() < 0.8:
            block.keep(moving)
    for k, v in block.params.items():
        if k in out:
            out[k][block.index] = v
    return out


R2STAR_GIVE_UP = 20000.0  # 1/s; beyond it the decay is unmeasurable at any clinical echo time


def _converged(d_r2, r2, rtol=1e-4, atol=1e-3):
    # A step of 0.01 % is far below any statistical error of R2*; Gauss-Newton is quadratic
    # near a noiseless solution, so the R2* after this step is exact to ~1e-8 there.
    return np.abs(d_r2) <= atol + rtol * np.abs(r2)


# ---------------------------------------------------------------------------------------------
# Gaussian least squares (mono-exponential), optionally on a subset of echoes

def _monoexp_gn(y, t, w, r2_init, s0_init, max_iter=50):
    """Weighted Gauss-Newton for S = S0 exp(-R2* t); w (n_echoes, n_voxels) are echo weights."""
    n = y.shape[1]
    r2 = np.where(np.isfinite(r2_init), r2_init, 30.0)
    s0 = np.where(np.isfinite(s0_init) & (s0_init > 0), s0_init, np.max(y, axis=0))
    out = {"r2star": r2.copy(), "s0": s0.copy(), "converged": np.zeros(n, dtype=bool)}
    tt = t * t

    def step(a, p):
        r2, s0 = p["r2star"], p["s0"]
        e = np.exp(-np.outer(t, r2))
        r = a["y"] - s0 * e
        we = a["w"] * e
        wee = we * e
        a0, a1, a2 = wee.sum(0), t @ wee, tt @ wee
        wer = we * r
        b0, b1 = wer.sum(0), t @ wer
        d_s0, d_r2, ok = _solve2(a0, -s0 * a1, s0 * s0 * a2, b0, -s0 * b1)
        d_s0, d_r2 = _damp(p, d_s0, _limit_step(r2, d_r2))
        p["s0"] = s0 + d_s0
        p["r2star"] = r2 + d_r2
        return _state(d_r2, r2, p["r2star"], ok)

    return _iterate(step, {"y": y, "w": w}, {"r2star": r2, "s0": s0, **_damping_state(n)},
                    n, max_iter, out)


def nlls(y, t, **_):
    """Mono-exponential least squares S = S0 exp(-R2* t) (Gauss-Newton from log-linear).

    Parameters
    ----------
    y : ndarray, (n_echoes, n_voxels)
        Magnitude signal.
    t : ndarray, (n_echoes,)
        Echo times in s.
    **_
        Other estimator options, ignored.

    Returns
    -------
    BlockFit
    """
    init = loglinear(y, t)
    usable = (y > 0).astype(np.float64)
    out = _monoexp_gn(y, t, np.ones_like(y), init.r2star, init.s0)
    return BlockFit(out["r2star"], out["s0"], out["converged"], usable.sum(0))


def truncation(y, t, sigma, coils=1.0, snr_limit=2.0, min_echoes=3, **_):
    """Truncation: keep the leading echoes clearly above the noise floor, then least squares.

    An echo is kept while its magnitude is at least `snr_limit` times the mean noise floor
    (the He/Pennell-style rule of stopping at SNR ~2); at least `min_echoes` are kept.

    Parameters
    ----------
    y : ndarray, (n_echoes, n_voxels)
        Magnitude signal.
    t : ndarray, (n_echoes,)
        Echo times in s.
    sigma : float
        Noise SD per real channel (signal units).
    coils : float
        Effective coil count L.
    snr_limit : float
        Echoes are kept while the magnitude is at least this many times the mean noise floor.
    min_echoes : int
        Fewest leading echoes kept (all of them when there are fewer).
    **_
        Other estimator options, ignored.

    Returns
    -------
    BlockFit
        ``echoes_used`` is the number of leading echoes kept in each voxel.
    """
    floor = float(noise_floor_mean(sigma, coils))
    above = y >= snr_limit * floor
    n_keep = np.cumprod(above, axis=0).sum(0)
    n_keep = np.clip(n_keep, min(min_echoes, y.shape[0]), y.shape[0])
    w = (np.arange(y.shape[0])[:, None] < n_keep[None, :]).astype(np.float64)
    wl = np.where(y > 0, w * y * y, 0.0)
    r2, ln_s0 = weighted_loglinear(y, t, wl)
    out = _monoexp_gn(y, t, w, r2, np.exp(ln_s0))
    return BlockFit(out["r2star"], out["s0"], out["converged"], n_keep)


# ---------------------------------------------------------------------------------------------
# Offset model (Ghugre 2006): S = S0 exp(-R2* t) + C

def offset(y, t, max_iter=60, **_):
    """Three-parameter fit S = S0 exp(-R2* t) + C, Levenberg-Marquardt on blocks of voxels.

    Parameters
    ----------
    y : ndarray, (n_echoes, n_voxels)
        Magnitude signal.
    t : ndarray, (n_echoes,)
        Echo times in s.
    max_iter : int
        Most Levenberg-Marquardt iterations.
    **_
        Other estimator options, ignored.

    Returns
    -------
    BlockFit
        With ``offset`` (C, signal units).
    """
    n = y.shape[1]
    init = loglinear(y, t)
    r2 = np.where(np.isfinite(init.r2star), init.r2star, 30.0)
    s0 = np.where(np.isfinite(init.s0), init.s0, y[0])
    c = np.zeros(n)
    tt = t * t
    n_echo = float(y.shape[0])

    def cost(y, s0, r2, c):
        r = y - s0 * np.exp(-np.outer(t, r2)) - c
        return np.einsum("ij,ij->j", r, r)

    def step(a, p):
        y = a["y"]
        s0, r2, c, lam = p["s0"], p["r2star"], p["offset"], p["lam"]
        e = np.exp(-np.outer(t, r2))
        r = y - s0 * e - c
        ee = e * e
        se, ste, see, stee, sttee = e.sum(0), t @ e, ee.sum(0), t @ ee, tt @ ee
        er = e * r
        # J = [e, -S0 t e, 1]; H = J^T J (symmetric), g = J^T r
        h = [[see, -s0 * stee, se], [None, s0 * s0 * sttee, -s0 * ste], [None, None, np.full(y.shape[1], n_echo)]]
        g = [er.sum(0), -s0 * (t @ er), r.sum(0)]
        a11, a22, a33 = h[0][0] * (1 + lam), h[1][1] * (1 + lam), h[2][2] * (1 + lam)
        a12, a13, a23 = h[0][1], h[0][2], h[1][2]
        # explicit inverse of the damped symmetric 3x3 system
        c11, c12, c13 = a22 * a33 - a23 * a23, a13 * a23 - a12 * a33, a12 * a23 - a13 * a22
        c22, c23, c33 = a11 * a33 - a13 * a13, a12 * a13 - a11 * a23, a11 * a22 - a12 * a12
        det = a11 * c11 + a12 * c12 + a13 * c13
        ok = np.isfinite(det) & (np.abs(det) > 0)
        det = np.where(ok, det, 1.0)
        d0 = (c11 * g[0] + c12 * g[1] + c13 * g[2]) / det
        d1 = _limit_step(r2, (c12 * g[0] + c22 * g[1] + c23 * g[2]) / det)
        d2 = (c13 * g[0] + c23 * g[1] + c33 * g[2]) / det
        new = cost(y, s0 + d0, r2 + d1, c + d2)
        better = ok & (new <= p["cost"])
        p["s0"] = np.where(better, s0 + d0, s0)
        p["r2star"] = np.where(better, r2 + d1, r2)
        p["offset"] = np.where(better, c + d2, c)
        p["cost"] = np.where(better, new, p["cost"])
        p["lam"] = np.where(better, lam * 0.3, lam * 10.0)
        state = np.where(better & _converged(d1, r2, rtol=1e-6, atol=1e-4), CONVERGED, MOVING)
        state[(p["lam"] > 1e12) | ~np.isfinite(p["r2star"]) | (np.abs(p["r2star"]) > R2STAR_GIVE_UP)] = FAILED
        return state

    params = {"s0": s0, "r2star": r2, "offset": c, "lam": np.full(n, 1e-3), "cost": cost(y, s0, r2, c)}
    out = {"s0": s0.copy(), "r2star": r2.copy(), "offset": c.copy(), "converged": np.zeros(n, dtype=bool)}
    out = _iterate(step, {"y": y}, params, n, max_iter, out)
    return BlockFit(out["r2star"], out["s0"], out["converged"], np.full(n, y.shape[0]),
                    offset=out["offset"])


# ---------------------------------------------------------------------------------------------
# Noise-floor-aware estimators

def _squared_init(y2, t, floor2, sigma2):
    """Start for the squared-signal fit from two echoes' noise-corrected power.

    Echo 1 against the last echo whose power is still clearly above the noise (checked at
    echoes 2, n/4, n/2 and n): a long baseline where the decay allows it, echo 2 otherwise.
    One-dimensional arrays only, so it costs little; Gauss-Newton does the rest.
    """
    a0 = np.maximum(y2[0] - floor2, sigma2)
    n = y2.shape[0]
    later = sorted({1, max(1, n // 4), max(1, n // 2), n - 1})
    k_best = np.ones(y2.shape[1], dtype=np.intp)
    for k in later[1:]:
        k_best = np.where(y2[k] - floor2 > 16.0 * sigma2, k, k_best)
    ak = np.take_along_axis(y2, k_best[None, :], axis=0)[0] - floor2
    ak = np.maximum(ak, 1e-2 * sigma2)
    r2 = np.log(a0 / ak) / (2.0 * (t[k_best] - t[0]))
    return r2, np.sqrt(a0) * np.exp(r2 * t[0])


def noise_corrected(y, t, sigma, coils=1.0, max_iter=30, **_):
    """Squared-signal fit with the noise floor (Feng et al. 2013, MRM 70:1765).

    E[S^2] = S0^2 exp(-2 R2* t) + 2 L sigma^2 holds exactly for root-sum-of-squares magnitude,
    so fitting S^2 to it has no noise-floor bias. Iteratively reweighted Gauss-Newton with the
    exact variance Var(S^2) = 4 sigma^2 (A^2 + L sigma^2), A = S0 exp(-R2* t). The returned
    uncertainty is the Fisher-information SD of R2* of this estimating equation.

    Parameters
    ----------
    y : ndarray, (n_echoes, n_voxels)
        Magnitude signal.
    t : ndarray, (n_echoes,)
        Echo times in s.
    sigma : float
        Noise SD per real channel (signal units).
    coils : float
        Effective coil count L.
    max_iter : int
        Most Gauss-Newton iterations.
    **_
        Other estimator options, ignored.

    Returns
    -------
    BlockFit
        With ``uncertainty`` (SD of R2*, 1/s).
    """
    with np.errstate(all="ignore"):
        return _noise_corrected(y, t, sigma, coils, max_iter)


def _noise_corrected(y, t, sigma, coils, max_iter):
    n = y.shape[1]
    sigma2 = sigma * sigma
    floor2 = 2.0 * coils * sigma2
    noise2 = coils * sigma2
    y2 = np.where(np.isfinite(y), y * y, 0.0)
    r2, s0 = _squared_init(y2, t, floor2, sigma2)
    r2 = np.clip(np.nan_to_num(r2, nan=30.0), -50.0, None)
    s0 = np.maximum(np.nan_to_num(s0, nan=sigma), 1e-3 * sigma)
    y2 -= floor2  # the noise-free power the model must match
    out = {"r2star": r2.copy(), "s0": s0.copy(), "var_r2": np.full(n, np.nan),
           "converged": np.zeros(n, dtype=bool)}
    minus_2t = -2.0 * t
    tt = t * t

    def step(a, p):
        r2, s0 = p["r2star"], p["s0"]
        e2 = np.multiply.outer(minus_2t, r2)
        np.exp(e2, out=e2)
        s02 = s0 * s0
        a2 = e2 * s02
        res = a["y2"] - a2
        a2 += noise2
        we2 = np.divide(e2, a2, out=a2)  # w * e2 with w = 1 / (A^2 + L sigma^2)
        res *= we2
        we2 *= e2
        q0, q1, q2 = we2.sum(0), t @ we2, tt @ we2
        p0, p1 = res.sum(0), t @ res
        # Jacobian of A^2: d/dS0 = 2 S0 e2, d/dR2* = -2 t S0^2 e2
        h11 = 4.0 * s02 * q0
        h12 = -4.0 * s0 * s02 * q1
        h22 = 4.0 * s02 * s02 * q2
        d_s0, d_r2, ok = _solve2(h11, h12, h22, 2.0 * s0 * p0, -2.0 * s02 * p1)
        d_s0, d_r2 = _damp(p, d_s0, _limit_step(r2, d_r2))
        p["s0"] = np.maximum(s0 + d_s0, 0.5 * s0)
        p["r2star"] = r2 + d_r2
        # Fisher information of (S0, R2*) is H / (4 sigma^2): Var(R2*) = 4 sigma^2 h11 / det
        p["var_r2"] = 4.0 * sigma2 * h11 / (h11 * h22 - h12 * h12)
        return _state(d_r2, r2, p["r2star"], ok)

    out = _iterate(step, {"y2": y2},
                   {"r2star": r2, "s0": s0, "var_r2": out["var_r2"], **_damping_state(n)},
                   n, max_iter, out)
    sd = np.sqrt(out["var_r2"])
    return BlockFit(out["r2star"], out["s0"], out["converged"], (y > 0).sum(0), uncertainty=sd)


def _nc_chi_loglik(y, a, sigma2, coils):
    """Noncentral-chi log-likelihood per voxel, up to terms that do not depend on A."""
    from scipy import special

    a = np.maximum(a, 1e-6 * np.sqrt(sigma2))
    z = y * a / sigma2
    order = coils - 1.0
    log_i = np.log(special.ive(order, z)) + z
    return (-(a * a) / (2 * sigma2) - order * np.log(a) + log_i).sum(0)


def maximum_likelihood(y, t, sigma, coils=1.0, max_iter=60, start: BlockFit | None = None, **_):
    """Noncentral-chi maximum likelihood of (S0, R2*) with known sigma and L.

    Fisher scoring: the score for A is (M r_L(M A / sigma^2) - A) / sigma^2 with the Bessel
    ratio r_L = I_L / I_(L-1); the information per echo is approximated by A^2/(A^2 + L sigma^2)
    and each step is halved until the likelihood does not fall.

    Parameters
    ----------
    y : ndarray, (n_echoes, n_voxels)
        Magnitude signal (non-finite and negative values are taken as 0).
    t : ndarray, (n_echoes,)
        Echo times in s.
    sigma : float
        Noise SD per real channel (signal units).
    coils : float
        Effective coil count L (need not be an integer).
    max_iter : int
        Most scoring iterations.
    start : BlockFit, optional
        Starting estimate; by default :func:`noise_corrected`.
    **_
        Other estimator options, ignored.

    Returns
    -------
    BlockFit
        With ``uncertainty`` from :func:`squared_signal_sd` (1/s).
    """
    n = y.shape[1]
    sigma2 = sigma * sigma
    y = np.where(np.isfinite(y), np.maximum(y, 0.0), 0.0)
    if start is None:
        start = noise_corrected(y, t, sigma, coils)
    r2 = np.nan_to_num(start.r2star, nan=30.0)
    s0 = np.maximum(np.nan_to_num(start.s0, nan=sigma), 1e-3 * sigma)
    order = int(round(coils)) if abs(coils - round(coils)) < 1e-9 else None
    converged = np.zeros(n, dtype=bool)
    active = np.arange(n)
    ll = _nc_chi_loglik(y, s0 * np.exp(-np.outer(t, r2)), sigma2, coils)
    for _ in range(max_iter):
        ya, r2a, s0a, lla = y[:, active], r2[active], s0[active], ll[active]
        e = np.exp(-np.outer(t, r2a))
        a = s0a * e
        z = ya * a / sigma2
        ratio = bessel_ratio(order, z) if order is not None else _bessel_ratio_real(coils, z)
        rho = ya * ratio - a
        phi = a * a / (a * a + coils * sigma2) + 1e-3
        pe = phi * e
        pee = pe * e
        h11 = pee.sum(0)
        h12 = -s0a * (t @ pee)
        h22 = s0a * s0a * ((t * t) @ pee)
        er = e * rho
        g1 = er.sum(0)
        g2 = -s0a * (t @ er)
        d_s0, d_r2, ok = _solve2(h11, h12, h22, g1, g2)
        d_r2 = _limit_step(r2a, d_r2)
        scale = np.ones_like(r2a)
        accepted = np.zeros(active.size, dtype=bool)
        new_ll = lla.copy()
        for _halving in range(8):
            s0_try = np.maximum(s0a + scale * d_s0, 1e-6 * sigma)
            r2_try = r2a + scale * d_r2
            ll_try = _nc_chi_loglik(ya, s0_try * np.exp(-np.outer(t, r2_try)), sigma2, coils)
            good = (ll_try >= lla - 1e-12) & ~accepted
            s0a = np.where(good, s0_try, s0a)
            r2a = np.where(good, r2_try, r2a)
            new_ll = np.where(good, ll_try, new_ll)
            accepted |= good
            if accepted.all():
                break
            scale = np.where(accepted, scale, scale * 0.5)
        done = (~accepted) | _converged(scale * d_r2, r2a, rtol=1e-7, atol=1e-4) | ~ok
        r2[active], s0[active], ll[active] = r2a, s0a, new_ll
        converged[active[done & ok]] = True
        active = active[~done]
        if active.size == 0:
            break
    return BlockFit(r2, s0, converged, (y > 0).sum(0),
                    uncertainty=squared_signal_sd(t, r2, s0, sigma, coils))


def squared_signal_sd(t, r2, s0, sigma, coils):
    """SD of R2* (1/s) from the Fisher information of the squared signal.

    Each echo carries information A^2 / (A^2 + L sigma^2) / sigma^2 about its amplitude A
    (exact for the S^2 statistic, a lower bound for the full noncentral-chi likelihood).

    Parameters
    ----------
    t : ndarray, (n_echoes,)
        Echo times in s.
    r2 : ndarray, (n_voxels,)
        R2* in 1/s.
    s0 : ndarray, (n_voxels,)
        S0 in signal units.
    sigma : float
        Noise SD per real channel (signal units).
    coils : float
        Effective coil count L.

    Returns
    -------
    ndarray, (n_voxels,)
        SD of R2* in 1/s.
    """
    e = np.exp(-np.outer(t, np.nan_to_num(r2)))
    a2 = (s0 * e) ** 2
    phi = a2 / (a2 + coils * sigma * sigma) * e * e
    f11 = phi.sum(0)
    f12 = -s0 * (t @ phi)
    f22 = s0 * s0 * ((t * t) @ phi)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.sqrt(sigma * sigma * f11 / (f11 * f22 - f12 * f12))


def _bessel_ratio_real(coils, z):
    """I_L(z)/I_(L-1)(z) for a real effective coil count; z/(2L) where both underflow."""
    from scipy import special

    num = special.ive(coils, z)
    den = special.ive(coils - 1.0, z)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = num / den
    return np.where(den > 1e-280, ratio, z / (2.0 * coils))


def informative_echoes(t, r2, s0, sigma, coils):
    """Effective number of echoes carrying signal: sum of A^2 / (A^2 + L sigma^2).

    Parameters
    ----------
    t : ndarray, (n_echoes,)
        Echo times in s.
    r2 : ndarray, (n_voxels,)
        R2* in 1/s (NaN taken as 0).
    s0 : ndarray, (n_voxels,)
        S0 in signal units (NaN taken as 0).
    sigma : float
        Noise SD per real channel (signal units).
    coils : float
        Effective coil count L.

    Returns
    -------
    ndarray, (n_voxels,)
        Effective echo count, 0 to n_echoes.
    """
    a2 = (np.nan_to_num(s0) * np.exp(-np.outer(t, np.nan_to_num(r2)))) ** 2
    return (a2 / (a2 + coils * sigma * sigma)).sum(0)


def noise_corrected_ml(y, t, sigma, coils=1.0, min_informative=3.0, **_):
    """The default: the squared-signal fit, polished by maximum likelihood where it matters.

    Where fewer than `min_informative` echoes stand clear of the noise floor (very short T2*
    or low SNR), the squared signal throws away information that the full noncentral-chi
    likelihood keeps, so those voxels (few, in clinical data) continue with `maximum_likelihood`
    from the squared-signal estimate. Everywhere else the two agree to a small fraction of the SD.

    Parameters
    ----------
    y : ndarray, (n_echoes, n_voxels)
        Magnitude signal.
    t : ndarray, (n_echoes,)
        Echo times in s.
    sigma : float
        Noise SD per real channel (signal units).
    coils : float
        Effective coil count L.
    min_informative : float
        Voxels with fewer informative echoes (:func:`informative_echoes`) are polished.
    **_
        Other estimator options, ignored.

    Returns
    -------
    BlockFit
        With ``uncertainty`` (SD of R2*, 1/s).
    """
    bf = noise_corrected(y, t, sigma, coils)
    few = needs_ml_polish(t, bf, sigma, coils, min_informative)
    if few.size:
        start = BlockFit(bf.r2star[few], bf.s0[few], bf.converged[few], bf.echoes_used[few])
        polished = maximum_likelihood(y[:, few], t, sigma, coils, start=start, max_iter=30)
        bf.r2star[few] = polished.r2star
        bf.s0[few] = polished.s0
        bf.converged[few] = polished.converged
        bf.uncertainty[few] = polished.uncertainty
    return bf


def needs_ml_polish(t, bf, sigma, coils, min_informative=3.0):
    """Indices of voxels whose squared-signal fit has fewer than `min_informative` echoes clear of
    the noise floor (see noise_corrected_ml).

    Parameters
    ----------
    t : ndarray, (n_echoes,)
        Echo times in s.
    bf : BlockFit
        The squared-signal fit of the block.
    sigma : float
        Noise SD per real channel (signal units).
    coils : float
        Effective coil count L.
    min_informative : float
        Threshold on :func:`informative_echoes`.

    Returns
    -------
    ndarray of int
        Column indices into the block, ascending; voxels with a non-finite R2* are not included.
    """
    # Exact cheap screen: echoes decay, so if echo k+1 has A^2/(A^2 + L sigma^2) >= q with
    # q (k+1) = min_informative, the first k+1 echoes alone reach the threshold.
    k = int(np.ceil(min_informative))
    candidates = np.isfinite(bf.r2star)
    if k < t.size:
        q = min_informative / (k + 1)
        a_k = np.nan_to_num(bf.s0) * np.exp(-np.nan_to_num(bf.r2star) * t[k])
        candidates &= a_k * a_k < q / (1.0 - q) * coils * sigma * sigma
    few = np.flatnonzero(candidates)
    if few.size:
        few = few[informative_echoes(t, bf.r2star[few], bf.s0[few], sigma, coils) < min_informative]
    return few
