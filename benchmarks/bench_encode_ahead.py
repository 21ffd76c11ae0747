"""Encode ahead of the click (issue 15, item 1), replaying the MedSAM box effect's calls through the worker.

The effect sends ``core.prepare_encode(prepared)`` when the box is placed or moved (slices encoded centre slice
first, in the worker); Preview cancels what is left of it and runs. Two runs on a 20-slice box of the bundled CT
(left kidney), each with a fresh worker:

* head start: the box placed ``--head-start`` seconds (default 20) before Preview -> seconds from Preview to the
  complete result (target <= 2 s on the 2-core CPU);
* no head start: Preview at once -> seconds until the first preview slice reaches the client (the progressive
  preview: the worker sends each finished slice, the middle one first, encoded on its own; target <= 1.5 s) and
  until complete.

* encode before the box (issue 27 item 4): the volume shown with the box's middle slice in view
  (``Segmenter.start_encode_around``) -> seconds from showing it until every slice of the box is encoded (the
  worker encodes nearest first), then Preview -> seconds until complete.

Each encoder runtime of ``--runtimes`` (default ``torch,openvino``; the worker's ``MEDSEG_RUNTIME``) is measured in
turn, the runs alternating ``--repeats`` times (medians shown), so a loaded machine slows them alike.

Run: ``PYTHONPATH=.:MedSegSlicer python benchmarks/bench_encode_ahead.py [--head-start 20] [--slices 20]
[--runtimes torch,openvino] [--repeats 1]``.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for p in (REPO, os.path.join(REPO, "MedSegSlicer"), os.path.join(REPO, "MedSegSlicer", "Testing", "Python")):
    if p not in sys.path:
        sys.path.insert(0, p)

from MedSegSlicerLib.segmenter import Segmenter  # noqa: E402
from MedSegSlicerLib.jobs import poll_step  # noqa: E402
from MedSegSlicerScenarios import slab_box  # noqa: E402
from MedSegSlicerLib.scene import SceneContext  # noqa: E402
from medseg_backend.worker.client import WorkerClient  # noqa: E402

SAMPLE = os.path.join(REPO, "Testing", "Data", "totalseg_ct_sm")


def poll_until(runner, stop, tick=0.02, timeout=900.0):
    """Poll like the effect's timer until ``stop(fraction, outcome)``; returns (seconds, outcome)."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        fraction, _message, outcome = poll_step(runner)
        if stop(fraction, outcome):
            return time.perf_counter() - t0, outcome
        time.sleep(tick)
    raise TimeoutError("no result")


def warm(core, volume, box):
    """Start the worker and load the model (the user has previewed something before), on another box."""
    prepared = core.prepare_medsam(volume, [box], intensity="window:40,400")
    outcome = core.run(prepared)
    assert outcome.ok, outcome.message


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--head-start", type=float, default=20.0)
    ap.add_argument("--slices", type=int, default=20)
    ap.add_argument("--runtimes", default="torch,openvino")
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    import SimpleITK as sitk

    ctx = SceneContext.headless()
    volume = ctx.load_volume(os.path.join(SAMPLE, "ct.nii.gz"), "ct")
    labels = sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(SAMPLE, "labels.nii.gz")))
    box = slab_box((labels == 3).astype(np.uint8), args.slices)
    other = slab_box((labels == 1).astype(np.uint8), 1)          # a spleen slice, to warm up the model
    rows, before = {}, {}
    for _ in range(args.repeats):
        for runtime in args.runtimes.split(","):
            for head_start in (args.head_start, 0.0):
                rows.setdefault((runtime, head_start), []).append(
                    one_run(ctx, volume, box, other, runtime, head_start, args.slices))
            before.setdefault(runtime, []).append(before_the_box(ctx, volume, box, other, runtime))
    print(f"LiteMedSAM, {args.slices}-slice box (left kidney, bundled CT), CPU, through the worker"
          f" (medians of {args.repeats} alternating run(s))")
    print("| runtime | head start (s) | slices encoded ahead | first preview slice shown (s) | preview complete (s) "
          "| slices run |")
    print("|---|---|---|---|---|---|")
    for (runtime, head_start), runs in rows.items():
        ahead, first, total, run = (float(np.median([r[i] for r in runs])) for i in range(4))
        print(f"| {runs[-1][4]} | {head_start:.0f} | {ahead:.0f} | {first:.2f} | {total:.2f} | {run:.0f} |")
    print("\nEncode before the box: the volume shown with the box's middle slice in view, nothing drawn yet")
    print("| runtime | volume shown -> box's slices all encoded (s) | then Preview complete (s) | slices encoded by the "
          "Preview |")
    print("|---|---|---|---|")
    for runtime, runs in before.items():
        encoded, preview, left = (float(np.median([r[i] for r in runs])) for i in range(3))
        print(f"| {runs[-1][3]} | {encoded:.2f} | {preview:.2f} | {left:.0f} |")
    return 0


def before_the_box(ctx, volume, box, other, runtime: str):
    """One fresh worker on ``runtime``: warm-up run, then the volume shown at the box's middle slice; the box is
    drawn (Preview) when the worker has encoded all of its slices."""
    from medseg_backend.medsam.engine import nearest_first

    os.environ["MEDSEG_RUNTIME"] = runtime
    client = WorkerClient()
    core = Segmenter(ctx, device="cpu", worker=client)
    try:
        warm(core, volume, other)
        mid = (box[2] + box[5]) // 2
        order = nearest_first(mid, 0, int(volume.GetImageData().GetDimensions()[2]) - 1)
        needed = 1 + max(order.index(k) for k in range(box[2], box[5] + 1))
        t0 = time.perf_counter()
        enc = core.start_encode_around(volume, "axial", mid, intensity="window:40,400")   # the volume is shown
        while enc.update() == "running" and (not enc.message.startswith("encoded ")
                                             or int(enc.message.split()[1].split("/")[0]) < needed):
            time.sleep(0.02)
        encoded = time.perf_counter() - t0
        assert enc.state in ("running", "done"), enc.message
        t1 = time.perf_counter()
        outcome = core.run(core.prepare_medsam(volume, [box], intensity="window:40,400"))   # pre-empts the rest
        assert outcome.ok, outcome.message
        return (encoded, time.perf_counter() - t1, int(outcome.result.slices_encoded),
                getattr(outcome.result, "runtime", None) or runtime)
    finally:
        client.shutdown()


def one_run(ctx, volume, box, other, runtime: str, head_start: float, n_slices: int):
    """One fresh worker on ``runtime``: warm-up run, then the box (placed ``head_start`` s before Preview)."""
    os.environ["MEDSEG_RUNTIME"] = runtime          # the worker inherits it
    client = WorkerClient()
    core = Segmenter(ctx, device="cpu", worker=client)
    try:
        warm(core, volume, other)
        prepared = core.prepare_medsam(volume, [box], intensity="window:40,400")
        if head_start > 0:
            core.start(core.prepare_encode(prepared))          # the box is placed
            t_placed = time.perf_counter()
            while core.runner.running and time.perf_counter() - t_placed < head_start:
                poll_step(core.runner)                        # the effect's timer
                time.sleep(0.05)
            time.sleep(max(0.0, head_start - (time.perf_counter() - t_placed)))
            if core.runner.running:                          # Preview pre-empts what is left
                core.runner.cancel()
                poll_until(core.runner, lambda f, o: o is not None)
        t0 = time.perf_counter()
        core.start(prepared)                                  # Preview
        shown = []                                            # progressive preview: slices the effect can show
        first, _ = poll_until(core.runner, lambda f, o: bool(shown.extend(core.runner.partials()) or shown)
                              or o is not None)
        _, outcome = poll_until(core.runner, lambda f, o: o is not None)
        total = time.perf_counter() - t0
        assert outcome.ok, outcome.message
        encoded_ahead = n_slices - int(outcome.result.slices_encoded)
        return (encoded_ahead, first, total, int(outcome.result.slices_run),
                getattr(outcome.result, "runtime", None) or runtime)
    finally:
        client.shutdown()


if __name__ == "__main__":
    sys.exit(main())
