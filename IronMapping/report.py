"""One self-contained HTML report of a run: tables, figures (base64 PNG), methods and sources.

    >>> from IronMapping.report import write_report
    >>> write_report("report.html", summary, fit=fit, image=image, labels=labels)

Figures need matplotlib (optional extra ``ironmapping[report]``), imported only when the
report is written; without it the report still has every table and says figures were skipped.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from .io.metadata import json_default as _json_default
from . import __version__, RESEARCH_USE_STATEMENT

MAX_MONTAGE_SLICES = 12

# (summary key, column header with unit, number format)
REGION_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("name", "Region", "{}"),
    ("organ", "Organ", "{}"),
    ("n_voxels", "Voxels", "{:d}"),
    ("volume_ml", "Volume (mL)", "{:.1f}"),
    ("r2star_median", "R2* median (1/s)", "{:.1f}"),
    ("r2star_iqr", "R2* IQR (1/s)", "{:.1f}"),
    ("r2star_mean", "R2* mean (1/s)", "{:.1f}"),
    ("r2star_sd", "R2* SD (1/s)", "{:.1f}"),
    ("r2star_roi_fit", "R2* ROI fit (1/s)", "{:.1f}"),
    ("t2star_median", "T2* median (ms)", "{:.2f}"),
    ("lic_mg_per_g", "LIC (mg Fe/g dw)", "{:.2f}"),
    ("grade", "Grade", "{}"),
    ("excluded_fraction", "Excluded (%)", "{:.1%}"),
)


def matplotlib_available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def write_report(path, summary: Mapping[str, Any] | None, *, fit=None, image=None, labels=None,
                 label_names: Mapping[int, str] | None = None,
                 inputs: Mapping[str, Any] | None = None, figures: bool = True,
                 warnings: Iterable[str] = (), timings: Mapping[str, float] | None = None,
                 truth: Mapping[str, float] | None = None, title: str | None = None) -> Path:
    """Write the HTML report to ``path`` and return the path.

    Parameters
    ----------
    summary : the statistics dict (``quantification.summarize``); None when no regions.
    fit : ``RelaxometryFit`` (maps for the montage and histograms, method provenance).
    image : ``MultiEchoImage`` (mean decay curves, geometry).
    labels : int array [k, j, i] on the map grid; ``label_names`` {value: name}.
    inputs : what went in (paths, options), shown verbatim.
    figures : False skips figures (faster); they are also skipped without matplotlib.
    truth : {region name: true R2* 1/s} for phantom runs, shown beside the measurements.
    """
    path = Path(path)
    text = render_report(summary, fit=fit, image=image, labels=labels, label_names=label_names,
                         inputs=inputs, figures=figures, warnings=warnings, timings=timings,
                         truth=truth, title=title)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def render_report(summary, *, fit=None, image=None, labels=None, label_names=None, inputs=None,
                  figures=True, warnings=(), timings=None, truth=None, title=None) -> str:
    """The report as one HTML string (see :func:`write_report`)."""
    summary = dict(summary or {})
    regions = list(summary.get("regions") or [])
    label_names = dict(label_names or {})
    quantity = getattr(fit, "quantity", None) or summary.get("quantity") or "T2*"
    rate = "R2*" if quantity == "T2*" else "R2"
    parts: list[str] = []
    title = title or "IronMapping report"
    parts.append(f"<h1>{_e(title)}</h1>")
    parts.append(f'<p class="research"><strong>{_e(RESEARCH_USE_STATEMENT)}</strong></p>')
    stamp = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    parts.append(f"<p class=meta>IronMapping {_e(__version__)} &middot; written {_e(stamp)}</p>")

    pattern = summary.get("pattern") or {}
    if pattern.get("text"):
        parts.append('<div class="pattern"><h2>Iron distribution</h2>'
                     f"<p>{_e(pattern['text'])}</p>{_pattern_facts(pattern)}</div>")

    parts.append("<h2>Regions</h2>")
    if regions:
        parts.append(_regions_table(regions, truth, rate, quantity))
        parts.append(_region_notes(summary))
    else:
        parts.append("<p>No regions were given (no label map), so there are no per-organ "
                     "statistics. Pass a label map (--labels) to get them.</p>")
    for key, heading in (("lesions", "Lesion versus background liver"),
                         ("ratios", "R2* ratios between regions")):
        if summary.get(key):
            parts.append(f"<h3>{_e(heading)}</h3>{_any_table(summary[key])}")
    if summary.get("sir"):
        parts.append(f"<h3>Signal intensity ratios</h3>{_sir_table(summary['sir'])}")

    parts.append("<h2>Figures</h2>")
    figure_html, figure_note = _figures(fit, image, labels, label_names, regions, figures, rate,
                                        quantity)
    if figure_note:
        parts.append(f'<p class="note">{_e(figure_note)}</p>')
    parts.extend(figure_html)

    parts.append("<h2>Method, calibration and sources</h2>")
    parts.append(_method_section(summary, fit))

    all_warnings = [w for w in warnings if w]
    all_warnings += [w for w in (summary.get("warnings") or []) if w not in all_warnings]
    if all_warnings:
        items = "".join(f"<li>{_e(w)}</li>" for w in all_warnings)
        parts.append(f'<h2>Warnings</h2><ul class="warnings">{items}</ul>')
    if summary.get("notes"):
        items = "".join(f"<li>{_e(n)}</li>" for n in summary["notes"])
        parts.append(f"<h2>Notes</h2><ul>{items}</ul>")

    parts.append("<h2>Inputs and software</h2>")
    parts.append(_inputs_section(inputs, image, fit, timings))
    parts.append("<details><summary>Full summary (JSON)</summary><pre>"
                 f"{_e(json.dumps(summary, indent=1, default=_json_default))}</pre></details>")
    parts.append(f'<p class="research">{_e(RESEARCH_USE_STATEMENT)}</p>')
    body = "\n".join(parts)
    return (f"<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
            f"<title>{_e(title)}</title><style>{_CSS}</style></head>\n<body>\n{body}\n"
            "</body></html>\n")


# --------------------------------------------------------------------------- tables

def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value, fmt: str) -> str:
    if value is None:
        return "&ndash;"
    if isinstance(value, float) and not np.isfinite(value):
        return "&ndash;"
    try:
        if fmt == "{:d}":
            return _e(f"{int(value):d}")
        return _e(fmt.format(value))
    except (TypeError, ValueError):
        return _e(value)


def _regions_table(regions, truth, rate, quantity) -> str:
    present = [c for c in REGION_COLUMNS if any(r.get(c[0]) is not None for r in regions)
               or c[0] in ("name", "n_voxels", "r2star_median")]
    head = "".join(f"<th>{_e(_relabel(h, rate, quantity))}</th>" for _, h, _ in present)
    if truth:
        head += f"<th>True {_e(rate)} (1/s)</th>"
    rows = []
    for r in regions:
        cells = "".join(f"<td>{_fmt(r.get(k), f)}</td>" for k, _, f in present)
        if truth:
            cells += f"<td>{_fmt(truth.get(r.get('name')), '{:.1f}')}</td>"
        rows.append(f"<tr>{cells}</tr>")
    return f'<table class="regions"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _relabel(header: str, rate: str, quantity: str) -> str:
    return header.replace("R2*", rate).replace("T2*", quantity)


def _region_notes(summary) -> str:
    notes = []
    for r in summary.get("regions") or []:
        for key in ("grade_source", "grade_note", "lic_note", "note"):
            if r.get(key):
                notes.append(f"{r.get('name')}: {r[key]}")
        for note in r.get("notes") or []:
            if note:
                notes.append(f"{r.get('name')}: {note}")
    if not notes:
        return ""
    return '<ul class="notes">' + "".join(f"<li>{_e(n)}</li>" for n in dict.fromkeys(notes)) + "</ul>"


def _pattern_facts(pattern) -> str:
    facts = []
    for key, label in (("kind", "pattern"), ("extrahepatic_siderosis", "extrahepatic siderosis"),
                       ("spleen_spared", "spleen spared"),
                       ("pancreas_spleen_ratio", "pancreas/spleen R2* ratio")):
        if key in pattern:
            value = pattern[key]
            value = "not assessable" if value is None else (
                f"{value:.2f}" if isinstance(value, float) else value)
            facts.append(f"{label}: <strong>{_e(value)}</strong>")
    return "<p class=meta>" + " &middot; ".join(facts) + "</p>" if facts else ""


def _pretty(key: str) -> str:
    """Column header from a summary key: 'difference_r2star' -> 'difference R2* (1/s)'."""
    text = str(key)
    unit = ""
    if "r2star" in text and "ratio" not in text:
        unit = " (1/s)"
    elif "t2star" in text and "ratio" not in text:
        unit = " (ms)"
    text = text.replace("r2star", "R2*").replace("t2star", "T2*").replace("_", " ")
    return text + unit


def _any_table(value) -> str:
    """A table of a list of dicts or a dict; anything else as JSON."""
    if isinstance(value, Mapping):
        value = [value]
    if isinstance(value, Sequence) and value and all(isinstance(v, Mapping) for v in value):
        keys = list(dict.fromkeys(k for v in value for k in v))
        head = "".join(f"<th>{_e(_pretty(k))}</th>" for k in keys)
        rows = "".join("<tr>" + "".join(f"<td>{_cell(v.get(k))}</td>" for k in keys) + "</tr>"
                       for v in value)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"
    return f"<pre>{_e(json.dumps(value, indent=1, default=_json_default))}</pre>"


def _sir_table(sir) -> str:
    """Signal intensity ratio region / reference per echo: a row per region, a column per TE."""
    if not isinstance(sir, Mapping) or not isinstance(sir.get("regions"), Mapping):
        return _any_table(sir)
    te = list(sir.get("echo_times_ms") or [])
    head = "<th>Region</th>" + "".join(f"<th>TE {t:g} ms</th>" for t in te)
    rows = []
    for name, ratios in sir["regions"].items():
        cells = "".join(f"<td>{_fmt(r, '{:.3f}')}</td>" for r in (ratios or []))
        rows.append(f"<tr><td>{_e(name)}</td>{cells}</tr>")
    note = (f"<p class=meta>Reference region: {_e(sir.get('reference'))}. "
            f"{_e(sir.get('note') or '')}</p>")
    return (f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
            + note)


def _cell(value) -> str:
    if isinstance(value, float):
        return _fmt(value, "{:.4g}")
    if isinstance(value, (dict, list)):
        return _e(json.dumps(value, default=_json_default))
    return _fmt(value, "{}")


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
                value = f"{value:.4g}"
            rows.append((label, value))
    if summary.get("field_strength_t") is not None:
        rows.append(("Field strength (T)", summary["field_strength_t"]))
    calibration = summary.get("calibration")
    if isinstance(calibration, Mapping):
        label = calibration.get("label") or calibration.get("name")
        if label:
            state = "applied" if calibration.get("applied") else "not applied"
            default = " (default)" if calibration.get("default") else ""
            rows.append(("LIC calibration", f"{label}{default}, {state}"))
        for key, title in (("equation", "Calibration equation"), ("citation", "Calibration source"),
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
            elif isinstance(value, (dict, list)):
                value = json.dumps(value, default=_json_default)
            rows.append((title, value))
        for w in calibration.get("warnings") or []:
            rows.append(("Calibration warning", w))
    elif calibration:
        rows.append(("LIC calibration", calibration))
    for key in ("grading_sources", "sources", "references"):
        value = summary.get(key)
        if isinstance(value, (list, tuple)):
            for n, item in enumerate(value, 1):
                rows.append((f"Grading source {n}" if key == "grading_sources" else key, item))
        elif value:
            rows.append((key.replace("_", " ").capitalize(), value))
    counts = provenance.get("status_counts")
    if counts:
        rows.append(("Voxel outcomes", ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in counts.items())))
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    return f'<table class="kv">{body}</table>' if rows else "<p>No method information.</p>"


def _inputs_section(inputs, image, fit, timings) -> str:
    rows = [("Software", f"IronMapping {__version__}")]
    for key, value in (inputs or {}).items():
        if isinstance(value, (list, tuple)):
            value = ", ".join(str(v) for v in value)
        elif isinstance(value, Mapping):
            value = json.dumps(value, default=_json_default)
        rows.append((str(key), value))
    if image is not None:
        rows.append(("Image grid (k, j, i)", " x ".join(str(s) for s in image.shape)))
        rows.append(("Voxel size (mm, i j k)", " x ".join(f"{s:.3g}" for s in image.spacing_mm)))
        rows.append(("Echoes", image.n_echoes))
        if image.field_strength_t is not None:
            rows.append(("Field strength from input (T)", image.field_strength_t))
    for key, seconds in (timings or {}).items():
        rows.append((f"Time: {key} (s)", f"{seconds:.2f}"))
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    return f'<table class="kv">{body}</table>'


# --------------------------------------------------------------------------- figures

def _figures(fit, image, labels, label_names, regions, wanted, rate, quantity):
    """(list of HTML snippets, note or None)."""
    if not wanted:
        return [], "Figures were skipped on request (--no-figures); the tables above are complete."
    if fit is None:
        return [], "Figures were skipped: no maps were given to the report."
    if not matplotlib_available():
        return [], ("Figures were skipped: matplotlib is not installed. Install the report extra "
                    "(pip install 'ironmapping[report]') to get the map montage, histograms and "
                    "decay curves; the tables above are complete.")
    out = []
    r2 = np.asarray(fit.r2star, dtype=np.float32)
    spacing = image.spacing_mm if image is not None else np.ones(3)
    if r2.ndim == 3:
        out.append(_figure_html(_montage(r2, labels, spacing, rate),
                                f"{rate} map montage (1/s); region outlines in white. Slices of the "
                                "voxel grid as stored (rows down, columns right)."))
    named = _region_masks(labels, label_names, regions)
    if named:
        out.append(_figure_html(_histograms(r2, named, rate),
                                f"{rate} histograms of fitted voxels per region; dashed line: median."))
        if image is not None:
            out.append(_figure_html(_decay_curves(image, fit, named, regions, rate),
                                    "Mean signal decay per region (points) with the "
                                    f"mono-exponential at the region's {rate} (line)."))
    return out, None


def _figure_html(png: bytes, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (f'<figure><img alt="{_e(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{_e(caption)}</figcaption></figure>")


def _new_figure(width, height):
    from matplotlib.figure import Figure
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = Figure(figsize=(width, height), dpi=90)
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return buf.getvalue()


def _pick_slices(r2, labels) -> list[int]:
    weight = (labels > 0) if labels is not None else np.isfinite(r2)
    per_slice = weight.reshape(weight.shape[0], -1).sum(1)
    candidates = np.flatnonzero(per_slice)
    if candidates.size == 0:
        candidates = np.arange(r2.shape[0])
    if candidates.size <= MAX_MONTAGE_SLICES:
        return candidates.tolist()
    pick = np.linspace(0, candidates.size - 1, MAX_MONTAGE_SLICES).round().astype(int)
    return candidates[pick].tolist()


def _montage(r2, labels, spacing, rate) -> bytes:
    slices = _pick_slices(r2, labels)
    finite = r2[np.isfinite(r2)]
    vmax = float(np.percentile(finite, 99)) if finite.size else 1.0
    vmax = max(vmax, 1.0)
    ncol = min(4, len(slices))
    nrow = int(np.ceil(len(slices) / ncol))
    aspect = float(spacing[1] / spacing[0]) if len(spacing) > 1 else 1.0
    panel_h = 2.4 * min(2.0, aspect * r2.shape[1] / max(r2.shape[2], 1))
    fig = _new_figure(2.4 * ncol + 0.9, panel_h * nrow + 0.3)
    axes = fig.subplots(nrow, ncol, squeeze=False)
    image = None
    for ax in axes.ravel():
        ax.axis("off")
    for ax, k in zip(axes.ravel(), slices):
        plane = np.ma.masked_invalid(r2[k])
        image = ax.imshow(plane, cmap="magma", vmin=0.0, vmax=vmax, aspect=aspect,
                          interpolation="nearest")
        if labels is not None:
            edge = _edges(labels[k])
            if edge.any():
                overlay = np.zeros(edge.shape + (4,), np.float32)
                overlay[edge] = (1.0, 1.0, 1.0, 0.9)
                ax.imshow(overlay, aspect=aspect, interpolation="nearest")
        ax.set_title(f"slice k={k}", fontsize=8)
    fig.subplots_adjust(left=0.01, right=0.86, top=0.94, bottom=0.02, wspace=0.04, hspace=0.12)
    if image is not None:
        cax = fig.add_axes([0.89, 0.1, 0.025, 0.8])
        bar = fig.colorbar(image, cax=cax)
        bar.set_label(f"{rate} (1/s)")
    return _png(fig)


def _edges(plane) -> np.ndarray:
    edge = np.zeros(plane.shape, bool)
    edge[:-1, :] |= plane[:-1, :] != plane[1:, :]
    edge[:, :-1] |= plane[:, :-1] != plane[:, 1:]
    return edge & (plane > 0)


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


def _grid(n):
    ncol = min(3, n)
    return int(np.ceil(n / ncol)), ncol


def _histograms(r2, named, rate) -> bytes:
    nrow, ncol = _grid(len(named))
    fig = _new_figure(3.2 * ncol, 2.3 * nrow)
    axes = fig.subplots(nrow, ncol, squeeze=False)
    for ax in axes.ravel()[len(named):]:
        ax.axis("off")
    for ax, (name, mask) in zip(axes.ravel(), named):
        values = r2[mask]
        values = values[np.isfinite(values)]
        ax.set_title(f"{name} (n={values.size})", fontsize=9)
        if values.size:
            lo, hi = np.percentile(values, [0.5, 99.5])
            if hi <= lo:
                lo, hi = lo - 1.0, hi + 1.0
            ax.hist(values, bins=40, range=(lo, hi), color="#8c2d04")
            ax.axvline(float(np.median(values)), color="k", ls="--", lw=1)
        else:
            ax.text(0.5, 0.5, "no fitted voxels", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel(f"{rate} (1/s)", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    return _png(fig)


def mean_decay(signal, labels, values) -> np.ndarray:
    """Mean signal per echo of each label in ``values``: array [len(values), n_echoes]."""
    flat = np.asarray(labels).ravel()
    n = int(max(values)) + 1 if len(values) else 1
    counts = np.bincount(flat, minlength=n).astype(np.float64)
    out = np.empty((len(values), signal.shape[0]))
    for e in range(signal.shape[0]):
        sums = np.bincount(flat, weights=np.nan_to_num(signal[e].ravel()), minlength=n)
        out[:, e] = sums[list(values)] / np.maximum(counts[list(values)], 1)
    return out


def _decay_curves(image, fit, named, regions, rate) -> bytes:
    te = np.asarray(image.echo_times_ms, dtype=np.float64)
    stacked = np.zeros(image.shape, np.int32)
    for n, (_, mask) in enumerate(named, 1):
        stacked[mask] = n
    means = mean_decay(image.signal, stacked, list(range(1, len(named) + 1)))
    by_name = {r.get("name"): r for r in regions}
    nrow, ncol = _grid(len(named))
    fig = _new_figure(3.2 * ncol, 2.3 * nrow)
    axes = fig.subplots(nrow, ncol, squeeze=False)
    for ax in axes.ravel()[len(named):]:
        ax.axis("off")
    t_fine = np.linspace(0.0, te[-1], 100)
    for ax, (name, mask), y in zip(axes.ravel(), named, means):
        region = by_name.get(name, {})
        r2 = region.get("r2star_roi_fit")
        source = "ROI fit"
        if r2 is None or not np.isfinite(r2):
            r2 = region.get("r2star_median")
            source = "voxel median"
        if r2 is None:
            values = fit.r2star[mask]
            values = values[np.isfinite(values)]
            r2 = float(np.median(values)) if values.size else None
        ax.plot(te, y, "o", ms=3, color="#08519c")
        if r2 is not None and np.isfinite(r2):
            decay = np.exp(-r2 * te / 1000.0)
            s0 = float(np.dot(y, decay) / max(np.dot(decay, decay), 1e-300))
            ax.plot(t_fine, s0 * np.exp(-r2 * t_fine / 1000.0), "-", color="#cb181d", lw=1)
            ax.set_title(f"{name}: {rate} {r2:.0f} 1/s ({source})", fontsize=8)
        else:
            ax.set_title(f"{name}: no fit", fontsize=8)
        ax.set_xlabel("echo time (ms)", fontsize=8)
        ax.set_ylabel("mean signal", fontsize=8)
        ax.set_ylim(bottom=0)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    return _png(fig)


_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;max-width:1100px;margin:1.5em auto;
padding:0 1em;color:#222;line-height:1.4}
h1{margin-bottom:.2em}h2{border-bottom:1px solid #ccc;padding-bottom:.15em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
table.kv th{text-align:left;white-space:nowrap}table.kv td{text-align:left}
.research{background:#fff4e5;border-left:4px solid #e67e22;padding:.5em .8em}
.pattern{background:#eef5fb;border-left:4px solid #2171b5;padding:.1em .8em .4em}
.note{color:#555;font-style:italic}.meta{color:#555;font-size:.9em}
figure{margin:1em 0}figure img{max-width:100%}figcaption{font-size:.85em;color:#444}
ul.warnings li{color:#8a4b00}pre{font-size:.8em;overflow-x:auto}
"""
