"""Text forms shared by the command line (:mod:`medseg_backend.cli`) and the batch manifest
(:mod:`medseg_backend.batch.manifest`): a box written as text, an ``IMAGE:LABEL`` pair, the slice report's default
path beside a label map, a list of slice numbers (the UniverSeg effect's *Use only slices*), and a check whose
warnings the real run repeats. They read them from here, once."""
from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import List, Optional, Tuple

from .errors import InputError, MedSegWarning


def parse_box(text: str, ndim: Optional[int] = None) -> Tuple[int, ...]:
    """'X0,Y0,X1,Y1' (2-D) or 'X0,Y0,Z0,X1,Y1,Z1' (3-D) -> ints (checked against the image by
    :func:`medseg_backend.slicing.check_box`). ``ndim=None``: either form (the run spec checks the count)."""
    parts = [p.strip() for p in str(text).split(",")]
    n = 4 if ndim == 2 else 6
    if ndim is not None and len(parts) != n:
        form = "X0,Y0,X1,Y1" if n == 4 else "X0,Y0,Z0,X1,Y1,Z1"
        raise InputError(f"Box '{text}' has {len(parts)} numbers: give {form} (voxel indices, inclusive).")
    try:
        numbers = [float(p) for p in parts]
    except ValueError:
        raise InputError(f"Box '{text}' is not a list of numbers: give integers like 10,20,80,90.") from None
    bad = [p for p, v in zip(parts, numbers) if not math.isfinite(v)]
    if bad:  # inf, nan, 1e400 (float() gives inf; int() of it would raise OverflowError)
        raise InputError(f"Box '{text}' holds {bad[0]}, which is not a finite number: give voxel indices like "
                         "10,20,80,90.")
    return tuple(int(round(v)) for v in numbers)


def quiet_check(fn, *a, **kw):
    """Run a validation whose warnings (box clipped, ...) the real run repeats: errors now, warnings once."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MedSegWarning)
        return fn(*a, **kw)


def split_pair(text: str) -> Tuple[str, str]:
    """'IMG:LABEL' -> (IMG, LABEL). Paths may contain ':' (Windows drives): the split is chosen where both
    sides exist; otherwise at the last ':'."""
    positions = [i for i, ch in enumerate(text) if ch == ":"]
    if not positions:
        raise InputError(f"--examples '{text}' is not IMAGE:LABEL: give the example image and its label file "
                         "separated by ':'.")
    for i in positions:
        a, b = text[:i], text[i + 1:]
        if a and b and os.path.exists(a) and os.path.exists(b):
            return a, b
    i = positions[-1]
    a, b = text[:i], text[i + 1:]
    if not a or not b:
        raise InputError(f"--examples '{text}' is not IMAGE:LABEL: give both files, separated by ':'.")
    return a, b


def default_slice_report_path(output: str) -> str:
    """``<output stem>.slices.csv`` beside the label map."""
    out = Path(output)
    stem = out.name[: -len(".nii.gz")] if out.name.lower().endswith(".nii.gz") else out.stem
    return str(out.with_name(stem + ".slices.csv"))


#: At most this many slice numbers in one list (a slice list longer than any volume is a typing accident).
MAX_SLICE_LIST = 4096


def parse_slice_list(text: str, what: str = "'Use only slices'") -> Optional[List[int]]:
    """Slice numbers typed as ``8, 14, 20`` (commas, semicolons or spaces; each once, sorted); None when empty."""
    parts = [p for p in str(text or "").replace(";", ",").replace(" ", ",").split(",") if p.strip()]
    if not parts:
        return None
    if len(parts) > MAX_SLICE_LIST:
        raise InputError(f"{what} lists {len(parts)} numbers: list at most {MAX_SLICE_LIST} slices.")
    try:
        slices = sorted({int(p) for p in parts})
    except ValueError:
        raise InputError(f"{what} must list slice numbers, e.g. 8, 14, 20.") from None
    if slices[0] < 0:
        raise InputError(f"{what} has a negative slice number ({slices[0]}): slices count from 0.")
    return slices
