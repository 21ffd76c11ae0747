"""Cost of running the models in the worker process (issue 10), next to the in-process figures.

* volume hand-over: a 512x512x300 int16 CT from the client to the worker (written to the session folder in
  /dev/shm, opened memory-mapped by the worker, acknowledged) - target <= 0.5 s;
* first preview: LiteMedSAM on 3 slices of the bundled CT with nothing loaded yet (worker: start the process, import
  torch, load the model; in-process: import torch, load the model);
* re-prompt on cached slices: the box moved by 2 voxels, the same 10 slices again (embeddings cached) - end to end
  through the Slicer layer (prepare, hand-over of boxes only, run, result back) - target <= 100 ms per slice.

Run: ``PYTHONPATH=.:MedSegSlicer python benchmarks/bench_worker.py`` (needs slicer-core and the LiteMedSAM weights).
"""
from __future__ import annotations

import os
import statistics
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for p in (REPO, os.path.join(REPO, "MedSegSlicer")):
    if p not in sys.path:
        sys.path.insert(0, p)

from MedSegSlicerLib.core import MedSegCore  # noqa: E402
from MedSegSlicerLib.jobs import JobRunner, Request  # noqa: E402
from MedSegSlicerLib.scenarios import slab_box  # noqa: E402
from MedSegSlicerLib.scene import SceneContext  # noqa: E402
from MedSegSlicerLib.worker_client import WorkerClient  # noqa: E402

SAMPLE = os.path.join(REPO, "Testing", "Data", "totalseg_ct_sm")


def wait(runner: JobRunner):
    outcome = runner.wait(600)
    assert outcome is not None and outcome.ok, outcome.message if outcome else "timeout"
    return outcome


def handover(client: WorkerClient, repeats: int = 3):
    """Seconds from handing a new 512x512x300 int16 volume to the worker until it has it open and answered."""
    runner = JobRunner(client=client)
    runner.start(Request("sleep", {"seconds": 0.0}), label="warm-up")     # worker started and connected
    wait(runner)
    rng = np.random.default_rng(0)
    times = []
    for i in range(repeats):
        ct = rng.integers(-1000, 2000, size=(300, 512, 512), dtype=np.int16)
        t0 = time.perf_counter()
        runner.start(Request("sleep", {"seconds": 0.0}, arrays={"volume": ct}, keys={"volume": f"bench{i}"}),
                     label="hand-over")
        wait(runner)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def reprompt_and_first(core: MedSegCore, volume, labels, slices: int = 10):
    box = slab_box((labels == 5).astype(np.uint8), slices)
    first_box = slab_box((labels == 3).astype(np.uint8), 3)
    t0 = time.perf_counter()
    first = core.run(core.prepare_medsam(volume, [first_box], intensity="window:40,400"))
    first_seconds = time.perf_counter() - t0
    assert first.ok, first.message
    encode = core.run(core.prepare_medsam(volume, [box], intensity="window:40,400"))
    assert encode.ok, encode.message
    per_slice = []
    for shift in (1, 2, 3):
        moved = (box[0] + shift,) + box[1:3] + (box[3] + shift,) + box[4:]
        t0 = time.perf_counter()
        again = core.run(core.prepare_medsam(volume, [moved], intensity="window:40,400"))
        seconds = time.perf_counter() - t0
        assert again.ok and again.result.slices_encoded == 0, again.message
        per_slice.append(seconds / again.result.slices_run)
    return first_seconds, statistics.median(per_slice)


def main() -> None:
    import SimpleITK

    ctx = SceneContext.headless()
    volume = ctx.load_volume(os.path.join(SAMPLE, "ct.nii.gz"), "ct")
    labels = SimpleITK.GetArrayFromImage(SimpleITK.ReadImage(os.path.join(SAMPLE, "labels.nii.gz")))

    # in-process first (this process has not imported torch yet: a fair first-preview figure)
    local_first, local_reprompt = reprompt_and_first(MedSegCore(ctx, device="cpu", worker=False), volume, labels)
    client = WorkerClient()
    try:
        worker_first, worker_reprompt = reprompt_and_first(MedSegCore(ctx, device="cpu", worker=client), volume,
                                                           labels)
        hand, hand_all = handover(client)
    finally:
        client.shutdown()
    print(f"{'':44s}{'worker':>14s}{'in-process':>14s}")
    print(f"{'volume hand-over, 512x512x300 int16':44s}{hand:>12.3f} s{'0 (shared)':>14s}"
          f"   (runs: {', '.join(f'{t:.3f}' for t in hand_all)} s; target <= 0.5 s)")
    print(f"{'first preview, LiteMedSAM 3 slices, cold':44s}{worker_first:>12.2f} s{local_first:>12.2f} s")
    print(f"{'re-prompt on cached slices (10 slices)':44s}{1000 * worker_reprompt:>11.1f} ms"
          f"{1000 * local_reprompt:>11.1f} ms   per slice (target <= 100 ms)")


if __name__ == "__main__":
    main()
