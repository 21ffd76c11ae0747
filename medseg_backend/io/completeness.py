"""Completeness checks before SimpleITK reads a file: a truncated NIfTI or MetaImage file, NaN / Inf voxels in a
float NIfTI file (SimpleITK would read them as 0) are refused with one line."""
from __future__ import annotations

import os
from typing import Optional, Tuple

import numpy as np

from ..errors import InputError
from ..errors import clip_text as _clip_text


# SimpleITK reads a NIfTI file whose voxel data stop early without complaint (the missing voxels become 0),
# reads NaN / Inf voxels of a float NIfTI file as 0, and reports a short MetaImage as "No such file or
# directory". These checks compare the data length with what the header announces, and count the non-finite
# values in a float NIfTI file's raw voxel block, before SimpleITK reads the file.
def _incomplete(path: str, announced: int, present: int) -> InputError:
    return InputError(f"{path} is truncated: its header announces {announced} bytes of voxel data but only "
                      f"{max(present, 0)} are there; copy or export the file again (the transfer was incomplete).")


def _nifti_expected(header: bytes) -> Optional[Tuple[int, int, Optional[np.dtype]]]:
    """(vox_offset, data bytes, float dtype or None) from a NIfTI-1/-2 single-file header, or None when it is not
    one we can size. The dtype (with the file's byte order) is given for float32 / float64 voxels only."""
    import struct

    if len(header) < 348:
        return None
    for end in ("<", ">"):
        size = struct.unpack(end + "i", header[:4])[0]
        if size == 348:
            if header[344:347] != b"n+1":
                return None
            dims = struct.unpack(end + "8h", header[40:56])
            datatype = struct.unpack(end + "h", header[70:72])[0]
            bitpix = struct.unpack(end + "h", header[72:74])[0]
            offset = int(struct.unpack(end + "f", header[108:112])[0])
            break
        if size == 540 and len(header) >= 540:
            if header[4:7] != b"n+2":
                return None
            datatype = struct.unpack(end + "h", header[12:14])[0]
            bitpix = struct.unpack(end + "h", header[14:16])[0]
            dims = struct.unpack(end + "8q", header[16:80])
            offset = struct.unpack(end + "q", header[168:176])[0]
            break
    else:
        return None
    nd = dims[0]
    if not 1 <= nd <= 7 or bitpix <= 0 or bitpix % 8 or any(d < 0 for d in dims[1:nd + 1]):
        return None
    count = 1
    for d in dims[1:nd + 1]:
        count *= int(d)
    floats = {(16, 32): "f4", (64, 64): "f8"}.get((datatype, bitpix))
    return max(offset, size), count * (bitpix // 8), np.dtype(end + floats) if floats else None


class _NonFinite:
    """Counts NaN and Inf voxels in the raw float voxel block of a file fed to it in pieces (any split), in
    bounded memory: SimpleITK's NIfTI reader turns them into 0, so its array cannot show them."""

    def __init__(self, offset: int, nbytes: int, dtype: np.dtype) -> None:
        self.offset, self.end, self.dtype = offset, offset + nbytes, dtype
        self.pos = 0              # bytes of the file seen so far
        self.rest = b""           # bytes of an element split between two pieces
        self.nan = self.inf = self.seen = 0

    def feed(self, block: bytes) -> None:
        lo, hi = max(self.offset - self.pos, 0), min(self.end - self.pos, len(block))
        self.pos += len(block)
        if hi <= lo:
            return
        data = self.rest + block[lo:hi]
        usable = len(data) - len(data) % self.dtype.itemsize
        self.rest = data[usable:]
        values = np.frombuffer(data[:usable], dtype=self.dtype)
        self.seen += values.size
        self.nan += int(np.count_nonzero(np.isnan(values)))
        self.inf += int(np.count_nonzero(np.isinf(values)))

    def check(self, path: str) -> None:
        bad = self.nan + self.inf
        if not bad:
            return
        kinds = " and ".join(f"{n} {w}" for n, w in ((self.nan, "NaN"), (self.inf, "Inf")) if n)
        if bad == self.seen:
            raise InputError(f"{path} holds no numbers: every voxel is NaN/Inf ({kinds}); export the image again "
                             "(the conversion that wrote it failed).")
        raise InputError(f"{path} has {bad} NaN/Inf voxels ({kinds}): replace them (e.g. with the background "
                         "value) before segmenting.")


def _check_nifti(path: str) -> Optional[bytes]:
    """Refuse a truncated NIfTI file or one with NaN / Inf voxels; returns its header (None when unreadable)."""
    scan: Optional[_NonFinite] = None
    if path.lower().endswith(".gz"):
        import gzip
        import zlib

        try:
            with gzip.open(path, "rb") as f:
                header = f.read(540)
                sized = _nifti_expected(header)
                if sized is not None and sized[2] is not None:
                    scan = _NonFinite(*sized)
                    scan.feed(header)
                total = len(header)
                while True:
                    block = f.read(1 << 22)
                    if not block:
                        break
                    total += len(block)
                    if scan is not None:
                        scan.feed(block)
        except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
            raise InputError(f"{path} is truncated or damaged ({_clip_text(str(exc) or type(exc).__name__, 80)}): "
                             "copy or export the file again (the transfer was incomplete).") from None
        except OSError:
            return None  # unreadable: SimpleITK says why
    else:
        try:
            with open(path, "rb") as f:
                header = f.read(540)
            total = os.path.getsize(path)
        except OSError:
            return None
    sized = _nifti_expected(header)
    if sized is None:
        return header
    offset, nbytes, floats = sized
    if total < offset + nbytes:
        raise _incomplete(path, nbytes, total - offset)
    if floats is not None and scan is None:
        scan = _NonFinite(offset, nbytes, floats)
        try:
            with open(path, "rb") as f:
                while True:
                    block = f.read(1 << 22)
                    if not block:
                        break
                    scan.feed(block)
        except OSError:
            return None
    if scan is not None:
        scan.check(path)
    return header


_MET_SIZES = {"MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4,
              "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4, "MET_DOUBLE": 8}


def _check_metaimage(path: str) -> None:
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 16)
    except OSError:
        return
    fields, data_start = {}, None
    pos = 0
    while pos < len(head):
        nl = head.find(b"\n", pos)
        if nl < 0:
            break
        line = head[pos:nl].decode("latin-1").strip()
        pos = nl + 1
        if "=" in line:
            key, value = (t.strip() for t in line.split("=", 1))
            fields[key.lower()] = value
            if key.lower() == "elementdatafile":
                data_start = pos
                break
    if data_start is None:
        return
    if fields.get("compresseddata", "false").lower() == "true" or "headersize" in fields:
        return
    try:
        dims = [int(v) for v in fields.get("dimsize", "").split()]
        comps = int(fields.get("elementnumberofchannels", "1"))
    except ValueError:
        return
    esize = _MET_SIZES.get(fields.get("elementtype", "").upper())
    if not dims or esize is None:
        return
    nbytes = esize * comps
    for d in dims:
        nbytes *= d
    datafile = fields.get("elementdatafile", "")
    if datafile.upper() == "LOCAL":
        present = os.path.getsize(path) - data_start
    elif datafile.upper().startswith("LIST") or "%" in datafile:
        return
    else:
        other = os.path.join(os.path.dirname(path), datafile)
        if not os.path.isfile(other):
            raise InputError(f"{path}: its voxel data file '{datafile}' is missing: keep the .mhd and its data file "
                             "together in one folder.")
        present = os.path.getsize(other)
    if present < nbytes:
        raise _incomplete(path, nbytes, present)


def check_complete(path: str) -> Optional[bytes]:
    """Refuse incomplete (or, NIfTI, non-finite) files before SimpleITK reads them; a NIfTI file's header."""
    low = path.lower()
    if low.endswith(".nii") or low.endswith(".nii.gz"):
        return _check_nifti(path)
    if low.endswith(".mha") or low.endswith(".mhd"):
        _check_metaimage(path)
    return None
