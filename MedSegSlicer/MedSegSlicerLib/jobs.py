"""Run one backend call at a time in a worker thread; hand its result back to the GUI thread.

The GUI thread prepares plain numpy inputs (the worker never touches MRML nodes), calls
:meth:`JobRunner.start`, and polls :meth:`JobRunner.poll` from a timer (the effects use a 100 ms ``QTimer``).
``poll`` returns ``None`` while the job runs and a :class:`JobOutcome` once, after it ended:

* ``succeeded`` - the result, to be written into the scene by the caller (on the GUI thread);
* ``failed`` - a readable one-line message (``MedSegError`` text, or a short summary of an unexpected error);
* ``cancelled`` - the user cancelled; nothing is written;
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
from dataclasses import dataclass, field
from typing import Any, Callable, List, Optional, Tuple

from medseg_backend.progress import CancelToken

from .errors import CancelledError, JobBusyError, MedSegError

log = logging.getLogger("MedSegSlicer")

Work = Callable[[Callable[[float, str], None], CancelToken], Any]


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

    def problem(self) -> Optional[str]:
        """None when all inputs are as they were, else a one-line message."""
        if self._volume is not None:
            vid, name, stamp = self._volume
            node = self.scene.GetNodeByID(vid)
            if node is None:
                return f"Volume '{name}' was deleted while the model ran: result discarded; run again."
            if self._volume_stamp(node) != stamp:
                return (f"Volume '{name}' was replaced or changed while the model ran: result discarded; "
                        "run again on the current volume.")
        for nid, name, cls in self._others:
            node = self.scene.GetNodeByID(nid)
            if node is None or node.GetClassName() != cls:
                return f"'{name}' was deleted while the model ran: result discarded; select it again and rerun."
        return None


@dataclass
class _Job:
    label: str
    token: CancelToken
    thread: threading.Thread
    guard: Optional[NodeGuard]
    started: float
    result: Any = None
    error: Optional[BaseException] = None
    trace: str = ""
    done: threading.Event = field(default_factory=threading.Event)


class JobRunner:
    """One job at a time; see the module docstring."""

    def __init__(self) -> None:
        self._job: Optional[_Job] = None
        self._progress: "queue.Queue[Tuple[float, str]]" = queue.Queue()
        self._last_progress: Tuple[float, str] = (0.0, "")
        self._lock = threading.Lock()

    # ------------------------------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._job is not None

    @property
    def label(self) -> str:
        return self._job.label if self._job else ""

    def start(self, work: Work, *, label: str = "run", guard: Optional[NodeGuard] = None) -> CancelToken:
        """Start ``work(progress, cancel)`` in a worker thread. Raises :class:`JobBusyError` if one runs."""
        with self._lock:
            if self._job is not None:
                raise JobBusyError(f"'{self._job.label}' is still running: wait for it to finish or press Cancel, "
                                   "then start again.")
            token = CancelToken()
            self._drain()
            self._last_progress = (0.0, f"{label}: starting")
            job = _Job(label=label, token=token, thread=None, guard=guard, started=time.monotonic())  # type: ignore[arg-type]

            def progress(fraction: float, message: str) -> None:
                self._progress.put((float(fraction), str(message)))

            def target() -> None:
                try:
                    job.result = work(progress, token)
                except BaseException as exc:  # noqa: BLE001 - every error goes back to the GUI thread
                    job.error = exc
                    job.trace = traceback.format_exc()
                finally:
                    job.done.set()

            job.thread = threading.Thread(target=target, name=f"MedSegSlicer-{label}", daemon=True)
            self._job = job
            job.thread.start()
            return token

    def cancel(self) -> bool:
        """Ask the running job to stop (checked by the backend between batches). False if nothing runs."""
        job = self._job
        if job is None:
            return False
        job.token.cancel()
        return True

    def progress(self) -> Tuple[float, str]:
        """Latest (fraction, message) reported by the running job."""
        self._drain()
        return self._last_progress

    def poll(self) -> Optional[JobOutcome]:
        """Call on the GUI thread. ``None`` while running (or idle); the :class:`JobOutcome` once at the end."""
        job = self._job
        self._drain()
        if job is None or not job.done.is_set():
            return None
        job.thread.join()
        self._job = None
        return _outcome(job)

    def wait(self, timeout: Optional[float] = None) -> Optional[JobOutcome]:
        """Block until the job ends (batch use and tests), then :meth:`poll`."""
        job = self._job
        if job is None:
            return None
        if not job.done.wait(timeout):
            return None
        return self.poll()

    # ------------------------------------------------------------------------------------------------------
    def _drain(self) -> None:
        try:
            while True:
                self._last_progress = self._progress.get_nowait()
        except queue.Empty:
            pass


def _outcome(job: _Job) -> JobOutcome:
    seconds = time.monotonic() - job.started
    err = job.error
    if err is not None:
        if isinstance(err, CancelledError) or (job.token.cancelled and not isinstance(err, MedSegError)):
            return JobOutcome("cancelled", message=str(err) or "Run cancelled: nothing was written.",
                              label=job.label, seconds=seconds, error=err)
        if isinstance(err, MedSegError):
            return JobOutcome("failed", message=str(err), label=job.label, seconds=seconds, error=err)
        log.error("%s failed:\n%s", job.label, job.trace)
        first = (str(err).strip().splitlines() or [""])[0][:200]
        return JobOutcome("failed", message=f"{job.label} failed with {type(err).__name__}: {first}: see the "
                          "Python console / log for details, and report it if it persists.",
                          label=job.label, seconds=seconds, error=err)
    if job.token.cancelled:
        return JobOutcome("cancelled", message="Run cancelled: nothing was written.", label=job.label,
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
    started = time.monotonic()
    job = _Job(label=label, token=token, thread=threading.current_thread(), guard=guard, started=started)
    try:
        job.result = work(progress or (lambda f, m: None), token)
    except BaseException as exc:  # noqa: BLE001
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        job.error = exc
        job.trace = traceback.format_exc()
    return _outcome(job)


def messages_of(outcome: JobOutcome) -> List[str]:
    res = outcome.result
    return list(getattr(res, "messages", []) or [])
