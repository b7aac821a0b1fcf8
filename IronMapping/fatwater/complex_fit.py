"""Complex (real/imaginary) fat-water fit of a chunk of voxels, voxel by voxel::

    S(t) = (W + F c(t)) exp(-R2* t) exp(i (2 pi psi t + phi))

with W, F real and non-negative, a common initial phase phi and field map psi (Hz).
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..fatmodel import fat_phasor, get_spectrum
from .checks import _check_echo_times_s, _require_field_strength
from .complex_lm import lm_complex as _lm_complex
from .likelihood import _Gaussian
from .magnitude import _MagnitudeModel, _lm_magnitude, _loglinear_start


_COMPLEX_BLOCK = 4096  # voxels per complex fit block

# ---------------------------------------------------------------------------------------------
# Complex fit

def _complex_model(t, c, w, f, r, psi, phi, theta=None, even=None):
    """S = (W + F c) exp(-R t) exp(i (2 pi psi t + phi + theta e)); t in ms, R 1/ms, psi kHz.

    ``even`` [E, 1] is 1 on the echoes read with the second gradient polarity of a bipolar
    readout (2nd, 4th, ...), 0 elsewhere; ``theta`` their extra phase (rad), or None.
    """
    angle = 2 * np.pi * t * psi + phi
    if theta is not None:
        angle = angle + even * theta
    b = np.exp(-t * r + 1j * angle)
    return b, (w + c * f) * b


def _complex_start(z, t, c, w, f, r):
    """Field map and phase from the data given magnitude-fit W, F, R."""
    _, m = _complex_model(t, c, w, f, r, 0.0, 0.0)
    p = z * np.conj(m)
    dt = np.diff(t[:, 0])
    lag = (p[1:] * np.conj(p[:-1]))
    # Uniformly spaced echoes give psi modulo 1/dTE; use the mean spacing.
    psi = np.angle(lag.sum(0)) / (2 * np.pi * dt.mean())
    phi = np.angle((p * np.exp(-2j * np.pi * t * psi)).sum(0))
    return psi, phi


def _phase_start(z, t, c, w, f, r, psi):
    """Initial phase phi given W, F, R and the field map psi (kHz)."""
    _, m = _complex_model(t, c, w, f, r, psi, 0.0)
    return np.angle((z * np.conj(m)).sum(0))


def echo_period_hz(te_s):
    """1/dTE (Hz) for uniformly spaced echoes (the field map is known modulo it), else None.

    Parameters
    ----------
    te_s : array_like, (n_echoes,)
        Echo times in s; uniform when every spacing is within 0.1 % of the first.

    Returns
    -------
    float or None
        The period in Hz.
    """
    dt = np.diff(np.asarray(te_s, dtype=float))
    if dt.size and np.allclose(dt, dt[0], rtol=1e-3):
        return 1.0 / float(dt[0])
    return None


def field_distance_hz(a, b, period_hz):
    """|a - b| in Hz, modulo ``period_hz`` when it is not None.

    Parameters
    ----------
    a, b : array_like
        Field maps in Hz (broadcast).
    period_hz : float or None
        Period of the field map (:func:`echo_period_hz`); None for no wrap.

    Returns
    -------
    ndarray
        Distance in Hz, at most ``period_hz / 2`` when periodic.
    """
    d = np.asarray(a) - np.asarray(b)
    if period_hz is not None:
        d = (d + 0.5 * period_hz) % period_hz - 0.5 * period_hz
    return np.abs(d)


_OUT_KEYS = ("pdff", "r2star", "water", "fat", "s0", "fieldmap_hz", "phase", "rss", "start",
             "odd_even_phase")


def fit_fatwater_complex_chunk(z, te_s, *, field_strength_t, precession_clockwise=True,
                               spectrum=None, max_iter=60, fieldmap_hz=None,
                               odd_even_phase=False):
    """Complex fat-water fit (W, F, R2*, field map, phase) of a chunk of voxels.

    Without ``fieldmap_hz`` the magnitude fit (Gaussian) of |z| from both starts gives two
    starting points (W, F, R2*); field map and phase start from the phase of the data against
    that model. The better of the two complex fits (lower residual) is kept.

    Parameters
    ----------
    z : complex ndarray, (n_echoes, n_voxels)
        Complex echoes.
    te_s : array_like, (n_echoes,)
        Echo times in s, strictly increasing, at least 3.
    field_strength_t : float
        Main field in T.
    precession_clockwise : bool
        Toolbox convention; False conjugates the fat phasor (see fatmodel.fat_phasor).
    spectrum : str or FatSpectrum, optional
        Fat spectrum (default six-peak).
    max_iter : int
        Most Levenberg-Marquardt iterations per fit.
    fieldmap_hz : array_like, (n_voxels,), optional
        A field map to start from (Hz), e.g. the spatially consistent one of
        ``fieldmap.spatial_fieldmap``. Both magnitude starts are then started at it and the
        solution that stays within a quarter of the main fat frequency of it is kept (the
        lower residual if both do): the voxel cannot swap to its mirror solution.
    odd_even_phase : bool
        Also fit the extra phase theta (rad) of the even echoes (2nd, 4th, ...) of a bipolar
        readout, per voxel (see ``bipolar.estimate_odd_even_phase``).

    Returns
    -------
    dict of ndarray (n_voxels,)
        ``pdff`` (percent), ``r2star`` (1/s), ``water``, ``fat``, ``s0``, ``fieldmap_hz`` (Hz;
        modulo 1/dTE for uniform echoes), ``phase`` (rad), ``rss``, ``converged`` (bool),
        ``start`` (0 started from the water-dominant, 1 from the fat-dominant magnitude
        solution), ``odd_even_phase`` (rad; NaN unless fitted).

    Raises
    ------
    InputError
        ``z`` is not a 2-D complex array, or the field strength is missing or implausible.
    EchoTimeError
        Echo times of the wrong count, not increasing, or fewer than 3.
    """
    b0 = _require_field_strength(field_strength_t)
    z = np.asarray(z)
    if z.ndim != 2 or not np.iscomplexobj(z):
        raise InputError("The complex chunk must be a 2-D complex array [echo, voxel].")
    t_s = _check_echo_times_s(te_s, z.shape[0])
    c = fat_phasor(t_s * 1e3, b0, precession_clockwise, spectrum)[:, None]
    t = (t_s * 1e3)[:, None]
    even = (np.arange(z.shape[0]) % 2 == 1).astype(np.float64)[:, None] if odd_even_phase else None
    n = z.shape[1]
    if fieldmap_hz is not None:
        fieldmap_hz = np.broadcast_to(np.asarray(fieldmap_hz, dtype=np.float64), (n,))
    period = echo_period_hz(t_s)
    main_fat_hz = abs(get_spectrum(spectrum).frequencies_hz(b0)[
        int(np.argmax(get_spectrum(spectrum).relative_amplitudes))])
    out = {k: np.full(n, np.nan) for k in _OUT_KEYS}
    out["converged"] = np.zeros(n, dtype=bool)
    # The magnitude fits only give the complex fit its starts: float32 suffices (as in
    # fit_fatwater_chunk); the complex fit converges in float64.
    model = _MagnitudeModel(t[:, 0], c[:, 0], np.float32)
    for s0_ in range(0, n, _COMPLEX_BLOCK):
        sl = slice(s0_, min(s0_ + _COMPLEX_BLOCK, n))
        zb = z[:, sl].astype(np.complex128)
        valid = np.isfinite(zb).all(0) & (np.abs(zb).max(0) > 0)
        if fieldmap_hz is not None:
            valid &= np.isfinite(fieldmap_hz[sl])
        if not valid.any():
            continue
        zv = zb[:, valid]
        scale = np.abs(zv).max(0)
        zn = zv / scale
        mag = np.abs(zn)
        r0, s0 = _loglinear_start(mag, t[:, 0])
        mcount = zn.shape[1]
        mag32 = mag.astype(np.float32)
        starts = []
        for water_first in (True, False):
            w = s0.copy() if water_first else np.zeros(mcount)
            f = np.zeros(mcount) if water_first else s0.copy()
            r = r0.copy()
            _lm_magnitude(mag32, model, w, f, r, _Gaussian(), 50)
            starts.append((w, f, r))
        z2 = np.concatenate([zn, zn], axis=1)
        w = np.concatenate([starts[0][0], starts[1][0]])
        f = np.concatenate([starts[0][1], starts[1][1]])
        r = np.concatenate([starts[0][2], starts[1][2]])
        if fieldmap_hz is None:
            psi, phi = _complex_start(z2, t, c, w, f, r)
        else:
            guide = fieldmap_hz[sl][valid]
            psi = np.concatenate([guide, guide]) * 1e-3
            phi = _phase_start(z2, t, c, w, f, r, psi)
        rows = [w, f, r, psi, phi] + ([np.zeros(2 * mcount)] if odd_even_phase else [])
        p, cost, conv = _lm_complex(z2, t, c, np.stack(rows), max_iter, even)
        second = cost[mcount:] < cost[:mcount]
        if fieldmap_hz is not None:
            near = field_distance_hz(p[3] * 1e3, np.concatenate([guide, guide]),
                                     period) <= 0.25 * main_fat_hz
            near_w, near_f = near[:mcount], near[mcount:]
            second = np.where(near_w & near_f, second, near_f & ~near_w)
            neither = ~near_w & ~near_f
            second[neither] = (cost[mcount:] < cost[:mcount])[neither]
        pick = np.arange(mcount) + mcount * second
        w, f, r, psi, phi = p[:5, pick]
        total = w + f
        idx = np.arange(sl.start, sl.stop)[valid]
        with np.errstate(invalid="ignore", divide="ignore"):
            out["pdff"][idx] = np.where(total > 0, 100.0 * f / total, np.nan)
        out["r2star"][idx] = r * 1e3
        out["water"][idx] = w * scale
        out["fat"][idx] = f * scale
        out["s0"][idx] = total * scale
        out["fieldmap_hz"][idx] = psi * 1e3
        out["phase"][idx] = np.angle(np.exp(1j * phi))
        out["rss"][idx] = 2.0 * cost[pick] * scale * scale
        out["converged"][idx] = conv[pick]
        out["start"][idx] = second.astype(np.float64)
        if odd_even_phase:
            out["odd_even_phase"][idx] = np.angle(np.exp(1j * p[5, pick]))
    return out
