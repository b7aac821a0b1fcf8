"""Voxel-wise R2*/T2* (or R2/T2) mapping from magnitude multi-echo data.

    >>> from IronMapping.relaxometry import fit
    >>> result = fit(signal, echo_times_ms)          # signal: [echo, ...spatial]
    >>> result.r2star, result.t2star, result.status

Methods (``method=``):

=================  ===========================================================================
"auto"             the default: "noise-corrected-ml" (see README's accuracy table for why)
"noise-corrected-ml"  "noise-corrected", continued by "ml" in voxels where fewer than three
                   echoes stand clear of the noise floor (very short T2* or low SNR)
"noise-corrected"  squared-signal fit with the noise floor 2 L sigma^2 (Feng et al. 2013,
                   MRM 70:1765); iteratively reweighted with Var(S^2)
"ml"               noncentral-chi maximum likelihood, known sigma and L (Fisher scoring)
"truncation"       drop late echoes near the noise floor (SNR < 2), then least squares
                   (He et al. 2008, MRM 60:1082; Pennell group / CMRtools practice)
"offset"           S0 exp(-R2* t) + C (Ghugre et al. 2006, JMRI 23:9)
"nlls"             mono-exponential least squares, Gaussian noise
"loglinear"        log-linear least squares weighted by S^2
"arlo"             auto-regression on linear operations (Pei et al. 2015, MRM 73:843);
                   uniformly spaced echoes only
"fat-water"        water, fat (six-peak spectrum) and one R2* from magnitude data
                   (MAGO/MAGORINO; Triay Bagur 2019, Bray 2023); needs field_strength_t
=================  ===========================================================================

The work is split into blocks of voxels that run on all cores (numpy releases the GIL), so
memory stays bounded and a cancel request is honoured within one block.
"""

from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np

from . import estimators
from .blocks import block_voxels, run_blocks
from .errors import EchoTimeError, InputError
# the result types have a module of their own (fit_result); they stay importable from here
from .fit_result import (_SCAN_VOXELS, METHOD_REFERENCES, RelaxometryFit, Status,  # noqa: F401
                         method_reference, t2star_from_r2star)
from .noise import NoiseEstimate, estimate_noise_differences
from .noise_source import resolve_noise
from .tissue_mask import automatic_mask, invalid_voxels, spike_voxels


METHODS = ("auto", "noise-corrected-ml", "noise-corrected", "ml", "truncation", "offset", "nlls", "loglinear",
           "arlo", "fat-water")
DEFAULT_METHOD = "noise-corrected-ml"
NOISE_AWARE = {"noise-corrected-ml", "noise-corrected", "ml", "truncation", "fat-water"}
NOISE_FLOOR_MODELS = {"noise-corrected-ml", "noise-corrected", "ml"}
_MIN_ECHOES = {"offset": 3, "arlo": 3, "fat-water": 3}
_KERNELS = {
    "noise-corrected-ml": estimators.noise_corrected_ml,
    "noise-corrected": estimators.noise_corrected,
    "ml": estimators.maximum_likelihood,
    "truncation": estimators.truncation,
    "offset": estimators.offset,
    "nlls": estimators.nlls,
    "loglinear": estimators.loglinear,
    "arlo": estimators.arlo,
}
#: Extra maps in signal units (scaled back after a fit in units of the local noise SD).
SCALED_EXTRAS = frozenset({"water", "fat", "offset"})
FIT_OPTIONS = frozenset({"workers", "snr_limit", "fat_evidence", "precession_clockwise",
                         "complex_signal", "readout"})


def check_echo_times(echo_times_ms, n_echoes: int | None = None, method: str = "auto") -> np.ndarray:
    """Validate echo times (ms) and return them as float64; raise EchoTimeError with advice.

    The checks shared by every input (count, units, duplicates, order) are
    :func:`IronMapping.io.checks.check_echo_times`; the method's own needs are added here.

    Parameters
    ----------
    echo_times_ms : array_like, (n_echoes,)
        Echo times in ms, strictly increasing.
    n_echoes : int, optional
        Echoes in the signal; the count must match when given.
    method : str
        Method the times are for: "offset", "arlo" and "fat-water" need at least 3 echoes (the
        others 2), "arlo" uniform spacing (within 0.1 % of the mean spacing).

    Returns
    -------
    ndarray, float64, (n_echoes,)
        The echo times in ms.

    Raises
    ------
    EchoTimeError
        A check failed; the message says what to change.
    """
    from .io.checks import check_echo_times as check_common

    te = check_common(echo_times_ms, n_echoes, require_increasing=True)
    need = _MIN_ECHOES.get(method, 2)
    if te.size < need:
        raise EchoTimeError(f"Method {method!r} needs at least {need} echoes; got {te.size}.")
    if method == "arlo":
        spacing = np.diff(te)
        if np.ptp(spacing) > 1e-3 * spacing.mean():
            raise EchoTimeError(
                f"ARLO needs uniformly spaced echoes; the spacings are {np.round(spacing, 4).tolist()} ms. "
                "Use method='noise-corrected' or 'nlls' for non-uniform echo spacing.")
    return te


def resolve_method(method: str) -> str:
    """The concrete method for a requested one ("auto" is DEFAULT_METHOD).

    Parameters
    ----------
    method : str
        One of METHODS.

    Returns
    -------
    str
        ``method``, or DEFAULT_METHOD for "auto".

    Raises
    ------
    InputError
        ``method`` is not one of METHODS.
    """
    if method not in METHODS:
        raise InputError(f"Unknown method {method!r}. Choose one of: {', '.join(METHODS)}.")
    return DEFAULT_METHOD if method == "auto" else method


def fit(signal, echo_times_ms, method: str = "auto", mask=None, noise_sigma: float | None = None,
        coils: float | None = None, progress: Callable[[float], None] | None = None,
        cancel: Callable[[], bool] | None = None, quantity: str = "T2*",
        field_strength_t: float | None = None, include_mask=None, *, workers: int | None = None,
        snr_limit: float | None = None, fat_evidence: float | None = None,
        precession_clockwise: bool = True, complex_signal=None, readout: str = "auto",
        **unknown) -> RelaxometryFit:
    """Fit R2* (1/s) and T2* (ms) in every voxel.

    Parameters
    ----------
    signal : array_like, (n_echoes, ...)
        Magnitudes, echo axis first, any spatial shape.
    echo_times_ms : array_like, (n_echoes,)
        Strictly increasing echo times in ms.
    method : str
        One of METHODS; "auto" is "noise-corrected-ml".
    mask : bool array of the spatial shape, optional
        Voxels to fit; None makes one: every voxel inside the body outline (above the noise floor
        in echo 1 or 2, holes filled per slice and in 3-D).
    noise_sigma : float or array of the spatial shape, optional
        Noise SD per channel (signal units; a number, or a map of the spatial shape). When None
        (with ``coils``) it is estimated: from the decay residuals across echoes in tissue (a
        noise map where parallel imaging makes the noise vary in space), or from the background
        air when it is pure noise and agrees (noise_source.resolve_noise).
    coils : float, optional
        Receive coil count L; estimated with the noise SD when None.
    progress : callable(float), optional
        Called with the finished fraction (0..1) from the calling thread; the values never
        decrease, the first is 0 and the last 1.
    cancel : callable() -> bool, optional
        Polled from the calling thread before and after every block of voxels (see
        :mod:`IronMapping.blocks`); returning True raises FitCancelled.
    quantity : str
        "T2*" (gradient echo) or "T2" (spin echo); only labels the result.
    field_strength_t : float, optional
        Main field in T (needed by "fat-water").
    include_mask : bool array of the spatial shape, optional
        Voxels fitted whatever the automatic mask says (the union of the segments, so that no
        organ voxel is called background).
    workers : int, optional
        Threads (default: every core the process may use).
    snr_limit : float, optional
        "truncation" only: echoes are kept while the magnitude is at least this many times the
        mean noise floor (default 2).
    fat_evidence : float, optional
        "fat-water" only: nats the fat-dominant solution needs over the water-dominant one
        (default ``fatwater.FAT_DOMINANT_EVIDENCE``).
    precession_clockwise : bool
        "fat-water" only: sign of the fat phasor (default True).
    complex_signal : complex array_like, (n_echoes, ...), optional
        "fat-water" only: complex echoes with the signal's shape, or None (magnitude only); with
        phase the complex fit decides voxels the magnitude cannot (few echoes) and a bipolar
        readout is corrected.
    readout : str
        "fat-water" only: "auto", "bipolar" or "monopolar" (see fatwater.fit_fatwater).
    **unknown
        Any other keyword is refused with an InputError naming the valid ones.

    Returns
    -------
    RelaxometryFit
        Maps with the signal's spatial shape: ``r2star`` (float32, 1/s; R2 for spin echo),
        ``t2star`` (float32, ms), ``s0`` (float32, signal units), ``quality`` (float32, R^2
        0..1), ``uncertainty`` (float32, SD of R2* in 1/s), ``status`` (uint8, :class:`Status`
        codes; NaN maps where not FITTED), ``echoes_used`` (uint8) and ``maps`` (extra maps:
        "offset", or "pdff" in %, "water", "fat" for fat-water); plus ``method`` (the concrete
        method), ``echo_times_ms``, ``noise_sigma``, ``coils``, ``noise_source``,
        ``noise_sigma_map`` (noise SD per voxel where it varies in space, else None),
        ``noise_details``, ``quantity``, ``warnings`` and ``provenance()`` (a JSON-able record).

    Raises
    ------
    InputError, EchoTimeError
        Bad signal, mask, options or echo times (the message says what to do).
    FitCancelled
        ``cancel()`` returned True; no maps are returned.
    """
    if unknown:
        raise InputError(f"Unknown option(s) {', '.join(map(repr, sorted(unknown)))} for fit(). Valid "
                         "options: method, mask, noise_sigma, coils, progress, cancel, quantity, "
                         f"field_strength_t, include_mask, {', '.join(sorted(FIT_OPTIONS))}.")
    problem = _validate(signal, echo_times_ms, method, quantity, field_strength_t)
    spatial = problem.spatial
    noise, fit_flat, invalid_flat, notes = _noise_and_mask(
        problem.signal2d, problem.echo_times_ms, problem.method, _spatial_mask(mask, spatial, "mask"),
        _spatial_mask(include_mask, spatial, "include_mask"), noise_sigma, coils, spatial)
    spikes = np.flatnonzero(spike_voxels(problem.signal2d, invalid_flat))
    del invalid_flat
    fit_flat[spikes] = False
    index = _Selection(fit_flat)
    del fit_flat
    if problem.method == "fat-water":
        # the whole-image fat-water fit (neighbourhood start selection, complex fit, bipolar
        # correction) runs first; the blocks then take its voxels and assess them as any fit
        kernel, progress = _spatial_fat_water(problem, noise, index, field_strength_t, workers,
                                              progress, cancel, notes, fat_evidence,
                                              precession_clockwise, complex_signal, readout)
    elif complex_signal is not None or readout != "auto":
        raise InputError("complex_signal and readout apply to method='fat-water' only.")
    else:
        kernel = _kernel_for(problem.method, snr_limit=snr_limit)
    flat = _run(problem, noise, index, kernel, workers, progress, cancel)
    del index
    flat.status[spikes] = Status.OUTLIER
    result = _assemble(problem, noise, flat, notes)
    for w in result.warnings:
        warnings.warn(w, stacklevel=2)
    return result


@dataclass(frozen=True)
class _Problem:
    """A validated fit request.

    signal2d : (n_echoes, n_voxels) view of the signal (a copy only when it was not contiguous)
    echo_times_ms : (n_echoes,) float64 ms; spatial : the spatial shape; method : the concrete
    method; requested_method : as given ("auto" ...); quantity, field_strength_t : as given.
    """

    signal2d: np.ndarray
    echo_times_ms: np.ndarray
    spatial: tuple
    method: str
    requested_method: str
    quantity: str
    field_strength_t: float | None

    @property
    def n_voxels(self) -> int:
        return self.signal2d.shape[1]


def _validate(signal, echo_times_ms, method, quantity, field_strength_t) -> _Problem:
    """Check the signal, method, quantity and echo times; raise InputError/EchoTimeError."""
    requested = method
    method = resolve_method(method)
    if quantity not in ("T2*", "T2"):
        raise InputError(f"quantity must be 'T2*' or 'T2', not {quantity!r}.")
    signal = np.asarray(signal)
    if signal.ndim < 2:
        raise InputError(
            f"signal must have the echo axis first and at least one spatial axis; got shape {signal.shape}.")
    if not np.issubdtype(signal.dtype, np.number) or np.iscomplexobj(signal):
        raise InputError("signal must hold real magnitude values; take np.abs() of complex data first.")
    te_ms = check_echo_times(echo_times_ms, signal.shape[0], method)
    if method == "fat-water" and field_strength_t is None:
        raise InputError("method='fat-water' needs field_strength_t (tesla) to place the fat peaks.")
    spatial = tuple(signal.shape[1:])
    y2d = signal.reshape(signal.shape[0], int(np.prod(spatial)))
    if not _any_positive(y2d):
        raise InputError(
            "The signal has no positive values (all zero, negative or not a number): there is "
            "nothing to fit. Check that the magnitude images of the right series were loaded.")
    return _Problem(y2d, te_ms, spatial, method, requested, quantity, field_strength_t)


def _any_positive(y2d) -> bool:
    with np.errstate(invalid="ignore"):
        return any(np.any(y2d[:, i:i + _SCAN_VOXELS] > 0) for i in range(0, y2d.shape[1], _SCAN_VOXELS))


class _Selection:
    """The flat indices of the selected voxels, found block by block: ``selection[a:b]`` are
    the indices of the a-th to (b-1)-th True voxels (ascending), without an index array of the
    whole image (8 bytes a voxel) beside the mask (1 byte)."""

    CHUNK = 8192

    def __init__(self, selected: np.ndarray):
        self.selected = selected
        counts = [np.count_nonzero(selected[i:i + self.CHUNK]) for i in range(0, selected.size, self.CHUNK)]
        self.offsets = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])
        self.size = int(self.offsets[-1])

    def __getitem__(self, sl: slice) -> np.ndarray:
        a, b = sl.start, min(sl.stop, self.size)
        if a >= b:
            return np.empty(0, np.intp)
        first = int(np.searchsorted(self.offsets, a, side="right")) - 1
        last = int(np.searchsorted(self.offsets, b, side="left"))
        lo = first * self.CHUNK
        idx = np.flatnonzero(self.selected[lo:last * self.CHUNK]) + lo
        skip = a - int(self.offsets[first])
        return idx[skip:skip + b - a]


class _FlatMaps:
    """The output maps while blocks fill them: flat (n_voxels,) arrays, NaN / 0 until fitted.

    r2star, s0, quality, uncertainty : float32; status, echoes_used : uint8; maps : extra maps
    (float32), created by the first block that returns them.
    """

    def __init__(self, n_voxels: int):
        self.n_voxels = n_voxels
        self.r2star = np.full(n_voxels, np.nan, np.float32)
        self.s0 = np.full(n_voxels, np.nan, np.float32)
        self.quality = np.full(n_voxels, np.nan, np.float32)
        self.uncertainty = np.full(n_voxels, np.nan, np.float32)
        self.status = np.zeros(n_voxels, np.uint8)
        self.echoes_used = np.zeros(n_voxels, np.uint8)
        self.maps: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()

    def store(self, idx, bf: estimators.BlockFit, status, quality, uncertainty, invalid, scale):
        """Write one block's answer at voxels ``idx``; ``scale`` (or None) the block's noise SD."""
        ok = status == Status.FITTED
        self.r2star[idx] = np.where(ok, bf.r2star, np.nan)
        self.s0[idx] = np.where(ok, bf.s0 if scale is None else bf.s0 * scale, np.nan)
        self.quality[idx] = np.where(invalid, np.nan, quality)
        self.uncertainty[idx] = np.where(ok, uncertainty, np.nan)
        self.status[idx] = status
        self.echoes_used[idx] = np.clip(bf.echoes_used, 0, 255)
        extra = dict(bf.maps)
        if bf.offset is not None:
            extra["offset"] = bf.offset
        for name, values in extra.items():
            target = self.maps.get(name)
            if target is None:
                with self._lock:
                    target = self.maps.setdefault(name, np.full(self.n_voxels, np.nan, np.float32))
            if scale is not None and name in SCALED_EXTRAS:
                values = values * scale
            # like R2*, extra maps (PDFF, offset, ...) are only reported where the fit stands
            target[idx] = np.where(ok, values, np.nan)


class _BlockFitter:
    """Fits blocks of voxels of one problem into a `_FlatMaps` (called from worker threads)."""

    def __init__(self, problem: _Problem, noise: NoiseEstimate | None, out: _FlatMaps):
        self.signal2d = problem.signal2d
        self.method = problem.method
        self.t_s = problem.echo_times_ms / 1000.0
        self.r2_max = 3.0 / self.t_s[0] if self.t_s[0] > 0 else np.inf
        self.coils = noise.coils if noise is not None else 1.0
        # With a noise map each voxel is fitted in units of its own noise SD: R2*, its SD and
        # R^2 do not depend on the signal scale, and S0 (and water, fat, offset) are scaled back.
        self.sigma_map = noise.sigma_map if noise is not None else None
        self.sigma = 1.0 if self.sigma_map is not None else (noise.sigma if noise is not None else None)
        self.out = out

    def fit(self, idx, kernel) -> np.ndarray | None:
        """Fit voxels ``idx`` with ``kernel``; returns those it flags for polishing (or None)."""
        y = self.signal2d[:, idx].astype(np.float64)
        invalid = ~np.isfinite(y.sum(0)) | (y.min(0) < 0)
        if invalid.any():
            y[:, invalid] = np.where(np.isfinite(y[:, invalid]), np.maximum(y[:, invalid], 0.0), 0.0)
        scale = None if self.sigma_map is None else self.sigma_map[idx].astype(np.float64)
        if scale is not None:
            y /= scale
        # Non-finite intermediate values are expected (diverging voxels) and end up in status.
        with np.errstate(all="ignore"):
            if callable(kernel):
                bf = kernel(y, self.t_s, sigma=self.sigma, coils=self.coils)
            else:  # a whole-image fit computed beforehand (fatwater.FatWaterFit)
                bf = kernel.block_fit(idx, scale)
            status, quality, uncertainty = _assess(y, self.t_s, bf, self.method, self.sigma,
                                                   self.coils, invalid, self.r2_max)
        del y
        self.out.store(idx, bf, status, quality, uncertainty, invalid, scale)
        return None if bf.polish is None else idx[bf.polish & ~invalid]


def _run(problem: _Problem, noise, index: _Selection, kernel, workers, progress, cancel) -> _FlatMaps:
    """Fit the voxels ``index`` in blocks on ``workers`` threads (see :mod:`IronMapping.blocks`)."""
    out = _FlatMaps(problem.n_voxels)
    fitter = _BlockFitter(problem, noise, out)
    threads = workers or None
    size = block_voxels(problem.signal2d.shape[0])
    if progress is not None:
        progress(0.0)
    if problem.method == "noise-corrected-ml":
        # The maximum-likelihood polish has a Python-heavy inner loop, so the few voxels that
        # need it are gathered from all blocks and polished together in a second pass.
        flagged: list[np.ndarray] = []
        run_blocks(lambda sl: flagged.append(fitter.fit(index[sl], _flag_for_polish)), index.size,
                   size, workers=threads, progress=progress, cancel=cancel, share=0.95)
        flagged = [f for f in flagged if f is not None and f.size]
        polish = np.sort(np.concatenate(flagged)) if flagged else np.empty(0, np.intp)
        run_blocks(lambda sl: fitter.fit(polish[sl], kernel), polish.size, size,
                   workers=threads, progress=progress, cancel=cancel, start=0.95, share=0.05)
    else:
        run_blocks(lambda sl: fitter.fit(index[sl], kernel), index.size, size,
                   workers=threads, progress=progress, cancel=cancel)
    if progress is not None:
        progress(1.0)
    return out


def _assemble(problem: _Problem, noise, flat: _FlatMaps, notes) -> RelaxometryFit:
    """The result in the spatial shape, with the method's notes."""
    te_ms, method = problem.echo_times_ms, problem.method
    t2 = t2star_from_r2star(flat.r2star, flat.status, te_ms)
    fitted = flat.status == Status.FITTED
    n_fit = int(np.count_nonzero(fitted))
    if n_fit and method in ("loglinear", "nlls", "arlo"):
        short = np.count_nonzero(t2[fitted] < 2.0 * te_ms[0] + 5.0) / n_fit
        if short > 0.3:
            notes.append(
                f"{100 * short:.0f}% of fitted voxels have T2* close to the echo spacing; method "
                f"{method!r} underestimates R2* there. Prefer 'noise-corrected' (default).")
    del fitted
    spatial = problem.spatial
    shape = lambda a: a.reshape(spatial)  # noqa: E731
    sigma_map = noise.sigma_map if noise is not None else None
    return RelaxometryFit(
        r2star=shape(flat.r2star), t2star=shape(t2), s0=shape(flat.s0), quality=shape(flat.quality),
        uncertainty=shape(flat.uncertainty), status=shape(flat.status),
        echoes_used=shape(flat.echoes_used), method=method,
        requested_method=problem.requested_method, echo_times_ms=te_ms,
        noise_sigma=noise.sigma if noise is not None else None,
        coils=noise.coils if noise is not None else None,
        noise_source=noise.source if noise is not None else "none",
        quantity=problem.quantity, field_strength_t=problem.field_strength_t,
        maps={k: shape(v) for k, v in flat.maps.items()}, warnings=notes,
        noise_sigma_map=None if sigma_map is None else shape(sigma_map),
        noise_details=noise.details if noise is not None else {})


def _spatial_mask(mask, spatial, name):
    """A bool mask of the spatial shape as a flat array (None stays None)."""
    if mask is None:
        return None
    mask = np.asarray(mask)
    if mask.shape != spatial:
        raise InputError(
            f"{name} has shape {mask.shape} but the signal's spatial shape is {spatial}. "
            "Resample the mask onto the echo grid first.")
    return mask.reshape(-1).astype(bool)


def _noise_and_mask(y2d, te_ms, method, mask_flat, include_flat, noise_sigma, coils, spatial):
    """The noise used, the voxels to fit, the invalid voxels and notes for the user.

    Voxels with NaN, inf or negative samples are always fitted (they get INVALID_SIGNAL), so
    that a bad value never passes for background.
    """
    invalid = invalid_voxels(y2d)
    if mask_flat is not None and not mask_flat.any() and (include_flat is None or not include_flat.any()):
        raise InputError("The mask selects no voxel: there is nothing to fit. Give a mask with the "
                         "tissue set to True, or mask=None for the automatic mask.")
    noise, notes = resolve_noise(y2d, mask_flat, noise_sigma, coils, spatial, te_ms / 1000.0, ~invalid)
    auto = mask_flat is None
    if auto:
        mask_flat = automatic_mask(y2d[0], noise, spatial=spatial, second_echo=y2d[1])
        if noise is None:
            notes.append("automatic mask from Otsu's threshold on the first echo (no noise level could be measured)")
    if noise is None and method in NOISE_AWARE:
        try:
            noise = estimate_noise_differences(y2d[:1].reshape((1,) + tuple(spatial)),
                                               mask_flat.reshape(spatial), coils)
        except InputError:
            raise InputError(
                f"Method {method!r} needs the noise level, but the image has no background air, "
                "fewer than three echoes or too little tissue to estimate it. Give noise_sigma (and "
                "coils) explicitly, or use method='nlls'.") from None
        notes.append("noise estimated from neighbour differences in tissue (first echo): no usable "
                     "background and too few echoes for the decay residuals")
    if noise is not None and noise.source == "background" and coils is None and noise.coils > 1.5:
        notes.append(f"effective coil count {noise.coils:.2f} estimated from the background noise distribution")
    if include_flat is not None:
        mask_flat = mask_flat | include_flat
    return noise, mask_flat | invalid, invalid, notes


def _spatial_fat_water(problem, noise, index, field_strength_t, workers, progress, cancel, notes,
                       fat_evidence, precession_clockwise, complex_signal, readout):
    """(the whole-image FatWaterFit, progress for the blocks): fatwater.fit_fatwater on the
    selected voxels (90 % of the progress), its warnings added to notes."""
    import os

    from .fatwater import FAT_DOMINANT_EVIDENCE, fit_fatwater

    spatial = problem.spatial
    mask = index.selected
    sigma = None
    if noise is not None:
        sigma = noise.sigma if noise.sigma_map is None else noise.sigma_map.reshape(spatial)
    if progress is not None:
        progress(0.0)
    whole = fit_fatwater(
        problem.signal2d.reshape((-1,) + tuple(spatial)), problem.echo_times_ms, field_strength_t,
        mask=mask.reshape(spatial), noise_sigma=sigma, coils=None if noise is None else noise.coils,
        complex_signal=complex_signal, precession_clockwise=precession_clockwise,
        threads=workers or os.cpu_count() or 1, cancel=cancel, readout=readout, warn=False,
        progress=None if progress is None else (lambda f: progress(0.9 * f)),
        fat_evidence=FAT_DOMINANT_EVIDENCE if fat_evidence is None else fat_evidence)
    notes.extend(w for w in whole.warnings if w not in notes)
    return whole, (None if progress is None else (lambda f: progress(0.9 + 0.1 * f)))


def _flag_for_polish(y, t, sigma, coils):
    """First pass of "noise-corrected-ml": the squared-signal fit, flagging voxels for ML."""
    bf = estimators.noise_corrected(y, t, sigma, coils)
    bf.polish = np.zeros(y.shape[1], dtype=bool)
    bf.polish[estimators.needs_ml_polish(t, bf, sigma, coils)] = True
    return bf


def _kernel_for(method, snr_limit=None):
    """The block kernel ``(y, t_s, sigma, coils) -> BlockFit`` of a concrete voxel-wise method."""
    kernel = _KERNELS[method]
    if method == "truncation" and snr_limit is not None:
        return lambda y, t, **kw: kernel(y, t, snr_limit=snr_limit, **kw)
    return kernel


def _assess(y, t, bf: estimators.BlockFit, method, sigma, coils, invalid, r2_max):
    """Status, R^2 quality and SD(R2*) for one block (y: (n_echoes, n) float64, t in s)."""
    r2, s0 = bf.r2star, bf.s0
    s0_safe = np.nan_to_num(s0)
    rss = bf.rss
    if rss is None or bf.uncertainty is None:  # (a fit that gives both, fat-water, needs no decay)
        e = np.multiply.outer(-t, np.nan_to_num(r2))
        np.exp(e, out=e)
    if method == "truncation":
        used = (np.arange(y.shape[0])[:, None] < bf.echoes_used[None, :]).astype(np.float64)
        yw = y * used
        n_used = used.sum(0)
    else:
        used, yw, n_used = None, y, float(y.shape[0])
    if rss is None:
        predicted = e * s0_safe
        if method in NOISE_FLOOR_MODELS and sigma is not None:
            # root-mean-square magnitude of the noncentral chi: sqrt(A^2 + 2 L sigma^2)
            np.multiply(predicted, predicted, out=predicted)
            predicted += 2.0 * coils * sigma * sigma
            np.sqrt(predicted, out=predicted)
        elif bf.offset is not None:
            predicted += bf.offset
        resid = np.subtract(y, predicted, out=predicted)
        if used is not None:
            resid *= used
        rss = np.einsum("ij,ij->j", resid, resid)
    sum_y = yw.sum(0)
    tss = np.einsum("ij,ij->j", yw, yw) - sum_y * sum_y / n_used
    with np.errstate(divide="ignore", invalid="ignore"):
        quality = np.where(tss > 1e-12 * (sum_y * sum_y / n_used),
                           np.clip(1.0 - rss / tss, 0.0, 1.0),
                           np.where(rss <= 1e-12 * (sum_y * sum_y + 1e-300), 1.0, 0.0))
        uncertainty = bf.uncertainty
        if uncertainty is None:
            # Gaussian Fisher information of (S0, R2*) with the residual variance
            n_par = 3 if bf.offset is not None else 2
            var = rss / np.maximum(n_used - n_par, 1)
            ee = np.multiply(e, e, out=e)
            if used is not None:
                ee *= used
            f11 = ee.sum(0)
            f12 = -s0_safe * (t @ ee)
            f22 = s0_safe * s0_safe * ((t * t) @ ee)
            uncertainty = np.sqrt(var * f11 / (f11 * f22 - f12 * f12))

    status = np.full(r2.shape, Status.FITTED, np.uint8)
    finite = np.isfinite(r2) & np.isfinite(s0)
    status[~bf.converged | ~finite] = Status.NOT_CONVERGED
    # A fit that runs off towards infinite R2* means the decay is faster than the echoes can
    # sample: that is "out of range", not a numerical failure.
    # Slightly negative R2* within three SDs is noise around a very slow decay (fluid), not
    # an error: it stays FITTED (T2* is then NaN) so region means are not biased upwards.
    with np.errstate(over="ignore", invalid="ignore"):
        negative = r2 < -3.0 * np.nan_to_num(uncertainty, nan=0.0) - 1e-6
    status[finite & (negative | (r2 > r2_max) | (s0 <= 0))] = Status.OUT_OF_RANGE
    status[(y > 0).sum(0) < _MIN_ECHOES.get(method, 2)] = Status.TOO_FEW_ECHOES
    status[invalid] = Status.INVALID_SIGNAL
    return status, quality, uncertainty
