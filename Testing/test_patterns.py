"""Iron distribution pattern and neonatal haemochromatosis support on constructed cases."""

import re

import pytest

from IronMapping.grading import grade_region
from IronMapping.patterns import classify_pattern, spleen_normal_limit

NORMAL = {"liver": 30.0, "spleen": 25.0, "pancreas": 30.0, "heart": 30.0, "thyroid": 30.0,
          "skeletal muscle": 28.0}


def rows(values, field=1.5):
    """Region rows as summarize() makes them, from {organ: R2* 1/s}."""
    out = []
    for organ, r2 in values.items():
        g = grade_region(organ, field, r2star_per_s=r2, t2star_ms=1000.0 / r2)
        out.append({"name": organ, "organ": organ, "r2star_median": r2, "t2star_median": 1000.0 / r2,
                    "n_included": 100, "iron_loaded": g["iron_loaded"], "grade": g["grade"]})
    return out


FORBIDDEN = re.compile(r"(?<!not )(?<!never )\bexclud(e|es|ed|ing)\b|rule[sd]? out|ruled out|"
                       r"no evidence of (nh|neonatal)", re.I)


def test_forbidden_wording_detector_works():
    assert FORBIDDEN.search("The absence of this pattern excludes NH.")
    assert FORBIDDEN.search("NH is ruled out.")
    assert FORBIDDEN.search("This would exclude neonatal haemochromatosis.")
    assert not FORBIDDEN.search("Absence does not exclude neonatal haemochromatosis.")


def assert_never_excludes_nh(pattern):
    text = pattern["text"] + " " + pattern["nh_support"]["text"]
    assert not FORBIDDEN.search(text), text


def test_no_iron():
    p = classify_pattern(rows(NORMAL), 1.5)
    assert p["kind"] == "none" and p["extrahepatic_siderosis"] is False and p["spleen_spared"] is True
    assert p["nh_support"]["nh_pattern_present"] is False
    assert "does not exclude neonatal haemochromatosis" in p["nh_support"]["text"]
    assert_never_excludes_nh(p)


def test_neonatal_haemochromatosis_like_case():
    p = classify_pattern(rows({**NORMAL, "liver": 450.0, "pancreas": 280.0, "heart": 130.0,
                               "thyroid": 300.0, "spleen": 28.0}), 1.5)
    assert p["kind"] == "parenchymal"
    assert p["extrahepatic_siderosis"] is True and p["spleen_spared"] is True
    nh = p["nh_support"]
    assert nh["nh_pattern_present"] is True and set(nh["extrahepatic_organs"]) == {"pancreas", "heart"}
    assert nh["pancreas_spleen_r2star_ratio"] == pytest.approx(280.0 / 28.0)
    assert nh["ratios_r2star"]["thyroid/spleen"] == pytest.approx(300.0 / 28.0)
    assert "derived indices, not validated" in nh["text"] and nh["derived_index"] is True
    assert_never_excludes_nh(p)


def test_transfusional_reticuloendothelial_and_mixed():
    p = classify_pattern(rows({**NORMAL, "liver": 650.0, "spleen": 400.0, "pancreas": 35.0}), 1.5)
    assert p["kind"] == "reticuloendothelial" and p["spleen_spared"] is False
    assert p["extrahepatic_siderosis"] is False
    assert_never_excludes_nh(p)
    m = classify_pattern(rows({**NORMAL, "liver": 650.0, "spleen": 400.0, "pancreas": 200.0}), 1.5)
    assert m["kind"] == "mixed"


def test_liver_only_is_indeterminate_and_says_what_is_missing():
    p = classify_pattern(rows({"liver": 300.0}), 1.5)
    assert p["kind"] == "indeterminate"
    assert "spleen not segmented: cannot assess sparing" in p["text"]
    assert p["spleen_spared"] is None and p["extrahepatic_siderosis"] is None
    assert set(p["possible_kinds"]) == {"parenchymal", "reticuloendothelial", "mixed"}
    assert p["nh_support"]["nh_pattern_present"] is None
    assert "does not exclude" in p["nh_support"]["text"]
    assert_never_excludes_nh(p)


def test_missing_spleen_with_pancreatic_iron():
    values = {**NORMAL, "liver": 450.0, "pancreas": 280.0}
    del values["spleen"]
    p = classify_pattern(rows(values), 1.5)
    assert p["kind"] == "indeterminate" and p["missing"] == ["spleen not segmented: cannot assess sparing"]
    assert p["extrahepatic_siderosis"] is True and p["spleen_spared"] is None
    assert set(p["possible_kinds"]) == {"parenchymal", "mixed"}


def test_unknowns_that_do_not_matter_do_not_make_it_indeterminate():
    # Liver loaded, spleen spared: parenchymal whatever pancreas and heart show.
    p = classify_pattern(rows({"liver": 300.0, "spleen": 25.0}), 1.5)
    assert p["kind"] == "parenchymal" and p["missing"] == []
    assert "Not assessed" in p["text"] and "pancreas not segmented" in p["text"]


def test_spleen_proxy_limit_depends_on_field():
    assert spleen_normal_limit(1.5) == 65.0 and spleen_normal_limit(3.0) == 119.0
    assert spleen_normal_limit(None) is None
    p = classify_pattern(rows({**NORMAL, "spleen": 100.0}, field=3.0), 3.0)
    assert p["spleen_spared"] is True and "proxy" in p["organ_states"]["spleen"]["reason"]
    p15 = classify_pattern(rows({**NORMAL, "spleen": 100.0}), 1.5)
    assert p15["spleen_spared"] is False


def test_three_tesla_pancreas_has_no_cutoff():
    values = {"liver": 60.0, "spleen": 50.0, "pancreas": 200.0}
    p = classify_pattern(rows(values, field=3.0), 3.0)
    assert p["organ_states"]["pancreas"]["loaded"] is None
    assert "no published cut-off at 3.0 T" in p["organ_states"]["pancreas"]["reason"]
    assert p["kind"] == "indeterminate"


def test_unknown_field_is_indeterminate():
    p = classify_pattern(rows(NORMAL), None)
    assert p["kind"] == "indeterminate" and "field strength is unknown" in p["text"]
    assert_never_excludes_nh(p)


def test_empty_regions_count_as_missing():
    r = rows(NORMAL)
    for row in r:
        if row["organ"] == "spleen":
            row.update(r2star_median=None, n_included=0, iron_loaded=None)
    p = classify_pattern(r, 1.5)
    assert p["organ_states"]["spleen"]["loaded"] is None
    assert "spleen has no valid R2*" in p["organ_states"]["spleen"]["reason"]
