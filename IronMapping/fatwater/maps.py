"""Fat-water fit of whole arrays: the maps, their provenance, chunking and threads.

With complex data the order is: odd/even echo phase of a bipolar readout removed
(``bipolar``), a spatially consistent field map (``fieldmap``), the complex fit started from
it (``complex_fit``); where the magnitude cannot tell the water- from the fat-dominant
solution the complex fit's answer picks the magnitude solution.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from ..blocks import run_blocks
from ..errors import InputError
from ..fatmodel import fat_phasor, get_spectrum
from .bipolar import check_readout, estimate_odd_even_phase, remove_odd_even_phase
from .checks import (FAT_DOMINANT_EVIDENCE, _check_echo_times_s, _require_field_strength,
                     method_description)
from .complex_fit import _OUT_KEYS as _COMPLEX_KEYS, echo_period_hz, fit_fatwater_complex_chunk
from .fieldmap import spatial_fieldmap
from .magnitude import _OUTPUT_KEYS, _empty_result, ambiguous_solutions, fit_fatwater_chunk
from .neighbourhood import choose_starts_by_neighbourhood

LOW_FAT_PDFF = 10.0
"""Voxels whose (unambiguous) magnitude PDFF is below this (percent) estimate the bipolar
odd/even phase: in a single voxel fat and that phase trade off."""

FEW_ECHOES = 4
"""With this many echoes or fewer, ``start_selection="auto"`` pools the evidence over a
neighbourhood: one voxel's magnitude decay barely separates the two solutions."""


@dataclass
class FatWaterFit:
    """Fat-water fit of a multi-echo image; maps have the spatial shape, float32.

    Attributes
    ----------
    pdff : ndarray
        Proton density fat fraction, %.
    r2star : ndarray
        Fat-corrected R2*, 1/s.
    t2star : ndarray
        ms (1000 / r2star where R2* > 0).
    water, fat, s0 : ndarray
        Signal units (s0 = water + fat).
    start : ndarray, uint8
        0 water-dominant start won, 1 fat-dominant, 255 not fitted.
    converged : ndarray, bool
    rss : ndarray
        Residual sum of squares, signal units^2.
    uncertainty : ndarray
        SD of R2*, 1/s.
    echo_times_ms : tuple of float
    field_strength_t : float
        Main field, T.
    likelihood : str
        Likelihood of the magnitude fit: "gaussian" (no noise level given) or "noncentral-chi".
    noise_sigma : float, ndarray or None
        Noise SD per real channel used (signal units).
    coils : float
    spectrum : str
        The fat spectrum used (``FatSpectrum.describe()``).
    precession_clockwise : bool
    start_selection : str
        "voxel" or "neighbourhood".
    complex_maps : dict or None
        The complex fit (pdff, r2star, water, fat, s0, fieldmap_hz, phase, rss, converged) when
        complex data were given, else None.
    fat_evidence : float
        Nats the fat-dominant solution needed.
    ambiguous : ndarray
        1 where the magnitude data cannot tell the two solutions apart, 0 where they can, NaN
        not fitted.
    readout : str or None
        The readout the complex fit assumed ("bipolar"/"monopolar", None without complex data).
    readout_source : str or None
        How the readout was decided.
    odd_even_phase : OddEvenPhase or None
        The estimated bipolar phase (``bipolar.OddEvenPhase``).
    fieldmap_method : str or None
        How the complex fit's field map was made.
    warnings : list of str
        Sentences for the user.
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
    ambiguous: np.ndarray = field(default=None)
    readout: str = None
    readout_source: str = None
    odd_even_phase: object = None
    fieldmap_method: str = None
    warnings: list = field(default_factory=list)

    @property
    def maps(self):
        """The magnitude fit's extra maps under the names ``relaxometry.fit`` uses."""
        return {"pdff": self.pdff, "water": self.water, "fat": self.fat,
                "fat_water_start": np.where(self.start == 255, np.nan,
                                            self.start).astype(np.float32),
                "fat_water_ambiguous": self.ambiguous}

    def block_fit(self, index, scale=None):
        """The fit of some voxels as ``estimators.BlockFit``, the form ``relaxometry.fit`` assesses
        block by block (status, R^2).

        Parameters
        ----------
        index : array_like of int, (n,)
            Flat (C-order) indices into the spatial grid.
        scale : array_like, (n,), optional
            Per-voxel divisor of the signal-unit values (s0, water, fat; rss by its square), for a
            caller that fits each voxel in units of its noise SD.

        Returns
        -------
        BlockFit
            R2* (1/s), S0, convergence, uncertainty, rss and the maps "pdff" (%), "water", "fat",
            "fat_water_ambiguous" and "fat_water_start" of those voxels.
        """
        from ..estimators import BlockFit

        index = np.asarray(index)

        def take(values):
            return np.asarray(values).reshape(-1)[index].astype(np.float64)

        s = 1.0 if scale is None else np.asarray(scale, dtype=np.float64)
        start = take(self.start)
        maps = {"pdff": take(self.pdff), "water": take(self.water) / s,
                "fat": take(self.fat) / s, "fat_water_ambiguous": take(self.ambiguous),
                "fat_water_start": np.where(start == 255, np.nan, start)}
        return BlockFit(take(self.r2star), take(self.s0) / s,
                        np.asarray(self.converged).reshape(-1)[index],
                        np.full(index.size, len(self.echo_times_ms)),
                        uncertainty=take(self.uncertainty), rss=take(self.rss) / (s * s), maps=maps)

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
            "noise_sigma": (None if self.noise_sigma is None
                            else float(np.nanmean(self.noise_sigma))),
            "coils": self.coils,
            "start_selection": self.start_selection,
            "fat_dominant_evidence_nats": self.fat_evidence,
            "fat_dominant_evidence_source": ("likelihood ratio 20, 'strong evidence' (Kass & "
                                             "Raftery 1995); below it the water-dominant "
                                             "solution is reported"),
            "complex_fit": self.complex_maps is not None,
            "readout": self.readout,
            "readout_source": self.readout_source,
            "odd_even_phase": (None if self.odd_even_phase is None
                               else self.odd_even_phase.as_dict()),
            "fieldmap": self.fieldmap_method,
            "warnings": list(self.warnings),
            "units": {"pdff": "percent", "r2star": "1/s", "t2star": "ms", "uncertainty": "1/s",
                      "fieldmap_hz": "Hz"},
            "software": f"IronMapping {__version__}",
        }


def _run_chunks(work, n, chunk_size, threads, progress, cancel):
    """Run work(slice) over chunks of ``range(n)`` with the shared block runner
    (:func:`IronMapping.blocks.run_blocks`: progress and cancel as in ``relaxometry.fit``)."""
    run_blocks(work, n, chunk_size, workers=threads, progress=progress, cancel=cancel,
               what="The fat-water fit")


def _prepare_readout(z, mask, t_s, fat, low_fat, readout, notes):
    """Remove the odd/even phase when the readout is (or is detected as) bipolar.

    Returns (z, readout used, how it was decided, OddEvenPhase or None).
    """
    if readout == "monopolar":
        return z, "monopolar", "given", None
    if z.shape[0] < 4:
        if readout == "bipolar":
            notes.append(f"Bipolar readout given, but with {z.shape[0]} echoes the odd/even echo "
                         "phase cannot be estimated; the complex fit is uncorrected and may swap "
                         "fat and water. Rely on the magnitude fit.")
            return z, "bipolar", "given (not corrected: fewer than 4 echoes)", None
        return z, "monopolar", "assumed (fewer than 4 echoes to detect a bipolar readout)", None
    estimate = estimate_odd_even_phase(z, mask, t_s, low_fat=low_fat, **fat)
    if estimate is None:
        if readout == "bipolar":
            notes.append("Bipolar readout given, but too few bright voxels to estimate the "
                         "odd/even echo phase; the complex fit is uncorrected.")
        return z, readout if readout == "bipolar" else "monopolar", (
            "given (not corrected: too few voxels)" if readout == "bipolar"
            else "assumed (too few voxels to detect a bipolar readout)"), None
    if readout == "bipolar":
        return remove_odd_even_phase(z, estimate), "bipolar", "given", estimate
    if estimate.detected:
        notes.append("Bipolar readout detected from the data (" + estimate.describe()
                     + "); the even echoes were corrected before the complex fit. Pass "
                     "readout='monopolar' if the scan used a flyback (monopolar) readout.")
        return remove_odd_even_phase(z, estimate), "bipolar", "detected from the data", estimate
    return z, "monopolar", "detected from the data (no odd/even echo phase)", estimate


def _complex_fit(z, mask, t_s, b0, precession_clockwise, spec, magnitude, chunk_size, threads,
                 progress, cancel, readout, notes):
    """Readout correction, spatial field map and complex fit of the voxels of ``mask``."""
    c = fat_phasor(t_s * 1e3, b0, precession_clockwise, spec)
    low_fat = np.zeros(mask.shape, dtype=bool)
    low_fat[mask] = magnitude["voxel_pdff"] < LOW_FAT_PDFF
    fat = {"field_strength_t": b0, "precession_clockwise": precession_clockwise, "spectrum": spec}
    z, used, source, estimate = _prepare_readout(z, mask, t_s, fat, low_fat, readout, notes)
    zm = z[:, mask]
    n = zm.shape[1]
    magnitude_r2 = magnitude["r2star"]
    r2 = np.where(np.isfinite(magnitude_r2), magnitude_r2,
                  np.nanmedian(magnitude_r2) if np.isfinite(magnitude_r2).any() else 30.0)
    period = echo_period_hz(t_s)
    guide, info = spatial_fieldmap(zm, mask, t_s, c, r2, period, magnitude["voxel_pdff"])
    method = (f"variable-projection candidates ({info['grid_points']} field maps over "
              f"{info['grid_width_hz']:.0f} Hz) chosen multi-resolution for spatial consistency "
              "(Hernando D et al. MRM 2008;59:571; Lu W & Hargreaves BA MRM 2008;60:236; "
              "Yu H et al. MRM 2005;54:1032), candidates on the other side of 50 % PDFF from a "
              "clear magnitude solution excluded (Yu H et al. MRM 2011;66:199)")
    cout = {k: np.full(n, np.nan) for k in _COMPLEX_KEYS}
    cout["converged"] = np.zeros(n, dtype=bool)

    def cwork(sl):
        res = fit_fatwater_complex_chunk(zm[:, sl], t_s, field_strength_t=b0,
                                         precession_clockwise=precession_clockwise,
                                         spectrum=spec, fieldmap_hz=guide[sl])
        for key, value in res.items():
            cout[key][sl] = value

    _run_chunks(cwork, n, chunk_size, threads, progress, cancel)
    return cout, used, source, estimate, method


def _residual_sigma(rss, n_echoes):
    """Noise SD from the median residual sum of squares of the magnitude fits (3 parameters):
    RSS ~ sigma^2 chi^2(E - 3), whose median is ``chi2.ppf(0.5, E - 3)`` (0.45 for one
    spare echo, not 1)."""
    from scipy.stats import chi2

    dof = max(n_echoes - 3, 1)
    return float(np.sqrt(np.nanmedian(rss) / chi2.ppf(0.5, dof)))


def _resolve_by_complex(out, complex_pdff, voxel_pdff):
    """Where the magnitude alone is ambiguous (in the voxel itself, ``voxel_pdff`` NaN, or
    after pooling, flag 1), keep the magnitude solution on the complex fit's side of 50 % PDFF;
    the flag is then cleared (the phase decided)."""
    undecided = ((np.isnan(voxel_pdff) | (out["fat_water_ambiguous"] == 1))
                 & np.isfinite(out["pdff"]) & np.isfinite(complex_pdff))
    fat_side = complex_pdff > 50.0
    flip = undecided & (fat_side != (out["start"] == 1)) & np.isfinite(out["alt_pdff"])
    for key in _OUTPUT_KEYS:
        a, b = out[key], out["alt_" + key]
        a_flip = a[flip].copy()
        a[flip] = b[flip]
        b[flip] = a_flip
    out["fat_water_ambiguous"][undecided] = 0.0
    return int(np.count_nonzero(flip))


def _ambiguity_warning(ambiguous, n_echoes, has_complex):
    fitted = np.isfinite(ambiguous)
    share = float(np.mean(ambiguous[fitted] == 1)) if fitted.any() else 0.0
    if share < 0.01:
        return None
    why = (f"with {n_echoes} echoes the magnitude decay has no spare data to separate them"
           if n_echoes <= 3 else "the magnitude decay does not separate them (few echoes, "
           "fast decay or low SNR)")
    return (f"In {100 * share:.0f} % of the fitted voxels the magnitude data cannot tell "
            f"water-dominant from fat-dominant tissue: {why}. There the water-dominant solution "
            "is reported (PDFF read in the 0-50 % range; a fat-rich tissue above 50 % would read "
            "as its mirror below 50 %, with a higher R2*), and maps['fat_water_ambiguous'] is 1. "
            + ("" if has_complex else "Complex (phase) data or more echoes resolve it."))


def fit_fatwater(signal, echo_times_ms, field_strength_t, mask=None, noise_sigma=None,
                 coils=None, complex_signal=None, precession_clockwise=True, spectrum=None,
                 start_selection="auto", neighbourhood=3, chunk_size=32768, threads=1,
                 progress=None, cancel=None, fat_evidence=FAT_DOMINANT_EVIDENCE,
                 readout="auto", warn=True):
    """Fat-water fit of whole arrays: PDFF, fat-corrected R2*, water and fat.

    Parameters
    ----------
    signal : ndarray, (n_echoes, ...spatial), or None
        Magnitude; None when ``complex_signal`` is given (its magnitude is used).
    echo_times_ms : array_like, (n_echoes,)
        Echo times in ms, strictly increasing, at least 3.
    field_strength_t : float
        Main field in T (required).
    mask : bool array of the spatial shape, optional
        Voxels to fit (default: voxels with finite, positive signal).
    noise_sigma : float or array of the spatial shape, optional
        Noise SD per real channel (a map where it varies in space). Given: noncentral-chi
        likelihood; None: least squares.
    coils : float, optional
        Effective coil count for the noncentral chi (default 1, Rician).
    complex_signal : complex ndarray, (n_echoes, ...spatial), optional
        Real/imaginary (or magnitude * exp(i phase)) data; adds a complex fit in
        ``complex_maps`` (spatially consistent field map, see ``fieldmap``), and decides the
        voxels where the magnitude alone is ambiguous.
    precession_clockwise : bool
        Sign of the fat phasor in the complex fit (see fatmodel.fat_phasor); the magnitude
        does not depend on it.
    spectrum : str or FatSpectrum, optional
        Fat spectrum (default six-peak, fatmodel.SIX_PEAK_LIVER).
    start_selection : {"auto", "voxel", "neighbourhood"}
        "voxel" (MAGO/MAGORINO): each voxel keeps its better start (the fat-dominant one
        only with a log-likelihood ratio above ``fat_evidence``). "neighbourhood": the
        start is chosen by the log-likelihood ratio summed over the neighbours in a
        ``neighbourhood``-wide box whose two solutions match the voxel's (see
        ``choose_starts_by_neighbourhood``); needs a noise level (given, or estimated from
        the median residual sum of squares). With complex data the complex fit decides the
        voxels this leaves ambiguous. "auto" (default): "neighbourhood" with ``FEW_ECHOES``
        (4) echoes or fewer, else "voxel".
    neighbourhood : int
        Box width in voxels for "neighbourhood" (3 = 3x3x3 in 3-D).
    chunk_size : int
        Voxels per block of the magnitude fit.
    threads : int
        Worker threads (numpy releases the GIL in the heavy loops).
    progress : callable(float), optional
        Called with the finished fraction (0..1), as in ``relaxometry.fit``.
    cancel : callable() -> bool, optional
        Polled between blocks; returning True raises FitCancelled.
    fat_evidence : float
        Nats the fat-dominant solution needs over the water-dominant one (see
        ``FAT_DOMINANT_EVIDENCE``; 0 = plain maximum likelihood).
    readout : {"auto", "bipolar", "monopolar"}
        Readout of the complex data. "bipolar": the odd/even echo phase is estimated from the
        data and removed before the complex fit; "monopolar": nothing is corrected; "auto"
        (default): estimated, and removed when detected (see ``bipolar``). Known from the
        DICOM/sidecar: ``bipolar.readout_from_metadata(image.metadata)``.
    warn : bool
        Also issue the ``warnings`` as UserWarning (default True; False for a caller that
        reports them itself).

    Returns
    -------
    FatWaterFit

    Raises
    ------
    InputError
        Missing or implausible field strength, bad readout or start_selection, or a signal,
        complex signal, mask or noise map of the wrong shape.
    EchoTimeError
        Echo times of the wrong count, not increasing, or fewer than 3.
    FitCancelled
        ``cancel()`` returned True.
    """
    b0 = _require_field_strength(field_strength_t)
    check_readout(readout)
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
    if start_selection not in ("auto", "voxel", "neighbourhood"):
        raise InputError(f"start_selection must be 'auto', 'voxel' or 'neighbourhood', not "
                         f"{start_selection!r}.")
    if start_selection == "auto":
        start_selection = "neighbourhood" if len(t_s) <= FEW_ECHOES else "voxel"
    coils = 1.0 if coils is None else float(coils)
    noise_flat = noise_sigma
    if noise_sigma is not None and np.ndim(noise_sigma) > 0:
        noise_map = np.asarray(noise_sigma, dtype=np.float64)
        if noise_map.shape != spatial:
            raise InputError(f"The noise map's shape {noise_map.shape} differs from the image's "
                             f"{spatial}; give one noise SD or a map on the image grid.")
        noise_flat = noise_map[mask]
    spec = get_spectrum(spectrum)
    has_complex = complex_signal is not None
    keep_both = start_selection == "neighbourhood" or has_complex
    y = signal[:, mask].astype(np.float64)
    n = y.shape[1]
    out = _empty_result(n, keep_both)
    notes = []

    def work(sl):
        sigma = noise_flat if np.ndim(noise_flat) == 0 else noise_flat[sl]
        res = fit_fatwater_chunk(y[:, sl], t_s, field_strength_t=b0, sigma=sigma,
                                 coils=coils, spectrum=spec, keep_both=keep_both,
                                 fat_evidence=fat_evidence)
        for key, value in res.items():
            out[key][sl] = value

    share = 0.5 if has_complex else 1.0
    report = None if progress is None else (lambda x: progress(share * x))
    threads = max(1, int(threads))
    _run_chunks(work, n, chunk_size, threads, report, cancel)

    # Unknown noise and 3 echoes: the fits are exact, their costs carry no evidence to pool.
    pool = start_selection == "neighbourhood" and not (noise_sigma is None and len(t_s) <= 3)
    sigma_sel = noise_flat
    if pool and n and sigma_sel is None:
        sigma_sel = _residual_sigma(out["rss"], len(t_s))
        if not sigma_sel > 0:
            sigma_sel = 1e-6 * float(np.nanmax(y))
        # With one or two spare echoes the per-voxel profile likelihood ratio (the residual
        # variance estimated in each voxel) is often large by chance: the voxel's own flag
        # uses the pooled noise level instead.
        out["fat_water_ambiguous"] = ambiguous_solutions(
            out["start_evidence"] / sigma_sel ** 2,
            out["pdff"], out["alt_pdff"])
    # The voxel's own answer (before pooling) guides the complex field map where it is clear.
    voxel_pdff = np.where(out["fat_water_ambiguous"] == 0, out["pdff"], np.nan)
    if pool and n:
        choose_starts_by_neighbourhood(out, mask, sigma_sel, neighbourhood, fat_evidence)

    def to_map(values, dtype=np.float32, fill=np.nan):
        grid = np.full(spatial, fill, dtype=dtype)
        grid[mask] = values
        return grid

    complex_maps, used, source, estimate, fieldmap_method = None, None, None, None, None
    if has_complex and n:
        report = None if progress is None else (lambda x: progress(0.5 + 0.5 * x))
        cout, used, source, estimate, fieldmap_method = _complex_fit(
            complex_signal, mask, t_s, b0, precession_clockwise, spec,
            dict(out, voxel_pdff=voxel_pdff),
            4096, threads, report, cancel, readout, notes)
        _resolve_by_complex(out, cout["pdff"], voxel_pdff)
        complex_maps = {k: to_map(v) for k, v in cout.items()
                        if k not in ("converged", "start", "odd_even_phase")}
        complex_maps["converged"] = to_map(cout["converged"], bool, False)
    message = _ambiguity_warning(out["fat_water_ambiguous"], len(t_s), has_complex)
    if message:
        notes.append(message)
    for note in notes if warn else ():
        warnings.warn(note, UserWarning, stacklevel=2)

    start = np.where(np.isfinite(out["pdff"]), out["start"], 255).astype(np.uint8)
    with np.errstate(divide="ignore", invalid="ignore"):
        t2 = np.where(out["r2star"] > 0, 1e3 / out["r2star"], np.nan)
    return FatWaterFit(
        pdff=to_map(out["pdff"]), r2star=to_map(out["r2star"]), t2star=to_map(t2),
        water=to_map(out["water"]), fat=to_map(out["fat"]), s0=to_map(out["s0"]),
        start=to_map(start, np.uint8, 255), converged=to_map(out["converged"], bool, False),
        rss=to_map(out["rss"]), uncertainty=to_map(out["uncertainty"]),
        echo_times_ms=tuple(float(t) for t in te_ms), field_strength_t=b0,
        likelihood="gaussian" if noise_sigma is None else "noncentral-chi",
        noise_sigma=noise_sigma, coils=coils, spectrum=spec.describe(),
        precession_clockwise=bool(precession_clockwise), start_selection=start_selection,
        complex_maps=complex_maps, fat_evidence=float(fat_evidence),
        ambiguous=to_map(out["fat_water_ambiguous"]), readout=used, readout_source=source,
        odd_even_phase=estimate, fieldmap_method=fieldmap_method, warnings=notes)
