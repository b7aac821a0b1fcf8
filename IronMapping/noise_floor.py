"""The noise floor of multi-echo magnitude data: pure-floor samples and the effective coil count.

The floor level 2 L sigma^2 (L: effective coil count) comes from samples that have decayed to
the floor: later echoes of fast-decaying voxels whose leading echoes stand well above it. Noise
in different echoes is independent, so selecting voxels on their leading echoes does not bias
the moments of the later ones. Without such samples, L is read from the shape of decays that
approach the floor.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from . import estimators


#: Fewest pure-floor samples for a coil count (each carries information ~L on the floor level).
MIN_FLOOR_SAMPLES = 300
#: Fewest floor samples for a tile's own floor estimate.
MIN_TILE_FLOOR_SAMPLES = 30


def floor_samples(y, t, sigma, coils=1.0):
    """Magnitudes that are pure noise (echoes decayed to the floor) and their voxel columns.

    They are the later echoes of fast-decaying voxels whose decay, fitted on their leading
    echoes well above the floor, predicts an amplitude below 0.1 sigma there (iron-loaded
    tissue, lung edges). They are chosen on *other* echoes than the ones returned, so the choice
    does not bias their moments (noise in different echoes is independent). Voxels that are
    merely dark in their first echoes are not taken: with many coils a faint tissue signal
    cannot be told from the floor by two samples (background air is judged as a whole, in
    noise_source). Exact zeros (scanner masking) are left out.

    Parameters
    ----------
    y : ndarray, shape (n_echoes, n)
        Magnitudes (signal units).
    t : ndarray, shape (n_echoes,)
        Echo times in s.
    sigma : float or ndarray, shape (n,)
        Noise SD (signal units).
    coils : float
        Effective coil count L.

    Returns
    -------
    samples : ndarray, shape (m,)
        The floor magnitudes.
    columns : int ndarray, shape (m,)
        For each, its column in y.
    """
    if y.shape[0] < 3:
        return np.empty(0), np.empty(0, np.intp)
    sigma = np.broadcast_to(np.asarray(sigma, dtype=np.float64), (y.shape[1],))
    columns = np.broadcast_to(np.arange(y.shape[1]), y.shape)
    mean = np.sqrt(2.0 * coils) * sigma
    parts, cols = [], []
    n_lead = np.cumprod(y >= mean + 5.0 * sigma, axis=0).sum(0)
    fast = (n_lead >= 1) & (n_lead <= y.shape[0] - 3) & (y[1] > 0)
    if fast.any():
        # the decay from the leading echoes (at least two: a dark liver may have one echo
        # above the floor); echoes from the one after the echo that ended the run are free
        yf, nf = y[:, fast], n_lead[fast]
        n_fit = np.maximum(nf, 2)
        lead = np.arange(y.shape[0])[:, None] < n_fit[None, :]
        r2, ln_s0 = estimators.weighted_loglinear(yf, t, np.where(lead, yf * yf, 0.0))
        with np.errstate(over="ignore", invalid="ignore"):
            predicted = np.exp(ln_s0 - np.outer(t, r2))
            late = np.arange(y.shape[0])[:, None] >= np.maximum(nf + 1, n_fit)[None, :]
            pure = late & (predicted < 0.1 * sigma[fast]) & np.isfinite(predicted) & (r2 > 0)
        values, rows = yf[pure], np.nonzero(pure)[0]
        free = _decay_free_rows(values, rows)
        if free is None:
            # fat oscillation or a second component faked a fast decay: these echoes hold signal
            return np.empty(0), np.empty(0, np.intp)
        parts.append(values[free])
        cols.append(columns[:, fast][pure][free])
    if not parts:
        return np.empty(0), np.empty(0, np.intp)
    samples = np.concatenate(parts)
    cols = np.concatenate(cols)
    ok = np.isfinite(samples) & (samples > 0)
    return samples[ok], cols[ok]


def _decay_free_rows(values, rows):
    """Which would-be floor samples to keep: all of them when they do not decay; else those
    from the first echo on from which they no longer do (fat oscillation fakes a fast decay
    whose in-phase echoes still hold signal, and that signal dies away in the later echoes);
    None when no such echo leaves MIN_FLOOR_SAMPLES samples that can be tested."""
    if not _still_decaying(values, rows):
        return np.ones(values.size, bool)
    for first in np.unique(rows)[1:]:
        later = rows >= first
        if np.count_nonzero(later) < MIN_FLOOR_SAMPLES:
            return None
        ratio = _decay_ratio(values[later], rows[later])
        if ratio is None:
            return None  # too few echoes left to tell a decay from the floor
        if ratio >= _DECAY_TOLERATED:
            return later
    return None


#: Would-be floor samples whose mean square falls by more than this factor from the earlier to
#: the later echoes still hold signal. (Not tighter: the earlier and the later echoes come from
#: different voxels, whose noise differs where it varies in space.)
_DECAY_TOLERATED = 0.85


def _decay_ratio(values, rows):
    """Mean square of the later over the earlier half of the samples' echoes; None with fewer
    than 200 samples or 100 in either half."""
    if values.size < 200:
        return None
    split = np.median(rows)
    early, late = values[rows <= split], values[rows > split]
    if early.size < 100 or late.size < 100:
        return None
    return float(np.mean(late * late)) / float(np.mean(early * early))


def _still_decaying(values, rows) -> bool:
    """True when the samples' mean square falls by more than _DECAY_TOLERATED from the earlier to
    the later echoes: pure noise does not decay."""
    ratio = _decay_ratio(values, rows)
    return ratio is not None and ratio < _DECAY_TOLERATED


def floor_level(y, t, sigma, coils=1.0):
    """The effective L: mean of M^2 / (2 sigma^2) over pure-floor samples.

    Parameters
    ----------
    y : ndarray, shape (n_echoes, n)
        Magnitudes (signal units).
    t : ndarray, shape (n_echoes,)
        Echo times in s.
    sigma : float or ndarray, shape (n,)
        Local noise SD of the voxels of y.
    coils : float
        Coil count used to choose the floor samples.

    Returns
    -------
    level : float or None
        None without floor samples.
    n : int
        Number of floor samples.
    """
    sigma = np.broadcast_to(np.asarray(sigma, dtype=np.float64), (y.shape[1],))
    samples, cols = floor_samples(y, t, sigma, coils)
    if samples.size == 0:
        return None, 0
    return float(np.mean(samples * samples / (2.0 * sigma[cols] ** 2))), int(samples.size)


#: Coil counts tried when the floor level has to be inferred from the decay curves.
COIL_GRID = (1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 32.0)


#: Voxels whose decay misfits the single exponential at every coil count by more than this
#: quantile of chi-square (n_echoes - 2 dof) are left out of the coil-count likelihood.
DECAY_FIT_QUANTILE = 0.999


def coils_from_decay(y, t, sigma, max_voxels: int = 4000):
    """Effective coil count from decays that approach the floor, when no pure-floor samples exist.

    Voxels whose first echoes stand well above the floor and whose last echo is below 10 sigma
    carry the floor level 2 L sigma^2 in the shape of their squared signal
    (E[S^2] = A^2 + 2 L sigma^2). L maximises the exact noncentral-chi likelihood at each L's
    squared-signal fit: on COIL_GRID, then on a fine grid between the coarse minimum's
    neighbours, then interpolated. Voxels that no single exponential fits at any L (fat
    oscillation in marrow, partial volume of two tissues) are left out: their misfit, not the
    floor, would set L.

    Parameters
    ----------
    y : ndarray, shape (n_echoes, n)
        Magnitudes (signal units).
    t : ndarray, shape (n_echoes,)
        Echo times in s.
    sigma : float or ndarray, shape (n,)
        Noise SD (signal units).
    max_voxels : int
        At most this many voxels are used.

    Returns
    -------
    float or None
        L; None when fewer than 300 voxels remain.
    """
    sigma = np.broadcast_to(np.asarray(sigma, dtype=np.float64), (y.shape[1],))
    if y.shape[0] < 6:
        return None
    # choose the voxels on a fit of the first half of the echoes only: choosing on the late
    # echoes' own values would keep those whose noise happened to be low, faking a low floor
    half = y.shape[0] // 2
    bright = (y[0] > 20.0 * sigma) & np.all(y[:half] > 0, axis=0)
    r2, ln_s0 = estimators.weighted_loglinear(y[:half], t[:half], np.where(bright, y[:half] ** 2, 0.0))
    with np.errstate(over="ignore", invalid="ignore"):
        predicted_last = np.exp(ln_s0 - r2 * t[-1])
    use = bright & np.isfinite(predicted_last) & (predicted_last < 10.0 * sigma)
    idx = np.flatnonzero(use)
    if idx.size < 300:
        return None
    idx = idx[np.linspace(0, idx.size - 1, min(idx.size, max_voxels)).astype(np.intp)]
    yn = y[:, idx] / sigma[idx]  # in units of the local noise SD
    loglik, deviance = _decay_likelihoods(yn, t, COIL_GRID)
    fits = (deviance.min(axis=0) < stats.chi2.ppf(DECAY_FIT_QUANTILE, y.shape[0] - 2)) \
        & np.all(yn > 0, axis=0)
    if fits.sum() < 300:
        return None
    grid = np.asarray(COIL_GRID)
    cost = -loglik[:, fits].sum(axis=1)
    k = int(np.argmin(cost))
    if k in (0, grid.size - 1):
        return float(grid[k])
    # the cost is far from quadratic over the coarse grid's steps: search again finely between
    # the neighbours of the coarse minimum, then interpolate
    fine = np.exp(np.linspace(np.log(grid[k - 1]), np.log(grid[k + 1]), 9))
    cost = -_decay_likelihoods(yn[:, fits], t, fine)[0].sum(axis=1)
    k = int(np.clip(np.argmin(cost), 1, fine.size - 2))
    x = np.log(fine[k - 1:k + 2])
    coef = np.polyfit(x, cost[k - 1:k + 2], 2)
    if coef[0] <= 0:
        return float(fine[k])
    return float(np.exp(np.clip(-coef[1] / (2 * coef[0]), x[0], x[2])))


def _decay_likelihoods(yn, t, coil_grid):
    """(log-likelihood, deviance), each (len(coil_grid), n): per voxel and coil count, at that
    L's squared-signal fit; yn in units of sigma. The log-likelihood is the exact noncentral
    chi with its L-dependent normalising terms; the deviance is the squared-signal residual sum
    sum (S^2 - E[S^2])^2 / Var(S^2), about chi-square (n_echoes - 2) where the model holds."""
    y2 = yn * yn
    with np.errstate(divide="ignore"):
        log_y = np.log(yn)
    loglik, deviance = [], []
    for L in coil_grid:
        bf = estimators.noise_corrected(yn, t, 1.0, L)
        a = np.nan_to_num(bf.s0 * np.exp(-np.outer(t, bf.r2star)), nan=0.0, posinf=0.0)
        a2 = a * a
        loglik.append(estimators._nc_chi_loglik(yn, a, 1.0, L) + L * log_y.sum(axis=0))
        deviance.append((((y2 - a2 - 2.0 * L) ** 2) / (4.0 * (a2 + L))).sum(axis=0))
    return np.asarray(loglik), np.asarray(deviance)


def _group_index(groups) -> np.ndarray:
    """Non-negative integer group numbers for bincount: tile ids as they are (no sort of every
    sample), anything else through np.unique."""
    g = np.asarray(groups)
    if g.dtype.kind in "iu" and g.size and g.min() >= 0 and g.max() < 4 * g.size:
        return g
    return np.unique(g, return_inverse=True)[1].reshape(-1)


def coils_from_floor_ratio(samples, groups=None) -> float | None:
    """Effective coil count from the shape of pure-floor samples, whatever their noise level.

    The moment ratio E[M]^2 / E[M^2] of a central chi depends on L alone, so within a group of
    samples that share one sigma (a tile) it gives L without knowing sigma; the groups' relative
    variances Var(M) / E[M^2] = 1 - ratio are pooled by their sizes.

    Parameters
    ----------
    samples : ndarray, shape (m,)
        Pure-floor magnitudes (signal units).
    groups : int ndarray, shape (m,), optional
        Group (tile) id per sample.

    Returns
    -------
    float or None
        L; None with too few samples.
    """
    x = np.asarray(samples, dtype=np.float64)
    if x.size < MIN_FLOOR_SAMPLES:
        return None
    g = np.zeros(x.size, np.intp) if groups is None else _group_index(groups)
    n = np.bincount(g)
    m1 = np.bincount(g, weights=x) / np.maximum(n, 1)
    m2 = np.bincount(g, weights=x * x) / np.maximum(n, 1)
    ok = n >= MIN_TILE_FLOOR_SAMPLES
    if not ok.any():
        return None
    relative_var = np.sum(n[ok] * (m2[ok] - m1[ok] ** 2) / m2[ok]) / np.sum(n[ok])
    from .noise import effective_coils_from_ratio

    return effective_coils_from_ratio(1.0 - relative_var)
