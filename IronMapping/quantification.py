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

The summary is made in parts (their public names are importable from here too):

- :mod:`IronMapping.summary_schema`: the contract (``Summary``, ``RegionRow``,
  ``CalibrationBlock``);
- :mod:`IronMapping.region_summary`: each region's row (statistics, ROI fit, LIC, grade);
- :mod:`IronMapping.region_comparisons`: ratios to the reference region, lesions vs liver;
- :mod:`IronMapping.summary_outputs`: ``regions_table``, regions.csv and summary.json.
"""

from __future__ import annotations

import numpy as np

from . import RESEARCH_USE_STATEMENT, __version__
from .errors import GeometryError, InputError
from .fileio import json_safe
from .grading import GRADING_SCHEMES
from .lesion_contrast import LESION_COVERAGE_FACTOR
from .patterns import classify_pattern
from .quantities import SUMMARY_UNITS
from .region_comparisons import _lesions, _reference_ratios
from .region_masks import label_masks
from .region_summary import NOT_GRADABLE_REASON, _Region, _region_row, _settings, _Settings
from .regions import DEFAULT_MIN_QUALITY
from .roi_signal import DEFAULT_ROI_METHOD
from .summary_outputs import (EXTRA_COLUMNS, TABLE_COLUMNS, regions_table, table_headers,
                              write_regions_csv, write_summary_json)
from .summary_schema import CalibrationBlock, RegionRow, Summary

__all__ = [
    "DEFAULT_REFERENCE_ORGAN", "UNITS", "NOT_GRADABLE_REASON", "summarize",
    # summary_schema
    "CalibrationBlock", "RegionRow", "Summary",
    # summary_outputs
    "TABLE_COLUMNS", "EXTRA_COLUMNS", "table_headers", "regions_table", "write_regions_csv",
    "write_summary_json",
]

DEFAULT_REFERENCE_ORGAN = "skeletal muscle"

#: Units of the summary's numeric keys (summary["units"]), from IronMapping.quantities.
UNITS = SUMMARY_UNITS

_ROW_FIRST = ("name", "label_value", "organ", "organ_source", "n_voxels", "volume_ml",
              "r2star_median", "r2star_lower_bound", "r2star_censored_fraction", "r2star_mean",
              "r2star_sd", "t2star_median", "r2star_roi_fit", "lic_mg_per_g", "lic_lower_bound",
              "grade")


#: JSON-safe copy (numpy scalars to Python, NaN/inf to None, tuples to lists); see fileio.
_clean = json_safe


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
# described by the TypedDicts of IronMapping.summary_schema).


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

