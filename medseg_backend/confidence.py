"""Per-slice confidence of a box-prompted slice-wise segmentation, from what the model computes anyway.

Four signals, each in [0, 1], computed on the decoder's low-resolution (256 x 256) output:

* ``iou``: the mask decoder's own IoU prediction for the mask it returned (its IoU head).
* ``stability``: area of ``logits > +1`` over area of ``logits > -1`` (how much the mask moves when the
  threshold moves by one logit either way; the stability score of the SAM paper).
* ``agreement``: mean IoU between the mask and the decoder's three multimask outputs for the same box (the
  decoder computes all four masks in the same pass).
* ``neighbour``: IoU with the mask of the slice the propagation came from (1 on the first slice).

The slice confidence is their geometric mean: one doubtful signal pulls it down, none can push a bad slice up
alone.

A fifth signal looks at the image instead of the model: ``profile``, the share of the mask's pixels whose (windowed)
intensity lies within the object's own range (10th to 90th percentile under the mask of the slice the walk started
from: the middle slice, or the slice the user corrected). A mask that has slid onto another tissue (past the end of
an organ, onto a neighbour) scores low even when the model is sure of it.

A slice is flagged for review when its confidence is below :data:`FLAG_BELOW`, its profile match below
:data:`PROFILE_FLAG_BELOW`, or its mask is empty inside the run.
"""
from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass
from typing import Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .flags import FLAG_BELOW, PROFILE_FLAG_BELOW, is_flagged  # noqa: F401 - the review rule lives there (no torch)

#: Logit offset of the stability score.
STABILITY_OFFSET = 1.0


@dataclass
class SliceRecord:
    """One object on one slice. ``slice`` is the index along the slicing axis of the volume (its K index for
    axial runs); ``area`` counts this object's own voxels on that slice (before later boxes overwrite it)."""
    object: int
    slice: int
    area: int
    confidence: float
    flagged: bool
    source: str            # prompt used: "roi" (the user's box), "carried" (from the neighbouring mask) or "user" (a corrected seed slice, kept)
    iou: float
    stability: float
    agreement: float
    neighbour: float
    #: share of the mask's pixels within the object's intensity range (1.0 without a reference range)
    profile: float = 1.0

    def as_dict(self) -> dict:
        return asdict(self)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two boolean masks (1.0 when both are empty)."""
    union = int(np.count_nonzero(a | b))
    return 1.0 if union == 0 else float(np.count_nonzero(a & b)) / union


def stability(low_logits: torch.Tensor, offset: float = STABILITY_OFFSET) -> float:
    """Area above ``+offset`` over area above ``-offset`` (1.0 when both are empty)."""
    hi = int(torch.count_nonzero(low_logits > offset))
    lo = int(torch.count_nonzero(low_logits > -offset))
    return 1.0 if lo == 0 else hi / lo


def intensity_range(image: np.ndarray, mask: np.ndarray) -> Optional[Tuple[float, float]]:
    """The object's intensity range: 10th and 90th percentile of ``image`` under ``mask`` (None when empty)."""
    vals = image[mask]
    if vals.size == 0:
        return None
    lo, hi = np.percentile(vals, [10, 90])
    return float(lo), float(hi)


def profile_match(image: np.ndarray, mask: np.ndarray, rng: Optional[Tuple[float, float]]) -> float:
    """Share of the mask's pixels whose intensity lies within ``rng`` (0.0 for an empty mask, 1.0 without a
    range)."""
    if rng is None:
        return 1.0
    vals = image[mask]
    if vals.size == 0:
        return 0.0
    return float(np.count_nonzero((vals >= rng[0]) & (vals <= rng[1]))) / vals.size


def combine(iou: float, stab: float, agreement: float, neighbour: float) -> float:
    """Geometric mean of the four signals, each clipped to [0, 1]."""
    vals = np.clip(np.array([iou, stab, agreement, neighbour], dtype=np.float64), 0.0, 1.0)
    return float(np.prod(vals) ** (1.0 / len(vals)))


# --------------------------------------------------------------------------------------------------------
# Report (CLI, Slicer)
# --------------------------------------------------------------------------------------------------------
REPORT_COLUMNS = ("object", "slice", "area_voxels", "area_mm2", "confidence", "profile", "flagged", "source")


def pixel_area_mm2(spacing_xyz: Optional[Sequence[float]], axis: str = "axial") -> float:
    """Area of one pixel of a slice along ``axis``, from the (x, y, z) voxel spacing (1.0 when unknown)."""
    if spacing_xyz is None:
        return 1.0
    sx, sy, sz = (float(v) for v in spacing_xyz)
    return {"axial": sx * sy, "coronal": sx * sz, "sagittal": sy * sz}[axis]


def report_rows(records: Iterable[SliceRecord], spacing_xyz: Optional[Sequence[float]] = None,
                axis: str = "axial") -> List[dict]:
    """One row per object and slice, ordered by object then slice."""
    px = pixel_area_mm2(spacing_xyz, axis)
    return [{"object": r.object, "slice": r.slice, "area_voxels": r.area, "area_mm2": round(r.area * px, 3),
             "confidence": round(r.confidence, 4), "profile": round(r.profile, 4), "flagged": int(r.flagged),
             "source": r.source}
            for r in sorted(records, key=lambda r: (r.object, r.slice))]


def report_text(records: Iterable[SliceRecord], spacing_xyz: Optional[Sequence[float]] = None,
                axis: str = "axial", fmt: str = "csv") -> str:
    """The slice report as CSV (columns :data:`REPORT_COLUMNS`) or JSON (a list of the same rows)."""
    rows = report_rows(records, spacing_xyz, axis)
    if fmt == "json":
        return json.dumps({"axis": axis, "flag_below": FLAG_BELOW, "profile_flag_below": PROFILE_FLAG_BELOW,
                           "slices": rows}, indent=1) + "\n"
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=REPORT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()
