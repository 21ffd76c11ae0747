"""Peak memory of a box run on a large volume (issue 24, item 11): memory is bounded by what the box needs.

A 512 x 512 x 2000 int16 CT-like volume (1.0 GiB of voxels, written here as a MetaImage file slice by slice) and a
3-slice box: ``medseg medsam`` (LiteMedSAM, CPU) runs in a child process, whose peak resident memory (the kernel's
``ru_maxrss`` of the child) is printed next to the volume's own size and next to a child that only imports the
backend and torch (the fixed cost). Target: peak under 1.5 GiB, i.e. the volume once plus the model, no
whole-volume float64 copy, no second copy of the volume while it is read or written.

Run: ``PYTHONPATH=. python benchmarks/bench_memory.py [--slices 2000] [--intensity auto|mr|...]`` (needs the
LiteMedSAM weights, as ``medseg demo``; about 1 GiB of free disk in the temporary folder).
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIB = float(1 << 30)


def write_volume(path: str, slices: int, size: int = 512) -> int:
    """A CT-like int16 volume (air -1000, body 0..60 HU with noise, a +120 HU block in the middle slices),
    written slice by slice so that this process never holds it; returns its size in bytes."""
    header = (f"ObjectType = Image\nNDims = 3\nBinaryData = True\nBinaryDataByteOrderMSB = False\n"
              f"CompressedData = False\nElementSpacing = 0.8 0.8 1\nDimSize = {size} {size} {slices}\n"
              f"ElementType = MET_SHORT\nElementDataFile = LOCAL\n")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    body = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (0.42 * size) ** 2
    block = (abs(yy - size / 2) < 60) & (abs(xx - size / 2) < 60)
    mid = slices // 2
    with open(path, "wb") as f:
        f.write(header.encode("ascii"))
        for k in range(slices):
            s = np.full((size, size), -1000, np.int16)
            s[body] = rng.integers(0, 60, int(body.sum()), dtype=np.int16)
            if abs(k - mid) <= 3:
                s[block] = 120
            f.write(s.tobytes())
    return slices * size * size * 2


def child_peak(argv) -> tuple:
    """Run ``argv`` in a fresh child process; (exit code, peak RSS in bytes of that child, seconds, stderr tail)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    proc = subprocess.run(argv, cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO), capture_output=True, text=True)
    dt = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if peak <= before:  # ru_maxrss of children is the maximum over all of them: run the largest last
        peak = before
    return proc.returncode, peak * 1024, dt, (proc.stderr or "").strip().splitlines()[-3:]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slices", type=int, default=2000)
    ap.add_argument("--intensity", default="auto")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="medseg-bench-memory-") as d:
        vol = os.path.join(d, "big.mha")
        nbytes = write_volume(vol, args.slices)
        mid = args.slices // 2
        # the fixed cost first (ru_maxrss of children is a running maximum)
        code, base, _, tail = child_peak([sys.executable, "-c", "import medseg_backend.medsam, torch"])
        assert code == 0, tail
        code, peak, dt, tail = child_peak([sys.executable, "-m", "medseg_backend.cli", "medsam", vol, "--box",
                                           f"196,196,{mid - 1},316,316,{mid + 1}", "-o", os.path.join(d, "seg.nrrd"),
                                           "--device", "cpu", "--intensity", args.intensity])
    print(f"volume 512 x 512 x {args.slices} int16: {nbytes / GIB:.2f} GiB; 3-slice box; intensity {args.intensity}")
    print(f"  import medseg_backend + torch only : peak RSS {base / GIB:.2f} GiB")
    print(f"  medseg medsam (exit {code}, {dt:.0f} s): peak RSS {peak / GIB:.2f} GiB = {peak / nbytes:.2f} x the "
          f"volume; {(peak - base) / nbytes:.2f} x the volume above the fixed cost")
    if code != 0:
        print("  " + "\n  ".join(tail))
    print(f"  target peak < 1.5 GiB: {'met' if code == 0 and peak < 1.5 * GIB else 'NOT met'}")
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
