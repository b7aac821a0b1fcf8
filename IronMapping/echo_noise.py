"""Noise level of magnitude multi-echo data from the echo train itself, no background air needed.

Where the signal stands well above the noise floor, root-sum-of-squares magnitude from any number
of coils is close to Gaussian with variance sigma^2 (sigma: noise SD per real channel;
Constantinides, Atalar & McVeigh, MRM 1997;38:852). The residuals of a mono-exponential fit of
those echoes therefore carry sigma^2 times the residual degrees of freedom. Model misfit (fat
oscillation, partial volume, motion) only *inflates* residuals, so the pooled estimate is the
mode of the log residual variance, which an inflated tail does not move: for pure noise the
mode of log(chi^2_d / d) is exactly 0 for every d.

Parallel imaging makes sigma vary in space (g-factor; Dietrich et al., JMRI 2007;26:375): the
same residual variances, pooled in tiles and smoothed, give a noise map (noise_map).

The floor level 2 L sigma^2 (L: effective coil count) comes from samples that have decayed to
the floor (noise_floor).

All functions take ``signal2d`` (n_echoes, n_voxels) and echo times in seconds.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy import ndimage, stats

from . import estimators
from .noise_floor import (COIL_GRID, DECAY_FIT_QUANTILE, MIN_FLOOR_SAMPLES,
                          MIN_TILE_FLOOR_SAMPLES, coils_from_decay, coils_from_floor_ratio,
                          floor_level, floor_samples)
from .noise_map import (HOT_TILE, MAP_SIGNIFICANCE, MAP_SMOOTHING_TILES, MAP_SPREAD_TO_USE,
                        TILE_SLICES, VOXELS_PER_TILE, TileMap, _group_median, noise_map, tile_ids)

# The floor (noise_floor) and the map (noise_map) have modules of their own; their public names
# stay importable from here.
__all__ = [
    "EchoTrainNoise", "estimate_noise_echo_train", "paired_residual_variances", "separate_misfit",
    "neighbour_triples", "log_chi2_density", "pooled_log_mode",
    "SNR_FOR_RESIDUALS", "MIN_ECHOES_FOR_RESIDUALS", "MAX_SAMPLED_VOXELS", "MAP_KEPT_SHARE",
    "MAP_MAX_RESAMPLING", "AMPLITUDE_STRATA", "MISFIT_DROP",
    "floor_samples", "floor_level", "coils_from_decay", "coils_from_floor_ratio", "COIL_GRID",
    "DECAY_FIT_QUANTILE", "MIN_FLOOR_SAMPLES", "MIN_TILE_FLOOR_SAMPLES",
    "noise_map", "tile_ids", "TileMap", "HOT_TILE", "MAP_SIGNIFICANCE", "MAP_SMOOTHING_TILES",
    "MAP_SPREAD_TO_USE", "TILE_SLICES", "VOXELS_PER_TILE",
]

#: An echo enters the residual estimate while its magnitude exceeds this many sigma: there the
#: magnitude's variance is within a few per cent of sigma^2, and that deficit is corrected.
SNR_FOR_RESIDUALS = 5.0
#: Fewest leading echoes above that level for a voxel pair to count (one residual degree of
#: freedom per voxel), so that 3-echo protocols are covered.
MIN_ECHOES_FOR_RESIDUALS = 3
#: Voxels sampled for the estimate at most (spread evenly over the image): the pooled sigma is
#: then precise to well under 1 %, and the cost stays small beside the fit itself.
MAX_SAMPLED_VOXELS = 20_000
#: A noise map made from fewer usable pairs than this share of those sampled is made again
#: from up to MAP_MAX_RESAMPLING times as many.
MAP_KEPT_SHARE = 0.4
MAP_MAX_RESAMPLING = 4.0


@dataclass(frozen=True)
class EchoTrainNoise:
    """Noise estimated from fit residuals across echoes.

    Attributes
    ----------
    sigma : float
        Pooled noise SD per real channel (signal units); median of the map if any.
    sigma_map : float32 ndarray, shape (n_voxels,), or None
        Noise SD per voxel (signal units), None where the noise is uniform.
    n_voxels : int
        Voxel pairs whose residuals were pooled.
    coils : float
        Effective coil count L (floor E[M^2] = 2 L sigma^2).
    coils_source : str
        "given", "floor samples" (echoes at the floor), "decay shape" (decays approaching the
        floor) or "assumed" (1: nothing in the image reaches the floor).
    n_floor : int
        Pure-floor samples.
    n_sampled : int
        Voxel pairs sampled (n_voxels of them had echoes far enough above the floor).
    """

    sigma: float
    sigma_map: np.ndarray | None
    n_voxels: int
    coils: float = 1.0
    coils_source: str = "assumed"
    n_floor: int = 0
    n_sampled: int = 0

    def sigma_range(self) -> tuple[float, float]:
        """5th and 95th percentile of the noise map in signal units (sigma twice without a map)."""
        if self.sigma_map is None:
            return (self.sigma, self.sigma)
        lo, hi = np.percentile(self.sigma_map, [5, 95])
        return (float(lo), float(hi))


def _leading_echoes(y, threshold):
    """Number of leading echoes at or above `threshold` (scalar or (n,)) per voxel."""
    return np.cumprod(y >= threshold, axis=0).sum(0)


def _decay_residuals(y, t, w):
    """Residuals (n_echoes, n) of a mono-exponential fit of the echoes where w is 1, and the fit."""
    r2, ln_s0 = estimators.weighted_loglinear(y, t, w * y * y)
    fitted = estimators._monoexp_gn(y, t, w, r2, np.exp(ln_s0), max_iter=1)
    predicted = fitted["s0"] * np.exp(-np.outer(t, fitted["r2star"]))
    return (y - predicted) * w, predicted


def paired_residual_variances(ya, yb, t, n_keep, coils=1.0, sigma=None):
    """Noise variance from the decay residuals of neighbouring voxel pairs.

    Both voxels of a pair are fitted on the same leading echoes. Model misfit (fat oscillation,
    a second T2* component) is nearly the same in neighbours and cancels in the difference of
    their residuals, while noise adds: E|r_a - r_b|^2 = 2 sigma^2 (n - 2).

    Parameters
    ----------
    ya, yb : ndarray, shape (n_echoes, n)
        Magnitudes of n voxel pairs (spatial neighbours), signal units.
    t : ndarray, shape (n_echoes,)
        Echo times in s.
    n_keep : int ndarray, shape (n,)
        Leading echoes to use, chosen on a *third* neighbour so that the choice does not
        truncate the noise of the echoes used (choosing on their own values would keep only the
        echoes whose noise lifted them above the threshold).
    coils : float
        Effective coil count L, for the correction below.
    sigma : float or ndarray, shape (n,), optional
        Noise SD; when given, the variance is corrected for the small variance deficit of
        noncentral-chi magnitude.

    Returns
    -------
    variance : ndarray, shape (n_kept,)
        Signal units squared.
    dof : ndarray, shape (n_kept,)
        Degrees of freedom of the chi-square the variance follows (sigma^2 chi^2_dof / dof).
    keep : bool ndarray, shape (n,)
        The pairs used.
    amplitude2 : ndarray, shape (n_kept,)
        Mean squared fitted signal over the echoes used (signal units squared).
    """
    keep = n_keep >= MIN_ECHOES_FOR_RESIDUALS
    ya, yb, n_keep = ya[:, keep], yb[:, keep], n_keep[keep]
    if sigma is not None and np.ndim(sigma):
        sigma = np.asarray(sigma)[keep]
    w = (np.arange(ya.shape[0])[:, None] < n_keep[None, :]).astype(np.float64)
    resid_a, pred_a = _decay_residuals(ya, t, w)
    resid_b, pred_b = _decay_residuals(yb, t, w)
    diff = resid_a - resid_b
    # with nearly equal fits the difference is 2 sigma^2 chi^2 with n - 2 degrees of freedom
    dof = n_keep - 2
    variance = np.einsum("ij,ij->j", diff, diff) / (2.0 * dof)
    if sigma is not None:
        # Var(M) ~ sigma^2 (1 - (2L - 1) sigma^2 / (2 A^2)) for noncentral chi at high SNR: the
        # 2L - 1 noise components orthogonal to the signal shrink the magnitude's spread.
        inv_a2 = 0.5 / np.maximum(pred_a, 1e-12) ** 2 + 0.5 / np.maximum(pred_b, 1e-12) ** 2
        deficit = (2.0 * coils - 1.0) * sigma * sigma / 2.0 * inv_a2
        variance = variance / np.maximum(1.0 - (deficit * w).sum(0) / n_keep, 0.5)
    amplitude2 = 0.5 * ((pred_a * pred_a + pred_b * pred_b) * w).sum(0) / n_keep
    good = np.isfinite(variance) & (variance > 0) & np.isfinite(amplitude2)
    keep_idx = np.flatnonzero(keep)
    keep[keep_idx[~good]] = False
    return variance[good], dof[good], keep, amplitude2[good]


#: Amplitude strata for separating noise from misfit that grows with the signal.
AMPLITUDE_STRATA = 6
#: Misfit is separated only when the quietest amplitude stratum lies below this share of the
#: pooled variance (pure noise: all strata agree to within their few per cent of sampling error).
MISFIT_DROP = 0.8


def _strata(log_var, dofs, amplitude):
    """Median amplitude and robust variance (shape-fitted mode) in amplitude strata."""
    edges = np.quantile(amplitude, np.linspace(0.0, 1.0, AMPLITUDE_STRATA + 1))
    stratum = np.clip(np.searchsorted(edges, amplitude, side="right") - 1, 0, AMPLITUDE_STRATA - 1)
    a, v = [], []
    for k in range(AMPLITUDE_STRATA):
        sel = stratum == k
        if np.count_nonzero(sel) >= 300:
            a.append(float(np.median(amplitude[sel])))
            v.append(float(np.exp(pooled_log_mode(log_var[sel], dofs[sel]))))
    return np.asarray(a), np.asarray(v)


def _quietest_stratum(log_var, dofs, amplitude) -> float:
    """Robust variance of the quietest amplitude stratum over that of all (1 without misfit)."""
    _, v = _strata(log_var, dofs, amplitude)
    if v.size < 3:
        return 1.0
    return float(v.min() / np.exp(pooled_log_mode(log_var, dofs)))


def separate_misfit(variance, dofs, amplitude2, groups=None):
    """Noise variance sigma^2 and a misfit coefficient c^2 from variance = sigma^2 + c^2 A^2.

    Real tissue is never exactly mono-exponential (partial volume, several compartments, flow):
    the relative misfit is roughly constant, so its variance grows with A^2 while the noise does
    not. The robust variance (shape-fitted mode) is found in amplitude strata and a line through
    them gives sigma^2 at A = 0. With tiles, the amplitude dependence is tested *within* tiles,
    so that noise varying in space (parallel imaging) is not taken for misfit.

    Parameters
    ----------
    variance, dofs : ndarray, shape (n,)
        Per-pair residual variances (signal units squared) and their degrees of freedom.
    amplitude2 : ndarray, shape (n,)
        Mean squared signal over the echoes used.
    groups : int ndarray, shape (n,), optional
        Tile id per pair.

    Returns
    -------
    sigma2 : float
        Noise variance (signal units squared).
    c2 : float
        Misfit coefficient; 0 when the misfit is negligible (pure-noise residuals).
    """
    log_var = np.log(variance)
    overall = float(np.exp(pooled_log_mode(log_var, dofs)))
    if variance.size < AMPLITUDE_STRATA * 300 or np.median(dofs) < 3:
        return overall, 0.0  # strata of one- or two-dof variances are too noisy to compare
    if groups is not None:
        n_groups = int(groups.max()) + 1
        log_a = np.log(amplitude2)
        rel_v = log_var - _group_median(groups, log_var, n_groups)[0][groups]
        rel_a = log_a - _group_median(groups, log_a, n_groups)[0][groups]
        if _quietest_stratum(rel_v, dofs, rel_a) >= MISFIT_DROP:
            return overall, 0.0
    a, v = _strata(log_var, dofs, amplitude2)
    if a.size < 3 or v.min() >= MISFIT_DROP * overall:
        return overall, 0.0
    # The quietest (lowest-amplitude) strata lie well below the pooled value: misfit that grows
    # with the signal dominates the bright voxels. Extrapolate the line through the strata to
    # A = 0, but never below a fifth of the quietest stratum (a line through noisy strata can
    # overshoot), nor above it.
    weight = 1.0 / (v * v)
    design = np.stack([np.ones_like(a), a], axis=1)
    s2, c2 = np.linalg.lstsq(design * np.sqrt(weight)[:, None], v * np.sqrt(weight), rcond=None)[0]
    s2 = float(np.clip(s2, 0.2 * v.min(), v.min()))
    c2 = float(max(c2, 0.0))
    return s2, c2


def neighbour_triples(candidates, spatial, limit: int = MAX_SAMPLED_VOXELS):
    """Runs of three candidate voxels along the last axis.

    Parameters
    ----------
    candidates : bool ndarray, shape (n_voxels,)
        Voxels that may hold tissue.
    spatial : tuple of int
        Spatial shape (k, j, i).
    limit : int
        At most this many runs, spread evenly.

    Returns
    -------
    c, a, b : int ndarray, shape (n_runs,)
        Flat indices of the three voxels of each run (a = c + 1, b = c + 2).
    """
    n = candidates.size
    n_last = spatial[-1] if spatial else n
    ok = np.zeros(n, bool)
    if n >= 3:
        np.logical_and(candidates[:-2], candidates[1:-1], out=ok[:-2])
        ok[:-2] &= candidates[2:]
    ok.reshape(-1, n_last)[:, max(n_last - 2, 0):] = False  # all three in the same row
    count = int(np.count_nonzero(ok))
    ranks = np.linspace(0, count - 1, min(count, limit)).astype(np.intp)
    c = _positions_of_ranks(ok, ranks)
    return c, c + 1, c + 2


def _positions_of_ranks(flags, ranks, chunk: int = 1 << 20) -> np.ndarray:
    """np.flatnonzero(flags)[ranks] for sorted ranks, a chunk at a time (no index array of
    every True position: on a large volume that is several times the mask's size)."""
    out = np.empty(ranks.size, np.intp)
    seen, k = 0, 0
    for start in range(0, flags.size, chunk):
        part = flags[start:start + chunk]
        n_true = int(np.count_nonzero(part))
        stop = int(np.searchsorted(ranks, seen + n_true, side="left"))
        if stop > k:
            out[k:stop] = np.flatnonzero(part)[ranks[k:stop] - seen] + start
            k = stop
        seen += n_true
    return out


_BIN = 0.02


def log_chi2_density(x, dofs) -> np.ndarray:
    """Density of log(chi^2_d / d) for a mixture of degrees of freedom (peak at x = 0).

    Parameters
    ----------
    x : ndarray
        Points, any shape.
    dofs : int ndarray
        Degrees of freedom of the mixture's members.

    Returns
    -------
    ndarray
        Density at x (0 outside the tabulated range).
    """
    d_values, counts = np.unique(np.asarray(dofs), return_counts=True)
    table = sum(c * _log_chi2_table(int(d)) for d, c in zip(d_values, counts)) / counts.sum()
    return np.interp(np.asarray(x, dtype=np.float64), _LOG_GRID, table, left=0.0, right=0.0)


_LOG_GRID = np.arange(-8.0, 3.0, 0.002)


@functools.lru_cache(maxsize=64)
def _log_chi2_table(d):
    w = np.exp(_LOG_GRID)
    return stats.chi2.pdf(d * w, d) * d * w


def pooled_log_mode(log_variance, dofs) -> float:
    """log sigma^2 from per-voxel log variances that follow log(sigma^2 chi^2_d / d) plus misfit.

    Misfit only inflates variances, so the shift of the exact log-chi^2 shape is fitted to the
    histogram on the left flank and the peak only (from 2.5 spreads below the peak to half a
    spread above), where misfit hardly reaches. Precise to a fraction of a per cent with a few
    thousand voxels and unmoved by an inflated right tail.

    Parameters
    ----------
    log_variance : ndarray, shape (n,)
        Natural log of residual variances (signal units squared).
    dofs : int ndarray, shape (n,)
        Their degrees of freedom.

    Returns
    -------
    float
        log sigma^2.
    """
    lv = np.asarray(log_variance, dtype=np.float64)
    dofs = np.asarray(dofs)
    spread = float(np.sqrt(2.0 / max(np.median(dofs), 1)))
    centre = float(np.median(lv))
    edges = np.arange(centre - 3.0 * spread - 2.0, centre + 2.0 * spread + _BIN, _BIN)
    hist, edges = np.histogram(lv, bins=edges)
    x = 0.5 * (edges[1:] + edges[:-1])
    # coarse peak of the smoothed histogram, then the shape fit around it
    smooth = ndimage.gaussian_filter1d(hist.astype(np.float64), max(spread / 4.0 / _BIN, 1.0))
    coarse = float(x[int(np.argmax(smooth))])
    shifts = coarse + np.linspace(-0.3 * spread, 0.3 * spread, 41)
    offsets = x[None, :] - shifts[:, None]
    window = (offsets >= -2.5 * spread) & (offsets <= 0.5 * spread)
    model = log_chi2_density(offsets.ravel(), dofs).reshape(offsets.shape) * window
    data = hist[None, :] * window
    # Poisson-weighted least squares with the best amplitude for each shift
    weight = 1.0 / np.maximum(model * (data.sum(1, keepdims=True) / np.maximum(model.sum(1, keepdims=True), 1e-300)), 1.0)
    amplitude = (weight * model * data).sum(1) / np.maximum((weight * model * model).sum(1), 1e-300)
    sse = (weight * (data - amplitude[:, None] * model) ** 2).sum(1)
    k = int(np.argmin(sse))
    if 0 < k < sse.size - 1:
        a, b, c = sse[k - 1], sse[k], sse[k + 1]
        denom = a - 2 * b + c
        step = 0.5 * (a - c) / denom if denom > 0 else 0.0
        return float(shifts[k] + step * (shifts[1] - shifts[0]))
    return float(shifts[k])


def _refine(yc, ya, yb, t, sigma_guide, sigma_pair, coils):
    """Paired residual variances of the echoes well above the floor (chosen on the guide voxel).

    The level keeps the noncentral-chi variance deficit (2L - 1) sigma^2 / (2 A^2) within a
    few per cent, so that its first-order correction is accurate for any coil count.
    """
    snr = max(SNR_FOR_RESIDUALS, float(np.sqrt(10.0 * (2.0 * coils - 1.0))))
    n_keep = _leading_echoes(yc, (snr + np.sqrt(2.0 * coils)) * np.asarray(sigma_guide))
    return paired_residual_variances(ya, yb, t, n_keep, coils=coils, sigma=np.asarray(sigma_pair))


def _floor_coils(y, t, sigma, default, columns_to_group=None):
    """L from the shape of the pure-floor samples (which samples are at the floor depends on L
    itself, so the choice is repeated until L settles)."""
    L = default
    for _ in range(3):
        samples, cols = floor_samples(y, t, sigma, L)
        groups = None if columns_to_group is None else columns_to_group[cols]
        new = coils_from_floor_ratio(samples, groups)
        if new is None:
            return L
        previous, L = L, new
        if abs(L / previous - 1.0) < 0.02:
            break
    return L


def _settle_sigma(yc, ya, yb, t, sigma, L, estimate_coils, pair_tile):
    """Repeat the residual pass on all pairs until sigma settles (1 %), L from the floor's shape.

    The coil count only enters the variance-deficit correction and the echo choice here; it is
    read from the *shape* of the floor samples, which does not depend on sigma (a sigma that may
    vary in space). Returns (sigma, L, (var, dofs, keep, amp2), (sigma2, misfit)) or None.
    """
    for iteration in range(4):
        var, dofs, keep, amp2 = _refine(yc, ya, yb, t, sigma, sigma, L)
        if var.size < 200:
            return None
        sigma2, misfit = separate_misfit(var, dofs, amp2, None if pair_tile is None else pair_tile[keep])
        previous, sigma = sigma, float(np.sqrt(sigma2))
        previous_L = L
        if estimate_coils and iteration < 2:
            L = _floor_coils(ya, t, sigma, L, pair_tile)
        if abs(sigma / previous - 1.0) < 0.01 and abs(L / previous_L - 1.0) < 0.02:
            break
    return sigma, L, (var, dofs, keep, amp2), (sigma2, misfit)


def _final_coils(ya, t, sigma, L):
    """(L, how, n_floor) with one sigma: the floor level itself (so that 2 L sigma^2 matches the
    observed floor), else the decay shape, else 1."""
    level, n_floor = floor_level(ya, t, sigma, L)
    if n_floor >= MIN_FLOOR_SAMPLES:
        return max(level, 1.0), "floor samples", n_floor
    from_decay = coils_from_decay(ya, t, sigma)
    if from_decay is not None:
        return from_decay, "decay shape", n_floor
    return 1.0, "assumed", n_floor


def _resettle_with_decay_coils(yc, ya, yb, t, sigma, L, pair_tile):
    """(sigma, L) once more with the coil count read from the decay shape: L sets the
    variance-deficit correction and the echo choice of the residual pass, and sigma the
    likelihood that gave L, so each is redone once with the other."""
    settled = _settle_sigma(yc, ya, yb, t, sigma, L, False, pair_tile)
    if settled is None:
        return sigma, L
    sigma = settled[0]
    again = coils_from_decay(ya, t, sigma)
    return sigma, (L if again is None else again)


def estimate_noise_echo_train(signal2d, t, candidates, spatial=None, coils=None) -> EchoTrainNoise | None:
    """Noise SD (and a noise map where it varies) from the residuals of the echo decay.

    Parameters
    ----------
    signal2d : ndarray, shape (n_echoes, n_voxels)
        Magnitudes (signal units).
    t : ndarray, shape (n_echoes,)
        Echo times in s.
    candidates : bool ndarray, shape (n_voxels,)
        Voxels that may hold tissue (finite, non-negative).
    spatial : tuple of int, optional
        Spatial shape (k, j, i), for neighbours and the noise map.
    coils : float, optional
        Effective coil count if known.

    Returns
    -------
    EchoTrainNoise or None
        None when fewer than 200 voxel pairs have three echoes clearly above the floor.
    """
    if signal2d.shape[0] < MIN_ECHOES_FOR_RESIDUALS:
        return None
    spatial = tuple(spatial) if spatial is not None else (signal2d.shape[1],)
    # few echoes leave few residual degrees of freedom per voxel: pool more voxels
    limit = MAX_SAMPLED_VOXELS * (3 if signal2d.shape[0] <= 5 else 1)
    estimate = _estimate_from_triples(signal2d, t, candidates, spatial, coils, limit)
    if estimate is not None and estimate.sigma_map is not None \
            and estimate.n_voxels < MAP_KEPT_SHARE * estimate.n_sampled \
            and estimate.n_sampled >= limit:
        # a noise map from few usable pairs has coarse tiles that flatten the map's bumps
        # (many coils raise the floor, a noisy centre darkens the echoes): sample more pairs
        more = int(limit * min(MAP_MAX_RESAMPLING, MAP_KEPT_SHARE * estimate.n_sampled / max(estimate.n_voxels, 1)))
        estimate = _estimate_from_triples(signal2d, t, candidates, spatial, coils, more) or estimate
    return estimate


def _estimate_from_triples(signal2d, t, candidates, spatial, coils, limit):
    guide, index, partner = neighbour_triples(np.asarray(candidates, bool), spatial, limit)
    if index.size < 200:
        return None
    yc = signal2d[:, guide].astype(np.float64)
    ya = signal2d[:, index].astype(np.float64)
    yb = signal2d[:, partner].astype(np.float64)
    # First pass without a noise level: the brighter half of the pairs, echoes that have lost
    # less than 70 % of the first echo, are far above the floor in any usable scan.
    bright = yc[0] >= np.median(yc[0][yc[0] > 0]) if np.any(yc[0] > 0) else yc[0] > 0
    n_keep = _leading_echoes(yc[:, bright], 0.3 * yc[0, bright])
    var, dofs, keep, amp2 = paired_residual_variances(ya[:, bright], yb[:, bright], t, n_keep)
    if var.size < 200:
        return None
    sigma = float(np.sqrt(separate_misfit(var, dofs, amp2)[0]))
    L = float(coils) if coils is not None else 1.0
    all_tiles = tile_ids(index, spatial)
    pair_tile = None if all_tiles is None else all_tiles[0]
    settled = _settle_sigma(yc, ya, yb, t, sigma, L, coils is None, pair_tile)
    if settled is None:
        return None
    sigma, L, (var, dofs, keep, amp2), (sigma2, misfit) = settled
    sigma_map = None
    local_guide, local = sigma, sigma
    for round_ in range(2 if len(spatial) >= 2 else 0):
        # the map: residual variances (amplitude-proportional misfit removed) where the signal
        # is strong, floor samples where it has decayed to the floor
        log_var = np.log(np.maximum(var - misfit * amp2, 0.05 * sigma2))
        f_samples, f_cols = floor_samples(ya, t, local, L)
        tiles = noise_map(index[keep], log_var, dofs, spatial, 2.0 * np.log(sigma),
                          (index[f_cols], f_samples), L)
        if tiles is None:
            break
        at_index = tiles.at(index)
        lo, hi = np.percentile(at_index, [5, 95])
        if hi / lo <= MAP_SPREAD_TO_USE and round_ == 0:
            break
        sigma_map, sigma = tiles, float(np.median(at_index))
        if round_ == 0:
            # once more with each voxel's own noise level and the calibrated L in the echo
            # choice and the variance-deficit correction, which sharpens the calibration
            local_guide, local = tiles.at(guide), at_index
            if coils is None:
                L = _floor_coils(ya, t, local, L, pair_tile)
            var, dofs, keep, amp2 = _refine(yc, ya, yb, t, local_guide, local, L)
            if var.size < 200:
                return None
            sigma2, misfit = separate_misfit(var, dofs, amp2, None if pair_tile is None else pair_tile[keep])
    if sigma_map is not None:
        lo, hi = np.percentile(sigma_map.at(index), [5, 95])
        if hi / lo <= MAP_SPREAD_TO_USE:
            sigma_map = None
            sigma = float(np.sqrt(sigma2))
        else:
            sigma_map = sigma_map.full()
    if coils is not None:
        L, how, n_floor = float(coils), "given", 0
    elif sigma_map is not None:
        how, n_floor = "shape of the floor samples (moment ratio)", 0
    else:
        L, how, n_floor = _final_coils(ya, t, sigma, L)
        if how == "decay shape":
            sigma, L = _resettle_with_decay_coils(yc, ya, yb, t, sigma, L, pair_tile)
    return EchoTrainNoise(sigma=sigma, sigma_map=sigma_map, n_voxels=int(var.size), coils=float(L),
                          coils_source=how, n_floor=n_floor, n_sampled=int(index.size))
