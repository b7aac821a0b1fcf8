"""The headless end-to-end run shared by the command line, batch and demo.

    load -> fit -> summarise -> write maps, regions.csv, summary.json, report.html

    >>> from IronMapping.pipeline import run_files, run_demo
    >>> result = run_files(["echoes.seq.nrrd"], "out", labels="organs.seg.nrrd")
    >>> result.files["r2star"], result.summary["pattern"]["text"]

No MRML here: Slicer's module calls the library directly; this module is for files.
Every output folder gets ``run.json``: written first with ``"complete": false`` (it marks the
folder as IronMapping's, so a later run may replace its files) and rewritten last with what went
in, options, software version, files and timings, and ``"complete": true``.
"""

from __future__ import annotations

import json
import os
import time
import warnings as _warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .io.metadata import json_default as _json_default
from . import __version__, RESEARCH_USE_STATEMENT
from .errors import CalibrationError, InputError, OutputError
from .image import MultiEchoImage
from .maps_io import (FORMATS, LabelMap, output_failure, output_path, read_labels,
                      resample_labels, write_maps)

RUN_RECORD = "run.json"
REGIONS_CSV = "regions.csv"
SUMMARY_JSON = "summary.json"
FOCAL_CSV = "focal_findings.csv"
REPORT_HTML = "report.html"
REPORT_PDF = "report.pdf"  # beside the HTML when matplotlib is installed
BASE_MAPS = ("r2star", "t2star", "s0", "quality", "status", "r2star_sd")

#: progress(stage, fraction): stage is "load", "fit", "statistics", "write" or "report";
#: fraction is 0..1 within the stage, or None when unknown.
Progress = Callable[[str, "float | None"], None]


@dataclass
class PipelineResult:
    """What one run produced.

    out_dir : the output folder.
    image : the MultiEchoImage that was fitted.
    fit : the RelaxometryFit (maps in memory).
    label_map : LabelMap on the image grid, or None.
    summary : the statistics dict (``quantification.summarize``'s shape).
    files : output name -> path ("r2star", ..., "regions_csv", "summary_json", "report", "run").
    timings : stage -> seconds.
    warnings : everything the user should read, in order.
    """

    out_dir: Path
    image: MultiEchoImage
    fit: Any
    label_map: LabelMap | None
    summary: dict
    files: dict[str, Path] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- inputs

def load_image(inputs, echo_times_ms=None, field_strength_t=None, series=None,
               confirm_field_strength: bool = False) -> MultiEchoImage:
    """Read a multi-echo series (DICOM folder, NIfTI echoes with sidecars, .seq.nrrd).

    ``echo_times_ms`` supplies echo times where the files have none (where they have them, the
    reader checks that the two agree); ``field_strength_t`` supplies the field where the files
    have none (see :func:`override_field_strength` when they have one).
    """
    from .io import load_multiecho

    paths = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    if not paths:
        raise InputError("No input was given. Give a DICOM folder, NIfTI echoes or a .seq.nrrd.")
    for p in paths:
        if not Path(p).exists():
            raise InputError(f"Input {str(p)!r} does not exist. Check the path.")
    source = paths[0] if len(paths) == 1 else [str(p) for p in paths]
    te = None if echo_times_ms is None else [float(t) for t in echo_times_ms]
    image = load_multiecho(source, series=series, echo_times_ms=te)
    return override_field_strength(image, field_strength_t, confirm_field_strength)


#: Field strengths closer than this (T) are the same magnet (headers write 1.5 or 1.494).
FIELD_STRENGTH_TOLERANCE_T = 0.1


def override_field_strength(image: MultiEchoImage, field_strength_t=None,
                            confirm: bool = False) -> MultiEchoImage:
    """A copy of ``image`` with the field strength (T) given by the user, and where it came from.

    A value that contradicts the one recorded in the files is refused (cut-offs and LIC
    calibrations differ between 1.5 T and 3 T) unless ``confirm`` (``--confirm-field-strength``);
    then the files' value is kept in ``metadata["field_strength_t_from_files"]``.
    ``metadata["field_strength_source"]`` says where the value used came from.
    """
    metadata = dict(image.metadata)
    recorded = image.field_strength_t
    if field_strength_t is None:
        metadata.setdefault("field_strength_source", None)
        if recorded is None:
            metadata["field_strength_source"] = "unknown (not recorded in the input)"
        return MultiEchoImage(image.signal, image.echo_times_ms, image.ijk_to_ras,
                              image.quantity, recorded, metadata)
    given = float(field_strength_t)
    origin = metadata.get("field_strength_source") or "from the input files"
    if recorded is not None and abs(recorded - given) > FIELD_STRENGTH_TOLERANCE_T:
        if not confirm:
            raise InputError(
                f"--field-strength {given:g} T contradicts the {recorded:g} T recorded in the "
                f"input ({origin.replace('from ', '', 1)}). Grades and LIC calibrations differ "
                "between 1.5 T and 3 T, so the wrong value grades every organ wrongly. Leave "
                f"--field-strength out to use {recorded:g} T, or add --confirm-field-strength to "
                f"use {given:g} T anyway (Python: confirm_field_strength=True).")
        metadata["field_strength_t_from_files"] = recorded
        metadata["field_strength_source"] = (
            f"given on the command line (--field-strength), confirmed over the {recorded:g} T "
            f"{origin}")
        metadata["warnings"] = list(metadata.get("warnings", [])) + [
            f"Field strength {given:g} T given on the command line replaces the {recorded:g} T "
            f"{origin} (confirmed with --confirm-field-strength)."]
    elif recorded is not None:
        metadata["field_strength_source"] = f"{origin}; the same value was given on the command line"
    else:
        metadata["field_strength_source"] = "given on the command line (--field-strength)"
    return MultiEchoImage(image.signal, image.echo_times_ms, image.ijk_to_ras, image.quantity,
                          given, metadata)


def load_labels(path, image: MultiEchoImage, names_path=None) -> LabelMap:
    """Read a label map or Slicer .seg.nrrd and put it on the image grid (see maps_io)."""
    return read_labels(path, names_path=names_path, reference_shape=image.shape,
                       reference_ijk_to_ras=image.ijk_to_ras)


# --------------------------------------------------------------------------- output folder

def planned_outputs(fmt: str, maps: Sequence[str] = BASE_MAPS + ("lic", "pdff"),
                    report: bool = True) -> list[str]:
    """File names a run may write into its output folder (gradient- and spin-echo names)."""
    from .maps_io import map_file_stem

    names = []
    for m in maps:
        for quantity in ("T2*", "T2"):
            p = output_path(".", map_file_stem(m, quantity), fmt)
            names += [p.name, p.name.replace(FORMATS[fmt], ".json")]
    names += [REGIONS_CSV, SUMMARY_JSON, RUN_RECORD, FOCAL_CSV]
    if report:
        names += [REPORT_HTML, REPORT_PDF]
    return list(dict.fromkeys(names))


#: Files that operating systems drop into any folder; they do not make a folder someone's.
_OS_LITTER = {".DS_Store", "Thumbs.db", "desktop.ini"}
#: Records of a cohort run (IronMapping.batch) inside a study folder.
_BATCH_RECORDS = {"done.json", "error.json"}


def _is_ours(out: Path) -> bool:
    """True when ``out`` holds the run record of an earlier IronMapping run."""
    try:
        record = json.loads((out / RUN_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and str(record.get("software", "")).startswith("IronMapping")


def check_output_folder(out_dir, fmt: str, overwrite: bool = False, inputs=()) -> Path:
    """Raise InputError unless a run may write into ``out_dir`` (nothing is written).

    An empty or new folder, or one an earlier IronMapping run wrote (it has IronMapping's
    ``run.json``), may be written. A folder holding anything IronMapping did not write is
    refused unless ``overwrite``; even then only IronMapping's own file names are replaced,
    other files are left alone. An input is never overwritten.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {str(out)!r} is a file; give a folder for the outputs.")
    names = set()
    for f in FORMATS:
        names.update(planned_outputs(f))
    resolved_inputs = {Path(p).resolve() for p in inputs if p}
    clash_inputs = sorted(n for n in names if (out / n).resolve() in resolved_inputs)
    if clash_inputs:
        raise InputError(
            f"The output folder {str(out)!r} would overwrite the input {clash_inputs[0]!r}. "
            "Choose another --out folder.")
    if not out.is_dir() or overwrite or _is_ours(out):
        return out
    try:
        entries = sorted(e.name for e in out.iterdir()
                         if e.name not in _OS_LITTER and e.name not in _BATCH_RECORDS)
    except OSError as exc:
        raise output_failure(exc, out / RUN_RECORD) from None
    if entries:
        # the names a run would replace first: those matter most to the owner
        shown = sorted(entries, key=lambda n: (n not in names, n))[:3]
        more = len(entries) - len(shown)
        raise InputError(
            f"{str(out)!r} already holds {', '.join(shown)}{f' and {more} more' if more else ''}, "
            "not written by IronMapping. Choose an empty or new folder, or pass --overwrite to "
            "write into it anyway (IronMapping's own file names are replaced, other files are "
            "left alone).")
    return out


def prepare_output_folder(out_dir, fmt: str, overwrite: bool = False, inputs=()) -> Path:
    """:func:`check_output_folder`, then create the folder and mark it as IronMapping's."""
    out = check_output_folder(out_dir, fmt, overwrite, inputs)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise output_failure(exc, out / RUN_RECORD) from None
    # Mark the folder as ours and as incomplete until the final record replaces this one.
    _write_json(out / RUN_RECORD, {"software": f"IronMapping {__version__}", "complete": False})
    return out


def _write_json(path: Path, payload) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(payload, indent=2, default=_json_default) + "\n",
                       encoding="utf-8")
        os.replace(tmp, path)
    except OutputError:
        raise
    except OSError as exc:
        if tmp.exists():
            tmp.unlink()
        raise output_failure(exc, path) from None
    return path


# --------------------------------------------------------------------------- the run

def run(image: MultiEchoImage, out_dir, label_map: LabelMap | None = None, *,
        method: str = "auto", calibration=None, convert_field: bool = False, fmt: str = "nrrd",
        noise_sigma: float | None = None, coils: float | None = None, report: bool = True,
        figures: bool = True, overwrite: bool = False, progress: Progress | None = None,
        cancel: Callable[[], bool] | None = None, inputs: Mapping[str, Any] | None = None,
        truth: Mapping[str, float] | None = None, title: str | None = None,
        timings: Mapping[str, float] | None = None) -> PipelineResult:
    """Fit ``image`` and write every output into ``out_dir``.

    Parameters
    ----------
    image : the multi-echo series (echo times in ms; field strength needed for LIC).
    label_map : regions on any grid (resampled onto the image grid); None for maps only.
    method : fit method (``relaxometry.METHODS``).
    calibration : LIC calibration name (``calibration.CALIBRATIONS``), None for the default.
    convert_field : allow converting R2* between field strengths for LIC (with a warning).
    fmt : "nrrd" or "nifti" for the maps.
    report, figures : write report.html, with or without figures.
    inputs : what went in (paths, options), recorded in run.json and the report.
    truth : phantom truth {region name: R2* 1/s} shown in the report.
    timings : seconds of earlier stages (e.g. {"load": 1.2}), recorded with this run's.
    """
    from .quantification import write_summary_json
    from .relaxometry import fit as fit_maps

    timings = dict(timings or {})
    notes: list[str] = []
    say = progress or (lambda stage, fraction: None)
    input_paths = [v for v in _flatten((inputs or {}).values())
                   if isinstance(v, (str, Path)) and Path(v).exists()]
    out = prepare_output_folder(out_dir, fmt, overwrite, input_paths)
    notes += [str(w) for w in image.metadata.get("warnings", []) or []]
    if label_map is not None:
        label_map = resample_labels(label_map, image.shape, image.ijk_to_ras)
        notes += label_map.warnings

    t0 = time.perf_counter()
    say("fit", 0.0)
    fat_water = {}
    if method == "fat-water":  # phase and readout, as far as relaxometry.fit takes them
        from .fatwater import fit_inputs_from_image
        from .relaxometry import FIT_OPTIONS
        fat_water = {k: v for k, v in fit_inputs_from_image(image).items() if k in FIT_OPTIONS}
    with _warnings.catch_warnings(record=True) as caught:
        _warnings.simplefilter("always")
        fit = fit_maps(image.signal, image.echo_times_ms, method=method, noise_sigma=noise_sigma,
                       coils=coils, progress=lambda f: say("fit", f), cancel=cancel,
                       quantity=image.quantity, field_strength_t=image.field_strength_t,
                       include_mask=None if label_map is None else label_map.labels > 0,
                       **fat_water)
    # The engine's notes are UserWarnings; numpy's RuntimeWarnings inside masked-out math are not.
    notes += _unique([str(w.message) for w in caught if issubclass(w.category, UserWarning)
                      and not issubclass(w.category, RuntimeWarning)]
                     + list(getattr(fit, "warnings", [])))
    timings["fit"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    say("statistics", None)
    summary = summarise(fit, image, label_map, calibration, convert_field)
    notes += [w for w in summary.get("warnings", []) if w not in notes]
    timings["statistics"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    say("write", None)
    maps = {"r2star": fit.r2star, "t2star": fit.t2star, "s0": fit.s0, "quality": fit.quality,
            "status": fit.status, "r2star_sd": fit.uncertainty}
    extra: dict[str, dict] = {}
    if "pdff" in fit.maps:  # fat-water method: proton density fat fraction in percent
        maps["pdff"] = np.asarray(fit.maps["pdff"], dtype=np.float32)
    lic = liver_iron_map(fit, label_map, summary, image.field_strength_t, calibration,
                         convert_field)
    if lic is not None:
        maps["lic"], extra["lic"] = lic
    files = write_maps(out, maps, image.ijk_to_ras, fmt, provenance=fit.provenance(),
                       quantity=image.quantity, extra=extra)
    files["regions_csv"] = write_regions(out / REGIONS_CSV, summary)
    files["summary_json"] = Path(write_summary_json(summary, out / SUMMARY_JSON))
    from .focal import write_focal_csv
    files["focal_findings_csv"] = Path(write_focal_csv(summary, out / FOCAL_CSV))
    timings["write"] = time.perf_counter() - t0

    if report:
        from .report import write_report

        t0 = time.perf_counter()
        say("report", None)
        try:
            files["report"] = write_report(
                out / REPORT_HTML, summary, fit=fit, image=image,
                labels=None if label_map is None else label_map.labels,
                label_names=None if label_map is None else label_map.names,
                inputs=dict(inputs or {}), figures=figures, warnings=notes, timings=timings,
                truth=truth, title=title)
        except OutputError:
            raise
        except OSError as exc:
            raise output_failure(exc, out / REPORT_HTML) from None
        if (out / REPORT_PDF).is_file():
            files["report_pdf"] = out / REPORT_PDF
        timings["report"] = time.perf_counter() - t0

    record = {
        "software": f"IronMapping {__version__}",
        "research_use": RESEARCH_USE_STATEMENT,
        "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "inputs": dict(inputs or {}),
        "method": fit.provenance(),
        "calibration": summary.get("calibration"),
        "format": fmt,
        "files": {k: p.name for k, p in files.items()},
        "timings_s": timings,
        "warnings": notes,
        "complete": True,
    }
    files["run"] = _write_json(out / RUN_RECORD, record)
    return PipelineResult(out, image, fit, label_map, summary, files, timings, notes)


def summarise(fit, image: MultiEchoImage, label_map: LabelMap | None, calibration=None,
              convert_field: bool = False) -> dict:
    """The statistics dict of issue 4 (``quantification.summarize``).

    Without a label map the dict has no regions and says so; the maps are still written.
    """
    from . import quantification

    if label_map is None:
        labels = np.zeros(image.shape, dtype=np.int32)
        names: dict[int, str] = {}
    else:
        labels, names = label_map.labels, label_map.names
    terminology = None if label_map is None else (label_map.terminology or None)
    summary = quantification.summarize(
        fit, labels, names, image.field_strength_t, calibration=calibration,
        signal=image.signal, echo_times_ms=image.echo_times_ms,
        voxel_volume_ml=image.voxel_volume_ml, terminology=terminology,
        convert_field=convert_field,
        ijk_to_ras=image.ijk_to_ras, complex_signal=image.metadata.get("complex_components"))
    summary = dict(summary)
    summary["field_strength_source"] = image.metadata.get("field_strength_source")
    summary["echo_time_source"] = image.metadata.get("echo_time_source")
    summary["whole_image"] = whole_image_figures(fit)
    if label_map is None:
        summary.setdefault("warnings", [])
        summary["warnings"] = list(summary["warnings"]) + [
            "No label map was given: maps only, no organ statistics. Pass --labels to get them."]
    return summary


def whole_image_figures(fit) -> dict:
    """How much of the image was fitted and the median R2*/T2* of the fitted tissue.

    Returns a JSON-able dict: ``voxels``, ``fitted_voxels``, ``fitted_fraction`` (0-1),
    ``r2star_median`` (1/s) and ``t2star_median`` (ms) over fitted voxels (None when none),
    ``quantity`` ("T2*" or "T2").
    """
    from .relaxometry import Status

    fitted = np.asarray(fit.status) == Status.FITTED
    n_fitted = int(np.count_nonzero(fitted))
    r2 = np.asarray(fit.r2star)[fitted]
    t2 = np.asarray(fit.t2star)[fitted]
    r2 = r2[np.isfinite(r2)]
    t2 = t2[np.isfinite(t2)]
    return {"voxels": int(fitted.size), "fitted_voxels": n_fitted,
            "fitted_fraction": n_fitted / fitted.size if fitted.size else 0.0,
            "r2star_median": float(np.median(r2)) if r2.size else None,
            "t2star_median": float(np.median(t2)) if t2.size else None,
            "quantity": getattr(fit, "quantity", "T2*")}


def write_regions(path: Path, summary: Mapping[str, Any]) -> Path:
    """regions.csv: one row per region, units in the column names (statistics issue's table)."""
    from .quantification import write_regions_csv

    return Path(write_regions_csv(summary, path))


def liver_iron_map(fit, label_map: LabelMap | None, summary: Mapping[str, Any], field_strength_t,
                   calibration=None, convert_field: bool = False):
    """(LIC map in mg Fe/g dw on liver voxels, NaN elsewhere; sidecar dict) or None.

    None when no region is recognised as liver or the calibration cannot be applied (the
    summary then says why).
    """
    if label_map is None:
        return None
    liver_names = {r.get("name") for r in summary.get("regions", []) if r.get("organ") == "liver"}
    values = [v for v, n in label_map.names.items() if n in liver_names]
    if not values:
        return None
    from .calibration import liver_iron_concentration

    liver = np.isin(label_map.labels, values)
    lic = np.full(fit.r2star.shape, np.nan, dtype=np.float32)
    try:
        inside, info = liver_iron_concentration(fit.r2star[liver], field_strength_t, calibration,
                                                convert_field=convert_field)
    except CalibrationError:
        return None  # summary.json and the report carry the reason
    lic[liver] = inside
    return lic, {"calibration": info, "regions": sorted(liver_names)}


def _flatten(values):
    for v in values:
        if isinstance(v, (list, tuple)):
            yield from _flatten(v)
        else:
            yield v


def _unique(items):
    return list(dict.fromkeys(i for i in items if i))


# --------------------------------------------------------------------------- entry points

def run_files(inputs, out_dir, labels=None, label_names=None, *, echo_times_ms=None,
              field_strength_t=None, series=None, confirm_field_strength: bool = False,
              progress: Progress | None = None,
              record: Mapping[str, Any] | None = None, **options) -> PipelineResult:
    """Read files and :func:`run`. ``labels``: label map / .seg.nrrd path; ``label_names``:
    CSV or Slicer colour table; ``record``: extra entries for run.json and the report (e.g. a
    study id); other keyword arguments go to :func:`run`."""
    say = progress or (lambda stage, fraction: None)
    t0 = time.perf_counter()
    say("load", None)
    paths = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    check_output_folder(out_dir, options.get("fmt", "nrrd"), options.get("overwrite", False),
                        [*paths, labels, label_names])  # fail before the slow part
    image = load_image(paths, echo_times_ms, field_strength_t, series, confirm_field_strength)
    label_map = load_labels(labels, image, label_names) if labels is not None else None
    load_s = time.perf_counter() - t0
    inputs_record = {"input": [str(p) for p in paths], "labels": None if labels is None else str(labels),
              "label_names": None if label_names is None else str(label_names),
              "echo_times_ms": [float(t) for t in image.echo_times_ms],
              "field_strength_t": image.field_strength_t,
              "field_strength_source": image.metadata.get("field_strength_source"),
              "echo_time_source": image.metadata.get("echo_time_source"),
              "quantity": image.quantity,
              "method_requested": options.get("method", "auto"),
              "calibration_requested": options.get("calibration")}
    if "field_strength_t_from_files" in image.metadata:
        inputs_record["field_strength_t_from_files"] = image.metadata["field_strength_t_from_files"]
    inputs_record.update(record or {})
    return run(image, out_dir, label_map, progress=progress, inputs=inputs_record,
               timings={"load": load_s}, **options)


def run_demo(out_dir, preset: str = "neonatal-haemochromatosis", *, shape=(16, 96, 128),
             snr: float = 50.0, phantom_coils: int = 1, seed: int = 0, field_strength_t: float = 1.5,
             progress: Progress | None = None, **options) -> PipelineResult:
    """Build the phantom (``phantom.make_phantom``) and run the whole pipeline on it.

    ``phantom_coils`` is the simulated receive coil count; other keyword arguments (method,
    fmt, figures, ...) go to :func:`run`.
    """
    from .phantom import make_phantom

    ph = make_phantom(preset, shape=tuple(shape), field_strength_t=field_strength_t, snr=snr,
                      coils=phantom_coils, seed=seed)
    ph.image.metadata["field_strength_source"] = "phantom setting (--field-strength of the demo)"
    label_map = LabelMap(np.asarray(ph.labels, dtype=np.int32), ph.image.ijk_to_ras,
                         {int(k): v for k, v in ph.label_names.items()}, "phantom")
    inputs = {"input": f"built-in phantom, preset {preset!r}", "shape (k, j, i)": list(shape),
              "snr": snr, "coils": phantom_coils, "seed": seed, "field_strength_t": field_strength_t,
              "field_strength_source": "phantom setting (--field-strength of the demo)",
              "echo_times_ms": [float(t) for t in ph.image.echo_times_ms],
              "method_requested": options.get("method", "auto")}
    options.setdefault("title", f"IronMapping demo: phantom '{preset}'")
    return run(ph.image, out_dir, label_map, progress=progress, inputs=inputs,
               truth=dict(ph.region_r2star), **options)
