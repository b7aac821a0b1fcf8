"""Batched Levenberg-Marquardt of the complex fat-water model::

    S(t) = (W + F c(t)) exp(-R t) exp(i (2 pi psi t + phi + theta e(t)))

for parameters (W, F, R, psi, phi[, theta]) [5 or 6, n] on data z [E, n]; t in ms, R in 1/ms,
psi in kHz, phases in rad; e(t) is 1 on the even echoes of a bipolar readout (theta their
extra phase), else 0.

Every column of the Jacobian carries the phase factor exp(i (2 pi psi t + phi + theta e)),
which cancels in J^H J: the normal matrix depends on W, F and R only, through sums over the
echoes of exp(-2 R t) times constants of t and c. Those sums are one matrix product per
iteration ([18, E] @ [E, n]), and J^H (z - S) another ([6, E] @ [E, n], complex), instead of
an [E, n] array per parameter pair.
"""

from __future__ import annotations

import numpy as np

from .checks import R2STAR_MAX
from .magnitude import _LAMBDA0, _SETTLED_LAMBDA, _uniform_spacing

_COMPLEX_XTOL = 1e-4  # largest change of the model, relative to the signal, of a converged step
_COMPACT = 0.1          # drop finished voxels from the working set when this fraction is done
                        # (earlier than the magnitude fit: its takes are cheap next to a pass)
_TWO_PI = 2.0 * np.pi


class ComplexNormalEquations:
    """Cost, J^T J and J^T (z - S) of the complex model at parameters p, per voxel.

    Parameters
    ----------
    t : ndarray, (n_echoes, 1)
        Echo times, ms.
    c : complex ndarray, (n_echoes, 1)
        Fat phasor.
    even : ndarray, (n_echoes, 1), optional
        1 on the echoes read with the second polarity of a bipolar readout; adds theta.
    """

    def __init__(self, t, c, even=None):
        t = np.asarray(t, dtype=np.float64)[:, 0]
        c = np.asarray(c, dtype=np.complex128)[:, 0]
        self.t = t[:, None]
        self.c = c[:, None]
        self.even = None if even is None else np.asarray(even, dtype=np.float64)
        self.n_par = 5 if even is None else 6
        self.t_max = float(t.max())
        self.spacing = _uniform_spacing(t)
        cr, ci, c2 = c.real, c.imag, np.abs(c) ** 2
        rows = [np.ones_like(t), cr, c2, t, t * cr, t * c2, t * ci, ci, t * t, t * t * cr,
                t * t * c2]
        if even is not None:
            e = self.even[:, 0]
            rows += [e * ci, e, e * cr, e * c2, e * t, e * t * cr, e * t * c2]
        self._real_sums = np.array(rows)  # [18, E] (11 without theta): weights of exp(-2 R t)
        crows = [np.ones_like(c), np.conj(c), t * np.ones_like(c), t * np.conj(c)]
        if even is not None:
            crows += [e * np.ones_like(c), e * np.conj(c)]
        self._complex_sums = np.array(crows)  # [6, E] (4): weights of conj(b) (z - S)

    def basis(self, r, psi, phi, theta=None):
        """b = exp(-R t + i (2 pi psi t + phi + theta e)) [E, n] and u = exp(-2 R t) [E, n]."""
        rate = -r + (1j * _TWO_PI) * psi
        n_echo = self.t.shape[0]
        if self.spacing is None:
            b = np.exp(self.t * rate + 1j * phi)
            u = np.exp(-2.0 * self.t * r)
        else:
            # Uniform spacing: powers by repeated multiplication (relative error ~ k eps).
            b = np.empty((n_echo, r.size), dtype=np.complex128)
            u = np.empty((n_echo, r.size))
            b[0] = np.exp(rate * self.t[0, 0] + 1j * phi)
            u[0] = np.exp(-2.0 * self.t[0, 0] * r)
            step = np.exp(rate * self.spacing)
            u_step = np.exp(-2.0 * self.spacing * r)
            for k in range(1, n_echo):
                np.multiply(b[k - 1], step, out=b[k])
                np.multiply(u[k - 1], u_step, out=u[k])
        if theta is not None:
            b *= np.exp(1j * self.even * theta)
        return b, u

    def terms(self, z, p):
        """cost [n] (half the residual energy), h [P, P, n] (J^T J) and g [P, n] (J^T res)."""
        w, f = p[0], p[1]
        b, u = self.basis(p[2], p[3], p[4], p[5] if self.n_par == 6 else None)
        a = self.c * f
        a += w
        v = np.multiply(a, u)             # A |b|^2
        res = np.multiply(a, b, out=a)    # model S = A b
        np.subtract(z, res, out=res)      # residual
        flat = res.view(np.float64)  # [E, 2n]: real and imaginary parts side by side
        cost = 0.5 * np.einsum("ij,ij->j", flat, flat).reshape(-1, 2).sum(1)
        # conj(b) res = conj(b) z - A |b|^2
        np.conjugate(b, out=b)
        np.multiply(b, z, out=b)
        np.subtract(b, v, out=b)
        s = self._real_sums @ u
        q = self._complex_sums @ b
        return (cost, *self._assemble(w, f, s, q))

    def _assemble(self, w, f, s, q):
        """h [P, P, n] and g [P, n] from the echo sums s (real) and q (complex)."""
        s1, scr, sc2, st, stcr, stc2, stci, sci, stt, sttcr, sttc2 = s[:11]
        ww, wf, ff = w * w, 2.0 * w * f, f * f
        n_par = self.n_par
        h = np.zeros((n_par, n_par, w.size))
        h[0, 0] = s1
        h[0, 1] = scr
        h[1, 1] = sc2
        h[0, 2] = -(w * st + f * stcr)
        h[1, 2] = -(w * stcr + f * stc2)
        h[0, 3] = -_TWO_PI * f * stci
        h[1, 3] = _TWO_PI * w * stci
        h[0, 4] = -f * sci
        h[1, 4] = w * sci
        h[2, 2] = ww * stt + wf * sttcr + ff * sttc2
        h[3, 3] = (_TWO_PI * _TWO_PI) * h[2, 2]
        h[3, 4] = _TWO_PI * (ww * st + wf * stcr + ff * stc2)
        h[4, 4] = ww * s1 + wf * scr + ff * sc2
        qr, qi = q.real, q.imag
        g = np.empty((n_par, w.size))
        g[0] = qr[0]
        g[1] = qr[1]
        g[2] = -(w * qr[2] + f * qr[3])
        g[3] = _TWO_PI * (w * qi[2] + f * qi[3])
        g[4] = w * qi[0] + f * qi[1]
        if n_par == 6:
            seci, se, secr, sec2, set_, setcr, setc2 = s[11:]
            h[0, 5] = -f * seci
            h[1, 5] = w * seci
            h[3, 5] = _TWO_PI * (ww * set_ + wf * setcr + ff * setc2)
            h[4, 5] = ww * se + wf * secr + ff * sec2
            h[5, 5] = h[4, 5]
            g[5] = w * qi[4] + f * qi[5]
        upper = np.triu_indices(n_par, 1)
        h[upper[1], upper[0]] = h[upper]
        return h, g


def step_within_tolerance(d, p, t_max):
    """True [n] where the step d [P, n] from p changes the model by at most _COMPLEX_XTOL of
    the signal: amplitudes relative to W + F; R2* and the field map by the decay and the phase
    they add over the echo train (t_max, ms); the phases (rad) directly."""
    amplitude = np.abs(d[0]) + np.abs(d[1]) <= _COMPLEX_XTOL * (p[0] + p[1] + 1e-12)
    decay = t_max * np.abs(d[2]) <= _COMPLEX_XTOL
    phase = _TWO_PI * t_max * np.abs(d[3]) + np.abs(d[4:]).sum(0) <= _COMPLEX_XTOL
    return amplitude & decay & phase


def ldl_solve(a, g):
    """Solve symmetric positive definite systems a x = g, voxel by voxel, by a vectorised
    LDL^T factorisation. a [P, P, n], g [P, n]; returns x [P, n] and ok [n] (False where a
    pivot is not positive or a value not finite; x is 0 there)."""
    n_par = a.shape[0]
    lower = [[None] * n_par for _ in range(n_par)]  # L[i][j], i > j
    scaled = [[None] * n_par for _ in range(n_par)]  # L[i][j] D[j]
    pivots = []
    ok = np.isfinite(a).all((0, 1)) & np.isfinite(g).all(0)
    for j in range(n_par):
        d = a[j, j].copy()
        for k in range(j):
            d -= lower[j][k] * scaled[j][k]
        ok &= d > 0
        d = np.where(d > 0, d, 1.0)
        pivots.append(d)
        for i in range(j + 1, n_par):
            s = a[i, j].copy()
            for k in range(j):
                s -= lower[i][k] * scaled[j][k]
            scaled[i][j] = s
            lower[i][j] = s / d
    y = []
    for i in range(n_par):
        yi = g[i].copy()
        for k in range(i):
            yi -= lower[i][k] * y[k]
        y.append(yi)
    x = [None] * n_par
    for i in reversed(range(n_par)):
        xi = y[i] / pivots[i]
        for k in range(i + 1, n_par):
            xi -= lower[k][i] * x[k]
        x[i] = xi
    x = np.array(x)
    ok &= np.isfinite(x).all(0)
    return np.where(ok, x, 0.0), ok


def solve_damped(h, g, lam):
    """Levenberg-Marquardt steps (H + lam diag(H)) d = g for h [P, P, n] (symmetric, positive
    semi-definite) and g [P, n]. Returns d [P, n] and ok [n]; a direction the data do not
    determine (a zero column of J) gets no step."""
    n_par = h.shape[0]
    k = np.arange(n_par)
    diag = h[k, k]
    hd = h.copy()
    # A tiny ridge keeps the damped matrix positive definite.
    hd[k, k] = diag * (1.0 + lam) + 1e-12 * diag.max(0) + 1e-300
    return ldl_solve(hd, g)


def lm_complex(z, t, c, p, max_iter, even=None, water_only=False):
    """Projected Levenberg-Marquardt for (W, F, R, psi, phi[, theta]) [5 or 6, n] on z [E, n].

    t [E, 1] ms, c [E, 1] fat phasor; ``even`` [E, 1] adds the odd/even echo phase theta as a
    sixth parameter; ``water_only`` holds F at its start (0). W, F >= 0 and
    0 <= R <= R2STAR_MAX: a parameter on its bound whose descent direction points outside is
    frozen for the step. Converged: a step that changes the model by at most _COMPLEX_XTOL of
    the signal (``step_within_tolerance``), taken or, with little damping, next to be taken
    (that trial point is then not evaluated). Finished voxels leave the working set.
    Returns (p, cost [n] = 0.5 * residual energy, converged [n] bool).
    """
    normal = ComplexNormalEquations(t, c, even)
    n = z.shape[1]
    p = np.array(p, dtype=np.float64)
    cost_out = np.empty(n)
    conv_out = np.zeros(n, dtype=bool)
    idx = np.arange(n)
    lam = np.full(n, _LAMBDA0)
    r_max = R2STAR_MAX * 1e-3
    za = np.asarray(z, dtype=np.complex128)
    pa = p
    cost, h, g = normal.terms(za, pa)
    done = np.zeros(n, dtype=bool)

    def settle(*extra):
        """After marking voxels done: None when all are, else ``extra`` ([.., n] arrays of this
        iteration) without the finished voxels once enough of them were written out."""
        nonlocal idx, pa, h, g, za, cost, lam, done
        n_done = np.count_nonzero(done)
        if n_done == done.size:
            return None
        if n_done <= _COMPACT * done.size:
            return extra
        p[:, idx[done]] = pa[:, done]
        cost_out[idx[done]] = cost[done]
        conv_out[idx[done]] = True
        keep = np.flatnonzero(~done)
        idx = idx[keep]
        pa, h, g, za = (x.take(keep, axis=-1) for x in (pa, h, g, za))
        cost, lam = cost.take(keep), lam.take(keep)
        done = np.zeros(idx.size, dtype=bool)
        return tuple(x.take(keep, axis=-1) for x in extra)

    for _ in range(max_iter):
        frozen = np.zeros(g.shape, dtype=bool)
        frozen[0] = (pa[0] <= 0.0) & (g[0] <= 0.0)
        frozen[1] = ((pa[1] <= 0.0) & (g[1] <= 0.0)) | water_only
        frozen[2] = ((pa[2] <= 0.0) & (g[2] <= 0.0)) | ((pa[2] >= r_max) & (g[2] >= 0.0))
        hs, gs = h, g
        if frozen.any():
            free = ~frozen
            hs = h * (free[:, None, :] & free[None, :, :])
            for k in range(3):
                hs[k, k] = np.where(frozen[k], 1.0, hs[k, k])
            gs = g * free
        d, ok = solve_damped(hs, gs, lam)
        pn = pa + d
        pn[0] = np.maximum(pn[0], 0.0)
        pn[1] = np.maximum(pn[1], 0.0)
        pn[2] = np.clip(pn[2], 0.0, r_max)
        small = step_within_tolerance(pn - pa, pa, normal.t_max)
        # A voxel whose next (essentially Gauss-Newton) step is already within the tolerance
        # has converged where it is: its trial point is not evaluated.
        done |= ok & small & (lam < _SETTLED_LAMBDA)
        trial = settle(pn, ok, small)
        if trial is None:
            break
        pn, ok, small = trial
        cost_n, h_n, g_n = normal.terms(za, pn)
        acc = ok & (cost_n <= cost)
        flat = np.abs(cost - cost_n) <= 1e-12 * cost + 1e-30
        done |= (acc & (small | flat)) | (~acc & (lam > 1e9))
        pa = np.where(acc, pn, pa)
        cost = np.where(acc, cost_n, cost)
        h = np.where(acc, h_n, h)
        g = np.where(acc, g_n, g)
        lam = np.where(acc, np.maximum(lam * 0.2, 1e-9), np.minimum(lam * 10.0, 1e12))
        if settle() is None:
            break
    p[:, idx] = pa
    cost_out[idx] = cost
    conv_out[idx] = done
    return p, cost_out, conv_out
