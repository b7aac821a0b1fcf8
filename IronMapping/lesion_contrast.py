"""Lesion contrast: a lesion's R2* against the background liver, with its reading on T2*.

    >>> cmp = compare_lesion(region_statistics(fit, lesion_mask), region_statistics(fit, liver_mask))
    >>> cmp["reading"], cmp["text"]

R2* in 1/s. The readings follow Belay 2018 (J Med Case Reports): iron-excluding lesions stand
out against an iron-loaded liver.
"""

from __future__ import annotations

import numpy as np

LESION_COVERAGE_FACTOR = 2.0


def compare_lesion(lesion: dict, background: dict, coverage_factor: float = LESION_COVERAGE_FACTOR
                   ) -> dict:
    """Lesion vs background liver R2*, from two `region_statistics` dicts.

    difference = lesion - background median R2* (1/s); ratio = lesion / background.
    The combined uncertainty is sqrt(u_l^2 + u_b^2) with u the median per-voxel SD of R2* from
    the fit (the measurement uncertainty of a voxel; the voxel SD when the fit gives none).
    The difference "exceeds" it when |difference| > coverage_factor x combined. The reading:
    not exceeding -> isointense to liver on T2*; lower R2* -> hyperintense (less iron, e.g.
    adenoma, HCC, metastasis); higher -> hypointense (Belay 2018, J Med Case Reports).
    A liver known only to be above a lower bound gives "hyperintense" when the lesion is
    clearly below the bound, else no reading.

    Parameters
    ----------
    lesion, background : dict
        `region_statistics` of the lesion and of the background liver.
    coverage_factor : float
        k in |difference| > k x combined uncertainty.

    Returns
    -------
    dict
        lesion_r2star_median, background_r2star_median, difference_r2star, ratio_r2star,
        combined_uncertainty_r2star (all 1/s but the ratio), uncertainty_basis,
        coverage_factor, standard_error_difference_r2star (1/s), exceeds_uncertainty, reading,
        text; background_r2star_lower_bound when the liver is censored.
    """
    out = {"lesion_r2star_median": lesion.get("r2star_median"),
           "background_r2star_median": background.get("r2star_median"),
           "difference_r2star": None, "ratio_r2star": None, "combined_uncertainty_r2star": None,
           "uncertainty_basis": None, "coverage_factor": float(coverage_factor),
           "standard_error_difference_r2star": None, "exceeds_uncertainty": None,
           "reading": None, "text": None}
    a, b = out["lesion_r2star_median"], out["background_r2star_median"]
    bound = background.get("r2star_lower_bound")
    if a is not None and b is None and bound is not None:
        return _compare_with_censored_background(out, lesion, a, bound, coverage_factor)
    if a is None or b is None:
        out["text"] = "lesion or background liver has no valid R2*: no comparison"
        return out

    def unc(stats):
        u = stats.get("r2star_uncertainty_median")
        if u is not None and np.isfinite(u):
            return u, "per-voxel fit uncertainty"
        return stats.get("r2star_sd") or 0.0, "voxel standard deviation"

    ua, basis_a = unc(lesion)
    ub, basis_b = unc(background)
    combined = float(np.hypot(ua, ub))
    diff = float(a - b)
    out.update(difference_r2star=diff, ratio_r2star=float(a / b) if b else None,
               combined_uncertainty_r2star=combined,
               uncertainty_basis=basis_a if basis_a == basis_b else f"{basis_a} / {basis_b}")
    se = [s.get("r2star_se_median") for s in (lesion, background)]
    if all(v is not None for v in se):
        out["standard_error_difference_r2star"] = float(np.hypot(*se))
    exceeds = abs(diff) > coverage_factor * combined
    out["exceeds_uncertainty"] = bool(exceeds)
    if not exceeds:
        reading = "isointense to liver on T2*"
        meaning = ("holds iron like the background liver (e.g. extramedullary haematopoiesis or "
                   "regenerative tissue)")
    elif diff < 0:
        reading = "hyperintense to liver on T2*"
        meaning = "holds less iron than the background liver (iron-excluding lesions such as adenoma, HCC or metastasis)"
    else:
        reading = "hypointense to liver on T2*"
        meaning = "holds more iron than the background liver"
    out["reading"] = reading
    out["text"] = (f"Lesion R2* {a:.1f} vs liver {b:.1f} 1/s (difference {diff:+.1f} 1/s, ratio "
                   f"{a / b:.2f}; {coverage_factor:g} x combined uncertainty = "
                   f"{coverage_factor * combined:.1f} 1/s): {reading}; the lesion {meaning}. "
                   "Reference: Belay 2018, J Med Case Reports.")
    return out


def _compare_with_censored_background(out: dict, lesion: dict, a: float, bound: float,
                                      coverage_factor: float) -> dict:
    """Lesion against a liver known only to be above `bound` (1/s): hyperintense when the lesion
    is clearly below the bound, otherwise no reading (the liver's value is not measurable)."""
    u = lesion.get("r2star_uncertainty_median") or lesion.get("r2star_sd") or 0.0
    out["background_r2star_lower_bound"] = float(bound)
    if bound - a > coverage_factor * u:
        out.update(exceeds_uncertainty=True, reading="hyperintense to liver on T2*",
                   uncertainty_basis="per-voxel fit uncertainty of the lesion",
                   combined_uncertainty_r2star=float(u))
        out["text"] = (f"Lesion R2* {a:.1f} vs liver above {bound:.0f} 1/s (the liver decays faster "
                       "than the echoes can measure): hyperintense to liver on T2*; the lesion holds "
                       "less iron than the background liver (iron-excluding lesions such as "
                       "adenoma, HCC or metastasis). Reference: Belay 2018, J Med Case Reports.")
    else:
        out["text"] = (f"Lesion R2* {a:.1f} 1/s, liver above {bound:.0f} 1/s (faster than the echoes "
                       "can measure): no comparison; use a shorter first echo")
    return out
