"""Shared limits, decision constants and input checks of the fat-water fits."""

from __future__ import annotations

import numpy as np

from ..errors import EchoTimeError, InputError
from ..fatmodel import get_spectrum

R2STAR_MAX = 5000.0
"""Upper bound of fitted R2*, 1/s (T2* 0.2 ms); fits reaching it are not trustworthy."""

FAT_DOMINANT_EVIDENCE = 3.0
"""Log-likelihood ratio (nats) the fat-dominant solution needs over the water-dominant one to be
reported, i.e. a likelihood ratio of e^3 = 20, "strong evidence" on the scale of Kass & Raftery
(J Am Stat Assoc 1995;90:773-795). Below it the data cannot tell the two apart and the
water-dominant solution is reported, as magnitude-based methods with their PDFF 0-50 % dynamic
range do (Yu H et al., Magn Reson Med 2011;66:199-206, doi:10.1002/mrm.22840).
0 gives plain maximum likelihood (MAGO/MAGORINO)."""


def method_description(spectrum=None, fat_evidence=FAT_DOMINANT_EVIDENCE):
    """One line saying what the fat-water fit does and with which numbers (for provenance).

    Parameters
    ----------
    spectrum : str or FatSpectrum, optional
        Fat spectrum named in the line (default: the six-peak spectrum).
    fat_evidence : float
        Log-likelihood ratio (nats) the fat-dominant solution needs.

    Returns
    -------
    str
    """
    return ("Magnitude fat-water fit, water + fat + one R2*, two starts (Triay Bagur A et al. MRM "
            "2019, MAGO; Bray TJP et al. MRM 2023, doi:10.1002/mrm.29493, MAGORINO); "
            f"{get_spectrum(spectrum).describe()}; the fat-dominant solution is reported only "
            f"with a log-likelihood ratio > {fat_evidence:g} nats over the water-dominant one "
            "(likelihood ratio 20, 'strong evidence', Kass & Raftery JASA 1995), otherwise the "
            "water-dominant one (the PDFF 0-50 % range of magnitude-based methods, Yu H et al. "
            "MRM 2011;66:199, doi:10.1002/mrm.22840)")



def _require_field_strength(field_strength_t):
    if field_strength_t is None:
        raise InputError(
            "The fat-water fit needs the main field strength (the fat peaks' frequencies depend "
            "on it). Pass field_strength_t in tesla, e.g. 1.5 or 3.0; it is in the DICOM tag "
            "MagneticFieldStrength (0018,0087) or the NIfTI sidecar.")
    try:
        b0 = float(field_strength_t)
    except (TypeError, ValueError):
        b0 = float("nan")
    if not (np.isfinite(b0) and 0.05 <= b0 <= 20.0):
        raise InputError(
            f"Field strength {field_strength_t!r} T is not plausible for the fat-water fit; pass "
            "the scanner's main field in tesla (e.g. 1.5 or 3.0).")
    return b0


def _check_echo_times_s(te_s, n_echoes):
    t = np.asarray(te_s, dtype=np.float64).ravel()
    if t.size != n_echoes:
        raise EchoTimeError(f"{t.size} echo times for {n_echoes} echoes; give one echo time "
                            "per echo.")
    if not np.all(np.isfinite(t)) or np.any(t < 0) or np.any(np.diff(t) <= 0):
        raise EchoTimeError("Echo times must be finite, non-negative and strictly increasing.")
    if n_echoes < 3:
        raise EchoTimeError(f"The fat-water fit has 3 unknowns (water, fat, R2*) and needs at "
                            f"least 3 echoes (better 6 or more); got {n_echoes}.")
    return t


# ---------------------------------------------------------------------------------------------
# Likelihoods. Both expose cost (per voxel, to minimise) and the "pseudo-residual" rho with
# gradient of the cost = -J^T rho, so that Levenberg-Marquardt solves (J^T J + lam D) d = J^T rho.

