"""summarize() on the phantom presets: truth within noise, LIC, grades, pattern, lesions, outputs."""

import csv
import functools
import json
import warnings

import numpy as np
import pytest

from IronMapping.calibration import get_calibration
from IronMapping.errors import CalibrationError, GeometryError
from IronMapping.phantom import make_phantom
from IronMapping.quantification import (regions_table, summarize, write_regions_csv,
                                        write_summary_json)
from IronMapping.relaxometry import fit

SHAPE = (8, 48, 64)
REQUIRED_REGION_KEYS = {"name", "organ", "n_voxels", "volume_ml", "r2star_median", "r2star_mean",
                        "r2star_sd", "t2star_median", "r2star_roi_fit", "lic_mg_per_g", "grade"}


@functools.lru_cache(maxsize=None)
def phantom_fit(preset, field=1.5):
    ph = make_phantom(preset, shape=SHAPE, snr=50, coils=1, seed=7, field_strength_t=field)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f = fit(ph.image.signal, ph.image.echo_times_ms, field_strength_t=field)
    return ph, f


@functools.lru_cache(maxsize=None)
def phantom_summary(preset, field=1.5):
    ph, f = phantom_fit(preset, field)
    return summarize(f, ph.labels, ph.label_names, field, signal=ph.image.signal,
                     echo_times_ms=ph.image.echo_times_ms, voxel_volume_ml=ph.image.voxel_volume_ml)


def by_name(summary):
    return {r["name"]: r for r in summary["regions"]}


@pytest.mark.parametrize("preset", ["neonatal-haemochromatosis", "transfusional"])
def test_phantom_regions_match_truth_within_noise(preset):
    ph, f = phantom_fit(preset)
    s = phantom_summary(preset)
    rows = by_name(s)
    assert set(rows) == set(ph.label_names.values())
    for name, truth in ph.region_r2star.items():
        r = rows[name]
        assert r["n_voxels"] == int(np.count_nonzero(ph.labels == [k for k, v in ph.label_names.items() if v == name][0]))
        assert r["volume_ml"] == pytest.approx(r["n_voxels"] * ph.image.voxel_volume_ml)
        # median within 4 standard errors (plus 1 % for the estimator's own bias)
        tol = 4 * r["r2star_se_median"] + 0.01 * truth
        assert abs(r["r2star_median"] - truth) < tol, (name, r["r2star_median"], truth, tol)
        assert r["t2star_median"] == pytest.approx(1000.0 / r["r2star_median"], rel=0.02)
        assert r["r2star_roi_fit"] == pytest.approx(truth, rel=0.05), name
        assert r["excluded_fraction"] == 0.0
    assert REQUIRED_REGION_KEYS <= set(s["regions"][0])


def test_json_shape_is_the_published_contract():
    s = phantom_summary("neonatal-haemochromatosis")
    assert {"regions", "pattern", "calibration", "field_strength_t", "method"} <= set(s)
    assert {"kind", "extrahepatic_siderosis", "spleen_spared", "text"} <= set(s["pattern"])
    assert {"name", "citation", "doi", "equation", "field_strength_t"} <= set(s["calibration"])
    assert s["field_strength_t"] == 1.5 and s["method"] == "noise-corrected-ml"
    assert s["units"]["r2star_*"] == "1/s" and s["units"]["t2star_*"] == "ms"
    assert s["units"]["lic_mg_per_g"] == "mg Fe/g dry weight"
    json.dumps(s, allow_nan=False)  # strict JSON: no NaN anywhere
    assert "research" in s["research_use"].lower()


def test_neonatal_haemochromatosis_preset():
    s = phantom_summary("neonatal-haemochromatosis")
    rows = by_name(s)
    liver = rows["liver"]
    assert liver["organ"] == "liver"
    assert liver["lic_mg_per_g"] == pytest.approx(get_calibration("wood2005").lic(liver["r2star_median"]))
    assert liver["grade"] == "moderate" and liver["grade_source"].startswith("Brazilian")
    assert rows["myocardium"]["organ"] == "heart" and rows["myocardium"]["grade"] == "severe"
    assert rows["myocardium"]["grade_basis"].startswith("ROI-averaged fit T2*")
    assert rows["pancreas"]["grade"] == "iron overload"
    assert rows["spleen"]["lic_mg_per_g"] is None and rows["spleen"]["grade"] is None
    assert rows["thyroid"]["grade"] is None and rows["thyroid"]["reference_ratio_r2star"] > 5
    assert rows["soft tissue"]["organ"] is None and rows["soft tissue"]["r2star_median"] is not None
    p = s["pattern"]
    assert p["kind"] == "parenchymal" and p["extrahepatic_siderosis"] is True and p["spleen_spared"] is True
    assert p["pancreas_spleen_ratio"] == pytest.approx(280.0 / 28.0, rel=0.05)
    assert s["calibration"]["applied"] is True and s["calibration"]["name"] == "wood2005"
    assert s["calibration"]["default"] is True


def test_transfusional_preset():
    s = phantom_summary("transfusional")
    rows = by_name(s)
    assert rows["liver"]["grade"] == "severe" and rows["pancreas"]["grade"] == "normal"
    assert rows["myocardium"]["grade"] == "normal"
    p = s["pattern"]
    assert p["kind"] == "reticuloendothelial" and p["spleen_spared"] is False
    assert p["extrahepatic_siderosis"] is False
    assert "does not exclude neonatal haemochromatosis" in p["nh_support"]["text"]


def test_lesion_hyperintense_in_nh_and_isointense_in_transfusional():
    hyper = phantom_summary("neonatal-haemochromatosis")["lesions"]
    iso = phantom_summary("transfusional")["lesions"]
    assert len(hyper) == len(iso) == 1
    assert hyper[0]["background"] == "liver" and hyper[0]["reading"] == "hyperintense to liver on T2*"
    assert hyper[0]["exceeds_uncertainty"] is True and hyper[0]["ratio_r2star"] == pytest.approx(60 / 450, rel=0.1)
    assert iso[0]["reading"] == "isointense to liver on T2*" and iso[0]["exceeds_uncertainty"] is False
    assert by_name(phantom_summary("transfusional"))["liver lesion"]["lesion_reading"].startswith("isointense")


def test_signal_intensity_ratio_to_muscle_per_echo():
    ph, _ = phantom_fit("neonatal-haemochromatosis")
    s = phantom_summary("neonatal-haemochromatosis")
    assert s["reference_region"] == "skeletal muscle" and s["sir"]["echo_times_ms"] == list(ph.image.echo_times_ms)
    liver_sir = s["sir"]["regions"]["liver"]
    assert len(liver_sir) == ph.image.n_echoes
    # liver decays much faster than muscle: the ratio falls with echo time
    assert liver_sir[0] > liver_sir[3] > liver_sir[6]
    te1 = ph.image.echo_times_ms[0] / 1000.0
    expected = 1000.0 * np.exp(-450 * te1) / (800.0 * np.exp(-28 * te1))
    assert liver_sir[0] == pytest.approx(expected, rel=0.05)


def test_labels_on_another_grid_are_refused():
    ph, f = phantom_fit("neonatal-haemochromatosis")
    with pytest.raises(GeometryError, match="resample"):
        summarize(f, ph.labels[:, :, :-1], ph.label_names, 1.5)
    with pytest.raises(GeometryError):
        summarize(f, ph.labels, ph.label_names, 1.5, signal=ph.image.signal[:, :-1])


def test_empty_named_region_gets_a_row_with_a_note():
    ph, f = phantom_fit("neonatal-haemochromatosis")
    names = dict(ph.label_names)
    names[20] = "Bone marrow"      # named, never painted (e.g. outside the imaged slab)
    s = summarize(f, ph.labels, names, 1.5, signal=ph.image.signal, echo_times_ms=ph.image.echo_times_ms)
    row = by_name(s)["Bone marrow"]
    assert row["n_voxels"] == 0 and row["r2star_median"] is None and row["r2star_roi_fit"] is None
    assert row["organ"] == "bone marrow" and any("empty" in n for n in row["notes"])
    assert "empty" in regions_table(s)[-1]["Notes"]


def test_unnamed_labels_and_overrides():
    ph, f = phantom_fit("neonatal-haemochromatosis")
    names = {k: f"Segment_{k}" for k in ph.label_names}
    s = summarize(f, ph.labels, names, 1.5, organs={1: "liver", "Segment_2": "spleen"},
                  terminology={3: "Segmentation category and type~SCT^123037004^Anatomical Structure"
                                  "~SCT^15776009^Pancreas~^^~Anatomic codes~^^~^^"})
    rows = by_name(s)
    assert rows["Segment_1"]["organ"] == "liver" and rows["Segment_1"]["organ_source"] == "override"
    assert rows["Segment_2"]["organ"] == "spleen"
    assert rows["Segment_3"]["organ"] == "pancreas" and rows["Segment_3"]["organ_source"] == "terminology"
    assert rows["Segment_4"]["organ"] is None and rows["Segment_4"]["r2star_median"] is not None
    assert rows["Segment_1"]["lic_mg_per_g"] is not None
    s2 = summarize(f, ph.labels, {1: "liver"}, 1.5)
    assert "label 2" in by_name(s2)


def test_unknown_field_strength_refuses_lic_and_grades_with_a_note():
    ph, f = phantom_fit("neonatal-haemochromatosis")
    s = summarize(f, ph.labels, ph.label_names, None)
    liver = by_name(s)["liver"]
    assert s["field_strength_t"] is None and s["field_strength_known"] is False
    assert liver["lic_mg_per_g"] is None and liver["grade"] is None
    assert "unknown" in liver["lic_note"] and s["calibration"]["applied"] is False
    assert any("field strength unknown" in n for n in s["notes"])
    assert s["pattern"]["kind"] == "indeterminate"
    assert liver["r2star_median"] is not None          # statistics still there
    s_img = summarize(f, ph.labels, ph.label_names, None, signal=ph.image)
    assert any("image metadata says 1.5 T" in n for n in s_img["notes"])
    assert by_name(s_img)["liver"]["lic_mg_per_g"] is None


def test_three_tesla():
    ph, f = phantom_fit("neonatal-haemochromatosis", 3.0)
    # explicit 1.5 T calibration on 3 T data: refused
    with pytest.raises(CalibrationError, match="convert_field"):
        summarize(f, ph.labels, ph.label_names, 3.0, calibration="wood2005")
    # default calibration: no LIC, a note, but 3 T grades
    s = summarize(f, ph.labels, ph.label_names, 3.0)
    liver = by_name(s)["liver"]
    assert liver["lic_mg_per_g"] is None and "3.0 T" in liver["lic_note"]
    assert liver["grade"] == "moderate"                 # 900 1/s at 3 T: 435 < R2* <= 952
    assert by_name(s)["myocardium"]["grade"] is not None
    # explicit conversion: LIC with a visible warning
    c = summarize(f, ph.labels, ph.label_names, 3.0, calibration="wood2005", convert_field=True)
    cl = by_name(c)["liver"]
    assert cl["lic_mg_per_g"] is not None and c["calibration"]["conversion"]["name"] == "ina2018"
    assert any("converted" in w for w in c["warnings"])


def test_min_quality_excludes_and_reports():
    ph, f = phantom_fit("neonatal-haemochromatosis")
    s = summarize(f, ph.labels, ph.label_names, 1.5, min_quality=0.97)
    soft = by_name(s)["soft tissue"]
    assert soft["excluded_fraction"] > 0.5 and soft["excluded_by_status"]["quality_below_min"] > 0
    assert s["min_quality"] == 0.97


def test_regions_table_and_files(tmp_path):
    s = phantom_summary("neonatal-haemochromatosis")
    rows = regions_table(s)
    assert len(rows) == len(s["regions"])
    header = list(rows[0])
    for col in ("R2* median (1/s)", "T2* median (ms)", "Volume (mL)", "LIC (mg Fe/g dw)",
                "R2* ROI fit (1/s)", "Excluded voxels (%)", "Grade source"):
        assert col in header
    liver = next(r for r in rows if r["Region"] == "liver")
    assert liver["LIC calibration"].startswith("Wood 2005") and "doi:" in liver["LIC calibration"]
    csv_path = write_regions_csv(s, tmp_path / "regions.csv")
    with open(csv_path, newline="", encoding="utf-8") as fh:
        read = list(csv.DictReader(fh))
    assert [r["Region"] for r in read] == [r["Region"] for r in rows]
    assert float(read[0]["R2* median (1/s)"]) == pytest.approx(rows[0]["R2* median (1/s)"])
    json_path = write_summary_json(s, tmp_path / "summary.json")
    assert json.loads(json_path.read_text())["pattern"]["kind"] == "parenchymal"
    assert not list(tmp_path.glob("*.tmp"))


def test_spin_echo_t2_maps_get_statistics_but_no_lic_grade_or_pattern():
    ph, _ = phantom_fit("neonatal-haemochromatosis")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f = fit(ph.image.signal, ph.image.echo_times_ms, quantity="T2", field_strength_t=1.5)
    s = summarize(f, ph.labels, ph.label_names, 1.5)
    liver = by_name(s)["liver"]
    assert liver["r2star_median"] is not None and liver["lic_mg_per_g"] is None and liver["grade"] is None
    assert "spin echo" in liver["lic_note"] and s["quantity"] == "T2"
    assert s["pattern"]["kind"] == "indeterminate" and "spin echo" in s["pattern"]["text"]


def test_no_liver_region_is_said_in_the_calibration_block():
    ph, f = phantom_fit("neonatal-haemochromatosis")
    s = summarize(f, ph.labels, {2: "spleen"}, 1.5)
    assert s["calibration"]["applied"] is False and "no region recognised as liver" in s["calibration"]["note"]


def _decimals(text: str) -> int:
    return len(text.split(".")[1]) if "." in text else 0


def test_regions_csv_numbers_have_display_precision_summary_keeps_full(tmp_path):
    from IronMapping.quantities import BY_KEY, REGION_QUANTITIES

    s = phantom_summary("neonatal-haemochromatosis")
    write_regions_csv(s, tmp_path / "regions.csv")
    with open(tmp_path / "regions.csv", newline="", encoding="utf-8") as fh:
        read = list(csv.DictReader(fh))
    limits = {"R2* median (1/s)": 1, "R2* SD (1/s)": 1, "T2* median (ms)": 2,
              "T2* P95 (ms)": 2, "LIC (mg Fe/g dw)": 2, "Volume (mL)": 1,
              "R2* ROI fit (1/s)": 1, "Excluded voxels (%)": 1}
    for row in read:
        for column, decimals in limits.items():
            if row[column]:
                assert _decimals(row[column]) <= decimals, (row["Region"], column, row[column])
    liver_csv = next(r for r in read if r["Region"] == "liver")
    liver = by_name(s)["liver"]
    assert float(liver_csv["R2* median (1/s)"]) == round(liver["r2star_median"], 1)
    assert float(liver_csv["Volume (mL)"]) == round(liver["volume_ml"], 1)
    # summary.json: full precision
    write_summary_json(s, tmp_path / "summary.json")
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["regions"][0]["r2star_median"] == liver["r2star_median"]
    assert _decimals(repr(liver["r2star_median"])) > 1
    # one table: every column of the CSV is a quantity (label, unit, precision, UCUM) or text
    assert [q.label for q in REGION_QUANTITIES] == list(read[0])[:len(REGION_QUANTITIES)]
    assert BY_KEY["r2star_median"].ucum == "s-1" and BY_KEY["lic_mg_per_g"].ucum == "mg/g"


def test_region_notes_read_as_plain_sentences():
    s = phantom_summary("neonatal-haemochromatosis")
    rows = {r["Region"]: r for r in regions_table(s)}
    for name, row in rows.items():
        notes = row["Notes"]
        assert ".;" not in notes and ";;" not in notes, (name, notes)
        assert "organs=" not in notes and "True" not in notes and "False" not in notes
        assert f"{row['Organ']}: {row['Organ']}:" not in notes
    soft = rows["soft tissue"]["Notes"]
    assert soft.count("not recognised") == 1, soft
    assert "below the lower limit" not in rows["kidney"]["Notes"]  # graded normal
    assert rows["kidney"]["Grade"] == "normal"
    assert "below the lower limit" in rows["pancreas"]["Notes"]    # graded iron overload
    assert not rows["spleen"]["Notes"].startswith("spleen:")


def test_spin_echo_table_says_r2_and_t2():
    import dataclasses

    ph, f = phantom_fit("neonatal-haemochromatosis")
    s = summarize(dataclasses.replace(f, quantity="T2"), ph.labels, ph.label_names, 1.5)
    rows = regions_table(s)
    assert "R2 median (1/s)" in rows[0] and "T2 median (ms)" in rows[0]
    assert not any("*" in column for column in rows[0])


def test_calibration_refusal_note_has_no_python_booleans():
    s = phantom_summary("neonatal-haemochromatosis", 3.0)
    liver = next(r for r in regions_table(s) if r["Region"] == "liver")
    assert "LIC not computed" in liver["Notes"]
    assert "True" not in liver["Notes"] and "--convert-field" in liver["Notes"]


def test_the_typed_dicts_describe_the_summary():
    from IronMapping.quantification import CalibrationBlock, RegionRow, Summary

    s = phantom_summary("neonatal-haemochromatosis")
    assert list(s) == list(Summary.__annotations__)
    assert list(s["calibration"]) == list(CalibrationBlock.__annotations__)
    optional = {"lic_grade", "lesion_reading", "focal_findings_n", "heterogeneity_robust_cv",
                "heterogeneity_excess_cv"}
    declared = set(RegionRow.__annotations__)
    for row in s["regions"]:
        assert declared - optional <= set(row), row["name"]
        assert set(row) & optional <= declared
    assert any("lic_grade" in r for r in s["regions"]) and any("lesion_reading" in r for r in s["regions"])
