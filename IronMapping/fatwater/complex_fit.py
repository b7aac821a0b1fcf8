"""Complex (real/imaginary) fat-water fit of a chunk of voxels, voxel by voxel::

    S(t) = (W + F c(t)) exp(-R2* t) exp(i (2 pi psi t + phi))

with W, F real and non-negative, a common initial phase phi and field map psi (Hz).
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..fatmodel import fat_phasor
from .checks import R2STAR_MAX, _check_echo_times_s, _require_field_strength
from .likelihood import _Gaussian
from .magnitude import _COMPACT, _LAMBDA0, _XTOL, _MagnitudeModel, _lm_magnitude, _loglinear_start

_COMPLEX_BLOCK = 4096  # voxels per complex fit block

# ---------------------------------------------------------------------------------------------
# Complex fit

def _complex_model(t, c, w, f, r, psi, phi):
    """S = (W + F c) exp(-R t) exp(i (2 pi psi t + phi)); t in ms, R 1/ms, psi kHz."""
    b = np.exp(-t * r + 1j * (2 * np.pi * t * psi + phi))
    return b, (w + c * f) * b


def _complex_start(z, t, c, w, f, r):
    """Field map and phase from the data given magnitude-fit W, F, R."""
    _, m = _complex_model(t, c, w, f, r, 0.0, 0.0)
    p = z * np.conj(m)
    dt = np.diff(t[:, 0])
    lag = (p[1:] * np.conj(p[:-1]))
    # Uniformly spaced echoes give psi modulo 1/dTE; use the mean spacing.
    psi = np.angle(lag.sum(0)) / (2 * np.pi * dt.mean())
    phi = np.angle((p * np.exp(-2j * np.pi * t * psi)).sum(0))
    return psi, phi


def _lm_complex(z, t, c, p, max_iter):
    """Projected Levenberg-Marquardt for (W, F, R, psi, phi) [5, n] on complex z [E, n].

    t [E, 1] ms, c [E, 1] fat phasor. W, F >= 0 and 0 <= R <= R2STAR_MAX: a parameter on its
    bound whose descent direction points outside is frozen for the step. Finished voxels are
    dropped from the working set. Returns (p [5, n], cost [n] = 0.5 * residual energy,
    converged [n] bool).
    """
    n = z.shape[1]
    p = p.copy()
    cost_out = np.empty(n)
    conv_out = np.zeros(n, dtype=bool)
    idx = np.arange(n)
    lam = np.full(n, _LAMBDA0)
    r_max = R2STAR_MAX * 1e-3
    eye = np.eye(5)

    def evaluate(pp, zz):
        b, m = _complex_model(t, c, *pp)
        res = zz - m
        return b, m, res, 0.5 * (res.real ** 2 + res.imag ** 2).sum(0)

    za, pa = z, p
    b, m, res, cost = evaluate(pa, za)
    done = np.zeros(n, dtype=bool)
    for _ in range(max_iter):
        j = np.stack([b, c * b, -t * m, 2j * np.pi * t * m, 1j * m])  # [5, E, n]
        h = np.einsum("aen,ben->nab", j.real, j.real) + np.einsum("aen,ben->nab", j.imag, j.imag)
        g = np.einsum("aen,en->na", j.real, res.real) + np.einsum("aen,en->na", j.imag, res.imag)
        frozen = np.zeros(g.shape, dtype=bool)
        frozen[:, 0] = (pa[0] <= 0.0) & (g[:, 0] <= 0.0)
        frozen[:, 1] = (pa[1] <= 0.0) & (g[:, 1] <= 0.0)
        frozen[:, 2] = ((pa[2] <= 0.0) & (g[:, 2] <= 0.0)) | ((pa[2] >= r_max) & (g[:, 2] >= 0.0))
        free = ~frozen
        h = h * (free[:, :, None] & free[:, None, :]) + frozen[:, :, None] * eye
        g = g * free
        diag = np.einsum("naa->na", h)
        hd = h + (lam[:, None] * diag)[:, :, None] * eye
        bad = ~np.isfinite(hd).all((1, 2))
        hd[bad] = eye
        with np.errstate(invalid="ignore", over="ignore"):
            bad |= ~(np.abs(np.linalg.det(hd)) > 1e-300)
            hd[bad] = eye
            d = np.linalg.solve(hd, g[:, :, None])[:, :, 0].T
        ok = np.isfinite(d).all(0) & ~bad
        d = np.where(ok, d, 0.0)
        pn = pa + d
        pn[0] = np.maximum(pn[0], 0.0)
        pn[1] = np.maximum(pn[1], 0.0)
        pn[2] = np.clip(pn[2], 0.0, r_max)
        bn, mn, resn, costn = evaluate(pn, za)
        acc = ok & (costn <= cost)
        small = (np.abs(pn - pa) <= _XTOL * 1e-3 * (np.abs(pa) + 1e-6)).all(0)
        flat = np.abs(cost - costn) <= 1e-12 * cost + 1e-30
        done |= (acc & (small | flat)) | (~acc & (lam > 1e9))
        pa = np.where(acc, pn, pa)
        cost = np.where(acc, costn, cost)
        b = np.where(acc, bn, b)
        m = np.where(acc, mn, m)
        res = np.where(acc, resn, res)
        lam = np.where(acc, np.maximum(lam * 0.2, 1e-9), np.minimum(lam * 10.0, 1e12))
        if done.all():
            break
        if done.mean() > _COMPACT:
            p[:, idx[done]] = pa[:, done]
            cost_out[idx[done]] = cost[done]
            conv_out[idx[done]] = True
            keep = ~done
            idx = idx[keep]
            pa, b, m, res, za = pa[:, keep], b[:, keep], m[:, keep], res[:, keep], za[:, keep]
            cost, lam = cost[keep], lam[keep]
            done = np.zeros(idx.size, dtype=bool)
    p[:, idx] = pa
    cost_out[idx] = cost
    conv_out[idx] = done
    return p, cost_out, conv_out


def fit_fatwater_complex_chunk(z, te_s, *, field_strength_t, precession_clockwise=True,
                               spectrum=None, max_iter=60):
    """Complex fat-water fit (W, F, R2*, field map, phase) of a chunk of voxels.

    Parameters
    ----------
    z : complex array [n_echoes, n_voxels]
    te_s : array [n_echoes], seconds
    field_strength_t : float, tesla
    precession_clockwise : bool
        Toolbox convention; False conjugates the fat phasor (see fatmodel.fat_phasor).

    The magnitude fit (Gaussian) of |z| from both starts gives two starting points (W, F, R2*);
    field map and phase start from the phase of the data against that model. The better of the
    two complex fits (lower residual) is kept.

    Returns
    -------
    dict of [n_voxels] arrays: ``pdff`` (percent), ``r2star`` (1/s), ``water``, ``fat``, ``s0``,
    ``fieldmap_hz`` (Hz; modulo 1/dTE for uniform echoes), ``phase`` (rad), ``rss``,
    ``converged`` (bool), ``start`` (0 started from the water-dominant, 1 from the
    fat-dominant magnitude solution).
    """
    b0 = _require_field_strength(field_strength_t)
    z = np.asarray(z)
    if z.ndim != 2 or not np.iscomplexobj(z):
        raise InputError("The complex chunk must be a 2-D complex array [echo, voxel].")
    t_s = _check_echo_times_s(te_s, z.shape[0])
    c = fat_phasor(t_s * 1e3, b0, precession_clockwise, spectrum)[:, None]
    t = (t_s * 1e3)[:, None]
    n = z.shape[1]
    out = {k: np.full(n, np.nan) for k in ("pdff", "r2star", "water", "fat", "s0",
                                             "fieldmap_hz", "phase", "rss", "start")}
    out["converged"] = np.zeros(n, dtype=bool)
    for s0_ in range(0, n, _COMPLEX_BLOCK):
        sl = slice(s0_, min(s0_ + _COMPLEX_BLOCK, n))
        zb = z[:, sl].astype(np.complex128)
        valid = np.isfinite(zb).all(0) & (np.abs(zb).max(0) > 0)
        if not valid.any():
            continue
        zv = zb[:, valid]
        scale = np.abs(zv).max(0)
        zn = zv / scale
        mag = np.abs(zn)
        model = _MagnitudeModel(t[:, 0], c[:, 0])
        r0, s0 = _loglinear_start(mag, t[:, 0])
        mcount = zn.shape[1]
        starts = []
        for water_first in (True, False):
            w = s0.copy() if water_first else np.zeros(mcount)
            f = np.zeros(mcount) if water_first else s0.copy()
            r = r0.copy()
            _lm_magnitude(mag, model, w, f, r, _Gaussian(), 50)
            starts.append((w, f, r))
        z2 = np.concatenate([zn, zn], axis=1)
        w = np.concatenate([starts[0][0], starts[1][0]])
        f = np.concatenate([starts[0][1], starts[1][1]])
        r = np.concatenate([starts[0][2], starts[1][2]])
        psi, phi = _complex_start(z2, t, c, w, f, r)
        p = np.stack([w, f, r, psi, phi])
        p, cost, conv = _lm_complex(z2, t, c, p, max_iter)
        second = cost[mcount:] < cost[:mcount]
        pick = np.arange(mcount) + mcount * second
        w, f, r, psi, phi = p[:, pick]
        total = w + f
        idx = np.arange(sl.start, sl.stop)[valid]
        with np.errstate(invalid="ignore", divide="ignore"):
            out["pdff"][idx] = np.where(total > 0, 100.0 * f / total, np.nan)
        out["r2star"][idx] = r * 1e3
        out["water"][idx] = w * scale
        out["fat"][idx] = f * scale
        out["s0"][idx] = total * scale
        out["fieldmap_hz"][idx] = psi * 1e3
        out["phase"][idx] = np.angle(np.exp(1j * phi))
        out["rss"][idx] = 2.0 * cost[pick] * scale * scale
        out["converged"][idx] = conv[pick]
        out["start"][idx] = second.astype(np.float64)
    return out

