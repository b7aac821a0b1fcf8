"""The result of a voxel-wise fit: status codes, the maps (RelaxometryFit) and their provenance.

    >>> from IronMapping.relaxometry import fit, Status
    >>> result = fit(signal, echo_times_ms)
    >>> result.r2star[result.status == Status.FITTED]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np

from . import __version__


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
        """Plain-language meaning of a status code.

        Parameters
        ----------
        code : int or Status
            A value of the ``status`` map.

        Returns
        -------
        str
            One sentence, e.g. "fitted" or "fit did not converge".

        Raises
        ------
        ValueError
            ``code`` is not a Status value.
        """
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

_SCAN_VOXELS = 1 << 18  # voxels per pass of the whole-image scans (no input-sized temporaries)


@dataclass
class RelaxometryFit:
    """Parametric maps of one fit; arrays have the spatial shape of the input.

    Attributes
    ----------
    r2star : ndarray, float32
        1/s (R2 when quantity is "T2"); NaN where status != FITTED.
    t2star : ndarray, float32
        ms (1000 / r2star); NaN where R2* is zero to the fit's precision (no decay measurable).
    s0 : ndarray, float32
        Signal extrapolated to TE = 0 (input units); NaN where status != FITTED.
    quality : ndarray, float32
        Coefficient of determination R^2 of the fitted magnitude curve.
    uncertainty : ndarray, float32
        Standard deviation of R2* in 1/s from the Fisher information.
    status : ndarray, uint8
        `Status` codes.
    echoes_used : ndarray, uint8
        Number of echoes that entered the fit (truncation varies per voxel).
    method : str
        The concrete method fitted (never "auto").
    echo_times_ms : ndarray, (n_echoes,)
        Echo times in ms.
    noise_sigma : float or None
        Noise SD per real channel used (signal units); with a noise map its median.
    coils : float or None
        Receive coil count L of the noise model.
    noise_source : str
        Where the noise level came from.
    quantity : str
        "T2*" (gradient echo) or "T2" (spin echo).
    requested_method : str
        The method as requested ("auto" ...).
    field_strength_t : float or None
        Main field in T.
    maps : dict of str to ndarray
        Extra maps, e.g. "offset" (offset model) or "pdff" (%, fat-water); NaN where
        status != FITTED.
    warnings : list of str
        Warnings about the fit (also issued with :func:`warnings.warn`).
    noise_sigma_map : ndarray, float32, or None
        Noise SD per voxel where the noise varies in space, else None.
    noise_details : dict
        Every noise estimate that was made (echo train, background), JSON-able.
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
        """Bool map, True where status is FITTED."""
        return self.status == Status.FITTED

    def status_counts(self) -> dict:
        """Voxels per status, keyed by the lower-case status name ("fitted", "masked", ...)."""
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
    """Source of a method; for fat-water it also names the fat spectrum and decision rule.

    Parameters
    ----------
    method : str
        A concrete method name (one of METHODS other than "auto").

    Returns
    -------
    str
        The reference; "" for a name without one.
    """
    if method == "fat-water":
        from .fatwater import method_description

        return method_description()
    return METHOD_REFERENCES.get(method, "")


def t2star_from_r2star(r2star, status, echo_times_ms) -> np.ndarray:
    """T2* (ms) = 1000 / R2* (1/s) where the fit succeeded and the decay is measurable, else NaN.

    A decay of less than one part per million over the echo train is below the single-precision
    resolution of the signal, so R2* is zero to the fit's precision there and T2* is undefined
    (a fit returning R2* = 5e-28 must not give T2* = 2e30 ms).

    Parameters
    ----------
    r2star : array_like
        R2* in 1/s, any shape.
    status : array_like
        `Status` codes, broadcastable with ``r2star``.
    echo_times_ms : array_like, (n_echoes,)
        Echo times in ms (the last one sets the resolvable R2*).

    Returns
    -------
    ndarray, float32
        T2* in ms, of the broadcast shape; NaN where not FITTED or R2* is not resolvable.
    """
    r2star, status = np.broadcast_arrays(np.asarray(r2star), np.asarray(status))
    resolvable = 1e-6 / (float(np.max(echo_times_ms)) / 1000.0)
    out = np.full(r2star.shape, np.nan, np.float32)
    r2_flat, status_flat, out_flat = r2star.reshape(-1), status.reshape(-1), out.reshape(-1)
    # in place and in chunks: no image-sized temporaries beside the result
    for i in range(0, out_flat.size, _SCAN_VOXELS):
        r2, part = r2_flat[i:i + _SCAN_VOXELS], slice(i, i + _SCAN_VOXELS)
        measurable = status_flat[part] == Status.FITTED
        with np.errstate(invalid="ignore"):
            measurable &= r2 > resolvable
        np.divide(1000.0, r2, out=out_flat[part], where=measurable, casting="unsafe")
    return out
