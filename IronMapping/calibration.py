"""Liver iron concentration (LIC, mg Fe/g dry weight) from liver R2* (1/s).

Each calibration is data: its equation, citation, DOI, the field strength it was made at and
the range of biopsy/reference LIC it was fitted over. A correction is a one-line change here.

    >>> from IronMapping.calibration import liver_iron_concentration
    >>> lic, info = liver_iron_concentration(100.0, field_strength_t=1.5)   # Wood 2005
    >>> round(float(lic), 3)
    2.742

Default: Wood 2005 (`DEFAULT_CALIBRATION`). Why: it is calibrated against liver biopsy, it is
the calibration used most widely in clinical practice and in other R2*-LIC tools, and its slope
agrees within 3 % with the multicentre, multivendor calibration of Hernando 2022
(2.603e-2 vs 2.54e-2 mg/g per 1/s), so results stay comparable with both older reports and
current multicentre practice. Choose another by name (`CALIBRATIONS`).

Field strength. R2* grows with B0 (about twice as large at 3 T as at 1.5 T in liver), so a 1.5 T
calibration must not be applied to 3 T R2*. `liver_iron_concentration` raises CalibrationError
in that case unless ``convert_field=True`` is passed; the conversion (Ina 2018, below) is then
applied and a warning is added to the result that says so. When the field strength is unknown
(None) the LIC is refused, never silently computed as if at 1.5 T.

A known error in public code writes Wood's equation as 0.0254 + 0.202 / T2*. The correct form is
LIC = 0.0254 R2* + 0.202 = 25.4 / T2*[ms] + 0.202 (R2* in 1/s, T2* in ms).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .errors import CalibrationError

MG_PER_G_TO_UMOL_PER_G = 17.9  # 1 mg Fe/g dry weight = 17.9 umol/g (Fe 55.845 g/mol)
FIELD_TOLERANCE_T = 0.25  # 2.89 T counts as 3 T, 1.494 T as 1.5 T


@dataclass(frozen=True)
class Calibration:
    """One published R2*-to-LIC calibration.

    form "linear": LIC = slope * R2* + intercept; form "power": LIC = coefficient * R2* ** exponent.
    R2* in 1/s, LIC in mg Fe/g dry weight.
    """

    name: str
    label: str
    citation: str
    doi: str
    field_strength_t: float
    form: str
    coefficients: dict
    equation: str
    reference_standard: str
    valid_lic_range_mg_per_g: tuple | None
    r2star_fit_method: str | None = None
    notes: str = ""
    verification: str = ""

    def lic(self, r2star_per_s):
        """LIC from R2* with this calibration.

        Parameters
        ----------
        r2star_per_s : float or ndarray
            R2* in 1/s, any shape; NaN in gives NaN out.

        Returns
        -------
        float or ndarray
            LIC in mg Fe/g dry weight, same shape (a float for scalar input).
        """
        r2 = np.asarray(r2star_per_s, dtype=np.float64)
        c = self.coefficients
        if self.form == "linear":
            out = c["slope"] * r2 + c["intercept"]
        elif self.form == "power":
            with np.errstate(invalid="ignore"):
                out = c["coefficient"] * np.power(np.where(r2 >= 0, r2, np.nan), c["exponent"])
        else:  # pragma: no cover - guarded by the table below
            raise CalibrationError(f"Calibration {self.name!r} has an unknown form {self.form!r}.")
        return out if out.ndim else float(out)

    def r2star(self, lic_mg_per_g):
        """Inverse of `lic`: the R2* this calibration maps to a given LIC.

        Parameters
        ----------
        lic_mg_per_g : float or ndarray
            LIC in mg Fe/g dry weight, any shape.

        Returns
        -------
        float or ndarray
            R2* in 1/s, same shape (a float for scalar input).
        """
        lic = np.asarray(lic_mg_per_g, dtype=np.float64)
        c = self.coefficients
        if self.form == "linear":
            out = (lic - c["intercept"]) / c["slope"]
        else:
            out = np.power(lic / c["coefficient"], 1.0 / c["exponent"])
        return out if out.ndim else float(out)

    def to_dict(self) -> dict:
        """JSON-able dict of all fields (the LIC range as a list or None)."""
        d = asdict(self)
        d["valid_lic_range_mg_per_g"] = (list(self.valid_lic_range_mg_per_g)
                                         if self.valid_lic_range_mg_per_g else None)
        return d


CALIBRATIONS: dict[str, Calibration] = {c.name: c for c in (
    Calibration(
        name="wood2005", label="Wood 2005",
        citation=("Wood JC, Enriquez C, Ghugre N, et al. MRI R2 and R2* mapping accurately estimates "
                  "hepatic iron concentration in transfusion-dependent thalassemia and sickle cell "
                  "disease patients. Blood 2005;106(4):1460-1465."),
        doi="10.1182/blood-2004-10-3982", field_strength_t=1.5, form="linear",
        coefficients={"slope": 0.0254, "intercept": 0.202},
        equation="LIC [mg/g dw] = 0.0254 x R2* [1/s] + 0.202  (= 25.4 / T2* [ms] + 0.202)",
        reference_standard="liver biopsy (22 patients)",
        valid_lic_range_mg_per_g=(1.33, 32.9),
        notes=("Correct form; a known error in public code writes 0.0254 + 0.202/T2*, which "
               "gives values about 60 times too small."),
        verification="equation and LIC range 1.33-32.9 mg/g checked against the PubMed abstract (PMID 15860670)"),
    Calibration(
        name="hankins2009", label="Hankins 2009",
        citation=("Hankins JS, McCarville MB, Loeffler RB, et al. R2* magnetic resonance imaging of "
                  "the liver in patients with iron overload. Blood 2009;113(20):4853-4855."),
        doi="10.1182/blood-2008-12-191643", field_strength_t=1.5, form="linear",
        coefficients={"slope": 0.028, "intercept": -0.45},
        equation="LIC [mg/g dw] = 0.028 x R2* [1/s] - 0.45",
        reference_standard="liver biopsy",
        valid_lic_range_mg_per_g=None,
        notes="Negative below R2* = 16 1/s (intercept); such values are reported as computed.",
        verification="equation as quoted in later reviews; not yet checked against the full paper, nor the DOI and LIC range [verify]"),
    Calibration(
        name="garbowski2014", label="Garbowski 2014",
        citation=("Garbowski MW, Carpenter JP, Smith G, et al. Biopsy-based calibration of T2* "
                  "magnetic resonance for estimation of liver iron concentration and comparison "
                  "with R2 Ferriscan. J Cardiovasc Magn Reson 2014;16:40."),
        doi="10.1186/1532-429X-16-40", field_strength_t=1.5, form="power",
        coefficients={"coefficient": 0.0290, "exponent": 1.014},
        equation="LIC [mg/g dw] = 0.0290 x R2* [1/s] ^ 1.014  (= 31.94 / T2* [ms] ^ 1.014)",
        reference_standard="liver biopsy",
        valid_lic_range_mg_per_g=None,
        r2star_fit_method="truncation",
        notes="Made with truncation-model R2*; other fitting methods may differ at high iron.",
        verification="equation checked against two independent public calculators; LIC range not confirmed [verify]"),
    Calibration(
        name="hernando2022", label="Hernando 2022 (1.5 T)",
        citation=("Hernando D, et al. Multicenter reproducibility of liver iron quantification "
                  "with 1.5-T and 3.0-T MRI. Radiology (published online 2022)."),
        doi="10.1148/radiol.213256", field_strength_t=1.5, form="linear",
        coefficients={"slope": 2.603e-2, "intercept": -0.16},
        equation="LIC [mg/g dw] = 2.603e-2 x R2* [1/s] - 0.16",
        reference_standard="R2 MRI (commercial, 1.5 T spin echo), 207 participants, 4 centres, 3 vendors",
        valid_lic_range_mg_per_g=None,
        notes=("The paper also gives 2.89 T and 3.0 T calibrations; they are not included here "
               "until their coefficients are checked against the full text."),
        verification="1.5 T equation checked against the published abstract (doi 10.1148/radiol.213256)"),
)}
DEFAULT_CALIBRATION = "wood2005"

# Field conversion of liver R2* to its 1.5 T equivalent, only when asked for explicitly.
FIELD_CONVERSIONS = {
    (3.0, 1.5): {
        "name": "ina2018",
        "equation": "T2*(1.5 T) [ms] = 2 x T2*(3 T) [ms] - 0.387; R2* = 1000 / T2*",
        "slope": 2.0, "intercept_ms": -0.387,
        "citation": ("Ina 2018, Acta Radiol: hepatic T2* at 1.5 T vs 3 T in iron-overloaded "
                     "patients, line of best fit slope 2, intercept -0.387 ms (R = 0.984)."),
        "doi": "10.1177/0284185117715285",
        "valid_t2star_1p5t_ms": (1.8, 5.6),
        "note": ("Derived in iron-overloaded livers (T2* at 1.5 T 1.8-5.6 ms); outside that range "
                 "it is an extrapolation."),
    },
}


def get_calibration(calibration=None) -> Calibration:
    """Look up a calibration.

    Parameters
    ----------
    calibration : str, Calibration or None
        Name or label, case-insensitive and ignoring punctuation ("Wood 2005", "wood2005"); an
        instance is returned as is; None gives `DEFAULT_CALIBRATION`.

    Returns
    -------
    Calibration

    Raises
    ------
    CalibrationError
        For an unknown name.
    """
    if calibration is None:
        return CALIBRATIONS[DEFAULT_CALIBRATION]
    if isinstance(calibration, Calibration):
        return calibration
    key = "".join(ch for ch in str(calibration).lower() if ch.isalnum())
    for name, cal in CALIBRATIONS.items():
        if key in (name, "".join(ch for ch in cal.label.lower() if ch.isalnum())):
            return cal
    raise CalibrationError(
        f"Unknown LIC calibration {calibration!r}. Choose one of: {', '.join(CALIBRATIONS)} "
        f"(default {DEFAULT_CALIBRATION}).")


def nominal_field(field_strength_t) -> float | None:
    """Nominal field strength of a scanner.

    Parameters
    ----------
    field_strength_t : float or None
        Field strength in T.

    Returns
    -------
    float or None
        1.5 or 3.0 for fields within `FIELD_TOLERANCE_T` of them, else the value itself;
        None for None.
    """
    if field_strength_t is None:
        return None
    b0 = float(field_strength_t)
    for nominal in (1.5, 3.0):
        if abs(b0 - nominal) <= FIELD_TOLERANCE_T:
            return nominal
    return b0


def convert_r2star_field(r2star_per_s, from_t: float, to_t: float):
    """Liver R2* measured at one field expressed at another, with `FIELD_CONVERSIONS`.

    Parameters
    ----------
    r2star_per_s : float or ndarray
        R2* in 1/s at ``from_t``, any shape.
    from_t, to_t : float
        Field strengths in T (compared after `nominal_field`).

    Returns
    -------
    r2star : float or ndarray
        Converted R2* in 1/s, same shape; NaN where the converted T2* is not positive.
    conversion : dict
        The `FIELD_CONVERSIONS` entry used (equation, citation, doi, valid range, note).

    Raises
    ------
    CalibrationError
        When no published conversion exists for that pair of fields.
    """
    key = (nominal_field(from_t), nominal_field(to_t))
    conv = FIELD_CONVERSIONS.get(key)
    if conv is None:
        raise CalibrationError(
            f"No published liver R2* conversion from {from_t} T to {to_t} T is available. Use a "
            f"calibration made at {from_t} T, or report R2* without LIC.")
    r2 = np.asarray(r2star_per_s, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        t2_low = conv["slope"] * (1000.0 / r2) + conv["intercept_ms"]
        out = np.where(t2_low > 0, 1000.0 / t2_low, np.nan)
    return (out if out.ndim else float(out)), conv


def liver_iron_concentration(r2star_per_s, field_strength_t, calibration=None,
                             convert_field: bool = False):
    """LIC from liver R2* measured at ``field_strength_t``.

    Do not use for the spleen or other organs: these are liver calibrations.

    Parameters
    ----------
    r2star_per_s : float or ndarray
        Liver R2* in 1/s, any shape.
    field_strength_t : float or None
        Field strength of the data in T.
    calibration : str, Calibration or None
        See `get_calibration`; None for the default (Wood 2005).
    convert_field : bool
        Allow the published field-strength conversion of R2* (Ina 2018) when the calibration was
        made at another field; a warning is then added to ``info``.

    Returns
    -------
    lic : float or ndarray
        LIC in mg Fe/g dry weight, same shape as ``r2star_per_s``.
    info : dict
        JSON-able: calibration name, label, citation, doi, equation, field_strength_t (of the
        calibration), data_field_strength_t, valid_lic_range_mg_per_g, conversion (or None),
        warnings (list of str; also when the LIC is outside the calibrated range).

    Raises
    ------
    CalibrationError
        When the field strength is unknown, or the calibration was made at another field and
        ``convert_field`` is False (or no conversion is published).
    """
    cal = get_calibration(calibration)
    info = {"name": cal.name, "label": cal.label, "citation": cal.citation, "doi": cal.doi,
            "equation": cal.equation, "field_strength_t": cal.field_strength_t,
            "data_field_strength_t": field_strength_t,
            "valid_lic_range_mg_per_g": (list(cal.valid_lic_range_mg_per_g)
                                         if cal.valid_lic_range_mg_per_g else None),
            "conversion": None, "warnings": []}
    if field_strength_t is None:
        raise CalibrationError(
            "The field strength of these data is unknown, and R2*-to-LIC calibrations depend on "
            "it (R2* at 3 T is about twice the 1.5 T value). Give field_strength_t (tesla), e.g. "
            "from DICOM tag MagneticFieldStrength (0018,0087).")
    data_field = nominal_field(field_strength_t)
    r2 = np.asarray(r2star_per_s, dtype=np.float64)
    if data_field != nominal_field(cal.field_strength_t):
        if not convert_field:
            raise CalibrationError(
                f"Calibration {cal.label} was made at {cal.field_strength_t} T but the data were "
                f"acquired at {field_strength_t} T. Applying it would misstate the LIC (R2* scales "
                f"with field strength). Choose a calibration made at {field_strength_t} T, or allow "
                "the published field-strength conversion of R2* first (--convert-field on the "
                "command line, convert_field in Python, 'convert field' in Slicer; a warning is "
                "then added to the output).")
        r2, conv = convert_r2star_field(r2, field_strength_t, cal.field_strength_t)
        info["conversion"] = {k: v for k, v in conv.items() if k not in ("slope", "intercept_ms")}
        info["warnings"].append(
            f"R2* measured at {field_strength_t} T was converted to {cal.field_strength_t} T "
            f"({conv['equation']}; {conv['citation']}) before applying {cal.label}. "
            "This conversion adds uncertainty; prefer a calibration made at the acquisition field.")
    lic = cal.lic(r2)
    lo_hi = cal.valid_lic_range_mg_per_g
    if lo_hi is not None:
        values = np.atleast_1d(lic)
        finite = values[np.isfinite(values)]
        if finite.size and (finite.min() < lo_hi[0] or finite.max() > lo_hi[1]):
            info["warnings"].append(
                f"LIC outside the range {cal.label} was calibrated on ({lo_hi[0]}-{lo_hi[1]} mg/g "
                "dry weight): the value is an extrapolation.")
    return lic, info


def liver_iron_lower_bound(r2star_lower_bound, field_strength_t, calibration=None,
                           convert_field: bool = False):
    """Lower bound on LIC from a lower bound on liver R2*.

    For a liver whose R2* is only known to exceed a value (decay faster than the echoes can
    measure). Every calibration here, and the 3 T to 1.5 T conversion, increases with R2*, so
    the LIC at the R2* bound is a lower bound on the LIC; this is checked, not assumed.

    Parameters
    ----------
    r2star_lower_bound : float or ndarray
        Lower bound on liver R2* in 1/s.
    field_strength_t, calibration, convert_field
        As in `liver_iron_concentration`.

    Returns
    -------
    lic_lower_bound : float or ndarray
        Lower bound on LIC in mg Fe/g dry weight.
    info : dict
        As in `liver_iron_concentration`.

    Raises
    ------
    CalibrationError
        As `liver_iron_concentration`, and when the calibration does not increase with R2* there.
    """
    lic, info = liver_iron_concentration(r2star_lower_bound, field_strength_t, calibration,
                                         convert_field)
    higher, _ = liver_iron_concentration(2.0 * np.asarray(r2star_lower_bound, dtype=np.float64),
                                         field_strength_t, calibration, convert_field)
    if not np.all(np.asarray(higher) > np.asarray(lic)):
        raise CalibrationError(
            f"{info['label']} does not increase with R2* at {r2star_lower_bound} 1/s, so a lower "
            "bound on R2* gives no bound on LIC.")
    return lic, info


def calibration_table() -> list[dict]:
    """One row per calibration, for help text and the README (units in the column names)."""
    return [{"Name": c.name, "Calibration": c.label, "Field strength (T)": c.field_strength_t,
             "Equation (LIC mg Fe/g dry weight; R2* 1/s)": c.equation,
             "Reference standard": c.reference_standard,
             "Calibrated LIC range (mg/g dw)": (f"{c.valid_lic_range_mg_per_g[0]}-"
                                                f"{c.valid_lic_range_mg_per_g[1]}"
                                                if c.valid_lic_range_mg_per_g else "not recorded"),
             "DOI": c.doi, "Citation": c.citation,
             "Default": c.name == DEFAULT_CALIBRATION}
            for c in CALIBRATIONS.values()]
