"""Client of the model service (``medseg serve``) with the interface of the local worker's client, so the Slicer
layer's jobs (``MedSegSlicerLib.jobs``) run through it unchanged: ``submit`` / ``poll`` / ``load_results`` /
``cancel`` / ``abandon`` / ``release`` / ``heartbeat`` / ``wait_readable``.

Needs ``requests`` and numpy only (no torch, no Ray): in server mode Slicer installs nothing else.

A volume is uploaded once per content key (the ``keys`` of :meth:`ServiceClient.submit`, as with the local
worker): it opens a session on the server, and later runs on that volume send only their boxes (and seed masks or
examples). At most ``max_sessions`` sessions are kept open; the oldest is closed when another opens. A session the
server no longer has (expired while idle) is opened again at the next submit; one lost during a run (the server or
its worker stopped, the network is gone) ends that run with one ``died`` event whose message says so, and the next
run opens a fresh session. Every failure is reported through :meth:`poll`, never raised from ``submit``.

Nothing waits on the network in the caller's thread (Slicer's main thread): ``submit``, ``cancel``, ``release``
and ``abandon`` queue their request and return at once; one transfer thread per client uploads, polls the
server's events and downloads a finished run's arrays before it hands the ``done`` event to :meth:`poll`, so
:meth:`load_results` returns what is already here.
"""
from __future__ import annotations

import hashlib
import logging
import queue
import threading
import time
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ..errors import InputError, MedSegError
from . import codec

log = logging.getLogger("medseg_backend.service")

TERMINAL = ("done", "error", "cancelled")


class ServiceError(MedSegError):
    """The model server refused a request or cannot be reached (one line: the problem and the fix)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


def check_url(url: str) -> str:
    url = str(url or "").strip().rstrip("/")
    if not url.startswith(("http://", "https://")) or len(url) < 10:
        raise InputError(f"Server URL {url!r} is not valid: give it as https://host:port (or http:// on a trusted "
                         "network).")
    return url


class ServiceClient:
    """One connection to a model service; use it from one thread (Slicer's main thread). See the module
    docstring. ``verify``: TLS certificate check (True, or a CA bundle path for a department CA); ``compress``:
    zlib uploads (default: except on loopback)."""

    def __init__(self, url: str, token: str, *, timeout: float = 30.0, verify: Any = True, max_sessions: int = 2,
                 compress: Optional[bool] = None) -> None:
        import requests

        self.url = check_url(url)
        if not str(token or "").strip():
            raise InputError("No token for the model server: ask its admin for one ('medseg serve-token add USER').")
        self.timeout = float(timeout)
        self.max_sessions = max(1, int(max_sessions))
        self.compress = _remote(self.url) if compress is None else bool(compress)
        self.info: Dict[str, Any] = {}
        self.last_status: Dict[str, Any] = {}
        self._http = requests.Session()
        self._http.headers["Authorization"] = f"Bearer {str(token).strip()}"
        self._http.verify = verify
        self._sessions: "OrderedDict[str, str]" = OrderedDict()        # volume key -> session id
        self._jobs: Dict[int, Dict[str, Any]] = {}                      # local id -> sid, job, seen, ended
        self._pending: List[Dict[str, Any]] = []                        # events to hand out at the next poll
        self._abandoned: Dict[int, float] = {}
        self._next_id = 1
        # the transfer thread: commands in, events (and finished runs' arrays) out
        self._commands: "queue.Queue" = queue.Queue()
        self._inbox: List[Dict[str, Any]] = []
        self._results: Dict[int, Dict[str, np.ndarray]] = {}
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    # ------------------------------------------------------------------------------------------------- HTTP --
    def _request(self, method: str, path: str, *, data: Optional[bytes] = None, timeout: Optional[float] = None,
                 **params):
        import requests

        try:
            resp = self._http.request(method, self.url + path, data=data, params=params or None,
                                      timeout=(min(10.0, self.timeout), timeout or self.timeout),
                                      headers={"Content-Type": codec.CONTENT_TYPE} if data is not None else None)
        except requests.exceptions.SSLError as exc:
            raise ServiceError(f"The model server at {self.url} failed the TLS check ({_short(exc)}): check its "
                               "certificate (or the CA bundle in the MedSeg settings).") from None
        except requests.exceptions.RequestException as exc:
            raise ServiceError(f"The model server at {self.url} cannot be reached ({_short(exc)}): check the URL, "
                               "that the server runs and the network; nothing was written.") from None
        if resp.status_code >= 400:
            try:
                detail = str(resp.json().get("detail"))
            except ValueError:
                detail = resp.text.strip()[:200] or resp.reason
            raise ServiceError(detail.splitlines()[0] if detail else f"HTTP {resp.status_code}", resp.status_code)
        return resp

    def hello(self) -> Dict[str, Any]:
        """Who the server says we are, its version and limits (raises :class:`ServiceError`)."""
        self.info = dict(self._request("GET", "/v1/hello").json())
        return self.info

    def list_sessions(self) -> List[str]:
        return list(self._request("GET", "/v1/sessions").json()["sessions"])

    # ------------------------------------------------------------------------------------------- sessions --
    def _open(self, key: str, volume: np.ndarray) -> str:
        body = codec.pack({"volume": volume}, compress=self.compress)
        sid = str(self._request("POST", "/v1/sessions", data=body, timeout=max(self.timeout, 120.0)).json()["session"])
        self._sessions[key] = sid
        while len(self._sessions) > self.max_sessions:
            _, old = self._sessions.popitem(last=False)
            self._close(old)
        return sid

    def _close(self, sid: str) -> None:
        try:
            self._request("DELETE", f"/v1/sessions/{sid}", timeout=5.0)
        except ServiceError:
            pass

    def session_of(self, key: str) -> Optional[str]:
        return self._sessions.get(key)

    @property
    def token(self) -> str:
        return self._http.headers["Authorization"][len("Bearer "):]

    @property
    def current_session(self) -> Optional[str]:
        """The session used last (None before the first run)."""
        return next(reversed(self._sessions.values()), None)

    # ---------------------------------------------------------------------------------------------- submit --
    def submit(self, op: str, params: Optional[Dict[str, Any]] = None, arrays: Optional[Dict[str, np.ndarray]] = None,
               keys: Optional[Dict[str, str]] = None) -> int:
        """Queue a run (the transfer thread opens the volume's session if needed and sends it); returns its id at
        once. Failures come from :meth:`poll`."""
        jid = self._next_id
        self._next_id += 1
        self._command("submit", jid, op, params, dict(arrays or {}), dict(keys or {}))
        return jid

    def _submit_now(self, jid: int, op: str, params, arrays: Dict[str, np.ndarray], keys) -> None:
        volume = arrays.pop("volume", None)
        key = (keys or {}).get("volume") or (_content_key(volume) if volume is not None else "")
        try:
            if volume is None:
                raise ServiceError(f"'{op}' is not a run of the model server (its weights are managed there by its "
                                   "admin): choose 'this computer' under Where models run in the MedSeg panel for it.")
            body = codec.pack(arrays, {"op": op, "params": params or {}}, compress=self.compress)
            for attempt in (0, 1):
                sid = self._sessions.get(key) or self._open(key, volume)
                self._sessions.move_to_end(key)
                try:
                    remote = int(self._request("POST", f"/v1/sessions/{sid}/jobs", data=body).json()["job"])
                    break
                except ServiceError as exc:
                    if exc.status in (404, 410) and attempt == 0:     # expired or lost while idle: open it again
                        self._sessions.pop(key, None)
                        continue
                    raise
            self._jobs[jid] = {"sid": sid, "job": remote, "seen": 0, "ended": False, "key": key}
        except ServiceError as exc:
            self._pending.append(self._failure(jid, exc))

    def _failure(self, jid: int, exc: ServiceError) -> Dict[str, Any]:
        if exc.status in (0, 410, 502, 503, 504) or exc.status == 404 and "Session" in str(exc):
            return {"event": "died", "id": 0, "job": jid, "message": str(exc)}
        if exc.status == 400:
            return {"event": "error", "id": jid, "type": "InputError", "message": str(exc), "medseg": True}
        return {"event": "error", "id": jid, "type": "MedSegError", "message": str(exc), "medseg": True}

    # --------------------------------------------------------------------------------------------- receive --
    def _fetch(self, jid: int, wait: float = 0.0) -> List[Dict[str, Any]]:
        job = self._jobs.get(jid)
        if job is None or job["ended"]:
            return []
        try:
            got = self._request("GET", f"/v1/sessions/{job['sid']}/jobs/{job['job']}/events",
                                timeout=min(self.timeout, 10.0) + wait, after=job["seen"], wait=wait).json()
        except ServiceError as exc:
            job["ended"] = True
            if exc.status in (404, 410):
                self._drop_session(job["sid"])
                if exc.status == 404:
                    exc = ServiceError("Session lost on the model server (closed or expired): nothing was written; "
                                       "run again to open a new session.", 404)
            return [self._failure(jid, exc)]
        out = []
        for event in got.get("events") or []:
            job["seen"] += 1
            event = dict(event, id=jid)
            if event.get("event") in TERMINAL:
                job["ended"] = True
            out.append(event)
        return out

    def _drop_session(self, sid: str) -> None:
        for key, s in list(self._sessions.items()):
            if s == sid:
                del self._sessions[key]

    def poll(self) -> List[Dict[str, Any]]:
        """Events that have arrived (never waits: the transfer thread fetched them)."""
        self._ensure_thread()
        with self._cond:
            out, self._inbox = self._inbox, []
        kept = []
        for event in out:
            jid = event.get("id")
            if jid in self._abandoned and event.get("event") in TERMINAL:
                self._abandoned.pop(jid, None)
                self._results.pop(jid, None)
                self._command("release", jid)
                continue
            kept.append(event)
        return kept

    def wait_readable(self, timeout: float) -> None:
        """Wait up to ``timeout`` s for an event (blocking callers only: tests, the command line)."""
        self._ensure_thread()
        with self._cond:
            if not self._inbox:
                self._cond.wait(timeout)

    def load_results(self, message: Dict[str, Any]) -> Dict[str, np.ndarray]:
        """The arrays of a ``done`` event (downloaded by the transfer thread before the event was handed out)."""
        return self._results.pop(int(message.get("id")), {})

    # --------------------------------------------------------------------------------------- transfer thread --
    def _command(self, *cmd) -> None:
        self._commands.put(cmd)
        self._ensure_thread()

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._transfer, name="medseg-service-client", daemon=True)
            self._thread.start()

    def _transfer(self) -> None:
        while not self._stop.is_set():
            running = [j for j, v in self._jobs.items() if not v["ended"]]
            try:
                cmd = self._commands.get(timeout=0.02 if running else 0.1)
            except queue.Empty:
                cmd = None
            try:
                if cmd is not None:
                    name, args = cmd[0], cmd[1:]
                    if name == "submit":
                        self._submit_now(*args)
                    elif name == "cancel":
                        self._cancel_now(*args)
                    elif name == "release":
                        self._release_now(*args)
                    continue             # commands first: a cancel is not held up by a fetch
                events, self._pending = self._pending, []
                for jid in running:
                    events += self._fetch(jid, wait=0.2 if len(running) == 1 else 0.0)
                for event in events:
                    if event.get("event") == "done" and event.get("arrays"):
                        try:
                            self._results[int(event["id"])] = self._download(event)
                        except ServiceError as exc:
                            event = self._failure(int(event["id"]), exc)
                if events:
                    with self._cond:
                        self._inbox += events
                        self._cond.notify_all()
            except Exception as exc:  # noqa: BLE001 - the thread must survive; the run fails with one line
                log.exception("MedSeg service client: transfer failed")
                with self._cond:
                    self._inbox.append({"event": "died", "id": 0, "message": f"The model server client failed: {exc}"})
                    self._cond.notify_all()

    def _download(self, message: Dict[str, Any]) -> Dict[str, np.ndarray]:
        jid = int(message.get("id"))
        job = self._jobs.get(jid)
        if job is None:
            return {}
        body = self._request("GET", f"/v1/sessions/{job['sid']}/jobs/{job['job']}/result",
                             timeout=max(self.timeout, 120.0)).content
        arrays, _ = codec.unpack(body)
        self._jobs.pop(jid, None)
        return arrays

    # ----------------------------------------------------------------------------------------------- control --
    def cancel(self, jid: int) -> None:
        self._command("cancel", int(jid))

    def _cancel_now(self, jid: int) -> None:
        job = self._jobs.get(int(jid))
        if job is not None and not job["ended"]:
            try:
                self._request("POST", f"/v1/sessions/{job['sid']}/jobs/{job['job']}/cancel", timeout=5.0)
            except ServiceError as exc:
                log.warning("MedSeg service: cancel failed: %s", exc)

    def release(self, jid: int) -> None:
        """The caller is done with ``jid``: the server forgets it (an uncollected result is dropped)."""
        self._results.pop(int(jid), None)
        self._command("release", int(jid))

    def _release_now(self, jid: int) -> None:
        job = self._jobs.pop(int(jid), None)
        if job is not None:
            try:
                self._request("DELETE", f"/v1/sessions/{job['sid']}/jobs/{job['job']}", timeout=5.0)
            except ServiceError:
                pass

    def abandon(self, jid: int) -> None:
        self.cancel(jid)
        self.release(jid)

    def heartbeat(self) -> Optional[str]:
        return None            # every poll is a request: a lost server shows up there as a ``died`` event

    def reset(self) -> None:
        """Nothing: the server's models and caches are its admin's (the local worker's reset drops them)."""

    def shutdown(self) -> None:
        """Stop the transfer thread and close this client's sessions on the server (volume and models freed there;
        Slicer is exiting or the panel switched away from this server)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        self._thread = None
        for sid in list(self._sessions.values()):
            self._close(sid)
        self._sessions.clear()
        self._jobs.clear()

    close = shutdown

    @property
    def alive(self) -> bool:
        return True


def _remote(url: str) -> bool:
    """Compress uploads except on loopback: zlib costs ~1 s per 100 MB and core (a CT compresses ~1.6x), which a
    network link gains back but loopback does not (benchmarks/bench_service.py)."""
    from urllib.parse import urlparse

    return (urlparse(url).hostname or "").lower() not in ("127.0.0.1", "localhost", "::1")


def _content_key(volume: np.ndarray) -> str:
    a = np.ascontiguousarray(volume)
    h = hashlib.sha1(repr((a.shape, a.dtype.str)).encode())
    h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 120 else text[:117] + "..."


def check_connection(url: str, token: str, timeout: float = 10.0, verify: Any = True) -> Tuple[bool, str]:
    """(ok, one line) for the panel's Test connection button."""
    try:
        info = ServiceClient(url, token, timeout=timeout, verify=verify).hello()
    except MedSegError as exc:
        return False, str(exc)
    return True, (f"Connected to {info.get('server', 'the model server')} at {check_url(url)} as "
                  f"'{info.get('user')}'.")
