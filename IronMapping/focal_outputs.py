"""Focal findings handed out: masks as run-length codes, a label map, the table and its CSV.

A finding's voxels travel in summary.json as ``mask_runs`` (`mask_runs`, read back with
`mask_from_runs`); `findings_table` gives one row per finding with units in the column names
(focal_findings.csv, the Slicer table, the report).
"""

from __future__ import annotations

import numpy as np


def mask_runs(mask: np.ndarray) -> list:
    """Run-length code of a boolean mask.

    Parameters
    ----------
    mask : bool ndarray, any shape

    Returns
    -------
    list of [int, int]
        [start, length] of C-order flat indices.
    """
    flat = np.flatnonzero(np.ravel(mask))
    if flat.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(flat) != 1)
    starts = np.concatenate([[flat[0]], flat[breaks + 1]])
    ends = np.concatenate([flat[breaks], [flat[-1]]])
    return [[int(s), int(e - s + 1)] for s, e in zip(starts, ends)]


def mask_from_runs(runs, shape) -> np.ndarray:
    """Boolean mask from :func:`mask_runs` output.

    Parameters
    ----------
    runs : list of [int, int] or None
    shape : tuple of int
        (k, j, i).

    Returns
    -------
    bool ndarray, shape ``shape``
    """
    flat = np.zeros(int(np.prod(shape)), bool)
    for start, length in runs or ():
        flat[int(start):int(start) + int(length)] = True
    return flat.reshape(tuple(shape))


def findings_label_map(findings, shape) -> np.ndarray:
    """Label map of findings: finding n (its "label_value", else 1-based) where it lies.

    Parameters
    ----------
    findings : list of dict
        With "mask_runs".
    shape : tuple of int
        (k, j, i).

    Returns
    -------
    uint16 ndarray, shape (k, j, i)
        0 outside every finding.
    """
    out = np.zeros(tuple(shape), np.uint16)
    for n, finding in enumerate(findings, start=1):
        out[mask_from_runs(finding.get("mask_runs"), shape)] = int(finding.get("label_value", n))
    return out

FOCAL_TABLE_COLUMNS = (
    ("Finding", "id"), ("Region", "region"), ("Kind", "kind"), ("Volume (mL)", "volume_ml"),
    ("Voxels (n)", "n_voxels"), ("R2* median (1/s)", "r2star_median"),
    ("Background R2* median (1/s)", "background_r2star_median"),
    ("Difference (1/s)", "difference_r2star"), ("Ratio to background", "ratio_r2star"),
    ("Slice (k)", "slice_k"),
)


def findings_table(findings: list) -> list[dict]:
    """One row per finding, units in the column names (CSV, Slicer table, report).

    Parameters
    ----------
    findings : list of dict

    Returns
    -------
    list of dict
        Keyed by `findings_columns`.
    """
    rows = []
    for f in findings or []:
        row = {header: f.get(key) for header, key in FOCAL_TABLE_COLUMNS}
        ras = f.get("centroid_ras")
        for n, axis in enumerate(("R", "A", "S")):
            row[f"Centroid {axis} (mm)"] = None if ras is None else float(ras[n])
        shift = f.get("field_shift") or {}
        row["Field shift"] = shift.get("sign") or (shift.get("reason") if shift else None)
        row["Confidence"] = f.get("confidence")
        row["Matched lesion"] = f.get("matched_lesion")
        row["Reading"] = f.get("reading")
        rows.append(row)
    return rows


def findings_columns() -> list[str]:
    """Column labels of `findings_table`, in order."""
    return ([h for h, _ in FOCAL_TABLE_COLUMNS] + [f"Centroid {a} (mm)" for a in "RAS"]
            + ["Field shift", "Confidence", "Matched lesion", "Reading"])


def write_focal_csv(summary: dict, path):
    """Write focal_findings.csv from summary["focal_findings"] (header only when none).

    Parameters
    ----------
    summary : dict
    path : str or Path

    Returns
    -------
    Path

    Raises
    ------
    InputError, OutputError
        As :func:`IronMapping.fileio.write_text`.
    """
    from .fileio import write_csv

    return write_csv(path, findings_columns(), findings_table(summary.get("focal_findings") or []))
