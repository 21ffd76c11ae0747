"""Fault catalogue, round 3 (issue 24), the weights store and the command line around it: a checkpoint that makes
torch warn (pickle protocol 3 or 4), unbounded downloads, boxes of infinite numbers, a damaged weights file whose
size and mtime were restored, a file that cannot be deleted, two processes sharing one cache during a fetch and
file times in the future. Each ends with one specific line and nothing lost."""
from __future__ import annotations

import dataclasses
import io
import os
import shutil
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest

from faults_util import blob_2d, error_line, python_env, run_cli, snapshot, start_python, write_image
from httpserver_util import LocalHTTPServer, Resource
from medseg_backend.errors import DownloadError, MedSegWarning, WeightsError
from medseg_backend.locking import FileLock
from medseg_backend.weights import cache, install, store

UNIVERSEG = "universeg-v1"
FNAME = "universeg_v1_nf64_ss64_STA.pt"
ROOT = os.geteuid() == 0 if hasattr(os, "geteuid") else False


def _universeg_bytes(seed: int = 0, protocol: int = 2) -> bytes:
    import torch

    from medseg_backend.models.universeg_fast import build_universeg_v1

    torch.manual_seed(seed)
    buf = io.BytesIO()
    torch.save(build_universeg_v1().state_dict(), buf, pickle_protocol=protocol)
    return buf.getvalue()


@pytest.fixture(scope="module")
def useg_bytes():
    return _universeg_bytes(0)


def _cli(home, *argv, timeout=180, extra_env=None):
    """``medseg ARGV`` in a fresh process (bounded in time: a hang is a failure, never a stuck suite)."""
    env = python_env(home, extra_env)
    try:
        p = subprocess.run([sys.executable, "-m", "medseg_backend.cli", *map(str, argv)], env=env, text=True,
                           capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"`medseg {' '.join(map(str, argv))}` did not end within {timeout} s (hang)")
    return p.returncode, p.stdout, p.stderr


# ------------------------------------------------------------------------------- 1. warnings of a checkpoint --
@pytest.mark.parametrize("protocol", [3, 4])
def test_import_of_a_checkpoint_that_makes_torch_warn_ends(tmp_path, protocol):
    """torch warns about any pickle protocol but 2; showing that warning inside the recording re-appended it to
    the list being shown, and `medseg models import` never ended (memory growing without bound). Protocol 3
    loads; protocol 4 is refused by torch's weights-only reader: one error line, nothing installed."""
    src = tmp_path / f"p{protocol}.pt"
    src.write_bytes(_universeg_bytes(0, protocol))
    home = tmp_path / "home"
    code, out, err = _cli(home, "models", "import", UNIVERSEG, src, "--accept-licence", timeout=120)
    assert "Traceback" not in err
    assert err.count(f"pickle protocol {protocol}") == 1, err   # shown once, not once per check of the file
    if protocol == 3:
        assert code == 0, err
        assert (home / "weights" / FNAME).read_bytes() == src.read_bytes()
    else:
        line = error_line(err)
        assert code == 2 and "Import refused for universeg-v1" in line
        assert "pickle protocol that PyTorch's weights-only reader does not support" in line  # not "damaged"
        assert not (home / "weights" / FNAME).exists()


def test_fetch_of_a_checkpoint_that_makes_torch_warn_ends(tmp_path):
    body = _universeg_bytes(0, 3)
    home = tmp_path / "home"
    driver = ("import dataclasses, sys\nfrom medseg_backend.weights import store\nfrom medseg_backend.cli import main\n"
              "store.ENTRIES['universeg-v1'] = dataclasses.replace(store.ENTRIES['universeg-v1'], url=sys.argv[1])\n"
              "sys.exit(main(sys.argv[2:]))\n")
    with LocalHTTPServer() as server:
        url = server.add("/u.pt", Resource(body))
        p = start_python(driver, home, [url, "models", "fetch", UNIVERSEG, "--accept-licence"])
        try:
            out, err = p.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()
            pytest.fail("`medseg models fetch` did not end (hang)")
    assert p.returncode == 0, err
    assert err.count("pickle protocol 3") == 1, err
    assert (home / "weights" / FNAME).read_bytes() == body


def test_warnings_shown_each_once_and_bounded(capsys):
    from medseg_backend.cli.common import MAX_WARNINGS_SHOWN, relayed_warnings

    with relayed_warnings():
        for i in range(MAX_WARNINGS_SHOWN + 30):
            warnings.warn(f"note {i}", MedSegWarning)
            warnings.warn(f"note {i}", MedSegWarning)      # the same again: shown once
    err = capsys.readouterr().err
    assert err.count("note 0\n") == 1
    assert err.count("warning: ") <= MAX_WARNINGS_SHOWN + 1
    assert "more warning(s) not shown" in err


def test_download_without_length_is_bounded(tmp_path, monkeypatch):
    """A server that announces no length and keeps sending: refused past the largest weights file, nothing kept."""
    body = os.urandom(300_000)
    monkeypatch.setattr(install, "MAX_WEIGHTS_BYTES", 100_000)
    with LocalHTTPServer() as server:
        url = server.add("/u.pt", Resource(body, content_length=False, chunk=16 * 1024))
        monkeypatch.setitem(store.ENTRIES, UNIVERSEG, dataclasses.replace(store.ENTRIES[UNIVERSEG], url=url))
        with pytest.raises(DownloadError, match=r"sent more than the 100000 bytes"):
            store.fetch(UNIVERSEG, accept_licence=True)
    home = store.cache_dir()
    assert not (home / "weights" / FNAME).exists()
    assert not (home / "downloads").exists() or os.listdir(home / "downloads") == []


def test_import_of_a_file_larger_than_any_weights_refused_before_reading(tmp_path, monkeypatch, useg_bytes):
    src = tmp_path / FNAME
    src.write_bytes(useg_bytes)
    monkeypatch.setattr(install, "MAX_WEIGHTS_BYTES", 1000)
    monkeypatch.setattr(install, "sha256_file", lambda *a, **k: pytest.fail("the file was read"))
    with pytest.raises(WeightsError, match="more than any weights file"):
        store.import_weights(UNIVERSEG, src, accept_licence=True)


# --------------------------------------------------------------------------------------- 2. infinite numbers --
@pytest.mark.parametrize("box,bad", [("8,8,0,inf,24,2", "inf"), ("8,8,0,1e400,24,2", "1e400"),
                                     ("-inf,8,0,24,24,2", "-inf"), ("8,nan,0,24,24,2", "nan")])
def test_box_with_an_infinite_number_one_line(capsys, tmp_path, box, bad):
    from faults_util import blob_3d

    img = write_image(tmp_path / "v.nrrd", blob_3d())
    before = snapshot(tmp_path)
    code, _, err = run_cli(capsys, "medsam", img, f"--box={box}", "-o", tmp_path / "seg.nrrd",
                           "--model", "medsam-vit-b")
    assert code == 2, err
    line = error_line(err)
    assert f"holds {bad}, which is not a finite number" in line and "not installed" not in line
    assert snapshot(tmp_path) == before


def test_universeg_roi_with_an_infinite_number_one_line(capsys, tmp_path):
    from faults_util import blob_3d

    img = write_image(tmp_path / "v.nrrd", blob_3d())
    ex = write_image(tmp_path / "e.nrrd", blob_2d())
    lab = write_image(tmp_path / "l.nrrd", (blob_2d() > 100).astype(np.uint8))
    before = snapshot(tmp_path)
    code, _, err = run_cli(capsys, "universeg", img, "--examples", f"{ex}:{lab}", "--roi", "0,0,0,1e400,20,2",
                           "-o", tmp_path / "m.nrrd")
    assert code == 2, err
    assert "holds 1e400, which is not a finite number" in error_line(err)
    assert snapshot(tmp_path) == before


# ------------------------------------------------------------------ 4. damaged with size and mtime restored --
RESOLVE = """
import sys
from medseg_backend.weights import store
from medseg_backend.errors import WeightsError
try:
    print(store.resolve_weights(sys.argv[1]))
except WeightsError as e:
    print("error: " + str(e))
    sys.exit(2)
"""


def _resolve_in_a_fresh_process(name):
    p = start_python(RESOLVE, store.cache_dir(), [name])
    out, err = p.communicate(timeout=120)
    return p.returncode, out, err


def _damage_keeping_size_and_mtime(path, at=None):
    st = path.stat()
    data = bytearray(path.read_bytes())
    at = len(data) // 2 if at is None else at
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns


def test_damage_with_size_and_mtime_restored_refused_in_a_fresh_process(tmp_path, useg_bytes):
    src = tmp_path / FNAME
    src.write_bytes(useg_bytes)
    path = store.import_weights(UNIVERSEG, src, accept_licence=True)
    code, out, err = _resolve_in_a_fresh_process(UNIVERSEG)   # a first process uses (and checks) the file
    assert code == 0 and out.strip() == str(path), err
    _damage_keeping_size_and_mtime(path)                        # then the disk flips one byte
    code, out, err = _resolve_in_a_fresh_process(UNIVERSEG)
    assert code == 2, out + err
    assert "universeg-v1 weights at" in out and "are damaged or were altered" in out
    assert "medseg models delete universeg-v1" in out


@pytest.mark.skipif(os.name == "nt", reason="st_ctime is the creation time on Windows")
def test_damage_with_size_and_mtime_restored_refused_in_the_same_process(tmp_path, useg_bytes):
    """A long-lived worker: the file checked once, damaged, size and mtime put back: the change time gives it
    away and the next load hashes it again."""
    src = tmp_path / FNAME
    src.write_bytes(useg_bytes)
    path = store.import_weights(UNIVERSEG, src, accept_licence=True)
    assert store.resolve_weights(UNIVERSEG) == path
    time.sleep(0.01)
    _damage_keeping_size_and_mtime(path)
    with pytest.raises(WeightsError, match="damaged or were altered"):
        store.resolve_weights(UNIVERSEG)


# -------------------------------------------------------------------------------------- file times in the future --
def test_weights_with_a_future_mtime_are_still_checked(tmp_path, useg_bytes):
    """A clock set wrong (or a copy from a machine ahead in time): a file dated years ahead is hashed like any
    other, a damaged one refused, and fetch / verify / delete work."""
    src = tmp_path / FNAME
    src.write_bytes(useg_bytes)
    future = time.time() + 10 * 365 * 86400
    os.utime(src, (future, future))
    path = store.import_weights(UNIVERSEG, src, accept_licence=True)
    os.utime(path, (future, future))
    assert store.resolve_weights(UNIVERSEG) == path
    assert _resolve_in_a_fresh_process(UNIVERSEG)[0] == 0
    _damage_keeping_size_and_mtime(path, at=100)
    code, out, _ = _resolve_in_a_fresh_process(UNIVERSEG)
    assert code == 2 and "damaged or were altered" in out
    [res] = store.verify(UNIVERSEG)
    assert res["ok"] is False and res["hash_ok"] is False
    assert store.delete(UNIVERSEG) == [path]
    assert store.installed_path(UNIVERSEG) is None


# ------------------------------------------------------------------------------- 5. a file that cannot go --
class _Protect:
    """Make ``path`` impossible to change for this process: ``chattr +i`` (root ignores permissions; ext4 and
    most Linux file systems), else a read-only folder (not root), else - where neither works - ``os.replace``
    refusing it with the PermissionError the system would raise."""

    def __init__(self):
        self.undo = []

    def __call__(self, path):
        path = str(path)
        if ROOT and _has("chattr") and subprocess.run(["chattr", "+i", path], capture_output=True).returncode == 0:
            self.undo.append(lambda: subprocess.run(["chattr", "-i", path], capture_output=True))
            return
        if not ROOT and os.path.isdir(path):
            mode = os.stat(path).st_mode
            os.chmod(path, 0o555)
            self.undo.append(lambda: os.chmod(path, mode))
            return
        real = os.replace

        def replace(src, dst, *a, **k):
            for p in (os.fspath(src), os.fspath(dst)):
                if p == path or os.path.dirname(p) == path:
                    raise PermissionError(1, "Operation not permitted", p)
            return real(src, dst, *a, **k)
        os.replace = replace
        self.undo.append(lambda: setattr(os, "replace", real))

    def release(self):
        while self.undo:
            self.undo.pop()()


def _has(tool):
    return shutil.which(tool) is not None


@pytest.fixture
def protect():
    p = _Protect()
    yield p
    p.release()


def _installed_with_partial(tmp_path, useg_bytes):
    src = tmp_path / FNAME
    src.write_bytes(useg_bytes)
    path = store.import_weights(UNIVERSEG, src, accept_licence=True)
    part = store.cache_dir() / "downloads" / (FNAME + ".part")
    part.parent.mkdir(exist_ok=True)
    part.write_bytes(useg_bytes[:1000])
    with cache.model_lock(store.ENTRIES[UNIVERSEG], "testing"):
        pass  # the lock file exists (its content is the holder's pid, not part of the comparison)
    return path, part


@pytest.mark.parametrize("which", ["weights folder", "downloads folder", "state file"])
def test_delete_of_a_file_that_cannot_be_removed_one_line_nothing_changed(capsys, tmp_path, useg_bytes, protect,
                                                                          which):
    path, part = _installed_with_partial(tmp_path, useg_bytes)
    home = store.cache_dir()
    protect({"weights folder": path.parent, "downloads folder": part.parent,
             "state file": home / "state.json"}[which])
    before = snapshot(home / "weights", home / "downloads", home / "state.json")
    try:
        code, out, err = run_cli(capsys, "models", "delete", UNIVERSEG)
    finally:
        protect.release()
    assert code == 2, out + err
    line = error_line(err)
    assert line.startswith("error: Cannot delete universeg-v1: ") and "nothing was deleted" in line
    assert "medseg models delete universeg-v1" in line
    assert out == ""
    assert snapshot(home / "weights", home / "downloads", home / "state.json") == before
    assert store.resolve_weights(UNIVERSEG) == path     # still installed, still recorded
    code, out, err = run_cli(capsys, "models", "delete", UNIVERSEG)   # once writable: deleted
    assert code == 0 and f"removed {path}" in out and f"removed {part}" in out, err
    assert sorted(os.listdir(home / "weights")) == [] and sorted(os.listdir(home / "downloads")) == []


# ----------------------------------------------------------- two processes sharing one cache during a fetch --
FETCH = """
import dataclasses, sys
from medseg_backend.weights import store
from medseg_backend.cli import main
store.ENTRIES["universeg-v1"] = dataclasses.replace(store.ENTRIES["universeg-v1"], url=sys.argv[1])
sys.exit(main(sys.argv[2:]))
"""


def test_model_used_while_another_process_fetches_it(tmp_path, useg_bytes, capsys):
    """A second Slicer (or the CLI) runs the model while the first one is still downloading it into the shared
    cache: it is told to wait for that process, not that the model is missing; once installed, both use it."""
    home = store.cache_dir()
    lock = FileLock(home / "locks" / f"{UNIVERSEG}.lock", what="")
    with LocalHTTPServer() as server:
        url = server.add("/u.pt", Resource(useg_bytes, stall_at=len(useg_bytes) // 2, stall_s=4.0, chunk=32 * 1024))
        fetcher = start_python(FETCH, home, [url, "models", "fetch", UNIVERSEG, "--accept-licence"])
        try:
            t0 = time.monotonic()
            while lock.held_elsewhere() is None:
                assert fetcher.poll() is None and time.monotonic() - t0 < 120, fetcher.communicate()
                time.sleep(0.05)
            with pytest.raises(WeightsError, match=rf"being installed \(or deleted\) by another process \(pid "
                                                   rf"{fetcher.pid}\) right now: wait until it is done"):
                store.resolve_weights(UNIVERSEG)
            img = write_image(tmp_path / "i.nrrd", blob_2d())
            lab = write_image(tmp_path / "l.nrrd", (blob_2d() > 100).astype(np.uint8))
            code, out, err = run_cli(capsys, "universeg", img, "--examples", f"{img}:{lab}", "-o", tmp_path / "o.nrrd",
                                     "--device", "cpu")
        finally:
            fetcher.communicate(timeout=120)
    assert code == 2 and "being installed (or deleted) by another process" in error_line(err), err
    assert not (tmp_path / "o.nrrd").exists()
    # the stalled transfer was interrupted; the next fetch resumes it and both processes see one file
    with LocalHTTPServer() as server:
        url = server.add("/u.pt", Resource(useg_bytes))
        p = start_python(FETCH, home, [url, "models", "fetch", UNIVERSEG, "--accept-licence"])
        out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    assert store.resolve_weights(UNIVERSEG) == home / "weights" / FNAME
    assert lock.held_elsewhere() is None
