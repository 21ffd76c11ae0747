"""One editing session on the server: the uploaded volume, the loaded models and MedSAM's embedding cache, and
the session's runs. A plain class; the service runs each instance as a named Ray actor (see :mod:`.app`).

Runs go through :class:`medseg_backend.worker.handlers.Handlers` exactly as in the local worker (same operations,
same ``params``), one after the other in a thread of the session; ``events`` / ``result`` / ``cancel`` are answered
meanwhile (the actor is threaded). Events carry the worker protocol's shapes (``progress``, ``partial``, ``done``,
``error``, ``cancelled``) so the client hands them to the Slicer layer unchanged.

Bounds: the volume and each run's arrays are at most ``max_upload`` bytes (decompressed); MedSAM's embedding cache
at most ``cache_mb``; the results of at most :data:`KEEP_JOBS` finished runs wait for their client. A session that
is idle (no request, no run) for ``idle_s`` seconds ends itself; so does :meth:`close`. With ``spool`` set the
volume is kept in a file there (memory-mapped) and the file is removed when the session ends; without it nothing of
the volume is written to disk.
"""
from __future__ import annotations

import os
import queue
import threading
import time
import traceback
from collections import OrderedDict
from typing import Any, Dict, List, Optional

import numpy as np

from ..errors import CancelledError, InputError
from ..progress import CancelToken
from .. import runspec
from . import codec

#: The operations a client may run on the service (weights management stays with the server's admin).
SERVICE_OPS = ("encode", "segment_box", "segment_examples", "sleep")
KEEP_JOBS = 4
PROGRESS_INTERVAL = 0.05
MAX_WAIT = 10.0


class _Job:
    def __init__(self, jid: int, op: str, params: Dict[str, Any], arrays: Dict[str, np.ndarray]) -> None:
        self.id, self.op, self.params, self.arrays = jid, op, params, arrays
        self.token = CancelToken()
        self.events: List[Dict[str, Any]] = []
        self.out: Optional[Dict[str, np.ndarray]] = None
        self.ended = False
        self.ended_at = 0.0


class Session:
    def __init__(self, owner: str, sid: str, config: Dict[str, Any]) -> None:
        self.owner, self.sid = owner, sid
        self.max_upload = int(config.get("max_upload_bytes") or 0) or None
        self.idle_s = float(config.get("idle_s", 900.0))
        self.spool = config.get("spool") or None
        os.environ["MEDSEG_CACHE_MB"] = str(config.get("cache_mb", 1024))
        cpus = config.get("session_cpus") or 1
        os.environ.setdefault("MEDSEG_NUM_THREADS", str(max(1, int(cpus))))
        from ..worker.handlers import Handlers

        self.handlers = Handlers()
        self.volume: Optional[np.ndarray] = None
        self._spool_file: Optional[str] = None
        self._jobs: "OrderedDict[int, _Job]" = OrderedDict()
        self._next = 1
        self._cond = threading.Condition()
        self._queue: "queue.Queue[Optional[_Job]]" = queue.Queue()
        self._running: Optional[_Job] = None
        self._last_used = time.monotonic()
        self._closed = False
        threading.Thread(target=self._work_loop, name="medseg-session-runs", daemon=True).start()
        threading.Thread(target=self._watch_idle, name="medseg-session-idle", daemon=True).start()

    # ------------------------------------------------------------------------------------------------ volume --
    def open(self, body: bytes) -> Dict[str, Any]:
        """Decode the uploaded volume (``{"volume"}``) and keep it; returns its shape and dtype."""
        self._touch()
        arrays, _ = codec.unpack(body, self.max_upload)
        volume = arrays.get("volume")
        if volume is None or volume.ndim not in (2, 3):
            raise InputError("Malformed upload: opening a session needs one 2-D or 3-D array named 'volume'.")
        if self.spool:
            os.makedirs(self.spool, mode=0o700, exist_ok=True)     # on every machine a session may land on
            path = os.path.join(self.spool, f"medseg-{self.sid}.npy")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                np.save(fh, volume, allow_pickle=False)
            self._spool_file = path
            volume = np.load(path, mmap_mode="r", allow_pickle=False)
        self.volume = volume
        return {"session": self.sid, "shape": list(volume.shape), "dtype": volume.dtype.str, "pid": os.getpid()}

    # -------------------------------------------------------------------------------------------------- runs --
    def submit(self, body: bytes) -> Dict[str, Any]:
        """Queue a run: ``meta`` ``{"op", "params"}`` and its extra arrays (seed masks, examples)."""
        self._touch()
        arrays, meta = codec.unpack(body, self.max_upload)
        op, params = meta.get("op"), meta.get("params")
        if op not in SERVICE_OPS:
            raise InputError(f"Malformed run: operation {op!r} is not one the service runs; use one of "
                             f"{', '.join(SERVICE_OPS)}.")
        if not isinstance(params, dict):
            raise InputError(f"Malformed run: the parameters of '{op}' are not a JSON object; send the run spec's "
                             "message as it is.")
        if "volume" in arrays:
            raise InputError("Malformed run: the volume is the session's; send only seeds and examples with a run.")
        if op in runspec.SPECS:
            runspec.from_message(op, params)     # an invalid run spec is refused here (400), before it is queued
        if self.volume is None:
            raise InputError("This session has no volume: open the session with one first.")
        arrays["volume"] = self.volume
        with self._cond:
            jid = self._next
            self._next += 1
            job = _Job(jid, op, params, arrays)
            self._jobs[jid] = job
            self._prune()
        self._queue.put(job)
        return {"job": jid}

    def _prune(self) -> None:
        ended = [j for j in self._jobs.values() if j.ended]
        for job in ended[:max(0, len(ended) - KEEP_JOBS)]:
            self._jobs.pop(job.id, None)

    def _emit(self, job: _Job, event: Dict[str, Any]) -> None:
        with self._cond:
            job.events.append(dict(event, id=job.id))
            self._cond.notify_all()

    def _work_loop(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            self._running = job
            try:
                self._run(job)
            finally:
                self._running = None
                self._touch()

    def _run(self, job: _Job) -> None:
        last = [0.0]

        def progress(fraction: float, message: str) -> None:
            now = time.monotonic()
            if now - last[0] >= PROGRESS_INTERVAL or fraction >= 1.0:
                last[0] = now
                self._emit(job, {"event": "progress", "fraction": float(fraction), "message": str(message)})

        def partial(payload: Dict[str, Any]) -> None:
            self._emit(job, dict(payload, event="partial"))

        end: Dict[str, Any]
        try:
            job.token.check()
            fields, out = self.handlers.run(job.op, job.params, job.arrays, progress, job.token, partial=partial)
            job.token.check()
            job.out = out
            end = {"event": "done", "result": fields,
                   "arrays": {k: {"dtype": np.asarray(v).dtype.str, "shape": list(np.shape(v))} for k, v in out.items()}}
        except CancelledError as exc:
            end = {"event": "cancelled", "message": str(exc)}
        except BaseException as exc:  # noqa: BLE001 - every error goes back to the client as one event
            from ..worker.protocol import error_event

            end = error_event(exc, traceback.format_exc())
        job.arrays = {}
        with self._cond:
            job.ended, job.ended_at = True, time.monotonic()
            job.events.append(dict(end, id=job.id))
            self._cond.notify_all()

    def _job(self, jid: int) -> _Job:
        job = self._jobs.get(int(jid))
        if job is None:
            raise LookupError(f"Run {jid} is not known to this session (finished and collected, or never started).")
        return job

    def events(self, jid: int, after: int = 0, wait: float = 0.0) -> Dict[str, Any]:
        """The events of run ``jid`` after the first ``after``; waits up to ``wait`` s for a new one."""
        self._touch()
        deadline = time.monotonic() + min(max(0.0, float(wait)), MAX_WAIT)
        with self._cond:
            job = self._job(jid)
            while len(job.events) <= after and not job.ended:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            return {"events": job.events[max(0, int(after)):], "ended": job.ended}

    def result(self, jid: int) -> bytes:
        """The arrays of a finished run, packed (label maps as their non-zero box); collected once."""
        self._touch()
        with self._cond:
            job = self._job(jid)
            out = job.out
            if not job.ended or out is None:
                raise LookupError(f"Run {jid} has no result to collect (still running, failed or collected).")
            self._jobs.pop(job.id, None)
        return codec.pack(out, crop=("labels", "mask"))

    def cancel(self, jid: int) -> Dict[str, Any]:
        self._touch()
        with self._cond:
            job = self._jobs.get(int(jid))
        if job is not None:
            job.token.cancel()
        return {"cancelled": job is not None}

    def forget(self, jid: int) -> Dict[str, Any]:
        with self._cond:
            job = self._jobs.pop(int(jid), None)
        if job is not None:
            job.token.cancel()
        return {"forgotten": job is not None}

    # ------------------------------------------------------------------------------------------------- state --
    def info(self) -> Dict[str, Any]:
        self._touch()
        running = self._running
        return {"session": self.sid, "owner": self.owner, "pid": os.getpid(),
                "shape": list(self.volume.shape) if self.volume is not None else None,
                "busy": running is not None, "op": running.op if running else None,
                "engines": self.handlers.engines.describe()}

    def _touch(self) -> None:
        self._last_used = time.monotonic()

    def idle_for(self) -> float:
        return 0.0 if self._running is not None else time.monotonic() - self._last_used

    def close(self) -> Dict[str, Any]:
        """Drop everything (volume, models, spooled file); the caller ends the actor."""
        if not self._closed:
            self._closed = True
            for job in list(self._jobs.values()):
                job.token.cancel()
            self._queue.put(None)
            self.volume = None
            self.handlers.engines.clear()
            if self._spool_file:
                try:
                    os.remove(self._spool_file)
                except OSError:
                    pass
                self._spool_file = None
        return {"closed": self.sid}

    def _watch_idle(self) -> None:
        step = max(0.2, min(30.0, self.idle_s / 4))
        while not self._closed:
            time.sleep(step)
            if self.idle_for() > self.idle_s:
                self.close()
                _end_actor()
                return


def _end_actor() -> None:
    """End the Ray actor this session runs in (its name is freed); outside Ray, nothing."""
    try:
        import ray

        if ray.is_initialized():
            ray.kill(ray.get_runtime_context().current_actor, no_restart=True)
    except Exception:  # noqa: BLE001 - not in an actor (tests of the plain class)
        pass
