"""Peak memory of the default fit as a user sees it: the resident set size of the process (Linux /proc).

    python Testing/benchmarks/benchmark_memory.py            # 256 x 256 x 60 x 16 echoes, float32
    python Testing/benchmarks/benchmark_memory.py --quick    # 128 x 128 x 20

The multi-echo volume is written to a temporary .npy file first and read back by a fresh Python
process, so that its RSS holds the imports, the input array and the fit, nothing else. Prints the
peak RSS above the imports, as a multiple of the input array, with the noise given and estimated.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]

CHILD = r"""
import json, sys, warnings
import numpy as np
sys.path.insert(0, sys.argv[3])
from IronMapping import relaxometry
warnings.simplefilter("ignore")

def rss():
    # the process's own high-water mark (VmHWM; ru_maxrss would carry the parent's over exec)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
imports = rss()
signal = np.load(sys.argv[1])
loaded = rss()
te = 1.0 + 1.2 * np.arange(signal.shape[0])
kwargs = {} if sys.argv[2] == "estimated" else {"noise_sigma": 20.0, "coils": 1}
result = relaxometry.fit(signal, te, **kwargs)
peak = rss()
arrays = [result.r2star, result.t2star, result.s0, result.quality, result.uncertainty, result.status,
          result.echoes_used, result.noise_sigma_map, *result.maps.values()]
maps = sum(a.nbytes for a in arrays if a is not None) / 2**20
print(json.dumps({"imports": imports, "loaded": loaded, "peak": peak, "input": signal.nbytes / 2**20,
                  "maps": maps}))
"""


def make_volume(path, shape, seed=0):
    from IronMapping.phantom import noncentral_chi

    rng = np.random.default_rng(seed)
    te = 1.0 + 1.2 * np.arange(shape[0])
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=shape)
    for k in range(shape[1]):
        r2 = np.exp(rng.uniform(np.log(25), np.log(800), shape[2:]))
        amplitude = 1000.0 * np.exp(-np.multiply.outer(te / 1000.0, r2))
        amplitude[:, : shape[2] // 8] = 0.0                  # some air at the edge
        out[:, k] = noncentral_chi(amplitude, 20.0, 1, rng)
    out.flush()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    shape = (16, 20, 128, 128) if args.quick else (16, 60, 256, 256)
    sys.path.insert(0, str(ROOT))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "echoes.npy"
        make_volume(path, shape)
        print(f"Peak RSS of the default fit, {shape[1:]} voxels x {shape[0]} echoes (float32)")
        for noise in ("given", "estimated"):
            done = subprocess.run([sys.executable, "-c", CHILD, str(path), noise, str(ROOT)],
                                  capture_output=True, text=True, check=True)
            r = json.loads(done.stdout.strip().splitlines()[-1])
            fit_part = r["peak"] - r["loaded"]
            total = r["peak"] - r["imports"]
            print(f"  noise {noise:9s}: imports {r['imports']:.0f} MiB, input {r['input']:.0f} MiB, peak "
                  f"{r['peak']:.0f} MiB: {total / r['input']:.2f} x the input above the imports "
                  f"(the fit adds {fit_part:.0f} MiB = {fit_part / r['input']:.2f} x; the maps it returns "
                  f"are {r['maps']:.0f} MiB = {r['maps'] / r['input']:.2f} x)")


if __name__ == "__main__":
    main()
