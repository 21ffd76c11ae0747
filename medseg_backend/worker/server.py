"""The worker's main loop: ``python -m medseg_backend.worker --connect HOST:PORT --folder DIR [--parent PID]``.

The main thread runs requests one after the other; a reader thread receives messages all the time, so ``cancel``,
``status`` and ``shutdown`` are answered while a model runs. A background request (``encode`` with ``"background":
true``: encoding before the box) gives way to any other: it is cancelled between two slices as soon as another
request arrives (or skipped when one is already waiting) and ends with a ``cancelled`` event marked ``"preempted":
true``, so a run never waits behind it. The worker exits when the connection closes, when the
parent process is gone (checked every second) and on ``shutdown``; it removes the session folder on the way out.
Its own output (logging, warnings, tracebacks) goes to stdout/stderr, which the client sends to a log file.
"""
from __future__ import annotations

import argparse
import gc
import logging
import os
import queue
import signal
import socket
import sys
import threading
import time
import traceback
from collections import OrderedDict
from typing import Any, Dict, Optional

import numpy as np

from ..errors import CancelledError, InputError
from ..devices import available_cores
from ..progress import CancelToken
from . import protocol as proto
from .handlers import Handlers

log = logging.getLogger("medseg_backend.worker")

PROGRESS_INTERVAL = 0.05


class Server:
    def __init__(self, sock: socket.socket, folder: str, parent: Optional[int] = None) -> None:
        self.sock = sock
        self.folder = folder
        self.parent = parent
        self.handlers = Handlers()
        self.volumes: "OrderedDict[str, np.ndarray]" = OrderedDict()
        self.requests: "queue.Queue[Optional[Dict[str, Any]]]" = queue.Queue()
        self.current: Optional[Dict[str, Any]] = None      # id, op, token, started of the running request
        self.cancelled_ids: set = set()
        self._send_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._info_sent = False

    # ------------------------------------------------------------------------------------------------- I/O --
    def send(self, message: Dict[str, Any]) -> None:
        data = proto.encode(message)
        with self._send_lock:
            try:
                self.sock.sendall(data)
            except OSError:
                self.exit("connection lost")

    def exit(self, why: str, code: int = 0) -> None:
        log.info("worker exits: %s", why)
        proto.remove_folder(self.folder)
        for handler in logging.getLogger().handlers:
            handler.flush()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)

    # ----------------------------------------------------------------------------------------------- loops --
    def serve(self, token: str) -> None:
        self.send({"event": "ready", "id": 0, "token": token, "pid": os.getpid(), "protocol": proto.PROTOCOL_VERSION,
                   "python": sys.version.split()[0], "executable": sys.executable})
        threading.Thread(target=self._read_loop, name="medseg-worker-reader", daemon=True).start()
        threading.Thread(target=self._watch_parent, name="medseg-worker-parent", daemon=True).start()
        self._preload()
        while True:
            msg = self.requests.get()
            if msg is None:
                break
            self._run(msg)
        self.exit("shutdown")

    def _read_loop(self) -> None:
        reader = self.sock.makefile("rb")
        lines = proto.LineBuffer()
        while True:
            try:
                data = reader.readline()
            except OSError:
                data = b""
            if not data:
                self.exit("connection closed (client gone)")
            for msg in lines.feed(data if data.endswith(b"\n") else data + b"\n"):
                self._dispatch(msg)

    def _dispatch(self, msg: Dict[str, Any]) -> None:
        op = msg.get("op")
        if op == "status":
            self.send(self._status(msg))
        elif op == "cancel":
            job = (msg.get("params") or {}).get("job", msg.get("job"))
            with self._state_lock:
                cur = self.current
                if cur is not None and cur["id"] == job:
                    cur["token"].cancel()
                else:
                    self.cancelled_ids.add(job)
        elif op == "shutdown":
            self.send({"event": "bye", "id": msg.get("id", 0)})
            self.exit("shutdown requested")
        else:
            with self._state_lock:
                cur = self.current
                if cur is not None and cur["background"]:
                    cur["preempted"] = True
                    cur["token"].cancel()
            self.requests.put(msg)

    def _watch_parent(self) -> None:
        if not self.parent or os.name == "nt" or os.getppid() != self.parent:
            return      # Windows, or started through a launcher: the closing connection is the signal
        while True:
            time.sleep(1.0)
            if os.getppid() != self.parent:
                self.exit("parent process gone")

    def _preload(self) -> None:
        """Import torch and the engines right away, while the client prepares its first request (first-preview
        latency); requests wait for it, status and cancel are answered meanwhile."""
        try:
            import medseg_backend.medsam  # noqa: F401
        except Exception as exc:  # noqa: BLE001 - reported when a request needs it
            log.warning("preloading the models failed: %s", exc)
            return
        self._send_info()

    def _send_info(self) -> None:
        if self._info_sent or "torch" not in sys.modules:
            return
        self._info_sent = True
        self.send({"event": "info", "id": 0, "torch": _torch_info()})

    def _status(self, msg: Dict[str, Any]) -> Dict[str, Any]:
        with self._state_lock:
            cur = self.current
            busy = cur is not None
            return {"event": "status", "id": msg.get("id", 0), "busy": busy, "job": cur["id"] if busy else None,
                    "op": cur["op"] if busy else None,
                    "seconds": time.monotonic() - cur["started"] if busy else 0.0,
                    "volumes": list(self.volumes), "engines": self.handlers.engines.describe(), "pid": os.getpid(),
                    "torch": _torch_info() if "torch" in sys.modules else None}

    # -------------------------------------------------------------------------------------------- requests --
    def _run(self, msg: Dict[str, Any]) -> None:
        jid, op = msg.get("id"), str(msg.get("op"))
        token = CancelToken()
        background = op == "encode" and bool((msg.get("params") or {}).get("background"))
        with self._state_lock:
            self.current = {"id": jid, "op": op, "token": token, "started": time.monotonic(),
                            "background": background, "preempted": background and not self.requests.empty()}
            if jid in self.cancelled_ids or self.current["preempted"]:
                self.cancelled_ids.discard(jid)
                token.cancel()
        t0 = time.monotonic()
        arrays: Dict[str, Any] = {}
        try:
            token.check()
            _apply_env(msg.get("env") or {})
            arrays = {name: self._resolve(ref) for name, ref in (msg.get("arrays") or {}).items()}
            fields, out = self._execute(jid, op, msg.get("params") or {}, arrays, token)
            token.check()
            refs = {name: proto.save_array(self.folder, f"r-{jid}-{name}", arr, crop=name in ("labels", "mask"))
                    for name, arr in out.items()}
            self.send({"event": "done", "id": jid, "result": fields, "arrays": refs})
            log.info("request %s %s done in %.2f s", jid, op, time.monotonic() - t0)
        except CancelledError as exc:
            with self._state_lock:
                preempted = bool(self.current and self.current["preempted"])
            if preempted:
                self.send({"event": "cancelled", "id": jid, "preempted": True,
                           "message": "Encoding before the box gave way to the next request."})
            else:
                self.send({"event": "cancelled", "id": jid, "message": str(exc)})
            log.info("request %s %s cancelled after %.2f s", jid, op, time.monotonic() - t0)
        except BaseException as exc:  # noqa: BLE001 - every error goes back to the client as one event
            trace = traceback.format_exc()
            if not isinstance(exc, InputError):
                log.error("request %s %s failed:\n%s", jid, op, trace)
            self.send(dict(proto.error_event(exc, trace), id=jid))
            if isinstance(exc, MemoryError):
                gc.collect()
        finally:
            with self._state_lock:
                self.current = None
            arrays.clear()
            self._send_info()

    def _execute(self, jid, op: str, params, arrays, token: CancelToken):
        if op == "open_volume":
            key = str(params["key"])
            self.volumes[key] = arrays["volume"]
            self.volumes.move_to_end(key)
            return {"key": key, "shape": list(arrays["volume"].shape), "dtype": arrays["volume"].dtype.str}, {}
        if op == "close_volume":
            self.volumes.pop(str(params.get("key")), None)
            return {}, {}
        if op == "reset":
            self.volumes.clear()
            self.handlers.engines.clear()
            gc.collect()
            return {}, {}
        last = [0.0]

        def progress(fraction: float, message: str) -> None:
            now = time.monotonic()
            if now - last[0] >= PROGRESS_INTERVAL or fraction >= 1.0:
                last[0] = now
                self.send({"event": "progress", "id": jid, "fraction": float(fraction), "message": str(message)})

        def partial(payload) -> None:
            self.send({"event": "partial", "id": jid, **payload})

        return self.handlers.run(op, params, arrays, progress, token, partial=partial)

    def _resolve(self, ref: Dict[str, Any]):
        if "key" in ref:
            key = str(ref["key"])
            if key not in self.volumes:
                raise InputError(f"Volume {key[:12]} is not open in the worker: send it again (open_volume).")
            self.volumes.move_to_end(key)
            return self.volumes[key]
        return proto.load_array(self.folder, ref, mmap=True)


def _apply_env(env: Dict[str, Any]) -> None:
    for name, value in env.items():
        if not str(name).startswith(proto.ENV_PREFIX) or name == proto.TOKEN_ENV:
            continue
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = str(value)


def _torch_info() -> Dict[str, Any]:
    import torch

    mps = getattr(torch.backends, "mps", None)
    cuda = bool(torch.cuda.is_available())
    return {"version": torch.__version__, "cuda": cuda, "mps": bool(mps is not None and mps.is_available()),
            "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else []}


#: The model worker's priority offset (POSIX ``nice``): Slicer's own process (its UI) wins the CPU when both want it.
WORKER_NICENESS = 5


def worker_threads(cores: int) -> int:
    """Threads for the model worker beside Slicer (torch's, and OpenVINO's ``INFERENCE_NUM_THREADS``, which the
    predictor sets from the same count): every core on 1-2 core machines (the worker is niced, so Slicer's UI still
    gets the CPU when it needs it), one core left for Slicer from 3 cores up.

    Set by ``benchmarks/bench_medsam3d.py --models lite --slices 8 --threads 1,2 --threads-only --repeats 3`` on the
    2-core CI machine (BENCHMARKS.md, "Cores"; 2026-12-07): on the quiet machine LiteMedSAM's product path took
    1.59 -> 0.96 s per slice from 1 to 2 threads through torch (1.66x) and 1.24 -> 0.67 s through OpenVINO (1.84x),
    so both cores. With other jobs holding the second core (load average 3-4) a second thread lost instead (torch
    1.95 -> 2.34 s, OpenVINO 1.40 -> 2.19 s): a machine busy with other work, not Slicer waiting for a result, so it
    does not set the default. 4 and more cores were not measured (no such machine lent); leaving one core to
    Slicer there is a choice, not a measurement."""
    cores = max(1, int(cores))
    return cores if cores <= 2 else cores - 1


def configure_worker_process() -> int:
    """Lower the worker's priority and set its thread count (unless ``MEDSEG_NUM_THREADS`` / ``OMP_NUM_THREADS``
    say otherwise); returns the thread count the worker will use."""
    if hasattr(os, "nice"):
        try:
            os.nice(WORKER_NICENESS)
        except OSError:
            pass
    if not (os.environ.get("MEDSEG_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS")):
        os.environ["MEDSEG_NUM_THREADS"] = str(worker_threads(available_cores()))
    return int(os.environ.get("MEDSEG_NUM_THREADS") or os.environ["OMP_NUM_THREADS"])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m medseg_backend.worker",
                                     description="MedSegSlicer model worker (started by the Slicer module).")
    parser.add_argument("--connect", required=True, help="HOST:PORT of the client to connect to")
    parser.add_argument("--folder", required=True, help="the session folder (array files)")
    parser.add_argument("--parent", type=int, default=0, help="pid of the client process (orphan check)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s worker[%(process)d] %(levelname)s %(message)s")
    if hasattr(signal, "SIGINT"):
        signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C in Slicer's terminal is for Slicer
    token = os.environ.pop(proto.TOKEN_ENV, "")
    host, _, port = args.connect.rpartition(":")
    if not os.path.isdir(args.folder):
        log.error("session folder %s does not exist", args.folder)
        return 2
    sock = socket.create_connection((host or "127.0.0.1", int(port)), timeout=30)
    sock.settimeout(None)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    threads = configure_worker_process()
    log.info("worker started (python %s, pid %d, folder %s, %d threads, niced)", sys.version.split()[0], os.getpid(),
             args.folder, threads)
    Server(sock, args.folder, args.parent or None).serve(token)
    return 0
