"""The first screen of the report and the Slicer panel: the clinical answer in words, with the
number and unit each answer rests on, censored measurements as bounds, lesions and focal
findings as sentences, and never a Python boolean on the page."""

import copy
import html as htmllib
import re

import pytest

from IronMapping import RESEARCH_USE_STATEMENT, headline, report
from IronMapping.phantom import make_phantom
from IronMapping.quantification import summarize
from IronMapping.relaxometry import fit


@pytest.fixture(scope="module")
def nh_summary():
    """A real summary: the neonatal haemochromatosis phantom fitted and summarised."""
    ph = make_phantom("neonatal-haemochromatosis", shape=(6, 48, 64), snr=60, seed=3)
    im = ph.image
    result = fit(im.signal, im.echo_times_ms, field_strength_t=im.field_strength_t)
    return summarize(result, ph.labels, ph.label_names, im.field_strength_t, signal=im.signal,
                     echo_times_ms=im.echo_times_ms, voxel_volume_ml=im.voxel_volume_ml)


def visible_text(page: str) -> str:
    """What a reader sees: tags removed, the raw JSON block left out."""
    page = re.sub(r'<details class="json">.*?</details>', "", page, flags=re.S)
    page = re.sub(r"<style>.*?</style>", "", page, flags=re.S)
    page = re.sub(r"</?(strong|b|i|em|span|small)\b[^>]*>", "", page)
    return re.sub(r"\s+", " ", htmllib.unescape(re.sub(r"<[^>]+>", " ", page)))


def first_screen(page: str) -> str:
    match = re.search(r'<section class="first-screen".*?</section>', page, re.S)
    assert match, "the report has no first-screen section"
    return visible_text(match.group(0))


def region(summary, name):
    return next(r for r in summary["regions"] if r["name"] == name)


def test_display_precision_table_drives_every_number():
    assert headline.fmt("r2star", 450.19834) == "450.2 1/s"
    assert headline.fmt("t2star", 2.221243) == "2.22 ms"
    assert headline.fmt("lic", 11.637038) == "11.64 mg Fe/g dw"
    assert headline.fmt("volume", 673.056) == "673.1 mL"
    assert headline.fmt("r2star", None) == headline.DASH
    assert headline.fmt("r2star", float("nan")) == headline.DASH
    assert headline.fmt_ratio(10.756) == "10.8" and headline.fmt_ratio(0.1332) == "0.13"
    assert headline.fmt_ratio(1.007) == "1.01"
    assert headline.yes_no(True) == "yes" and headline.yes_no(None) == "not assessable"


def test_first_screen_answers_per_organ_with_number_unit_and_source(nh_summary):
    page = report.render_report(nh_summary, figures=False)
    screen = first_screen(page)
    liver, heart = region(nh_summary, "liver"), region(nh_summary, "myocardium")
    pancreas, thyroid = region(nh_summary, "pancreas"), region(nh_summary, "thyroid")
    # liver: grade in words, LIC with its calibration name
    assert f"{liver['grade']} iron overload" in screen
    assert f"LIC {liver['lic_mg_per_g']:.2f} mg Fe/g dw (Wood 2005)" in screen
    # heart: T2* of the ROI-averaged fit (the cardiac standard), graded
    assert f"{heart['grade']} iron overload" in screen
    assert f"T2* {heart['t2star_roi_fit']:.2f} ms (ROI-averaged fit" in screen
    # pancreas T2*
    assert f"T2* {pancreas['t2star_median']:.2f} ms" in screen and pancreas["grade"] in screen
    # an organ without a published cut-off is shown by its ratio in words, not dropped
    ratio = thyroid["reference_ratio_r2star"]
    assert ratio >= 10 and f"R2* {ratio:.1f} x skeletal muscle" in screen
    assert "spleen" in screen and "spared" in screen
    # pattern, neonatal haemochromatosis support, research use
    assert nh_summary["pattern"]["text"] in screen
    assert "Neonatal haemochromatosis:" in screen and "Chavhan" in screen
    assert RESEARCH_USE_STATEMENT in screen
    # every region has a line
    for r in nh_summary["regions"]:
        assert r["name"] in screen, r["name"]


def test_no_python_booleans_or_none_anywhere_a_reader_looks(nh_summary):
    summary = copy.deepcopy(nh_summary)
    summary["focal_findings"] = []
    page = report.render_report(summary, figures=False,
                                inputs={"convert_field": False, "labels": None, "te": [1.0, 2.0]})
    text = visible_text(page)
    assert not re.search(r"\b(True|False|None)\b", text), re.findall(r".{40}\b(?:True|False|None)\b.{20}", text)
    qt = visible_text(headline.headline_html(summary, flavour="qt"))
    assert not re.search(r"\b(True|False|None)\b", qt)
    assert "Extrahepatic siderosis: yes (pancreas, heart)" in text


def test_nh_sentence_only_where_the_neonatal_question_is_asked(nh_summary):
    assert headline.is_neonatal_question(nh_summary)
    adult = copy.deepcopy(nh_summary)
    adult["regions"] = [r for r in adult["regions"] if r["organ"] not in ("thyroid", "salivary gland")]
    adult["pattern"]["nh_support"]["nh_pattern_present"] = False
    assert not headline.is_neonatal_question(adult)
    assert "Neonatal haemochromatosis:" not in first_screen(report.render_report(adult, figures=False))
    adult["neonatal"] = True  # the caller knows the patient is a newborn
    assert "Neonatal haemochromatosis:" in first_screen(report.render_report(adult, figures=False))


def severe_censored_summary():
    """Hand-made: a liver whose decay beats the protocol (the severe-iron contract keys)."""
    return {
        "field_strength_t": 1.5, "quantity": "T2*", "reference_region": "skeletal muscle",
        "calibration": {"name": "wood2005", "label": "Wood 2005", "applied": True},
        "regions": [
            {"name": "liver", "organ": "liver", "n_voxels": 900, "r2star_median": None,
             "t2star_median": None, "lic_mg_per_g": None, "grade": None,
             "r2star_censored_fraction": 0.62, "r2star_lower_bound": 1850.0,
             "lic_lower_bound": 47.19, "notes": []},
            {"name": "septum", "organ": "heart", "n_voxels": 80, "r2star_median": 180.0,
             "t2star_median": 5.56, "r2star_roi_fit": 178.0, "t2star_roi_fit": 5.62,
             "grade": "severe", "grade_criterion": "T2* < 10 ms",
             "r2star_censored_fraction": 0.1, "r2star_lower_bound": 1850.0},
            {"name": "skeletal muscle", "organ": "skeletal muscle", "n_voxels": 300,
             "r2star_median": 28.0, "t2star_median": 35.7},
        ],
    }


def test_censored_liver_is_shown_as_a_lower_bound_never_as_a_number():
    summary = severe_censored_summary()
    page = report.render_report(summary, figures=False)
    screen = first_screen(page)
    assert "R2* > 1850 1/s" in screen
    assert "LIC > 47.19 mg Fe/g dw (Wood 2005)" in screen
    assert "T2* < 0.54 ms" in screen
    # a lower bound in the open top band still grades: severe
    liver = next(f for f in headline.organ_findings(summary) if f.name == "liver")
    assert liver.verdict.startswith("severe iron overload") and "lower bound" in liver.verdict
    assert "62% of voxels decay faster than the echoes can measure" in screen
    septum = next(f for f in headline.organ_findings(summary) if f.name == "septum")
    assert any("10% of voxels" in n for n in septum.notes)
    table = visible_text(re.search(r'<table class="data regions".*?</table>', page, re.S).group(0))
    assert "> 1850" in table and "> 47.19" in table


def test_lower_bound_below_the_top_band_gives_no_grade():
    summary = severe_censored_summary()
    summary["regions"][0]["r2star_lower_bound"] = 300.0  # could be moderate or severe
    liver = next(f for f in headline.organ_findings(summary) if f.name == "liver")
    assert liver.level == "unknown" and "R2* > 300 1/s" in liver.detail


def test_without_the_censoring_keys_nothing_is_claimed(nh_summary):
    for f in headline.organ_findings(nh_summary):
        assert not any("decay faster" in n for n in f.notes)
        assert ">" not in f.value


def test_lesion_is_one_sentence_and_its_statistics_are_in_a_details_block(nh_summary):
    sentences = headline.lesion_sentences(nh_summary)
    lesion = nh_summary["lesions"][0]
    assert len(sentences) == len(nh_summary["lesions"]) == 1
    assert sentences[0].startswith("Liver lesion is hyperintense to liver on T2*")
    assert f"ratio {lesion['ratio_r2star']:.2f}" in sentences[0]
    assert f"{abs(lesion['difference_r2star']):.1f} 1/s" in sentences[0]
    page = report.render_report(nh_summary, figures=False)
    block = re.search(r"<details><summary>Lesion statistics</summary>.*?</details>", page, re.S)
    assert block and "Beyond 2 x uncertainty" in block.group(0)
    assert "coverage_factor" not in visible_text(page) and "standard error" not in visible_text(page)


def test_focal_findings_render_as_sentences(nh_summary):
    summary = copy.deepcopy(nh_summary)
    summary["focal_findings"] = [
        {"region": "liver", "kind": "iron-sparing", "volume_ml": 3.24, "r2star_median": 80.04,
         "background_r2star_median": 450.2, "centroid_ras": [-12.0, 30.5, -4.0],
         "reading": "hyperintense to the background liver on T2*"},
        {"region": "spleen", "kind": "iron-dense", "volume_ml": 0.5, "r2star_median": 600.0,
         "background_r2star_median": 28.0, "centroid_ras": [40.0, -10.0, 2.0], "reading": []}]
    page = report.render_report(summary, figures=False)
    text = visible_text(page)
    assert ("Iron-sparing focus in liver: 3.2 mL, R2* 80.0 vs background 450.2 1/s at "
            "L 12.0, A 30.5, I 4.0 mm. Hyperintense to the background liver on T2*." in text)
    assert "Iron-dense focus in spleen: 0.5 mL, R2* 600.0 vs background 28.0 1/s at R 40.0, P 10.0, S 2.0 mm." in text
    summary["focal_findings"] = []
    assert "found no iron-sparing or iron-dense focus" in report.render_report(summary, figures=False)
    del summary["focal_findings"]
    assert "focal iron analysis" not in report.render_report(summary, figures=False).lower()


def test_qt_panel_html_holds_the_same_answer(nh_summary):
    panel = headline.headline_html(nh_summary, flavour="qt", warnings=["check the echoes"],
                                   footer="Method noise-corrected-ml; 1.2 s.")
    text = visible_text(panel)
    liver = region(nh_summary, "liver")
    assert f"LIC {liver['lic_mg_per_g']:.2f} mg Fe/g dw" in text
    assert "x skeletal muscle" in text and "Neonatal haemochromatosis" in text
    assert "check the echoes" in text and "Method noise-corrected-ml" in text
    assert RESEARCH_USE_STATEMENT in text
    # the Qt rich-text subset: no stylesheet, classes or scripts; starts with a tag (auto-detected)
    assert panel.startswith("<") and "class=" not in panel and "<style" not in panel
    assert headline.headline_html({}, flavour="qt").count("No regions") == 1


def test_notes_per_region_do_not_repeat_prefixes(nh_summary):
    page = report.render_report(nh_summary, figures=False)
    block = re.search(r'<details class="notes">.*?</details>', page, re.S).group(0)
    text = visible_text(block)
    assert "thyroid: thyroid:" not in text and "spleen: spleen:" not in text
    assert "no published quantitative cut-off" in text


def test_spin_echo_summary_speaks_of_t2():
    summary = severe_censored_summary()
    summary["quantity"] = "T2"
    summary["regions"][1]["organ"] = None
    screen = first_screen(report.render_report(summary, figures=False))
    assert "R2 > 1850 1/s" in screen and "R2*" not in screen


def test_liver_without_lic_says_why_in_one_sentence():
    summary = severe_censored_summary()
    liver = summary["regions"][0]
    liver.update(r2star_median=1300.0, r2star_lower_bound=None, lic_lower_bound=None,
                 grade="severe", r2star_censored_fraction=0.0,
                 lic_note=("LIC not computed: Calibration Wood 2005 was made at 1.5 T but the data "
                           "were acquired at 3.0 T. Applying it would misstate the LIC."))
    finding = next(f for f in headline.organ_findings(summary) if f.name == "liver")
    assert finding.value == "LIC not computed" and finding.verdict == "severe iron overload"
    assert finding.notes == ["LIC: Calibration Wood 2005 was made at 1.5 T but the data were "
                             "acquired at 3.0 T."]


def test_empty_segment_keeps_its_line():
    summary = severe_censored_summary()
    summary["regions"].append({"name": "pancreas", "organ": "pancreas", "n_voxels": 0,
                               "r2star_median": None})
    finding = next(f for f in headline.organ_findings(summary) if f.name == "pancreas")
    assert finding.verdict == "no voxels" and "empty" in finding.detail


def test_without_regions_the_first_screen_gives_the_whole_image_and_no_grade():
    summary = {"regions": [], "field_strength_t": 3.0, "quantity": "T2*",
               "whole_image": {"voxels": 1000, "fitted_voxels": 620, "fitted_fraction": 0.62,
                               "r2star_median": 20.76, "t2star_median": 48.17}}
    screen = first_screen(report.render_report(summary, figures=False))
    assert "No regions were segmented" in screen
    assert "All fitted voxels: R2* median 20.8 1/s, T2* median 48.17 ms; 62% of the image fitted" in screen
    assert "iron overload" not in screen
