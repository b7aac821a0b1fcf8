"""Cohort processing: one pipeline run per study, in parallel, resumable.

The study list is a CSV with the header ``study_id,input,labels`` (an optional ``label_names``
column too). ``input`` is a DICOM folder, a folder of NIfTI echoes with JSON sidecars, or a
``.seq.nrrd``; several files can be joined with ``;``. ``labels`` is optional: a label map (names
from a ``value,name`` CSV beside it, ``<stem>.csv``) or a Slicer ``.seg.nrrd`` (names embedded).
Relative paths are relative to the list's folder.

Output: ``OUT/<study_id>/`` per study (the pipeline's files), ``OUT/cohort.csv`` (every region of
every study, plus one row per failed study with its error) and ``OUT/batch_status.csv``.

Resuming: a study is done when ``OUT/<study_id>/done.json`` exists and records the same input,
labels and options. It is written last, atomically, after every other file of the study, so an
interrupted or failed study never looks done and is run again next time. Changed files at the
same paths are not detected: delete the study's done.json (or pass ``force``) to redo it.
"""

from __future__ import annotations

import csv
import json
import os
import re
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from . import __version__
from .errors import InputError
from .fileio import json_text, output_failure, write_csv, write_json

DONE_MARKER = "done.json"
ERROR_RECORD = "error.json"
COHORT_CSV = "cohort.csv"
STATUS_CSV = "batch_status.csv"
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

#: Options a study's result depends on, with their defaults; a change re-runs done studies.
FINGERPRINT_OPTIONS = {"method": "auto", "calibration": None, "convert_field": False,
                       "fmt": "nrrd", "field_strength_t": None, "echo_times_ms": None,
                       "noise_sigma": None, "coils": None, "report": True, "figures": True}


@dataclass
class Study:
    """One row of the study list (paths made absolute)."""

    study_id: str
    input: list[str]
    labels: str | None = None
    label_names: str | None = None
    row: int = 0


@dataclass
class StudyOutcome:
    """What happened to one study in this batch run.

    Attributes
    ----------
    study_id : str
    status : str
        "done", "skipped" (already done) or "failed".
    seconds : float
        Run time in s.
    error : str
        The error of a failed study.
    out_dir : str
        The study's output folder.
    details : dict
        E.g. the number of warnings.
    """

    study_id: str
    status: str               # "done", "skipped" (already done) or "failed"
    seconds: float = 0.0
    error: str = ""
    out_dir: str = ""
    details: dict = field(default_factory=dict)


@dataclass
class BatchResult:
    """What :func:`run_batch` did.

    Attributes
    ----------
    out_dir : Path
        Root output folder.
    outcomes : list of StudyOutcome
        In study-list order.
    cohort_csv, status_csv : Path
        cohort.csv and batch_status.csv.
    """
    out_dir: Path
    outcomes: list[StudyOutcome]
    cohort_csv: Path
    status_csv: Path

    @property
    def failed(self) -> list[StudyOutcome]:
        """The outcomes of failed studies."""
        return [o for o in self.outcomes if o.status == "failed"]


# --------------------------------------------------------------------------- the list

def read_study_list(path) -> list[Study]:
    """Parse and check the study list CSV.

    Parameters
    ----------
    path : str or Path
        CSV with the header ``study_id,input,labels`` (see the module docstring).

    Returns
    -------
    list of Study
        Paths made absolute (relative to the list's folder).

    Raises
    ------
    InputError
        Naming the row that is wrong (bad or repeated study_id, empty input), or for a missing
        file, header or study.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"Study list {str(path)!r} does not exist. Give a CSV with the header "
                         "'study_id,input,labels'.")
    base = path.resolve().parent
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in (reader.fieldnames or [])]
        if "study_id" not in header or "input" not in header:
            raise InputError(
                f"{path.name} must start with the header 'study_id,input,labels' (labels "
                f"optional); found {','.join(header) or 'nothing'}.")
        studies: list[Study] = []
        seen: dict[str, int] = {}
        for n, raw in enumerate(reader, start=2):
            row = {(k or "").strip(): (v or "").strip() for k, v in raw.items()}
            if not any(row.values()):
                continue
            sid = row.get("study_id", "")
            if not _SAFE_ID.match(sid) or sid in (".", ".."):
                raise InputError(
                    f"{path.name} row {n}: study_id {sid!r} cannot be a folder name. Use letters, "
                    "digits, '.', '_' and '-' only, starting with a letter or digit.")
            if sid in seen:
                raise InputError(f"{path.name} rows {seen[sid]} and {n}: study_id {sid!r} is "
                                 "used twice; every study needs its own id.")
            seen[sid] = n
            if not row.get("input"):
                raise InputError(f"{path.name} row {n} ({sid}): the input column is empty.")
            inputs = [_resolve(p, base) for p in row["input"].split(";") if p.strip()]
            labels = _resolve(row["labels"], base) if row.get("labels") else None
            names = _resolve(row["label_names"], base) if row.get("label_names") else None
            studies.append(Study(sid, inputs, labels, names, n))
    if not studies:
        raise InputError(f"{path.name} lists no studies. Add one row per study under the header.")
    return studies


def _resolve(text: str, base: Path) -> str:
    p = Path(os.path.expanduser(text.strip()))
    if p.is_absolute():
        return str(p)
    beside = base / p
    if beside.exists() or not p.exists():
        return str(beside)
    return str(p.resolve())  # relative to the current folder, where the list's folder has none


# --------------------------------------------------------------------------- one study

def fingerprint(study: Study, options: Mapping[str, Any]) -> dict:
    """What a done study was made from; a different fingerprint means run it again.

    Parameters
    ----------
    study : Study
    options : mapping
        The run's options; only :data:`FINGERPRINT_OPTIONS` count (with their defaults).

    Returns
    -------
    dict
        study_id, input, labels, label_names, options.
    """
    return {"study_id": study.study_id, "input": list(study.input), "labels": study.labels,
            "label_names": study.label_names,
            "options": {k: options.get(k, default) for k, default in FINGERPRINT_OPTIONS.items()}}


#: Files every finished study must have, whatever its done.json lists.
REQUIRED_OUTPUTS = ("regions.csv", "summary.json", "run.json")


def _done_record(folder: Path) -> dict | None:
    try:
        record = json.loads((folder / DONE_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def missing_outputs(folder) -> list[str]:
    """Output files of a finished study that are missing (or not files).

    The list is what done.json records plus :data:`REQUIRED_OUTPUTS`.

    Parameters
    ----------
    folder : str or Path
        The study's output folder.

    Returns
    -------
    list of str
        File names; [] when complete, ``["done.json"]`` without a done.json (not finished).
    """
    folder = Path(folder)
    record = _done_record(folder)
    if record is None:
        return [DONE_MARKER]
    names = list(dict.fromkeys(list(REQUIRED_OUTPUTS) + list((record.get("files") or {}).values())))
    return [n for n in names if not (folder / n).is_file()]


def is_done(study: Study, out_root, options: Mapping[str, Any]) -> bool:
    """Whether a study is done with these options.

    True when the study's done marker matches this study and these options and every output it
    lists is still there (a study whose outputs are incomplete runs again).

    Parameters
    ----------
    study : Study
    out_root : str or Path
        Root output folder.
    options : mapping
        The run's options.

    Returns
    -------
    bool
    """
    folder = Path(out_root) / study.study_id
    record = _done_record(folder)
    if record is None or missing_outputs(folder):
        return False
    return record.get("fingerprint") == json.loads(json_text(fingerprint(study, options)))


def run_study(study: Study | Mapping[str, Any], out_root, options: Mapping[str, Any] | None = None
              ) -> dict:
    """Run one study (a picklable task for process pools and Dask workers).

    Never raises for a study's own failure: returns status "failed" with the error and writes
    ``error.json`` in its folder.

    Parameters
    ----------
    study : Study or mapping
        A Study or a dict of its fields.
    out_root : str or Path
        Root output folder; the study writes to ``out_root/<study_id>``.
    options : mapping, optional
        Keyword arguments for ``pipeline.run_files``.

    Returns
    -------
    dict
        The fields of a StudyOutcome.
    """
    from .pipeline import run_files

    study = study if isinstance(study, Study) else Study(**study)
    options = dict(options or {})
    out = Path(out_root) / study.study_id
    marker = out / DONE_MARKER
    t0 = time.perf_counter()
    try:
        if marker.exists():
            marker.unlink()  # options or inputs changed: the old marker no longer holds
        result = run_files(study.input, out, labels=study.labels, label_names=study.label_names,
                           record={"study_id": study.study_id}, **options)
        seconds = time.perf_counter() - t0
        (out / ERROR_RECORD).unlink(missing_ok=True)
        record = {"study_id": study.study_id, "fingerprint": fingerprint(study, options),
                  "software": f"IronMapping {__version__}",
                  "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "seconds": seconds,
                  "files": {k: p.name for k, p in result.files.items()},
                  "warnings": result.warnings}
        _write_json_atomic(marker, record)
        return asdict(StudyOutcome(study.study_id, "done", seconds, "", str(out),
                                   {"warnings": len(result.warnings)}))
    except Exception as exc:  # one study's failure must not stop the cohort
        seconds = time.perf_counter() - t0
        message = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
        try:
            out.mkdir(parents=True, exist_ok=True)
            _write_json_atomic(out / ERROR_RECORD, {
                "study_id": study.study_id, "error": message,
                "traceback": traceback.format_exc(), "input": study.input,
                "labels": study.labels, "software": f"IronMapping {__version__}",
                "when": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        except OSError:
            pass  # the outcome still carries the error to the cohort table
        return asdict(StudyOutcome(study.study_id, "failed", seconds, message, str(out)))


_write_json_atomic = write_json


# --------------------------------------------------------------------------- the cohort

def run_batch(study_list, out_dir, *, workers: int | None = None, scheduler: str | None = None,
              options: Mapping[str, Any] | None = None, force: bool = False,
              report: Callable[[str], None] | None = None) -> BatchResult:
    """Run every study of a list not already done; write cohort.csv and batch_status.csv.

    Parameters
    ----------
    study_list : str, Path or list of Study
        CSV path (see the module docstring) or a list of Study.
    out_dir : str or Path
        Root output folder; one sub-folder per study.
    workers : int, optional
        Local worker processes (default: number of cores, at most the pending studies); 1 runs
        in this process.
    scheduler : str or dask.distributed.Client, optional
        Address of an existing Dask scheduler (``tcp://host:8786``) or a client; studies are
        then submitted there instead.
    options : mapping, optional
        Keyword arguments for ``pipeline.run`` (method, calibration, fmt, ...).
    force : bool
        Run every study again, done or not.
    report : callable, optional
        Called with one line of progress per study (for stderr).

    Returns
    -------
    BatchResult

    Raises
    ------
    InputError
        For a bad study list, out_dir that is a file, workers < 1, or an unreachable or missing
        Dask scheduler.
    OutputError
        When the output folder cannot be made.
    """
    say = report or (lambda line: None)
    studies = read_study_list(study_list) if not isinstance(study_list, list) else study_list
    out = Path(out_dir).resolve()
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {str(out)!r} is a file; give a folder.")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise output_failure(exc, out / COHORT_CSV) from None
    options = dict(options or {})
    options.pop("progress", None)

    outcomes: dict[str, StudyOutcome] = {}
    pending: list[Study] = []
    for study in studies:
        if not force and is_done(study, out, options):
            outcomes[study.study_id] = StudyOutcome(study.study_id, "skipped", 0.0, "",
                                                    str(out / study.study_id))
        else:
            pending.append(study)
    total = len(studies)
    if outcomes:
        say(f"{len(outcomes)} of {total} studies already done; skipping them.")
    count = [len(outcomes)]

    def record(outcome: StudyOutcome) -> None:
        outcomes[outcome.study_id] = outcome
        count[0] += 1
        if outcome.status == "done":
            say(f"[{count[0]}/{total}] {outcome.study_id}: done in {outcome.seconds:.1f} s")
        else:
            say(f"[{count[0]}/{total}] {outcome.study_id}: FAILED: {outcome.error}")

    try:
        if pending:
            if scheduler is not None:
                _run_dask(pending, out, options, scheduler, record)
            else:
                _run_local(pending, out, options, workers, record)
    finally:
        for study_id, outcome in list(outcomes.items()):
            if outcome.status in ("done", "skipped"):
                missing = missing_outputs(out / study_id)
                if missing:  # a study without its outputs is a failed study, not a done one
                    outcomes[study_id] = StudyOutcome(
                        study_id, "failed", outcome.seconds,
                        f"outputs incomplete: {', '.join(missing)} missing in "
                        f"{out / study_id}; run the batch again to redo the study",
                        outcome.out_dir)
        ordered = [outcomes[s.study_id] for s in studies if s.study_id in outcomes]
        cohort = write_cohort(out, studies, outcomes)
        status = write_status(out, ordered)
    return BatchResult(out, ordered, cohort, status)


def _run_local(pending, out, options, workers, record) -> None:
    n = workers if workers is not None else (os.cpu_count() or 1)
    if n < 1:
        raise InputError(f"--workers must be at least 1; got {n}.")
    n = min(n, len(pending))
    if n == 1:
        for study in pending:
            record(StudyOutcome(**run_study(study, out, options)))
        return
    import multiprocessing

    # spawn: workers start clean (no inherited threads or locks) on every platform.
    with ProcessPoolExecutor(max_workers=n, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(run_study, asdict(s), str(out), options): s for s in pending}
        try:
            for future in as_completed(futures):
                study = futures[future]
                try:
                    record(StudyOutcome(**future.result()))
                except Exception as exc:  # the worker process itself died
                    record(StudyOutcome(study.study_id, "failed", 0.0,
                                        f"worker process failed: {type(exc).__name__}: {exc}",
                                        str(out / study.study_id)))
        except BaseException:
            for f in futures:
                f.cancel()
            raise


def _run_dask(pending, out, options, scheduler, record) -> None:
    try:
        from dask.distributed import Client, as_completed as dask_as_completed
    except ImportError:
        raise InputError(
            "--scheduler needs dask.distributed, which is not installed. Install the optional "
            "extra: pip install 'ironmapping[dask]' (or run without --scheduler to use local "
            "cores).") from None
    own_client = not isinstance(scheduler, Client)
    if own_client:
        try:
            client = Client(scheduler, timeout="20s")
        except (OSError, TimeoutError) as exc:
            raise InputError(f"Cannot reach the Dask scheduler at {scheduler!r} ({exc}). Check "
                             "the address (e.g. tcp://host:8786) and that it is running.") from None
    else:
        client = scheduler
    try:
        futures = {}
        for study in pending:
            future = client.submit(run_study, asdict(study), str(out), options, pure=False,
                                   key=f"ironmapping-{study.study_id}-{time.time_ns()}")
            futures[future] = study
        for future in dask_as_completed(list(futures)):
            study = futures[future]
            try:
                record(StudyOutcome(**future.result()))
            except Exception as exc:  # worker lost, task killed, ...
                record(StudyOutcome(study.study_id, "failed", 0.0,
                                    f"Dask task failed: {type(exc).__name__}: {exc}",
                                    str(out / study.study_id)))
    finally:
        if own_client:
            client.close()


def write_cohort(out_dir, studies, outcomes: Mapping[str, StudyOutcome]) -> Path:
    """Write cohort.csv: ``study_id``, ``study_status``, ``error`` and every regions.csv column.

    Parameters
    ----------
    out_dir : str or Path
        Root output folder.
    studies : list of Study
    outcomes : mapping of str to StudyOutcome
        By study_id.

    Returns
    -------
    Path
    """
    out = Path(out_dir)
    rows: list[dict] = []
    for study in studies:
        outcome = outcomes.get(study.study_id)
        folder = out / study.study_id
        if outcome is None and not (folder / DONE_MARKER).is_file():
            continue
        if outcome is not None and outcome.status == "failed":
            rows.append({"study_id": study.study_id, "study_status": "failed",
                         "error": outcome.error})
            continue
        regions = folder / "regions.csv"
        try:
            with open(regions, newline="", encoding="utf-8") as fh:
                region_rows = list(csv.DictReader(fh))
        except OSError as exc:
            rows.append({"study_id": study.study_id, "study_status": "failed",
                         "error": f"regions.csv unreadable: {exc}"})
            continue
        if not region_rows:
            rows.append({"study_id": study.study_id, "study_status": "done (no regions)",
                         "error": ""})
        for r in region_rows:
            rows.append({"study_id": study.study_id, "study_status": "done", "error": "", **r})
    columns = list(dict.fromkeys(["study_id", "study_status", "error"]
                                 + [k for r in rows for k in r]))
    return _write_csv(out / COHORT_CSV, columns, rows)


def write_status(out_dir, outcomes) -> Path:
    """Write batch_status.csv: one row per study with its status, time (s), error and folder.

    Parameters
    ----------
    out_dir : str or Path
        Root output folder.
    outcomes : list of StudyOutcome

    Returns
    -------
    Path
    """
    columns = ["study_id", "status", "seconds", "error", "out_dir"]
    rows = [{"study_id": o.study_id, "status": o.status, "seconds": f"{o.seconds:.2f}",
             "error": o.error, "out_dir": o.out_dir} for o in outcomes]
    return _write_csv(Path(out_dir) / STATUS_CSV, columns, rows)


def _write_csv(path: Path, columns, rows) -> Path:
    return write_csv(path, columns, rows, lineterminator="\r\n")
