"""A focal finding in words, for the radiologist: its reading and the confidence of its difference.

Readings follow Belay et al. 2018 (J Med Case Rep, doi:10.1186/s13256-017-1531-9: lesions
that exclude iron, such as adenoma, HCC and metastasis, stand out against an iron-loaded
liver; extramedullary haematopoiesis holds iron like the liver) and Idilman et al. 2016
(Diagn Interv Radiol 22:22: focal siderosis and diffuse siderosis with focal sparing).
R2* in 1/s, volume in mL.
"""

from __future__ import annotations

from .focal_settings import SPARING

BELAY_2018 = ("Belay et al., J Med Case Rep 2018;12:39, doi:10.1186/s13256-017-1531-9")
IDILMAN_2016 = "Idilman et al., Diagn Interv Radiol 2016;22:22"


def _organ_word(organ: str) -> str:
    return organ or "organ"


def reading(finding: dict, organ: str) -> str:
    """The finding in words, for the radiologist (R2* 0.1 1/s, volume 0.1 mL).

    Parameters
    ----------
    finding : dict
        One finding of `find_focal_findings`.
    organ : str
        Its organ.

    Returns
    -------
    str
    """
    vol = finding.get("volume_ml")
    size = f"{vol:.1f} mL" if vol is not None else f"{finding['n_voxels']} voxels"
    bg = finding["background_r2star_median"]
    med = finding.get("r2star_median")
    value = (f"R2* {med:.1f} 1/s" if med is not None else
             "R2* above what the echoes can measure (more than half the voxels decay faster "
             "than the first echoes sample or give no signal)")
    head = f"focal area {size} with {value} in a {_organ_word(organ)} of {bg:.1f} 1/s"
    if finding["kind"] == SPARING:
        if organ == "liver":
            meaning = ("excludes iron, as adenoma, HCC or metastasis do; extramedullary "
                       "haematopoiesis would hold iron like the liver (Belay 2018); in diffuse "
                       "siderosis also focal sparing (Idilman 2016)")
        else:
            meaning = f"holds less iron than the surrounding {organ} (focal sparing or a lesion that excludes iron)"
    else:
        if organ == "liver":
            meaning = ("holds more iron than the liver, as focal siderosis or a siderotic "
                       "(regenerative) nodule does (Idilman 2016); calcification and haemorrhage "
                       "also darken gradient-echo images")
        elif organ == "spleen":
            meaning = ("holds more iron than the spleen, as a siderotic (Gamna-Gandy) body does; "
                       "calcification and haemorrhage also darken gradient-echo images")
        else:
            meaning = (f"denser than the surrounding {organ} (iron, calcification or haemorrhage "
                       "darken gradient-echo images)")
        phase = finding.get("field_shift") or {}
        sign = phase.get("sign")
        if sign == "paramagnetic":
            meaning += "; the local field shift is paramagnetic, as iron (not calcium)"
        elif sign == "diamagnetic":
            meaning += "; the local field shift is diamagnetic, as calcium (not iron)"
        elif phase:
            meaning += f"; field-shift sign not determined ({phase.get('reason')})"
    return f"{head}: {meaning}."


def confidence(finding: dict, coverage_factor: float) -> str:
    """The difference to the background with its uncertainty, in words.

    Parameters
    ----------
    finding : dict
        One finding of `find_focal_findings`.
    coverage_factor : float
        As in `FocalOptions`.

    Returns
    -------
    str
    """
    diff = finding.get("difference_r2star")
    if diff is None:
        return ("most voxels decay faster than the protocol can measure: denser than the "
                "background beyond doubt, value not measurable")
    se = finding["standard_error_difference_r2star"]
    lo, hi = diff - 1.96 * se, diff + 1.96 * se
    comb = finding.get("combined_uncertainty_r2star") or 0.0
    return (f"difference {diff:+.1f} 1/s (95 % CI {lo:+.1f} to {hi:+.1f} 1/s), ratio "
            f"{finding['ratio_r2star']:.2f}; beyond {coverage_factor:g} x the combined per-voxel "
            f"uncertainty ({coverage_factor * comb:.1f} 1/s)")

