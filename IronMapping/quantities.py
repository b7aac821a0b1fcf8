"""The quantities IronMapping reports per region: one table for every place a person reads them.

Each entry says what a summary key holds: its column label (with the unit), the unit, the
precision the measurement supports for display, and the UCUM code of the unit (Unified Code
for Units of Measure, https://ucum.org, as DICOM SR and Slicer's Segment Statistics use).
regions.csv and the Slicer statistics table take their columns and rounding from here;
summary.json keeps full precision.

    >>> from IronMapping.quantities import REGION_QUANTITIES, display_value
    >>> display_value("r2star_median", 450.19834899902344)
    450.2

Display precision: R2* 0.1 1/s, T2* 0.01 ms, LIC 0.01 mg/g, volumes 0.1 mL; digits beyond
these are far below what repeated scans reproduce, so showing them only suggests a precision
the measurement does not have.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Quantity:
    """One reported quantity.

    key : summary key of a region (``summary["regions"][i][key]``).
    label : column label, the unit in brackets ("R2* median (1/s)").
    unit : unit as shown ("1/s", "ms", "mL", ...; "" for text and ratios).
    decimals : decimal places for display; None for text, 0 for counts.
    ucum : UCUM code of the unit ("s-1", "ms", "mL", ...; "" for text).
    scale : factor applied before display (0-1 fractions shown in percent).
    description : what the column holds, for tooltips.
    """

    key: str
    label: str
    unit: str
    decimals: int | None
    ucum: str
    scale: float = 1.0
    description: str = ""


def _q(key, label, unit, decimals, ucum, scale=1.0, description=""):
    return Quantity(key, label, unit, decimals, ucum, scale, description)


R2 = "R2* of the voxels included"
T2 = "T2* of the voxels included"

#: The region columns, in table order.
REGION_QUANTITIES: tuple[Quantity, ...] = (
    _q("name", "Region", "", None, "", description="segment or label name"),
    _q("label_value", "Label", "", 0, "", description="label value in the label map"),
    _q("organ", "Organ", "", None, "", description="organ recognised from the name or terminology"),
    _q("n_voxels", "Voxels (n)", "voxels", 0, "{voxels}", description="voxels in the region"),
    _q("volume_ml", "Volume (mL)", "mL", 1, "mL", description="region volume"),
    _q("r2star_median", "R2* median (1/s)", "1/s", 1, "s-1", description=f"median {R2}"),
    _q("r2star_mean", "R2* mean (1/s)", "1/s", 1, "s-1", description=f"mean {R2}"),
    _q("r2star_sd", "R2* SD (1/s)", "1/s", 1, "s-1", description=f"standard deviation of {R2}"),
    _q("r2star_iqr", "R2* IQR (1/s)", "1/s", 1, "s-1", description=f"interquartile range of {R2}"),
    _q("r2star_p5", "R2* P5 (1/s)", "1/s", 1, "s-1", description=f"5th percentile of {R2}"),
    _q("r2star_p95", "R2* P95 (1/s)", "1/s", 1, "s-1", description=f"95th percentile of {R2}"),
    _q("t2star_median", "T2* median (ms)", "ms", 2, "ms", description=f"median {T2}"),
    _q("t2star_mean", "T2* mean (ms)", "ms", 2, "ms", description=f"mean {T2}"),
    _q("t2star_sd", "T2* SD (ms)", "ms", 2, "ms", description=f"standard deviation of {T2}"),
    _q("t2star_iqr", "T2* IQR (ms)", "ms", 2, "ms", description=f"interquartile range of {T2}"),
    _q("t2star_p5", "T2* P5 (ms)", "ms", 2, "ms", description=f"5th percentile of {T2}"),
    _q("t2star_p95", "T2* P95 (ms)", "ms", 2, "ms", description=f"95th percentile of {T2}"),
    _q("excluded_fraction", "Excluded voxels (%)", "%", 1, "%", 100.0,
       "share of the region's voxels not fitted or below the quality threshold"),
    _q("r2star_censored_fraction", "Censored voxels (%)", "%", 1, "%", 100.0,
       "share of voxels whose signal reached the noise floor too early: R2* is only a lower bound"),
    _q("r2star_lower_bound", "R2* lower bound (1/s)", "1/s", 0, "s-1",
       description="R2* is at least this where the median cannot be measured"),
    _q("r2star_roi_fit", "R2* ROI fit (1/s)", "1/s", 1, "s-1",
       description="R2* of the region's mean decay (ROI-averaged fit)"),
    _q("t2star_roi_fit", "T2* ROI fit (ms)", "ms", 2, "ms",
       description="T2* of the region's mean decay (ROI-averaged fit)"),
    _q("lic_mg_per_g", "LIC (mg Fe/g dw)", "mg Fe/g dw", 2, "mg/g",
       description="liver iron concentration, mg iron per g dry weight"),
    _q("lic_umol_per_g", "LIC (umol Fe/g dw)", "umol Fe/g dw", 1, "umol/g",
       description="liver iron concentration, umol iron per g dry weight"),
    _q("lic_lower_bound", "LIC lower bound (mg Fe/g dw)", "mg Fe/g dw", 2, "mg/g",
       description="LIC is at least this where R2* is only a lower bound"),
    _q("grade", "Grade", "", None, "", description="published grade"),
    _q("grade_criterion", "Grade criterion", "", None, "", description="band the value falls in"),
    _q("grade_source", "Grade source", "", None, "", description="publication of the cut-offs"),
    _q("reference_ratio_r2star", "R2* / reference ratio", "", 2, "1",
       description="median R2* over the reference region's"),
)

BY_KEY = {q.key: q for q in REGION_QUANTITIES}
BY_LABEL = {q.label: q for q in REGION_QUANTITIES}


def label_for(quantity: Quantity, relaxation: str = "T2*") -> str:
    """The column label; R2/T2 instead of R2*/T2* for spin-echo maps (``relaxation="T2"``)."""
    if relaxation == "T2":
        return quantity.label.replace("R2*", "R2").replace("T2*", "T2")
    return quantity.label


def find(label: str) -> Quantity | None:
    """The quantity of a column label (gradient- or spin-echo wording), or None."""
    if label in BY_LABEL:
        return BY_LABEL[label]
    for q in REGION_QUANTITIES:
        if label_for(q, "T2") == label:
            return q
    return None


def display_value(key: str, value):
    """``value`` scaled and rounded to the display precision of ``key``.

    Text passes through; None, NaN and infinity become None; counts become int. Keys not in
    the table are returned unchanged.
    """
    quantity = BY_KEY.get(key)
    if quantity is None or value is None or isinstance(value, (str, bool)):
        return value
    try:
        number = float(value) * quantity.scale
    except (TypeError, ValueError):
        return value
    if not math.isfinite(number):
        return None
    if quantity.decimals is None:
        return value
    if quantity.decimals == 0 and quantity.scale == 1.0 and float(number).is_integer():
        return int(number)
    rounded = round(number, quantity.decimals)
    return rounded + 0.0  # no "-0.0"
