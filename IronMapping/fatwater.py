"""Fat-water separation with fat-corrected R2* and proton-density fat fraction (PDFF).

Magnitude fit, MAGO/MAGORINO style (Triay Bagur et al. 2019, Magn Reson Med, PMID 30874334;
Bray et al. 2023, Magn Reson Med, doi 10.1002/mrm.29493)::

    |S(t)| = |W + F c(t)| exp(-R2* t),   c(t) = sum_p a_p exp(i 2 pi f_p t)   (fatmodel.py)

with water W >= 0, fat F >= 0 and one R2*. The field map and the initial phase cancel in the
magnitude. The magnitude cannot tell a water-dominant from a fat-dominant voxel by itself, so
every voxel is fitted twice, from a water-dominant (F = 0) and a fat-dominant (W = 0) start.
The better likelihood wins, except that the fat-dominant solution has to beat the
water-dominant one by a likelihood ratio of exp(FAT_DOMINANT_EVIDENCE) = 20: at high R2* or
low SNR the two often fit about equally well, and picking the better one by a hair sends about
half of the voxels of a 20 % PDFF liver at R2* 650 1/s (1.5 T) to the ~85 % mirror solution.

Likelihood: Gaussian (least squares) when the noise is unknown; noncentral chi (Rician for one
coil) when the noise SD per real channel and the (effective) coil count are known. Then least
squares runs first; voxels whose model comes within 10 sigma of the noise floor are refined by
the noncentral-chi likelihood (far above it the two coincide: R2* bias < ~0.5 %). The chosen
start is refined fully, the other by two steps (its likelihood only decides the choice); a
voxel whose choice changes has the new winner refined fully.

Complex fit (when real/imaginary or magnitude+phase data exist)::

    S(t) = (W + F c(t)) exp(-R2* t) exp(i (2 pi psi t + phi))

with W, F real and non-negative, a common initial phase phi and field map psi (Hz); started
from both magnitude solutions, the better one kept.

All fits are batched Levenberg-Marquardt on blocks [echo, voxel] of float64 with closed-form
3x3 solves (magnitude) or batched 5x5 solves (complex); no per-voxel Python loops.
PDFF = 100 F / (W + F) percent.
"""

from dataclasses import dataclass, field

import numpy as np
from scipy import special

from .errors import EchoTimeError, FitCancelled, InputError
from .estimators import weighted_loglinear
from .fatmodel import fat_phasor, get_spectrum

R2STAR_MAX = 5000.0
"""Upper bound of fitted R2*, 1/s (T2* 0.2 ms); fits reaching it are not trustworthy."""

FAT_DOMINANT_EVIDENCE = 3.0
"""Log-likelihood ratio (nats) the fat-dominant solution needs over the water-dominant one to be
reported, i.e. a likelihood ratio of e^3 = 20, "strong evidence" on the scale of Kass & Raftery
(J Am Stat Assoc 1995;90:773-795). Below it the data cannot tell the two apart and the
water-dominant solution is reported, as magnitude-based methods with their PDFF 0-50 % dynamic
range do (Yu H et al., Magn Reson Med 2011;66:199-206, doi:10.1002/mrm.22840).
0 gives plain maximum likelihood (MAGO/MAGORINO)."""


def method_description(spectrum=None, fat_evidence=FAT_DOMINANT_EVIDENCE):
    """One line saying what the fat-water fit does and with which numbers (for provenance)."""
    return ("Magnitude fat-water fit, water + fat + one R2*, two starts (Triay Bagur A et al. MRM "
            "2019, MAGO; Bray TJP et al. MRM 2023, doi:10.1002/mrm.29493, MAGORINO); "
            f"{get_spectrum(spectrum).describe()}; the fat-dominant solution is reported only "
            f"with a log-likelihood ratio > {fat_evidence:g} nats over the water-dominant one "
            "(likelihood ratio 20, 'strong evidence', Kass & Raftery JASA 1995), otherwise the "
            "water-dominant one (the PDFF 0-50 % range of magnitude-based methods, Yu H et al. "
            "MRM 2011;66:199, doi:10.1002/mrm.22840)")


_BLOCK = 32768         # voxels fitted together (memory: ~30 arrays of 12 x 2 x _BLOCK float64)
_COMPLEX_BLOCK = 4096  # voxels per complex fit block
_LM_COLUMNS = 8192     # columns per Levenberg-Marquardt pass (cache-sized)
_PARK = 0.05           # a pass stops when fewer than this share of its columns is unfinished;
                       # the slow voxels of all passes then finish together (one Python tail)
_TINY = 1e-12
_LAMBDA0 = 1e-3
_XTOL = 1e-4           # relative step size at convergence
_FTOL = 1e-8           # cost change at convergence, relative to the data energy
_DECISIVE = 12.0       # nats from the decision threshold beyond which the loser is not refined
_MAX_ITER_NCCHI = 30
_LOSER_ITER = 2        # noncentral-chi steps for the start that least squares did not choose
_GAUSSIAN_ENOUGH = 10.0  # all model amplitudes >= this many sigma: least squares is the ML fit
_COMPACT = 0.25        # drop finished voxels from the block when this fraction is done


def _require_field_strength(field_strength_t):
    if field_strength_t is None:
        raise InputError(
            "The fat-water fit needs the main field strength (the fat peaks' frequencies depend "
            "on it). Pass field_strength_t in tesla, e.g. 1.5 or 3.0; it is in the DICOM tag "
            "MagneticFieldStrength (0018,0087) or the NIfTI sidecar.")
    try:
        b0 = float(field_strength_t)
    except (TypeError, ValueError):
        b0 = float("nan")
    if not (np.isfinite(b0) and 0.05 <= b0 <= 20.0):
        raise InputError(
            f"Field strength {field_strength_t!r} T is not plausible for the fat-water fit; pass "
            "the scanner's main field in tesla (e.g. 1.5 or 3.0).")
    return b0


def _check_echo_times_s(te_s, n_echoes):
    t = np.asarray(te_s, dtype=np.float64).ravel()
    if t.size != n_echoes:
        raise EchoTimeError(f"{t.size} echo times for {n_echoes} echoes; give one echo time "
                            "per echo.")
    if not np.all(np.isfinite(t)) or np.any(t < 0) or np.any(np.diff(t) <= 0):
        raise EchoTimeError("Echo times must be finite, non-negative and strictly increasing.")
    if n_echoes < 3:
        raise EchoTimeError(f"The fat-water fit has 3 unknowns (water, fat, R2*) and needs at "
                            f"least 3 echoes (better 6 or more); got {n_echoes}.")
    return t


# ---------------------------------------------------------------------------------------------
# Likelihoods. Both expose cost (per voxel, to minimise) and the "pseudo-residual" rho with
# gradient of the cost = -J^T rho, so that Levenberg-Marquardt solves (J^T J + lam D) d = J^T rho.

def _asymptotic_coefficients(nu, k_max=5):
    """Coefficients of ive(nu, z) ~ (2 pi z)^-1/2 sum_k c_k z^-k (Abramowitz & Stegun 9.7.1)."""
    c = [1.0]
    m = 4.0 * nu * nu
    for k in range(1, k_max + 1):
        c.append(c[-1] * -(m - (2 * k - 1) ** 2) / (8.0 * k))
    return c


def _horner(coefficients, u):
    p = np.full_like(u, coefficients[-1])
    for c in coefficients[-2::-1]:
        p *= u
        p += c
    return p


# Abramowitz & Stegun 9.8.1-9.8.4: polynomial approximations of I0 and I1, relative error
# below 2e-7 (small: |z| <= 3.75 in powers of (z/3.75)^2; large: z >= 3.75, scaled by
# exp(-z) sqrt(z), in powers of 3.75/z).
_AS_I0_SMALL = (1.0, 3.5156229, 3.0899424, 1.2067492, 0.2659732, 0.0360768, 0.0045813)
_AS_I1_SMALL = (0.5, 0.87890594, 0.51498869, 0.15084934, 0.02658733, 0.00301532, 0.00032411)
_AS_I0_LARGE = (0.39894228, 0.01328592, 0.00225319, -0.00157565, 0.00916281, -0.02057706,
                0.02635537, -0.01647633, 0.00392377)
_AS_I1_LARGE = (0.39894228, -0.03988024, -0.00362018, 0.00163801, -0.01031555, 0.02282967,
                -0.02895312, 0.01787654, -0.00420059)


class _Gaussian:
    name = "gaussian"

    def terms(self, y, a):
        rho = y - a
        return 0.5 * np.einsum("ij,ij->j", rho, rho), rho

    def fisher_weights(self, a):
        return None

    def take(self, keep):
        return self


class _NoncentralChi:
    """Noncentral chi with 2L degrees of freedom (L = 1: Rician), sigma per real channel.

    Up to terms free of A, -log p(M | A) = A^2 / (2 sigma^2) - h(M A / sigma^2) with
    h(z) = log I_nu(z) - nu log z, nu = L - 1; the score is (M I_L(z)/I_nu(z) - A) / sigma^2.
    The cost is sigma^2 times the negative log-likelihood so that it scales like 0.5 * RSS.
    I_nu: a 6-term asymptotic series where z >= 25 + 2 nu^2 (error < ~1e-7); below that the
    Abramowitz & Stegun polynomials for L = 1, scipy's scaled Bessel functions otherwise.
    """

    name = "noncentral-chi"

    def __init__(self, sigma2, coils):
        self.sigma2 = sigma2  # [1, n]
        self.coils = float(coils)
        self.nu = self.coils - 1.0
        nu = self.nu
        self.z_large = 25.0 + 2.0 * nu * nu
        self.c0 = _asymptotic_coefficients(nu, 5)
        self.c1 = _asymptotic_coefficients(nu + 1.0, 5)
        self.h_zero = -nu * np.log(2.0) - special.gammaln(nu + 1.0)

    def take(self, keep):
        new = object.__new__(_NoncentralChi)
        new.__dict__.update(self.__dict__)
        new.sigma2 = self.sigma2[:, keep]
        return new

    def fisher_weights(self, a):
        """Approximate Fisher information per echo relative to Gaussian, A^2/(A^2 + L sigma^2)."""
        a2 = a * a
        return a2 / (a2 + self.coils * self.sigma2)

    def _h_ratio_moderate(self, z):
        nu = self.nu
        if nu == 0.0:
            zh = np.maximum(z, 3.75)
            v = 3.75 / zh
            p0 = _horner(_AS_I0_LARGE, v)
            h = zh - 0.5 * np.log(zh) + np.log(p0)
            ratio = _horner(_AS_I1_LARGE, v) / p0
            low = np.flatnonzero(z < 3.75)
            if low.size:
                zl = z[low]
                u = zl * zl * (1.0 / 14.0625)
                i0 = _horner(_AS_I0_SMALL, u)
                h[low] = np.log(i0)
                ratio[low] = zl * _horner(_AS_I1_SMALL, u) / i0
            return h, ratio
        zs = np.maximum(z, 1e-300)
        i0, i1 = special.ive(nu, zs), special.ive(nu + 1.0, zs)
        with np.errstate(divide="ignore", invalid="ignore"):
            h = np.log(i0) + zs - nu * np.log(zs)
            ratio = i1 / i0
        tiny = zs < 1e-6
        if tiny.any():
            h = np.where(tiny, self.h_zero + zs * zs / (4.0 * (nu + 1.0)), h)
            ratio = np.where(tiny, zs / (2.0 * (nu + 1.0)), ratio)
        return h, ratio

    def _h_ratio(self, z):
        """h(z) and I_L(z)/I_nu(z) elementwise, for a 1-D or C-contiguous z."""
        nu = self.nu
        shape = z.shape
        z = z.ravel()
        small = np.flatnonzero(z < self.z_large)
        zl = np.maximum(z, self.z_large) if small.size else z
        u = 1.0 / zl
        p0 = _horner(self.c0, u)
        hl = np.log(zl)
        hl *= -(nu + 0.5)
        hl += zl
        hl += np.log(p0)
        hl -= 0.5 * np.log(2.0 * np.pi)
        rl = _horner(self.c1, u)
        rl /= p0
        if small.size:
            hl[small], rl[small] = self._h_ratio_moderate(z[small])
        return hl.reshape(shape), rl.reshape(shape)

    def terms(self, y, a):
        z = y * a
        z /= self.sigma2
        h, ratio = self._h_ratio(z)
        h *= -self.sigma2
        h += 0.5 * a * a
        ratio *= y
        ratio -= a
        return h.sum(0), ratio


# ---------------------------------------------------------------------------------------------
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


class _MagnitudeModel:
    """|W + F c(t)| exp(-R t) on normalised data; t in ms, R in 1/ms."""

    def __init__(self, t_ms, c):
        self.t = t_ms[:, None]
        self.minus_t = -self.t
        self.cr = c.real[:, None].copy()
        self.ci2 = (c.imag ** 2)[:, None].copy()
        dt = np.diff(t_ms)
        # Uniform echo spacing: exp(-R t_k) by repeated multiplication (one exp per row
        # instead of one per echo; relative error ~ k * 1e-16).
        self.spacing = float(dt[0]) if dt.size and np.allclose(dt, dt[0], rtol=1e-9) else None

    def decay(self, r):
        """exp(-R t) [E, n]."""
        if self.spacing is None or self.t.shape[0] < 4:
            return np.exp(self.minus_t * r)
        e = np.empty((self.t.shape[0], r.size))
        np.exp(-self.t[0, 0] * r, out=e[0])
        step = np.exp(-self.spacing * r)
        for k in range(1, e.shape[0]):
            np.multiply(e[k - 1], step, out=e[k])
        return e

    def evaluate(self, w, f, r):
        e = self.decay(r)
        a = self.cr * f
        a += w
        q = self.ci2 * (f * f)
        q += a * a
        np.sqrt(q, out=q)
        return e, a, q, q * e

    def jacobian(self, w, f, e, a, q, amp):
        g = e / np.maximum(q, _TINY)
        jw = a * g
        jf = a * self.cr
        jf += self.ci2 * f
        jf *= g
        jr = self.minus_t * amp
        return jw, jf, jr


def _normal_equations(jw, jf, jr, rho=None, weights=None):
    """J^T diag(weights) J as (h11, h12, h13, h22, h23, h33) and J^T rho, each [n]."""
    dot = lambda u, v: np.einsum("ij,ij->j", u, v)
    if weights is None:
        pw, pf, pr = jw, jf, jr
    else:
        pw, pf, pr = jw * weights, jf * weights, jr * weights
    h = (dot(pw, jw), dot(pw, jf), dot(pw, jr), dot(pf, jf), dot(pf, jr), dot(pr, jr))
    if rho is None:
        return h
    return h, (dot(jw, rho), dot(jf, rho), dot(jr, rho))


def _loglinear_start(y, t_ms):
    """S^2-weighted log-linear fit: R (1/ms) and S0, ignoring fat (a starting point only)."""
    decay_rate, intercept = weighted_loglinear(y, t_ms, y * y)
    r = np.clip(np.nan_to_num(decay_rate, nan=0.05), 0.005, R2STAR_MAX * 1e-3)
    s0 = np.exp(np.clip(np.nan_to_num(intercept, nan=0.0), -5.0, 5.0))
    return r, s0


def _lm_blocked(y, model, w, f, r, lik, max_iter):
    """``_lm_magnitude`` in cache-sized passes whose slow voxels finish in one common pass."""
    n = y.shape[1]
    if n <= 2 * _LM_COLUMNS:
        return _lm_magnitude(y, model, w, f, r, lik, max_iter)
    cost = np.empty(n)
    conv = np.zeros(n, dtype=bool)
    park = int(_PARK * _LM_COLUMNS)
    for start in range(0, n, _LM_COLUMNS):
        sl = slice(start, min(start + _LM_COLUMNS, n))
        cost[sl], conv[sl] = _lm_magnitude(y[:, sl], model, w[sl], f[sl], r[sl], lik.take(sl),
                                           max_iter, park)
    rest = np.flatnonzero(~conv)
    if rest.size:
        wr, fr, rr = w[rest], f[rest], r[rest]
        cost[rest], conv[rest] = _lm_magnitude(y[:, rest], model, wr, fr, rr, lik.take(rest),
                                               max_iter)
        w[rest], f[rest], r[rest] = wr, fr, rr
    return cost, conv


def _lm_magnitude(y, model, w, f, r, lik, max_iter, park=0):
    """Projected Levenberg-Marquardt on a block; works on the shrinking set of active voxels.

    y [E, n] normalised magnitudes; w, f, r [n] starts (modified in place).
    park : stop early (unfinished voxels not converged) once fewer than this many are active.
    Returns cost [n], converged [n] bool.
    """
    n = y.shape[1]
    cost_out = np.empty(n)
    conv_out = np.zeros(n, dtype=bool)
    idx = np.arange(n)
    wa, fa, ra = w.copy(), f.copy(), r.copy()
    lam = np.full(n, _LAMBDA0)
    ya = y
    e, a, q, amp = model.evaluate(wa, fa, ra)
    cost, rho = lik.terms(ya, amp)
    done = np.zeros(n, dtype=bool)
    r_max = R2STAR_MAX * 1e-3
    ftol = _FTOL * 0.5 * np.einsum("ij,ij->j", y, y)

    def flush(sel):
        w[idx[sel]], f[idx[sel]], r[idx[sel]] = wa[sel], fa[sel], ra[sel]
        cost_out[idx[sel]] = cost[sel]

    for _ in range(max_iter):
        jw, jf, jr = model.jacobian(wa, fa, e, a, q, amp)
        h, g = _normal_equations(jw, jf, jr, rho, lik.fisher_weights(amp))
        h11, h12, h13, h22, h23, h33 = h
        g1, g2, g3 = g
        # Active bounds: a parameter on its bound whose descent direction points outside is
        # frozen for this step (projected Levenberg-Marquardt).
        fix_w = (wa <= 0.0) & (g1 <= 0.0)
        fix_f = (fa <= 0.0) & (g2 <= 0.0)
        fix_r = ((ra <= 0.0) & (g3 <= 0.0)) | ((ra >= r_max) & (g3 >= 0.0))
        if fix_w.any() or fix_f.any() or fix_r.any():
            free_w, free_f, free_r = ~fix_w, ~fix_f, ~fix_r
            h12 = h12 * (free_w & free_f)
            h13 = h13 * (free_w & free_r)
            h23 = h23 * (free_f & free_r)
            h11 = np.where(fix_w, 1.0, h11)
            h22 = np.where(fix_f, 1.0, h22)
            h33 = np.where(fix_r, 1.0, h33)
            g1 = g1 * free_w
            g2 = g2 * free_f
            g3 = g3 * free_r
        dw, df, dr, _, ok = _solve3((h11 * (1 + lam), h12, h13, h22 * (1 + lam), h23,
                                     h33 * (1 + lam)), (g1, g2, g3))
        w_new = np.maximum(wa + dw, 0.0)
        f_new = np.maximum(fa + df, 0.0)
        r_new = np.clip(ra + dr, 0.0, r_max)
        e_n, a_n, q_n, amp_n = model.evaluate(w_new, f_new, r_new)
        cost_n, rho_n = lik.terms(ya, amp_n)
        acc = ok & (cost_n <= cost)
        step_small = ((np.abs(w_new - wa) + np.abs(f_new - fa) <= _XTOL * (wa + fa + 1e-6))
                      & (np.abs(r_new - ra) <= _XTOL * (ra + 1e-3)))
        fun_small = np.abs(cost - cost_n) <= ftol
        newly = (acc & (step_small | fun_small)) | (~acc & (lam > 1e9))
        wa = np.where(acc, w_new, wa)
        fa = np.where(acc, f_new, fa)
        ra = np.where(acc, r_new, ra)
        cost = np.where(acc, cost_n, cost)
        # The trial arrays become the state; rejected voxels (usually few) are copied back.
        rejected = np.flatnonzero(~acc)
        state_n = (e_n, a_n, q_n, amp_n, rho_n)
        if rejected.size:
            for new_x, old_x in zip(state_n, (e, a, q, amp, rho)):
                new_x[:, rejected] = old_x[:, rejected]
        e, a, q, amp, rho = state_n
        lam = np.where(acc, np.maximum(lam * 0.2, 1e-9), lam * 10.0)
        done |= newly
        if done.all():
            break
        if park and done.size - np.count_nonzero(done) < park:
            break
        if done.mean() > _COMPACT:
            flush(done)
            conv_out[idx[done]] = True
            keep = ~done
            idx = idx[keep]
            wa, fa, ra, cost, lam, ftol = (x[keep] for x in (wa, fa, ra, cost, lam, ftol))
            ya, e, a, q, amp, rho = (x[:, keep] for x in (ya, e, a, q, amp, rho))
            lik = lik.take(keep)
            done = np.zeros(idx.size, dtype=bool)
    everything = np.ones(idx.size, dtype=bool)
    flush(everything)
    conv_out[idx] = done
    return cost_out, conv_out


_OUTPUT_KEYS = ("r2star", "s0", "water", "fat", "pdff", "start", "converged", "rss",
                "uncertainty")


def _empty_result(n, keep_both=False):
    out = {k: np.full(n, np.nan) for k in _OUTPUT_KEYS}
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
    res = yn - amp
    rss = np.einsum("ij,ij->j", res, res)
    jw, jf, jr = model.jacobian(w, f, e, a, q, amp)
    if sigma_n is None:
        h = _normal_equations(jw, jf, jr)
        s2n = rss / (n_echo - 3) if n_echo > 3 else np.full(m, np.nan)
    else:
        s2n = sigma_n * sigma_n
        h = _normal_equations(jw, jf, jr,
                              weights=_NoncentralChi(s2n[None, :], coils).fisher_weights(amp))
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
    y2 = np.concatenate([yn, yn], axis=1)
    w = np.concatenate([s0, np.zeros(m)])
    f = np.concatenate([np.zeros(m), s0])
    r = np.concatenate([r0, r0])
    # Least squares first (cheap). With a known noise level the noncentral-chi likelihood then
    # refines the solutions; the losing start is refined too unless least squares already
    # rejected it decisively (log-likelihood ratio above _DECISIVE).
    # The fat-dominant solution is reported only when its log-likelihood ratio over the
    # water-dominant one exceeds fat_evidence (nats); see fit_fatwater_chunk.
    cost, conv = _lm_blocked(y2, model, w, f, r, _Gaussian(), max_iter)
    sn = None
    if sigma is not None:
        sn = np.broadcast_to(np.asarray(sigma, dtype=np.float64), (n,))[valid] / scale
    llr = _log_likelihood_ratio(cost[:m], cost[m:], sn, yn.shape[0])
    fat_wins = llr > fat_evidence
    evidence = cost[:m] - cost[m:]
    if sn is not None:
        # Far above the noise floor the noncentral chi is Gaussian with mean A + sigma^2/(2A):
        # the R2* bias of least squares is below ~0.5 % there (amplitudes >= 10 sigma), so
        # only voxels with a model amplitude nearer the floor are refined.
        amp_min = model.evaluate(w, f, r)[3].min(0)
        floor = np.minimum(amp_min[:m], amp_min[m:]) < _GAUSSIAN_ENOUGH * sn
        full_iter = min(max_iter, _MAX_ITER_NCCHI)

        def refine(sel, iterations):
            ws, fs, rs = w[sel], f[sel], r[sel]
            cost_s, conv_s = _lm_blocked(y2[:, sel], model, ws, fs, rs,
                                         _NoncentralChi((sn[sel % m] ** 2)[None, :], coils),
                                         iterations)
            w[sel], f[sel], r[sel], cost[sel], conv[sel] = ws, fs, rs, cost_s, conv_s

        def decide(sel):
            evidence[sel] = cost[sel] - cost[m + sel]
            fat_wins[sel] = (evidence[sel] / sn[sel] ** 2) > fat_evidence

        undecided = np.flatnonzero(floor & (np.abs(llr - fat_evidence) <= _DECISIVE))
        refine(np.flatnonzero(floor) + m * fat_wins[floor], full_iter)
        # The loser only needs a likelihood to compare: a couple of steps from the
        # least-squares optimum (an upper bound on its cost) unless both are returned. A
        # voxel whose choice changes gets its new winner fully refined and is decided again.
        refine(undecided + m * ~fat_wins[undecided], full_iter if keep_both else _LOSER_ITER)
        before = fat_wins[undecided].copy()
        decide(undecided)
        flipped = undecided[fat_wins[undecided] != before]
        if flipped.size:
            refine(flipped + m * fat_wins[flipped], full_iter)
            decide(flipped)
    idx = np.arange(sl.start, sl.stop)[valid]
    choices = [("", np.arange(m) + m * fat_wins, fat_wins)]
    if keep_both:
        choices.append(("alt_", np.arange(m) + m * ~fat_wins, ~fat_wins))
        out["start_evidence"][idx] = evidence * scale * scale
    for prefix, pick, start in choices:
        res = _summarise(yn, model, w[pick], f[pick], r[pick], conv[pick], sn, coils)
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
        Kept for a common signature with the complex fit; the magnitude does not depend on it.
    spectrum : str or FatSpectrum, optional
        Fat spectrum; default six-peak (fatmodel.SIX_PEAK_LIVER).
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
    dict of float64 arrays [n_voxels] (``converged`` bool): ``r2star`` (1/s), ``s0`` (W + F),
    ``water``, ``fat`` (signal units), ``pdff`` (percent), ``start`` (0 water-dominant won,
    1 fat-dominant won), ``converged``, ``rss`` (residual sum of squares of the magnitude,
    signal units^2), ``uncertainty`` (SD of R2*, 1/s, from the Fisher information: Gaussian,
    or its noncentral-chi approximation A^2/(A^2 + L sigma^2) per echo when sigma is given).
    Voxels with non-finite or all-zero signal get NaN and ``converged`` False.
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
    c = fat_phasor(t_s * 1e3, b0, precession_clockwise, spectrum)
    model = _MagnitudeModel(t_s * 1e3, c)
    n = y.shape[1]
    out = _empty_result(n, keep_both)
    for start in range(0, n, _BLOCK):
        sl = slice(start, min(start + _BLOCK, n))
        s_block = sigma if sigma is None or np.ndim(sigma) == 0 else np.asarray(sigma)[sl]
        _fit_magnitude_block(y[:, sl], t_s * 1e3, model, s_block, coils, max_iter, out, sl,
                             keep_both, fat_evidence)
    return out


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


# ---------------------------------------------------------------------------------------------
# Start selection over a neighbourhood

def choose_starts_by_neighbourhood(result, mask, noise_sigma, size=3,
                                   fat_evidence=FAT_DOMINANT_EVIDENCE):
    """Choose each voxel's start by the summed log-likelihood ratio over a neighbourhood.

    The magnitude alone often cannot tell the water- from the fat-dominant solution at high
    R2* and modest SNR; neighbouring voxels of one tissue share the answer, so the evidence
    (log-likelihood ratio) is summed over a ``size``-wide box (within the mask); the
    fat-dominant solution is chosen where the sum exceeds ``fat_evidence`` (nats). Voxels whose
    choice changes get the other start's solution.

    Parameters
    ----------
    result : dict from ``fit_fatwater_chunk(..., keep_both=True)`` over the voxels of ``mask``
        in C order (``mask`` flattened), modified in place and returned.
    mask : bool array, spatial shape
    noise_sigma : float or array [n_voxels]
        Noise SD per real channel (signal units), to turn costs into log-likelihood ratios.
    size : int
        Box width in voxels (3 = 3x3x3 in 3-D).
    """
    from scipy import ndimage

    mask = np.asarray(mask, dtype=bool)
    if "start_evidence" not in result:
        raise InputError("Neighbourhood start selection needs the fit run with keep_both=True.")
    llr = np.nan_to_num(result["start_evidence"] / np.asarray(noise_sigma, dtype=float) ** 2)
    grid = np.zeros(mask.shape)
    grid[mask] = llr
    summed = ndimage.uniform_filter(grid, size=size, mode="constant")[mask] * size ** mask.ndim
    fat_start = summed > fat_evidence
    current = result["start"] == 1
    flip = (fat_start != current) & np.isfinite(result["alt_pdff"])
    for key in _OUTPUT_KEYS:
        a, b = result[key], result["alt_" + key]
        a_flip = a[flip].copy()
        a[flip] = b[flip]
        b[flip] = a_flip
    return result


# ---------------------------------------------------------------------------------------------
# Whole arrays

@dataclass
class FatWaterFit:
    """Fat-water fit of a multi-echo image; maps have the spatial shape, float32.

    pdff (percent), r2star (1/s, fat-corrected), t2star (ms), water, fat, s0 (signal units),
    start (uint8: 0 water-dominant start won, 1 fat-dominant, 255 not fitted), converged
    (bool), rss (signal units^2), uncertainty (SD of R2*, 1/s). ``complex_maps`` holds the
    complex fit (pdff, r2star, water, fat, fieldmap_hz, phase, converged) when complex data
    were given, else None.
    """

    pdff: np.ndarray
    r2star: np.ndarray
    t2star: np.ndarray
    water: np.ndarray
    fat: np.ndarray
    s0: np.ndarray
    start: np.ndarray
    converged: np.ndarray
    rss: np.ndarray
    uncertainty: np.ndarray
    echo_times_ms: tuple
    field_strength_t: float
    likelihood: str
    noise_sigma: object
    coils: float
    spectrum: str
    precession_clockwise: bool
    start_selection: str
    complex_maps: dict = field(default=None)
    fat_evidence: float = FAT_DOMINANT_EVIDENCE

    def provenance(self):
        """JSON-able description of how the maps were made."""
        from . import __version__

        return {
            "method": "fat-water (multi-peak fat, single R2*, magnitude, two starts)",
            "description": method_description(fat_evidence=self.fat_evidence),
            "references": ["Triay Bagur et al. 2019, Magn Reson Med, PMID 30874334 (MAGO)",
                           "Bray et al. 2023, Magn Reson Med, doi 10.1002/mrm.29493 (MAGORINO)"],
            "fat_spectrum": self.spectrum,
            "field_strength_t": self.field_strength_t,
            "precession_clockwise": self.precession_clockwise,
            "echo_times_ms": list(self.echo_times_ms),
            "likelihood": self.likelihood,
            "noise_sigma": (None if self.noise_sigma is None else float(np.mean(self.noise_sigma))),
            "coils": self.coils,
            "start_selection": self.start_selection,
            "fat_dominant_evidence_nats": self.fat_evidence,
            "fat_dominant_evidence_source": ("likelihood ratio 20, 'strong evidence' (Kass & "
                                             "Raftery 1995); below it the water-dominant "
                                             "solution is reported"),
            "complex_fit": self.complex_maps is not None,
            "units": {"pdff": "percent", "r2star": "1/s", "t2star": "ms", "uncertainty": "1/s"},
            "software": f"IronMapping {__version__}",
        }


def _chunks(n, size):
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def _run_chunks(work, slices, threads, progress, cancel):
    """Run work(slice) over slices (in threads if > 1), reporting progress, honouring cancel."""
    done = 0
    if threads <= 1:
        for sl in slices:
            if cancel is not None and cancel():
                raise FitCancelled("The fat-water fit was cancelled; no maps were produced.")
            work(sl)
            done += 1
            if progress is not None:
                progress(done / len(slices))
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=threads) as pool:
        for i in range(0, len(slices), threads):
            if cancel is not None and cancel():
                raise FitCancelled("The fat-water fit was cancelled; no maps were produced.")
            list(pool.map(work, slices[i:i + threads]))
            done += len(slices[i:i + threads])
            if progress is not None:
                progress(done / len(slices))


def fit_fatwater(signal, echo_times_ms, field_strength_t, mask=None, noise_sigma=None,
                 coils=None, complex_signal=None, precession_clockwise=True, spectrum=None,
                 start_selection="voxel", neighbourhood=3, chunk_size=32768, threads=1,
                 progress=None, cancel=None, fat_evidence=FAT_DOMINANT_EVIDENCE):
    """Fat-water fit of whole arrays: PDFF, fat-corrected R2*, water and fat.

    Parameters
    ----------
    signal : array [echo, ...spatial] magnitude, or None when ``complex_signal`` is given.
    echo_times_ms : array [echo], ms
    field_strength_t : float, tesla (required)
    mask : bool array of the spatial shape, optional (default: voxels with finite, positive
        signal).
    noise_sigma : float, optional
        Noise SD per real channel. Given: noncentral-chi likelihood; None: least squares.
    coils : float, optional
        Effective coil count for the noncentral chi (default 1, Rician).
    complex_signal : complex array [echo, ...spatial], optional
        Real/imaginary (or magnitude * exp(i phase)) data; adds a complex fit in
        ``complex_maps``.
    start_selection : "voxel" or "neighbourhood"
        "voxel" (MAGO/MAGORINO): each voxel keeps its better start (the fat-dominant one
        only with a log-likelihood ratio above ``fat_evidence``). "neighbourhood": the
        start is chosen by the log-likelihood ratio summed over a ``neighbourhood``-wide box
        (see ``choose_starts_by_neighbourhood``); needs a noise level (given, or estimated as
        the median residual SD).
    fat_evidence : float
        Nats the fat-dominant solution needs over the water-dominant one (see
        ``FAT_DOMINANT_EVIDENCE``; 0 = plain maximum likelihood).
    threads : int
        Worker threads (numpy releases the GIL in the heavy loops).
    progress : callable(fraction), optional; cancel : callable() -> bool, optional

    Returns
    -------
    FatWaterFit
    """
    b0 = _require_field_strength(field_strength_t)
    if signal is None:
        if complex_signal is None:
            raise InputError("Give the magnitude signal, the complex signal, or both.")
        signal = np.abs(np.asarray(complex_signal))
    signal = np.asarray(signal)
    if signal.ndim < 2:
        raise InputError(f"The signal must be [echo, ...spatial]; got shape {signal.shape}.")
    te_ms = np.asarray(echo_times_ms, dtype=np.float64).ravel()
    t_s = _check_echo_times_s(te_ms * 1e-3, signal.shape[0])
    spatial = signal.shape[1:]
    if complex_signal is not None:
        complex_signal = np.asarray(complex_signal)
        if complex_signal.shape != signal.shape or not np.iscomplexobj(complex_signal):
            raise InputError(f"The complex signal must be complex with the magnitude's shape "
                             f"{signal.shape}; got {complex_signal.shape}.")
    if mask is None:
        mask = np.isfinite(signal).all(0) & (signal.max(0) > 0)
    else:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != spatial:
            raise InputError(f"The mask's shape {mask.shape} differs from the image's {spatial}; "
                             "resample the mask onto the image first.")
    if start_selection not in ("voxel", "neighbourhood"):
        raise InputError(f"start_selection must be 'voxel' or 'neighbourhood', not "
                         f"{start_selection!r}.")
    coils = 1.0 if coils is None else float(coils)
    spec = get_spectrum(spectrum)
    keep_both = start_selection == "neighbourhood"
    y = signal[:, mask].astype(np.float64)
    n = y.shape[1]
    out = _empty_result(n, keep_both)

    def work(sl):
        res = fit_fatwater_chunk(y[:, sl], t_s, field_strength_t=b0, sigma=noise_sigma,
                                 coils=coils, spectrum=spec, keep_both=keep_both,
                                 fat_evidence=fat_evidence)
        for key, value in res.items():
            out[key][sl] = value

    slices = _chunks(n, chunk_size)
    has_complex = complex_signal is not None
    share = 0.6 if has_complex else 1.0
    report = None if progress is None else (lambda x: progress(share * x))
    _run_chunks(work, slices, max(1, int(threads)), report, cancel)

    if keep_both and n:
        sigma_sel = noise_sigma
        if sigma_sel is None:
            dof = max(len(t_s) - 3, 1)
            sigma_sel = float(np.sqrt(np.nanmedian(out["rss"] / dof)))
        choose_starts_by_neighbourhood(out, mask, sigma_sel, neighbourhood, fat_evidence)

    def to_map(values, dtype=np.float32, fill=np.nan):
        grid = np.full(spatial, fill, dtype=dtype)
        grid[mask] = values
        return grid

    start = np.where(np.isfinite(out["pdff"]), out["start"], 255).astype(np.uint8)
    with np.errstate(divide="ignore"):
        t2 = np.where(out["r2star"] > 0, 1e3 / out["r2star"], np.nan)
    complex_maps = None
    if has_complex:
        z = complex_signal[:, mask]
        cout = {k: np.full(n, np.nan) for k in ("pdff", "r2star", "water", "fat", "s0",
                                                   "fieldmap_hz", "phase", "rss", "start")}
        cout["converged"] = np.zeros(n, dtype=bool)

        def cwork(sl):
            res = fit_fatwater_complex_chunk(z[:, sl], t_s, field_strength_t=b0,
                                             precession_clockwise=precession_clockwise,
                                             spectrum=spec)
            for key, value in res.items():
                cout[key][sl] = value

        report = None if progress is None else (lambda x: progress(0.6 + 0.4 * x))
        _run_chunks(cwork, slices, max(1, int(threads)), report, cancel)
        complex_maps = {k: to_map(v) for k, v in cout.items() if k not in ("converged", "start")}
        complex_maps["converged"] = to_map(cout["converged"], bool, False)
    return FatWaterFit(
        pdff=to_map(out["pdff"]), r2star=to_map(out["r2star"]), t2star=to_map(t2),
        water=to_map(out["water"]), fat=to_map(out["fat"]), s0=to_map(out["s0"]),
        start=to_map(start, np.uint8, 255), converged=to_map(out["converged"], bool, False),
        rss=to_map(out["rss"]), uncertainty=to_map(out["uncertainty"]),
        echo_times_ms=tuple(float(t) for t in te_ms), field_strength_t=b0,
        likelihood="gaussian" if noise_sigma is None else "noncentral-chi",
        noise_sigma=noise_sigma, coils=coils, spectrum=spec.describe(),
        precession_clockwise=bool(precession_clockwise), start_selection=start_selection,
        complex_maps=complex_maps, fat_evidence=float(fat_evidence))
