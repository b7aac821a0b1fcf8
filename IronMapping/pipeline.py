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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from . import __version__, RESEARCH_USE_STATEMENT
from .errors import CalibrationError, InputError, OutputError
from .analysis import summarize_fit, whole_image_figures  # noqa: F401 (public names)
from .fileio import write_json
from .image import MultiEchoImage
from .maps_io import (FORMATS, LabelMap, maps_of_fit, output_failure, output_path, read_labels,
                      resample_labels, write_maps)
from .quantities import MAPS

RUN_RECORD = "run.json"
REGIONS_CSV = "regions.csv"
SUMMARY_JSON = "summary.json"
FOCAL_CSV = "focal_findings.csv"
REPORT_HTML = "report.html"
REPORT_PDF = "report.pdf"  # beside the HTML when matplotlib is installed
#: Maps every run writes; LIC (liver labelled) and PDFF (fat-water) may follow (quantities.MAPS).
BASE_MAPS = tuple(m.key for m in MAPS if m.files and m.source and not m.optional)
NO_LABELS_WARNING = ("No label map was given: maps only, no organ statistics. Pass --labels to "
                     "get them.")

#: progress(stage, fraction): stage is "load", "fit", "statistics", "write" or "report";
#: fraction is 0..1 within the stage, or None when unknown.
Progress = Callable[[str, "float | None"], None]


@dataclass
class PipelineResult:
    """What one run produced.

    Attributes
    ----------
    out_dir : Path
        The output folder.
    image : MultiEchoImage
        The image that was fitted.
    fit : RelaxometryFit
        The fit (maps in memory).
    label_map : LabelMap or None
        Regions on the image grid.
    summary : dict
        The statistics dict (``quantification.summarize``'s shape).
    files : dict of str to Path
        Output name -> path ("r2star", ..., "regions_csv", "summary_json", "report", "run").
    timings : dict of str to float
        Stage -> seconds.
    warnings : list of str
        Everything the user should read, in order.
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

    Parameters
    ----------
    inputs : str, os.PathLike or sequence of them
        A folder or file, or several files; each must exist.
    echo_times_ms : sequence of float, optional
        Echo times in ms where the files have none (where they have them, the reader checks
        that the two agree).
    field_strength_t : float, optional
        Main field in T where the files have none (see :func:`override_field_strength` when
        they have one).
    series : int or str, optional
        Which series to load when several are found: series number, SeriesInstanceUID, series
        description or file name.
    confirm_field_strength : bool
        Use ``field_strength_t`` even where it contradicts the files' value.

    Returns
    -------
    MultiEchoImage

    Raises
    ------
    InputError
        No input, a path that does not exist, or a field strength that contradicts the files
        (without ``confirm_field_strength``); the readers' errors otherwise.
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

    A value that contradicts the one recorded in the files (by more than
    ``FIELD_STRENGTH_TOLERANCE_T``) is refused (cut-offs and LIC calibrations differ between
    1.5 T and 3 T) unless ``confirm`` (``--confirm-field-strength``); then the files' value is
    kept in ``metadata["field_strength_t_from_files"]``. ``metadata["field_strength_source"]``
    says where the value used came from.

    Parameters
    ----------
    image : MultiEchoImage
        The loaded image (not changed).
    field_strength_t : float, optional
        Main field in T given by the user; None keeps the recorded one.
    confirm : bool
        Accept a value that contradicts the recorded one (with a warning in the metadata).

    Returns
    -------
    MultiEchoImage

    Raises
    ------
    InputError
        The value contradicts the recorded one and ``confirm`` is False.
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
    """Read a label map or Slicer .seg.nrrd and put it on the image grid (see maps_io).

    Parameters
    ----------
    path : str or Path
        Label volume (NRRD, NIfTI) or ``.seg.nrrd``.
    image : MultiEchoImage
        The image whose grid the labels are resampled onto (nearest neighbour).
    names_path : str or Path, optional
        Label names (CSV or Slicer colour table) of a label volume
        (:func:`IronMapping.maps_io.read_labels`).

    Returns
    -------
    LabelMap
    """
    return read_labels(path, names_path=names_path, reference_shape=image.shape,
                       reference_ijk_to_ras=image.ijk_to_ras)


# --------------------------------------------------------------------------- output folder

def planned_outputs(fmt: str, maps: Sequence[str] = tuple(m.key for m in MAPS if m.files),
                    report: bool = True) -> list[str]:
    """File names a run may write into its output folder (gradient- and spin-echo names).

    Parameters
    ----------
    fmt : str
        Map format, a key of ``maps_io.FORMATS`` ("nrrd" or "nifti").
    maps : sequence of str
        Map keys (default: every map written to files).
    report : bool
        Include report.html and report.pdf.

    Returns
    -------
    list of str
        Map files and their JSON sidecars, regions.csv, summary.json, run.json,
        focal_findings.csv (and the report), without duplicates.
    """
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

    Parameters
    ----------
    out_dir : str or Path
        The output folder.
    fmt : str
        Map format ("nrrd" or "nifti").
    overwrite : bool
        Write into a folder holding other files.
    inputs : iterable of paths
        Input files, none of which may be an output's name.

    Returns
    -------
    Path
        ``out_dir``.

    Raises
    ------
    InputError
        ``out_dir`` is a file, an output would replace an input, or the folder holds files
        IronMapping did not write (without ``overwrite``).
    OutputError
        The folder cannot be listed.
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
    """:func:`check_output_folder`, then create the folder and mark it as IronMapping's.

    The mark is a ``run.json`` with ``"complete": false``, replaced by the run's final record.

    Parameters
    ----------
    out_dir : str or Path
        The output folder (created with its parents).
    fmt : str
        Map format ("nrrd" or "nifti").
    overwrite : bool
        Write into a folder holding other files.
    inputs : iterable of paths
        Input files, none of which may be an output's name.

    Returns
    -------
    Path

    Raises
    ------
    InputError
        As :func:`check_output_folder`.
    OutputError
        The folder or its run record cannot be written.
    """
    out = check_output_folder(out_dir, fmt, overwrite, inputs)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise output_failure(exc, out / RUN_RECORD) from None
    # Mark the folder as ours and as incomplete until the final record replaces this one.
    _write_json(out / RUN_RECORD, {"software": f"IronMapping {__version__}", "complete": False})
    return out


_write_json = write_json


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
    image : MultiEchoImage
        The multi-echo series (echo times in ms; field strength needed for LIC).
    out_dir : str or Path
        The output folder (see :func:`prepare_output_folder`).
    label_map : LabelMap, optional
        Regions on any grid (resampled onto the image grid); None for maps only.
    method : str
        Fit method (``relaxometry.METHODS``).
    calibration : str, optional
        LIC calibration name (``calibration.CALIBRATIONS``), None for the default.
    convert_field : bool
        Allow converting R2* between field strengths for LIC (with a warning).
    fmt : str
        "nrrd" or "nifti" for the maps.
    noise_sigma : float, optional
        Noise SD per channel (signal units); estimated when None.
    coils : float, optional
        Receive coil count L; estimated when None.
    report, figures : bool
        Write report.html, with or without figures.
    overwrite : bool
        Write into a folder holding files IronMapping did not write.
    progress : Progress, optional
        ``progress(stage, fraction)``, stage "load", "fit", "statistics", "write" or "report".
    cancel : callable() -> bool, optional
        Polled during the fit; True stops it (FitCancelled).
    inputs : mapping, optional
        What went in (paths, options), recorded in run.json and the report.
    truth : mapping of str to float, optional
        Phantom truth {region name: R2* 1/s} shown in the report.
    title : str, optional
        Title of the report.
    timings : mapping of str to float, optional
        Seconds of earlier stages (e.g. {"load": 1.2}), recorded with this run's.

    Returns
    -------
    PipelineResult
    """
    from .analysis import analyse
    from .quantification import write_summary_json

    timings = dict(timings or {})
    say = progress or (lambda stage, fraction: None)
    input_paths = [v for v in _flatten((inputs or {}).values())
                   if isinstance(v, (str, Path)) and Path(v).exists()]
    out = prepare_output_folder(out_dir, fmt, overwrite, input_paths)
    label_notes = []
    if label_map is not None:
        label_map = resample_labels(label_map, image.shape, image.ijk_to_ras)
        label_notes = label_map.warnings

    analysis = analyse(
        image, labels=None if label_map is None else label_map.labels,
        label_names=None if label_map is None else label_map.names, method=method,
        noise_sigma=noise_sigma, coils=coils, calibration=calibration, convert_field=convert_field,
        terminology=None if label_map is None else label_map.terminology,
        no_labels_warning=NO_LABELS_WARNING, notes=label_notes, progress=say, cancel=cancel)
    fit, summary, notes = analysis.fit, analysis.summary, analysis.warnings
    timings.update(analysis.timings)

    t0 = time.perf_counter()
    say("write", None)
    maps = maps_of_fit(fit)
    extra: dict[str, dict] = {}
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
        "method": analysis.provenance["method"],
        "calibration": analysis.provenance["calibration"],
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
    """The statistics dict (``quantification.summarize``) of ``fit`` over ``label_map``.

    Kept for callers of this name; it is :func:`IronMapping.analysis.summarize_fit`. Without a
    label map the dict has no regions and says so.

    Parameters
    ----------
    fit : RelaxometryFit
        The fit of ``image``.
    image : MultiEchoImage
        The fitted image (field strength, geometry).
    label_map : LabelMap or None
        Regions on the image grid.
    calibration : str, optional
        LIC calibration name, None for the default.
    convert_field : bool
        Allow converting R2* between field strengths for LIC.

    Returns
    -------
    dict
    """
    return summarize_fit(fit, image, None if label_map is None else label_map.labels,
                         None if label_map is None else label_map.names, calibration=calibration,
                         convert_field=convert_field,
                         terminology=None if label_map is None else label_map.terminology,
                         no_labels_warning=NO_LABELS_WARNING)


def write_regions(path: Path, summary: Mapping[str, Any]) -> Path:
    """regions.csv: one row per region, units in the column names.

    See ``quantification.regions_table``.

    Parameters
    ----------
    path : Path
        The CSV file to write.
    summary : mapping
        The statistics dict.

    Returns
    -------
    Path
    """
    from .quantification import write_regions_csv

    return Path(write_regions_csv(summary, path))


def liver_iron_map(fit, label_map: LabelMap | None, summary: Mapping[str, Any], field_strength_t,
                   calibration=None, convert_field: bool = False):
    """(LIC map in mg Fe/g dw on liver voxels, NaN elsewhere; sidecar dict) or None.

    None when no region is recognised as liver or the calibration cannot be applied (the
    summary then says why).

    Parameters
    ----------
    fit : RelaxometryFit
        Its ``r2star`` map (1/s) is converted.
    label_map : LabelMap or None
        Regions on the image grid.
    summary : mapping
        The statistics dict; its regions with organ "liver" are the liver.
    field_strength_t : float or None
        Main field in T.
    calibration : str, optional
        LIC calibration name, None for the default.
    convert_field : bool
        Allow converting R2* between field strengths.

    Returns
    -------
    tuple or None
        (float32 map of the spatial shape, {"calibration": ..., "regions": [...]}).
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


# --------------------------------------------------------------------------- entry points

def run_files(inputs, out_dir, labels=None, label_names=None, *, echo_times_ms=None,
              field_strength_t=None, series=None, confirm_field_strength: bool = False,
              progress: Progress | None = None,
              record: Mapping[str, Any] | None = None, **options) -> PipelineResult:
    """Read files and :func:`run`.

    Parameters
    ----------
    inputs : str, os.PathLike or sequence of them
        DICOM folder, NIfTI echoes or .seq.nrrd (see :func:`load_image`).
    out_dir : str or Path
        The output folder; checked before anything is read.
    labels : str or Path, optional
        Label map / .seg.nrrd path.
    label_names : str or Path, optional
        CSV or Slicer colour table of the label names.
    echo_times_ms : sequence of float, optional
        Echo times in ms where the files have none.
    field_strength_t : float, optional
        Main field in T (see :func:`override_field_strength`).
    series : int or str, optional
        Which series to load when several are found.
    confirm_field_strength : bool
        Use ``field_strength_t`` even where it contradicts the files.
    progress : Progress, optional
        ``progress(stage, fraction)``.
    record : mapping, optional
        Extra entries for run.json and the report (e.g. a study id).
    **options
        Other keyword arguments go to :func:`run`.

    Returns
    -------
    PipelineResult
    """
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

    Parameters
    ----------
    out_dir : str or Path
        The output folder.
    preset : str
        Phantom preset ("normal", "neonatal-haemochromatosis" or "transfusional").
    shape : tuple of int
        Grid (k, j, i).
    snr : float
        S0 of liver over the noise SD per channel.
    phantom_coils : int
        Simulated receive coil count.
    seed : int
        Random seed of the noise.
    field_strength_t : float
        Main field in T.
    progress : Progress, optional
        ``progress(stage, fraction)``.
    **options
        Other keyword arguments (method, fmt, figures, ...) go to :func:`run`.

    Returns
    -------
    PipelineResult
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
