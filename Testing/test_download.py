"""medseg_backend.download against a real HTTP server on 127.0.0.1 (see httpserver_util.py)."""
from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest
import requests

from httpserver_util import LocalHTTPServer, Resource, closed_port_url
from medseg_backend.download import download, sha256_file
from medseg_backend.errors import CancelledError, DownloadError, OfflineError
from medseg_backend.progress import CancelToken

DATA = np.random.default_rng(7).integers(0, 256, size=3 * 1024 * 1024 + 12345, dtype=np.uint8).tobytes()
SHA = hashlib.sha256(DATA).hexdigest()
CHUNK = 256 * 1024


@pytest.fixture
def server():
    with LocalHTTPServer() as srv:
        yield srv


def _leftovers(folder):
    return sorted(os.listdir(folder))


def test_normal_download_with_progress(server, tmp_path):
    url = server.add("/w.pt", Resource(DATA))
    dest = tmp_path / "w.pt"
    calls = []
    digest = download(url, dest, expected_sha256=SHA, expected_size=len(DATA), chunk_size=CHUNK,
                      progress=lambda f, m: calls.append((f, m)))
    assert digest == SHA
    assert dest.read_bytes() == DATA
    assert _leftovers(tmp_path) == ["w.pt"]  # no .part left
    fractions = [f for f, _ in calls]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and fractions[0] == 0.0
    assert len(calls) >= len(DATA) // CHUNK  # at least one report per chunk
    assert any("of 3.2 MB" in m for _, m in calls), calls[:3]
    server.settle()
    (req,) = server.requests_for("/w.pt")
    assert req.range is None and req.status == 200 and req.sent == len(DATA)


def test_resume_from_part_with_range(server, tmp_path):
    url = server.add("/w.pt", Resource(DATA))
    dest = tmp_path / "w.pt"
    offset = 1_000_000
    (tmp_path / "w.pt.part").write_bytes(DATA[:offset])
    calls = []
    assert download(url, dest, expected_sha256=SHA, chunk_size=CHUNK, progress=lambda f, m: calls.append(f)) == SHA
    assert dest.read_bytes() == DATA
    assert _leftovers(tmp_path) == ["w.pt"]
    server.settle()
    (req,) = server.requests_for("/w.pt")
    assert req.range == f"bytes={offset}-" and req.status == 206
    assert req.sent == len(DATA) - offset  # only the missing tail went over the wire
    assert calls[0] == pytest.approx(offset / len(DATA))


def test_server_ignoring_range_restarts_cleanly(server, tmp_path):
    url = server.add("/w.pt", Resource(DATA, support_range=False))
    dest = tmp_path / "w.pt"
    # a stale part with garbage: appending the 200 body to it would give a wrong file
    (tmp_path / "w.pt.part").write_bytes(b"\x00" * 500_000)
    assert download(url, dest, expected_sha256=SHA, chunk_size=CHUNK) == SHA
    assert dest.read_bytes() == DATA
    server.settle()
    (req,) = server.requests_for("/w.pt")
    assert req.range == "bytes=500000-" and req.status == 200


def test_part_longer_than_file_gets_416_and_restarts(server, tmp_path):
    url = server.add("/w.pt", Resource(DATA))
    (tmp_path / "w.pt.part").write_bytes(b"\x01" * (len(DATA) + 10))
    assert download(url, tmp_path / "w.pt", chunk_size=CHUNK) == SHA
    assert (tmp_path / "w.pt").read_bytes() == DATA
    server.settle()
    assert [r.status for r in server.requests_for("/w.pt")] == [416, 200]


def test_bad_part_resumed_is_caught_by_hash_and_deleted(server, tmp_path):
    url = server.add("/w.pt", Resource(DATA))
    (tmp_path / "w.pt.part").write_bytes(b"\x00" * 100_000)  # wrong bytes, server will continue after them
    with pytest.raises(DownloadError, match="sha256"):
        download(url, tmp_path / "w.pt", expected_sha256=SHA, chunk_size=CHUNK, keep_partial=True)
    assert _leftovers(tmp_path) == []  # bad data: the part is gone even with keep_partial


def test_truncated_transfer_fails_and_leaves_nothing(server, tmp_path):
    url = server.add("/w.pt", Resource(DATA, truncate_at=1_500_000))
    with pytest.raises(DownloadError) as ei:
        download(url, tmp_path / "w.pt", chunk_size=CHUNK)
    assert not isinstance(ei.value, OfflineError)
    assert "truncated" in str(ei.value)
    assert "\n" not in str(ei.value)
    assert _leftovers(tmp_path) == []


def test_truncated_transfer_kept_for_resume_when_asked(server, tmp_path):
    url = server.add("/w.pt", Resource(DATA, truncate_at=1_500_000))
    dest = tmp_path / "w.pt"
    with pytest.raises(DownloadError):
        download(url, dest, expected_sha256=SHA, chunk_size=CHUNK, keep_partial=True)
    assert not dest.exists()
    part = tmp_path / "w.pt.part"
    kept = part.read_bytes()
    assert 0 < len(kept) <= 1_500_000 and kept == DATA[:len(kept)]  # whole chunks received before the cut
    server.resources["/w.pt"] = Resource(DATA)  # the server is healthy again
    assert download(url, dest, expected_sha256=SHA, chunk_size=CHUNK, keep_partial=True) == SHA
    assert dest.read_bytes() == DATA and not part.exists()
    server.settle()
    last = server.requests_for("/w.pt")[-1]
    assert last.range == f"bytes={len(kept)}-" and last.status == 206 and last.sent == len(DATA) - len(kept)


def test_close_delimited_body_short_vs_expected_size(server, tmp_path):
    url = server.add("/w.pt", Resource(DATA, content_length=False, truncate_at=2_000_000))
    with pytest.raises(DownloadError, match="2000000 bytes"):
        download(url, tmp_path / "w.pt", expected_size=len(DATA), chunk_size=CHUNK)
    assert _leftovers(tmp_path) == []


def test_wrong_hash_fails_and_leaves_nothing(server, tmp_path):
    url = server.add("/w.pt", Resource(DATA))
    with pytest.raises(DownloadError, match="sha256") as ei:
        download(url, tmp_path / "w.pt", expected_sha256="0" * 64, chunk_size=CHUNK, keep_partial=True)
    assert SHA in str(ei.value)  # the message shows what was received
    assert _leftovers(tmp_path) == []


def test_wrong_size_announced_by_server(server, tmp_path):
    url = server.add("/w.pt", Resource(DATA))
    with pytest.raises(DownloadError, match=f"offers {len(DATA)} bytes .* but {len(DATA) - 1} are expected"):
        download(url, tmp_path / "w.pt", expected_size=len(DATA) - 1, chunk_size=CHUNK)  # refused from the headers
    assert _leftovers(tmp_path) == []


def test_wrong_size_without_content_length(server, tmp_path):
    url = server.add("/w.pt", Resource(DATA, content_length=False))
    with pytest.raises(DownloadError, match="more than"):
        download(url, tmp_path / "w.pt", expected_size=len(DATA) - 1, chunk_size=CHUNK)
    assert _leftovers(tmp_path) == []


def test_server_dropping_mid_file_fails_and_leaves_nothing(server, tmp_path):
    url = server.add("/w.pt", Resource(DATA, reset_at=1_200_000))
    with pytest.raises(DownloadError) as ei:
        download(url, tmp_path / "w.pt", expected_sha256=SHA, chunk_size=CHUNK)
    assert not isinstance(ei.value, OfflineError)
    assert _leftovers(tmp_path) == []


def test_read_timeout_mid_file(server, tmp_path):
    url = server.add("/w.pt", Resource(DATA, stall_at=700_000, stall_s=1.5))
    with pytest.raises(DownloadError, match="timed out"):
        download(url, tmp_path / "w.pt", timeout=(5, 0.4), chunk_size=CHUNK)
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("status", [404, 500])
def test_http_error_status(server, tmp_path, status):
    url = server.add("/w.pt", Resource(b"nope", status=status, content_type="text/plain"))
    with pytest.raises(DownloadError, match=f"HTTP {status}") as ei:
        download(url, tmp_path / "w.pt")
    assert not isinstance(ei.value, OfflineError)
    assert _leftovers(tmp_path) == []


def test_missing_path_is_404(server, tmp_path):
    with pytest.raises(DownloadError, match="HTTP 404"):
        download(server.url("/nothing-here.pt"), tmp_path / "w.pt")


def test_web_page_instead_of_file(server, tmp_path):
    url = server.add("/w.pt", Resource(b"<html>confirm</html>", content_type="text/html; charset=utf-8"))
    with pytest.raises(DownloadError, match="web page"):
        download(url, tmp_path / "w.pt")
    assert _leftovers(tmp_path) == []


def test_connection_refused_is_offline_error(tmp_path):
    (tmp_path / "w.pt.part").write_bytes(b"abc")  # an older partial download
    with pytest.raises(OfflineError) as ei:
        download(closed_port_url(), tmp_path / "w.pt", timeout=(3, 3))
    msg = str(ei.value)
    assert "offline" in msg and "medseg models import" in msg and "\n" not in msg
    assert _leftovers(tmp_path) == []  # default policy: nothing left behind


def test_offline_keeps_untouched_partial_when_asked(tmp_path):
    (tmp_path / "w.pt.part").write_bytes(b"abc")
    with pytest.raises(OfflineError):
        download(closed_port_url(), tmp_path / "w.pt", timeout=(3, 3), keep_partial=True)
    assert _leftovers(tmp_path) == ["w.pt.part"]


def test_dns_failure_is_offline_error(tmp_path):
    """Classification of a resolver failure, without depending on the machine's DNS: the session raises the
    exception chain requests produces for an unknown host."""
    import socket

    import urllib3.exceptions as u3

    class NoDNS(requests.Session):
        def get(self, url, **kw):
            try:
                raise socket.gaierror(-2, "Name or service not known")
            except socket.gaierror as g:
                if hasattr(u3, "NameResolutionError"):  # urllib3 >= 2
                    reason = u3.NameResolutionError("weights.example.invalid", None, g)
                else:
                    reason = u3.NewConnectionError(None, f"Failed to resolve: {g}")
            raise requests.exceptions.ConnectionError(u3.MaxRetryError(None, url, reason))

    with pytest.raises(OfflineError, match="weights.example.invalid"):
        download("http://weights.example.invalid/w.pt", tmp_path / "w.pt", session=NoDNS())
    assert _leftovers(tmp_path) == []


def test_cancel_mid_download(server, tmp_path):
    url = server.add("/w.pt", Resource(DATA))
    token = CancelToken()
    seen = []

    def progress(fraction, message):
        seen.append(fraction)
        if fraction > 0.2:
            token.cancel()

    with pytest.raises(CancelledError, match="cancelled"):
        download(url, tmp_path / "w.pt", progress=progress, cancel=token, chunk_size=CHUNK, keep_partial=True)
    assert 0.2 < max(seen) < 0.5  # stopped at the next chunk boundary, not at the end
    assert _leftovers(tmp_path) == []


def test_cancel_before_start_sends_nothing(server, tmp_path):
    url = server.add("/w.pt", Resource(DATA))
    token = CancelToken()
    token.cancel()
    with pytest.raises(CancelledError):
        download(url, tmp_path / "w.pt", cancel=token)
    assert server.requests_for("/w.pt") == [] and _leftovers(tmp_path) == []


def test_complete_part_is_verified_without_network(tmp_path):
    (tmp_path / "w.pt.part").write_bytes(DATA)
    # nothing listens on this URL: the part already has the expected size and hash
    assert download(closed_port_url(), tmp_path / "w.pt", expected_sha256=SHA, expected_size=len(DATA)) == SHA
    assert _leftovers(tmp_path) == ["w.pt"]


def test_existing_dest_untouched_on_failure(server, tmp_path):
    dest = tmp_path / "w.pt"
    dest.write_bytes(b"previous good file")
    url = server.add("/w.pt", Resource(DATA, truncate_at=100_000))
    with pytest.raises(DownloadError):
        download(url, dest, chunk_size=CHUNK)
    assert dest.read_bytes() == b"previous good file"


def test_sha256_file(tmp_path):
    p = tmp_path / "x.bin"
    p.write_bytes(DATA[:100_000])
    assert sha256_file(p, chunk_size=4096) == hashlib.sha256(DATA[:100_000]).hexdigest()


@pytest.mark.parametrize("announced", [False, True])
def test_max_size_bounds_a_download_of_unknown_size(server, tmp_path, announced):
    """No expected size: a server that keeps sending (no Content-Length) or announces more than ``max_size`` is
    stopped there, and nothing is kept."""
    url = server.add("/w.pt", Resource(DATA, content_length=announced, chunk=CHUNK))
    with pytest.raises(DownloadError, match="than the 1000000 bytes" if not announced else
                       f"offers {len(DATA)} bytes for w.pt, more than the 1000000"):
        download(url, tmp_path / "w.pt", chunk_size=CHUNK, max_size=1_000_000)
    assert _leftovers(tmp_path) == []
    assert download(url, tmp_path / "w.pt", chunk_size=CHUNK, max_size=len(DATA)) == SHA
