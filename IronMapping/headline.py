"""The clinical answer of a run in words: per-organ grade with its number and unit, the iron
distribution pattern, neonatal haemochromatosis support, lesions and focal findings.

    >>> from IronMapping.headline import organ_findings, headline_html
    >>> [f.verdict for f in organ_findings(summary)]
    ['moderate iron overload', 'severe iron overload', ...]
    >>> headline_html(summary, flavour="qt")      # for the Slicer panel (Qt rich text)

Everything here reads the summary dict of ``quantification.summarize`` and returns text; the
HTML report and the Slicer panel show the same sentences. Numbers are rounded for reading only
(`DISPLAY_PRECISION`); summary.json keeps full precision.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from . import RESEARCH_USE_STATEMENT

# Where a person reads a number: (decimals, unit). One table, so it can move to a shared
# quantities module without touching the sentences.
DISPLAY_PRECISION: dict[str, tuple[int, str]] = {
    "r2star": (1, "1/s"),
    "t2star": (2, "ms"),
    "lic": (2, "mg Fe/g dw"),
    "volume": (1, "mL"),
    "ratio": (2, ""),
    "ratio_large": (1, ""),  # ratios >= 10, read as "10.8 x"
    "percent": (0, "%"),
    "bound": (0, ""),  # lower/upper bounds of censored measurements ("> 1850 1/s")
}

DASH = "\u2013"
GRADED_LEVELS = ("normal", "mild", "moderate", "severe")

# Clinical reading order; anything else follows in the summary's order.
ORGAN_ORDER = ("liver", "heart", "pancreas", "spleen", "thyroid", "salivary gland", "kidney",
               "bone marrow", "lung", "lesion", None, "skeletal muscle")


def fmt(quantity: str, value, unit: bool = True) -> str:
    """A value rounded as `DISPLAY_PRECISION` says, with its unit; a dash when missing.

    Parameters
    ----------
    quantity : str
        A key of `DISPLAY_PRECISION` ("r2star", "t2star", "lic", "volume", ...).
    value : float or None
        In the unit of that entry (1/s, ms, mg Fe/g dw, mL, ...).
    unit : bool
        Append the unit.

    Returns
    -------
    str
    """
    decimals, symbol = DISPLAY_PRECISION[quantity]
    if not _finite(value):
        return DASH
    text = f"{float(value):.{decimals}f}"
    if not (unit and symbol):
        return text
    return f"{text}{symbol}" if symbol == "%" else f"{text} {symbol}"


def fmt_ratio(value) -> str:
    """A ratio as read aloud: '10.8' from 10 up, '4.64', '1.01' and '0.13' below.

    Parameters
    ----------
    value : float or None

    Returns
    -------
    str
        A dash when missing.
    """
    if not _finite(value):
        return DASH
    return fmt("ratio_large" if abs(value) >= 10 else "ratio", value)


def yes_no(value, yes: str = "yes", no: str = "no", unknown: str = "not assessable") -> str:
    """Words for a True / False / None fact (never a Python boolean on the page).

    Parameters
    ----------
    value : bool or None
    yes, no, unknown : str
        The words for True, False and None.

    Returns
    -------
    str
    """
    return unknown if value is None else (yes if value else no)


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def symbols(summary: Mapping[str, Any]) -> tuple[str, str]:
    """("R2*", "T2*") for gradient echo, ("R2", "T2") for spin echo.

    Parameters
    ----------
    summary : mapping
        The summary dict (its "quantity").

    Returns
    -------
    (str, str)
    """
    quantity = (summary.get("quantity") or "T2*") if summary else "T2*"
    return ("R2*", "T2*") if quantity == "T2*" else ("R2", "T2")


@dataclass
class OrganFinding:
    """One line of the first screen.

    Attributes
    ----------
    name : str
        Region name as segmented.
    organ : str or None
        Recognised organ (None if not recognised).
    verdict : str
        The answer in words.
    level : str
        normal / mild / moderate / severe / loaded / spared / descriptive / lesion / reference /
        unknown (for colour).
    value : str
        The number the verdict rests on, with unit and basis.
    detail : str
        The other numbers.
    notes : list of str
        Cautions.
    """

    name: str
    organ: str | None
    verdict: str
    level: str
    value: str
    detail: str = ""
    notes: list = field(default_factory=list)


# --------------------------------------------------------------------------- per organ

def _r2_text(region, rate: str) -> str:
    """'R2* 450.2 1/s', or '> 1850 1/s' when more than half the voxels are censored."""
    median = region.get("r2star_median")
    if _finite(median):
        return f"{rate} {fmt('r2star', median)}"
    bound = region.get("r2star_lower_bound")
    if _finite(bound):
        return f"{rate} > {fmt('bound', bound)} 1/s"
    return f"{rate} {DASH}"


def _t2_text(region, relax: str, roi: bool = False) -> str:
    key = "t2star_roi_fit" if roi else "t2star_median"
    value = region.get(key)
    if _finite(value):
        return f"{relax} {fmt('t2star', value)}"
    bound = region.get("r2star_lower_bound")
    if not roi and _finite(bound) and bound > 0:
        return f"{relax} < {fmt('t2star', 1000.0 / bound)}"
    return f"{relax} {DASH}"


def _censoring_note(region, rate: str) -> str | None:
    share = region.get("r2star_censored_fraction")
    if not _finite(share) or share <= 0:
        return None
    bound = region.get("r2star_lower_bound")
    where = f" (above {fmt('bound', bound)} 1/s)" if _finite(bound) else ""
    text = (f"{fmt('percent', 100 * share)} of voxels decay faster than the echoes can "
            f"measure{where}: their {rate} is a lower bound")
    if not _finite(region.get("r2star_median")):
        text += "; the median is not measurable, shown as a lower bound"
    return text


def _grade_from_bound(region, field_strength_t) -> str | None:
    """The grade a lower bound on R2* implies, only when it falls in the open top band."""
    from .grading import find_scheme

    bound = region.get("r2star_lower_bound")
    organ = region.get("organ")
    if not _finite(bound) or bound <= 0 or organ not in ("liver", "heart", "pancreas", "kidney"):
        return None
    quantity = "R2*" if organ == "liver" else "T2*"
    scheme = find_scheme(organ, field_strength_t, quantity)
    if scheme is None:
        return None
    if quantity == "R2*":
        band = scheme.grade(bound * (1 + 1e-9))
        return band.label if band is not None and math.isinf(band.high) else None
    band = scheme.grade(1000.0 / bound * (1 - 1e-9))
    return band.label if band is not None and band.low <= 0 else None


def _verdict(grade: str | None) -> tuple[str, str]:
    """(words, level) for a published grade."""
    if grade is None:
        return "not graded", "unknown"
    if grade == "normal":
        return "normal", "normal"
    if grade == "iron overload":
        return "iron overload", "loaded"
    level = grade if grade in GRADED_LEVELS else ("moderate" if "moderate" in grade else "loaded")
    return f"{grade} iron overload", level


def _grade_reason(region) -> str:
    for note in region.get("notes") or []:
        if "field strength unknown" in str(note) or "no published" in str(note):
            return str(note)
    note = region.get("grade_note")
    return str(note) if note else "no grade"


def _calibration_label(summary) -> str:
    cal = summary.get("calibration")
    if not isinstance(cal, Mapping):
        return str(cal or "")
    label = cal.get("label") or cal.get("name") or ""
    if cal.get("conversion"):
        label += ", field-converted"
    return label


def _liver(region, summary, rate, relax) -> OrganFinding:
    grade = region.get("grade")
    implied = None if grade else _grade_from_bound(region, summary.get("field_strength_t"))
    verdict, level = _verdict(grade or implied)
    if implied:
        verdict += " (from a lower bound)"
    lic, lic_bound = region.get("lic_mg_per_g"), region.get("lic_lower_bound")
    calibration = _calibration_label(summary)
    if _finite(lic):
        value = f"LIC {fmt('lic', lic)} ({calibration})"
    elif _finite(lic_bound):
        value = f"LIC > {fmt('lic', lic_bound)} ({calibration})"
    else:
        value = "LIC not computed"
    detail = f"{_r2_text(region, rate)} · {_t2_text(region, relax)}"
    notes = []
    if not _finite(lic) and not _finite(lic_bound):
        cal = summary.get("calibration") if isinstance(summary.get("calibration"), Mapping) else {}
        why = region.get("lic_note") or cal.get("note") or "; ".join(cal.get("warnings") or [])
        if why:  # the first sentence on the first screen; the whole reason is under Method
            why = str(why)
            if why.startswith("LIC not computed: "):
                why = why[len("LIC not computed: "):]
            cut = why.find(". ")
            notes.append(f"LIC: {why[:cut + 1] if cut > 0 else why}")
    if grade is None and not implied:
        notes.append(_grade_reason(region))
    lic_grade = region.get("lic_grade")
    if lic_grade and grade and lic_grade != grade:
        notes.append(f"the LIC falls in the {lic_grade} LIC band while {rate} gives {grade}")
    return OrganFinding(region.get("name"), "liver", verdict, level, value, detail, notes)


def _t2_graded(region, summary, rate, relax) -> OrganFinding:
    """Heart (ROI-averaged fit when available), pancreas, kidney: graded on T2*."""
    organ = region.get("organ")
    grade = region.get("grade")
    implied = None if grade else _grade_from_bound(region, summary.get("field_strength_t"))
    verdict, level = _verdict(grade or implied)
    if implied:
        verdict += " (from a lower bound)"
    roi = organ == "heart" and _finite(region.get("t2star_roi_fit"))
    if roi:
        method = (region.get("roi_fit") or {}).get("method") or summary.get("roi_fit_method")
        value = f"{_t2_text(region, relax, roi=True)} (ROI-averaged fit{', ' + method if method else ''})"
        detail = f"{rate} {fmt('r2star', region.get('r2star_roi_fit'))} (ROI fit) · " \
                 f"voxel median {_t2_text(region, relax)}"
    else:
        value = _t2_text(region, relax)
        detail = _r2_text(region, rate)
    notes = [] if grade or implied else [_grade_reason(region)]
    if grade and region.get("grade_criterion"):
        detail += f" · criterion {region['grade_criterion']}"
    return OrganFinding(region.get("name"), organ, verdict, level, value, detail, notes)


def _ratio_words(region, summary, rate) -> str | None:
    ratio = region.get("reference_ratio_r2star")
    reference = summary.get("reference_region")
    if not _finite(ratio) or not reference:
        return None
    return f"{rate} {fmt_ratio(ratio)} x {reference}"


def _spleen(region, summary, rate, relax) -> OrganFinding:
    state = (((summary.get("pattern") or {}).get("organ_states") or {}).get("spleen") or {})
    loaded = state.get("loaded")
    if loaded is None:
        verdict, level = "not assessed", "unknown"
    elif loaded:
        verdict, level = "iron-loaded", "loaded"
    else:
        verdict, level = "spared", "spared"
    ratio = _ratio_words(region, summary, rate)
    detail = " · ".join(x for x in (_t2_text(region, relax), ratio) if x)
    notes = ["no spleen cut-off is published: judged against the normal liver " + rate + " range"]
    return OrganFinding(region.get("name"), "spleen", verdict, level,
                        _r2_text(region, rate), detail, notes)


def _descriptive(region, summary, rate, relax) -> OrganFinding:
    """Thyroid, salivary glands, lung, bone marrow: no cut-off; the ratio in words."""
    organ = region.get("organ")
    ratio = _ratio_words(region, summary, rate)
    spleen_ratio = (((summary.get("pattern") or {}).get("nh_support") or {})
                    .get("ratios_r2star") or {}).get(f"{organ}/spleen")
    if ratio:
        verdict = ratio
    else:
        verdict = (f"no reference region: segment {summary.get('reference_region') or 'skeletal muscle'}"
                   " for a ratio")
    extra = [_t2_text(region, relax)]
    if _finite(spleen_ratio):
        extra.append(f"{fmt_ratio(spleen_ratio)} x spleen")
    why = "not specific for iron (air-tissue susceptibility)" if organ == "lung" else \
        "no published cut-off"
    return OrganFinding(region.get("name"), organ, verdict, "descriptive",
                        _r2_text(region, rate), " · ".join(extra), [why])


def _lesion(region, summary, rate, relax) -> OrganFinding:
    comparison = next((c for c in summary.get("lesions") or []
                       if c.get("lesion") == region.get("name")), {})
    reading = comparison.get("reading") or region.get("lesion_reading")
    background = comparison.get("background")
    if reading:
        verdict = reading
        value = (f"{rate} {fmt('r2star', comparison.get('lesion_r2star_median'), unit=False)} vs "
                 f"{background} {fmt('r2star', comparison.get('background_r2star_median'))}")
        detail = (f"difference {_signed(comparison.get('difference_r2star'))} 1/s, ratio "
                  f"{fmt_ratio(comparison.get('ratio_r2star'))}")
    else:
        verdict = "not compared"
        value = _r2_text(region, rate)
        detail = comparison.get("text") or "no background liver to compare with"
    return OrganFinding(region.get("name"), "lesion", verdict, "lesion", value, detail)


def _signed(value) -> str:
    if not _finite(value):
        return DASH
    return ("+" if value > 0 else "\u2212" if value < 0 else "") + fmt("r2star", abs(value), unit=False)


def organ_findings(summary: Mapping[str, Any] | None) -> list[OrganFinding]:
    """One `OrganFinding` per region, in clinical reading order (none is left out).

    Parameters
    ----------
    summary : mapping or None
        The summary dict of ``quantification.summarize``.

    Returns
    -------
    list of OrganFinding
    """
    summary = summary or {}
    rate, relax = symbols(summary)
    regions = list(summary.get("regions") or [])
    order = {organ: n for n, organ in enumerate(ORGAN_ORDER)}
    regions.sort(key=lambda r: order.get(r.get("organ"), order[None]))
    out = []
    for region in regions:
        organ = region.get("organ")
        if region.get("n_voxels") == 0:
            out.append(OrganFinding(region.get("name"), organ, "no voxels", "unknown", DASH,
                                    "the segment is empty on the map grid"))
            continue
        if organ == "liver":
            finding = _liver(region, summary, rate, relax)
        elif organ in ("heart", "pancreas", "kidney"):
            finding = _t2_graded(region, summary, rate, relax)
        elif organ == "spleen":
            finding = _spleen(region, summary, rate, relax)
        elif organ in ("thyroid", "salivary gland", "lung", "bone marrow"):
            finding = _descriptive(region, summary, rate, relax)
        elif organ == "lesion":
            finding = _lesion(region, summary, rate, relax)
        elif organ == "skeletal muscle":
            finding = OrganFinding(region.get("name"), organ, "reference region", "reference",
                                   _r2_text(region, rate),
                                   _t2_text(region, relax))
        else:
            ratio = _ratio_words(region, summary, rate)
            finding = OrganFinding(region.get("name"), organ, "organ not recognised", "unknown",
                                   _r2_text(region, rate),
                                   " · ".join(x for x in (_t2_text(region, relax), ratio) if x),
                                   ["statistics only: name the segment after the organ to grade it"])
        censored = _censoring_note(region, rate)
        if censored:
            finding.notes.append(censored)
        out.append(finding)
    return out


# --------------------------------------------------------------------------- pattern, NH

def pattern_facts(summary) -> list[tuple[str, str]]:
    """The distribution pattern as (label, words) pairs (no booleans).

    Parameters
    ----------
    summary : mapping
        The summary dict.

    Returns
    -------
    list of (str, str)
    """
    pattern = summary.get("pattern") or {}
    if not isinstance(pattern, Mapping) or not pattern:
        return []
    rate, _ = symbols(summary)
    nh = pattern.get("nh_support") or {}
    facts = []
    if "kind" in pattern:
        facts.append(("Pattern", str(pattern["kind"])))
    if "extrahepatic_siderosis" in pattern:
        organs = ", ".join(nh.get("extrahepatic_organs") or [])
        words = yes_no(pattern["extrahepatic_siderosis"])
        facts.append(("Extrahepatic siderosis", f"{words} ({organs})" if organs and
                      pattern["extrahepatic_siderosis"] else words))
    if "spleen_spared" in pattern:
        facts.append(("Spleen", yes_no(pattern["spleen_spared"], "spared", "iron-loaded")))
    ratio = pattern.get("pancreas_spleen_ratio", nh.get("pancreas_spleen_r2star_ratio"))
    if _finite(ratio):
        facts.append((f"Pancreas/spleen {rate}", f"{fmt_ratio(ratio)} (derived index)"))
    return facts


def is_neonatal_question(summary) -> bool:
    """Whether the neonatal haemochromatosis sentence belongs on the first screen.

    The summary carries no age, so: the NH-type distribution is present, or the study was
    segmented the way an NH work-up is (thyroid or salivary glands), or the caller says so
    (``summary["neonatal"]``).

    Parameters
    ----------
    summary : mapping
        The summary dict.

    Returns
    -------
    bool
    """
    nh = ((summary.get("pattern") or {}).get("nh_support") or {})
    if not nh.get("text"):
        return False
    if summary.get("neonatal") is not None:
        return bool(summary["neonatal"])
    organs = {r.get("organ") for r in summary.get("regions") or []}
    return bool(nh.get("nh_pattern_present")) or bool(organs & {"thyroid", "salivary gland"})


def nh_sentence(summary) -> str | None:
    """The neonatal haemochromatosis support text of the pattern.

    Parameters
    ----------
    summary : mapping
        The summary dict.

    Returns
    -------
    str or None
        None when the summary has none.
    """
    nh = ((summary.get("pattern") or {}).get("nh_support") or {})
    return nh.get("text") or None


# --------------------------------------------------------------------------- lesions, foci

def lesion_sentences(summary) -> list[str]:
    """One sentence per lesion: reading on T2* with the R2* difference and ratio.

    Parameters
    ----------
    summary : mapping
        The summary dict (its "lesions").

    Returns
    -------
    list of str
    """
    rate, _ = symbols(summary)
    out = []
    for c in summary.get("lesions") or []:
        name = c.get("lesion") or "lesion"
        if not c.get("reading"):
            out.append(f"{_cap(name)}: {c.get('text') or 'no comparison possible'}.")
            continue
        background = c.get("background") or "liver"
        exceeds = c.get("exceeds_uncertainty")
        k = c.get("coverage_factor") or 2
        combined = c.get("combined_uncertainty_r2star")
        margin = (f"{fmt('r2star', k * combined)}" if _finite(combined) else "the uncertainty")
        if exceeds:
            why = f"the difference is larger than the measurement uncertainty ({margin}, {k:g} x combined)"
        else:
            why = f"the difference is within the measurement uncertainty ({margin}, {k:g} x combined)"
        meaning = {
            "isointense": "holds iron like the background liver (as extramedullary haematopoiesis does)",
            "hyperintense": "holds less iron than the background liver (as iron-excluding lesions "
                            "such as adenoma, HCC or metastasis do)",
            "hypointense": "holds more iron than the background liver",
        }.get(str(c["reading"]).split()[0], "")
        sentence = (f"{_cap(name)} is {c['reading']}: {rate} "
                    f"{fmt('r2star', c.get('lesion_r2star_median'), unit=False)} vs "
                    f"{fmt('r2star', c.get('background_r2star_median'))} in {background} "
                    f"(difference {_signed(c.get('difference_r2star'))} 1/s, ratio "
                    f"{fmt_ratio(c.get('ratio_r2star'))}); {why}.")
        out.append(f"{sentence} It {meaning}." if meaning else sentence)
    return out


def focal_sentences(summary) -> list[str]:
    """One sentence per entry of summary["focal_findings"] (iron-sparing / iron-dense foci).

    Parameters
    ----------
    summary : mapping
        The summary dict.

    Returns
    -------
    list of str
    """
    rate, _ = symbols(summary)
    out = []
    for f in summary.get("focal_findings") or []:
        if not isinstance(f, Mapping):
            continue
        kind = f.get("kind") or "focal finding"
        where = ""
        c = f.get("centroid_ras")
        if isinstance(c, (list, tuple)) and len(c) == 3 and all(_finite(v) for v in c):
            where = " at " + ", ".join(
                f"{'RAS'[n] if v >= 0 else 'LPI'[n]} {abs(v):.1f}" for n, v in enumerate(c)) + " mm"
        reading = f.get("reading")
        if isinstance(reading, (list, tuple)):
            reading = " ".join(str(r) for r in reading if r)
        text = (f"{_cap(kind)} focus in {f.get('region') or 'the region'}: "
                f"{fmt('volume', f.get('volume_ml'))}, {rate} "
                f"{fmt('r2star', f.get('r2star_median'), unit=False)} vs background "
                f"{fmt('r2star', f.get('background_r2star_median'))}{where}.")
        if reading:
            text += f" {_cap(str(reading).rstrip('.'))}."
        out.append(text)
    return out


def whole_image_sentence(summary) -> str | None:
    """The whole image in one sentence (runs without regions): medians and the share fitted.

    Parameters
    ----------
    summary : mapping
        The summary dict (its "whole_image").

    Returns
    -------
    str or None
    """
    whole = summary.get("whole_image")
    if not isinstance(whole, Mapping) or not _finite(whole.get("r2star_median")):
        return None
    rate, relax = symbols(summary)
    text = (f"All fitted voxels: {rate} median {fmt('r2star', whole['r2star_median'])}, "
            f"{relax} median {fmt('t2star', whole.get('t2star_median'))}")
    if _finite(whole.get("fitted_fraction")):
        text += f"; {fmt('percent', 100 * whole['fitted_fraction'])} of the image fitted"
    return text + " (not an organ value: segment the organs to grade them)."


def _first_sentence(text: str) -> tuple[str, str]:
    """Split after the first sentence that ends with a closing bracket or a word and '. '."""
    cut = text.find("). ")
    cut = cut + 2 if cut >= 0 else text.find(". ") + 1
    if cut <= 0:
        return text, ""
    return text[:cut].strip(), text[cut:].strip()


def _cap(text) -> str:
    text = str(text)
    return text[:1].upper() + text[1:]


# --------------------------------------------------------------------------- HTML

def _e(value) -> str:
    return html.escape(str(value), quote=True)


# Mid-tone colours: readable on Slicer's light and dark themes alike.
_QT_COLOURS = {"normal": "#2e9e4f", "spared": "#2e9e4f", "mild": "#c98a00", "moderate": "#e8590c",
               "severe": "#e03131", "loaded": "#e03131", "descriptive": "#8b5cf6",
               "lesion": "#3b82f6", "reference": "#888888", "unknown": "#888888"}


def headline_html(summary: Mapping[str, Any] | None, *, flavour: str = "report",
                  warnings: Iterable[str] = (), footer: str | None = None) -> str:
    """The first-screen summary as HTML.

    Parameters
    ----------
    summary : mapping or None
        The summary dict.
    flavour : str
        "report" (classes styled by the report's stylesheet) or "qt" (inline colours and plain
        tables, the HTML subset a Qt QLabel / QTextBrowser renders).
    warnings : iterable of str
        Extra sentences to list (e.g. the run's warnings in the Slicer panel).
    footer : str, optional
        A last line (e.g. method and run time).

    Returns
    -------
    str
    """
    summary = dict(summary or {})
    qt = flavour == "qt"
    findings = organ_findings(summary)
    pattern = summary.get("pattern") or {}
    statement = summary.get("research_use") or RESEARCH_USE_STATEMENT
    parts = [] if qt else [f'<p class="research">{_e(statement)}</p>']
    if pattern.get("text") and findings:
        parts.append(f"<p><b>{_e(pattern['text'])}</b></p>" if qt else
                     f'<p class="pattern-text">{_e(pattern["text"])}</p>')
    facts = pattern_facts(summary) if findings else []
    if facts:
        line = " · ".join(f"{label}: <b>{_e(words)}</b>" if qt else
                          f"{_e(label)}: <strong>{_e(words)}</strong>" for label, words in facts)
        parts.append(f"<p>{line}</p>" if qt else f'<p class="facts">{line}</p>')
    if findings and is_neonatal_question(summary):
        text = nh_sentence(summary)
        lead, rest = _first_sentence(text)
        parts.append(f"<p><i>Neonatal haemochromatosis:</i> {_e(lead)}"
                     f"{' <small>' + _e(rest) + '</small>' if rest else ''}</p>" if qt else
                     f'<p class="nh"><strong>Neonatal haemochromatosis:</strong> {_e(lead)}'
                     f'{" <span class=more>" + _e(rest) + "</span>" if rest else ""}</p>')
    if findings:
        rows = []
        for f in findings:
            note = "; ".join(f.notes)
            if qt:
                colour = _QT_COLOURS.get(f.level, "#333333")
                rows.append(
                    f'<tr><td valign="top"><b>{_e(f.name)}</b></td>'
                    f'<td valign="top"><span style="color:{colour}"><b>{_e(f.verdict)}</b></span></td>'
                    f'<td valign="top">{_e(f.value)}</td></tr>')
            else:
                main, _, basis = f.value.partition(" (")
                basis = f" ({basis}" if basis else ""
                detail = f'<div class="detail">{_e(f.detail)}</div>' if f.detail else ""
                why = f'<div class="why">{_e(note)}</div>' if note else ""
                rows.append(
                    f'<tr class="lv-{_e(f.level)}"><th scope=row>{_e(f.name)}</th>'
                    f'<td class="verdict"><span class="chip">{_e(f.verdict)}</span></td>'
                    f'<td class="value"><strong>{_e(main)}</strong>{_e(basis)}{detail}{why}</td></tr>')
        if qt:
            parts.append('<table cellspacing="0" cellpadding="2">' + "".join(rows) + "</table>")
        else:
            parts.append('<table class="headline"><thead><tr><th>Region</th><th>Finding</th>'
                         '<th>Measurement</th></tr></thead><tbody>'
                         + "".join(rows) + "</tbody></table>")
    elif not summary.get("regions"):
        parts.append("<p>No regions were segmented: maps only, no organ grades.</p>")
        whole = whole_image_sentence(summary)
        if whole:
            parts.append(f"<p>{_e(whole)}</p>")
    for sentence in focal_sentences(summary):
        parts.append(f"<p>{_e(sentence)}</p>" if qt else f'<p class="focal">{_e(sentence)}</p>')
    warnings = [w for w in warnings if w]
    if warnings:
        items = "".join(f"<li>{_e(w)}</li>" for w in warnings)
        parts.append(f"<ul>{items}</ul>")
    if footer:
        parts.append(f"<p>{_e(footer)}</p>")
    if qt:
        parts.append(f"<p><small>{_e(statement)}</small></p>")
    elif findings:
        parts.append('<p class="basis">Values are medians over the fitted voxels of each region '
                     "unless marked ROI-averaged fit. Cut-offs and their sources: under All regions "
                     "and Method.</p>")
    return ("<div>" if qt else '<div class="headline-box">') + "".join(parts) + "</div>"
