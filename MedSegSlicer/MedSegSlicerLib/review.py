"""Doubtful slices of a MedSAM run, for the radiologist to check: the flagged rows of the run's per-slice report
(confidence below the review threshold, a mask off the object's intensities, or an empty mask), why each one is
flagged, where to jump to see one, and an optional "review" mask of those slices (issue 14)."""
from __future__ import annotations

from typing import Dict, List, Sequence

import numpy as np

from medseg_backend import slicing
from medseg_backend.flags import flag_reasons

from . import geometry


def flagged_slices(result, obj: int = 1) -> List[Dict]:
    """The flagged rows (``slice``, ``confidence``, ``area_voxels``, ...) of object ``obj``, least confident first."""
    rows = [r for r in (getattr(result, "slices", None) or []) if int(r.get("object", 1)) == obj and r.get("flagged")]
    return sorted(rows, key=lambda r: (float(r.get("confidence", 0.0)), int(r["slice"])))


def reasons(row: Dict) -> List[str]:
    """Why a report row is doubtful (:func:`medseg_backend.flags.flag_reasons`: ``empty``, ``confidence``,
    ``profile``)."""
    return flag_reasons(int(row.get("area_voxels", 0)), float(row.get("confidence", 0.0)),
                        float(row.get("profile", 1.0)))


def describe(row: Dict) -> str:
    """One line for the list of slices to check: the slice and why it is doubtful."""
    why = reasons(row)
    if "empty" in why:
        return f"slice {row['slice']}: empty"
    text = f"slice {row['slice']}: confidence {float(row['confidence']):.2f}"
    if "profile" in why:
        text += f", {float(row['profile']):.0%} in the object's intensity range"
    return text


def review_mask(mask: np.ndarray, rows: Sequence[Dict], axis: str = "axial") -> np.ndarray:
    """``mask`` kept on the flagged slices only (along ``axis``): a "review" segment to look at before trusting
    the result."""
    a = slicing.axis_index(axis)
    keep = np.zeros(mask.shape[a], dtype=bool)
    for r in rows:
        keep[int(r["slice"])] = True
    shape = [1, 1, 1]
    shape[a] = -1
    return (np.asarray(mask) > 0) & keep.reshape(shape)


def slice_centre_world(volume_node, axis: str, k: int) -> np.ndarray:
    """World (RAS) position of the centre of slice ``k`` along ``axis``: where a view jumps to show it."""
    K, J, I = geometry.volume_shape(volume_node)
    centre = np.array([(I - 1) / 2.0, (J - 1) / 2.0, (K - 1) / 2.0])
    centre[slicing.BOX_INDEX[slicing.axis_index(axis)]] = float(k)
    return geometry.apply(geometry.volume_ijk_to_world(volume_node), centre[None, :])[0]
