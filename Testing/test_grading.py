"""Grades at and around every published cut-off; organ recognition."""

import numpy as np
import pytest

from IronMapping.errors import InputError
from IronMapping.grading import GRADING_SCHEMES, find_scheme, grade_region, grading_table
from IronMapping.organs import (ORGANS, organ_from_terminology, parse_terminology,
                                recognise_organ)

EPS = 1e-6


@pytest.mark.parametrize("field, r2star, grade", [
    (1.5, 30.0, "normal"), (1.5, 65.0, "normal"), (1.5, 65.0 + EPS, "mild"),
    (1.5, 224.0, "mild"), (1.5, 224.0 + EPS, "moderate"), (1.5, 475.0, "moderate"),
    (1.5, 475.0 + EPS, "severe"), (1.5, 2000.0, "severe"),
    (3.0, 119.0, "normal"), (3.0, 119.0 + EPS, "mild"), (3.0, 435.0, "mild"),
    (3.0, 435.0 + EPS, "moderate"), (3.0, 952.0, "moderate"), (3.0, 952.0 + EPS, "severe"),
    (2.89, 100.0, "normal"), (1.494, 100.0, "mild"),
])
def test_liver_grades_at_and_around_cutoffs(field, r2star, grade):
    g = grade_region("liver", field, r2star_per_s=r2star, t2star_ms=1000.0 / r2star)
    assert g["grade"] == grade
    assert g["iron_loaded"] == (grade != "normal")
    assert "PMC8528353" in g["source"] and g["quantity"] == "R2*" and g["unit"] == "1/s"


@pytest.mark.parametrize("lic, grade", [(1.0, "normal"), (2.0, "normal"), (2.0 + EPS, "mild"),
                                        (7.0, "mild"), (7.0 + EPS, "moderate"), (15.0, "moderate"),
                                        (15.0 + EPS, "severe")])
def test_liver_lic_grade(lic, grade):
    g = grade_region("liver", 1.5, r2star_per_s=100.0, lic_mg_per_g=lic)
    assert g["lic_grade"] == grade


@pytest.mark.parametrize("field, t2star, grade", [
    (1.5, 35.0, "normal"), (1.5, 20.0 + EPS, "normal"), (1.5, 20.0, "mild to moderate"),
    (1.5, 10.0, "mild to moderate"), (1.5, 10.0 - EPS, "severe"), (1.5, 4.0, "severe"),
    (3.0, 12.6 + EPS, "normal"), (3.0, 12.6, "mild to moderate"), (3.0, 5.8, "mild to moderate"),
    (3.0, 5.8 - EPS, "severe"),
])
def test_heart_grades_at_and_around_cutoffs(field, t2star, grade):
    g = grade_region("heart", field, r2star_per_s=1000.0 / t2star, t2star_ms=t2star)
    assert g["grade"] == grade and g["quantity"] == "T2*" and g["unit"] == "ms"


@pytest.mark.parametrize("organ, cutoff", [("pancreas", 26.0), ("kidney", 31.0)])
def test_pancreas_kidney_cutoffs_at_15t(organ, cutoff):
    assert grade_region(organ, 1.5, t2star_ms=cutoff)["grade"] == "normal"
    assert grade_region(organ, 1.5, t2star_ms=cutoff - EPS)["grade"] == "iron overload"
    assert grade_region(organ, 1.5, t2star_ms=cutoff + 5)["iron_loaded"] is False
    g = grade_region(organ, 1.5, t2star_ms=cutoff - 1)
    assert g["iron_loaded"] is True and g["reference"].startswith("doi:")


def test_pancreas_and_kidney_have_no_3t_grade():
    for organ in ("pancreas", "kidney"):
        g = grade_region(organ, 3.0, r2star_per_s=200.0, t2star_ms=5.0)
        assert g["grade"] is None and "3.0 T" in g["notes"][0]


def test_pancreas_note_on_cardiac_prediction():
    g = grade_region("pancreas", 1.5, r2star_per_s=150.0, t2star_ms=1000 / 150)
    assert any("100 1/s" in n and "Noetzli" in n for n in g["notes"])


@pytest.mark.parametrize("organ", ["thyroid", "salivary gland", "lung", "spleen", "bone marrow"])
def test_descriptive_organs_are_not_graded(organ):
    g = grade_region(organ, 1.5, r2star_per_s=300.0, t2star_ms=3.3)
    assert g["grade"] is None and g["iron_loaded"] is None and g["notes"]


def test_unknown_field_gives_no_grade():
    g = grade_region("liver", None, r2star_per_s=500.0)
    assert g["grade"] is None and "unknown" in g["notes"][0]


def test_nan_value_gives_no_grade():
    assert grade_region("liver", 1.5, r2star_per_s=np.nan)["grade"] is None


def test_bands_are_contiguous_and_sourced():
    for scheme in GRADING_SCHEMES:
        assert scheme.source and scheme.reference
        for a, b in zip(scheme.bands, scheme.bands[1:]):
            assert a.high == b.low and a.high_inclusive != b.low_inclusive
    assert find_scheme("heart", 2.9, "T2*").field_strength_t == 3.0
    rows = grading_table()
    assert rows and all("Field strength (T)" in r and r["Source"] for r in rows)


# ------------------------------------------------------------------------------ organs

@pytest.mark.parametrize("name, organ", [
    ("Liver", "liver"), ("liver_1", "liver"), ("LEBER", "liver"), ("Foie", "liver"),
    ("hígado", "liver"), ("Spleen", "spleen"), ("Milz", "spleen"), ("bazo", "spleen"),
    ("Pancreas head", "pancreas"), ("Pankreas", "pancreas"), ("páncreas", "pancreas"),
    ("myocardium", "heart"), ("Interventricular septum", "heart"), ("LV myo", "heart"),
    ("Herzmuskel", "heart"), ("heart muscle", "heart"),
    ("thyroid gland", "thyroid"), ("Schilddrüse", "thyroid"), ("tiroides", "thyroid"),
    ("left kidney", "kidney"), ("Niere rechts", "kidney"), ("renal cortex", "kidney"),
    ("skeletal muscle", "skeletal muscle"), ("paraspinal muscle", "skeletal muscle"),
    ("Muskel", "skeletal muscle"), ("erector spinae", "skeletal muscle"),
    ("right lung", "lung"), ("Lunge", "lung"), ("bone marrow", "bone marrow"),
    ("Knochenmark", "bone marrow"), ("parotid", "salivary gland"),
    ("liver lesion", "lesion"), ("Leberläsion", "lesion"), ("HCC", "lesion"), ("Tumor", "lesion"),
    ("nodule 2", "lesion"), ("soft tissue", None), ("Segment_1", None),
])
def test_organ_from_names(name, organ):
    assert recognise_organ(name).organ == organ


def test_organ_from_slicer_terminology():
    tag = ("Segmentation category and type - 3D Slicer General Anatomy list~SCT^123037004^"
           "Anatomical Structure~SCT^10200004^Liver~^^~Anatomic codes - DICOM master list~^^~^^")
    assert recognise_organ("Segment_1", terminology=tag).organ == "liver"
    assert parse_terminology(tag)["type"] == ("SCT", "10200004", "Liver")
    for code, organ in [("78961009", "spleen"), ("15776009", "pancreas"), ("69748006", "thyroid"),
                        ("64033007", "kidney"), ("127954009", "skeletal muscle"),
                        ("39607008", "lung"), ("14016003", "bone marrow"),
                        ("74281007", "heart"), ("589001", "heart"), ("80891009", "heart")]:
        assert organ_from_terminology(f"SCT^{code}^x").organ == organ
        assert organ_from_terminology(code).organ == organ
    mass_in_liver = ("ctx~SCT^49755003^Morphologically Altered Structure~SCT^4147007^Mass~^^"
                     "~Anatomic codes~SCT^10200004^Liver~^^")
    assert recognise_organ("Segment_2", terminology=mass_in_liver).organ == "lesion"
    assert organ_from_terminology({"CodeValue": "78961009"}).organ == "spleen"


def test_override_wins_and_is_checked():
    m = recognise_organ("Segment_3", override="Spleen")
    assert (m.organ, m.source) == ("spleen", "override")
    assert recognise_organ("liver", override="none").organ is None
    with pytest.raises(InputError, match="Use one of"):
        recognise_organ("liver", override="gallbladder")
    assert set(ORGANS) >= {"liver", "lesion", "heart"}


@pytest.mark.parametrize("organ, t2_normal, t2_loaded", [("kidney", 45.0, 20.0),
                                                        ("pancreas", 40.0, 10.0)])
def test_notes_agree_with_the_grade(organ, t2_normal, t2_loaded):
    normal = grade_region(organ, 1.5, r2star_per_s=1000.0 / t2_normal, t2star_ms=t2_normal)
    loaded = grade_region(organ, 1.5, r2star_per_s=1000.0 / t2_loaded, t2star_ms=t2_loaded)
    assert normal["grade"] == "normal" and loaded["grade"] == "iron overload"
    assert not any("below the lower limit" in n for n in normal["notes"]), normal["notes"]
    assert any("within the range" in n for n in normal["notes"])
    assert any("below the lower limit" in n for n in loaded["notes"])
    heart = grade_region("heart", 1.5, t2star_ms=30.0)
    assert heart["grade"] == "normal" and not any("heart failure" in n for n in heart["notes"])
    assert any("heart failure" in n for n in grade_region("heart", 1.5, t2star_ms=5.0)["notes"])


def test_descriptive_notes_do_not_repeat_the_organ_name():
    for organ in ("spleen", "thyroid"):
        notes = grade_region(organ, 1.5, r2star_per_s=30.0, t2star_ms=33.0)["notes"]
        assert notes and not any(n.startswith(f"{organ}:") for n in notes)
    assert grade_region(None, 1.5, r2star_per_s=30.0)["notes"] == []
