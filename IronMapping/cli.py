"""Command line: ``ironmapping`` (or ``python -m IronMapping``) with demo, fit and batch.

Results go to files and a short summary to stdout; progress, warnings and errors go to stderr.
See ``ironmapping --help`` and :data:`EXIT_CODES`.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import sys
import time
import traceback
from typing import Sequence, TextIO

from . import __version__, RESEARCH_USE_STATEMENT
from .errors import FitCancelled, IronMappingError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_STUDIES_FAILED = 3
EXIT_CANCELLED = 130

EXIT_CODES = {
    EXIT_OK: "success",
    EXIT_FAILURE: "unexpected failure (a bug or a system problem: rerun with --verbose)",
    EXIT_USAGE: "usage or input error (bad option, unreadable input, wrong echo times,\n"
                "      a calibration that does not apply, an output folder holding other files)",
    EXIT_STUDIES_FAILED: "batch finished but at least one study failed (see batch_status.csv)",
    EXIT_CANCELLED: "cancelled (Ctrl-C)",
}

_DESCRIPTION = f"""\
IronMapping {__version__}: tissue iron from multi-echo MRI. Fits R2*/T2* maps (noise-aware),
measures every labelled organ, computes liver iron concentration (LIC) with a published
calibration, grades it and reads the iron distribution pattern.

{RESEARCH_USE_STATEMENT}"""

_EPILOG = """\
examples:
  ironmapping demo --out demo_out
  ironmapping fit echoes.seq.nrrd --labels organs.seg.nrrd --out study1
  ironmapping fit dicom_folder/ --labels organs.nrrd --label-names organs.csv --out study1
  ironmapping fit e1.nii.gz e2.nii.gz e3.nii.gz --te-ms 1.2 2.4 3.6 --field-strength 1.5 --out s1
  ironmapping batch studies.csv --out cohort --workers 2

outputs (per study): r2star, t2star, s0, quality, status, r2star_sd maps (r2, t2, r2_sd for
spin echo; + lic where a liver is labelled, + pdff for the fat-water method) as NRRD or NIfTI with the input's geometry and a JSON
sidecar each; regions.csv; summary.json; report.html; run.json.

exit codes:
""" + "\n".join(f"  {code:<4d}{text}" for code, text in EXIT_CODES.items())


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``ironmapping`` with its demo, fit and batch sub-commands."""
    from .calibration import CALIBRATIONS, DEFAULT_CALIBRATION
    from .relaxometry import DEFAULT_METHOD, METHODS

    def flags(default):
        # Sub-commands repeat -v/-q with SUPPRESS so 'ironmapping -v fit ...' is not reset.
        p = argparse.ArgumentParser(add_help=False)
        p.add_argument("-v", "--verbose", action="store_true", default=default,
                       help="show the full traceback on errors")
        p.add_argument("-q", "--quiet", action="store_true", default=default,
                       help="no progress or warnings on stderr (errors still shown)")
        return p

    top_flags, common = flags(False), flags(argparse.SUPPRESS)

    fitting = argparse.ArgumentParser(add_help=False)
    g = fitting.add_argument_group("fit options")
    g.add_argument("--method", default="auto", choices=METHODS, metavar="NAME",
                   help=f"fit method: {', '.join(METHODS)} (default auto = {DEFAULT_METHOD})")
    g.add_argument("--calibration", default=None, metavar="NAME",
                   help=f"R2*-to-LIC calibration: {', '.join(CALIBRATIONS)} "
                        f"(default {DEFAULT_CALIBRATION})")
    g.add_argument("--convert-field", action="store_true",
                   help="allow converting R2* to the calibration's field strength (adds a "
                        "warning to every output); without it a calibration made at another "
                        "field strength is refused")
    g.add_argument("--noise-sigma", type=_positive_float, default=None, metavar="SIGMA",
                   help="noise SD per receive channel in signal units (default: estimated from "
                        "background air)")
    g.add_argument("--coils", type=_positive_float, default=None, metavar="L",
                   help="receive coil count of the magnitude data (default: estimated)")
    o = fitting.add_argument_group("output options")
    o.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    o.add_argument("--format", dest="fmt", default="nrrd", choices=("nrrd", "nifti"),
                   help="map file format (default nrrd; nifti writes .nii.gz)")
    o.add_argument("--no-report", action="store_true", help="do not write report.html")
    o.add_argument("--no-figures", action="store_true",
                   help="report without figures (faster; figures need matplotlib)")
    o.add_argument("--overwrite", action="store_true",
                   help="replace files in --out that IronMapping did not write")

    parser = argparse.ArgumentParser(
        prog="ironmapping", description=_DESCRIPTION, epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter, parents=[top_flags])
    parser.add_argument("--version", action="version", version=f"IronMapping {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    demo = sub.add_parser(
        "demo", parents=[common, fitting], formatter_class=argparse.RawDescriptionHelpFormatter,
        help="run the whole pipeline on the built-in phantom",
        description="Build the digital phantom (known R2* per organ) and run the whole pipeline "
                    "on it: maps, regions.csv, summary.json and report.html in --out.")
    demo.add_argument("--preset", default="neonatal-haemochromatosis",
                      choices=("neonatal-haemochromatosis", "transfusional", "normal"),
                      help="phantom preset (default neonatal-haemochromatosis)")
    demo.add_argument("--shape", type=int, nargs=3, default=(16, 96, 128), metavar=("K", "J", "I"),
                      help="phantom grid: slices, rows, columns (default 16 96 128)")
    demo.add_argument("--snr", type=_positive_float, default=50.0,
                      help="liver S0 over noise SD (default 50)")
    demo.add_argument("--phantom-coils", type=int, default=1, metavar="L",
                      help="receive coils of the simulated magnitude (default 1)")
    demo.add_argument("--field-strength", type=float, default=1.5, choices=(1.5, 3.0),
                      metavar="T", help="1.5 or 3 (default 1.5)")
    demo.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")

    fit = sub.add_parser(
        "fit", parents=[common, fitting], formatter_class=argparse.RawDescriptionHelpFormatter,
        help="fit one study from files",
        description="Fit one multi-echo study and write maps, regions.csv, summary.json and "
                    "report.html into --out.",
        epilog="INPUT: a DICOM folder, NIfTI echo files with dcm2niix JSON sidecars (or a folder "
               "of them), or a .seq.nrrd.\nLABELMAP: a NRRD/NIfTI label volume or a Slicer "
               ".seg.nrrd (segment names are read from it).")
    fit.add_argument("inputs", nargs="+", metavar="INPUT", help="multi-echo series")
    fit.add_argument("--labels", metavar="LABELMAP", help="regions: label volume or .seg.nrrd")
    fit.add_argument("--label-names", metavar="FILE",
                     help="label value -> name: CSV 'value,name' or a Slicer colour table "
                          "(.ctbl/.txt/.csv); default: <LABELMAP stem>.csv if present")
    fit.add_argument("--te-ms", type=_float_list, nargs="+", default=None, metavar="TE",
                     help="echo times in ms, one per echo (spaces or commas), for files that "
                          "do not record them; where they do, the two must agree")
    fit.add_argument("--field-strength", type=_positive_float, default=None, metavar="T",
                     help="main field in tesla, for files that do not record it (needed for "
                          "LIC and grades); a value contradicting the files is refused unless "
                          "--confirm-field-strength")
    fit.add_argument("--confirm-field-strength", action="store_true",
                     help="use --field-strength even though the files record another value")
    fit.add_argument("--series", default=None, metavar="UID",
                     help="DICOM SeriesInstanceUID when the folder holds several series")

    batch = sub.add_parser(
        "batch", parents=[common, fitting], formatter_class=argparse.RawDescriptionHelpFormatter,
        help="fit a cohort listed in a CSV (parallel, resumable)",
        description="Run every study of LIST. Each study gets OUT/<study_id>/ with the fit "
                    "outputs; OUT/cohort.csv combines all regions of all studies and "
                    "OUT/batch_status.csv says what happened to each study. Studies already "
                    "done (OUT/<study_id>/done.json, same inputs and options) are skipped; a "
                    "failing study is recorded with its error and the others continue.",
        epilog="LIST: CSV with header 'study_id,input,labels' (labels optional; an optional "
               "label_names column too).\n  input: DICOM folder, folder of NIfTI echoes with "
               "sidecars, or .seq.nrrd (join several files with ';').\n  labels: label volume "
               "(names from '<stem>.csv' beside it) or Slicer .seg.nrrd.\n  Relative paths are "
               "relative to the LIST's folder.\n\nWith --scheduler the studies are submitted to "
               "an existing Dask cluster (pip install 'ironmapping[dask]');\nits workers must "
               "see the same paths (shared file system) and have IronMapping installed.")
    batch.add_argument("study_list", metavar="LIST", help="CSV: study_id,input,labels")
    batch.add_argument("--workers", type=int, default=None, metavar="N",
                       help="parallel local processes (default: number of cores)")
    batch.add_argument("--scheduler", default=None, metavar="ADDRESS",
                       help="Dask scheduler address, e.g. tcp://10.0.0.5:8786")
    batch.add_argument("--force", action="store_true",
                       help="run every study again, even those already done")
    return parser


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be greater than 0")
    return value


def _float_list(text: str) -> list[float]:
    try:
        return [float(t) for t in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a list of echo times in ms (e.g. 1.2 2.4 3.6)") from None


# --------------------------------------------------------------------------- progress

class Progress:
    """Stage and percentage on stderr: one updating line on a terminal, sparse lines otherwise.

    Called as ``progress(stage, fraction)`` with a stage name ("load", "fit", "statistics",
    "write", "report") and a fraction 0..1 or None.

    Parameters
    ----------
    stream : text stream
        Where to write (stderr).
    enabled : bool
        False writes nothing (``--quiet``).
    """

    _NAMES = {"load": "reading input", "fit": "fitting", "statistics": "organ statistics",
              "write": "writing maps and tables", "report": "writing report"}

    def __init__(self, stream: TextIO, enabled: bool = True):
        self.stream = stream
        self.enabled = enabled
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.stage = None
        self.last_step = -1
        self.last_time = 0.0

    def __call__(self, stage: str, fraction=None) -> None:
        if not self.enabled:
            return
        name = self._NAMES.get(stage, stage)
        if stage != self.stage:
            self._end_line()
            self.stage = stage
            self.last_step = -1
            if fraction is None or not self.tty:
                self.stream.write(f"{name} ...\n")
        if fraction is None:
            self.stream.flush()
            return
        percent = int(100 * min(max(fraction, 0.0), 1.0))
        if self.tty:
            now = time.monotonic()
            if percent == 100 or now - self.last_time > 0.1:
                self.stream.write(f"\r{name} {percent:3d}%")
                self.last_time = now
        else:
            step = percent // 25
            if step > self.last_step and percent > 0:
                self.stream.write(f"  {name}: {percent}%\n")
                self.last_step = step
        self.stream.flush()

    def _end_line(self) -> None:
        if self.tty and self.stage is not None:
            self.stream.write("\n")

    def line(self, text: str) -> None:
        """Write one line of text, ending any progress line first.

        Parameters
        ----------
        text : str
        """
        if self.enabled:
            self._end_line()
            self.stage = None
            self.stream.write(text + "\n")
            self.stream.flush()

    def close(self) -> None:
        """End any progress line."""
        if self.enabled:
            self._end_line()
            self.stage = None


# --------------------------------------------------------------------------- commands

def _run_options(args) -> dict:
    from .calibration import get_calibration

    if args.calibration is not None:
        get_calibration(args.calibration)  # unknown names fail now, before any work
    return {"method": args.method, "calibration": args.calibration,
            "convert_field": args.convert_field, "fmt": args.fmt,
            "noise_sigma": args.noise_sigma, "coils": args.coils,
            "report": not args.no_report, "figures": not args.no_figures,
            "overwrite": args.overwrite}


def _cmd_demo(args, progress: Progress, out: TextIO) -> int:
    from .pipeline import run_demo

    result = run_demo(args.out, args.preset, shape=tuple(args.shape), snr=args.snr,
                      phantom_coils=args.phantom_coils, seed=args.seed,
                      field_strength_t=args.field_strength, progress=progress,
                      **_run_options(args))
    progress.close()
    _print_result(result, out, progress)
    return EXIT_OK


def _cmd_fit(args, progress: Progress, out: TextIO) -> int:
    from .pipeline import run_files

    te = None if args.te_ms is None else [t for chunk in args.te_ms for t in chunk]
    result = run_files(args.inputs, args.out, labels=args.labels, label_names=args.label_names,
                       echo_times_ms=te, field_strength_t=args.field_strength,
                       confirm_field_strength=args.confirm_field_strength,
                       series=args.series, progress=progress, **_run_options(args))
    progress.close()
    _print_result(result, out, progress)
    return EXIT_OK


def _cmd_batch(args, progress: Progress, out: TextIO) -> int:
    from .batch import run_batch

    if args.workers is not None and args.workers < 1:
        raise _UsageError(f"--workers must be at least 1; got {args.workers}.")
    options = _run_options(args)
    result = run_batch(args.study_list, args.out, workers=args.workers, scheduler=args.scheduler,
                       options=options, force=args.force, report=progress.line)
    done = sum(o.status == "done" for o in result.outcomes)
    skipped = sum(o.status == "skipped" for o in result.outcomes)
    failed = result.failed
    out.write(f"{len(result.outcomes)} studies: {done} done, {skipped} already done, "
              f"{len(failed)} failed\n")
    out.write(f"cohort table: {result.cohort_csv}\nstatus: {result.status_csv}\n")
    for o in failed:
        out.write(f"  failed: {o.study_id}: {o.error}\n")
    return EXIT_STUDIES_FAILED if failed else EXIT_OK


def _print_result(result, out: TextIO, progress: Progress) -> None:
    for warning in result.warnings:
        progress.line(f"warning: {warning}")
    summary = result.summary or {}
    out.write(f"outputs in {result.out_dir}\n")
    regions = summary.get("regions") or []
    if regions:
        star = "" if summary.get("quantity") == "T2" else "*"
        out.write(f"  {'region':<20s} {f'R2{star} median (1/s)':>17s} {f'T2{star} median (ms)':>16s} "
                  f"{'LIC (mg/g dw)':>14s}  grade\n")
        for r in regions:
            out.write(f"  {str(r.get('name'))[:20]:<20s} {_num(r.get('r2star_median'), 17, 1)} "
                      f"{_num(r.get('t2star_median'), 16, 2)} {_num(r.get('lic_mg_per_g'), 14, 2)}"
                      f"  {r.get('grade') or '-'}\n")
    whole = summary.get("whole_image") or {}
    if not regions and whole:
        out.write(_whole_image_line(whole) + "\n")
        maps = [p for k, p in result.files.items() if str(p).endswith((".nrrd", ".nii.gz"))]
        if maps:
            out.write(f"maps: {', '.join(p.name for p in maps)} in {result.out_dir}\n")
        out.write("no organ statistics, grades or pattern: pass --labels LABELMAP to get them\n")
    text = (summary.get("pattern") or {}).get("text")
    if text and regions:
        out.write(f"pattern: {text}\n")
    if "report" in result.files:
        out.write(f"report: {result.files['report']}\n")
    out.write(f"{RESEARCH_USE_STATEMENT}\n")


def _whole_image_line(whole: dict) -> str:
    """'fitted: 41.2 % of the voxels (...); median R2* of fitted tissue 45.3 1/s (T2* ...)'."""
    star = "" if whole.get("quantity") == "T2" else "*"
    line = (f"fitted: {100.0 * whole.get('fitted_fraction', 0.0):.1f} % of the voxels "
            f"({whole.get('fitted_voxels', 0):,} of {whole.get('voxels', 0):,}; the rest is "
            "background or failed, see the status map)")
    if whole.get("r2star_median") is not None:
        line += f"; median R2{star} of fitted tissue {whole['r2star_median']:.1f} 1/s"
        if whole.get("t2star_median") is not None:
            line += f" (T2{star} {whole['t2star_median']:.2f} ms)"
    return line


def _num(value, width: int, digits: int) -> str:
    if value is None:
        return f"{'-':>{width}s}"
    try:
        return f"{float(value):>{width}.{digits}f}"
    except (TypeError, ValueError):
        return f"{str(value):>{width}s}"


class _UsageError(Exception):
    pass


_ENVIRONMENT_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EROFS,
                       errno.EACCES, errno.EPERM}


_COMMANDS = {"demo": _cmd_demo, "fit": _cmd_fit, "batch": _cmd_batch}


def main(argv: Sequence[str] | None = None, stdout: TextIO | None = None,
         stderr: TextIO | None = None) -> int:
    """Run the command line.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments without the program name (default ``sys.argv[1:]``).
    stdout, stderr : text stream, optional
        Where results and progress, warnings and errors go (default the process's).

    Returns
    -------
    int
        The exit code (see :data:`EXIT_CODES`).
    """
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    parser = build_parser()
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version (0) and usage errors (2)
        return int(exc.code or 0)
    progress = Progress(stderr, enabled=not args.quiet)
    try:
        return _COMMANDS[args.command](args, progress, stdout)
    except (KeyboardInterrupt, FitCancelled):
        progress.close()
        stderr.write("ironmapping: cancelled; outputs of unfinished work are incomplete "
                     "(a folder's run.json says \"complete\": false).\n")
        return EXIT_CANCELLED
    except (IronMappingError, _UsageError) as exc:
        progress.close()
        _error(stderr, exc, args.verbose)
        return EXIT_USAGE
    except OSError as exc:
        progress.close()
        if getattr(exc, "errno", None) in _ENVIRONMENT_ERRNOS:
            # the user's environment (disk full, read-only, no permission), not a bug
            from .maps_io import output_failure

            _error(stderr, output_failure(exc, exc.filename or getattr(args, "out", None) or "."),
                   args.verbose)
            return EXIT_USAGE
        _error(stderr, exc, args.verbose, unexpected=True)
        return EXIT_FAILURE
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one clear line
        progress.close()
        _error(stderr, exc, args.verbose, unexpected=True)
        return EXIT_FAILURE


def _error(stderr: TextIO, exc: BaseException, verbose: bool, unexpected: bool = False) -> None:
    if verbose:
        stderr.write("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    message = " ".join(str(exc).split()) or type(exc).__name__
    if unexpected:
        message = f"{type(exc).__name__}: {message}"
        if not verbose:
            message += " (run with --verbose for the traceback)"
    stderr.write(f"ironmapping: error: {message}\n")


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
