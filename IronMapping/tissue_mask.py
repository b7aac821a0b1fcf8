"""Which voxels a fit looks at: the body outline, invalid samples and spikes.

The automatic mask keeps every voxel inside the body outline, so a dark, heavily iron-loaded
liver or spleen (whose first echo may be near the noise floor) is fitted rather than called
air: tissue is what stands above the noise floor in the first echoes, and the holes it encloses
are filled per slice and in 3-D. A few extreme voxels (a hot pixel, a spike) are flagged on
their own and do not move any threshold.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .noise import NoiseEstimate, noise_floor_mean, noise_floor_sd

#: Standard deviations of the noise floor above its mean that count as tissue.
FLOOR_SDS = 4.0
#: A sample this many times the 99.9th percentile of its echo is not MR signal (hot pixel, spike).
SPIKE_FACTOR = 10.0


def invalid_voxels(signal2d) -> np.ndarray:
    """Voxels with NaN, inf or a negative value in any echo.

    Parameters
    ----------
    signal2d : ndarray, shape (n_echoes, n_voxels)
        Magnitudes (signal units).

    Returns
    -------
    bool ndarray, shape (n_voxels,)
    """
    out = np.empty(signal2d.shape[1], bool)
    step = 1 << 18  # in chunks of voxels: no echo-sized temporary arrays
    with np.errstate(invalid="ignore"):
        for start in range(0, signal2d.shape[1], step):
            y = signal2d[:, start:start + step]
            out[start:start + step] = ~np.all(np.isfinite(y), axis=0) | np.any(y < 0, axis=0)
    return out


def spike_voxels(signal2d, invalid=None) -> np.ndarray:
    """Voxels with a sample more than SPIKE_FACTOR x its echo's 99.9th percentile (hot pixels).

    Needs at least 1000 voxels (a percentile of a handful of voxels says nothing).

    Parameters
    ----------
    signal2d : ndarray, shape (n_echoes, n_voxels)
        Magnitudes (signal units).
    invalid : bool ndarray, shape (n_voxels,), optional
        `invalid_voxels` of the signal, computed when None; such voxels are never spikes.

    Returns
    -------
    bool ndarray, shape (n_voxels,)
    """
    n_echoes, n_vox = signal2d.shape
    spikes = np.zeros(n_vox, bool)
    if n_vox < 1000:
        return spikes
    valid = ~invalid_voxels(signal2d) if invalid is None else ~invalid
    step = max(1, n_vox // 200_000)  # the percentile of an even subsample is as good
    for echo in signal2d:
        values = echo[::step][valid[::step]]
        positive = values[values > 0]
        if positive.size < 1000:
            continue
        limit = SPIKE_FACTOR * np.percentile(positive, 99.9)
        with np.errstate(invalid="ignore"):
            spikes |= valid & (echo > limit)
    return spikes


def fill_body(mask: np.ndarray) -> np.ndarray:
    """Fill the holes of a tissue mask in every slice (last two axes) and in 3-D.

    The same as scipy's binary_fill_holes per slice and then in 3-D, done by labelling the
    background once (components that touch the border are outside) rather than flooding it
    step by step, which costs several times more on a full abdomen.

    Parameters
    ----------
    mask : bool ndarray, shape (k, j, i) or (j, i)
        Tissue mask; 1-D masks are returned unchanged.

    Returns
    -------
    bool ndarray, same shape
    """
    mask = np.asarray(mask, bool)
    if mask.ndim < 2:
        return mask
    nd = mask.ndim
    filled = mask
    if nd >= 3:
        # slice by slice: the labels of one slice, not of the volume, are held at a time
        filled = mask.copy()
        plane = ndimage.generate_binary_structure(2, 1)
        for lead in np.ndindex(mask.shape[:-2]):
            filled[lead] = ~_outside(~mask[lead], plane, (0, 1))
    return ~_outside(~filled, ndimage.generate_binary_structure(nd, 1), range(nd))


def _outside(background, structure, border_axes) -> np.ndarray:
    """Background components (connected by structure) that touch the array's border along any
    of border_axes."""
    labels, n = ndimage.label(background, structure)
    touching = np.zeros(n + 1, bool)
    for axis in border_axes:
        touching[np.take(labels, 0, axis=axis)] = True
        touching[np.take(labels, -1, axis=axis)] = True
    touching[0] = False
    return touching[labels]


def tissue_threshold(noise: NoiseEstimate, k: float = FLOOR_SDS):
    """Signal level above which a first-echo sample is tissue: floor mean + k floor SDs.

    Parameters
    ----------
    noise : NoiseEstimate
        Its ``sigma_map`` is used when present.
    k : float
        Noise-floor SDs above the floor mean.

    Returns
    -------
    float or ndarray, shape (n_voxels,)
        Threshold in signal units (per voxel with a noise map).
    """
    sigma = noise.sigma if noise.sigma_map is None else noise.sigma_map
    return noise_floor_mean(sigma, noise.coils) + k * noise_floor_sd(sigma, noise.coils)


def automatic_mask(first_echo, noise: NoiseEstimate | None = None, k: float = FLOOR_SDS,
                   spatial=None, second_echo=None) -> np.ndarray:
    """Tissue mask from the first echo(es): above the noise floor, holes filled.

    Parameters
    ----------
    first_echo : ndarray, shape (n_voxels,)
        Magnitudes of echo 1 (signal units).
    noise : NoiseEstimate, optional
        Without it Otsu's threshold is used on values clipped against spikes.
    k : float
        Noise-floor SDs above the floor mean that count as tissue.
    spatial : tuple of int, optional
        The spatial shape (k, j, i), to fill the holes of the body outline (a dark,
        iron-loaded organ inside the body is kept).
    second_echo : ndarray, shape (n_voxels,), optional
        Echo 2; a voxel above the floor in either echo counts.

    Returns
    -------
    bool ndarray, shape (n_voxels,)
    """
    from .noise_source import robust_otsu

    first = np.nan_to_num(np.asarray(first_echo, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    if noise is None:
        mask = first > robust_otsu(first[first > 0])
    else:
        threshold = tissue_threshold(noise, k)
        mask = first > threshold
        if second_echo is not None:
            second = np.nan_to_num(np.asarray(second_echo, dtype=np.float32), nan=0.0, posinf=0.0)
            mask |= second > threshold
    if spatial is not None and len(spatial) >= 2:
        mask = fill_body(mask.reshape(spatial)).reshape(-1)
    return mask
