"""The summary as files and tables: region rows with units (regions.csv, Slicer), summary.json.

    >>> rows = regions_table(summary)        # tidy rows, units in the column names
    >>> write_regions_csv(summary, "regions.csv"); write_summary_json(summary, "summary.json")
"""

from __future__ import annotations

from pathlib import Path

from .fileio import write_csv, write_json
from .quantities import REGION_QUANTITIES, display_value, label_for


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
