"""Fat-water fit of whole arrays: the maps, their provenance, chunking and threads."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import FitCancelled, InputError
from ..fatmodel import get_spectrum
from .checks import FAT_DOMINANT_EVIDENCE, _check_echo_times_s, _require_field_strength, method_description
from .complex_fit import fit_fatwater_complex_chunk
from .magnitude import _empty_result, fit_fatwater_chunk
from .neighbourhood import choose_starts_by_neighbourhood

@dataclass
class FatWaterFit:
    """Fat-water fit of a multi-echo image; maps have the spatial shape, float32.

    pdff (percent), r2star (1/s, fat-corrected), t2star (ms), water, fat, s0 (signal units),
    start (uint8: 0 water-dominant start won, 1 fat-dominant, 255 not fitted), converged
    (bool), rss (signal units^2), uncertainty (SD of R2*, 1/s). ``complex_maps`` holds the
    complex fit (pdff, r2star, water, fat, fieldmap_hz, phase, converged) when complex data
    were given, else None.
    """

    pdff: np.ndarray
    r2star: np.ndarray
    t2star: np.ndarray
    water: np.ndarray
    fat: np.ndarray
    s0: np.ndarray
    start: np.ndarray
    converged: np.ndarray
    rss: np.ndarray
    uncertainty: np.ndarray
    echo_times_ms: tuple
    field_strength_t: float
    likelihood: str
    noise_sigma: object
    coils: float
    spectrum: str
    precession_clockwise: bool
    start_selection: str
    complex_maps: dict = field(default=None)
    fat_evidence: float = FAT_DOMINANT_EVIDENCE

    def provenance(self):
        """JSON-able description of how the maps were made."""
        from .. import __version__

        return {
            "method": "fat-water (multi-peak fat, single R2*, magnitude, two starts)",
            "description": method_description(fat_evidence=self.fat_evidence),
            "references": ["Triay Bagur et al. 2019, Magn Reson Med, PMID 30874334 (MAGO)",
                           "Bray et al. 2023, Magn Reson Med, doi 10.1002/mrm.29493 (MAGORINO)"],
            "fat_spectrum": self.spectrum,
            "field_strength_t": self.field_strength_t,
            "precession_clockwise": self.precession_clockwise,
            "echo_times_ms": list(self.echo_times_ms),
            "likelihood": self.likelihood,
            "noise_sigma": (None if self.noise_sigma is None else float(np.mean(self.noise_sigma))),
            "coils": self.coils,
            "start_selection": self.start_selection,
            "fat_dominant_evidence_nats": self.fat_evidence,
            "fat_dominant_evidence_source": ("likelihood ratio 20, 'strong evidence' (Kass & "
                                             "Raftery 1995); below it the water-dominant "
                                             "solution is reported"),
            "complex_fit": self.complex_maps is not None,
            "units": {"pdff": "percent", "r2star": "1/s", "t2star": "ms", "uncertainty": "1/s"},
            "software": f"IronMapping {__version__}",
        }


def _chunks(n, size):
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def _run_chunks(work, slices, threads, progress, cancel):
    """Run work(slice) over slices (in threads if > 1), reporting progress, honouring cancel."""
    done = 0
    if threads <= 1:
        for sl in slices:
            if cancel is not None and cancel():
                raise FitCancelled("The fat-water fit was cancelled; no maps were produced.")
            work(sl)
            done += 1
            if progress is not None:
                progress(done / len(slices))
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=threads) as pool:
        for i in range(0, len(slices), threads):
            if cancel is not None and cancel():
                raise FitCancelled("The fat-water fit was cancelled; no maps were produced.")
            list(pool.map(work, slices[i:i + threads]))
            done += len(slices[i:i + threads])
            if progress is not None:
                progress(done / len(slices))


def fit_fatwater(signal, echo_times_ms, field_strength_t, mask=None, noise_sigma=None,
                 coils=None, complex_signal=None, precession_clockwise=True, spectrum=None,
                 start_selection="voxel", neighbourhood=3, chunk_size=32768, threads=1,
                 progress=None, cancel=None, fat_evidence=FAT_DOMINANT_EVIDENCE):
    """Fat-water fit of whole arrays: PDFF, fat-corrected R2*, water and fat.

    Parameters
    ----------
    signal : array [echo, ...spatial] magnitude, or None when ``complex_signal`` is given.
    echo_times_ms : array [echo], ms
    field_strength_t : float, tesla (required)
    mask : bool array of the spatial shape, optional (default: voxels with finite, positive
        signal).
    noise_sigma : float, optional
        Noise SD per real channel. Given: noncentral-chi likelihood; None: least squares.
    coils : float, optional
        Effective coil count for the noncentral chi (default 1, Rician).
    complex_signal : complex array [echo, ...spatial], optional
        Real/imaginary (or magnitude * exp(i phase)) data; adds a complex fit in
        ``complex_maps``.
    start_selection : "voxel" or "neighbourhood"
        "voxel" (MAGO/MAGORINO): each voxel keeps its better start (the fat-dominant one
        only with a log-likelihood ratio above ``fat_evidence``). "neighbourhood": the
        start is chosen by the log-likelihood ratio summed over a ``neighbourhood``-wide box
        (see ``choose_starts_by_neighbourhood``); needs a noise level (given, or estimated as
        the median residual SD).
    fat_evidence : float
        Nats the fat-dominant solution needs over the water-dominant one (see
        ``FAT_DOMINANT_EVIDENCE``; 0 = plain maximum likelihood).
    threads : int
        Worker threads (numpy releases the GIL in the heavy loops).
    progress : callable(fraction), optional; cancel : callable() -> bool, optional

    Returns
    -------
    FatWaterFit
    """
    b0 = _require_field_strength(field_strength_t)
    if signal is None:
        if complex_signal is None:
            raise InputError("Give the magnitude signal, the complex signal, or both.")
        signal = np.abs(np.asarray(complex_signal))
    signal = np.asarray(signal)
    if signal.ndim < 2:
        raise InputError(f"The signal must be [echo, ...spatial]; got shape {signal.shape}.")
    te_ms = np.asarray(echo_times_ms, dtype=np.float64).ravel()
    t_s = _check_echo_times_s(te_ms * 1e-3, signal.shape[0])
    spatial = signal.shape[1:]
    if complex_signal is not None:
        complex_signal = np.asarray(complex_signal)
        if complex_signal.shape != signal.shape or not np.iscomplexobj(complex_signal):
            raise InputError(f"The complex signal must be complex with the magnitude's shape "
                             f"{signal.shape}; got {complex_signal.shape}.")
    if mask is None:
        mask = np.isfinite(signal).all(0) & (signal.max(0) > 0)
    else:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != spatial:
            raise InputError(f"The mask's shape {mask.shape} differs from the image's {spatial}; "
                             "resample the mask onto the image first.")
    if start_selection not in ("voxel", "neighbourhood"):
        raise InputError(f"start_selection must be 'voxel' or 'neighbourhood', not "
                         f"{start_selection!r}.")
    coils = 1.0 if coils is None else float(coils)
    spec = get_spectrum(spectrum)
    keep_both = start_selection == "neighbourhood"
    y = signal[:, mask].astype(np.float64)
    n = y.shape[1]
    out = _empty_result(n, keep_both)

    def work(sl):
        res = fit_fatwater_chunk(y[:, sl], t_s, field_strength_t=b0, sigma=noise_sigma,
                                 coils=coils, spectrum=spec, keep_both=keep_both,
                                 fat_evidence=fat_evidence)
        for key, value in res.items():
            out[key][sl] = value

    slices = _chunks(n, chunk_size)
    has_complex = complex_signal is not None
    share = 0.6 if has_complex else 1.0
    report = None if progress is None else (lambda x: progress(share * x))
    _run_chunks(work, slices, max(1, int(threads)), report, cancel)

    if keep_both and n:
        sigma_sel = noise_sigma
        if sigma_sel is None:
            dof = max(len(t_s) - 3, 1)
            sigma_sel = float(np.sqrt(np.nanmedian(out["rss"] / dof)))
        choose_starts_by_neighbourhood(out, mask, sigma_sel, neighbourhood, fat_evidence)

    def to_map(values, dtype=np.float32, fill=np.nan):
        grid = np.full(spatial, fill, dtype=dtype)
        grid[mask] = values
        return grid

    start = np.where(np.isfinite(out["pdff"]), out["start"], 255).astype(np.uint8)
    with np.errstate(divide="ignore"):
        t2 = np.where(out["r2star"] > 0, 1e3 / out["r2star"], np.nan)
    complex_maps = None
    if has_complex:
        z = complex_signal[:, mask]
        cout = {k: np.full(n, np.nan) for k in ("pdff", "r2star", "water", "fat", "s0",
                                                   "fieldmap_hz", "phase", "rss", "start")}
        cout["converged"] = np.zeros(n, dtype=bool)

        def cwork(sl):
            res = fit_fatwater_complex_chunk(z[:, sl], t_s, field_strength_t=b0,
                                             precession_clockwise=precession_clockwise,
                                             spectrum=spec)
            for key, value in res.items():
                cout[key][sl] = value

        report = None if progress is None else (lambda x: progress(0.6 + 0.4 * x))
        _run_chunks(cwork, slices, max(1, int(threads)), report, cancel)
        complex_maps = {k: to_map(v) for k, v in cout.items() if k not in ("converged", "start")}
        complex_maps["converged"] = to_map(cout["converged"], bool, False)
    return FatWaterFit(
        pdff=to_map(out["pdff"]), r2star=to_map(out["r2star"]), t2star=to_map(t2),
        water=to_map(out["water"]), fat=to_map(out["fat"]), s0=to_map(out["s0"]),
        start=to_map(start, np.uint8, 255), converged=to_map(out["converged"], bool, False),
        rss=to_map(out["rss"]), uncertainty=to_map(out["uncertainty"]),
        echo_times_ms=tuple(float(t) for t in te_ms), field_strength_t=b0,
        likelihood="gaussian" if noise_sigma is None else "noncentral-chi",
        noise_sigma=noise_sigma, coils=coils, spectrum=spec.describe(),
        precession_clockwise=bool(precession_clockwise), start_selection=start_selection,
        complex_maps=complex_maps, fat_evidence=float(fat_evidence))
