"""End-to-end command-line benchmark: ``ironmapping fit`` on a 256x256x40 volume with 12 echoes.

    python Testing/benchmarks/benchmark_cli.py [--shape 40 256 256] [--keep DIR]

Writes the phantom as one int16 NIfTI per echo with dcm2niix-style JSON sidecars (as scanners'
data arrive), a label map and its names, then runs the real command line in a fresh Python
process twice: without figures, and with figures. Prints wall-clock seconds (including Python
start-up, reading and writing) and the per-stage times from each run's run.json.

Targets (issue 6): fit end to end < 10 s without figures; report generation < 10 s more.
The machine may be shared: run it twice and quote the better figure with a note.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from IronMapping import maps_io  # noqa: E402
from IronMapping.phantom import make_phantom  # noqa: E402


def write_inputs(folder: Path, shape) -> tuple[Path, Path, Path]:
    ph = make_phantom("transfusional", shape=tuple(shape), snr=50.0, seed=0)
    echoes = folder / "echoes"
    echoes.mkdir(parents=True)
    signal = np.clip(np.rint(ph.image.signal), 0, 32767).astype(np.int16)
    for n, te in enumerate(ph.image.echo_times_ms, 1):
        maps_io.write_volume(echoes / f"gre_e{n}.nii", signal[n - 1], ph.image.ijk_to_ras,
                             sidecar=False, compress=False)
        (echoes / f"gre_e{n}.json").write_text(json.dumps(
            {"EchoTime": te / 1000.0, "MagneticFieldStrength": 1.5, "EchoNumber": n,
             "Manufacturer": "Synthetic", "ImageType": ["ORIGINAL", "PRIMARY", "M"]}))
    labels = maps_io.write_volume(folder / "labels.nrrd", ph.labels, ph.image.ijk_to_ras,
                                  sidecar=False)
    names = folder / "labels.csv"
    names.write_text("".join(f"{v},{n}\n" for v, n in ph.label_names.items()))
    return echoes, labels, names


def run_cli(args) -> float:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "IronMapping", *map(str, args)], env=env,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"ironmapping failed ({done.returncode}):\n{done.stderr}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, nargs=3, default=(40, 256, 256),
                        metavar=("K", "J", "I"))
    parser.add_argument("--keep", type=Path, default=None,
                        help="write inputs and outputs here instead of a temporary folder")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        echoes, labels, names = write_inputs(work / "input", args.shape)
        n_vox = int(np.prod(args.shape))
        print(f"input: {args.shape[2]}x{args.shape[1]}x{args.shape[0]} voxels (i x j x k), "
              f"12 echoes, int16 NIfTI + sidecars; written in {time.perf_counter() - t0:.1f} s")
        print(f"cores: {os.cpu_count()}; python {sys.version.split()[0]}")
        common = ["fit", echoes, "--labels", labels, "--label-names", names, "-q"]
        rows = []
        for title, extra, out in (("no figures", ["--no-figures"], "out_nofig"),
                                  ("with figures", [], "out_fig")):
            wall = run_cli([*common, "--out", work / out, *extra])
            timings = json.loads((work / out / "run.json").read_text())["timings_s"]
            rows.append((title, wall, timings))
        print(f"\n{'run':<14s}{'wall (s)':>10s}  stages from run.json (s)")
        for title, wall, timings in rows:
            stages = ", ".join(f"{k} {v:.2f}" for k, v in timings.items())
            print(f"{title:<14s}{wall:>10.2f}  {stages}")
        fit_wall = rows[0][1]
        report_extra = rows[1][2].get("report", float("nan")) - rows[0][2].get("report", 0.0)
        print(f"\nfit end to end without figures: {fit_wall:.2f} s (target < 10 s) "
              f"{'MET' if fit_wall < 10 else 'NOT MET'}; fit stage {n_vox / rows[0][2]['fit'] / 1e6:.2f} "
              "M voxels/s (all voxels of the grid, background included)")
        print(f"report with figures: {rows[1][2].get('report', float('nan')):.2f} s "
              f"({report_extra:+.2f} s over the tables-only report; target < 10 s) "
              f"{'MET' if rows[1][2].get('report', 99) < 10 else 'NOT MET'}")


if __name__ == "__main__":
    main()
