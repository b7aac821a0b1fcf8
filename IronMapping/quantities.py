"""The quantities IronMapping reports: one table for every place a person reads them.

:data:`REGION_QUANTITIES`: what each per-region summary key holds: its column label (with the
unit), the unit, the precision the measurement supports for display, and the UCUM code of the
unit (Unified Code for Units of Measure, https://ucum.org, as DICOM SR and Slicer's Segment
Statistics use). regions.csv, the report's region table, the Slicer statistics table and the
Segment Statistics plugin take their columns, units and rounding from here; summary.json keeps
full precision (its units, in the JSON's own scale, are :data:`SUMMARY_UNITS`).

:data:`MAPS`: every voxel map: what it holds, its unit and UCUM code, file data type, Slicer
node name and class, colour map and window, and whether it is written to files
(``maps_io``/``pipeline``) and to the Slicer scene (``scene``). Adding a map is one entry here
(plus computing it).

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

    Attributes
    ----------
    key : str
        Summary key of a region (``summary["regions"][i][key]``).
    label : str
        Column label, the unit in brackets ("R2* median (1/s)").
    unit : str
        Unit as shown ("1/s", "ms", "mL", ...; "" for text and ratios).
    decimals : int or None
        Decimal places for display; None for text, 0 for counts.
    ucum : str
        UCUM code of the unit ("s-1", "ms", "mL", ...; "" for text).
    scale : float
        Factor applied before display (0-1 fractions shown in percent).
    description : str
        What the column holds, for tooltips.
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


#: UCUM code -> its meaning in words (the coded entries of Slicer's Segment Statistics).
UCUM_MEANINGS = {
    "s-1": "per second", "ms": "millisecond", "mL": "milliliter", "%": "percent",
    "mg/g": "milligram per gram", "umol/g": "micromole per gram", "{voxels}": "voxels",
    "1": "ratio", "[arb'U]": "arbitrary unit", "{status}": "status code",
}

#: Units of the numeric keys of the summary (summary.json's "units"), in the JSON's scale:
#: fractions 0-1, not the percent shown in tables.
SUMMARY_UNITS = {
    "volume_ml": "mL", "n_voxels": "voxels", "n_included": "voxels", "excluded_fraction": "fraction 0-1",
    "r2star_*": "1/s", "t2star_*": "ms", "r2star_roi_fit": "1/s", "t2star_roi_fit": "ms",
    "lic_mg_per_g": "mg Fe/g dry weight", "lic_umol_per_g": "umol Fe/g dry weight",
    "lic_lower_bound": "mg Fe/g dry weight", "r2star_censored_fraction": "fraction 0-1",
    "field_strength_t": "T", "echo_times_ms": "ms", "reference_ratio_r2star": "ratio",
    "sir_to_reference": "ratio per echo", "quality_median": "R^2 (0-1)",
}


def label_for(quantity: Quantity, relaxation: str = "T2*") -> str:
    """The column label of a quantity.

    Parameters
    ----------
    quantity : Quantity
    relaxation : str
        "T2*", or "T2" for spin-echo maps (R2/T2 instead of R2*/T2*).

    Returns
    -------
    str
    """
    if relaxation == "T2":
        return quantity.label.replace("R2*", "R2").replace("T2*", "T2")
    return quantity.label


def find(label: str) -> Quantity | None:
    """The quantity of a column label (gradient- or spin-echo wording).

    Parameters
    ----------
    label : str

    Returns
    -------
    Quantity or None
    """
    if label in BY_LABEL:
        return BY_LABEL[label]
    for q in REGION_QUANTITIES:
        if label_for(q, "T2") == label:
            return q
    return None


def display_value(key: str, value):
    """A value scaled and rounded to the display precision of its key.

    Text passes through; None, NaN and infinity become None; counts become int. Keys not in
    the table are returned unchanged.

    Parameters
    ----------
    key : str
        Summary key (see :data:`REGION_QUANTITIES`).
    value : float, int, str or None
        In the summary's unit (fractions 0-1).

    Returns
    -------
    float, int, str or None
        In the displayed unit (e.g. percent).
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


# --------------------------------------------------------------------------- maps

@dataclass(frozen=True)
class MapQuantity:
    """One voxel map (array (k, j, i) on the image grid).

    Attributes
    ----------
    key : str
        Map key ("r2star"); the file stem for gradient echo and ``IronMapping.Output`` of the
        Slicer node.
    quantity : str
        What it holds as shown ("R2*"); "*" is dropped for spin echo when ``relaxation``.
    unit, ucum : str
        Unit as shown and its UCUM code.
    dtype : str
        Data type in files and nodes.
    description : str
        One sentence for file sidecars and node attributes.
    node_name : str
        Slicer node name after the input's name ("<input> R2*").
    node_class : str
        Slicer node class (the status codes are a label map).
    colour_map : str
        "iron" (black-red-yellow-white, more iron hotter), "iron-reversed" (T2*: shorter
        hotter), "grey", or "status" (a labelled colour per status code).
    window : (float or None, float or None)
        Display window (lo, hi) in ``unit``; None ends are robust percentiles
        ``window_percentiles`` of the map's finite values (lo floored at 0).
    window_percentiles : (float, float)
    legend : bool
        A colour legend is shown beside the map in Slicer.
    source : str
        Attribute of the fit holding the array, "maps.<name>" for ``fit.maps[name]``, or "" for
        maps computed after the fit (LIC, from the regions).
    optional : bool
        Only some fits have it (PDFF: fat-water methods).
    relaxation : bool
        R2*/T2* wording becomes R2/T2 for spin echo.
    spin_echo_stem : str or None
        File stem for spin echo.
    files, scene : bool
        Written by ``maps_io.write_maps`` (pipeline) / shown in Slicer (scene).
    """

    key: str
    quantity: str
    unit: str
    ucum: str
    dtype: str
    description: str
    node_name: str
    node_class: str = "vtkMRMLScalarVolumeNode"
    colour_map: str = "grey"
    window: tuple = (None, None)
    window_percentiles: tuple = (0.5, 99.5)
    legend: bool = False
    source: str = ""
    optional: bool = False
    relaxation: bool = False
    spin_echo_stem: str | None = None
    files: bool = True
    scene: bool = True

    def name_for(self, relaxation: str = "T2*") -> str:
        """Node name suffix.

        Parameters
        ----------
        relaxation : str
            "T2*", or "T2" for spin echo (R2/T2 wording).

        Returns
        -------
        str
        """
        return self.node_name.replace("*", "") if relaxation == "T2" and self.relaxation else self.node_name

    def quantity_for(self, relaxation: str = "T2*") -> str:
        """Quantity as shown.

        Parameters
        ----------
        relaxation : str
            "T2*", or "T2" for spin echo (R2/T2 wording).

        Returns
        -------
        str
        """
        return self.quantity.replace("*", "") if relaxation == "T2" and self.relaxation else self.quantity

    def description_for(self, relaxation: str = "T2*") -> str:
        """Description sentence.

        Parameters
        ----------
        relaxation : str
            "T2*", or "T2" for spin echo (R2/T2 wording).

        Returns
        -------
        str
        """
        if relaxation == "T2" and self.relaxation:
            return self.description.replace("R2*", "R2").replace("T2*", "T2")
        return self.description

    def file_stem(self, relaxation: str = "T2*") -> str:
        """File name without extension.

        Parameters
        ----------
        relaxation : str
            "T2*", or "T2" for spin echo (``spin_echo_stem`` where set).

        Returns
        -------
        str
        """
        return self.spin_echo_stem if relaxation == "T2" and self.spin_echo_stem else self.key


#: Every map, in the order files and nodes are written.
MAPS: tuple[MapQuantity, ...] = (
    MapQuantity("r2star", "R2*", "1/s", "s-1", "float32",
                "Transverse relaxation rate R2* (R2 for spin echo).", "R2*",
                colour_map="iron", window_percentiles=(1.0, 99.0), legend=True, source="r2star",
                relaxation=True, spin_echo_stem="r2"),
    MapQuantity("t2star", "T2*", "ms", "ms", "float32",
                "Relaxation time T2* = 1000 / R2* (T2 for spin echo).", "T2*",
                colour_map="iron-reversed", window=(0.0, None), window_percentiles=(1.0, 99.0),
                source="t2star", relaxation=True, spin_echo_stem="t2"),
    MapQuantity("s0", "S0", "a.u.", "[arb'U]", "float32",
                "Signal extrapolated to echo time 0, scanner units.", "S0", source="s0"),
    MapQuantity("quality", "R^2", "1", "1", "float32",
                "Coefficient of determination of the fit, 0..1.", "fit quality R^2",
                window=(0.0, 1.0), source="quality"),
    MapQuantity("status", "status", "code", "{status}", "uint8",
                "Why a voxel was or was not fitted (codes in the sidecar).", "fit status",
                node_class="vtkMRMLLabelMapVolumeNode", colour_map="status", source="status"),
    MapQuantity("r2star_sd", "SD of R2*", "1/s", "s-1", "float32",
                "Uncertainty (standard deviation) of R2*.", "R2* SD", source="uncertainty",
                relaxation=True, spin_echo_stem="r2_sd"),
    # LIC needs the liver region and a calibration: the pipeline computes it after the fit;
    # the Slicer module reports LIC per segment (table, Segment Statistics) instead.
    MapQuantity("lic", "LIC", "mg Fe/g dry weight", "mg/g", "float32",
                "Liver iron concentration from R2*, in liver voxels only (NaN elsewhere).", "LIC",
                colour_map="iron", scene=False),
    MapQuantity("pdff", "PDFF", "%", "%", "float32",
                "Proton density fat fraction from the fat-water fit.", "PDFF",
                window=(0.0, 100.0), source="maps.pdff", optional=True),
)

MAP_BY_KEY = {m.key: m for m in MAPS}


def map_arrays(fit, target: str = "files") -> dict:
    """The maps of a fit written to files or shown in the scene.

    Optional maps the fit lacks and maps computed later (LIC) are left out.

    Parameters
    ----------
    fit : FitResult
    target : str
        "files" or "scene".

    Returns
    -------
    dict of str to ndarray, shape (k, j, i)
    """
    arrays = {}
    for m in MAPS:
        if not m.source or not getattr(m, target):
            continue
        if m.source.startswith("maps."):
            value = (getattr(fit, "maps", None) or {}).get(m.source[len("maps."):])
        else:
            value = getattr(fit, m.source, None)
        if value is None and m.optional:
            continue
        arrays[m.key] = value
    return arrays
