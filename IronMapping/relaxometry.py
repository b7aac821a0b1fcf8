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

import os
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor, wait, FIRST_COMPLETED
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Callable

import numpy as np

from . import __version__, estimators
from .errors import EchoTimeError, FitCancelled, InputError
from .noise import NoiseEstimate, estimate_noise_differences
from .noise_source import resolve_noise
from .tissue_mask import automatic_mask, invalid_voxels, spike_voxels


class Status(IntEnum):
    """Per-voxel outcome of the fit (the `status` map)."""

    MASKED = 0
    FITTED = 1
    TOO_FEW_ECHOES = 2
    NOT_CONVERGED = 3
    OUT_OF_RANGE = 4
    INVALID_SIGNAL = 5
    OUTLIER = 6

    @classmethod
    def describe(cls, code) -> str:
        return _STATUS_TEXT[cls(int(code))]


_STATUS_TEXT = {
    Status.MASKED: "masked out (background or outside the given mask); not fitted",
    Status.FITTED: "fitted",
    Status.TOO_FEW_ECHOES: "too few usable echoes (fewer than two with signal above zero)",
    Status.NOT_CONVERGED: "fit did not converge",
    Status.OUT_OF_RANGE: "fitted value outside the physical range (R2* < 0 or T2* shorter than a third of the first echo time)",
    Status.INVALID_SIGNAL: "invalid signal (not a number, infinite or negative in at least one echo)",
    Status.OUTLIER: "isolated spike far above every other voxel (hot pixel or artefact); not fitted",
}

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
FIT_OPTIONS = frozenset({"workers", "snr_limit", "fat_evidence", "precession_clockwise"})
BLOCK_VOXELS = 32768  # large enough that numpy, not Python, holds the time (GIL)


@dataclass
class RelaxometryFit:
    """Parametric maps of one fit; arrays have the spatial shape of the input.

    r2star : float32, 1/s (R2 when quantity is "T2"); NaN where status != FITTED
    t2star : float32, ms (1000 / r2star); NaN where R2* is zero to the fit's precision (no decay measurable)
    s0 : float32, signal extrapolated to TE = 0 (input units); NaN where status != FITTED
    quality : float32, coefficient of determination R^2 of the fitted magnitude curve
    uncertainty : float32, standard deviation of R2* in 1/s from the Fisher information
    status : uint8, `Status` codes
    echoes_used : uint8, number of echoes that entered the fit (truncation varies per voxel)
    maps : extra maps, e.g. "offset" (offset model) or "pdff" (%, fat-water); NaN where
        status != FITTED
    noise_sigma : noise SD per real channel used (signal units); with a noise map its median
    noise_sigma_map : float32 noise SD per voxel where the noise varies in space, else None
    noise_details : every noise estimate that was made (echo train, background), JSON-able
    """

    r2star: np.ndarray
    t2star: np.ndarray
    s0: np.ndarray
    quality: np.ndarray
    uncertainty: np.ndarray
    status: np.ndarray
    echoes_used: np.ndarray
    method: str
    echo_times_ms: np.ndarray
    noise_sigma: float | None
    coils: float | None
    noise_source: str
    quantity: str = "T2*"
    requested_method: str = "auto"
    field_strength_t: float | None = None
    maps: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)
    noise_sigma_map: np.ndarray | None = None
    noise_details: dict = field(default_factory=dict)

    @property
    def fitted(self) -> np.ndarray:
        return self.status == Status.FITTED

    def status_counts(self) -> dict:
        codes, counts = np.unique(self.status, return_counts=True)
        return {Status(int(c)).name.lower(): int(n) for c, n in zip(codes, counts)}

    def noise_sigma_range(self) -> list | None:
        """[5th, 95th] percentile of the noise SD in the fitted voxels (the map's range)."""
        if self.noise_sigma is None:
            return None
        if self.noise_sigma_map is None:
            return [float(self.noise_sigma)] * 2
        inside = self.noise_sigma_map[self.status != Status.MASKED]
        values = inside if inside.size else self.noise_sigma_map.ravel()
        return [float(v) for v in np.percentile(values, [5, 95])]

    def provenance(self) -> dict:
        """JSON-able description of how these maps were made."""
        return {
            "software": f"IronMapping {__version__}",
            "quantity": self.quantity,
            "method": self.method,
            "requested_method": self.requested_method,
            "method_reference": method_reference(self.method),
            "echo_times_ms": [float(t) for t in self.echo_times_ms],
            "noise_sigma": None if self.noise_sigma is None else float(self.noise_sigma),
            "coils": None if self.coils is None else float(self.coils),
            "noise_source": self.noise_source,
            "noise_sigma_range": self.noise_sigma_range(),
            "noise_estimates": dict(self.noise_details),
            "field_strength_t": self.field_strength_t,
            "status_counts": self.status_counts(),
            "warnings": list(self.warnings),
        }


METHOD_REFERENCES = {
    "noise-corrected-ml": ("Feng Y et al. MRM 2013;70:1765, doi:10.1002/mrm.24607 (squared signal with noise "
                           "floor); noncentral-chi maximum likelihood where fewer than 3 echoes are above the noise"),
    "noise-corrected": "Feng Y et al. MRM 2013;70:1765-1774, doi:10.1002/mrm.24607 (squared signal with noise floor)",
    "ml": "Noncentral-chi maximum likelihood (Rician for one coil); cf. Bray et al. MRM 2023, doi:10.1002/mrm.29493",
    "truncation": "He T et al. MRM 2008;60:1082-1089 (truncation model; stop at SNR ~2)",
    "offset": "Ghugre NR et al. JMRI 2006;23:9-16 (exponential plus constant offset)",
    "nlls": "Mono-exponential least squares",
    "loglinear": "Log-linear least squares weighted by S^2",
    "arlo": "Pei M et al. MRM 2015;73:843-850 (ARLO)",
    "fat-water": "Triay Bagur A et al. MRM 2019 (MAGO); Bray TJP et al. MRM 2023, doi:10.1002/mrm.29493 (MAGORINO)",
}


def method_reference(method: str) -> str:
    """Source of a method; for fat-water it also names the fat spectrum and decision rule."""
    if method == "fat-water":
        from .fatwater import method_description

        return method_description()
    return METHOD_REFERENCES.get(method, "")


def t2star_from_r2star(r2star, status, echo_times_ms) -> np.ndarray:
    """T2* (ms) = 1000 / R2* (1/s) where the fit succeeded and the decay is measurable, else NaN.

    A decay of less than one part per million over the echo train is below the single-precision
    resolution of the signal, so R2* is zero to the fit's precision there and T2* is undefined
    (a fit returning R2* = 5e-28 must not give T2* = 2e30 ms).
    """
    r2star = np.asarray(r2star)
    resolvable = 1e-6 / (float(np.max(echo_times_ms)) / 1000.0)
    measurable = (np.asarray(status) == Status.FITTED) & (r2star > resolvable)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(measurable, 1000.0 / r2star, np.nan).astype(np.float32)


def check_echo_times(echo_times_ms, n_echoes: int | None = None, method: str = "auto") -> np.ndarray:
    """Validate echo times (ms) and return them as float64; raise EchoTimeError with advice.

    The checks shared by every input (count, units, duplicates, order) are
    :func:`IronMapping.io.checks.check_echo_times`; the method's own needs are added here.
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
    if method not in METHODS:
        raise InputError(f"Unknown method {method!r}. Choose one of: {', '.join(METHODS)}.")
    return DEFAULT_METHOD if method == "auto" else method


def fit(signal, echo_times_ms, method: str = "auto", mask=None, noise_sigma: float | None = None,
        coils: float | None = None, progress: Callable[[float], None] | None = None,
        cancel: Callable[[], bool] | None = None, quantity: str = "T2*",
        field_strength_t: float | None = None, include_mask=None, **options) -> RelaxometryFit:
    """Fit R2* (1/s) and T2* (ms) in every voxel.

    Parameters
    ----------
    signal : array (n_echoes, ...) of magnitudes, echo axis first, any spatial shape.
    echo_times_ms : (n_echoes,) strictly increasing echo times in ms.
    method : one of METHODS; "auto" is "noise-corrected-ml".
    mask : bool array of the spatial shape; None makes one: every voxel inside the body
        outline (above the noise floor in echo 1 or 2, holes filled per slice and in 3-D).
    noise_sigma, coils : noise SD per channel (signal units) and receive coil count L; when
        None they are estimated: from the decay residuals across echoes in tissue (a noise
        map where parallel imaging makes the noise vary in space), or from the background air
        when it is pure noise and agrees (noise_source.resolve_noise).
    include_mask : bool array of the spatial shape, voxels fitted whatever the automatic mask
        says (the union of the segments, so that no organ voxel is called background).
    progress : called with the finished fraction (0..1) from the calling thread.
    cancel : polled between blocks; returning True raises FitCancelled.
    quantity : "T2*" (gradient echo) or "T2" (spin echo); only labels the result.
    field_strength_t : main field in tesla (needed by "fat-water").
    **options : workers (threads), snr_limit ("truncation"), fat_evidence and
        precession_clockwise ("fat-water"); anything else is refused.

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
    unknown = sorted(set(options) - FIT_OPTIONS)
    if unknown:
        raise InputError(f"Unknown option(s) {', '.join(map(repr, unknown))} for fit(). Valid options: "
                         "method, mask, noise_sigma, coils, progress, cancel, quantity, field_strength_t, "
                         f"include_mask, {', '.join(sorted(FIT_OPTIONS))}.")
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
    spatial = signal.shape[1:]
    n_vox = int(np.prod(spatial))
    if not np.any(signal > 0):
        raise InputError(
            "The signal has no positive values (all zero, negative or not a number): there is "
            "nothing to fit. Check that the magnitude images of the right series were loaded.")
    y2d = signal.reshape(signal.shape[0], n_vox)

    mask_flat = _spatial_mask(mask, spatial, "mask")
    include_flat = _spatial_mask(include_mask, spatial, "include_mask")
    noise, mask_flat, invalid_flat, notes = _noise_and_mask(y2d, te_ms, method, mask_flat, include_flat,
                                                            noise_sigma, coils, spatial)

    spikes = spike_voxels(y2d, invalid_flat)
    index = np.flatnonzero(mask_flat & ~spikes)
    out_r2 = np.full(n_vox, np.nan, np.float32)
    out_s0 = np.full(n_vox, np.nan, np.float32)
    out_q = np.full(n_vox, np.nan, np.float32)
    out_u = np.full(n_vox, np.nan, np.float32)
    out_status = np.zeros(n_vox, np.uint8)
    out_used = np.zeros(n_vox, np.uint8)
    extra_maps: dict[str, np.ndarray] = {}
    lock = threading.Lock()

    t_s = te_ms / 1000.0
    r2_max = 3.0 / t_s[0] if t_s[0] > 0 else np.inf
    kernel = _kernel_for(method, field_strength_t, options)
    sigma = noise.sigma if noise is not None else None
    n_coils = noise.coils if noise is not None else 1.0
    # With a noise map each voxel is fitted in units of its own noise SD: R2*, its SD and R^2
    # do not depend on the signal scale, and S0 (and water, fat, offset) are scaled back.
    sigma_map = noise.sigma_map if noise is not None else None
    block_sigma = 1.0 if sigma_map is not None else sigma
    stop = threading.Event()

    polish: list[np.ndarray] = []

    def run(idx, kernel):
        if stop.is_set():
            return 0
        y = y2d[:, idx].astype(np.float64)
        invalid = ~np.isfinite(y.sum(0)) | (y.min(0) < 0)
        if invalid.any():
            y[:, invalid] = np.where(np.isfinite(y[:, invalid]), np.maximum(y[:, invalid], 0.0), 0.0)
        scale = None if sigma_map is None else sigma_map[idx].astype(np.float64)
        if scale is not None:
            y /= scale
        # Non-finite intermediate values are expected (diverging voxels) and end up in status.
        with np.errstate(all="ignore"):
            bf = kernel(y, t_s, sigma=block_sigma, coils=n_coils)
            status, quality, uncert = _assess(y, t_s, bf, method, block_sigma, n_coils, invalid, r2_max)
        ok = status == Status.FITTED
        s0 = bf.s0 if scale is None else bf.s0 * scale
        out_r2[idx] = np.where(ok, bf.r2star, np.nan)
        out_s0[idx] = np.where(ok, s0, np.nan)
        out_q[idx] = np.where(invalid, np.nan, quality)
        out_u[idx] = np.where(ok, uncert, np.nan)
        out_status[idx] = status
        out_used[idx] = np.clip(bf.echoes_used, 0, 255)
        for name, values in bf.extra.items():
            if name == "_polish":
                with lock:
                    polish.append(idx[values & ~invalid])
            if name.startswith("_"):
                continue
            with lock:
                if name not in extra_maps:
                    extra_maps[name] = np.full(n_vox, np.nan, np.float32)
            if scale is not None and name in SCALED_EXTRAS:
                values = values * scale
            # like R2*, extra maps (PDFF, offset, ...) are only reported where the fit stands
            extra_maps[name][idx] = np.where(ok, values, np.nan)
        return idx.size

    def run_all(indices, kernel, share, offset):
        """Fit `indices` in blocks on all cores; progress runs from `offset` over `share`."""
        done = 0
        blocks = [indices[i:i + BLOCK_VOXELS] for i in range(0, indices.size, BLOCK_VOXELS)]
        workers = max(1, min(options.get("workers") or os.cpu_count() or 1, len(blocks)))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            pending = {pool.submit(run, b, kernel) for b in blocks}
            try:
                while pending:
                    finished, pending = wait(pending, timeout=0.05, return_when=FIRST_COMPLETED)
                    for f in finished:
                        done += f.result()
                    if cancel is not None and cancel():
                        raise FitCancelled("The fit was cancelled; no maps were produced.")
                    if progress is not None and finished:
                        progress(offset + share * done / max(indices.size, 1))
            except BaseException:
                stop.set()
                for f in pending:
                    f.cancel()
                raise

    if progress is not None:
        progress(0.0)
    if method == "noise-corrected-ml":
        # The maximum-likelihood polish has a Python-heavy inner loop, so the few voxels that
        # need it are gathered from all blocks and polished together in a second pass.
        run_all(index, _flag_for_polish, 0.95, 0.0)
        flagged = np.sort(np.concatenate(polish)) if polish else np.empty(0, np.intp)
        if flagged.size:
            run_all(flagged, kernel, 0.05, 0.95)
    else:
        run_all(index, kernel, 1.0, 0.0)
    out_status[spikes] = Status.OUTLIER
    if progress is not None:
        progress(1.0)

    t2 = t2star_from_r2star(out_r2, out_status, te_ms)
    n_fit = int(np.count_nonzero(out_status == Status.FITTED))
    if n_fit and method in ("loglinear", "nlls", "arlo"):
        short = np.count_nonzero(t2[out_status == Status.FITTED] < 2.0 * te_ms[0] + 5.0) / n_fit
        if short > 0.3:
            notes.append(
                f"{100 * short:.0f}% of fitted voxels have T2* close to the echo spacing; method "
                f"{method!r} underestimates R2* there. Prefer 'noise-corrected' (default).")
    for w in notes:
        warnings.warn(w, stacklevel=2)
    shape = lambda a: a.reshape(spatial)  # noqa: E731
    return RelaxometryFit(
        r2star=shape(out_r2), t2star=shape(t2), s0=shape(out_s0), quality=shape(out_q),
        uncertainty=shape(out_u), status=shape(out_status), echoes_used=shape(out_used),
        method=method, requested_method=requested, echo_times_ms=te_ms,
        noise_sigma=sigma, coils=n_coils if noise is not None else None,
        noise_source=noise.source if noise is not None else "none",
        quantity=quantity, field_strength_t=field_strength_t,
        maps={k: shape(v) for k, v in extra_maps.items()}, warnings=notes,
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


def _flag_for_polish(y, t, sigma, coils):
    """First pass of "noise-corrected-ml": the squared-signal fit, flagging voxels for ML."""
    bf = estimators.noise_corrected(y, t, sigma, coils)
    flag = np.zeros(y.shape[1], dtype=bool)
    flag[estimators.needs_ml_polish(t, bf, sigma, coils)] = True
    bf.extra["_polish"] = flag
    return bf


def _kernel_for(method, field_strength_t, options):
    if method == "fat-water":
        from .fatwater import fit_fatwater_chunk

        def kernel(y, t, sigma, coils):
            extra_options = {"fat_evidence": options["fat_evidence"]} if "fat_evidence" in options else {}
            res = fit_fatwater_chunk(y, t, field_strength_t=field_strength_t, sigma=sigma,
                                     coils=coils, precession_clockwise=options.get("precession_clockwise", True),
                                     **extra_options)
            extra = {k: res[k] for k in ("pdff", "water", "fat") if k in res}
            if "start" in res:
                extra["fat_water_start"] = res["start"]
            extra["_rss"] = res.get("rss")
            extra["_uncertainty"] = res.get("uncertainty")
            return estimators.BlockFit(res["r2star"], res["s0"], res["converged"],
                                       np.full(y.shape[1], y.shape[0]), extra)
        return kernel
    kernel = _KERNELS[method]
    if method == "truncation" and "snr_limit" in options:
        return lambda y, t, **kw: kernel(y, t, snr_limit=options["snr_limit"], **kw)
    return kernel


def _assess(y, t, bf: estimators.BlockFit, method, sigma, coils, invalid, r2_max):
    """Status, R^2 quality and SD(R2*) for one block (y: (n_echoes, n) float64, t in s)."""
    r2, s0 = bf.r2star, bf.s0
    s0_safe = np.nan_to_num(s0)
    e = np.multiply.outer(-t, np.nan_to_num(r2))
    np.exp(e, out=e)
    predicted = e * s0_safe
    noise_model = method in NOISE_FLOOR_MODELS and sigma is not None
    if noise_model:
        # root-mean-square magnitude of the noncentral chi: sqrt(A^2 + 2 L sigma^2)
        np.multiply(predicted, predicted, out=predicted)
        predicted += 2.0 * coils * sigma * sigma
        np.sqrt(predicted, out=predicted)
    elif "offset" in bf.extra:
        predicted += bf.extra["offset"]
    resid = np.subtract(y, predicted, out=predicted)
    if method == "truncation":
        used = (np.arange(y.shape[0])[:, None] < bf.echoes_used[None, :]).astype(np.float64)
        resid *= used
        yw = y * used
        n_used = used.sum(0)
    else:
        used, yw, n_used = None, y, float(y.shape[0])
    rss = bf.extra.get("_rss")
    if rss is None:
        rss = np.einsum("ij,ij->j", resid, resid)
    sum_y = yw.sum(0)
    tss = np.einsum("ij,ij->j", yw, yw) - sum_y * sum_y / n_used
    with np.errstate(divide="ignore", invalid="ignore"):
        quality = np.where(tss > 1e-12 * (sum_y * sum_y / n_used),
                           np.clip(1.0 - rss / tss, 0.0, 1.0),
                           np.where(rss <= 1e-12 * (sum_y * sum_y + 1e-300), 1.0, 0.0))
        uncertainty = bf.extra.get("_uncertainty")
        if uncertainty is None:
            # Gaussian Fisher information of (S0, R2*) with the residual variance
            n_par = 3 if "offset" in bf.extra else 2
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
