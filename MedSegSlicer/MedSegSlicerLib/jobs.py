"""Run one model job at a time without blocking the GUI thread; hand its outcome back to the GUI thread.

The GUI thread prepares plain inputs (the job never touches MRML nodes), calls :meth:`JobRunner.start`, and polls
:meth:`JobRunner.poll` from a timer (the effects use a 100 ms ``QTimer`` and :func:`poll_step`). A job is either

* a :class:`~medseg_backend.worker.protocol.Request` - model work, run by the **worker process** (see
  :mod:`medseg_backend.worker.client`): Slicer's Python keeps the GIL on its main thread while Qt runs, so model work in a thread
  of that interpreter would crawl. A request holding in-process objects (a stand-in network in tests) runs in a
  thread of this process through the same handler code;
* a plain callable ``work(progress, cancel)`` - light in-process work (downloads), run in a thread.

``poll`` returns ``None`` while the job runs and a :class:`JobOutcome` once, after it ended:

* ``succeeded`` - the result, to be written into the scene by the caller (on the GUI thread);
* ``failed`` - a readable one-line message (``MedSegError`` text, a stopped worker, or a short summary of an
  unexpected error whose traceback goes to the log);
* ``cancelled`` - the user cancelled; nothing is written. A worker job ends within :data:`CANCEL_GRACE` s of the
  cancel even when the model is in the middle of a batch (the worker drops the late result);
* ``discarded`` - the job finished but its inputs changed meanwhile (volume deleted or replaced,
  segmentation deleted): the result is thrown away with a message.

A second :meth:`start` while a job runs raises :class:`JobBusyError`.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from medseg_backend.progress import CancelToken
from medseg_backend.worker import protocol as proto
from medseg_backend.worker.protocol import Request, RunResult

from .errors import CancelledError, InputError, JobBusyError, MedSegError

log = logging.getLogger("MedSegSlicer")

Work = Callable[[Callable[[float, str], None], CancelToken], Any]

#: Seconds after a cancel at which a worker job is reported cancelled even if the worker is still finishing a batch.
CANCEL_GRACE = 0.5
CANCELLED_MESSAGE = "Run cancelled by the user: nothing was written."


@dataclass
class JobOutcome:
    status: str                    # succeeded | failed | cancelled | discarded
    result: Any = None
    message: str = ""
    label: str = ""
    seconds: float = 0.0
    error: Optional[BaseException] = None

    @property
    def ok(self) -> bool:
        return self.status == "succeeded"


class NodeGuard:
    """Remembers the identity and content stamp of input nodes, to detect them being deleted or replaced.

    For a volume node the stamp is its image data object and that object's modified time, its IJK-to-RAS matrix
    and its parent transform: loading another image into the node, editing voxels, or moving it all count as
    "replaced". Other nodes (segmentation) are only checked for still being in the scene.
    """

    def __init__(self, scene, volume_node=None, other_nodes=()):
        self.scene = scene
        self._volume = None
        if volume_node is not None:
            self._volume = (volume_node.GetID(), volume_node.GetName(), self._volume_stamp(volume_node))
        self._others = [(n.GetID(), n.GetName(), n.GetClassName()) for n in other_nodes if n is not None]
        gone = self.problem(before=True)
        if gone is not None:  # deleted before the run: refused now, before any work
            raise InputError(gone)

    @staticmethod
    def _volume_stamp(node) -> Tuple:
        from . import geometry

        image = node.GetImageData()
        scalars = image.GetPointData().GetScalars() if image is not None else None
        ijk = tuple(geometry.volume_ijk_to_node(node).ravel().round(9).tolist())
        return (image.GetAddressAsString("vtkImageData") if image is not None else None,
                scalars.GetAddressAsString("vtkDataArray") if scalars is not None else None,
                scalars.GetMTime() if scalars is not None else None,
                tuple(image.GetDimensions()) if image is not None else None, ijk, node.GetTransformNodeID())

    def problem(self, before: bool = False) -> Optional[str]:
        """None when all inputs are as they were, else a one-line message. ``before``: checked as the run is
        prepared (a node no longer in the scene was deleted before the run, not while the model ran)."""
        if self._volume is not None:
            vid, name, stamp = self._volume
            node = self.scene.GetNodeByID(vid) if vid else None
            if node is None:
                if before:
                    return (f"Volume '{name}' is no longer in the scene (it was deleted): select a volume of the "
                            "scene and run again.")
                return f"Volume '{name}' was deleted while the model ran: result discarded; run again."
            if self._volume_stamp(node) != stamp:
                return (f"Volume '{name}' was replaced or changed while the model ran: result discarded; "
                        "run again on the current volume.")
        for nid, name, cls in self._others:
            node = self.scene.GetNodeByID(nid) if nid else None
            if node is None or node.GetClassName() != cls:
                if before:
                    return (f"'{name}' is no longer in the scene (it was deleted): select a node of the scene and "
                            "run again.")
                return f"'{name}' was deleted while the model ran: result discarded; select it again and rerun."
        return None


class _Job:
    """Common state of a running job; subclasses implement :meth:`update` (non-blocking) and :meth:`block`."""

    def __init__(self, label: str, token: CancelToken, guard: Optional[NodeGuard]) -> None:
        self.label = label
        self.token = token
        self.guard = guard
        self.started = time.monotonic()
        self.result: Any = None
        self.error: Optional[BaseException] = None
        self.trace = ""
        self.finished = False
        self.progress: Tuple[float, str] = (0.0, f"{label}: starting")
        self.partials: List[Dict[str, Any]] = []     # finished slices of a progressive run, not yet taken

    def update(self) -> None:
        raise NotImplementedError

    def block(self, seconds: float) -> None:
        time.sleep(seconds)


class _ThreadJob(_Job):
    def __init__(self, work: Work, label: str, token: CancelToken, guard: Optional[NodeGuard],
                 partials: Optional[List[Dict[str, Any]]] = None) -> None:
        super().__init__(label, token, guard)
        if partials is not None:
            self.partials = partials      # filled by the work's thread
        self._queue: "queue.Queue[Tuple[float, str]]" = queue.Queue()
        self._done = threading.Event()

        def target() -> None:
            try:
                self.result = work(lambda f, m: self._queue.put((float(f), str(m))), token)
            except BaseException as exc:  # noqa: BLE001 - every error goes back to the GUI thread
                self.error = exc
                self.trace = traceback.format_exc()
            finally:
                self._done.set()

        self.thread = threading.Thread(target=target, name=f"MedSegSlicer-{label}", daemon=True)
        self.thread.start()

    def update(self) -> None:
        try:
            while True:
                self.progress = self._queue.get_nowait()
        except queue.Empty:
            pass
        if self._done.is_set() and not self.finished:
            self.thread.join()
            self.finished = True

    def block(self, seconds: float) -> None:
        self._done.wait(seconds)


class _WorkerJob(_Job):
    def __init__(self, client, request: Request, label: str, token: CancelToken, guard: Optional[NodeGuard]) -> None:
        super().__init__(label, token, guard)
        self.client = client
        self.request = request
        self.cancel_sent: Optional[float] = None
        self.id = client.submit(request.op, request.params, request.arrays, request.keys)

    def _end(self, error: Optional[BaseException] = None, trace: str = "") -> None:
        self.error, self.trace, self.finished = error, trace, True
        self.client.release(self.id)

    def update(self) -> None:
        if self.finished:
            return
        try:
            messages = self.client.poll()
        except Exception as exc:  # noqa: BLE001 - a broken connection is a failed run
            return self._end(exc, traceback.format_exc())
        for msg in messages:
            event = msg.get("event")
            if event == "died":
                from .errors import WorkerError

                return self._end(WorkerError(str(msg.get("message"))))
            if msg.get("id") != self.id:
                continue
            if event == "progress":
                self.progress = (float(msg.get("fraction", 0.0)), str(msg.get("message", "")))
            elif event == "partial":
                self.partials.append({k: v for k, v in msg.items() if k not in ("event", "id")})
            elif event == "done":
                try:
                    result = proto.make_result(msg.get("result") or {}, self.client.load_results(msg))
                    if self.request.finish is not None and not self.token.cancelled:
                        result = self.request.finish(result)
                except Exception as exc:  # noqa: BLE001 - a broken result is a failed run
                    return self._end(exc, traceback.format_exc())
                self.result = result
                return self._end()
            elif event == "error":
                return self._end(proto.error_from_event(msg), str(msg.get("trace") or ""))
            elif event == "cancelled":
                return self._end(CancelledError(str(msg.get("message") or CANCELLED_MESSAGE)))
        now = time.monotonic()
        if self.token.cancelled:
            if self.cancel_sent is None:
                self.client.cancel(self.id)
                self.cancel_sent = now
            elif now - self.cancel_sent >= CANCEL_GRACE:
                # The model is inside a batch: report the cancel now, let the worker drop the late result.
                self.client.abandon(self.id)
                return self._end(CancelledError(CANCELLED_MESSAGE))
        hung = self.client.heartbeat()
        if hung:
            from .errors import WorkerError

            return self._end(WorkerError(hung))

    def block(self, seconds: float) -> None:
        self.client.wait_readable(seconds)


def execute_local(handlers, request: Request, progress, cancel: CancelToken, partial=None) -> RunResult:
    """Run ``request`` in this process through the same handler code as the worker."""
    fields, arrays = handlers.run(request.op, request.params, request.arrays, progress, cancel, request.local,
                                  partial=partial)
    result = proto.make_result(fields, arrays)
    return request.finish(result) if request.finish is not None else result


class JobRunner:
    """One job at a time; see the module docstring. ``client``: a :class:`~medseg_backend.worker.client.WorkerClient` (or a
    model server's client) or a function returning one (called at each worker job's start); ``local``: the
    in-process handlers for requests that cannot go to the worker (and for all requests when there is no client)."""

    def __init__(self, client=None, local=None) -> None:
        self._client = client
        self._local = local
        self._job: Optional[_Job] = None
        self._last_progress: Tuple[float, str] = (0.0, "")
        self._leftover: List[Dict[str, Any]] = []
        self._lock = threading.Lock()

    # ------------------------------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._job is not None

    @property
    def label(self) -> str:
        return self._job.label if self._job else ""

    @property
    def client(self):
        c = self._client
        if c is not None and not hasattr(c, "submit"):
            c = c()             # asked at every start: the place models run can change between runs
        return c

    @property
    def local(self):
        if self._local is None:
            from medseg_backend.worker.handlers import Handlers

            self._local = Handlers()
        return self._local

    def start(self, work: Union[Work, Request], *, label: str = "run",
              guard: Optional[NodeGuard] = None) -> CancelToken:
        """Start a job (see the module docstring). Raises :class:`JobBusyError` if one runs, and a
        :class:`~medseg_backend.errors.WorkerError` when the worker cannot be started."""
        with self._lock:
            if self._job is not None:
                raise JobBusyError(f"'{self._job.label}' is still running: wait for it to finish or press Cancel, "
                                   "then start again.")
            token = CancelToken()
            if isinstance(work, Request):
                client = None if work.in_process_only else self.client
                if client is None:
                    request, handlers = work, self.local
                    partials: List[Dict[str, Any]] = []
                    job: _Job = _ThreadJob(lambda p, c: execute_local(handlers, request, p, c, partials.append),
                                           label, token, guard, partials)
                else:
                    job = _WorkerJob(client, work, label, token, guard)
            else:
                job = _ThreadJob(work, label, token, guard)
            self._last_progress = job.progress
            self._leftover = []
            self._job = job
            return token

    def cancel(self) -> bool:
        """Ask the running job to stop. False if nothing runs."""
        job = self._job
        if job is None:
            return False
        job.token.cancel()
        job.update()
        return True

    def progress(self) -> Tuple[float, str]:
        """Latest (fraction, message) reported by the running job."""
        job = self._job
        if job is not None:
            job.update()
            self._last_progress = job.progress
        return self._last_progress

    def partials(self) -> List[Tuple[int, str, int, Any]]:
        """The slices a progressive run has finished since the last call, as ``(object, axis, k, 2-D mask)``
        (taken: each is returned once; never blocks)."""
        job = self._job
        if job is None:                # what arrived with the end of the last job, once
            out, self._leftover = self._leftover, []
        else:
            job.update()
            n = len(job.partials)      # a worker thread may append meanwhile: take only what is there now
            out = job.partials[:n]
            del job.partials[:n]
        return [(int(p["object"]), str(p["axis"]), int(p["slice"]), proto.unpack_mask(p["mask"])) for p in out]

    def poll(self) -> Optional[JobOutcome]:
        """Call on the GUI thread; never blocks. ``None`` while running (or idle); the :class:`JobOutcome` once at
        the end."""
        job = self._job
        if job is None:
            return None
        job.update()
        self._last_progress = job.progress
        if not job.finished:
            return None
        self._job = None
        self._leftover = list(job.partials)
        return _outcome(job)

    def wait(self, timeout: Optional[float] = None, progress: Optional[Callable[[float, str], None]] = None,
             cancel: Optional[CancelToken] = None) -> Optional[JobOutcome]:
        """Block until the job ends (batch use and tests), forwarding progress and a cancel token; None on
        timeout or when nothing runs."""
        job = self._job
        if job is None:
            return None
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if cancel is not None and cancel.cancelled and not job.token.cancelled:
                self.cancel()
            outcome = self.poll()
            if progress is not None:
                progress(*self._last_progress)
            if outcome is not None:
                return outcome
            if deadline is not None and time.monotonic() >= deadline:
                return None
            job.block(0.05)


def poll_step(runner: JobRunner) -> Tuple[float, str, Optional[JobOutcome]]:
    """What the effects' QTimer does on every tick: read what the job sent (never blocks), return the progress
    to show and the outcome once the job has ended."""
    outcome = runner.poll()
    fraction, message = runner.progress()
    return fraction, message, outcome


def _outcome(job: _Job) -> JobOutcome:
    seconds = time.monotonic() - job.started
    err = job.error
    if err is not None:
        if isinstance(err, CancelledError) or (job.token.cancelled and not isinstance(err, MedSegError)):
            return JobOutcome("cancelled", message=str(err) or CANCELLED_MESSAGE,
                              label=job.label, seconds=seconds, error=err)
        if isinstance(err, MedSegError):
            return JobOutcome("failed", message=str(err), label=job.label, seconds=seconds, error=err)
        log.error("%s failed:\n%s", job.label, job.trace or getattr(err, "trace", ""))
        first = (str(err).strip().splitlines() or [""])[0][:200]
        kind = getattr(err, "type_name", None) or type(err).__name__
        return JobOutcome("failed", message=f"{job.label} failed with {kind}: {first}: see the "
                          "Python console / log for details, and report it if it persists.",
                          label=job.label, seconds=seconds, error=err)
    if job.token.cancelled:
        return JobOutcome("cancelled", message=CANCELLED_MESSAGE, label=job.label,
                          seconds=seconds)
    if job.guard is not None:
        problem = job.guard.problem()
        if problem:
            return JobOutcome("discarded", message=problem, label=job.label, seconds=seconds)
    return JobOutcome("succeeded", result=job.result, label=job.label, seconds=seconds)


def run_blocking(work: Work, *, label: str = "run", guard: Optional[NodeGuard] = None,
                 progress: Optional[Callable[[float, str], None]] = None,
                 cancel: Optional[CancelToken] = None) -> JobOutcome:
    """Run ``work`` on the calling thread with the same outcome rules (used by the scripted Logic)."""
    token = cancel or CancelToken()
    job = _Job(label, token, guard)
    try:
        job.result = work(progress or (lambda f, m: None), token)
    except BaseException as exc:  # noqa: BLE001
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        job.error = exc
        job.trace = traceback.format_exc()
    return _outcome(job)


def raise_unless_ok(outcome: JobOutcome) -> None:
    """Re-raise the error of a failed/cancelled/discarded run (batch use)."""
    if outcome.ok:
        return
    if outcome.error is not None:
        raise outcome.error
    if outcome.status == "cancelled":
        raise CancelledError(outcome.message)
    raise InputError(outcome.message)
