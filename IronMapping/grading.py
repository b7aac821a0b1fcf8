"""Published iron-overload grades per organ and field strength, with their sources.

    >>> from IronMapping.grading import grade_region
    >>> grade_region("heart", 1.5, t2star_ms=15.0)["grade"]
    'mild to moderate'

Every cut-off is data in `GRADING_SCHEMES` with the citation it comes from. Organs without a
published quantitative cut-off (thyroid, salivary glands, lung, spleen, bone marrow) are not
graded: their values are reported against a reference region instead (`DESCRIPTIVE_ONLY`).
A field strength other than 1.5 T or 3 T, or an unknown one, gives no grade (never an
assumed 1.5 T).

Bands follow the source tables: for R2* the upper bound is inclusive (liver 1.5 T: normal
R2* <= 65 1/s, mild 65 < R2* <= 224, ...); for T2* the middle band includes both ends (heart
1.5 T: normal T2* > 20 ms, mild to moderate 10 <= T2* <= 20 ms, severe T2* < 10 ms).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .calibration import nominal_field

INF = float("inf")

BRAZIL_TABLE7 = ("Brazilian cardiovascular imaging guideline (Sociedade Brasileira de Cardiologia), "
                 "Table 7 'Classification of myocardial and hepatic iron overload by magnetic "
                 "resonance imaging', PMC8528353")
BRAZIL_TABLE7_URL = "https://pmc.ncbi.nlm.nih.gov/articles/PMC8528353/"
RESTAINO_2011 = ("Restaino G, et al. Regional and global pancreatic T2* MRI for iron overload "
                 "assessment in a large cohort of healthy subjects: normal values and correlation "
                 "with age and gender. Magn Reson Med 2011;65(3):764-769 (1.5 T, 120 healthy "
                 "subjects, lower limit of normal 26 ms)")
RESTAINO_2011_DOI = "10.1002/mrm.22640"
KIDNEY_2015 = ("Quantitative T2* magnetic resonance imaging for renal iron overload assessment: "
               "normal values by age and sex. Abdom Imaging 2015;40(6):1700-1704 (1.5 T, lower "
               "limit of normal 31 ms; E-MIOT network)")
KIDNEY_2015_DOI = "10.1007/s00261-015-0395-y"
NOETZLI_2009 = ("Noetzli LJ, et al. Pancreatic iron loading predicts cardiac iron loading in "
                "thalassemia major. Blood 2009;114(19):4021-4026")


@dataclass(frozen=True)
class Band:
    """One grade: low < value < high, with the ends included as flagged."""

    label: str
    low: float
    high: float
    low_inclusive: bool
    high_inclusive: bool

    def contains(self, value: float) -> bool:
        """Whether a value lies in this band (ends included as flagged).

        Parameters
        ----------
        value : float
            In the unit of the scheme (1/s, ms or mg Fe/g dw).

        Returns
        -------
        bool
        """
        above = value >= self.low if self.low_inclusive else value > self.low
        below = value <= self.high if self.high_inclusive else value < self.high
        return bool(above and below)

    def describe(self, symbol: str, unit: str) -> str:
        """The band in words, e.g. "65 < R2* <= 224 1/s".

        Parameters
        ----------
        symbol : str
            Quantity symbol ("R2*", "T2*", "LIC").
        unit : str
            Unit text appended.

        Returns
        -------
        str
        """
        if self.low == -INF or (self.low == 0 and self.low_inclusive):
            return f"{symbol} {'<=' if self.high_inclusive else '<'} {self.high:g} {unit}"
        if self.high == INF:
            return f"{symbol} {'>=' if self.low_inclusive else '>'} {self.low:g} {unit}"
        lo = "<=" if self.low_inclusive else "<"
        hi = "<=" if self.high_inclusive else "<"
        return f"{self.low:g} {lo} {symbol} {hi} {self.high:g} {unit}"


@dataclass(frozen=True)
class GradingScheme:
    """Cut-offs for one organ at one field strength (None: any field, e.g. LIC)."""

    organ: str
    field_strength_t: float | None
    quantity: str  # "R2*", "T2*" or "LIC"
    unit: str
    bands: tuple
    source: str
    reference: str
    notes: str = ""
    #: What a grade means, shown only with that grade (so a note never contradicts the grade).
    band_notes: tuple = ()

    def note_for(self, label: str | None) -> str | None:
        """The note shown with one grade only.

        Parameters
        ----------
        label : str or None
            A band label, e.g. "severe".

        Returns
        -------
        str or None
            The note from ``band_notes``, None when the grade has none.
        """
        return dict(self.band_notes).get(label)

    def grade(self, value) -> Band | None:
        """The band a value falls in.

        Parameters
        ----------
        value : float or None
            In the scheme's unit (``unit``).

        Returns
        -------
        Band or None
            None for None, NaN or a value outside every band.
        """
        if value is None or not np.isfinite(value):
            return None
        for band in self.bands:
            if band.contains(float(value)):
                return band
        return None

    def to_dict(self) -> dict:
        """JSON-able dict of the scheme, with each band's range in words."""
        return {"organ": self.organ, "field_strength_t": self.field_strength_t,
                "quantity": self.quantity, "unit": self.unit, "source": self.source,
                "reference": self.reference, "notes": self.notes,
                "band_notes": dict(self.band_notes),
                "bands": [{"grade": b.label, "range": b.describe(self.quantity, self.unit)}
                          for b in self.bands]}


def _r2_bands(normal, mild, moderate):
    return (Band("normal", -INF, normal, False, True), Band("mild", normal, mild, False, True),
            Band("moderate", mild, moderate, False, True), Band("severe", moderate, INF, False, False))


def _heart_bands(severe_below, normal_above):
    return (Band("severe", 0.0, severe_below, True, False),
            Band("mild to moderate", severe_below, normal_above, True, True),
            Band("normal", normal_above, INF, False, False))


GRADING_SCHEMES: tuple[GradingScheme, ...] = (
    GradingScheme("liver", 1.5, "R2*", "1/s", _r2_bands(65.0, 224.0, 475.0),
                  BRAZIL_TABLE7, BRAZIL_TABLE7_URL,
                  "R2* bands equivalent to LIC <= 2, 2-7, 7-15, > 15 mg/g dry weight"),
    GradingScheme("liver", 3.0, "R2*", "1/s", _r2_bands(119.0, 435.0, 952.0),
                  BRAZIL_TABLE7, BRAZIL_TABLE7_URL,
                  "R2* bands equivalent to LIC <= 2, 2-7, 7-15, > 15 mg/g dry weight"),
    GradingScheme("liver", None, "LIC", "mg/g dry weight", _r2_bands(2.0, 7.0, 15.0),
                  BRAZIL_TABLE7, BRAZIL_TABLE7_URL,
                  "applied to the LIC from the chosen calibration"),
    GradingScheme("heart", 1.5, "T2*", "ms", _heart_bands(10.0, 20.0),
                  BRAZIL_TABLE7, BRAZIL_TABLE7_URL, "myocardial (septal) T2*",
                  (("severe", "T2* below 10 ms carries a high risk of heart failure"),)),
    GradingScheme("heart", 3.0, "T2*", "ms", _heart_bands(5.8, 12.6),
                  BRAZIL_TABLE7, BRAZIL_TABLE7_URL, "myocardial (septal) T2* at 3 T"),
    GradingScheme("pancreas", 1.5, "T2*", "ms",
                  (Band("iron overload", 0.0, 26.0, True, False), Band("normal", 26.0, INF, True, False)),
                  RESTAINO_2011, "doi:" + RESTAINO_2011_DOI, "",
                  (("iron overload", "T2* below the lower limit of normal of healthy adults (26 ms)"),
                   ("normal", "T2* within the range of healthy adults (lower limit of normal 26 ms)"))),
    GradingScheme("kidney", 1.5, "T2*", "ms",
                  (Band("iron overload", 0.0, 31.0, True, False), Band("normal", 31.0, INF, True, False)),
                  KIDNEY_2015, "doi:" + KIDNEY_2015_DOI, "",
                  (("iron overload", "T2* below the lower limit of normal of healthy adults "
                                     "(31 ms, mean of both kidneys)"),
                   ("normal", "T2* within the range of healthy adults (lower limit of normal "
                              "31 ms, mean of both kidneys)"))),
)

DESCRIPTIVE_ONLY = {
    "thyroid": "no published quantitative cut-off; compare with the reference region",
    "salivary gland": "no published quantitative cut-off; compare with the reference region",
    "lung": ("GRE R2* in lung is dominated by susceptibility at air-tissue interfaces and is not "
             "specific for iron; descriptive only"),
    "spleen": ("no spleen cut-off; liver calibrations must not be applied to the spleen "
               "(R2-R2* relation departs above about 300 1/s)"),
    "bone marrow": "no published quantitative cut-off; compare with the reference region",
    "skeletal muscle": "reference tissue; not graded",
    "lesion": "compared with background liver instead of graded",
}


def find_scheme(organ: str | None, field_strength_t, quantity: str | None = None
                ) -> GradingScheme | None:
    """The grading scheme for an organ at a field strength.

    Parameters
    ----------
    organ : str or None
        Organ name from `IronMapping.organs.ORGANS`.
    field_strength_t : float or None
        Field strength in T, matched to the nominal 1.5 / 3 T.
    quantity : str, optional
        "R2*", "T2*" or "LIC" (LIC schemes hold for any field).

    Returns
    -------
    GradingScheme or None
        None when no published scheme applies.
    """
    nominal = nominal_field(field_strength_t)
    for scheme in GRADING_SCHEMES:
        if scheme.organ != organ or (quantity is not None and scheme.quantity != quantity):
            continue
        if scheme.field_strength_t is None and quantity == "LIC":
            return scheme
        if scheme.field_strength_t is not None and nominal == scheme.field_strength_t:
            return scheme
    return None


def grade_region(organ: str | None, field_strength_t, r2star_per_s=None, t2star_ms=None,
                 lic_mg_per_g=None, basis: str | None = None) -> dict:
    """Grade one region.

    Liver is graded on R2* (the measured quantity, field-specific cut-offs); the LIC grade is
    added as lic_grade. Heart, pancreas and kidney are graded on T2* (pass the ROI-fit T2* for
    the heart when available, and say so in ``basis``).

    Parameters
    ----------
    organ : str or None
        Organ name; None (not recognised) gives no grade and no note.
    field_strength_t : float or None
        Field strength in T; None gives no grade.
    r2star_per_s : float, optional
        Region R2* in 1/s.
    t2star_ms : float, optional
        Region T2* in ms.
    lic_mg_per_g : float, optional
        Liver LIC in mg Fe/g dry weight.
    basis : str, optional
        What the graded value is (e.g. "ROI fit"), stored as is.

    Returns
    -------
    dict
        JSON-able. Keys: grade (str or None), iron_loaded (True / False / None), quantity, value,
        unit, criterion (the band in words), source, reference, basis, notes (list of str); with
        a scheme at this field also field_strength_t; for the liver with an LIC, lic_grade and
        lic_criterion.
    """
    out = {"grade": None, "iron_loaded": None, "quantity": None, "value": None, "unit": None,
           "criterion": None, "source": None, "reference": None, "basis": basis, "notes": []}
    if organ is None:
        # the statistics say the organ was not recognised; a second note would repeat it
        return out
    if organ in DESCRIPTIVE_ONLY:
        out["notes"].append(DESCRIPTIVE_ONLY[organ])
        return out
    if field_strength_t is None:
        out["notes"].append(
            "field strength unknown: no grade (cut-offs differ between 1.5 T and 3 T); give "
            "the field strength to grade")
        return out
    quantity = "R2*" if organ == "liver" else "T2*"
    scheme = find_scheme(organ, field_strength_t, quantity)
    if scheme is None:
        out["notes"].append(
            f"no published {organ} cut-off at {field_strength_t} T in IronMapping's tables; "
            "values reported without a grade")
        return out
    value = r2star_per_s if quantity == "R2*" else t2star_ms
    band = scheme.grade(value)
    out.update(quantity=quantity, value=None if value is None or not np.isfinite(value) else float(value),
               unit=scheme.unit, source=scheme.source, reference=scheme.reference,
               field_strength_t=scheme.field_strength_t)
    if band is None:
        out["notes"].append(f"no valid {quantity} to grade")
    else:
        out["grade"] = band.label
        out["iron_loaded"] = band.label != "normal"
        out["criterion"] = band.describe(quantity, scheme.unit)
    if scheme.notes:
        out["notes"].append(scheme.notes)
    band_note = scheme.note_for(out["grade"])
    if band_note:
        out["notes"].append(band_note)
    if organ == "liver" and lic_mg_per_g is not None and np.isfinite(lic_mg_per_g):
        lic_scheme = find_scheme("liver", None, "LIC")
        lic_band = lic_scheme.grade(lic_mg_per_g)
        out["lic_grade"] = lic_band.label if lic_band else None
        out["lic_criterion"] = lic_band.describe("LIC", lic_scheme.unit) if lic_band else None
    if organ == "pancreas" and r2star_per_s is not None and np.isfinite(r2star_per_s) \
            and nominal_field(field_strength_t) == 1.5:
        relation = "above" if r2star_per_s > 100 else "below"
        out["notes"].append(
            f"pancreas R2* {relation} 100 1/s: in thalassaemia major a pancreatic R2* below "
            "100 1/s strongly predicted no cardiac iron, above it the positive predictive value "
            f"was above 60% ({NOETZLI_2009})")
    return out


def grading_table() -> list[dict]:
    """Every cut-off as rows (units in the column names), for help text and the README."""
    rows = []
    for s in GRADING_SCHEMES:
        for b in s.bands:
            rows.append({"Organ": s.organ,
                         "Field strength (T)": "any" if s.field_strength_t is None else s.field_strength_t,
                         "Grade": b.label, "Criterion": b.describe(s.quantity, s.unit),
                         "Source": s.source, "Reference": s.reference})
    return rows
