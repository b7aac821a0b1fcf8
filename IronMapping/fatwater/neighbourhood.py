"""Start selection of the magnitude fit from the evidence summed over a neighbourhood."""

from __future__ import annotations

import itertools

import numpy as np

from ..errors import InputError
from .checks import FAT_DOMINANT_EVIDENCE
from .magnitude import _OUTPUT_KEYS, AMBIGUOUS_PDFF_POINTS, ambiguous_solutions


def _shifted(grid, offset, fill):
    """grid[i + offset] at every i (``fill`` where i + offset is outside the grid)."""
    out = np.full(grid.shape, fill, dtype=grid.dtype)
    src, dst = [], []
    for o, s in zip(offset, grid.shape):
        src.append(slice(max(o, 0), s + min(o, 0)))
        dst.append(slice(max(-o, 0), s + min(-o, 0)))
    out[tuple(dst)] = grid[tuple(src)]
    return out


def pooled_evidence(llr, water_pdff, fat_pdff, mask, size=3, tolerance=AMBIGUOUS_PDFF_POINTS,
                    r2star=None):
    """Log-likelihood ratio summed over the similar neighbours in a ``size``-wide box.

    A neighbour counts when both its solutions are the same answers as the voxel's (the PDFF of
    its water-dominant and of its fat-dominant solution each within ``tolerance`` points): then
    it offers the same two explanations and its evidence adds to the voxel's. A neighbour of
    another tissue (other solutions) does not vote, so a thin fat layer next to muscle is not
    decided by the muscle. With ``r2star`` also the R2* of both solutions must agree within
    two standard deviations of their difference.

    Parameters
    ----------
    llr, water_pdff, fat_pdff : ndarray, (n_voxels,)
        Log-likelihood ratio (nats) and the PDFF (%) of the water- and fat-dominant solutions,
        over the voxels of ``mask`` (C order).
    mask : bool ndarray, spatial shape
        The voxels.
    size : int
        Box width in voxels (the voxel itself included).
    tolerance : float
        PDFF points within which two solutions are the same answer.
    r2star : tuple of 4 ndarray (n_voxels,), optional
        (water R2*, its SD, fat R2*, its SD), 1/s.

    Returns
    -------
    ndarray, (n_voxels,)
        The summed log-likelihood ratio, nats.
    """
    half = size // 2
    grids = []
    for values in (llr, water_pdff, fat_pdff) + (() if r2star is None else tuple(r2star)):
        g = np.full(mask.shape, np.nan)
        g[mask] = values
        grids.append(g)
    g_llr, g_water, g_fat = grids[:3]
    g_llr = np.nan_to_num(g_llr)
    summed = np.zeros(mask.shape)
    with np.errstate(invalid="ignore"):
        for offset in itertools.product(range(-half, half + 1), repeat=mask.ndim):
            n_water = _shifted(g_water, offset, np.nan)
            same = np.abs(n_water - g_water) <= tolerance
            same &= np.abs(_shifted(g_fat, offset, np.nan) - g_fat) <= tolerance
            for g_r, g_sd in zip(grids[3::2], grids[4::2]):
                spread = 2.0 * np.sqrt(g_sd ** 2 + _shifted(g_sd, offset, np.nan) ** 2)
                same &= np.abs(_shifted(g_r, offset, np.nan) - g_r) <= spread
            summed += np.where(same, _shifted(g_llr, offset, 0.0), 0.0)
    return summed[mask]


def choose_starts_by_neighbourhood(result, mask, noise_sigma, size=3,
                                   fat_evidence=FAT_DOMINANT_EVIDENCE):
    """Choose each voxel's start by the summed log-likelihood ratio over a neighbourhood.

    The magnitude alone often cannot tell the water- from the fat-dominant solution at high
    R2* and modest SNR; neighbouring voxels of one tissue share the answer, so the evidence
    (log-likelihood ratio) is summed over the similar neighbours (see ``pooled_evidence``) in
    a ``size``-wide box (within the mask); the fat-dominant solution is chosen where the sum
    exceeds ``fat_evidence`` (nats). Voxels whose choice changes get the other start's
    solution. ``fat_water_ambiguous`` is then 1 where even the summed evidence does not
    separate two solutions of different PDFF.

    Parameters
    ----------
    result : dict
        From ``fit_fatwater_chunk(..., keep_both=True)`` over the voxels of ``mask`` in C order
        (``mask`` flattened), modified in place and returned.
    mask : bool ndarray, spatial shape
        The voxels.
    noise_sigma : float or ndarray (n_voxels,)
        Noise SD per real channel (signal units), to turn costs into log-likelihood ratios.
    size : int
        Box width in voxels (3 = 3x3x3 in 3-D).
    fat_evidence : float
        Summed log-likelihood ratio (nats) above which the fat-dominant solution is chosen.

    Returns
    -------
    dict
        ``result``.

    Raises
    ------
    InputError
        ``result`` was not fitted with ``keep_both=True``.
    """
    mask = np.asarray(mask, dtype=bool)
    if "start_evidence" not in result:
        raise InputError("Neighbourhood start selection needs the fit run with keep_both=True.")
    llr = np.nan_to_num(result["start_evidence"] / np.asarray(noise_sigma, dtype=float) ** 2)
    current = result["start"] == 1
    water_pdff = np.where(current, result["alt_pdff"], result["pdff"])
    fat_pdff = np.where(current, result["pdff"], result["alt_pdff"])
    pick = lambda key, fat: np.where(current == fat, result[key], result["alt_" + key])
    r2star = (pick("r2star", False), pick("uncertainty", False),
              pick("r2star", True), pick("uncertainty", True))
    summed = pooled_evidence(llr, water_pdff, fat_pdff, mask, size, r2star=r2star)
    fat_start = summed > fat_evidence
    flip = (fat_start != current) & np.isfinite(result["alt_pdff"])
    for key in _OUTPUT_KEYS:
        a, b = result[key], result["alt_" + key]
        a_flip = a[flip].copy()
        a[flip] = b[flip]
        b[flip] = a_flip
    # The flag now says whether the pooled evidence separates the two solutions.
    result["fat_water_ambiguous"] = ambiguous_solutions(summed, result["pdff"], result["alt_pdff"])
    return result
