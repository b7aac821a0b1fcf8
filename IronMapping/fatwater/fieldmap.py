"""A spatially consistent field map for the complex fat-water fit.

Voxel by voxel, the complex data of a fat-water voxel fit about equally well at the true field
map and at a "swapped" one about one fat frequency away (water taken for fat and back), and
for uniformly spaced echoes every field map is known only modulo 1/dTE. Fitting each voxel on
its own therefore leaves patches of swapped PDFF. Here, as in the field-map methods of the
ISMRM fat-water toolbox family, the candidates come first and space decides between them:

1. Residual curve per voxel (variable projection, Hernando D et al., Magn Reson Med
   2008;59:571-580, doi:10.1002/mrm.21522): for each field map psi on a grid, water and fat
   (complex) are solved in closed form with R2* from the magnitude fit, leaving the residual
   energy J(psi). Its local minima are the candidate field maps.
2. Multi-resolution selection (after Lu W & Hargreaves BA, Magn Reson Med 2008;60:236-244,
   doi:10.1002/mrm.21544; region growing from confident voxels, Yu H et al., Magn Reson Med
   2005;54:1032-1039, doi:10.1002/mrm.20654): a field map smoothed at a coarse scale, each
   voxel weighted by how decisively its best candidate beats its second (so that confident
   voxels lead), picks in every voxel the candidate nearest to it; the scale is halved down to
   one voxel. Smoothing works on the phasor exp(i 2 pi psi dTE), so aliasing by 1/dTE does not
   matter.

All steps are vectorised over voxels (matrix products and ``scipy.ndimage`` filters).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

_MAX_CANDIDATES = 3

COARSEST_VOXELS = 8.0
"""Smoothing SD (voxels) of the coarsest selection step. Coarser steps lag a field map that
varies fast (near the edge of the field of view) and swapped it there on the Kellman PKdata9
slice; finer ones let larger wrongly chosen patches stand."""
_GRID_MIN, _GRID_MAX = 24, 256


def fieldmap_grid_hz(te_s, period_hz):
    """Field maps (Hz) at which the residual curve is evaluated, and the grid's period (Hz).

    Uniform echoes: one period 1/dTE. Otherwise [-P/2, P/2) with P = 1 / (smallest echo
    spacing), not periodic (``period`` None). About four points per width of a minimum
    (1 / echo-train length).

    Parameters
    ----------
    te_s : array_like, (n_echoes,)
        Echo times in s, increasing.
    period_hz : float or None
        1/dTE for uniform echoes (:func:`echo_period_hz`), else None.

    Returns
    -------
    grid_hz : ndarray, (K,)
        Field maps in Hz, K between 24 and 256.
    width_hz : float
        Width of the grid in Hz (``period_hz`` when given, else P).
    """
    te_s = np.asarray(te_s, dtype=float)
    span = float(te_s[-1] - te_s[0])
    width = period_hz if period_hz is not None else 1.0 / float(np.min(np.diff(te_s)))
    k = int(np.clip(np.ceil(4.0 * width * span), _GRID_MIN, _GRID_MAX))
    return -0.5 * width + width * np.arange(k) / k, width


def residual_curves(z, te_s, c, r2star, grid_hz):
    """Residual energy after the closed-form water/fat solve at each field map of the grid.

    Parameters
    ----------
    z : complex ndarray, (n_echoes, n_voxels)
        Complex echoes.
    te_s : array_like, (n_echoes,)
        Echo times in s.
    c : complex ndarray, (n_echoes,)
        Fat phasor.
    r2star : array_like, (n_voxels,)
        R2* in 1/s, held fixed (e.g. from the magnitude fit).
    grid_hz : ndarray, (K,)
        Field maps, Hz.

    Returns
    -------
    curves : ndarray, (n_voxels, K)
        Residual energy J (signal units^2), >= 0.
    energy : ndarray, (n_voxels,)
        sum |z|^2 over the echoes.
    """
    t = np.asarray(te_s, dtype=float)[:, None]
    d = np.exp(-t * np.nan_to_num(np.asarray(r2star, dtype=float))[None])    # [E, n]
    a = z * d
    b = a * np.conj(c)[:, None]
    phasors = np.exp(-2j * np.pi * t * np.asarray(grid_hz)[None])             # [E, K]
    u1 = a.T @ phasors
    u2 = b.T @ phasors
    d2 = d * d
    g11 = d2.sum(0)[:, None]
    g22 = ((np.abs(c) ** 2)[:, None] * d2).sum(0)[:, None]
    g12 = (c[:, None] * d2).sum(0)[:, None]
    det = np.maximum(g11 * g22 - np.abs(g12) ** 2, 1e-300)
    projected = (g22 * np.abs(u1) ** 2 + g11 * np.abs(u2) ** 2
                 - 2.0 * np.real(g12 * np.conj(u1) * u2)) / det
    energy = (np.abs(z) ** 2).sum(0)
    return np.maximum(energy[:, None] - projected, 0.0), energy


def candidate_minima(curves, grid_hz, periodic, max_candidates=_MAX_CANDIDATES):
    """Local minima of each residual curve, lowest first, refined by a parabola.

    Returns (fields [n, M] Hz, residuals [n, M], decisiveness [n]): NaN-padded candidates and
    the residual gap between the best and the second-best minimum (or the curve's range when
    there is only one minimum).

    Parameters
    ----------
    curves : ndarray, (n_voxels, K)
        Residual energy at each grid field map (:func:`residual_curves`).
    grid_hz : ndarray, (K,)
        Uniform grid of field maps, Hz.
    periodic : bool
        The grid wraps (uniform echoes); otherwise its end points can be minima.
    max_candidates : int
        M, the most minima kept per voxel.

    Returns
    -------
    fields : ndarray, (n_voxels, M)
        Candidate field maps in Hz, NaN-padded.
    residuals : ndarray, (n_voxels, M)
        Refined residual energy at each candidate, NaN-padded.
    decisiveness : ndarray, (n_voxels,)
        Residual gap between the best and the second-best minimum, >= 0.
    """
    n, k = curves.shape
    left = np.roll(curves, 1, axis=1)
    right = np.roll(curves, -1, axis=1)
    is_min = (curves < left) & (curves <= right)
    if not periodic:
        is_min[:, 0] = curves[:, 0] <= curves[:, 1]
        is_min[:, -1] = curves[:, -1] < curves[:, -2]
        left[:, 0], right[:, -1] = curves[:, 0], curves[:, -1]
    masked = np.where(is_min, curves, np.inf)
    order = np.argsort(masked, axis=1)[:, :max_candidates]
    rows = np.arange(n)[:, None]
    value = masked[rows, order]
    lo, mid, hi = left[rows, order], curves[rows, order], right[rows, order]
    denominator = lo - 2.0 * mid + hi
    with np.errstate(invalid="ignore", divide="ignore"):
        shift = np.where(denominator > 0, 0.5 * (lo - hi) / denominator, 0.0)
    shift = np.clip(np.nan_to_num(shift), -0.5, 0.5)
    step = grid_hz[1] - grid_hz[0]
    fields = grid_hz[order] + shift * step
    refined = mid - 0.25 * (lo - hi) * shift
    ok = np.isfinite(value)
    fields = np.where(ok, fields, np.nan)
    refined = np.where(ok, refined, np.nan)
    second = np.where(np.isfinite(value[:, 1]), refined[:, 1], curves.max(1)) \
        if value.shape[1] > 1 else curves.max(1)
    decisiveness = np.maximum(np.nan_to_num(second - refined[:, 0]), 0.0)
    return fields, refined, decisiveness


def candidate_pdff(z, te_s, c, r2star, fields):
    """PDFF (percent) of the closed-form complex water/fat solution at each candidate field map.

    Parameters
    ----------
    z : complex ndarray, (n_echoes, n_voxels)
        Complex echoes.
    te_s : array_like, (n_echoes,)
        Echo times in s.
    c : complex ndarray, (n_echoes,)
        Fat phasor (:func:`IronMapping.fatmodel.fat_phasor`).
    r2star : array_like, (n_voxels,)
        R2* in 1/s, held fixed (NaN taken as 0).
    fields : ndarray, (n_voxels, M)
        Candidate field maps in Hz (NaN allowed).

    Returns
    -------
    ndarray, (n_voxels, M)
        PDFF in %.
    """
    t = np.asarray(te_s, dtype=float)[:, None]
    d = np.exp(-t * np.nan_to_num(np.asarray(r2star, dtype=float))[None])
    d2 = d * d
    g11 = d2.sum(0)
    g22 = ((np.abs(c) ** 2)[:, None] * d2).sum(0)
    g12 = (c[:, None] * d2).sum(0)
    det = np.maximum(g11 * g22 - np.abs(g12) ** 2, 1e-300)
    out = np.full(fields.shape, np.nan)
    a = z * d
    b = a * np.conj(c)[:, None]
    for k in range(fields.shape[1]):
        ph = np.exp(-2j * np.pi * t * np.nan_to_num(fields[:, k])[None])
        u1, u2 = (a * ph).sum(0), (b * ph).sum(0)
        water = (g22 * u1 - g12 * u2) / det
        fat = (g11 * u2 - np.conj(g12) * u1) / det
        with np.errstate(invalid="ignore", divide="ignore"):
            out[:, k] = 100.0 * np.abs(fat) / (np.abs(water) + np.abs(fat))
    out[~np.isfinite(fields)] = np.nan
    return out


def _nearest(fields, reference, period):
    d = fields - reference[:, None]
    if period is not None:
        d = (d + 0.5 * period) % period - 0.5 * period
    d = np.where(np.isfinite(d), np.abs(d), np.inf)
    pick = np.argmin(d, axis=1)
    return fields[np.arange(fields.shape[0]), pick]


def _smoothed(values, weights, mask, sigma, period):
    """Weighted Gaussian average of a field map over the mask (on the phasor if periodic)."""
    grid_w = np.zeros(mask.shape)
    grid_w[mask] = weights
    den = ndimage.gaussian_filter(grid_w, sigma, mode="constant")[mask]
    if period is None:
        grid = np.zeros(mask.shape)
        grid[mask] = weights * values
        num = ndimage.gaussian_filter(grid, sigma, mode="constant")[mask]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, num / den, values)
    phasor = weights * np.exp(2j * np.pi * values / period)
    re, im = np.zeros(mask.shape), np.zeros(mask.shape)
    re[mask], im[mask] = phasor.real, phasor.imag
    num = (ndimage.gaussian_filter(re, sigma, mode="constant")[mask]
           + 1j * ndimage.gaussian_filter(im, sigma, mode="constant")[mask])
    return np.where(np.abs(num) > 0, np.angle(num) * period / (2 * np.pi), values)


def select_consistent(fields, decisiveness, mask, period, coarsest=None, start=None):
    """Pick per voxel the candidate field map that agrees with its smoothed neighbourhood.

    The weighted, smoothed field map is the reference for the nearest candidate of each voxel,
    with the smoothing SD halved from ``coarsest`` down to 1 voxel.

    Parameters
    ----------
    fields : ndarray, (n_voxels, M)
        Candidates (Hz, NaN-padded, best first) of the voxels of ``mask`` (C order).
    decisiveness : ndarray, (n_voxels,)
        Weight of each voxel (residual gap between its two best candidates).
    mask : bool ndarray, spatial shape
        The voxels, in C order.
    period : float or None
        Period of the field map in Hz (uniform echoes), else None.
    coarsest : float, optional
        Smoothing SD (voxels) to start from, default ``COARSEST_VOXELS``.
    start : ndarray, (n_voxels,), optional
        Field map (Hz) to start from (default: each voxel's best candidate).

    Returns
    -------
    ndarray, (n_voxels,)
        Field map, Hz.
    """
    mask = np.asarray(mask, dtype=bool)
    current = (fields[:, 0] if start is None else np.asarray(start, dtype=float)).copy()
    if current.size == 0:
        return current
    scale = np.median(decisiveness[decisiveness > 0]) if np.any(decisiveness > 0) else 1.0
    weights = np.minimum(decisiveness / scale, 100.0)
    sigma = float(coarsest if coarsest is not None else COARSEST_VOXELS)
    while True:
        reference = _smoothed(current, weights, mask, sigma, period)
        current = _nearest(fields, reference, period)
        if sigma <= 1.0:
            break
        sigma = max(1.0, sigma / 2.0)
    return current


MAGNITUDE_SIDE_MARGIN = 10.0
"""A magnitude PDFF below 50 - 10 % or above 50 + 10 % (and not ambiguous) rules out the field
map candidates whose water/fat solution lies on the other side of 50 %: a fat-water swap turns
PDFF p into about 100 - p (the combined complex/magnitude idea of Yu H et al., Magn Reson Med
2011;66:199-206)."""


def _magnitude_side(fields, residuals, decisive, curves, magnitude_pdff, pdff):
    """Drop candidates contradicting a clear magnitude PDFF; re-rank and re-weigh the rest."""
    clear = np.isfinite(magnitude_pdff) & (np.abs(magnitude_pdff - 50.0)
                                           > MAGNITUDE_SIDE_MARGIN)
    fat_side = magnitude_pdff > 50.0
    wrong = clear[:, None] & np.isfinite(pdff) & ((pdff > 50.0) != fat_side[:, None])
    keep_any = (np.isfinite(fields) & ~wrong).any(1)
    wrong &= keep_any[:, None]
    residuals = np.where(wrong | ~np.isfinite(fields), np.inf, residuals)
    order = np.argsort(residuals, axis=1)
    rows = np.arange(fields.shape[0])[:, None]
    fields = np.where(np.isfinite(residuals[rows, order]), fields[rows, order], np.nan)
    residuals = residuals[rows, order]
    second = np.where(np.isfinite(residuals[:, 1]), residuals[:, 1], curves.max(1))
    changed = wrong.any(1)
    decisive = np.where(changed, np.maximum(np.nan_to_num(second - residuals[:, 0]), 0.0),
                        decisive)
    return fields, residuals, decisive


def spatial_fieldmap(z, mask, te_s, c, r2star, period_hz, magnitude_pdff=None):
    """Spatially consistent field map (Hz) of the voxels of ``mask``.

    Parameters
    ----------
    z : complex ndarray, (n_echoes, n_voxels)
        Signal of the voxels of ``mask`` (C order).
    mask : bool ndarray, spatial shape
        The voxels.
    te_s : array_like, (n_echoes,)
        Echo times in s.
    c : complex ndarray, (n_echoes,)
        Fat phasor (precession convention applied).
    r2star : ndarray, (n_voxels,)
        R2* in 1/s, held fixed.
    period_hz : float or None
        1/dTE for uniform echoes, else None.
    magnitude_pdff : ndarray, (n_voxels,), optional
        PDFF (%) of the magnitude fit: where it is clearly below or above 50 %
        (``MAGNITUDE_SIDE_MARGIN``), candidates on the other side are dropped and it picks the
        voxel's starting candidate and weight; the final choice is still the spatially
        consistent one.

    Returns
    -------
    fieldmap_hz : ndarray, (n_voxels,)
        Field map, Hz.
    info : dict
        The candidate grid for provenance: ``grid_points``, ``grid_width_hz``, ``periodic``.
    """
    grid, width = fieldmap_grid_hz(te_s, period_hz)
    n = z.shape[1]
    fields = np.full((n, _MAX_CANDIDATES), np.nan)
    start = np.full(n, np.nan)
    decisive = np.zeros(n)
    step = 8192
    for i in range(0, n, step):
        curves, _ = residual_curves(z[:, i:i + step], te_s, c, r2star[i:i + step], grid)
        sl = slice(i, i + step)
        f_sl, j_sl, decisive[sl] = candidate_minima(curves, grid, period_hz is not None)
        fields[sl] = f_sl
        if magnitude_pdff is not None:
            # A clear magnitude solution picks the voxel's starting candidate and its weight;
            # the final choice is still the spatially consistent one.
            f_sl, _, decisive[sl] = _magnitude_side(
                f_sl, j_sl, decisive[sl], curves, magnitude_pdff[sl],
                candidate_pdff(z[:, sl], te_s, c, r2star[sl], f_sl))
        start[sl] = f_sl[:, 0]
    chosen = select_consistent(fields, decisive, mask, period_hz, start=start)
    return chosen, {"grid_points": int(grid.size), "grid_width_hz": float(width),
                    "periodic": period_hz is not None}
