"""Start selection of the magnitude fit from the evidence summed over a neighbourhood."""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from .checks import FAT_DOMINANT_EVIDENCE
from .magnitude import _OUTPUT_KEYS, ambiguous_solutions

def choose_starts_by_neighbourhood(result, mask, noise_sigma, size=3,
                                   fat_evidence=FAT_DOMINANT_EVIDENCE):
    """Choose each voxel's start by the summed log-likelihood ratio over a neighbourhood.

    The magnitude alone often cannot tell the water- from the fat-dominant solution at high
    R2* and modest SNR; neighbouring voxels of one tissue share the answer, so the evidence
    (log-likelihood ratio) is summed over a ``size``-wide box (within the mask); the
    fat-dominant solution is chosen where the sum exceeds ``fat_evidence`` (nats). Voxels whose
    choice changes get the other start's solution. ``fat_water_ambiguous`` is then 1 where
    even the summed evidence does not separate two solutions of different PDFF.

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
    # The flag now says whether the pooled evidence separates the two solutions.
    result["fat_water_ambiguous"] = ambiguous_solutions(summed, result["pdff"], result["alt_pdff"])
    return result

