"""LIC calibrations: hand-computed values, field-strength rules, provenance."""

import numpy as np
import pytest

from IronMapping.calibration import (CALIBRATIONS, DEFAULT_CALIBRATION, FIELD_CONVERSIONS,
                                     calibration_table, convert_r2star_field, get_calibration,
                                     liver_iron_concentration, nominal_field)
from IronMapping.errors import CalibrationError


def test_wood_at_r2star_100_is_2_742():
    lic, info = liver_iron_concentration(100.0, 1.5, "wood2005")
    assert lic == pytest.approx(0.0254 * 100 + 0.202)  # 2.742
    assert lic == pytest.approx(2.742, abs=1e-9)
    assert info["name"] == "wood2005" and info["doi"] == "10.1182/blood-2004-10-3982"
    assert info["field_strength_t"] == 1.5 and "0.0254" in info["equation"]


def test_wood_is_not_the_known_inverted_form():
    # Known public-code error: 0.0254 + 0.202 / T2*. At T2* = 10 ms that gives 0.0456 mg/g.
    cal = get_calibration("wood2005")
    t2star_ms = 10.0
    assert cal.lic(1000.0 / t2star_ms) == pytest.approx(25.4 / t2star_ms + 0.202)
    assert cal.lic(1000.0 / t2star_ms) != pytest.approx(0.0254 + 0.202 / t2star_ms, rel=0.5)
    assert "0.202/T2*" in cal.notes


@pytest.mark.parametrize("name, r2star, expected", [
    ("hankins2009", 100.0, 0.028 * 100 - 0.45),          # 2.35
    ("hankins2009", 500.0, 13.55),
    ("garbowski2014", 100.0, 0.0290 * 100 ** 1.014),     # 3.0931
    ("garbowski2014", 1000.0 / 3.0, 0.0290 * (1000.0 / 3.0) ** 1.014),
    ("hernando2022", 100.0, 2.443),                       # 2.603e-2*100 - 0.16
    ("hernando2022", 400.0, 2.603e-2 * 400 - 0.16),
])
def test_calibrations_against_hand_computed_values(name, r2star, expected):
    lic, _ = liver_iron_concentration(r2star, 1.5, name)
    assert lic == pytest.approx(expected, rel=1e-12)


def test_garbowski_hand_value():
    # 0.029 * 100^1.014 = 0.029 * exp(1.014 * 4.60517) = 0.029 * 106.659 = 3.0931
    assert get_calibration("Garbowski 2014").lic(100.0) == pytest.approx(3.0931, abs=1e-4)


def test_arrays_and_nan_pass_through():
    cal = get_calibration(None)
    out = cal.lic(np.array([0.0, 100.0, np.nan]))
    assert out.shape == (3,) and np.isnan(out[2]) and out[1] == pytest.approx(2.742)


def test_inverse_round_trips():
    for cal in CALIBRATIONS.values():
        assert cal.r2star(cal.lic(250.0)) == pytest.approx(250.0, rel=1e-9)


def test_default_is_documented_and_cited():
    cal = get_calibration()
    assert cal.name == DEFAULT_CALIBRATION == "wood2005"
    import IronMapping.calibration as module
    assert "Default: Wood 2005" in module.__doc__
    for c in CALIBRATIONS.values():
        assert c.citation and c.doi and c.equation and c.field_strength_t in (1.5, 3.0)


def test_unknown_calibration_is_refused_with_the_choices():
    with pytest.raises(CalibrationError, match="wood2005"):
        get_calibration("smith1999")


def test_three_tesla_data_refused_with_a_15t_calibration():
    with pytest.raises(CalibrationError, match="--convert-field"):
        liver_iron_concentration(200.0, 3.0, "wood2005")
    with pytest.raises(CalibrationError):
        liver_iron_concentration(200.0, 2.89, "hernando2022")


def test_explicit_conversion_applies_ina_and_warns():
    lic, info = liver_iron_concentration(400.0, 3.0, "wood2005", convert_field=True)
    # T2*(3 T) = 2.5 ms -> T2*(1.5 T) = 2 * 2.5 - 0.387 = 4.613 ms -> R2* = 216.78 1/s
    r2_15 = 1000.0 / (2 * 2.5 - 0.387)
    assert lic == pytest.approx(0.0254 * r2_15 + 0.202)
    assert info["conversion"]["doi"] == FIELD_CONVERSIONS[(3.0, 1.5)]["doi"]
    assert any("converted" in w for w in info["warnings"])


def test_unknown_field_is_refused_not_assumed():
    with pytest.raises(CalibrationError, match="field strength .* unknown"):
        liver_iron_concentration(100.0, None)


def test_no_conversion_for_other_fields():
    with pytest.raises(CalibrationError):
        convert_r2star_field(100.0, 7.0, 1.5)
    with pytest.raises(CalibrationError):
        liver_iron_concentration(100.0, 1.0, "wood2005", convert_field=True)


def test_nominal_field():
    assert nominal_field(1.494) == 1.5 and nominal_field(2.89) == 3.0
    assert nominal_field(7.0) == 7.0 and nominal_field(None) is None


def test_extrapolation_beyond_calibrated_range_warns():
    _, info = liver_iron_concentration(2000.0, 1.5, "wood2005")  # 51 mg/g > 32.9
    assert any("extrapolation" in w for w in info["warnings"])
    _, info = liver_iron_concentration(200.0, 1.5, "wood2005")   # 5.3 mg/g, inside
    assert not info["warnings"]


def test_table_has_units_and_sources():
    rows = calibration_table()
    assert len(rows) == len(CALIBRATIONS)
    assert all("Field strength (T)" in r and r["DOI"] for r in rows)
    assert sum(r["Default"] for r in rows) == 1
