"""Noise level of magnitude multi-echo data from the echo train itself, no background air needed.

Where the signal stands well above the noise floor, root-sum-of-squares magnitude from any number
of coils is close to Gaussian with variance sigma^2 (sigma: noise SD per real channel;
Constantinides, Atalar & McVeigh, MRM 1997;38:852). The residuals of a mono-exponential fit of
those echoes therefore carry sigma^2 times the residual degrees of freedom. Model misfit (fat
oscillation, partial volume, motion) only *inflates* residuals, so the pooled estimate is the
mode of the log residual variance, which an inflated tail does not move: for pure noise the
mode of log(chi^2_d / d) is exactly 0 for every d.

Parallel imaging makes sigma vary in space (g-factor; Dietrich et al., JMRI 2007;26:375): the
same residual variances, pooled in tiles and smoothed, give a noise map.

The floor level 2 L sigma^2 (L: effective coil count) comes from samples that have decayed to
the floor: later echoes of voxels that are already at the floor in the first two echoes. Noise
in different echoes is independent, so selecting voxels on echoes 1-2 does not bias the moments
of the later echoes.

All functions take ``signal2d`` (n_echoes, n_voxels) and echo times in seconds.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy import ndimage, stats

from . import estimators

#: An echo enters the residual estimate while its magnitude exceeds this many sigma: there the
#: magnitude's variance is within a few per cent of sigma^2, and that deficit is corrected.
SNR_FOR_RESIDUALS = 5.0
#: Fewest leading echoes above that level for a voxel pair to count (one residual degree of
#: freedom per voxel), so that 3-echo protocols are covered.
MIN_ECHOES_FOR_RESIDUALS = 3
#: Voxels sampled for the estimate at most (spread evenly over the image): the pooled sigma is
#: then precise to well under 1 %, and the cost stays small beside the fit itself.
MAX_SAMPLED_VOXELS = 30_000
#: Voxels with residuals wanted per noise-map tile, and slices per tile (3-D images).
VOXELS_PER_TILE = 200
TILE_SLICES = 4
#: The noise map is used only when it spans more than this ratio (95th / 5th percentile in
#: tissue); below it, one pooled sigma is more precise than the map.
MAP_SPREAD_TO_USE = 1.2


@dataclass(frozen=True)
class EchoTrainNoise:
    """Noise estimated from fit residuals across echoes.

    sigma : float, pooled noise SD per real channel (signal units).
    sigma_map : (n_voxels,) float32 noise SD per voxel, or None where the noise is uniform.
    n_voxels : number of voxels whose residuals were pooled.
    floor_m1, floor_m2 : mean and mean square of samples at the floor (None without such samples).
    n_floor : number of floor samples.
    """

    sigma: float
    sigma_map: np.ndarray | None
    n_voxels: int
    floor_m1: float | None = None
    floor_m2: float | None = None
    n_floor: int = 0

    def coils_from_floor(self) -> float | None:
        """Effective coil count L from the floor samples, E[M^2] = 2 L sigma^2 (None if too few)."""
        if self.floor_m2 is None or self.n_floor < 500:
            return None
        return float(max(self.floor_m2 / (2.0 * self.sigma * self.sigma), 1.0))

    def sigma_range(self) -> tuple[float, float]:
        """5th and 95th percentile of the noise map (sigma twice without a map)."""
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

    ya, yb : (n_echoes, n) magnitudes of n voxel pairs (spatial neighbours); t : (n_echoes,) s;
    n_keep : (n,) leading echoes to use, chosen on a *third* neighbour so that the choice does
    not truncate the noise of the echoes used (choosing on their own values would keep only
    the echoes whose noise lifted them above the threshold).
    Both voxels of a pair are fitted on the same leading echoes. Model misfit (fat
    oscillation, a second T2* component) is nearly the same in neighbours and cancels in the
    difference of their residuals, while noise adds: E|r_a - r_b|^2 = 2 sigma^2 (n - 2).
    Returns (variance, dof, keep): variance (n_kept,) in signal units squared, corrected for the
    small variance deficit of noncentral-chi magnitude when ``sigma`` is given; dof (n_kept,)
    of the chi-square the variance follows (sigma^2 chi^2_dof / dof); keep (n,) bool, the pairs used.
    """
    keep = n_keep >= MIN_ECHOES_FOR_RESIDUALS
    ya, yb, n_keep = ya[:, keep], yb[:, keep], n_keep[keep]
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


def separate_misfit(variance, dofs, amplitude2):
    """Noise variance sigma^2 and a misfit coefficient c^2 from variance = sigma^2 + c^2 A^2.

    variance, dofs : per-pair residual variances and their degrees of freedom; amplitude2 :
    mean squared signal over the echoes used. Real tissue is never exactly mono-exponential
    (partial volume, several compartments, flow): the relative misfit is roughly constant, so
    its variance grows with A^2 while the noise does not. The robust variance (shape-fitted
    mode) is found in amplitude strata and a line through them gives sigma^2 at A = 0.
    Returns (sigma2, c2); c2 is 0 when the misfit is negligible (pure-noise residuals).
    """
    log_var = np.log(variance)
    overall = float(np.exp(pooled_log_mode(log_var, dofs)))
    if variance.size < AMPLITUDE_STRATA * 300:
        return overall, 0.0
    edges = np.quantile(amplitude2, np.linspace(0.0, 1.0, AMPLITUDE_STRATA + 1))
    stratum = np.clip(np.searchsorted(edges, amplitude2, side="right") - 1, 0, AMPLITUDE_STRATA - 1)
    a, v = [], []
    for k in range(AMPLITUDE_STRATA):
        sel = stratum == k
        if np.count_nonzero(sel) >= 300:
            a.append(float(np.median(amplitude2[sel])))
            v.append(float(np.exp(pooled_log_mode(log_var[sel], dofs[sel]))))
    a, v = np.asarray(a), np.asarray(v)
    if a.size < 3 or v.min() >= MISFIT_DROP * overall:
        return overall, 0.0
    # The quietest (lowest-amplitude) strata lie well below the pooled value: misfit that grows
    # with the signal dominates the bright voxels. Extrapolate the line through the strata to
    # A = 0, but never below half of the quietest stratum (a line through noisy strata can
    # overshoot), nor above it.
    weight = 1.0 / (v * v)
    design = np.stack([np.ones_like(a), a], axis=1)
    s2, c2 = np.linalg.lstsq(design * np.sqrt(weight)[:, None], v * np.sqrt(weight), rcond=None)[0]
    s2 = float(np.clip(s2, 0.5 * v.min(), v.min()))
    c2 = float(max(c2, 0.0))
    return s2, c2


def neighbour_triples(candidates, spatial, limit: int = MAX_SAMPLED_VOXELS):
    """Flat indices (c, a, b) of at most `limit` runs of three candidate voxels along the last axis."""
    n_last = spatial[-1] if spatial else candidates.size
    ok = candidates[:-2] & candidates[1:-1] & candidates[2:]
    c = np.flatnonzero(ok)
    c = c[(c % n_last) < n_last - 2]  # all three in the same row
    if c.size > limit:
        c = c[np.linspace(0, c.size - 1, limit).astype(np.intp)]
    return c, c + 1, c + 2


_BIN = 0.02


def log_chi2_density(x, dofs) -> np.ndarray:
    """Density of log(chi^2_d / d) at x for the mixture of the given dofs (peak at x = 0)."""
    d_values, counts = np.unique(np.asarray(dofs), return_counts=True)
    grid, table = _log_chi2_table(tuple(int(d) for d in d_values), tuple(int(c) for c in counts))
    return np.interp(np.asarray(x, dtype=np.float64), grid, table, left=0.0, right=0.0)


@functools.lru_cache(maxsize=64)
def _log_chi2_table(d_values, counts):
    grid = np.arange(-8.0, 3.0, 0.002)
    w = np.exp(grid)
    table = np.zeros_like(grid)
    for d, c in zip(d_values, counts):
        table += c * stats.chi2.pdf(d * w, d) * d * w
    return grid, table / sum(counts)


def pooled_log_mode(log_variance, dofs) -> float:
    """log sigma^2 from per-voxel log variances that follow log(sigma^2 chi^2_d / d) plus misfit.

    Misfit only inflates variances, so the shift of the exact log-chi^2 shape is fitted to the
    histogram on the left flank and the peak only (from 2.5 spreads below the peak to half a
    spread above), where misfit hardly reaches. Precise to a fraction of a per cent with a few
    thousand voxels and unmoved by an inflated right tail.
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


def _tile_shape(spatial, n_samples) -> tuple[int, ...]:
    """Tile edges (voxels per axis) so that a tile holds about VOXELS_PER_TILE samples."""
    n_vox = int(np.prod(spatial))
    per_tile = n_vox * VOXELS_PER_TILE / max(n_samples, 1)
    slices = [min(n, TILE_SLICES) for n in spatial[:-2]]
    edge = int(np.clip(round(np.sqrt(per_tile / max(np.prod(slices), 1))), 8, max(spatial[-2:])))
    return tuple(slices + [edge, edge])


def noise_map(index, log_variance, dofs, spatial, log_sigma2) -> np.ndarray | None:
    """Smooth noise SD map (flat, n_voxels) from per-voxel log residual variances, or None.

    The variances are pooled in tiles (median after trimming misfit outliers, corrected for the
    chi^2 median of each voxel's degrees of freedom), then smoothed across tiles with weights by
    the number of voxels and interpolated back to the voxel grid.
    """
    if len(spatial) < 2:
        return None
    tile = _tile_shape(spatial, index.size)
    grid_shape = tuple(-(-n // s) for n, s in zip(spatial, tile))
    if int(np.prod(grid_shape)) < 4:
        return None
    coords = np.unravel_index(index, spatial)
    tile_id = np.ravel_multi_index(tuple(c // s for c, s in zip(coords, tile)), grid_shape)
    d_values, d_index = np.unique(dofs, return_inverse=True)
    normalised = log_variance - np.log(stats.chi2.median(d_values) / d_values)[d_index]
    # two passes: tile medians, then again without voxels far above their tile's median (misfit)
    spread = np.sqrt(2.0 / np.maximum(dofs, 1)) * 3.0
    keep = np.ones(index.size, bool)
    n_tiles = int(np.prod(grid_shape))
    for _ in range(2):
        med, count = _group_median(tile_id[keep], normalised[keep], n_tiles)
        fallback = np.where(np.isfinite(med), med, log_sigma2)
        keep = normalised <= fallback[tile_id] + spread
    med, count = _group_median(tile_id[keep], normalised[keep], n_tiles)
    weight = np.where(np.isfinite(med) & (count >= 30), count, 0).astype(np.float64).reshape(grid_shape)
    values = np.where(weight > 0, np.nan_to_num(med).reshape(grid_shape), 0.0)
    if weight.sum() == 0:
        return None
    smoothed_w = ndimage.gaussian_filter(weight, 1.0, mode="nearest")
    smoothed_v = ndimage.gaussian_filter(values * weight, 1.0, mode="nearest")
    with np.errstate(invalid="ignore", divide="ignore"):
        log_s2 = np.where(smoothed_w > 1e-6 * weight.max(), smoothed_v / smoothed_w, np.nan)
    log_s2 = np.where(np.isfinite(log_s2), log_s2, log_sigma2)
    full = ndimage.zoom(log_s2, [float(s) for s in tile], order=1, mode="nearest", grid_mode=True)
    full = full[tuple(slice(0, n) for n in spatial)]
    if full.shape != tuple(spatial):  # zoom rounding: pad with the edge value
        full = np.pad(full, [(0, n - m) for n, m in zip(spatial, full.shape)], mode="edge")
    return np.exp(0.5 * full).astype(np.float32).reshape(-1)


def _group_median(groups, values, n_groups):
    """Median of `values` per group id (NaN for empty groups) and the group sizes."""
    order = np.lexsort((values, groups))
    g, v = groups[order], values[order]
    count = np.bincount(g, minlength=n_groups)
    start = np.concatenate(([0], np.cumsum(count)[:-1]))
    med = np.full(n_groups, np.nan)
    has = count > 0
    lo = start[has] + (count[has] - 1) // 2
    hi = start[has] + count[has] // 2
    med[has] = 0.5 * (v[lo] + v[hi])
    return med, count


def floor_samples(y, t, sigma, coils=1.0):
    """Magnitudes that are pure noise: echoes that have decayed to the floor.

    y : (n_echoes, n) magnitudes; t : (n_echoes,) s; sigma : noise SD (scalar or (n,)).
    Two kinds of sample, each chosen on *other* echoes than the ones returned, so that the
    choice does not bias their moments (noise in different echoes is independent):
    - echoes 3.. of voxels already at the floor in echoes 1 and 2 (air, lung);
    - later echoes of fast-decaying voxels whose decay, fitted on their leading echoes well
      above the floor, predicts an amplitude below 0.1 sigma there (iron-loaded tissue).
    Exact zeros (scanner masking) are left out.
    """
    if y.shape[0] < 3:
        return np.empty(0)
    sigma = np.asarray(sigma, dtype=np.float64)
    mean = np.sqrt(2.0 * coils) * sigma
    limit = mean + 4.0 * sigma
    at_floor = (y[0] < limit) & (y[1] < limit) & (y[0] > 0)
    parts = [y[2:, at_floor].ravel()]
    high = mean + 5.0 * sigma
    n_lead = np.cumprod(y >= high, axis=0).sum(0)
    fast = (n_lead >= 2) & (n_lead <= y.shape[0] - 2)
    if fast.any():
        yf, nf = y[:, fast], n_lead[fast]
        sf = sigma[fast] if sigma.ndim else sigma
        lead = np.arange(y.shape[0])[:, None] < nf[None, :]
        r2, ln_s0 = estimators.weighted_loglinear(yf, t, np.where(lead, yf * yf, 0.0))
        with np.errstate(over="ignore", invalid="ignore"):
            predicted = np.exp(ln_s0 - np.outer(t, r2))
            late = np.arange(y.shape[0])[:, None] > nf[None, :]  # skip the echo that ended the run
            pure = late & (predicted < 0.1 * sf) & np.isfinite(predicted) & (r2 > 0)
        parts.append(yf[pure])
    samples = np.concatenate(parts)
    return samples[np.isfinite(samples) & (samples > 0)]


def _coils_from_floor(y, t, sigma, default):
    """Effective coil count from pure-floor samples, E[M^2] = 2 L sigma^2 (default if too few)."""
    floor = floor_samples(y, t, sigma, default)
    if floor.size < 500:
        return default
    return max(float(np.mean(floor * floor) / (2.0 * sigma * sigma)), 1.0)


def estimate_noise_echo_train(signal2d, t, candidates, spatial=None, coils=None) -> EchoTrainNoise | None:
    """sigma (and a noise map where it varies) from the residuals of the echo decay.

    signal2d : (n_echoes, n_voxels) magnitudes; t : (n_echoes,) echo times in s;
    candidates : (n_voxels,) bool, voxels that may hold tissue (finite, non-negative).
    spatial : the spatial shape (neighbours and the noise map). coils : effective coil count
    if known. Returns None when fewer than 200 voxel pairs have three echoes clearly above the
    floor.
    """
    if signal2d.shape[0] < MIN_ECHOES_FOR_RESIDUALS:
        return None
    spatial = tuple(spatial) if spatial is not None else (signal2d.shape[1],)
    guide, index, partner = neighbour_triples(np.asarray(candidates, bool), spatial)
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
    L = float(coils) if coils is not None else _coils_from_floor(ya, t, sigma, 1.0)
    for _ in range(3):
        # refine on every pair with echoes well above the floor, until sigma settles (1 %)
        n_keep = _leading_echoes(yc, SNR_FOR_RESIDUALS * sigma + np.sqrt(2.0 * L) * sigma)
        var, dofs, keep, amp2 = paired_residual_variances(ya, yb, t, n_keep, coils=L, sigma=sigma)
        if var.size < 200:
            return None
        sigma2, misfit = separate_misfit(var, dofs, amp2)
        previous, sigma = sigma, float(np.sqrt(sigma2))
        if coils is None:
            L = _coils_from_floor(ya, t, sigma, L)
        if abs(sigma / previous - 1.0) < 0.01:
            break
    # the map is built from the variances with the amplitude-proportional misfit removed
    log_var = np.log(np.maximum(var - misfit * amp2, 0.05 * sigma2))
    sigma_map = None
    if len(spatial) >= 2:
        full = noise_map(index[keep], log_var, dofs, spatial, 2.0 * np.log(sigma))
        if full is not None:
            lo, hi = np.percentile(full[index[keep]], [5, 95])
            if hi / lo > MAP_SPREAD_TO_USE:
                sigma_map = full
                sigma = float(np.median(full[index[keep]]))
    floor = floor_samples(ya, t, sigma if sigma_map is None else sigma_map[index], L)
    return EchoTrainNoise(
        sigma=sigma, sigma_map=sigma_map, n_voxels=int(var.size),
        floor_m1=float(floor.mean()) if floor.size else None,
        floor_m2=float(np.mean(floor * floor)) if floor.size else None, n_floor=int(floor.size))
