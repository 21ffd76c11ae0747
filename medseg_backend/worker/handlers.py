"""Request handlers: the model work of the Slicer module, run in the worker process or in-process.

:class:`Handlers` keeps the engines (and so MedSAM's embedding cache) alive between requests. ``run(op, params,
arrays, progress, cancel, local)`` returns ``(fields, arrays)``: JSON-able result fields and numpy arrays; see
:mod:`.protocol` for the operations. A run request's params become its spec (:mod:`medseg_backend.runspec`), which
checks and defaults them; the handlers pass the spec on to the engine. torch is imported only when an engine is built.
"""
from __future__ import annotations

import os
import threading
import time
import warnings
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from ..errors import InputError, MedSegWarning
from ..progress import CancelToken
from ..runspec import NO_EXAMPLES, BoxRun, EncodeRun, ExamplesRun
from . import protocol as proto

Progress = Callable[[float, str], None]
Output = Tuple[Dict[str, Any], Dict[str, np.ndarray]]


class EngineCache:
    """Loaded engines per (model, weights, device, precision, runtime); thread-safe."""

    def __init__(self) -> None:
        self._engines: Dict[Tuple, Any] = {}
        self._lock = threading.Lock()

    def medsam(self, model: str, weights: Optional[str], device: str, precision: str, runtime: str = "auto"):
        key = ("medsam", model, str(weights or ""), device, precision, runtime)
        with self._lock:
            engine = self._engines.get(key)
            if engine is None:
                from ..medsam import MedSAMEngine

                engine = MedSAMEngine(model=model, weights=weights, device=device, precision=precision,
                                      runtime=runtime)
                self._engines[key] = engine
            return engine

    def universeg(self, weights: Optional[str], device: str, precision: str, module=None):
        key = ("universeg", str(weights or ""), device, precision, id(module) if module is not None else None)
        with self._lock:
            engine = self._engines.get(key)
            if engine is None:
                from ..universeg import UniverSegEngine

                engine = UniverSegEngine(weights=weights, device=device, model=module, precision=precision)
                self._engines[key] = engine
            return engine

    def describe(self) -> List[str]:
        with self._lock:
            return [":".join(str(k) for k in key[:4]) for key in self._engines]

    def clear(self) -> None:
        with self._lock:
            self._engines.clear()

    def __len__(self) -> int:
        return len(self._engines)


class Handlers:
    """The operations of the protocol that do model work (see :mod:`.protocol`)."""

    OPS = ("encode", "segment_box", "segment_examples", "weights_verify", "weights_import", "sleep")

    def __init__(self, engines: Optional[EngineCache] = None) -> None:
        self.engines = engines if engines is not None else EngineCache()

    def run(self, op: str, params: Dict[str, Any], arrays: Dict[str, np.ndarray], progress: Progress,
            cancel: CancelToken, local: Optional[Dict[str, Any]] = None,
            partial: Optional[Callable[[Dict[str, Any]], None]] = None) -> Output:
        """Run one request. ``partial(payload)`` receives the finished slices of a run asked with ``partial``
        (see the protocol's ``partial`` event)."""
        if op not in self.OPS:
            raise InputError(f"Unknown worker request '{op}': use one of {', '.join(self.OPS)}.")

        def report(fraction: float, message: str) -> None:
            cancel.check()          # every progress report is also a cancel point (each slice)
            progress(fraction, message)

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", MedSegWarning)
            local = dict(local or {})
            if partial is not None:
                local["partial"] = partial
            fields, out = getattr(self, op)(dict(params or {}), arrays, report, cancel, local)
        notes = [str(w.message) for w in caught if issubclass(w.category, MedSegWarning)]
        for w in caught:
            if not issubclass(w.category, MedSegWarning):
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        if notes:
            fields["messages"] = notes + list(fields.get("messages") or [])
        return fields, out

    # --------------------------------------------------------------------------------------------- MedSAM --
    def _medsam_engine(self, spec, progress: Progress):
        progress(0.0, f"Loading {spec.model} on {spec.device}")
        return self.engines.medsam(spec.model, spec.weights, spec.device, spec.precision, spec.runtime)

    def encode(self, p, arrays, progress, cancel, local) -> Output:
        spec = EncodeRun.from_message("encode", p)
        engine = self._medsam_engine(spec, progress)
        fields = engine.encode_ahead(_volume(arrays), axis=spec.axis, intensity=spec.intensity, slices=spec.slices,
                                     cancel=cancel, progress=progress, centre=spec.centre)
        fields["runtime"] = engine.runtime
        return fields, {}

    def segment_box(self, p, arrays, progress, cancel, local) -> Output:
        spec = BoxRun.from_message("segment_box", p)
        volume = _volume(arrays)
        engine = self._medsam_engine(spec, progress)
        common = {"device": str(engine.device), "precision": engine.precision, "runtime": engine.runtime}
        on_slice = None
        if spec.partial and local.get("partial") is not None:
            send = local["partial"]

            def on_slice(obj: int, k: int, mask: np.ndarray) -> None:
                send({"object": obj, "slice": k, "axis": spec.axis, "mask": proto.pack_mask(mask)})
        res = engine.run(spec, volume, arrays=arrays, progress=progress, cancel=cancel, on_slice=on_slice)
        if spec.ndim == 2:
            out = {"labels": res.mask}
            if "probabilities" in spec.outputs:
                out["probabilities"] = res.probabilities
            return dict(messages=res.messages, box=list(res.box), slices_run=1, **common), out
        out = {"labels": res.labels}
        if "probabilities" in spec.outputs and res.probabilities is not None:
            out["probabilities"] = res.probabilities
        from ..confidence import report_rows

        return dict(messages=res.messages, slices_run=int(res.slices_run), slices_encoded=int(res.slices_encoded),
                    seconds=float(res.seconds),
                    per_box=_plain([{k: v for k, v in b.items() if k != "records"} for b in res.per_box]),
                    slices=_plain(report_rows(res.slices, axis=spec.axis)), **common), out

    # ------------------------------------------------------------------------------------------ UniverSeg --
    def segment_examples(self, p, arrays, progress, cancel, local) -> Output:
        from ..universeg import Example, cut_examples

        spec = ExamplesRun.from_message("segment_examples", p)
        volume = _volume(arrays)
        examples = []
        for ref in spec.examples:
            examples += cut_examples([Example(arrays[ref.image], arrays[ref.label], ref.name,
                                              source=ref.source)],
                                     spec.axis, ref.max_slices)
        if not examples:
            raise InputError(NO_EXAMPLES)
        progress(0.0, f"Loading UniverSeg on {spec.device} ({len(examples)} examples)")
        engine = self.engines.universeg(spec.weights, spec.device, spec.precision, local.get("module"))
        res = engine.run(spec, volume, examples, progress=progress, cancel=cancel)
        out = {"mask": res.mask}
        if "probabilities" in spec.outputs:
            out["probabilities"] = res.probabilities
        return dict(messages=res.messages, seconds=float(res.seconds), slices_run=int(res.slices_run),
                    n_examples=len(examples), device=str(engine.device), precision=engine.precision), out

    # ------------------------------------------------------------------------------------------------ weights --
    def weights_verify(self, p, arrays, progress, cancel, local) -> Output:
        from .. import weights

        progress(0.0, "Checking the installed weights")
        return {"results": [_plain(r) for r in weights.verify(p.get("name"))]}, {}

    def weights_import(self, p, arrays, progress, cancel, local) -> Output:
        from .. import weights

        progress(0.0, f"Checking {p.get('path')}")
        path = weights.import_weights(p["name"], p["path"], accept_licence=bool(p.get("accept_licence")))
        self.engines.clear()
        return {"path": str(path)}, {}

    # -------------------------------------------------------------------------------------------- diagnostics --
    def sleep(self, p, arrays, progress, cancel, local) -> Output:
        seconds, steps = float(p.get("seconds", 0.0)), max(1, int(p.get("steps", 4)))
        t0 = time.monotonic()
        for i in range(steps):
            progress(i / steps, p.get("message") or f"step {i + 1}/{steps}")
            while time.monotonic() - t0 < seconds * (i + 1) / steps:
                cancel.check()
                time.sleep(min(0.005, seconds / steps or 0.005))
        cancel.check()
        fail = p.get("fail")
        if fail:
            import builtins

            from .. import errors

            name = str(fail.get("type", "RuntimeError"))
            cls = getattr(errors, name, None) or getattr(builtins, name, None)
            if not (isinstance(cls, type) and issubclass(cls, Exception)):
                cls = RuntimeError
            raise cls(str(fail.get("message", "failed as asked")))
        progress(1.0, "finished")
        return {"slept": time.monotonic() - t0, "value": p.get("value"), "pid": os.getpid()}, \
            {name: np.asarray(arrays[name]) for name in p.get("echo") or []}


def _volume(arrays: Dict[str, np.ndarray]) -> np.ndarray:
    if "volume" not in arrays:
        raise InputError("No volume in the request: open the volume first (open_volume) or send it.")
    return arrays["volume"]


def _plain(value):
    """Numpy scalars / tuples inside result fields -> JSON-able Python values."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value
