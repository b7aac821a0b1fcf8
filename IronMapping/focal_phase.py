"""Sign of the local field shift around a dark focus, from complex multi-echo data.

Iron is paramagnetic and calcium diamagnetic: a focus of either darkens gradient-echo
images, but the field it adds around itself has opposite signs (the basis of
susceptibility-weighted imaging and QSM). The field is read from the echo-to-echo phase
evolution, f = angle(S_{n+1} conj(S_n)) / (2 pi dTE), combined over echo pairs with
inverse-variance weights (phase variance ~ 1/|S|^2). Around each focus, in a box reaching about
1.5 focus diameters beyond it on each side (in-plane; one diameter, at least two slices,
through-plane), inside the organ, the field is fitted as

    f(r) = a0 + a . r + gamma B0 chi (d * m)(r)

a first-order polynomial for the background field (the slowly varying field of the body
and the scanner, removed locally) plus the field of the focus mask m with a uniform
susceptibility chi, d the unit dipole kernel D(k) = 1/3 - (k . b)^2 / |k|^2 (b the main
field direction). The sign of chi gives paramagnetic (chi > 0, iron) or diamagnetic (chi < 0,
calcium); the focus itself and its edge (no usable phase) are left out of the fit.

Conventions, stated in every output:
- B0 along the patient's superior-inferior axis (RAS S), as for axial imaging in a
  horizontal-bore scanner; chi relative to the surrounding organ.
- Phase convention: the data follow exp(+i 2 pi f t), i.e. the phase advances with echo time
  for a higher precession frequency (ISMRM Fat-Water Toolbox ``PrecessionIsClockwise = 1``;
  ``precession_clockwise=False`` reverses it). Vendors differ; check with a known
  paramagnetic structure (veins, a haematoma) when the convention of a scanner is unknown.
The sign is "not determined" without phase data, without a known echo spacing, or when
|chi| / SE(chi) < MIN_T (weak evidence).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

GAMMA_BAR_MHZ_PER_T = 42.577
MIN_T = 5.0
MIN_FIT_VOXELS = 30
B0_DIRECTION_TEXT = "B0 along the patient's superior-inferior axis (RAS S)"


def convention_text(precession_clockwise: bool) -> str:
    """The phase convention in words, with its ISMRM Fat-Water Toolbox name.

    Parameters
    ----------
    precession_clockwise : bool
        ISMRM PrecessionIsClockwise.

    Returns
    -------
    str
    """
    if precession_clockwise:
        return ("phase advances with echo time for a higher precession frequency, exp(+i 2 pi f t) "
                "(ISMRM Fat-Water Toolbox PrecessionIsClockwise = 1)")
    return ("phase falls with echo time for a higher precession frequency, exp(-i 2 pi f t) "
            "(ISMRM Fat-Water Toolbox PrecessionIsClockwise = 0)")


class _Components:
    """Complex echoes built box by box from real and imaginary images (no full copy)."""

    def __init__(self, real, imaginary):
        self.real, self.imaginary = real, imaginary
        self.shape = np.shape(real)
        self.ndim = len(self.shape)

    def __getitem__(self, index):
        return (np.asarray(self.real[index], np.float32)
                + 1j * np.asarray(self.imaginary[index], np.float32))


def complex_echoes(complex_signal, magnitude=None):
    """Complex echoes from a complex array or the loaders' components, with a note.

    A phase in stored units is mapped linearly from its range onto [-pi, pi).

    Parameters
    ----------
    complex_signal : complex ndarray, shape (n_echoes, k, j, i), dict or None
        A complex array, or the loaders' ``metadata["complex_components"]`` dict ("real" +
        "imaginary", or "phase" with the magnitude).
    magnitude : ndarray, shape (n_echoes, k, j, i), optional
        Needed with a "phase" component.

    Returns
    -------
    data : complex array-like, shape (n_echoes, k, j, i), or None
    note : str
        Where the data came from, or why there are none.
    """
    if complex_signal is None:
        return None, "no phase data"
    if isinstance(complex_signal, dict):
        comps = complex_signal
        if "real" in comps and "imaginary" in comps:
            if np.shape(comps["real"]) != np.shape(comps["imaginary"]):
                return None, "real and imaginary images differ in shape"
            return _Components(comps["real"], comps["imaginary"]), "real and imaginary images"
        if "phase" in comps and magnitude is not None:
            p = np.asarray(comps["phase"], np.float64)
            lo, hi = float(np.nanmin(p)), float(np.nanmax(p))
            note = "phase images in radians"
            if hi - lo > 2 * np.pi + 0.05:
                p = (p - lo) / (hi - lo) * 2 * np.pi - np.pi
                note = f"phase images rescaled from their stored range [{lo:g}, {hi:g}] to [-pi, pi)"
            return np.asarray(magnitude, np.float32) * np.exp(1j * p).astype(np.complex64), note
        return None, "phase images without magnitude, or no phase component"
    arr = np.asarray(complex_signal)
    if not np.iscomplexobj(arr):
        return None, "the signal given as complex is real-valued: no phase"
    return arr, "complex echoes"


def b0_direction_kji(ijk_to_ras) -> np.ndarray:
    """Unit main-field direction (RAS S) in the array frame (k, j, i) of the voxel axes.

    Parameters
    ----------
    ijk_to_ras : ndarray, shape (4, 4), or None
        Voxel index to RAS mm; None gives the k axis.

    Returns
    -------
    ndarray, shape (3,)
    """
    m = np.asarray(ijk_to_ras if ijk_to_ras is not None else np.eye(4), float)[:3, :3]
    axes = m / np.linalg.norm(m, axis=0)
    b_ijk = axes.T @ np.array([0.0, 0.0, 1.0])
    b = b_ijk[::-1]
    n = np.linalg.norm(b)
    return b / n if n > 0 else np.array([1.0, 0.0, 0.0])


def prepare(complex_signal, magnitude, echo_times_ms, ijk_to_ras, field_strength_t,
            precession_clockwise, shape) -> dict:
    """State for :func:`field_shift`: the complex echoes and the conventions, or why not.

    Parameters
    ----------
    complex_signal, magnitude
        As in `complex_echoes`.
    echo_times_ms : ndarray, shape (n_echoes,)
        Echo times in ms.
    ijk_to_ras : ndarray, shape (4, 4), or None
        Voxel index to RAS mm.
    field_strength_t : float or None
        Field strength in T.
    precession_clockwise : bool
        ISMRM PrecessionIsClockwise of the data.
    shape : tuple of int
        The maps' spatial shape (k, j, i).

    Returns
    -------
    dict
        available (bool), reason (why not, or None), source, precession_clockwise,
        field_strength_t; when available also data, te_s (s), spacing_kji (mm), b0_kji,
        geometry_known.
    """
    state = {"available": False, "precession_clockwise": bool(precession_clockwise),
             "field_strength_t": field_strength_t}
    data, note = complex_echoes(complex_signal, magnitude)
    state["source"] = note
    if data is None:
        state["reason"] = note
        return state
    if data.ndim != 4 or tuple(data.shape[1:]) != tuple(shape) or data.shape[0] < 2:
        state["reason"] = (f"complex echoes of shape {data.shape} do not match the maps "
                           f"{tuple(shape)} with at least two echoes")
        return state
    if echo_times_ms is None or len(np.ravel(echo_times_ms)) != data.shape[0]:
        state["reason"] = "echo times of the complex echoes unknown"
        return state
    m = np.asarray(ijk_to_ras if ijk_to_ras is not None else np.eye(4), float)
    state.update(available=True, data=data, te_s=np.asarray(echo_times_ms, float).ravel() * 1e-3,
                 spacing_kji=np.linalg.norm(m[:3, :3], axis=0)[::-1],
                 b0_kji=b0_direction_kji(ijk_to_ras), reason=None,
                 geometry_known=ijk_to_ras is not None)
    return state


def describe(state: dict) -> dict:
    """JSON-able description of the phase analysis (conventions, availability).

    Parameters
    ----------
    state : dict
        From `prepare`.

    Returns
    -------
    dict
    """
    return {"available": bool(state.get("available")), "source": state.get("source"),
            "reason": state.get("reason"), "b0_direction": B0_DIRECTION_TEXT,
            "phase_convention": convention_text(state.get("precession_clockwise", True)),
            "min_t": MIN_T, "method": ("echo-to-echo phase evolution; local first-order "
                                       "background field and a uniform-susceptibility dipole "
                                       "model of the focus, weighted least squares")}


def field_map_hz(data: np.ndarray, te_s: np.ndarray, precession_clockwise: bool = True):
    """Frequency offset and its weight from complex echoes (pairs of successive echoes).

    Parameters
    ----------
    data : complex ndarray, shape (n_echoes, ...)
    te_s : ndarray, shape (n_echoes,)
        Echo times in s.
    precession_clockwise : bool
        ISMRM PrecessionIsClockwise of the data.

    Returns
    -------
    f : ndarray, shape (...)
        Offset in Hz; NaN without weight.
    weight : ndarray, shape (...)
        Inverse-variance weight in 1/Hz^2.
    """
    num = np.zeros(data.shape[1:])
    den = np.zeros(data.shape[1:])
    a2 = np.abs(data).astype(np.float64) ** 2
    for n in range(data.shape[0] - 1):
        dt = te_s[n + 1] - te_s[n]
        z = data[n + 1] * np.conj(data[n])
        f = np.angle(z) / (2 * np.pi * dt)
        with np.errstate(divide="ignore", invalid="ignore"):
            var = (1.0 / a2[n] + 1.0 / a2[n + 1]) / (2 * np.pi * dt) ** 2
            w = np.where(np.isfinite(var) & (var > 0), 1.0 / var, 0.0)
        num += w * f
        den += w
    with np.errstate(invalid="ignore", divide="ignore"):
        f = np.where(den > 0, num / den, np.nan)
    return (f if precession_clockwise else -f), den


def dipole_field(mask: np.ndarray, spacing_kji, b0_kji, pad: int | None = None) -> np.ndarray:
    """Field (in units of gamma B0) of a susceptibility map or mask (chi = 1 in a mask).

    Parameters
    ----------
    mask : ndarray, shape (k, j, i)
        Susceptibility (ppm gives ppm of B0) or a boolean mask.
    spacing_kji : ndarray, shape (3,)
        Voxel size in mm along k, j, i.
    b0_kji : ndarray, shape (3,)
        Unit main-field direction in the array frame.
    pad : int, optional
        Zero padding on each side in voxels; None pads each axis by its own length (no
        wrap-around of the dipole tails within the box).

    Returns
    -------
    ndarray, shape (k, j, i)
    """
    from scipy import fft

    pads = []
    for n in mask.shape:
        before = n // 2 + 4 if pad is None else pad
        total = fft.next_fast_len(n + 2 * before, real=True)
        pads.append((before, total - n - before))
    padded = np.pad(mask.astype(np.float64), pads)
    freqs = [np.fft.fftfreq(n, d=d) for n, d in zip(padded.shape[:-1], spacing_kji[:-1])]
    freqs.append(np.fft.rfftfreq(padded.shape[-1], d=spacing_kji[-1]))
    kk, kj, ki = np.meshgrid(*freqs, indexing="ij", sparse=True)
    k2 = kk * kk + kj * kj + ki * ki
    kb = kk * b0_kji[0] + kj * b0_kji[1] + ki * b0_kji[2]
    with np.errstate(invalid="ignore", divide="ignore"):
        d = np.where(k2 > 0, 1.0 / 3.0 - kb * kb / k2, 0.0)
    field = fft.irfftn(fft.rfftn(padded) * d, s=padded.shape)
    cut = tuple(slice(p[0], p[0] + n) for p, n in zip(pads, mask.shape))
    return field[cut]


def field_shift(state: dict, mask: np.ndarray, domain: np.ndarray) -> dict:
    """Sign of the local field shift around one focus (see the module docstring).

    Parameters
    ----------
    state : dict
        From `prepare`.
    mask : bool ndarray, shape (k, j, i)
        The focus.
    domain : bool ndarray, shape (k, j, i)
        The organ around it.

    Returns
    -------
    dict
        sign ("paramagnetic", "diamagnetic" or None), determined (bool), susceptibility_ppm,
        field_coefficient_hz, t_statistic, n_voxels_fitted, b0_direction, phase_convention,
        reason.
    """
    out = {"sign": None, "determined": False, "susceptibility_ppm": None,
           "field_coefficient_hz": None, "t_statistic": None, "n_voxels_fitted": 0,
           "b0_direction": B0_DIRECTION_TEXT,
           "phase_convention": convention_text(state.get("precession_clockwise", True)),
           "reason": None}
    if not state.get("available"):
        out["reason"] = f"not determined: {state.get('reason') or 'no phase data'}"
        return out
    from .focal import bounding_box

    tight = bounding_box(mask)
    ext = [b.stop - b.start for b in tight]
    margin = [max(2, e) if n == 0 else max(4, int(1.5 * e)) for n, e in enumerate(ext)]
    box = tuple(slice(max(0, b.start - g), min(n, b.stop + g))
                for b, g, n in zip(tight, margin, mask.shape))
    m = mask[box]
    data = state["data"][(slice(None),) + box]
    f, w = field_map_hz(data, state["te_s"], state["precession_clockwise"])
    pattern = dipole_field(m, state["spacing_kji"], state["b0_kji"])
    keep = (domain[box] & ~ndimage.binary_dilation(m, iterations=1) & np.isfinite(f) & (w > 0))
    n = int(keep.sum())
    out["n_voxels_fitted"] = n
    if n < MIN_FIT_VOXELS:
        out["reason"] = f"not determined: only {n} voxels with usable phase around the focus"
        return out
    coords = np.stack(np.nonzero(keep), axis=1).astype(float) * state["spacing_kji"]
    coords -= coords.mean(axis=0)
    coords = coords[:, np.ptp(coords, axis=0) > 0]   # a single slice has no through-slice term
    x = np.column_stack([np.ones(n), coords, pattern[keep]])
    sw = np.sqrt(w[keep] / np.median(w[keep]))
    y = f[keep]
    coef, *_ = np.linalg.lstsq(x * sw[:, None], y * sw, rcond=None)
    resid = (y - x @ coef) * sw
    dof = max(n - x.shape[1], 1)
    s2 = float(resid @ resid) / dof
    try:
        cov = s2 * np.linalg.inv((x * sw[:, None]).T @ (x * sw[:, None]))
    except np.linalg.LinAlgError:
        out["reason"] = "not determined: the field around the focus cannot be separated from the background"
        return out
    a = float(coef[-1])
    se = float(np.sqrt(max(cov[-1, -1], 0.0)))
    t = a / se if se > 0 else 0.0
    b0 = state.get("field_strength_t")
    out.update(field_coefficient_hz=a, t_statistic=float(t),
               susceptibility_ppm=(a / (GAMMA_BAR_MHZ_PER_T * float(b0)) if b0 else None))
    if abs(t) < MIN_T:
        out["reason"] = f"not determined: weak evidence (|t| = {abs(t):.1f} < {MIN_T:g})"
        return out
    out["determined"] = True
    out["sign"] = "paramagnetic" if a > 0 else "diamagnetic"
    out["reason"] = (f"{out['sign']}: the field around the focus follows a dipole of "
                     f"{'positive' if a > 0 else 'negative'} susceptibility (t = {t:.1f})")
    return out
