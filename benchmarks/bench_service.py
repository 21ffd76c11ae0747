"""The department model service (issue 28) next to the local worker, in the same run, as ratios.

* re-prompt on cached slices: the box moved by a few voxels, the same 10 slices of the bundled CT again (embeddings
  cached), end to end through the Slicer layer - local worker vs the service on loopback (target <= 100 ms per slice
  through the service);
* volume upload: a 512x512x300 int16 CT (the bundled CT resampled, with 10 HU of noise so that it compresses like a
  real scan) - the local worker's hand-over vs opening a session on the service, raw (the client's default on
  loopback) and zlib (its default over a network) (target <= 2 s on loopback);
* throughput: two LiteMedSAM runs (every slice encoded: a 1 MB embedding cache) one after the other in one session
  vs at the same time in two sessions (two session workers, one CPU each).

The local worker and the session workers use the same number of torch threads (``--threads``, default 1), so the
ratios compare the paths, not the thread counts.

Run: ``nice -n 10 env PYTHONPATH=.:MedSegSlicer python benchmarks/bench_service.py [--threads N] [--device cpu]``
(needs slicer-core, ``ray[serve]`` and the LiteMedSAM weights).
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
import threading
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for p in (REPO, os.path.join(REPO, "MedSegSlicer"), os.path.join(REPO, "MedSegSlicer", "Testing", "Python")):
    if p not in sys.path:
        sys.path.insert(0, p)

SAMPLE = os.path.join(REPO, "Testing", "Data", "totalseg_ct_sm")


def wait(runner):
    outcome = runner.wait(900)
    assert outcome is not None and outcome.ok, outcome.message if outcome else "timeout"
    return outcome


def reprompt(core, volume, box, shift: int, device: str):
    moved = (box[0] + shift,) + box[1:3] + (box[3] + shift,) + box[4:]
    t0 = time.perf_counter()
    again = core.run(core.prepare_medsam(volume, [moved], intensity="window:40,400"))
    seconds = time.perf_counter() - t0
    assert again.ok and again.result.slices_encoded == 0, again.message
    return seconds / again.result.slices_run, seconds - float(again.result.seconds)


def big_ct() -> np.ndarray:
    import SimpleITK
    from scipy.ndimage import zoom

    small = SimpleITK.GetArrayFromImage(SimpleITK.ReadImage(os.path.join(SAMPLE, "ct.nii.gz"))).astype(np.float32)
    big = zoom(small, (300 / small.shape[0], 512 / small.shape[1], 512 / small.shape[2]), order=1)
    big += np.random.default_rng(0).normal(0, 10, big.shape).astype(np.float32)
    return np.clip(big, -1024, 3071).astype(np.int16)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the local worker and each session")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--gpus-per-session", type=float, default=0.0)
    args = parser.parse_args()
    os.environ["MEDSEG_NUM_THREADS"] = str(args.threads)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")

    import ray
    import SimpleITK
    from ray import serve

    from medseg_backend.service import app as service_app
    from medseg_backend.service.client import ServiceClient
    from medseg_backend.service.tokens import TokenStore
    from MedSegSlicerLib.jobs import JobRunner, Request
    from MedSegSlicerScenarios import slab_box
    from MedSegSlicerLib.scene import SceneContext
    from MedSegSlicerLib.segmenter import Segmenter
    from medseg_backend.worker.client import WorkerClient

    ctx = SceneContext.headless()
    volume = ctx.load_volume(os.path.join(SAMPLE, "ct.nii.gz"), "ct")
    labels = SimpleITK.GetArrayFromImage(SimpleITK.ReadImage(os.path.join(SAMPLE, "labels.nii.gz")))
    tmp = tempfile.mkdtemp(prefix="bench-service-")
    tokens = TokenStore(os.path.join(tmp, "tokens.json"))
    token = tokens.add("bench")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ray.init(num_cpus=2 * args.threads, include_dashboard=False, logging_level="ERROR",
             _temp_dir=os.path.join(tmp, "ray"))
    url = f"http://127.0.0.1:{port}"
    service_app.start(service_app.make_config(tokens=tokens.path, session_cpus=float(args.threads),
                                              session_gpus=args.gpus_per_session, max_upload_bytes=2 ** 30),
                      port=port, replicas=2)
    worker = WorkerClient()
    remote = ServiceClient(url, token)
    try:
        # ---- re-prompt on cached slices, alternating the two paths (best and median of 5)
        box = slab_box((labels == 5).astype(np.uint8), 10)
        cores = {"worker": Segmenter(ctx, device=args.device, worker=worker),
                 "service": Segmenter(ctx, device=args.device, worker=remote)}
        for core in cores.values():
            assert core.run(core.prepare_medsam(volume, [box], intensity="window:40,400")).ok
        times = {name: [] for name in cores}
        extra = {name: [] for name in cores}
        for shift in range(1, 6):
            for name, core in cores.items():
                per_slice, outside = reprompt(core, volume, box, shift, args.device)
                times[name].append(per_slice)
                extra[name].append(outside)

        w, s = times["worker"], times["service"]
        print(f"re-prompt on cached slices (10 slices), per slice: service {1000 * min(s):.1f} ms, local worker "
              f"{1000 * min(w):.1f} ms (best of 5; medians {1000 * statistics.median(s):.0f} / "
              f"{1000 * statistics.median(w):.0f} ms); ratio {min(s) / min(w):.2f} (target <= 100 ms per slice)",
              flush=True)
        print(f"  of which outside the model, per run (median): service {1000 * statistics.median(extra['service']):.0f}"
              f" ms, local worker {1000 * statistics.median(extra['worker']):.0f} ms (prepare, hand-over, polling, "
              "result)", flush=True)
        remote.shutdown()                 # its session's CPU share goes back to the pool

        # ---- upload of a 512x512x300 CT
        ct = big_ct()
        upload = {}
        for name, client in (("worker", worker), ("service zlib", ServiceClient(url, token, compress=True, max_sessions=1)),
                             ("service raw", ServiceClient(url, token, compress=False, max_sessions=1))):
            runs = []
            for i in range(3):
                ct_i = ct.copy()
                ct_i[0, 0, i] += 1            # a new content each time
                runner = JobRunner(client=client)
                t0 = time.perf_counter()
                runner.start(Request("sleep", {"seconds": 0.0}, arrays={"volume": ct_i},
                                     keys={"volume": f"bench-{name.replace(' ', '-')}-{i}"}), label="upload")
                wait(runner)
                runs.append(time.perf_counter() - t0)
            upload[name] = runs
            print(f"upload 512x512x300 int16 CT, {name:13s}: {min(runs):.2f} s (runs "
                  f"{', '.join(f'{t:.2f}' for t in runs)}); ratio to the local worker "
                  f"{min(runs) / min(upload['worker']):.1f}", flush=True)
            if client is not worker:
                client.shutdown()

        # ---- throughput: 2 runs in one session vs 2 sessions at once (every slice encoded)
        from medseg_backend.service import codec  # noqa: F401 - the same client path as above

        serve.delete(service_app.APP_NAME)
        service_app.close_all_sessions()
        service_app.start(service_app.make_config(tokens=tokens.path, session_cpus=float(args.threads),
                                                  session_gpus=args.gpus_per_session, cache_mb=1,
                                                  max_upload_bytes=2 ** 30), port=port, replicas=2)
        whole = slab_box((labels > 0).astype(np.uint8), 100)
        clients = [ServiceClient(url, token), ServiceClient(url, token)]
        runs = [Segmenter(ctx, device=args.device, worker=c) for c in clients]
        for core in runs:                 # sessions opened, model loaded
            assert core.run(core.prepare_medsam(volume, [slab_box((labels == 3).astype(np.uint8), 1)])).ok
        t0 = time.perf_counter()
        for _ in range(2):
            out = runs[0].run(runs[0].prepare_medsam(volume, [whole], intensity="window:40,400"))
            assert out.ok, out.message
        one = time.perf_counter() - t0
        slices = out.result.slices_run
        done = []
        t0 = time.perf_counter()
        threads = [threading.Thread(target=lambda c=c: done.append(c.run(c.prepare_medsam(
            volume, [whole], intensity="window:40,400")).ok)) for c in runs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        two = time.perf_counter() - t0
        assert done == [True, True]
        for c in clients:
            c.shutdown()
    finally:
        worker.shutdown()
        remote.shutdown()
        service_app.close_all_sessions()
        serve.shutdown()
        ray.shutdown()

    print(f"device {args.device}, {args.threads} torch thread(s) per worker / session")
    print(f"throughput, 2 runs of {slices} slices (all encoded): one session {one:.1f} s, two sessions at once "
          f"{two:.1f} s -> {one / two:.2f}x")


if __name__ == "__main__":
    main()
