"""The noise map of parallel imaging: residual variances pooled in tiles, smoothed, interpolated.

Parallel imaging makes sigma vary in space (g-factor; Dietrich et al., JMRI 2007;26:375). The
residual variances of the echo train (echo_noise) and the pure-floor samples (noise_floor) are
pooled in tiles of a few hundred samples; a tile far above the broad trend is misfit, not noise;
a map is kept only where the tiles spread more than their sampling noise explains.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage, special, stats

from .noise_floor import MIN_TILE_FLOOR_SAMPLES


#: Voxels with residuals wanted per noise-map tile, and slices per tile (3-D images).
VOXELS_PER_TILE = 200
TILE_SLICES = 4
#: A tile whose noise SD exceeds the broad trend by this factor is taken as misfit.
HOT_TILE = 1.2
#: Gaussian smoothing of the tile estimates, in tiles.
MAP_SMOOTHING_TILES = 0.5
#: The noise map is used only when it spans more than this ratio (95th / 5th percentile in
#: tissue); below it, one pooled sigma is more precise than the map.
MAP_SPREAD_TO_USE = 1.2
#: A map is made only where the tiles' log variances spread more than this many times what
#: their sampling noise explains.
MAP_SIGNIFICANCE = 2.0


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
