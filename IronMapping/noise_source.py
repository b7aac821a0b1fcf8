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

from .echo_noise import estimate_noise_echo_train
from .errors import InputError
from .noise import (NoiseEstimate, _moment_ratio, effective_coils_from_ratio,
                    estimate_noise_background, estimate_noise_differences, otsu_threshold)

#: Background and tissue estimates agreeing within this ratio are the same noise.
AGREEMENT = 1.15
#: Moment ratio band of pure central-chi noise (one coil 0.785 ... many coils ~1), with a margin
#: for sampling error.
PURE_NOISE_RATIO = (float(_moment_ratio(1.0)) - 0.03, 1.0)
#: More exact zeros than this share of the air means the scanner zero-filled or masked it.
ZERO_FILLED_SHARE = 0.5


def background_samples(signal2d, mask_flat, spatial):
    """(magnitudes of every echo outside the tissue, the tissue mask): Otsu on echo 1, with two
    voxels of margin around the tissue."""
    first = np.nan_to_num(signal2d[0], nan=0.0, posinf=0.0)
    positive = first[first > 0]
    rough = first > robust_otsu(positive) if positive.size else first > 0
    if mask_flat is not None:
        rough |= mask_flat
    if spatial is not None and len(spatial) >= 2:
        rough = ndimage.binary_dilation(rough.reshape(spatial), iterations=2).reshape(-1)
    return signal2d[:, ~rough], rough


def robust_otsu(values) -> float:
    """Otsu's threshold on values clipped to 4 x their 99.5th percentile (spikes do not move it)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return 0.0
    return otsu_threshold(np.minimum(v, 4.0 * np.percentile(v, 99.5)))


def background_purity(samples) -> dict:
    """How much the air looks like pure noise: moment ratio, share of exact zeros, verdict."""
    x = np.asarray(samples, dtype=np.float64).ravel()
    x = x[np.isfinite(x)]
    n = x.size
    zeros = float(np.mean(x == 0)) if n else 1.0
    x = x[x > 0]
    if x.size < 1000:
        return {"pure": False, "zero_share": zeros, "moment_ratio": None, "n": int(x.size),
                "why": "too little non-zero background air"}
    x = x[x <= 5.0 * np.median(x)]
    ratio = float(x.mean() ** 2 / np.mean(x * x))
    if zeros > ZERO_FILLED_SHARE:
        why = f"{100 * zeros:.0f}% of the background is exactly zero (zero-filled or masked by the scanner)"
    elif not PURE_NOISE_RATIO[0] <= ratio <= PURE_NOISE_RATIO[1]:
        why = (f"the background is not pure noise (moment ratio E[M]^2/E[M^2] {ratio:.2f}; "
               f"pure noise gives {PURE_NOISE_RATIO[0] + 0.03:.3f} to 1)")
    else:
        why = ""
    return {"pure": not why, "zero_share": zeros, "moment_ratio": ratio, "n": int(x.size), "why": why}


def resolve_noise(signal2d, mask_flat, noise_sigma, coils, spatial=None, echo_times_s=None,
                  candidates=None):
    """The noise a fit uses, and notes for the user: (NoiseEstimate or None, list of str).

    signal2d : (n_echoes, n_voxels) magnitudes; mask_flat : (n_voxels,) bool user mask or None;
    noise_sigma, coils : given values (None to estimate); spatial : spatial shape;
    echo_times_s : (n_echoes,) s, needed for the echo-train estimate; candidates : (n_voxels,)
    bool voxels with valid signal. A given noise_sigma wins; otherwise background air is used
    when it is pure noise and agrees with the echo-train estimate, else the echo train.
    """
    notes: list[str] = []
    if noise_sigma is not None:
        if not np.isfinite(noise_sigma) or noise_sigma <= 0:
            raise InputError(f"noise_sigma must be a positive number; got {noise_sigma}.")
        return NoiseEstimate(float(noise_sigma), float(coils or 1.0), "given"), notes
    if coils is not None and coils < 1:
        raise InputError(f"coils must be at least 1; got {coils}.")
    if candidates is None:
        candidates = np.all(np.isfinite(signal2d), axis=0) & (signal2d.min(0) >= 0)
    echo = None
    if echo_times_s is not None:
        usable = candidates & (signal2d[0] > 0) if mask_flat is None else candidates & mask_flat
        echo = estimate_noise_echo_train(signal2d, echo_times_s, usable, spatial, coils)
    air, air_rough = background_samples(signal2d, mask_flat, spatial)
    purity = background_purity(air)
    background = None
    if purity["pure"]:
        try:
            background = estimate_noise_background(air, coils)
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
        return _with(background, details), notes
    if background is not None and background.coils <= 4.0:
        notes.append(
            f"background air noise {background.sigma:.4g} differs from the noise measured in the "
            f"tissue from the decay residuals ({echo.sigma:.4g}; ratio {background.sigma / echo.sigma:.2f}): "
            "the air is filtered or the noise varies in space (parallel imaging); the tissue "
            "estimate is used")
    elif purity["why"] and purity["n"] >= 1000:
        notes.append(f"noise from the decay residuals in tissue, not the air: {purity['why']}")
    air_sigma = echo.sigma if echo.sigma_map is None else echo.sigma_map[~air_rough][None, :]
    L, coils_how = _coils_for_echo_train(coils, air, air_sigma, purity, echo)
    details["coils_source"] = coils_how
    source = "echo train (noise map)" if echo.sigma_map is not None else "echo train"
    if echo.sigma_map is not None:
        lo, hi = echo.sigma_range()
        notes.append(f"the noise varies in space from {lo:.4g} to {hi:.4g} (5th-95th percentile; "
                     "parallel imaging): a noise map is used voxel by voxel")
    return NoiseEstimate(echo.sigma, L, source, n_samples=echo.n_voxels, sigma_map=echo.sigma_map,
                         details=details), notes


def _coils_for_echo_train(coils, air, air_sigma, purity, echo):
    """Effective coil count and how it was found, with the echo-train sigma (or map).

    Pure background air carries the floor level directly: L = E[M^2] / (2 sigma^2) with the
    local tissue sigma extended to the air (the air's own moment ratio is ill-conditioned for
    L above about 4). Otherwise the echo train's own floor samples or decay shapes decide.
    """
    if coils is not None:
        return float(coils), "given"
    if purity["pure"]:
        x = air.astype(np.float64)
        s = np.broadcast_to(air_sigma, x.shape)
        ok = np.isfinite(x) & (x > 0)
        x, s = x[ok], s[ok]
        x_cut = x <= 5.0 * np.median(x)  # ghosts and stray tissue sit in the far tail
        return max(float(np.mean(x[x_cut] ** 2 / (2.0 * s[x_cut] ** 2))), 1.0), "background floor"
    return echo.coils, echo.coils_source


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
