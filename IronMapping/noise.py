"""Noise of magnitude MR images: noncentral-chi statistics and noise estimation.

Root-sum-of-squares magnitude from L receive coils, each with complex Gaussian noise of SD
sigma per real channel, follows a noncentral chi distribution with 2L degrees of freedom
(L = 1: Rician). Its second moment is exact and simple, E[M^2] = A^2 + 2 L sigma^2
(Feng et al. 2013, MRM 70:1765), which the noise-corrected fit uses. Parallel imaging makes L
an *effective* coil count, so L is a real number >= 1 here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import special

from .errors import InputError


@dataclass(frozen=True)
class NoiseEstimate:
    """Noise SD per real channel, effective coil count and where they came from.

    Attributes
    ----------
    sigma : float
        Noise SD per real channel (signal units); with a noise map, its median in tissue.
    coils : float
        Effective coil count L (the floor's second moment is 2 L sigma^2).
    source : str
        "given", "background", "echo train", "echo train (noise map)" or "image differences".
    n_samples : int
        Samples (voxels) the estimate was made from.
    sigma_map : float32 ndarray, shape (n_voxels,), or None
        Noise SD per voxel (signal units) where the noise varies in space, else None.
    details : dict
        Every estimate that was made (JSON-able), for provenance.
    """

    sigma: float
    coils: float
    source: str
    n_samples: int = 0
    sigma_map: np.ndarray | None = field(default=None, compare=False, repr=False)
    details: dict = field(default_factory=dict, compare=False)

    def describe(self) -> str:
        """One sentence: sigma, coils, where they came from and the spread of a noise map."""
        where = {
            "given": "given by the user",
            "background": f"estimated from {self.n_samples} background samples",
            "echo train": f"estimated from the decay residuals of {self.n_samples} tissue voxels",
            "echo train (noise map)": (f"a noise map from the decay residuals of {self.n_samples} "
                                       "tissue voxels"),
            "image differences": f"estimated from neighbour differences in {self.n_samples} tissue samples",
        }.get(self.source, self.source)
        text = f"noise sigma {self.sigma:.4g} (signal units), coils {self.coils:.3g}, {where}"
        if self.sigma_map is not None:
            lo, hi = np.percentile(self.sigma_map, [5, 95])
            text += f"; noise varies in space from {lo:.4g} to {hi:.4g} (5th-95th percentile)"
        return text


def noise_floor_mean(sigma, coils=1.0):
    """Mean magnitude of pure noise, E[M | A=0] = sigma sqrt(2) Gamma(L+1/2)/Gamma(L).

    Parameters
    ----------
    sigma : float or ndarray
        Noise SD per real channel (signal units).
    coils : float or ndarray
        Effective coil count L (broadcasts with ``sigma``).

    Returns
    -------
    float or ndarray
        Mean in signal units.
    """
    L = np.asarray(coils, dtype=np.float64)
    return sigma * np.sqrt(2.0) * np.exp(special.gammaln(L + 0.5) - special.gammaln(L))


def noise_floor_sd(sigma, coils=1.0):
    """SD of the magnitude of pure noise (central chi, 2L degrees of freedom).

    Parameters
    ----------
    sigma : float or ndarray
        Noise SD per real channel (signal units).
    coils : float or ndarray
        Effective coil count L.

    Returns
    -------
    float or ndarray
        SD in signal units.
    """
    mean = noise_floor_mean(sigma, coils)
    return np.sqrt(np.maximum(2.0 * coils * sigma**2 - mean**2, 0.0))


def _moment_ratio(L):
    """E[M]^2 / E[M^2] of a central chi with 2L degrees of freedom; increases with L."""
    return np.exp(2 * (special.gammaln(L + 0.5) - special.gammaln(L))) / L


def effective_coils_from_ratio(ratio: float) -> float:
    """Invert E[M]^2/E[M^2] of pure-noise magnitude to an effective coil count.

    Parameters
    ----------
    ratio : float
        Moment ratio of background magnitudes.

    Returns
    -------
    float
        L in [1, 128] (clipped at the ends).
    """
    grid = np.geomspace(1.0, 128.0, 2000)
    r = _moment_ratio(grid)
    return float(np.interp(ratio, r, grid, left=1.0, right=128.0))


def estimate_noise_background(samples, coils=None) -> NoiseEstimate:
    """Noise from pure-noise magnitudes (air, no signal).

    Exact zeros are ignored because many scanners zero-fill outside the body; values above five
    times the median (ghosts, stray tissue) are dropped.

    Parameters
    ----------
    samples : ndarray, any shape
        Background magnitudes (signal units).
    coils : float, optional
        Effective coil count; when None it is found from the moment ratio.

    Returns
    -------
    NoiseEstimate
        source "background".

    Raises
    ------
    InputError
        With fewer than 100 non-zero samples.
    """
    x = np.asarray(samples, dtype=np.float64).ravel()
    x = x[np.isfinite(x) & (x > 0)]
    if x.size < 100:
        raise InputError(
            f"Only {x.size} non-zero background samples: too few to estimate the noise. "
            "Give noise_sigma (and coils) explicitly, or include air around the body.")
    # Ghosts and stray tissue sit far in the tail; pure noise almost never exceeds five times
    # its median (probability ~1e-8 for one coil), so this cut does not bias the moments.
    x = x[x <= 5.0 * np.median(x)]
    m1 = x.mean()
    m2 = np.mean(x * x)
    if coils is None:
        coils = effective_coils_from_ratio(m1 * m1 / m2)
    sigma = float(np.sqrt(m2 / (2.0 * coils)))
    return NoiseEstimate(sigma=sigma, coils=float(coils), source="background", n_samples=int(x.size))


def estimate_noise_differences(images, mask, coils=None) -> NoiseEstimate:
    """Noise from differences between neighbouring voxels inside tissue.

    For smooth tissue the neighbour difference along the last axis has SD sigma*sqrt(2); tissue
    texture only inflates it, so the smallest robust SD over echoes is taken. Used when the image
    has no usable background (zero-filled or cropped).

    Parameters
    ----------
    images : ndarray, shape (n_echoes, *spatial)
        Magnitudes (signal units).
    mask : bool ndarray, shape spatial
        Tissue voxels.
    coils : float, optional
        Stored in the result (1 when None); not estimated.

    Returns
    -------
    NoiseEstimate
        source "image differences".

    Raises
    ------
    InputError
        With fewer than 100 neighbour pairs in the mask.
    """
    images = np.asarray(images)
    mask = np.asarray(mask, dtype=bool)
    both = mask[..., 1:] & mask[..., :-1]
    n = int(both.sum())
    if n < 100:
        raise InputError(
            "Too little tissue to estimate the noise from the image. Give noise_sigma explicitly.")
    best = np.inf
    for echo in images:
        diff = (echo[..., 1:].astype(np.float64) - echo[..., :-1])[both]
        mad = np.median(np.abs(diff - np.median(diff)))
        best = min(best, 1.4826 * mad / np.sqrt(2.0))
    return NoiseEstimate(sigma=float(best), coils=float(coils or 1.0),
                         source="image differences", n_samples=n)


def otsu_threshold(values, bins: int = 256) -> float:
    """Otsu's threshold of a sample (maximises the between-class variance).

    Parameters
    ----------
    values : ndarray, any shape
        Flattened; non-finite values are ignored.
    bins : int
        Histogram bins.

    Returns
    -------
    float
        Threshold, in the units of ``values``.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    hist, edges = np.histogram(v, bins=bins)
    centres = 0.5 * (edges[1:] + edges[:-1])
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    s0 = np.cumsum(hist * centres)
    m0 = s0 / np.maximum(w0, 1)
    m1 = (s0[-1] - s0) / np.maximum(w1, 1)
    between = w0 * w1 * (m0 - m1) ** 2
    return float(centres[int(np.argmax(between))])


def automatic_mask(first_echo, noise: NoiseEstimate | None = None, k: float = 4.0, **kwargs):
    """The body-outline tissue mask; kept here for old imports.

    Parameters
    ----------
    first_echo, noise, k, **kwargs
        As in `IronMapping.tissue_mask.automatic_mask`.

    Returns
    -------
    bool ndarray, shape (n_voxels,)
    """
    from .tissue_mask import automatic_mask as body_mask

    return body_mask(first_echo, noise, k, **kwargs)


def bessel_ratio(order, z):
    """I_order(z) / I_{order-1}(z) for z >= 0, computed with scaled Bessel functions.

    Parameters
    ----------
    order : float
        Order of the numerator.
    z : ndarray
        Argument, z >= 0, any shape.

    Returns
    -------
    ndarray
        Same shape as ``z``.
    """
    z = np.asarray(z, dtype=np.float64)
    if order == 1:
        return special.i1e(z) / special.i0e(z)
    return special.ive(order, z) / special.ive(order - 1, z)
