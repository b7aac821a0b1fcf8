"""Likelihoods of magnitude data for the Levenberg-Marquardt fits.

Both expose ``terms(y, a)`` -> (cost per voxel to minimise, pseudo-residual rho) with gradient
of the cost = -J^T rho, so that Levenberg-Marquardt solves (J^T J + lam D) d = J^T rho.
"""

from __future__ import annotations

import threading

import numpy as np
from scipy import special

def _asymptotic_coefficients(nu, k_max=5):
    """Coefficients of ive(nu, z) ~ (2 pi z)^-1/2 sum_k c_k z^-k (Abramowitz & Stegun 9.7.1)."""
    c = [1.0]
    m = 4.0 * nu * nu
    for k in range(1, k_max + 1):
        c.append(c[-1] * -(m - (2 * k - 1) ** 2) / (8.0 * k))
    return c


def _series_ratio(a, b):
    """Power series a(u) / b(u), truncated to the length of a (b[0] != 0)."""
    q = []
    for k in range(len(a)):
        q.append((a[k] - sum(q[j] * b[k - j] for j in range(k) if k - j < len(b))) / b[0])
    return q


def _series_log(a):
    """Power series log(a(u)) for a[0] = 1, truncated to the length of a: log' = a' / a."""
    k_max = len(a) - 1
    derivative = _series_ratio([k * a[k] for k in range(1, k_max + 1)], a)
    return [0.0] + [derivative[k - 1] / k for k in range(1, k_max + 1)]


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


_TABLE_STEP = 1.0 / 1024.0  # linear interpolation error <= step^2 / 16 ~ 6e-8 (|f''| <= 1/2)
_TABLE_MAX_ENTRIES = 1 << 17
_TABLES = {}           # (nu, length, dtype) -> table; the few most recent coil counts
_TABLES_KEPT = 8
_TABLES_LOCK = threading.Lock()


def _moderate_table(nu, z_large, dtype):
    """Tables of h(z) - z and I_nu+1(z)/I_nu(z) on z = k * _TABLE_STEP, k = 0..K (z_large
    inside), each with its forward differences, for linear interpolation; None if too long."""
    n_steps = int(np.ceil(z_large / _TABLE_STEP)) + 2
    if n_steps > _TABLE_MAX_ENTRIES:
        return None
    key = (nu, n_steps, np.dtype(dtype).str)
    with _TABLES_LOCK:
        table = _TABLES.get(key)
    if table is None:
        z = np.arange(n_steps + 1) * _TABLE_STEP
        zp = np.maximum(z, _TABLE_STEP)
        i0, i1 = special.ive(nu, zp), special.ive(nu + 1.0, zp)
        h = np.log(i0) - nu * np.log(zp)
        ratio = i1 / i0
        h[0] = -nu * np.log(2.0) - special.gammaln(nu + 1.0)
        ratio[0] = 0.0
        # One row per node (one gather per element): h, its step, the ratio, its step.
        table = np.stack([h[:-1], np.diff(h), ratio[:-1], np.diff(ratio)],
                         axis=1).astype(dtype)
        with _TABLES_LOCK:
            while len(_TABLES) >= _TABLES_KEPT:
                _TABLES.pop(next(iter(_TABLES)))
            _TABLES[key] = table
    return table


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
    I_nu: a 6-term asymptotic series where z >= 25 + 2 nu^2 (error < ~1e-7); below that linear
    interpolation of a table made once per coil count from scipy's scaled Bessel functions
    (error < ~1e-7); for coil counts whose table would be too long, the Abramowitz & Stegun
    polynomials (L = 1) or scipy's Bessel functions directly.
    """

    name = "noncentral-chi"

    def __init__(self, sigma2, coils, dtype=np.float64):
        self.sigma2 = np.asarray(sigma2, dtype=dtype)  # [1, n], dtype of the data
        self.coils = float(coils)
        self.nu = self.coils - 1.0
        nu = self.nu
        self.z_large = 25.0 + 2.0 * nu * nu
        c0 = _asymptotic_coefficients(nu, 5)
        c1 = _asymptotic_coefficients(nu + 1.0, 5)
        # log of the series and the ratio of the two, each as one series in 1/z (equal to
        # log(c0(u)) and c1(u)/c0(u) within ~1e-9 for z >= 25; one log and one division less)
        self.log_c0 = _series_log(c0)
        self.ratio_c = _series_ratio(c1, c0)
        self.h_zero = -nu * np.log(2.0) - special.gammaln(nu + 1.0)
        self.table = _moderate_table(nu, self.z_large, self.sigma2.dtype)

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

    def _h_ratio_table(self, z):
        """h(z) - z and the ratio for 0 <= z < z_large by linear interpolation of the table."""
        s = z * (1.0 / _TABLE_STEP)
        k = np.floor(s)
        s -= k
        node = self.table.take(k.astype(np.intp), axis=0, mode="clip")
        h = node[:, 1] * s
        h += node[:, 0]
        ratio = node[:, 3] * s
        ratio += node[:, 2]
        return h, ratio

    def _h_ratio(self, z):
        """h(z) - z and I_L(z)/I_nu(z) elementwise, for a 1-D or C-contiguous z.

        h(z) - z rather than h(z): h grows like z (~1e3-1e4 at usual SNR) and most of it
        cancels in the cost; subtracting z analytically keeps the cost exact in float32.
        """
        nu = self.nu
        shape = z.shape
        z = z.ravel()
        small = np.flatnonzero(z < self.z_large)
        zl = np.maximum(z, self.z_large) if small.size else z
        u = 1.0 / zl
        hl = np.log(zl)
        hl *= -(nu + 0.5)
        hl += _horner(self.log_c0, u)
        hl -= 0.5 * np.log(2.0 * np.pi)
        rl = _horner(self.ratio_c, u)
        if small.size:
            zs = z[small]
            if self.table is None:
                h_small, rl[small] = self._h_ratio_moderate(zs)
                hl[small] = h_small - zs
            else:
                hl[small], rl[small] = self._h_ratio_table(zs)
        return hl.reshape(shape), rl.reshape(shape)

    def terms(self, y, a):
        """Cost sum_k [A_k^2/2 - sigma^2 h(z_k)] + sum_k y_k^2/2 (a constant per voxel, so
        that the sum is (y - A)^2/2 - sigma^2 (h(z) - z), free of cancellation) and rho."""
        z = y * a
        z /= self.sigma2
        h, ratio = self._h_ratio(z)
        h *= -self.sigma2
        d = a - y
        d *= d
        d *= 0.5
        h += d
        ratio *= y
        ratio -= a
        return h.sum(0), ratio


# ---------------------------------------------------------------------------------------------
