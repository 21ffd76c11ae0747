"""Model runtimes: torch (the module itself) or OpenVINO's CPU runtime, same numbers within float rounding.

``auto`` runs an encoder through OpenVINO on the CPU when the ``openvino`` package can be imported (it is optional:
``pip install openvino``) and through torch otherwise; on CUDA / MPS it is always torch (:func:`resolve_runtime`).
The environment variable ``MEDSEG_RUNTIME`` (``torch`` or ``openvino``) decides what ``auto`` means, e.g. for the
Slicer worker.

OpenVINO needs the module exported once (a TorchScript trace of our own module, BatchNorms folded, converted
by ``openvino.convert_model``): :func:`openvino_model` (:func:`openvino_encoder` for the MedSAM image encoders)
keeps the exported model (OpenVINO IR, ``model.xml`` + ``model.bin``) in ``<weights cache>/openvino/<key>/``
(``MEDSEG_OPENVINO_CACHE`` overrides the folder), where the key is made of the weights' sha256, the OpenVINO and
torch versions, a hash of the model code and the input shapes - a new weights file, OpenVINO release or model code
is a new export, never a stale one. A module may take several inputs, and an input dimension given as -1 in
``shapes`` stays dynamic in the export (one export serves every size of it, e.g. UniverSeg's number of support
items, :class:`~medseg_backend.models.universeg_fast.QueryGraph`). An export is
checked against the torch module on its example input before it is kept; it is written to a private folder
and renamed into place under an inter-process lock (:class:`~medseg_backend.locking.FileLock`), so processes
that start together export once and never read half a file. A failed export (or a cache that cannot be read
or written) leaves the encoder on torch with one :class:`~medseg_backend.errors.MedSegWarning` line.

Precision: OpenVINO's CPU plugin would run in bf16 by itself on CPUs with native bf16; here fp32 is asked for
explicitly (``INFERENCE_PRECISION_HINT``), bf16 only when the caller asks for it.
"""
from __future__ import annotations

import hashlib
import inspect
import os
import shutil
import threading
import uuid
import warnings
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from .choices import RUNTIMES
from .errors import InputError, MedSegWarning, WeightsError, clip_text

__all__ = ["RUNTIMES", "openvino_version", "resolve_runtime", "OpenVINOModule", "openvino_encoder", "openvino_model",
           "export_key", "openvino_cache_dir"]

#: Bump when the export procedure itself changes (the model code is hashed separately).
EXPORT_FORMAT = 1
#: An export must reproduce the torch module on its example input to this relative max. difference to be kept.
EXPORT_TOLERANCE = 1e-4

_version: Optional[str] = None
_version_checked = False


def openvino_version() -> Optional[str]:
    """The installed OpenVINO's version, or None when it cannot be imported (checked once per process)."""
    global _version, _version_checked
    if not _version_checked:
        try:
            import openvino

            _version = str(getattr(openvino, "__version__", "") or openvino.get_version())
        except Exception:  # ImportError, or a broken install: the product runs on torch
            _version = None
        _version_checked = True
    return _version


def resolve_runtime(runtime: Optional[str], device) -> str:
    """``torch`` or ``openvino`` for a requested runtime (``auto``, ``torch``, ``openvino``) on ``device``;
    ``auto`` follows ``MEDSEG_RUNTIME`` when it is set."""
    r = (runtime or "auto").strip().lower()
    if r not in RUNTIMES:
        raise InputError(f"Unknown runtime '{runtime}': use one of {', '.join(RUNTIMES)}.")
    env = os.environ.get("MEDSEG_RUNTIME", "").strip().lower()
    if r == "auto" and env:
        if env not in RUNTIMES:
            raise InputError(f"MEDSEG_RUNTIME={env} is not a runtime: set it to one of {', '.join(RUNTIMES)}, or "
                             "unset it.")
        r = env
    if r == "torch":
        return "torch"
    on_cpu = getattr(device, "type", str(device)) == "cpu"
    if r == "openvino":
        if not on_cpu:
            raise InputError(f"The OpenVINO runtime runs on the CPU only, but the device is {device}: use --device "
                             "cpu, or --runtime torch (or auto) on the GPU.")
        if openvino_version() is None:
            raise InputError("The OpenVINO runtime was asked for but OpenVINO is not installed: run `pip install "
                             "openvino` (or use --runtime torch).")
        return "openvino"
    return "openvino" if on_cpu and openvino_version() is not None else "torch"


def openvino_cache_dir() -> Path:
    """Where exported encoders are kept: ``MEDSEG_OPENVINO_CACHE``, else ``<weights cache>/openvino``."""
    env = os.environ.get("MEDSEG_OPENVINO_CACHE", "").strip()
    if env:
        return Path(os.path.expanduser(env))
    from .weights.store import cache_dir

    return cache_dir() / "openvino"


def _code_hash(module) -> str:
    """sha256 of the source files of every class in ``module`` (a change of the model code is a new export)."""
    h = hashlib.sha256()
    package = os.path.dirname(os.path.abspath(__file__)) + os.sep
    files = set()
    for m in module.modules():
        try:
            files.add(os.path.abspath(inspect.getsourcefile(type(m)) or ""))
        except TypeError:  # a built-in class
            pass
    for f in sorted(p for p in files if p.startswith(package)):
        h.update(os.path.basename(f).encode())
        with open(f, "rb") as fh:
            h.update(fh.read())
    return h.hexdigest()


def weights_digest(module, weights_path: Optional[str]) -> str:
    """sha256 of the weights file, or of the module's parameters and buffers when it was built in memory."""
    if weights_path:
        from .download import sha256_file

        return sha256_file(weights_path)
    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def export_key(name: str, digest: str, module, shape: Sequence) -> str:
    """The cache folder's name; ``shape``: the input's shape, or one shape per input for several."""
    import torch

    parts = (EXPORT_FORMAT, digest, openvino_version(), torch.__version__, _code_hash(module), tuple(shape))
    tag = hashlib.sha256(repr(parts).encode()).hexdigest()[:20]
    return f"{name}-{digest[:12]}-{tag}"


class OpenVINOModule:
    """A compiled OpenVINO model called like the torch module it came from: float32 tensors in, the first output
    as a tensor out. With one input the model is exported for batch 1 and a batch (N, ...) runs item by item (same
    cost per item); with several inputs they are passed as they are (the shapes the export allows)."""

    def __init__(self, compiled, precision: str, threads: int) -> None:
        self.compiled = compiled
        self.precision = precision
        self.threads = threads
        self._request = compiled.create_infer_request()
        self._lock = threading.Lock()

    def __call__(self, *xs):
        import torch

        arrs = [x.detach().to("cpu", torch.float32).contiguous().numpy() for x in xs]
        with self._lock:
            if len(arrs) > 1:
                res = self._request.infer(dict(enumerate(arrs)))
                return torch.from_numpy(np.array(res[0], dtype=np.float32, copy=True))  # the request reuses it
            outs = []
            for i in range(arrs[0].shape[0]):
                res = self._request.infer({0: arrs[0][i:i + 1]})
                outs.append(np.array(res[0], dtype=np.float32, copy=True))
        return torch.from_numpy(np.concatenate(outs, axis=0))


def _compile(model, precision: str, threads: int) -> OpenVINOModule:
    import openvino as ov

    config = {"INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
              "INFERENCE_NUM_THREADS": int(threads), "PERFORMANCE_HINT": "LATENCY"}
    return OpenVINOModule(ov.Core().compile_model(model, "CPU", config), precision, threads)


def _export(module, examples: tuple, shapes: list):
    """TorchScript trace (one forward pass; ``convert_model`` on the module would trace and check several
    times) converted to an OpenVINO model with the input ``shapes`` (-1: dynamic)."""
    import openvino as ov
    import torch

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.10+ says jit.trace is deprecated
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shape checks become constants: the shape is fixed
        traced = torch.jit.trace(module, examples, check_trace=False)
    return ov.convert_model(traced, example_input=examples, input=shapes)


def _check_export(model, module, examples: tuple, threads: int) -> float:
    import torch

    with torch.no_grad():
        ref = module(*examples).float()
    got = _compile(model, "fp32", threads)(*examples)
    return float((got - ref).abs().max() / ref.abs().max().clamp_min(1e-12))


def _save(model, root: Path, key: str) -> None:
    """Write the IR into a private folder, then rename it to ``root/key`` (a broken old copy is replaced)."""
    import openvino as ov

    tmp = root / f".{key}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"
    try:
        ov.save_model(model, str(tmp / "model.xml"), compress_to_fp16=False)
        final = root / key
        if final.exists():
            trash = root / f".{key}.{uuid.uuid4().hex[:8]}.old"
            os.replace(final, trash)
            shutil.rmtree(trash, ignore_errors=True)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def openvino_encoder(module, example, *, name: str, weights_path: Optional[str] = None, precision: str = "fp32",
                     threads: int = 1, what: str = "encoder") -> Optional[OpenVINOModule]:
    """An image encoder (one (1, C, H, W) input, static shape) through :func:`openvino_model`."""
    return openvino_model(module, (example,), name=name, weights_path=weights_path, precision=precision,
                          threads=threads, what=what, stacklevel=4)


def openvino_model(module, examples: Sequence, *, name: str, shapes: Optional[Sequence[Sequence[int]]] = None,
                   weights_path: Optional[str] = None, precision: str = "fp32", threads: int = 1,
                   what: str = "network", stacklevel: int = 3) -> Optional[OpenVINOModule]:
    """``module`` (eval mode, plain torch ops, ``module(*examples)`` -> one tensor) compiled by OpenVINO for the
    CPU, exported once per weights, code and ``shapes`` (one per input, -1 for a dynamic dimension; default: the
    examples' shapes) and kept in :func:`openvino_cache_dir`; None (after one warning line) when it cannot be
    exported. The export is checked at the examples' sizes only: a module with a dynamic dimension must have a
    test at other sizes of it (the trace freezes any size the code reads as a Python number)."""
    examples = tuple(examples)
    shapes = [list(s) for s in shapes] if shapes is not None else [list(e.shape) for e in examples]
    try:
        return _load_or_export(module, examples, shapes, name, what, weights_path, precision, threads, stacklevel)
    except Exception as e:  # any failure of the export, the cache or OpenVINO: stay on torch
        warnings.warn(f"OpenVINO could not run the {name} {what} ({type(e).__name__}: {clip_text(str(e), 120)}); "
                      "it runs on torch instead (--runtime torch hides this message).", MedSegWarning,
                      stacklevel=stacklevel)
        return None


def _load_or_export(module, examples, shapes, name, what, weights_path, precision, threads,
                    stacklevel: int) -> OpenVINOModule:
    from .locking import FileLock

    key = export_key(name, weights_digest(module, weights_path), module, shapes[0] if len(shapes) == 1 else shapes)
    root = openvino_cache_dir()
    xml = root / key / "model.xml"
    done = _cached(xml, precision, threads)
    if done is not None:
        return done
    try:
        root.mkdir(parents=True, exist_ok=True)
        lock = FileLock(root / f"{key}.lock", what=f"exporting the {name} {what} for OpenVINO").acquire()
    except (OSError, WeightsError) as e:  # a read-only cache: export in memory, again at each start
        warnings.warn(f"The OpenVINO export of {name} cannot be kept in {root} ({clip_text(str(e), 80)}): it is "
                      "made again at each start; set MEDSEG_OPENVINO_CACHE to a writable folder.", MedSegWarning,
                      stacklevel=stacklevel + 1)
        return _compile(_checked_export(module, examples, shapes, threads), precision, threads)
    try:
        done = _cached(xml, precision, threads)  # another process may have exported it while this one waited
        if done is not None:
            return done
        model = _checked_export(module, examples, shapes, threads)
        _save(model, root, key)
    finally:
        lock.release()
    return _compile(model, precision, threads)


def _cached(xml: Path, precision: str, threads: int) -> Optional[OpenVINOModule]:
    """The kept export compiled, or None when there is none or it cannot be read (it is exported again)."""
    if not xml.is_file() or not xml.with_suffix(".bin").is_file():
        return None
    try:
        import openvino as ov

        return _compile(ov.Core().read_model(str(xml)), precision, threads)
    except Exception:
        return None


def _checked_export(module, examples: tuple, shapes: list, threads: int):
    model = _export(module, examples, shapes)
    err = _check_export(model, module, examples, threads)
    if not err <= EXPORT_TOLERANCE:
        raise RuntimeError(f"the export differs from torch by {err:.1e} (relative), more than {EXPORT_TOLERANCE:g}")
    return model
