"""Client of the model worker process (``python -m medseg_backend.worker``), without threads or blocking reads.

The worker is started on first use with Slicer's own Python (``PythonSlicer``; ``sys.executable`` headless) and kept
alive, so models and the embedding cache stay warm. The client listens on 127.0.0.1; the worker connects back and
proves itself with a one-time token. :meth:`WorkerClient.poll` reads only what has already arrived (non-blocking
socket), so Slicer's main thread never waits on the worker; a QTimer (or any loop) calls it. Volumes are written
once per content key into the private session folder (``/dev/shm`` on Linux) and opened memory-mapped by the
worker. The messages are described in :mod:`medseg_backend.worker.protocol`.

A worker that dies (crash, kill, out of memory) becomes one ``died`` event with a readable line; one that does not
answer a heartbeat within ``hang_timeout`` is killed. The next request starts a fresh worker either way. The worker's
output goes to a log file (:attr:`WorkerClient.log_path`).
"""
from __future__ import annotations

import atexit
import logging
import os
import re
import secrets
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import OrderedDict
from typing import Any, Dict, List, Optional

import numpy as np

from ..errors import WorkerError
from . import protocol as proto

log = logging.getLogger("MedSegSlicer")

LOG_NAME = "MedSegSlicer-worker.log"
LOG_MAX_BYTES = 5 * 2 ** 20


def backend_root() -> str:
    """The folder that holds the ``medseg_backend`` package (put on the worker's PYTHONPATH)."""
    import medseg_backend

    return os.path.dirname(os.path.dirname(os.path.abspath(medseg_backend.__file__)))


def default_python() -> str:
    return sys.executable


def default_log_path() -> str:
    return os.path.join(tempfile.gettempdir(), LOG_NAME)


class WorkerClient:
    """One worker process (started on demand) and the state needed to talk to it. Not thread-safe: use it from
    one thread (Slicer's main thread)."""

    PING_INTERVAL = 1.0

    def __init__(self, python: Optional[str] = None, *, log_path: Optional[str] = None, hang_timeout: float = 60.0,
                 connect_timeout: float = 120.0, drain_limit: float = 20.0, max_volumes: int = 2,
                 module: str = "medseg_backend.worker", env: Optional[Dict[str, str]] = None) -> None:
        self.python = python or default_python()
        self.log_path = log_path or default_log_path()
        self.hang_timeout = float(hang_timeout)
        self.connect_timeout = float(connect_timeout)
        self.drain_limit = float(drain_limit)
        self.max_volumes = max(1, int(max_volumes))
        self.module = module
        self.env = env
        self.info: Dict[str, Any] = {}          # torch version / CUDA, once the worker has loaded torch
        self.last_status: Dict[str, Any] = {}
        self.proc: Optional[subprocess.Popen] = None
        self.folder: Optional[str] = None
        self.worker_pid: Optional[int] = None
        self._sock: Optional[socket.socket] = None
        self._listener: Optional[socket.socket] = None
        self._token = ""
        self._reset_state()
        self._next_id = 1

    def _reset_state(self) -> None:
        self._lines = proto.LineBuffer()
        self._outbox = b""
        self._ready = False
        self._started_at = 0.0
        self._last_heard = 0.0
        self._ping_since: Optional[float] = None
        self._volumes: "OrderedDict[str, Dict[str, Any]]" = OrderedDict()
        self._job_files: Dict[int, List[Dict[str, Any]]] = {}
        self._abandoned: Dict[int, float] = {}
        self._env_sent: set = set()
        self._log_offset = 0
        self._watched: Dict[int, List[Dict[str, Any]]] = {}

    # ------------------------------------------------------------------------------------------------ state --
    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> Optional[int]:
        """The worker's process id (the interpreter itself, also when started through a launcher)."""
        if self.worker_pid:
            return self.worker_pid
        return self.proc.pid if self.proc is not None else None

    @property
    def connected(self) -> bool:
        return self._ready and self._sock is not None

    # --------------------------------------------------------------------------------------------- lifecycle --
    def start(self) -> None:
        """Start the worker unless one runs. Raises :class:`WorkerError` when the interpreter cannot be run."""
        if self.alive:
            return
        if self.proc is not None:            # died while idle: forget it quietly, start afresh
            self._teardown()
        self.folder = proto.make_session_folder()
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        listener.setblocking(False)
        self._token = secrets.token_hex(16)
        env = dict(self.env if self.env is not None else os.environ)
        env[proto.TOKEN_ENV] = self._token
        env["PYTHONPATH"] = os.pathsep.join(p for p in (backend_root(), env.get("PYTHONPATH", "")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        port = listener.getsockname()[1]
        cmd = [self.python, "-m", self.module, "--connect", f"127.0.0.1:{port}", "--folder", self.folder,
               "--parent", str(os.getpid())]
        logfile = self._open_log()
        kwargs: Dict[str, Any] = {}
        if os.name == "nt":
            kwargs["creationflags"] = getattr(subprocess, "CREATE_NO_WINDOW", 0)
        else:
            kwargs["start_new_session"] = True       # Ctrl-C in Slicer's terminal does not reach the worker
        try:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logfile, stderr=subprocess.STDOUT,
                                         env=env, close_fds=True, **kwargs)
        except (OSError, ValueError) as exc:
            listener.close()
            proto.remove_folder(self.folder)
            self.folder = None
            reason = getattr(exc, "strerror", None) or str(exc)
            raise WorkerError(f"The model worker could not be started with '{self.python}' ({reason}): check "
                              "Slicer's Python interpreter (PythonSlicer) and the log " f"{self.log_path}.") from None
        finally:
            logfile.close()
        self._listener = listener
        self._started_at = self._last_heard = time.monotonic()
        log.info("MedSegSlicer: model worker starting (pid %s, %s); log %s", self.proc.pid, self.python,
                 self.log_path)

    def _open_log(self):
        try:
            if os.path.getsize(self.log_path) > LOG_MAX_BYTES:
                os.replace(self.log_path, self.log_path + ".1")
        except OSError:
            pass
        fh = open(self.log_path, "ab")
        fh.write(f"---- {time.strftime('%Y-%m-%d %H:%M:%S')} starting the model worker with {self.python}\n".encode())
        fh.flush()
        self._log_offset = fh.tell()
        return fh

    def shutdown(self, timeout: float = 3.0) -> None:
        """Ask the worker to exit (kill it after ``timeout``), remove the session folder."""
        if self.proc is None:
            return
        if self.connected:
            try:
                self._send({"op": "shutdown", "id": self._new_id()})
            except OSError:
                pass
        deadline = time.monotonic() + timeout
        while self.alive and time.monotonic() < deadline:
            time.sleep(0.02)
        self.kill()

    def kill(self) -> None:
        """Stop the worker now (and its interpreter when started through a launcher)."""
        if self.proc is None:
            return
        if self.worker_pid and self.worker_pid != self.proc.pid and self.proc.poll() is None:
            _kill_pid(self.worker_pid)          # the interpreter behind a launcher (PythonSlicer)
        try:
            self.proc.kill()
        except OSError:
            pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:  # pragma: no cover - a process that survives SIGKILL
            log.warning("MedSegSlicer: model worker %s did not exit", self.proc.pid)
        self._teardown()

    def _teardown(self) -> None:
        for s in (self._sock, self._listener):
            if s is not None:
                try:
                    s.close()
                except OSError:
                    pass
        self._sock = self._listener = None
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.kill()
            except OSError:
                pass
        self.proc = None
        self.worker_pid = None
        proto.remove_folder(self.folder)
        self.folder = None
        self._reset_state()

    # ----------------------------------------------------------------------------------------------- sending --
    def _new_id(self) -> int:
        jid = self._next_id
        self._next_id += 1
        return jid

    def _send(self, message: Dict[str, Any]) -> None:
        self._outbox += proto.encode(message)
        self._flush()

    def _flush(self) -> None:
        if not self._outbox or not self.connected:
            return
        try:
            sent = self._sock.send(self._outbox)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return          # the read side reports the death
        self._outbox = self._outbox[sent:]

    def _forwarded_env(self) -> Dict[str, Optional[str]]:
        env = {k: v for k, v in os.environ.items() if k.startswith(proto.ENV_PREFIX) and k != proto.TOKEN_ENV}
        for gone in self._env_sent - set(env):
            env[gone] = None
        self._env_sent = {k for k, v in env.items() if v is not None}
        return env

    def submit(self, op: str, params: Optional[Dict[str, Any]] = None, arrays: Optional[Dict[str, np.ndarray]] = None,
               keys: Optional[Dict[str, str]] = None) -> int:
        """Queue a request (starting the worker if needed); returns its id. Arrays are written now; a keyed array
        (the volume) only when the worker does not hold that key yet."""
        self._check_drain()
        self.start()
        jid = self._new_id()
        refs: Dict[str, Dict[str, Any]] = {}
        files: List[Dict[str, Any]] = []
        for name, array in (arrays or {}).items():
            key = (keys or {}).get(name)
            if key:
                key = re.sub(r"[^0-9A-Za-z_-]", "", str(key))[:64]
                if key not in self._volumes:
                    ref = proto.save_array(self.folder, f"vol-{key}", array)
                    self._send({"op": "open_volume", "id": self._new_id(), "params": {"key": key},
                                "arrays": {"volume": ref}})
                    self._volumes[key] = ref
                    while len(self._volumes) > self.max_volumes:
                        old, old_ref = self._volumes.popitem(last=False)
                        self._send({"op": "close_volume", "id": self._new_id(), "params": {"key": old}})
                        proto.delete_file(self.folder, old_ref)
                self._volumes.move_to_end(key)
                refs[name] = {"key": key}
            else:
                ref = proto.save_array(self.folder, f"in-{jid}-{name}", array)
                files.append(ref)
                refs[name] = ref
        self._job_files[jid] = files
        self._send({"op": op, "id": jid, "params": params or {}, "arrays": refs, "env": self._forwarded_env()})
        return jid

    def watch(self, jid: int) -> None:
        """Keep the events of request ``jid`` (a background request) out of :meth:`poll`'s answer: a run polling
        for its own events never takes them; :meth:`watched` hands them over."""
        self._watched.setdefault(int(jid), [])

    def watched(self, jid: int) -> List[Dict[str, Any]]:
        """The events of a watched request that :meth:`poll` has read since the last call."""
        out, self._watched[int(jid)] = self._watched.get(int(jid), []), []
        return out

    def unwatch(self, jid: int) -> None:
        self._watched.pop(int(jid), None)

    def cancel(self, jid: int) -> None:
        if self.proc is not None:
            self._send({"op": "cancel", "id": 0, "params": {"job": int(jid)}})

    def ping(self) -> None:
        self._send({"op": "status", "id": 0})
        self._ping_since = time.monotonic()

    def release(self, jid: int) -> None:
        """Delete the input files of a finished request."""
        for ref in self._job_files.pop(jid, []):
            proto.delete_file(self.folder, ref)

    def abandon(self, jid: int) -> None:
        """The caller no longer waits for ``jid`` (cancelled): its late result is dropped when it arrives."""
        self._abandoned[jid] = time.monotonic()
        self.release(jid)

    def _check_drain(self) -> None:
        """A cancelled request that still has not stopped after ``drain_limit`` s: replace the worker."""
        if self._abandoned and self.proc is not None:
            oldest = min(self._abandoned.values())
            if time.monotonic() - oldest > self.drain_limit:
                log.warning("MedSegSlicer: a cancelled run did not stop within %.0f s: restarting the model worker",
                            self.drain_limit)
                self.kill()

    def reset(self) -> None:
        """Drop the worker's models, caches and volumes (no-op when none runs)."""
        if self.alive:
            self._send({"op": "reset", "id": self._new_id()})
            for ref in self._volumes.values():
                proto.delete_file(self.folder, ref)
            self._volumes.clear()

    # --------------------------------------------------------------------------------------------- receiving --
    def poll(self) -> List[Dict[str, Any]]:
        """Messages that have arrived (never blocks). A dead worker gives one ``{"event": "died", "message"}``."""
        if self.proc is None:
            return []
        if self._sock is None:
            self._accept()
        out: List[Dict[str, Any]] = []
        if self._sock is not None:
            self._flush()
            data, eof = self._recv_available()
            if data:
                self._last_heard = time.monotonic()
                self._ping_since = None
                for msg in self._lines.feed(data):
                    msg = self._handle(msg)
                    if msg is not None:
                        out.append(msg)
            if eof:
                out.append(self._died())
                return out
        if self._sock is None or not self._ready:
            if self.proc.poll() is not None:
                out.append(self._died())
            elif time.monotonic() - self._started_at > self.connect_timeout:
                message = (f"The model worker did not start within {self.connect_timeout:.0f} s: it was stopped; run "
                           f"again, and see the log {self.log_path} if this repeats.")
                self.kill()
                out.append({"event": "died", "id": 0, "message": message})
        return out

    def _accept(self) -> None:
        try:
            conn, _ = self._listener.accept()
        except (BlockingIOError, InterruptedError, OSError, AttributeError):
            return
        conn.setblocking(False)
        try:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        self._sock = conn

    def _recv_available(self):
        chunks, eof = [], False
        while True:
            try:
                data = self._sock.recv(1 << 16)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                eof = True
                break
            if not data:
                eof = True
                break
            chunks.append(data)
        return b"".join(chunks), eof

    def _handle(self, msg: Dict[str, Any]) -> Optional[Dict[str, Any]]:
        event = msg.get("event")
        if not self._ready:
            if event == "ready" and secrets.compare_digest(str(msg.get("token", "")), self._token):
                self._ready = True
                self.worker_pid = int(msg.get("pid") or 0) or None
                if self._listener is not None:
                    self._listener.close()
                    self._listener = None
                self._flush()
                return msg
            log.warning("MedSegSlicer: a connection without the worker's token was refused")
            self._sock.close()
            self._sock = None
            return None
        if event == "info":
            self.info = dict(msg.get("torch") or {})
        elif event == "status":
            self.last_status = msg
            if msg.get("torch"):
                self.info = dict(msg["torch"])
        jid = msg.get("id")
        if jid in self._watched:            # a background request's events: kept for its owner, not returned
            self._watched[jid].append(msg)
            return None
        if jid in self._abandoned and event in ("done", "error", "cancelled"):
            self._abandoned.pop(jid, None)
            for ref in (msg.get("arrays") or {}).values():
                proto.delete_file(self.folder, ref)
            return None
        return msg

    def load_results(self, message: Dict[str, Any]) -> Dict[str, np.ndarray]:
        """The arrays of a ``done`` event, read into memory; their files are deleted."""
        out = {}
        for name, ref in (message.get("arrays") or {}).items():
            try:
                out[name] = proto.load_array(self.folder, ref, mmap=False)
            finally:
                proto.delete_file(self.folder, ref)
        return out

    def heartbeat(self) -> Optional[str]:
        """Call while waiting for a request: pings a quiet worker; a ping unanswered for ``hang_timeout`` s kills
        the worker and returns the message to show (else None)."""
        if not self.connected:
            return None
        now = time.monotonic()
        if self._ping_since is not None:
            if now - self._ping_since > self.hang_timeout:
                self.kill()
                return (f"The model worker stopped answering for {self.hang_timeout:.0f} s: it was stopped and nothing "
                        "was written; run again to start a fresh worker.")
        elif now - self._last_heard > self.PING_INTERVAL:
            self.ping()
        return None

    def wait_readable(self, timeout: float) -> None:
        """Sleep up to ``timeout`` s, waking early when the worker has sent something (blocking callers only)."""
        s = self._sock if self._sock is not None else self._listener
        if s is None:
            time.sleep(timeout)
            return
        try:
            select.select([s], [], [], timeout)
        except (OSError, ValueError):
            time.sleep(timeout)

    def _died(self) -> Dict[str, Any]:
        rc = None
        if self.proc is not None:
            try:
                rc = self.proc.wait(2)
            except subprocess.TimeoutExpired:
                rc = None
        tail = self._log_tail()
        if not self._ready:
            why = tail or (f"exit code {rc}" if rc is not None else "no connection")
            message = (f"The model worker could not start ({why}): check that Slicer's Python ({self.python}) has "
                       f"the dependencies (MedSeg panel > Install dependencies); log: {self.log_path}")
        else:
            if rc is not None and rc < 0:
                how = f"killed by signal {-rc}" + (" - out of memory?" if -rc == getattr(signal, "SIGKILL", 9) else "")
            elif rc is not None:
                how = f"exit code {rc}"
            else:
                how = "connection lost"
            message = (f"The model worker stopped unexpectedly ({how}): nothing was written; run again to start a "
                       f"fresh worker (log: {self.log_path}).")
        log.error("MedSegSlicer: %s", message)
        self._teardown()
        return {"event": "died", "id": 0, "message": message}

    def _log_tail(self) -> str:
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(self._log_offset)
                text = fh.read()[-20000:].decode("utf-8", "replace")
        except OSError:
            return ""
        lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith((" ", "\t"))]
        lines = [ln for ln in lines if not ln.startswith("Traceback")]
        return lines[-1][:200] if lines else ""


def _kill_pid(pid: int) -> None:
    try:
        if os.name == "nt":
            os.kill(pid, signal.SIGTERM)          # TerminateProcess
        else:
            os.kill(pid, signal.SIGKILL)
    except (OSError, ProcessLookupError):
        pass


# -------------------------------------------------------------------------------------------- shared client --
_shared: Optional[WorkerClient] = None
_config: Dict[str, Any] = {}


def configure(**options) -> None:
    """Options of the shared client (``python``, ``log_path``, ``hang_timeout``...); a running shared worker with
    another interpreter is shut down (the next run starts the new one)."""
    global _shared
    _config.update({k: v for k, v in options.items() if v is not None})
    if _shared is not None:
        if _shared.python != _config.get("python", _shared.python) or \
                _shared.log_path != _config.get("log_path", _shared.log_path):
            _shared.shutdown()
            _shared = None
        else:
            for k in ("hang_timeout", "connect_timeout", "drain_limit"):
                if k in _config:
                    setattr(_shared, k, float(_config[k]))


def shared_client() -> WorkerClient:
    """The process-wide client used by the Slicer module (one worker for all scenes and effects)."""
    global _shared
    if _shared is None:
        _shared = WorkerClient(**_config)
    return _shared


def shutdown_shared() -> None:
    global _shared
    if _shared is not None:
        try:
            _shared.shutdown()
        finally:
            _shared = None


atexit.register(shutdown_shared)
