"""Which noise level a fit uses: given, background air, or the echo train itself.

Background air is often not pure noise on clinical images: vendors zero-fill or mask it, filter
it, and parallel imaging makes the noise in the body differ from the air's (Dietrich et al.,
JMRI 2007;26:375). So the air is used only when it passes a pure-noise test (its moment ratio
E[M]^2 / E[M^2] is that of a central chi, 0.785 for one coil, rising towards 1 with more) and
agrees with the noise measured in the tissue from the decay residuals (echo_noise). Otherwise
the echo-train estimate is used, and the warnings say why.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .echo_noise import coils_from_floor_ratio, estimate_noise_echo_train
from .errors import InputError
from .noise import (NoiseEstimate, _moment_ratio, effective_coils_from_ratio,
                    estimate_noise_background, estimate_noise_differences, otsu_threshold)

#: Background and tissue estimates agreeing within this ratio are the same noise.
AGREEMENT = 1.15
#: Moment ratio band of pure central-chi noise (one coil 0.785 ... many coils ~1), with a margin
#: for sampling error.
PURE_NOISE_RATIO = (float(_moment_ratio(1.0)) - 0.03, 1.0)
#: Background voxels used at most.
MAX_AIR_VOXELS = 100_000
#: An air "coil count" above this is faint tissue, not noise (the shape is nearly Gaussian).
MAX_AIR_COILS = 64.0
#: More exact zeros than this share of the air means the scanner zero-filled or masked it.
ZERO_FILLED_SHARE = 0.5


def background_samples(signal2d, mask_flat, spatial):
    """Magnitudes of every echo outside the body, and their flat voxel indices.

    Outside Otsu's threshold on echo 1 with its holes filled (lungs, bowel gas) and two voxels of
    margin; at most MAX_AIR_VOXELS voxels, spread evenly.

    Parameters
    ----------
    signal2d : ndarray, shape (n_echoes, n_voxels)
        Magnitudes (signal units).
    mask_flat : bool ndarray, shape (n_voxels,), or None
        User mask.
    spatial : tuple of int or None
        Spatial shape (k, j, i).

    Returns
    -------
    air : ndarray, shape (n_echoes, n_air)
        Magnitudes (signal units).
    air_index : int ndarray, shape (n_air,)
        Flat voxel indices.
    """
    first = np.nan_to_num(signal2d[0], nan=0.0, posinf=0.0)
    positive = first[first > 0]
    rough = first > robust_otsu(positive) if positive.size else first > 0
    if mask_flat is not None:
        rough |= mask_flat
    if spatial is not None and len(spatial) >= 2:
        from .tissue_mask import fill_body

        # lungs and bowel gas inside the body are not background air
        body = fill_body(rough.reshape(spatial))
        rough = ndimage.binary_dilation(body, iterations=2).reshape(-1)
    air = np.flatnonzero(~rough)
    air = air[:: max(1, air.size // MAX_AIR_VOXELS)]  # an even subsample: moments to 0.1 %
    return signal2d[:, air], air


def robust_otsu(values) -> float:
    """Otsu's threshold on values clipped to 4 x their 99.5th percentile (spikes do not move it).

    Parameters
    ----------
    values : ndarray
        Magnitudes, any shape.

    Returns
    -------
    float
        Threshold in signal units; 0 for an empty sample.
    """
    v = np.asarray(values)
    v = v[:: max(1, v.size // 200_000)].astype(np.float64)  # an even subsample sets it as well
    v = v[np.isfinite(v)]
    if v.size == 0:
        return 0.0
    return otsu_threshold(np.minimum(v, 4.0 * np.percentile(v, 99.5)))


def _air_tiles(air_index, spatial, n_echoes):
    """Tile id of every air sample (echo-major like the samples): 16 x 16 voxels, 4 slices."""
    if spatial is None or len(spatial) < 2:
        return None
    coords = np.unravel_index(air_index, spatial)
    tile = [4] * (len(spatial) - 2) + [16, 16]
    ids = np.ravel_multi_index(tuple(c // s for c, s in zip(coords, tile)),
                               tuple(-(-n // s) for n, s in zip(spatial, tile)))
    return np.broadcast_to(ids, (n_echoes, ids.size))


def background_purity(samples, tiles=None) -> dict:
    """How much the air looks like pure noise, and the coil count its shape implies.

    Pure noise has the moment ratio E[M]^2/E[M^2] of a central chi (0.785 for one coil, towards
    1 with more), the same level in every echo (it does not decay), and its shape gives the coil
    count L whatever its scale (coils_from_floor_ratio pools the tiles, so a noise level that
    varies over the air does not blur it).

    Parameters
    ----------
    samples : ndarray, shape (n_echoes, n_air)
        Background magnitudes (signal units).
    tiles : int ndarray, shape (n_echoes, n_air), optional
        Tile id of each sample.

    Returns
    -------
    dict
        pure (bool), zero_share (share of exact zeros), moment_ratio (float or None), n (non-zero
        samples), coils (float or None), why (str: the reason it is not pure; "" when pure).
    """
    x = np.asarray(samples)
    finite = np.isfinite(x)
    n_finite = int(np.count_nonzero(finite))
    usable = finite & (x > 0)
    del finite
    n_usable = int(np.count_nonzero(usable))
    zeros = int(np.count_nonzero(x == 0)) / n_finite if n_finite else 1.0
    result = {"pure": False, "zero_share": zeros, "moment_ratio": None, "n": n_usable,
              "coils": None, "why": "too little non-zero background air"}
    if n_usable < 1000:
        return result
    values = x[usable]
    cut = values <= 5.0 * np.median(values)  # ghosts and stray tissue sit in the far tail
    values = values[cut].astype(np.float64)
    ratio = float(values.mean() ** 2 / np.mean(values * values))
    result["moment_ratio"] = ratio
    groups = None if tiles is None else np.asarray(tiles)[usable][cut]
    L = coils_from_floor_ratio(values, groups)
    del values, groups, cut
    result["coils"] = L
    half = max(x.shape[0] // 2, 1)
    decays = False
    if x.shape[0] > half:
        power = [np.mean(np.square(part[use], dtype=np.float64))
                 for part, use in ((x[:half], usable[:half]), (x[half:], usable[half:]))]
        decays = power[1] < 0.85 * power[0]
    if zeros > ZERO_FILLED_SHARE:
        why = f"{100 * zeros:.0f}% of the background is exactly zero (zero-filled or masked by the scanner)"
    elif not PURE_NOISE_RATIO[0] <= ratio <= PURE_NOISE_RATIO[1]:
        why = (f"the background is not pure noise (moment ratio E[M]^2/E[M^2] {ratio:.2f}; "
               f"pure noise gives {PURE_NOISE_RATIO[0] + 0.03:.3f} to 1)")
    elif decays:
        why = "the background signal decays from echo to echo (it holds tissue, not only noise)"
    elif L is None or L > MAX_AIR_COILS:
        why = "the background does not have the shape of pure noise (it holds faint tissue)"
    else:
        why = ""
    result.update(pure=not why, why=why)
    return result


def air_level_plausible(air, air_coils, echo) -> bool:
    """Whether the air is not much louder than pure noise of the tissue's sigma.

    Pure noise of the tissue's sigma with the air's coil count has E[M^2] = 2 L sigma^2; air
    may be quieter (parallel imaging, filtering) but not much louder than that (at most 1.5 x).

    Parameters
    ----------
    air : ndarray
        Background magnitudes (signal units), any shape.
    air_coils : float
        Coil count the air's shape implies.
    echo : EchoTrainNoise
        Echo-train estimate (the 95th percentile of its map when it has one).

    Returns
    -------
    bool
    """
    x = np.asarray(air, dtype=np.float64)
    x = x[np.isfinite(x) & (x > 0)]
    x = x[x <= 5.0 * np.median(x)]
    sigma = echo.sigma if echo.sigma_map is None else float(np.percentile(echo.sigma_map, 95))
    return float(np.mean(x * x)) <= 1.5 * 2.0 * air_coils * sigma * sigma


def resolve_noise(signal2d, mask_flat, noise_sigma, coils, spatial=None, echo_times_s=None,
                  candidates=None):
    """The noise a fit uses, and notes for the user.

    A given noise_sigma wins; otherwise background air is used when it is pure noise and agrees
    with the echo-train estimate, else the echo train.

    Parameters
    ----------
    signal2d : ndarray, shape (n_echoes, n_voxels)
        Magnitudes (signal units).
    mask_flat : bool ndarray, shape (n_voxels,), or None
        User mask.
    noise_sigma : float, ndarray of the spatial shape, or None
        Given noise SD per real channel (signal units); None to estimate.
    coils : float or None
        Given effective coil count; None to estimate.
    spatial : tuple of int, optional
        Spatial shape (k, j, i).
    echo_times_s : ndarray, shape (n_echoes,), optional
        Echo times in s, needed for the echo-train estimate.
    candidates : bool ndarray, shape (n_voxels,), optional
        Voxels with valid signal (finite, non-negative in every echo when None).

    Returns
    -------
    noise : NoiseEstimate or None
    notes : list of str

    Raises
    ------
    InputError
        For coils below 1, or a given noise_sigma that is not positive and finite or not of the
        spatial shape.
    """
    notes: list[str] = []
    if noise_sigma is not None:
        return _given(noise_sigma, coils, signal2d.shape[1], spatial), notes
    if coils is not None and coils < 1:
        raise InputError(f"coils must be at least 1; got {coils}.")
    if candidates is None:
        candidates = np.all(np.isfinite(signal2d), axis=0) & (signal2d.min(0) >= 0)
    air, air_index = background_samples(signal2d, mask_flat, spatial)
    purity = background_purity(air, _air_tiles(air_index, spatial, air.shape[0]))
    # the coil count: given, else the shape of pure air (independent of its noise scale)
    coils_known = coils if coils is not None else (purity["coils"] if purity["pure"] else None)
    echo = None
    if echo_times_s is not None:
        usable = candidates & (signal2d[0] > 0) if mask_flat is None else candidates & mask_flat
        echo = estimate_noise_echo_train(signal2d, echo_times_s, usable, spatial, coils_known)
        if purity["pure"] and echo is not None and not air_level_plausible(air, purity["coils"], echo):
            # faint non-decaying tissue has the shape of many-coil noise but a higher level
            purity.update(pure=False, why="the background is brighter than pure noise of the tissue's "
                                          "noise level (it holds faint tissue or artefact)")
            coils_known = coils
            echo = estimate_noise_echo_train(signal2d, echo_times_s, usable, spatial, coils)
    background = None
    if purity["pure"]:
        try:
            background = estimate_noise_background(air, coils_known)
        except InputError:
            background = None
    details = {
        "echo_train_sigma": None if echo is None else echo.sigma,
        "echo_train_sigma_range": None if echo is None else list(echo.sigma_range()),
        "echo_train_voxels": 0 if echo is None else echo.n_voxels,
        "background_sigma": None if background is None else background.sigma,
        "background_coils": None if background is None else background.coils,
        "background_moment_ratio": purity["moment_ratio"],
        "background_zero_share": purity["zero_share"],
        "background_note": purity["why"],
    }
    if echo is None:
        if background is not None:
            return _with(background, details), notes
        return _fallback(signal2d, air, mask_flat, candidates, spatial, coils, details, notes)
    agree = (background is not None and echo.sigma_map is None
             and 1.0 / AGREEMENT <= background.sigma / echo.sigma <= AGREEMENT)
    if agree:
        details["coils_source"] = "shape of the background noise" if coils is None else "given"
        return _with(background, details), notes
    if background is not None:
        notes.append(
            f"background air noise {background.sigma:.4g} differs from the noise measured in the "
            f"tissue from the decay residuals ({echo.sigma:.4g}; ratio {background.sigma / echo.sigma:.2f}): "
            "the air is filtered or the noise varies in space (parallel imaging); the tissue "
            "estimate is used")
    elif purity["why"] and purity["n"] >= 1000:
        notes.append(f"noise from the decay residuals in tissue, not the air: {purity['why']}")
    if coils is not None:
        L, coils_how = float(coils), "given"
    elif coils_known is not None:
        L, coils_how = float(coils_known), "shape of the background noise"
    else:
        L, coils_how = echo.coils, echo.coils_source
    details["coils_source"] = coils_how
    source = "echo train (noise map)" if echo.sigma_map is not None else "echo train"
    if echo.sigma_map is not None:
        lo, hi = echo.sigma_range()
        notes.append(f"the noise varies in space from {lo:.4g} to {hi:.4g} (5th-95th percentile; "
                     "parallel imaging): a noise map is used voxel by voxel")
    return NoiseEstimate(echo.sigma, L, source, n_samples=echo.n_voxels, sigma_map=echo.sigma_map,
                         details=details), notes


def _given(noise_sigma, coils, n_voxels, spatial) -> NoiseEstimate:
    """The user's noise: a number, or a noise map of the spatial shape (e.g. from a noise scan)."""
    sigma = np.asarray(noise_sigma, dtype=np.float64)
    if sigma.size == 1:
        value = float(sigma.reshape(-1)[0])
        if not np.isfinite(value) or value <= 0:
            raise InputError(f"noise_sigma must be a positive number; got {noise_sigma}.")
        return NoiseEstimate(value, float(coils or 1.0), "given")
    if sigma.size != n_voxels or (spatial is not None and sigma.ndim > 1 and sigma.shape != tuple(spatial)):
        raise InputError(f"noise_sigma as a map must have the spatial shape {tuple(spatial or (n_voxels,))}; "
                         f"got shape {sigma.shape}.")
    if not np.all(np.isfinite(sigma)) or np.any(sigma <= 0):
        raise InputError("noise_sigma as a map must be positive and finite in every voxel.")
    flat = sigma.reshape(-1).astype(np.float32)
    return NoiseEstimate(float(np.median(flat)), float(coils or 1.0), "given", sigma_map=flat)


def _with(estimate: NoiseEstimate, details: dict) -> NoiseEstimate:
    return NoiseEstimate(estimate.sigma, estimate.coils, estimate.source, estimate.n_samples,
                         estimate.sigma_map, details)


def _fallback(signal2d, air, mask_flat, candidates, spatial, coils, details, notes):
    """Fewer than three echoes or too little clean tissue: impure air, then image differences."""
    if np.count_nonzero(air > 0) >= 1000:
        try:
            estimate = estimate_noise_background(air, coils)
        except InputError:
            estimate = None
        if estimate is not None:
            notes.append(f"noise from the background air although {details['background_note'] or 'it is not checked'}; "
                         "give noise_sigma if it is known")
            return _with(estimate, details), notes
    return None, notes
