"""One region's row of the summary: statistics, ROI-averaged fit, liver iron concentration, grade.

Internal to :func:`IronMapping.quantification.summarize`: frozen records of the settings every
region is summarised with (`_Settings`), and of each region's LIC (`_Lic`), grade (`_Grade`)
and row (`_Region`, made by `_region_row`). R2* in 1/s, T2* in ms, LIC in mg Fe/g dry weight.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .calibration import (MG_PER_G_TO_UMOL_PER_G, get_calibration, liver_iron_concentration,
                          liver_iron_lower_bound, nominal_field)
from .errors import CalibrationError
from .grading import grade_region
from .organs import recognise_organ
from .regions import region_statistics
from .roi_signal import roi_fit

NOT_GRADABLE_REASON = ("these are T2 maps (spin echo); the LIC calibrations and grade "
                       "cut-offs are for R2*/T2* from gradient echo, so none is applied")


@dataclass(frozen=True)
class _Settings:
    """What every region is summarised with."""

    field_strength_t: float | None  # None when unknown
    calibration: Any  # calibration.Calibration
    explicit_calibration: bool
    convert_field: bool
    quantity: str
    noise_sigma: float | None
    coils: float | None
    roi_method: str
    min_quality: float
    voxel_volume_ml: float | None
    signal: np.ndarray | None  # (n_echoes, k, j, i)
    echo_times_ms: np.ndarray | None

    @property
    def field_known(self) -> bool:
        return self.field_strength_t is not None

    @property
    def gradable(self) -> bool:
        """Spin-echo T2 maps: R2*-based calibrations and T2* cut-offs do not apply."""
        return self.quantity == "T2*"


@dataclass(frozen=True)
class _Lic:
    """A region's liver iron concentration (mg Fe/g dry weight)."""

    mg_per_g: float | None = None
    umol_per_g: float | None = None
    lower_bound: float | None = None
    note: str | None = None
    refused: bool = False  # the note says why no LIC (it becomes the calibration's note)
    applied: bool = False
    conversion: Any = None
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Grade:
    grade: str | None
    iron_loaded: bool | None
    criterion: str | None
    basis: str | None
    source: str | None
    reference: str | None
    note: str | None
    lic_grade: tuple = ()  # (grade,) when the scheme gives an LIC grade

    def fields(self) -> dict:
        out = {"grade": self.grade, "iron_loaded": self.iron_loaded,
               "grade_criterion": self.criterion, "grade_basis": self.basis if self.grade else None,
               "grade_source": self.source, "grade_reference": self.reference,
               "grade_note": self.note}
        if self.lic_grade:
            out["lic_grade"] = self.lic_grade[0]
        return out


@dataclass(frozen=True)
class _Region:
    """One region's row before the comparisons between regions."""

    value: int
    name: str
    mask: np.ndarray
    organ: Any  # organs.OrganMatch
    stats: dict  # regions.region_statistics
    roi: dict | None  # regions.roi_fit
    notes: tuple[str, ...]
    lic: _Lic
    grade: _Grade

    @property
    def n_included(self) -> int:
        return self.stats["n_included"]

    def fields(self) -> dict:
        """The row's keys up to the grade, in the order of the JSON."""
        row = {"name": self.name, "label_value": int(self.value), "organ": self.organ.organ,
               "organ_source": self.organ.source, "organ_matched": self.organ.matched}
        row.update(self.stats)
        row["notes"] = list(self.notes)
        rf = self.roi
        row.update({"r2star_roi_fit": None if rf is None else rf["r2star"],
                    "t2star_roi_fit": None if rf is None else rf["t2star"], "roi_fit": rf,
                    "lic_mg_per_g": self.lic.mg_per_g, "lic_umol_per_g": self.lic.umol_per_g,
                    "lic_lower_bound": self.lic.lower_bound, "lic_note": self.lic.note})
        row.update(self.grade.fields())
        return row


def _lookup(mapping, value: int, name: str):
    """An entry keyed by label value (int or str) or by region name."""
    if not mapping:
        return None
    for key in (value, str(value), name):
        if key in mapping:
            return mapping[key]
    return None


def _roi_s0(roi: dict | None) -> float | None:
    """The tissue amplitude S0 of a region's ROI-averaged fit, when that fit stood."""
    if not roi or roi.get("r2star") is None or roi.get("method") == "nlls":
        return None
    return roi.get("s0")


def _grade_from_bound(grade: dict, organ: str, field_strength_t) -> None:
    """Grade from a lower bound on R2* (upper bound on T2*): the band of the bound is certain
    only when it is the top band; otherwise the region is at least that grade."""
    top = grade_region(organ, field_strength_t, 1e9, 1e-6, 1e9)
    if grade.get("lic_grade") not in (None, top.get("lic_grade")):
        grade["lic_grade"] = None
    if grade["grade"] == top["grade"]:
        return
    grade["notes"].append(f"at least {grade['grade']}: the median is beyond what the echoes can measure")
    grade["grade"] = None
    grade["criterion"] = None


def _settings(fit_result, field_strength_t, calibration, convert_field, roi_method, min_quality,
              voxel_volume_ml, signal_arr, te, image_field) -> tuple[_Settings, list[str]]:
    """The shared settings and the notes they give rise to (voxel volume, field strength)."""
    notes = []
    if voxel_volume_ml is None:
        notes.append("voxel volume unknown: volume_ml is null (pass voxel_volume_ml or a MultiEchoImage)")
    if field_strength_t is not None:
        field_strength_t = float(field_strength_t)
        if nominal_field(field_strength_t) not in (1.5, 3.0):
            notes.append(f"field strength {field_strength_t:g} T: IronMapping has calibrations and "
                         "cut-offs for 1.5 T and 3 T only; LIC and grades are not given")
    else:
        hint = "" if image_field is None else f" (the image metadata says {image_field:g} T)"
        notes.append("field strength unknown" + hint + ": LIC and grades are not computed, because "
                     "R2* calibrations and cut-offs differ between 1.5 T and 3 T. Pass "
                     "field_strength_t to get them.")
    settings = _Settings(
        field_strength_t=field_strength_t, calibration=get_calibration(calibration),
        explicit_calibration=calibration is not None, convert_field=convert_field,
        quantity=getattr(fit_result, "quantity", "T2*"),
        noise_sigma=getattr(fit_result, "noise_sigma", None),
        coils=getattr(fit_result, "coils", None), roi_method=roi_method,
        min_quality=min_quality, voxel_volume_ml=voxel_volume_ml, signal=signal_arr,
        echo_times_ms=te)
    if not settings.gradable:
        notes.append(NOT_GRADABLE_REASON)
    return settings, notes


def _liver_iron(organ: str | None, r2_value, bounded: bool, s: _Settings) -> _Lic:
    """LIC of a liver region from its median R2* (or the median's lower bound when
    ``bounded``); liver calibrations are not applied to other organs."""
    if organ != "liver" or r2_value is None:
        return _Lic()
    if not s.gradable:
        return _Lic(note=f"LIC not computed: {NOT_GRADABLE_REASON}", refused=True)
    cal = s.calibration
    try:
        estimate = liver_iron_lower_bound if bounded else liver_iron_concentration
        lic, info = estimate(r2_value, s.field_strength_t, cal, convert_field=s.convert_field)
    except CalibrationError as exc:
        mismatch = s.field_known and nominal_field(s.field_strength_t) != nominal_field(cal.field_strength_t)
        if s.explicit_calibration and mismatch:
            raise
        return _Lic(note=f"LIC not computed: {exc}", refused=True)
    lic = float(lic) if np.isfinite(lic) else None
    done = {"applied": True, "conversion": info["conversion"], "warnings": tuple(info["warnings"])}
    if bounded:
        note = (f"LIC above {lic:.1f} mg Fe/g dry weight (from R2* above {r2_value:.0f} 1/s; "
                f"{cal.label}: {cal.equation})" if lic is not None else None)
        return _Lic(lower_bound=lic, note=note, **done)
    return _Lic(mg_per_g=lic, umol_per_g=lic * MG_PER_G_TO_UMOL_PER_G if lic is not None else None,
                note=f"{cal.label}: {cal.equation}", **done)


def _grade(organ: str | None, stats: dict, roi: dict | None, r2_value, bounded: bool, lic: _Lic,
           s: _Settings) -> _Grade:
    """The heart on its ROI-averaged T2* (cardiac standard), others on the median."""
    t2_for_grade, basis = stats["t2star_median"], "median voxel T2*"
    if bounded:
        t2_for_grade, basis = stats["t2star_upper_bound"], "upper bound of the median voxel T2*"
    if organ == "heart" and roi is not None and roi["t2star"] is not None:
        t2_for_grade, basis = roi["t2star"], f"ROI-averaged fit T2* ({roi['method']})"
    elif organ == "liver":
        basis = "lower bound of the median voxel R2*" if bounded else "median voxel R2*"
    g = grade_region(organ, s.field_strength_t if s.gradable else None, r2_value, t2_for_grade,
                     lic.lower_bound if bounded else lic.mg_per_g, basis=basis)
    if bounded and g["grade"] is not None and "bound" in basis:
        _grade_from_bound(g, organ, s.field_strength_t)
    if not s.gradable and organ is not None:
        g["notes"] = [NOT_GRADABLE_REASON]
    return _Grade(grade=g["grade"], iron_loaded=g["iron_loaded"], criterion=g["criterion"],
                  basis=g["basis"], source=g["source"], reference=g["reference"],
                  note="; ".join(g["notes"]) or None,
                  lic_grade=(g["lic_grade"],) if "lic_grade" in g else ())


def _region_row(fit_result, value: int, name: str, mask: np.ndarray, s: _Settings, organs,
                terminology) -> _Region:
    """Statistics, ROI-averaged fit, LIC and grade of one region."""
    match = recognise_organ(name, _lookup(terminology, value, name), _lookup(organs, value, name))
    rf = None
    if s.signal is not None and mask.any():
        rf = roi_fit(s.signal, mask, s.echo_times_ms, method=s.roi_method,
                     noise_sigma=s.noise_sigma, coils=s.coils, quantity=s.quantity)
    # The ROI-averaged fit gives the region's tissue amplitude, which sets the R2* the
    # echoes can measure (voxels beyond it are censored, see regions.region_statistics).
    stats = region_statistics(fit_result, mask, s.voxel_volume_ml, s.min_quality,
                              signal=s.signal, reference_s0=_roi_s0(rf))
    notes = list(stats["notes"])
    if match.organ is None:
        notes.append("organ not recognised from the region name: statistics only, no "
                     "grade (name the region after its organ, e.g. 'liver')")
    bound = stats["r2star_lower_bound"]
    if rf is not None:
        notes.extend(rf["notes"])
        if rf["r2star"] is not None and bound is not None and rf["r2star"] < bound:
            notes.append(
                f"the ROI-averaged fit ({rf['r2star']:.0f} 1/s) is below the voxels' lower bound "
                f"({bound:.0f} 1/s): the mean signal is dominated by the slower voxels, or its "
                "decay was over before the first echo; read the lower bound")
    # A median beyond what the echoes can measure is replaced by its lower bound.
    r2_value, bounded = stats["r2star_median"], False
    if r2_value is None and bound is not None:
        r2_value, bounded = bound, True
    lic = _liver_iron(match.organ, r2_value, bounded, s)
    grade = _grade(match.organ, stats, rf, r2_value, bounded, lic, s)
    return _Region(value=int(value), name=name, mask=mask, organ=match, stats=stats, roi=rf,
                   notes=tuple(notes), lic=lic, grade=grade)

