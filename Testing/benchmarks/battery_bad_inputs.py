"""A battery of bad or awkward inputs across the library, the command line and the Slicer logic.

    python Testing/benchmarks/battery_bad_inputs.py [--verbose]

Every case is either bad input that must be refused with a clear message (an IronMappingError,
or exit code 2 with one line on the command line), or awkward but valid input whose result is
checked against what it must be. Outcomes:

- clear error: refused with an IronMapping error whose message says what is wrong;
- handled: awkward input accepted and the result checked right;
- silently wrong: bad input accepted without a word, or a result that fails its check;
- refused valid input: a valid input refused (an IronMapping error where a result was due);
- crash: any other exception, or exit code 1.

The targets are 0 silently wrong and 0 crashes. Cases that need a facility the machine lacks
(mounting a small tmpfs, slicer-core) are reported as skipped. Synthetic data only (the
digital phantom); nothing is read from patients.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import traceback
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "Testing"))

from IronMapping import cli, maps_io, pipeline  # noqa: E402
from IronMapping.errors import IronMappingError  # noqa: E402
from IronMapping.image import MultiEchoImage  # noqa: E402
from IronMapping.phantom import make_phantom  # noqa: E402
from IronMapping.relaxometry import Status, fit  # noqa: E402

SHAPE = (4, 24, 30)
CASES = []


class Skip(Exception):
    """The case needs something this machine does not have."""


def case(name, expect="error", group="library"):
    """Register a case. ``expect``: "error" (must be refused) or "ok" (returns True if right)."""
    def register(fn):
        CASES.append((group, name, expect, fn))
        return fn
    return register


# --------------------------------------------------------------------------- helpers

def phantom(preset="neonatal-haemochromatosis", seed=0):
    return make_phantom(preset, shape=SHAPE, seed=seed)


PH = phantom()
SIG, TE = PH.image.signal, PH.image.echo_times_ms


def run_cli(*argv):
    out, err = io.StringIO(), io.StringIO()
    code = cli.main([str(a) for a in argv], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


class CliRefused(IronMappingError):
    """Exit code 2 with one clear line."""


class CliCrash(Exception):
    """Exit code 1 (unexpected failure)."""


def cli_expect_error(*argv):
    code, out, err = run_cli(*argv)
    if code == 2 and "ironmapping: error:" in err and "Traceback" not in err:
        raise CliRefused(err.strip().splitlines()[-1])
    if code == 1:
        raise CliCrash(err.strip().splitlines()[-1] if err.strip() else "exit 1")
    if code == 2:
        raise CliRefused(err.strip()[-200:])  # argparse usage errors
    return code, out, err


def nifti_study(folder, image=None, field=1.5, te_scale=1e-3, suffix=".nii"):
    import SimpleITK as sitk

    image = image or PH.image
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n, te in enumerate(image.echo_times_ms, 1):
        path = folder / f"gre_e{n}{suffix}"
        if suffix == ".nii" or suffix == ".nii.gz":
            maps_io.write_volume(path, image.signal[n - 1], image.ijk_to_ras, sidecar=False,
                                 compress=suffix.endswith(".gz"))
        else:
            sitk.WriteImage(sitk.GetImageFromArray(image.signal[n - 1]), str(path))
        sidecar = {"EchoTime": te * te_scale, "ImageType": ["ORIGINAL", "PRIMARY", "M"]}
        if field is not None:
            sidecar["MagneticFieldStrength"] = field
        (folder / f"gre_e{n}.json").write_text(json.dumps(sidecar))
        paths.append(path)
    return folder, paths


def labels_file(folder, labels=None, ijk_to_ras=None, names=True, name="labels.nrrd"):
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = maps_io.write_volume(folder / name, PH.labels if labels is None else labels,
                                PH.image.ijk_to_ras if ijk_to_ras is None else ijk_to_ras,
                                sidecar=False)
    if names:
        stem = name.split(".")[0]
        (folder / f"{stem}.csv").write_text(
            "value,name\n" + "".join(f"{v},{n}\n" for v, n in PH.label_names.items()))
    return path


def tmp():
    return Path(tempfile.mkdtemp(prefix="battery_", dir=WORK))


# --------------------------------------------------------------------------- fit()

@case("echo times in seconds, 1 ms spacing")
def _():
    fit(SIG, TE / 1000.0)


@case("echo times in microseconds (Siemens alTE)")
def _():
    fit(SIG, TE * 1000.0)


@case("duplicate echo times")
def _():
    te = TE.copy()
    te[3] = te[2]
    fit(SIG, te)


@case("echo times not increasing")
def _():
    fit(SIG, TE[::-1].copy())


@case("NaN echo time")
def _():
    te = TE.copy()
    te[1] = np.nan
    fit(SIG, te)


@case("negative echo time")
def _():
    te = TE.copy()
    te[0] = -1.0
    fit(SIG, te)


@case("one echo time fewer than echoes")
def _():
    fit(SIG, TE[:-1])


@case("a single echo")
def _():
    fit(SIG[:1], TE[:1])


@case("no echo times")
def _():
    fit(SIG, None)


@case("echo times as text")
def _():
    fit(SIG, ["a"] * len(TE))


@case("complex signal")
def _():
    fit(SIG.astype(np.complex64), TE)


@case("all-zero signal")
def _():
    fit(np.zeros_like(SIG), TE)


@case("signal without a spatial axis")
def _():
    fit(SIG[:, 0, 0, 0], TE)


@case("mask of the wrong shape")
def _():
    fit(SIG, TE, mask=np.ones((2, 2), bool))


@case("unknown method")
def _():
    fit(SIG, TE, method="magic")


@case("negative noise SD")
def _():
    fit(SIG, TE, noise_sigma=-1.0)


@case("zero coils")
def _():
    fit(SIG, TE, coils=0)


@case("fat-water without field strength")
def _():
    fit(SIG, TE, method="fat-water")


@case("ARLO with non-uniform echoes")
def _():
    te = TE.copy()
    te[-1] += 0.7
    fit(SIG, te, method="arlo")


@case("unknown quantity")
def _():
    fit(SIG, TE, quantity="T1")


@case("misspelt option (bogus_option=3)")
def _():
    fit(SIG, TE, bogus_option=3)


@case("NaN in some voxels: those voxels invalid, the rest fitted", expect="ok")
def _():
    sig = SIG.copy()
    sig[2, 1, 10, 10] = np.nan
    sig[3, 2, 12, 12] = -3.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = fit(sig, TE)
    liver = PH.labels == 1
    return (res.status[1, 10, 10] == Status.INVALID_SIGNAL
            and res.status[2, 12, 12] == Status.INVALID_SIGNAL
            and abs(np.nanmedian(res.r2star[liver]) - PH.region_r2star["liver"])
            < 0.1 * PH.region_r2star["liver"])


@case("integer signal (int16 as scanners store)", expect="ok")
def _():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = fit(np.rint(SIG).astype(np.int16), TE)
    liver = PH.labels == 1
    return abs(np.nanmedian(res.r2star[liver]) - PH.region_r2star["liver"]) < 0.1 * PH.region_r2star["liver"]


# --------------------------------------------------------------------------- files

@case("truncated .nii echo", group="files")
def _():
    from IronMapping.io import load_multiecho

    folder, paths = nifti_study(tmp() / "e")
    data = paths[3].read_bytes()
    paths[3].write_bytes(data[: len(data) // 2])
    load_multiecho(folder)


@case("truncated .nii.gz echo", group="files")
def _():
    from IronMapping.io import load_multiecho

    folder, paths = nifti_study(tmp() / "e", suffix=".nii.gz")
    data = paths[3].read_bytes()
    paths[3].write_bytes(data[: len(data) // 2])
    load_multiecho(folder)


@case("NaN voxels in a NIfTI echo", group="files")
def _():
    from IronMapping.io import load_multiecho

    sig = SIG.copy()
    sig[2, 1, 3, 4] = np.nan
    img = MultiEchoImage(sig, TE, PH.image.ijk_to_ras, "T2*", 1.5, {})
    folder, _ = nifti_study(tmp() / "e", img)
    load_multiecho(folder)


@case("infinite voxels in a NIfTI echo", group="files")
def _():
    from IronMapping.io import load_multiecho

    sig = SIG.copy()
    sig[5, 0, 0, 0] = np.inf
    img = MultiEchoImage(sig, TE, PH.image.ijk_to_ras, "T2*", 1.5, {})
    folder, _ = nifti_study(tmp() / "e", img, suffix=".nii.gz")
    load_multiecho(folder)


@case("sidecar EchoTime in microseconds", group="files")
def _():
    from IronMapping.io import load_multiecho

    folder, _ = nifti_study(tmp() / "e", te_scale=1000.0)
    load_multiecho(folder)


@case("sidecar EchoTime in ms instead of s: read as ms with a note", expect="ok", group="files")
def _():
    from IronMapping.io import load_multiecho

    folder, _ = nifti_study(tmp() / "e", te_scale=1.0)
    img = load_multiecho(folder)
    return np.allclose(img.echo_times_ms, TE) and any("milliseconds" in w
                                                       for w in img.metadata["warnings"])


@case("no EchoTime anywhere", group="files")
def _():
    from IronMapping.io import load_multiecho

    folder, _ = nifti_study(tmp() / "e")
    for js in folder.glob("*.json"):
        js.write_text("{}")
    load_multiecho(folder)


@case("sidecar that is not JSON", group="files")
def _():
    from IronMapping.io import load_multiecho

    folder, _ = nifti_study(tmp() / "e")
    (folder / "gre_e2.json").write_text("{not json")
    load_multiecho(folder)


@case("text file named .nii", group="files")
def _():
    from IronMapping.io import load_multiecho

    folder = tmp() / "e"
    folder.mkdir()
    (folder / "gre_e1.nii").write_text("hello")
    (folder / "gre_e2.nii").write_text("hello")
    load_multiecho([folder / "gre_e1.nii", folder / "gre_e2.nii"], echo_times_ms=[1, 2])


@case("empty folder", group="files")
def _():
    from IronMapping.io import load_multiecho

    folder = tmp() / "empty"
    folder.mkdir()
    load_multiecho(folder)


@case("path that does not exist", group="files")
def _():
    from IronMapping.io import load_multiecho

    load_multiecho(WORK / "nowhere")


@case("phase images only", group="files")
def _():
    from IronMapping.io import load_multiecho

    folder, _ = nifti_study(tmp() / "e")
    for js in folder.glob("*.json"):
        d = json.loads(js.read_text())
        d["ImageType"] = ["ORIGINAL", "PRIMARY", "P"]
        js.write_text(json.dumps(d))
    load_multiecho(folder)


@case("echoes on different grids", group="files")
def _():
    from IronMapping.io import load_multiecho

    folder, paths = nifti_study(tmp() / "e")
    shifted = PH.image.ijk_to_ras.copy()
    shifted[0, 3] += 5.0
    maps_io.write_volume(paths[4], SIG[4], shifted, sidecar=False, compress=False)
    load_multiecho(folder)


@case("a single echo file", group="files")
def _():
    from IronMapping.io import load_multiecho

    folder, paths = nifti_study(tmp() / "e")
    for p in paths[1:]:
        p.unlink()
    load_multiecho(folder)


@case("typed echo times disagree with the sidecars", group="files")
def _():
    from IronMapping.io import load_multiecho

    folder, _ = nifti_study(tmp() / "e")
    load_multiecho(folder, echo_times_ms=list(TE * 1.5))


@case("echo files listed out of order: sorted by their sidecars", expect="ok", group="files")
def _():
    from IronMapping.io import load_multiecho

    folder, paths = nifti_study(tmp() / "e")
    img = load_multiecho(list(reversed(paths)))
    return np.allclose(img.echo_times_ms, TE) and np.allclose(img.signal, SIG, rtol=1e-5)


@case("truncated label map", group="files")
def _():
    path = labels_file(tmp(), name="labels.nii")
    path.write_bytes(path.read_bytes()[:-300])
    maps_io.read_labels(path)


@case("label map holding an image (non-integer values)", group="files")
def _():
    path = labels_file(tmp(), labels=SIG[0])
    maps_io.read_labels(path)


@case("label names file with a bad line", group="files")
def _():
    folder = tmp()
    (folder / "names.csv").write_text("value,name\n1,liver\nx,spleen\n")
    maps_io.read_label_names(folder / "names.csv")


# --------------------------------------------------------------------------- command line

@case("--field-strength contradicting the sidecar", group="command line")
def _():
    folder, _ = nifti_study(tmp() / "e", field=3.0)
    cli_expect_error("fit", folder, "--out", tmp() / "o", "--field-strength", "1.5", "--no-report")


@case("--field-strength confirmed: used and its source recorded", expect="ok", group="command line")
def _():
    folder, _ = nifti_study(tmp() / "e", field=3.0)
    out = tmp() / "o"
    code, _, _ = cli_expect_error("fit", folder, "--out", out, "--field-strength", "1.5",
                                  "--confirm-field-strength", "--no-report", "-q")
    s = json.loads((out / "summary.json").read_text())
    return code == 0 and s["field_strength_t"] == 1.5 and "command line" in s["field_strength_source"]


@case("--te-ms with the wrong count", group="command line")
def _():
    folder, _ = nifti_study(tmp() / "e")
    cli_expect_error("fit", folder, "--out", tmp() / "o", "--te-ms", "1", "2", "3")


@case("--te-ms in seconds for files without echo times", group="command line")
def _():
    folder, _ = nifti_study(tmp() / "e")
    for js in folder.glob("*.json"):
        js.unlink()
    cli_expect_error("fit", *sorted(folder.glob("*.nii")), "--out", tmp() / "o", "--te-ms",
                     *[f"{t / 1000:g}" for t in TE])


@case("--out is a file", group="command line")
def _():
    f = tmp() / "file.txt"
    f.write_text("x")
    cli_expect_error("demo", "--out", f, "--shape", *map(str, SHAPE), "--no-report")


@case("--out holds someone else's files", group="command line")
def _():
    out = tmp() / "o"
    out.mkdir()
    (out / "my notes.txt").write_text("keep")
    cli_expect_error("demo", "--out", out, "--shape", *map(str, SHAPE), "--no-report")


def _mount(options):
    point = tmp() / "mnt"
    point.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise Skip("cannot mount a tmpfs")
    MOUNTS.append(point)
    return point


@case("--out on a full disk", group="command line")
def _():
    out = _mount("size=24k") / "o"
    cli_expect_error("demo", "--out", out, "--shape", *map(str, SHAPE), "--no-figures")


@case("--out on a read-only file system", group="command line")
def _():
    out = _mount("ro,size=64k") / "o"
    cli_expect_error("demo", "--out", out, "--shape", *map(str, SHAPE), "--no-report")


@case("labels that do not overlap the image", group="command line")
def _():
    folder, _ = nifti_study(tmp() / "e")
    far = PH.image.ijk_to_ras.copy()
    far[:3, 3] += 5000.0
    labels = labels_file(tmp(), ijk_to_ras=far)
    cli_expect_error("fit", folder, "--labels", labels, "--out", tmp() / "o", "--no-report")


@case("unknown calibration", group="command line")
def _():
    cli_expect_error("demo", "--out", tmp() / "o", "--calibration", "nonsense")


@case("1.5 T calibration asked for on 3 T data", group="command line")
def _():
    folder, _ = nifti_study(tmp() / "e", field=3.0)
    labels = labels_file(tmp())
    cli_expect_error("fit", folder, "--labels", labels, "--calibration", "wood2005",
                     "--out", tmp() / "o", "--no-report")


@case("unknown method", group="command line")
def _():
    cli_expect_error("demo", "--out", tmp() / "o", "--method", "magic")


@case("batch with --workers 0", group="command line")
def _():
    lst = tmp() / "list.csv"
    lst.write_text("study_id,input,labels\nA,x,\n")
    cli_expect_error("batch", lst, "--out", tmp() / "o", "--workers", "0")


@case("batch list without an input column", group="command line")
def _():
    lst = tmp() / "list.csv"
    lst.write_text("study,path\nA,x\n")
    cli_expect_error("batch", lst, "--out", tmp() / "o")


@case("batch study that lost its regions.csv and cannot be redone", group="command line")
def _():
    root = tmp()
    folder, _ = nifti_study(root / "s1" / "e")
    lst = root / "list.csv"
    lst.write_text(f"study_id,input,labels\nA,{folder},\n")
    out = root / "o"
    cli_expect_error("batch", lst, "--out", out, "--workers", "1", "--no-report", "-q")
    (out / "A" / "regions.csv").unlink()
    (out / "A" / "regions.csv").mkdir()
    code, text, _ = run_cli("batch", lst, "--out", out, "--workers", "1", "--no-report", "-q")
    if code == cli.EXIT_STUDIES_FAILED and "1 failed" in text:
        raise CliRefused("exit 3: the study is reported failed")
    return code


@case("fit without labels: fitted share, median R2*, where the maps are", expect="ok",
      group="command line")
def _():
    folder, _ = nifti_study(tmp() / "e")
    code, out, _ = cli_expect_error("fit", folder, "--out", tmp() / "o", "--no-report", "-q")
    return (code == 0 and "fitted:" in out and "median R2* of fitted tissue" in out
            and "maps:" in out and "Indeterminate" not in out)


@case("spin-echo data: r2/t2 files, R2/T2 headers", expect="ok", group="command line")
def _():
    img = MultiEchoImage(SIG, TE, PH.image.ijk_to_ras, "T2", 1.5, {})
    out = tmp() / "o"
    pipeline.run(img, out, pipeline.LabelMap(PH.labels, PH.image.ijk_to_ras, PH.label_names),
                 report=False)
    header = (out / "regions.csv").read_text().splitlines()[0]
    return ((out / "r2.nrrd").is_file() and (out / "t2.nrrd").is_file()
            and not (out / "r2star.nrrd").exists() and "R2 median (1/s)" in header
            and "R2*" not in header)


@case("regions.csv numbers at display precision, grades and notes agree", expect="ok",
      group="command line")
def _():
    import csv

    out = tmp() / "o"
    code, _, _ = cli_expect_error("demo", "--out", out, "--shape", "6", "40", "52", "--no-report")
    with open(out / "regions.csv", newline="") as fh:
        rows = {r["Region"]: r for r in csv.DictReader(fh)}
    def decimals(t):
        return len(t.split(".")[1]) if "." in t else 0
    ok = all(decimals(r["R2* median (1/s)"]) <= 1 and decimals(r["T2* median (ms)"]) <= 2
             and decimals(r["Volume (mL)"]) <= 1 for r in rows.values())
    kidney = rows["kidney"]
    ok &= not (kidney["Grade"] == "normal" and "below the lower limit" in kidney["Notes"])
    ok &= all(".;" not in r["Notes"] and "True" not in r["Notes"] and "organs=" not in r["Notes"]
              for r in rows.values())
    return code == 0 and ok


# --------------------------------------------------------------------------- more awkward inputs

@case("mask with no voxel set", group="library")
def _():
    fit(SIG, TE, mask=np.zeros(SHAPE, bool))


@case("echo times closer than 1 us", group="library")
def _():
    te = TE.copy()
    te[4] = te[3] + 1e-4
    fit(SIG, te)


@case("one slice (2-D acquisition): fitted", expect="ok", group="library")
def _():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = fit(SIG[:, 1:2], TE)
    liver = PH.labels[1:2] == 1
    return abs(np.nanmedian(res.r2star[liver]) - PH.region_r2star["liver"]) < 0.1 * PH.region_r2star["liver"]


@case("DICOM folder: echo times and field strength from the headers", expect="ok", group="files")
def _():
    from IronMapping.io import load_multiecho
    from IronMapping.io.dicom_writer import write_multiecho_dicom

    folder = tmp() / "dicom"
    write_multiecho_dicom(PH.image, str(folder))
    img = load_multiecho(folder)
    return (np.allclose(img.echo_times_ms, TE) and img.field_strength_t == 1.5
            and "DICOM" in img.metadata["field_strength_source"])


@case("DICOM with --field-strength 3 against its 1.5 T header", group="command line")
def _():
    from IronMapping.io.dicom_writer import write_multiecho_dicom

    folder = tmp() / "dicom"
    write_multiecho_dicom(PH.image, str(folder))
    cli_expect_error("fit", folder, "--out", tmp() / "o", "--field-strength", "3", "--no-report")


@case("DICOM spin echo: quantity T2, files r2/t2", expect="ok", group="command line")
def _():
    from IronMapping.io.dicom_writer import write_multiecho_dicom

    folder = tmp() / "dicom"
    write_multiecho_dicom(MultiEchoImage(SIG, TE * 4, PH.image.ijk_to_ras, "T2", 1.5, {}),
                          str(folder))
    out = tmp() / "o"
    code, _, _ = cli_expect_error("fit", folder, "--out", out, "--no-report", "-q")
    return code == 0 and (out / "t2.nrrd").is_file() and not (out / "t2star.nrrd").exists()


@case("4-D NIfTI with a list of echo times in its sidecar", expect="ok", group="files")
def _():
    import SimpleITK as sitk

    from IronMapping.io import load_multiecho

    folder = tmp() / "e"
    folder.mkdir()
    sitk.WriteImage(sitk.GetImageFromArray(np.ascontiguousarray(SIG), isVector=False),
                    str(folder / "gre.nii.gz"))
    (folder / "gre.json").write_text(json.dumps({"EchoTime": [t / 1000 for t in TE]}))
    img = load_multiecho(folder / "gre.nii.gz")
    return np.allclose(img.echo_times_ms, TE) and np.allclose(img.signal, SIG, rtol=1e-6)


@case("label map on a finer grid: resampled, volumes kept", expect="ok", group="files")
def _():
    fine = np.repeat(np.repeat(PH.labels, 2, axis=1), 2, axis=2)
    m = PH.image.ijk_to_ras.copy()
    m[:3, 0] /= 2.0
    m[:3, 1] /= 2.0
    m[:3, 3] -= (PH.image.ijk_to_ras[:3, 0] + PH.image.ijk_to_ras[:3, 1]) / 4.0
    path = labels_file(tmp(), labels=fine, ijk_to_ras=m)
    lm = maps_io.read_labels(path, reference_shape=SHAPE, reference_ijk_to_ras=PH.image.ijk_to_ras)
    return np.mean(lm.labels == PH.labels) > 0.98


@case("label values without names: reported as 'label N'", expect="ok", group="files")
def _():
    path = labels_file(tmp(), names=False)
    lm = maps_io.read_labels(path)
    return set(lm.names.values()) == {f"label {v}" for v in PH.label_names}


@case("field strength given in gauss (15000) in a sidecar: read as 1.5 T", expect="ok",
      group="files")
def _():
    from IronMapping.io import load_multiecho

    folder, _ = nifti_study(tmp() / "e", field=15000)
    img = load_multiecho(folder)
    return img.field_strength_t == 1.5 and any("gauss" in w for w in img.metadata["warnings"])


@case("3 T data with the default calibration: no LIC, a note; 3 T grades", expect="ok",
      group="command line")
def _():
    out = tmp() / "o"
    code, _, _ = cli_expect_error("demo", "--out", out, "--shape", *map(str, SHAPE),
                                  "--field-strength", "3", "--no-report", "-q")
    s = json.loads((out / "summary.json").read_text())
    liver = next(r for r in s["regions"] if r["name"] == "liver")
    return (code == 0 and liver["lic_mg_per_g"] is None and "LIC not computed" in liver["lic_note"]
            and liver["grade"] is not None
            and liver["grade_criterion"].endswith(("119 1/s", "435 1/s", "952 1/s")))


@case("field strength unknown: no LIC, no grades, said so", expect="ok", group="command line")
def _():
    folder, _ = nifti_study(tmp() / "e", field=None)
    out = tmp() / "o"
    code, _, _ = cli_expect_error("fit", folder, "--labels", labels_file(tmp()), "--out", out,
                                  "--no-report", "-q")
    s = json.loads((out / "summary.json").read_text())
    return (code == 0 and all(r["grade"] is None and r["lic_mg_per_g"] is None
                              for r in s["regions"])
            and "unknown" in s["field_strength_source"])


@case("--out is the input folder", group="command line")
def _():
    folder, _ = nifti_study(tmp() / "e")
    cli_expect_error("fit", folder, "--out", folder, "--no-report")


@case("--overwrite into the input folder leaves the inputs alone", expect="ok",
      group="command line")
def _():
    folder, paths = nifti_study(tmp() / "e")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    code, _, _ = cli_expect_error("fit", folder, "--out", folder, "--overwrite", "--no-report", "-q")
    return code == 0 and all((folder / n).read_bytes() == b for n, b in before.items())


@case("re-run into its own folder without --overwrite", expect="ok", group="command line")
def _():
    out = tmp() / "o"
    a = cli_expect_error("demo", "--out", out, "--shape", *map(str, SHAPE), "--no-report", "-q")[0]
    b = cli_expect_error("demo", "--out", out, "--shape", *map(str, SHAPE), "--no-report", "-q")[0]
    return a == 0 and b == 0


@case("non-numeric --field-strength", group="command line")
def _():
    cli_expect_error("fit", "x", "--out", tmp() / "o", "--field-strength", "high")


@case("--te-ms with text", group="command line")
def _():
    cli_expect_error("fit", "x", "--out", tmp() / "o", "--te-ms", "1.2", "two")


@case("labels file that does not exist", group="command line")
def _():
    folder, _ = nifti_study(tmp() / "e")
    cli_expect_error("fit", folder, "--labels", tmp() / "none.nrrd", "--out", tmp() / "o")


@case("label names file for a .seg.nrrd-less label map that names other values", expect="ok",
      group="files")
def _():
    folder = tmp()
    path = labels_file(folder, names=False)
    (folder / "other.csv").write_text("value,name\n1,liver\n99,nothing\n")
    lm = maps_io.read_labels(path, names_path=folder / "other.csv")
    return lm.names[1] == "liver" and lm.names[2] == "label 2" and any("no name" in w for w in lm.warnings)


# --------------------------------------------------------------------------- Slicer logic

def _scene():
    try:
        from mrml_fixtures import install_scene
    except Exception as exc:  # slicer-core missing
        raise Skip(f"slicer-core not available ({exc})")
    setup, restore = install_scene()
    RESTORES.append(restore)
    return setup.scene


def _loaded():
    from IronMapping import scene as mrml

    scene = _scene()
    seq, _ = mrml.add_multiecho_sequence(PH.image, "mGRE", scene=scene)
    seg = mrml.add_label_segmentation(PH.labels, PH.label_names, PH.image.ijk_to_ras, "organs",
                                      scene=scene)
    return scene, seq, seg


def _unchanged(scene, before, fn):
    try:
        fn()
    finally:
        if scene.GetNumberOfNodes() != before:
            raise RuntimeError("the scene was changed by a failed run")


@case("label map volume given as segmentationNode", group="Slicer logic")
def _():
    from mrml_fixtures import volume_node_from_array

    from IronMapping.logic import IronMappingLogic

    scene, seq, _ = _loaded()
    lm = volume_node_from_array(scene, PH.labels.astype(np.int16), PH.image.ijk_to_ras, "labels",
                                "vtkMRMLLabelMapVolumeNode")
    _unchanged(scene, scene.GetNumberOfNodes(),
               lambda: IronMappingLogic().process(seq, segmentationNode=lm))


@case("one scalar volume (a single echo)", group="Slicer logic")
def _():
    from mrml_fixtures import volume_node_from_array

    from IronMapping.logic import IronMappingLogic

    scene = _scene()
    vol = volume_node_from_array(scene, SIG[0], PH.image.ijk_to_ras, "echo1")
    IronMappingLogic().process(vol)


@case("echo volumes on different grids", group="Slicer logic")
def _():
    from mrml_fixtures import volume_node_from_array

    from IronMapping.logic import IronMappingLogic

    scene = _scene()
    m2 = PH.image.ijk_to_ras.copy()
    m2[1, 3] += 4.0
    vols = [volume_node_from_array(scene, SIG[0], PH.image.ijk_to_ras, "e1"),
            volume_node_from_array(scene, SIG[1], m2, "e2")]
    IronMappingLogic().process(vols, echoTimesMs=list(TE[:2]))


@case("echoTimesMs of the wrong length", group="Slicer logic")
def _():
    from IronMapping.logic import IronMappingLogic

    scene, seq, seg = _loaded()
    IronMappingLogic().process(seq, echoTimesMs=[1.0, 2.0], segmentationNode=seg)


@case("echoTimesMs typed in seconds", group="Slicer logic")
def _():
    from IronMapping.logic import IronMappingLogic

    scene, seq, seg = _loaded()
    IronMappingLogic().process(seq, echoTimesMs=list(TE / 1000.0), segmentationNode=seg)


@case("segmentation without segments", group="Slicer logic")
def _():
    from IronMapping.logic import IronMappingLogic

    scene, seq, _ = _loaded()
    empty = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "empty")
    IronMappingLogic().process(seq, segmentationNode=empty)


@case("cancel during the fit", group="Slicer logic")
def _():
    from IronMapping.logic import IronMappingLogic

    scene, seq, seg = _loaded()
    before = scene.GetNumberOfNodes()
    _unchanged(scene, before,
               lambda: IronMappingLogic().process(seq, segmentationNode=seg, cancel=lambda: True))


@case("valid run: table at display precision, field-strength source given", expect="ok",
      group="Slicer logic")
def _():
    from IronMapping import scene as mrml
    from IronMapping.logic import IronMappingLogic

    scene, seq, seg = _loaded()
    result = IronMappingLogic().process(seq, segmentationNode=seg, fieldStrengthT=1.5)
    rows = {r["Region"]: r for r in mrml.table_rows(result["table"])}
    full = {r["name"]: r for r in result.summary["regions"]}
    return (rows["liver"]["R2* median (1/s)"] == round(full["liver"]["r2star_median"], 1)
            and "given by the user" in result.summary["field_strength_source"])


# --------------------------------------------------------------------------- running

def classify(expect, fn):
    """(outcome, detail)."""
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            value = fn()
    except Skip as exc:
        return "skipped", str(exc)
    except IronMappingError as exc:
        message = " ".join(str(exc).split())
        if expect == "error":
            clear = len(message) >= 25
            return ("clear error" if clear else "crash"), message
        return "refused valid input", message
    except CliCrash as exc:
        return "crash", str(exc)
    except Exception as exc:  # noqa: BLE001 - counting is the point
        return "crash", f"{type(exc).__name__}: {exc} | {traceback.format_exc(limit=2)[-300:]}"
    if expect == "error":
        return "silently wrong", f"accepted (returned {value!r})"
    return ("handled", "") if value else ("silently wrong", f"check failed ({value!r})")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--verbose", action="store_true", help="print every case's message")
    args = parser.parse_args(argv)
    counts = {k: 0 for k in ("clear error", "handled", "silently wrong", "refused valid input",
                             "crash", "skipped")}
    problems = []
    for group, name, expect, fn in CASES:
        outcome, detail = classify(expect, fn)
        while RESTORES:
            RESTORES.pop()()
        while MOUNTS:
            subprocess.run(["umount", str(MOUNTS.pop())], capture_output=True)
        counts[outcome] += 1
        line = f"[{outcome:>19s}] {group}: {name}"
        if args.verbose or outcome in ("silently wrong", "crash", "refused valid input"):
            line += f"\n{'':22s}{detail[:300]}"
        print(line)
        if outcome in ("silently wrong", "crash", "refused valid input"):
            problems.append((group, name, outcome))
    tried = len(CASES) - counts["skipped"]
    print()
    print(f"cases tried: {tried} (of {len(CASES)}; {counts['skipped']} skipped)")
    print(f"clear errors: {counts['clear error']}")
    print(f"awkward inputs handled correctly: {counts['handled']}")
    print(f"silently wrong: {counts['silently wrong']}")
    print(f"refused valid input: {counts['refused valid input']}")
    print(f"crashes: {counts['crash']}")
    return 1 if problems else 0


MOUNTS: list = []
RESTORES: list = []
WORK = Path(tempfile.mkdtemp(prefix="ironmapping_battery_"))

if __name__ == "__main__":
    try:
        code = main()
    finally:
        shutil.rmtree(WORK, ignore_errors=True)
    raise SystemExit(code)
