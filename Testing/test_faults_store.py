"""Fault catalogue, weights store and example libraries: checkpoints (wrong model, truncated, a flipped byte,
an altered record, a malicious pickle), caches (unwritable, corrupt state), and really concurrent processes
fetching / importing / deleting one model against the loopback HTTP server (several trials each)."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pickle

import numpy as np
import pytest

from faults_util import (blob_2d, blob_3d, error_line, lite_file, run_cli, snapshot, start_python,
                         universeg_state_bytes, write_image)
from httpserver_util import LocalHTTPServer, Resource
from medseg_backend.weights import hashes, store
from medseg_backend.weights import state as weights_state
from medseg_backend.errors import WeightsError

UNIVERSEG = "universeg-v1"
FNAME = "universeg_v1_nf64_ss64_STA.pt"
ROOT = os.geteuid() == 0 if hasattr(os, "geteuid") else False


@pytest.fixture(scope="module")
def useg_bytes():
    return universeg_state_bytes(0)


@pytest.fixture(scope="module")
def useg_other_bytes():
    return universeg_state_bytes(1)


@pytest.fixture
def useg_file(tmp_path, useg_bytes):
    p = tmp_path / "src" / FNAME
    p.parent.mkdir()
    p.write_bytes(useg_bytes)
    return p


def _home():
    return store.cache_dir()


# ------------------------------------------------------------------------------------------------ checkpoints --
def test_flipped_byte_in_cached_weights_refused_at_load(useg_file):
    path = store.import_weights(UNIVERSEG, useg_file, accept_licence=True)
    assert store.resolve_weights(UNIVERSEG) == path
    data = bytearray(path.read_bytes())
    data[len(data) // 2: len(data) // 2 + 4096] = bytes(b ^ 0xFF for b in data[len(data) // 2: len(data) // 2 + 4096])
    path.write_bytes(bytes(data))  # same size, new mtime
    with pytest.raises(WeightsError, match=r"damaged or were altered .*medseg models delete universeg-v1"):
        store.resolve_weights(UNIVERSEG)


def test_altered_record_refused_at_load(useg_file):
    store.import_weights(UNIVERSEG, useg_file, accept_licence=True)
    store.resolve_weights(UNIVERSEG)  # verified and remembered
    state_path = _home() / "state.json"
    state = json.loads(state_path.read_text(encoding="utf-8"))
    state["files"][UNIVERSEG]["sha256"] = "0" * 64
    state_path.write_text(json.dumps(state))
    with pytest.raises(WeightsError, match="damaged or were altered"):
        store.resolve_weights(UNIVERSEG)


def test_hash_checked_once_per_process_until_the_file_changes(useg_file, monkeypatch):
    path = store.import_weights(UNIVERSEG, useg_file, accept_licence=True)
    calls = []
    real = hashes.sha256_file
    monkeypatch.setattr(hashes, "sha256_file", lambda p, *a, **k: calls.append(p) or real(p, *a, **k))
    for _ in range(3):
        store.resolve_weights(UNIVERSEG)
    assert len(calls) == 1
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10 ** 9))  # touched: checked again
    store.resolve_weights(UNIVERSEG)
    assert len(calls) == 2


def test_official_package_file_hash_checked_once_per_process(monkeypatch):
    monkeypatch.setattr(hashes, "_VERIFIED_HERE", {})
    calls = []
    real = hashes.sha256_file
    monkeypatch.setattr(hashes, "sha256_file", lambda p, *a, **k: calls.append(p) or real(p, *a, **k))
    for _ in range(2):
        assert store.resolve_weights("lite-medsam") == lite_file()
    assert calls == [lite_file()]
    assert hashes._VERIFIED_HERE[str(lite_file())][-1] == store.ENTRIES["lite-medsam"].sha256
    assert not weights_state.read_state()["verified"]  # nothing about it is written for other processes to trust


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ['MEDSEG_HOME']}/PWNED",))


CKPT_CASES = ["wrong model", "truncated", "malicious pickle", "not a checkpoint", "empty file"]


@pytest.mark.parametrize("kind", CKPT_CASES)
def test_bad_checkpoint_with_weights_option(capsys, tmp_path, kind, useg_bytes):
    img = write_image(tmp_path / "i.png", blob_2d())
    ck = tmp_path / "ck.pth"
    if kind == "wrong model":
        ck.write_bytes(useg_bytes)
        words = "not a LiteMedSAM checkpoint: it looks like a UniverSeg v1 checkpoint"
    elif kind == "truncated":
        ck.write_bytes(lite_file().read_bytes()[:200_000])
        words = "Cannot read"
    elif kind == "malicious pickle":
        ck.write_bytes(pickle.dumps({"model": _Evil()}))
        words = "Cannot read"
    elif kind == "not a checkpoint":
        ck.write_text("hello")
        words = "Cannot read"
    else:
        ck.write_bytes(b"")
        words = "Cannot read"
    before = snapshot(tmp_path)
    code, _, err = run_cli(capsys, "medsam", img, "--box", "8,8,24,24", "--weights", ck, "-o", tmp_path / "s.png",
                           "--device", "cpu")
    assert code == 2
    line = error_line(err)
    assert words in line
    reason = line.split("(", 1)[1].split(")")[0] if "(" in line else ""
    assert not reason or reason.endswith("...") or len(reason) < 100  # never cut mid-word
    assert snapshot(tmp_path) == before
    assert not (_home() / "PWNED").exists()


# ----------------------------------------------------------------------------------------------------- caches --
def test_corrupt_state_file_warns_and_still_works(capsys, useg_file):
    store.import_weights(UNIVERSEG, useg_file, accept_licence=True)
    (_home() / "state.json").write_text("{not json")
    code, out, err = run_cli(capsys, "models", "list")
    assert code == 0 and "state file" in err and "unreadable" in err


def test_unwritable_cache_clear_error(capsys, tmp_path, monkeypatch, useg_file):
    if ROOT:
        monkeypatch.setenv("MEDSEG_HOME", "/proc/self/medseg")
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        monkeypatch.setenv("MEDSEG_HOME", str(ro / "medseg"))
    code, _, err = run_cli(capsys, "models", "import", UNIVERSEG, useg_file, "--accept-licence")
    assert code == 2 and "MEDSEG_HOME" in error_line(err)


def test_library_collection_unwritable_before_reading(capsys, tmp_path, monkeypatch):
    lib = tmp_path / "lib"
    code, _, err = run_cli(capsys, "library", "export", lib, "--examples",
                           f"{write_image(tmp_path / 'e.nrrd', blob_2d())}:"
                           f"{write_image(tmp_path / 'l.nrrd', (blob_2d() > 100).astype(np.uint8))}",
                           "--structure", "blob")
    assert code == 0, err
    monkeypatch.setenv("MEDSEG_HOME", "/proc/self/medseg" if ROOT else str(tmp_path))
    if not ROOT:
        (tmp_path / "libraries").mkdir()
        (tmp_path / "libraries").chmod(0o555)
    code, _, err = run_cli(capsys, "library", "import", lib)
    assert code == 2
    line = error_line(err)
    assert "not writable" in line or "Cannot create" in line


def test_library_export_into_unwritable_folder(capsys, tmp_path):
    parent = "/proc/self" if ROOT else str(tmp_path / "ro")
    if not ROOT:
        os.mkdir(parent)
        os.chmod(parent, 0o555)
    code, _, err = run_cli(capsys, "library", "export", os.path.join(parent, "lib"), "--examples",
                           f"{write_image(tmp_path / 'e.nrrd', blob_2d())}:"
                           f"{write_image(tmp_path / 'l.nrrd', (blob_2d() > 100).astype(np.uint8))}",
                           "--structure", "blob")
    assert code == 2 and "not writable" in error_line(err)


def test_library_folders_follow_umask(capsys, tmp_path):
    old = os.umask(0o022)
    try:
        code, _, err = run_cli(capsys, "library", "export", tmp_path / "lib", "--examples",
                               f"{write_image(tmp_path / 'e.nrrd', blob_2d())}:"
                               f"{write_image(tmp_path / 'l.nrrd', (blob_2d() > 100).astype(np.uint8))}",
                               "--structure", "blob")
    finally:
        os.umask(old)
    assert code == 0, err
    for d in (tmp_path / "lib", tmp_path / "lib" / "images"):
        assert d.stat().st_mode & 0o777 == 0o755, d


# ------------------------------------------------------------------------------------------------ concurrency --
DRIVER = """
import dataclasses, sys
from medseg_backend.weights import store
from medseg_backend.cli import main
url = sys.argv[1]
if url != "-":
    store.ENTRIES["universeg-v1"] = dataclasses.replace(store.ENTRIES["universeg-v1"], url=url)
sys.exit(main(sys.argv[2:]))
"""


def _run_all(procs):
    results = []
    for p in procs:
        out, err = p.communicate(timeout=180)
        results.append((p.returncode, out, err))
    return results


def _check_store(expected_bytes):
    home = _home()
    installed = home / "weights" / FNAME
    assert installed.read_bytes() == expected_bytes
    state = json.loads((home / "state.json").read_text(encoding="utf-8"))
    assert state["files"][UNIVERSEG]["sha256"] == hashlib.sha256(expected_bytes).hexdigest()
    assert sorted(os.listdir(home / "weights")) == [FNAME]  # no temp copies
    downloads = home / "downloads"
    assert not downloads.exists() or os.listdir(downloads) == []  # no staging file left


@pytest.mark.parametrize("trial", range(2))
def test_concurrent_fetches_one_file_one_record(tmp_path, useg_bytes, trial):
    home = _home()
    with LocalHTTPServer() as server:
        url = server.add("/u.pt", Resource(useg_bytes, chunk=32 * 1024))
        procs = [start_python(DRIVER, home, [url, "models", "fetch", UNIVERSEG, "--accept-licence"])
                 for _ in range(3)]
        results = _run_all(procs)
        server.settle()
        downloads = len(server.requests_for("/u.pt"))
    assert [r[0] for r in results] == [0] * 3, [r[2] for r in results]
    assert all("Traceback" not in r[2] for r in results)
    _check_store(useg_bytes)
    waited = sum("waiting for another process" in r[2] for r in results)
    assert 1 <= downloads <= 3 - waited  # a process that waited found the file installed: no second download


@pytest.mark.parametrize("trial", range(2))
def test_concurrent_imports_of_two_files(tmp_path, useg_bytes, useg_other_bytes, trial):
    """Two processes import file A, two file B: whichever records first wins, the others are refused;
    the installed file always matches the one record."""
    home = _home()
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    a.write_bytes(useg_bytes)
    b.write_bytes(useg_other_bytes)
    procs = [start_python(DRIVER, home, ["-", "models", "import", UNIVERSEG, f, "--accept-licence"])
             for f in (a, b, a, b)]
    results = _run_all(procs)
    assert all(r[0] in (0, 2) and "Traceback" not in r[2] for r in results), [r[2] for r in results]
    winners = {("a" if i % 2 == 0 else "b") for i, r in enumerate(results) if r[0] == 0}
    assert len(winners) == 1, [r[2] for r in results]
    for r in results:
        if r[0] == 2:
            assert "differs from the one recorded" in error_line(r[2])
    _check_store(useg_bytes if winners == {"a"} else useg_other_bytes)


def test_concurrent_fetch_and_delete_end_consistent(tmp_path, useg_bytes):
    home = _home()
    with LocalHTTPServer() as server:
        url = server.add("/u.pt", Resource(useg_bytes, chunk=32 * 1024))
        procs = [start_python(DRIVER, home, [url, "models", *args])
                 for args in (["fetch", UNIVERSEG, "--accept-licence"], ["delete", UNIVERSEG],
                              ["fetch", UNIVERSEG, "--accept-licence"], ["delete", UNIVERSEG])]
        results = _run_all(procs)
    assert all(r[0] == 0 and "Traceback" not in r[2] for r in results), [r[2] for r in results]
    state = json.loads((home / "state.json").read_text(encoding="utf-8"))
    installed = home / "weights" / FNAME
    if installed.exists():  # a fetch came last: file and record agree
        _check_store(useg_bytes)
    else:  # a delete came last: no record either
        assert UNIVERSEG not in state["files"]


def test_concurrent_library_imports_one_wins(capsys, tmp_path):
    lib = tmp_path / "lib"
    code, _, err = run_cli(capsys, "library", "export", lib, "--examples",
                           f"{write_image(tmp_path / 'e.nrrd', blob_3d())}:"
                           f"{write_image(tmp_path / 'l.nrrd', (blob_3d() > 50).astype(np.uint8))}",
                           "--structure", "blob")
    assert code == 0, err
    procs = [start_python(DRIVER, _home(), ["-", "library", "import", lib, "--name", "shared"]) for _ in range(3)]
    results = _run_all(procs)
    assert sorted(r[0] for r in results) == [0, 2, 2], [r[2] for r in results]
    for r in results:
        if r[0] == 2:
            assert "already exists" in error_line(r[2])
    libs = _home() / "libraries"
    assert sorted(os.listdir(libs)) == ["shared"]
    assert json.loads((libs / "shared" / "manifest.json").read_text(encoding="utf-8"))["structure"] == "blob"
