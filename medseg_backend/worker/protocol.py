"""The worker protocol: messages between a client (the Slicer layer) and the model worker.

Transport
    One JSON object per line (UTF-8, ``\\n``-terminated) in each direction over a byte stream. The Slicer client
    listens on 127.0.0.1 (an ephemeral port), starts ``python -m medseg_backend.worker --connect HOST:PORT`` with a
    one-time token in the environment (``MEDSEG_WORKER_TOKEN``), and the worker connects back and sends ``ready``
    with that token first. The same messages can travel over any socket (e.g. to a GPU server) unchanged.

Arrays never travel in JSON. They are ``.npy`` files in the session folder: a private (0700) temporary folder made
by the client (under ``/dev/shm`` on Linux when it exists, so the files live in memory), named to the worker with
``--folder``. The worker opens inputs memory-mapped (no copy); the client reads result files and deletes them; the
folder is removed when the worker ends (by the client and by the worker), and made again, private, by the next
write when a temporary-files cleaner removed it during a session left open for days. An array reference is one of::

    {"file": "in-7-examples0.npy", "dtype": "int16", "shape": [300, 512, 512]}     a file in the session folder
    {"file": "r-7-labels.npy", "dtype": "uint8", "shape": [5, 40, 60],
     "offset": [120, 200, 180], "full_shape": [300, 512, 512]}                     the non-zero box of a result
                                                                                   (all else is 0)
    {"key": "3f2a..."}                                                             a volume kept by the worker

Requests (client -> worker): ``{"op": OP, "id": N, "params": {...}, "arrays": {NAME: REF}, "env": {...}}``. The params
of the three run requests are their run spec's message form (:mod:`medseg_backend.runspec`: ``spec.to_message()``
gives ``(op, params)``, the worker rebuilds the same spec with ``from_message``, which checks it and fills the
defaults; unknown fields are refused).
``id`` is chosen by the client (positive, increasing); ``env`` holds ``MEDSEG_*`` variables (weights cache folder,
cache budget) applied before the request runs. Requests run one after the other, in order; every one ends with
exactly one of the events ``done``, ``error`` or ``cancelled`` carrying its ``id``.

``open_volume``      arrays ``{"volume": REF}``, params ``{"key": K}``: keep a volume under the content key ``K`` so
                     later requests refer to it as ``{"key": K}`` (a volume is sent once per content; a re-prompt
                     sends only boxes). ``done`` result ``{"key", "shape", "dtype"}``.
``close_volume``     params ``{"key": K}``: forget it.
``encode``           prefetch image embeddings: arrays ``{"volume"}``, params: the fields of
                     :class:`medseg_backend.runspec.EncodeRun` (engine, intensity, axis, ``slices`` [first, last],
                     ``centre``, ``background``); result ``{"encoded", "cached", "order", "runtime"}``. ``centre``:
                     the slices around slice k, nearest first, as many as the embedding cache holds (encoding before
                     the box); ``background``: any later request cancels it between two slices (its ``cancelled``
                     event then has ``"preempted": true``).
``segment_box``      MedSAM / LiteMedSAM: arrays ``{"volume"}`` (3-D (K, J, I) or a 2-D image) and the seeds' masks,
                     params: the fields of :class:`medseg_backend.runspec.BoxRun` (boxes, engine, intensity,
                     propagation, axis, direction, ``seeds``: ``{"slice": k, "mask": NAME}`` or null per box,
                     outputs, partial); result ``{"messages", "slices_run", "slices_encoded", "seconds", "device",
                     "precision", "runtime" (the encoder's: "torch" | "openvino"), "per_box", "slices"}``
                     (``slices``: one row per object and slice - ``object``, ``slice``, ``area_voxels``,
                     ``confidence``, ``flagged``, ``source``) with arrays ``{"labels", ["probabilities"]}``.
``segment_examples`` UniverSeg: arrays ``{"volume", <example images and labels>}``, params: the fields of
                     :class:`medseg_backend.runspec.ExamplesRun` (``examples``: ``{"image": NAME, "label": NAME,
                     "name", "kind", "max_slices"}`` each, roi, axis, intensity, support_size, ensemble, seed, tta,
                     engine, outputs); result ``{"messages", "seconds", "slices_run"}`` with arrays ``{"mask",
                     ["probabilities"]}``.
``weights_verify``   params ``{"name": MODEL or null}``: check installed weights (hash, layout); result ``{"results":
                     [{"name", "ok", "problems", "sha256", ...}]}``.
``weights_import``   params ``{"name", "path", "accept_licence"}``: check a local weights file and install it into the
                     cache (checkpoint read here, never in the client); result ``{"path"}``. Loaded models are dropped.
``sleep``            diagnostics: params ``{"seconds", "steps", "fail": {"type", "message"}, "echo": [NAME]}``:
                     report progress, wait (cancellable), then fail as asked or return the echoed arrays.
``reset``            drop loaded models, embedding caches and kept volumes.

Control messages, answered at once by the worker's reader thread, also while a request runs:

``cancel``           params ``{"job": N}``: request ``N`` stops at its next check and ends with ``cancelled``.
``status``           answered by a ``status`` event: ``{"busy", "job", "op", "seconds", "volumes", "engines",
                     "pid", "torch"}``. The client uses it as a heartbeat.
``shutdown``         answered by ``bye``; the worker exits.

Events (worker -> client): ``{"event": E, "id": N, ...}``

``ready``            first message: ``{"token", "pid", "protocol", "python"}``.
``info``             once torch is loaded: ``{"torch": {"version", "cuda", "mps", "cuda_devices"}}``.
``progress``         ``{"fraction": 0..1, "message"}`` (at most every 50 ms per request).
``partial``          one finished slice of a ``segment_box`` run asked with ``"partial": true`` (a progressive
                     preview): ``{"object", "slice" (index along the run's axis), "axis", "mask"}`` with the slice's
                     mask packed by :func:`pack_mask` (its box and bits, base64). A slice can come again (the
                     ``adaptive`` walk's provisional middle slice, when the walk starts on another slice): the last
                     one sent is the slice's mask in the result.
``done``             ``{"result": {...}, "arrays": {NAME: REF}}``.
``error``            ``{"type": class name, "message": one line, "medseg": true for a MedSegError (a problem the
                     user can fix), "trace": traceback text for other errors}``.
``cancelled``        ``{"message"}``.
``status`` / ``bye`` as above.

The worker exits when the connection closes (the client or its process is gone), when its parent process
disappears (checked every second), and on ``shutdown``.
"""
from __future__ import annotations

import json
import os
import shutil
import stat
import sys
import tempfile
import types
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

import numpy as np

from ..errors import MedSegError

PROTOCOL_VERSION = 1
TOKEN_ENV = "MEDSEG_WORKER_TOKEN"
#: Environment variables the client forwards with every request (weights cache folder, cache budget, threads).
ENV_PREFIX = "MEDSEG_"


# ----------------------------------------------------------------------------------------------------- framing --
def encode(message: Dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":"), default=_json_default).encode("utf-8") + b"\n"


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


class LineBuffer:
    """Collects bytes and returns the complete JSON messages in them (a partial line waits for the rest)."""

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, data: bytes) -> List[Dict[str, Any]]:
        self._buf += data
        if b"\n" not in self._buf:
            return []
        *lines, self._buf = self._buf.split(b"\n")
        out = []
        for line in lines:
            line = line.strip()
            if not line:
                continue
            try:
                msg = json.loads(line.decode("utf-8"))
            except ValueError:
                continue
            if isinstance(msg, dict):
                out.append(msg)
        return out


# -------------------------------------------------------------------------------------------- session folder --
def pack_mask(mask: np.ndarray) -> Dict[str, Any]:
    """A 2-D boolean mask as JSON: its shape, the box (x0, y0, x1, y1) of its voxels and their bits
    (``np.packbits``, base64)."""
    import base64

    from ..slicing import bbox2d

    m = np.asarray(mask) != 0
    box = bbox2d(m)
    if box is None:
        return {"shape": list(m.shape), "box": None, "bits": ""}
    x0, y0, x1, y1 = box
    bits = np.packbits(m[y0:y1 + 1, x0:x1 + 1], axis=None).tobytes()
    return {"shape": list(m.shape), "box": list(box), "bits": base64.b64encode(bits).decode("ascii")}


def unpack_mask(packed: Dict[str, Any]) -> np.ndarray:
    """Inverse of :func:`pack_mask`: the 2-D uint8 mask."""
    import base64

    out = np.zeros(tuple(int(n) for n in packed["shape"]), np.uint8)
    if packed.get("box"):
        x0, y0, x1, y1 = (int(v) for v in packed["box"])
        n = (y1 - y0 + 1) * (x1 - x0 + 1)
        bits = np.unpackbits(np.frombuffer(base64.b64decode(packed["bits"]), np.uint8), count=n)
        out[y0:y1 + 1, x0:x1 + 1] = bits.reshape(y1 - y0 + 1, x1 - x0 + 1)
    return out


def make_session_folder(prefix: str = "medseg-worker-") -> str:
    """A private (0700) temporary folder, in memory (``/dev/shm``) on Linux when possible."""
    root = None
    if sys.platform.startswith("linux") and os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        root = "/dev/shm"
    folder = tempfile.mkdtemp(prefix=prefix, dir=root)   # mkdtemp creates the folder with mode 0700
    os.chmod(folder, 0o700)
    return folder


def ensure_folder(folder: str) -> None:
    """Make the session folder again (private, 0700) when it is gone: a temporary-files cleaner (systemd-tmpfiles,
    macOS's periodic clean-up of old temporary files) may remove it while a session stays open for days. Something
    else at that path (a file, a link, a folder of another user or open to others) is refused, never used."""
    try:
        os.mkdir(folder, 0o700)
    except FileExistsError:
        st = os.lstat(folder)
        mine = not hasattr(os, "getuid") or st.st_uid == os.getuid()
        if stat.S_ISDIR(st.st_mode) and mine and (os.name == "nt" or not st.st_mode & 0o077):
            return
        raise MedSegError(f"The worker's session folder {folder} was replaced by something this session did not "
                          "make: restart Slicer (or the worker) to get a new private folder.") from None
    os.chmod(folder, 0o700)


def remove_folder(folder: Optional[str]) -> None:
    if folder:
        shutil.rmtree(folder, ignore_errors=True)


def _safe_name(folder: str, name: str) -> str:
    base = os.path.basename(str(name))
    if not base or base != name or not base.endswith(".npy"):
        raise ValueError(f"bad array file name {name!r}")
    return os.path.join(folder, base)


def save_array(folder: str, stem: str, array: np.ndarray, crop: bool = False) -> Dict[str, Any]:
    """Write ``array`` as ``<stem>.npy`` in ``folder``; with ``crop`` only its non-zero box (see the docstring)."""
    array = np.asarray(array)
    ref: Dict[str, Any] = {"dtype": array.dtype.str, "shape": list(array.shape)}
    data = array
    if crop and array.ndim >= 2 and array.size:
        box = nonzero_box(array)
        if box is None:
            box = tuple(slice(0, 0) for _ in range(array.ndim))
        data = array[box]
        ref.update(offset=[int(s.start) for s in box], full_shape=list(array.shape), shape=list(data.shape))
    name = f"{stem}.npy"
    ensure_folder(folder)
    np.save(os.path.join(folder, name), np.ascontiguousarray(data), allow_pickle=False)
    ref["file"] = name
    return ref


def nonzero_box(array: np.ndarray):
    """Slices of the smallest box holding every non-zero element (None when all are zero)."""
    box = []
    for axis in range(array.ndim):
        other = tuple(a for a in range(array.ndim) if a != axis)
        idx = np.flatnonzero(np.any(array, axis=other))
        if idx.size == 0:
            return None
        box.append(slice(int(idx[0]), int(idx[-1]) + 1))
    return tuple(box)


def load_array(folder: str, ref: Dict[str, Any], mmap: bool = True) -> np.ndarray:
    """Open a file reference: memory-mapped read-only (worker inputs) or read into memory (client results)."""
    path = _safe_name(folder, ref["file"])
    data = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    if "offset" in ref:
        full = np.zeros(tuple(ref["full_shape"]), dtype=data.dtype)
        if data.size:
            full[tuple(slice(o, o + n) for o, n in zip(ref["offset"], data.shape))] = data
        return full
    return data


def delete_file(folder: Optional[str], ref: Dict[str, Any]) -> None:
    if not folder or "file" not in ref:
        return
    try:
        os.remove(_safe_name(folder, ref["file"]))
    except (OSError, ValueError):
        pass


# ----------------------------------------------------------------------------------------- requests / results --
@dataclass
class Request:
    """One unit of model work, executable by the worker or in-process through the same handler.

    ``arrays`` go to the worker as files; those named in ``keys`` are sent once per content key and kept by the
    worker (the volume). ``local`` holds objects that cannot cross a process boundary (a stand-in network): a
    request with any runs in-process. ``finish`` is applied to the result on the client side (numpy only).
    """

    op: str
    params: Dict[str, Any] = field(default_factory=dict)
    arrays: Dict[str, np.ndarray] = field(default_factory=dict)
    keys: Dict[str, str] = field(default_factory=dict)
    local: Dict[str, Any] = field(default_factory=dict)
    finish: Optional[Callable[["RunResult"], "RunResult"]] = None

    @property
    def in_process_only(self) -> bool:
        return bool(self.local)


class RunResult(types.SimpleNamespace):
    """The result of a request: its JSON fields and its arrays as attributes (``labels``, ``mask``,
    ``probabilities``, ``messages``, ``slices_encoded``, ...). Missing attributes read as None."""

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("messages", [])
        super().__init__(**kwargs)

    def __getattr__(self, name):   # only called for missing attributes
        if name.startswith("__"):
            raise AttributeError(name)
        return None


def make_result(fields: Dict[str, Any], arrays: Dict[str, np.ndarray]) -> RunResult:
    values = dict(fields or {})
    values["messages"] = list(values.get("messages") or [])
    values.update(arrays or {})
    return RunResult(**values)


# ---------------------------------------------------------------------------------------------------- errors --
def error_event(exc: BaseException, trace: str = "") -> Dict[str, Any]:
    from ..errors import MedSegError

    medseg = isinstance(exc, MedSegError)
    text = str(exc).strip()
    message = text if medseg else (text.splitlines() or [""])[0][:300]
    return {"event": "error", "type": type(exc).__name__, "message": message, "medseg": medseg,
            "trace": "" if medseg else trace}


class RemoteError(Exception):
    """An unexpected error raised in the worker; ``type_name`` is the worker-side class name."""

    def __init__(self, type_name: str, message: str, trace: str = "") -> None:
        super().__init__(message)
        self.type_name = type_name
        self.trace = trace


def error_from_event(event: Dict[str, Any]) -> BaseException:
    """The exception a client re-creates from an ``error`` event: the backend's own class for MedSegErrors."""
    from .. import errors

    name, message = str(event.get("type", "Error")), str(event.get("message", ""))
    if event.get("medseg"):
        cls = getattr(errors, name, None)
        if isinstance(cls, type) and issubclass(cls, errors.MedSegError):
            return cls(message)
        return errors.MedSegError(message)
    return RemoteError(name, message, str(event.get("trace", "")))
