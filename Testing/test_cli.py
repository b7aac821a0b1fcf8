"""Command line: demo / fit / batch, help, exit codes, one-line errors, progress on stderr."""

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from IronMapping import cli, pipeline

from test_pipeline import SMALL, make_study

SHAPE_ARGS = ["--shape", *map(str, SMALL)]
MAIN = Path(__file__).resolve().parents[1]


def run_cli(*argv):
    out, err = io.StringIO(), io.StringIO()
    code = cli.main([str(a) for a in argv], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_help_reads_well_and_lists_exit_codes():
    code, text, _ = run_cli("--help")
    assert code == 0
    for word in ("demo", "fit", "batch", "exit codes", "130", "research use"):
        assert word.lower() in text.lower()


def test_help_of_each_command(capsys):
    for command in ("demo", "fit", "batch"):
        assert cli.main([command, "--help"]) == 0
        text = capsys.readouterr().out
        assert "--out" in text and "--method" in text
    assert "study_id,input,labels" in text and "--scheduler" in text and "--workers" in text


def test_usage_errors_exit_2(capsys):
    assert cli.main(["fit"]) == 2  # no INPUT, no --out
    assert "required" in capsys.readouterr().err
    assert cli.main(["nonsense"]) == 2
    assert cli.main(["demo", "--out", "x", "--method", "magic"]) == 2


def test_demo_end_to_end(tmp_path):
    code, out, err = run_cli("demo", "--out", tmp_path / "d", *SHAPE_ARGS, "--no-figures")
    assert code == 0, err
    for name in ("r2star.nrrd", "t2star.nrrd", "s0.nrrd", "quality.nrrd", "status.nrrd",
                 "lic.nrrd", "regions.csv", "summary.json", "report.html", "run.json"):
        assert (tmp_path / "d" / name).is_file(), name
    assert "pattern: Parenchymal" in out and "liver" in out
    assert "fitting" in err and "writing report" in err  # progress goes to stderr
    assert "research use" in out.lower()


def test_fit_nifti_echoes_with_labels_and_names(tmp_path):
    echoes, labels, _ = make_study(tmp_path, names_csv=False, shape=(4, 24, 30))
    names = tmp_path / "names.csv"
    names.write_text("1,liver\n2,spleen\n3,pancreas\n")
    code, out, err = run_cli("fit", echoes, "--labels", labels, "--label-names", names,
                             "--out", tmp_path / "o", "--format", "nifti", "--no-figures", "-q")
    assert code == 0, err
    assert err == ""  # --quiet
    assert (tmp_path / "o" / "r2star.nii.gz").is_file()
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert {r["name"] for r in summary["regions"]} >= {"liver", "spleen", "pancreas"}
    record = json.loads((tmp_path / "o" / "run.json").read_text())
    assert record["inputs"]["label_names"] == str(names)


def test_fit_errors_are_one_clear_line(tmp_path):
    code, out, err = run_cli("fit", tmp_path / "missing", "--out", tmp_path / "o")
    assert code == 2
    lines = [ln for ln in err.strip().splitlines() if ln != "reading input ..."]  # progress
    assert len(lines) == 1 and lines[0].startswith("ironmapping: error: ")
    assert "does not exist" in lines[0] and "Traceback" not in err
    code, _, err = run_cli("fit", tmp_path / "missing", "--out", tmp_path / "o", "--verbose")
    assert code == 2 and "Traceback" in err and err.strip().endswith("Check the path.")


def test_fit_with_wrong_echo_times_and_unknown_calibration(tmp_path):
    echoes, _, _ = make_study(tmp_path, shape=(4, 24, 30))
    code, _, err = run_cli("fit", echoes, "--out", tmp_path / "o", "--te-ms", "1,2,3")
    assert code == 2 and "ironmapping: error:" in err
    code, _, err = run_cli("fit", echoes, "--out", tmp_path / "o", "--calibration", "nobody1999")
    assert code == 2 and "wood2005" in err
    assert not (tmp_path / "o").exists()  # nothing written for a refused run


def test_foreign_files_in_out_need_overwrite(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "summary.json").write_text("{}")
    code, _, err = run_cli("demo", "--out", out, *SHAPE_ARGS, "--no-report")
    assert code == 2 and "--overwrite" in err
    code, _, err = run_cli("demo", "--out", out, *SHAPE_ARGS, "--no-report", "--overwrite")
    assert code == 0, err


def test_unexpected_error_exit_1_and_cancel_exit_130(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(pipeline, "run_demo", broken)
    code, _, err = run_cli("demo", "--out", tmp_path / "o")
    assert code == 1 and "RuntimeError: disk on fire" in err and "--verbose" in err

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "run_demo", interrupted)
    code, _, err = run_cli("demo", "--out", tmp_path / "o")
    assert code == 130 and "cancelled" in err


def test_batch_exit_code_says_a_study_failed(tmp_path):
    e1, l1, _ = make_study(tmp_path, "s1", shape=(3, 24, 30))
    listed = tmp_path / "list.csv"
    listed.write_text(f"study_id,input,labels\nA,{e1},{l1}\nB,{tmp_path / 'nope'},\n")
    code, out, err = run_cli("batch", listed, "--out", tmp_path / "c", "--workers", "1",
                             "--no-report")
    assert code == 3
    assert "1 done" in out and "1 failed" in out and "failed: B" in out
    assert "[1/2]" in err or "[2/2]" in err
    code, out, _ = run_cli("batch", listed, "--out", tmp_path / "c", "--workers", "1",
                           "--no-report")
    assert code == 3 and "1 already done" in out
    code, _, err = run_cli("batch", listed, "--out", tmp_path / "c", "--workers", "0")
    assert code == 2 and "--workers" in err


def test_python_dash_m_entry_point(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(MAIN) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, "-m", "IronMapping", "--version"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("IronMapping ")


def test_real_kidney_nifti_with_a_box_label(shared_data, tmp_path):
    """UKRIN-MAPS Siemens kidney NIfTI (dcm2niix sidecars, 3 T): maps on the input's grid."""
    from IronMapping import maps_io

    folder = shared_data / "ukat-kidney-r2star" / "siemens"
    if not folder.is_dir():
        pytest.skip(f"{folder} not found")
    image = pipeline.load_image([folder])
    labels = np.zeros(image.shape, np.uint8)
    k, j, i = (s // 2 for s in image.shape)
    labels[max(k - 1, 0):k + 1, j - 5:j + 5, i - 5:i + 5] = 1
    maps_io.write_volume(tmp_path / "box.nrrd", labels, image.ijk_to_ras, sidecar=False)
    (tmp_path / "box.csv").write_text("1,tissue box\n")
    code, out, err = run_cli("fit", folder, "--labels", tmp_path / "box.nrrd", "--out",
                             tmp_path / "o", "--format", "nifti", "--no-figures", "-q")
    assert code == 0, err
    r2 = maps_io.read_volume(tmp_path / "o" / "r2star.nii.gz")
    assert r2.array.shape == image.shape
    np.testing.assert_allclose(r2.ijk_to_ras, image.ijk_to_ras, atol=1e-4)
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["field_strength_t"] == pytest.approx(3.0, abs=0.2)
    assert summary["regions"][0]["n_voxels"] == int(labels.sum())


def test_real_spin_echo_dicom_gives_t2_maps(shared_data, tmp_path):
    """GE knee multi-echo spin echo DICOM (interleaved echoes in one series): T2, not T2*."""
    from IronMapping import maps_io

    folder = shared_data / "ge-knee-t2-mese"
    if not folder.is_dir():
        pytest.skip(f"{folder} not found")
    code, _, err = run_cli("fit", folder, "--out", tmp_path / "o", "--no-report", "-q")
    assert code == 0, err
    sidecar = json.loads((tmp_path / "o" / "r2.json").read_text())
    assert sidecar["quantity"] == "R2" and sidecar["provenance"]["quantity"] == "T2"
    assert maps_io.read_volume(tmp_path / "o" / "t2.nrrd").array.shape[0] == 25
    assert not (tmp_path / "o" / "r2star.nrrd").exists()


def test_fit_with_a_slicer_segmentation(tmp_path):
    """Segment names embedded in a .seg.nrrd written by Slicer's own storage node."""
    pytest.importorskip("slicer", reason="slicer-core (Slicer's MRML) is not installed")
    from test_maps_io import _slicer_segmentation

    echoes, _, ph = make_study(tmp_path, shape=(4, 24, 30), names_csv=False)
    organs = np.where(np.isin(ph.labels, [1, 2, 3]), ph.labels, 0).astype(np.uint8)
    seg = tmp_path / "organs.seg.nrrd"
    _slicer_segmentation(seg, ph.image.ijk_to_ras,
                         [(organs, {1: "Liver", 2: "Spleen", 3: "Pancreas"})])
    code, out, err = run_cli("fit", echoes, "--labels", seg, "--out", tmp_path / "o",
                             "--no-report", "-q")
    assert code == 0, err
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    organs_found = {r["name"]: r["organ"] for r in summary["regions"]}
    assert organs_found == {"Liver": "liver", "Spleen": "spleen", "Pancreas": "pancreas"}
    assert (tmp_path / "o" / "lic.nrrd").is_file()


def test_progress_on_a_terminal_updates_one_line():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    stream = Terminal()
    progress = cli.Progress(stream)
    for fraction in (0.0, 0.5, 1.0):
        progress("fit", fraction)
    progress("write", None)
    progress.close()
    text = stream.getvalue()
    assert "\rfitting 100%" in text and "writing maps and tables ..." in text
    quiet = io.StringIO()
    cli.Progress(quiet, enabled=False)("fit", 0.5)
    assert quiet.getvalue() == ""


# --------------------------------------------------------------------------- the user's disk

@pytest.fixture
def small_mount(tmp_path):
    """A real tmpfs of 200 kB (or read-only), mounted for the test; skipped where not allowed."""
    mounted = []

    def mount(options):
        point = tmp_path / f"mnt{len(mounted)}"
        point.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()[:80]})")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", str(point)], capture_output=True)


def test_full_disk_exits_2_naming_the_cause_and_folder(small_mount):
    out = small_mount("size=200k") / "study"
    code, _, err = run_cli("demo", "--out", out, *SHAPE_ARGS, "--no-figures")
    assert code == 2, err
    assert "no space left" in err and str(out) in err
    assert "Traceback" not in err and not list(out.glob("*.tmp"))


def test_read_only_out_exits_2_naming_the_cause_and_folder(small_mount):
    out = small_mount("ro,size=64k") / "study"
    code, _, err = run_cli("demo", "--out", out, *SHAPE_ARGS, "--no-report")
    assert code == 2, err
    assert "read-only" in err and str(out) in err and "unexpected" not in err


@pytest.mark.parametrize("code, words", [(28, "no space left"), (13, "permission denied"),
                                         (30, "read-only")])
def test_write_errors_injected_at_the_write_call(tmp_path, monkeypatch, code, words):
    """Where no tmpfs can be mounted: the errno raised by the write itself."""
    monkeypatch.setattr(Path, "write_text", _failing_write_text(code, Path.write_text))
    out = tmp_path / "o"
    rc, _, err = run_cli("demo", "--out", out, *SHAPE_ARGS, "--no-report")
    assert rc == 2, err
    assert words in err and str(out) in err


def _failing_write_text(code, real):
    import errno as errno_module

    def write_text(self, *args, **kwargs):
        if self.name.startswith("regions.csv"):
            raise OSError(code, errno_module.errorcode[code], str(self))
        return real(self, *args, **kwargs)

    return write_text


def test_field_strength_flag_contradicting_the_sidecar_is_refused_unless_confirmed(tmp_path):
    from test_pipeline import phantom_image, write_nifti_echoes

    echoes = write_nifti_echoes(phantom_image(shape=(4, 24, 30)).image, tmp_path / "e",
                                field_strength_t=3.0)
    code, _, err = run_cli("fit", echoes, "--out", tmp_path / "a", "--field-strength", "1.5",
                           "--no-report")
    assert code == 2 and "--confirm-field-strength" in err and "3 T" in err
    code, _, err = run_cli("fit", echoes, "--out", tmp_path / "b", "--field-strength", "1.5",
                           "--confirm-field-strength", "--no-report")
    assert code == 0, err
    assert "replaces the 3 T" in err


def test_fit_without_labels_gives_whole_image_figures(tmp_path):
    echoes, _, ph = make_study(tmp_path, shape=(4, 24, 30))
    code, out, err = run_cli("fit", echoes, "--out", tmp_path / "o", "--no-report", "-q")
    assert code == 0, err
    assert "Indeterminate" not in out and "\npattern:" not in out
    assert "fitted:" in out and "% of the voxels" in out
    assert "median R2* of fitted tissue" in out and "1/s" in out
    assert "maps: r2star.nrrd" in out and str(tmp_path / "o") in out
    whole = json.loads((tmp_path / "o" / "summary.json").read_text())["whole_image"]
    assert 0 < whole["fitted_fraction"] < 1 and whole["r2star_median"] > 0
    assert f"{100 * whole['fitted_fraction']:.1f} %" in out
