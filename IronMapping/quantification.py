"""Organ statistics, liver iron concentration, grades and iron distribution pattern.

    >>> from IronMapping.quantification import summarize, regions_table
    >>> summary = summarize(fit_result, labels, {1: "liver", 2: "spleen"}, 1.5,
    ...                     signal=image.signal, echo_times_ms=image.echo_times_ms,
    ...                     voxel_volume_ml=image.voxel_volume_ml)
    >>> summary["regions"][0]["lic_mg_per_g"], summary["pattern"]["kind"]
    >>> rows = regions_table(summary)        # tidy rows, units in the column names

The summary is a JSON-able dict (NaN written as null):

    {"regions": [{"name", "organ", "n_voxels", "volume_ml", "r2star_median", "r2star_mean",
                  "r2star_sd", "t2star_median", "r2star_roi_fit", "lic_mg_per_g", "grade", ...}],
     "pattern": {"kind", "extrahepatic_siderosis", "spleen_spared", "text", ...},
     "calibration": {"name", "citation", "doi", "equation", "field_strength_t", ...},
     "field_strength_t", "method", "units", "lesions", "sir", "warnings", "notes", ...}

R2* in 1/s, T2* in ms, volume in mL, LIC in mg Fe/g dry weight (the "units" entry maps every
numeric key to its unit). Every applied number carries its source: the calibration block,
each region's grade_source, the pattern's rules.

Field strength: when ``field_strength_t`` is None it is reported as unknown; LIC and grades are
then refused (null, with a note saying why and what to do) rather than computed as if at 1.5 T.
A calibration made at another field than the data raises CalibrationError when it was asked for
explicitly, unless ``convert_field=True`` (then R2* is converted and a warning is added); the
default calibration (Wood 2005, 1.5 T) on 3 T data gives LIC null with a note instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import numpy as np

from . import RESEARCH_USE_STATEMENT, __version__
from .calibration import (MG_PER_G_TO_UMOL_PER_G, get_calibration, liver_iron_concentration,
                          liver_iron_lower_bound, nominal_field)
from .errors import CalibrationError, GeometryError, InputError
from .fileio import json_safe, write_csv, write_json
from .grading import DESCRIPTIVE_ONLY, GRADING_SCHEMES, grade_region
from .organs import recognise_organ
from .patterns import classify_pattern
from .quantities import REGION_QUANTITIES, SUMMARY_UNITS, display_value, label_for
from .regions import (DEFAULT_MIN_QUALITY, DEFAULT_ROI_METHOD, LESION_COVERAGE_FACTOR,
                      compare_lesion, label_masks, region_statistics, roi_fit,
                      signal_intensity_ratio)

DEFAULT_REFERENCE_ORGAN = "skeletal muscle"

#: Units of the summary's numeric keys (summary["units"]), from IronMapping.quantities.
UNITS = SUMMARY_UNITS

_ROW_FIRST = ("name", "label_value", "organ", "organ_source", "n_voxels", "volume_ml",
              "r2star_median", "r2star_lower_bound", "r2star_censored_fraction", "r2star_mean",
              "r2star_sd", "t2star_median", "r2star_roi_fit", "lic_mg_per_g", "lic_lower_bound",
              "grade")


#: JSON-safe copy (numpy scalars to Python, NaN/inf to None, tuples to lists); see fileio.
_clean = json_safe


def _lookup(mapping, value: int, name: str):
    """An entry keyed by label value (int or str) or by region name."""
    if not mapping:
        return None
    for key in (value, str(value), name):
        if key in mapping:
            return mapping[key]
    return None


def _signal_inputs(signal, echo_times_ms, fit_result, spatial):
    """(signal array or None, echo times or None, voxel volume from an image or None, notes)."""
    notes = []
    voxel_volume = None
    image_field = None
    if signal is None:
        return None, None, None, None, notes
    if hasattr(signal, "signal") and hasattr(signal, "echo_times_ms"):  # a MultiEchoImage
        voxel_volume = float(signal.voxel_volume_ml)
        image_field = getattr(signal, "field_strength_t", None)
        if echo_times_ms is None:
            echo_times_ms = signal.echo_times_ms
        signal = signal.signal
    signal = np.asarray(signal)
    if signal.ndim != len(spatial) + 1 or tuple(signal.shape[1:]) != tuple(spatial):
        raise GeometryError(
            f"signal has shape {signal.shape} but the maps have spatial shape {tuple(spatial)}; "
            "give the multi-echo signal [echo, k, j, i] the maps were fitted from.")
    if echo_times_ms is None:
        echo_times_ms = getattr(fit_result, "echo_times_ms", None)
        if echo_times_ms is None:
            raise InputError("signal was given without echo_times_ms; give the echo times in ms.")
        notes.append("echo times for the ROI fits taken from the fit result")
    te = np.asarray(echo_times_ms, dtype=np.float64).ravel()
    if te.size != signal.shape[0]:
        raise InputError(f"signal has {signal.shape[0]} echoes but {te.size} echo times were given.")
    return signal, te, voxel_volume, image_field, notes


# ------------------------------------------------------------------------------- the summary
#
# summarize() runs five steps, each a function over frozen records: one row per region
# (statistics, ROI fit, LIC, grade), reference ratios, lesions, the calibration block, and
# the assembly of the JSON dict (the contract of summary.json and the Slicer table attributes,
# described by the TypedDicts below).


class CalibrationBlock(TypedDict):
    """summary["calibration"]: the LIC calibration and how it was applied."""

    name: str
    label: str
    citation: str
    doi: str
    equation: str
    field_strength_t: float
    valid_lic_range_mg_per_g: list | None
    reference_standard: str
    default: bool
    applied: bool
    conversion: dict | None
    warnings: list[str]
    note: str | None
    applied_to: str


class RegionRow(TypedDict, total=False):
    """One entry of summary["regions"] (R2* 1/s, T2* ms, volume mL, LIC mg Fe/g dry weight).

    The keys of ``regions.region_statistics`` (n_included, r2star_mean, r2star_sd, percentiles,
    censoring, ...) come after the organ keys; ``lic_grade`` only for graded livers,
    ``lesion_reading`` only for lesions compared with liver, the focal keys only for organs
    the focal analysis looked at.
    """

    name: str
    label_value: int
    organ: str | None
    organ_source: str | None
    n_voxels: int
    volume_ml: float | None
    r2star_median: float | None
    r2star_lower_bound: float | None
    r2star_censored_fraction: float | None
    r2star_mean: float | None
    r2star_sd: float | None
    t2star_median: float | None
    r2star_roi_fit: float | None
    lic_mg_per_g: float | None
    lic_lower_bound: float | None
    grade: str | None
    organ_matched: str | None
    n_included: int
    notes: list[str]
    t2star_roi_fit: float | None
    roi_fit: dict | None
    lic_umol_per_g: float | None
    lic_note: str | None
    iron_loaded: bool | None
    grade_criterion: str | None
    grade_basis: str | None
    grade_source: str | None
    grade_reference: str | None
    grade_note: str | None
    lic_grade: str | None
    reference_ratio_r2star: float | None
    sir_to_reference: list | None
    lesion_reading: str
    focal_findings_n: int
    heterogeneity_robust_cv: float | None
    heterogeneity_excess_cv: float | None


class Summary(TypedDict):
    """What :func:`summarize` returns (JSON-able: NaN as None, tuples as lists).

    The analysis path (``IronMapping.analysis``) adds ``field_strength_source``,
    ``echo_time_source`` and ``whole_image``.
    """

    regions: list[RegionRow]
    pattern: dict
    calibration: CalibrationBlock
    field_strength_t: float | None
    field_strength_known: bool
    method: str | None
    quantity: str
    fit: dict
    roi_fit_method: str | None
    min_quality: float
    reference_region: str | None
    lesions: list[dict]
    sir: dict | None
    ratios: list[dict]
    grading_sources: list[str]
    units: dict[str, str]
    warnings: list[str]
    notes: list[str]
    software: str
    research_use: str
    focal_findings: list[dict]
    focal_analysis: dict


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


@dataclass(frozen=True)
class _Reference:
    """Ratios to the reference region (skeletal muscle by default), one entry per region."""

    index: int | None  # of the reference region
    ratio_r2star: tuple  # median R2* / the reference's, or None
    sir: tuple  # signal intensity ratio per echo, or None
    notes: tuple  # a note per region, or None
    sir_block: dict | None
    missing_note: str | None


@dataclass(frozen=True)
class _Lesions:
    """Lesions against the largest liver region."""

    entries: tuple  # summary["lesions"] dicts
    readings: dict  # region index -> lesion reading
    notes: dict  # region index -> note


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


def _reference_ratios(regions: list[_Region], reference_organ: str, s: _Settings) -> _Reference:
    """R2* ratios and signal intensity ratios to the largest ``reference_organ`` region."""
    masks = {r.name: r.mask for r in regions}
    candidates = [n for n, r in enumerate(regions)
                  if r.organ.organ == reference_organ and r.n_included > 0]
    index = max(candidates, key=lambda n: regions[n].n_included) if candidates else None
    n_regions = len(regions)
    if index is None:
        missing = (f"no {reference_organ} region: no reference ratios or signal intensity ratios "
                   f"(descriptive organs such as thyroid are compared with it)")
        return _Reference(None, (None,) * n_regions, (None,) * n_regions, (None,) * n_regions,
                          None, missing)
    reference = regions[index]
    ref_median = reference.stats["r2star_median"]
    ratios, sirs, notes = [], [], []
    for n, region in enumerate(regions):
        ratio = sir = note = None
        if n != index:
            if region.stats["r2star_median"] is not None and ref_median:
                ratio = region.stats["r2star_median"] / ref_median
            if s.signal is not None and region.stats["n_voxels"] > 0:
                sir = signal_intensity_ratio(s.signal, masks[region.name], masks[reference.name],
                                             s.echo_times_ms)["ratio"]
        if region.organ.organ in DESCRIPTIVE_ONLY and region.organ.organ not in (
                "skeletal muscle", "lesion") and ratio is not None:
            note = f"descriptive: R2* {ratio:.2f} x the {reference.name} reference"
        ratios.append(ratio)
        sirs.append(sir)
        notes.append(note)
    sir_block = None
    if s.signal is not None:
        sir_block = {"reference": reference.name, "reference_organ": reference_organ,
                     "echo_times_ms": [float(t) for t in s.echo_times_ms],
                     "regions": {r.name: v for r, v in zip(regions, sirs) if v is not None},
                     "note": ("mean signal of the region / mean signal of the reference per echo "
                              "(Gandon 2004, Lancet 363:357 uses liver / paraspinal muscle)")}
    return _Reference(index, tuple(ratios), tuple(sirs), tuple(notes), sir_block, None)


def _lesions(rows: list[dict], lesion_coverage_factor: float) -> _Lesions:
    """Each lesion region against the largest liver region (``regions.compare_lesion``)."""
    livers = [r for r in rows if r["organ"] == "liver" and r["n_included"] > 0]
    background = max(livers, key=lambda r: r["n_included"]) if livers else None
    entries, readings, notes = [], {}, {}
    for n, row in enumerate(rows):
        if row["organ"] != "lesion":
            continue
        if background is None:
            notes[n] = "no liver region: the lesion cannot be compared with background liver"
            entries.append({"lesion": row["name"], "background": None,
                            "text": "no liver region segmented: no comparison"})
        elif row["n_included"] == 0:
            entries.append({"lesion": row["name"], "background": background["name"],
                            "text": "lesion has no valid R2* (empty or failed): no comparison"})
        else:
            cmp = compare_lesion(row, background, lesion_coverage_factor)
            readings[n] = cmp["reading"]
            entries.append({"lesion": row["name"], "background": background["name"], **cmp})
    return _Lesions(tuple(entries), readings, notes)


def _calibration_block(s: _Settings, regions: list[_Region], fit_method) -> CalibrationBlock:
    """summary["calibration"]: the calibration, whether and how it was applied, and why not."""
    cal = s.calibration
    warnings = []
    if cal.r2star_fit_method and fit_method and fit_method != cal.r2star_fit_method:
        warnings.append(f"{cal.label} was calibrated with {cal.r2star_fit_method} R2*; these maps "
                        f"used {fit_method!r}, which may differ at high iron.")
    note, conversion = None, None
    for lic in (r.lic for r in regions):
        if lic.refused:
            note = lic.note
        if lic.applied:
            conversion = lic.conversion or conversion
            warnings.extend(w for w in lic.warnings if w not in warnings)
    if note is None and not any(r.organ.organ == "liver" for r in regions):
        note = "no region recognised as liver: no LIC"
    return {"name": cal.name, "label": cal.label, "citation": cal.citation, "doi": cal.doi,
            "equation": cal.equation, "field_strength_t": cal.field_strength_t,
            "valid_lic_range_mg_per_g": (list(cal.valid_lic_range_mg_per_g)
                                         if cal.valid_lic_range_mg_per_g else None),
            "reference_standard": cal.reference_standard, "default": not s.explicit_calibration,
            "applied": any(r.lic.applied for r in regions), "conversion": conversion,
            "warnings": warnings, "note": note,
            "applied_to": "median voxel R2* of each liver region"}


def _ordered(row: dict) -> RegionRow:
    out = {k: row.get(k) for k in _ROW_FIRST}
    out.update({k: v for k, v in row.items() if k not in out})
    return out


def summarize(fit_result, labels, label_names, field_strength_t, calibration=None, signal=None,
              echo_times_ms=None, *, voxel_volume_ml: float | None = None, organs=None,
              terminology=None, convert_field: bool = False,
              min_quality: float = DEFAULT_MIN_QUALITY, roi_method: str = DEFAULT_ROI_METHOD,
              reference_organ: str = DEFAULT_REFERENCE_ORGAN,
              lesion_coverage_factor: float = LESION_COVERAGE_FACTOR,
              ijk_to_ras=None, complex_signal=None, focal=None) -> Summary:
    """Per-region statistics, LIC, grades, lesion contrast and the iron distribution pattern.

    Parameters
    ----------
    fit_result : RelaxometryFit
        Maps r2star (1/s), t2star (ms), quality, uncertainty, status, shape (k, j, i).
    labels : int ndarray, shape (k, j, i)
        Regions on the map grid; 0 is background.
    label_names : dict of int to str
        Label value to name; the organ is recognised from the name.
    field_strength_t : float or None
        Field strength in T; None when unknown (then no LIC and no grades).
    calibration : str or Calibration, optional
        LIC calibration (None: the `IronMapping.calibration` default).
    signal : ndarray, shape (n_echoes, k, j, i), or MultiEchoImage, optional
        Magnitudes for ROI-averaged fits and signal intensity ratios.
    echo_times_ms : ndarray, shape (n_echoes,), optional
        Their echo times in ms.
    voxel_volume_ml : float, optional
        Volume of one voxel in mL; taken from a MultiEchoImage signal if not given.
    organs : dict, optional
        {label value or name: organ} overrides (an organ of organs.ORGANS, or "none").
    terminology : dict, optional
        {label value or name: Slicer TerminologyEntry tag or SNOMED CT code}.
    convert_field : bool
        Allow converting R2* to the calibration's field strength (adds a warning).
    min_quality : float
        Voxels with fit R^2 below this are excluded (default 0: failed fits only).
    roi_method : str
        "noise-corrected" (default: mean squared signal with the noise floor, unbiased at high
        iron; the heart is graded on it) or "truncation" (CMRtools practice).
    reference_organ : str
        Reference region for ratios and signal intensity ratios.
    lesion_coverage_factor : float
        k in |lesion - liver| > k x combined uncertainty.
    ijk_to_ras : ndarray, shape (4, 4), optional
        Geometry for focal-finding centroids in RAS mm; taken from a MultiEchoImage signal if
        not given.
    complex_signal : ndarray or dict, optional
        Complex echoes, or the loaders' complex_components (field-shift sign of dark foci).
    focal : dict, FocalOptions or False, optional
        Options of the focal analysis (`IronMapping.focal`); False skips it.

    Returns
    -------
    Summary
        A JSON-able dict (see :class:`Summary`, :class:`RegionRow`).

    Raises
    ------
    InputError
        When fit_result is not a fit result.
    GeometryError
        When labels (or signal) are not on the map grid.
    CalibrationError
        When an explicitly chosen calibration does not fit the field strength (see
        `IronMapping.calibration`).
    """
    if not hasattr(fit_result, "r2star") or not hasattr(fit_result, "status"):
        raise InputError("fit_result must be a RelaxometryFit (from IronMapping.relaxometry.fit).")
    spatial = np.shape(fit_result.r2star)
    regions_in = label_masks(labels, label_names, spatial)
    signal_arr, te, image_volume, image_field, notes = _signal_inputs(
        signal, echo_times_ms, fit_result, spatial)
    settings, more_notes = _settings(
        fit_result, field_strength_t, calibration, convert_field, roi_method, min_quality,
        image_volume if voxel_volume_ml is None else voxel_volume_ml, signal_arr, te, image_field)
    notes += more_notes

    regions = [_region_row(fit_result, value, name, mask, settings, organs, terminology)
               for value, name, mask in regions_in]
    reference = _reference_ratios(regions, reference_organ, settings)
    if reference.missing_note:
        notes.append(reference.missing_note)
    rows = []
    for n, region in enumerate(regions):
        row = region.fields()
        row["reference_ratio_r2star"] = reference.ratio_r2star[n]
        row["sir_to_reference"] = reference.sir[n]
        if reference.notes[n]:
            row["notes"].append(reference.notes[n])
        rows.append(row)
    lesions = _lesions(rows, lesion_coverage_factor)
    for n, reading in lesions.readings.items():
        rows[n]["lesion_reading"] = reading
    for n, note in lesions.notes.items():
        rows[n]["notes"].append(note)
    cal_block = _calibration_block(settings, regions, getattr(fit_result, "method", None))

    field_t = settings.field_strength_t
    pattern = classify_pattern(rows, field_t,
                               unassessable=None if settings.gradable else NOT_GRADABLE_REASON)
    pattern["pancreas_spleen_ratio"] = pattern["nh_support"]["pancreas_spleen_r2star_ratio"]
    # ratios between organs (R2*), for the report
    ratios = [{"ratio": key, "r2star_ratio": value}
              for key, value in pattern["nh_support"]["ratios_r2star"].items()]
    warnings_out = list(cal_block["warnings"])
    for w in getattr(fit_result, "warnings", []) or []:
        if w not in warnings_out:
            warnings_out.append(str(w))

    summary = {
        "regions": [_ordered(row) for row in rows],
        "pattern": pattern,
        "calibration": cal_block,
        "field_strength_t": field_t,
        "field_strength_known": settings.field_known,
        "method": getattr(fit_result, "method", None),
        "quantity": settings.quantity,
        "fit": fit_result.provenance() if hasattr(fit_result, "provenance") else {},
        "roi_fit_method": roi_method if signal_arr is not None else None,
        "min_quality": float(min_quality),
        "reference_region": None if reference.index is None else regions[reference.index].name,
        "lesions": list(lesions.entries),
        "sir": reference.sir_block,
        "ratios": ratios,
        "grading_sources": sorted({s.source for s in GRADING_SCHEMES}),
        "units": UNITS,
        "warnings": warnings_out,
        "notes": notes,
        "software": f"IronMapping {__version__}",
        "research_use": RESEARCH_USE_STATEMENT,
    }
    masks = {r.name: r.mask for r in regions}
    summary.update(_focal_block(fit_result, summary, masks, signal, signal_arr, te,
                                settings.voxel_volume_ml, ijk_to_ras, complex_signal, focal))
    return _clean(summary)


def _focal_block(fit_result, summary, masks, signal, signal_arr, te, voxel_volume_ml,
                 ijk_to_ras, complex_signal, options) -> dict:
    """{"focal_findings": [...], "focal_analysis": {...}}; matches user-drawn lesions with the
    findings that overlap them (adds "focal_finding" to summary["lesions"] entries)."""
    from .focal import find_focal_findings, match_lesions

    if options is False:
        return {"focal_findings": [], "focal_analysis": {"notes": ["focal analysis not run (focal=False)"]}}
    if ijk_to_ras is None:
        ijk_to_ras = getattr(signal, "ijk_to_ras", None)
    if complex_signal is None:
        complex_signal = (getattr(signal, "metadata", None) or {}).get("complex_components")
    rows = summary["regions"]
    regions = [(r["label_value"], r["name"], r["organ"], masks[r["name"]]) for r in rows
               if r["name"] in masks]
    out = find_focal_findings(fit_result, regions, voxel_volume_ml, ijk_to_ras, options,
                              complex_signal=complex_signal,
                              echo_times_ms=te if te is not None else getattr(fit_result, "echo_times_ms", None),
                              field_strength_t=summary.get("field_strength_t"), signal=signal_arr)
    findings = out.pop("findings")
    lesion_names = {r["name"] for r in rows if r["organ"] == "lesion"}
    matches = match_lesions(findings, {n: masks[n] for n in lesion_names if n in masks},
                            np.shape(fit_result.r2star))
    for entry in summary.get("lesions") or []:
        match = matches.get(entry.get("lesion"))
        entry["focal_finding"] = match
        if entry.get("text") and entry.get("lesion") in matches:
            entry["text"] += (f" Found on the map as focal finding {match['finding']} ({match['kind']}, "
                              f"{100 * match['overlap_fraction_of_lesion']:.0f} % of the lesion)."
                              if match else " Not found as a focal finding on the map.")
    by_region = {o["region"]: o for o in out["organs"]}
    for row in rows:
        organ = by_region.get(row["name"])
        if organ is not None:
            row["focal_findings_n"] = organ["n_findings"]
            row["heterogeneity_robust_cv"] = organ["heterogeneity_robust_cv"]
            row["heterogeneity_excess_cv"] = organ["heterogeneity_excess_cv"]
    return {"focal_findings": findings, "focal_analysis": out}


# ------------------------------------------------------------------------------- outputs

#: (column label, summary key) of the region table, from :mod:`IronMapping.quantities`.
TABLE_COLUMNS = tuple((q.label, q.key) for q in REGION_QUANTITIES)
#: Text columns after the quantities.
EXTRA_COLUMNS = ("ROI fit method", "LIC calibration", "Lesion reading", "Notes")


def _sentence_join(notes) -> str:
    """Notes joined with "; " without doubled punctuation ("adults.; ...")."""
    parts = [str(n).strip().rstrip(".;").strip() for n in notes if n and str(n).strip()]
    return "; ".join(dict.fromkeys(p for p in parts if p))


def table_headers(summary: dict) -> list[str]:
    """Column labels of :func:`regions_table` (R2/T2 wording for spin-echo summaries).

    Parameters
    ----------
    summary : Summary

    Returns
    -------
    list of str
    """
    relaxation = summary.get("quantity") or "T2*"
    return [label_for(q, relaxation) for q in REGION_QUANTITIES] + list(EXTRA_COLUMNS)


def regions_table(summary: dict) -> list[dict]:
    """One row per region with units in the column names (for CSV, Slicer tables, reports).

    Numbers are rounded to their display precision (:mod:`IronMapping.quantities`: R2* 0.1
    1/s, T2* 0.01 ms, LIC 0.01 mg/g, volume 0.1 mL; shares in %); summary.json keeps full
    precision. Spin-echo summaries (quantity "T2") say R2/T2 in the labels. Adds
    "ROI fit method", "LIC calibration", "Lesion reading" and "Notes" columns.

    Parameters
    ----------
    summary : Summary

    Returns
    -------
    list of dict
        Keyed by :func:`table_headers`.
    """
    cal = summary.get("calibration") or {}
    relaxation = summary.get("quantity") or "T2*"
    lesion_reading = {l.get("lesion"): l.get("reading") for l in summary.get("lesions") or []}
    rows = []
    for r in summary.get("regions") or []:
        row = {label_for(q, relaxation): display_value(q.key, r.get(q.key))
               for q in REGION_QUANTITIES}
        rf = r.get("roi_fit") or {}
        row["ROI fit method"] = rf.get("method")
        row["LIC calibration"] = (f"{cal.get('label')} (doi:{cal.get('doi')})"
                                  if r.get("lic_mg_per_g") is not None else None)
        row["Lesion reading"] = lesion_reading.get(r.get("name"))
        notes = [n for n in (r.get("notes") or []) if n]
        for key in ("lic_note", "grade_note"):
            if r.get(key) and r[key] not in notes:
                notes.append(r[key])
        row["Notes"] = _sentence_join(notes)
        rows.append(row)
    return rows


def write_regions_csv(summary: dict, path) -> Path:
    """Write ``regions_table(summary)`` as CSV (UTF-8, header with units).

    Parameters
    ----------
    summary : Summary
    path : str or Path

    Returns
    -------
    Path

    Raises
    ------
    InputError, OutputError
        As :func:`IronMapping.fileio.write_text`.
    """
    return write_csv(path, table_headers(summary), regions_table(summary))


def write_summary_json(summary: dict, path) -> Path:
    """Write the summary as strict JSON (no NaN).

    Parameters
    ----------
    summary : Summary
    path : str or Path

    Returns
    -------
    Path

    Raises
    ------
    InputError, OutputError
        As :func:`IronMapping.fileio.write_text`.
    """
    return write_json(path, summary)
