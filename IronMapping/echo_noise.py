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
from scipy import ndimage, special, stats

from . import estimators

#: An echo enters the residual estimate while its magnitude exceeds this many sigma: there the
#: magnitude's variance is within a few per cent of sigma^2, and that deficit is corrected.
SNR_FOR_RESIDUALS = 5.0
#: Fewest leading echoes above that level for a voxel pair to count (one residual degree of
#: freedom per voxel), so that 3-echo protocols are covered.
MIN_ECHOES_FOR_RESIDUALS = 3
#: Voxels sampled for the estimate at most (spread evenly over the image): the pooled sigma is
#: then precise to well under 1 %, and the cost stays small beside the fit itself.
MAX_SAMPLED_VOXELS = 20_000
#: Voxels with residuals wanted per noise-map tile, and slices per tile (3-D images).
VOXELS_PER_TILE = 200
TILE_SLICES = 4
#: Fewest pure-floor samples for a coil count (each carries information ~L on the floor level).
MIN_FLOOR_SAMPLES = 300
#: Fewest floor samples for a tile's own floor estimate.
MIN_TILE_FLOOR_SAMPLES = 30
#: A tile whose noise SD exceeds the broad trend by this factor is taken as misfit.
HOT_TILE = 1.2
#: Gaussian smoothing of the tile estimates, in tiles.
MAP_SMOOTHING_TILES = 0.5
#: The noise map is used only when it spans more than this ratio (95th / 5th percentile in
#: tissue); below it, one pooled sigma is more precise than the map.
MAP_SPREAD_TO_USE = 1.2
#: A noise map made from fewer usable pairs than this share of those sampled is made again
#: from up to MAP_MAX_RESAMPLING times as many.
MAP_KEPT_SHARE = 0.4
#: A map is made only where the tiles' log variances spread more than this many times what
#: their sampling noise explains.
MAP_SIGNIFICANCE = 2.0
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


def _tile_shape(spatial, n_samples) -> tuple[int, ...]:
    """Tile edges (voxels per axis) so that a tile holds about VOXELS_PER_TILE samples."""
    n_vox = int(np.prod(spatial))
    per_tile = n_vox * VOXELS_PER_TILE / max(n_samples, 1)
    slices = [min(n, TILE_SLICES) for n in spatial[:-2]]
    edge = int(np.clip(round(np.sqrt(per_tile / max(np.prod(slices), 1))), 8, max(spatial[-2:])))
    return tuple(slices + [edge, edge])


def tile_ids(index, spatial):
    """Noise-map tiles of sampled voxels.

    Parameters
    ----------
    index : int ndarray, shape (n,)
        Flat voxel indices.
    spatial : tuple of int
        Spatial shape (k, j, i).

    Returns
    -------
    (tile_id, grid_shape, tile) or None
        Tile id per sample (shape (n,)), the tile grid shape and the voxels per tile along each
        axis; None for fewer than two spatial axes or fewer than 4 tiles.
    """
    if len(spatial) < 2:
        return None
    tile = _tile_shape(spatial, index.size)
    grid_shape = tuple(-(-n // s) for n, s in zip(spatial, tile))
    if int(np.prod(grid_shape)) < 4:
        return None
    coords = np.unravel_index(index, spatial)
    return np.ravel_multi_index(tuple(c // s for c, s in zip(coords, tile)), grid_shape), grid_shape, tile


def noise_map(index, log_variance, dofs, spatial, log_sigma2, floor=None, coils=1.0):
    """Smooth noise SD map, or None where the noise is uniform or unmeasured.

    The residual variances are pooled in tiles (median after trimming misfit outliers,
    corrected for the chi^2 median). Where the signal is too weak for residuals (the centre of a
    parallel-imaging image, a dark iron-loaded liver) the floor samples carry the local noise:
    E[M^2] = 2 L sigma^2 with the given coil count L. Tiles with floor samples take the floor's
    sigma (so that the floor level 2 L sigma^2 is exact there), the others the residuals'; the
    tiles are lightly smoothed and interpolated back to the voxel grid.

    Parameters
    ----------
    index : int ndarray, shape (n,)
        Flat indices of voxels with residual variances.
    log_variance : ndarray, shape (n,)
        Their log variances, misfit removed.
    dofs : int ndarray, shape (n,)
        Their degrees of freedom.
    spatial : tuple of int
        Spatial shape (k, j, i).
    log_sigma2 : float
        Pooled log sigma^2, for tiles without residuals.
    floor : (int ndarray, ndarray), optional
        (flat voxel index, magnitude) of pure-floor samples.
    coils : float
        Effective coil count L of the floor samples.

    Returns
    -------
    TileMap or None
    """
    tiles = tile_ids(index, spatial)
    if tiles is None:
        return None
    tile_id, grid_shape, tile = tiles
    n_tiles = int(np.prod(grid_shape))
    d_values, d_index = np.unique(dofs, return_inverse=True)
    normalised = log_variance - np.log(stats.chi2.median(d_values) / d_values)[d_index]
    # two passes: tile medians, then again without voxels far above their tile's median (misfit)
    spread = np.sqrt(2.0 / np.maximum(dofs, 1)) * 3.0
    keep = np.ones(index.size, bool)
    for _ in range(2):
        med, count = _group_median(tile_id[keep], normalised[keep], n_tiles)
        fallback = np.where(np.isfinite(med), med, log_sigma2)
        keep = normalised <= fallback[tile_id] + spread
    med, count = _group_median(tile_id[keep], normalised[keep], n_tiles)
    res_ok = np.isfinite(med) & (count >= 30)
    info_res = np.where(res_ok, count * np.median(dofs) / 2.0, 0.0)
    values = np.where(res_ok, np.nan_to_num(med), 0.0)
    info = info_res.copy()
    # sampling variance of each tile's log variance: a median of log chi^2_d / d values
    # (variance trigamma(d/2) each, the median pi/2 times the mean's), or the log of a mean of
    # floor powers (relative variance 1/L per sample)
    d_typical = float(np.median(dofs))
    sampling_var = np.where(res_ok, 0.5 * np.pi * special.polygamma(1, 0.5 * d_typical) / np.maximum(count, 1), np.inf)
    if floor is not None and floor[0].size:
        f_tile = np.ravel_multi_index(tuple(c // s for c, s in zip(np.unravel_index(floor[0], spatial), tile)),
                                      grid_shape)
        f_count = np.bincount(f_tile, minlength=n_tiles)
        f_m2 = np.bincount(f_tile, weights=floor[1].astype(np.float64) ** 2, minlength=n_tiles)
        f_ok = f_count >= MIN_TILE_FLOOR_SAMPLES
        with np.errstate(divide="ignore", invalid="ignore"):
            log_m2 = np.log(f_m2 / np.maximum(f_count, 1))
        # where the floor is sampled it gives the level 2 L sigma^2 exactly, whatever L is, which
        # is what the noise-floor models need; elsewhere the residuals give sigma
        values = np.where(f_ok, log_m2 - np.log(2.0 * coils), values)
        info = np.where(f_ok, f_count * coils, info_res)
        sampling_var = np.where(f_ok, 1.0 / np.maximum(f_count * coils, 1), sampling_var)
    weight = info.reshape(grid_shape)
    values = values.reshape(grid_shape)
    if weight.sum() == 0:
        return None
    # g-factor maps vary over large distances; a tile far above the broad trend is misfit
    # (partial volume at an organ's edge, fat in marrow), not noise: it takes the trend
    trend_w = ndimage.gaussian_filter(weight, 2.0, mode="nearest")
    with np.errstate(invalid="ignore", divide="ignore"):
        trend = ndimage.gaussian_filter(values * weight, 2.0, mode="nearest") / trend_w
    hot = (weight > 0) & np.isfinite(trend) & (values > trend + 2.0 * np.log(HOT_TILE))
    values = np.where(hot, trend, values)
    if not _varies_beyond_sampling(values.reshape(-1), sampling_var, weight.reshape(-1) > 0):
        return None
    # light smoothing across tiles: enough to fill empty tiles and steady sparse ones, little
    # enough to follow a g-factor map that rises two-fold over a few tiles
    smoothed_w = ndimage.gaussian_filter(weight, MAP_SMOOTHING_TILES, mode="nearest")
    smoothed_v = ndimage.gaussian_filter(values * weight, MAP_SMOOTHING_TILES, mode="nearest")
    with np.errstate(invalid="ignore", divide="ignore"):
        log_s2 = np.where(smoothed_w > 1e-6 * weight.max(), smoothed_v / smoothed_w, np.nan)
    if np.isnan(log_s2).any():  # tiles far from any estimate: the nearest estimate
        nearest = ndimage.distance_transform_edt(np.isnan(log_s2), return_distances=False, return_indices=True)
        log_s2 = log_s2[tuple(nearest)]
    lo, hi = np.percentile(log_s2.reshape(-1)[tile_id], [5, 95])
    if np.exp(0.5 * (hi - lo)) <= 0.9 * MAP_SPREAD_TO_USE:
        return None  # uniform noise: no map
    return TileMap(log_s2.astype(np.float32), tuple(tile), tuple(spatial))


@dataclass(frozen=True)
class TileMap:
    """A noise SD map held as log variances on a coarse grid of tiles.

    Interpolated linearly (as ndimage.zoom with grid_mode) wherever it is asked for: at sampled
    voxels cheaply, on the whole grid only when the map is used.

    Attributes
    ----------
    log_variance : float32 ndarray, shape of the tile grid
        log sigma^2 per tile.
    tile : tuple of int
        Voxels per tile along each axis.
    spatial : tuple of int
        The image's spatial shape (k, j, i).
    """

    log_variance: np.ndarray  # (tile grid shape) float32
    tile: tuple               # voxels per tile along each axis
    spatial: tuple            # the image's spatial shape

    def at(self, flat_index) -> np.ndarray:
        """Noise SD at given voxels.

        Parameters
        ----------
        flat_index : int ndarray
            Flat voxel indices, any shape.

        Returns
        -------
        float64 ndarray, same shape
            sigma in signal units.
        """
        coords = np.unravel_index(np.asarray(flat_index), self.spatial)
        grid = [(c + 0.5) / s - 0.5 for c, s in zip(coords, self.tile)]
        values = ndimage.map_coordinates(self.log_variance.astype(np.float64), grid, order=1, mode="nearest")
        return np.exp(0.5 * values)

    def full(self) -> np.ndarray:
        """Noise SD (float32, signal units) at every voxel, flat: shape (n_voxels,)."""
        full = ndimage.zoom(self.log_variance, [float(s) for s in self.tile], order=1, mode="nearest",
                            grid_mode=True)
        full = full[tuple(slice(0, n) for n in self.spatial)]
        if full.shape != tuple(self.spatial):  # zoom rounding: pad with the edge value
            full = np.pad(full, [(0, n - m) for n, m in zip(self.spatial, full.shape)], mode="edge")
        return np.exp(0.5 * full).astype(np.float32).reshape(-1)


def _varies_beyond_sampling(values, sampling_var, measured) -> bool:
    """True when the tiles' log variances spread more than their sampling noise explains
    (MAP_SIGNIFICANCE times it): otherwise a map would only add the tiles' noise to the fit."""
    if measured.sum() < 4:
        return False
    v = values[measured]
    return float(np.var(v)) > MAP_SIGNIFICANCE * float(np.mean(sampling_var[measured]))


def _weighted_median(values, weights) -> float:
    order = np.argsort(values)
    cum = np.cumsum(np.asarray(weights, dtype=np.float64)[order])
    return float(np.asarray(values)[order][np.searchsorted(cum, 0.5 * cum[-1])])


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
        if _still_decaying(values, rows):
            # fat oscillation or a second component faked a fast decay: these echoes hold signal
            return np.empty(0), np.empty(0, np.intp)
        parts.append(values)
        cols.append(columns[:, fast][pure])
    if not parts:
        return np.empty(0), np.empty(0, np.intp)
    samples = np.concatenate(parts)
    cols = np.concatenate(cols)
    ok = np.isfinite(samples) & (samples > 0)
    return samples[ok], cols[ok]


def _still_decaying(values, rows) -> bool:
    """True when the mean square of would-be floor samples falls from the earlier to the later
    echoes by more than 15 %: pure noise does not decay."""
    if values.size < 200:
        return False
    split = np.median(rows)
    early, late = values[rows <= split], values[rows > split]
    if early.size < 100 or late.size < 100:
        return False
    return float(np.mean(late * late)) < 0.85 * float(np.mean(early * early))


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


def _refine(yc, ya, yb, t, sigma_guide, sigma_pair, coils):
    """Paired residual variances of the echoes well above the floor (chosen on the guide voxel).

    The level keeps the noncentral-chi variance deficit (2L - 1) sigma^2 / (2 A^2) within a
    few per cent, so that its first-order correction is accurate for any coil count.
    """
    snr = max(SNR_FOR_RESIDUALS, float(np.sqrt(10.0 * (2.0 * coils - 1.0))))
    n_keep = _leading_echoes(yc, (snr + np.sqrt(2.0 * coils)) * np.asarray(sigma_guide))
    return paired_residual_variances(ya, yb, t, n_keep, coils=coils, sigma=np.asarray(sigma_pair))


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
