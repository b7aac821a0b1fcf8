"""Magnitude fat-water fit of a chunk of voxels (MAGO/MAGORINO style)::

    |S(t)| = |W + F c(t)| exp(-R2* t),   c(t) = sum_p a_p exp(i 2 pi f_p t)   (fatmodel.py)

with water W >= 0, fat F >= 0 and one R2* (Triay Bagur et al. 2019, Magn Reson Med, PMID
30874334; Bray et al. 2023, Magn Reson Med, doi 10.1002/mrm.29493). The field map and the
initial phase cancel in the magnitude. The magnitude cannot tell a water-dominant from a
fat-dominant voxel by itself, so every voxel is fitted twice, from a water-dominant (F = 0) and
a fat-dominant (W = 0) start. The better likelihood wins, except that the fat-dominant solution
has to beat the water-dominant one by a likelihood ratio of exp(FAT_DOMINANT_EVIDENCE) = 20: at
high R2* or low SNR the two often fit about equally well, and picking the better one by a hair
sends about half of the voxels of a 20 % PDFF liver at R2* 650 1/s (1.5 T) to the ~85 % mirror
solution.

Likelihood: Gaussian (least squares) when the noise is unknown; noncentral chi (Rician for one
coil) when the noise SD per real channel and the (effective) coil count are known. Then least
squares runs first; voxels whose model comes within 10 sigma of the noise floor are refined by
the noncentral-chi likelihood (far above it the two coincide: R2* bias < ~0.5 %). Unless one
start already lost decisively, the choice is made on the noncentral-chi likelihood of both
least-squares optima, and only the chosen one is refined (starting from those likelihood terms).

Batched Levenberg-Marquardt on blocks [echo, voxel] of float32 (parameters, normal equations
and their closed-form 3x3 solves in float64); no per-voxel Python loops. Converged: a relative
step of at most 1e-3 (``_XTOL``), taken or, with little damping, next to be taken (that trial
point is then not evaluated).
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..estimators import weighted_loglinear
from ..fatmodel import fat_phasor
from .checks import (FAT_DOMINANT_EVIDENCE, R2STAR_MAX, _check_echo_times_s,
                     _require_field_strength)
from .likelihood import _Gaussian, _NoncentralChi

_BLOCK = 32768         # voxels fitted together (memory: ~30 arrays of 12 x 2 x _BLOCK float32)

_LM_COLUMNS = 16384    # columns per Levenberg-Marquardt pass: fewer numpy calls per voxel than
                       # 8192 (threads wait less for the GIL), still mostly in cache
_ONE_PASS = 16384      # at most this many columns in one pass without parking: the parked
                       # voxels get a fresh iteration budget in the common pass, so this bound
                       # (not the pass size) decides which voxels get it
_PARK = 0.05           # a pass stops when fewer than this share of its columns is unfinished;
                       # the slow voxels of all passes then finish together (one Python tail)
_TINY = 1e-12
_LAMBDA0 = 1e-3
_XTOL = 1e-3           # relative step size at convergence: a tenth of the R2* SD or less at
                       # SNR <= 100 (tighter moved R2* by < 0.01 SD and no start choice)
_FTOL = 1e-8           # cost change at convergence, relative to the data energy
_DECISIVE = 12.0       # nats from the decision threshold beyond which the loser is not refined
_MAX_ITER_NCCHI = 30
_FIRST_ITER = 10       # least-squares steps after which a decisively losing start stops
_GAUSSIAN_ENOUGH = 10.0  # all model amplitudes >= this many sigma: least squares is the ML fit
_COMPACT = 0.25        # drop finished voxels from the block when this fraction is done
_SETTLED_LAMBDA = 1e-2  # damping below which a step within _XTOL means converged (Gauss-Newton)


# Magnitude fit

def _solve3(h, g):
    """Solve symmetric 3x3 systems. h: (h11, h12, h13, h22, h23, h33), g: (g1, g2, g3) [n].

    Returns (x1, x2, x3, inverse_33, ok).
    """
    a, b, c, d, e, f = h
    c11 = d * f - e * e
    c12 = c * e - b * f
    c13 = b * e - c * d
    c22 = a * f - c * c
    c23 = b * c - a * e
    c33 = a * d - b * b
    det = a * c11 + b * c12 + c * c13
    ok = np.isfinite(det) & (det > 1e-14 * np.abs(a * d * f) + 1e-300)
    inv = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)
    g1, g2, g3 = g
    x1 = (c11 * g1 + c12 * g2 + c13 * g3) * inv
    x2 = (c12 * g1 + c22 * g2 + c23 * g3) * inv
    x3 = (c13 * g1 + c23 * g2 + c33 * g3) * inv
    return x1, x2, x3, c33 * inv, ok


def _uniform_spacing(t_ms):
    """The echo spacing (ms) when the echoes [E] are uniformly spaced and at least 4 (then
    powers of one exponential replace an exponential per echo), else None."""
    dt = np.diff(np.asarray(t_ms, dtype=np.float64))
    if dt.size >= 3 and np.allclose(dt, dt[0], rtol=1e-9):
        return float(dt[0])
    return None


class _MagnitudeModel:
    """|W + F c(t)| exp(-R t) on normalised data; t in ms, R in 1/ms.

    ``dtype`` is that of the [echo, voxel] arrays; parameters come in as float64 [n] and are
    cast. float32 halves the memory traffic of the Levenberg-Marquardt iterations (their
    convergence tolerances, 1e-4 relative step, are far above its 6e-8 resolution on data
    normalised to a maximum of 1).
    """

    def __init__(self, t_ms, c, dtype=np.float64):
        self.dtype = np.dtype(dtype)
        self.t = t_ms[:, None].astype(dtype)
        self.minus_t = -self.t
        self.cr = c.real[:, None].astype(dtype)
        self.ci2 = (c.imag ** 2)[:, None].astype(dtype)
        self.t0 = float(t_ms[0])
        # Uniform echo spacing: exp(-R t_k) by repeated multiplication (one exp per row
        # instead of one per echo; relative error ~ k * eps).
        self.spacing = _uniform_spacing(t_ms)

    def decay(self, r):
        """exp(-R t) [E, n]; r already of ``dtype``."""
        if self.spacing is None:
            return np.exp(self.minus_t * r)
        e = np.empty((self.t.shape[0], r.size), dtype=self.dtype)
        np.multiply(r, -self.t0, out=e[0])
        np.exp(e[0], out=e[0])
        step = np.exp(r * -self.spacing)
        for k in range(1, e.shape[0]):
            np.multiply(e[k - 1], step, out=e[k])
        return e

    def evaluate(self, w, f, r):
        dtype = self.dtype
        w, f, r = (np.asarray(x, dtype=dtype) for x in (w, f, r))
        e = self.decay(r)
        a = self.cr * f
        a += w
        q = self.ci2 * (f * f)
        q += a * a
        np.sqrt(q, out=q)
        return e, a, q, q * e

    def jacobian(self, w, f, e, a, q, amp):
        f = np.asarray(f, dtype=self.dtype)
        g = e / np.maximum(q, _TINY)
        jw = a * g
        jf = a * self.cr
        jf += self.ci2 * f
        jf *= g
        jr = self.minus_t * amp
        return jw, jf, jr


def _normal_rows(jw, jf, jr, rho=None, weights=None):
    """J^T diag(weights) J as rows (h11, h12, h13, h22, h23, h33) and, with rho, J^T rho as
    rows (g1, g2, g3) of one float64 array [6 or 9, n]."""
    if weights is None:
        pw, pf, pr = jw, jf, jr
    else:
        pw, pf, pr = jw * weights, jf * weights, jr * weights
    pairs = [(pw, jw), (pw, jf), (pw, jr), (pf, jf), (pf, jr), (pr, jr)]
    if rho is not None:
        pairs += [(jw, rho), (jf, rho), (jr, rho)]
    out = np.empty((len(pairs), jw.shape[1]), dtype=jw.dtype)
    for k, (u, v) in enumerate(pairs):
        np.einsum("ij,ij->j", u, v, out=out[k])
    # Sums over <= ~30 echoes; the 3x3 solves then run in float64.
    return out.astype(np.float64, copy=False)


def _normal_equations(jw, jf, jr, rho=None, weights=None):
    """J^T diag(weights) J as (h11, h12, h13, h22, h23, h33) and J^T rho, each [n]."""
    rows = tuple(_normal_rows(jw, jf, jr, rho, weights))
    return rows if rho is None else (rows[:6], rows[6:])


def _loglinear_start(y, t_ms):
    """S^2-weighted log-linear fit: R (1/ms) and S0, ignoring fat (a starting point only)."""
    decay_rate, intercept = weighted_loglinear(y, t_ms, y * y)
    r = np.clip(np.nan_to_num(decay_rate, nan=0.05), 0.005, R2STAR_MAX * 1e-3)
    s0 = np.exp(np.clip(np.nan_to_num(intercept, nan=0.0), -5.0, 5.0))
    return r, s0


def _lm_blocked(y, model, w, f, r, lik, max_iter, start_terms=None):
    """``_lm_magnitude`` in cache-sized passes whose slow voxels finish in one common pass."""
    n = y.shape[1]
    if n <= _ONE_PASS:
        return _lm_magnitude(y, model, w, f, r, lik, max_iter, start_terms=start_terms)
    cost = np.empty(n)
    conv = np.zeros(n, dtype=bool)
    park = int(_PARK * _LM_COLUMNS)
    for start in range(0, n, _LM_COLUMNS):
        sl = slice(start, min(start + _LM_COLUMNS, n))
        terms = None if start_terms is None else (start_terms[0][sl], start_terms[1][:, sl])
        cost[sl], conv[sl] = _lm_magnitude(y[:, sl], model, w[sl], f[sl], r[sl], lik.take(sl),
                                           max_iter, park, terms)
    rest = np.flatnonzero(~conv)
    if rest.size:
        wr, fr, rr = w[rest], f[rest], r[rest]
        cost[rest], conv[rest] = _lm_magnitude(y[:, rest], model, wr, fr, rr, lik.take(rest),
                                               max_iter)
        w[rest], f[rest], r[rest] = wr, fr, rr
    return cost, conv


def _cost_and_rows(ya, model, p, lik, terms=None):
    """Cost [n] and normal-equation rows [9, n] (float64) of the model at parameters p [3, n].

    evaluate + lik.terms + jacobian + _normal_rows in one pass that reuses its [E, n] buffers
    (fewer, larger numpy calls: they hold the GIL less). ``terms``: ``lik.terms`` at p if
    already known (cost [n], rho [E, n]).
    """
    w, f, r = p.astype(model.dtype)
    e = model.decay(r)
    a = model.cr * f
    a += w
    q = model.ci2 * (f * f)
    jw = np.multiply(a, a)
    q += jw
    q += _TINY * _TINY  # keeps e / q finite at W = F = 0 (as max(q, _TINY) did)
    np.sqrt(q, out=q)
    amp = np.multiply(q, e)
    cost, rho = lik.terms(ya, amp) if terms is None else terms
    g = np.divide(e, q, out=e)
    np.multiply(a, g, out=jw)
    jf = np.multiply(model.ci2, f, out=q)
    a *= model.cr
    jf += a
    jf *= g
    jr = np.multiply(model.minus_t, amp, out=g)
    return cost, _normal_rows(jw, jf, jr, rho, lik.fisher_weights(amp))


def _lm_magnitude(y, model, w, f, r, lik, max_iter, park=0, start_terms=None):
    """Projected Levenberg-Marquardt on a block; works on the shrinking set of active voxels.

    y [E, n] normalised magnitudes; w, f, r [n] starts (modified in place).
    park : stop early (unfinished voxels not converged) once fewer than this many are active.
    start_terms : ``lik.terms`` at the starts (cost [n], rho [E, n]) if already known.
    Returns cost [n], converged [n] bool.
    """
    n = y.shape[1]
    cost_out = np.empty(n)
    conv_out = np.zeros(n, dtype=bool)
    idx = np.arange(n)
    p = np.stack([w, f, r]).astype(np.float64)
    lam = np.full(n, _LAMBDA0)
    ya = y
    # The normal equations of the current point: a rejected trial keeps them.
    cost, rows = _cost_and_rows(ya, model, p, lik, start_terms)
    done = np.zeros(n, dtype=bool)
    r_max = R2STAR_MAX * 1e-3
    upper = np.array([np.inf, np.inf, r_max])[:, None]
    ftol = _FTOL * 0.5 * np.einsum("ij,ij->j", y, y)

    p_out = np.empty((3, n))

    def settle(*extra):
        """After marking voxels done: None when the pass stops here, else ``extra`` ([.., n]
        arrays of this iteration), without the finished voxels when enough of them were
        dropped from the block (their results written out)."""
        nonlocal idx, p, rows, ya, cost, lam, ftol, lik, done
        n_done = np.count_nonzero(done)
        if n_done == done.size or (park and done.size - n_done < park):
            return None
        if n_done <= _COMPACT * done.size:
            return extra
        finished = np.flatnonzero(done)
        p_out[:, idx[finished]] = p[:, finished]
        cost_out[idx[finished]] = cost[finished]
        conv_out[idx[finished]] = True
        keep = np.flatnonzero(~done)
        idx = idx[keep]
        p, rows, ya = (x.take(keep, axis=1) for x in (p, rows, ya))
        cost, lam, ftol = (x.take(keep) for x in (cost, lam, ftol))
        lik = lik.take(keep)
        done = np.zeros(idx.size, dtype=bool)
        return tuple(x.take(keep, axis=-1) for x in extra)

    for _ in range(max_iter):
        h11, h12, h13, h22, h23, h33 = rows[:6]
        g = rows[6:]
        # Active bounds: a parameter on its bound whose descent direction points outside is
        # frozen for this step (projected Levenberg-Marquardt).
        fix = (p <= 0.0) & (g <= 0.0)
        fix[2] |= (p[2] >= r_max) & (g[2] >= 0.0)
        damp = lam + 1.0
        if fix.any():
            free = ~fix
            h12 = h12 * (free[0] & free[1])
            h13 = h13 * (free[0] & free[2])
            h23 = h23 * (free[1] & free[2])
            h11 = np.where(fix[0], 1.0, h11)
            h22 = np.where(fix[1], 1.0, h22)
            h33 = np.where(fix[2], 1.0, h33)
            g = g * free
        dw, df, dr, _, ok = _solve3((h11 * damp, h12, h13, h22 * damp, h23, h33 * damp), g)
        p_new = np.stack([dw, df, dr])
        p_new += p
        np.clip(p_new, 0.0, upper, out=p_new)
        step = np.abs(p_new - p)
        step_small = ((step[0] + step[1] <= _XTOL * (p[0] + p[1] + 1e-6))
                      & (step[2] <= _XTOL * (p[2] + 1e-3)))
        # A voxel whose next (essentially Gauss-Newton) step is already within the tolerance
        # has converged where it is: its trial point is not evaluated (one evaluation fewer
        # per fit; the answer within one step of _XTOL of the one the trial would give).
        done |= ok & step_small & (lam < _SETTLED_LAMBDA)
        trial = settle(p_new, ok, step_small)
        if trial is None:
            break
        p_new, ok, step_small = trial
        cost_n, rows_n = _cost_and_rows(ya, model, p_new, lik)
        acc = ok & (cost_n <= cost)
        fun_small = np.abs(cost - cost_n) <= ftol
        newly = (acc & (step_small | fun_small)) | (~acc & (lam > 1e9))
        if acc.all():
            p, cost, rows = p_new, cost_n, rows_n
            lam *= 0.2
            np.maximum(lam, 1e-9, out=lam)
        else:
            p = np.where(acc, p_new, p)
            cost = np.where(acc, cost_n, cost)
            rows = np.where(acc, rows_n, rows)
            lam = np.where(acc, np.maximum(lam * 0.2, 1e-9), lam * 10.0)
        done |= newly
        if settle() is None:
            break
    p_out[:, idx] = p
    cost_out[idx] = cost
    conv_out[idx] = done
    w[:], f[:], r[:] = p_out
    return cost_out, conv_out


_OUTPUT_KEYS = ("r2star", "s0", "water", "fat", "pdff", "start", "converged", "rss",
                "uncertainty")


AMBIGUOUS_PDFF_POINTS = 5.0
"""Two magnitude solutions whose PDFF differ by more than this (percentage points) are
different answers; 5 % is the PDFF threshold of hepatic steatosis (Tang A et al., Radiology
2013;267:422-431), so a smaller difference does not change a reading."""


def ambiguous_solutions(llr, pdff, alt_pdff, evidence=FAT_DOMINANT_EVIDENCE):
    """1.0 where neither solution is favoured by a likelihood ratio above exp(evidence) and their
    PDFF differ by more than ``AMBIGUOUS_PDFF_POINTS``; 0.0 elsewhere; NaN where not fitted.

    Parameters
    ----------
    llr : ndarray, (n_voxels,)
        Log-likelihood ratio of the two solutions, nats.
    pdff : ndarray, (n_voxels,)
        PDFF of the reported solution, %; NaN where not fitted.
    alt_pdff : ndarray, (n_voxels,)
        PDFF of the other solution, %.
    evidence : float
        Log-likelihood ratio (nats) that decides between them.

    Returns
    -------
    ndarray of float64, (n_voxels,)
    """
    with np.errstate(invalid="ignore"):
        flag = ((np.abs(llr) < evidence)
                & (np.abs(pdff - alt_pdff) > AMBIGUOUS_PDFF_POINTS)).astype(np.float64)
    flag[~np.isfinite(pdff)] = np.nan
    return flag


def _empty_result(n, keep_both=False):
    out = {k: np.full(n, np.nan) for k in _OUTPUT_KEYS}
    out["fat_water_ambiguous"] = np.full(n, np.nan)
    out["start"] = np.zeros(n)
    out["converged"] = np.zeros(n, dtype=bool)
    if keep_both:
        for k in _OUTPUT_KEYS:
            out["alt_" + k] = out[k].copy()
        out["start_evidence"] = np.full(n, np.nan)
    return out


def _summarise(yn, model, w, f, r, conv, sigma_n, coils):
    """Output fields of one solution per voxel (normalised units in, normalised units out)."""
    n_echo, m = yn.shape
    e, a, q, amp = model.evaluate(w, f, r)
    res = yn.astype(model.dtype, copy=False) - amp
    rss = np.einsum("ij,ij->j", res, res).astype(np.float64)
    jw, jf, jr = model.jacobian(w, f, e, a, q, amp)
    if sigma_n is None:
        h = _normal_equations(jw, jf, jr)
        s2n = rss / (n_echo - 3) if n_echo > 3 else np.full(m, np.nan)
    else:
        s2n = sigma_n * sigma_n
        h = _normal_equations(jw, jf, jr,
                              weights=_NoncentralChi(s2n[None, :], coils,
                                                     model.dtype).fisher_weights(amp))
    *_, inv33, ok = _solve3(h, (np.zeros(m),) * 3)
    with np.errstate(invalid="ignore"):
        sd = 1e3 * np.sqrt(s2n * inv33)
    sd[~ok] = np.nan
    total = w + f
    with np.errstate(invalid="ignore", divide="ignore"):
        pdff = np.where(total > 0, 100.0 * f / total, np.nan)
    return {"r2star": r * 1e3, "water": w, "fat": f, "s0": total, "pdff": pdff,
            "converged": conv, "rss": rss, "uncertainty": sd}


def _log_likelihood_ratio(cost_water, cost_fat, sn, n_echoes):
    """Log-likelihood ratio (nats) of the fat- over the water-dominant solution, per voxel.

    Known noise (sn, normalised units): costs are sigma^2 times the negative log-likelihood.
    Unknown noise: Gaussian profile likelihood, (E/2) log(RSS_water / RSS_fat).
    """
    if sn is not None:
        return (cost_water - cost_fat) / (sn * sn)
    floor = 1e-30
    return 0.5 * n_echoes * (np.log(np.maximum(cost_water, floor))
                             - np.log(np.maximum(cost_fat, floor)))


def _fit_magnitude_block(y, t_ms, model, sigma, coils, max_iter, out, sl, keep_both,
                         fat_evidence):
    n = y.shape[1]
    valid = np.isfinite(y).all(0) & (y.max(0) > 0)
    if not valid.any():
        return
    yv = np.maximum(y[:, valid], 0.0)
    scale = yv.max(0)
    yn = yv / scale
    r0, s0 = _loglinear_start(yn, t_ms)
    m = yn.shape[1]
    yf = yn.astype(model.dtype)  # the iterations run in float32 (see _MagnitudeModel)
    y2_lm = np.concatenate([yf, yf], axis=1)
    w = np.concatenate([s0, np.zeros(m)])
    f = np.concatenate([np.zeros(m), s0])
    r = np.concatenate([r0, r0])
    # Least squares first (cheap). With a known noise level the noncentral-chi likelihood then
    # refines the solutions; the losing start is refined too unless least squares already
    # rejected it decisively (log-likelihood ratio above _DECISIVE).
    # The fat-dominant solution is reported only when its log-likelihood ratio over the
    # water-dominant one exceeds fat_evidence (nats); see fit_fatwater_chunk.
    sn = None
    if sigma is not None:
        sn = np.broadcast_to(np.asarray(sigma, dtype=np.float64), (n,))[valid] / scale
    first_iter = min(max_iter, _FIRST_ITER) if not keep_both else max_iter
    cost, conv = _lm_blocked(y2_lm, model, w, f, r, _Gaussian(), first_iter)
    llr = _log_likelihood_ratio(cost[:m], cost[m:], sn, yn.shape[0])
    if first_iter < max_iter:
        # Where one start already loses decisively its fit is not finished (its cost only
        # bounds its likelihood from above); everything else runs to convergence.
        fat_ahead = llr > fat_evidence
        decisive = np.abs(llr - fat_evidence) > _DECISIVE
        go = np.concatenate([~decisive | ~fat_ahead, ~decisive | fat_ahead]) & ~conv
        go = np.flatnonzero(go)
        if go.size:
            wg, fg, rg = w[go], f[go], r[go]
            cost[go], conv[go] = _lm_blocked(y2_lm[:, go], model, wg, fg, rg, _Gaussian(),
                                             max_iter - first_iter)
            w[go], f[go], r[go] = wg, fg, rg
        llr = _log_likelihood_ratio(cost[:m], cost[m:], sn, yn.shape[0])
    if sn is None and yn.shape[0] <= 3:
        # 3 echoes, 3 unknowns, noise unknown: both fits are exact up to rounding, whose
        # ratio is no evidence; the water-dominant solution is reported (and flagged).
        llr = np.zeros(m)
    fat_wins = llr > fat_evidence
    evidence = cost[:m] - cost[m:]
    if sn is not None:
        # Far above the noise floor the noncentral chi is Gaussian with mean A + sigma^2/(2A):
        # the R2* bias of least squares is below ~0.5 % there (amplitudes >= 10 sigma), so
        # only voxels with a model amplitude nearer the floor are refined.
        amp_ls = model.evaluate(w, f, r)[3]  # the least-squares optima's model magnitudes
        amp_min = amp_ls.min(0)
        floor = np.minimum(amp_min[:m], amp_min[m:]) < _GAUSSIAN_ENOUGH * sn
        full_iter = min(max_iter, _MAX_ITER_NCCHI)

        def refine(sel, iterations, start_terms=None):
            ws, fs, rs = w[sel], f[sel], r[sel]
            cost_s, conv_s = _lm_blocked(y2_lm[:, sel], model, ws, fs, rs,
                                         _NoncentralChi((sn[sel % m] ** 2)[None, :], coils,
                                                        model.dtype),
                                         iterations, start_terms)
            w[sel], f[sel], r[sel], cost[sel], conv[sel] = ws, fs, rs, cost_s, conv_s

        def decide(sel):
            evidence[sel] = cost[sel] - cost[m + sel]
            fat_wins[sel] = (evidence[sel] / sn[sel] ** 2) > fat_evidence

        at_floor = np.flatnonzero(floor)
        near = np.abs(llr[at_floor] - fat_evidence) <= _DECISIVE  # of at_floor: not decisive
        undecided = at_floor[near]
        if keep_both:
            # Both solutions are returned: refine both, decide on the refined likelihoods.
            refine(at_floor, full_iter)
            refine(at_floor + m, full_iter)
            decide(undecided)
        else:
            # Decide on the noncentral-chi likelihood of both least-squares optima (the same
            # footing for both), then refine only the chosen one, from those likelihood terms.
            both = np.concatenate([at_floor, at_floor + m])
            amp_ = amp_ls.take(both, axis=1)
            cost_both, rho_both = _NoncentralChi((sn[both % m] ** 2)[None, :], coils,
                                                 model.dtype).terms(y2_lm[:, both], amp_)
            open_ = np.concatenate([near, near])
            cost[both[open_]] = cost_both[open_]
            decide(undecided)
            chosen = np.arange(at_floor.size) + at_floor.size * fat_wins[at_floor]
            refine(both[chosen], full_iter, (cost_both[chosen], rho_both[:, chosen]))
    idx = np.arange(sl.start, sl.stop)[valid]
    if sn is not None:
        llr = np.where(np.isnan(evidence), llr, evidence / (sn * sn))
    elif yn.shape[0] <= 3:
        llr = np.zeros(m)  # 3 echoes, 3 unknowns: both solutions fit exactly
    with np.errstate(invalid="ignore", divide="ignore"):
        pdff_both = 100.0 * f / (w + f)
    pick_w, pick_f = np.arange(m), np.arange(m) + m
    out["fat_water_ambiguous"][idx] = ambiguous_solutions(
        llr, pdff_both[np.where(fat_wins, pick_f, pick_w)],
        pdff_both[np.where(fat_wins, pick_w, pick_f)])
    choices = [("", np.arange(m) + m * fat_wins, fat_wins)]
    if keep_both:
        choices.append(("alt_", np.arange(m) + m * ~fat_wins, ~fat_wins))
        out["start_evidence"][idx] = evidence * scale * scale
    for prefix, pick, start in choices:
        res = _summarise(yf, model, w[pick], f[pick], r[pick], conv[pick], sn, coils)
        for key in ("water", "fat", "s0"):
            res[key] = res[key] * scale
        res["rss"] = res["rss"] * scale * scale
        res["start"] = start.astype(np.float64)
        for key, value in res.items():
            out[prefix + key][idx] = value


def fit_fatwater_chunk(y, te_s, *, field_strength_t, sigma=None, coils=1,
                       precession_clockwise=True, spectrum=None, max_iter=50, keep_both=False,
                       fat_evidence=FAT_DOMINANT_EVIDENCE):
    """Fit water, fat and R2* to magnitude echoes of a chunk of voxels.

    Parameters
    ----------
    y : float64 array [n_echoes, n_voxels]
        Magnitude signal.
    te_s : array [n_echoes]
        Echo times in seconds.
    field_strength_t : float
        Main field, tesla (required).
    sigma : float or array [n_voxels], optional
        Noise SD per real channel. None: Gaussian likelihood (least squares), noise for the
        uncertainty estimated from the residuals. Given: noncentral-chi likelihood.
    coils : float
        (Effective) coil count L of the noncentral chi; 1 = Rician.
    precession_clockwise : bool
        Accepted for a common signature with the complex fit and ignored: the magnitude does
        not depend on the precession convention.
    spectrum : str or FatSpectrum, optional
        Fat spectrum; default six-peak (fatmodel.SIX_PEAK_LIVER).
    max_iter : int
        Most Levenberg-Marquardt iterations per start.
    keep_both : bool
        Also return the losing start's solution under ``alt_<key>`` and ``start_evidence``
        (cost of the water-dominant minus the fat-dominant solution, signal units^2, i.e.
        sigma^2 times the log-likelihood ratio in favour of the fat-dominant one), for
        ``choose_starts_by_neighbourhood``.
    fat_evidence : float
        Log-likelihood ratio (nats) by which the fat-dominant solution must beat the
        water-dominant one to be reported (default ``FAT_DOMINANT_EVIDENCE`` = 3; 0 = plain
        maximum likelihood). With unknown noise the Gaussian profile likelihood ratio
        (E/2) log(RSS_water / RSS_fat) is used.

    Returns
    -------
    dict of float64 ndarray (n_voxels,)
        ``r2star`` (1/s), ``s0`` (W + F), ``water``, ``fat`` (signal units), ``pdff``
        (percent), ``start`` (0 water-dominant won, 1 fat-dominant won), ``converged``
        (bool), ``rss`` (residual sum of squares of the magnitude, signal units^2),
        ``uncertainty`` (SD of R2*, 1/s, from the Fisher information: Gaussian, or its
        noncentral-chi approximation A^2/(A^2 + L sigma^2) per echo when sigma is given).
        Voxels with non-finite or all-zero signal get NaN and ``converged`` False.

    Raises
    ------
    InputError
        ``y`` not 2-D, a field strength missing or implausible, a noise SD not positive and
        finite, fewer than 1 coil, or ``fat_evidence`` not a finite value >= 0.
    EchoTimeError
        Echo times of the wrong count, not increasing, or fewer than 3.
    """
    b0 = _require_field_strength(field_strength_t)
    y = np.asarray(y, dtype=np.float64)
    if y.ndim != 2:
        raise InputError(f"The chunk must be 2-D [echo, voxel]; got shape {y.shape}.")
    t_s = _check_echo_times_s(te_s, y.shape[0])
    if sigma is not None:
        s = np.asarray(sigma, dtype=np.float64)
        if not np.all(np.isfinite(s)) or np.any(s <= 0):
            raise InputError("The noise SD must be positive and finite; pass sigma=None to fit "
                             "with a Gaussian likelihood instead.")
    coils = 1.0 if coils is None else float(coils)
    if not coils >= 1.0:
        raise InputError(f"Coil count {coils} must be >= 1 (use 1 for Rician noise).")
    fat_evidence = float(fat_evidence)
    if not np.isfinite(fat_evidence) or fat_evidence < 0:
        raise InputError(f"fat_evidence must be a finite log-likelihood ratio >= 0 (nats); got "
                         f"{fat_evidence}. Use 0 for plain maximum likelihood.")
    # |W + F c| depends on Re c and (Im c)^2 only: the precession convention (c or its
    # conjugate) cannot change the magnitude fit.
    c = fat_phasor(t_s * 1e3, b0, True, spectrum)
    model = _MagnitudeModel(t_s * 1e3, c, np.float32)
    n = y.shape[1]
    out = _empty_result(n, keep_both)
    for start in range(0, n, _BLOCK):
        sl = slice(start, min(start + _BLOCK, n))
        s_block = sigma if sigma is None or np.ndim(sigma) == 0 else np.asarray(sigma)[sl]
        _fit_magnitude_block(y[:, sl], t_s * 1e3, model, s_block, coils, max_iter, out, sl,
                             keep_both, fat_evidence)
    return out
