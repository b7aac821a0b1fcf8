"""Cohort batch: one folder per study, cohort.csv, failures recorded, resume, processes, Dask."""

import csv
import json
import sys

import pytest

from IronMapping import batch
from IronMapping.errors import InputError

from test_pipeline import make_study

SHAPE = (3, 24, 30)
FAST = {"report": False}


def write_list(path, rows, header="study_id,input,labels"):
    path.write_text(header + "\n" + "".join(",".join(r) + "\n" for r in rows))
    return path


@pytest.fixture
def cohort(tmp_path):
    """Two good studies (one by relative paths, one .seg-free label map) and a broken one."""
    data = tmp_path / "data"
    e1, l1, _ = make_study(data, "s1", "neonatal-haemochromatosis", SHAPE, seed=1)
    e2, l2, _ = make_study(data, "s2", "transfusional", SHAPE, seed=2)
    broken = data / "s3" / "echoes"
    broken.mkdir(parents=True)
    (broken / "gre_e1.nii").write_text("not an image")
    rows = [("P001", "s1/echoes", "s1/labels.nrrd"),
            ("P002", str(e2), str(l2)),
            ("P003", "s3/echoes", "")]
    return write_list(data / "studies.csv", rows), tmp_path / "out"


def read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_broken_study_is_recorded_and_the_rest_continue(cohort):
    study_list, out = cohort
    result = batch.run_batch(study_list, out, workers=1, options=FAST)
    status = {o.study_id: o.status for o in result.outcomes}
    assert status == {"P001": "done", "P002": "done", "P003": "failed"}
    assert (out / "P001" / "done.json").is_file() and (out / "P002" / "r2star.nrrd").is_file()
    assert not (out / "P003" / "done.json").exists()
    error = json.loads((out / "P003" / "error.json").read_text())
    assert error["error"] and "Traceback" in error["traceback"]

    rows = read_csv(out / "cohort.csv")
    failed = [r for r in rows if r["study_id"] == "P003"]
    assert len(failed) == 1 and failed[0]["study_status"] == "failed" and failed[0]["error"]
    livers = {r["study_id"]: float(r["R2* median (1/s)"]) for r in rows if r.get("Region") == "liver"}
    assert livers["P001"] == pytest.approx(450.0, rel=0.06)   # neonatal preset
    assert livers["P002"] == pytest.approx(650.0, rel=0.06)   # transfusional preset
    status_rows = {r["study_id"]: r for r in read_csv(out / "batch_status.csv")}
    assert status_rows["P003"]["status"] == "failed" and status_rows["P003"]["error"]


def test_resume_skips_done_studies_and_retries_failed_ones(cohort):
    study_list, out = cohort
    batch.run_batch(study_list, out, workers=1, options=FAST)
    marker = out / "P001" / "done.json"
    before = marker.stat().st_mtime_ns
    # repair the broken study, then resume
    good, labels, _ = make_study(study_list.parent, "s3fixed", "normal", SHAPE, seed=3)
    write_list(study_list, [("P001", "s1/echoes", "s1/labels.nrrd"),
                            ("P002", "s2/echoes", "s2/labels.nrrd"),
                            ("P003", str(good), str(labels))])
    second = batch.run_batch(study_list, out, workers=1, options=FAST)
    status = {o.study_id: o.status for o in second.outcomes}
    assert status["P001"] == "skipped" and status["P003"] == "done"
    assert marker.stat().st_mtime_ns == before
    assert not (out / "P003" / "error.json").exists()
    studies = {r["study_id"] for r in read_csv(out / "cohort.csv")}
    assert studies == {"P001", "P002", "P003"}  # the cohort holds skipped studies too
    # Other options make the old results stale: everything runs again.
    third = batch.run_batch(study_list, out, workers=1, options={**FAST, "method": "nlls"})
    assert {o.status for o in third.outcomes} == {"done"}


def test_interrupted_study_is_not_taken_as_done(cohort):
    study_list, out = cohort
    batch.run_batch(study_list, out, workers=1, options=FAST)
    (out / "P001" / "done.json").unlink()  # as if killed before the marker was written
    again = batch.run_batch(study_list, out, workers=1, options=FAST)
    assert {o.study_id: o.status for o in again.outcomes}["P001"] == "done"


def test_parallel_processes(cohort):
    study_list, out = cohort
    result = batch.run_batch(study_list, out, workers=2, options=FAST)
    assert sorted(o.status for o in result.outcomes) == ["done", "done", "failed"]


def test_dask_local_cluster(cohort):
    distributed = pytest.importorskip(
        "distributed", reason="dask.distributed (optional extra 'dask') is not installed")
    study_list, out = cohort
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster:
        result = batch.run_batch(study_list, out, scheduler=cluster.scheduler_address,
                                 options=FAST)
    status = {o.study_id: o.status for o in result.outcomes}
    assert status == {"P001": "done", "P002": "done", "P003": "failed"}
    assert (out / "P002" / "done.json").is_file()


def test_scheduler_without_dask_says_what_to_install(cohort, monkeypatch):
    study_list, out = cohort
    monkeypatch.setitem(sys.modules, "dask.distributed", None)  # import fails as if absent
    with pytest.raises(InputError, match=r"ironmapping\[dask\]"):
        batch.run_batch(study_list, out, scheduler="tcp://127.0.0.1:8786", options=FAST)


def test_study_list_errors_name_the_row(tmp_path):
    bad_header = write_list(tmp_path / "a.csv", [("x", "y")], header="id,path")
    with pytest.raises(InputError, match="study_id,input,labels"):
        batch.read_study_list(bad_header)
    twice = write_list(tmp_path / "b.csv", [("P1", "a", ""), ("P1", "b", "")])
    with pytest.raises(InputError, match="rows 2 and 3"):
        batch.read_study_list(twice)
    unsafe = write_list(tmp_path / "c.csv", [("../P1", "a", "")])
    with pytest.raises(InputError, match="folder name"):
        batch.read_study_list(unsafe)
    empty_input = write_list(tmp_path / "d.csv", [("P1", "", "")])
    with pytest.raises(InputError, match="input column is empty"):
        batch.read_study_list(empty_input)
    with pytest.raises(InputError, match="does not exist"):
        batch.read_study_list(tmp_path / "missing.csv")


def test_relative_paths_are_relative_to_the_list(tmp_path):
    listed = write_list(tmp_path / "l.csv", [("P1", "a/b;c", "lab.seg.nrrd")])
    study = batch.read_study_list(listed)[0]
    assert study.input == [str(tmp_path / "a" / "b"), str(tmp_path / "c")]
    assert study.labels == str(tmp_path / "lab.seg.nrrd")


def test_study_with_incomplete_outputs_is_not_done(cohort):
    """A study that lost its regions.csv runs again; one whose outputs cannot be made whole
    counts as failed and the batch exits non-zero."""
    import io

    from IronMapping import cli

    study_list, out = cohort
    batch.run_batch(study_list, out, workers=1, options=FAST)
    (out / "P001" / "regions.csv").unlink()
    assert batch.missing_outputs(out / "P001") == ["regions.csv"]
    again = batch.run_batch(study_list, out, workers=1, options=FAST)
    assert {o.study_id: o.status for o in again.outcomes}["P001"] == "done"
    assert (out / "P001" / "regions.csv").is_file() and not batch.missing_outputs(out / "P001")

    (out / "P002" / "regions.csv").unlink()
    (out / "P002" / "regions.csv").mkdir()  # cannot be read nor rewritten
    stdout, stderr = io.StringIO(), io.StringIO()
    code = cli.main(["batch", str(study_list), "--out", str(out), "--workers", "1",
                     "--no-report"], stdout=stdout, stderr=stderr)
    assert code == cli.EXIT_STUDIES_FAILED, stdout.getvalue() + stderr.getvalue()
    assert "2 failed" in stdout.getvalue() and "P002" in stdout.getvalue()
    status = {r["study_id"]: r["status"] for r in read_csv(out / "batch_status.csv")}
    assert status["P002"] == "failed"
