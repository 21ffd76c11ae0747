"""Arrays over HTTP: one binary body holding named numpy arrays (each zlib-compressed) and a JSON header.

Layout: ``b"MSA1"``, the header's length (4 bytes, little-endian), the header (UTF-8 JSON ``{"meta": {...},
"arrays": [{"name", "dtype", "shape", "size" (bytes in the body), "encoding": "zlib" | "raw", ["chunks"], ["offset",
"full_shape"]}]}``), then each array's bytes in header order. A zlib array is cut into chunks of :data:`CHUNK` raw
bytes compressed separately (``chunks``: their compressed sizes), so that both sides use several cores (zlib
releases the GIL). ``offset`` / ``full_shape``: the array is the non-zero
box of a larger one (a result label map; everything else is 0), as in the worker protocol's file references.

Decoding is bounded: a body declaring more than ``limit`` bytes of arrays (all arrays together, once
decompressed) is refused with :class:`UploadTooLarge` before anything is decompressed, and a stream that inflates
beyond what it declared is refused too (no zlib bomb). Only numeric / boolean dtypes and at most 5 dimensions are
accepted (no pickles, no object arrays). numpy and zlib only: the Slicer side uses this without torch.
"""
from __future__ import annotations

import json
import os
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, Optional, Tuple

import numpy as np

from ..errors import InputError

MAGIC = b"MSA1"
#: zlib level 1: a CT compresses about 2x at ~100+ MB/s; higher levels gain little on noisy images and cost seconds.
LEVEL = 1
CONTENT_TYPE = "application/x-medseg-arrays"
CHUNK = 4 * 2 ** 20
_KINDS = "biuf"


class UploadTooLarge(InputError):
    """An upload (its body or its arrays once decompressed) is over the server's limit (HTTP 413)."""


def pack(arrays: Optional[Dict[str, np.ndarray]] = None, meta: Optional[Dict[str, Any]] = None, *,
         crop=(), compress: bool = True) -> bytes:
    """``arrays`` (and the JSON-able ``meta``) as one body; arrays named in ``crop`` travel as their non-zero box."""
    from ..worker.protocol import nonzero_box

    entries, chunks = [], []
    for name, array in (arrays or {}).items():
        a = np.asarray(array)
        entry: Dict[str, Any] = {"name": str(name)}
        if name in crop and a.ndim >= 2 and a.size:
            box = nonzero_box(a) or tuple(slice(0, 0) for _ in range(a.ndim))
            entry.update(offset=[int(s.start) for s in box], full_shape=list(a.shape))
            a = a[box]
        a = np.ascontiguousarray(a)
        raw = memoryview(a).cast("B") if a.size else memoryview(b"")
        if compress:
            parts = _map(lambda i: zlib.compress(raw[i:i + CHUNK], LEVEL), range(0, max(1, len(raw)), CHUNK))
            entry.update(chunks=[len(p) for p in parts])
        else:
            parts = [raw]
        entry.update(dtype=a.dtype.str, shape=list(a.shape), size=sum(len(p) for p in parts),
                     encoding="zlib" if compress else "raw")
        entries.append(entry)
        chunks.extend(parts)
    header = json.dumps({"meta": meta or {}, "arrays": entries}, separators=(",", ":")).encode("utf-8")
    return b"".join([MAGIC, struct.pack("<I", len(header)), header] + chunks)


def _map(fn, items):
    items = list(items)
    if len(items) < 2:
        return [fn(i) for i in items]
    with ThreadPoolExecutor(max_workers=min(len(items), max(1, min(8, os.cpu_count() or 1)))) as pool:
        return list(pool.map(fn, items))


def _inflate(name: str, data, sizes, expected: int) -> bytearray:
    """The zlib chunks of one array into one buffer of exactly ``expected`` bytes (never more)."""
    if sum(sizes) != len(data) or any(n < 0 for n in sizes):
        raise InputError(f"Malformed upload: array '{name}' has bad chunk sizes; send it again.")
    out = bytearray(expected)
    starts = [sum(sizes[:k]) for k in range(len(sizes))]
    offsets = [min(k * CHUNK, expected) for k in range(len(sizes))]

    def one(k: int) -> int:
        want = min(CHUNK, expected - offsets[k])
        try:
            raw = zlib.decompressobj().decompress(data[starts[k]:starts[k] + sizes[k]], want + 1)
        except zlib.error:
            raise InputError(f"Malformed upload: array '{name}' is not valid zlib data; send it again.") from None
        if len(raw) != want:
            return -1
        out[offsets[k]:offsets[k] + want] = raw
        return want

    got = _map(one, range(len(sizes)))
    if -1 in got or sum(got) != expected:
        raise InputError(f"Malformed upload: array '{name}' does not hold the {expected} bytes its shape needs; "
                         "send it again.")
    return out


def _check_entry(entry: Any) -> Tuple[str, np.dtype, Tuple[int, ...], int]:
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise InputError("Malformed upload: an array entry has no name; send it with the MedSeg client.")
    name = entry["name"]
    try:
        dtype = np.dtype(str(entry.get("dtype")))
        shape = tuple(int(n) for n in entry.get("shape"))
        size = int(entry.get("size"))
    except (TypeError, ValueError):
        raise InputError(f"Malformed upload: array '{name}' has a bad dtype, shape or size; send it with the "
                         "MedSeg client.") from None
    if dtype.kind not in _KINDS or dtype.hasobject or len(shape) > 5 or min(shape, default=0) < 0 or size < 0:
        raise InputError(f"Malformed upload: array '{name}' ({dtype}, shape {list(shape)}) is not a numeric array "
                         "of at most 5 dimensions; send images and masks only.")
    if entry.get("encoding", "zlib") not in ("zlib", "raw"):
        raise InputError(f"Malformed upload: array '{name}' has an unknown encoding; use zlib or raw.")
    return name, dtype, shape, size


def unpack(body: bytes, limit: Optional[int] = None) -> Tuple[Dict[str, np.ndarray], Dict[str, Any]]:
    """``(arrays, meta)`` of a body made by :func:`pack`. Raises :class:`InputError` for a malformed body and
    :class:`UploadTooLarge` when the arrays would take more than ``limit`` bytes."""
    view = memoryview(body)
    if len(view) < 8 or bytes(view[:4]) != MAGIC:
        raise InputError("Malformed upload: not a MedSeg array body; send it with the MedSeg client.")
    (n,) = struct.unpack("<I", view[4:8])
    try:
        header = json.loads(bytes(view[8:8 + n]).decode("utf-8"))
        entries, meta = header["arrays"], header.get("meta") or {}
        if not isinstance(entries, list) or not isinstance(meta, dict):
            raise ValueError
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise InputError("Malformed upload: its header is not valid; send it with the MedSeg client.") from None
    checked = [_check_entry(e) for e in entries]
    try:
        full = [tuple(int(v) for v in e.get("full_shape", shape)) for e, (_, _, shape, _) in zip(entries, checked)]
    except (TypeError, ValueError):
        raise InputError("Malformed upload: a cropped array has a bad full shape; send it with the MedSeg client.") \
            from None
    total = sum(max(int(np.prod(f, dtype=np.int64)), int(np.prod(shape, dtype=np.int64))) * dtype.itemsize
                for f, (_, dtype, shape, _) in zip(full, checked))
    if limit is not None and total > limit:
        raise UploadTooLarge(f"Upload too large: {total / 2 ** 20:.0f} MB of image data, the server takes at most "
                             f"{limit / 2 ** 20:.0f} MB; crop the volume (or ask the admin to raise --max-upload-mb).")
    arrays: Dict[str, np.ndarray] = {}
    pos = 8 + n
    for entry, (name, dtype, shape, size) in zip(entries, checked):
        data = view[pos:pos + size]
        pos += size
        if len(data) != size:
            raise InputError(f"Malformed upload: array '{name}' is cut short; send it again.")
        expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if entry.get("encoding", "zlib") == "zlib":
            try:
                sizes = [int(n) for n in entry.get("chunks", [size])]
            except (TypeError, ValueError):
                raise InputError(f"Malformed upload: array '{name}' has bad chunk sizes; send it again.") from None
            raw = _inflate(name, data, sizes, expected)
        else:
            raw = bytearray(data)
        if len(raw) != expected:
            raise InputError(f"Malformed upload: array '{name}' holds {len(raw)} bytes, its shape needs {expected}; "
                             "send it again.")
        a = np.frombuffer(raw, dtype=dtype).reshape(shape)
        if "offset" in entry:
            full = np.zeros(tuple(int(v) for v in entry["full_shape"]), dtype=dtype)
            if a.size:
                full[tuple(slice(int(o), int(o) + k) for o, k in zip(entry["offset"], a.shape))] = a
            a = full
        arrays[name] = a
    return arrays, meta
