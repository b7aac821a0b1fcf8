"""One self-contained HTML report of a run, read like a radiology quantification report.

    >>> from IronMapping.report import write_report
    >>> write_report("report.html", summary, fit=fit, image=image, labels=labels)

The first screen answers the clinical question (`IronMapping.headline`: per-organ grade in
words with its number and unit, the distribution pattern, neonatal haemochromatosis support,
the research-use statement); then the key image (first echo beside the R2* map), lesions and
focal findings in sentences, the table of every region, the map of every organ slice, decay
plots with the noise floor, method and sources. The page is one A4/Letter-wide column with a
print stylesheet, and ``report.pdf`` is written beside it when matplotlib is installed.

Figures need matplotlib (optional extra ``ironmapping[report]``), imported only when the
report is written; without it the report still has every table and says figures were skipped.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from . import RESEARCH_USE_STATEMENT, __version__
from .headline import (DASH, fmt, fmt_ratio, headline_html, is_neonatal_question, lesion_sentences,
                       focal_sentences, nh_sentence, organ_findings, pattern_facts, symbols, yes_no)
from .fileio import json_safe, replace_atomically, write_text
from .quantities import BY_KEY
from .regions import mean_decay  # noqa: F401 (public name)
from .report_figures import MAX_MONTAGE_SLICES  # noqa: F401 (public name)

#: headline.DISPLAY_PRECISION quantity of each unit of IronMapping.quantities ("{}": as text).
_DISPLAY_OF_UNIT = {"1/s": "r2star", "ms": "t2star", "mg Fe/g dw": "lic", "mL": "volume",
                    "%": "percent", "": "{}"}
#: Summary keys of the report's table of every region, in order.
REGION_KEYS = ("name", "volume_ml", "r2star_median", "r2star_iqr", "r2star_roi_fit",
               "t2star_median", "t2star_roi_fit", "lic_mg_per_g", "grade", "excluded_fraction")
# (summary key, column header with unit, display quantity of headline.DISPLAY_PRECISION or a
# format), headers and units from IronMapping.quantities.
REGION_COLUMNS: tuple[tuple[str, str, str], ...] = tuple(
    (key, BY_KEY[key].label, _DISPLAY_OF_UNIT[BY_KEY[key].unit]) for key in REGION_KEYS)

LESION_COLUMNS = (
    ("lesion", "Lesion", "{}"), ("background", "Background", "{}"),
    ("lesion_r2star_median", "Lesion R2* (1/s)", "r2star"),
    ("background_r2star_median", "Background R2* (1/s)", "r2star"),
    ("difference_r2star", "Difference (1/s)", "r2star"),
    ("ratio_r2star", "Ratio", "ratio"),
    ("combined_uncertainty_r2star", "Combined uncertainty (1/s)", "r2star"),
    ("exceeds_uncertainty", "Beyond 2 x uncertainty", "yesno"),
    ("uncertainty_basis", "Uncertainty from", "{}"),
)


def matplotlib_available() -> bool:
    """Whether matplotlib can be imported (figures and the PDF need it)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def pdf_path(html_path) -> Path:
    """Where ``write_report`` puts the PDF: beside the HTML, same stem.

    Parameters
    ----------
    html_path : str or Path

    Returns
    -------
    Path
    """
    return Path(html_path).with_suffix(".pdf")


def write_report(path, summary: Mapping[str, Any] | None, *, fit=None, image=None, labels=None,
                 label_names: Mapping[int, str] | None = None,
                 inputs: Mapping[str, Any] | None = None, figures: bool = True,
                 warnings: Iterable[str] = (), timings: Mapping[str, float] | None = None,
                 truth: Mapping[str, float] | None = None, title: str | None = None,
                 pdf: bool = True) -> Path:
    """Write the HTML report (and ``report.pdf`` beside it).

    Parameters
    ----------
    path : str or Path
        The HTML file.
    summary : dict or None
        The statistics dict (``quantification.summarize``); None when no regions.
    fit : RelaxometryFit, optional
        Maps for the figures, noise floor, method provenance.
    image : MultiEchoImage, optional
        First echo, mean decay curves, orientation from ijk_to_ras.
    labels : int ndarray, shape (k, j, i), optional
        Regions on the map grid.
    label_names : dict of int to str, optional
    inputs : dict, optional
        What went in (paths, options), shown verbatim.
    figures : bool
        False skips figures (faster); they are also skipped without matplotlib.
    warnings : iterable of str
        Listed before the summary's own warnings, each once.
    timings : dict of str to float, optional
        Seconds per stage, shown with the inputs.
    truth : dict of str to float, optional
        {region name: true R2* in 1/s} for phantom runs, shown beside the measurements.
    title : str, optional
        Page title (default "IronMapping iron quantification report").
    pdf : bool
        Also write the PDF (needs matplotlib; an older PDF of this name is removed otherwise).

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    InputError, OutputError
        As :func:`IronMapping.fileio.write_text`.
    """
    path = Path(path)
    report = build_report(summary, fit=fit, image=image, labels=labels, label_names=label_names,
                          inputs=inputs, figures=figures, warnings=warnings, timings=timings,
                          truth=truth, title=title)
    write_text(path, report.html)
    target = pdf_path(path)
    if pdf and matplotlib_available():
        from .report_figures import write_pdf

        replace_atomically(target, lambda tmp: write_pdf(tmp, report.title, report.text_blocks,
                                                         report.figures))
    elif target.exists() and (path.parent / "run.json").exists():
        target.unlink()  # an older run's PDF would no longer match this report
    return path


def render_report(summary, *, fit=None, image=None, labels=None, label_names=None, inputs=None,
                  figures=True, warnings=(), timings=None, truth=None, title=None) -> str:
    """The report as one HTML string.

    Parameters
    ----------
    summary, fit, image, labels, label_names, inputs, figures, warnings, timings, truth, title
        As in :func:`write_report`.

    Returns
    -------
    str
    """
    return build_report(summary, fit=fit, image=image, labels=labels, label_names=label_names,
                        inputs=inputs, figures=figures, warnings=warnings, timings=timings,
                        truth=truth, title=title).html


class Report:
    """The built report.

    Attributes
    ----------
    html : str
    figures : list of report_figures.Figure
    text_blocks : list of (str, str)
        (style, text) for the PDF's first page.
    title : str
    """

    def __init__(self, html_text, figures, text_blocks, title):
        self.html, self.figures, self.text_blocks, self.title = html_text, figures, text_blocks, title


def build_report(summary, *, fit=None, image=None, labels=None, label_names=None, inputs=None,
                 figures=True, warnings=(), timings=None, truth=None, title=None) -> Report:
    """Build the report's HTML, figures and PDF text.

    Parameters
    ----------
    summary, fit, image, labels, label_names, inputs, figures, warnings, timings, truth, title
        As in :func:`write_report`.

    Returns
    -------
    Report
    """
    summary = dict(summary or {})
    if fit is not None and getattr(fit, "quantity", None) and "quantity" not in summary:
        summary["quantity"] = fit.quantity
    if summary.get("field_strength_t") is None and image is not None and "regions" not in summary:
        summary["field_strength_t"] = image.field_strength_t
    regions = list(summary.get("regions") or [])
    rate, relax = symbols(summary)
    title = title or "IronMapping iron quantification report"
    stamp = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")

    figs, figure_note = _figures(fit, image, labels, dict(label_names or {}), regions, summary,
                                 figures, rate)
    by_title = {f.title: f for f in figs}

    parts = [f'<header><h1>{_e(title)}</h1><p class="meta">{_e(_study_line(summary, fit, image))}'
             f" &middot; IronMapping {_e(__version__)} &middot; {_e(stamp)}</p></header>"]
    parts.append('<section class="first-screen" id="answer">'
                 + headline_html(summary) + "</section>")

    if "Key slice" in by_title:
        parts.append(f'<section id="key-image">{_figure_html(by_title["Key slice"])}</section>')

    lesions, focal = lesion_sentences(summary), focal_sentences(summary)
    if lesions or "focal_findings" in summary:
        parts.append('<section id="lesions"><h2>Lesions and focal findings</h2>')
        parts += [f'<p class="sentence">{_e(s)}</p>' for s in lesions]
        if "focal_findings" in summary:
            parts += [f'<p class="sentence">{_e(s)}</p>' for s in focal] or [
                "<p>Focal iron analysis found no iron-sparing or iron-dense focus.</p>"]
        if summary.get("lesions"):
            parts.append("<details><summary>Lesion statistics</summary>"
                         + _table(summary["lesions"], LESION_COLUMNS, rate, relax)
                         + "<p class=meta>Lesion and background: median voxel "
                         f"{_e(rate)}; the reading follows Belay 2018 (J Med Case Reports): a lesion "
                         "that holds iron like the liver is isointense on T2*, one that excludes it "
                         "hyperintense.</p></details>")
        parts.append("</section>")

    parts.append('<section id="regions"><h2>All regions</h2>')
    if regions:
        parts.append(_regions_table(regions, truth, rate, relax))
        parts.append(_region_notes(regions))
        if summary.get("ratios"):
            parts.append(f"<details><summary>{_e(rate)} ratios between regions</summary>"
                         + _ratio_table(summary["ratios"]) + "</details>")
        if summary.get("sir"):
            parts.append("<details><summary>Signal intensity ratios per echo</summary>"
                         + _sir_table(summary["sir"]) + "</details>")
    else:
        parts.append("<p>No regions were given (no label map), so there are no per-organ "
                     "statistics. Pass a label map (--labels) to get them.</p>")
    parts.append("</section>")

    parts.append('<section id="figures"><h2>Maps and decay curves</h2>')
    if figure_note:
        parts.append(f'<p class="note">{_e(figure_note)}</p>')
    parts += [_figure_html(f) for f in figs if f.title != "Key slice"]
    parts.append("</section>")

    parts.append('<section id="method"><h2>Method, calibration and sources</h2>'
                 + _method_section(summary, fit) + "</section>")
    all_warnings = list(dict.fromkeys([w for w in warnings if w]
                                      + [w for w in summary.get("warnings") or [] if w]))
    if all_warnings:
        items = "".join(f"<li>{_e(w)}</li>" for w in all_warnings)
        parts.append(f'<section id="warnings"><h2>Warnings</h2><ul class="warnings">{items}</ul></section>')
    if summary.get("notes"):
        items = "".join(f"<li>{_e(n)}</li>" for n in dict.fromkeys(summary["notes"]))
        parts.append(f'<section id="notes"><h2>Notes</h2><ul>{items}</ul></section>')
    parts.append('<section id="inputs"><h2>Inputs and software</h2>'
                 + _inputs_section(inputs, image, fit, timings) + "</section>")
    parts.append('<details class="json"><summary>Full summary (JSON, full precision)</summary><pre>'
                 f"{_e(json.dumps(json_safe(summary), indent=1))}</pre></details>")
    parts.append(f'<footer class="research">{_e(RESEARCH_USE_STATEMENT)}</footer>')
    body = "\n".join(parts)
    page = (f"<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_e(title)}</title><style>{_CSS}</style></head>\n<body><main>\n{body}\n"
            "</main></body></html>\n")
    return Report(page, figs, _text_blocks(summary, title, stamp, fit, image), title)


# --------------------------------------------------------------------------- first screen

def _study_line(summary, fit, image) -> str:
    bits = []
    field = summary.get("field_strength_t")
    bits.append(f"{field:g} T" if isinstance(field, (int, float)) else "field strength unknown")
    meta = getattr(image, "metadata", None) or {}
    for key in ("manufacturer", "series_description"):
        if meta.get(key):
            bits.append(str(meta[key]))
    method = summary.get("method") or getattr(fit, "method", None)
    if method:
        bits.append(f"fit: {method}")
    return " · ".join(bits)


def _text_blocks(summary, title, stamp, fit, image) -> list[tuple[str, str]]:
    """The first screen as (style, text) lines for the PDF's first page."""
    blocks = [("h1", title), ("small", f"{_study_line(summary, fit, image)} · IronMapping "
                                       f"{__version__} · {stamp}"),
              ("p", summary.get("research_use") or RESEARCH_USE_STATEMENT), ("h2", "Answer")]
    pattern = summary.get("pattern") or {}
    if pattern.get("text"):
        blocks.append(("p", pattern["text"]))
    if is_neonatal_question(summary):
        blocks.append(("p", "Neonatal haemochromatosis: " + (nh_sentence(summary) or "")))
    facts = pattern_facts(summary)
    if facts:
        blocks.append(("small", " · ".join(f"{a}: {b}" for a, b in facts)))
    for f in organ_findings(summary):
        detail = f.detail + ("; " + "; ".join(f.notes) if f.notes else "")
        blocks.append(("row", f"{f.name}\t{f.verdict}\t{f.value} · {detail}"))
    sentences = lesion_sentences(summary) + focal_sentences(summary)
    if sentences:
        blocks.append(("h2", "Lesions and focal findings"))
        blocks += [("p", s) for s in sentences]
    cal = summary.get("calibration")
    if isinstance(cal, Mapping) and (cal.get("citation") or cal.get("equation")):
        blocks.append(("h2", "Calibration and sources"))
        blocks.append(("small", f"{cal.get('label') or cal.get('name')}: {cal.get('equation') or ''}"
                                f" {cal.get('citation') or ''} doi:{cal.get('doi') or DASH}"))
    for source in summary.get("grading_sources") or []:
        blocks.append(("small", f"Grades: {source}"))
    return blocks


# --------------------------------------------------------------------------- tables

def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _value(value, how: str) -> str:
    """A table cell: display precision from headline.DISPLAY_PRECISION; words for booleans."""
    if how == "yesno":
        return _e(yes_no(value))
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return DASH
    if isinstance(value, bool):
        return _e(yes_no(value))
    if how == "percent":
        return _e(fmt("percent", 100 * value, unit=False) if value >= 0.01 or value == 0
                  else "< 1")
    if how == "ratio":
        return _e(fmt_ratio(value))
    if how in ("r2star", "t2star", "lic", "volume"):
        return _e(fmt(how, value, unit=False))
    try:
        return _e(how.format(value))
    except (TypeError, ValueError):
        return _e(value)


def _relabel(header: str, rate: str, relax: str) -> str:
    return header.replace("R2*", rate).replace("T2*", relax)


def _table(rows, columns, rate, relax) -> str:
    present = [c for c in columns if any(r.get(c[0]) is not None for r in rows)]
    head = "".join(f"<th>{_e(_relabel(h, rate, relax))}</th>" for _, h, _ in present)
    body = "".join("<tr>" + "".join(f"<td>{_value(r.get(k), how)}</td>" for k, _, how in present)
                   + "</tr>" for r in rows)
    return f'<table class="data"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _regions_table(regions, truth, rate, relax) -> str:
    bounds = {"lic_mg_per_g": "lic_lower_bound", "r2star_median": "r2star_lower_bound"}
    present = [c for c in REGION_COLUMNS
               if any(r.get(c[0]) is not None or r.get(bounds.get(c[0], "")) is not None
                      for r in regions) or c[0] in ("name", "r2star_median")]
    head = "".join(f"<th>{_e(_relabel(h, rate, relax))}</th>" for _, h, _ in present)
    if truth:
        head += f"<th>True {_e(rate)} (1/s)</th>"
    rows = []
    for r in regions:
        cells = []
        for key, _, how in present:
            if key == "name":
                organ = r.get("organ")
                extra = f' <span class="organ">({_e(organ)})</span>' if organ and organ != r.get("name") else ""
                cells.append(f"<td>{_e(r.get('name'))}{extra}</td>")
            elif key == "r2star_median" and r.get(key) is None and r.get("r2star_lower_bound") is not None:
                cells.append(f"<td>&gt; {_e(fmt('bound', r['r2star_lower_bound'], unit=False))}</td>")
            elif key == "lic_mg_per_g" and r.get(key) is None and r.get("lic_lower_bound") is not None:
                cells.append(f"<td>&gt; {_e(fmt('lic', r['lic_lower_bound'], unit=False))}</td>")
            else:
                cells.append(f"<td>{_value(r.get(key), how)}</td>")
        if truth:
            cells.append(f"<td>{_value(truth.get(r.get('name')), 'r2star')}</td>")
        rows.append(f"<tr>{''.join(cells)}</tr>")
    return (f'<table class="data regions"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}'
            "</tbody></table><p class=meta>Median and IQR over the fitted voxels of each region; "
            "ROI fit: the mean signal of the region fitted once (the cardiac T2* standard). "
            "Excluded: voxels without a valid fit.</p>")


def _strip_prefix(note: str, region) -> str:
    for prefix in (region.get("name"), region.get("organ")):
        while prefix and note.lower().startswith(f"{str(prefix).lower()}: "):
            note = note[len(prefix) + 2:]
    return note


def _region_notes(regions) -> str:
    """Per region one line with its sources and cautions, without repeated prefixes."""
    items = []
    for r in regions:
        notes = []
        for key in ("grade_source", "grade_note", "lic_note", "note"):
            if r.get(key):
                notes += [s.strip() for s in str(r[key]).split("; ") if s.strip()]
        notes += [str(n) for n in r.get("notes") or [] if n]
        notes = list(dict.fromkeys(_strip_prefix(n, r).rstrip(".") for n in notes))
        if notes:
            items.append(f"<li><strong>{_e(r.get('name'))}</strong>: "
                         + _e("; ".join(notes)) + ".</li>")
    if not items:
        return ""
    return ('<details class="notes"><summary>Sources and notes per region</summary><ul>'
            + "".join(items) + "</ul></details>")


def _ratio_table(ratios) -> str:
    rows = "".join(f"<tr><td>{_e(r.get('ratio'))}</td><td>{_value(r.get('r2star_ratio'), 'ratio')}"
                   "</td></tr>" for r in ratios if isinstance(r, Mapping))
    return f'<table class="data"><thead><tr><th>Regions</th><th>Ratio</th></tr></thead><tbody>{rows}</tbody></table>'


def _sir_table(sir) -> str:
    """Signal intensity ratio region / reference per echo: a row per region, a column per TE."""
    if not isinstance(sir, Mapping) or not isinstance(sir.get("regions"), Mapping):
        return f"<pre>{_e(json.dumps(json_safe(sir), indent=1))}</pre>"
    te = list(sir.get("echo_times_ms") or [])
    head = "<th>Region</th>" + "".join(f"<th>TE {t:g} ms</th>" for t in te)
    rows = []
    for name, ratios in sir["regions"].items():
        cells = "".join(f"<td>{_value(r, '{:.2f}')}</td>" for r in (ratios or []))
        rows.append(f"<tr><td>{_e(name)}</td>{cells}</tr>")
    note = (f"<p class=meta>Reference region: {_e(sir.get('reference'))}. "
            f"{_e(sir.get('note') or '')}</p>")
    return (f'<div class="wide"><table class="data small"><thead><tr>{head}</tr></thead><tbody>'
            f"{''.join(rows)}</tbody></table></div>" + note)


def _method_section(summary, fit) -> str:
    rows = []
    provenance = fit.provenance() if fit is not None and hasattr(fit, "provenance") else {}
    method = summary.get("method")
    if isinstance(method, Mapping):
        provenance = {**provenance, **method}
    elif method and "method" not in provenance:
        provenance["method"] = method
    for key, label in (("method", "Fit method"), ("requested_method", "Requested method"),
                       ("method_reference", "Method source"), ("quantity", "Quantity"),
                       ("echo_times_ms", "Echo times (ms)"), ("noise_sigma", "Noise SD (signal units)"),
                       ("coils", "Receive coils (effective)"), ("noise_source", "Noise estimated from")):
        if provenance.get(key) not in (None, ""):
            value = provenance[key]
            if key == "echo_times_ms":
                value = ", ".join(f"{t:g}" for t in value)
            elif isinstance(value, float):
                value = f"{value:.3g}"
            rows.append((label, value))
    if summary.get("roi_fit_method"):
        rows.append(("ROI-averaged fit", summary["roi_fit_method"]))
    if summary.get("field_strength_t") is not None:
        rows.append(("Field strength (T)", f"{summary['field_strength_t']:g}"))
    for key, label in (("field_strength_source", "Field strength from"),
                       ("echo_time_source", "Echo times from")):
        if summary.get(key):
            rows.append((label, _plain(summary[key])))
    calibration = summary.get("calibration")
    if isinstance(calibration, Mapping):
        label = calibration.get("label") or calibration.get("name")
        if label:
            state = "applied" if calibration.get("applied") else "not applied"
            default = " (default)" if calibration.get("default") else ""
            rows.append(("LIC calibration", f"{label}{default}, {state}"))
        for key, heading in (("equation", "Calibration equation"), ("citation", "Calibration source"),
                             ("doi", "Calibration DOI"),
                             ("field_strength_t", "Calibration field strength (T)"),
                             ("reference_standard", "Calibration reference standard"),
                             ("valid_lic_range_mg_per_g", "Calibrated LIC range (mg Fe/g dw)"),
                             ("applied_to", "Calibration applied to"),
                             ("conversion", "Field strength conversion"),
                             ("note", "Calibration note")):
            value = calibration.get(key)
            if value in (None, "", [], {}):
                continue
            if key == "valid_lic_range_mg_per_g" and isinstance(value, (list, tuple)):
                value = f"{value[0]:g} - {value[1]:g}"
            elif isinstance(value, Mapping):
                value = "; ".join(f"{k.replace('_', ' ')}: {_plain(v)}" for k, v in value.items())
            elif isinstance(value, (list, tuple)):
                value = "; ".join(_plain(v) for v in value)
            rows.append((heading, _plain(value)))
        for w in calibration.get("warnings") or []:
            rows.append(("Calibration warning", w))
    elif calibration:
        rows.append(("LIC calibration", calibration))
    for n, item in enumerate(summary.get("grading_sources") or [], 1):
        rows.append((f"Grading source {n}", item))
    pattern = summary.get("pattern") or {}
    if pattern.get("rules"):
        rows.append(("Pattern rules", pattern["rules"]))
    counts = provenance.get("status_counts")
    if counts:
        rows.append(("Voxel outcomes", ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in counts.items())))
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    return f'<table class="kv">{body}</table>' if rows else "<p>No method information.</p>"


def _plain(value) -> str:
    """Words for JSON-ish values (no Python booleans or None on the page)."""
    if isinstance(value, bool) or value is None:
        return yes_no(value, unknown=DASH)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _inputs_section(inputs, image, fit, timings) -> str:
    rows = [("Software", f"IronMapping {__version__}")]
    for key, value in (inputs or {}).items():
        if isinstance(value, (list, tuple)):
            value = ", ".join(_plain(v) for v in value)
        elif isinstance(value, Mapping):
            value = "; ".join(f"{k}: {_plain(v)}" for k, v in value.items())
        rows.append((str(key), _plain(value)))
    if image is not None:
        rows.append(("Image grid (k, j, i)", " x ".join(str(s) for s in image.shape)))
        rows.append(("Voxel size (mm, i j k)", " x ".join(f"{s:.3g}" for s in image.spacing_mm)))
        rows.append(("Echoes", image.n_echoes))
        if image.field_strength_t is not None:
            rows.append(("Field strength from input (T)", f"{image.field_strength_t:g}"))
    for key, seconds in (timings or {}).items():
        rows.append((f"Time: {key} (s)", f"{seconds:.2f}"))
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    return f'<table class="kv">{body}</table>'


# --------------------------------------------------------------------------- figures

def _figures(fit, image, labels, label_names, regions, summary, wanted, rate):
    """(list of report_figures.Figure, note or None)."""
    if not wanted:
        return [], "Figures were skipped on request (--no-figures); the tables above are complete."
    if fit is None:
        return [], "Figures were skipped: no maps were given to the report."
    if not matplotlib_available():
        return [], ("Figures were skipped: matplotlib is not installed. Install the report extra "
                    "(pip install 'ironmapping[report]') to get the key image, the map of every "
                    "organ slice and the decay curves; the tables above are complete.")
    from . import report_figures

    out = list(report_figures.map_figures(fit, image, labels, label_names, summary, rate))
    named = _region_masks(labels, label_names, regions)
    if named and image is not None:
        out.append(report_figures.decay_figure(image, fit, named, regions, rate))
    return out, None


def _figure_html(figure) -> str:
    data = base64.b64encode(figure.png).decode("ascii")
    return (f'<figure><img alt="{_e(figure.title)}" src="data:image/png;base64,{data}">'
            f"<figcaption><strong>{_e(figure.title)}.</strong> {_e(figure.caption)}</figcaption></figure>")


def _region_masks(labels, label_names, regions) -> list[tuple[str, np.ndarray]]:
    """(name, boolean mask) per region present in ``labels``, in the summary's order."""
    if labels is None:
        return []
    labels = np.asarray(labels)
    present = [int(v) for v in np.unique(labels) if v != 0]
    by_name = {label_names.get(v, f"label {v}"): v for v in present}
    order = [r.get("name") for r in regions if r.get("name") in by_name]
    order += [n for n in by_name if n not in order]
    return [(name, labels == by_name[name]) for name in order]


_CSS = """
:root{--ink:#1f2328;--muted:#57606a;--line:#d0d7de}
*{box-sizing:border-box}
body{margin:0;background:#f6f7f9;color:var(--ink);font:14px/1.4 system-ui,-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif}
main{max-width:200mm;margin:0 auto;padding:10px 14px 24px;background:#fff}
header h1{font-size:20px;margin:4px 0 0}
h2{font-size:15px;margin:18px 0 6px;padding-bottom:2px;border-bottom:1px solid var(--line)}
.meta{color:var(--muted);font-size:12px;margin:2px 0}
.first-screen{margin-top:8px}
.headline-box{border:1px solid var(--line);border-left:5px solid #2f6fb3;border-radius:4px;padding:6px 10px;background:#fbfcfe}
.pattern-text{font-size:15px;font-weight:600;margin:2px 0 6px}
.nh{margin:4px 0 6px;padding:5px 8px;background:#f3efff;border-left:3px solid #6f42c1;font-size:13px}
.facts{font-size:12px;color:var(--muted);margin:0 0 6px}
table{border-collapse:collapse;margin:6px 0;width:100%}
th,td{padding:3px 6px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
thead th{background:#f0f3f6;font-size:12px}
table.headline{table-layout:fixed}
table.headline thead th:nth-child(1){width:19%}table.headline thead th:nth-child(2){width:33%}
table.headline th[scope=row]{font-weight:600}
table.headline td,table.headline th{padding:3px 6px}
table.headline .detail{color:var(--muted);font-size:12px}
table.headline .why{font-size:11px;color:#6e7781}
.nh .more{font-size:12px;color:var(--muted)}
.chip{display:inline-block;padding:1px 8px;border-radius:10px;font-weight:600;font-size:13px;background:#eef1f4}
.lv-normal .chip,.lv-spared .chip{background:#dafbe1;color:#116329}
.lv-mild .chip{background:#fff8c5;color:#7d4e00}
.lv-moderate .chip{background:#ffe2c7;color:#953800}
.lv-severe .chip,.lv-loaded .chip{background:#ffd7d5;color:#a40e26}
.lv-descriptive .chip{background:#ede6ff;color:#512a97}
.lv-lesion .chip{background:#ddf4ff;color:#0a3069}
.lv-reference .chip,.lv-unknown .chip{background:#eef1f4;color:#57606a}
.research{font-size:11.5px;background:#fff4e5;border-left:4px solid #e67e22;padding:3px 8px;margin:2px 0 6px}
.basis{font-size:11px;color:var(--muted);margin:2px 0}
.focal,.sentence{margin:4px 0}
table.data td,table.data th{text-align:right;font-size:12px;white-space:nowrap}
table.data td:first-child,table.data th:first-child{text-align:left;white-space:normal}
table.data th{white-space:normal}
table.small td,table.small th{font-size:11px;padding:2px 4px}
.organ{color:var(--muted);font-size:11px}
.wide{overflow-x:auto}
table.kv th{width:30%;font-weight:600;font-size:12px;background:none}
table.kv td{font-size:12px;word-break:break-word}
figure{margin:10px 0;break-inside:avoid;page-break-inside:avoid}
figure img{width:100%;height:auto;display:block;border-radius:2px}
figcaption{font-size:11.5px;color:var(--muted);margin-top:3px}
details{margin:6px 0}summary{cursor:pointer;color:#0969da;font-size:13px}
details.notes li{font-size:12px;margin:2px 0}
ul.warnings li{color:#8a4b00}
pre{font-size:11px;white-space:pre-wrap;word-break:break-word}
.note{color:var(--muted);font-style:italic}
footer.research{margin-top:16px}
@page{margin:12mm}
@media print{
 body{background:#fff;font-size:10.5pt}
 main{max-width:none;padding:0}
 *{-webkit-print-color-adjust:exact;print-color-adjust:exact}
 h2{break-after:avoid;page-break-after:avoid}
 tr,figure,.headline-box{break-inside:avoid;page-break-inside:avoid}
 details.json{display:none}
 details>summary{color:var(--ink)}
 .wide{overflow:visible}
}
"""
