"""The summary's contract: the keys of summary.json, its regions and its calibration block.

What :func:`IronMapping.quantification.summarize` returns, described as TypedDicts (the
contract of summary.json and of the Slicer table attributes). R2* in 1/s, T2* in ms, volume in
mL, LIC in mg Fe/g dry weight.
"""

from __future__ import annotations

from typing import TypedDict


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

