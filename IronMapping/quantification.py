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

from pathlib import Path

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


def summarize(fit_result, labels, label_names, field_strength_t, calibration=None, signal=None,
              echo_times_ms=None, *, voxel_volume_ml: float | None = None, organs=None,
              terminology=None, convert_field: bool = False,
              min_quality: float = DEFAULT_MIN_QUALITY, roi_method: str = DEFAULT_ROI_METHOD,
              reference_organ: str = DEFAULT_REFERENCE_ORGAN,
              lesion_coverage_factor: float = LESION_COVERAGE_FACTOR,
              ijk_to_ras=None, complex_signal=None, focal=None) -> dict:
    """Per-region statistics, LIC, grades, lesion contrast and the iron distribution pattern.

    Parameters
    ----------
    fit_result : RelaxometryFit (maps r2star 1/s, t2star ms, quality, uncertainty, status).
    labels : integer array on the map grid (k, j, i); 0 is background.
    label_names : {label value: name}; the organ is recognised from the name.
    field_strength_t : tesla, or None when unknown (then no LIC and no grades).
    calibration : LIC calibration name or Calibration (None: IronMapping.calibration default).
    signal : (n_echoes, k, j, i) magnitudes (or a MultiEchoImage) for ROI-averaged fits and
        signal intensity ratios; echo_times_ms : their echo times in ms.
    voxel_volume_ml : volume of one voxel (mL); taken from a MultiEchoImage signal if not given.
    organs : {label value or name: organ} overrides (an organ of organs.ORGANS, or "none").
    terminology : {label value or name: Slicer TerminologyEntry tag or SNOMED CT code}.
    convert_field : allow converting R2* to the calibration's field strength (adds a warning).
    min_quality : voxels with fit R^2 below this are excluded (default 0: failed fits only).
    roi_method : "noise-corrected" (default: mean squared signal with the noise floor, unbiased
        at high iron; the heart is graded on it) or "truncation" (CMRtools practice).
    reference_organ : reference region for ratios and signal intensity ratios.
    lesion_coverage_factor : k in |lesion - liver| > k x combined uncertainty.
    ijk_to_ras, complex_signal, focal : for summary["focal_findings"] (IronMapping.focal):
        geometry (centroids in RAS; taken from a MultiEchoImage signal if not given), complex
        echoes or the loaders' complex_components (field-shift sign of dark foci), and the
        FocalOptions (a dict or FocalOptions; False skips the analysis).

    Raises GeometryError when labels (or signal) are not on the map grid, CalibrationError when
    an explicitly chosen calibration does not fit the field strength (see module docstring).
    """
    if not hasattr(fit_result, "r2star") or not hasattr(fit_result, "status"):
        raise InputError("fit_result must be a RelaxometryFit (from IronMapping.relaxometry.fit).")
    spatial = np.shape(fit_result.r2star)
    regions_in = label_masks(labels, label_names, spatial)
    signal_arr, te, image_volume, image_field, notes = _signal_inputs(
        signal, echo_times_ms, fit_result, spatial)
    if voxel_volume_ml is None:
        voxel_volume_ml = image_volume
    warnings_out: list[str] = []
    if voxel_volume_ml is None:
        notes.append("voxel volume unknown: volume_ml is null (pass voxel_volume_ml or a MultiEchoImage)")

    field_known = field_strength_t is not None
    if field_known:
        field_strength_t = float(field_strength_t)
        if nominal_field(field_strength_t) not in (1.5, 3.0):
            notes.append(f"field strength {field_strength_t:g} T: IronMapping has calibrations and "
                         "cut-offs for 1.5 T and 3 T only; LIC and grades are not given")
    else:
        hint = "" if image_field is None else f" (the image metadata says {image_field:g} T)"
        notes.append("field strength unknown" + hint + ": LIC and grades are not computed, because "
                     "R2* calibrations and cut-offs differ between 1.5 T and 3 T. Pass "
                     "field_strength_t to get them.")

    explicit_calibration = calibration is not None
    cal = get_calibration(calibration)
    cal_block = {"name": cal.name, "label": cal.label, "citation": cal.citation, "doi": cal.doi,
                 "equation": cal.equation, "field_strength_t": cal.field_strength_t,
                 "valid_lic_range_mg_per_g": (list(cal.valid_lic_range_mg_per_g)
                                              if cal.valid_lic_range_mg_per_g else None),
                 "reference_standard": cal.reference_standard, "default": not explicit_calibration,
                 "applied": False, "conversion": None, "warnings": [], "note": None,
                 "applied_to": "median voxel R2* of each liver region"}
    if cal.r2star_fit_method and getattr(fit_result, "method", None) \
            and fit_result.method != cal.r2star_fit_method:
        cal_block["warnings"].append(
            f"{cal.label} was calibrated with {cal.r2star_fit_method} R2*; these maps used "
            f"{fit_result.method!r}, which may differ at high iron.")

    noise_sigma = getattr(fit_result, "noise_sigma", None)
    coils = getattr(fit_result, "coils", None)
    quantity = getattr(fit_result, "quantity", "T2*")

    # Spin-echo T2 maps: R2*-based calibrations and T2* cut-offs do not apply.
    gradable = quantity == "T2*"
    not_gradable_reason = ("these are T2 maps (spin echo); the LIC calibrations and grade "
                           "cut-offs are for R2*/T2* from gradient echo, so none is applied")
    if not gradable:
        notes.append(not_gradable_reason)

    rows = []
    masks = {}
    for value, name, mask in regions_in:
        override = _lookup(organs, value, name)
        match = recognise_organ(name, _lookup(terminology, value, name), override)
        rf = None
        if signal_arr is not None and mask.any():
            rf = roi_fit(signal_arr, mask, te, method=roi_method, noise_sigma=noise_sigma,
                         coils=coils, quantity=quantity)
        # The ROI-averaged fit gives the region's tissue amplitude, which sets the R2* the
        # echoes can measure (voxels beyond it are censored, see regions.region_statistics).
        stats = region_statistics(fit_result, mask, voxel_volume_ml, min_quality,
                                  signal=signal_arr, reference_s0=_roi_s0(rf))
        row = {"name": name, "label_value": int(value), "organ": match.organ,
               "organ_source": match.source, "organ_matched": match.matched}
        row.update(stats)
        row["notes"] = list(stats["notes"])
        if match.organ is None:
            row["notes"].append("organ not recognised from the region name: statistics only, no "
                                "grade (name the region after its organ, e.g. 'liver')")
        row["r2star_roi_fit"] = None
        row["t2star_roi_fit"] = None
        row["roi_fit"] = None
        if rf is not None:
            row["roi_fit"] = rf
            row["r2star_roi_fit"] = rf["r2star"]
            row["t2star_roi_fit"] = rf["t2star"]
            row["notes"].extend(rf["notes"])
            bound = stats["r2star_lower_bound"]
            if rf["r2star"] is not None and bound is not None and rf["r2star"] < bound:
                row["notes"].append(
                    f"the ROI-averaged fit ({rf['r2star']:.0f} 1/s) is below the voxels' lower bound "
                    f"({bound:.0f} 1/s): the mean signal is dominated by the slower voxels, or its "
                    "decay was over before the first echo; read the lower bound")
        # A median beyond what the echoes can measure is replaced by its lower bound.
        r2_value, bounded = stats["r2star_median"], False
        if r2_value is None and stats["r2star_lower_bound"] is not None:
            r2_value, bounded = stats["r2star_lower_bound"], True
        # LIC: liver only (liver calibrations must not be applied to spleen or other organs).
        row["lic_mg_per_g"] = None
        row["lic_umol_per_g"] = None
        row["lic_lower_bound"] = None
        row["lic_note"] = None
        if match.organ == "liver" and r2_value is not None and not gradable:
            row["lic_note"] = f"LIC not computed: {not_gradable_reason}"
            cal_block["note"] = row["lic_note"]
        elif match.organ == "liver" and r2_value is not None:
            try:
                estimate = liver_iron_lower_bound if bounded else liver_iron_concentration
                lic, info = estimate(r2_value, field_strength_t, cal, convert_field=convert_field)
            except CalibrationError as exc:
                mismatch = field_known and nominal_field(field_strength_t) != nominal_field(cal.field_strength_t)
                if explicit_calibration and mismatch:
                    raise
                row["lic_note"] = f"LIC not computed: {exc}"
                cal_block["note"] = row["lic_note"]
            else:
                lic = float(lic) if np.isfinite(lic) else None
                if bounded:
                    row["lic_lower_bound"] = lic
                    row["lic_note"] = (f"LIC above {lic:.1f} mg Fe/g dry weight (from R2* above "
                                       f"{r2_value:.0f} 1/s; {cal.label}: {cal.equation})"
                                       if lic is not None else None)
                else:
                    row["lic_mg_per_g"] = lic
                    row["lic_umol_per_g"] = lic * MG_PER_G_TO_UMOL_PER_G if lic is not None else None
                    row["lic_note"] = f"{cal.label}: {cal.equation}"
                cal_block["applied"] = True
                cal_block["conversion"] = info["conversion"] or cal_block["conversion"]
                for w in info["warnings"]:
                    if w not in cal_block["warnings"]:
                        cal_block["warnings"].append(w)
        # Grade: the heart on its ROI-averaged T2* (cardiac standard), others on the median.
        t2_for_grade, basis = stats["t2star_median"], "median voxel T2*"
        if bounded:
            t2_for_grade, basis = stats["t2star_upper_bound"], "upper bound of the median voxel T2*"
        if match.organ == "heart" and row["t2star_roi_fit"] is not None:
            t2_for_grade, basis = row["t2star_roi_fit"], f"ROI-averaged fit T2* ({row['roi_fit']['method']})"
        elif match.organ == "liver":
            basis = "lower bound of the median voxel R2*" if bounded else "median voxel R2*"
        g = grade_region(match.organ, field_strength_t if gradable else None,
                         r2_value, t2_for_grade,
                         row["lic_lower_bound"] if bounded else row["lic_mg_per_g"], basis=basis)
        if bounded and g["grade"] is not None and "bound" in basis:
            _grade_from_bound(g, match.organ, field_strength_t)
        if not gradable and match.organ is not None:
            g["notes"] = [not_gradable_reason]
        row["grade"] = g["grade"]
        row["iron_loaded"] = g["iron_loaded"]
        row["grade_criterion"] = g["criterion"]
        row["grade_basis"] = g["basis"] if g["grade"] else None
        row["grade_source"] = g["source"]
        row["grade_reference"] = g["reference"]
        row["grade_note"] = "; ".join(g["notes"]) or None
        if "lic_grade" in g:
            row["lic_grade"] = g["lic_grade"]
        rows.append(row)
        masks[name] = mask

    # Reference region (skeletal muscle by default) for ratios and SIR.
    ref_rows = [r for r in rows if r["organ"] == reference_organ and r["n_included"] > 0]
    reference = max(ref_rows, key=lambda r: r["n_included"]) if ref_rows else None
    sir = None
    for row in rows:
        row["reference_ratio_r2star"] = None
        row["sir_to_reference"] = None
        if reference is None or row is reference:
            continue
        if row["r2star_median"] is not None and reference["r2star_median"]:
            row["reference_ratio_r2star"] = row["r2star_median"] / reference["r2star_median"]
        if signal_arr is not None and row["n_voxels"] > 0:
            s = signal_intensity_ratio(signal_arr, masks[row["name"]], masks[reference["name"]], te)
            row["sir_to_reference"] = s["ratio"]
    if reference is None:
        notes.append(f"no {reference_organ} region: no reference ratios or signal intensity ratios "
                     f"(descriptive organs such as thyroid are compared with it)")
    elif signal_arr is not None:
        sir = {"reference": reference["name"], "reference_organ": reference_organ,
               "echo_times_ms": [float(t) for t in te],
               "regions": {r["name"]: r["sir_to_reference"] for r in rows
                           if r["sir_to_reference"] is not None},
               "note": ("mean signal of the region / mean signal of the reference per echo "
                        "(Gandon 2004, Lancet 363:357 uses liver / paraspinal muscle)")}
    for row in rows:
        if row["organ"] in DESCRIPTIVE_ONLY and row["organ"] not in ("skeletal muscle", "lesion") \
                and row["reference_ratio_r2star"] is not None:
            row["notes"].append(f"descriptive: R2* {row['reference_ratio_r2star']:.2f} x the "
                                f"{reference['name']} reference")

    # Lesions against the largest liver region.
    lesions = []
    livers = [r for r in rows if r["organ"] == "liver" and r["n_included"] > 0]
    background = max(livers, key=lambda r: r["n_included"]) if livers else None
    for row in rows:
        if row["organ"] != "lesion":
            continue
        if background is None:
            row["notes"].append("no liver region: the lesion cannot be compared with background liver")
            lesions.append({"lesion": row["name"], "background": None,
                            "text": "no liver region segmented: no comparison"})
            continue
        if row["n_included"] == 0:
            lesions.append({"lesion": row["name"], "background": background["name"],
                            "text": "lesion has no valid R2* (empty or failed): no comparison"})
            continue
        cmp = compare_lesion(row, background, lesion_coverage_factor)
        row["lesion_reading"] = cmp["reading"]
        lesions.append({"lesion": row["name"], "background": background["name"], **cmp})

    if not any(r["organ"] == "liver" for r in rows) and cal_block["note"] is None:
        cal_block["note"] = "no region recognised as liver: no LIC"
    pattern = classify_pattern(rows, field_strength_t if field_known else None,
                               unassessable=None if gradable else not_gradable_reason)
    pattern["pancreas_spleen_ratio"] = pattern["nh_support"]["pancreas_spleen_r2star_ratio"]
    # ratios between organs (R2*), for the report
    ratios = [{"ratio": key, "r2star_ratio": value}
              for key, value in pattern["nh_support"]["ratios_r2star"].items()]

    for w in cal_block["warnings"]:
        warnings_out.append(w)
    for w in getattr(fit_result, "warnings", []) or []:
        if w not in warnings_out:
            warnings_out.append(str(w))

    regions_out = []
    for row in rows:
        ordered = {k: row.get(k) for k in _ROW_FIRST}
        ordered.update({k: v for k, v in row.items() if k not in ordered})
        regions_out.append(ordered)

    provenance = fit_result.provenance() if hasattr(fit_result, "provenance") else {}
    summary = {
        "regions": regions_out,
        "pattern": pattern,
        "calibration": cal_block,
        "field_strength_t": field_strength_t if field_known else None,
        "field_strength_known": field_known,
        "method": getattr(fit_result, "method", None),
        "quantity": quantity,
        "fit": provenance,
        "roi_fit_method": roi_method if signal_arr is not None else None,
        "min_quality": float(min_quality),
        "reference_region": None if reference is None else reference["name"],
        "lesions": lesions,
        "sir": sir,
        "ratios": ratios,
        "grading_sources": sorted({s.source for s in GRADING_SCHEMES}),
        "units": UNITS,
        "warnings": warnings_out,
        "notes": notes,
        "software": f"IronMapping {__version__}",
        "research_use": RESEARCH_USE_STATEMENT,
    }
    summary.update(_focal_block(fit_result, summary, masks, signal, signal_arr, te,
                                voxel_volume_ml, ijk_to_ras, complex_signal, focal))
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
    """Column labels of :func:`regions_table` (R2/T2 wording for spin-echo summaries)."""
    relaxation = summary.get("quantity") or "T2*"
    return [label_for(q, relaxation) for q in REGION_QUANTITIES] + list(EXTRA_COLUMNS)


def regions_table(summary: dict) -> list[dict]:
    """One row per region with units in the column names (for CSV, Slicer tables, reports).

    Numbers are rounded to their display precision (:mod:`IronMapping.quantities`: R2* 0.1
    1/s, T2* 0.01 ms, LIC 0.01 mg/g, volume 0.1 mL; shares in %); summary.json keeps full
    precision. Spin-echo summaries (quantity "T2") say R2/T2 in the labels. Adds
    "ROI fit method", "LIC calibration", "Lesion reading" and "Notes" columns.
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
    """Write `regions_table(summary)` as CSV (UTF-8, header with units). Returns the path."""
    return write_csv(path, table_headers(summary), regions_table(summary))


def write_summary_json(summary: dict, path) -> Path:
    """Write the summary as strict JSON (no NaN). Returns the path."""
    return write_json(path, summary)
