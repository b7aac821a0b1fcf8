"""Bipolar readouts: the odd/even echo phase, estimated from the data and removed.

With a bipolar (alternating-polarity) multi-echo readout the even echoes (2nd, 4th, ...) are
read with the opposite gradient to the odd ones. Eddy currents and gradient delays then add to
the even echoes a phase that the fat-water model does not contain: a constant offset and a
linear phase along the readout direction (a gradient delay shifts k-space, a linear phase in the
image). Left in, it biases or swaps the complex fit (Lu W, Yu H, Shimakawa A et al., Magn Reson
Med 2008;60:198-209, doi:10.1002/mrm.21583; Yu H, Shimakawa A, Hines CDG et al., Magn Reson Med
2011;66:1-10, doi:10.1002/mrm.22741, "Exact" phase correction for bipolar acquisitions).

Here the even-echo phase theta(x) = a + b . x (x the voxel index along every spatial axis, so
that the readout direction need not be known) is estimated from the data themselves:

1. On a subsampled grid of bright voxels, the complex fat-water model gets one more unknown,
   theta, fitted voxel by voxel (both magnitude starts, the better kept).
2. The plane a + b . x is fitted to those theta in the complex domain (slopes from products of
   neighbouring phasors, then the offset, then weighted least squares on the wrapped residuals),
   weighting each voxel by the inverse variance of its theta.
3. The even echoes are multiplied by exp(-i theta(x)).

``readout="auto"`` calls the readout bipolar when the fitted phase is both large enough to
matter (RMS over the voxels > ``DETECTION_MIN_DEG``) and clearly not noise (the plane differs
from zero by more than ``DETECTION_MIN_SIGMA`` standard errors).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..fatmodel import fat_phasor
from ..io.metadata import readout_from_text
from .complex_fit import (_complex_model, _complex_start, _lm_complex, _phase_start,
                          echo_period_hz, fit_fatwater_complex_chunk)
from .likelihood import _Gaussian
from .magnitude import _MagnitudeModel, _lm_magnitude, _loglinear_start

READOUTS = ("auto", "bipolar", "monopolar")

DETECTION_MIN_DEG = 3.0
"""Smallest RMS odd/even phase (degrees) reported as a bipolar readout by ``readout="auto"``;
a few degrees change PDFF by well under one point, so smaller phases are left alone."""

DETECTION_MIN_SIGMA = 5.0
"""The fitted odd/even phase must differ from zero by this many standard errors (chi-square of
the plane's parameters above DETECTION_MIN_SIGMA^2) to count as detected."""

_SAMPLE_VOXELS = 6000
_MIN_AXIS = 8
_METADATA_KEYS = ("readout", "readout_polarity", "ReadoutPolarity", "GradientEchoReadout",
                  "MultiEchoReadout", "bipolar")


def check_readout(readout):
    """Validate the ``readout`` argument of ``fit_fatwater``.

    Parameters
    ----------
    readout : str
        One of READOUTS: "auto", "bipolar" or "monopolar".

    Returns
    -------
    str
        ``readout`` unchanged.

    Raises
    ------
    InputError
        Any other value; the message says which to choose.
    """
    if readout not in READOUTS:
        raise InputError(f"readout must be one of {', '.join(READOUTS)}; got {readout!r}. Use "
                         "'bipolar' when odd and even echoes are read with opposite gradients "
                         "(most clinical fat-water protocols), 'monopolar' for flyback readouts, "
                         "'auto' to detect it from the data.")
    return readout


def readout_from_metadata(metadata):
    """'bipolar', 'monopolar' or None (unknown) from a MultiEchoImage's metadata dict.

    Looks for a readout entry (``metadata["readout"]`` and a few sidecar spellings, also inside
    ``metadata["sidecar"]``): a string containing "bipolar"/"monopolar"/"flyback"/"unipolar",
    or a boolean under "bipolar".

    Parameters
    ----------
    metadata : dict
        The image's metadata; anything else gives None.

    Returns
    -------
    str or None
    """
    if not isinstance(metadata, dict):
        return None
    places = [metadata] + [metadata[k] for k in ("sidecar", "json_sidecar") if
                           isinstance(metadata.get(k), dict)]
    for place in places:
        for key in _METADATA_KEYS:
            if key not in place:
                continue
            value = place[key]
            if key == "bipolar" and isinstance(value, (bool, np.bool_)):
                return "bipolar" if value else "monopolar"
            named = readout_from_text(value)
            if named is not None:
                return named
    return None


@dataclass
class OddEvenPhase:
    """Even-echo phase theta(x) = offset + slopes . x (rad; x in voxel indices, spatial order).

    Attributes
    ----------
    offset_rad : float
        theta at ``centre``, rad.
    slopes_rad_per_voxel : tuple of float
        Slope along each spatial axis, rad/voxel.
    centre : tuple of float
        Voxel index of the image centre, where x = 0.
    rms_deg : float
        RMS of theta over the fitted voxels, deg.
    chi2 : float
        Chi-square of (offset, slopes) against zero.
    voxels : int
        How many voxels were fitted.
    residual_ratio : float
        Residual of the voxel-wise complex fit of bright voxels with the correction over that
        without it.
    """

    offset_rad: float
    slopes_rad_per_voxel: tuple
    centre: tuple
    rms_deg: float
    chi2: float
    voxels: int
    residual_ratio: float = float("nan")

    @property
    def detected(self):
        """Large enough to matter, clearly not noise, and the correction improves the fit."""
        return bool(self.rms_deg > DETECTION_MIN_DEG and self.chi2 > DETECTION_MIN_SIGMA ** 2
                    and self.residual_ratio < 1.0)

    def phase(self, shape):
        """theta over a spatial grid of ``shape`` (rad).

        Parameters
        ----------
        shape : tuple of int
            Spatial shape, in the order of ``slopes_rad_per_voxel``.

        Returns
        -------
        ndarray of float64, shape ``shape``
            theta in rad.
        """
        theta = np.full(shape, self.offset_rad, dtype=np.float64)
        for axis, slope in enumerate(self.slopes_rad_per_voxel):
            coordinate = np.arange(shape[axis], dtype=np.float64) - self.centre[axis]
            view = [1] * len(shape)
            view[axis] = shape[axis]
            theta = theta + slope * coordinate.reshape(view)
        return theta

    def describe(self):
        """One line: the offset (deg at the image centre), slopes (deg/voxel) and RMS (deg)."""
        slopes = ", ".join(f"{np.degrees(s):+.3f}" for s in self.slopes_rad_per_voxel)
        return (f"odd/even echo phase {np.degrees(self.offset_rad):+.1f} deg at the image centre, "
                f"linear {slopes} deg/voxel along the spatial axes (RMS {self.rms_deg:.1f} deg "
                f"over {self.voxels} voxels)")

    def as_dict(self):
        """JSON-able record: offset (deg), slopes (deg/voxel), RMS (deg), chi2, voxels,
        residual ratio and whether it counts as detected.
        """
        return {"offset_deg": float(np.degrees(self.offset_rad)),
                "slopes_deg_per_voxel": [float(np.degrees(s)) for s in self.slopes_rad_per_voxel],
                "rms_deg": float(self.rms_deg), "chi2": float(self.chi2),
                "voxels": int(self.voxels), "residual_ratio": float(self.residual_ratio),
                "detected": self.detected}


def remove_odd_even_phase(z, estimate):
    """Multiply the even echoes (2nd, 4th, ...) of z [echo, ...spatial] by exp(-i theta(x)).

    Parameters
    ----------
    z : complex ndarray, (n_echoes, ...spatial)
        Complex echoes (not changed; a copy is corrected).
    estimate : OddEvenPhase
        The even-echo phase to remove.

    Returns
    -------
    complex ndarray, (n_echoes, ...spatial)
        complex128 when ``z`` is, else complex64.
    """
    z = np.array(z, dtype=np.complex128 if z.dtype == np.complex128 else np.complex64)
    correction = np.exp(-1j * estimate.phase(z.shape[1:])).astype(z.dtype)
    z[1::2] *= correction[None]
    return z


def _sample_grid(mask, target):
    """Stride per axis so that the subsampled mask has about ``target`` voxels."""
    n = int(mask.sum())
    stride = 1
    while n / stride ** mask.ndim > target:
        stride += 1
    return stride


def _theta_variance(zn, t, c, even, p):
    """Variance of the fitted theta per voxel from the Gauss-Newton covariance (all six
    parameters free, so also where fat was held at 0: a conservative weight)."""
    b, m = _complex_model(t, c, *p, even=even)
    j = np.stack([b, c * b, -t * m, 2j * np.pi * t * m, 1j * m, 1j * even * m])
    h = np.einsum("aen,ben->nab", j.real, j.real) + np.einsum("aen,ben->nab", j.imag, j.imag)
    res = zn - m
    dof = max(2 * zn.shape[0] - 6, 1)
    s2 = (res.real ** 2 + res.imag ** 2).sum(0) / dof
    h = h + 1e-12 * np.eye(6)
    with np.errstate(invalid="ignore", over="ignore"):
        inv = np.linalg.pinv(h)
    return s2 * inv[:, 5, 5]


def _plane_fit(theta, weight, coords, sub_mask, stride):
    """theta = a + b . x in the complex domain, then weighted least squares.

    Returns a, b, the covariance of (a, b) and the fitted theta per voxel.
    """
    ndim = coords.shape[1]
    grid = np.zeros(sub_mask.shape, dtype=np.complex128)
    grid[sub_mask] = np.sqrt(weight) * np.exp(1j * theta)
    slopes = np.zeros(ndim)
    for axis in range(ndim):
        lead = [slice(None)] * ndim
        lag = [slice(None)] * ndim
        lead[axis], lag[axis] = slice(1, None), slice(None, -1)
        product = np.sum(grid[tuple(lead)] * np.conj(grid[tuple(lag)]))
        slopes[axis] = np.angle(product) / stride if np.abs(product) > 0 else 0.0
    offset = np.angle(np.sum(weight * np.exp(1j * (theta - coords @ slopes))))
    # A readout runs in-plane: no slope along an axis with fewer than _MIN_AXIS voxels
    # (e.g. a stack of two slices), where it would only fit noise.
    used = [a for a in range(ndim) if sub_mask.shape[a] * stride >= _MIN_AXIS]
    slopes[[a for a in range(ndim) if a not in used]] = 0.0
    design = np.column_stack([np.ones(len(theta)), coords[:, used]])
    beta = np.concatenate([[offset], slopes[used]])
    keep = np.ones(len(theta), dtype=bool)
    for _ in range(3):
        resid = np.angle(np.exp(1j * (theta - design @ beta)))
        spread = 1.4826 * np.median(np.abs(resid[keep])) + 1e-9
        keep = np.abs(resid) <= 4.0 * spread
        wk = weight * keep
        normal = design.T @ (design * wk[:, None])
        step = np.linalg.lstsq(normal, design.T @ (wk * resid), rcond=None)[0]
        beta = beta + step
    resid = np.angle(np.exp(1j * (theta - design @ beta)))
    wk = weight * keep
    normal = design.T @ (design * wk[:, None])
    # Scale the covariance by the observed scatter (robust to misjudged per-voxel variances).
    scatter = float(np.sum(wk * resid ** 2) / max(np.count_nonzero(keep) - len(beta), 1))
    cov_used = np.linalg.pinv(normal) * scatter
    full_slopes = np.zeros(ndim)
    full_slopes[used] = beta[1:]
    cov = np.zeros((ndim + 1, ndim + 1))
    index = [0] + [a + 1 for a in used]
    cov[np.ix_(index, index)] = cov_used
    return beta[0], full_slopes, cov, design @ beta


def _fit_theta(zn, t, cc, even, water_only):
    """Per-voxel complex fit with the even-echo phase theta; returns theta (rad), variance.

    ``water_only``: fat held at 0 (voxels known to hold little fat), one start."""
    mag = np.abs(zn)
    model = _MagnitudeModel(t[:, 0], cc[:, 0])
    r0, s0 = _loglinear_start(mag, t[:, 0])
    m = zn.shape[1]
    starts = []
    for water_first in ((True,) if water_only else (True, False)):
        w = s0.copy() if water_first else np.zeros(m)
        f = np.zeros(m) if water_first else s0.copy()
        r = r0.copy()
        if not water_only:
            _lm_magnitude(mag, model, w, f, r, _Gaussian(), 50)
        starts.append((w, f, r))
    z2 = np.concatenate([zn] * len(starts), axis=1)
    w, f, r = (np.concatenate([s_[k] for s_ in starts]) for k in range(3))
    psi, _ = _complex_start(z2, t, cc, w, f, r)
    odd = even[:, 0] == 0
    phi = _phase_start(z2[odd], t[odd], cc[odd], w, f, r, psi)
    _, model_all = _complex_model(t, cc, w, f, r, psi, phi)
    theta0 = np.angle(np.sum((z2 * np.conj(model_all))[~odd], axis=0))
    p, cost, _ = _lm_complex(z2, t, cc, np.stack([w, f, r, psi, phi, theta0]), 60, even,
                             water_only)
    if not water_only:
        p = p[:, np.arange(m) + m * (cost[m:] < cost[:m])]
    return p[5], _theta_variance(zn, t, cc, even, p)


def _subsample(z, select, max_voxels):
    """Normalised complex signal of a strided subsample of ``select``: (zn, sub_mask, stride)."""
    stride = _sample_grid(select, max_voxels)
    sub = tuple(slice(None, None, stride) for _ in range(select.ndim))
    sub_mask = select[sub]
    zs = z[(slice(None),) + sub][:, sub_mask].astype(np.complex128)
    return zs / np.abs(zs).max(0), sub_mask, stride


def _fit_after(z, select, te_s, fat, estimate, extra, max_voxels):
    """Voxel-wise complex fit of a subsample of ``select`` after removing theta(x) + extra."""
    trial = OddEvenPhase(estimate.offset_rad + extra, estimate.slopes_rad_per_voxel,
                         estimate.centre, 0.0, 0.0, 0)
    zn, _, _ = _subsample(remove_odd_even_phase(z, trial), select, max_voxels)
    return fit_fatwater_complex_chunk(zn, te_s, **fat)


def _resolve_half_turn(z, bright, te_s, fat, estimate, max_voxels):
    """theta or theta + pi (rad added to the offset), and the residual ratio.

    Uniform echoes: (theta + pi, field map + 1/(2 dTE)) fits every voxel exactly as well as
    (theta, field map), fat included, so the data cannot decide; the branch whose median field
    map lies nearer 0 Hz is kept (the scanner sets its frequency on the water resonance).
    Otherwise the lower residual of the complex fit decides.
    """
    period = echo_period_hz(te_s)
    none = OddEvenPhase(0.0, (0.0,) * len(estimate.slopes_rad_per_voxel), estimate.centre, 0.0,
                        0.0, 0)
    uncorrected = np.nansum(_fit_after(z, bright, te_s, fat, none, 0.0, max_voxels)["rss"])
    first = _fit_after(z, bright, te_s, fat, estimate, 0.0, max_voxels)
    if period is not None:
        phasor = np.nanmean(np.exp(2j * np.pi * first["fieldmap_hz"] / period))
        centre_hz = np.angle(phasor) * period / (2 * np.pi)
        turn = np.pi if abs(centre_hz) > 0.25 * period else 0.0
        return turn, np.nansum(first["rss"]) / max(uncorrected, 1e-300)
    second = np.nansum(_fit_after(z, bright, te_s, fat, estimate, np.pi, max_voxels)["rss"])
    best = min(second, np.nansum(first["rss"]))
    return (np.pi if second < np.nansum(first["rss"]) else 0.0), best / max(uncorrected, 1e-300)


def estimate_odd_even_phase(z, mask, te_s, field_strength_t, precession_clockwise=True,
                            spectrum=None, low_fat=None, max_voxels=_SAMPLE_VOXELS):
    """Estimate the even-echo phase plane theta(x) of a bipolar readout from the data.

    theta is fitted voxel by voxel in bright low-fat voxels with fat held at 0 (in a single
    voxel fat and theta trade off) and a plane is fitted to 2 theta, i.e. theta modulo pi (a
    voxel's fit may land on either branch); the branch is then decided by ``_resolve_half_turn``.

    Parameters
    ----------
    z : complex ndarray, (n_echoes, ...spatial)
        Complex echoes.
    mask : bool ndarray, spatial shape
        Voxels to use; the bright ones are the upper half of the first echo's magnitude in it.
    te_s : array_like, (n_echoes,)
        Echo times in s.
    field_strength_t : float
        Main field in T (fat model, see fatmodel.fat_phasor).
    precession_clockwise : bool
        Sign convention of the fat phasor (see fatmodel.fat_phasor).
    spectrum : str or FatSpectrum, optional
        Fat spectrum (default six-peak).
    low_fat : bool ndarray, spatial shape, optional
        Voxels known to hold little fat (e.g. magnitude PDFF below 10 %); used when at least
        200 bright voxels are in it; default: the bright voxels.
    max_voxels : int
        Voxels sampled at most (a strided subsample of the selection).

    Returns
    -------
    OddEvenPhase or None
        None when there are fewer than 4 echoes or too few voxels (< 50).
    """
    mask = np.asarray(mask, dtype=bool)
    if z.shape[0] < 4 or not mask.any():
        return None
    te_s = np.asarray(te_s, dtype=float)
    fat = {"field_strength_t": field_strength_t, "precession_clockwise": precession_clockwise,
           "spectrum": spectrum}
    c = fat_phasor(te_s * 1e3, field_strength_t, precession_clockwise, spectrum)
    # Bright voxels only: the upper half of the first echo within the mask.
    first = np.abs(z[0])
    bright = mask & (first >= np.median(first[mask]))
    select = bright
    water_only = low_fat is not None and np.count_nonzero(bright & low_fat) >= 200
    if water_only:
        select = bright & low_fat
    zn, sub_mask, stride = _subsample(z, select, max_voxels)
    if sub_mask.sum() < 50:
        return None
    t = (np.asarray(te_s, dtype=float) * 1e3)[:, None]
    cc = np.asarray(c)[:, None]
    even = (np.arange(z.shape[0]) % 2 == 1).astype(np.float64)[:, None]
    theta, variance = _fit_theta(zn, t, cc, even, water_only)
    ok = np.isfinite(variance) & (variance > 0) & np.isfinite(theta)
    if ok.sum() < 50:
        return None
    weight = np.zeros(theta.size)
    weight[ok] = 1.0 / np.maximum(variance[ok], np.median(variance[ok]) * 1e-2)
    # Coordinates in full-grid voxel indices, relative to the image centre.
    centre = tuple((s - 1) / 2.0 for s in mask.shape)
    index = np.argwhere(sub_mask) * stride - np.asarray(centre)[None]
    a2, b2, cov2, fitted2 = _plane_fit(np.where(ok, 2.0 * theta, 0.0), weight, index,
                                      sub_mask, stride)
    estimate = OddEvenPhase(float(a2 / 2.0), tuple(float(x) / 2.0 for x in b2), centre, 0.0,
                            0.0, int(ok.sum()))
    turn, ratio = _resolve_half_turn(z, bright, te_s, fat, estimate, max_voxels)
    offset = estimate.offset_rad + turn
    fitted = fitted2 / 2.0 + (offset - estimate.offset_rad)
    rms = float(np.degrees(np.sqrt(np.mean(np.angle(np.exp(1j * fitted[ok])) ** 2))))
    beta = np.concatenate([[np.angle(np.exp(1j * offset))], estimate.slopes_rad_per_voxel])
    chi2 = float(beta @ np.linalg.pinv(cov2 / 4.0) @ beta)
    return OddEvenPhase(offset_rad=float(np.angle(np.exp(1j * offset))),
                        slopes_rad_per_voxel=estimate.slopes_rad_per_voxel, centre=centre,
                        rms_deg=rms, chi2=chi2, voxels=int(ok.sum()), residual_ratio=float(ratio))
