"""The model service's parts that need no Ray (issue 28): the array codec (bounded decoding), the token file
(``medseg serve-token``, hashed, 0600), ``medseg serve``'s checks before Ray starts, the HTTP client against a server
that is not there (a lost connection fails the run with one line, the segmentation untouched), and the panel's
"Where models run" logic (``MedSegSlicerLib.model_server``)."""
from __future__ import annotations

import json
import os
import socket
import stat
import time

import numpy as np
import pytest

from medseg_backend.cli import main
from medseg_backend.errors import InputError
from medseg_backend.service import codec
from medseg_backend.service.client import ServiceClient
from medseg_backend.service.tokens import TokenStore
from MedSegSlicerLib import jobs, labelmaps, model_server
from medseg_backend.worker import client as worker_client
from MedSegSlicerScenarios import slab_box
from MedSegSlicerLib.segmenter import Segmenter


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------------- codec --
def test_codec_round_trips_arrays_and_crops_label_maps():
    rng = np.random.default_rng(0)
    labels = np.zeros((6, 40, 50), np.uint8)
    labels[2:4, 10:20, 30:35] = 1
    arrays = {"volume": rng.integers(-1000, 2000, (6, 40, 50)).astype(np.int16), "labels": labels,
              "prob": rng.random((3, 4)).astype(np.float32), "flag": np.array([True, False]), "empty": np.zeros((0, 3))}
    body = codec.pack(arrays, {"op": "segment_box", "params": {"boxes": [[1, 2, 3, 4, 5, 6]]}}, crop=("labels",))
    got, meta = codec.unpack(body, limit=10 ** 6)
    assert meta == {"op": "segment_box", "params": {"boxes": [[1, 2, 3, 4, 5, 6]]}}
    for name, a in arrays.items():
        assert got[name].dtype == a.dtype and got[name].shape == a.shape
        np.testing.assert_array_equal(got[name], a)
    assert len(codec.pack({"labels": labels}, crop=("labels",))) < len(codec.pack({"labels": labels})) // 2 + 200
    raw, _ = codec.unpack(codec.pack(arrays, compress=False))
    np.testing.assert_array_equal(raw["volume"], arrays["volume"])


def test_codec_refuses_bombs_pickles_and_broken_bodies_before_inflating():
    with pytest.raises(codec.UploadTooLarge, match="^Upload too large: 64 MB of image data, the server takes at most "
                                                   "1 MB"):
        codec.unpack(codec.pack({"volume": np.zeros((64, 1024, 1024), np.uint8)}), limit=2 ** 20)
    cropped = codec.pack({"labels": np.pad(np.ones((1, 1, 1), np.uint8), ((0, 63), (0, 1023), (0, 1023)))},
                         crop=("labels",))
    with pytest.raises(codec.UploadTooLarge):                  # a tiny box claiming a huge full shape
        codec.unpack(cropped, limit=2 ** 20)
    good = codec.pack({"a": np.arange(10)})
    header_len = int.from_bytes(good[4:8], "little")
    header = json.loads(good[8:8 + header_len])
    for change, match in ((lambda h: h["arrays"][0].update(dtype="|O"), "not a numeric array"),
                          (lambda h: h["arrays"][0].update(shape=[20]), "does not hold the 160 bytes its shape needs"),
                          (lambda h: h["arrays"][0].update(shape=[1] * 6), "not a numeric array"),
                          (lambda h: h["arrays"][0].update(encoding="pickle"), "unknown encoding")):
        h = json.loads(json.dumps(header))
        change(h)
        text = json.dumps(h).encode()
        with pytest.raises(InputError, match=match):
            codec.unpack(codec.MAGIC + len(text).to_bytes(4, "little") + text + good[8 + header_len:])
    for body in (b"", b"MSA1", b"MSA1\x05\x00\x00\x00{bad}", good[:-3], b"PK\x03\x04" + good[4:]):
        with pytest.raises(InputError, match="^Malformed upload"):
            codec.unpack(body)


# --------------------------------------------------------------------------------------------------- tokens --
def test_serve_token_add_list_revoke_stores_only_salted_hashes_in_a_private_file(tmp_path, capsys):
    path = tmp_path / "etc" / "tokens.json"
    assert main(["serve-token", "--tokens", str(path), "add", "alice"]) == 0
    token = capsys.readouterr().out.strip()
    assert len(token) >= 40 and stat.S_IMODE(os.stat(path).st_mode) == 0o600
    text = path.read_text()
    assert token not in text and "alice" in text
    store = TokenStore(str(path))
    assert store.user_for(token) == "alice" and store.user_for(token[:-1]) is None and store.user_for("") is None
    assert main(["serve-token", "--tokens", str(path), "add", "bob"]) == 0
    bob = capsys.readouterr().out.strip()
    assert store.user_for(bob) == "bob" and store.user_for(token) == "alice"      # the file is re-read on change
    assert main(["serve-token", "--tokens", str(path), "add", "alice"]) == 2        # one token per user
    assert capsys.readouterr().err.startswith("error: User 'alice' already has a token: revoke it first")
    assert main(["serve-token", "--tokens", str(path), "list"]) == 0
    assert [ln.split("\t")[0] for ln in capsys.readouterr().out.splitlines()] == ["alice", "bob"]
    assert main(["serve-token", "--tokens", str(path), "revoke", "alice"]) == 0
    assert store.user_for(token) is None and store.user_for(bob) == "bob"
    assert main(["serve-token", "--tokens", str(path), "add", "../root"]) == 2
    assert "is not valid" in capsys.readouterr().err
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and sorted(os.listdir(path.parent)) == ["tokens.json"]


def test_serve_refuses_bad_settings_before_starting_ray(tmp_path, capsys):
    path = tmp_path / "tokens.json"
    assert main(["serve", "--tokens", str(path)]) == 2
    assert capsys.readouterr().err.startswith(f"error: No token file at {path}: make one with")
    TokenStore(str(path)).add("alice")
    os.chmod(path, 0o644)
    assert main(["serve", "--tokens", str(path)]) == 2
    assert capsys.readouterr().err.strip() == (f"error: The token file {path} is open to other users (mode 644): "
                                               f"run 'chmod 600 {path}'.")
    os.chmod(path, 0o600)
    for argv, message in ((["--idle-minutes", "0"], "error: --idle-minutes 0.0: give a number above 0."),
                          (["--tls-cert", str(path)], "error: TLS needs both --tls-cert and --tls-key"),
                          (["--session-gpus", "-1"], "error: --session-gpus / --session-memory-mb: give 0 or more.")):
        assert main(["serve", "--tokens", str(path), *argv]) == 2
        assert capsys.readouterr().err.startswith(message)


# --------------------------------------------------------------------------------------------------- client --
def test_a_server_that_cannot_be_reached_fails_the_run_with_one_line_and_writes_nothing(ct_sample):
    ctx, volume, labels = ct_sample
    seg = ctx.add_segmentation("seg", volume)
    sid = labelmaps.write_mask(seg, labels == 5, volume, name="liver")
    before = labelmaps.segment_to_array(seg, sid, volume)
    url = f"http://127.0.0.1:{_closed_port()}"
    core = Segmenter(ctx, device="cpu", worker=ServiceClient(url, "some-token", timeout=5))
    core.start(core.prepare_medsam(volume, [slab_box((labels == 5).astype(np.uint8), 2)], segmentation_node=seg,
                                   segment_id=sid))
    t0 = time.monotonic()
    outcome = None
    while outcome is None and time.monotonic() - t0 < 30:
        _, _, outcome = jobs.poll_step(core.runner)
    assert outcome is not None and outcome.status == "failed"
    assert outcome.message.startswith(f"The model server at {url} cannot be reached (")
    assert outcome.message.endswith("nothing was written.") and "\n" not in outcome.message
    np.testing.assert_array_equal(labelmaps.segment_to_array(seg, sid, volume), before)


def test_encoding_before_the_box_is_not_asked_of_a_model_server(ct_sample):
    """Moving the pointer in a slice view starts encoding before the box on the local worker only: with a model server
    the effect's call returns None and sends nothing (the server's session encodes when the box comes)."""
    ctx, volume, labels = ct_sample
    client = ServiceClient(f"http://127.0.0.1:{_closed_port()}", "some-token", timeout=5)
    core = Segmenter(ctx, device="cpu", worker=client)
    try:
        assert core.start_encode_around(volume, "axial", 5) is None and core.encoding is None
        assert client._commands.empty() and client._thread is None      # nothing queued, no transfer started
    finally:
        client.shutdown()


def test_where_models_run_switches_between_runs_and_refuses_a_bad_server_whole(slicer_scene):
    core = Segmenter(slicer_scene, device="cpu")          # worker=True: where the panel says
    try:
        assert model_server.mode() == "local" and core.worker is worker_client.shared_client()
        with pytest.raises(InputError, match=r"^Server URL 'medseg\.example\.org' is not valid: give it as https://"):
            model_server.configure("server", "medseg.example.org", "t0k3n")
        with pytest.raises(InputError, match="^No token for the model server"):
            model_server.configure("server", "https://medseg.example.org", " ")
        assert model_server.mode() == "local"
        assert model_server.configure("server", "https://medseg.example.org/", "t0k3n") == \
            "Models run on the server https://medseg.example.org."
        assert isinstance(core.worker, ServiceClient) and core.worker.url == "https://medseg.example.org"
        first = core.worker
        model_server.configure("server", "https://medseg.example.org", "t0k3n")      # unchanged: same client
        assert core.worker is first
        settings = {model_server.SETTINGS_MODE: "server", model_server.SETTINGS_URL: "ftp://x",
                    model_server.SETTINGS_TOKEN: "t"}
        problem = model_server.from_settings(lambda key, default: settings.get(key, default))
        assert problem.startswith("Server URL 'ftp://x' is not valid") and model_server.mode() == "local"
        assert core.worker is worker_client.shared_client()
        check = model_server.start_check(f"http://127.0.0.1:{_closed_port()}", "t0k3n")    # returns at once
        for _ in range(600):
            if check.result is not None:
                break
            time.sleep(0.05)
        ok, text = check.result
        assert not ok and "cannot be reached" in text and "\n" not in text
    finally:
        model_server.configure("local")
        worker_client.shutdown_shared()


def test_server_mode_needs_neither_torch_nor_ray_in_slicer():
    """In server mode Slicer's process imports the client and the panel's logic, the Segmenter and the jobs: none of
    them pulls in torch or Ray (a workstation needs requests and numpy only)."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    code = ("import sys; from MedSegSlicerLib import model_server, segmenter, jobs; "
            "from medseg_backend.service import client, codec; "
            "model_server.configure('server', 'https://medseg.example.org', 'x'); "
            "print(sorted(m for m in ('torch', 'ray', 'fastapi') if m in sys.modules))")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(repo), str(repo / "MedSegSlicer")]))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_the_client_never_waits_on_the_network_in_the_callers_thread():
    """Slicer's main thread calls submit / poll / cancel: while the server holds the upload (it has received the
    request and not answered), each of them has already returned; the run's one failure line arrives by poll once
    the server answers."""
    import http.server
    import json
    import threading

    entered, release = threading.Event(), threading.Event()

    class Held(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            entered.set()
            release.wait(30)
            body = json.dumps({"detail": "No room for another session: try again in a minute."}).encode()
            self.send_response(503)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Held)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    client = ServiceClient(f"http://127.0.0.1:{server.server_address[1]}", "t0k3n", timeout=30)
    try:
        jid = client.submit("segment_box", {"boxes": [[1, 1, 0, 5, 5, 1]]}, {"volume": np.zeros((2, 8, 8), np.int16)},
                            {"volume": "held"})
        assert entered.wait(30), "the transfer thread never sent the upload"
        assert client.poll() == [] and not release.is_set()      # the server still holds it: nothing waited
        client.cancel(jid)                                       # queued, returns at once
        release.set()
        events = []
        for _ in range(600):
            events += client.poll()
            if events:
                break
            time.sleep(0.05)
        assert [e["event"] for e in events] == ["died"] and events[0]["message"].startswith("No room"), events
    finally:
        release.set()
        client.shutdown()
        server.shutdown()
