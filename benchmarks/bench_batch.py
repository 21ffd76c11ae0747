"""`medseg batch` throughput (issue 29): cases per hour with 1 and 2 Ray workers, and the cost per case against
the single-case command line.

The cohort: N LiteMedSAM cases on the bundled abdominal CT (``Testing/Data/totalseg_ct_sm``), one box of S slices
each (shifted by a voxel per case). Measured in one run, on the same machine:

* ``cli``: ``medseg medsam`` as one process per case (how a cohort is run without ``batch``: each case starts
  Python, imports torch and loads the model);
* ``batch -w 1`` / ``batch -w 2``: ``medseg batch`` as one process (local Ray start, actors, model loaded once per
  worker, outputs, records, summary), wall time / N;
* ``in-process``: the same work per case with the model already loaded (read, segment, write), the floor;
* per-case overhead of a batch worker: the case's seconds inside the actor (its record: read, segment, write the
  outputs, hash them, write the record) against ``in-process``.

Run: ``PYTHONPATH=. python benchmarks/bench_batch.py [N] [S]`` (needs ``ray``; default N=6, S=6). The figures are
only comparable within one run; say how loaded the machine was (printed: load average).
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)
CT = os.path.join(REPO, "Testing", "Data", "totalseg_ct_sm", "ct.nii.gz")


def box(i: int, slices: int) -> str:
    return f"{20 + i},20,10,{100 + i},80,{10 + slices - 1}"


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 6
    s = int(sys.argv[2]) if len(sys.argv) > 2 else 6
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.setdefault("RAY_AUTH_MODE", "disabled")  # a local, loopback-only instance for the measurement
    py = [sys.executable, "-m", "medseg_backend"]
    print(f"{n} LiteMedSAM cases x {s} slices, CPU, {os.cpu_count()} cores, load average before "
          f"{os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        env["RAY_TMPDIR"] = tmp
        # 1. single-case CLI, one process per case
        t = []
        for i in range(n):
            t0 = time.perf_counter()
            subprocess.run(py + ["medsam", CT, "--box", box(i, s), "-o", os.path.join(tmp, f"cli{i}.nii.gz"),
                                 "--device", "cpu"], env=env, check=True, capture_output=True)
            t.append(time.perf_counter() - t0)
        cli = statistics.mean(t)
        # 2. in-process floor: model loaded once, then read + segment + write per case
        from medseg_backend.io import label_image, read_image, write_images
        from medseg_backend.medsam import MedSAMEngine
        from medseg_backend.cli.common import parse_box

        engine = MedSAMEngine("lite-medsam", device="cpu")
        t = []
        for i in range(n):
            t0 = time.perf_counter()
            img = read_image(CT)
            res = engine.segment_volume(img.array, [parse_box(box(i, s), 3)])
            write_images([(os.path.join(tmp, f"inproc{i}.nii.gz"), label_image(res.labels, img.geometry))])
            t.append(time.perf_counter() - t0)
        inproc = statistics.mean(t)
        # 3. batch with 1 and 2 workers
        manifest = os.path.join(tmp, "m.csv")
        with open(manifest, "w") as fh:
            fh.write("case_id,image,boxes\n" + "".join(f'c{i},{CT},"{box(i, s)}"\n' for i in range(n)))
        walls, inside = {}, {}
        for w in (1, 2):
            out = os.path.join(tmp, f"out{w}")
            t0 = time.perf_counter()
            subprocess.run(py + ["batch", manifest, "-o", out, "--workers", str(w), "--device", "cpu"], env=env,
                           check=True, capture_output=True)
            walls[w] = time.perf_counter() - t0
            recs = [json.load(open(os.path.join(out, "records", f"c{i}.json"))) for i in range(n)]
            inside[w] = statistics.mean(r["seconds"] for r in recs)
    print(f"{'how':28s} {'s/case':>7s} {'cases/h':>8s}")
    for name, per in (("cli (process per case)", cli), ("batch --workers 1", walls[1] / n),
                      ("batch --workers 2", walls[2] / n), ("in-process floor", inproc)):
        print(f"{name:28s} {per:7.2f} {3600 / per:8.0f}")
    print(f"2 workers / 1 worker throughput: {walls[1] / walls[2]:.2f}x")
    print(f"batch -w 1 per case vs the single-case CLI: {walls[1] / n / cli:.2f}x the time "
          f"({(walls[1] / n - cli) / cli * 100:+.0f} %)")
    print(f"per-case overhead inside a worker (record seconds {inside[1]:.2f} s vs in-process {inproc:.2f} s): "
          f"{(inside[1] - inproc) / inproc * 100:+.1f} %")
    print(f"fixed cost of a batch run (Ray start, actors, model load, summary): "
          f"{walls[1] - n * inside[1]:.1f} s with 1 worker")
    print(f"load average after {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
