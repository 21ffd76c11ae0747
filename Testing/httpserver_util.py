"""A small real HTTP server for download tests (loopback, ephemeral port, one thread per request).

Each path serves one :class:`Resource` whose flags reproduce the failure modes a weights download meets in the
wild: Range support or not, a truncated body, a connection reset mid-file, a stall, an HTTP error, a web page.
Every request is logged (path, Range header, status, bytes sent) so tests can check what really went over the
socket.
"""
from __future__ import annotations

import re
import socket
import struct
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, List, Optional


@dataclass
class Resource:
    data: bytes = b""
    status: int = 200                   # e.g. 404 / 500 to answer with an error
    support_range: bool = True          # False: ignore Range and send the whole file with 200
    truncate_at: Optional[int] = None   # send Content-Length of the full body, then only this many bytes, then close
    reset_at: Optional[int] = None      # send this many bytes, then reset the connection (RST)
    stall_at: Optional[int] = None      # send this many bytes, then go silent for `stall_s`
    stall_s: float = 5.0
    content_length: bool = True         # False: no Content-Length, the body ends when the connection closes
    content_type: str = "application/octet-stream"
    chunk: int = 64 * 1024


@dataclass
class LoggedRequest:
    path: str
    range: Optional[str]
    status: int
    sent: int


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep test output quiet
        pass

    def do_GET(self):  # noqa: N802 (http.server API)
        server: LocalHTTPServer = self.server.owner
        with server._cond:
            server._active += 1
        try:
            self._serve(server)
        finally:
            with server._cond:
                server._active -= 1
                server._cond.notify_all()

    def _serve(self, server):
        res = server.resources.get(self.path.split("?")[0])
        rng = self.headers.get("Range")
        if res is None:
            res = Resource(data=b"not found", status=404, content_type="text/plain")
        self.close_connection = True
        data = res.data
        status = res.status
        start = 0
        if status == 200 and rng and res.support_range:
            m = re.match(r"bytes=(\d+)-$", rng.strip())
            if m:
                start = int(m.group(1))
                if start >= len(data):
                    self._send_simple(416, b"", rng, {"Content-Range": f"bytes */{len(data)}"})
                    return
                status = 206
        body = data[start:] if status in (200, 206) else (res.data or b"error")
        self.send_response(status)
        self.send_header("Content-Type", res.content_type)
        if res.content_length:
            self.send_header("Content-Length", str(len(body)))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        if res.support_range:
            self.send_header("Accept-Ranges", "bytes")
        self.send_header("Connection", "close")
        self.end_headers()
        limit = len(body)
        for cut in (res.truncate_at, res.reset_at, res.stall_at):
            if cut is not None:
                limit = min(limit, max(cut - start, 0))
        entry = LoggedRequest(self.path, rng, status, 0)
        server.log.append(entry)
        sent = 0
        try:
            while sent < limit:
                n = min(res.chunk, limit - sent)
                self.wfile.write(body[sent:sent + n])
                sent += n
                entry.sent = sent
            self.wfile.flush()
            if res.stall_at is not None:
                time.sleep(res.stall_s)
            elif res.reset_at is not None:
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.close()
            elif sent < len(body) or res.truncate_at is not None:
                self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # the client went away (cancel, timeout): expected in some tests

    def _send_simple(self, status, body, rng, headers):
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.server.owner.log.append(LoggedRequest(self.path, rng, status, len(body)))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):  # connection resets are part of the tests
        pass


class LocalHTTPServer:
    """``with LocalHTTPServer() as srv: srv.add("/f.bin", Resource(data)); srv.url("/f.bin")``."""

    def __init__(self) -> None:
        self.resources: Dict[str, Resource] = {}
        self.log: List[LoggedRequest] = []
        self._cond = threading.Condition()
        self._active = 0
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def add(self, path: str, resource: Resource) -> str:
        self.resources[path] = resource
        return self.url(path)

    def requests_for(self, path: str) -> List[LoggedRequest]:
        return [r for r in self.log if r.path.split("?")[0] == path]

    def settle(self, timeout: float = 5.0) -> None:
        """Wait until no request is being served (so the log is final)."""
        with self._cond:
            self._cond.wait_for(lambda: self._active == 0, timeout=timeout)

    def start(self) -> "LocalHTTPServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> "LocalHTTPServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def closed_port_url(path: str = "/file.bin") -> str:
    """A loopback URL on which nothing listens (connection refused)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}{path}"
